"""Decontamination: each measure on known pairs, exact candidate pruning, and the stage's split files."""

from __future__ import annotations

import inspect
import json
import re
import textwrap

import pytest

from phi1lib import budget, decontam
from phi1lib.decontam import DecontamConfig
from phi1lib.decontam.ast_match import ASTIndex, ast_sequence, match_all, match_rate
from phi1lib.decontam.stage import ast_matches, benchmark_problems, ngram_overlap, split_table
from phi1lib.errors import ConfigError, DataError
from phi1lib.jsonl import read_jsonl, write_jsonl
from phi1lib.problems import load_humaneval
from phi1lib.runs import RunDir
from phi1lib.stage import StaleResult

HE = {p["task_id"]: p for p in load_humaneval()}
UNRELATED = inspect.getsource(textwrap.dedent)


def renamed_copy(task_id: str) -> str:
    """The HumanEval solution with every user identifier renamed and the docstring rewritten."""
    p = HE[task_id]
    src = p["prompt"] + p["canonical_solution"]
    tree_names = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", src))
    import ast
    import builtins
    import keyword

    user = {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)} | \
           {a.arg for a in ast.walk(ast.parse(src)) if isinstance(a, ast.arg)} | {p["entry_point"]}
    user -= set(dir(builtins)) | set(keyword.kwlist) | {"List", "Tuple", "Optional", "Any"}
    for i, name in enumerate(sorted(user & tree_names)):
        src = re.sub(rf"\b{name}\b", f"renamed_{i}", src)
    return re.sub(r'""".*?"""', '"""Totally different words here."""', src, count=1, flags=re.S)


def test_renamed_humaneval_copy_is_caught_and_unrelated_is_not():
    for tid in ("HumanEval/0", "HumanEval/12", "HumanEval/31"):
        ref = ast_sequence(HE[tid]["prompt"] + HE[tid]["canonical_solution"])
        copy = renamed_copy(tid)
        assert copy != HE[tid]["prompt"] + HE[tid]["canonical_solution"]
        assert match_rate(ast_sequence(copy), ref) == 1.0
    refs = [ast_sequence(p["prompt"] + p["canonical_solution"]) for p in HE.values()]
    best = max(match_rate(ast_sequence(UNRELATED), r) for r in refs)
    assert best < 0.8  # an unrelated real function is below the loosest tau


def test_small_edit_lowers_the_rate_proportionally():
    src = HE["HumanEval/0"]["prompt"] + HE["HumanEval/0"]["canonical_solution"]
    a = ast_sequence(src)
    b = ast_sequence(src.replace("distance < threshold", "distance <= threshold"))  # Lt -> LtE: one node
    assert match_rate(a, b) == pytest.approx(1 - 1 / len(a))
    assert ast_sequence("def broken(:") is None


def test_candidate_filtering_gives_the_naive_answer():
    refs = [ast_sequence(p["prompt"] + p["canonical_solution"]) for p in HE.values()]
    queries = refs[:60] + [ast_sequence(renamed_copy("HumanEval/5")), ast_sequence(UNRELATED), None]
    for tau in (0.95, 0.8, 0.6):
        fast, stats = match_all(queries, refs, tau)
        slow, _ = match_all(queries, refs, tau, naive=True)
        key = lambda ms: sorted((m.query, m.ref, round(m.rate, 12)) for m in ms)  # noqa: E731
        assert key(fast) == key(slow)
        assert stats["edit_distances"] < stats["pairs_total"] / 4  # the bounds prune most pairs
    idx = ASTIndex(refs)
    assert idx.query(ast_sequence(renamed_copy("HumanEval/5")), 0.95)[0][0] == list(HE).index("HumanEval/5")


