"""Stage 1, filtering: annotate a subset, learn the labels from embeddings, score and threshold the whole pool.

paper §2.1: GPT-4 rates ~100k samples for educational value, a random forest on a pretrained
code model's output embeddings learns the rating, the rest of the 35B-token pool is scored and
~6B tokens are kept. Here: `FilterConfig` (one per preset), `run_filtering` (resumable; writes
filtering/{pool,kept,dropped,labels}.parquet, classifier.joblib, metrics.json, result.json
last) and `estimate_cost` (annotation tokens + embedding FLOPs through phi1lib.costs).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .. import runs
from .annotate import HEURISTIC, STAND_IN_NAME, STAND_IN_NOTE, annotate, heuristic_score, label_from_rating
from .corpus import DEFAULT_MAX_BYTES, GRANULARITIES, CorpusStats, load_corpus
from ..embed import MINILM_LOCAL, POOLINGS, Embedder, text_hash
from ..errors import ConfigError, DataError
from .classifier import binary_metrics, evaluate_models, load_classifier, save_classifier, train_classifier
from ..presets import get_preset

STAGE = "filtering"
OUT_COLUMNS = ["id", "source", "path", "text", "score", "n_tokens"]
_LEXICAL = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Lexical tokens (identifiers, numbers, punctuation): fast on 35 GB, and tokenizer-independent,
    since the training tokenizer is trained after this stage. BPE counts run ~1.2-1.5x higher."""
    return len(_LEXICAL.findall(text))


