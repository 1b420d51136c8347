"""Scoring the pool with the saved forest, choosing the threshold, and showing the extremes (filtering's tools).

The stage scores its pool through two datatrove pipelines over the pool's JSONL shards (`Dataflow` runs them
with the local, Slurm or Ray executor; finished tasks are skipped on a rerun):

    score: JsonlReader(pool) -> EmbedScore (embedder + classifier; embeddings/<shard>.npz) -> PeakMemory
    split: JsonlReader(pool) -> ShardScores -> ScoreFilter(global threshold; dropped -> JsonlWriter)
           -> JsonlWriter(kept) -> PeakMemory

The threshold between them is chosen over every score (`choose_threshold`), and `merge_outputs` streams the
shards into the stage's pool/kept/dropped.parquet. `score_pool` embeds and scores a list of texts in-process
(datasets.map; `phi1 filter score`), `load_pool` / `examples_table` / `examples_html` read a finished stage's
pool back for the notebooks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import html
import json
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataflow import (EmbedScore, PeakMemory, ScoreFilter, ShardScores, make_executor, read_peaks, read_scores,
                        run_to_completion, shard_scores)
from ..embed import Embedder, text_hash
from ..errors import ConfigError, DataError
from ..jsonl import iter_jsonl
from ..paths import atomic_path
from ..runs import RunDir
from .classifier import load_classifier
from .corpus import PoolShards
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


# ---- the pool through datatrove ----------------------------------------------------------------------

OUT_COLUMNS = ["id", "source", "path", "text", "score", "n_tokens"]
POOL_COLUMNS = ["id", "source", "path", "text", "n_tokens", "score", "kept", "rating", "label", "split"]


def classifier_model(path: str):
    """The fitted model of a saved classifier (what EmbedScore applies to each document)."""
    return load_classifier(path)[0]


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Dataflow:
    """Where and how the pool's datatrove pipelines run: `<work>/<pipeline>/` (logs with datatrove's completion
    marks, outputs, per-task peak memory), `tasks` shards of work, `workers` at once (local executor), `cluster`
    settings for Slurm/Ray. A pipeline folder is kept between runs only while its `key` (what its outputs
    depend on) is unchanged, so a rerun after a failure skips exactly the finished tasks and nothing stale is reused."""

    work: Path
    executor: str = "local"
    tasks: int = 1
    workers: int | None = None
    cluster: dict[str, Any] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return Path(self.work) / name

    def prepare(self, name: str, key: dict[str, Any], fresh: bool = False) -> Path:
        folder = self.folder(name)
        marker = folder / "key.json"
        text = json.dumps(key, sort_keys=True, default=str)
        if folder.exists() and (fresh or not marker.is_file() or marker.read_text(encoding="utf-8") != text):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(text, encoding="utf-8")
        return folder

    @property
    def local_workers(self) -> int:
        return min(self.tasks, self.workers or os.cpu_count() or 1)

    def threads(self) -> int | None:
        """torch CPU threads per task: the cores shared by the tasks running at once (None: leave torch's default)."""
        if self.executor != "local" or self.local_workers == 1:
            return None
        return max(1, (os.cpu_count() or 1) // self.local_workers)

    def run(self, name: str, blocks: list) -> dict[str, Any]:
        """Run `blocks` as pipeline `name` to the end: peak RSS per task (MB) and the tasks' summed stats."""
        folder = self.folder(name)
        kw = dict(workers=self.local_workers) if self.executor == "local" else {}
        ex = make_executor(self.executor, blocks, tasks=self.tasks, logging_dir=str(folder / "logs"), **kw,
                           **self.cluster)
        run_to_completion(ex, what=f"filtering {name} pipeline")
        return {"peak_rss_mb": [round(p, 1) for p in read_peaks(folder / "memory")],
                "stats": task_stats(folder / "logs")}


def task_stats(logs: Path) -> dict[str, float]:
    """Each block's counters summed over the tasks' stats files ("<block>/<counter>": total)."""
    totals: dict[str, float] = {}
    for path in sorted((Path(logs) / "stats").glob("*.json")):
        for step in json.loads(path.read_text(encoding="utf-8")):
            for counter, value in (step.get("stats") or {}).items():
                total = value.get("total", 0) if isinstance(value, dict) else value
                key = f"{str(step.get('name')).split(': ', 1)[-1]}/{counter}"  # "<type>: <name>" -> name
                totals[key] = totals.get(key, 0) + total
    return totals


def _pool_reader(pool: PoolShards):
    from datatrove.pipeline.readers import JsonlReader

    return JsonlReader(str(pool.folder), glob_pattern="*.jsonl", compression=None, add_file_path=False)


def scoring_blocks(pool: PoolShards, flow: Dataflow, embed_kwargs: dict[str, Any], classifier_path: str | os.PathLike,
                   view: str, batch_size: int) -> list:
    """The score pipeline: read the pool's shards, embed each sample's `view` and apply the classifier
    (embeddings and scores per shard), record each task's peak memory."""
    folder = flow.folder("score")
    return [_pool_reader(pool),
            EmbedScore(embed_kwargs, str(classifier_path), str(folder / "embeddings"), load=classifier_model,
                       prepare=functools.partial(sample_view, view=view), batch_size=batch_size,
                       threads=flow.threads()),
            PeakMemory(str(folder / "memory"))]


def split_blocks(pool: PoolShards, flow: Dataflow, threshold: float) -> list:
    """The split pipeline: read the pool's shards, attach each sample's score, keep score >= threshold
    (kept and dropped written per shard), record each task's peak memory."""
    from datatrove.pipeline.writers import JsonlWriter

    folder = flow.folder("split")

    def writer(name):
        # one file per (pool shard, task): a shard is read by one task, so no two tasks write the same file
        return JsonlWriter(str(folder / name), output_filename="${shard}.${rank}.jsonl", compression=None,
                           expand_metadata=True)

    return [_pool_reader(pool), ShardScores(str(flow.folder("score") / "embeddings")),
            ScoreFilter(threshold, exclusion_writer=writer("dropped")), writer("kept"),
            PeakMemory(str(folder / "memory"))]


def pool_scores(flow: Dataflow) -> np.ndarray:
    """Every pool score the score pipeline wrote (only the scores are read: what the threshold needs)."""
    return read_scores(flow.folder("score") / "embeddings")


class Extremes:
    """The n highest- and n lowest-scored rows of a stream (ties: the earlier row), in bounded memory."""

    def __init__(self, n: int):
        self.n, self._high, self._low, self._i = n, [], [], 0

    def add(self, score: float, row: dict[str, Any]) -> None:
        self._i += 1
        for heap, key in ((self._high, (score, -self._i)), (self._low, (-score, -self._i))):
            if len(heap) < self.n:
                heapq.heappush(heap, (key, row))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, row))

    def high(self) -> list[dict[str, Any]]:
        return [row for _, row in sorted(self._high, key=lambda kv: kv[0], reverse=True)]

    def low(self) -> list[dict[str, Any]]:
        return [row for _, row in sorted(self._low, key=lambda kv: kv[0], reverse=True)]


