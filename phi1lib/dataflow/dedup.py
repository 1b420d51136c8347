"""Near-duplicate removal with datatrove's four MinHash stages, memory bounded at any corpus size:

    signatures (per task: each document's MinHash, split into bands, sorted per band)
 -> buckets    (per band: merge the sorted signatures, emit pairs that share a whole band)
 -> clusters   (one task: union-find over the pairs; all but one document per cluster to remove)
 -> filter     (per task: drop the removed ids, write kept and removed documents)

Documents are split into words by `CodeWordTokenizer` (identifiers, numbers and operators, like
synthesis.dedup) instead of datatrove's natural-language tokenizers, which need spaCy models. With b bands
of r hashes, a pair of Jaccard similarity s is caught with probability 1 - (1 - s^r)^b: `for_threshold`
picks b and r whose curve's midpoint (1/b)^(1/r) is nearest the threshold (0.85: 7 bands of 12 hashes).
Here candidates are not re-checked with their exact Jaccard: a pair that shares a whole band is a duplicate,
as in FineWeb's pipeline, and clusters are transitive (A~B and B~C put A, B and C in one cluster). The
synthesis stage (synthesis.dedup) runs these stages below its threshold and verifies each cluster exactly.

Two changes to datatrove's behaviour: a text shorter than n words gets one shingle of all its words
(`CodeWordTokenizer(min_words=n)`; datatrove gives it no signature, so it could never be caught), and the
clustering keeps the earliest document of each cluster (`KeepFirstCluster`; datatrove keeps the root of its
union by size), so which document survives does not depend on how the input is split over tasks when the
input files are contiguous chunks read one per task. Exact duplicates (same text once case is folded and
whitespace collapsed) have equal signatures, so they are found by the same four stages; `TextHash` records the
normalised text's SHA-1 so that `duplicates` can tell an exact copy from a near one and name the kept document.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from datatrove.pipeline.base import PipelineStep
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.word_tokenizers import WordTokenizer

from .executors import make_executor, run_to_completion

_TOKEN = re.compile(r"\w+|[^\w\s]")


class CodeWordTokenizer(WordTokenizer):
    """Words of source code and prose: identifiers, numbers and single punctuation marks. A text of fewer than
    `min_words` words comes back as all its words joined, padded with empty words to `min_words`, so that
    datatrove's n-gram step (n = min_words) gives it exactly one shingle instead of none (a short text could
    otherwise never be caught, not even as an exact copy)."""

    def __init__(self, min_words: int = 1):
        super().__init__(language="code")
        self.min_words = min_words

    def word_tokenize(self, text: str) -> list[str]:
        toks = _TOKEN.findall(text)
        if 0 < len(toks) < self.min_words:
            return [" ".join(toks)] + [""] * (self.min_words - 1)
        return toks

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]


def normalize(text: str) -> str:
    """Case-folded text with runs of whitespace collapsed (formatting-only changes vanish)."""
    return " ".join(text.split()).casefold()


def text_key(text: str) -> str:
    """SHA-1 of the normalised text: equal for exact duplicates."""
    return hashlib.sha1(normalize(text).encode("utf-8", "surrogatepass")).hexdigest()


class KeepFirstCluster(PipelineStep):
    """MinHash stage 3 (one task): union-find over the duplicate pairs; of each cluster the document read first
    (lowest task, then position) is kept. Writes `<task>.remove` (positions to drop) and `<task>.clusters`
    (position, cluster id) for every task holding a clustered document, as datatrove's MinhashDedupFilter reads
    them (with load_cluster_ids). Memory: one entry per document that has a duplicate."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash stage 3 (keep first)"

    def __init__(self, input_folder: str, output_folder: str):
        super().__init__()
        from datatrove.io import get_datafolder

        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if world_size != 1:
            raise ValueError(f"{self.name}: runs as one task, got {world_size}")
        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def find(x):
            root = x
            while parent.get(root, root) != root:
                root = parent[root]
            while x != root:
                parent[x], x = root, parent[x]
            return root

        with self.track_time():
            for dup_file in self.input_folder.list_files(glob_pattern="*.dups"):
                with self.input_folder.open(dup_file, "rb") as f:
                    for f1, d1, f2, d2 in read_tuples_from_file(f, "4I", lines_to_buffer=5):
                        a, b = find((f1, d1)), find((f2, d2))
                        if a != b:
                            parent.setdefault(min(a, b), min(a, b))
                            parent[max(a, b)] = min(a, b)
            cluster_ids: dict[tuple[int, int], int] = {}
            with self.output_folder.get_output_file_manager(mode="wb") as out:
                for node in sorted(parent):
                    root = find(node)
                    file, doc = node
                    out.write(f"{file:06d}.remove", struct.pack("<I", doc) if node != root else b"")
                    cid = cluster_ids.setdefault(root, len(cluster_ids))
                    out.write(f"{file:06d}.clusters", struct.pack("<II", doc, cid))
                    self.stat_update("to_remove" if node != root else "kept_of_cluster")


