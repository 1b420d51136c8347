"""Exact and near-duplicate removal for synthetic records: datatrove's MinHash stages find the candidates,
the exact Jaccard decides.

`dedup_records` (what the stage calls) writes the records as `tasks` contiguous JSONL shards and runs
`phi1lib.dataflow.minhash_dedup` on them with the configured executor (local here: tasks x workers; Slurm or Ray
on a cluster): signatures -> buckets -> clusters -> filter, memory bounded per task. MinHash is tuned below the
threshold (CANDIDATE_SLACK: a pair at Jaccard 0.85 shares a band with probability 0.997) and only proposes
clusters; `verify_cluster` then decides within each cluster as the in-memory reference does: the earliest
record is kept, a later one is "exact duplicate of X" (same text once case is folded and whitespace collapsed)
or "near duplicate of X (Jaccard 0.88 on word 5-grams)" when its exact Jaccard with a kept member reaches the
threshold, else kept. Only one cluster's shingles are in memory at a time (never every kept record's).

`deduplicate` is the in-memory reference it replaced (word 5-gram shingles of every kept record held in
memory, datasketch LSH candidates verified with the exact Jaccard, greedy keep-first): kept to measure how the
two differ, not used by the stage.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..dataflow import MinhashSettings, duplicates, minhash_dedup
from ..dataflow.dedup import normalize, text_key
from ..errors import ConfigError

_TOKEN = re.compile(r"\w+|[^\w\s]")
# MinHash proposes candidates at a threshold this much lower (recall matters), the exact Jaccard decides.
CANDIDATE_SLACK = 0.8


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the normalized token stream (the whole text when it is shorter than n)."""
    toks = _TOKEN.findall(normalize(text))
    if len(toks) < n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class DedupResult:
    """Per input record: None if kept, else (index of the record it duplicates, kind, similarity)."""

    duplicate_of: list[tuple[int, str, float] | None]
    stats: dict = field(default_factory=dict)

    @property
    def keep(self) -> list[int]:
        return [i for i, d in enumerate(self.duplicate_of) if d is None]

    def reason(self, i: int, ids: Sequence[str] | None = None) -> str | None:
        d = self.duplicate_of[i]
        if d is None:
            return None
        j, kind, sim = d
        other = ids[j] if ids is not None else f"#{j}"
        if kind == "exact":
            return f"exact duplicate of {other}"
        return f"near duplicate of {other} (Jaccard {sim:.2f} on word {self.stats.get('ngram', 5)}-grams)"


def exact_duplicates(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of its first exact (normalized) duplicate earlier in the list, or None."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, t in enumerate(texts):
        k = text_key(t)
        out.append(first.get(k))
        first.setdefault(k, i)
    return out


def deduplicate(texts: Sequence[str], *, threshold: float = 0.85, num_perm: int = 128, ngram: int = 5,
                seed: int = 1, near: bool = True, lsh_slack: float = 0.8) -> DedupResult:
    """Mark exact and near duplicates (Jaccard >= threshold); the earliest record of each group is kept."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"dedup threshold must be in (0, 1], got {threshold}")
    if num_perm < 16:
        raise ConfigError(f"num_perm must be >= 16 permutations, got {num_perm}")
    exact = exact_duplicates(texts)
    dup: list[tuple[int, str, float] | None] = [(j, "exact", 1.0) if j is not None else None for j in exact]
    stats = {"n": len(texts), "exact": sum(d is not None for d in dup), "near": 0, "lsh_candidates": 0,
             "threshold": threshold, "ngram": ngram, "num_perm": num_perm}
    if near and len(texts) > 1:
        from datasketch import MinHash, MinHashLSH

        # LSH is tuned below the verification threshold: it only proposes candidates (recall matters),
        # and every candidate is verified with the exact Jaccard, so precision is not at stake.
        lsh = MinHashLSH(threshold=max(0.05, threshold * lsh_slack), num_perm=num_perm)
        sets: dict[int, set[str]] = {}
        for i, t in enumerate(texts):
            if dup[i] is not None:
                continue
            sh = shingles(t, ngram)
            m = MinHash(num_perm=num_perm, seed=seed)
            m.update_batch(s.encode("utf-8", "surrogatepass") for s in sh)
            # Query against the records kept so far: the earliest member of a group wins.
            best = None
            for j in lsh.query(m):
                stats["lsh_candidates"] += 1
                sim = jaccard(sh, sets[j])
                if sim >= threshold and (best is None or sim > best[1]):
                    best = (j, sim)
            if best is not None:
                dup[i] = (best[0], "near", best[1])
                stats["near"] += 1
                continue
            sets[i] = sh
            lsh.insert(i, m)
    stats["kept"] = sum(d is None for d in dup)
    return DedupResult(dup, stats)


def dedup_records(records: Sequence[dict], *, key: str = "text", threshold: float = 0.85, executor: str = "local",
                  tasks: int = 1, workers: int | None = 1, work_dir: str | Path | None = None,
                  cluster: dict[str, Any] | None = None) -> tuple[list[dict], list[dict]]:
    """(kept, dropped) records through datatrove's MinHash dedup; each dropped one is a copy with `reason` naming
    the record it duplicates. `tasks` shards (contiguous runs of records, so the earliest of each cluster is kept
    whatever the split), `workers` at once locally (1: in this process, no process start-up); `executor`
    local | slurm | ray with its `cluster` settings. `work_dir`: where datatrove's files go (a cluster needs a
    shared folder); None = a temporary folder, removed afterwards. A folder named by the records' content is used
    under `work_dir`, so a rerun on the same records skips the finished tasks."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"dedup threshold must be in (0, 1], got {threshold}")
    if not records:
        return [], []
    settings = candidate_settings(threshold)
    n = max(1, min(tasks, len(records)))
    ids = [str(r.get("id", i)) for i, r in enumerate(records)]
    with _work_folder(work_dir, records, key, n, settings) as work:
        _write_shards(records, key, work / "input", n)
        minhash_dedup(work / "input", work, tasks=n, workers=workers, settings=settings, executor=executor,
                      quiet=True, **(cluster or {}))
        clusters: dict[int, list[int]] = {}
        for i, j, _ in duplicates(work):
            clusters.setdefault(int(j), [int(j)]).append(int(i))
    why: dict[int, str] = {}
    for members in clusters.values():
        why.update(verify_cluster([records[i][key] for i in sorted(members)], sorted(members), ids, threshold,
                                  settings.n_grams))
    kept = [r for i, r in enumerate(records) if i not in why]
    return kept, [{**r, "reason": why[i]} for i, r in enumerate(records) if i in why]


