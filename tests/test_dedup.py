"""Exact and near-duplicate detection on known pairs, checked against brute-force Jaccard."""

from __future__ import annotations

import inspect
import random
import textwrap

import pytest

from phi1lib.synthesis.dedup import dedup_records, deduplicate, exact_duplicates, jaccard, shingles
from phi1lib.errors import ConfigError

BASE = inspect.getsource(textwrap.dedent)  # a real ~50-line function


def test_exact_duplicates_ignore_whitespace_and_case_only():
    texts = ["def f(x):\n    return x", "DEF F(X):   \n\n    RETURN X", "def f(y):\n    return y", "def f(x):\n    return x"]
    assert exact_duplicates(texts) == [None, 0, None, 0]


def test_near_duplicate_pair_is_found_and_unrelated_is_not():
    tweaked = BASE.replace("margin", "common_margin", 1)  # one identifier changed once
    unrelated = inspect.getsource(textwrap.indent)
    res = deduplicate([BASE, unrelated, tweaked], threshold=0.8)
    assert res.duplicate_of[0] is None and res.duplicate_of[1] is None
    j, kind, sim = res.duplicate_of[2]
    assert (j, kind) == (0, "near")
    assert sim == pytest.approx(jaccard(shingles(BASE), shingles(tweaked)))
    assert sim >= 0.8
    assert res.stats["near"] == 1 and res.stats["kept"] == 2


def test_lsh_agrees_with_brute_force_jaccard():
    """On a mix of real functions and mutated copies, LSH finds the pairs brute force finds."""
    rng = random.Random(0)
    funcs = [inspect.getsource(f) for f in (textwrap.dedent, textwrap.indent, textwrap.shorten, textwrap.fill,
                                            textwrap.wrap, inspect.getsource, inspect.signature, inspect.cleandoc)]
    texts = list(funcs)
    for f in funcs:
        words = f.split(" ")
        for _ in range(2):
            w = list(words)
            for k in rng.sample(range(len(w)), max(1, len(w) // 40)):  # ~2.5% of words changed
                w[k] = "zz"
            texts.append(" ".join(w))
    thr = 0.7
    res = deduplicate(texts, threshold=thr, num_perm=256)
    sh = [shingles(t) for t in texts]
    # Reference: greedy keep-first with exact Jaccard over all pairs.
    kept: list[int] = []
    ref = []
    for i in range(len(texts)):
        best = max(((jaccard(sh[i], sh[k]), k) for k in kept), default=(0.0, None))
        if best[0] >= thr:
            ref.append(best[1])
        else:
            ref.append(None)
            kept.append(i)
    got = [d[0] if d else None for d in res.duplicate_of]
    agree = sum(a == b for a, b in zip(got, ref))
    assert agree >= len(texts) - 1  # MinHash LSH is probabilistic; at most one miss allowed
    assert all(d is None or jaccard(sh[i], sh[d[0]]) >= thr for i, d in enumerate(res.duplicate_of))  # no false pairs


def test_dedup_records_keeps_first_and_names_the_original():
    recs = [{"id": "a", "text": BASE}, {"id": "b", "text": BASE.upper()}, {"id": "c", "text": "x = 1"}]
    kept, dropped = dedup_records(recs)
    assert [r["id"] for r in kept] == ["a", "c"]
    assert dropped == [{"id": "b", "text": BASE.upper(), "reason": "exact duplicate of a"}]


def test_bad_parameters():
    with pytest.raises(ConfigError, match="threshold"):
        deduplicate(["a"], threshold=0)
    with pytest.raises(ConfigError, match="num_perm"):
        deduplicate(["a"], num_perm=4)