def _schema(columns: list[str]):
    import pyarrow as pa

    types = {"id": pa.large_string(), "source": pa.large_string(), "path": pa.large_string(),
             "text": pa.large_string(), "n_tokens": pa.int64(), "score": pa.float64(), "kept": pa.bool_(),
             "rating": pa.float64(), "label": pa.float64(), "split": pa.large_string()}
    return pa.schema([(c, types[c]) for c in columns])


class _ParquetOut:
    """A Parquet file written table by table (one shard in memory at a time)."""

    def __init__(self, path: Path, columns: list[str]):
        import pyarrow.parquet as pq

        self.columns, self.schema = columns, _schema(columns)
        self._writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        if rows:
            self._writer.write_table(pa.Table.from_pylist([{c: r.get(c) for c in self.columns} for r in rows],
                                                          schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def merge_outputs(pool: PoolShards, flow: Dataflow, labels: dict[str, dict[str, Any]], threshold: float, out: Path,
                  n_examples: int) -> tuple[dict[str, Path], dict[str, list[dict]], dict[str, int]]:
    """Stream the shards into out/pool.parquet (every sample: score, kept, its label if annotated) and the split
    pipeline's kept/dropped shards into out/kept.parquet and out/dropped.parquet, shard by shard in pool order.
    Returns (files, {"high", "low"} rows of the extremes, totals). A kept/dropped file that disagrees with the
    scores (a sample missing, or on the wrong side) is an error, not a result."""
    split, names = flow.folder("split"), {"pool": POOL_COLUMNS, "kept": OUT_COLUMNS, "dropped": OUT_COLUMNS}
    ext = Extremes(n_examples)
    totals = {"pool_samples": 0, "kept_samples": 0, "pool_tokens": 0, "kept_tokens": 0}
    empty = {"rating": None, "label": None, "split": None}
    with contextlib.ExitStack() as stack:  # each file appears whole, on success only
        outs = {name: _ParquetOut(stack.enter_context(atomic_path(out / f"{name}.parquet")), cols)
                for name, cols in names.items()}
        for shard in pool.files:
            scores = shard_scores(flow.folder("score") / "embeddings", shard.stem)
            rows = []
            for rec in iter_jsonl(shard, strict=True):
                row = {**rec, "score": scores[rec["id"]], **labels.get(rec["id"], empty)}
                row["kept"] = row["score"] >= threshold
                rows.append(row)
                ext.add(row["score"], {k: row[k] for k in ("path", "score", "text")})
                totals["pool_samples"] += 1
                totals["pool_tokens"] += row["n_tokens"]
                totals["kept_samples"] += row["kept"]
                totals["kept_tokens"] += row["n_tokens"] * row["kept"]
            outs["pool"].write(rows)
            for side in ("kept", "dropped"):
                parts = sorted((split / side).glob(f"{shard.stem}.*.jsonl"))
                path = parts[0] if len(parts) == 1 else split / side / f"{shard.stem}.*.jsonl"
                written = [r for f in parts for r in iter_jsonl(f, strict=True)]
                expect = [r["id"] for r in rows if r["kept"] == (side == "kept")]
                if [r["id"] for r in written] != expect:
                    raise DataError(f"{path}: the split pipeline wrote {len(written)} {side} samples, the scores "
                                    f"say {len(expect)}; rerun with --force")
                outs[side].write(written)
        for o in outs.values():
            o.close()
    files = {name: out / f"{name}.parquet" for name in names}
    return files, {"high": ext.high(), "low": ext.low()}, totals


def examples_table(pool, n: int = 5):
    """The n highest- and n lowest-scored samples side by side (paper Fig. 2.x style)."""
    return examples_frame(pool.nlargest(n, "score").to_dict("records"), pool.nsmallest(n, "score").to_dict("records"))


def examples_frame(high: list[dict[str, Any]], low: list[dict[str, Any]]):
    """The highest- and lowest-scored rows (path, score, text each) side by side, code cut at 600 characters."""
    import pandas as pd

    cols = ["path", "score", "text"]
    top, bottom = pd.DataFrame(high, columns=cols), pd.DataFrame(low, columns=cols)
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
