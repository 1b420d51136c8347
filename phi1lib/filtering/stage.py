"""Stage 1, filtering: annotate a subset, learn the labels from embeddings, score and threshold the whole pool.

paper §2.1: GPT-4 rates ~100k samples for educational value, a random forest on a pretrained
code model's output embeddings learns the rating, the rest of the 35B-token pool is scored and
~6B tokens are kept. Here:

    config = FilterConfig.for_preset("tiny")            # preset resolved once, overrides checked
    est = estimate(config, prices)                       # annotation tokens + embedding FLOPs + forest CPU
    res = run(config, RunDir.for_preset("tiny"))         # FilterResult; reused only if config and corpus match

`run` streams the pool into JSONL shards (OUT/filtering/shards/), annotates a seeded random subset, embeds
each labelled sample's view (filtering.view: past its licence header), chooses the classifier (the paper's
random forest or a logistic regression) by cross-validation on the training split, compares the candidates
with cheap baselines on the held-out split and on hand-written snippets (filtering.heldout); then scores the
whole pool and splits it at a threshold chosen over all the scores through datatrove pipelines
(filtering.scoring: `tasks` tasks on the local, Slurm or Ray executor; OUT/filtering/dataflow/), and writes
OUT/filtering/{pool,kept,dropped,labels,examples,heldout}.parquet, classifier.joblib, metrics.json,
annotations.sqlite (the annotator's answers) and result.json last.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import budget, llm, runs
from ..embed import MINILM_LOCAL, POOLINGS, Embedder
from ..errors import ConfigError, DataError
from ..paths import atomic_path
from ..presets import PRESET_NAMES, Hardware, ModelSpec, Preset, get_preset
from ..budget.ledger import job_ledger
from ..llm.tokens import TokenCounter
from ..runs import RunDir
from ..stage import StageConfig, StageResult, Timer, Usage, common_fields, load_stored, plan_defaults
from .annotate import HEURISTIC, STAND_IN_NAME, STAND_IN_NOTE, AnnotationStats, annotate, build_prompt, \
    heuristic_score, label_from_rating, make_client, prompt_template
from .classifier import CLASSIFIERS, METRIC_NAMES, evaluate_models, save_classifier, select_classifier, \
    train_classifier
from ..dataflow import EXECUTORS, check_available
from .corpus import DEFAULT_MAX_BYTES, GRANULARITIES, HUB_SOURCES, CorpusStats, PoolShards, iter_corpus, load_corpus, \
    write_shards
from .heldout import heldout_report, load_snippets
from .scoring import OUT_COLUMNS, STAGE, Dataflow, choose_threshold, examples_frame, file_digest, merge_outputs, \
    pool_scores, scoring_blocks, split_blocks
from .view import VIEWS, sample_view

CLASSIFY_SECONDS_PER_SAMPLE = 1e-4  # random forest over an embedding, per sample per core (estimate)
ANNOTATE_ESTIMATE_SAMPLE = 200  # real corpus samples rendered into the annotation prompt and counted (estimate)
_LEXICAL = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Lexical tokens (identifiers, numbers, punctuation): fast on 35 GB, and tokenizer-independent,
    since the training tokenizer is trained after this stage. BPE counts run ~1.2-1.5x higher."""
    return len(_LEXICAL.findall(text))