def test_13gram_overlap_on_known_pairs():
    problems = [{"task_id": t, "text": HE[t]["prompt"] + HE[t]["canonical_solution"]} for t in ("HumanEval/0", "HumanEval/1")]
    sentence = "Check if in given list of numbers, are any two numbers closer to each other than given threshold."
    records = [
        {"id": "copies-doc", "text": f"def g():\n    '''{sentence}'''\n"},  # 18 words of HumanEval/0's docstring
        {"id": "short", "text": "check if in given list of numbers are any two"},  # only 10 words
        {"id": "unrelated", "text": UNRELATED},
    ]
    hits = ngram_overlap(records, problems, n=13)
    assert [(h["task_id"], h["record_id"]) for h in hits] == [("HumanEval/0", "copies-doc")]
    assert hits[0]["shared"] == 18 - 13 + 1
    assert len(ngram_overlap(records, problems, n=8)) == 2  # the 10-word fragment shares 8-grams


def test_split_table_shape_and_monotonicity():
    problems = [{"task_id": f"T/{i}", "text": ""} for i in range(4)]
    records = [{"id": f"r{i}"} for i in range(5)]
    matches = [{"task_id": "T/0", "record_id": "r0", "rate": 1.0}, {"task_id": "T/1", "record_id": "r1", "rate": 0.91},
               {"task_id": "T/1", "record_id": "r2", "rate": 0.86}, {"task_id": "T/2", "record_id": "r2", "rate": 0.81}]
    split = split_table(matches, problems, len(records), (0.95, 0.9, 0.85, 0.8))
    assert split["0.95"] == {"similar": ["T/0"], "non_similar": ["T/1", "T/2", "T/3"], "removed": 1, "kept": 4}
    assert split["0.9"]["similar"] == ["T/0", "T/1"] and split["0.9"]["removed"] == 2
    assert split["0.85"]["removed"] == 3 and split["0.8"]["similar"] == ["T/0", "T/1", "T/2"]
    assert split["0.8"]["removed"] == 3  # r2 counted once although it matches two problems


def _synthesis(folder, exercises, textbooks=None):
    write_jsonl(folder / "synthesis" / "exercises.jsonl", exercises)
    if textbooks is not None:
        write_jsonl(folder / "synthesis" / "textbooks.jsonl", textbooks)
    return RunDir(folder)


@pytest.fixture
def contaminated(tmp_path):
    """A run folder whose synthesis stage wrote a renamed HumanEval/0, two unrelated functions and a textbook."""
    recs = [{"id": "ex-copy", "kind": "exercise", "text": renamed_copy("HumanEval/0")},
            {"id": "ex-unrelated", "kind": "exercise", "text": UNRELATED},
            {"id": "ex-indent", "kind": "exercise", "text": inspect.getsource(textwrap.indent)}]
    return _synthesis(tmp_path / "run", recs, [{"id": "tb-1", "kind": "textbook", "text": "Check if in given list of "
                                                "numbers, are any two numbers closer to each other than given threshold."}])


def test_stage_writes_the_split_contract(contaminated):
    res = decontam.run(DecontamConfig(embedder=None), contaminated, progress=False)
    out = contaminated.path("decontam")
    split = json.loads((out / "humaneval_split.json").read_text())
    assert list(split) == ["0.95", "0.9", "0.85", "0.8"]
    for tau, s in split.items():
        assert set(s) >= {"similar", "non_similar", "removed"}
        assert len(s["similar"]) + len(s["non_similar"]) == 164
        assert "HumanEval/0" in s["similar"] and s["removed"] == 1
        pruned = read_jsonl(res.pruned[tau])
        assert [r["id"] for r in pruned] == ["ex-unrelated", "ex-indent"]
    assert res.ngram_hits == 1  # the textbook sentence copied from HumanEval/0's docstring
    assert [r["similar"] for r in res.table] == [1, 1, 1, 1] and res.table[0]["paper_similar"] == 71
    assert (out / "result.json").exists() and (out / "table3.csv").exists()
    assert res.usage.wall_s > 0 and set(res.seconds) >= {"read", "measure", "write", "total"}
    assert set(res.metrics["dataflow"]["block_seconds"]) == {"ngram", "ast"}  # no embedder: no embedding block
    assert res.ast_stats["pairs_total"] == 3 * 164 and res.ast_stats["unparsable_records"] == 0
    again = decontam.run(DecontamConfig(embedder=None), contaminated, progress=False)
    assert again.table == res.table and again.finished_at == res.finished_at  # stored, not redone
    assert res.stand_in is None  # no record came from the extractive stand-in


