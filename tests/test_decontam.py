"""Decontamination: each measure on known pairs, exact candidate pruning, and the stage's split files."""

from __future__ import annotations

import inspect
import json
import re
import textwrap

import pytest

from phi1lib.decontam.stage import (DecontamConfig, ast_matches, benchmark_problems, ngram_overlap, run_decontamination,
                              split_table)
from phi1lib.decontam.ast_match import ASTIndex, ast_sequence, match_all, match_rate
from phi1lib.errors import ConfigError, DataError
from phi1lib.jsonl import read_jsonl, write_jsonl
from phi1lib.problems import load_humaneval

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


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    recs = [{"id": "ex-copy", "kind": "exercise", "text": renamed_copy("HumanEval/0")},
            {"id": "ex-unrelated", "kind": "exercise", "text": UNRELATED},
            {"id": "ex-indent", "kind": "exercise", "text": inspect.getsource(textwrap.indent)}]
    write_jsonl(d / "exercises.jsonl", recs)
    write_jsonl(d / "textbooks.jsonl", [{"id": "tb-1", "kind": "textbook", "text": "Check if in given list of numbers, "
                                         "are any two numbers closer to each other than given threshold."}])
    return d


def test_stage_writes_the_split_contract(tmp_path, contaminated):
    out = tmp_path / "decontam"
    res = run_decontamination(DecontamConfig(embedder=None, progress=False), contaminated, out)
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
    again = run_decontamination(DecontamConfig(embedder=None, progress=False), contaminated, out)
    assert again.table == res.table


@pytest.mark.slow  # loads torch + the MiniLM model
def test_embedding_distance_finds_a_verbatim_copy(contaminated):
    from phi1lib.decontam.stage import embedding_neighbours

    problems = [{"task_id": "HumanEval/0", "text": HE["HumanEval/0"]["prompt"] + HE["HumanEval/0"]["canonical_solution"]},
                {"task_id": "HumanEval/2", "text": HE["HumanEval/2"]["prompt"] + HE["HumanEval/2"]["canonical_solution"]}]
    records = [{"id": "verbatim", "text": problems[1]["text"]}, {"id": "other", "text": UNRELATED}]
    nn = embedding_neighbours(records, problems, DecontamConfig(progress=False))
    assert nn[1]["record_id"] == "verbatim" and nn[1]["l2"] < 1e-3 and nn[1]["flagged"]
    assert nn[0]["l2"] > 0.3


def test_mbpp_file_and_bad_inputs(tmp_path, contaminated):
    mbpp = tmp_path / "mbpp.jsonl"
    write_jsonl(mbpp, [{"task_id": 11, "code": UNRELATED}, {"task_id": 12, "code": "def f(x):\n    return x * 2\n"}])
    cfg = DecontamConfig(embedder=None, mbpp_path=str(mbpp), progress=False)
    assert [p["task_id"] for p in benchmark_problems(cfg)["mbpp"]] == [11, 12]
    res = run_decontamination(cfg, contaminated, tmp_path / "dc")
    mb = json.loads((tmp_path / "dc" / "mbpp_split.json").read_text())
    assert mb["0.95"]["similar"] == [11]  # ex-unrelated is textwrap.dedent itself
    assert res.extra_splits["mbpp"].endswith("mbpp_split.json")
    with pytest.raises(DataError, match="exercises.jsonl"):
        run_decontamination(DecontamConfig(embedder=None), tmp_path / "empty", tmp_path / "dc2")
    with pytest.raises(ConfigError, match="taus"):
        DecontamConfig(taus=(1.5,))


def test_cli(tmp_path, contaminated, capsys):
    from phi1lib.cli import main

    rc = main(["decontaminate", "--data", str(contaminated), "--out", str(tmp_path / "cli"), "--embedder", "none"])
    out = capsys.readouterr().out
    assert rc == 0 and "0.95" in out and "(71/93)" in out
    assert main(["decontaminate", "--data", str(contaminated), "--out", str(tmp_path / "x"), "--taus", "a,b"]) == 2


def test_ast_matches_reports_unparsable(contaminated):
    rows, stats = ast_matches([{"id": "bad", "text": "def (:"}, {"id": "ok", "text": UNRELATED}],
                              [{"task_id": "HumanEval/0", "text": HE["HumanEval/0"]["prompt"]}], 0.8)
    assert rows == [] and stats["unparsable_records"] == 1