@dataclass
class FilterConfig(StageConfig):
    """Everything the filtering stage needs; `FilterConfig.for_preset(name, **overrides)` fills it from a preset.

    An explicit `threshold` given to `for_preset` without `keep_fraction` replaces the preset's kept share.
    """

    STAGE: ClassVar[str] = STAGE
    # How the work runs, and planning numbers only the estimate reads: they do not change the result.
    # (base_url does not either: the annotator's model name, which does, stays fingerprinted. And
    # annotate_tokens_out does: it also caps the annotator's answer.) The datatrove settings (executor, tasks,
    # workers, cluster, shard_samples) only split the same per-sample scoring over processes and machines, and the
    # threshold is chosen over all scores at once, so they keep a stored result: a 2-task run keeps what a 1-task
    # run keeps (tests/test_filtering_dataflow.py).
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = (
        "annotate_tokens_in", "tokens_per_sample", "hardware",
        "num_proc", "device", "batch_size", "score_batch_size", "cap_usd", "base_url", "api_key_env", "concurrency",
        "rpm", "tpm", "executor", "tasks", "workers", "cluster", "shard_samples", "embed_cache")

    preset: str = "tiny"  # preset name the defaults come from
    corpus: str = "installed"  # "installed", "the-stack-python", "stackoverflow", "hub:<id|folder>", folder, .jsonl/.parquet
    corpus_samples: int = 3000  # samples read into the candidate pool
    granularity: str = "file"  # "file" or "function" (top-level defs and classes)
    max_file_bytes: int = DEFAULT_MAX_BYTES  # bytes; larger files are skipped as "huge"
    text_field: str | None = None  # column holding the text in tables / hub sets (None: reader default)
    seed: int = 0  # corpus sampling, annotation subset, train/test split, forest
    annotator: str = HEURISTIC  # "heuristic" (offline stand-in) or an LLM model name
    annotate_samples: int = 600  # samples sent to the annotator (at most corpus_samples)
    annotate_max_chars: int = 2000  # characters of code shown to the annotator
    annotate_tokens_in: int = 400  # planned prompt tokens per sample (estimate only)
    annotate_tokens_out: int = 10  # planned answer tokens per sample; also caps the answer (at least 8 tokens)
    max_retries: int = 1  # re-asks for an unparseable answer before it is dropped
    positive_min: int = 4  # rating (1-5) from which a sample counts as educational
    base_url: str | None = None  # OpenAI-compatible endpoint (vLLM, ...) for the LLM annotator
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the annotator's key; None: no auth
    concurrency: int = 8  # annotation requests in flight at once
    rpm: float | None = None  # annotation requests started per minute at most; None = unlimited
    tpm: float | None = None  # annotation tokens (prompt + max_tokens) per minute at most; None = unlimited
    cap_usd: float | None = None  # the job's budget cap (USD), kept in the run folder's ledger; None = the stored one
    embedder: str = MINILM_LOCAL  # hub id or local folder of a transformers model, or "minilm-local"
    view: str = "outline"  # what of each sample is embedded: "head" (as is), "body" (no licence header), "outline"
    pooling: str = "mean"  # "mean", "last" (decoder models) or "cls"
    max_length: int = 64  # tokens per sample fed to the embedder
    batch_size: int = 32  # texts per forward pass
    device: str = "cpu"  # torch device for the embedder ("cuda" on GPU presets)
    classifier: str = "auto"  # "auto" (best cross-validated ROC-AUC on the training split), "random_forest", "logreg"
    n_estimators: int = 200  # trees in the random forest
    min_samples_leaf: int = 1  # forest regularisation (samples per leaf)
    test_fraction: float = 0.25  # held-out share of the labelled samples, in [0.05, 0.5]
    threshold: float | None = None  # keep score >= threshold (probability in [0, 1]); overrides keep_fraction
    keep_fraction: float | None = 1 / 3  # else keep this share of the pool (highest scores), in (0, 1]
    executor: str = "local"  # datatrove executor scoring the pool: "local" (this machine), "slurm" or "ray"
    tasks: int = 2  # datatrove tasks the pool's shards are split over (each its own process, and GPU when "cuda")
    workers: int | None = None  # local executor: tasks run at once (None: all tasks, at most this machine's cores)
    cluster: dict[str, Any] = field(default_factory=dict)  # Slurm/Ray executor settings (partition, time, ...)
    shard_samples: int = 10_000  # samples per pool shard at most (a task reads whole shards; at least `tasks` shards)
    embed_cache: bool = True  # reuse vectors from the user cache across runs; off at scale (each task loads it all)
    num_proc: int | None = None  # the old name of `workers` (used when workers is unset)
    score_batch_size: int = 256  # samples embedded and scored at once per task
    n_examples: int = 5  # highest- and lowest-scored samples shown side by side
    tokens_per_sample: float = 1000.0  # planned mean tokens of one corpus sample (estimate only)
    hardware: Hardware = get_preset("tiny").hardware  # what the embedding pass is priced on (estimate only)

    def __post_init__(self) -> None:
        if isinstance(self.hardware, dict):  # a config read back from JSON
            self.hardware = Hardware(**self.hardware)
        super().__post_init__()

    def validate(self) -> None:
        self.need(self.preset in PRESET_NAMES, "preset", f"one of {', '.join(PRESET_NAMES)}")
        self.need(bool(self.corpus.strip()), "corpus", "a corpus name, folder or file")
        self.need_ints("corpus_samples", "annotate_samples", "annotate_max_chars", "max_length", "batch_size",
                       "n_estimators", "min_samples_leaf", "score_batch_size", "max_file_bytes", "tasks",
                       "shard_samples")
        for name in ("workers", "num_proc"):
            self.need(getattr(self, name) is None or getattr(self, name) >= 1, name,
                      "an integer >= 1 (tasks at once), or none for all tasks")
        self.need(self.executor in EXECUTORS, "executor", f"one of {', '.join(EXECUTORS)}")
        self.need(self.executor != "local" or not self.cluster, "cluster",
                  "no settings with executor=local (they are for slurm or ray)")
        self.need_ints("seed", "annotate_tokens_in", "annotate_tokens_out", "max_retries", "n_examples", minimum=0)
        # No silent clamping: the annotated subset is drawn from the pool, so it cannot be larger.
        self.need(self.annotate_samples <= self.corpus_samples, "annotate_samples",
                  f"at most the corpus samples ({self.corpus_samples}): the annotated subset is drawn from the pool")
        self.need(self.granularity in GRANULARITIES, "granularity", f"one of {', '.join(GRANULARITIES)}")
        self.need(self.pooling in POOLINGS, "pooling", f"one of {', '.join(POOLINGS)}")
        self.need(self.view in VIEWS, "view", f"one of {', '.join(VIEWS)}")
        self.need(self.classifier in CLASSIFIERS, "classifier", f"one of {', '.join(CLASSIFIERS)}")
        self.need(1 <= self.positive_min <= 5, "positive_min", "a rating in 1..5")
        self.need(0.05 <= self.test_fraction <= 0.5, "test_fraction", "a share in [0.05, 0.5]")
        if self.threshold is None and self.keep_fraction is None:
            raise self.bad("keep_fraction", "a share in (0, 1] (or set threshold, a score in [0, 1])")
        if self.threshold is not None:
            self.need(0.0 <= self.threshold <= 1.0, "threshold", "a score in [0, 1] (scores are probabilities)")
        if self.keep_fraction is not None:
            self.need(0.0 < self.keep_fraction <= 1.0, "keep_fraction", "a share in (0, 1]")
        if self.cap_usd is not None:
            self.need(self.cap_usd >= 0, "cap_usd", "USD >= 0")
        self.need_ints("concurrency")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            self.need(value is None or value > 0, name, "a rate > 0 per minute, or none for no limit")
        self.need(self.api_key_env is None or bool(self.api_key_env), "api_key_env",
                  "the name of an environment variable, or none for a server without auth")
        self.need(self.tokens_per_sample > 0, "tokens_per_sample", "tokens > 0")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        gpu = p.hardware.gpu != "cpu"
        return dict(
            preset=p.name, corpus="installed" if p.offline else "the-stack-python",
            corpus_samples=p.data.corpus_samples, annotator=p.annotator, annotate_samples=p.data.annotate_samples,
            annotate_tokens_in=p.data.annotate_tokens_in, annotate_tokens_out=p.data.annotate_tokens_out,
            embedder=p.embedder, max_length=p.data.embed_max_length, batch_size=64 if gpu else 32,
            device="cuda" if gpu else "cpu", tasks=max(2, p.hardware.n_gpus) if gpu else 2,
            # The paper kept ~6B of ~35B tokens; each preset's plan says how much it keeps.
            keep_fraction=min(1.0, p.data.filtered_tokens / p.data.corpus_tokens),
            tokens_per_sample=float(p.data.tokens_per_sample), hardware=p.hardware)

    @classmethod
    def for_preset(cls, preset: str | Preset = "tiny", **overrides: Any) -> "FilterConfig":
        """The preset's values, then `overrides`; a `threshold` without `keep_fraction` replaces the preset's share."""
        if overrides.get("threshold") is not None and "keep_fraction" not in overrides:
            overrides["keep_fraction"] = None
        return super().for_preset(preset, **overrides)