def test_checking_the_stand_ins_records_is_labelled(tmp_path):
    recs = [{"id": "ex-indent", "kind": "exercise", "generator": "extractive-stand-in",
             "text": inspect.getsource(textwrap.indent)},
            {"id": "ex-unrelated", "kind": "exercise", "generator": "gpt-3.5-turbo", "text": UNRELATED}]
    res = decontam.run(DecontamConfig(embedder=None), _synthesis(tmp_path / "run", recs), progress=False)
    assert res.stand_in.startswith("checks 1 of 2 records made by the extractive stand-in")


def test_a_stored_result_is_reused_only_for_the_same_config_and_inputs(contaminated):
    first = decontam.run(DecontamConfig(embedder=None), contaminated, progress=False)
    with pytest.raises(StaleResult, match=r"taus \[0.95, 0.9, 0.85, 0.8\] -> now \[0.9\].*--force"):
        decontam.run(DecontamConfig(embedder=None, taus=(0.9,)), contaminated, progress=False)
    redone = decontam.run(DecontamConfig(embedder=None, taus=(0.9,)), contaminated, progress=False, force=True)
    assert [r["tau"] for r in redone.table] == [0.9] and redone.fingerprint != first.fingerprint
    # New exercises (the synthesis stage was redone) make the stored result stale too.
    exercises = contaminated.path("synthesis", "exercises.jsonl")
    write_jsonl(exercises, read_jsonl(exercises)[:2])
    with pytest.raises(StaleResult, match="exercises changed"):
        decontam.run(DecontamConfig(embedder=None, taus=(0.9,)), contaminated, progress=False)


def test_estimate_is_the_cpu_plan_for_the_planned_exercises():
    tiny = DecontamConfig.for_preset("tiny")
    est = decontam.estimate(tiny)
    assert est.cost_usd == 0.0 and est.stage == "decontam"
    doubled = decontam.estimate(DecontamConfig.for_preset("tiny", planned_records=2 * tiny.planned_records))
    tp = budget.load_throughput()  # the measured rates: AST pairs/s, embedder tokens/s and its load time
    n = tiny.planned_records
    assert doubled.cpu_hours - est.cpu_hours == pytest.approx(
        (n * 164 / tp.ast_pairs_per_s + n * tiny.embed_max_length / tp.embed_tokens_per_s) / 3600)
    assert DecontamConfig.for_preset("phi1").planned_records == round(180e6 / 205)  # the paper's ~880k exercises


@pytest.mark.slow  # loads the MiniLM tokenizer and model
def test_run_prices_the_exercises_it_reads_and_what_the_cache_leaves(contaminated, tmp_path, monkeypatch):
    """The stored estimate counts the real exercises (not the preset's plan) and only the texts the embedder's
    cache does not hold: a second run over the same texts plans no embedding at all."""
    monkeypatch.setenv("PHI1_CACHE", str(tmp_path / "cache"))
    cfg = DecontamConfig(taus=(0.9,), embed_max_length=32, planned_records=5000)
    first = decontam.run(cfg, contaminated, progress=False)
    n = first.n_records
    lines = {l["item"]: l for l in first.estimate["lines"]}
    assert f"{n:,} exercises x 164" in lines["decontam-ast"]["note"]
    assert f"{n + 164:,} texts not in the embedding cache" in lines["decontam-embed"]["note"]
    again = decontam.run(cfg, contaminated, progress=False, force=True)
    lines = {l["item"]: l for l in again.estimate["lines"]}
    assert "0 texts not in the embedding cache" in lines["decontam-embed"]["note"]
    assert again.estimate["wall_hours"] < first.estimate["wall_hours"]


