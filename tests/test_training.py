"""Training: schedule, weight-decay groups, output contract, resume equivalence, NaN stop, 2-process path."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys

import pytest

from phi1lib import budget
from phi1lib.errors import ConfigError
from phi1lib.presets import get_preset
from phi1lib.training import (NonFiniteLoss, TrainConfig, checkpoints, estimate_cost, lr_schedule, param_groups,
                              read_log, run_training)


@pytest.fixture(scope="module")
def code_jsonl(tmp_path_factory):
    """Real Python source (stdlib modules) as a JSONL training file."""
    import argparse, csv, json as j, textwrap, string, shlex, fnmatch, glob, colorsys, dataclasses  # noqa: E401
    mods = (argparse, csv, j.decoder, j.encoder, textwrap, string, shlex, fnmatch, glob, colorsys, dataclasses)
    path = tmp_path_factory.mktemp("data") / "code.jsonl"
    path.write_text("".join(json.dumps({"text": inspect.getsource(m)}) + "\n" for m in mods))
    return path


def _cfg(out, data, **kw):
    base = dict(out_dir=out, data=(str(data),), steps=8, batch_seqs=4, micro_batch=2, seq_len=32, warmup_steps=2,
                checkpoint_every=4, humaneval_problems=3, eval_blocks=2, heldout_fraction=0.1, threads=1)
    base.update(kw)
    return TrainConfig.for_preset("tiny", **base)


def _losses(out):
    df = read_log(out)
    return df[df.kind == "train"].set_index("step")["loss"]


def test_for_preset_uses_the_paper_schedule():
    c = TrainConfig.for_preset("phi1", out_dir="/tmp/unused-phi1")
    assert (c.steps, c.batch_seqs, c.seq_len, c.peak_lr, c.warmup_steps, c.decay_steps, c.weight_decay) == \
        (24_000, 1024, 2048, 1e-3, 750, 36_000, 0.1)
    f = TrainConfig.for_preset("phi1", "finetune", out_dir="/tmp/unused-phi1")
    assert (f.steps, f.batch_seqs, f.peak_lr, f.warmup_steps, f.weight_decay) == (6000, 256, 1e-4, 50, 0.01)
    t = TrainConfig.for_preset("tiny", out_dir="/tmp/unused-tiny")
    assert t.tokens == get_preset("tiny").pretrain.tokens
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.for_preset("tiny", out_dir="/tmp/x", lr=1)
    with pytest.raises(ConfigError, match="seq_len"):
        TrainConfig.for_preset("tiny", out_dir="/tmp/x", seq_len=4096)
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig.for_preset("tiny", out_dir="/tmp/x", precision="fp8")
    with pytest.raises(ConfigError, match="multiple of micro_batch"):
        TrainConfig.for_preset("tiny", out_dir="/tmp/x", batch_seqs=6, micro_batch=4)


def test_lr_schedule_linear_warmup_then_linear_decay_to_decay_steps():
    import torch

    cfg = TrainConfig.for_preset("phi1", out_dir="/tmp/unused-phi1")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.peak_lr)
    sched = lr_schedule(opt, cfg)
    lrs = {s: cfg.peak_lr * sched.lr_lambdas[0](s) for s in range(cfg.steps + 1)}  # LR used at optimizer step s+1
    for _ in range(3):
        opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[3])  # the lambda is what the scheduler applies
    assert lrs[0] == 0 and math.isclose(lrs[375], 0.5e-3) and math.isclose(lrs[750], 1e-3)
    # Decays toward 0 at 36k, so at the 24k stop it is 1/3 of the way from 0: (36000-24000)/(36000-750).
    assert math.isclose(lrs[24_000], 1e-3 * 12_000 / 35_250, rel_tol=1e-9)
    assert math.isclose(lrs[18_375], 1e-3 * 0.5, rel_tol=1e-9)


def test_no_weight_decay_on_biases_and_layernorm():
    from phi1lib.training.model import build_model

    model = build_model(get_preset("tiny").model)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    assert nd and all(n.endswith("bias") or "layernorm" in n for n in nd)
    assert any("layernorm" in n for n in nd)
    assert all(names[id(p)].endswith("weight") and "layernorm" not in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_estimate_uses_the_budget_model():
    cfg = TrainConfig.for_preset("phi1", out_dir="/tmp/unused-phi1")
    prices = budget.load_prices()
    est = estimate_cost(cfg, prices)
    ref = budget.estimate_training("pretrain", get_preset("phi1").model, cfg.tokens, prices, gpu="A100", n_gpus=8,
                                  mfu=0.5, seq_len=2048)
    assert est.cost_usd == ref.cost_usd > 1000 and est.gpu_hours == ref.gpu_hours


def test_run_writes_the_output_contract_and_is_not_redone(tmp_path, code_jsonl):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi1lib.budget import Ledger

    out = tmp_path / "pre"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    res = run_training(_cfg(out, code_jsonl), ledger=ledger, progress=False)
    assert (out / "result.json").exists() and (out / "final" / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.model_type == "phi" and tok.eos_token == "<|endoftext|>"
    # The saved model decodes with its KV cache (training runs without it).
    assert model.config.use_cache and model.generation_config.use_cache
    df = read_log(out)
    train = df[df.kind == "train"]
    assert list(train.step) == list(range(1, 9))
    assert {"loss", "lr", "tokens_per_s", "mfu", "grad_norm"} <= set(train.columns)
    assert (train.tokens_per_s > 0).all() and (train.mfu > 0).all()  # CPU peak: the price book's declared 0.2 TFLOP/s
    info = df[df.kind == "info"].iloc[0]
    assert "sdpa" in info.attention and info.grad_accum == 2
    evals = df[df.kind == "eval"]
    assert list(evals.step) == [0, 8] and evals.humaneval_loss.notna().all()
    assert res.humaneval_loss < res.humaneval_loss_initial  # it learned something about Python
    assert [p.name for p in checkpoints(out)] == ["step_000004", "step_000008"]
    rec = [r for r in ledger.records if r["stage"] == "pretrain"][-1]
    assert rec["cpu_seconds"] > 0 and rec["usd"] == 0 and rec["estimate_usd"] == 0
    # Rerun: the stored result comes back, nothing is retrained.
    mtime = (out / "log.jsonl").stat().st_mtime_ns
    again = run_training(_cfg(out, code_jsonl), progress=False)
    assert again.to_dict() == json.loads((out / "result.json").read_text())
    assert (out / "log.jsonl").stat().st_mtime_ns == mtime
    # Finetune from it: starts from the pretrained weights and tokenizer.
    ft = run_training(_cfg(tmp_path / "ft", code_jsonl, stage="finetune", init_from=str(out / "final"), steps=2,
                           peak_lr=1e-3, warmup_steps=1), progress=False)
    assert math.isclose(ft.humaneval_loss_initial, res.humaneval_loss, rel_tol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path / "ft" / "final").get_vocab() == tok.get_vocab()


def test_resume_after_a_kill_continues_the_same_run(tmp_path, code_jsonl):
    a = tmp_path / "a"
    run_training(_cfg(a, code_jsonl), progress=False)

    class Killed(KeyboardInterrupt):
        pass

    def kill_at_6(step, loss):
        if step == 6:
            raise Killed
        return loss

    b = tmp_path / "b"
    with pytest.raises(Killed):
        run_training(_cfg(b, code_jsonl), loss_hook=kill_at_6, progress=False)
    assert [p.name for p in checkpoints(b)] == ["step_000004"] and not (b / "result.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        run_training(_cfg(b, code_jsonl), resume=False, progress=False)
    with pytest.raises(ConfigError, match="different run.*seed"):
        run_training(_cfg(b, code_jsonl, seed=1), progress=False)
    run_training(_cfg(b, code_jsonl), resume=True, progress=False)
    la, lb = _losses(a), _losses(b)
    assert list(lb.index) == list(range(1, 9))  # the log was truncated to the checkpoint, then continued
    assert la.to_numpy() == pytest.approx(lb.to_numpy(), rel=1e-5, abs=1e-6)
    assert la.iloc[-1] != la.iloc[3]  # the run did move


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, code_jsonl):
    import torch

    out = tmp_path / "nan"
    torch.set_grad_enabled(False)  # as another stage (the embedder) may leave it; training must still learn
    try:
        with pytest.raises(NonFiniteLoss, match=r"step 6.*step_000004"):
            run_training(_cfg(out, code_jsonl),
                         loss_hook=lambda s, l: l * torch.tensor(float("nan")) if s == 6 else l, progress=False)
    finally:
        torch.set_grad_enabled(True)
    assert [p.name for p in checkpoints(out)] == ["step_000004"]
    assert not (out / "result.json").exists() and not (out / "final").exists()
    df = read_log(out)
    assert df[df.kind == "error"].iloc[0].step == 6


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path, code_jsonl):
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun; on a CPU-only machine the loop's
    Accelerator(cpu=True) joins a gloo group) runs the CLI unchanged; without dropout the 2-process
    loss curve equals the 1-process one (same global batches, averaged gradients)."""
    common = ["train", "pretrain", "--preset", "tiny", "--data", str(code_jsonl), "--max-steps", "4",
              "--set", "batch_seqs=4", "--set", "micro_batch=2", "--set", "seq_len=32", "--set", "dropout=0.0",
              "--set", "humaneval_problems=2", "--set", "eval_blocks=2", "--set", "threads=1",
              "--set", "warmup_steps=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    df = read_log(tmp_path / "two")
    assert df[df.kind == "info"].iloc[0].processes == 2
    assert _losses(tmp_path / "two").to_numpy() == pytest.approx(_losses(tmp_path / "one").to_numpy(), rel=1e-4)


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    from phi1lib.cli import main

    rc = main(["train", "pretrain", "--preset", "tiny", "--out", str(tmp_path / "o"),
               "--data", str(tmp_path / "missing.jsonl"), "--max-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl" in err and "not found" in err and "Traceback" not in err
    rc = main(["train", "pretrain", "--out", str(tmp_path / "o"), "--set", "steps"])
    assert rc == 2 and "FIELD=VALUE" in capsys.readouterr().err
