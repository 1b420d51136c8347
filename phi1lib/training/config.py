"""Training configuration, result and plan: what a pretraining or finetuning run is asked to do, reports and costs.

    config = TrainConfig.for_preset("tiny", "finetune", steps=80)   # the preset's schedule, resolved once
    estimate(config, prices)                                        # one "training" plan line, priced
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import budget
from ..errors import ConfigError
from ..presets import Hardware, ModelSpec, Preset, get_preset
from ..stage import StageConfig, StageResult, plan_defaults
from .packing import parse_source

STAGE = "train"  # the contract's stage family; the run folder and the ledger use config.stage
STAGES = ("pretrain", "finetune")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class TrainConfig(StageConfig):
    """One pretraining or finetuning run; `TrainConfig.for_preset(name, stage, **overrides)`.

    The run's folder is <run>/<stage> (`stage_name`), so pretraining and finetuning sit side by side.
    """

    STAGE: ClassVar[str] = STAGE
    # How the run is carried out, not what it computes (a resumed run may change them freely);
    # `gpu` only names the MFU peak and the rental price, `hardware` only feeds the estimate.
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("threads", "device", "compile", "gpu", "checkpoint_every",
                                                    "keep_checkpoints", "hardware", "gradient_checkpointing",
                                                    "pack_wait_s", "collective_timeout_s")

    preset: str = "tiny"  # preset the defaults came from; its name prices the estimate's training line
    stage: str = "pretrain"  # "pretrain" | "finetune": which schedule, and the run folder <run>/<stage>
    model: ModelSpec  # model shape (the preset's): the fresh model of pretraining, the vocab check of both
    hardware: Hardware  # GPUs and MFU the estimate assumes (estimate only)
    # Training files, "path" or "path:weight" (JSONL/Parquet with a `text` column); () = the run's own:
    # pretrain: filtering/kept.parquet + synthesis/textbooks.jsonl (those that exist);
    # finetune: synthesis/exercises.jsonl.
    data: tuple[str, ...] = ()
    init_from: str | None = None  # finetune: folder with a saved model + tokenizer; None = <run>/pretrain/final
    tokenizer: str | None = None  # "bpe-train", hub id or folder; pretrain: the preset's; finetune: None = init_from's
    steps: int = 0  # optimizer steps to run
    batch_seqs: int = 0  # effective batch, sequences per optimizer step (all processes together)
    seq_len: int = 0  # tokens per packed block
    peak_lr: float = 0.0  # learning rate after warmup
    warmup_steps: int = 0  # linear warmup steps
    decay_steps: int | None = None  # linear decay reaches 0 here (paper: 36k schedule stopped at 24k); None = steps
    weight_decay: float = 0.0  # AdamW decoupled weight decay (not on biases / LayerNorm)
    # sequences per forward pass per process (<= batch_seqs); accumulation makes up the rest. None = the memory
    # plan's on a GPU (the largest that fits the card, phi1lib.training.memory), 8 on CPU
    micro_batch: int | None = 8
    # recompute each layer's activations in the backward pass (saves memory, ~1/3 more compute);
    # None = the memory plan's on a GPU (only when needed), off on CPU
    gradient_checkpointing: bool | None = None
    grad_clip: float = 1.0  # max global gradient L2 norm
    adam_betas: tuple[float, float] = (0.9, 0.95)  # AdamW (beta1, beta2)
    adam_eps: float = 1e-8  # AdamW epsilon
    dropout: float | None = None  # attention + residual dropout for a fresh model; None = the model shape's (0.1)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16; auto = bf16 on CUDA if supported else fp16; fp32 on CPU
    attn_implementation: str = "auto"  # auto: flash_attention_2 if installed on CUDA, else sdpa; or sdpa, eager, ...
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    gpu: str | None = None  # price-book GPU name for the MFU peak and rental price; None = detect ("cpu" on CPU)
    checkpoint_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    eval_every: int = 0  # steps between evals (0 = at start and end only)
    eval_blocks: int = 64  # max held-out blocks per eval
    humaneval_problems: int | None = None  # HumanEval problems in the solution-loss eval (None = all 164)
    heldout_fraction: float = 0.05  # documents per source held out for the eval loss, in [0, 1)
    tokenizer_train_chars: int = 2_000_000  # "bpe-train": characters of training text the BPE learns from
    max_source_chars: int | None = None  # per source: seeded subset of about this many characters (None = all)
    pack_shard_docs: int = 20_000  # documents per packed shard (the unit of resume and of the multi-process split)
    pack_wait_s: float = 3600.0  # most seconds a process waits for shards other processes pack
    collective_timeout_s: float = 1800.0  # torch.distributed timeout of a launch (init, barriers, all-reduce)
    seed: int = 0  # init, data order, dropout
    threads: int | None = None  # CPU torch threads: None = torch's default, 0 = auto (all cores if idle, 1 if busy)

    def __post_init__(self) -> None:
        # Conveniences for Python callers (one path instead of a tuple, Path objects, a stored config's dicts).
        if isinstance(self.data, (str, os.PathLike)):
            self.data = (self.data,)
        if isinstance(self.data, (list, tuple)):
            self.data = tuple(os.fspath(d) if isinstance(d, os.PathLike) else d for d in self.data)
        for name in ("init_from", "tokenizer"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.model, dict):
            self.model = ModelSpec(**self.model)
        if isinstance(self.hardware, dict):
            self.hardware = Hardware(**self.hardware)
        super().__post_init__()

    @property
    def stage_name(self) -> str:
        return self.stage

    @property
    def tokens(self) -> int:
        """Tokens trained: steps x batch_seqs x seq_len."""
        return self.steps * self.batch_seqs * self.seq_len

    def validate(self) -> None:
        self.need(self.stage in STAGES, "stage", " or ".join(STAGES))
        self.need(self.precision in PRECISIONS, "precision", " | ".join(PRECISIONS))
        self.need(self.device in DEVICES, "device", " | ".join(DEVICES))
        self.need_ints("steps", "batch_seqs", "seq_len", "keep_checkpoints", "tokenizer_train_chars")
        self.need_ints("warmup_steps", "checkpoint_every", "eval_every", "eval_blocks", "seed", minimum=0)
        if self.micro_batch is not None:
            self.need_ints("micro_batch")
            self.need(self.micro_batch <= self.batch_seqs, "micro_batch",
                      f"at most batch_seqs={self.batch_seqs} (sequences per optimizer step), or none (auto)")
            self.need(self.batch_seqs % self.micro_batch == 0, "batch_seqs",
                      f"a multiple of micro_batch={self.micro_batch}")
        self.need(self.seq_len <= self.model.n_ctx, "seq_len", f"at most the model's {self.model.n_ctx} positions")
        self.need(self.peak_lr > 0, "peak_lr", "a learning rate > 0")
        self.need(self.decay_steps is None or self.decay_steps >= self.steps, "decay_steps",
                  f"none or >= steps={self.steps} (else the LR reaches 0 before the end)")
        self.need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        self.need(self.grad_clip > 0, "grad_clip", "a gradient norm > 0")
        self.need(all(0 <= b < 1 for b in self.adam_betas), "adam_betas", "two numbers in [0, 1), e.g. 0.9,0.95")
        self.need(self.adam_eps > 0, "adam_eps", "a number > 0")
        self.need(self.dropout is None or 0 <= self.dropout < 1, "dropout", "none or a probability in [0, 1)")
        self.need(0 <= self.heldout_fraction < 1, "heldout_fraction", "a fraction in [0, 1)")
        self.need(self.threads is None or self.threads >= 0, "threads", "none, 0 (auto) or a thread count")
        self.need(self.humaneval_problems is None or self.humaneval_problems >= 1, "humaneval_problems",
                  "none (all 164) or a count >= 1")
        self.need_ints("pack_shard_docs")
        self.need(self.pack_wait_s > 0, "pack_wait_s", "seconds > 0")
        self.need(self.collective_timeout_s > 0, "collective_timeout_s", "seconds > 0")
        self.need(self.max_source_chars is None or self.max_source_chars >= 1, "max_source_chars",
                  "none (all) or a character count >= 1")
        self.need(self.stage == "finetune" or self.init_from is None, "init_from",
                  "none for pretraining (it trains a fresh model; init_from is for finetuning)")
        self.need(self.stage == "finetune" or self.tokenizer is not None, "tokenizer",
                  "'bpe-train', a hub id or a folder for pretraining")
        for spec in self.data:
            try:
                parse_source(spec)
            except ConfigError as exc:
                raise self.bad("data", f"FILE or FILE:WEIGHT with a number >= 0 as WEIGHT ({exc})") from None

    @classmethod
    def _from_preset(cls, p: Preset, stage: str = "pretrain") -> dict[str, Any]:
        sched = getattr(p, stage)
        tiny = p.hardware.gpu == "cpu"
        return dict(
            preset=p.name, stage=stage, model=p.model, hardware=p.hardware,
            tokenizer=p.tokenizer if stage == "pretrain" else None,
            steps=sched.steps, batch_seqs=sched.batch_seqs, seq_len=sched.seq_len, peak_lr=sched.peak_lr,
            warmup_steps=sched.warmup_steps, decay_steps=sched.decay_steps, weight_decay=sched.weight_decay,
            micro_batch=min(sched.batch_seqs, 8) if tiny else None,  # GPU presets: the memory plan's, per card
            checkpoint_every=max(1, sched.steps // 4) if tiny else 1000,
            eval_every=0 if tiny else 1000,
            eval_blocks=16 if tiny else 256,
            humaneval_problems=48 if tiny else None,
            # auto: on a small shared CPU, OpenMP's extra threads mostly spin while other
            # processes run (measured 6x slower steps under load), so go single-threaded then.
            threads=0 if tiny else None,
            # tiny: ~3-4 chars/token, so ~10x the run's tokens per source; no repeats, and no
            # time spent tokenising a corpus the run never reaches.
            max_source_chars=sched.tokens * 12 if tiny else None,
            tokenizer_train_chars=1_000_000 if tiny else 2_000_000)

    @classmethod
    def for_preset(cls, preset: str | Preset = "tiny", stage: str = "pretrain", **overrides: Any) -> "TrainConfig":
        """The preset's schedule for `stage` (phi-1 paper values on GPU presets), then `overrides`."""
        p = get_preset(preset)
        if stage not in STAGES:
            raise ConfigError(f"TrainConfig.stage={stage!r}: expected {' or '.join(STAGES)}")
        # StageConfig.for_preset checks the override names and starts from _from_preset(p) (the
        # pretraining values); the stage's own schedule goes in on top of it, then the overrides.
        schedule = {k: v for k, v in cls._from_preset(p, stage).items() if k != "preset"}
        return super().for_preset(p, **{**schedule, **overrides})