# ---- the estimate --------------------------------------------------------------------------------

def _folder_spec(model: str) -> ModelSpec | None:
    """The shape in a local model folder's config.json (None when there is none to read)."""
    cfg = Path(model).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    c = json.loads(cfg.read_text(encoding="utf-8"))
    d = c.get("hidden_size") or c.get("n_embd") or c.get("d_model")
    n_layer = c.get("num_hidden_layers") or c.get("n_layer")
    if not (d and n_layer):
        return None
    n_ctx = c.get("max_position_embeddings") or c.get("n_positions") or c.get("n_ctx") or 0
    return ModelSpec(n_layer=n_layer, d_model=d, d_mlp=c.get("intermediate_size") or c.get("n_inner") or 4 * d,
                     n_head=c.get("num_attention_heads") or c.get("n_head") or 1, rotary_dim=0, n_ctx=int(n_ctx),
                     vocab_size=c.get("vocab_size") or 0)


def embedder_spec(model: str) -> ModelSpec:
    """The embedder's shape for the estimate, without a download: a known embedder (the budget's table),
    else the shape in a local folder's config.json."""
    if model in budget.EXTRA_MODELS:
        return budget.EXTRA_MODELS[model]
    spec = _folder_spec(model)
    if spec is None:
        raise ConfigError(f"embedder={model!r}: its shape is unknown for the estimate; use a local folder with a "
                          f"config.json or one of {sorted(budget.EXTRA_MODELS)}")
    return spec


def embed_flops_per_token(model: str, seq_len: float) -> float:
    """Forward FLOPs per embedded token (`budget.embed_flops_per_token`) of the embedder's shape. The
    embedding table is a lookup and the LM head is never run, so neither counts."""
    return budget.embed_flops_per_token(embedder_spec(model), int(round(seq_len)))


def embed_tokens_per_sample(config: FilterConfig) -> float:
    """Tokens of each sample the embedder reads: its head, up to max_length and the embedder's context."""
    n_ctx = embedder_spec(config.embedder).n_ctx or config.max_length
    return min(config.max_length, n_ctx, config.tokens_per_sample)


@functools.lru_cache(maxsize=16)
def _annotate_prompt_sample(corpus: str, granularity: str, max_file_bytes: int, text_field: str | None, seed: int,
                            max_chars: int, annotator: str, n: int) -> tuple[float, int, str]:
    """(mean prompt tokens, samples counted, how) of the real annotation prompt over `n` real corpus samples.
    A hub corpus is not read for an estimate (no download): this machine's Python stands in, and the note says so."""
    hub = corpus in HUB_SOURCES or corpus.startswith("hub:")
    samples = load_corpus("installed" if hub else corpus, n, seed=seed, granularity=granularity,
                          max_bytes=max_file_bytes, text_field=text_field)
    template = prompt_template()
    reqs = [llm.Request(messages=[{"role": "user", "content": build_prompt(s["text"], max_chars, template)}])
            for s in samples]
    mean, counted, method = budget.measured_prompt_tokens(reqs, TokenCounter(annotator))
    where = f"this machine's installed Python standing in for {corpus} (not downloaded for an estimate)" if hub \
        else f"corpus {corpus}"
    return mean, counted, f"{counted} samples of {where}, code cut at {max_chars} chars; counted by {method}"


def annotate_prompt_tokens(config: FilterConfig) -> tuple[float, str]:
    """Mean input tokens of one annotation request: the real prompt template rendered over real corpus samples
    (the head `annotate_max_chars` of each) and tokenized (see `budget.measured_prompt_tokens`); with how."""
    n = min(ANNOTATE_ESTIMATE_SAMPLE, config.annotate_samples)
    if n == 0:
        return 0.0, "no samples annotated"
    mean, _, how = _annotate_prompt_sample(config.corpus, config.granularity, config.max_file_bytes,
                                           config.text_field, config.seed, config.annotate_max_chars,
                                           config.annotator, n)
    return mean, how




def _embed_line(config: FilterConfig, seq_len: int, tokens: float, counted: tuple[int, int] | None = None,
                n_pool: int | None = None, par: dict[str, int] | None = None) -> dict[str, Any]:
    """One embedding forward pass per pool sample: measured CPU rates on a CPU preset, FLOPs on a GPU preset.
    `counted`: (texts, padded tokens) the embedder will run after its cache answered the rest (a run's count)."""
    note = f"one forward pass of the embedder per sample over the first {seq_len} tokens of its {config.view} view"
    gpu = config.hardware.gpu
    if _on_cpu(config):
        tp = budget.load_throughput()
        spec = _cpu_embed_spec(config)
        if counted is not None:
            secs = budget.cpu_embed_seconds(tp, counted[0], seq_len, spec, tokens=counted[1])
            note += (f": {counted[0]:,} texts not in the embedding cache, {counted[1]:,} padded tokens (counted "
                     "before embedding)")
        else:
            n = n_pool or config.corpus_samples
            cached = _labelled_count(config, n) if config.embed_cache else 0
            tasks = (par or {}).get("workers", 1)
            # each scoring task loads the model; the labelled samples are in the cache by then (embed_cache)
            secs = budget.cpu_embed_seconds(tp, n - cached, seq_len, spec) + tp.embed_load_s * (tasks - 1)
            note += (f": {n - cached:,} pool samples in {tasks} task(s), each loading the model"
                     + (f" ({cached:,} labelled ones already embedded, from the cache)" if cached else ""))
        return dict(cpu_hours=secs / 3600, kind="cpu", **(par or {}),
                    note=note + f" on CPU at {tp.embed_tokens_per_s:,.0f} tokens/s (minilm-local"
                                + ("" if spec is None else ", scaled by forward FLOPs") + f") plus "
                                f"{tp.embed_load_s:.1f} s to load, {tp.source()}")
    mfu = budget.fp32_embed_mfu(gpu)  # the embedder runs in fp32 (budget.estimates.FP32_TFLOPS)
    n_gpus = max(1, min(pool_workers(config), config.hardware.n_gpus))  # one scoring task per GPU at most
    hw = dict(n_gpus=n_gpus, **({"mfu": mfu} if mfu else {}))
    note += (f"; {config.tasks} datatrove tasks over {n_gpus} {gpu}(s), each embedding in fp32: "
             f"{budget.estimates.FP32_TFLOPS.get(gpu, 0):g} TFLOP/s at a stated "
             f"{budget.estimates.EMBED_FP32_UTILISATION:.0%} = MFU {mfu:.3f} of the "
             "bf16 peak" if mfu else "")
    if config.embedder in budget.EXTRA_MODELS:
        return dict(kind="compute", model=config.embedder, seq_len=seq_len, tokens=tokens, **hw,
                    params=float(budget.body_params(budget.EXTRA_MODELS[config.embedder])),
                    note=note + "; params = its body (the embedding table is a lookup, the LM head is never run)")
    # a local folder: its shape is not in the budget's table, so the line carries the FLOPs
    return dict(kind="compute", flops=embed_flops_per_token(config.embedder, seq_len) * tokens, tokens=tokens, **hw,
                note=note + f"; shape from {config.embedder}/config.json")


