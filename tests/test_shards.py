"""Packing as a step: streamed sources, the seeded held-out split and cap, shards written atomically and reused,
the split over processes (N ranks give the blocks one gives), the wait for other ranks, `phi1 pack`."""

from __future__ import annotations

import inspect
import json
import threading

import pytest

from phi1lib.cli import main
from phi1lib.errors import ConfigError, DataError
from phi1lib.training.packing import pack
from phi1lib.training.shards import (HELD, SKIP, TRAIN, Split, build_data, iter_roles, iter_texts, pack_source,
                                     tokenizer_sample)
from phi1lib.training.packing import DataSource
from phi1lib.training.tokenizer import train_bpe


def _docs() -> list[str]:
    import csv, json as j, textwrap, string, shlex, fnmatch, glob, colorsys, argparse, dataclasses  # noqa: E401
    mods = (csv, j.decoder, textwrap, string, shlex, fnmatch, glob, colorsys, argparse, dataclasses)
    return [inspect.getsource(m) for m in mods]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(_docs(), 400)


@pytest.fixture()
def files(tmp_path):
    docs = _docs()
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs[:7])))
    import pandas as pd

    pq = tmp_path / "b.parquet"
    pd.DataFrame({"text": docs[7:] + [""], "score": [1.0] * (len(docs) - 7 + 1)}).to_parquet(pq)
    return jl, pq


def test_iter_texts_streams_formats_and_names_errors(files, tmp_path):
    jl, pq = files
    assert list(iter_texts(jl)) == _docs()[:7]
    assert list(iter_texts(pq)) == _docs()[7:]  # the empty text is skipped
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x = 1"}) + "\n" + json.dumps({"content": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: record has no 'text' field"):
        list(iter_texts(bad))
    with pytest.raises(DataError, match="not found"):
        list(iter_texts(tmp_path / "missing.jsonl"))
    csv = tmp_path / "x.csv"
    csv.write_text("text\nx\n")
    with pytest.raises(DataError, match="unsupported"):
        list(iter_texts(csv))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(DataError, match="no non-empty 'text'"):
        list(iter_texts(empty))


def test_roles_are_seeded_by_document_and_the_cap_keeps_a_seeded_subset(files):
    jl, _ = files
    roles = [(i, r) for i, _, r in iter_roles(jl, 0, Split(0.3, seed=0))]
    assert roles == [(i, r) for i, _, r in iter_roles(jl, 0, Split(0.3, seed=0))]  # deterministic
    assert {r for _, r in roles} == {HELD, TRAIN}
    assert roles != [(i, r) for i, _, r in iter_roles(jl, 0, Split(0.3, seed=1))]  # the seed matters
    assert roles != [(i, r) for i, _, r in iter_roles(jl, 1, Split(0.3, seed=0))]  # so does the source
    held = {i for i, r in roles if r == HELD}
    one = [(i, r) for i, _, r in iter_roles(jl, 0, Split(0.3, seed=0, max_chars=1))]
    assert {i for i, r in one if r == HELD} == held  # the held-out split does not depend on the cap
    assert sum(r == TRAIN for _, r in one) == 1 and sum(r == SKIP for _, r in one) == len(roles) - len(held) - 1
    texts = {i: t for i, t, _ in iter_roles(jl, 0, Split(0.3))}
    train_chars = [len(texts[i]) for i, r in roles if r == TRAIN]
    half = sum(train_chars) // 2
    capped = [i for i, _, r in iter_roles(jl, 0, Split(0.3, seed=0, max_chars=half)) if r == TRAIN]
    kept = sum(len(texts[i]) for i in capped)
    assert kept >= half and kept - max(len(texts[i]) for i in capped) < half  # stops once the cap is reached
    big = [(i, r) for i, _, r in iter_roles(jl, 0, Split(0.3, seed=0, max_chars=10**9))]
    assert big == roles
    with pytest.raises(ConfigError, match="heldout_fraction"):
        Split(1.0)


def test_build_data_equals_packing_each_shard_in_memory(files, tok, tmp_path):
    jl, pq = files
    split = Split(0.3, seed=0)
    data = build_data([str(jl), f"{pq}:2"], tok, 64, split, tmp_path / "c", shard_docs=3)
    # The reference: the same documents, shard by shard, through the in-memory packer.
    expect_train, expect_held = [], []
    for k, path in enumerate((jl, pq)):
        roles = list(iter_roles(path, k, split))
        part = []
        for s in range(0, len(roles), 3):
            shard = roles[s:s + 3]
            part += pack([t for _, t, r in shard if r == TRAIN], tok, 64)["input_ids"]
            expect_held += pack([t for _, t, r in shard if r == HELD], tok, 64)["input_ids"]
        expect_train.append(part)
    assert data.train["input_ids"] == expect_train[0] + expect_train[1] * 2  # weight 2: twice
    assert data.heldout["input_ids"] == expect_held and len(expect_held) > 0
    assert not {tuple(b) for b in data.heldout["input_ids"]} & {tuple(b) for b in data.train["input_ids"]}
    s0, s1 = data.stats["sources"]
    assert (s0["shards"], s1["shards"]) == (3, 1) and data.stats["train_blocks"] == s0["blocks"] + 2 * s1["blocks"]
    assert data.train.cache_files  # memory-mapped from the shard files, not held in RAM
    with pytest.raises(ConfigError, match="no training data"):
        build_data([], tok, 64, split, tmp_path / "c")


