"""The training loop, minGPT-style: `setup` -> `resume` -> `loop` -> `finish`, around one `TrainState`.

One loop serves both stages (phi-1 finetunes with the same next-token loss on packed
CodeExercises). It runs unchanged on one CPU, one GPU or under `accelerate launch` on N
processes: every process draws its share of each global batch from the same seeded order
(`BlockOrder`), so the data position is just the step number and resume is exact. Only the
main process writes files (log, checkpoints' trainer state, the final model).

    state = setup(config, acc, out, sources, init_from=None, device_type="cpu", prices=prices, timer=Timer())
    resume(state, checkpoint)                 # optional: weights, optimizer, schedule, RNG, step
    loop(state, callbacks=[...])              # steps, evals, checkpoints; NonFiniteLoss stops it
    final_dir = finish(state)                 # last eval, save_pretrained model + tokenizer
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import budget, runs
from ..errors import ConfigError, Phi1Error
from ..jsonl import append_jsonl, iter_jsonl
from ..stage import Timer
from .config import TrainConfig
from .memory import GIB, MemoryPlan, run_settings
from .model import build_model, count_params, enable_checkpointing, pick_attention
from .packing import PackedData, humaneval_eval_set, parse_source
from .shards import Split, build_data, tokenizer_sample
from .state import LOG_FILE, checkpoints, read_state, save_checkpoint, truncate_log
from .tokenizer import BPE_FORMAT, TRAINED_BPE, build_tokenizer, check_vocab_fits, load_tokenizer

TOKENIZER_KEY_FILE = "phi1_tokenizer_key.txt"


class NonFiniteLoss(Phi1Error):
    """The loss became NaN/inf; the run stopped before the optimizer step, checkpoints kept."""


class Callback:
    """Hooks into `loop` (override what you need). Tests inject faults through `on_loss`."""

    def on_loss(self, step: int, loss):
        """This process's loss of optimizer step `step` (1-based, a detached tensor) before it is
        averaged over processes; return the loss to use."""
        return loss

    def on_step_end(self, state: "TrainState", record: dict[str, Any]) -> None:
        """After the optimizer step; `record` is the step's log line (loss, lr, grad_norm, tokens_per_s, ...)."""


class BlockOrder:
    """The seeded order training blocks are drawn in: one permutation per epoch, so global
    sequence g of a run is always the same block (and resuming only needs the step number)."""

    def __init__(self, n_blocks: int, seed: int):
        self.n_blocks, self.seed = n_blocks, seed
        self._perms: dict[int, Any] = {}

    def __getitem__(self, g: int) -> int:
        import numpy as np

        epoch, pos = divmod(g, self.n_blocks)
        if epoch not in self._perms:
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        return int(self._perms[epoch][pos])


