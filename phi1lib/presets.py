"""The three presets (tiny, phi1-small, phi1): model shape, data plan, schedules, hardware.

Pure data, no torch import: the budget model prices a preset from these numbers, and each
stage builds its own config from them (`<Stage>Config.for_preset(name)`). Numbers for the
GPU presets come from the paper (§2.3; quoted numbers are in phi1lib.paper); `tiny` is sized for a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import unknown_choice


@dataclass(frozen=True)
class ModelSpec:
    """Phi architecture shape (maps 1:1 onto transformers' PhiConfig)."""

    n_layer: int  # transformer blocks
    d_model: int  # hidden size
    d_mlp: int  # MLP inner size
    n_head: int  # attention heads
    rotary_dim: int  # dims per head that get rotary embedding (partial_rotary_factor = rotary_dim / head_dim)
    n_ctx: int  # max positions (tokens)
    vocab_size: int  # embedding rows (padded tokenizer vocab)
    tie_embeddings: bool = False  # phi-1 has an untied LM head (with bias)
    dropout: float = 0.1  # attention and residual dropout
    activation: str = "gelu_new"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def partial_rotary_factor(self) -> float:
        return self.rotary_dim / self.head_dim

    def n_params(self) -> int:
        """Exact parameter count of PhiForCausalLM with this shape (biases and LayerNorms included)."""
        d, m, v, L = self.d_model, self.d_mlp, self.vocab_size, self.n_layer
        per_layer = 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)  # LN, q/k/v/dense, fc1, fc2
        embed = v * d
        head = 0 if self.tie_embeddings else v * d
        head += v  # LM head bias
        return embed + L * per_layer + 2 * d + head  # + final LayerNorm


@dataclass(frozen=True)
class TrainSchedule:
    """One training phase (pretraining or finetuning), as in paper §2.3."""

    steps: int  # optimizer steps
    batch_seqs: int  # effective batch size in sequences
    seq_len: int  # tokens per sequence
    peak_lr: float  # learning rate after warmup
    warmup_steps: int  # linear warmup, then linear decay
    weight_decay: float  # AdamW decoupled weight decay
    decay_steps: int | None = None  # length of the linear-decay schedule (paper: 36k, stopped at 24k); None = steps

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_seqs * self.seq_len


@dataclass(frozen=True)
class DataPlan:
    """How much data each stage touches (drives cost estimates and tiny-run sizes)."""

    corpus_samples: int  # code samples in the candidate pool
    corpus_tokens: float  # tokens in the candidate pool
    annotate_samples: int  # samples labelled by the annotator (GPT-4 in the paper)
    annotate_tokens_in: int  # prompt tokens per annotated sample (a label only: the filtering estimate measures them)
    annotate_tokens_out: int  # answer tokens per annotated sample
    textbook_tokens: float  # generated tokens of synthetic textbooks
    exercise_tokens: float  # generated tokens of exercises
    filtered_tokens: float  # tokens kept by the filter
    embed_max_length: int = 512  # tokens of each sample the filter's embedder reads (its head)
    tokens_per_textbook: float = 1500.0  # expected generated tokens per textbook section (paper: <1B tokens in all)
    tokens_per_exercise: float = 205.0  # expected generated tokens per exercise (paper: 180M / 879.5K)

    @property
    def n_textbooks(self) -> int:
        """Textbook sections to request: the planned tokens over the tokens per section."""
        return int(round(self.textbook_tokens / self.tokens_per_textbook))

    @property
    def n_exercises(self) -> int:
        return int(round(self.exercise_tokens / self.tokens_per_exercise))

    @property
    def tokens_per_sample(self) -> float:
        """Mean tokens of one corpus sample."""
        return self.corpus_tokens / max(self.corpus_samples, 1)


@dataclass(frozen=True)
class EvalPlan:
    benchmarks: tuple[str, ...]  # benchmark names
    n_samples: int  # completions per problem
    max_new_tokens: int  # generation cap per completion


@dataclass(frozen=True)
class Hardware:
    gpu: str  # key into the price books' GPU table ("A100", "H100", "cpu")
    n_gpus: int  # devices used for training
    mfu: float  # assumed model FLOPs utilisation for estimates


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelSpec
    data: DataPlan
    pretrain: TrainSchedule
    finetune: TrainSchedule
    eval: EvalPlan
    hardware: Hardware
    tokenizer: str  # "bpe-train" (own byte-level BPE) or a hub id / local folder
    embedder: str  # hub id / local folder, or "minilm-local" for the offline default
    annotator: str  # "heuristic" (offline stand-in) or an LLM model name
    synthesizer: str  # "extractive" (offline stand-in) or an LLM model name
    offline: bool  # True: never touches the network
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PHI1_MODEL = ModelSpec(n_layer=24, d_model=2048, d_mlp=8192, n_head=32, rotary_dim=32, n_ctx=2048, vocab_size=51200)
_SMALL_MODEL = ModelSpec(n_layer=20, d_model=1024, d_mlp=4096, n_head=16, rotary_dim=32, n_ctx=2048, vocab_size=51200)
_TINY_MODEL = ModelSpec(n_layer=4, d_model=128, d_mlp=512, n_head=4, rotary_dim=16, n_ctx=1024, vocab_size=2048)

