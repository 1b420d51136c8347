"""Packing: EOT between documents, exact fixed-length blocks, mixture weights, HumanEval labels (sources, the
held-out split and shards: test_shards.py)."""

from __future__ import annotations

import inspect
import json

import pytest

from phi1lib.errors import ConfigError, DataError
from phi1lib.training.packing import DataSource, data_fingerprint, humaneval_eval_set, mix, pack, parse_source
from phi1lib.training.tokenizer import EOT, train_bpe


def _docs() -> list[str]:
    import csv, json as j, textwrap, string, shlex, fnmatch, glob, colorsys  # noqa: E401
    return [inspect.getsource(m) for m in (csv, j.decoder, textwrap, string, shlex, fnmatch, glob, colorsys)]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(_docs(), 400)


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


def test_mixture_weights_repeat_and_subsample(tok):
    a, b = pack(_docs()[:4], tok, 32), pack(_docs()[4:], tok, 32)
    m = mix([a, b], [2, 0.5], seed=0)
    assert len(m) == 2 * len(a) + round(0.5 * len(b))
    assert len(mix([a, b], [1, 0])) == len(a)
    assert mix([a, b], [1, 0.5], seed=1)["input_ids"][len(a):] != mix([a, b], [1, 0.5], seed=2)["input_ids"][len(a):]
    with pytest.raises(DataError, match="empty"):
        mix([a], [0])


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
        assert item["n_bytes"] == len(p["canonical_solution"].encode())  # the bits-per-byte denominator
    short = humaneval_eval_set(tok, 40, n_problems=5)
    assert all(len(i["input_ids"]) <= 40 for i in short)
    for item, p in zip(short, probs):  # cut: only the bytes the kept solution tokens spell
        kept = [t for t in item["labels"] if t not in (-100, tok.eos_token_id)]
        assert item["n_bytes"] == len(tok.decode(kept).encode()) < len(p["canonical_solution"].encode())


def test_fingerprint_changes_with_how_the_tokenizer_splits_text(tok):
    """Same vocabulary and merges, another pre-tokenizer (newline merged with indentation or not: packed
    blocks can differ): the fingerprint differs, so a packed file made before the change is never reused."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from phi1lib.training.tokenizer import code_pre_tokenizer

    backend = tok.backend_tokenizer
    old = PreTrainedTokenizerFast(tokenizer_object=type(backend).from_str(backend.to_str()), eos_token=EOT)
    old.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = "def f(x):\n    return x\n"
    assert isinstance(tok.backend_tokenizer.pre_tokenizer, type(code_pre_tokenizer()))
    assert data_fingerprint([text], tok, 16) != data_fingerprint([text], old, 16)
