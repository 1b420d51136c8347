"""Training configuration and result: what a pretraining or finetuning run is asked to do, what it reports, what it costs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import ConfigError, Phi1Error, unknown_choice
from ..presets import get_preset

STAGES = ("pretrain", "finetune")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class NonFiniteLoss(Phi1Error):
    """The loss became NaN/inf; the run stopped before the optimizer step, checkpoints kept."""


@dataclass
class TrainConfig:
    preset: str = "tiny"  # preset name: model shape, tokenizer, hardware for estimates
    stage: str = "pretrain"  # "pretrain" | "finetune"
    out_dir: Path | None = None  # output folder; None = <run dir>/<stage>
    data: tuple[str, ...] = ()  # training files "path" or "path:weight" (JSONL/Parquet, `text` column)
    init_from: str | None = None  # finetune: folder with a saved model + tokenizer (None = <run dir>/pretrain/final)
    tokenizer: str | None = None  # "bpe-train", hub id or folder; None = preset's (pretrain) / init_from's (finetune)
    steps: int = 0  # optimizer steps to run
    batch_seqs: int = 0  # effective batch, sequences per optimizer step (all processes together)
    seq_len: int = 0  # tokens per packed block
    peak_lr: float = 0.0  # learning rate after warmup
    warmup_steps: int = 0  # linear warmup steps
    decay_steps: int | None = None  # linear decay reaches 0 here (paper: 36k schedule stopped at 24k); None = steps
    weight_decay: float = 0.0  # AdamW decoupled weight decay (not on biases / LayerNorm)
    micro_batch: int = 8  # sequences per forward pass per process; accumulation makes up the rest
    grad_clip: float = 1.0  # max global gradient L2 norm
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    dropout: float | None = None  # attention + residual dropout for a fresh model; None = preset's (0.1)
    precision: str = "auto"  # auto = bf16 on CUDA if supported else fp16; fp32 on CPU
    attn_implementation: str = "auto"  # auto = flash_attention_2 when installed on CUDA, else sdpa
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    gpu: str | None = None  # price-book GPU name for the MFU peak; None = detect ("cpu" on CPU)
    checkpoint_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    eval_every: int = 0  # steps between evals (0 = at start and end only)
    eval_blocks: int = 64  # max held-out blocks per eval
    humaneval_problems: int | None = None  # HumanEval problems in the solution-loss eval (None = all 164)
    heldout_fraction: float = 0.05  # documents per source held out for eval loss
    tokenizer_train_chars: int = 2_000_000  # "bpe-train": characters of training text the BPE learns from
    max_source_chars: int | None = None  # per source, seeded subset of training documents up to this many characters (None = all)
    seed: int = 0  # init, data order, dropout
    threads: int | None = None  # CPU torch threads: None = torch's default, 0 = auto (all cores if idle, 1 if busy)

    def __post_init__(self):
        get_preset(self.preset)
        if self.stage not in STAGES:
            raise unknown_choice("training stage", self.stage, STAGES)
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        if self.device not in ("auto", "cpu", "cuda"):
            raise unknown_choice("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("steps", "batch_seqs", "seq_len", "micro_batch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch > self.batch_seqs:
            self.micro_batch = self.batch_seqs
        if self.batch_seqs % self.micro_batch:
            raise ConfigError(f"batch_seqs={self.batch_seqs} is not a multiple of micro_batch={self.micro_batch}")
        n_ctx = get_preset(self.preset).model.n_ctx
        if self.seq_len > n_ctx:
            raise ConfigError(f"seq_len={self.seq_len} exceeds the model's {n_ctx} positions")
        if not self.peak_lr > 0:
            raise ConfigError(f"peak_lr must be > 0, got {self.peak_lr}")
        if self.decay_steps is not None and self.decay_steps < self.steps:
            raise ConfigError(f"decay_steps={self.decay_steps} < steps={self.steps}: the LR would hit 0 before the end")
        for name in ("warmup_steps", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = auto) or None, got {self.threads}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        self.data = tuple(str(d) for d in ([self.data] if isinstance(self.data, (str, Path)) else self.data))
        self.out_dir = Path(self.out_dir).expanduser().resolve() if self.out_dir else runs.stage_dir(self.stage, preset=self.preset)

    @classmethod
    def for_preset(cls, name: str, stage: str = "pretrain", **overrides) -> "TrainConfig":
        """The preset's schedule for `stage` (phi-1 paper values on GPU presets), with overrides."""
        p = get_preset(name)
        if stage not in STAGES:
            raise unknown_choice("training stage", stage, STAGES)
        sched = getattr(p, stage)
        tiny = p.hardware.gpu == "cpu"
        base = dict(preset=p.name, stage=stage, steps=sched.steps, batch_seqs=sched.batch_seqs, seq_len=sched.seq_len,
                    peak_lr=sched.peak_lr, warmup_steps=sched.warmup_steps, decay_steps=sched.decay_steps,
                    weight_decay=sched.weight_decay,
                    micro_batch=min(sched.batch_seqs, 8 if tiny else 16),
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
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        base.update(overrides)
        return cls(**base)

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_seqs * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


@dataclass
class TrainResult:
    stage: str
    out_dir: str
    final_dir: str
    steps: int
    tokens: int
    train_loss: float | None
    heldout_loss: float | None
    humaneval_loss: float | None  # mean loss on HumanEval canonical-solution tokens after training
    humaneval_loss_initial: float | None  # the same before training (or at init_from)
    seconds: float  # wall seconds of this run (resumed parts included)
    cpu_seconds: float  # process CPU time
    gpu_seconds: float  # wall seconds x GPUs (0 on CPU)
    tokens_per_s: float
    mfu: float | None
    usd: float
    estimate: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- cost --------------------------------------------------------------------------------
def estimate_cost(config: TrainConfig, prices=None):
    """budget.StageEstimate for this run on the preset's hardware (FLOPs / (peak x MFU))."""
    from .. import budget

    prices = prices or budget.load_prices()
    p = get_preset(config.preset)
    return budget.estimate_training(config.stage, p.model, config.tokens, prices, gpu=p.hardware.gpu,
                                   n_gpus=p.hardware.n_gpus, mfu=p.hardware.mfu, seq_len=config.seq_len)
