"""Stage 2: synthetic textbooks and exercises through the LLM layer, checked, deduplicated, stored.

Prompts come from `synth_prompts` (topic x audience x style; topic x function-name prefix).
Generation goes through `phi1lib.llm.LLMClient` (cache, resume, budget cap, ledger) with any
provider: an OpenAI-compatible endpoint, or offline the extractive STAND-IN of
`synth_extractive`, which answers from stage 1's filtered code and is named wherever used.
Replies are parsed and checked (`synth_quality`), exact/near duplicates removed (`dedup`), and
the stage folder gets textbooks.jsonl, exercises.jsonl, rejected.jsonl (with `reason`) and
result.json last.
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import ConfigError, DataError, unknown_choice
from ..jsonl import read_jsonl, write_jsonl
from ..presets import get_preset

KINDS = ("textbook", "exercise")
PROVIDERS = ("extractive", "openai")
OUT_FILES = {"textbook": "textbooks.jsonl", "exercise": "exercises.jsonl"}
REJECTED_FILE = "rejected.jsonl"
CHARS_PER_TOKEN = 4.0  # rough prompt-size estimate before a tokenizer is involved
ESTIMATE_SAMPLE = 2000  # prompts measured for the input-token estimate


@dataclass
class SynthesisConfig:
    preset: str = "tiny"  # preset the sizes come from
    provider: str = "extractive"  # "extractive" (offline stand-in) or "openai" (any OpenAI-compatible endpoint)
    model: str = "extractive"  # LLM model name (priced from the price books); "extractive" is the stand-in
    base_url: str | None = None  # OpenAI-compatible endpoint (vLLM, a local server); None = OpenAI
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (never stored)
    kinds: tuple[str, ...] = KINDS  # which record kinds to generate
    n_textbooks: int = 200  # textbook sections requested (prompts)
    n_exercises: int = 488  # exercises requested (prompts)
    seed: int = 0  # prompt draw seed: same seed -> same prompts
    temperature: float = 1.0  # sampling temperature (diversity)
    max_tokens_textbook: int = 2048  # generation cap per textbook section (tokens)
    max_tokens_exercise: int = 512  # generation cap per exercise (tokens)
    tokens_per_textbook: float = 1500.0  # expected generated tokens per section (for estimates; paper: <1B / ~670K)
    tokens_per_exercise: float = 205.0  # expected generated tokens per exercise (paper: 180M / 879.5K)
    min_chars: int = 120  # shortest accepted record (characters)
    max_chars_textbook: int = 20000  # longest accepted textbook section (characters)
    max_chars_exercise: int = 6000  # longest accepted exercise (characters)
    dedup_threshold: float = 0.85  # near-duplicate Jaccard threshold (word 5-grams)
    sandbox: bool = True  # run exercise doctests in phi1lib.sandbox (parse-only when it is missing)
    sandbox_timeout_s: float = 5.0  # per exercise (seconds)
    workers: int = 2  # sandbox processes
    concurrency: int = 8  # parallel LLM requests
    batch: bool = False  # price as Batch API (50% off) where the provider supports it
    cap_usd: float | None = None  # budget cap for this stage (USD); None = no cap
    source: str | None = None  # stand-in input: filtering/kept.parquet; None = the run dir's
    topics_file: str = "synth_topics.txt"  # editable lists (packaged name or path)
    audiences_file: str = "synth_audiences.txt"
    styles_file: str = "synth_styles.txt"
    names_file: str = "synth_function_names.txt"

    def __post_init__(self):
        get_preset(self.preset)
        if self.provider not in PROVIDERS:
            raise unknown_choice("synthesis provider", self.provider, PROVIDERS)
        self.kinds = tuple(self.kinds)
        for k in self.kinds:
            if k not in KINDS:
                raise unknown_choice("synthesis kind", k, KINDS)
        for name in ("n_textbooks", "n_exercises", "max_tokens_textbook", "max_tokens_exercise", "min_chars",
                     "max_chars_textbook", "max_chars_exercise", "workers", "concurrency"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"SynthesisConfig.{name} must be an integer >= 0, got {v!r}")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ConfigError(f"SynthesisConfig.dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.cap_usd is not None and self.cap_usd < 0:
            raise ConfigError(f"SynthesisConfig.cap_usd must be >= 0 USD or None, got {self.cap_usd}")
        if self.provider == "extractive" and self.model != "extractive":
            raise ConfigError(f"provider 'extractive' is the offline stand-in; its model must be 'extractive', "
                              f"got {self.model!r} (use provider='openai' for a real model)")

    @classmethod
    def for_preset(cls, name: str = "tiny", **overrides) -> "SynthesisConfig":
        """Sizes from the preset's data plan (tokens / tokens per record); stand-in offline, LLM otherwise."""
        p = get_preset(name)
        base = {f.name: f.default for f in fields(cls)}
        n_tb = int(round(p.data.textbook_tokens / base["tokens_per_textbook"]))
        n_ex = int(round(p.data.exercise_tokens / base["tokens_per_exercise"]))
        kw: dict[str, Any] = {"preset": p.name, "n_textbooks": n_tb, "n_exercises": n_ex}
        if p.synthesizer != "extractive":
            kw.update(provider="openai", model=p.synthesizer, workers=16, concurrency=64)
        kw.update(overrides)
        return cls(**kw)

    @property
    def is_stand_in(self) -> bool:
        return self.provider == "extractive"

    def n_for(self, kind: str) -> int:
        return self.n_textbooks if kind == "textbook" else self.n_exercises

    def prompts(self, kind: str, n: int | None = None):
        """The first `n` (default: all configured) prompts of `kind`, drawn with the config's seed."""
        from .prompts import build_prompts, load_list

        n = self.n_for(kind) if n is None else min(n, self.n_for(kind))
        topics = load_list(self.topics_file)
        if kind == "textbook":
            return build_prompts(kind, n, self.seed, topics=topics,
                                 audiences=load_list(self.audiences_file), styles=load_list(self.styles_file))
        return build_prompts(kind, n, self.seed, topics=topics, name_prefixes=load_list(self.names_file))