@dataclass
class TrainState:
    """Everything a run holds between steps (minGPT's trainer attributes, in one place)."""

    config: TrainConfig
    acc: Any  # accelerate.Accelerator
    out: Path  # the stage folder
    device_type: str  # "cpu" | "cuda"
    tokenizer: Any
    data: PackedData
    he_items: list[dict]  # HumanEval (input_ids, labels) for the solution loss
    model: Any  # prepared by accelerate
    optimizer: Any
    scheduler: Any
    micro: int  # sequences per forward pass on this process
    accum: int  # forward passes per optimizer step on this process
    n_params: int
    attention: str  # which attention implementation, and why
    gradient_checkpointing: bool  # layers recomputed in the backward pass
    memory_plan: dict[str, Any] | None  # the plan this launch follows on a GPU (training.memory)
    flops_per_token: float
    peak_tflops: float | None  # per device; None = unknown (no MFU)
    peak_what: str
    timer: Timer  # started with the stage: wall and CPU seconds of this attempt
    estimate: dict[str, Any] = field(default_factory=dict)  # budget.StageEstimate.to_dict(), logged once
    inputs: dict[str, str] = field(default_factory=dict)  # input identities, kept in each checkpoint
    progress: bool = True
    step: int = 0  # optimizer steps done
    resumed_from: str | None = None  # checkpoint name
    elapsed_before: float = 0.0  # wall seconds of the interrupted attempt this run continues
    cpu_before: float = 0.0
    initial_eval: dict[str, Any] | None = None  # eval at step 0 (None when resumed)
    last_eval: dict[str, Any] = field(default_factory=dict)
    last_loss: float | None = None
    rates: list[float] = field(default_factory=list)  # tokens/s of each step of this attempt

    def __post_init__(self):
        self.train_ids = self.data.train.with_format("torch")
        self.order = BlockOrder(len(self.train_ids), self.config.seed)

    @property
    def log_path(self) -> Path:
        return self.out / LOG_FILE

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + self.timer.wall_s

    @property
    def cpu_s(self) -> float:
        return self.cpu_before + self.timer.cpu_s

    def log(self, rec: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            append_jsonl(self.log_path, rec)

    def mfu(self, tokens_per_s: float) -> float | None:
        return tokens_per_s * self.flops_per_token / (self.peak_tflops * 1e12 * self.acc.num_processes) \
            if self.peak_tflops else None


# ---- pieces --------------------------------------------------------------------------------------

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


def device_peak_tflops(device_type: str, gpu: str | None, prices: budget.PriceBook) -> tuple[float | None, str]:
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


def batch_split(batch_seqs: int, micro_batch: int, world: int) -> tuple[int, int]:
    """(micro, accum): sequences per forward pass and passes per optimizer step on each process."""
    per_proc, rem = divmod(batch_seqs, world)
    if rem or per_proc % min(micro_batch, per_proc):
        raise ConfigError(f"batch_seqs={batch_seqs} must split evenly over {world} processes "
                          f"and micro_batch={micro_batch}")
    micro = min(micro_batch, per_proc)
    return micro, per_proc // micro


def micro_batches(state: TrainState, step: int) -> list:
    """This process's micro-batches of global step `step` (0-based), on its device."""
    per_proc = state.micro * state.accum
    g0 = step * state.config.batch_seqs + state.acc.process_index * per_proc
    x = state.train_ids[[state.order[g] for g in range(g0, g0 + per_proc)]]["input_ids"]
    return [x[i:i + state.micro].to(state.acc.device) for i in range(0, per_proc, state.micro)]


def evaluate(model, acc, heldout, he_items, micro_batch: int, max_blocks: int) -> dict[str, float | None]:
    """Mean token loss on held-out blocks and on HumanEval solution tokens (sharded over processes), and the
    latter in bits per byte of solution text (`humaneval_bpb`: summed nats / ln 2 / bytes, the same for
    any tokenizer, so models with different vocabularies compare)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    rank, world = acc.process_index, acc.num_processes
    sums = torch.zeros(5, dtype=torch.float64, device=acc.device)  # heldout sum, count, humaneval sum, count, bytes
    # Every process runs the same number of forward passes (a process short of work repeats the first item
    # and does not count it): under FSDP each forward gathers weights from all processes, so an uneven count
    # would leave the others waiting forever.
    with torch.no_grad(), acc.autocast():
        if heldout is not None and len(heldout):
            n = min(len(heldout), max_blocks)
            table = heldout.with_format("torch")
            mine = list(range(rank, n, world))
            for j in range(math.ceil(math.ceil(n / world) / micro_batch)):
                rows = mine[j * micro_batch:(j + 1) * micro_batch]
                x = table[rows or [0]]["input_ids"].to(acc.device)
                logits = model(input_ids=x).logits.float()
                if rows:
                    sums[0] += F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(),
                                               reduction="sum").double()
                    sums[1] += x[:, 1:].numel()
        for j in range(math.ceil(len(he_items) / world)):
            i = j * world + rank
            item = he_items[i if i < len(he_items) else 0]
            x = torch.tensor([item["input_ids"]], device=acc.device)
            y = torch.tensor([item["labels"]], device=acc.device)
            logits = model(input_ids=x).logits.float()
            if i < len(he_items):
                sums[2] += F.cross_entropy(logits[0, :-1], y[0, 1:], ignore_index=-100, reduction="sum").double()
                sums[3] += (y[0, 1:] != -100).sum()
                sums[4] += item.get("n_bytes", 0)
    sums = acc.reduce(sums, "sum")
    model.train()
    return {"heldout_loss": float(sums[0] / sums[1]) if sums[1] else None,
            "humaneval_loss": float(sums[2] / sums[3]) if sums[3] else None,
            "humaneval_bpb": float(sums[2] / math.log(2) / sums[4]) if sums[4] else None}


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


# ---- setup ---------------------------------------------------------------------------------------

def tokenizer_key(config: TrainConfig, sources: Sequence[str], init_from: Path | None, split: Split) -> str:
    """What the stage's tokenizer folder was built from; a folder with another key is rebuilt, not reused."""
    name = config.tokenizer or str(init_from)
    doc: dict[str, Any] = {"tokenizer": name, "vocab_size": config.model.vocab_size}
    if name == TRAINED_BPE:
        doc.update(train_chars=config.tokenizer_train_chars, format=BPE_FORMAT,
                   split=[split.heldout_fraction, split.seed, split.max_chars],
                   sources=[runs.identity(parse_source(s).path) for s in sources])
    elif Path(name).expanduser().is_dir():
        doc["identity"] = runs.identity(Path(name).expanduser())
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def prepare_tokenizer(config: TrainConfig, acc, out: Path, sources: Sequence[str], init_from: Path | None,
                      split: Split):
    """Train (main process, once) or load the tokenizer; kept under <stage>/tokenizer with the key of what it was
    built from, and reused by `phi1 pack`, a resumed run and a later launch while that key holds."""
    tok_dir = out / "tokenizer"
    key = tokenizer_key(config, sources, init_from, split)
    marker = tok_dir / TOKENIZER_KEY_FILE
    if not (marker.exists() and marker.read_text().strip() == key and (tok_dir / "tokenizer_config.json").exists()):
        if acc.is_main_process:
            shutil.rmtree(tok_dir, ignore_errors=True)
            name = config.tokenizer or str(init_from)
            texts = tokenizer_sample(sources, split, config.tokenizer_train_chars) if name == TRAINED_BPE else None
            build_tokenizer(name, config.model.vocab_size, texts, tok_dir)
            marker.write_text(key + "\n")
        acc.wait_for_everyone()  # seconds: a BPE on a few MB, or a copy of a saved tokenizer
    tok = load_tokenizer(tok_dir)
    check_vocab_fits(tok, config.model.vocab_size)
    return tok


def data_split(config: TrainConfig) -> Split:
    return Split(config.heldout_fraction, config.seed, config.max_source_chars)


def pack_data(config: TrainConfig, acc, out: Path, sources: Sequence[str], init_from: Path | None,
              progress: bool = False):
    """(tokenizer, packed blocks), the same on every process: the data packed in shards under <stage>/data, each
    process packing its share (training.shards: no collective while packing); shards already there (from
    `phi1 pack` or an interrupted launch) are reused. What `phi1 pack` runs, and training before its first step."""
    split = data_split(config)
    tok = prepare_tokenizer(config, acc, out, sources, init_from, split)
    say = (lambda s: print(f"[pack] shard {s} done", flush=True)) if progress and acc.is_local_main_process else None
    data = build_data(sources, tok, config.seq_len, split, out / "data", rank=acc.process_index,
                      world=acc.num_processes, shard_docs=config.pack_shard_docs, wait_s=config.pack_wait_s,
                      on_shard=say)
    return tok, data


def prepare_data(config: TrainConfig, acc, out: Path, sources: Sequence[str], init_from: Path | None,
                 progress: bool = False):
    """(tokenizer, packed blocks, HumanEval eval items) for training (`pack_data` plus the eval set)."""
    from accelerate.utils import set_seed

    set_seed(config.seed)
    tok, data = pack_data(config, acc, out, sources, init_from, progress)
    return tok, data, humaneval_eval_set(tok, config.model.n_ctx, config.humaneval_problems)


def memory_settings(config: TrainConfig, acc, device_type: str) -> tuple[int, bool, MemoryPlan | None]:
    """(micro_batch, gradient checkpointing, plan) for this launch: on CUDA from the memory plan for the card
    this process holds (refused with one line when it will not fit); DeepSpeed is refused (its optimizer
    would step every micro-batch under our accumulation)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError(f"{config.stage}: DeepSpeed is not supported (the loop accumulates gradients itself); "
                          "choose multi-GPU (DDP) or FSDP in `accelerate config`")
    memory = None
    if device_type == "cuda":
        import torch

        memory = torch.cuda.get_device_properties(acc.device).total_memory / GIB
    return run_settings(config.model, config.seq_len, config.batch_seqs, acc.num_processes,
                        micro_batch=config.micro_batch, gradient_checkpointing=config.gradient_checkpointing,
                        gpu_memory_gib=memory, sharded=acc.distributed_type == DistributedType.FSDP,
                        dropout=config.dropout, what=config.stage)


def build_training(config: TrainConfig, acc, device_type: str, eos_token_id: int, init_from: Path | None,
                   gradient_checkpointing: bool = False):
    """(model, optimizer, scheduler, params, attention reason): a fresh model (pretrain) or init_from's
    weights (finetune), AdamW with grouped weight decay, the LR schedule; prepared by accelerate."""
    import torch
    from accelerate.utils import set_seed

    attn, attn_reason = pick_attention(device_type, config.attn_implementation)
    set_seed(config.seed)
    if config.stage == "finetune":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(init_from), attn_implementation=attn, dtype=torch.float32)
        model.config.use_cache = False
    else:
        model = build_model(config.model, attn_implementation=attn, eos_token_id=eos_token_id, dropout=config.dropout)
    n_params = count_params(model)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if config.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.peak_lr,
                                  betas=config.adam_betas, eps=config.adam_eps, fused=device_type == "cuda" or None)
    scheduler = lr_schedule(optimizer, config)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us
    return model, optimizer, scheduler, n_params, attn_reason


def setup(config: TrainConfig, acc, out: Path, sources: Sequence[str], *, init_from: Path | None, device_type: str,
          prices: budget.PriceBook, timer: Timer, estimate: dict[str, Any] | None = None,
          inputs: dict[str, str] | None = None, progress: bool = True) -> TrainState:
    """Data, tokenizer, model, optimizer and schedule for a run writing into the stage folder `out`."""
    micro_batch, ckpt, plan = memory_settings(config, acc, device_type)  # refuses before any data work
    micro, accum = batch_split(config.batch_seqs, micro_batch, acc.num_processes)
    tok, data, he_items = prepare_data(config, acc, out, sources, init_from, progress)
    model, optimizer, scheduler, n_params, attention = build_training(config, acc, device_type, tok.eos_token_id,
                                                                      init_from, gradient_checkpointing=ckpt)
    peak, peak_what = device_peak_tflops(device_type, config.gpu, prices)
    return TrainState(config=config, acc=acc, out=out, device_type=device_type, tokenizer=tok, data=data,
                      he_items=he_items, model=model, optimizer=optimizer, scheduler=scheduler, micro=micro,
                      accum=accum, n_params=n_params, attention=attention, gradient_checkpointing=ckpt,
                      memory_plan=plan.to_dict() if plan is not None else None,
                      flops_per_token=budget.flops_per_token(config.model, config.seq_len), peak_tflops=peak,
                      peak_what=peak_what, timer=timer, estimate=dict(estimate or {}), inputs=dict(inputs or {}),
                      progress=progress)


def resume(state: TrainState, ckpt: Path) -> None:
    """Continue from a checkpoint: weights, optimizer, schedule and RNG states, the step, the log cut back to it.
    (The caller checked that the checkpoint belongs to this run: training.state.check_same_run.)"""
    saved = read_state(ckpt)
    state.acc.load_state(str(ckpt))
    state.step, state.elapsed_before, state.cpu_before = saved["step"], saved["elapsed_s"], saved["cpu_s"]
    state.resumed_from = ckpt.name
    if state.acc.is_main_process:
        truncate_log(state.log_path, state.step)


# ---- the loop ------------------------------------------------------------------------------------

def begin(state: TrainState) -> None:
    """Log the run's info line; evaluate the starting model (step 0) unless resumed."""
    import torch

    c, acc = state.config, state.acc
    state.log({"kind": "info", "step": state.step, "resumed_from": state.resumed_from, "device": state.device_type,
               "processes": acc.num_processes, "mixed_precision": acc.mixed_precision, "attention": state.attention,
               "compile": c.compile, "params": state.n_params,
               "threads": torch.get_num_threads() if state.device_type == "cpu" else None,
               "micro_batch": state.micro, "grad_accum": state.accum, "train_blocks": len(state.train_ids),
               "gradient_checkpointing": state.gradient_checkpointing, "memory_plan": state.memory_plan,
               "data": state.data.stats, "flops_per_token": state.flops_per_token, "mfu_peak": state.peak_what,
               "estimate": state.estimate})
    if acc.is_main_process and state.progress:
        print(f"[{c.stage}] {state.attention}; precision {acc.mixed_precision}; {state.n_params:,} params; "
              f"{len(state.train_ids)} blocks of {c.seq_len}; {acc.num_processes} process(es)")
    if state.step == 0:
        state.initial_eval = state.last_eval = run_eval(state)


def run_eval(state: TrainState) -> dict[str, float | None]:
    """Evaluate now and log it at the current step."""
    result = evaluate(state.model, state.acc, state.data.heldout, state.he_items, state.micro,
                      state.config.eval_blocks)
    state.log({"kind": "eval", "step": state.step, **result})
    return result


def loop(state: TrainState, callbacks: Sequence[Callback] = ()) -> None:
    """Optimizer steps from state.step to config.steps, with evals and checkpoints on their schedule."""
    c, acc = state.config, state.acc
    begin(state)
    bar = _progress(range(state.step, c.steps), acc.is_local_main_process and state.progress, c.stage)
    state.model.train()
    for step in bar:
        t0 = time.perf_counter()
        loss = forward_backward(state.model, acc, micro_batches(state, step), state.accum)
        for cb in callbacks:
            loss = cb.on_loss(step + 1, loss)
        value = float(acc.reduce(loss, "mean"))
        if not math.isfinite(value):
            stop_non_finite(state, step + 1, value)
        grad_norm = optimizer_step(state.model, state.optimizer, state.scheduler, acc, c.grad_clip)
        state.step, state.last_loss = step + 1, value
        rec = record_step(state, value, grad_norm, time.perf_counter() - t0)
        for cb in callbacks:
            cb.on_step_end(state, rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{rec['tokens_per_s']:,.0f}")
        on_schedule(state)


def record_step(state: TrainState, loss: float, grad_norm, seconds: float) -> dict[str, Any]:
    """The step's log line (throughput and MFU of this step included)."""
    tokens_step = state.config.batch_seqs * state.config.seq_len
    rate = tokens_step / seconds
    state.rates.append(rate)
    rec = {"kind": "train", "step": state.step, "loss": loss, "lr": state.scheduler.get_last_lr()[0],
           "grad_norm": float(grad_norm) if grad_norm is not None else None,
           "tokens": state.step * tokens_step, "tokens_per_s": rate, "mfu": state.mfu(rate),
           "elapsed_s": state.elapsed_s}
    state.log(rec)
    return rec


def on_schedule(state: TrainState) -> None:
    """Evaluate every eval_every steps (the last step is evaluated by `finish`); checkpoint every
    checkpoint_every steps and at the last step."""
    c, step = state.config, state.step
    done = step == c.steps
    if c.eval_every and step % c.eval_every == 0 and not done:
        state.last_eval = run_eval(state)
    if c.checkpoint_every and step % c.checkpoint_every == 0 or done:
        save_checkpoint(state.acc, state.out, step, {
            "step": step, "elapsed_s": state.elapsed_s, "cpu_s": state.cpu_s, "config": c.to_dict(),
            "inputs": state.inputs}, c.keep_checkpoints)


def stop_non_finite(state: TrainState, step: int, value: float) -> None:
    kept = checkpoints(state.out)
    msg = (f"{state.config.stage}: non-finite loss ({value}) at step {step}; stopped before the optimizer "
           f"step. Last good checkpoint: {kept[-1] if kept else 'none (the run had not saved one yet)'}. "
           "Try a lower peak_lr, fp32/bf16 instead of fp16, or a smaller grad_clip, then rerun with --resume.")
    state.log({"kind": "error", "step": step, "loss": value, "message": msg})
    raise NonFiniteLoss(msg)


def finish(state: TrainState) -> Path:
    """Evaluate the trained model, save it (with its tokenizer) as <stage>/final; returns that folder."""
    state.last_eval = run_eval(state)
    final = state.out / "final"
    # The whole weights on the main process: under FSDP every process holds a shard and gathering is a
    # collective (all processes call it); under DDP or one process it is the model's own state_dict.
    weights = state.acc.get_state_dict(state.model)
    if state.acc.is_main_process:
        unwrapped = state.acc.unwrap_model(state.model, keep_torch_compile=False)
        unwrapped.config.use_cache = True  # generation wants the KV cache
        if unwrapped.generation_config is not None:
            # generation_config.json is saved separately and would keep training's use_cache=False
            # (without the cache every generated token recomputes the whole sequence: ~20x slower).
            unwrapped.generation_config.use_cache = True
        unwrapped.save_pretrained(str(final), state_dict=weights)
        state.tokenizer.save_pretrained(str(final))
    state.acc.wait_for_everyone()
    return final


def initial_humaneval_loss(state: TrainState) -> float | None:
    """The HumanEval loss before training: this run's step-0 eval, or (resumed) the first one logged."""
    if state.initial_eval is not None:
        return state.initial_eval.get("humaneval_loss")
    if state.acc.is_main_process and state.log_path.exists():
        return next((r.get("humaneval_loss") for r in iter_jsonl(state.log_path) if r.get("kind") == "eval"), None)
    return None


def mean_rate(state: TrainState) -> float:
    """Mean tokens/s of this attempt's steps; the first step pays the warm-up and is left out."""
    rates = state.rates[1:] or state.rates
    return sum(rates) / max(1, len(rates))


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="step", leave=True)
