"""Decontamination as datatrove blocks, per shard: on records with planted HumanEval copies, 2 tasks give the same
verdicts (n-gram hits, AST matches, each problem's nearest record by embedding) as the stage's in-process
functions, and the planted copies are the ones found."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from phi1lib.dataflow import make_executor
from phi1lib.decontam.blocks import BenchmarkSide, collect, decontam_pipeline
from phi1lib.decontam.stage import DecontamConfig, ast_matches, benchmark_problems, embedding_neighbours, ngram_overlap


def _records(problems):
    """Clean records (stdlib functions) and three planted ones: a verbatim HumanEval solution, one with every
    identifier renamed (an AST match, no shared 13-gram), and prose quoting 13+ words of a docstring."""
    clean = [inspect.getsource(f) for f in (textwrap.dedent, textwrap.indent, textwrap.shorten, json.dumps,
                                            json.loads, inspect.cleandoc)]
    recs = [{"id": f"clean-{i}", "kind": "exercise", "text": t} for i, t in enumerate(clean)]
    verbatim = problems[2]["text"]
    renamed = problems[7]["text"]
    for name in ("strings", "substring", "x", "filter_by_substring"):
        renamed = renamed.replace(name, name[::-1] + "_q")
    quote = "Some prose. " + " ".join(problems[11]["text"].split('"""')[1].split()[:20]) + " The end."
    recs[2:2] = [{"id": "planted-verbatim", "kind": "exercise", "text": verbatim},
                 {"id": "planted-renamed", "kind": "exercise", "text": renamed}]
    recs.append({"id": "planted-quote", "kind": "textbook", "text": quote})
    return recs


def _run(tmp_path, recs, problems, embedder):
    (tmp_path / "in").mkdir()
    for k in range(2):  # two shards, one per task
        (tmp_path / "in" / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[k::2]))
    BenchmarkSide.build(problems, tmp_path / "bench", ngram=13, embedder=embedder, max_length=128)
    pipeline = decontam_pipeline(tmp_path / "in", tmp_path / "work", tmp_path / "bench", tau_min=0.8,
                                 embedder=embedder, max_length=128, device="cpu")
    make_executor("local", pipeline, tasks=2, workers=1, logging_dir=str(tmp_path / "logs")).run()
    return collect(tmp_path / "work", tmp_path / "bench", flag_l2=0.35)


def test_ngram_and_ast_blocks_per_shard_equal_the_in_process_measures(tmp_path):
    problems = benchmark_problems(DecontamConfig(embedder=None))["humaneval"]
    recs = _records(problems)
    got = _run(tmp_path, recs, problems, embedder=None)
    key = lambda h: (h["task_id"], h["record_id"], h["shared"], h["kind"])  # noqa: E731
    expected_ngram = ngram_overlap(recs, problems, 13)
    assert sorted(map(key, got["ngram"])) == sorted(map(key, expected_ngram))
    assert {h["record_id"] for h in got["ngram"]} == {"planted-verbatim", "planted-quote"}
    expected_ast, _ = ast_matches(recs, problems, 0.8)
    rows = lambda rs: sorted((r["task_id"], r["record_id"], round(r["rate"], 9)) for r in rs)  # noqa: E731
    assert rows(got["ast"]) == rows(expected_ast)
    assert {(r["record_id"], r["task_id"]) for r in got["ast"] if r["rate"] == 1.0} >= {
        ("planted-verbatim", problems[2]["task_id"]), ("planted-renamed", problems[7]["task_id"])}
    assert got["embedding"] == []


@pytest.mark.slow
def test_embedding_block_per_shard_finds_each_problems_nearest_record_like_the_stage(tmp_path):
    config = DecontamConfig(embed_max_length=128)
    problems = benchmark_problems(config)["humaneval"][:20]
    recs = _records(problems)
    got = _run(tmp_path, recs, problems, embedder=config.embedder)
    expected = embedding_neighbours(recs, problems, config, progress=False)
    assert [(r["task_id"], r["record_id"], r["flagged"]) for r in got["embedding"]] == \
        [(r["task_id"], r["record_id"], r["flagged"]) for r in expected]
    assert [r["l2"] for r in got["embedding"]] == pytest.approx([r["l2"] for r in expected], abs=1e-4)
    assert next(r for r in got["embedding"] if r["task_id"] == problems[2]["task_id"])["record_id"] == \
        "planted-verbatim"


def test_the_verdicts_are_collected_without_holding_the_records(tmp_path):
    """collect reads the tasks' files line by line and keeps only the records with a verdict, without their text:
    its memory grows with the hits, not the corpus."""
    from phi1lib.decontam.blocks import _verdicts

    problems = benchmark_problems(DecontamConfig(embedder=None))["humaneval"]
    recs = _records(problems)
    _run(tmp_path, recs, problems, embedder=None)
    kept = list(_verdicts([tmp_path / "work"]))
    assert sorted(doc["id"] for _, doc in kept) == ["planted-quote", "planted-renamed", "planted-verbatim"]
    assert all(set(doc) == {"id", "metadata"} for _, doc in kept)  # no text carried along


def test_record_files_are_streamed_into_the_same_shards_as_lists(tmp_path):
    """measure's input: a checked JSONL read as a stream (RecordFile) splits into the same contiguous shards as
    the records in a list, by shard_bounds, including an empty last shard."""
    from phi1lib.decontam.blocks import RecordFile, _write_shards, shard_bounds

    recs = [{"id": f"r{i}", "kind": "exercise", "text": f"def f{i}(): return {i}"} for i in range(9)]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert shard_bounds(9, 4) == [(0, 3), (3, 6), (6, 9), (9, 9)] and shard_bounds(2, 8) == [(0, 1), (1, 2)]
    n_file = _write_shards(RecordFile(path, 9), 9, tmp_path / "a", 4, offset=5)
    n_list = _write_shards(recs, 9, tmp_path / "b", 4, offset=5)
    assert n_file == n_list == 4
    for k in range(4):
        a = (tmp_path / "a" / f"part{k:05d}.jsonl").read_text()
        assert a == (tmp_path / "b" / f"part{k:05d}.jsonl").read_text()
    rows = [json.loads(x) for x in (tmp_path / "a" / "part00001.jsonl").read_text().splitlines()]
    assert [(r["id"], r["pos"]) for r in rows] == [("r3", 8), ("r4", 9), ("r5", 10)]