def estimate_cost(config: SynthesisConfig, prices=None):
    """Tokens and dollars for the configured counts: prompt tokens measured from the real prompts."""
    from ..budget import estimate_llm, load_prices

    prices = prices or load_prices()
    total = None
    for kind in config.kinds:
        n = config.n_for(kind)
        # Prompt length measured on the first prompts (all of them up to ESTIMATE_SAMPLE), scaled to n.
        sample = config.prompts(kind, ESTIMATE_SAMPLE)
        chars = sum(sum(len(m["content"]) for m in p.messages) for p in sample) / max(len(sample), 1)
        tokens_in = n * chars / CHARS_PER_TOKEN
        per = config.tokens_per_textbook if kind == "textbook" else config.tokens_per_exercise
        est = estimate_llm("synthesis", config.model, tokens_in, per * n, prices, config.batch,
                           item=f"{kind}s ({n:,} x {config.model})")
        total = est if total is None else total + est
    return total


@dataclass
class SynthesisResult:
    out_dir: str
    files: dict[str, str]  # kind -> accepted JSONL path
    rejected_path: str
    counts: dict[str, dict[str, int]]  # kind -> requested / generated / accepted / rejected / dedup...
    reasons: dict[str, dict[str, int]]  # kind -> rejection reason category -> count
    checked: str  # "sandbox doctests" | "parse-only (phi1lib.sandbox unavailable)" | "parse-only (disabled)"
    generator: str  # "extractive-stand-in" or the model name
    stand_in: bool
    usage: dict[str, float]  # prompt_tokens, completion_tokens, usd (new spend), cached
    seconds: dict[str, float]  # per block
    estimate: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def measured_usd(self) -> float:
        return float(self.usage.get("usd", 0.0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured_usd"] = self.measured_usd
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SynthesisResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def counts_table(self):
        """Per kind: requested -> generated -> rejected by each check -> accepted (a DataFrame)."""
        import pandas as pd

        cols = ["requested", "no_source", "generated", "llm_errors", "failed_checks", "sandbox_runs",
                "failed_sandbox", "duplicates", "accepted"]
        df = pd.DataFrame(self.counts).T
        return df[[c for c in cols if c in df.columns]].fillna(0).astype(int)

    def records(self, kind: str) -> list[dict]:
        return read_jsonl(self.files[kind])

    def rejected(self) -> list[dict]:
        p = Path(self.rejected_path)
        return read_jsonl(p) if p.exists() else []


def default_source(root=None) -> Path:
    return runs.stage_dir("filtering", root) / "kept.parquet"


def ensure_source(config: SynthesisConfig, root=None) -> Path:
    """The stand-in's input (filtering/kept.parquet), running stage 1 first when it has not run."""
    path = Path(config.source) if config.source else default_source(root)
    if path.exists():
        return path
    if config.source:
        raise DataError(f"{path}: filtered-code file not found; pass source= a parquet with a `text` column "
                        "(stage 1's filtering/kept.parquet)")
    try:
        from ..filtering.stage import FilterConfig, run_filtering
    except ImportError as exc:
        raise DataError(f"{path}: stage 1 has not run and phi1lib.filtering is unavailable ({exc}); "
                        "run stage 1 (filtering) first or pass source=") from exc
    run_filtering(FilterConfig.for_preset(config.preset), out_dir=path.parent)
    if not path.exists():
        raise DataError(f"{path}: stage 1 finished but wrote no kept.parquet")
    return path


def make_provider(config: SynthesisConfig, kind_units: dict | None = None):
    """The LLM-layer provider for `config` (the stand-in needs the extracted units)."""
    from ..llm import FunctionProvider, OpenAIProvider
    from .extractive import STAND_IN_NAME, ExtractiveStandIn

    if config.is_stand_in:
        units = [u for us in (kind_units or {}).values() for u in us]
        return FunctionProvider(ExtractiveStandIn(units), name=STAND_IN_NAME)
    return OpenAIProvider(config.model, base_url=config.base_url, api_key_env=config.api_key_env)


def _stored(out: Path, kinds) -> SynthesisResult | None:
    stored = runs.load_result(out)
    if stored and all(k in stored.get("counts", {}) for k in kinds):
        return SynthesisResult.from_dict(stored)
    return None


def run_synthesis(config: SynthesisConfig, out_dir=None, *, provider=None, ledger=None, prices=None,
                  force: bool = False, progress: bool = True) -> SynthesisResult:
    """Generate, check, deduplicate and store the configured kinds; a finished run is returned as stored.

    `provider` overrides the one built from the config (any LLM-layer provider). Requests go
    through an LLMClient whose store lives in the stage folder, so an interrupted run resumes
    without paying twice; the budget cap is enforced before each spend.
    """
    from . import generate as gen

    out = Path(out_dir) if out_dir is not None else runs.stage_dir("synthesis", preset=config.preset)
    out.mkdir(parents=True, exist_ok=True)
    if not force and (done := _stored(out, config.kinds)) is not None:
        return done
    previous = runs.load_result(out) or {}
    t0 = time.perf_counter()
    est = estimate_cost(config, prices)
    # Inside a run directory (<run>/synthesis) the stand-in reads <run>/filtering; elsewhere $PHI1_RUN_DIR's.
    root = out.parent if out.name == "synthesis" else None
    state = gen.generate_all(config, out, provider=provider, ledger=ledger, prices=prices, progress=progress,
                             root=root)
    # Rejected records of kinds not regenerated now are kept as they were.
    rejected_path = out / REJECTED_FILE
    others = [r for r in (read_jsonl(rejected_path) if rejected_path.exists() else [])
              if r.get("kind") not in config.kinds]
    write_jsonl(rejected_path, others + state["rejected"])
    files = dict(previous.get("files", {}))
    counts = dict(previous.get("counts", {}))
    reasons = dict(previous.get("reasons", {}))
    for kind in config.kinds:
        path = out / OUT_FILES[kind]
        write_jsonl(path, state["accepted"][kind])
        files[kind] = str(path)
        counts[kind] = state["counts"][kind]
        reasons[kind] = dict(collections.Counter(reason_category(r["reason"]) for r in state["rejected"]
                                                 if r["kind"] == kind))
    seconds = {**state["seconds"], "total": time.perf_counter() - t0}
    result = SynthesisResult(
        out_dir=str(out), files=files, rejected_path=str(rejected_path), counts=counts, reasons=reasons,
        checked=state["checked"], generator=state["generator"], stand_in=state["stand_in"],
        usage=state["usage"], seconds=seconds, estimate=est.to_dict() if est is not None else {},
        config=asdict(config),
    )
    runs.save_result(out, result.to_dict())
    return result


def reason_category(reason: str) -> str:
    """Collapse a rejection reason to its category ('sandbox failed', 'exact duplicate of ...' -> ...)."""
    return reason.split(":")[0].split(" (")[0].strip()