@pytest.mark.slow  # loads torch + the MiniLM model
def test_embedding_distance_finds_a_verbatim_copy():
    from phi1lib.decontam.stage import embedding_neighbours

    problems = [{"task_id": "HumanEval/0", "text": HE["HumanEval/0"]["prompt"] + HE["HumanEval/0"]["canonical_solution"]},
                {"task_id": "HumanEval/2", "text": HE["HumanEval/2"]["prompt"] + HE["HumanEval/2"]["canonical_solution"]}]
    records = [{"id": "verbatim", "text": problems[1]["text"]}, {"id": "other", "text": UNRELATED}]
    nn = embedding_neighbours(records, problems, DecontamConfig(), progress=False)
    assert nn[1]["record_id"] == "verbatim" and nn[1]["l2"] < 1e-3 and nn[1]["flagged"]
    assert nn[0]["l2"] > 0.3


def test_mbpp_file_and_bad_inputs(tmp_path, contaminated):
    mbpp = tmp_path / "mbpp.jsonl"
    write_jsonl(mbpp, [{"task_id": 11, "code": UNRELATED}, {"task_id": 12, "code": "def f(x):\n    return x * 2\n"}])
    cfg = DecontamConfig(embedder=None, mbpp_path=str(mbpp))
    assert [p["task_id"] for p in benchmark_problems(cfg)["mbpp"]] == [11, 12]
    res = decontam.run(cfg, contaminated, progress=False)
    mb = json.loads((contaminated.path("decontam") / "mbpp_split.json").read_text())
    assert mb["0.95"]["similar"] == [11]  # ex-unrelated is textwrap.dedent itself
    assert res.extra_splits["mbpp"].endswith("mbpp_split.json")
    with pytest.raises(DataError, match="synthesis stage has not run"):
        decontam.run(DecontamConfig(embedder=None), RunDir(tmp_path / "empty"))
    with pytest.raises(DataError, match="no exercises"):
        decontam.run(DecontamConfig(embedder=None), _synthesis(tmp_path / "none", []))
    with pytest.raises(DataError, match="appears more than once"):
        decontam.run(DecontamConfig(embedder=None), _synthesis(tmp_path / "dup", [{"id": "a", "text": "x"}] * 2))
    with pytest.raises(DataError, match=r"textbooks.jsonl:1: needs an `id` \(string or integer\) and a string `text`"):
        decontam.run(DecontamConfig(embedder=None), _synthesis(tmp_path / "tb", [{"id": "a", "text": "x"}], [{"id": 1}]))
    with pytest.raises(ConfigError, match="taus"):
        DecontamConfig(taus=(1.5,))


def test_cli(contaminated, capsys):
    from phi1lib.cli import main

    out = str(contaminated.root)
    rc = main(["decontaminate", "--out", out, "--embedder", "none"])
    printed = capsys.readouterr().out
    assert rc == 0 and "0.95" in printed and "(71/93)" in printed and "estimate" in printed
    assert (contaminated.path("decontam") / "result.json").exists()
    with pytest.raises(SystemExit):  # argparse rejects it before any work
        main(["decontaminate", "--out", out, "--taus", "a,b"])
    assert main(["decontaminate", "--out", out, "--taus", "1.5", "--embedder", "none"]) == 2
    assert "--taus 1.5: expected match rates in (0, 1]" in capsys.readouterr().err
    assert main(["decontaminate", "--out", out, "--set", "ngram=x"]) == 2
    assert "--set ngram: expected an integer, got 'x'" in capsys.readouterr().err


def test_ast_matches_reports_unparsable(contaminated):
    rows, stats = ast_matches([{"id": "bad", "text": "def (:"}, {"id": "ok", "text": UNRELATED}],
                              [{"task_id": "HumanEval/0", "text": HE["HumanEval/0"]["prompt"]}], 0.8)
    assert rows == [] and stats["unparsable_records"] == 1