_PAPER_DATA = DataPlan(
    corpus_samples=35_000_000,  # paper §2.1: "over 35 million files/samples, totalling over 35B tokens"
    corpus_tokens=35e9,
    annotate_samples=100_000,
    annotate_tokens_in=700,  # not read by the estimate, which renders the real prompt over real samples and counts
    annotate_tokens_out=10,
    textbook_tokens=1e9,
    exercise_tokens=180e6,
    filtered_tokens=6e9,
)
_PAPER_PRETRAIN = TrainSchedule(steps=24_000, batch_seqs=1024, seq_len=2048, peak_lr=1e-3, warmup_steps=750,
                                weight_decay=0.1, decay_steps=36_000)
_PAPER_FINETUNE = TrainSchedule(steps=6_000, batch_seqs=256, seq_len=2048, peak_lr=1e-4, warmup_steps=50,
                                weight_decay=0.01)

_PHI1 = Preset(
    name="phi1",
    description="phi-1 (1.3B): 24 layers, d 2048, 32 heads, 8xA100, paper schedule",
    model=_PHI1_MODEL,
    data=_PAPER_DATA,
    pretrain=_PAPER_PRETRAIN,
    finetune=_PAPER_FINETUNE,
    eval=EvalPlan(benchmarks=("humaneval", "mbpp"), n_samples=1, max_new_tokens=512),
    hardware=Hardware(gpu="A100", n_gpus=8, mfu=0.5),
    tokenizer="Salesforce/codegen-350M-mono",
    embedder="Salesforce/codegen-350M-mono",
    annotator="gpt-4",
    synthesizer="gpt-3.5-turbo",
    offline=False,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="~1M-param Phi on a 2-core CPU, offline, whole pipeline in <= 15 minutes",
        model=_TINY_MODEL,
        data=DataPlan(corpus_samples=3000, corpus_tokens=3e6, annotate_samples=600, annotate_tokens_in=400,
                      annotate_tokens_out=10, textbook_tokens=3e5, exercise_tokens=1e5,
                      filtered_tokens=1e6, embed_max_length=64),
        pretrain=TrainSchedule(steps=100, batch_seqs=8, seq_len=128, peak_lr=3e-3, warmup_steps=10,
                               weight_decay=0.1),  # ~102k tokens: ~30-45 s on 2 cores
        finetune=TrainSchedule(steps=40, batch_seqs=8, seq_len=128, peak_lr=1e-3, warmup_steps=4,
                               weight_decay=0.01),  # ~41k tokens: ~10-15 s
        eval=EvalPlan(benchmarks=("humaneval",), n_samples=1, max_new_tokens=128),
        # Measured on the 2-core CI machine: tiny pretraining and finetuning sustain ~21 GFLOP/s,
        # 0.1 of the price book's nominal 0.2 TFLOP/s (stage wall time, set-up included). A
        # batched embedding pass runs ~3x better (~64 GFLOP/s), so the filtering estimate errs high.
        hardware=Hardware(gpu="cpu", n_gpus=1, mfu=0.1),
        tokenizer="bpe-train",
        embedder="minilm-local",
        annotator="heuristic",
        synthesizer="extractive",
        offline=True,
    ),
    # phi-1-small differs from phi-1 in its shape (paper §2.3 gives it and says "same pipeline"). Same data,
    # schedule and hardware is this project's ASSUMPTION: the paper does not give phi-1-small's schedule.
    "phi1-small": replace(_PHI1, name="phi1-small", model=_SMALL_MODEL,
                          description="phi-1-small (350M): 20 layers, d 1024, 16 heads, on one 8xA100 box"),
    "phi1": _PHI1,
}

PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str | Preset) -> Preset:
    """Look up a preset by name; an unknown name raises ConfigError listing the presets."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_choice("preset", name, PRESET_NAMES) from None


def with_overrides(preset: Preset, **sections: dict[str, Any]) -> Preset:
    """Copy of `preset` with fields of nested sections replaced, e.g. with_overrides(p, pretrain={"steps": 10})."""
    changes = {}
    for section, values in sections.items():
        current = getattr(preset, section)
        changes[section] = replace(current, **values) if values else current
    return replace(preset, **changes)
