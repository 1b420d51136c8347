"""Scoring the pool with the saved forest, choosing the threshold, and showing the extremes (filtering's tools).

`score_pool` embeds and scores texts with datasets.map (spawned workers share the embedding
cache), `choose_threshold` turns scores into the kept set, `load_pool` / `examples_table` /
`examples_html` read a finished stage's pool back for the notebooks.
"""

from __future__ import annotations

import html
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..embed import Embedder, text_hash
from ..errors import ConfigError, DataError
from ..runs import RunDir
from .classifier import load_classifier
from .view import sample_view, strip_header

STAGE = "filtering"


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

    Each text is embedded through the view the classifier was trained on (its saved meta; "head"
    for a classifier saved before views existed). Lazy, so each worker process builds its own
    embedder and classifier on its first batch.
    """

    def __init__(self, embed_kwargs: dict[str, Any], classifier_path: str):
        self.embed_kwargs, self.classifier_path = embed_kwargs, classifier_path
        self._embedder = self._clf = None
        self._view = "head"

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._embedder is None:
            self._embedder = Embedder(**{**self.embed_kwargs, "progress": False})
            self._clf, meta = load_classifier(self.classifier_path)
            self._view = meta.get("view", "head")
        cache = self._embedder.cache
        if cache is not None:
            cache.refresh()
        texts = [sample_view(t, self._view) for t in batch["text"]]
        fresh = [cache is None or cache.get(text_hash(t)) is None for t in texts]
        X = self._embedder.embed(texts)
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
        bounds = np.linspace(0, len(texts), num_proc + 1).astype(int)
        shards = [list(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        with ProcessPoolExecutor(len(shards), mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_score_shard, sh, embed_kwargs, str(classifier_path), batch_size, False) for sh in shards]
            parts = [f.result() for f in futs]
        scores = [s for part, _ in parts for s in part]
        fresh = sum(n for _, n in parts)
    scores = np.asarray(scores, dtype=float)
    return (scores, fresh) if return_fresh else scores


def examples_table(pool, n: int = 5):
    """The n highest- and n lowest-scored samples side by side (paper Fig. 2.x style)."""
    import pandas as pd

    top = pool.sort_values("score", ascending=False).head(n).reset_index(drop=True)
    bottom = pool.sort_values("score", ascending=True).head(n).reset_index(drop=True)
    short = lambda s: s.str.slice(0, 600)  # noqa: E731
    return pd.DataFrame({"high score": top["score"].round(3), "high: path": top["path"], "high: code": short(top["text"]),
                         "low score": bottom["score"].round(3), "low: path": bottom["path"],
                         "low: code": short(bottom["text"])})


def load_pool(where: RunDir | str | os.PathLike):
    """The scored pool (every sample, `kept` flag) of a finished filtering stage, for the unfiltered ablation.

    `where`: a RunDir, a run folder, or the filtering folder itself."""
    import pandas as pd

    if isinstance(where, RunDir):
        path = where.input(STAGE, "pool.parquet")
    else:
        folder = Path(where).expanduser()
        path = folder / "pool.parquet"
        if not path.is_file() and (folder / STAGE / "pool.parquet").is_file():
            path = folder / STAGE / "pool.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found; the {STAGE} stage has not run there "
                            f"(run it first: phi1 filter --out RUN_FOLDER)")
    return pd.read_parquet(path)


def past_header(text: str) -> tuple[str, int]:
    """(the text after its licence header, how many lines that header had): what a reader should see."""
    body = strip_header(text)
    start = text.find(body[:200]) if body else -1
    if start < 0:  # nothing but a header: show it as it is
        return text, 0
    return body, text[:start].count("\n")


def examples_html(pool, n: int = 3, chars: int = 900) -> str:
    """HTML table: the n highest-scored samples next to the n lowest, code in <pre> past any licence header
    (for notebooks)."""
    top = pool.nlargest(n, "score").to_dict("records")
    low = pool.nsmallest(n, "score").to_dict("records")

    def cell(r):
        body, skipped = past_header(r["text"])
        note = f" <i>({skipped} header lines not shown)</i>" if skipped else ""
        return (f"<b>{html.escape(str(r['path']))}</b> score {r['score']:.3f}{note}<pre style='font-size:11px;"
                f"white-space:pre-wrap;max-height:320px;overflow:auto'>{html.escape(body[:chars])}</pre>")

    body = "".join(f"<tr><td style='vertical-align:top;width:50%'>{cell(a)}</td>"
                   f"<td style='vertical-align:top;width:50%'>{cell(b)}</td></tr>" for a, b in zip(top, low))
    return f"<table><tr><th>highest scores (kept)</th><th>lowest scores (dropped)</th></tr>{body}</table>"


AUC_ROWS = {"random_forest": "random forest (embeddings)", "logreg_embeddings": "logistic regression (embeddings)",
            "length_only": "file length only", "majority_class": "majority class",
            "heuristic_alone": "rubric (the labeller)"}


def auc_table(metrics: dict[str, Any]):
    """ROC-AUC of the chosen filter, the other candidate and the baselines: cross-validated on the training
    split (what chose the filter), on the pool's held-out split, and on the hand-written snippets."""
    import pandas as pd

    cv = metrics.get("cv_roc_auc", {})
    snippets = (metrics.get("heldout_snippets") or {}).get("roc_auc", {})
    rows = {}
    for key, name in AUC_ROWS.items():
        if key not in metrics:
            continue
        label = f"{name} - the filter" if key == metrics.get("chosen") else name
        rows[label] = {"cross-validated (training split)": cv.get(key),
                       "pool held-out split": metrics[key].get("roc_auc"),
                       "hand-written snippets": snippets.get("rubric" if key == "heuristic_alone" else key)}
    return pd.DataFrame(rows).T.astype(float).round(3)
