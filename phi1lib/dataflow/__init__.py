"""Data stages on datatrove: pipelines of blocks (reader -> steps -> writer) run by datatrove's local executor
(tasks x workers on one machine) or its Slurm/Ray executors on a cluster.

`executors` (one place that builds an executor from a kind and its settings), `dedup` (near-duplicate removal with
datatrove's four MinHash stages: signatures -> buckets -> clusters -> filter, with a code-aware word tokenizer),
`blocks` (the project's own steps as datatrove blocks: a deterministic stand-in embedder and a classifier score,
a score threshold, a per-task peak-memory record). The filtering, synthesis and decontamination stages move onto
these pipelines next (issue #15); `benchmarks/bench_scale.py` measures them at 10k-1M documents.
"""

from .blocks import HashEmbedScore, PeakMemory, ScoreFilter, read_peaks
from .dedup import CodeWordTokenizer, MinhashSettings, minhash_dedup
from .executors import EXECUTORS, make_executor

__all__ = ["EXECUTORS", "make_executor", "CodeWordTokenizer", "MinhashSettings", "minhash_dedup", "HashEmbedScore",
           "ScoreFilter", "PeakMemory", "read_peaks"]