class TextHash(PipelineStep):
    """metadata["text_sha1"]: SHA-1 of the normalised text (exact duplicates share it)."""

    name = "text hash"
    type = "#️⃣ - HASH"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata["text_sha1"] = text_key(doc.text)
            yield doc


@dataclass(frozen=True)
class MinhashSettings:
    n_grams: int = 5
    num_buckets: int = 7  # = for_threshold(0.85), synthesis.dedup's threshold
    hashes_per_bucket: int = 12
    seed: int = 1

    @classmethod
    def for_threshold(cls, threshold: float, max_hashes: int = 128, n_grams: int = 5) -> "MinhashSettings":
        """Bands b and rows r (b * r <= max_hashes) whose S-curve midpoint (1/b)^(1/r) is nearest the threshold."""
        best = min(((b, r) for r in range(1, max_hashes + 1) for b in range(1, max_hashes // r + 1)),
                   key=lambda br: (abs((1 / br[0]) ** (1 / br[1]) - threshold), -br[0] * br[1]))
        return cls(n_grams=n_grams, num_buckets=best[0], hashes_per_bucket=best[1])

    @property
    def threshold(self) -> float:
        return (1 / self.num_buckets) ** (1 / self.hashes_per_bucket)

    def catch_probability(self, jaccard: float) -> float:
        return 1 - (1 - jaccard ** self.hashes_per_bucket) ** self.num_buckets

    def config(self):
        """datatrove's MinhashConfig. Text is normalised like synthesis.dedup (case folded, whitespace collapsed):
        punctuation and numbers are kept, since in code `x1`/`x2` and `a+b`/`a*b` are different programs."""
        from datatrove.pipeline.dedup.minhash import MinhashConfig
        from datatrove.utils.text import TextNormConfig

        norm = TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=False,
                              norm_unicode_diacritics=False, norm_numbers=False)
        return MinhashConfig(n_grams=self.n_grams, num_buckets=self.num_buckets,
                             hashes_per_bucket=self.hashes_per_bucket, seed=self.seed, norm_config=norm)


def minhash_dedup(input_folder: str | Path, work_dir: str | Path, *, tasks: int = 1, workers: int | None = None,
                  settings: MinhashSettings = MinhashSettings(), executor: str = "local", text_key: str = "text",
                  id_key: str = "id", extra_blocks: tuple = (), quiet: bool = False, **cluster: Any) -> dict[str, Any]:
    """Deduplicate the JSONL files of `input_folder` into `<work_dir>/kept` and `<work_dir>/removed` (JSONL; each
    document's metadata has `minhash_cluster_id`, -1 when it has no duplicate, and `text_sha1`), with `tasks` tasks
    per parallel stage; the earliest document of each cluster is kept (`KeepFirstCluster`). `extra_blocks` run
    before the writer of kept documents (e.g. a PeakMemory). Finished tasks are skipped on a rerun (datatrove's
    completions in `<work_dir>/logs`). Per-stage wall seconds are returned under "seconds". `quiet`: datatrove's
    console log of tasks run in this process goes to `<work_dir>/logs/datatrove.log` instead of stderr."""
    import time

    work = Path(work_dir)
    seconds: dict[str, float] = {}
    previous = None
    with quiet_logs(work / "logs" / "datatrove.log") if quiet else contextlib.nullcontext():
        for name, pipeline, n in minhash_stages(input_folder, work, tasks=tasks, settings=settings,
                                                text_key=text_key, id_key=id_key, extra_blocks=extra_blocks):
            # Locally each stage runs to its end here (timed); on Slurm/Ray the stages are chained with
            # `depends` and submitted together by the last one.
            t0 = time.perf_counter()
            previous = make_executor(executor, pipeline, tasks=n, workers=min(n, workers or n),
                                     logging_dir=str(work / "logs" / name),
                                     depends=None if executor == "local" else previous, **cluster)
            if executor == "local" or name == "filter":
                run_to_completion(previous, what=f"MinHash dedup, stage {name}")
            seconds[name] = time.perf_counter() - t0
    kept, removed = _count_lines(work / "kept"), _count_lines(work / "removed")
    return {"documents": kept + removed, "kept": kept, "removed": removed, "kept_folder": str(work / "kept"),
            "removed_folder": str(work / "removed"), "tasks": tasks, "bands": settings.num_buckets,
            "rows": settings.hashes_per_bucket, "threshold": round(settings.threshold, 3), "seconds": seconds}


def minhash_stages(input_folder: str | Path, work_dir: str | Path, *, tasks: int = 1,
                   settings: MinhashSettings = MinhashSettings(), text_key: str = "text", id_key: str = "id",
                   extra_blocks: tuple = ()) -> list[tuple[str, list, int]]:
    """The four MinHash stages as (name, pipeline of blocks, tasks), in order (what minhash_dedup runs)."""
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work, cfg = Path(work_dir), settings.config()

    def reader():
        return JsonlReader(str(input_folder), text_key=text_key, id_key=id_key, glob_pattern="*.jsonl*")

    return [
        ("signatures", [reader(), MinhashDedupSignature(output_folder=str(work / "signatures"), config=cfg,
                                                        language=CodeWordTokenizer(min_words=cfg.n_grams))], tasks),
        ("buckets", [MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                                         config=cfg)], cfg.num_buckets),
        ("clusters", [KeepFirstCluster(str(work / "buckets"), str(work / "remove_ids"))], 1),
        ("filter", [reader(), TextHash(),
                    MinhashDedupFilter(input_folder=str(work / "remove_ids"), load_cluster_ids=True,
                                       exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
                    *extra_blocks, JsonlWriter(str(work / "kept"), compression=None)], tasks)]


def describe(stages: list[tuple[str, list, int]]) -> str:
    """One line per stage: `name (N tasks): block -> block -> ...` (datatrove's block types and names)."""
    return "\n".join(f"{name} ({n} task{'s' if n > 1 else ''}): " + " -> ".join(f"{b.type} {b.name}" for b in blocks)
                     for name, blocks, n in stages)


@contextmanager
def quiet_logs(path: Path) -> Iterator[None]:
    """datatrove's console log (loguru on stderr) of the tasks run in this process, into `path` instead."""
    from datatrove.utils.logging import logger, setup_default_logger

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh, contextlib.redirect_stderr(fh):
        logger.remove()
        setup_default_logger()
        try:
            yield
        finally:
            logger.remove()
    setup_default_logger()


def duplicates(work_dir: str | Path) -> Iterator[tuple[str, str, bool]]:
    """(removed id, id of the kept document of its cluster, exact copy?) for every document minhash_dedup removed.
    Reads the kept documents' cluster ids first (memory: one entry per cluster), then streams the removed ones."""
    work = Path(work_dir)
    keeper: dict[int, tuple[str, str]] = {}
    for doc in _iter_docs(work / "kept"):
        cid = doc.get("metadata", {}).get("minhash_cluster_id", -1)
        if cid >= 0:
            keeper[cid] = (doc["id"], doc["metadata"].get("text_sha1"))
    for doc in _iter_docs(work / "removed"):
        kept_id, sha = keeper[doc["metadata"]["minhash_cluster_id"]]
        yield doc["id"], kept_id, sha is not None and sha == doc["metadata"].get("text_sha1")


def _iter_docs(folder: Path) -> Iterator[dict]:
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def _count_lines(folder: Path) -> int:
    total = 0
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total
