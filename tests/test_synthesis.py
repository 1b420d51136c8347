"""Synthesis stage: prompt determinism, reply parsing and checks, the extractive stand-in, rejected-record
bookkeeping, and a real LLM run (local OpenAI-compatible server) that produces, caches and resumes."""

from __future__ import annotations

import ast
import inspect
import json
import statistics
import textwrap

import pandas as pd
import pytest

from phi1lib import budget
from phi1lib.errors import BudgetExceeded, ConfigError, DataError
from phi1lib.jsonl import read_jsonl
from phi1lib.synthesis.extractive import assign_units, extract_units, units_from_source
from phi1lib.synthesis.prompts import exercise_prompts, load_list, textbook_prompts
from phi1lib.synthesis.quality import check_textbook, code_blocks, parse_exercise, sandbox_available
from phi1lib.synthesis import SynthesisConfig, estimate_cost, run_synthesis

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


def test_stand_in_assignment_prefers_topic_and_name_prefix():
    units = extract_units([("textwrap", inspect.getsource(textwrap)), ("statistics", inspect.getsource(statistics))])
    prompts = exercise_prompts(2, seed=0, topics=["simple statistics: mean, median, mode"], name_prefixes=["median"])
    got = assign_units(prompts, units["exercise"])
    assert all(u is not None and u.name.startswith("median") for u in got)
    assert len({u.name for u in got}) == 2  # no unit used twice


# ---- the stage ----------------------------------------------------------------------------------

def test_offline_run_writes_contract_files_and_is_resumable(tmp_path):
    src = _stdlib_parquet(tmp_path)
    cfg = SynthesisConfig.for_preset("tiny", n_textbooks=8, n_exercises=40, source=str(src))
    out = tmp_path / "synthesis"
    res = run_synthesis(cfg, out, progress=False)
    assert res.stand_in and res.generator == "extractive-stand-in"
    assert (out / "result.json").exists() and (out / "rejected.jsonl").exists()
    books, exercises = read_jsonl(out / "textbooks.jsonl"), read_jsonl(out / "exercises.jsonl")
    assert books and exercises
    for r in books + exercises:
        assert r["id"] and r["kind"] in ("textbook", "exercise") and r["text"] and r["topic"]
    for r in exercises:
        assert r["prompt"] + r["solution"] in r["text"] and r["entry_point"] in r["prompt"]
        assert r["generator"] == "extractive-stand-in"
    rejected = res.rejected()
    assert all(r["reason"] for r in rejected)
    c = res.counts["exercise"]
    assert c["accepted"] == len(exercises)
    assert c["requested"] == c["no_source"] + c["generated"] + c["llm_errors"]
    assert c["generated"] == c["accepted"] + c["failed_checks"] + c["failed_sandbox"] + c["duplicates"]
    assert len([r for r in rejected if r["kind"] == "exercise"]) == c["failed_checks"] + c["failed_sandbox"] + c["duplicates"]
    assert res.usage["usd"] == 0.0
    mtime = (out / "exercises.jsonl").stat().st_mtime_ns
    again = run_synthesis(cfg, out, progress=False)  # finished: returned as stored, nothing rewritten
    assert again.counts == json.loads((out / "result.json").read_text())["counts"]
    assert (out / "exercises.jsonl").stat().st_mtime_ns == mtime


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
    res = run_synthesis(cfg, tmp_path / "synthesis", provider=FunctionProvider(fake, "scripted"), progress=False)
    c = res.counts["exercise"]
    assert c == {**c, "requested": 20, "llm_errors": 4, "generated": 16, "failed_checks": 8, "duplicates": 3,
                 "accepted": 5}
    reasons = [r["reason"] for r in res.rejected()]
    assert sum("llm error" in r and "scripted provider failure" in r for r in reasons) == 4
    assert sum("does not parse" in r for r in reasons) == 4
    assert sum("no docstring" in r for r in reasons) == 4
    assert sum(r.startswith("exact duplicate of exercise-") for r in reasons) == 3
    assert res.checked == "parse-only (phi1lib.sandbox unavailable)"
    assert res.generator == "scripted" and not res.stand_in


@pytest.mark.skipif(not sandbox_available(), reason="phi1lib.sandbox not importable")
def test_sandbox_rejects_a_wrong_solution(tmp_path):
    from phi1lib.llm import FunctionProvider

    wrong = GOOD_EXERCISE.replace('in "aeiou"', 'in "eiou"')  # "Banana" -> 0, doctest says 3

    def fake(request):
        return GOOD_EXERCISE if request.meta["topic"] == "a" else wrong

    cfg = SynthesisConfig.for_preset("tiny", kinds=("exercise",), n_exercises=2, topics_file=str(_list(tmp_path, "a b")),
                                     names_file=str(_list(tmp_path, "count_")))
    res = run_synthesis(cfg, tmp_path / "synthesis", provider=FunctionProvider(fake, "scripted2"), progress=False)
    assert res.checked == "sandbox doctests"
    assert res.counts["exercise"]["failed_sandbox"] == 1 and res.counts["exercise"]["accepted"] == 1
    (rej,) = res.rejected()
    assert rej["topic"] == "b" and rej["reason"].startswith("sandbox failed") and "doctest" in rej["reason"]
    (ok,) = res.records("exercise")
    assert ok["checked"] == "sandbox doctests passed"


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
    small = SynthesisConfig.for_preset("phi1")
    assert small.provider == "openai" and small.model == "gpt-3.5-turbo"
    assert small.n_exercises == pytest.approx(180e6 / 205, rel=1e-3)


