"""The project's own steps as datatrove blocks (each a PipelineStep: documents in, documents out).

`EmbedScore` (the project's Embedder and a fitted classifier, per document, on the task's own device; each pool
shard's embeddings and scores written keyed by sample id), `ShardScores` (those scores read back into metadata),
`ScoreFilter` (a global threshold; dropped documents to an exclusion writer), `PeakMemory` (peak RSS per task),
and `HashEmbedScore`, a cheap deterministic stand-in scorer for scale benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
from pathlib import Path
from typing import Any, Callable

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from ..embed import Embedder
from ..errors import ConfigError, DataError

_TOKEN = re.compile(r"\w+")


def task_device(device: str, rank: int) -> str:
    """The torch device of task `rank`: "cuda" spreads tasks over the GPUs (cuda:rank % device count); an
    explicit "cuda:N" or "cpu" is used as given."""
    if device != "cuda":
        return device
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        raise ConfigError("device='cuda': torch sees no CUDA device on this machine; use device=cpu")
    return f"cuda:{rank % n}"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically (a reader, or a rerun after a crash, never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


class EmbedScore(PipelineStep):
    """The project's Embedder and a fitted classifier, per document: metadata["score"] = P(educational).

    `embedder`: Embedder keyword arguments (model, pooling, max_length, batch_size, device, cache); each task
    builds its own embedder on `task_device(device, rank)`. `classifier`: the saved classifier's path, loaded
    per task by `load` (path -> a model with predict_proba). `prepare`: what of each text is embedded (e.g. the
    filter's view). Documents are embedded `batch_size` at a time; each shard's (metadata[shard_key]; the task
    rank when absent) ids, vectors and scores are written to `<output_folder>/<shard>.npz` when the shard ends,
    so memory holds one shard's vectors at most. `threads` caps torch's CPU threads per task."""

    name = "embed + classify"
    type = "🔢 - SCORER"

    def __init__(self, embedder: dict[str, Any], classifier: str, output_folder: str, *,
                 load: Callable[[str], Any] | None = None, prepare: Callable[[str], str] | None = None,
                 batch_size: int = 256, threads: int | None = None, shard_key: str = "shard"):
        super().__init__()
        self.embedder, self.classifier, self.output_folder = dict(embedder), str(classifier), str(output_folder)
        self.load, self.prepare, self.batch_size, self.threads = load, prepare, batch_size, threads
        self.shard_key = shard_key

    def _model(self):
        if self.load is not None:
            return self.load(self.classifier)
        import joblib

        return joblib.load(self.classifier)

    def run(self, data, rank: int = 0, world_size: int = 1):
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        embedder = Embedder(**{**self.embedder, "device": task_device(self.embedder.get("device", "cpu"), rank),
                               "progress": False})
        clf = self._model()
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        shard, ids, vecs, scores = None, [], [], []
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                texts = [self.prepare(d.text) if self.prepare else d.text for d in batch]
                X = embedder.embed(texts)
                p = clf.predict_proba(X)[:, 1]
            for doc, x, s in zip(batch, X, p):
                key = str(doc.metadata.get(self.shard_key, f"{rank:05d}"))
                if key != shard:
                    self._flush(shard, ids, vecs, scores)
                    shard, ids, vecs, scores = key, [], [], []
                doc.metadata["score"] = float(s)
                ids.append(doc.id)
                vecs.append(x)
                scores.append(float(s))
                self.stat_update("scored")
                yield doc
        self._flush(shard, ids, vecs, scores)
        self.stat_update("embedded", value=embedder.texts_embedded_)
        self.stat_update("cache_hits", value=embedder.cache_hits_)

    def _flush(self, shard: str | None, ids: list, vecs: list, scores: list) -> None:
        if shard is None or not ids:
            return
        _save_npz(Path(self.output_folder) / f"{shard}.npz", ids=np.array(ids),
                  vectors=np.stack(vecs).astype(np.float32), scores=np.array(scores, dtype=np.float64))


def shard_scores(folder: str | Path, shard: str) -> dict[str, float]:
    """{sample id: score} of one shard written by EmbedScore."""
    path = Path(folder) / f"{shard}.npz"
    if not path.is_file():
        raise DataError(f"{path}: no scores for shard {shard}; the scoring pipeline has not finished it")
    with np.load(path) as z:
        return dict(zip(z["ids"].tolist(), z["scores"].tolist()))


def read_scores(folder: str | Path) -> np.ndarray:
    """Every score EmbedScore wrote under `folder`, shard by shard in name order (only the scores are read)."""
    parts = []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path) as z:
            parts.append(z["scores"])
    return np.concatenate(parts) if parts else np.zeros(0)


class ShardScores(PipelineStep):
    """Put each document's score, read back from EmbedScore's per-shard files, into metadata["score"]
    (one shard's scores in memory at a time; documents arrive shard by shard)."""

    name = "scores per shard"
    type = "🔢 - SCORER"

    def __init__(self, folder: str, shard_key: str = "shard"):
        super().__init__()
        self.folder, self.shard_key = str(folder), shard_key

    def run(self, data, rank: int = 0, world_size: int = 1):
        shard, scores = None, {}
        for doc in data:
            key = str(doc.metadata.get(self.shard_key, f"{rank:05d}"))
            if key != shard:
                shard, scores = key, shard_scores(self.folder, key)
            if doc.id not in scores:
                raise DataError(f"{self.folder}/{shard}.npz: no score for document {doc.id}; rerun the scoring "
                                f"pipeline on the same pool")
            doc.metadata["score"] = scores[doc.id]
            yield doc


class HashEmbedScore(PipelineStep):
    """A cheap deterministic stand-in for embedder + classifier, per document: a hashing-trick bag of words
    (`dims` buckets, L2-normalised) scored by a fixed seeded linear model into metadata["score"] in (0, 1).
    For scale benchmarks and tests of the pipeline, where the real embedder would dominate the time."""

    name = "hash-embed score"
    type = "🔢 - SCORER"

    def __init__(self, dims: int = 256, seed: int = 0):
        super().__init__()
        import numpy as np

        self.dims = dims
        self.weights = np.random.default_rng(seed).normal(size=dims)

    def score(self, text: str) -> float:
        import zlib

        import numpy as np

        v = np.zeros(self.dims)
        for tok in _TOKEN.findall(text.lower()):
            v[zlib.crc32(tok.encode()) % self.dims] += 1.0
        n = np.linalg.norm(v)
        return float(1 / (1 + np.exp(-(v @ self.weights) / (n or 1.0))))

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            with self.track_time():
                doc.metadata["score"] = self.score(doc.text)
            self.stat_update("scored")
            yield doc


class ScoreFilter(PipelineStep):
    """Keep documents whose metadata["score"] is at least `threshold` (chosen globally, e.g. on the labelled
    split or over the whole pool's scores); dropped documents go to `exclusion_writer` when one is given.
    A document without a score is an error (it would silently count as dropped). (Not datatrove's BaseFilter:
    importing datatrove.pipeline.filters loads every filter it ships, ~1 s.)"""

    name = "score threshold"
    type = "🔻 - FILTER"

    def __init__(self, threshold: float, exclusion_writer=None):
        super().__init__()
        self.threshold, self.exclusion_writer = threshold, exclusion_writer

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            for doc in data:
                if "score" not in doc.metadata:
                    raise DataError(f"document {doc.id}: no metadata['score']; put a scorer (EmbedScore, "
                                    f"ShardScores, HashEmbedScore) before ScoreFilter")
                if doc.metadata["score"] >= self.threshold:
                    self.stat_update("kept")
                    yield doc
                else:
                    self.stat_update("dropped")
                    if writer is not None:
                        writer.write(doc, rank)


class PeakMemory(PipelineStep):
    """Last block of a pipeline: passes documents through, then records this task's peak RSS
    (`<folder>/peak_rss_<rank>.json`, MB) so a benchmark can report memory per task."""

    name = "peak memory"
    type = "📏 - MEASURE"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        yield from data or ()
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (Path(self.folder) / f"peak_rss_{rank:05d}.json").write_text(json.dumps({"rank": rank, "peak_mb": peak_mb}))


def read_peaks(folder: str | Path) -> list[float]:
    """The peak RSS (MB) PeakMemory recorded for each task, in rank order."""
    return [json.loads(p.read_text())["peak_mb"] for p in sorted(Path(folder).glob("peak_rss_*.json"))]
