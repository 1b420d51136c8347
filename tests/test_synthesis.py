"""Synthesis stage: prompt determinism, reply parsing and checks, the extractive stand-in, rejected-record
bookkeeping, and a real LLM run (local OpenAI-compatible server) that produces, caches and resumes."""

from __future__ import annotations

import ast
import inspect
import json
import statistics
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from phi1lib import budget, runs, synthesis
from phi1lib.errors import BudgetExceeded, ConfigError, DataError
from phi1lib.jsonl import read_jsonl
from phi1lib.llm import IncompleteRun
from phi1lib.presets import get_preset
from phi1lib.runs import RunDir
from phi1lib.stage import FieldError, StaleResult
from phi1lib.synthesis import STAND_IN_NOTE, SynthesisConfig, kind_config, reason_category
from phi1lib.synthesis.extractive import assign_units, content_words, extract_units, units_from_source
from phi1lib.llm import Request
from phi1lib.llm.tokens import TokenCounter
from phi1lib.synthesis.prompts import exercise_prompts, load_list, textbook_prompts
from phi1lib.synthesis.quality import check_textbook, code_blocks, parse_exercise, sandbox_available

GOOD_EXERCISE = '''Here is the exercise:

```python
def count_vowels(word: str) -> int:
    """Return how many characters of `word` are vowels (a, e, i, o, u), ignoring case.

    >>> count_vowels("Banana")
    3
    """
    return sum(1 for ch in word.lower() if ch in "aeiou")
```
'''

PAPER_LIKE_TEXTBOOK = '''## Singular matrices

A matrix is singular when its determinant is zero: it has no inverse. For a 2x2 matrix
[[a, b], [c, d]] the determinant is a*d - b*c.

```python
def is_singular(m):
    (a, b), (c, d) = m
    return a * d - b * c == 0
```

Example usage and its expected output:

```python
>>> is_singular([[1, 2], [2, 4]])
True
```
'''


# Two topics textwrap and statistics answer, one ("roman numerals") neither does.
STDLIB_TOPICS = str(Path(__file__).with_name("synth_topics_stdlib.txt"))


def _stdlib_parquet(tmp_path, modules=(textwrap, statistics)):
    rows = [{"id": m.__name__, "source": "stdlib", "path": m.__file__, "text": inspect.getsource(m),
             "score": 1.0, "n_tokens": 1} for m in modules]
    path = tmp_path / "filtering" / "kept.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


# ---- prompts ----------------------------------------------------------------------------------

def test_prompts_are_seeded_and_reproducible():
    a = textbook_prompts(50, seed=7)
    b = textbook_prompts(50, seed=7)
    c = textbook_prompts(50, seed=8)
    assert [p.messages for p in a] == [p.messages for p in b]
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.id for p in a] != [p.id for p in c]
    ea, eb = exercise_prompts(30, seed=1), exercise_prompts(30, seed=1)
    assert [p.messages for p in ea] == [p.messages for p in eb]
    for p in ea:
        assert f"`{p.name_prefix}`" in p.user_text and p.topic in p.user_text


def test_prompts_cover_the_product_before_repeating():
    topics, audiences = ["loops", "sets", "recursion"], ["a child", "an engineer"]
    ps = textbook_prompts(6, seed=0, topics=topics, audiences=audiences, styles=[])
    assert len({(p.topic, p.audience) for p in ps}) == 6  # the whole product, each combination once
    assert all(p.variant == 0 and p.style is None for p in ps)
    more = textbook_prompts(9, seed=0, topics=topics, audiences=audiences, styles=[])
    assert [p.variant for p in more].count(1) == 3
    assert len({p.id for p in more}) == 9  # repeats of a combination get distinct ids
    text = ps[0].user_text
    assert "doctest" in text and "prose" in text and ps[0].topic in text and ps[0].audience in text


