"""Packing: EOT between documents, exact fixed-length blocks, mixture weights, held-out split, HumanEval labels."""

from __future__ import annotations

import inspect
import json

import pytest

from phi1lib.errors import ConfigError, DataError
from phi1lib.training.packing import (DataSource, build_data, data_fingerprint, humaneval_eval_set, load_sources, mix, pack,
                             parse_source, read_texts)
from phi1lib.training.tokenizer import EOT, train_bpe


def _docs() -> list[str]:
    import csv, json as j, textwrap, string, shlex, fnmatch, glob, colorsys  # noqa: E401
    return [inspect.getsource(m) for m in (csv, j.decoder, textwrap, string, shlex, fnmatch, glob, colorsys)]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(_docs(), 400)


@pytest.fixture()
def files(tmp_path):
    docs = _docs()
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs[:5])))
    import pandas as pd

    pq = tmp_path / "b.parquet"
    pd.DataFrame({"text": docs[5:] + [""], "score": [1.0] * (len(docs) - 5 + 1)}).to_parquet(pq)
    return jl, pq


def test_parse_source(tmp_path):
    assert parse_source("x/kept.parquet") == DataSource(parse_source("x/kept.parquet").path, 1.0)
    s = parse_source("x/textbooks.jsonl:2.5")
    assert str(s.path) == "x/textbooks.jsonl" and s.weight == 2.5
    assert parse_source("C:data.jsonl").weight == 1.0  # suffix not a number: part of the path
    with pytest.raises(ConfigError, match="weight"):
        parse_source("a.jsonl:-1")
    # A tail that is neither a number nor a path was meant as a weight: say so, not "file not found".
    with pytest.raises(ConfigError, match="weight 'abc' after ':' is not a number"):
        parse_source("f.jsonl:abc")
    odd = tmp_path / "data:abc"  # unless a file of that very name exists
    odd.write_text("")
    assert parse_source(str(odd)) == DataSource(odd, 1.0)


def test_read_texts_formats_and_errors(files, tmp_path):
    jl, pq = files
    assert len(read_texts(jl)) == 5
    assert len(read_texts(pq)) == 3  # the empty text is skipped
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl.*'text'"):
        read_texts(bad)
    with pytest.raises(DataError, match="not found"):
        read_texts(tmp_path / "missing.jsonl")
    csv = tmp_path / "x.csv"
    csv.write_text("text\nx\n")
    with pytest.raises(DataError, match="unsupported"):
        read_texts(csv)


def test_pack_is_the_eot_joined_stream_cut_into_blocks(tok):
    docs = _docs()
    ds = pack(docs, tok, 64)
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(stream) // 64
    assert len(ds) == n and n > 10
    blocks = ds["input_ids"]
    assert all(len(b) == 64 for b in blocks)
    assert [t for b in blocks for t in b] == stream[: n * 64]
    assert tok.decode([t for b in blocks for t in b]).startswith(docs[0] + EOT + docs[1][:20])


def test_pack_to_disk_matches_memory_and_is_reused(tok, tmp_path):
    docs = _docs()
    mem = pack(docs, tok, 64)
    fp = data_fingerprint(docs, tok, 64)
    path = tmp_path / "data" / f"{fp}.arrow"
    disk = pack(docs, tok, 64, path=path, chunk_docs=3)  # carries across chunk boundaries
    assert disk["input_ids"] == mem["input_ids"] and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert disk.cache_files and disk.cache_files[0]["filename"] == str(path)  # memory-mapped, not in RAM
    mtime = path.stat().st_mtime_ns
    assert pack(docs, tok, 64, path=path)["input_ids"] == mem["input_ids"] and path.stat().st_mtime_ns == mtime
    # The fingerprint changes with any text, the block size, or the tokenizer.
    assert data_fingerprint(docs[:-1] + [docs[-1] + " "], tok, 64) != fp
    assert data_fingerprint(docs, tok, 32) != fp
    other = train_bpe(docs, 300)
    assert data_fingerprint(docs, other, 64) != fp


def test_build_data_cache_dir_gives_the_same_data(files, tok, tmp_path):
    loaded = load_sources([str(files[0]), f"{files[1]}:2"], heldout_fraction=0.3, seed=0)
    mem = build_data(loaded, tok, 64)
    disk = build_data(loaded, tok, 64, cache_dir=tmp_path / "c")
    assert disk.train["input_ids"] == mem.train["input_ids"] and disk.heldout["input_ids"] == mem.heldout["input_ids"]
    assert disk.stats == mem.stats and len(list((tmp_path / "c").glob("*.arrow"))) == 3  # 2 sources + held-out


def test_mixture_weights_repeat_and_subsample(tok):
    a, b = pack(_docs()[:4], tok, 32), pack(_docs()[4:], tok, 32)
    m = mix([a, b], [2, 0.5], seed=0)
    assert len(m) == 2 * len(a) + round(0.5 * len(b))
    assert len(mix([a, b], [1, 0])) == len(a)
    assert mix([a, b], [1, 0.5], seed=1)["input_ids"][len(a):] != mix([a, b], [1, 0.5], seed=2)["input_ids"][len(a):]
    with pytest.raises(DataError, match="empty"):
        mix([a], [0])


def test_heldout_is_by_document_disjoint_and_seeded(files, tok):
    jl, pq = files
    loaded = load_sources([str(jl), f"{pq}:2"], heldout_fraction=0.3, seed=0)
    assert loaded[1].source.weight == 2
    for st in loaded:
        assert st.heldout and st.train and not set(st.heldout) & set(st.train)
    again = load_sources([str(jl), f"{pq}:2"], heldout_fraction=0.3, seed=0)
    assert [s.heldout for s in again] == [s.heldout for s in loaded]
    data = build_data(loaded, tok, 64)
    held_blocks = {tuple(b) for b in data.heldout["input_ids"]}
    assert not held_blocks & {tuple(b) for b in data.train["input_ids"]}
    assert data.stats["train_blocks"] == len(data.train) == data.stats["sources"][0]["blocks"] + 2 * data.stats["sources"][1]["blocks"]
    with pytest.raises(ConfigError, match="no training data"):
        load_sources([])


def test_humaneval_labels_cover_only_the_solution(tok):
    from phi1lib.problems import load_humaneval

    items = humaneval_eval_set(tok, 1024, n_problems=5)
    probs = load_humaneval()[:5]
    assert [i["task_id"] for i in items] == [p["task_id"] for p in probs]
    for item, p in zip(items, probs):
        n_prompt = len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
        assert item["labels"][:n_prompt] == [-100] * n_prompt
        sol = item["labels"][n_prompt:]
        assert tok.decode(sol) == p["canonical_solution"] + EOT
        assert item["input_ids"][n_prompt:] == sol
    short = humaneval_eval_set(tok, 40, n_problems=5)
    assert all(len(i["input_ids"]) <= 40 for i in short)


def test_max_chars_caps_each_source_with_a_seeded_subset(files):
    jl, pq = files
    full = load_sources([str(jl)], heldout_fraction=0.2, seed=0)
    capped = load_sources([str(jl)], heldout_fraction=0.2, seed=0, max_chars=1)
    assert capped[0].heldout == full[0].heldout  # the held-out split does not depend on the cap
    assert len(capped[0].train) == 1 and capped[0].train[0] in full[0].train
    big = load_sources([str(jl)], heldout_fraction=0.2, seed=0, max_chars=10**9)
    assert big[0].train == full[0].train
