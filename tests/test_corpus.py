"""Corpus readers: folders (with bad files), installed Python sampling, JSONL/Parquet tables, and the hub reader on local folders."""

from __future__ import annotations

import json

import pytest

from phi1lib.filtering import corpus
from phi1lib.filtering.corpus import CorpusStats
from phi1lib.errors import ConfigError, DataError

GOOD = '''"""A small module."""

import math


@staticmethod
def area(radius):
    """Area of a circle."""
    return math.pi * radius ** 2


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
'''


@pytest.fixture()
def messy(tmp_path):
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "good.py").write_text(GOOD, encoding="utf-8")
    (root / "pkg" / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (root / "empty.py").write_text("   \n\n", encoding="utf-8")
    (root / "huge.py").write_text("x = 1\n" * 5000, encoding="utf-8")
    (root / "binary.py").write_bytes(b"x = 1\n\x00\x01\x02")
    (root / "py2.py").write_text("print 'hello'\n", encoding="utf-8")
    (root / "notes.txt").write_text("not python", encoding="utf-8")
    return root


def test_folder_skips_and_counts_bad_files(messy):
    stats = CorpusStats()
    recs = list(corpus.read_folder(messy, max_bytes=10_000, stats=stats))
    assert sorted(r["path"] for r in recs) == ["pkg/good.py", "py2.py"]
    assert stats.skipped["non_utf8"] == 1 and stats.skipped["empty"] == 1
    assert stats.skipped["huge"] == 1 and stats.skipped["binary"] == 1
    assert stats.files_seen == 6 and stats.samples == 2
    good = next(r for r in recs if r["path"] == "pkg/good.py")
    assert good["text"] == GOOD and set(good) == {"id", "source", "path", "text", "meta"}


def test_function_granularity(messy):
    stats = CorpusStats()
    recs = list(corpus.read_folder(messy, granularity="function", max_bytes=10_000, stats=stats))
    names = [r["meta"]["name"] for r in recs]
    assert names == ["area", "Point"]
    assert recs[0]["text"].startswith("@staticmethod\ndef area(radius):")  # decorator kept
    assert recs[1]["text"].rstrip().endswith("self.x, self.y = x, y")
    assert stats.skipped["syntax_error"] == 1  # the Python 2 file


def test_ids_are_stable_and_distinct(messy):
    a = [r["id"] for r in corpus.read_folder(messy, granularity="function")]
    b = [r["id"] for r in corpus.read_folder(messy, granularity="function")]
    assert a == b and len(set(a)) == len(a)


def test_bad_arguments(messy, tmp_path):
    with pytest.raises(ConfigError, match="granularity"):
        list(corpus.read_folder(messy, granularity="line"))
    with pytest.raises(DataError, match="not found"):
        list(corpus.read_folder(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="corpus="):
        corpus.load_corpus(str(tmp_path / "nope"), 5)


def _fake_install(tmp_path):
    """A stdlib-like and a site-packages-like root with several packages of different sizes."""
    std, site = tmp_path / "lib", tmp_path / "lib" / "site-packages"
    for root, pkgs in ((std, {"json": 3, "email": 12}), (site, {"bigpkg": 40, "tiny": 2, "mid": 6})):
        for pkg, n in pkgs.items():
            (root / pkg).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / pkg / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n", encoding="utf-8")
    return [std, site]


def test_installed_sampling_is_seeded_and_spread(tmp_path):
    roots = _fake_install(tmp_path)
    a = corpus.read_installed_python(10, seed=1, roots=roots)
    b = corpus.read_installed_python(10, seed=1, roots=roots)
    c = corpus.read_installed_python(10, seed=2, roots=roots)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    # Round-robin over packages: every package is represented although bigpkg holds most files.
    assert {r["meta"]["package"] for r in a} == {"json", "email", "bigpkg", "tiny", "mid"}
    # site-packages is walked once, as its own root, not also as part of the stdlib.
    assert {r["source"] for r in a if r["meta"]["package"] == "bigpkg"} == {"site-packages"}
    everything = corpus.read_installed_python(1000, seed=0, roots=roots)
    assert len(everything) == 3 + 12 + 40 + 2 + 6


@pytest.mark.slow  # walks all of site-packages (~5-10 s)
def test_installed_python_on_this_machine():
    stats = CorpusStats()
    recs = corpus.read_installed_python(40, seed=0, stats=stats)
    assert len(recs) == 40 and stats.samples == 40
    assert len({r["meta"]["package"] for r in recs}) >= 30
    assert all(r["text"].strip() for r in recs)


def _rows():
    return [{"id": "a", "path": "x/a.py", "text": GOOD}, {"id": "b", "path": "x/b.py", "text": ""},
            {"id": "c", "path": "x/c.py", "text": "def g():\n    return 2\n"}]


def test_jsonl_and_parquet_tables(tmp_path):
    import pandas as pd

    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n", encoding="utf-8")
    pq = tmp_path / "c.parquet"
    pd.DataFrame(_rows()).to_parquet(pq)
    for path in (jl, pq):
        stats = CorpusStats()
        recs = list(corpus.read_table(path, stats=stats))
        assert [r["path"] for r in recs] == ["x/a.py", "x/c.py"]
        assert stats.skipped["empty"] == 1
        assert recs[0]["meta"]["source_id"] == "a"
    with pytest.raises(DataError, match=r"no field\(s\) \['content'\]"):
        list(corpus.read_table(jl, text_field="content"))
    bad = tmp_path / "c.csv"
    bad.write_text("text\n1\n")
    with pytest.raises(DataError, match="unknown corpus file type"):
        list(corpus.read_table(bad))


@pytest.mark.slow  # imports datasets and streams (~10-20 s on a busy 2-core box)
def test_hub_reader_streams_a_local_dataset_folder(tmp_path):
    """The Stack's layout (content, max_stars_repo_path, hexsha) in parquet shards, read through datasets."""
    import pandas as pd

    folder = tmp_path / "the-stack-mini" / "data" / "python"
    folder.mkdir(parents=True)
    rows = [{"hexsha": f"{i:040x}", "max_stars_repo_path": f"repo{i}/mod.py",
             "content": f"def f{i}(x):\n    return x + {i}\n" if i != 3 else "", "size": 20} for i in range(12)]
    pd.DataFrame(rows[:6]).to_parquet(folder / "train-00000.parquet")
    pd.DataFrame(rows[6:]).to_parquet(folder / "train-00001.parquet")
    stats = CorpusStats()
    recs = list(corpus.read_hub(str(tmp_path / "the-stack-mini"), data_dir="data/python", text_field="content",
                                path_field="max_stars_repo_path", id_field="hexsha", limit=8, stats=stats))
    assert len(recs) == 8 and stats.skipped["empty"] == 1
    assert {r["path"] for r in recs} <= {f"repo{i}/mod.py" for i in range(12)}
    assert all(r["meta"]["source_id"] == f"{int(r['path'][4:-7]):040x}" for r in recs)
    # Same code path as `--corpus hub:<id>`; a JSONL folder works too.
    jdir = tmp_path / "so"
    jdir.mkdir()
    (jdir / "posts.jsonl").write_text("\n".join(json.dumps({"Title": f"Q{i}", "Body": f"print({i})"})
                                                for i in range(5)), encoding="utf-8")
    got = corpus.load_corpus(f"hub:{jdir}", 3, text_field=["Title", "Body"])
    assert [r["text"] for r in got] == ["Q0\n\nprint(0)", "Q1\n\nprint(1)", "Q2\n\nprint(2)"]


@pytest.mark.slow
def test_hub_reader_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(corpus.read_hub(str(tmp_path / "no-such-dataset")))
