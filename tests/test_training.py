"""Training: config, schedule, weight-decay groups, estimate, output contract, stored-result rule, resume,
NaN stop, CLI, 2-process path."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys

import pytest

from phi1lib import budget, training
from phi1lib.errors import ConfigError, DataError
from phi1lib.presets import PRESET_NAMES, get_preset
from phi1lib.runs import RunDir
from phi1lib.stage import FieldError, StaleResult
from phi1lib.training import (BlockOrder, Callback, NonFiniteLoss, TrainConfig, checkpoints, lr_schedule, param_groups,
                              read_log)


@pytest.fixture(scope="module")
def code_jsonl(tmp_path_factory):
    """Real Python source (stdlib modules) as a JSONL training file."""
    import argparse, csv, json as j, textwrap, string, shlex, fnmatch, glob, colorsys, dataclasses  # noqa: E401
    mods = (argparse, csv, j.decoder, j.encoder, textwrap, string, shlex, fnmatch, glob, colorsys, dataclasses)
    path = tmp_path_factory.mktemp("data") / "code.jsonl"
    path.write_text("".join(json.dumps({"text": inspect.getsource(m)}) + "\n" for m in mods))
    return path


def _cfg(data, stage="pretrain", **kw):
    base = dict(data=(str(data),), steps=8, batch_seqs=4, micro_batch=2, seq_len=32, warmup_steps=2,
                checkpoint_every=4, humaneval_problems=3, eval_blocks=2, heldout_fraction=0.1, threads=1)
    base.update(kw)
    return TrainConfig.for_preset("tiny", stage, **base)


def _losses(stage_dir):
    df = read_log(stage_dir)
    return df[df.kind == "train"].set_index("step")["loss"]


class LossAt(Callback):
    """Replace the loss of one step (a fault) or raise there (a kill)."""

    def __init__(self, step, fn):
        self.step, self.fn = step, fn

    def on_loss(self, step, loss):
        return self.fn(loss) if step == self.step else loss


def test_for_preset_uses_the_paper_schedule():
    c = TrainConfig.for_preset("phi1")
    assert (c.steps, c.batch_seqs, c.seq_len, c.peak_lr, c.warmup_steps, c.decay_steps, c.weight_decay) == \
        (24_000, 1024, 2048, 1e-3, 750, 36_000, 0.1)
    assert c.stage_name == "pretrain" and c.model == get_preset("phi1").model and c.hardware.n_gpus == 8
    assert c.tokenizer == get_preset("phi1").tokenizer and c.threads is None and c.eval_blocks == 256
    f = TrainConfig.for_preset("phi1", "finetune")
    assert (f.steps, f.batch_seqs, f.peak_lr, f.warmup_steps, f.weight_decay) == (6000, 256, 1e-4, 50, 0.01)
    assert f.stage_name == "finetune" and f.tokenizer is None  # the init_from model's tokenizer
    t = TrainConfig.for_preset("tiny")
    assert t.tokens == get_preset("tiny").pretrain.tokens
    assert (t.steps, t.micro_batch, t.checkpoint_every, t.eval_blocks, t.humaneval_problems, t.threads,
            t.max_source_chars, t.tokenizer_train_chars) == (100, 8, 25, 16, 48, 0, 100 * 8 * 128 * 12, 1_000_000)
    assert TrainConfig.for_preset("tiny", "finetune").steps == 40
    with pytest.raises(ConfigError, match="has no field"):
        TrainConfig.for_preset("tiny", lr=1)
    with pytest.raises(ConfigError, match="seq_len"):
        TrainConfig.for_preset("tiny", seq_len=4096)
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig.for_preset("tiny", precision="fp8")
    with pytest.raises(ConfigError, match="multiple of micro_batch"):
        TrainConfig.for_preset("tiny", batch_seqs=6, micro_batch=4)
    # No silent clamping: a micro-batch larger than the batch is an error naming both.
    with pytest.raises(FieldError, match=r"micro_batch=16: expected at most batch_seqs=8") as err:
        TrainConfig.for_preset("tiny", micro_batch=16)
    assert err.value.field == "micro_batch"
    with pytest.raises(FieldError, match="init_from"):
        TrainConfig.for_preset("tiny", init_from="/some/model")  # pretraining starts from a fresh model
    with pytest.raises(FieldError, match="weight 'abc' after ':' is not a number"):
        TrainConfig.for_preset("tiny", data=("f.jsonl:abc",))
    with pytest.raises(FieldError, match="compile"):
        TrainConfig.for_preset("tiny", compile="maybe")
    assert TrainConfig.parse_sets({"compile": "true", "adam_betas": "0.9,0.99"}) == \
        {"compile": True, "adam_betas": (0.9, 0.99)}


def test_fingerprint_leaves_out_how_the_run_is_carried_out():
    a = TrainConfig.for_preset("tiny")
    same = TrainConfig.for_preset("tiny", threads=2, device="cpu", compile=True, checkpoint_every=5,
                                  keep_checkpoints=4, gpu="cpu")
    assert a.fingerprint() == same.fingerprint()
    for change in ({"seed": 1}, {"precision": "fp32"}, {"attn_implementation": "eager"}, {"steps": 200}):
        assert TrainConfig.for_preset("tiny", **change).fingerprint() != a.fingerprint(), change
    assert TrainConfig.for_preset("tiny", "finetune").fingerprint() != a.fingerprint()


def test_lr_schedule_linear_warmup_then_linear_decay_to_decay_steps():
    import torch

    cfg = TrainConfig.for_preset("phi1")
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


def test_block_order_is_a_seeded_permutation_per_epoch():
    order = BlockOrder(5, seed=3)
    first, second = [order[g] for g in range(5)], [order[g] for g in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    assert [BlockOrder(5, seed=3)[g] for g in range(10)] == first + second


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_estimate_is_the_budget_model_for_each_preset(preset):
    """One training line priced with the preset's hardware equals what the stage estimated before
    (budget.estimate_training on the preset's shape, tokens and hardware)."""
    prices = budget.load_prices()
    p = get_preset(preset)
    for stage in training.STAGES:
        cfg = TrainConfig.for_preset(preset, stage)
        (line,) = training.budget_lines(cfg)
        assert (line["kind"], line["item"], line["model"], line["steps"], line["batch_seqs"], line["seq_len"]) == \
            ("training", stage, preset, cfg.steps, cfg.batch_seqs, cfg.seq_len)
        est = training.estimate(cfg, prices)
        ref = budget.estimate_training(stage, p.model, cfg.tokens, prices, gpu=p.hardware.gpu,
                                       n_gpus=p.hardware.n_gpus, mfu=p.hardware.mfu, seq_len=cfg.seq_len)
        ours, theirs = est.to_dict(), ref.to_dict()
        assert [l.pop("note") for l in ours["lines"]] == [f"{stage}: {cfg.steps:,} steps x {cfg.batch_seqs} x {cfg.seq_len} tokens"]
        [l.pop("note", None) for l in theirs["lines"]]
        assert ours == theirs
    assert training.estimate(TrainConfig.for_preset("phi1"), prices).cost_usd > 1000


def test_run_writes_the_output_contract_and_is_not_redone(tmp_path, code_jsonl):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = RunDir(tmp_path / "run")
    out = run_dir.path("pretrain")
    ledger = budget.Ledger(run_dir.ledger_path)
    res = training.run(_cfg(code_jsonl), run_dir, ledger=ledger, progress=False)
    assert res.out_dir == str(out) and res.final_dir == str(out / "final")
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
    assert res.metrics["humaneval_loss"] == res.humaneval_loss and res.mfu > 0 and res.tokens_per_s > 0
    assert [p.name for p in checkpoints(out)] == ["step_000004", "step_000008"]
    assert res.usage.tokens_in == res.tokens == 8 * 4 * 32 and res.usage.cpu_s > 0 and res.usage.wall_s > 0
    assert res.usage.gpu_s == 0 and res.usage.usd == 0 and {"setup", "train", "save", "total"} <= set(res.seconds)
    assert res.estimate["tokens"] == res.tokens and res.config["steps"] == 8
    assert set(res.inputs) == {"data:code.jsonl"} and res.fingerprint
    rec = [r for r in ledger.records if r["stage"] == "pretrain"][-1]
    assert rec["cpu_seconds"] > 0 and rec["usd"] == 0 and rec["estimate_usd"] == 0 and rec["tokens_in"] == res.tokens
    # Rerun: the stored result comes back, nothing is retrained; a how-it-runs field may differ.
    mtime = (out / "log.jsonl").stat().st_mtime_ns
    again = training.run(_cfg(code_jsonl, threads=2, checkpoint_every=2), run_dir, progress=False)
    assert again.to_dict() == json.loads((out / "result.json").read_text())
    assert (out / "log.jsonl").stat().st_mtime_ns == mtime
    # A setting that changes the result: stopped, with the way out named.
    with pytest.raises(StaleResult, match=r"seed 0 -> now 1.*--force"):
        training.run(_cfg(code_jsonl, seed=1), run_dir, progress=False)
    # Finetune from it: the run's pretrain/final by default, its weights and tokenizer.
    ft = training.run(_cfg(code_jsonl, "finetune", steps=2, peak_lr=1e-3, warmup_steps=1), run_dir, progress=False)
    assert ft.out_dir == str(run_dir.path("finetune")) and ft.inputs["init_from"] == f"pretrain:{res.fingerprint}"
    assert math.isclose(ft.humaneval_loss_initial, res.humaneval_loss, rel_tol=1e-4)
    assert AutoTokenizer.from_pretrained(run_dir.path("finetune") / "final").get_vocab() == tok.get_vocab()
    # force=True redoes the stage: a new result, the log rewritten from step 1.
    redone = training.run(_cfg(code_jsonl, "finetune", steps=2, peak_lr=1e-3, warmup_steps=1), run_dir, force=True,
                          progress=False)
    assert redone.finished_at >= ft.finished_at and list(_losses(run_dir.path("finetune")).index) == [1, 2]
    assert redone.train_loss == pytest.approx(ft.train_loss, rel=1e-5)


def test_missing_inputs_name_the_stage_to_run(tmp_path, code_jsonl):
    empty = RunDir(tmp_path / "empty")
    with pytest.raises(DataError, match="filtering stage has not run"):
        training.run(TrainConfig.for_preset("tiny"), empty, progress=False)
    with pytest.raises(DataError, match="synthesis stage has not run"):
        training.run(TrainConfig.for_preset("tiny", "finetune"), empty, progress=False)
    with pytest.raises(DataError, match="pretrain stage has not run"):
        training.run(_cfg(code_jsonl, "finetune"), empty, progress=False)
    with pytest.raises(DataError, match="no saved model"):
        training.run(_cfg(code_jsonl, "finetune", init_from=str(tmp_path)), empty, progress=False)
    with pytest.raises(DataError, match="missing.jsonl: training data file not found"):
        training.run(_cfg(tmp_path / "missing.jsonl"), empty, progress=False)
    assert not empty.root.exists()  # nothing created before the inputs were found


def test_resume_after_a_kill_continues_the_same_run(tmp_path, code_jsonl):
    a = RunDir(tmp_path / "a")
    training.run(_cfg(code_jsonl), a, progress=False)

    class Killed(KeyboardInterrupt):
        pass

    def kill(loss):
        raise Killed

    b = RunDir(tmp_path / "b")
    out = b.path("pretrain")
    with pytest.raises(Killed):
        training.run(_cfg(code_jsonl), b, callbacks=[LossAt(6, kill)], progress=False)
    assert [p.name for p in checkpoints(out)] == ["step_000004"] and not (out / "result.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        training.run(_cfg(code_jsonl), b, resume=False, progress=False)
    with pytest.raises(ConfigError, match="different run.*seed"):
        training.run(_cfg(code_jsonl, seed=1), b, progress=False)
    training.run(_cfg(code_jsonl), b, resume=True, progress=False)
    la, lb = _losses(a.path("pretrain")), _losses(out)
    assert list(lb.index) == list(range(1, 9))  # the log was truncated to the checkpoint, then continued
    assert la.to_numpy() == pytest.approx(lb.to_numpy(), rel=1e-5, abs=1e-6)
    assert la.iloc[-1] != la.iloc[3]  # the run did move


def test_a_finished_run_trains_longer_only_with_resume(tmp_path, code_jsonl):
    run_dir = RunDir(tmp_path / "run")
    out = run_dir.path("pretrain")
    first = training.run(_cfg(code_jsonl, steps=4, checkpoint_every=2), run_dir, progress=False)
    with pytest.raises(StaleResult, match=r"steps 4 -> now 6.*--resume to continue from its newest checkpoint"):
        training.run(_cfg(code_jsonl, steps=6, checkpoint_every=2), run_dir, resume=False, progress=False)
    longer = training.run(_cfg(code_jsonl, steps=6, checkpoint_every=2), run_dir, resume=True, progress=False)
    assert longer.steps == 6 and longer.fingerprint != first.fingerprint and longer.info["resumed_from"] == "step_000004"
    assert longer.humaneval_loss_initial == first.humaneval_loss_initial  # read back from the log
    assert list(_losses(out).index) == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "result.json").read_text())["steps"] == 6
    # Back to 4 steps: the newest checkpoint is past it, so --resume cannot help; --force is the way.
    with pytest.raises(StaleResult, match="--resume cannot continue it"):
        training.run(_cfg(code_jsonl, steps=4, checkpoint_every=2), run_dir, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, code_jsonl):
    import torch

    run_dir = RunDir(tmp_path / "run")
    out = run_dir.path("pretrain")
    torch.set_grad_enabled(False)  # as another stage (the embedder) may leave it; training must still learn
    try:
        with pytest.raises(NonFiniteLoss, match=r"step 6.*step_000004"):
            training.run(_cfg(code_jsonl), run_dir, progress=False,
                         callbacks=[LossAt(6, lambda loss: loss * torch.tensor(float("nan")))])
    finally:
        torch.set_grad_enabled(True)
    assert [p.name for p in checkpoints(out)] == ["step_000004"]
    assert not (out / "result.json").exists() and not (out / "final").exists()
    df = read_log(out)
    assert df[df.kind == "error"].iloc[0].step == 6


