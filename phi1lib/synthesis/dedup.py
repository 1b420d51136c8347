"""Exact and near-duplicate detection for text records (normalized hashes; MinHash LSH via datasketch).

Exact: SHA-1 of the text with whitespace collapsed and case folded. Near: word 5-gram shingles,
MinHash signatures indexed in a `datasketch.MinHashLSH`; every LSH candidate is then verified
with the true Jaccard similarity of the shingle sets, so a reported pair really is that close.
The first occurrence of a group is kept; later ones name the record they duplicate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import ConfigError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    """Case-folded text with runs of whitespace collapsed (formatting-only changes vanish)."""
    return " ".join(text.split()).casefold()


def text_key(text: str) -> str:
    return hashlib.sha1(normalize(text).encode("utf-8", "surrogatepass")).hexdigest()


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


def dedup_records(records: Sequence[dict], *, key: str = "text", **kw) -> tuple[list[dict], list[dict]]:
    """(kept, dropped) records; each dropped one is a copy with `reason` naming the record it duplicates."""
    res = deduplicate([r[key] for r in records], **kw)
    ids = [str(r.get("id", i)) for i, r in enumerate(records)]
    kept, dropped = [], []
    for i, r in enumerate(records):
        why = res.reason(i, ids)
        if why is None:
            kept.append(r)
        else:
            dropped.append({**r, "reason": why})
    return kept, dropped
