"""Pretraining and finetuning: an `accelerate` loop over PhiForCausalLM with checkpoints, resume and MFU.

One loop serves both stages (phi-1 finetunes with the same next-token loss on packed
CodeExercises). It runs unchanged on one CPU, one GPU or under `accelerate launch` on N
processes: every process draws its share of each global batch from the same seeded order, so
the data position is just the step number and resume is exact. Output folder:
`final/` (save_pretrained model + tokenizer), `checkpoints/step_NNNNNN/`, `log.jsonl`,
`result.json` (written last; a rerun returns it instead of training again).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from .. import runs
from ..errors import ConfigError
from ..presets import get_preset
# Config, result and on-disk state live in their own modules; their names stay importable from here.
from .config import PRECISIONS, STAGES, NonFiniteLoss, TrainConfig, TrainResult, estimate_cost  # noqa: F401
from .state import CKPT_PREFIX, RESUME_KEYS, STATE_FILE, _check_same_run, _save_checkpoint, _truncate_log, checkpoints, plot_log, read_log


def lr_schedule(optimizer, config: TrainConfig):
    """Linear warmup to peak_lr, then linear decay to 0 at decay_steps (transformers' schedule)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.decay_steps or config.steps)


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights); not biases or LayerNorm parameters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def device_peak_tflops(device_type: str, gpu: str | None, prices) -> tuple[float | None, str]:
    """(peak TFLOP/s per device, what it is) from the price books' GPU table; None if unknown."""
    name = gpu
    if name is None:
        if device_type == "cpu":
            name = "cpu"
        else:
            import torch

            full = torch.cuda.get_device_name(0)
            name = next((g for g in prices.gpus if g != "cpu" and g.lower() in full.lower()), None)
            if name is None:
                return None, f"no price-book GPU entry matches {full!r}; MFU not reported (set TrainConfig.gpu)"
    try:
        g = prices.gpu(name)
    except ConfigError as exc:
        return None, f"{exc}; MFU not reported"
    return float(g.peak_tflops), f"{g.name}: {g.peak_tflops} TFLOP/s peak ({g.source})"


# ---- evaluation --------------------------------------------------------------------------
def evaluate(model, acc, heldout, he_items, micro_batch: int, max_blocks: int) -> dict[str, float | None]:
    """Mean token loss on held-out blocks and on HumanEval solution tokens (sharded over processes)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    rank, world = acc.process_index, acc.num_processes
    sums = torch.zeros(4, dtype=torch.float64, device=acc.device)  # heldout sum, count, humaneval sum, count
    with torch.no_grad(), acc.autocast():
        if heldout is not None and len(heldout):
            n = min(len(heldout), max_blocks)
            ids = heldout.with_format("torch")[list(range(rank, n, world))]["input_ids"] if rank < n else None
            for i in range(0, 0 if ids is None else len(ids), micro_batch):
                x = ids[i:i + micro_batch].to(acc.device)
                logits = model(input_ids=x).logits.float()
                sums[0] += F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(), reduction="sum").double()
                sums[1] += x[:, 1:].numel()
        for item in he_items[rank::world]:
            x = torch.tensor([item["input_ids"]], device=acc.device)
            y = torch.tensor([item["labels"]], device=acc.device)
            logits = model(input_ids=x).logits.float()
            sums[2] += F.cross_entropy(logits[0, :-1], y[0, 1:], ignore_index=-100, reduction="sum").double()
            sums[3] += (y[0, 1:] != -100).sum()
    sums = acc.reduce(sums, "sum")
    model.train()
    return {"heldout_loss": float(sums[0] / sums[1]) if sums[1] else None,
            "humaneval_loss": float(sums[2] / sums[3]) if sums[3] else None}


# ---- one step ----------------------------------------------------------------------------
def forward_backward(model, acc, batches, accum: int):
    """Accumulate gradients over this process's micro-batches; returns the mean loss (detached).

    Gradients are synchronised across processes only on the last micro-batch (no_sync).
    """
    import torch

    total = torch.zeros((), device=acc.device)
    for i, x in enumerate(batches):
        with acc.no_sync(model) if i < len(batches) - 1 else nullcontext():
            loss = model(input_ids=x, labels=x).loss / accum
            acc.backward(loss)
        total += loss.detach()
    return total


def optimizer_step(model, optimizer, scheduler, acc, grad_clip: float):
    """Clip, step, advance the LR schedule (unless fp16 skipped the step), zero grads; returns grad norm."""
    grad_norm = acc.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if not acc.optimizer_step_was_skipped:  # fp16 overflow: the scaler skipped the update
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# ---- the run -----------------------------------------------------------------------------
def _finetune_source(config: TrainConfig) -> Path:
    src = Path(config.init_from) if config.init_from else runs.stage_dir("pretrain", preset=config.preset) / "final"
    if not (src / "config.json").exists():
        raise ConfigError(f"finetune: no saved model in {src} (config.json missing); run pretraining first "
                          "or pass init_from / --init-from a folder written by save_pretrained")
    return src


def _prepare_tokenizer(config: TrainConfig, acc, loaded):
    """Train (main process, once) or load the tokenizer; saved under out_dir/tokenizer."""
    from .packing import tokenizer_sample
    from .tokenizer import TRAINED_BPE, build_tokenizer, check_vocab_fits, load_tokenizer

    spec = get_preset(config.preset).model
    tok_dir = config.out_dir / "tokenizer"
    if (tok_dir / "tokenizer_config.json").exists():
        tok = load_tokenizer(tok_dir)
    else:
        name = config.tokenizer or (str(_finetune_source(config)) if config.stage == "finetune"
                                    else get_preset(config.preset).tokenizer)
        if acc.is_main_process:
            texts = tokenizer_sample(loaded, config.tokenizer_train_chars) if name == TRAINED_BPE else None
            build_tokenizer(name, spec.vocab_size, texts, tok_dir)
        acc.wait_for_everyone()
        tok = load_tokenizer(tok_dir)
    check_vocab_fits(tok, spec.vocab_size)
    return tok


def auto_threads() -> int:
    """All cores when the machine is idle, one when other processes already keep it busy."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return cores
    return cores if busy < 0.5 * cores else 1


