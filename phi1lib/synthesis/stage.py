"""Stage 2: synthetic textbooks and exercises through the LLM layer, checked, deduplicated, stored.

    config = SynthesisConfig.for_preset("tiny")                 # counts from the preset's data plan
    est = synthesis.estimate(config, prices)                     # one llm line per kind
    res = synthesis.run(config, RunDir("runs/tiny"))             # SynthesisResult; files in runs/tiny/synthesis/

Prompts come from `prompts` (topic x audience x style; topic x function-name prefix).
Generation goes through `phi1lib.llm.LLMClient` (cache, resume, budget cap, ledger) with any
provider: an OpenAI-compatible endpoint, or offline the extractive STAND-IN of `extractive`,
which answers from stage 1's filtered code (filtering/kept.parquet) and is named wherever used.
Replies are parsed and checked (`quality`), exact/near duplicates removed (`dedup`: datatrove's MinHash
stages propose, the exact Jaccard decides; `dedup_executor`, `dedup_tasks`, `dedup_workers`), and the
stage folder gets textbooks.jsonl, exercises.jsonl, rejected.jsonl (with `reason`) and
result.json last.

Several kinds, one folder. Each kind is fingerprinted on its own (`kind_config`: the settings
that change that kind's records, plus the inputs), so `phi1 synth textbooks` then `phi1 synth
exercises` into one run folder keeps both. A requested kind stored with the same fingerprint
is reused, one stored with another fingerprint stops the run (StaleResult, `--force` redoes
it), a missing one is generated and merged in; kinds not requested are kept as they are. The
result's `fingerprint` combines every stored kind's, so it changes whenever one of them does.

Nothing is written as finished unless every request was answered: a request that failed for
good raises `llm.IncompleteRun` (rerunning retries exactly those). The budget cap is the run
folder's (`ledger.jsonl`): one cap per job, whichever command or process spends. Large jobs
split across processes with `shard=(i, n)` (`run_shard`, `phi1 synth --shard i/n`): each shard
answers every n-th prompt into its own store under `shards/`, and the plain run afterwards
merges those stores and sends only what is still missing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import budget, runs
from ..dataflow import EXECUTORS
from ..errors import ConfigError, DataError
from ..jsonl import read_jsonl, read_parquet, write_jsonl
from ..llm import FunctionProvider, LLMClient, OpenAIProvider, Request, failure_reasons, incomplete
from ..llm.store import ResultStore
from ..llm.tokens import TokenCounter
from ..presets import PRESET_NAMES, Hardware, Preset, get_preset
from ..budget.ledger import job_ledger
from ..runs import RunDir
from ..stage import (StageConfig, StageResult, StaleResult, Timer, common_fields, describe_change, other_preset,
                     other_preset_in_run, plan_defaults)
from .extractive import GENERATOR, MIN_RELEVANCE, STAND_IN_NAME, ExtractiveStandIn, Unit, extract_units
from .generate import TEXTBOOK_CHECK, GenerationOutcome, generate_all, kind_requests, shard_of
from .prompts import SynthPrompt, build_prompts, distinct_prompts, load_list

STAGE = "synthesis"
KINDS = ("textbook", "exercise")
PROVIDERS = ("extractive", "openai")
OUT_FILES = {"textbook": "textbooks.jsonl", "exercise": "exercises.jsonl"}
ITEMS = {"textbook": "textbooks", "exercise": "exercises"}  # plan line items (and the CLI's kind names)
REJECTED_FILE = "rejected.jsonl"
STORE_FILE = "llm_store.sqlite"  # the LLM client's answers: an interrupted run resumes without paying twice
SHARDS_DIR = "shards"  # shard runs' stores (llm_store.<i>-of-<n>.sqlite), merged by the plain run
ESTIMATE_SAMPLE = 2000  # prompts measured for the input-token estimate
STAND_IN_NOTE = ("extractive stand-in (not an LLM): textbook sections and exercises cut from stage 1's filtered code, "
                 "retrieved by topic (prompts with no matching code go unanswered)")
# Fields that only one kind reads: the other kind's records do not change with them.
KIND_FIELDS = {"textbook": ("n_textbooks", "max_tokens_textbook", "max_chars_textbook", "tokens_per_textbook",
                            "audiences_file", "styles_file"),
               "exercise": ("n_exercises", "max_tokens_exercise", "max_chars_exercise", "tokens_per_exercise",
                            "names_file", "sandbox", "sandbox_timeout_s", "require_doctests")}
_TINY = get_preset("tiny")


@dataclass
class SynthesisConfig(StageConfig):
    """What the synthesis stage generates and how; `SynthesisConfig.for_preset(name, **overrides)`."""

    STAGE: ClassVar[str] = STAGE
    # How the work runs or is priced, not what it makes: the records do not change with these. (Nor with
    # base_url: the same model behind another URL answers the same; the model name stays fingerprinted.)
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = (
        "preset", "base_url", "api_key_env", "workers", "concurrency", "rpm", "tpm", "batch", "cap_usd", "tokens_per_textbook",
        "tokens_per_exercise", "hardware",
        # where and how the dedup runs: the kept records are the same for any executor and number of tasks
        # (contiguous shards, the earliest record of each cluster kept), so these never force a redo
        "dedup_executor", "dedup_tasks", "dedup_workers", "dedup_dir", "dedup_cluster")

    preset: str = "tiny"  # preset the defaults came from (tiny | phi1-small | phi1)
    provider: str = "extractive"  # "extractive" (offline stand-in) or "openai" (any OpenAI-compatible endpoint)
    model: str = STAND_IN_NAME  # LLM model name (priced from the price books); "extractive" is the stand-in
    base_url: str | None = None  # OpenAI-compatible endpoint URL (vLLM, a local server); None = OpenAI
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the key (never stored); None: no auth
    kinds: tuple[str, ...] = KINDS  # record kinds to generate: textbook and/or exercise
    n_textbooks: int = _TINY.data.n_textbooks  # textbook sections requested (prompts); preset: data plan
    n_exercises: int = _TINY.data.n_exercises  # exercises requested (prompts); preset: data plan
    seed: int = 0  # prompt draw seed: same seed -> same prompts
    temperature: float = 1.0  # sampling temperature, >= 0 (diversity)
    max_tokens_textbook: int = 2048  # generation cap per textbook section (tokens)
    max_tokens_exercise: int = 512  # generation cap per exercise (tokens)
    tokens_per_textbook: float = _TINY.data.tokens_per_textbook  # expected tokens per section (estimate only)
    tokens_per_exercise: float = _TINY.data.tokens_per_exercise  # expected tokens per exercise (estimate only)
    min_chars: int = 120  # shortest accepted record (characters)
    max_chars_textbook: int = 20000  # longest accepted textbook section (characters)
    max_chars_exercise: int = 6000  # longest accepted exercise (characters)
    dedup_threshold: float = 0.85  # near-duplicate Jaccard threshold on word 5-grams, in (0, 1] (MinHash S-curve midpoint)
    dedup_executor: str = "local"  # datatrove executor of the dedup: local | slurm | ray
    dedup_tasks: int = 1  # shards of each kind's records per dedup stage (datatrove tasks)
    dedup_workers: int = 1  # local: dedup tasks at once (1: in this process, no process start-up)
    dedup_dir: str | None = None  # folder for datatrove's dedup files (shared by the nodes on slurm/ray); None = temporary
    dedup_cluster: dict = field(default_factory=dict)  # slurm/ray executor settings (partition, time, ...); in code only
    sandbox: bool = True  # run exercise doctests in phi1lib.sandbox (records say "not executed" when it cannot run)
    # reject an exercise without doctests: None = yes for an LLM (the prompt asks for them), no for the stand-in
    require_doctests: bool | None = None
    min_relevance: float = MIN_RELEVANCE  # stand-in: IDF-weighted share of a topic's words its code must contain
    sandbox_timeout_s: float = 5.0  # sandbox limit per exercise (seconds)
    workers: int = 2  # sandbox processes
    concurrency: int = 8  # parallel LLM requests
    rpm: float | None = None  # requests started per minute at most (the endpoint's limit); None = unlimited
    tpm: float | None = None  # tokens (prompt + max_tokens) per minute at most; None = unlimited
    batch: bool = False  # price as Batch API (50% off) where the provider supports it (estimate only)
    cap_usd: float | None = None  # the job's budget cap (USD), kept in the run folder's ledger; None = the stored one
    source: str | None = None  # stand-in input, a parquet with id and text; None = the run's filtering/kept.parquet
    topics_file: str = "synth_topics.txt"  # topic list (packaged name or path), both kinds
    audiences_file: str = "synth_audiences.txt"  # textbook audiences (packaged name or path)
    styles_file: str = "synth_styles.txt"  # textbook styles (packaged name or path)
    names_file: str = "synth_function_names.txt"  # exercise function-name prefixes (packaged name or path)
    hardware: Hardware = _TINY.hardware  # the preset's hardware: the plan defaults the estimate is priced with

    def validate(self) -> None:
        self.need(self.preset in PRESET_NAMES, "preset", f"one of {', '.join(PRESET_NAMES)}")
        self.need(self.provider in PROVIDERS, "provider", f"one of {', '.join(PROVIDERS)}")
        if self.provider == "extractive":
            self.need(self.model == STAND_IN_NAME, "model", f"{STAND_IN_NAME!r} with provider 'extractive' (the "
                      "offline stand-in); use provider 'openai' for a real model")
        else:
            self.need(bool(self.model) and self.model != STAND_IN_NAME, "model",
                      "an LLM model name with provider 'openai' (e.g. gpt-3.5-turbo, or your vLLM model)")
        self.need(self.api_key_env is None or bool(self.api_key_env), "api_key_env",
                  "the name of an environment variable, or none for a server without auth")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            self.need(value is None or value > 0, name, "a rate > 0 per minute, or none for no limit")
        self.need(bool(self.kinds) and all(k in KINDS for k in self.kinds) and len(set(self.kinds)) == len(self.kinds),
                  "kinds", f"one or more of {', '.join(KINDS)}, each once")
        self.need_ints("n_textbooks", "n_exercises", "min_chars", "seed", minimum=0)
        for kind in self.kinds if isinstance(self.kinds, tuple) else ():
            field_name = "n_textbooks" if kind == "textbook" else "n_exercises"
            self.need(getattr(self, field_name) >= 1, field_name, f"a number of {ITEMS.get(kind, kind)} >= 1")
        self.need_ints("max_tokens_textbook", "max_tokens_exercise", "max_chars_textbook", "max_chars_exercise",
                       "workers", "concurrency")
        self.need(self.temperature >= 0, "temperature", "a number >= 0")
        self.need(self.tokens_per_textbook > 0, "tokens_per_textbook", "a number of tokens > 0")
        self.need(self.tokens_per_exercise > 0, "tokens_per_exercise", "a number of tokens > 0")
        self.need(0.0 < self.dedup_threshold <= 1.0, "dedup_threshold", "a Jaccard similarity in (0, 1]")
        self.need(self.dedup_executor in EXECUTORS, "dedup_executor", f"one of {', '.join(EXECUTORS)}")
        self.need_ints("dedup_tasks", "dedup_workers")
        self.need(self.dedup_executor == "local" or bool(self.dedup_dir), "dedup_dir",
                  f"a folder every {self.dedup_executor} node can read and write (dedup_executor="
                  f"{self.dedup_executor}); a temporary folder is only for dedup_executor=local")
        self.need(self.dedup_executor != "local" or not self.dedup_cluster, "dedup_cluster",
                  "no settings with dedup_executor=local (they are for slurm or ray)")
        self.need(self.sandbox_timeout_s > 0, "sandbox_timeout_s", "seconds > 0")
        self.need(0.0 < self.min_relevance <= 1.0, "min_relevance", "a share of the topic's words in (0, 1]")
        self.need(self.cap_usd is None or self.cap_usd >= 0, "cap_usd", "USD >= 0, or none for no cap")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        """Counts and tokens per record from the preset's data plan; the stand-in offline, else the preset's LLM."""
        d = p.data
        kw: dict[str, Any] = dict(preset=p.name, n_textbooks=d.n_textbooks, n_exercises=d.n_exercises,
                                  tokens_per_textbook=d.tokens_per_textbook, tokens_per_exercise=d.tokens_per_exercise,
                                  hardware=p.hardware)
        if p.synthesizer != STAND_IN_NAME:
            kw.update(provider="openai", model=p.synthesizer, workers=16, concurrency=64)
        return kw

    @property
    def is_stand_in(self) -> bool:
        return self.provider == "extractive"

    def n_for(self, kind: str) -> int:
        return self.n_textbooks if kind == "textbook" else self.n_exercises

    def max_tokens_for(self, kind: str) -> int:
        return self.max_tokens_textbook if kind == "textbook" else self.max_tokens_exercise

    def tokens_for(self, kind: str) -> float:
        """Expected generated tokens per record of `kind` (the estimate's output tokens per sample)."""
        return self.tokens_per_textbook if kind == "textbook" else self.tokens_per_exercise

    def prompts(self, kind: str, n: int | None = None) -> list[SynthPrompt]:
        """The first `n` (default: all configured) prompts of `kind`, drawn with the config's seed."""
        n = self.n_for(kind) if n is None else min(n, self.n_for(kind))
        topics = load_list(self.topics_file)
        if kind == "textbook":
            return build_prompts(kind, n, self.seed, topics=topics,
                                 audiences=load_list(self.audiences_file), styles=load_list(self.styles_file))
        return build_prompts(kind, n, self.seed, topics=topics, name_prefixes=load_list(self.names_file))


def kind_config(config: SynthesisConfig, kind: str) -> SynthesisConfig:
    """The config as one kind sees it: kinds=(kind,), the other kind's own fields at their defaults
    (they do not change this kind's records). Its fingerprint is that kind's fingerprint."""
    defaults = {f.name: f.default for f in fields(SynthesisConfig)}
    others = {name: defaults[name] for k, names in KIND_FIELDS.items() if k != kind for name in names}
    return replace(config, kinds=(kind,), **others)


# ---- the estimate -------------------------------------------------------------------------------

def prompt_tokens_per_sample(config: SynthesisConfig, kind: str) -> float:
    """Mean prompt tokens of `kind`, measured on the first ESTIMATE_SAMPLE real prompts (`budget.measured_prompt_tokens`,
    the same counting as the annotation estimate)."""
    return _prompt_token_sample(config, kind)[0]


def _prompt_token_sample(config: SynthesisConfig, kind: str) -> tuple[float, str]:
    sample = config.prompts(kind, ESTIMATE_SAMPLE)
    reqs = [Request(messages=list(p.messages)) for p in sample]
    mean, counted, method = budget.measured_prompt_tokens(reqs, TokenCounter(config.model))
    return mean, f"{counted} real {kind} prompts counted by {method}"


def distinct_prompt_count(config: SynthesisConfig, kind: str) -> int:
    """How many distinct prompt texts the config's `kind` requests have (prompts.distinct_prompts over its lists)."""
    axes = ([config.topics_file, config.audiences_file, config.styles_file] if kind == "textbook"
            else [config.topics_file, config.names_file])
    return distinct_prompts(config.n_for(kind), *(load_list(a) for a in axes))


def budget_lines(config: SynthesisConfig) -> list[dict[str, Any]]:
    """One llm line per requested kind: samples = records requested, tokens per sample measured and planned."""
    lines = []
    for kind in config.kinds:
        tokens_in, how = _prompt_token_sample(config, kind)
        distinct = distinct_prompt_count(config, kind)
        line = dict(stage=STAGE, item=ITEMS[kind], kind="llm", model=config.model,
                    samples=float(config.n_for(kind)), in_per_sample=tokens_in,
                    out_per_sample=float(config.tokens_for(kind)),
                    note=f"{config.n_for(kind):,} {kind} prompts ({distinct:,} distinct) x {config.model}; "
                         f"prompt tokens measured: {how}; "
                         f"{config.tokens_for(kind):g} tokens per {kind} (the config's plan)")
        if config.is_stand_in:  # a local function, not an API: its time is the stage's measured time per prompt
            tp = budget.load_throughput()
            line["tokens_per_minute"] = (tokens_in + config.tokens_for(kind)) * 60 / tp.extractive_seconds_per_request
            line["note"] += (f"; wall time at the stand-in's measured {tp.extractive_seconds_per_request:.3f} s per "
                             f"prompt (whole stage: extract, checks, sandbox, dedup), {tp.source()}")
        lines.append(line)
    return lines


def estimate(config: SynthesisConfig, prices: budget.PriceBook | None = None) -> budget.StageEstimate:
    return budget.price_lines(STAGE, budget_lines(config), plan_defaults(config.hardware, batch=config.batch), prices)


# ---- the result ---------------------------------------------------------------------------------

@dataclass(kw_only=True)
class SynthesisResult(StageResult):
    """The stage folder: files = kind -> accepted JSONL, for every kind stored there (this run's or earlier)."""

    rejected_path: str  # rejected.jsonl: every rejected record with its `reason`
    counts: dict[str, dict[str, int]]  # kind -> requested / no_source / generated / ... / duplicates / accepted
    reasons: dict[str, dict[str, int]]  # kind -> rejection reason category -> count
    checked: str  # what was checked over the accepted exercises, e.g. "380 not executed (no doctests); 12 sandbox: ..."
    generator: str  # "extractive-stand-in" or the model name (the latest generation)
    made: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {fingerprint, settings, inputs,
    #                                                                 generator, checked} it was made with

    def counts_table(self):
        """Per kind: who generated it, then requested -> generated -> rejected by each check -> accepted, and of
        the accepted exercises how many ran in the sandbox (executed) or not (a DataFrame)."""
        import pandas as pd

        cols = ["requested", "no_source", "generated", "llm_errors", "failed_checks", "sandbox_runs",
                "failed_sandbox", "duplicates", "accepted", "executed", "not_executed"]
        df = pd.DataFrame(self.counts).T
        df = df[[c for c in cols if c in df.columns]].fillna(0).astype(int)
        df.insert(0, "generator", [(self.made.get(k) or {}).get("generator", self.generator) for k in df.index])
        return df

    def records(self, kind: str) -> list[dict]:
        return read_jsonl(self.files[kind])

    def rejected_table(self):
        """Rejected records per kind and reason category (`reason_category`), most frequent first, with
        one full reason as an example (a DataFrame indexed by kind, category)."""
        import pandas as pd

        df = pd.DataFrame(self.rejected(), columns=["kind", "reason"])
        df["category"] = df["reason"].map(reason_category)
        table = df.groupby(["kind", "category"]).agg(records=("reason", "size"), example=("reason", "first"))
        return table.sort_values(["kind", "records"], ascending=[True, False])

    def rejected(self) -> list[dict]:
        p = Path(self.rejected_path)
        return read_jsonl(p) if p.exists() else []


def reason_category(reason: str) -> str:
    """Collapse a rejection reason to its category: 'sandbox failed: ...' -> 'sandbox failed', 'near duplicate of
    exercise-ab12 (Jaccard ...)' -> 'near duplicate', 'code block 1 does not parse' -> 'code block does not parse',
    "function 'f' has no docstring ..." -> 'function has no docstring ...'."""
    head = reason.split(":")[0].split(" (")[0].strip()
    head = re.sub(r" of \S+$", "", head)  # the record it duplicates
    head = re.sub(r"'[^']*' |\b\d+ ", "", head)  # a function's name, a block's number
    return head


# ---- inputs and the stored-result rule, per kind --------------------------------------------------

def source_path(config: SynthesisConfig, run_dir: RunDir) -> Path:
    """The stand-in's input: `config.source`, else the run's filtering/kept.parquet (DataError naming
    the filtering stage when it has not run; this stage never runs it)."""
    if config.source is None:
        return run_dir.input("filtering", "kept.parquet")
    path = Path(config.source).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: filtered-code file not found; give a parquet with `id` and `text` columns as "
                        "source (--source; stage 1's filtering/kept.parquet)")
    return path


def kind_records(config: SynthesisConfig, root: Path, inputs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """kind -> {fingerprint, settings, inputs} for every requested kind (StageConfig.fingerprint of kind_config)."""
    out = {}
    for kind in config.kinds:
        view = kind_config(config, kind)
        out[kind] = {"fingerprint": view.fingerprint(root, inputs), "settings": view.fingerprint_dict(root),
                     "inputs": dict(inputs)}
    return out


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """stage.describe_change for one kind's stored record ({fingerprint, settings, inputs})."""
    before = (old.get("settings") or {}) if old.get("fingerprint") else None
    return describe_change(before, new["settings"], old.get("inputs") or {}, new["inputs"])


def kinds_to_make(stored: dict[str, Any], wanted: dict[str, dict[str, Any]], out: Path, force: bool,
                  config: SynthesisConfig | None = None) -> list[str]:
    """The requested kinds to generate now: all with `force`, else those the folder lacks. A requested
    kind stored with another fingerprint, a folder made by another preset than `config`'s, or (for a new
    result) a run folder whose other stages hold another preset's results, is a StaleResult naming the
    kind (or the presets) and what changed."""
    if force:
        return list(wanted)
    if stored and config is not None and (other := other_preset(stored, config)) is not None:
        raise StaleResult(f"{STAGE}: {out} {other}; pass --force to redo it with this preset "
                          f"(or use another run folder, --out)")
    if not stored and config is not None and (other := other_preset_in_run(out.parent, config)) is not None:
        raise StaleResult(f"{STAGE}: {out.parent} {other}; a run folder holds one preset (use another run "
                          f"folder, --out, or pass --force to mix them anyway)")
    have = stored.get("made") or {kind: {} for kind in stored.get("counts", {})}  # older results: no fingerprints
    stale = [f"{ITEMS[kind]} made {_changed(have[kind], new)}" for kind, new in wanted.items()
             if kind in have and have[kind].get("fingerprint") != new["fingerprint"]]
    if stale:
        raise StaleResult(f"{STAGE}: {out} holds {'; and '.join(stale)}; pass --force to redo them "
                          f"(or use another run folder, --out)")
    return [kind for kind in wanted if kind not in have]


def combined_fingerprint(made: dict[str, dict[str, Any]]) -> str:
    """The folder's fingerprint: one hash of every stored kind's fingerprint (changes when any of them does)."""
    doc = {"stage": STAGE, "kinds": {kind: made[kind].get("fingerprint", "") for kind in sorted(made)}}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


# ---- the steps ----------------------------------------------------------------------------------

def load_units(path: Path) -> dict[str, list[Unit]]:
    """The stand-in's source: documented functions of stage 1's kept code, grouped by kind."""
    import pyarrow as pa

    table = read_parquet(path, ["id", "text"], what="filtered code (stage 1's kept.parquet: id, text)")
    if not (pa.types.is_string(table.schema.field("text").type) or pa.types.is_large_string(table.schema.field("text").type)):
        raise DataError(f"{path}: column text holds {table.schema.field('text').type}, not strings; expected stage "
                        "1's kept.parquet (id, text: the code)")
    df = table.to_pandas()
    return extract_units(zip(df["id"].astype(str), df["text"].astype(str)))


def make_provider(config: SynthesisConfig, units_by_kind: dict[str, list[Unit]] | None = None):
    """The LLM-layer provider for `config` (the stand-in answers from the extracted units)."""
    if config.is_stand_in:
        units = [u for us in (units_by_kind or {}).values() for u in us]
        return FunctionProvider(ExtractiveStandIn(units), name=STAND_IN_NAME)
    return OpenAIProvider(config.model, base_url=config.base_url, api_key_env=config.api_key_env)


def write_outputs(out: Path, stored: dict[str, Any], outcome: GenerationOutcome) -> tuple[dict, dict, dict]:
    """Write the generated kinds' JSONL and rejected.jsonl (rejected records of other kinds kept as they were);
    (files, counts, reasons) of every kind in the folder."""
    rejected_path = out / REJECTED_FILE
    others = [r for r in (read_jsonl(rejected_path) if rejected_path.exists() else [])
              if r.get("kind") not in outcome.kinds]
    write_jsonl(rejected_path, others + outcome.rejected)
    files, counts, reasons = (dict(stored.get(k) or {}) for k in ("files", "counts", "reasons"))
    for kind in outcome.kinds:
        path = out / OUT_FILES[kind]
        write_jsonl(path, outcome.accepted[kind])
        files[kind] = str(path)
        counts[kind] = outcome.counts[kind]
        reasons[kind] = dict(collections.Counter(reason_category(r["reason"]) for r in outcome.rejected
                                                 if r["kind"] == kind))
    return files, counts, reasons


def make_client(config: SynthesisConfig, provider, store: Path, ledger: budget.Ledger,
                prices: budget.PriceBook | None, progress: bool) -> LLMClient:
    """The stage's LLM client: the job's ledger holds the cap; concurrency and rate limits from the config."""
    return LLMClient(provider, store=store, ledger=ledger, concurrency=config.concurrency, rpm=config.rpm,
                     tpm=config.tpm, prices=prices, stage=STAGE, progress=progress)


def merge_shards(out: Path, store: ResultStore) -> int:
    """Copy the answers of every shard store under OUT/synthesis/shards/ into the stage's store."""
    folder = out / SHARDS_DIR
    return sum(store.import_answers(p) for p in sorted(folder.glob("*.sqlite"))) if folder.is_dir() else 0


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n (ConfigError naming --shard otherwise)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/4 (the first of four)")
    return i, n


def run_shard(config: SynthesisConfig, run_dir: RunDir, shard: tuple[int, int], *, ledger: budget.Ledger | None = None,
              prices: budget.PriceBook | None = None, progress: bool = True, provider=None) -> dict[str, Any]:
    """Answer shard i of n (every n-th prompt of each kind) into OUT/synthesis/shards/llm_store.<i>-of-<n>.sqlite.

    Writes no records and no result: run the stage without a shard afterwards to merge every shard's
    answers (nothing is paid again). The cap is the run folder's ledger, shared by the shard processes.
    Raises IncompleteRun when a request failed for good (rerun the same shard)."""
    i, n = shard
    out = run_dir.stage(STAGE)
    source = source_path(config, run_dir) if config.is_stand_in and provider is None else None
    units = load_units(source) if source is not None else None
    provider = provider or make_provider(config, units)
    store = out / SHARDS_DIR / f"llm_store.{i}-of-{n}.sqlite"
    ledger = job_ledger(run_dir.ledger_path, ledger, config.cap_usd)
    client = make_client(config, provider, store, ledger, prices, progress)
    if (out / STORE_FILE).exists():  # answers the plain run already has are not asked for again
        client.store.import_answers(out / STORE_FILE)
    sent, failed, usd = 0, [], 0.0
    for kind in config.kinds:
        kind_units = units.get(kind, []) if units is not None else None
        reqs = shard_of(kind_requests(config, kind, kind_units)[0], shard)
        results = client.generate(reqs, desc=f"synthesis shard {i}/{n}: {kind}s") if reqs else []
        sent += len(results)
        failed += [r for r in results if not r.ok]
        usd += sum(r.usd for r in results)
    if failed:
        raise incomplete(f"{STAGE} shard {i}/{n}", len(failed), sent, failure_reasons(failed), store)
    return {"shard": f"{i}/{n}", "requests": sent, "store": str(store), "usd": usd}


def run(config: SynthesisConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True,
        provider=None) -> SynthesisResult:
    """Generate, check, deduplicate and store the requested kinds; kinds already stored with the same
    fingerprint are reused, other kinds in the folder are kept (see the module docstring).

    `provider` replaces the one built from the config (any LLM-layer provider; its cache id is
    then an input). Requests go through an LLMClient whose store lives in the stage folder, so an
    interrupted run resumes without paying twice; the budget cap is checked before each spend and
    spend is recorded in `ledger` by the client (default: the run folder's, which keeps the job's cap).
    Raises llm.IncompleteRun, writing nothing as finished, when a request failed for good.
    """
    out = run_dir.stage(STAGE)
    source = source_path(config, run_dir) if config.is_stand_in and provider is None else None
    inputs = {"source": runs.identity(source)} if source is not None else {}
    if provider is not None:
        inputs["provider"] = provider.cache_id
    stored = runs.load_result(out) or {}
    wanted = kind_records(config, run_dir.root, inputs)
    todo = kinds_to_make(stored, wanted, out, force, config)
    if not todo:
        return SynthesisResult.from_stored(stored)
    est = estimate(config, prices)
    t = Timer()
    with t("extract"):
        units = load_units(source) if source is not None else None
    provider = provider or make_provider(config, units)
    generator = GENERATOR if units is not None else getattr(provider, "model", config.model)
    ledger = job_ledger(run_dir.ledger_path, ledger, config.cap_usd)
    client = make_client(config, provider, out / STORE_FILE, ledger, prices, progress)
    merge_shards(out, client.store)
    outcome = generate_all(config, client, kinds=todo, units_by_kind=units, generator=generator)
    if outcome.failed:
        raise incomplete(STAGE, len(outcome.failed), outcome.sent, failure_reasons(outcome.failed), client.store.path)
    t.seconds.update(outcome.seconds)
    with t("write"):
        files, counts, reasons = write_outputs(out, stored, outcome)
    checked_now = {kind: outcome.checked if kind == "exercise" else TEXTBOOK_CHECK for kind in todo}
    made = {**(stored.get("made") or {k: {} for k in stored.get("counts", {})}),
            **{kind: {**wanted[kind], "generator": generator, "checked": checked_now[kind]} for kind in todo}}
    usage = replace(outcome.usage, cpu_s=t.cpu_s, wall_s=t.wall_s)
    metrics = {"accepted": {k: c["accepted"] for k, c in counts.items()}, "generated_now": list(todo),
               "cached": outcome.cached, "rejected": sum(sum(r.values()) for r in reasons.values())}
    stand_in = STAND_IN_NOTE if any(m.get("generator") == GENERATOR for m in made.values()) else None
    return SynthesisResult(
        **{**common_fields(config, out, run_dir, inputs, est), "fingerprint": combined_fingerprint(made)},
        files=files, metrics=metrics, usage=usage, seconds=t.finish(), stand_in=stand_in,
        rejected_path=str(out / REJECTED_FILE), counts=counts, reasons=reasons,
        checked=(made.get("exercise") or {}).get("checked") or outcome.checked,
        generator=generator, made=made).save()