def budget_lines(config: TrainConfig) -> list[dict[str, Any]]:
    """One "training" line: the preset's model shape for steps x batch_seqs x seq_len tokens."""
    return [dict(stage=config.stage, item=config.stage, kind="training", model=config.preset, steps=config.steps,
                 batch_seqs=config.batch_seqs, seq_len=config.seq_len,
                 note=f"{config.stage}: {config.steps:,} steps x {config.batch_seqs} x {config.seq_len} tokens")]


def estimate(config: TrainConfig, prices: budget.PriceBook | None = None) -> budget.StageEstimate:
    """FLOPs / (peak x MFU) on the preset's hardware, priced as `phi1 budget` prices the preset."""
    return budget.price_lines(config.stage, budget_lines(config), plan_defaults(config.hardware), prices)


@dataclass(kw_only=True)
class TrainResult(StageResult):
    """A finished pretraining or finetuning run (result.json in <run>/<stage>, written last).

    usage: tokens_in = tokens trained; gpu_s, cpu_s and wall_s include the checkpointed work of
    an interrupted earlier attempt that this run resumed (that attempt recorded nothing).
    """

    final_dir: str  # save_pretrained model + tokenizer (what finetuning and evaluation load)
    steps: int  # optimizer steps trained
    tokens: int  # tokens trained: steps x batch_seqs x seq_len
    train_loss: float | None  # loss of the last step (mean over processes)
    heldout_loss: float | None  # mean token loss on held-out blocks after training
    humaneval_loss: float | None  # mean loss on HumanEval canonical-solution tokens after training
    humaneval_loss_initial: float | None  # the same before training (or at init_from)
    tokens_per_s: float  # mean training throughput, the first (warm-up) step left out
    mfu: float | None  # model FLOPs utilisation at that throughput (None: no known peak)
    info: dict[str, Any] = field(default_factory=dict)  # device, processes, precision, attention, params, ...
