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
