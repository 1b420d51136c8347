"""The project's own steps as datatrove blocks (each a PipelineStep: documents in, documents out)."""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

_TOKEN = re.compile(r"\w+")


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
    """Keep documents whose metadata["score"] is at least `threshold` (chosen globally, e.g. on the labelled split)."""

    name = "score threshold"
    type = "🔻 - FILTER"

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if doc.metadata.get("score", 0.0) >= self.threshold:
                self.stat_update("kept")
                yield doc
            else:
                self.stat_update("dropped")


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
