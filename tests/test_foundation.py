"""Foundation: presets, CLI discovery, JSONL durability, packaged data paths."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from phi1lib import cli, jsonl, paths, presets, problems
from phi1lib.errors import ConfigError, DataError


def test_phi1_preset_parameter_count_matches_paper():
    # 1,418,270,720 is the parameter count of microsoft/phi-1 (phi1lib.paper.PARAMS).
    assert presets.get_preset("phi1").model.n_params() == 1_418_270_720


def test_small_preset_is_about_350m():
    n = presets.get_preset("phi1-small").model.n_params()
    assert 340e6 < n < 370e6


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError) as err:
        presets.get_preset("phi2")
    for name in presets.PRESET_NAMES:
        assert name in str(err.value)


def test_paper_pretraining_tokens():
    # 24k steps x 1024 seqs x 2048 tokens ~ 50.3B tokens (paper: "about 8 passes over 7B tokens").
    assert presets.get_preset("phi1").pretrain.tokens == 24_000 * 1024 * 2048


def test_with_overrides_changes_only_named_fields():
    p = presets.with_overrides(presets.get_preset("tiny"), pretrain={"steps": 7})
    assert p.pretrain.steps == 7
    assert p.pretrain.seq_len == presets.get_preset("tiny").pretrain.seq_len


def test_jsonl_skips_torn_tail_and_appends_after_it(tmp_path):
    path = tmp_path / "x.jsonl"
    jsonl.append_jsonl(path, [{"a": 1}, {"a": 2}])
    with path.open("a") as fh:  # simulate a writer killed mid-line
        fh.write('{"a": 3, "b"')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = jsonl.read_jsonl(path)
    assert [r["a"] for r in rows] == [1, 2]
    assert any("x.jsonl:3" in str(w.message) for w in caught)
    jsonl.append_jsonl(path, {"a": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [r["a"] for r in jsonl.read_jsonl(path)] == [1, 2, 4]
    with pytest.raises(DataError, match="x.jsonl:3"):
        jsonl.read_jsonl(path, strict=True)


def test_jsonl_many_bad_lines_warn_once_and_a_file_of_none_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n[1]\n{bad\n\xff\xfe\n{"a": 2}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r["a"] for r in jsonl.read_jsonl(path)] == [1, 2]
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "x.jsonl:2" in str(caught[0].message) and "2 more (lines 3, 4)" in str(caught[0].message)
    (tmp_path / "y.jsonl").write_bytes(b'{"a": 1}\n\xff\n')
    with pytest.raises(DataError, match=r"y.jsonl:2: not UTF-8"):
        jsonl.read_jsonl(tmp_path / "y.jsonl", strict=True)
    for content in (bytes(range(256)) * 4, b"[1, 2]\n", b'"text"\n', b"a,b,c\n1,2,3\n"):
        path.write_bytes(content)
        with pytest.raises(DataError, match="not a JSONL file"):
            jsonl.read_jsonl(path)
    path.write_bytes(b'{"a": 1, "b"')  # a writer killed during its first record: a torn tail, not a wrong file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert jsonl.read_jsonl(path) == []
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')  # a UTF-8 byte-order mark, as some editors write
    assert jsonl.read_jsonl(path, strict=True) == [{"a": 1}]


def test_readers_name_the_path_for_folders_and_bad_formats(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(DataError, match="d.jsonl: is a folder"):
        jsonl.read_jsonl(tmp_path / "d.jsonl")
    (tmp_path / "x.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="x.jsonl.gz: not a readable gzip file"):
        jsonl.read_jsonl(tmp_path / "x.jsonl.gz")
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="t.parquet: not a readable Parquet file"):
        jsonl.read_parquet(tmp_path / "t.parquet", ["text"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"code": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"no column\(s\) \['text'\] \(columns: \['code'\]\)"):
        jsonl.read_parquet(tmp_path / "t.parquet", ["text"])
    assert jsonl.read_parquet(tmp_path / "t.parquet", ["code"]).column("code").to_pylist() == ["x"]


@pytest.mark.parametrize("files, needle", [
    (None, "no such folder"), ({}, "no config.json"), ({"config.json": b"{not json"}, "not a UTF-8 JSON file"),
    ({"config.json": b"\xff\xfe"}, "not a UTF-8 JSON file"), ({"config.json": b"[1, 2]"}, "model_type"),
    ({"config.json": b'{"vocab_size": 5}'}, "model_type"),
])
def test_model_config_checks_a_model_folder_before_loading(tmp_path, files, needle):
    folder = tmp_path / "model"
    if files is not None:
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
    with pytest.raises(DataError, match=needle):
        paths.model_config(folder)


def test_model_config_reads_a_saved_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "phi", "n_layer": 2}')
    assert paths.model_config(tmp_path)["model_type"] == "phi"
    with pytest.raises(DataError, match="is a file, not a folder"):
        paths.model_config(tmp_path / "config.json")


def test_write_jsonl_roundtrip(tmp_path):
    recs = [{"i": i, "s": "é" * i} for i in range(5)]
    assert jsonl.write_jsonl(tmp_path / "y.jsonl", recs) == 5
    assert jsonl.read_jsonl(tmp_path / "y.jsonl") == recs


def test_missing_jsonl_names_path(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl"):
        jsonl.read_jsonl(tmp_path / "nope.jsonl")


def test_costs_dir_has_price_books():
    assert (paths.costs_dir() / "prices").is_dir()


def test_humaneval_loads_164_problems():
    probs = problems.load_humaneval()
    assert len(probs) == 164
    assert probs[0]["task_id"] == "HumanEval/0"
    assert all(p["prompt"] and p["entry_point"] for p in probs)


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "phi1lib", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("phi1 ")


def test_a_run_folder_that_is_a_file_is_one_clear_error(tmp_path):
    from phi1lib.errors import DataError
    from phi1lib.runs import RunDir

    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(DataError, match="notes.txt: is a file, not a run folder; give a folder"):
        RunDir(f)
    with pytest.raises(DataError, match="lies under .*notes.txt, which is a file"):
        RunDir(f / "run")
    assert RunDir(tmp_path / "new" / "run").root == (tmp_path / "new" / "run").resolve()  # creates nothing
    assert f.read_text() == "mine" and not (tmp_path / "new").exists()
