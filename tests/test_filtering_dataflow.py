"""The filtering stage's pool goes through datatrove: the pool streamed into JSONL shards, the score pipeline
(the project's embedder + the saved classifier per shard) and the split pipeline (the global threshold) give the
scores a direct Embedder + classifier computation gives, with 1 task or 2; finished tasks are skipped on a rerun,
a failed task leaves the pipeline unfinished; executor settings are checked with one line each."""

from __future__ import annotations

import json
import sysconfig

import numpy as np
import pytest

from phi1lib import filtering
from phi1lib.dataflow import EmbedScore, make_executor, run_to_completion, task_device
from phi1lib.embed import Embedder
from phi1lib.errors import ConfigError, DataError, MissingDependency
from phi1lib.filtering import FilterConfig
from phi1lib.filtering import scoring
from phi1lib.filtering.classifier import save_classifier, train_classifier
from phi1lib.filtering.corpus import iter_corpus, load_corpus, write_shards
from phi1lib.filtering.stage import count_tokens, read_pool, scoring_pipeline
from phi1lib.filtering.view import sample_view
from phi1lib.stage import FieldError

STDLIB = sysconfig.get_paths()["stdlib"]
EMBED = dict(model="minilm-local", pooling="mean", max_length=32, batch_size=16, device="cpu", cache=False)


def _pool(folder, n=40, per_shard=10):
    records = iter_corpus(STDLIB, n, max_bytes=20_000)
    return write_shards(records, folder, per_shard, extra=lambda r: {"n_tokens": count_tokens(r["text"])})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A real pool of 40 standard-library files in 4 shards, a logistic regression fitted on their embeddings
    (labels: above-median length, any learnable rule will do), and the direct computation of every score."""
    tmp = tmp_path_factory.mktemp("dataflow")
    pool = _pool(tmp / "shards")
    recs = list(pool)
    views = [sample_view(r["text"], "outline") for r in recs]
    X = Embedder(**{**EMBED, "cache": tmp / "cache"}, progress=False).embed(views)
    y = np.array([len(r["text"]) > np.median([len(q["text"]) for q in recs]) for r in recs], dtype=int)
    clf = train_classifier(X, y, n_estimators=10, name="logreg", seed=0)
    clf_path = save_classifier(clf, tmp / "classifier.joblib", {"view": "outline"})
    direct = dict(zip([r["id"] for r in recs], scoring.classifier_model(str(clf_path)).predict_proba(X)[:, 1]))
    return tmp, pool, clf_path, direct


def _cached(tmp):
    """Embedder settings reading the fixture's vectors back (tests of what surrounds the embedding)."""
    return {**EMBED, "cache": tmp / "cache"}


def _run(pool, clf_path, work, tasks, threshold, workers=None, embed=EMBED):
    flow = scoring.Dataflow(work, tasks=tasks, workers=workers)
    flow.prepare("score", {"run": 1})
    score = flow.run("score", scoring.scoring_blocks(pool, flow, embed, clf_path, "outline", batch_size=8))
    flow.prepare("split", {"run": 1, "threshold": threshold})
    split = flow.run("split", scoring.split_blocks(pool, flow, threshold))
    return flow, score, split