def verify_cluster(texts: Sequence[str], positions: Sequence[int], ids: Sequence[str], threshold: float,
                   ngram: int) -> dict[int, str]:
    """The records of one MinHash cluster (in record order) that are duplicates, with their reason, as the
    in-memory reference decides: an exact copy (normalised text) of an earlier member, or a record whose exact
    word n-gram Jaccard with a kept member reaches `threshold` (the best one named). Only one cluster's
    shingles are held at a time."""
    first_of: dict[str, int] = {}
    kept: list[tuple[int, set[str]]] = []
    out: dict[int, str] = {}
    for pos, text in zip(positions, texts):
        key = text_key(text)
        if key in first_of:
            out[pos] = f"exact duplicate of {ids[first_of[key]]}"
            continue
        first_of[key] = pos
        sh = shingles(text, ngram)
        best = max(((jaccard(sh, other), -j) for j, other in kept), default=(0.0, 0))
        if kept and best[0] >= threshold:
            out[pos] = f"near duplicate of {ids[-best[1]]} (Jaccard {best[0]:.2f} on word {ngram}-grams)"
        else:
            kept.append((pos, sh))
    return out


def candidate_settings(threshold: float) -> MinhashSettings:
    """The MinHash banding that proposes candidate clusters for a Jaccard `threshold`: centred below it
    (CANDIDATE_SLACK), so pairs at the threshold are almost always proposed; the exact Jaccard then decides."""
    return MinhashSettings.for_threshold(max(0.05, threshold * CANDIDATE_SLACK))


def dedup_options(config: Any) -> dict[str, Any]:
    """dedup_records' settings from a SynthesisConfig: threshold, executor, tasks, workers, work folder, cluster."""
    return dict(threshold=config.dedup_threshold, executor=config.dedup_executor, tasks=config.dedup_tasks,
                workers=config.dedup_workers, work_dir=config.dedup_dir, cluster=dict(config.dedup_cluster) or None)


def _write_shards(records: Sequence[dict], key: str, folder: Path, n: int) -> None:
    """Records as n JSONL files of contiguous runs ({"id": position, "text"}), file k read by task k."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(records) // n)
    for k in range(n):
        with open(folder / f"part{k:05d}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(k * size, min(len(records), (k + 1) * size)):
                fh.write(json.dumps({"id": str(i), "text": records[i][key]}) + "\n")


@contextmanager
def _work_folder(work_dir: str | Path | None, records: Sequence[dict], key: str, n: int,
                 settings: MinhashSettings) -> Iterator[Path]:
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="phi1-dedup-")
        try:
            yield Path(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    h = hashlib.sha1(repr((n, settings)).encode())
    for r in records:
        h.update(hashlib.sha1(r[key].encode("utf-8", "surrogatepass")).digest())
    yield Path(work_dir) / f"dedup-{h.hexdigest()[:16]}"