@dataclass
class FilterConfig:
    """Everything the filtering stage needs; `FilterConfig.for_preset(name, **overrides)` fills it from a preset."""

    preset: str = "tiny"  # preset name the defaults come from
    corpus: str = "installed"  # "installed", "the-stack-python", "stackoverflow", "hub:<id|folder>", folder, .jsonl/.parquet
    corpus_samples: int = 3000  # samples read into the candidate pool
    granularity: str = "file"  # "file" or "function" (top-level defs and classes)
    max_file_bytes: int = DEFAULT_MAX_BYTES  # bytes; larger files are skipped as "huge"
    text_field: str | None = None  # column holding the text in tables / hub sets (None: reader default)
    seed: int = 0  # corpus sampling, annotation subset, train/test split, forest
    annotator: str = HEURISTIC  # "heuristic" (offline stand-in) or an LLM model name
    annotate_samples: int = 600  # samples sent to the annotator
    annotate_max_chars: int = 2000  # characters of code shown to the annotator
    annotate_tokens_in: int = 400  # planned prompt tokens per sample (estimate only)
    annotate_tokens_out: int = 10  # planned answer tokens per sample (estimate only)
    max_retries: int = 1  # re-asks for an unparseable answer before it is dropped
    positive_min: int = 4  # rating (1-5) from which a sample counts as educational
    base_url: str | None = None  # OpenAI-compatible endpoint (vLLM, ...) for the LLM annotator
    cap_usd: float | None = None  # budget cap for the annotation spend (USD)
    embedder: str = MINILM_LOCAL  # hub id or local folder of a transformers model, or "minilm-local"
    pooling: str = "mean"  # "mean", "last" (decoder models) or "cls"
    max_length: int = 64  # tokens per sample fed to the embedder
    batch_size: int = 32  # texts per forward pass
    device: str = "cpu"  # torch device for the embedder ("cuda" on GPU presets)
    n_estimators: int = 200  # trees in the random forest
    min_samples_leaf: int = 1  # forest regularisation
    test_fraction: float = 0.25  # held-out share of the labelled samples
    threshold: float | None = None  # keep score >= threshold (probability in [0, 1]); overrides keep_fraction
    keep_fraction: float | None = 1 / 3  # else keep this share of the pool (highest scores)
    num_proc: int = 1  # processes for scoring the pool (datasets.map)
    score_batch_size: int = 256  # samples per datasets.map batch
    n_examples: int = 5  # highest- and lowest-scored samples shown side by side

    def __post_init__(self):
        get_preset(self.preset)
        for name in ("corpus_samples", "annotate_samples", "annotate_max_chars", "max_length", "batch_size",
                     "n_estimators", "min_samples_leaf", "num_proc", "score_batch_size", "max_file_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"FilterConfig.{name}={v!r}: expected a positive integer")
        if self.annotate_samples > self.corpus_samples:
            self.annotate_samples = self.corpus_samples  # cannot label more than the pool holds
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"FilterConfig.granularity={self.granularity!r}; choose one of {', '.join(GRANULARITIES)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"FilterConfig.pooling={self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if not 1 <= self.positive_min <= 5:
            raise ConfigError(f"FilterConfig.positive_min={self.positive_min}: ratings run 1..5")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise ConfigError(f"FilterConfig.test_fraction={self.test_fraction}: expected 0.05..0.5")
        if self.threshold is None and self.keep_fraction is None:
            raise ConfigError("FilterConfig: set threshold (score in [0, 1]) or keep_fraction (share in (0, 1])")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"FilterConfig.threshold={self.threshold}: scores are probabilities in [0, 1]")
        if self.keep_fraction is not None and not 0.0 < self.keep_fraction <= 1.0:
            raise ConfigError(f"FilterConfig.keep_fraction={self.keep_fraction}: expected a share in (0, 1]")
        if self.cap_usd is not None and self.cap_usd < 0:
            raise ConfigError(f"FilterConfig.cap_usd={self.cap_usd}: expected USD >= 0")

    @classmethod
    def for_preset(cls, name: str = "tiny", **overrides: Any) -> "FilterConfig":
        p = get_preset(name)
        gpu = p.hardware.gpu != "cpu"
        base: dict[str, Any] = dict(
            preset=p.name, corpus="installed" if p.offline else "the-stack-python",
            corpus_samples=p.data.corpus_samples, annotator=p.annotator, annotate_samples=p.data.annotate_samples,
            annotate_tokens_in=p.data.annotate_tokens_in, annotate_tokens_out=p.data.annotate_tokens_out,
            embedder=p.embedder, max_length=p.data.embed_max_length, batch_size=64 if gpu else 32,
            device="cuda" if gpu else "cpu", num_proc=1 if p.offline else 8,
            # The paper kept ~6B of ~35B tokens; each preset's plan says how much it keeps.
            keep_fraction=min(1.0, p.data.filtered_tokens / p.data.corpus_tokens),
        )
        if "threshold" in overrides and "keep_fraction" not in overrides:
            base["keep_fraction"] = None  # an explicit threshold replaces the preset's kept share
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"FilterConfig has no field(s) {sorted(unknown)}; fields: {[f.name for f in fields(cls)]}")
        base.update({k: v for k, v in overrides.items()})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FilterResult:
    out_dir: str
    files: dict[str, str]  # name -> path of every file the stage wrote
    counts: dict[str, Any]  # pool / kept / dropped samples and tokens, corpus skips
    threshold: float
    threshold_rule: str
    annotation: dict[str, Any]
    metrics: dict[str, Any]  # classifier vs baselines on the held-out split
    seconds: dict[str, float]
    usage: dict[str, Any]  # measured: usd, tokens_in, tokens_out, cpu_seconds
    estimate: dict[str, Any]
    stand_in: str | None
    config: dict[str, Any]
    examples: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def kept_path(self) -> Path:
        return Path(self.files["kept"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FilterResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # extra keys (pipeline's _seconds) ignored


# ---- cost ----------------------------------------------------------------------------------------

def embed_flops_per_token(model: str, seq_len: float) -> float:
    """Forward FLOPs per embedded token (`budget.embed_flops_per_token`) for the shape of a known
    embedder (the budget's table), else the shape in a local folder's config.json, so the
    estimate needs no download. The embedding table is a lookup and the LM head is never run,
    so neither counts."""
    from .. import budget
    from ..presets import ModelSpec

    t = int(round(seq_len))
    if model in budget.EXTRA_MODELS:
        return budget.embed_flops_per_token(budget.EXTRA_MODELS[model], t)
    cfg = Path(model).expanduser() / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        d = c.get("hidden_size") or c.get("n_embd") or c.get("d_model")
        n_layer = c.get("num_hidden_layers") or c.get("n_layer")
        if d and n_layer:
            spec = ModelSpec(n_layer=n_layer, d_model=d, d_mlp=c.get("intermediate_size") or c.get("n_inner") or 4 * d,
                             n_head=c.get("num_attention_heads") or c.get("n_head") or 1, rotary_dim=0, n_ctx=t,
                             vocab_size=c.get("vocab_size") or 0)
            return budget.embed_flops_per_token(spec, t)
    raise ConfigError(f"embedder={model!r}: its shape is unknown for the estimate; use a local folder with a "
                      f"config.json or one of {sorted(budget.EXTRA_MODELS)}")


def estimate_cost(config: FilterConfig, prices=None):
    """Annotation tokens at the annotator's prices + embedding forward FLOPs on the preset's hardware."""
    from .. import budget

    prices = prices or budget.load_prices()
    hw = get_preset(config.preset).hardware
    plan = get_preset(config.preset).data
    n_ann = config.annotate_samples
    llm = budget.estimate_llm(STAGE, config.annotator, n_ann * config.annotate_tokens_in,
                             n_ann * config.annotate_tokens_out, prices, item="annotate")
    tokens_per_sample = min(config.max_length, plan.corpus_tokens / max(plan.corpus_samples, 1))
    embed_tokens = config.corpus_samples * tokens_per_sample
    flops = embed_flops_per_token(config.embedder, tokens_per_sample) * embed_tokens
    emb = budget.estimate_compute(STAGE, flops, prices, gpu=hw.gpu, n_gpus=hw.n_gpus, mfu=hw.mfu, item="embed",
                                 tokens=embed_tokens)
    return budget.combine(STAGE, [llm, emb], prices)


# ---- threshold and scoring -----------------------------------------------------------------------

def choose_threshold(scores, *, threshold: float | None = None, keep_fraction: float | None = None) -> tuple[float, str]:
    """(threshold, rule): the configured score, or the score above which `keep_fraction` of the pool lies."""
    scores = np.asarray(scores, dtype=float)
    if threshold is not None:
        return float(threshold), f"score >= {threshold:g} (configured)"
    if keep_fraction is None:
        raise ConfigError("choose_threshold: give threshold or keep_fraction")
    if not len(scores):
        raise DataError("choose_threshold: no scores")
    k = max(1, int(round(keep_fraction * len(scores))))
    t = float(np.sort(scores)[::-1][k - 1])  # k-th highest; ties at t are all kept
    return t, f"score >= {t:.4f} (the top {keep_fraction:.1%} of the pool)"


class ScoreBatch:
    """datasets.map function: embed a batch (disk cache shared across processes) and score it.

    Lazy, so each worker process builds its own embedder and forest on its first batch.
    """

    def __init__(self, embed_kwargs: dict[str, Any], classifier_path: str):
        self.embed_kwargs, self.classifier_path = embed_kwargs, classifier_path
        self._embedder = self._clf = None

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._embedder is None:
            self._embedder = Embedder(**{**self.embed_kwargs, "progress": False})
            self._clf, _ = load_classifier(self.classifier_path)
        cache = self._embedder.cache
        if cache is not None:
            cache.refresh()
        fresh = [cache is None or cache.get(text_hash(t)) is None for t in batch["text"]]
        X = self._embedder.embed(batch["text"])
        return {"score": self._clf.predict_proba(X)[:, 1].tolist(), "fresh": fresh}


def _score_shard(texts: list[str], embed_kwargs: dict[str, Any], classifier_path: str, batch_size: int,
                 progress: bool) -> tuple[list[float], int]:
    import datasets

    if not progress:
        datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"text": texts})
    scored = ds.map(ScoreBatch(embed_kwargs, classifier_path), batched=True, batch_size=batch_size,
                    keep_in_memory=True, new_fingerprint=f"phi1-score-{time.time_ns()}", desc="score pool")
    if not progress:
        datasets.enable_progress_bars()
    return list(scored["score"]), int(sum(scored["fresh"]))