def test_cli_embedder_none_skips_only_when_asked():
    from phi1lib.cli import build_parser
    from phi1lib.commands import _common as C
    from phi1lib.commands.decontaminate import FLAGS

    def embedder(*argv):
        args = build_parser().parse_args(["decontaminate", *argv])
        return C.stage_config(DecontamConfig, args, FLAGS, nullable=("embedder",)).embedder

    assert embedder() == DecontamConfig.for_preset("tiny").embedder == "minilm-local"
    assert embedder("--embedder", "none") is None and embedder("--embedder", "NONE") is None
    assert embedder("--embedder", "some/model") == "some/model"


def _mixed_run(folder):
    """Exercises with ids out of order (strings and integers): two planted HumanEval copies among unrelated real
    functions; textbooks, one quoting a HumanEval docstring."""
    funcs = [textwrap.dedent, textwrap.indent, textwrap.shorten, json.dumps, json.loads, inspect.cleandoc,
             inspect.getsource, re.escape]
    recs = [{"id": f"z-{9 - i}" if i % 2 else 100 - i, "kind": "exercise", "text": inspect.getsource(f)}
            for i, f in enumerate(funcs)]
    recs.insert(3, {"id": "b-copy0", "kind": "exercise", "text": renamed_copy("HumanEval/0")})
    recs.insert(6, {"id": "a-copy12", "kind": "exercise", "text": renamed_copy("HumanEval/12")})
    quote = "Check if in given list of numbers, are any two numbers closer to each other than given threshold."
    books = [{"id": f"tb-{i}", "kind": "textbook", "text": t} for i, t in
             enumerate(["Plain prose about lists and loops, nothing copied here at all.", quote, quote + " " + quote])]
    return _synthesis(folder, recs, books)


def _decontam_files(run):
    out = run.path("decontam")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "result.json"}


def test_two_tasks_write_the_same_files_as_one_task(tmp_path):
    mbpp = tmp_path / "mbpp.jsonl"
    write_jsonl(mbpp, [{"task_id": 11, "code": UNRELATED}, {"task_id": 12, "code": "def f(x):\n    return x * 2\n"}])
    cfg = dict(embedder=None, mbpp_path=str(mbpp))
    one = decontam.run(DecontamConfig(**cfg), _mixed_run(tmp_path / "one"), progress=False)
    two = decontam.run(DecontamConfig(**cfg, tasks=2, workers=2), _mixed_run(tmp_path / "two"), progress=False)
    files = _decontam_files(RunDir(tmp_path / "one"))
    assert set(files) >= {"humaneval_split.json", "mbpp_split.json", "table3.csv", "ngram_hits.jsonl",
                          "ast_matches.jsonl", "exercises_pruned_tau0.8.jsonl"}
    assert files == _decontam_files(RunDir(tmp_path / "two"))
    assert one.ast_stats["pairs_total"] == two.ast_stats["pairs_total"] == 10 * 164
    assert (one.metrics["dataflow"]["tasks"], two.metrics["dataflow"]["tasks"]) == (1, 2)
    peaks = two.metrics["dataflow"]["peak_rss_mb"]  # per task: 2 exercise shards, 2 textbook shards
    assert len(peaks["exercises"]) == len(peaks["textbooks"]) == 2 and all(mb > 10 for mb in peaks["exercises"])
    # What the files hold: the planted copies found (in record order, not id order), the quoting textbooks hit.
    assert [m["record_id"] for m in read_jsonl(one.files["ast_matches"]) if m["rate"] == 1.0] == ["b-copy0", "a-copy12"]
    assert [(h["task_id"], h["record_id"]) for h in read_jsonl(one.files["ngram_hits"])] == \
        [("HumanEval/0", "tb-1"), ("HumanEval/0", "tb-2")]
    assert one.split()["0.95"]["similar"] == ["HumanEval/0", "HumanEval/12"]
    assert json.loads((tmp_path / "one" / "decontam" / "mbpp_split.json").read_text())["0.95"]["similar"] == [11]
    # The rows, in their order, are what the in-process functions (the stage before datatrove) give.
    exercises = read_jsonl(tmp_path / "one" / "synthesis" / "exercises.jsonl")
    books = read_jsonl(tmp_path / "one" / "synthesis" / "textbooks.jsonl")
    problems = benchmark_problems(DecontamConfig(**cfg))
    assert read_jsonl(one.files["ngram_hits"]) == ngram_overlap(exercises + books, problems["humaneval"], 13)
    assert read_jsonl(one.files["ast_matches"]) == ast_matches(exercises, problems["humaneval"], 0.8)[0]
    kept = [r["id"] for r in read_jsonl(tmp_path / "one" / "synthesis" / "exercises.jsonl")
            if r["id"] not in ("b-copy0", "a-copy12")]
    assert [r["id"] for r in read_jsonl(one.pruned["0.95"])] == kept and 100 in kept and "z-8" in kept


