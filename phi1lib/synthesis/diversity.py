"""Diversity report for synthetic records: distinct n-grams, repeated openings, coverage, embedding spread.

Synthetic textbooks fail quietly by repeating themselves ("In this section, we will ...");
these numbers make that visible before any training is paid for.

Coverage counts **prompt metadata**: which topics and audiences were *asked for* among the
accepted records, not what their text is about. `topic_in_text` checks the content: the share
of records whose own text contains a content word of the topic they were asked for.
"""

from __future__ import annotations

import collections
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .extractive import content_words

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over the whole collection (1.0 = no repetition)."""
    total, seen = 0, set()
    for t in texts:
        toks = tokens(t)
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def opening(text: str, n_words: int = 6) -> str:
    """The first `n_words` words of a record's prose (headings and code fences skipped)."""
    prose = _FENCE.sub(" ", text)
    words = []
    for line in prose.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        words.extend(re.findall(r"[\w'-]+", s.lower()))
        if len(words) >= n_words:
            break
    return " ".join(words[:n_words])


def repeated_openings(texts: Sequence[str], n_words: int = 6, top: int = 10) -> list[tuple[str, int]]:
    """The most common openings with their counts (only openings shared by >= 2 records)."""
    counts = collections.Counter(o for o in (opening(t, n_words) for t in texts) if o)
    return [(o, c) for o, c in counts.most_common(top) if c >= 2]


def coverage(records: Sequence[dict], key: str, universe: Sequence[str] | None = None) -> dict[str, Any]:
    """How many of the `universe` values of `key` appear, and how evenly (normalized entropy in [0, 1])."""
    counts = collections.Counter(r.get(key) for r in records if r.get(key) is not None)
    out: dict[str, Any] = {"distinct": len(counts)}
    if universe is not None:
        out["universe"] = len(universe)
        out["covered"] = sum(1 for u in universe if counts.get(u))
        out["fraction"] = out["covered"] / len(universe) if universe else 0.0
        out["missing"] = [u for u in universe if not counts.get(u)][:20]
    total = sum(counts.values())
    if len(counts) > 1:
        ent = -sum(c / total * math.log(c / total) for c in counts.values())
        out["evenness"] = ent / math.log(len(counts))
    else:
        out["evenness"] = 0.0
    out["top"] = counts.most_common(5)
    return out


def topic_in_text(records: Sequence[dict]) -> float | None:
    """Share of records (with a `topic`) whose text contains at least one content word of that topic
    (`extractive.content_words`: stop words dropped, plurals folded): a check of what was written,
    where coverage only counts what was asked. None when no record has a topic."""
    with_topic = [r for r in records if r.get("topic")]
    if not with_topic:
        return None
    hits = sum(bool(set(content_words(r["topic"])) & set(content_words(r.get("text") or ""))) for r in with_topic)
    return hits / len(with_topic)


def embedding_spread(vectors) -> dict[str, float]:
    """Mean pairwise cosine distance and mean distance to the centroid of unit-normalized vectors."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float64)
    if len(v) < 2:
        return {"mean_pairwise_cosine_distance": 0.0, "mean_distance_to_centroid": 0.0}
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
    n = len(v)
    s = v.sum(axis=0)
    # Mean cosine over distinct pairs from the sum vector: (|sum|^2 - n) / (n (n - 1)); O(n d), not O(n^2).
    mean_cos = (float(s @ s) - n) / (n * (n - 1))
    centroid = s / n
    return {"mean_pairwise_cosine_distance": 1.0 - mean_cos,
            "mean_distance_to_centroid": float(np.linalg.norm(v - centroid, axis=1).mean())}


@dataclass
class DiversityReport:
    kind: str
    n_records: int
    distinct: dict[str, float]  # "distinct-1" ... "distinct-4"
    openings: list  # [(opening, count)] most repeated
    repeated_opening_share: float  # fraction of records whose opening is shared with another record
    coverage: dict[str, dict] = field(default_factory=dict)  # field -> coverage summary (of prompt metadata)
    embedding: dict[str, float] = field(default_factory=dict)
    topic_in_text: float | None = None  # share of records whose text mentions a word of their topic (content)
    generator: str | None = None  # who made the records (their `generator` field; "a, b" when several)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self):
        """One-row DataFrame of the headline numbers (for side-by-side kind comparison). Coverage columns
        are named "(prompts)": they count the metadata of what was asked; topic_in_text checks the text."""
        import pandas as pd

        row = {"kind": self.kind, "generator": self.generator, "records": self.n_records, **self.distinct,
               "repeated_opening_share": self.repeated_opening_share}
        for k, c in self.coverage.items():
            if "fraction" in c:
                row[f"{k}_coverage (prompts)"] = c["fraction"]
            row[f"{k}_evenness (prompts)"] = c["evenness"]
        if self.topic_in_text is not None:
            row["topic_in_text"] = self.topic_in_text
        row.update(self.embedding)
        return pd.DataFrame([row])

    def openings_table(self):
        import pandas as pd

        return pd.DataFrame(self.openings, columns=["opening", "records"])


def diversity_report(records: Sequence[dict], *, kind: str = "", universes: dict[str, Sequence[str]] | None = None,
                     embedder=None, n_values=(1, 2, 3, 4), max_embed: int = 2000, seed: int = 0) -> DiversityReport:
    """Report for `records` (dicts with `text`); `universes` maps a metadata field to its full list;
    `embedder` (an object with .embed(texts)) adds embedding spread over up to `max_embed` records."""
    texts = [r["text"] for r in records]
    distinct = {f"distinct-{n}": distinct_n(texts, n) for n in n_values}
    opens = [opening(t) for t in texts]
    counts = collections.Counter(o for o in opens if o)
    shared = sum(1 for o in opens if o and counts[o] > 1)
    cov = {k: coverage(records, k, u) for k, u in (universes or {}).items()}
    emb = {}
    if embedder is not None and len(texts) >= 2:
        sample = texts if len(texts) <= max_embed else random.Random(seed).sample(texts, max_embed)
        emb = embedding_spread(embedder.embed(sample))
    return DiversityReport(kind=kind, n_records=len(records), distinct=distinct,
                           openings=repeated_openings(texts), repeated_opening_share=shared / len(texts) if texts else 0.0,
                           coverage=cov, embedding=emb, topic_in_text=topic_in_text(records),
                           generator=", ".join(sorted({str(r["generator"]) for r in records if r.get("generator")}))
                           or None)