def _read_line(config: FilterConfig) -> list[dict[str, Any]]:
    """Reading this machine's Python into the pool, at the measured rate (hub corpora stream; not priced)."""
    if config.corpus != "installed":
        return []
    tp = budget.load_throughput()
    return [dict(stage=STAGE, item="read", kind="cpu", cpu_hours=config.corpus_samples / tp.corpus_samples_per_s / 3600,
                 note=f"{config.corpus_samples:,} installed Python files at {tp.corpus_samples_per_s:,.0f}/s, "
                      f"{tp.source()}")]


def _on_cpu(config: FilterConfig) -> bool:
    return config.hardware.gpu == "cpu" or config.device == "cpu"


def _cpu_embed_spec(config: FilterConfig):
    """The embedder's shape for scaling the measured minilm-local CPU rate (None: it is minilm-local)."""
    return None if config.embedder == MINILM_LOCAL else embedder_spec(config.embedder)


def _labelled_count(config: FilterConfig, n_pool: int) -> int:
    return min(config.annotate_samples, n_pool)


def _view_line(config: FilterConfig, n_pool: int, par: dict[str, int]) -> list[dict[str, Any]]:
    """The outline view parses every sample it embeds before the embedder or its cache is asked, at the measured
    rate: the pool in the scoring tasks side by side (on a GPU preset here also the labelled samples, which on
    CPU are the embed_labelled line's); "head" and "body" are string cuts, not priced."""
    if config.view != "outline":
        return []
    tp = budget.load_throughput()
    n = n_pool if _on_cpu(config) else n_pool + _labelled_count(config, n_pool)
    what = "the pool, in the scoring tasks" if _on_cpu(config) else "the pool, then the labelled samples"
    return [dict(stage=STAGE, item="view", kind="cpu", cpu_hours=n / tp.outline_samples_per_s / 3600, **par,
                 note=f"{n:,} outline views ({what}) at {tp.outline_samples_per_s:,.0f} samples/s, {tp.source()}")]


def _labelled_line(config: FilterConfig, n_pool: int, seq_len: int) -> list[dict[str, Any]]:
    """On CPU: the labelled samples are embedded in the stage's own process before any scoring task starts, one
    step after another (their outline views, one model load, the forward passes): a serial line, named as the
    step that measures it. On a GPU preset they are in the view and embed lines (a small share of the pool)."""
    n = _labelled_count(config, n_pool)
    if not n or not _on_cpu(config):
        return []
    tp = budget.load_throughput()
    spec = _cpu_embed_spec(config)
    view = n / tp.outline_samples_per_s if config.view == "outline" else 0.0
    secs = view + budget.cpu_embed_seconds(tp, n, seq_len, spec)
    return [dict(stage=STAGE, item="embed_labelled", kind="cpu", cpu_hours=secs / 3600,
                 note=f"the {n:,} labelled samples in the stage's own process: "
                      + (f"outline views at {tp.outline_samples_per_s:,.0f}/s, " if view else "")
                      + f"one load ({tp.embed_load_s:.1f} s), forward passes over {seq_len} tokens at "
                        f"{tp.embed_tokens_per_s:,.0f} tokens/s, {tp.source()}")]


def _train_line(config: FilterConfig) -> dict[str, Any]:
    """Choosing the classifier by cross-validation and fitting every candidate on the training split of the
    labels, at the measured seconds per label."""
    tp = budget.load_throughput()
    n = round(config.annotate_samples * (1 - config.test_fraction))
    return dict(stage=STAGE, item="train", kind="cpu", cpu_hours=n * tp.classifier_seconds_per_label / 3600,
                note=f"cross-validating and fitting the classifier candidates on {n:,} training labels at "
                     f"{tp.classifier_seconds_per_label:.3f} s per label, {tp.source()}")


def _stand_in_speed(config: FilterConfig) -> dict[str, float]:
    """The offline heuristic annotator is a local function, not an API: its wall time is its measured rate."""
    if config.annotator != HEURISTIC:
        return {}
    return {"tokens_per_minute": budget.load_throughput().heuristic_tokens_per_s * 60}


def count_annotation(config: FilterConfig, texts: list[str]) -> dict[str, Any]:
    """The annotation requests a run is about to send, counted before any is sent: each chosen sample's prompt
    rendered and tokenized with the annotator's counter (as the LLM client counts them), and for the offline
    stand-in its answer, whose form is fixed ("Educational value: N"). For an LLM the answer stays at the cap."""
    template = prompt_template()
    counter = TokenCounter(None if config.annotator == HEURISTIC else config.annotator)
    reqs = [llm.Request(messages=[{"role": "user", "content": build_prompt(t, config.annotate_max_chars, template)}])
            for t in texts]
    tokens_in = sum(counter.count_request(r) for r in reqs)
    return {"samples": len(texts), "in_per_sample": tokens_in / max(len(texts), 1),
            "out_per_sample": answer_tokens(config),
            "how": f"the {len(texts):,} prompts this run sends, counted by {counter.method}"}