def test_two_ranks_pack_their_shares_and_get_what_one_rank_gets(files, tok, tmp_path):
    jl, pq = files
    split = Split(0.2, seed=3)
    one = build_data([str(jl), str(pq)], tok, 48, split, tmp_path / "one", shard_docs=2)
    packed_by, results = {}, {}

    def rank(r):
        results[r] = build_data([str(jl), str(pq)], tok, 48, split, tmp_path / "two", rank=r, world=2,
                                shard_docs=2, wait_s=120, on_shard=lambda s: packed_by.setdefault(s, []).append(r))

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert set(results) == {0, 1}
    for r in (0, 1):
        assert results[r].train["input_ids"] == one.train["input_ids"]
        assert results[r].heldout["input_ids"] == one.heldout["input_ids"]
    # jl: 7 documents in 4 shards; pq: 3 in 2. Rank 0 packed the even shards, rank 1 the odd ones.
    assert packed_by == {0: [0, 0], 1: [1, 1], 2: [0], 3: [1]}


def test_a_crash_keeps_finished_shards_and_a_rerun_packs_only_the_rest(files, tok, tmp_path):
    jl, _ = files
    split, done = Split(0.0), []

    def crash_after_two(s):
        done.append(s)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_data([str(jl)], tok, 64, split, tmp_path / "c", shard_docs=2, on_shard=crash_after_two)
    folder = next((tmp_path / "c").iterdir())
    finished = sorted(p.name for p in folder.glob("shard-*.json"))
    assert finished == ["shard-00000.json", "shard-00001.json"] and not (folder / "done.json").exists()
    assert not list(folder.glob("*.tmp*"))  # nothing half-written under a final name
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-0000[01].*")}
    again = []
    data = build_data([str(jl)], tok, 64, split, tmp_path / "c", shard_docs=2, on_shard=again.append)
    assert again == [2, 3] and (folder / "done.json").exists()
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-0000[01].*")} == mtimes
    fresh = build_data([str(jl)], tok, 64, split, tmp_path / "fresh", shard_docs=2)
    assert data.train["input_ids"] == fresh.train["input_ids"]
    # Finished: reused without packing (or reading) anything.
    third = []
    build_data([str(jl)], tok, 64, split, tmp_path / "c", shard_docs=2, on_shard=third.append)
    assert third == []


def test_a_changed_source_is_packed_afresh(files, tok, tmp_path):
    jl, _ = files
    build_data([str(jl)], tok, 64, Split(0.0), tmp_path / "c")
    jl.write_text(jl.read_text() + json.dumps({"text": "def added():\n    return 1\n" * 40}) + "\n")
    build_data([str(jl)], tok, 64, Split(0.0), tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 2  # a second folder; the first is never mixed in


def test_a_rank_waiting_for_missing_shards_stops_with_a_message(files, tok, tmp_path):
    jl, _ = files
    with pytest.raises(DataError, match=r"waited 1 s for 2 shard\(s\) other processes pack.*shard-00001, shard-00003"
                                        r".*filesystem every node shares"):
        pack_source(DataSource(jl), 0, tok, 64, Split(0.0), tmp_path / "c", rank=0, world=2, shard_docs=2, wait_s=1)


def test_tokenizer_sample_round_robins_training_documents(files):
    jl, pq = files
    split = Split(0.3, seed=0)
    sample = tokenizer_sample([str(jl), str(pq)], split, max_chars=10**9)
    held = {t for k, p in enumerate((jl, pq)) for _, t, r in iter_roles(p, k, split) if r == HELD}
    assert sample and not set(sample) & held
    first = [t for _, t, r in iter_roles(jl, 0, split) if r == TRAIN][0]
    second = [t for _, t, r in iter_roles(pq, 1, split) if r == TRAIN][0]
    assert sample[:2] == [first, second]
    assert len(tokenizer_sample([str(jl), str(pq)], split, max_chars=1)) == 1


def test_phi1_pack_writes_what_train_then_reuses(files, tmp_path, capsys):
    jl, _ = files
    out = tmp_path / "run"
    flags = ["--out", str(out), "--data", str(jl), "--set", "seq_len=32", "--set", "pack_shard_docs=2",
             "--set", "tokenizer_train_chars=50000"]
    assert main(["pack", "pretrain", *flags, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"][0]["shards"] == 4 and stats["train_blocks"] > 0 and stats["workers"] == 1
    folder = out / "pretrain" / "data" / stats["sources"][0]["folder"]
    mtime = (folder / "done.json").stat().st_mtime_ns
    tok_mtime = (out / "pretrain" / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    assert main(["train", "pretrain", *flags, "--max-steps", "1", "--set", "batch_seqs=2", "--set", "micro_batch=2",
                 "--set", "humaneval_problems=1", "--set", "eval_blocks=1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["info"]["train_blocks"] == stats["train_blocks"]
    assert (folder / "done.json").stat().st_mtime_ns == mtime  # the pack was reused, not redone
    assert (out / "pretrain" / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == tok_mtime
    assert main(["pack", "pretrain", "--out", str(out), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: training data file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["pack", "pretrain", *flags, "--workers", "0"])
    assert exc.value.code == 2 and "argument --workers: '0': expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_phi1_pack_with_workers_equals_one_worker(files, tmp_path, capsys):
    jl, _ = files
    flags = ["--data", str(jl), "--set", "seq_len=32", "--set", "pack_shard_docs=2", "--set",
             "tokenizer_train_chars=50000", "--json"]
    assert main(["pack", "pretrain", "--out", str(tmp_path / "a"), *flags]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["pack", "pretrain", "--out", str(tmp_path / "b"), "--workers", "2", *flags]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["workers"] == 2 and two["train_blocks"] == one["train_blocks"]
    import datasets

    def blocks(root, stats):
        folder = root / "pretrain" / "data" / stats["sources"][0]["folder"]
        return [datasets.Dataset.from_file(str(p))["input_ids"] for p in sorted(folder.glob("*.train.arrow"))]

    assert blocks(tmp_path / "a", one) == blocks(tmp_path / "b", two)