def test_a_failed_task_leaves_the_stage_unfinished_and_a_rerun_redoes_only_it(tmp_path, monkeypatch):
    from phi1lib.decontam import blocks

    run, work = _mixed_run(tmp_path / "run"), tmp_path / "work"
    cfg = DecontamConfig(embedder=None, tasks=2, work_dir=str(work))
    real, poisoned = blocks.ast_sequence, renamed_copy("HumanEval/12")  # an exercise of the second shard

    def failing(text):
        if text == poisoned:
            raise RuntimeError("boom")
        return real(text)

    monkeypatch.setattr(blocks, "ast_sequence", failing)
    with pytest.raises(RuntimeError, match="boom"):
        decontam.run(cfg, run, progress=False)
    assert not run.path("decontam", "result.json").exists()
    done = sorted(p.name for p in work.glob("decontam-*/exercises/logs/completions/*"))
    assert done == ["00000"]  # the first task finished, the second failed
    monkeypatch.setattr(blocks, "ast_sequence", real)
    res = decontam.run(cfg, run, progress=False)
    assert res.split()["0.95"]["similar"] == ["HumanEval/0", "HumanEval/12"]
    assert sorted(p.name for p in work.glob("decontam-*/exercises/logs/completions/*")) == ["00000", "00001"]
    log = next(work.glob("decontam-*/datatrove.log")).read_text()
    assert "Skipping 1 already completed tasks" in log


def test_dataflow_settings_are_checked_and_not_fingerprinted(tmp_path):
    with pytest.raises(ConfigError, match="executor"):
        DecontamConfig(executor="spark")
    with pytest.raises(ConfigError, match="work_dir"):
        DecontamConfig(executor="slurm", cluster={"partition": "cpu", "time": "1:00:00"})
    with pytest.raises(ConfigError, match="cluster"):
        DecontamConfig(cluster={"partition": "cpu"})
    with pytest.raises(ConfigError, match="tasks"):
        DecontamConfig(tasks=0)
    assert DecontamConfig(tasks=4, workers=2, work_dir="/x", device="auto").fingerprint(tmp_path, {}) == \
        DecontamConfig().fingerprint(tmp_path, {})


