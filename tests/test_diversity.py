"""Diversity report: distinct-n, repeated openings, coverage and embedding spread on hand-checked inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from phi1lib.synthesis.diversity import (coverage, distinct_n, diversity_report, embedding_spread, opening,
                               repeated_openings)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 distinct / 7 total; bigrams: ab ba ab ab bc -> 3 distinct / 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(["same words here"] * 10, 3) == pytest.approx(1 / 10)
    assert distinct_n([], 2) == 0.0


def test_openings_skip_headings_and_code():
    t = "## Loops\n\n```python\nfor i in range(3):\n    pass\n```\nIn this section, we will learn loops today."
    assert opening(t) == "in this section we will learn"
    texts = [f"# T{i}\nIn this section, we will learn topic {i}." for i in range(5)] + ["Recursion is a function calling itself."]
    assert repeated_openings(texts) == [("in this section we will learn", 5)]


def test_coverage_counts_and_evenness():
    recs = [{"topic": "a"}, {"topic": "a"}, {"topic": "b"}, {"topic": None}]
    c = coverage(recs, "topic", ["a", "b", "c", "d"])
    assert (c["covered"], c["universe"], c["fraction"], c["missing"]) == (2, 4, 0.5, ["c", "d"])
    p = [2 / 3, 1 / 3]
    assert c["evenness"] == pytest.approx(-sum(x * math.log(x) for x in p) / math.log(2))
    assert coverage([{"topic": "a"}, {"topic": "b"}], "topic")["evenness"] == pytest.approx(1.0)


def test_embedding_spread_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 8))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    pair = np.mean([1 - u[i] @ u[j] for i, j in itertools.combinations(range(30), 2)])
    got = embedding_spread(v)
    assert got["mean_pairwise_cosine_distance"] == pytest.approx(pair)
    assert got["mean_distance_to_centroid"] == pytest.approx(np.linalg.norm(u - u.mean(0), axis=1).mean())
    same = embedding_spread(np.ones((5, 4)))
    assert same["mean_pairwise_cosine_distance"] == pytest.approx(0.0, abs=1e-9)


def test_report_with_a_fake_embedder():
    class Fake:
        def embed(self, texts):
            return np.array([[len(t), 1.0] for t in texts])

    recs = [{"text": f"In this section we will learn item {i}", "topic": f"t{i % 3}", "audience": "x"} for i in range(6)]
    rep = diversity_report(recs, kind="textbook", universes={"topic": ["t0", "t1", "t2", "t3"]}, embedder=Fake())
    assert rep.n_records == 6 and rep.repeated_opening_share == 1.0
    assert rep.coverage["topic"]["fraction"] == 0.75
    assert set(rep.distinct) == {"distinct-1", "distinct-2", "distinct-3", "distinct-4"}
    row = rep.summary().iloc[0]
    assert row["topic_coverage (prompts)"] == 0.75 and "mean_pairwise_cosine_distance" in row
    assert rep.topic_in_text == 0.0 and row["topic_in_text"] == 0.0  # "t0" is no word of "... learn item 3"
    assert row["generator"] is None  # the records name no generator
    stand_in = diversity_report([{**r, "generator": "extractive-stand-in"} for r in recs])
    assert stand_in.summary().iloc[0]["generator"] == "extractive-stand-in"  # tables say who wrote the records
    assert list(rep.openings_table().columns) == ["opening", "records"]


def test_topic_in_text_checks_content_not_metadata():
    """Coverage can be complete while the text ignores its topic (the stand-in once answered 'recursion'
    with gettext's c2py); topic_in_text reads the text."""
    recs = [{"topic": "recursion", "text": "def c2py(plural):\n    \"\"\"Gets a C expression as used in PO files.\"\"\""},
            {"topic": "palindromes", "text": "A palindrome reads the same backwards: `s == s[::-1]`."},
            {"topic": "stacks and queues", "text": "Push onto the stack, pop from it."},
            {"topic": "binary search", "text": "x = 1"}]
    rep = diversity_report(recs, universes={"topic": [r["topic"] for r in recs]})
    assert rep.coverage["topic"]["fraction"] == 1.0  # every topic was asked for ...
    assert rep.topic_in_text == pytest.approx(0.5)  # ... but only two texts are about theirs
    assert diversity_report([{"text": "no topic here"}]).topic_in_text is None