def score_pool(texts: list[str], embed_kwargs: dict[str, Any], classifier_path: str | os.PathLike, *,
               num_proc: int = 1, batch_size: int = 256, progress: bool = True, return_fresh: bool = False):
    """Score every text with datasets.map, batched; with num_proc > 1, one shard per worker process.

    Workers are *spawned*, not forked: a process forked after torch started its thread pool can
    deadlock (that is what datasets.map(num_proc=...) does), and a spawned worker loads its own
    embedder and forest anyway. The disk cache is shared, so shards never embed a text twice.
    Returns the scores, or (scores, number of texts the pass had to embed) with return_fresh.
    """
    if num_proc <= 1 or len(texts) < 2 * batch_size:
        scores, fresh = _score_shard(list(texts), embed_kwargs, str(classifier_path), batch_size, progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        bounds = np.linspace(0, len(texts), num_proc + 1).astype(int)
        shards = [list(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        with ProcessPoolExecutor(len(shards), mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_score_shard, sh, embed_kwargs, str(classifier_path), batch_size, False) for sh in shards]
            parts = [f.result() for f in futs]
        scores = [s for part, _ in parts for s in part]
        fresh = sum(n for _, n in parts)
    scores = np.asarray(scores, dtype=float)
    return (scores, fresh) if return_fresh else scores


def _write_parquet(df, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def examples_table(pool, n: int = 5):
    """The n highest- and n lowest-scored samples side by side (paper Fig. 2.x style)."""
    import pandas as pd

    top = pool.sort_values("score", ascending=False).head(n).reset_index(drop=True)
    bottom = pool.sort_values("score", ascending=True).head(n).reset_index(drop=True)
    short = lambda s: s.str.slice(0, 600)  # noqa: E731
    return pd.DataFrame({"high score": top["score"].round(3), "high: path": top["path"], "high: code": short(top["text"]),
                         "low score": bottom["score"].round(3), "low: path": bottom["path"],
                         "low: code": short(bottom["text"])})


# ---- the stage -----------------------------------------------------------------------------------

def run_filtering(config: FilterConfig | None = None, out_dir: str | os.PathLike | None = None, *, ledger=None,
                  client=None, progress: bool = True, force: bool = False, log=print) -> FilterResult:
    """Run (or return the stored result of) the filtering stage into `out_dir` (default: the run dir's filtering/)."""
    import pandas as pd

    config = config or FilterConfig.for_preset("tiny")
    out = Path(out_dir) if out_dir is not None else runs.stage_dir(STAGE, preset=config.preset)
    out.mkdir(parents=True, exist_ok=True)
    stored = runs.load_result(out)
    if stored is not None and not force:
        return FilterResult.from_dict(stored)
    say = log if progress else (lambda *_: None)
    stand_in = STAND_IN_NOTE if config.annotator == HEURISTIC else None
    if stand_in:
        say(f"[filtering] annotator: {STAND_IN_NAME} (offline stand-in for the paper's GPT-4 labels)")
    est = estimate_cost(config)
    seconds: dict[str, float] = {}
    t_stage = t = time.perf_counter()
    cpu0 = time.process_time()

    # 1. the candidate pool
    cstats = CorpusStats()
    records = load_corpus(config.corpus, config.corpus_samples, seed=config.seed, granularity=config.granularity,
                          max_bytes=config.max_file_bytes, text_field=config.text_field, stats=cstats)
    if len(records) < 20:
        raise DataError(f"corpus={config.corpus!r} gave {len(records)} usable samples (skipped: {cstats.skipped}); "
                        f"the classifier needs at least 20; point corpus at more code")
    pool = pd.DataFrame({"id": [r["id"] for r in records], "source": [r["source"] for r in records],
                         "path": [r["path"] for r in records], "text": [r["text"] for r in records]})
    pool["n_tokens"] = [count_tokens(x) for x in pool["text"]]
    seconds["read"] = time.perf_counter() - t

    # 2. labels for a seeded random subset
    t = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    n_ann = min(config.annotate_samples, len(records))
    ann_idx = np.sort(rng.choice(len(records), size=n_ann, replace=False))
    if client is None:
        client = _make_client(config, out, ledger)
    rows, astats = annotate([records[i] for i in ann_idx], annotator=config.annotator, client=client,
                            max_retries=config.max_retries, max_chars=config.annotate_max_chars,
                            max_tokens=max(config.annotate_tokens_out, 8))
    labels = pd.DataFrame(rows, columns=["id", "rating", "answer", "attempts"])
    labels["label"] = [label_from_rating(r, config.positive_min) for r in labels["rating"]]
    labels["annotator"] = astats.annotator
    seconds["annotate"] = time.perf_counter() - t
    counts_y = labels["label"].value_counts().to_dict()
    if len(labels) < 10 or min(counts_y.get(0, 0), counts_y.get(1, 0)) < 2:
        raise DataError(f"annotation gave {len(labels)} labels ({counts_y} by class; dropped unparseable "
                        f"{astats.dropped_unparseable}, failed {astats.failed}); the classifier needs >= 10 labels "
                        f"with >= 2 per class: annotate more samples or change positive_min={config.positive_min}")

    # 3. embeddings of the labelled samples, 4. forest vs baselines on a held-out split
    t = time.perf_counter()
    embed_kwargs = dict(model=config.embedder, pooling=config.pooling, max_length=config.max_length,
                        batch_size=config.batch_size, device=config.device)
    embedder = Embedder(**embed_kwargs, progress=progress)
    text_by_id = dict(zip(pool["id"], pool["text"]))
    lab_texts = [text_by_id[i] for i in labels["id"]]
    X = embedder.embed(lab_texts, desc="embed labelled")
    seconds["embed_labelled"] = time.perf_counter() - t
    t = time.perf_counter()
    from sklearn.model_selection import train_test_split

    y = labels["label"].to_numpy()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=config.test_fraction, stratify=y,
                                           random_state=config.seed)
    clf = train_classifier(X[idx_train], y[idx_train], n_estimators=config.n_estimators,
                           min_samples_leaf=config.min_samples_leaf, seed=config.seed)
    length = np.log1p(np.array([[len(s), s.count("\n")] for s in lab_texts], dtype=float))
    heur = np.array([[heuristic_score(s[:config.annotate_max_chars])] for s in lab_texts])
    metrics = evaluate_models(X[idx_train], y[idx_train], X[idx_test], y[idx_test], clf=clf,
                              extra_train={"length": length[idx_train], "heuristic": heur[idx_train]},
                              extra_test={"length": length[idx_test], "heuristic": heur[idx_test]}, seed=config.seed)
    if stand_in:
        metrics["note"] = ("heuristic_alone is the rubric that produced these labels (the stand-in annotator), "
                           "so it is an upper bound here, not a fair baseline")
    labels["split"] = "train"
    labels.loc[idx_test, "split"] = "test"
    labels["heuristic_score"] = heur[:, 0]
    clf_path = save_classifier(clf, out / "classifier.joblib", {
        "embedder": config.embedder, "pooling": config.pooling, "max_length": config.max_length,
        "positive_min": config.positive_min, "annotator": astats.annotator, "n_train": int(len(idx_train))})
    seconds["train"] = time.perf_counter() - t

    # 5. score the whole pool (labelled texts are cache hits), 6. threshold
    t = time.perf_counter()
    scores, embedded_scoring = score_pool(pool["text"].tolist(), embed_kwargs, clf_path, num_proc=config.num_proc,
                                          batch_size=config.score_batch_size, progress=progress, return_fresh=True)
    pool["score"] = scores
    seconds["score"] = time.perf_counter() - t
    thr, rule = choose_threshold(scores, threshold=config.threshold, keep_fraction=config.keep_fraction)
    pool["kept"] = pool["score"] >= thr
    pool = pool.merge(labels[["id", "rating", "label", "split"]], on="id", how="left")

    # 7. write: pool (all, with kept), kept, dropped, labels; metrics; result.json last
    files = {"pool": _write_parquet(pool, out / "pool.parquet"),
             "kept": _write_parquet(pool.loc[pool["kept"], OUT_COLUMNS], out / "kept.parquet"),
             "dropped": _write_parquet(pool.loc[~pool["kept"], OUT_COLUMNS], out / "dropped.parquet"),
             "labels": _write_parquet(labels, out / "labels.parquet"), "classifier": clf_path}
    ex = examples_table(pool, config.n_examples)
    examples = {"high": pool.nlargest(config.n_examples, "score")[["path", "score"]].to_dict("records"),
                "low": pool.nsmallest(config.n_examples, "score")[["path", "score"]].to_dict("records")}
    files["examples"] = _write_parquet(ex, out / "examples.parquet")
    kept_tokens, total_tokens = int(pool.loc[pool["kept"], "n_tokens"].sum()), int(pool["n_tokens"].sum())
    counts = {"pool_samples": int(len(pool)), "kept_samples": int(pool["kept"].sum()),
              "dropped_samples": int((~pool["kept"]).sum()), "pool_tokens": total_tokens, "kept_tokens": kept_tokens,
              "kept_fraction_samples": float(pool["kept"].mean()), "kept_fraction_tokens": kept_tokens / max(total_tokens, 1),
              "token_unit": "lexical tokens (identifiers, numbers, punctuation; see filtering.count_tokens)",
              "labelled": int(len(labels)), "positives": int(labels["label"].sum()), "corpus": cstats.to_dict(),
              "embedded_by_model": embedder.texts_embedded_ + embedded_scoring}
    seconds["total"] = time.perf_counter() - t_stage
    usage = {"usd": float(astats.usd), "tokens_in": int(astats.prompt_tokens), "tokens_out": int(astats.completion_tokens),
             "cpu_seconds": time.process_time() - cpu0, "wall_seconds": seconds["total"]}
    if ledger is not None:
        # The LLM client already recorded the annotation dollars under this stage; this line adds the compute.
        ledger.record(STAGE, usd=0.0, cpu_seconds=usage["cpu_seconds"], estimate_usd=est.cost_usd,
                      what="embed + classify + score", annotation_usd=usage["usd"], stand_in=bool(stand_in))
    metrics_doc = {"classifier": metrics, "counts": counts, "threshold": thr, "threshold_rule": rule,
                   "seconds": seconds, "annotation": astats.to_dict()}
    (out / "metrics.json").write_text(json.dumps(metrics_doc, indent=2, default=str), encoding="utf-8")
    files["metrics"] = out / "metrics.json"
    result = FilterResult(out_dir=str(out), files={k: str(v) for k, v in files.items()}, counts=counts, threshold=thr,
                          threshold_rule=rule, annotation=astats.to_dict(), metrics=metrics, seconds=seconds,
                          usage=usage, estimate=est.to_dict(), stand_in=stand_in, config=config.to_dict(),
                          examples=examples)
    runs.save_result(out, result.to_dict())
    say(f"[filtering] kept {counts['kept_samples']}/{counts['pool_samples']} samples "
        f"({kept_tokens:,}/{total_tokens:,} tokens) at {rule}; forest ROC-AUC "
        f"{metrics['random_forest']['roc_auc'] if metrics['random_forest']['roc_auc'] is not None else 'n/a'}; "
        f"{seconds['total']:.0f} s")
    return result


def _make_client(config: FilterConfig, out: Path, ledger):
    from .annotate import make_client

    return make_client(config.annotator, store=out / "annotations.sqlite", ledger=ledger, cap_usd=config.cap_usd,
                       base_url=config.base_url)


def load_pool(folder: str | os.PathLike):
    """The scored pool (every sample, `kept` flag) of a finished filtering stage, for the unfiltered ablation."""
    import pandas as pd

    path = Path(folder) / "pool.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the filtering stage (phi1 filter) first")
    return pd.read_parquet(path)


def examples_html(pool, n: int = 3, chars: int = 900) -> str:
    """HTML table: the n highest-scored samples next to the n lowest, code in <pre> (for notebooks)."""
    import html

    top = pool.nlargest(n, "score").to_dict("records")
    low = pool.nsmallest(n, "score").to_dict("records")
    cell = lambda r: (f"<b>{html.escape(str(r['path']))}</b> score {r['score']:.3f}<pre style='font-size:11px;"  # noqa: E731
                      f"white-space:pre-wrap;max-height:320px;overflow:auto'>{html.escape(r['text'][:chars])}</pre>")
    body = "".join(f"<tr><td style='vertical-align:top;width:50%'>{cell(a)}</td>"
                   f"<td style='vertical-align:top;width:50%'>{cell(b)}</td></tr>" for a, b in zip(top, low))
    return f"<table><tr><th>highest scores (kept)</th><th>lowest scores (dropped)</th></tr>{body}</table>"
