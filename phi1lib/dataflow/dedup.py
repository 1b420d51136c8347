"""Near-duplicate removal with datatrove's four MinHash stages, memory bounded at any corpus size:

    signatures (per task: each document's MinHash, split into bands, sorted per band)
 -> buckets    (per band: merge the sorted signatures, emit pairs that share a whole band)
 -> clusters   (one task: union-find over the pairs; all but one document per cluster to remove)
 -> filter     (per task: drop the removed ids, write kept and removed documents)

Documents are split into words by `CodeWordTokenizer` (identifiers, numbers and operators, like
synthesis.dedup) instead of datatrove's natural-language tokenizers, which need spaCy models. With b bands
of r hashes, a pair of Jaccard similarity s is caught with probability 1 - (1 - s^r)^b: `for_threshold`
picks b and r whose curve's midpoint (1/b)^(1/r) is nearest the threshold (0.85: 7 bands of 12 hashes).
Unlike synthesis.dedup (datasketch, in memory), candidates are not re-checked with their exact Jaccard:
a pair that shares a whole band is a duplicate, as in FineWeb's pipeline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.utils.word_tokenizers import WordTokenizer

from .executors import make_executor

_TOKEN = re.compile(r"\w+|[^\w\s]")


class CodeWordTokenizer(WordTokenizer):
    """Words of source code and prose: identifiers, numbers and single punctuation marks."""

    def __init__(self):
        super().__init__(language="code")

    def word_tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]


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
                  id_key: str = "id", extra_blocks: tuple = (), **cluster: Any) -> dict[str, Any]:
    """Deduplicate the JSONL files of `input_folder` into `<work_dir>/kept` and `<work_dir>/removed` (JSONL),
    with `tasks` tasks per parallel stage. `extra_blocks` run before the writer of kept documents (e.g. a
    PeakMemory). Finished tasks are skipped on a rerun (datatrove's completions in `<work_dir>/logs`)."""
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(work_dir)
    cfg = settings.config()

    def reader():
        return JsonlReader(str(input_folder), text_key=text_key, id_key=id_key, glob_pattern="*.jsonl*")

    def run(name, pipeline, n, depends=None):
        return make_executor(executor, pipeline, tasks=n, workers=min(n, workers or n),
                             logging_dir=str(work / "logs" / name), depends=depends, **cluster)

    sigs = run("signatures", [reader(), MinhashDedupSignature(output_folder=str(work / "signatures"), config=cfg,
                                                              language=CodeWordTokenizer())], tasks)
    buckets = run("buckets", [MinhashDedupBuckets(input_folder=str(work / "signatures"),
                                                  output_folder=str(work / "buckets"), config=cfg)],
                  cfg.num_buckets, sigs)
    clusters = run("clusters", [MinhashDedupCluster(input_folder=str(work / "buckets"),
                                                    output_folder=str(work / "remove_ids"), config=cfg)], 1, buckets)
    final = run("filter", [reader(),
                           MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                                              exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
                           *extra_blocks, JsonlWriter(str(work / "kept"), compression=None)], tasks, clusters)
    final.run()
    kept, removed = _count_lines(work / "kept"), _count_lines(work / "removed")
    return {"documents": kept + removed, "kept": kept, "removed": removed, "kept_folder": str(work / "kept"),
            "removed_folder": str(work / "removed"), "tasks": tasks, "bands": cfg.num_buckets,
            "rows": cfg.hashes_per_bucket, "threshold": round(settings.threshold, 3)}


def _count_lines(folder: Path) -> int:
    total = 0
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total
