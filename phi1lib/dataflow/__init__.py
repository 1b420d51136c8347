"""Data stages on datatrove: pipelines of blocks (reader -> steps -> writer) run by datatrove's local executor
(tasks x workers on one machine) or its Slurm/Ray executors on a cluster.

`executors` (one place that builds an executor from a kind and its settings), `dedup` (near-duplicate removal with
datatrove's four MinHash stages: signatures -> buckets -> clusters -> filter, with a code-aware word tokenizer),
`blocks` (the project's own steps as datatrove blocks: the project's embedder + classifier per shard on the task's
device, scores read back per shard, a score threshold, a per-task peak-memory record, and a deterministic stand-in
scorer). The filtering stage scores and thresholds its pool through these blocks, synthesis deduplicates through
`dedup`, and decontamination runs its own blocks (decontam.blocks); `benchmarks/bench_scale.py` measures them at
10k-1M documents.
"""

from .blocks import (EmbedScore, HashEmbedScore, PeakMemory, ScoreFilter, ShardScores, read_peaks, read_scores,
                     shard_scores, task_device)
from .dedup import (CodeWordTokenizer, KeepFirstCluster, MinhashSettings, TextHash, describe, duplicates,
                    minhash_dedup, minhash_stages)
from .executors import EXECUTORS, check_available, make_executor, run_to_completion

__all__ = ["EXECUTORS", "make_executor", "check_available", "run_to_completion", "CodeWordTokenizer",
           "MinhashSettings", "minhash_dedup", "minhash_stages", "describe", "duplicates",
           "KeepFirstCluster", "TextHash", "HashEmbedScore", "EmbedScore", "ShardScores", "ScoreFilter",
           "PeakMemory", "read_peaks", "read_scores", "shard_scores", "task_device"]