def answer_tokens(config: FilterConfig) -> float:
    """Answer tokens per annotation: the offline stand-in's fixed-form answer ("Educational value: N", counted as
    the LLM client counts it), an LLM's at the config's cap."""
    if config.annotator == HEURISTIC:
        return float(TokenCounter(None).count_text("Educational value: 3"))
    return float(config.annotate_tokens_out)


def budget_lines(config: FilterConfig, counted: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Annotation (LLM tokens), one embedding forward pass per sample, the forest over the pool (CPU).
    `counted` (a run's, once the pool is read): `annotation` (`count_annotation`) and `embed` ((texts, padded
    tokens) the embedder will run after its cache, `Embedder.plan`) replace the planned figures."""
    counted = counted or {}
    per_sample = embed_tokens_per_sample(config)
    ann = counted.get("annotation")
    if ann:
        samples, tokens_in, tokens_out = ann["samples"], ann["in_per_sample"], ann["out_per_sample"]
        ann_note = f"prompt tokens exact: {ann['how']}; answer tokens " + (
            "of the stand-in's fixed answer" if config.annotator == HEURISTIC else "at the config's cap")
    else:
        tokens_in, how = annotate_prompt_tokens(config)
        samples, tokens_out = config.annotate_samples, answer_tokens(config)
        ann_note = (f"prompt tokens measured: the annotation prompt rendered over {how}; {tokens_out:g} answer "
                    "tokens per sample (" + ("the stand-in's fixed answer)" if config.annotator == HEURISTIC
                                             else "the config's cap)"))
    n_pool = counted.get("samples", config.corpus_samples)
    seq_len, tokens = int(round(per_sample)), float(n_pool * per_sample)
    par = {"workers": pool_workers(config)}  # the pool's shards are scored by datatrove tasks side by side
    return [
        *_read_line(config),
        dict(stage=STAGE, item="annotate", kind="llm", model=config.annotator, samples=float(samples),
             in_per_sample=tokens_in, out_per_sample=tokens_out, **_stand_in_speed(config), note=ann_note),
        *_view_line(config, n_pool, par),
        *_labelled_line(config, n_pool, seq_len),
        dict(stage=STAGE, item="embed", **_embed_line(config, seq_len, tokens, counted.get("embed"), n_pool, par)),
        _train_line(config),
        dict(stage=STAGE, item="classify", kind="cpu", samples=float(n_pool), **par,
             seconds_per_sample=CLASSIFY_SECONDS_PER_SAMPLE,
             note="random forest over embeddings, ~0.1 ms per sample per core"),
        *_dataflow_line(config),
    ]


def pool_workers(config: FilterConfig) -> int:
    """Scoring tasks that run side by side: locally min(tasks, workers, GPUs on a GPU preset, else cores); on a
    cluster, every task."""
    if config.executor != "local":
        return config.tasks
    limit = config.hardware.n_gpus if config.hardware.gpu != "cpu" else (os.cpu_count() or 1)
    return max(1, min(config.tasks, config.workers or config.tasks, limit))


def _dataflow_line(config: FilterConfig) -> list[dict[str, Any]]:
    """The local scoring stage's start: its worker pool and each task importing torch (measured, wall time)."""
    if config.executor != "local" or pool_workers(config) < 2:
        return []
    tp = budget.load_throughput()
    return [dict(stage=STAGE, item="dataflow start", kind="cpu", cpu_hours=tp.dataflow_start_s / 3600,
                 note=f"the scoring stage's {config.tasks} datatrove tasks start (worker pool, torch import) in "
                      f"{tp.dataflow_start_s:.1f} s, {tp.source()}")]


def estimate(config: FilterConfig, prices: budget.PriceBook | None = None,
             counted: dict[str, Any] | None = None) -> budget.StageEstimate:
    """Annotation tokens at the annotator's prices + embedding FLOPs on the preset's hardware + forest CPU time."""
    return budget.price_lines(STAGE, budget_lines(config, counted), plan_defaults(config.hardware), prices)


def _write_parquet(df, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


# ---- the stage -----------------------------------------------------------------------------------

@dataclass(kw_only=True)
class FilterResult(StageResult):
    """What the filtering stage kept; `metrics` is the classifier next to its baselines on the held-out split."""

    counts: dict[str, Any]  # pool / kept / dropped samples and tokens, labels, corpus skips, texts embedded
    threshold: float  # score from which a sample is kept
    threshold_rule: str  # how the threshold was chosen, in words
    annotation: dict[str, Any]  # AnnotationStats: requested, labelled, dropped, tokens, usd, ...
    examples: dict[str, list[dict]] = field(default_factory=dict)  # "high"/"low": path and score of the extremes
    dataflow: dict[str, Any] = field(default_factory=dict)  # executor, tasks, shards; peak RSS (MB) per task

    @property
    def kept_path(self) -> Path:
        return Path(self.files["kept"])


def corpus_identity(spec: str) -> str:
    """What the corpus is, for the fingerprint: a file or folder's `runs.identity`, else the name itself
    ("installed", a hub source, "hub:<id>")."""
    if spec == "installed" or spec in HUB_SOURCES or spec.startswith("hub:"):
        return spec
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"corpus={spec!r} is neither 'installed', a hub source ({', '.join(HUB_SOURCES)}, "
                          f"hub:<id>), an existing folder of .py files, nor a .jsonl/.parquet file")
    return runs.identity(path)


def embedder_settings(config: FilterConfig) -> dict[str, Any]:
    """The Embedder settings the stage (and each scoring worker) uses."""
    return dict(model=config.embedder, pooling=config.pooling, max_length=config.max_length,
                batch_size=config.batch_size, device=config.device)


