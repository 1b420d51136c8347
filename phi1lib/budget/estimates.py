"""The budget model: price LLM tokens, training FLOPs and GPU rentals into per-stage estimates.

Pure Python (no pandas, torch or ipywidgets at import time) so every stage, the CLI and the
widget can call it cheaply. Prices come from `load_prices()` (see `phi1lib.pricebook`);
scenarios and preset plans are in `phi1lib.budget`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .. import paper
from ..errors import ConfigError
from ..presets import ModelSpec
from .pricebook import GPU, LLMPrice, PriceBook, Rental

# The paper-implied MFU (paper.IMPLIED_MFU = 0.495, 6N only), rounded: the presets' default.
DEFAULT_MFU = round(paper.IMPLIED_MFU, 2)
DEFAULT_COFFEE = "grande-cappuccino-redmond"
# CPU seconds to score one completion in the sandbox: ~15 ms measured per program on 2 cores
# (benchmarks/bench_sandbox.py); a completion that hangs costs up to its timeout, hence 0.1.
SANDBOX_SECONDS_PER_PROGRAM = 0.1
# The embedders run in fp32 (embed.py loads them without a dtype; PyTorch leaves TF32 off): on an A100 that is 19.5 of
# the 312 TFLOP/s the price book's peak counts, and at a stated 50% of it a line's MFU is 0.031.
FP32_TFLOPS = {"A100": 19.5, "A100-40GB": 19.5, "H100": 67.0}
EMBED_FP32_UTILISATION = 0.5  # assumed share of the fp32 peak a batched forward pass reaches (not measured on a GPU)


def fp32_embed_mfu(gpu: str) -> float | None:
    """The bf16-peak MFU of an fp32 embedding pass on `gpu` at the stated utilisation (None: unknown GPU)."""
    return round(FP32_TFLOPS[gpu] * EMBED_FP32_UTILISATION / 312.0, 4) if gpu in FP32_TFLOPS else None
# Sustained OpenAI throughput for wall-clock estimates (tokens per minute, a high usage tier).
DEFAULT_TOKENS_PER_MINUTE = 1_000_000


@dataclass
class LineItem:
    """One priced line of a budget: what, how much, at what unit price, from which source."""

    stage: str
    item: str
    detail: str  # human-readable arithmetic, e.g. "1,000,000,000 out x $0.002/1K"
    cost_usd: float
    tokens: float = 0.0  # tokens processed (LLM in+out, or trained/read)
    flops: float = 0.0
    gpu_hours: float = 0.0
    wall_hours: float = 0.0
    cpu_hours: float = 0.0
    cups: float = 0.0  # coffees actually bought on this line
    source: str = ""
    note: str = ""  # how the plan line's numbers were made (e.g. how prompt tokens were counted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageEstimate:
    """What a stage will cost before it runs: dollars, tokens, GPU- and wall-hours, cappuccinos."""

    stage: str
    cost_usd: float = 0.0
    tokens: float = 0.0
    gpu_hours: float = 0.0
    wall_hours: float = 0.0
    cappuccinos: float = 0.0  # cost expressed in the scenario's coffee (cost_usd / price per cup)
    lines: list[LineItem] = field(default_factory=list)
    cpu_hours: float = 0.0
    flops: float = 0.0

    @classmethod
    def from_lines(cls, stage: str, lines: Iterable[LineItem], prices: PriceBook,
                   coffee: str = DEFAULT_COFFEE) -> "StageEstimate":
        lines = list(lines)
        cost = sum(l.cost_usd for l in lines)
        return cls(stage=stage, cost_usd=cost, tokens=sum(l.tokens for l in lines),
                   gpu_hours=sum(l.gpu_hours for l in lines), wall_hours=sum(l.wall_hours for l in lines),
                   cappuccinos=cappuccinos(cost, prices, coffee), lines=lines,
                   cpu_hours=sum(l.cpu_hours for l in lines), flops=sum(l.flops for l in lines))

    def __add__(self, other: "StageEstimate") -> "StageEstimate":
        """Combine two estimates of the same stage (e.g. textbooks + exercises)."""
        return StageEstimate(self.stage, self.cost_usd + other.cost_usd, self.tokens + other.tokens,
                             self.gpu_hours + other.gpu_hours, self.wall_hours + other.wall_hours,
                             self.cappuccinos + other.cappuccinos, self.lines + other.lines,
                             self.cpu_hours + other.cpu_hours, self.flops + other.flops)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines"] = [l.to_dict() for l in self.lines]
        return d

    def to_frame(self):
        """The line items as a pandas DataFrame, one row per line (item, detail, cost_usd, tokens, hours...)."""
        import pandas as pd

        return pd.DataFrame([line.to_dict() for line in self.lines])


def cappuccinos(usd: float, prices: PriceBook, coffee: str = DEFAULT_COFFEE) -> float:
    """`usd` in cups of `coffee` (the seed's unit of account)."""
    cup = prices.coffee(coffee).usd
    return usd / cup if cup else 0.0


def _check_count(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


# ---- LLM tokens -----------------------------------------------------------------------------

def llm_unit_prices(model: str, prices: PriceBook, batch: bool = False) -> tuple[float, float, LLMPrice]:
    """(USD per 1K input, USD per 1K output, entry), after the batch discount if `batch`."""
    p = prices.llm(model)
    if batch and not p.free:
        prices.check_batch()
    factor = 1.0 - prices.batch_discount if batch and not p.free else 1.0
    return p.input_per_1k * factor, p.output_per_1k * factor, p


def price_llm_usage(model: str, prompt_tokens: float, completion_tokens: float, prices: PriceBook,
                    batch: bool = False) -> float:
    """Dollars for measured token counts. Unknown models raise; free (local) ones cost $0."""
    pin, pout, _ = llm_unit_prices(model, prices, batch)
    return (_check_count("prompt_tokens", prompt_tokens) * pin
            + _check_count("completion_tokens", completion_tokens) * pout) / 1000.0


def estimate_llm(stage: str, model: str, tokens_in: float, tokens_out: float, prices: PriceBook,
                 batch: bool = False, *, item: str | None = None, coffee: str = DEFAULT_COFFEE,
                 tokens_per_minute: float = DEFAULT_TOKENS_PER_MINUTE) -> StageEstimate:
    """Two lines (input, output tokens) at the model's per-1K prices; wall-clock from throughput."""
    tokens_in = _check_count("tokens_in", tokens_in)
    tokens_out = _check_count("tokens_out", tokens_out)
    pin, pout, entry = llm_unit_prices(model, prices, batch)
    name = item or stage
    label = entry.name if entry.name == model else f"{model} = {entry.name}"
    tag = " batch" if batch and not entry.free else ""
    if isinstance(tokens_per_minute, bool) or not isinstance(tokens_per_minute, (int, float)) \
            or not (math.isfinite(tokens_per_minute) and tokens_per_minute > 0):
        raise ConfigError(f"tokens_per_minute: expected a number > 0, got {tokens_per_minute!r}")
    wall = (tokens_in + tokens_out) / tokens_per_minute / 60.0
    lines = [
        LineItem(stage, f"{name} input", f"{tokens_in:,.0f} in x ${pin:g}/1K ({label}{tag})",
                 tokens_in * pin / 1000.0, tokens=tokens_in, wall_hours=wall * tokens_in / max(tokens_in + tokens_out, 1),
                 source=entry.source),
        LineItem(stage, f"{name} output", f"{tokens_out:,.0f} out x ${pout:g}/1K ({label}{tag})",
                 tokens_out * pout / 1000.0, tokens=tokens_out,
                 wall_hours=wall * tokens_out / max(tokens_in + tokens_out, 1), source=entry.source),
    ]
    return StageEstimate.from_lines(stage, lines, prices, coffee)


def measured_prompt_tokens(requests: Iterable[Any], counter: Any) -> tuple[float, int, str]:
    """(mean prompt tokens, requests counted, method) of real requests, each counted by `counter`
    (an `llm.TokenCounter`: tiktoken for the provider's model when its file is available offline, else a
    model tokenizer, else ~4 characters per token, and its `method` says which). The one way the
    LLM-calling stages measure the input tokens they plan: render the real prompts, then count them."""
    counts = [counter.count_request(r) for r in requests]
    if not counts:
        return 0.0, 0, counter.method
    return sum(counts) / len(counts), len(counts), counter.method


# ---- FLOPs and GPU time ---------------------------------------------------------------------

def matmul_params(spec: ModelSpec) -> int:
    """Parameters a training token multiplies through: all but the input-embedding table, which is a lookup
    (a tied LM head still multiplies by it, so it counts once then)."""
    embed = spec.vocab_size * spec.d_model
    return spec.n_params() - (0 if spec.tie_embeddings else embed)


def flops_per_token(spec: ModelSpec | float, seq_len: int | None = None, attention: bool = True) -> float:
    """Training FLOPs per token: 6 x (N - input embedding) + 12*L*d_model*T (forward + backward; PaLM's
    appendix B). The input embedding is a lookup, not a matmul (counting it puts phi-1's FLOPs ~7% high);
    the attention term is the QK^T and AV matmuls over a T-token context. The same count is used by the
    budget, `phi1 model-info` and the training log's MFU. A bare number is taken as N with no attention term.
    (The paper's implied MFU, `paper.IMPLIED_MFU`, is 6 x all parameters, as the paper's numbers allow.)"""
    if isinstance(spec, ModelSpec):
        t = seq_len if seq_len is not None else spec.n_ctx
        attn = 12 * spec.n_layer * spec.d_model * t if attention else 0
        return 6.0 * matmul_params(spec) + attn
    return 6.0 * _check_count("params", spec)


def forward_flops_per_token(spec: ModelSpec | float, seq_len: int | None = None, attention: bool = True) -> float:
    """Inference (forward only) FLOPs per token: one third of training, 2N + 4*L*H*Q*T."""
    return flops_per_token(spec, seq_len, attention) / 3.0


def body_params(spec: ModelSpec) -> int:
    """Parameters a token's forward pass multiplies through: all but the token-embedding table
    (a lookup) and the LM head (an embedder reads hidden states and never runs it)."""
    d, m = spec.d_model, spec.d_mlp
    per_layer = 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
    return spec.n_layer * per_layer + 2 * d


def embed_flops_per_token(spec: ModelSpec, seq_len: int | None = None) -> float:
    """Forward FLOPs per token of an embedding pass: 2 x body_params + 4*L*H*Q*T."""
    t = seq_len if seq_len is not None else spec.n_ctx
    return 2.0 * body_params(spec) + 4.0 * spec.n_layer * spec.n_head * spec.head_dim * t


def _rental_for(prices: PriceBook, gpu: str, rental: str | None) -> Rental:
    r = prices.rental(rental) if rental else prices.default_rental(gpu)
    if r.gpu != gpu:
        raise ConfigError(f"rental {r.name!r} has {r.gpu} GPUs, not {gpu}; pick a {gpu} rental "
                          f"({', '.join(n for n, x in prices.rentals.items() if x.gpu == gpu) or 'none loaded'}) "
                          f"or set gpu={r.gpu}")
    return r


def estimate_compute(stage: str, flops: float, prices: PriceBook, gpu: str = "A100", n_gpus: int = 8,
                     mfu: float = DEFAULT_MFU, *, rental: str | None = None, item: str | None = None,
                     coffee: str = DEFAULT_COFFEE, tokens: float = 0.0) -> StageEstimate:
    """GPU-hours = FLOPs / (peak x MFU); you pay whole machines for the wall-clock time."""
    flops = _check_count("flops", flops)
    if isinstance(mfu, bool) or not isinstance(mfu, (int, float)) or not (0 < mfu <= 1):
        raise ConfigError(f"mfu: expected a fraction in (0, 1], got {mfu!r}")
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ConfigError(f"n_gpus: expected an integer >= 1, got {n_gpus!r}")
    g: GPU = prices.gpu(gpu)
    if not (math.isfinite(g.peak_tflops) and g.peak_tflops > 0):
        raise ConfigError(f"GPU {gpu!r} ({g.file or 'price book'}): peak_tflops must be > 0, got {g.peak_tflops!r}")
    r = _rental_for(prices, gpu, rental)
    gpu_hours = flops / (g.peak_tflops * 1e12 * mfu) / 3600.0
    wall = gpu_hours / n_gpus
    machines = math.ceil(n_gpus / r.n_gpus)
    cost = wall * machines * r.usd_per_hour
    idle = machines * r.n_gpus - n_gpus
    detail = (f"{flops:.3g} FLOPs / ({g.peak_tflops:g} TFLOP/s x MFU {mfu:g}) = {gpu_hours:,.1f} {gpu}-h; "
              f"{n_gpus} GPU{'s' if n_gpus != 1 else ''} -> {wall:,.1f} h x {machines} x {r.name} ${r.usd_per_hour:g}/h"
              + (f" (whole machine billed: {idle} of its {machines * r.n_gpus} GPUs idle)" if idle > 0 and r.usd_per_hour
                 else ""))
    line = LineItem(stage, item or stage, detail, cost, tokens=tokens, flops=flops, gpu_hours=gpu_hours,
                    wall_hours=wall, source=r.source)
    return StageEstimate.from_lines(stage, [line], prices, coffee)


def estimate_training(stage: str, spec: ModelSpec | float, tokens: float, prices: PriceBook, gpu: str = "A100",
                      n_gpus: int = 8, mfu: float = DEFAULT_MFU, *, seq_len: int | None = None,
                      attention: bool = True, rental: str | None = None, item: str | None = None,
                      coffee: str = DEFAULT_COFFEE) -> StageEstimate:
    """Train `spec` on `tokens` tokens: FLOPs from flops_per_token, then estimate_compute."""
    tokens = _check_count("tokens", tokens)
    flops = flops_per_token(spec, seq_len, attention) * tokens
    return estimate_compute(stage, flops, prices, gpu, n_gpus, mfu, rental=rental, item=item, coffee=coffee,
                            tokens=tokens)


def estimate_rental(stage: str, rental: str, hours: float, prices: PriceBook, *, machines: int = 1,
                    item: str | None = None, coffee: str = DEFAULT_COFFEE) -> StageEstimate:
    """A rental booked for a fixed number of hours (the seed's "8xA100 for 103 hours")."""
    hours = _check_count("hours", hours)
    r = prices.rental(rental)
    gpu_hours = hours * machines * r.n_gpus
    detail = f"{hours:g} h x {machines} x {r.name} ({r.n_gpus}x{r.gpu}) ${r.usd_per_hour:g}/h"
    line = LineItem(stage, item or stage, detail, hours * machines * r.usd_per_hour, gpu_hours=gpu_hours,
                    wall_hours=hours, source=r.source)
    return StageEstimate.from_lines(stage, [line], prices, coffee)


def estimate_cpu(stage: str, cpu_hours: float, prices: PriceBook, *, rental: str = "own-laptop",
                 item: str | None = None, coffee: str = DEFAULT_COFFEE, workers: int = 1) -> StageEstimate:
    """CPU work (sandboxed tests, random forests): core-hours priced per core on `rental`."""
    cpu_hours = _check_count("cpu_hours", cpu_hours)
    r = prices.rental(rental)
    per_core = r.usd_per_hour / r.n_gpus  # for CPU rentals n_gpus counts cores
    detail = f"{cpu_hours:,.2f} core-h x ${per_core:g}/core-h ({r.name}), {workers} worker(s)"
    line = LineItem(stage, item or stage, detail, cpu_hours * per_core, cpu_hours=cpu_hours,
                    wall_hours=cpu_hours / max(workers, 1), source=r.source)
    return StageEstimate.from_lines(stage, [line], prices, coffee)


def estimate_coffee(stage: str, cups: float, prices: PriceBook, coffee: str = DEFAULT_COFFEE,
                    *, item: str | None = None) -> StageEstimate:
    cups = _check_count("cups", cups)
    c = prices.coffee(coffee)
    line = LineItem(stage, item or stage, f"{cups:g} x {c.name} ${c.usd:g}", cups * c.usd, cups=cups,
                    source=c.source)
    return StageEstimate.from_lines(stage, [line], prices, coffee)


def estimate_fixed(stage: str, usd: float, prices: PriceBook, *, item: str | None = None, detail: str = "",
                   coffee: str = DEFAULT_COFFEE) -> StageEstimate:
    usd = _check_count("usd", usd)
    line = LineItem(stage, item or stage, detail or f"${usd:,.2f} fixed", usd)
    return StageEstimate.from_lines(stage, [line], prices, coffee)


def combine(stage: str, estimates: Iterable[StageEstimate], prices: PriceBook,
            coffee: str = DEFAULT_COFFEE) -> StageEstimate:
    """One StageEstimate from several (their lines concatenated)."""
    return StageEstimate.from_lines(stage, [l for e in estimates for l in e.lines], prices, coffee)