def _ids(folder):
    return [json.loads(line)["id"] for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_pool_shards_stream_and_keep_stable_ids(tmp_path):
    pool = _pool(tmp_path / "shards", n=25, per_shard=10)
    assert len(pool) == 25 and [f.name for f in pool.files] == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    recs = list(pool)
    assert [r["id"] for r in recs] == [r["id"] for r in load_corpus(STDLIB, 25, max_bytes=20_000)]
    assert [r["shard"] for r in recs] == ["00000"] * 10 + ["00001"] * 10 + ["00002"] * 5
    assert all(r["n_tokens"] == count_tokens(r["text"]) for r in recs)
    assert [r["id"] for r in pool.take([7, 3, 21])] == [recs[7]["id"], recs[3]["id"], recs[21]["id"]]
    assert pool.texts([recs[12]["id"]]) == {recs[12]["id"]: recs[12]["text"]}
    again = _pool(tmp_path / "shards", n=12, per_shard=10)  # rewriting replaces every old shard
    assert len(again) == 12 and sorted(p.name for p in (tmp_path / "shards").glob("*.jsonl")) == \
        ["00000.jsonl", "00001.jsonl"]


def test_two_tasks_equal_one_task_and_the_direct_scores(scored):
    tmp, pool, clf_path, direct = scored
    threshold = float(np.median(list(direct.values())))
    # 1 task reading the fixture's vectors back; 2 tasks (one after the other in this process: the spawned workers
    # of the stage's default are in the slow test below) embedding afresh
    one, score1, _ = _run(pool, clf_path, tmp / "one", tasks=1, threshold=threshold, embed=_cached(tmp))
    two, score2, _ = _run(pool, clf_path, tmp / "two", tasks=2, threshold=threshold, workers=1)
    ids = [r["id"] for r in pool]
    for flow in (one, two):
        got = {i: s for f in pool.files for i, s in scoring.shard_scores(flow.folder("score") / "embeddings",
                                                                           f.stem).items()}
        assert sorted(got) == sorted(ids)
        np.testing.assert_allclose([got[i] for i in ids], [direct[i] for i in ids], atol=1e-5)
        # per-shard embeddings keyed by sample id, one file per pool shard
        with np.load(flow.folder("score") / "embeddings" / "00002.npz") as z:
            assert z["ids"].tolist() == ids[20:30] and z["vectors"].shape == (10, 384)
    expect_kept = [i for i in ids if direct[i] >= threshold]
    assert 0 < len(expect_kept) < len(ids)
    assert _ids(one.folder("split") / "kept") == _ids(two.folder("split") / "kept") == expect_kept
    assert _ids(two.folder("split") / "dropped") == [i for i in ids if direct[i] < threshold]
    assert len(score1["peak_rss_mb"]) == 1 and len(score2["peak_rss_mb"]) == 2
    assert all(p > 100 for p in score2["peak_rss_mb"])  # torch and the embedder are loaded
    # 2 tasks: every text went through the model (a view shared by two files is embedded once per task at most);
    # 1 task: every vector came from the cache the fixture filled.
    assert 35 <= score2["stats"]["embed + classify/embedded"] <= 40 and score2["stats"]["embed + classify/scored"] == 40
    assert score1["stats"].get("embed + classify/embedded", 0) == 0
    assert score1["stats"]["embed + classify/cache_hits"] == 40


def test_merge_writes_the_contracted_parquet_files(scored, tmp_path):
    import pandas as pd

    tmp, pool, clf_path, direct = scored
    threshold = float(np.median(list(direct.values())))
    flow, _, _ = _run(pool, clf_path, tmp_path / "work", tasks=2, threshold=threshold, workers=1, embed=_cached(tmp))
    first = next(iter(pool))["id"]
    files, extremes, totals = scoring.merge_outputs(pool, flow, {first: {"rating": 5, "label": 1, "split": "test"}},
                                                    threshold, tmp_path, n_examples=3)
    p, kept, dropped = (pd.read_parquet(files[k]) for k in ("pool", "kept", "dropped"))
    assert list(p.columns) == scoring.POOL_COLUMNS and list(kept.columns) == filtering.OUT_COLUMNS
    assert p["id"].tolist() == [r["id"] for r in pool]
    assert p.loc[p["kept"], "id"].tolist() == kept["id"].tolist() and len(kept) + len(dropped) == 40
    assert (kept["score"] >= threshold).all() and (dropped["score"] < threshold).all()
    assert p.loc[0, "rating"] == 5 and p.loc[0, "split"] == "test" and p["rating"].isna().sum() == 39
    assert totals == {"pool_samples": 40, "kept_samples": len(kept), "pool_tokens": int(p["n_tokens"].sum()),
                      "kept_tokens": int(kept["n_tokens"].sum())}
    assert [r["score"] for r in extremes["high"]] == sorted(p["score"], reverse=True)[:3]
    assert [r["score"] for r in extremes["low"]] == sorted(p["score"])[:3]
    # A kept file that disagrees with the scores is an error, not a result.
    next((flow.folder("split") / "kept").glob("00000.*.jsonl")).write_text("")
    with pytest.raises(DataError, match="the split pipeline wrote 0 kept samples"):
        scoring.merge_outputs(pool, flow, {}, threshold, tmp_path / "again", n_examples=3)
    assert not (tmp_path / "again" / "pool.parquet").exists()


class _FailOnRank:
    """A block that fails in one task (the others pass their documents through)."""

    name, type = "fail", "test"

    def __init__(self, rank):
        self.rank = rank

    def __call__(self, data, rank=0, world_size=1):
        if rank == self.rank:
            raise RuntimeError(f"task {rank} crashed")
        yield from data


def test_a_failed_task_leaves_it_unfinished_and_a_rerun_does_only_that_one(scored, tmp_path):
    tmp, pool, clf_path, _ = scored
    flow = scoring.Dataflow(tmp_path / "work", tasks=2, workers=1)
    key = {"run": 1}
    flow.prepare("score", key)
    blocks = scoring.scoring_blocks(pool, flow, _cached(tmp), clf_path, "outline", batch_size=8)
    with pytest.raises(RuntimeError, match="task 1 crashed"):
        flow.run("score", [blocks[0], _FailOnRank(1), *blocks[1:]])
    emb = flow.folder("score") / "embeddings"
    assert sorted(p.name for p in emb.glob("*.npz")) == ["00000.npz", "00002.npz"]  # task 0 read shards 0 and 2
    before = {p.name: p.stat().st_mtime_ns for p in emb.glob("*.npz")}
    flow.prepare("score", key)  # same key: the finished task is kept
    flow.run("score", scoring.scoring_blocks(pool, flow, _cached(tmp), clf_path, "outline", batch_size=8))
    assert sorted(p.name for p in emb.glob("*.npz")) == ["00000.npz", "00001.npz", "00002.npz", "00003.npz"]
    assert {n: (emb / n).stat().st_mtime_ns for n in before} == before  # task 0 was not run again
    flow.prepare("score", {"run": 2})  # another key: nothing of the old run is reused
    assert not emb.exists()


def test_run_to_completion_names_unfinished_tasks(tmp_path):
    class Unfinished:  # an executor whose task 1 never marked itself complete (a Slurm job that died)
        world_size, job_id = 2, None

        class logging_dir:
            path = str(tmp_path)

        def run(self):
            pass

        def get_incomplete_ranks(self, skip_completed=None):
            return [1]

    with pytest.raises(DataError, match=r"score pipeline: 1 of 2 tasks did not finish \(ranks 1\).*redoes only"):
        run_to_completion(Unfinished(), what="score pipeline")


def test_executor_settings_are_checked_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(FieldError, match="executor"):
        FilterConfig.for_preset("tiny", executor="dask")
    with pytest.raises(FieldError, match="cluster"):
        FilterConfig.for_preset("tiny", cluster={"partition": "cpu"})
    for bad in (dict(tasks=0), dict(workers=0), dict(shard_samples=0)):
        with pytest.raises(FieldError, match=next(iter(bad))):
            FilterConfig.for_preset("tiny", **bad)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(MissingDependency, match="executor slurm: `sbatch` is not on this machine's PATH"):
        make_executor("slurm", [], tasks=2, logging_dir=str(tmp_path), partition="cpu", time="1:00:00")
    cfg = FilterConfig.for_preset("tiny", executor="slurm", cluster={"partition": "cpu", "time": "1:00:00"})
    with pytest.raises(MissingDependency, match="sbatch"):  # refused before any work
        filtering.run(cfg, filtering_run_dir(tmp_path), progress=False)
    assert not (tmp_path / "run" / "filtering" / "shards").exists()
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        with pytest.raises(MissingDependency, match=r'executor ray: the ray package is not installed; pip install'):
            make_executor("ray", [], tasks=2, logging_dir=str(tmp_path))


def filtering_run_dir(tmp_path):
    from phi1lib.runs import RunDir

    return RunDir(tmp_path / "run")


def test_datatrove_settings_do_not_change_the_fingerprint():
    base = FilterConfig.for_preset("tiny")
    assert base.executor == "local" and base.tasks == 2
    for change in (dict(tasks=5), dict(workers=1), dict(shard_samples=7), dict(embed_cache=False),
                   dict(executor="ray", cluster={"address": "auto"})):
        assert FilterConfig.for_preset("tiny", **change).fingerprint() == base.fingerprint(), change


def test_each_task_gets_its_own_device(monkeypatch):
    import torch

    assert task_device("cpu", 3) == "cpu" and task_device("cuda:1", 3) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [task_device("cuda", r) for r in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="device='cuda': torch sees no CUDA device"):
        task_device("cuda", 0)


def test_the_pipeline_as_its_blocks(tmp_path):
    blocks = scoring_pipeline(FilterConfig.for_preset("tiny"), tmp_path / "filtering")
    assert [b.name for b in blocks["score"]] == ["🐿 Jsonl", "embed + classify", "peak memory"]
    assert [b.name for b in blocks["split"]] == ["🐿 Jsonl", "scores per shard", "score threshold", "🐿 Jsonl",
                                                 "peak memory"]
    assert isinstance(blocks["score"][1], EmbedScore) and blocks["split"][2].threshold == 0.5
    assert not (tmp_path / "filtering").exists()  # building the blocks runs and creates nothing


def test_read_pool_refuses_a_tiny_corpus(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("x = 1\n")
    with pytest.raises(DataError, match="gave 1 usable samples"):
        read_pool(FilterConfig.for_preset("tiny", corpus=str(code)), tmp_path / "shards")


# ---- the whole stage (slow: annotates, trains and scores 60 files three times) ------------------------------

def _stage_config(**overrides) -> FilterConfig:
    return FilterConfig.for_preset("tiny", **{**dict(corpus=STDLIB, corpus_samples=60, annotate_samples=48,
                                                     n_estimators=50), **overrides})


@pytest.mark.slow
def test_stage_with_two_tasks_keeps_what_one_task_and_the_in_process_scorer_keep(tmp_path, monkeypatch):
    import pandas as pd

    from phi1lib.runs import RunDir

    two = filtering.run(_stage_config(tasks=2, workers=2), RunDir(tmp_path / "two"), progress=False)
    one = filtering.run(_stage_config(tasks=1), RunDir(tmp_path / "one"), progress=False)
    def counts(res):  # the second run reads the first one's vectors from the embedding cache
        return {k: v for k, v in res.counts.items() if k != "embedded_by_model"}

    assert one.fingerprint == two.fingerprint and counts(one) == counts(two) and one.threshold == two.threshold
    p1, p2 = (pd.read_parquet(r.files["pool"]) for r in (one, two))
    assert p1["id"].tolist() == p2["id"].tolist()
    np.testing.assert_allclose(p1["score"], p2["score"], atol=1e-9)
    k1, k2 = (pd.read_parquet(r.files["kept"]) for r in (one, two))
    assert k1["id"].tolist() == k2["id"].tolist() == p2.loc[p2["score"] >= two.threshold, "id"].tolist()
    # The in-process scorer (datasets.map, what the stage used before datatrove) gives the same scores.
    ref = filtering.score_pool(p2["text"].tolist(), filtering.stage.embedder_settings(_stage_config()),
                               two.files["classifier"], progress=False)
    np.testing.assert_allclose(ref, p2["score"], atol=1e-9)
    assert two.dataflow["tasks"] == 2 and two.dataflow["workers"] == 2  # two spawned processes at once
    assert len(two.dataflow["peak_rss_mb"]["score"]) == 2 and all(p > 100 for p in two.dataflow["peak_rss_mb"]["score"])
    assert len(one.dataflow["peak_rss_mb"]["score"]) == 1

    # A task that fails leaves the stage unfinished (no result.json); the rerun redoes only that task.
    calls = []

    def crash_second_task(path):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("scoring task crashed")
        return load(path)

    load = scoring.classifier_model
    monkeypatch.setattr(scoring, "classifier_model", crash_second_task)
    run_dir = RunDir(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="scoring task crashed"):
        filtering.run(_stage_config(tasks=2, workers=1), run_dir, progress=False)
    out = tmp_path / "crash" / "filtering"
    assert not (out / "result.json").exists() and not (out / "kept.parquet").exists()
    emb = out / "dataflow" / "score" / "embeddings"
    assert [p.name for p in emb.glob("*.npz")] == ["00000.npz"]
    first = (emb / "00000.npz").stat().st_mtime_ns
    monkeypatch.setattr(scoring, "classifier_model", load)
    done = filtering.run(_stage_config(tasks=2, workers=1), run_dir, progress=False)
    assert (emb / "00000.npz").stat().st_mtime_ns == first  # the finished task was skipped
    assert counts(done) == counts(two) and (out / "result.json").is_file()