def pool_shard_size(config: FilterConfig) -> int:
    """Samples per pool shard: `shard_samples` at most, and small enough that every task gets a shard."""
    return max(1, min(config.shard_samples, math.ceil(config.corpus_samples / config.tasks)))


def read_pool(config: FilterConfig, folder: Path) -> tuple[PoolShards, CorpusStats]:
    """The candidate pool, streamed from the corpus into JSONL shards under `folder` (never a list in memory):
    each sample keeps its stable id and gets its lexical token count. (PoolShards, CorpusStats)."""
    cstats = CorpusStats()
    records = iter_corpus(config.corpus, config.corpus_samples, seed=config.seed, granularity=config.granularity,
                          max_bytes=config.max_file_bytes, text_field=config.text_field, stats=cstats)
    pool = write_shards(records, folder, pool_shard_size(config), extra=lambda r: {"n_tokens": count_tokens(r["text"])})
    if len(pool) < 20:
        raise DataError(f"corpus={config.corpus!r} gave {len(pool)} usable samples (skipped: {cstats.skipped}); "
                        f"the classifier needs at least 20; point corpus at more code")
    return pool, cstats


def annotation_sample(records: PoolShards | list[dict], config: FilterConfig) -> list[dict]:
    """The seeded random subset of the pool (the shards, or a list of records) the annotator rates."""
    rng = np.random.default_rng(config.seed)
    n_ann = min(config.annotate_samples, len(records))  # the corpus may hold fewer samples than asked for
    ann_idx = np.sort(rng.choice(len(records), size=n_ann, replace=False))
    return records.take(ann_idx) if isinstance(records, PoolShards) else [records[i] for i in ann_idx]


def annotate_subset(records: PoolShards | list[dict], config: FilterConfig, client, chosen: list[dict] | None = None):
    """Ratings for the annotation sample (`chosen`, default `annotation_sample(records, config)`): (labels
    DataFrame, AnnotationStats)."""
    import pandas as pd

    chosen = annotation_sample(records, config) if chosen is None else chosen
    rows, astats = annotate(chosen, annotator=config.annotator, client=client,
                            max_retries=config.max_retries, max_chars=config.annotate_max_chars,
                            max_tokens=max(config.annotate_tokens_out, 8))
    labels = pd.DataFrame(rows, columns=["id", "rating", "answer", "attempts"])
    labels["label"] = [label_from_rating(r, config.positive_min) for r in labels["rating"]]
    labels["annotator"] = astats.annotator
    counts_y = labels["label"].value_counts().to_dict()
    if astats.failed:  # the job is not finished: a rerun retries exactly these (stored answers are reused)
        raise llm.incomplete(STAGE, astats.failed, astats.requested + astats.retried, astats.failure_reasons,
                             getattr(getattr(client, "store", None), "path", None))
    if len(labels) < 10 or min(counts_y.get(0, 0), counts_y.get(1, 0)) < 2:
        raise DataError(f"annotation gave {len(labels)} labels ({counts_y} by class; dropped unparseable "
                        f"{astats.dropped_unparseable}, failed {astats.failed}); the classifier needs >= 10 labels "
                        f"with >= 2 per class: annotate more samples (--annotate) or move the class boundary "
                        f"(--set positive_min=N, now {config.positive_min})")
    return labels, astats


def embed_labelled(pool: PoolShards, labels, config: FilterConfig, progress: bool):
    """(embedder, texts, embeddings) of the labelled samples, in the labels' order; each text is embedded
    through the configured view (filtering.view)."""
    embedder = Embedder(**embedder_settings(config), progress=progress)
    text_by_id = pool.texts(labels["id"])
    texts = [text_by_id[i] for i in labels["id"]]
    return embedder, texts, embedder.embed([sample_view(t, config.view) for t in texts], desc="embed labelled")


def _fit_candidates(X_train, y_train, config: FilterConfig) -> tuple[str, dict[str, float], dict[str, Any]]:
    """(chosen candidate, cross-validated ROC-AUC per candidate, fitted candidates by name), all on the
    training split: the held-out split is not looked at to choose."""
    kw = dict(n_estimators=config.n_estimators, min_samples_leaf=config.min_samples_leaf, seed=config.seed)
    chosen, cv = select_classifier(X_train, y_train, config.classifier, **kw)
    fitted = {name: train_classifier(X_train, y_train, name=name, **kw) for name in cv}
    return chosen, cv, fitted