@pytest.mark.slow  # loads the MiniLM model (in two worker processes too)
def test_two_tasks_with_the_embedder_find_the_same_nearest_exercises(tmp_path, monkeypatch):
    """Each run on a cold embedding cache: the shards are embedded in other batches, so vectors (and distances)
    may differ in the last float32 bits; every other file is byte-equal, and so are the nearest exercises and
    flags. On the same vectors (a warm cache) every file is byte-equal."""
    cfg = DecontamConfig(taus=(0.9,), embed_max_length=64)
    monkeypatch.setenv("PHI1_CACHE", str(tmp_path / "cache1"))
    one = decontam.run(cfg, _mixed_run(tmp_path / "one"), progress=False)
    monkeypatch.setenv("PHI1_CACHE", str(tmp_path / "cache2"))
    two = decontam.run(DecontamConfig(taus=(0.9,), embed_max_length=64, tasks=2, workers=2),
                       _mixed_run(tmp_path / "two"), progress=False)
    files = [_decontam_files(RunDir(tmp_path / name)) for name in ("one", "two")]
    nn = [read_jsonl(tmp_path / name / "decontam" / "embedding_nn.jsonl") for name in ("one", "two")]
    assert {k: v for k, v in files[0].items() if k != "embedding_nn.jsonl"} == \
        {k: v for k, v in files[1].items() if k != "embedding_nn.jsonl"}
    assert [(r["task_id"], r["record_id"], r["flagged"]) for r in nn[0]] == \
        [(r["task_id"], r["record_id"], r["flagged"]) for r in nn[1]]
    assert [r["l2"] for r in nn[0]] == pytest.approx([r["l2"] for r in nn[1]], abs=1e-5)
    assert len(nn[0]) == 164 and one.embedding["flagged"] == two.embedding["flagged"]
    assert {r["record_id"] for r in nn[0]} >= {"b-copy0", "a-copy12"}  # the planted copies are some problem's nearest
    # The same vectors (run one's cache) split over 3 tasks: every file byte-equal, distances included.
    monkeypatch.setenv("PHI1_CACHE", str(tmp_path / "cache1"))
    three = decontam.run(DecontamConfig(taus=(0.9,), embed_max_length=64, tasks=3), _mixed_run(tmp_path / "three"),
                         progress=False)
    assert _decontam_files(RunDir(tmp_path / "three")) == files[0] and three.embedding == one.embedding


def test_device_setting_is_checked():
    for good in ("cpu", "cuda", "cuda:1", "auto"):
        assert DecontamConfig(device=good).device == good
    with pytest.raises(ConfigError, match="device"):
        DecontamConfig(device="gpu")


def test_a_cluster_executor_missing_here_is_refused_before_any_work(contaminated, tmp_path, monkeypatch):
    from phi1lib.errors import MissingDependency

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    cfg = DecontamConfig(embedder=None, executor="slurm", work_dir=str(tmp_path / "shared"),
                         cluster={"partition": "cpu", "time": "1:00:00"})
    with pytest.raises(MissingDependency, match="sbatch"):
        decontam.run(cfg, contaminated, progress=False)
    assert not (tmp_path / "shared").exists() and not contaminated.path("decontam", "result.json").exists()


@pytest.mark.slow  # every Slurm array task is its own process (datatrove's launch_pickled_pipeline)
def test_on_slurm_the_stage_writes_the_same_files_as_locally(tmp_path, fake_slurm):
    """executor=slurm goes through datatrove's Slurm executor: the job arrays it submits (run here by a stand-in
    sbatch, every array task its own process, as on a cluster) write the same files as the local executor."""
    decontam.run(DecontamConfig(embedder=None), _mixed_run(tmp_path / "one"), progress=False)
    cfg = DecontamConfig(embedder=None, executor="slurm", tasks=2, work_dir=str(tmp_path / "shared"),
                         cluster={"partition": "cpu", "time": "0:10:00"})
    res = decontam.run(cfg, _mixed_run(tmp_path / "two"), progress=False)
    assert _decontam_files(RunDir(tmp_path / "one")) == _decontam_files(RunDir(tmp_path / "two"))
    assert res.metrics["dataflow"]["executor"] == "slurm"
    submitted = [line for line in fake_slurm.read_text().splitlines() if line.startswith("sbatch")]
    assert len(submitted) == 4  # exercises, textbooks: a job array and its merge_stats job each
    (script,) = (tmp_path / "shared").glob("decontam-*/exercises/logs/launch_script.slurm")
    text = script.read_text()
    assert "#SBATCH --partition=cpu" in text and "#SBATCH --array=0-1" in text and "launch_pickled_pipeline" in text