def test_list_files_are_validated(tmp_path):
    assert len(load_list("synth_topics.txt")) >= 40
    assert len(load_list("synth_audiences.txt")) >= 5
    with pytest.raises(DataError, match="not found"):
        load_list(tmp_path / "nope.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("# c\nloops\nloops\n")
    with pytest.raises(DataError, match="duplicate"):
        load_list(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(DataError, match="empty"):
        load_list(empty)


# ---- parsing and checks -----------------------------------------------------------------------

def test_parse_exercise_splits_prompt_and_solution():
    parts = parse_exercise(GOOD_EXERCISE)
    assert parts["entry_point"] == "count_vowels"
    assert parts["prompt"].rstrip().endswith('"""') and "def count_vowels" in parts["prompt"]
    assert "return sum" in parts["solution"] and "return" not in parts["prompt"]
    assert parts["prompt"] + parts["solution"] == parts["code"]
    assert parts["n_doctests"] == 1
    ast.parse(parts["code"])


@pytest.mark.parametrize("reply, reason", [
    ("```python\ndef f(x):\n    return x +\n```", "does not parse"),
    ("```python\nx = 1\n```", "no top-level function"),
    ("```python\ndef f(x):\n    return x\n```", "no docstring"),
    ('```python\ndef f(x):\n    """Return the input value unchanged."""\n    ...\n```', "no solution body"),
])
def test_parse_exercise_rejects_with_reason(reply, reason):
    with pytest.raises(ValueError, match=reason):
        parse_exercise(reply)


def test_textbook_checks():
    assert check_textbook(PAPER_LIKE_TEXTBOOK, min_chars=50, max_chars=10_000) is None
    assert "too short" in check_textbook(PAPER_LIKE_TEXTBOOK, min_chars=10_000, max_chars=20_000)
    assert "no code block" in check_textbook("Just prose. " * 30, min_chars=10, max_chars=10_000)
    broken = PAPER_LIKE_TEXTBOOK.replace("return a * d - b * c == 0", "return a * d - (b * c == 0")
    assert "does not parse" in check_textbook(broken, min_chars=10, max_chars=10_000)
    assert len(code_blocks(PAPER_LIKE_TEXTBOOK)) == 2
    with_output = PAPER_LIKE_TEXTBOOK + "\nRunning it prints:\n\n```\nThe matrix is singular!\n```\n"
    assert check_textbook(with_output, min_chars=50, max_chars=10_000) is None  # unlabelled output is not code


# ---- the extractive stand-in -------------------------------------------------------------------

def test_stand_in_units_come_from_real_code():
    units = units_from_source("textwrap", inspect.getsource(textwrap))
    ex = [u for u in units if u.kind == "exercise"]
    tb = [u for u in units if u.kind == "textbook"]
    assert {"dedent", "indent", "wrap"} <= {u.name for u in ex}
    for u in ex:
        parts = parse_exercise(u.text)  # the stand-in speaks the same reply format as an LLM
        assert parts["entry_point"] == u.name and hasattr(textwrap, u.name)
    assert len(tb) == 1 and check_textbook(tb[0].text, min_chars=100, max_chars=50_000) is None
    assert units_from_source("bad", "def broken(:\n") == []
    # A test case's docstring describes a check of other code, not a task: no unit.
    assert units_from_source("t", 'def test_wrap():\n    """Check that wrap splits long lines."""\n    assert 1\n') == []


def test_stand_in_assignment_prefers_topic_and_name_prefix():
    units = extract_units([("textwrap", inspect.getsource(textwrap)), ("statistics", inspect.getsource(statistics))])
    prompts = exercise_prompts(2, seed=0, topics=["median, mode and mean of numeric data"], name_prefixes=["median"])
    got = assign_units(prompts, units["exercise"])
    assert all(m is not None and m.unit.name.startswith("median") for m in got)
    assert len({m.unit.name for m in got}) == 2  # no unit used twice


def test_stand_in_follows_the_topic_or_says_it_has_nothing():
    """Retrieval by topic: each prompt gets code whose names and docstrings contain the topic's words, or
    nothing (None) when no unused unit is relevant enough; never unrelated code (issue: 'recursion' -> c2py)."""
    units = extract_units([("textwrap", inspect.getsource(textwrap)), ("statistics", inspect.getsource(statistics))])
    topics = ["wrapping and indenting lines of text", "median, mode and mean of numeric data", "roman numerals"]
    prompts = exercise_prompts(30, seed=0, topics=topics, name_prefixes=["get_", "compute_"])
    got = assign_units(prompts, units["exercise"], min_relevance=0.4)
    for p, m in zip(prompts, got):
        if p.topic == "roman numerals":
            assert m is None  # nothing in textwrap or statistics is about roman numerals
        elif m is not None:
            assert m.relevance >= 0.4 and m.matched and set(m.matched) <= set(content_words(p.topic))
            assert m.unit.source_id == ("textwrap" if "wrapping" in p.topic else "statistics")
            assert m.meta()["source"] == f"{m.unit.source_id}:{m.unit.name}"
    answered = {p.topic for p, m in zip(prompts, got) if m is not None}
    assert answered == set(topics[:2])
    # More prompts than relevant units: the rest are unanswered, not filled with code on other topics.
    n_stats = sum(m is not None and m.unit.source_id == "statistics" for m in got)
    assert 0 < n_stats < sum(p.topic == topics[1] for p in prompts)
    # A stricter threshold answers fewer prompts.
    assert sum(m is not None for m in assign_units(prompts, units["exercise"], min_relevance=0.6)) < len(
        [m for m in got if m is not None])


def test_relevance_is_the_idf_weighted_share_of_topic_words():
    import math

    from phi1lib.synthesis.extractive import relevance

    docs = ["alpha beta", "alpha gamma", "delta"]
    scores, words = relevance(["alpha beta", "alpha omega"], docs)
    idf = {w: math.log(4 / (1 + df)) + 1 for w, df in {"alpha": 2, "beta": 1}.items()}
    unseen = math.log(4) + 1  # "omega" is in no doc: it weighs the most and is never found
    assert scores[0].tolist() == pytest.approx([1.0, idf["alpha"] / (idf["alpha"] + idf["beta"]), 0.0])
    assert scores[1].tolist() == pytest.approx([idf["alpha"] / (idf["alpha"] + unseen)] * 2 + [0.0])
    assert words == [{"alpha", "beta"}, {"alpha", "omega"}]


def test_content_words_fold_case_plurals_and_identifiers():
    assert content_words("Palindromes and getLevelName of the queries, classes") == [
        "palindrome", "level", "query", "class"]
    assert content_words("median_grouped") == ["median", "grouped"]


@pytest.mark.parametrize("reason, category", [
    ("near duplicate of exercise-20916dfc2580e651 (Jaccard 0.91 on word 5-grams)", "near duplicate"),
    ("exact duplicate of textbook-ab12", "exact duplicate"),
    ("code block 1 does not parse (line 3: invalid syntax)", "code block does not parse"),
    ("function 'f' has no docstring stating the task", "function has no docstring stating the task"),
    ("sandbox failed: 1 of 2 doctest examples failed", "sandbox failed"),
    ("too short: 12 chars < min_chars=120", "too short"),
    ("no source: no unused function in the filtered code matches the topic 'x'", "no source"),
])
def test_reasons_group_into_categories(reason, category):
    assert reason_category(reason) == category


# ---- the stage ----------------------------------------------------------------------------------

def _fast(**kw):
    """A small offline config on topics the stdlib sources answer: no doctest runs (the sandbox path has its own test)."""
    return SynthesisConfig.for_preset("tiny", **{"n_textbooks": 4, "n_exercises": 12, "sandbox": False,
                                                 "topics_file": STDLIB_TOPICS, **kw})


def _stamp(run_dir: RunDir) -> int:
    """When result.json was last written (a reused result is not rewritten)."""
    return run_dir.path("synthesis", "result.json").stat().st_mtime_ns


def test_offline_run_writes_contract_files_and_is_resumable(tmp_path):
    src = _stdlib_parquet(tmp_path)
    cfg = SynthesisConfig.for_preset("tiny", n_textbooks=8, n_exercises=40, source=str(src), topics_file=STDLIB_TOPICS)
    run_dir = RunDir(tmp_path / "run")
    res = synthesis.run(cfg, run_dir, progress=False)
    out = run_dir.path("synthesis")
    assert res.stand_in == STAND_IN_NOTE and res.generator == "extractive-stand-in"
    assert (out / "result.json").exists() and (out / "rejected.jsonl").exists()
    books, exercises = read_jsonl(out / "textbooks.jsonl"), read_jsonl(out / "exercises.jsonl")
    assert books and exercises
    for r in books + exercises:
        assert r["id"] and r["kind"] in ("textbook", "exercise") and r["text"] and r["topic"]
    for r in exercises:
        assert r["prompt"] + r["solution"] in r["text"] and r["entry_point"] in r["prompt"]
        assert r["generator"] == "extractive-stand-in"
    for r in books + exercises:  # every stand-in record says where it came from and how well it fits its topic
        assert r["topic"] != "roman numerals" and r["source_relevance"] >= cfg.min_relevance
        assert r["source_matched"] and set(r["source_matched"]) <= set(content_words(r["topic"]))
    rejected = res.rejected()
    assert all(r["reason"] for r in rejected)
    c = res.counts["exercise"]
    assert c["accepted"] == len(exercises)
    assert c["requested"] == c["no_source"] + c["generated"] + c["llm_errors"]
    assert c["generated"] == c["accepted"] + c["failed_checks"] + c["failed_sandbox"] + c["duplicates"]
    assert len([r for r in rejected if r["kind"] == "exercise"]) == (c["no_source"] + c["failed_checks"] +
                                                                      c["failed_sandbox"] + c["duplicates"])
    # The off-topic prompts are answered by nobody and say so (reason category "no source").
    no_source = [r for r in rejected if r["reason"].startswith("no source")]
    assert c["no_source"] > 0 and {r["topic"] for r in no_source} >= {"roman numerals"}
    assert res.reasons["exercise"]["no source"] == c["no_source"]
    # What was executed is said per record and in the summary, and they agree.
    assert c["executed"] + c["not_executed"] == c["accepted"]
    labels = [r["checked"] for r in exercises]
    assert c["executed"] == labels.count("sandbox: doctests passed")
    assert f"{labels.count('not executed (no doctests)')} not executed (no doctests)" in res.checked
    assert res.checked.endswith(f"(of {len(exercises)} accepted exercises)")
    assert "sandbox doctests" not in res.checked or c["executed"] == c["accepted"]
    assert all(r["checked"] == "not executed (code blocks parse-checked only)" for r in books)
    assert (res.counts_table()["generator"] == "extractive-stand-in").all()
    assert res.usage.usd == 0.0 and res.usage.requests == sum(k["requested"] - k["no_source"] for k in res.counts.values())
    assert res.usage.wall_s > 0 and {"extract", "generate_textbook", "dedup_exercise", "write", "total"} <= set(res.seconds)
    assert set(res.counts_table().index) == {"textbook", "exercise"}
    assert res.inputs == {"source": runs.identity(src)} and res.fingerprint
    mtime = (out / "exercises.jsonl").stat().st_mtime_ns
    again = synthesis.run(cfg, run_dir, progress=False)  # finished: returned as stored, nothing rewritten
    assert again.counts == json.loads((out / "result.json").read_text())["counts"]
    assert again.finished_at == res.finished_at and again.fingerprint == res.fingerprint
    assert (out / "exercises.jsonl").stat().st_mtime_ns == mtime


def test_reads_the_runs_filtering_output_and_never_runs_filtering(tmp_path):
    with pytest.raises(DataError, match="filtering stage has not run"):
        synthesis.run(_fast(), RunDir(tmp_path / "empty"), progress=False)
    assert not (tmp_path / "empty" / "filtering").exists()
    _stdlib_parquet(tmp_path, modules=(textwrap,))  # <tmp_path>/filtering/kept.parquet
    res = synthesis.run(_fast(), RunDir(tmp_path), progress=False)
    assert res.counts["exercise"]["accepted"] > 0 and res.out_dir == str(tmp_path / "synthesis")
    assert res.inputs["source"] == runs.identity(tmp_path / "filtering" / "kept.parquet")


def test_stale_result_and_force(tmp_path):
    _stdlib_parquet(tmp_path, modules=(textwrap,))
    run_dir = RunDir(tmp_path)
    first = synthesis.run(_fast(), run_dir, progress=False)
    stamp = _stamp(run_dir)
    # How the work runs (workers, concurrency, the cap) is not fingerprinted: the stored result is reused.
    same = synthesis.run(_fast(workers=1, concurrency=2, cap_usd=5.0), run_dir, progress=False)
    assert same.finished_at == first.finished_at and _stamp(run_dir) == stamp
    with pytest.raises(StaleResult, match=r"synthesis: .* holds exercises made with other settings "
                                          r"\(n_exercises 12 -> now 6\); pass --force"):
        synthesis.run(_fast(n_exercises=6), run_dir, progress=False)
    with pytest.raises(StaleResult, match=r"textbooks made with other settings \(seed 0 -> now 1\); and exercises"):
        synthesis.run(_fast(seed=1), run_dir, progress=False)
    redone = synthesis.run(_fast(n_exercises=6), run_dir, progress=False, force=True)
    assert redone.counts["exercise"]["requested"] == 6 and _stamp(run_dir) != stamp
    assert redone.fingerprint != first.fingerprint
    # A redone filtering stage (another kept.parquet) makes both kinds stale.
    _stdlib_parquet(tmp_path, modules=(textwrap, statistics))
    with pytest.raises(StaleResult, match=r"from other inputs \(source changed since"):
        synthesis.run(_fast(n_exercises=6), run_dir, progress=False)


def test_kinds_share_one_folder(tmp_path):
    """textbooks, then exercises, into one run folder: both kept, each fingerprinted on its own settings."""
    _stdlib_parquet(tmp_path, modules=(textwrap, statistics))
    run_dir, out = RunDir(tmp_path), tmp_path / "synthesis"
    books = synthesis.run(_fast(kinds=("textbook",)), run_dir, progress=False)
    assert set(books.files) == {"textbook"} and set(books.made) == {"textbook"}
    book_lines = (out / "textbooks.jsonl").read_bytes()
    # The exercises' own settings do not touch the stored textbooks.
    both = synthesis.run(_fast(kinds=("exercise",), n_exercises=10, n_textbooks=99), run_dir, progress=False)
    assert set(both.files) == {"textbook", "exercise"} and set(both.counts) == {"textbook", "exercise"}
    assert (out / "textbooks.jsonl").read_bytes() == book_lines
    assert both.fingerprint != books.fingerprint and both.made["textbook"] == books.made["textbook"]
    assert {r["kind"] for r in both.rejected()} <= {"textbook", "exercise"}
    assert both.metrics["generated_now"] == ["exercise"]
    # Asking for both with the settings they were made with: nothing is redone.
    stamp = _stamp(run_dir)
    again = synthesis.run(_fast(n_exercises=10), run_dir, progress=False)
    assert again.finished_at == both.finished_at and _stamp(run_dir) == stamp
    # A changed textbook setting is stale for textbooks only; redoing them keeps the exercises.
    with pytest.raises(StaleResult, match=r"holds textbooks made with other settings \(n_textbooks 4 -> now 3\)"):
        synthesis.run(_fast(kinds=("textbook",), n_textbooks=3), run_dir, progress=False)
    ex_lines = (out / "exercises.jsonl").read_bytes()
    redone = synthesis.run(_fast(kinds=("textbook",), n_textbooks=3), run_dir, progress=False, force=True)
    assert redone.counts["textbook"]["requested"] == 3 and redone.counts["exercise"] == both.counts["exercise"]
    assert (out / "exercises.jsonl").read_bytes() == ex_lines
    assert redone.made["exercise"] == both.made["exercise"] and redone.fingerprint != both.fingerprint
    assert sum(r["kind"] == "exercise" for r in redone.rejected()) == sum(r["kind"] == "exercise" for r in both.rejected())


def test_each_kind_is_fingerprinted_on_its_own_settings():
    base = SynthesisConfig.for_preset("tiny")
    fp = lambda cfg, kind: kind_config(cfg, kind).fingerprint("/run", {"source": "x"})  # noqa: E731
    for change, textbook, exercise in [(dict(n_exercises=5), False, True), (dict(sandbox=False), False, True),
                                       (dict(n_textbooks=5), True, False), (dict(styles_file="s.txt"), True, False),
                                       (dict(seed=3), True, True), (dict(model="extractive", temperature=0.5), True, True),
                                       (dict(kinds=("exercise",)), False, False), (dict(workers=9), False, False),
                                       (dict(require_doctests=True), False, True), (dict(min_relevance=0.5), True, True)]:
        other = replace(base, **change)
        assert (fp(other, "textbook") != fp(base, "textbook")) == textbook, change
        assert (fp(other, "exercise") != fp(base, "exercise")) == exercise, change


def test_rejected_bookkeeping_with_a_scripted_provider(tmp_path, monkeypatch):
    """Each failure mode lands in rejected.jsonl with its reason, and the counts add up."""
    from phi1lib.llm import FunctionProvider

    monkeypatch.setattr("phi1lib.synthesis.generate.sandbox_available", lambda: False)
    calls = []

    def fake(request):
        i = len(calls)
        calls.append(i)
        mode = i % 5
        if mode == 0:
            return GOOD_EXERCISE.replace("count_vowels", f"count_vowels_{i}").replace("vowels (a", f"vowels number {i} (a")
        if mode == 1:
            return GOOD_EXERCISE  # the same reply every time: exact duplicates after the first
        if mode == 2:
            return "```python\ndef f(:\n```"
        if mode == 3:
            raise RuntimeError("scripted provider failure")
        return "```python\ndef g(x):\n    return x\n```"

    cfg = SynthesisConfig.for_preset("tiny", kinds=("exercise",), n_exercises=20, concurrency=1)
    provider = FunctionProvider(fake, "scripted")
    # Requests that failed for good leave the stage unfinished: nothing written, the reasons named.
    with pytest.raises(IncompleteRun, match=r"4 of 20 LLM requests failed for good \(4x scripted raised "
                                            r"RuntimeError: scripted provider failure\).*retry exactly those 4"):
        synthesis.run(cfg, RunDir(tmp_path), provider=provider, progress=False)
    assert not (tmp_path / "synthesis" / "result.json").exists()
    assert len(calls) == 20
    # A rerun sends exactly the 4 failed requests again (same provider name, same keys); now they answer.
    resent = []
    healthy = FunctionProvider(lambda req: resent.append(req) or "```python\ndef f(:\n```", "scripted")
    res = synthesis.run(cfg, RunDir(tmp_path), provider=healthy, progress=False)
    assert len(resent) == 4 and len(calls) == 20
    c = res.counts["exercise"]
    assert c == {**c, "requested": 20, "llm_errors": 0, "generated": 20, "failed_checks": 12, "duplicates": 3,
                 "accepted": 5}
    reasons = [r["reason"] for r in res.rejected()]
    assert not any("llm error" in r for r in reasons)
    assert sum("does not parse" in r for r in reasons) == 8
    assert sum("no docstring" in r for r in reasons) == 4
    assert sum(r.startswith("exact duplicate of exercise-") for r in reasons) == 3
    cats = res.reasons["exercise"]
    assert cats["does not parse"] == 8 and sum(cats.values()) == 15
    assert res.checked == "5 not executed (phi1lib.sandbox unavailable) (of 5 accepted exercises)"
    assert {r["checked"] for r in res.records("exercise")} == {"not executed (phi1lib.sandbox unavailable)"}
    assert res.generator == "scripted" and res.stand_in is None
    assert res.inputs == {"provider": "function:scripted"}  # no kept.parquet read: the provider answers
    assert not (tmp_path / "filtering").exists()


@pytest.mark.skipif(not sandbox_available(), reason="phi1lib.sandbox not importable")
def test_sandbox_rejects_a_wrong_solution(tmp_path):
    from phi1lib.llm import FunctionProvider

    wrong = GOOD_EXERCISE.replace('in "aeiou"', 'in "eiou"')  # "Banana" -> 0, doctest says 3

    def fake(request):
        return GOOD_EXERCISE if request.meta["topic"] == "a" else wrong

    cfg = SynthesisConfig.for_preset("tiny", kinds=("exercise",), n_exercises=2, topics_file=str(_list(tmp_path, "a b")),
                                     names_file=str(_list(tmp_path, "count_")))
    res = synthesis.run(cfg, RunDir(tmp_path / "run"), provider=FunctionProvider(fake, "scripted2"), progress=False)
    assert res.checked == "1 sandbox: doctests passed (of 1 accepted exercises)"
    assert res.counts["exercise"]["failed_sandbox"] == 1 and res.counts["exercise"]["accepted"] == 1
    (rej,) = res.rejected()
    assert rej["topic"] == "b" and rej["reason"].startswith("sandbox failed") and "doctest" in rej["reason"]
    assert reason_category(rej["reason"]) == "sandbox failed"
    (ok,) = res.records("exercise")
    assert ok["checked"] == "sandbox: doctests passed"


def test_an_llm_exercise_without_doctests_is_rejected(tmp_path, monkeypatch):
    """The prompt asks for doctests, so a real model's reply without any cannot be checked: rejected (by
    default), or with require_doctests=False kept and labelled 'not executed (no doctests)'."""
    from phi1lib.llm import FunctionProvider

    monkeypatch.setattr("phi1lib.synthesis.generate.sandbox_available", lambda: False)
    bare = GOOD_EXERCISE.replace('    >>> count_vowels("Banana")\n    3\n', "")

    def reply(req):  # one distinct function per prompt (no near duplicates)
        tag = req.meta["prompt_id"]
        return bare.replace("count_vowels", f"count_{tag}").replace("vowels (a", f"vowels of kind {tag} (a")

    provider = FunctionProvider(reply, "bare")
    cfg = SynthesisConfig.for_preset("tiny", kinds=("exercise",), n_exercises=3, concurrency=1)
    res = synthesis.run(cfg, RunDir(tmp_path / "a"), provider=provider, progress=False)
    assert res.counts["exercise"]["accepted"] == 0 and res.reasons["exercise"] == {"no doctests": 3}
    kept = synthesis.run(replace(cfg, require_doctests=False), RunDir(tmp_path / "b"), provider=provider,
                         progress=False)
    assert kept.counts["exercise"]["accepted"] == 3 and kept.counts["exercise"]["executed"] == 0
    assert {r["checked"] for r in kept.records("exercise")} == {"not executed (no doctests)"}
    assert kept.checked == "3 not executed (no doctests) (of 3 accepted exercises)"


def _list(tmp_path, words):
    p = tmp_path / f"list_{words.replace(' ', '_')}.txt"
    p.write_text("\n".join(words.split()) + "\n")
    return p


def test_config_validation():
    with pytest.raises(ConfigError, match="provider"):
        SynthesisConfig(provider="bard")
    with pytest.raises(ConfigError, match="n_exercises"):
        SynthesisConfig(n_exercises=-1)
    with pytest.raises(ConfigError, match="stand-in"):
        SynthesisConfig(provider="extractive", model="gpt-4")
    with pytest.raises(FieldError, match="model"):
        SynthesisConfig(provider="openai")  # a real provider needs a real model
    with pytest.raises(FieldError, match="kinds"):
        SynthesisConfig(kinds=("poem",))
    with pytest.raises(FieldError, match="dedup_threshold"):
        SynthesisConfig(dedup_threshold=0.0)
    with pytest.raises(FieldError, match="cap_usd"):
        SynthesisConfig(cap_usd=-1.0)
    with pytest.raises(FieldError, match="n_textbooks"):
        SynthesisConfig(n_textbooks=2.5)
    with pytest.raises(FieldError, match=r"min_relevance=0\.0: expected a share of the topic's words in \(0, 1\]"):
        SynthesisConfig(min_relevance=0.0)
    with pytest.raises(ConfigError, match="has no field"):
        SynthesisConfig.for_preset("tiny", out_dir="x")
    tiny = SynthesisConfig.for_preset("tiny")
    assert (tiny.n_textbooks, tiny.n_exercises) == (200, 488)  # the tiny data plan, as before
    assert tiny.hardware == get_preset("tiny").hardware and tiny.provider == "extractive"
    small = SynthesisConfig.for_preset("phi1")
    assert small.provider == "openai" and small.model == "gpt-3.5-turbo"
    assert (small.workers, small.concurrency) == (16, 64)
    assert small.n_exercises == pytest.approx(180e6 / 205, rel=1e-3)
    assert small.n_textbooks == get_preset("phi1").data.n_textbooks


def test_estimate_matches_the_price_book():
    prices = budget.load_prices()
    cfg = SynthesisConfig.for_preset("phi1-small", n_textbooks=1000, n_exercises=2000)
    est = synthesis.estimate(cfg, prices)
    pin, pout, _ = budget.llm_unit_prices("gpt-3.5-turbo", prices)
    tokens_out = 1000 * cfg.tokens_per_textbook + 2000 * cfg.tokens_per_exercise
    counter = TokenCounter(cfg.model)  # the estimate counts the real prompts as the LLM layer would
    tokens_in = sum(counter.count_request(Request(messages=list(p.messages))) for k in ("textbook", "exercise")
                    for p in cfg.prompts(k))  # n < 2000: every prompt is measured
    assert est.cost_usd == pytest.approx((tokens_in * pin + tokens_out * pout) / 1000, rel=1e-9)
    assert est.tokens == pytest.approx(tokens_in + tokens_out)
    assert synthesis.estimate(SynthesisConfig.for_preset("tiny", n_textbooks=5, n_exercises=5), prices).cost_usd == 0.0
    paper = synthesis.estimate(SynthesisConfig.for_preset("phi1"), prices)  # ~1.18B output tokens, sampled prompts
    assert paper.cost_usd == pytest.approx(1.18e9 * pout / 1000, rel=0.15)
    batch = synthesis.estimate(SynthesisConfig.for_preset("phi1", batch=True), prices)
    assert batch.cost_usd == pytest.approx(paper.cost_usd / 2)  # the Batch API, through the plan defaults


@pytest.mark.parametrize("preset", ["tiny", "phi1"])
def test_plan_lines_follow_the_config(preset):
    cfg = SynthesisConfig.for_preset(preset)
    lines = synthesis.budget_lines(cfg)
    assert [l["item"] for l in lines] == ["textbooks", "exercises"] and {l["kind"] for l in lines} == {"llm"}
    assert [l["samples"] for l in lines] == [cfg.n_textbooks, cfg.n_exercises]
    assert [l["out_per_sample"] for l in lines] == [cfg.tokens_per_textbook, cfg.tokens_per_exercise]
    assert {l["model"] for l in lines} == {cfg.model}
    est = synthesis.estimate(cfg, budget.load_prices())
    assert est.tokens == pytest.approx(sum(l["samples"] * (l["in_per_sample"] + l["out_per_sample"]) for l in lines))
    only = synthesis.budget_lines(SynthesisConfig.for_preset(preset, kinds=("exercise",)))
    assert [l["item"] for l in only] == ["exercises"]


def test_missing_source_is_a_clear_error(tmp_path):
    cfg = SynthesisConfig.for_preset("tiny", n_textbooks=2, n_exercises=2, source=str(tmp_path / "none.parquet"))
    with pytest.raises(DataError, match="none.parquet"):
        synthesis.run(cfg, RunDir(tmp_path), progress=False)


def test_generate_does_not_import_the_stage():
    from phi1lib.synthesis import generate

    tree = ast.parse(inspect.getsource(generate))
    relative = {(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert (1, "stage") not in relative and (2, "stage") in relative  # phi1lib.stage (Timer, Usage), not synthesis.stage


def test_cli_offline(tmp_path, capsys):
    from phi1lib.cli import main

    _stdlib_parquet(tmp_path, modules=(textwrap,))
    out = str(tmp_path)  # --out is the RUN folder: the stage reads OUT/filtering, writes OUT/synthesis
    rc = main(["synth", "exercises", "--out", out, "--count", "6", "--no-sandbox", "--set", f"topics_file={STDLIB_TOPICS}"])
    text = capsys.readouterr().out
    assert rc == 0 and "STAND-IN" in text and "accepted of 6 requested" in text and "estimate" in text
    assert read_jsonl(tmp_path / "synthesis" / "exercises.jsonl")
    assert main(["synth", "textbooks", "--out", out, "--count", "3", "--json", "--set", f"topics_file={STDLIB_TOPICS}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["files"]) == {"textbook", "exercise"} and printed["counts"]["textbook"]["requested"] == 3
    assert main(["synth", "textbooks", "--provider", "openai", "--out", out]) == 2  # needs --model
    assert "--provider openai needs --model" in capsys.readouterr().err
    assert main(["synth", "exercises", "--out", out, "--count", "-1"]) == 2
    assert "--count -1: expected an integer >= 0" in capsys.readouterr().err
    assert main(["synth", "exercises", "--out", out, "--set", "temperature=x"]) == 2
    assert "--set temperature: expected a number, got 'x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it before any work
        main(["synth", "exercises", "--out", out, "--cap-usd", "-2"])
    assert exit_.value.code == 2 and "--cap-usd: '-2': expected a dollar amount >= 0" in capsys.readouterr().err
    assert main(["synth", "exercises", "--out", out, "--count", "7", "--no-sandbox",
                 "--set", f"topics_file={STDLIB_TOPICS}"]) == 2  # stored with 6
    assert "exercises made with other settings (n_exercises 6 -> now 7)" in capsys.readouterr().err
    assert main(["synth", "all", "--preset", "phi1", "--estimate-only", "--json", "--out", out]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["stage"] == "synthesis" and est["cost_usd"] > 1000
    assert not (tmp_path / "synthesis" / "llm_store.sqlite-journal").exists()


# ---- a real LLM run against a local OpenAI-compatible server ------------------------------------

class _SynthServer:
    """Wraps the project's scripted server so its answers are well-formed exercises and sections."""

    def __init__(self):
        from llm_server import ScriptedLLMServer

        outer = self

        class Server(ScriptedLLMServer):
            def answer(self, body, chat):
                status, headers, resp = super().answer(body, chat)
                if status == 200:
                    resp["choices"][0]["message"]["content"] = outer.reply(body["messages"][-1]["content"])
                return status, headers, resp

        self.server = Server()

    @staticmethod
    def reply(prompt: str) -> str:
        import hashlib
        import re

        tag = hashlib.sha1(prompt.encode()).hexdigest()[:6]
        if "must start with" in prompt:
            prefix = re.search(r"must start with `(\w+)`", prompt).group(1)
            name = f"{prefix}items_{tag}"
            return (f"```python\ndef {name}(values: list) -> int:\n    \"\"\"Count the items of values that are "
                    f"truthy (variant {tag}).\n\n    >>> {name}([0, 1, 2])\n    2\n    \"\"\"\n"
                    f"    return sum(1 for v in values if v)\n```\n")
        topic = re.search(r"Topic: (.*)", prompt).group(1)
        return (f"## {topic}\n\nThis section ({tag}) explains {topic} with a small function and its output.\n\n"
                f"```python\ndef double_{tag}(x):\n    return 2 * x\n```\n\nExample usage:\n\n"
                f"```python\n>>> double_{tag}(21)\n42\n```\n")


@pytest.fixture()
def synth_server(monkeypatch):
    s = _SynthServer()
    monkeypatch.setenv("PHI1_TEST_LLM_KEY", s.server.api_key)
    url = s.server.start()
    yield s.server, url
    s.server.stop()


def test_llm_run_produces_caches_and_resumes(tmp_path, synth_server):
    server, url = synth_server
    run_dir = RunDir(tmp_path)
    out = run_dir.path("synthesis")
    base = dict(provider="openai", model="gpt-3.5-turbo-0613", base_url=url, api_key_env="PHI1_TEST_LLM_KEY",
                n_textbooks=6, n_exercises=10, temperature=0.8, concurrency=4)

    # 1) a cap too small for the whole run: BudgetExceeded before crossing it; finished answers are kept.
    # The client reserves a request's worst case (prompt + max_tokens) before sending it: this cap
    # admits the first textbook section but not all sixteen requests.
    # The worst case: the longest textbook prompt (at most one token per character, plus the chat overhead)
    # + max_tokens.
    longest = 50 + max(sum(len(m["content"]) for m in p.messages)
                       for p in SynthesisConfig.for_preset("tiny", **base).prompts("textbook"))
    worst_textbook = budget.price_llm_usage("gpt-3.5-turbo-0613", longest, 2048, budget.load_prices())
    with pytest.raises(BudgetExceeded):
        synthesis.run(SynthesisConfig.for_preset("tiny", cap_usd=worst_textbook * 1.05, **base), run_dir, progress=False)
    paid_before = len(server.paid())
    assert 0 < paid_before < 16
    assert not (out / "result.json").exists()

    # 2) the cap is the job's, kept in the run folder: a rerun without cap_usd still honours it ...
    with pytest.raises(BudgetExceeded, match="kept in"):
        synthesis.run(SynthesisConfig.for_preset("tiny", **base), run_dir, progress=False)
    assert len(server.paid()) == paid_before
    # ... and raising it resumes: only the missing answers are paid for.
    res = synthesis.run(SynthesisConfig.for_preset("tiny", cap_usd=100.0, **base), run_dir, progress=False)
    assert len(server.paid()) == 16 and len(set(server.paid())) == 16
    assert res.metrics["cached"] == paid_before and res.usage.usd > 0 and res.usage.requests == 16
    assert res.generator == "gpt-3.5-turbo-0613" and res.stand_in is None and res.inputs == {}  # no kept.parquet needed
    assert res.counts["exercise"]["accepted"] == 10 and res.counts["textbook"]["accepted"] == 6
    ex = res.records("exercise")
    assert all(r["entry_point"].startswith(r["name_prefix"]) and r["name_prefix_ok"] for r in ex)
    expected = budget.price_llm_usage("gpt-3.5-turbo-0613", res.usage.tokens_in, res.usage.tokens_out,
                                     budget.load_prices())
    assert res.usage.usd == pytest.approx(expected)

    # 3) a forced rerun is served entirely from the store: no new request, no new spend.
    again = synthesis.run(SynthesisConfig.for_preset("tiny", **base), run_dir, progress=False, force=True)
    assert len(server.paid()) == 16
    assert again.metrics["cached"] == 16 and again.usage.usd == 0.0 and again.usage.tokens_in == 0
    assert [r["text"] for r in again.records("exercise")] == [r["text"] for r in ex]
    assert "sk-test" not in (out / "result.json").read_text()  # the key is never stored


# ---- chapter 2's tables and figures --------------------------------------------------------------

def test_rejected_table_and_figures_label_the_stand_in(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phi1lib.synthesis.figures import coverage_heatmap, coverage_matrix, funnel, funnel_counts, lengths_histogram

    src = _stdlib_parquet(tmp_path)
    cfg = SynthesisConfig.for_preset("tiny", n_textbooks=6, n_exercises=30, source=str(src), topics_file=STDLIB_TOPICS,
                                     sandbox=False)
    res = synthesis.run(cfg, RunDir(tmp_path / "run"), progress=False)
    table = res.rejected_table()
    assert table["records"].sum() == len(res.rejected())
    assert table.loc[("exercise", "no source"), "records"] == res.counts["exercise"]["no_source"]
    assert not any(cat.startswith(("near duplicate of", "exact duplicate of")) for _, cat in table.index)
    topics, audiences = load_list(STDLIB_TOPICS), load_list(cfg.audiences_file)
    m = coverage_matrix(res.records("textbook"), topics, audiences)
    assert m.to_numpy().sum() == len(res.records("textbook")) and m.loc["roman numerals"].sum() == 0
    accepted = res.counts["exercise"]["accepted"]
    steps = dict(funnel_counts(res, "exercise", [{"tau": 0.9, "kept": accepted - 1}]))
    values = list(steps.values())
    assert values == sorted(values, reverse=True) and values[0] == 30  # a funnel never grows
    assert steps["not a duplicate = accepted"] == accepted and steps["kept after pruning at tau=0.9"] == accepted - 1
    titles = [coverage_heatmap(res, topics, audiences).get_title(),
              lengths_histogram(res).get_legend().texts[0].get_text()]
    titles += [ax.get_title() for ax in funnel(res)]
    assert all("STAND-IN" in t for t in titles), titles
    plt.close("all")