def _mixed_precision(config: TrainConfig, device_type: str) -> str:
    import torch

    if device_type == "cpu":
        if config.precision in ("bf16", "fp16"):
            raise ConfigError(f"precision={config.precision!r} is for GPUs; use 'fp32' or 'auto' on CPU")
        return "no"
    if config.precision == "fp32":
        return "no"
    if config.precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return config.precision


def run_training(config: TrainConfig, *, ledger=None, prices=None, force: bool = False, resume: bool = True,
                 loss_hook: Callable[[int, Any], Any] | None = None, progress: bool = True) -> TrainResult:
    """Train per `config` into `config.out_dir`; returns the stored result if the run finished before.

    resume: continue from the newest checkpoint when there is one (False: refuse if one exists).
    force: delete an earlier run in out_dir (result, checkpoints, log, final) and start over.
    loss_hook(step, loss) -> loss lets tests inject faults (e.g. a NaN) into the reduced loss.
    """
    import torch
    from accelerate import Accelerator

    out = Path(config.out_dir)
    stored = runs.load_result(out)
    if stored is not None and not force:
        return TrainResult(**{k: v for k, v in stored.items() if k in {f.name for f in fields(TrainResult)}})
    device_type = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    acc = Accelerator(cpu=device_type == "cpu", mixed_precision=_mixed_precision(config, device_type))
    threads_before = torch.get_num_threads()
    if device_type == "cpu" and config.threads is not None:
        torch.set_num_threads(config.threads or auto_threads())
    try:
        # enable_grad: another stage in the same process may have switched autograd off globally.
        with torch.enable_grad():
            return _train(config, acc, device_type, out, ledger=ledger, prices=prices, force=force, resume=resume,
                          loss_hook=loss_hook, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(config, acc, device_type, out, *, ledger, prices, force, resume, loss_hook, progress) -> TrainResult:
    import torch

    # Measured usage covers the whole stage: data, tokenizer, evals and saving, not just the steps.
    t_run, cpu_run = time.perf_counter(), time.process_time()
    from accelerate.utils import set_seed

    from .. import budget
    from ..jsonl import append_jsonl
    from .model import build_model, count_params, pick_attention
    from .packing import build_data, humaneval_eval_set, load_sources

    if force and acc.is_main_process:
        for name in ("checkpoints", "final", "tokenizer", "data", "log.jsonl", runs.RESULT_FILE):
            shutil.rmtree(out / name, ignore_errors=True) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    acc.wait_for_everyone()
    existing = checkpoints(out)
    if existing and not resume:
        raise ConfigError(f"{out} holds checkpoints of an earlier run (newest {existing[-1].name}); "
                          "pass --resume to continue it or --force to start over")
    prices = prices or budget.load_prices()
    estimate = estimate_cost(config, prices)
    if ledger is not None:
        ledger.check(estimate.cost_usd, f"{config.stage} ({config.preset})")
    spec = get_preset(config.preset).model
    world = acc.num_processes
    per_proc, rem = divmod(config.batch_seqs, world)
    if rem or per_proc % min(config.micro_batch, per_proc):
        raise ConfigError(f"batch_seqs={config.batch_seqs} must split evenly over {world} processes "
                          f"and micro_batch={config.micro_batch}")
    micro = min(config.micro_batch, per_proc)
    accum = per_proc // micro
    log_path = out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)

    def log(rec: dict) -> None:
        if acc.is_main_process:
            append_jsonl(log_path, rec)

    # Data and tokenizer (deterministic on every process; only the main one writes files).
    set_seed(config.seed)
    loaded = load_sources(config.data or _default_data(config), config.heldout_fraction, config.seed,
                          config.max_source_chars)
    tok = _prepare_tokenizer(config, acc, loaded)
    with acc.main_process_first():  # the main process packs; the others memory-map its files
        data = build_data(loaded, tok, config.seq_len, config.seed, cache_dir=out / "data")
    he_items = humaneval_eval_set(tok, spec.n_ctx, config.humaneval_problems)
    train_ids = data.train.with_format("torch")
    n_blocks = len(train_ids)

    attn, attn_reason = pick_attention(device_type, config.attn_implementation)
    set_seed(config.seed)
    if config.stage == "finetune":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(_finetune_source(config)), attn_implementation=attn,
                                                     dtype=torch.float32)
        model.config.use_cache = False
    else:
        model = build_model(spec, attn_implementation=attn, eos_token_id=tok.eos_token_id, dropout=config.dropout)
    n_params = count_params(model)
    if config.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.peak_lr,
                                  betas=config.adam_betas, eps=config.adam_eps, fused=device_type == "cuda" or None)
    scheduler = lr_schedule(optimizer, config)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us

    start, elapsed_before, cpu_before = 0, 0.0, 0.0
    if existing and resume:
        acc.load_state(str(existing[-1]))
        state = json.loads((existing[-1] / STATE_FILE).read_text())
        _check_same_run(state.get("config", {}), config.to_dict(), existing[-1])
        start, elapsed_before, cpu_before = state["step"], state["elapsed_s"], state["cpu_s"]
        if acc.is_main_process:
            _truncate_log(log_path, start)
    peak, peak_what = device_peak_tflops(device_type, config.gpu, prices)
    fpt = budget.flops_per_token(spec, config.seq_len)
    info = {"kind": "info", "step": start, "resumed_from": existing[-1].name if existing and resume else None,
            "device": device_type, "processes": world, "mixed_precision": acc.mixed_precision,
            "attention": attn_reason, "compile": config.compile, "params": n_params,
            "threads": torch.get_num_threads() if device_type == "cpu" else None,
            "micro_batch": micro, "grad_accum": accum, "train_blocks": n_blocks, "data": data.stats,
            "flops_per_token": fpt, "mfu_peak": peak_what, "estimate": estimate.to_dict()}
    log(info)
    if acc.is_main_process and progress:
        print(f"[{config.stage}] {attn_reason}; precision {acc.mixed_precision}; {n_params:,} params; "
              f"{n_blocks} blocks of {config.seq_len}; {world} process(es)")

    def batch_for(step: int):
        """This process's micro-batches of global step `step` (seeded order, epoch after epoch)."""
        import numpy as np

        g0 = step * config.batch_seqs + acc.process_index * per_proc
        idx = []
        for g in range(g0, g0 + per_proc):
            epoch, pos = divmod(g, n_blocks)
            if epoch not in perms:
                perms[epoch] = np.random.default_rng([config.seed, epoch]).permutation(n_blocks)
            idx.append(int(perms[epoch][pos]))
        x = train_ids[idx]["input_ids"]
        return [x[i:i + micro].to(acc.device) for i in range(0, per_proc, micro)]

    perms: dict[int, Any] = {}
    first_eval = evaluate(model, acc, data.heldout, he_items, micro, config.eval_blocks) if start == 0 else None
    if first_eval:
        log({"kind": "eval", "step": 0, **first_eval})
    initial_he = (first_eval or {}).get("humaneval_loss")
    if initial_he is None and acc.is_main_process and log_path.exists():
        from ..jsonl import iter_jsonl

        initial_he = next((r.get("humaneval_loss") for r in iter_jsonl(log_path) if r.get("kind") == "eval"), None)

    tokens_step = config.batch_seqs * config.seq_len
    last_loss, last_eval, rates = None, first_eval or {}, []
    bar = _progress(range(start, config.steps), acc.is_local_main_process and progress, config.stage)
    model.train()
    for step in bar:
        t0 = time.perf_counter()
        total = forward_backward(model, acc, batch_for(step), accum)
        if loss_hook is not None:
            total = loss_hook(step + 1, total)
        total = acc.reduce(total, "mean")
        value = float(total)
        if not math.isfinite(value):
            kept = checkpoints(out)
            msg = (f"{config.stage}: non-finite loss ({value}) at step {step + 1}; stopped before the optimizer "
                   f"step. Last good checkpoint: {kept[-1] if kept else 'none (the run had not saved one yet)'}. "
                   "Try a lower peak_lr, fp32/bf16 instead of fp16, or a smaller grad_clip, then rerun with --resume.")
            log({"kind": "error", "step": step + 1, "loss": value, "message": msg})
            raise NonFiniteLoss(msg)
        grad_norm = optimizer_step(model, optimizer, scheduler, acc, config.grad_clip)
        dt = time.perf_counter() - t0
        rate = tokens_step / dt
        rates.append(rate)
        mfu = rate * fpt / (peak * 1e12 * world) if peak else None
        last_loss = value
        rec = {"kind": "train", "step": step + 1, "loss": value, "lr": scheduler.get_last_lr()[0],
               "grad_norm": float(grad_norm) if grad_norm is not None else None,
               "tokens": (step + 1) * tokens_step, "tokens_per_s": rate, "mfu": mfu,
               "elapsed_s": elapsed_before + time.perf_counter() - t_run}
        log(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{rate:,.0f}")
        done = step + 1 == config.steps
        if config.eval_every and (step + 1) % config.eval_every == 0 and not done:
            last_eval = evaluate(model, acc, data.heldout, he_items, micro, config.eval_blocks)
            log({"kind": "eval", "step": step + 1, **last_eval})
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 or done:
            _save_checkpoint(acc, out, step + 1, {
                "step": step + 1, "elapsed_s": elapsed_before + time.perf_counter() - t_run,
                "cpu_s": cpu_before + time.process_time() - cpu_run, "config": config.to_dict()},
                config.keep_checkpoints)
    if config.steps > start or not last_eval:
        last_eval = evaluate(model, acc, data.heldout, he_items, micro, config.eval_blocks)
        log({"kind": "eval", "step": config.steps, **last_eval})

    final = out / "final"
    seconds = elapsed_before + time.perf_counter() - t_run
    cpu_seconds = cpu_before + time.process_time() - cpu_run
    if acc.is_main_process:
        unwrapped = acc.unwrap_model(model, keep_torch_compile=False)
        unwrapped.config.use_cache = True  # generation wants the KV cache
        if unwrapped.generation_config is not None:
            # generation_config.json is saved separately and would keep training's use_cache=False
            # (without the cache every generated token recomputes the whole sequence: ~20x slower).
            unwrapped.generation_config.use_cache = True
        unwrapped.save_pretrained(str(final))
        tok.save_pretrained(str(final))
    acc.wait_for_everyone()
    gpu_seconds = seconds * world if device_type == "cuda" else 0.0
    usd = 0.0
    if device_type == "cuda":
        hw = get_preset(config.preset).hardware
        try:
            usd = gpu_seconds / 3600 * prices.default_rental(config.gpu or hw.gpu).usd_per_gpu_hour
        except ConfigError:
            usd = 0.0
    mean_rate = sum(rates[1:] or rates) / max(1, len(rates[1:] or rates))  # first step pays warm-up
    result = TrainResult(
        stage=config.stage, out_dir=str(out), final_dir=str(final), steps=config.steps, tokens=config.tokens,
        train_loss=last_loss, heldout_loss=last_eval.get("heldout_loss"),
        humaneval_loss=last_eval.get("humaneval_loss"), humaneval_loss_initial=initial_he,
        seconds=seconds, cpu_seconds=cpu_seconds, gpu_seconds=gpu_seconds, tokens_per_s=mean_rate,
        mfu=(mean_rate * fpt / (peak * 1e12 * world)) if peak else None, usd=usd,
        estimate=estimate.to_dict(),
        info={k: info[k] for k in ("device", "processes", "mixed_precision", "attention", "params", "grad_accum",
                                   "train_blocks", "mfu_peak")} | {"config": config.to_dict()})
    if acc.is_main_process:
        if ledger is not None:
            ledger.record(config.stage, usd=usd, gpu_seconds=gpu_seconds, cpu_seconds=cpu_seconds,
                          estimate_usd=estimate.cost_usd, tokens_in=config.tokens, preset=config.preset)
        runs.save_result(out, result.to_dict())
    acc.wait_for_everyone()
    return result


def _default_data(config: TrainConfig) -> tuple[str, ...]:
    """Run-dir inputs when --data is not given: CodeTextbook for pretraining, CodeExercises for finetuning."""
    root = runs.run_dir(config.preset)
    if config.stage == "pretrain":
        cands = [root / "filtering" / "kept.parquet", root / "synthesis" / "textbooks.jsonl"]
    else:
        # The paper's phi-1 finetunes on the unpruned set; pass decontam/exercises_pruned_tau*.jsonl with --data
        # to retrain on a pruned one.
        cands = [root / "synthesis" / "exercises.jsonl"]
    found = tuple(str(c) for c in cands if c.exists())
    if not found:
        raise ConfigError(f"{config.stage}: no --data given and none of {[str(c) for c in cands]} exist; "
                          "run the earlier stages (phi1 run) or pass --data FILE[:WEIGHT]")
    return found


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="step", leave=True)