def test_estimate_matches_the_price_book():
    prices = budget.load_prices()
    cfg = SynthesisConfig.for_preset("phi1-small", n_textbooks=1000, n_exercises=2000)
    est = estimate_cost(cfg, prices)
    pin, pout, _ = budget.llm_unit_prices("gpt-3.5-turbo", prices)
    tokens_out = 1000 * cfg.tokens_per_textbook + 2000 * cfg.tokens_per_exercise
    tokens_in = sum(sum(len(m["content"]) for m in p.messages) for k in ("textbook", "exercise")
                    for p in cfg.prompts(k)) / 4.0  # n < 2000: every prompt is measured
    assert est.cost_usd == pytest.approx((tokens_in * pin + tokens_out * pout) / 1000, rel=1e-9)
    assert est.tokens == pytest.approx(tokens_in + tokens_out)
    assert estimate_cost(SynthesisConfig.for_preset("tiny", n_textbooks=5, n_exercises=5), prices).cost_usd == 0.0
    paper = estimate_cost(SynthesisConfig.for_preset("phi1"), prices)  # ~1.18B output tokens, sampled prompts
    assert paper.cost_usd == pytest.approx(1.18e9 * pout / 1000, rel=0.15)


def test_missing_source_is_a_clear_error(tmp_path):
    cfg = SynthesisConfig.for_preset("tiny", n_textbooks=2, n_exercises=2, source=str(tmp_path / "none.parquet"))
    with pytest.raises(DataError, match="none.parquet"):
        run_synthesis(cfg, tmp_path / "synthesis", progress=False)


def test_cli_offline(tmp_path, capsys):
    from phi1lib.cli import main

    src = _stdlib_parquet(tmp_path, modules=(textwrap,))
    out = tmp_path / "cli-synth"
    rc = main(["synth", "exercises", "--out", str(out), "--source", str(src), "--n", "6", "--no-sandbox"])
    text = capsys.readouterr().out
    assert rc == 0 and "STAND-IN" in text and "accepted of 6 requested" in text
    assert read_jsonl(out / "exercises.jsonl")
    assert main(["synth", "textbooks", "--provider", "openai", "--out", str(out)]) == 2  # needs --model


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
    out = tmp_path / "synthesis"
    base = dict(provider="openai", model="gpt-3.5-turbo-0613", base_url=url, api_key_env="PHI1_TEST_LLM_KEY",
                n_textbooks=6, n_exercises=10, temperature=0.8, concurrency=4)

    # 1) a cap too small for the whole run: BudgetExceeded before crossing it; finished answers are kept.
    # The client reserves a request's worst case (prompt + max_tokens) before sending it: this cap
    # admits the first textbook section but not all sixteen requests.
    worst_textbook = budget.price_llm_usage("gpt-3.5-turbo-0613", 400, 2048, budget.load_prices())
    with pytest.raises(BudgetExceeded):
        run_synthesis(SynthesisConfig.for_preset("tiny", cap_usd=worst_textbook * 1.1, **base), out, progress=False)
    paid_before = len(server.paid())
    assert 0 < paid_before < 16
    assert not (out / "result.json").exists()

    # 2) resume without the cap: only the missing answers are paid for.
    res = run_synthesis(SynthesisConfig.for_preset("tiny", **base), out, progress=False)
    assert len(server.paid()) == 16 and len(set(server.paid())) == 16
    assert res.usage["cached"] == paid_before and res.usage["usd"] > 0
    assert res.generator == "gpt-3.5-turbo-0613" and not res.stand_in
    assert res.counts["exercise"]["accepted"] == 10 and res.counts["textbook"]["accepted"] == 6
    ex = res.records("exercise")
    assert all(r["entry_point"].startswith(r["name_prefix"]) and r["name_prefix_ok"] for r in ex)
    expected = budget.price_llm_usage("gpt-3.5-turbo-0613", res.usage["prompt_tokens"], res.usage["completion_tokens"],
                                     budget.load_prices())
    assert res.usage["usd"] == pytest.approx(expected)

    # 3) a forced rerun is served entirely from the store: no new request, no new spend.
    again = run_synthesis(SynthesisConfig.for_preset("tiny", **base), out, progress=False, force=True)
    assert len(server.paid()) == 16
    assert again.usage["cached"] == 16 and again.usage["usd"] == 0.0
    assert [r["text"] for r in again.records("exercise")] == [r["text"] for r in ex]
    assert "sk-test" not in (out / "result.json").read_text()  # the key is never stored