def train_and_compare(X: np.ndarray, texts: list[str], labels, config: FilterConfig, out: Path,
                      astats: AnnotationStats) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Choose the classifier by cross-validation on a stratified training split, compare every candidate and
    cheap baselines on the held-out part, save the chosen one.

    Marks each label's split and heuristic score in `labels`. Returns (classifier path, metrics, fitted
    candidates keyed as in the metrics)."""
    from sklearn.model_selection import train_test_split

    y = labels["label"].to_numpy()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=config.test_fraction, stratify=y,
                                           random_state=config.seed)
    chosen, cv, by_name = _fit_candidates(X[idx_train], y[idx_train], config)
    fitted = {METRIC_NAMES[k]: m for k, m in by_name.items()}  # keyed as in the metrics
    length = np.log1p(np.array([[len(s), s.count("\n")] for s in texts], dtype=float))
    heur = np.array([[heuristic_score(s[:config.annotate_max_chars])] for s in texts])
    metrics = evaluate_models(X[idx_test], y[idx_test], models=fitted,
                              extra_train={"length": length[idx_train], "heuristic": heur[idx_train]},
                              extra_test={"length": length[idx_test], "heuristic": heur[idx_test]}, y_train=y[idx_train])
    metrics["chosen"] = METRIC_NAMES[chosen]
    metrics["cv_roc_auc"] = {METRIC_NAMES[k]: v for k, v in cv.items()}
    metrics["selection"] = (f"classifier={config.classifier}: {METRIC_NAMES[chosen]} "
                            + ("has the best" if config.classifier == "auto" else "was configured; its")
                            + f" mean ROC-AUC in a {len(idx_train)}-sample training split's cross-validation; "
                              f"the held-out split ({len(idx_test)} samples) was not used to choose")
    if astats.stand_in:
        metrics["note"] = ("heuristic_alone is the rubric that produced these labels (the stand-in annotator), "
                           "so it is an upper bound here, not a fair baseline")
    labels["split"] = "train"
    labels.loc[idx_test, "split"] = "test"
    labels["heuristic_score"] = heur[:, 0]
    clf_path = save_classifier(by_name[chosen], out / "classifier.joblib", {
        "embedder": config.embedder, "pooling": config.pooling, "max_length": config.max_length,
        "view": config.view, "classifier": chosen, "positive_min": config.positive_min,
        "annotator": astats.annotator, "n_train": int(len(idx_train))})
    return clf_path, metrics, fitted


def score_heldout(embedder: Embedder, fitted: dict[str, Any], chosen: str, config: FilterConfig, out: Path):
    """The hand-written snippets (filtering.heldout) scored by the chosen filter (`fitted[chosen]`), every
    candidate and the rubric: (report with each one's ROC-AUC, path of heldout.parquet with the scores)."""
    import pandas as pd

    snippets = load_snippets()
    texts = [s["text"] for s in snippets]
    X = embedder.embed([sample_view(t, config.view) for t in texts], desc="embed held-out snippets")
    scores = {"filter": fitted[chosen].predict_proba(X)[:, 1]}
    scores.update({k: m.predict_proba(X)[:, 1] for k, m in fitted.items()})
    scores["rubric"] = np.array([heuristic_score(t[:config.annotate_max_chars]) for t in texts])
    report = heldout_report(snippets, scores)
    report["filter"] = chosen
    table = pd.DataFrame({"id": [s["id"] for s in snippets], "label": [s["label"] for s in snippets], "text": texts,
                          **{f"{k}_score": v for k, v in scores.items()}})
    return report, _write_parquet(table, out / "heldout.parquet")


def dataflow(config: FilterConfig, out: Path) -> Dataflow:
    """How and where the pool's datatrove pipelines run (OUT/filtering/dataflow/{score,split})."""
    return Dataflow(out / "dataflow", executor=config.executor, tasks=config.tasks,
                    workers=config.workers or config.num_proc, cluster=dict(config.cluster))


def dataflow_key(config: FilterConfig, run_dir: RunDir, inputs: dict[str, str], clf_path: Path,
                 pool: PoolShards) -> dict[str, Any]:
    """What the datatrove tasks' outputs depend on: a rerun with the same key skips the tasks already finished,
    any other key starts the pipelines afresh (Dataflow.prepare)."""
    return {"fingerprint": config.fingerprint(run_dir.root, inputs), "classifier": file_digest(clf_path),
            "tasks": config.tasks, "shards": len(pool.files), "samples": len(pool), "view": config.view}


def dataflow_record(config: FilterConfig, flow: Dataflow, pool: PoolShards, scored: dict[str, Any],
                    split: dict[str, Any]) -> dict[str, Any]:
    """How the pool was scored, for the result: executor, tasks, shards and each task's peak RSS (MB)."""
    return {"executor": config.executor, "tasks": config.tasks,
            "workers": flow.local_workers if config.executor == "local" else None, "shards": len(pool.files),
            "shard_samples": pool_shard_size(config),
            "peak_rss_mb": {"score": scored["peak_rss_mb"], "split": split["peak_rss_mb"]},
            "note": "peak RSS of each task's process (with workers=1 the tasks run in the stage's own process)"}


def scoring_pipeline(config: FilterConfig, out: str | Path = "OUT/filtering", threshold: float = 0.5,
                     clf_path: str | Path | None = None) -> dict[str, list]:
    """The two datatrove pipelines the stage runs over the pool, as lists of blocks (nothing is run or read):
    "score" (embed + classify each shard) and "split" (the global threshold; kept and dropped written)."""
    out = Path(out)
    flow, pool = dataflow(config, out), PoolShards(out / "shards", [], 0)
    return {"score": scoring_blocks(pool, flow, {**embedder_settings(config), "cache": config.embed_cache},
                                    clf_path or out / "classifier.joblib", config.view, config.score_batch_size),
            "split": split_blocks(pool, flow, threshold)}


def score(pool: PoolShards, flow: Dataflow, clf_path: Path, config: FilterConfig, key: dict[str, Any],
          fresh: bool) -> dict[str, Any]:
    """Run the score pipeline over the pool's shards (a finished task of an earlier run with the same key is
    skipped): the tasks' peak memory and counters."""
    flow.prepare("score", key, fresh)
    return flow.run("score", scoring_pipeline(config, flow.work.parent, clf_path=clf_path)["score"])


def apply_threshold(pool: PoolShards, flow: Dataflow, config: FilterConfig, key: dict[str, Any],
                    fresh: bool) -> tuple[float, str, dict[str, Any]]:
    """The threshold chosen over every pool score (configured, or the top keep_fraction), then the split pipeline
    writing kept and dropped per shard: (threshold, rule, the split tasks' peak memory and counters)."""
    thr, rule = choose_threshold(pool_scores(flow), threshold=config.threshold, keep_fraction=config.keep_fraction)
    flow.prepare("split", {**key, "threshold": thr}, fresh)
    return thr, rule, flow.run("split", split_blocks(pool, flow, thr))


def write_outputs(pool: PoolShards, flow: Dataflow, labels, threshold: float, clf_path: Path, out: Path,
                  config: FilterConfig):
    """pool (every sample, with kept and its label), kept, dropped, labels and examples parquet files, streamed
    shard by shard: (files, examples, totals)."""
    by_id = labels.set_index("id")[["rating", "label", "split"]].to_dict("index")
    files, extremes, totals = merge_outputs(pool, flow, by_id, threshold, out, config.n_examples)
    files.update(labels=_write_parquet(labels, out / "labels.parquet"), classifier=clf_path,
                 examples=_write_parquet(examples_frame(extremes["high"], extremes["low"]), out / "examples.parquet"))
    examples = {side: [{"path": r["path"], "score": r["score"]} for r in rows] for side, rows in extremes.items()}
    return {k: str(v) for k, v in files.items()}, examples, totals


def count_summary(totals: dict[str, int], labels, cstats: CorpusStats, embedded: int) -> dict[str, Any]:
    n, kept = totals["pool_samples"], totals["kept_samples"]
    return {"pool_samples": n, "kept_samples": kept, "dropped_samples": n - kept, "pool_tokens": totals["pool_tokens"],
            "kept_tokens": totals["kept_tokens"], "kept_fraction_samples": kept / max(n, 1),
            "kept_fraction_tokens": totals["kept_tokens"] / max(totals["pool_tokens"], 1),
            "token_unit": "lexical tokens (identifiers, numbers, punctuation; see filtering.count_tokens)",
            "labelled": int(len(labels)), "positives": int(labels["label"].sum()), "corpus": cstats.to_dict(),
            "embedded_by_model": int(embedded)}


def _auc(metrics: dict[str, Any], name: str | None = None) -> str:
    value = (metrics.get(name or metrics.get("chosen", "random_forest")) or {}).get("roc_auc")
    return "n/a" if value is None else f"{value:.3f}"


def run(config: FilterConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None, client=None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True, log=print) -> FilterResult:
    """Read, annotate, embed, classify, score and threshold the pool into OUT/filtering/; result.json last.

    A finished stage is returned as stored when its config and corpus match (else StaleResult: pass
    force=True to redo it). `client` is the annotator's LLMClient (default: one storing its answers in
    OUT/filtering/annotations.sqlite); `log` gets two progress lines when `progress` is on.
    """
    inputs = {"corpus": corpus_identity(config.corpus)}
    out = run_dir.stage(STAGE)
    if (done := load_stored(FilterResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    check_available(config.executor)  # before any work: MissingDependency naming what to install
    say = log if progress else (lambda *_: None)
    stand_in = STAND_IN_NOTE if config.annotator == HEURISTIC else None
    if stand_in:
        say(f"[{STAGE}] annotator: {STAND_IN_NAME}, an offline STAND-IN for the paper's GPT-4 labels")
    t = Timer()
    with t("read"):
        pool, cstats = read_pool(config, out / "shards")
        chosen = annotation_sample(pool, config)
        # Priced from what will run, before anything is sent: the prompts of the samples chosen for annotation,
        # rendered and counted, and the pool as read (the embedding is priced for a cold cache: every sample).
        est = estimate(config, prices, {"annotation": count_annotation(config, [r["text"] for r in chosen]),
                                        "samples": len(pool)})
    with t("annotate"):
        ledger = job_ledger(run_dir.ledger_path, ledger, config.cap_usd)
        client = client or make_client(config.annotator, store=out / "annotations.sqlite", ledger=ledger,
                                       base_url=config.base_url,
                                       api_key_env=config.api_key_env, prices=prices, concurrency=config.concurrency,
                                       rpm=config.rpm, tpm=config.tpm, progress=progress)
        labels, astats = annotate_subset(pool, config, client, chosen)
    with t("embed_labelled"):
        embedder, texts, X = embed_labelled(pool, labels, config, progress)
    with t("train"):
        clf_path, metrics, fitted = train_and_compare(X, texts, labels, config, out, astats)
    with t("heldout"):
        metrics["heldout_snippets"], heldout_file = score_heldout(embedder, fitted, metrics["chosen"], config, out)
    flow, key = dataflow(config, out), dataflow_key(config, run_dir, inputs, clf_path, pool)
    with t("score"):
        scored = score(pool, flow, clf_path, config, key, fresh=force)
    with t("threshold"):
        thr, rule, split = apply_threshold(pool, flow, config, key, fresh=force)
    with t("write"):
        files, examples, totals = write_outputs(pool, flow, labels, thr, clf_path, out, config)
    files["heldout"] = str(heldout_file)
    counts = count_summary(totals, labels, cstats,
                           embedder.texts_embedded_ + scored["stats"].get("embed + classify/embedded", 0))
    flow_doc = dataflow_record(config, flow, pool, scored, split)
    seconds = t.finish()
    gpu_s = seconds["embed_labelled"] + seconds["heldout"] + seconds["score"] if config.device.startswith("cuda") else 0.0
    usage = Usage(tokens_in=int(astats.prompt_tokens), tokens_out=int(astats.completion_tokens),
                  requests=int(astats.requested + astats.retried - astats.failed), gpu_s=gpu_s, cpu_s=t.cpu_s,
                  wall_s=seconds["total"], usd=float(astats.usd))
    if ledger is not None:
        # The LLM client already recorded the annotation dollars under this stage; this line adds the compute.
        ledger.record(STAGE, usd=0.0, cpu_seconds=usage.cpu_s, gpu_seconds=usage.gpu_s, estimate_usd=est.cost_usd,
                      what="embed + classify + score", annotation_usd=usage.usd, stand_in=bool(stand_in))
    metrics_doc = {"classifier": metrics, "counts": counts, "threshold": thr, "threshold_rule": rule,
                   "seconds": seconds, "annotation": astats.to_dict(), "dataflow": flow_doc}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics_doc, indent=2, default=str), encoding="utf-8")
    files["metrics"] = str(out / "metrics.json")
    result = FilterResult(**common_fields(config, out, run_dir, inputs, est), files=files, metrics=metrics,
                          usage=usage, seconds=seconds, stand_in=stand_in, counts=counts, threshold=thr,
                          threshold_rule=rule, annotation=astats.to_dict(), examples=examples,
                          dataflow=flow_doc).save()
    say(f"[{STAGE}] kept {counts['kept_samples']:,}/{counts['pool_samples']:,} samples "
        f"({counts['kept_tokens']:,}/{counts['pool_tokens']:,} tokens) at {rule}; {metrics['chosen']} held-out "
        f"ROC-AUC {_auc(metrics)}, on the hand-written snippets "
        f"{metrics['heldout_snippets']['roc_auc']['filter']:.3f} (rubric "
        f"{metrics['heldout_snippets']['roc_auc']['rubric']:.3f}); {seconds['total']:.0f} s")
    return result