SMALL = ["--set", "batch_seqs=4", "--set", "micro_batch=2", "--set", "seq_len=32", "--set", "humaneval_problems=2",
         "--set", "eval_blocks=2", "--set", "threads=1", "--set", "warmup_steps=1"]


def test_cli_out_is_the_run_folder(tmp_path, code_jsonl, capsys):
    from phi1lib.cli import main

    root = tmp_path / "run"
    rc = main(["train", "pretrain", "--out", str(root), "--data", str(code_jsonl), "--max-steps", "2", *SMALL])
    printed = capsys.readouterr().out
    assert rc == 0 and "estimate" in printed and "done: loss" in printed
    assert (root / "pretrain" / "result.json").exists() and (root / "pretrain" / "final" / "config.json").exists()
    assert (root / "ledger.jsonl").exists()  # the run folder's ledger
    rc = main(["train", "pretrain", "--out", str(root), "--data", str(code_jsonl), "--max-steps", "2", *SMALL,
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["stage"] == "pretrain" and res["steps"] == 2 and res["out_dir"] == str(root / "pretrain")
    assert main(["train", "pretrain", "--out", str(root), "--estimate-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "pretrain"


def test_cli_bad_values_name_the_flag(tmp_path, capsys):
    from phi1lib.cli import main

    out = str(tmp_path / "o")
    rc = main(["train", "pretrain", "--out", out, "--data", str(tmp_path / "missing.jsonl"), "--max-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl" in err and "not found" in err and "Traceback" not in err
    assert main(["train", "pretrain", "--out", out, "--set", "steps"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert main(["train", "pretrain", "--out", out, "--data", "f.jsonl:abc"]) == 2
    err = capsys.readouterr().err
    assert "--data f.jsonl:abc" in err and "not a number" in err and "not found" not in err
    assert main(["train", "pretrain", "--out", out, "--set", "compile=maybe"]) == 2
    assert "--set compile: expected true/false, got 'maybe'" in capsys.readouterr().err
    assert main(["train", "pretrain", "--out", out, "--set", "peak_lr=abc"]) == 2
    assert "--set peak_lr: expected a number, got 'abc'" in capsys.readouterr().err
    assert main(["train", "pretrain", "--out", out, "--max-steps", "0"]) == 2
    assert "--max-steps 0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["train", "pretrain", "--out", out, "--set", "micro_batch=16"]) == 2
    assert "micro_batch 16: expected at most batch_seqs=8" in capsys.readouterr().err
    assert main(["train", "finetune", "--out", out]) == 2
    assert "synthesis stage has not run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path, code_jsonl):
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun; on a CPU-only machine the loop's
    Accelerator(cpu=True) joins a gloo group) runs the CLI unchanged; without dropout the 2-process
    loss curve equals the 1-process one (same global batches, averaged gradients)."""
    common = ["train", "pretrain", "--preset", "tiny", "--data", str(code_jsonl), "--max-steps", "4",
              "--set", "dropout=0.0", *SMALL]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: loss") == 1 and two.stdout.count("estimate") == 1  # rank 0 talks
    df = read_log(tmp_path / "two" / "pretrain")
    assert df[df.kind == "info"].iloc[0].processes == 2 and len(df[df.kind == "info"]) == 1
    assert json.loads((tmp_path / "two" / "pretrain" / "result.json").read_text())["info"]["processes"] == 2
    assert _losses(tmp_path / "two" / "pretrain").to_numpy() == \
        pytest.approx(_losses(tmp_path / "one" / "pretrain").to_numpy(), rel=1e-4)


@pytest.mark.slow
def test_two_process_gloo_run_packs_is_killed_and_resumes_to_the_same_curve(tmp_path, code_jsonl):
    """Two gloo processes pack their own shards, train, are killed (SIGKILL, the whole launch) after a
    checkpoint, and a plain relaunch with --resume finishes with the loss curve and evals of an
    uninterrupted one-process run."""
    import signal
    import time

    import psutil

    common = ["train", "pretrain", "--preset", "tiny", "--data", str(code_jsonl), "--max-steps", "30",
              "--set", "dropout=0.0", "--set", "checkpoint_every=2", "--set", "eval_every=10",
              "--set", "pack_shard_docs=3", "--set", "heldout_fraction=0.3", *SMALL]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "phi1lib.cli", *common, "--out", str(tmp_path / "two")]
    stage = tmp_path / "two" / "pretrain"
    proc = subprocess.Popen(launch, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    launcher = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 600
        while not checkpoints(stage) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ranks = launcher.children(recursive=True)
        for p in [launcher, *ranks]:  # the launcher and both ranks, mid-run (torchrun's ranks have their own group)
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(ranks, timeout=60)
    finally:
        proc.wait(timeout=60)
    assert checkpoints(stage), proc.stderr.read()[-3000:]
    assert not (stage / "result.json").exists(), "the run finished before it could be killed"
    folder = next((stage / "data").iterdir())
    assert len(list(folder.glob("shard-*.json"))) == 4  # 11 documents in shards of 3, packed by both ranks
    again = subprocess.run(launch + ["--resume"], capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    df = read_log(stage)
    infos = df[df.kind == "info"]
    assert infos.iloc[-1].resumed_from and infos.iloc[-1].processes == 2
    assert _losses(stage).index.tolist() == list(range(1, 31))
    assert _losses(stage).to_numpy() == pytest.approx(_losses(tmp_path / "one" / "pretrain").to_numpy(), rel=1e-4)

    def evals(d):
        e = read_log(d)
        return e[e.kind == "eval"].drop_duplicates("step", keep="last").set_index("step")[["humaneval_loss",
                                                                                           "heldout_loss"]]

    assert not evals(stage).isna().any().any() and len(evals(stage)) == 4  # steps 0, 10, 20, 30
    assert evals(stage).to_numpy() == pytest.approx(evals(tmp_path / "one" / "pretrain").to_numpy(), rel=1e-4)
