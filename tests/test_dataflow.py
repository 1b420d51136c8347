"""Data stages on datatrove: MinHash dedup catches planted near-duplicates and keeps the rest; a 2-task local run
keeps exactly what a 1-task run keeps; the stand-in scorer and threshold are per-document blocks; bad settings
get one line."""

from __future__ import annotations

import json
import random

import pytest

from phi1lib.dataflow import (HashEmbedScore, MinhashSettings, PeakMemory, ScoreFilter, make_executor,
                              minhash_dedup, read_peaks)
from phi1lib.errors import ConfigError


def _corpus(folder, n=240, files=3, seed=0):
    """Random 'code' documents; every 8th is an earlier document with one identifier renamed (a near
    duplicate, Jaccard ~0.97 on 5-grams: caught with probability > 0.999) and every 40th an exact copy.
    Returns (docs, {duplicate id: id of the document it copies})."""
    rng = random.Random(seed)
    names = [f"name{i}" for i in range(300)]
    docs, planted = [], {}
    for i in range(n):
        if i and i % 40 == 0:
            text = docs[i - 3]["text"]
            planted[f"d{i}"] = f"d{i - 3}"
        elif i % 8 == 7:
            words = docs[i - 4]["text"].split(" ")
            words[len(words) // 2] = "renamed_identifier"
            text = " ".join(words)
            planted[f"d{i}"] = f"d{i - 4}"
        else:
            text = " ".join(f"def {rng.choice(names)}({rng.choice(names)}): return {rng.choice(names)} + 1"
                            for _ in range(40))
        docs.append({"id": f"d{i}", "text": text})
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        (folder / f"part{k}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[k::files]))
    return docs, planted


def _ids(folder):
    return sorted(json.loads(line)["id"] for f in folder.glob("*.jsonl") for line in f.read_text().splitlines())


def test_settings_for_a_threshold_and_the_catch_curve():
    s = MinhashSettings.for_threshold(0.85)
    assert (s.num_buckets, s.hashes_per_bucket) == (MinhashSettings().num_buckets, MinhashSettings().hashes_per_bucket)
    assert abs(s.threshold - 0.85) < 0.01 and s.num_buckets * s.hashes_per_bucket <= 128
    assert s.catch_probability(0.95) > 0.99 and s.catch_probability(0.5) < 0.01
    assert MinhashSettings.for_threshold(0.7).threshold < s.threshold


def test_executor_kinds_and_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="expected one of local, slurm, ray"):
        make_executor("dask", [], tasks=1, logging_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="tasks=0"):
        make_executor("local", [], tasks=0, logging_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown settings"):
        make_executor("local", [], tasks=1, logging_dir=str(tmp_path), partition="cpu")


def test_hash_embed_score_is_deterministic_and_in_range():
    a, b = HashEmbedScore(seed=0), HashEmbedScore(seed=0)
    texts = ["def add(a, b):\n    return a + b\n", "x = 1", ""]
    assert [a.score(t) for t in texts] == [b.score(t) for t in texts]
    assert all(0 < a.score(t) < 1 for t in texts) and a.score(texts[0]) != a.score(texts[1])


@pytest.mark.slow
def test_minhash_dedup_two_tasks_equal_one_and_catch_the_planted_duplicates(tmp_path):
    """Each duplicate cluster keeps exactly one document, with 1 or 2 tasks alike. Which member survives is the
    first one datatrove's tasks read (it depends on how files are split over tasks), so the runs are compared by
    clusters: the same number kept, and of every planted pair exactly one kept."""
    docs, planted = _corpus(tmp_path / "in")
    one = minhash_dedup(tmp_path / "in", tmp_path / "one", tasks=1)
    two = minhash_dedup(tmp_path / "in", tmp_path / "two", tasks=2, extra_blocks=(PeakMemory(str(tmp_path / "mem")),))
    assert one["documents"] == two["documents"] == len(docs)
    originals = {d["id"] for d in docs} - set(planted)
    for run in ("one", "two"):
        kept = set(_ids(tmp_path / run / "kept"))
        assert len(kept) == len(docs) - len(planted)  # every planted duplicate caught, nothing else removed
        for dup, orig in planted.items():
            assert (dup in kept) + (orig in kept) <= 1, (run, dup, orig)
        assert kept | set(_ids(tmp_path / run / "removed")) == {d["id"] for d in docs}
        assert len(originals - kept) <= len(planted)
    assert len(read_peaks(tmp_path / "mem")) == 2 and all(p > 0 for p in read_peaks(tmp_path / "mem"))
    again = minhash_dedup(tmp_path / "in", tmp_path / "one", tasks=1)  # finished tasks are skipped on a rerun
    assert again["kept"] == one["kept"]


@pytest.mark.slow
def test_score_and_threshold_blocks_split_over_tasks(tmp_path):
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    docs, _ = _corpus(tmp_path / "in", n=120)
    scorer = HashEmbedScore()
    cut = sorted(scorer.score(d["text"]) for d in docs)[len(docs) // 2]
    for tasks in (1, 2):
        make_executor("local", [JsonlReader(str(tmp_path / "in")), HashEmbedScore(), ScoreFilter(cut),
                                JsonlWriter(str(tmp_path / f"kept{tasks}"), compression=None)],
                      tasks=tasks, logging_dir=str(tmp_path / f"logs{tasks}")).run()
    expect = sorted(d["id"] for d in docs if scorer.score(d["text"]) >= cut)
    assert _ids(tmp_path / "kept1") == _ids(tmp_path / "kept2") == expect


def _contiguous(tmp_path, n=160, files=2):
    """_corpus's documents rewritten as `files` contiguous runs (file k = task k), so that reading order is the
    corpus order however many tasks read them."""
    docs, planted = _corpus(tmp_path / "all", n=n, files=1)
    size = -(-len(docs) // files)
    (tmp_path / "in").mkdir()
    for k in range(files):
        part = docs[k * size:(k + 1) * size]
        (tmp_path / "in" / f"part{k}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in part))
    return docs, planted


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_two_tasks_keep_exactly_the_documents_one_task_keeps_the_earliest_of_each_cluster(tmp_path, workers):
    """KeepFirstCluster: of each duplicate cluster the document read first is kept, so on contiguous shards a
    2-task run keeps the same ids as a 1-task run (workers=2: the tasks in a spawned pool), and every planted
    copy is removed in favour of the original it copies, which `duplicates` names."""
    from phi1lib.dataflow import duplicates

    docs, planted = _contiguous(tmp_path)
    one = minhash_dedup(tmp_path / "in", tmp_path / "one", tasks=1, workers=1)
    two = minhash_dedup(tmp_path / "in", tmp_path / "two", tasks=2, workers=workers)
    assert _ids(tmp_path / "one" / "kept") == _ids(tmp_path / "two" / "kept") == \
        sorted(d["id"] for d in docs if d["id"] not in planted)
    pairs = sorted((a, b) for a, b, _ in duplicates(tmp_path / "two"))
    assert pairs == sorted(planted.items())
    exact = {a for a, _, is_exact in duplicates(tmp_path / "two") if is_exact}
    assert exact == {d for d in planted if int(d[1:]) % 40 == 0}  # the verbatim copies, not the renamed ones
    assert set(two["seconds"]) == {"signatures", "buckets", "clusters", "filter"}


def test_short_documents_get_one_shingle_so_exact_copies_are_caught(tmp_path):
    from phi1lib.dataflow import CodeWordTokenizer, duplicates

    assert CodeWordTokenizer(min_words=5).word_tokenize("x = 1") == ["x = 1", "", "", "", ""]
    assert CodeWordTokenizer(min_words=5).word_tokenize("a b c d e f") == list("abcdef")
    (tmp_path / "in").mkdir()
    docs = [{"id": "a", "text": "x = 1"}, {"id": "b", "text": "y = 2"}, {"id": "c", "text": "X =  1"}]
    (tmp_path / "in" / "part0.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    minhash_dedup(tmp_path / "in", tmp_path / "w", tasks=1, workers=1, quiet=True)
    assert list(duplicates(tmp_path / "w")) == [("c", "a", True)]
