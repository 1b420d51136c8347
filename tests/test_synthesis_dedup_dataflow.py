"""Synthesis dedup through datatrove's MinHash stages (candidates) and the exact Jaccard (verdict): planted exact
and near copies of real functions are removed, each naming the record it copies, as the in-memory reference
decides; 2 tasks keep exactly the records 1 task keeps; the config's dedup settings are checked with one line
each."""

from __future__ import annotations

import inspect
import json
import random
import textwrap

import pytest

from phi1lib.dataflow import duplicates
from phi1lib.stage import FieldError
from phi1lib.synthesis.dedup import dedup_options, dedup_records, deduplicate, jaccard, shingles
from phi1lib.synthesis.stage import SynthesisConfig


def _records():
    """Real stdlib functions as exercise records, then planted copies: with one identifier renamed (a near
    duplicate, Jaccard 0.90-0.98 on word 5-grams) or upper-cased (an exact duplicate once case is folded).
    Returns (records, {planted id: id of the record it copies, "exact" or "near"})."""
    funcs = [f for mod in (textwrap, json, inspect) for _, f in inspect.getmembers(mod, inspect.isfunction)
             if f.__module__ == mod.__name__]
    texts: list[str] = []
    for t in sorted({inspect.getsource(f) for f in funcs if 60 < len(inspect.getsource(f).split()) < 400}):
        if len(texts) < 40 and all(jaccard(shingles(t), shingles(u)) < 0.5 for u in texts):
            texts.append(t)  # no natural near pairs (json.dump / json.dumps are one, Jaccard 0.8)
    records = [{"id": f"exercise-{i:03d}", "kind": "exercise", "text": t} for i, t in enumerate(texts)]
    rng = random.Random(0)
    planted = {}
    for k, i in enumerate(rng.sample(range(len(texts)), 8)):
        words = texts[i].split(" ")
        if k % 4 == 3:
            text = texts[i].upper()
        else:
            j = max(range(len(words)), key=lambda w: (words[w].isidentifier(), -abs(w - len(words) // 2)))
            words[j] = "renamed_name"
            text = " ".join(words)
        rid = f"copy-{k}"
        records.insert(rng.randrange(i + 1, len(records) + 1), {"id": rid, "kind": "exercise", "text": text})
        planted[rid] = (f"exercise-{i:03d}", "exact" if k % 4 == 3 else "near")
    return records, planted


def test_planted_copies_are_removed_naming_the_original_and_two_tasks_keep_what_one_keeps(tmp_path):
    records, planted = _records()
    kept1, dropped1 = dedup_records(records, tasks=1)
    kept2, dropped2 = dedup_records(records, tasks=2, workers=1, work_dir=tmp_path)
    assert [r["id"] for r in kept1] == [r["id"] for r in kept2]
    assert [(r["id"], r["reason"]) for r in dropped1] == [(r["id"], r["reason"]) for r in dropped2]
    reasons = {r["id"]: r["reason"] for r in dropped1}
    assert set(reasons) == set(planted)  # every planted copy caught, nothing else removed
    for rid, (orig, how) in planted.items():
        expected = f"exact duplicate of {orig}" if how == "exact" else f"near duplicate of {orig} (Jaccard 0.9"
        assert reasons[rid].startswith(expected), (rid, reasons[rid])
    # The same verdicts as the in-memory reference (datasketch LSH + exact Jaccard over every kept record).
    ref = deduplicate([r["text"] for r in records])
    assert reasons == {r["id"]: ref.reason(i, [x["id"] for x in records])
                       for i, r in enumerate(records) if ref.duplicate_of[i] is not None}
    assert [r["id"] for r in kept1] == [r["id"] for r in records if r["id"] not in planted]  # order kept
    assert all(r == next(x for x in records if x["id"] == r["id"]) for r in kept1)  # records unchanged
    # The work folder (named by the records) holds datatrove's output; a rerun reuses its finished tasks.
    (work,) = tmp_path.glob("dedup-*")
    assert len(list(duplicates(work))) == len(planted)
    assert dedup_records(records, tasks=2, workers=1, work_dir=tmp_path)[0] == kept2


def test_short_records_and_nothing_to_do():
    assert dedup_records([]) == ([], [])
    kept, dropped = dedup_records([{"id": "a", "text": "x"}, {"id": "b", "text": "X "}, {"id": "c", "text": "y"}])
    assert [r["id"] for r in kept] == ["a", "c"] and dropped[0]["reason"] == "exact duplicate of a"


def test_dedup_settings_on_the_config():
    config = SynthesisConfig.for_preset("tiny", dedup_tasks=4, dedup_workers=2)
    assert dedup_options(config) == dict(threshold=0.85, executor="local", tasks=4, workers=2, work_dir=None,
                                         cluster=None)
    assert config.fingerprint() == SynthesisConfig.for_preset("tiny").fingerprint()  # never forces a redo
    with pytest.raises(FieldError, match="dedup_executor='dask': expected one of local, slurm, ray"):
        SynthesisConfig.for_preset("tiny", dedup_executor="dask")
    with pytest.raises(FieldError, match="dedup_dir=None: expected a folder every slurm node"):
        SynthesisConfig.for_preset("tiny", dedup_executor="slurm")
    with pytest.raises(FieldError, match="dedup_tasks=0"):
        SynthesisConfig.for_preset("tiny", dedup_tasks=0)
    assert json.loads(json.dumps(config.to_dict()))["dedup_tasks"] == 4


def test_the_dedup_pipeline_as_its_list_of_blocks():
    from phi1lib.dataflow import MinhashSettings, describe, minhash_stages

    stages = minhash_stages("in", "work", tasks=3, settings=MinhashSettings.for_threshold(0.68))
    assert [(name, n) for name, _, n in stages] == [("signatures", 3), ("buckets", 15), ("clusters", 1), ("filter", 3)]
    lines = describe(stages).splitlines()
    assert lines[2] == "clusters (1 task): 🫂 - DEDUP 🎯 MinHash stage 3 (keep first)"
    assert lines[3].startswith("filter (3 tasks): 📖 - READER 🐿 Jsonl -> #️⃣ - HASH text hash -> 🫂 - DEDUP")


@pytest.mark.slow  # every Slurm array task is its own process (datatrove's launch_pickled_pipeline)
def test_on_slurm_the_four_stages_keep_what_the_local_executor_keeps(tmp_path, fake_slurm):
    """executor=slurm: the four MinHash stages are chained with `depends` and submitted together (each a job
    array, run here by a stand-in sbatch, every task its own process); the verdicts are the local executor's."""
    records, _ = _records()
    kept, dropped = dedup_records(records, tasks=2, workers=1, work_dir=tmp_path / "local")
    kept_s, dropped_s = dedup_records(records, executor="slurm", tasks=2, work_dir=tmp_path / "shared",
                                      cluster={"partition": "cpu", "time": "0:10:00"})
    assert [r["id"] for r in kept_s] == [r["id"] for r in kept]
    assert [(r["id"], r["reason"]) for r in dropped_s] == [(r["id"], r["reason"]) for r in dropped]
    submitted = [line for line in fake_slurm.read_text().splitlines() if line.startswith("sbatch")]
    assert len(submitted) == 8  # signatures, buckets, clusters, filter: a job array and its merge_stats job each
    assert sum("--dependency=afterok:" in line for line in submitted) == 3  # each stage waits for the one before
