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
    split = split_table(matches, problems, records, (0.95, 0.9, 0.85, 0.8))
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
    assert res.usage.wall_s > 0 and set(res.seconds) >= {"read", "ngram", "ast", "total"}
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
