"""Filtering stage: threshold logic, config validation, classifier round trip, cost estimate, and end-to-end runs."""

from __future__ import annotations

import json
import sysconfig

import numpy as np
import pytest

from phi1lib import runs
from phi1lib.filtering import stage as filtering
from phi1lib.errors import ConfigError
from phi1lib.filtering import FilterConfig, choose_threshold


def test_threshold_by_keep_fraction():
    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.0])
    t, rule = choose_threshold(scores, keep_fraction=0.3)
    assert t == 0.7 and (scores >= t).sum() == 3 and "30.0%" in rule
    t, _ = choose_threshold(scores, keep_fraction=1.0)
    assert (scores >= t).all()
    t, _ = choose_threshold(scores, keep_fraction=0.01)  # never keeps nothing
    assert (scores >= t).sum() == 1


def test_threshold_ties_are_all_kept():
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.1])
    t, _ = choose_threshold(scores, keep_fraction=0.4)
    assert t == 0.5 and (scores >= t).sum() == 4


def test_configured_threshold_wins():
    t, rule = choose_threshold(np.array([0.2, 0.9]), threshold=0.25, keep_fraction=0.5)
    assert t == 0.25 and "configured" in rule
    with pytest.raises(ConfigError):
        choose_threshold(np.array([0.2]))


def test_config_for_presets():
    tiny = FilterConfig.for_preset("tiny")
    assert (tiny.corpus, tiny.annotator, tiny.embedder) == ("installed", "heuristic", "minilm-local")
    assert tiny.corpus_samples == 3000 and tiny.annotate_samples == 600
    assert tiny.keep_fraction == pytest.approx(1 / 3)
    paper = FilterConfig.for_preset("phi1")
    assert paper.corpus == "the-stack-python" and paper.annotator == "gpt-4" and paper.device == "cuda"
    assert paper.keep_fraction == pytest.approx(6 / 35)
    by_threshold = FilterConfig.for_preset("tiny", threshold=0.6)
    assert by_threshold.keep_fraction is None and by_threshold.threshold == 0.6
    assert FilterConfig.for_preset("tiny", corpus_samples=50).annotate_samples == 50


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(keep_fraction=0.0), dict(keep_fraction=None),
                                 dict(pooling="max"), dict(granularity="line"), dict(corpus_samples=0),
                                 dict(positive_min=7), dict(test_fraction=0.9), dict(preset="huge"), dict(nope=1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        FilterConfig.for_preset(bad.pop("preset", "tiny"), **bad)


def test_metrics_on_a_known_case():
    m = filtering.binary_metrics([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.8, 0.3])
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs are ordered right


def test_classifier_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    clf = filtering.train_classifier(X, y, n_estimators=30, seed=0)
    path = filtering.save_classifier(clf, tmp_path / "c.joblib", {"embedder": "minilm-local"})
    again, meta = filtering.load_classifier(path)
    np.testing.assert_array_equal(clf.predict_proba(X), again.predict_proba(X))
    assert meta["embedder"] == "minilm-local"
    assert filtering.binary_metrics(y, again.predict_proba(X)[:, 1])["roc_auc"] > 0.9
    with pytest.raises(Exception, match="no saved classifier"):
        filtering.load_classifier(tmp_path / "missing.joblib")


def test_estimate_cost(tmp_path_factory):
    from phi1lib import budget

    prices = budget.load_prices()
    tiny = filtering.estimate_cost(FilterConfig.for_preset("tiny"), prices)
    assert tiny.cost_usd == 0.0 and tiny.tokens > 0 and tiny.flops > 0  # stand-in + own laptop: free, not zero work
    paper_cfg = FilterConfig.for_preset("phi1")
    paper = filtering.estimate_cost(paper_cfg, prices)
    llm = budget.price_llm_usage("gpt-4", 100_000 * 100, 100_000 * 10, prices)
    annotate_usd = sum(l.cost_usd for l in paper.lines if l.item.startswith("annotate"))
    assert annotate_usd == pytest.approx(llm)
    # Embedding 20M samples x 512 tokens through CodeGen-350M: per token, 2 FLOPs per weight it
    # multiplies through (transformers' own CodeGen, less the embedding table and the unused LM
    # head) + the attention scores 4*L*d*T.
    import torch
    from transformers import AutoModel, CodeGenConfig, CodeGenForCausalLM

    from phi1lib.embed import minilm_path

    with torch.device("meta"):
        codegen = CodeGenForCausalLM(CodeGenConfig(n_layer=20, n_embd=1024, n_head=16, rotary_dim=32,
                                                   vocab_size=51200, n_positions=2048, n_ctx=2048))
    assert sum(p.numel() for p in codegen.parameters()) == 356_712_448  # the released model's size
    body = sum(p.numel() for n, p in codegen.named_parameters() if not n.startswith(("transformer.wte", "lm_head")))
    embed_line = next(l for l in paper.lines if l.item == "embed")
    assert embed_line.flops == pytest.approx((2 * body + 4 * 20 * 1024 * 512) * 20_000_000 * 512, rel=1e-3)
    assert embed_line.gpu_hours > 1
    # tiny: 3000 samples x their first 64 tokens through the shipped MiniLM (its real body).
    minilm = AutoModel.from_pretrained(str(minilm_path()))
    body = sum(p.numel() for n, p in minilm.named_parameters() if not n.startswith("embeddings."))
    tiny_embed = next(l for l in tiny.lines if l.item == "embed")
    assert tiny_embed.tokens == 3000 * 64
    assert tiny_embed.flops == pytest.approx((2 * body + 4 * 6 * 384 * 64) * 3000 * 64, rel=0.02)
    # An embedder given as a local folder is priced from its config.json's shape: the shipped
    # MiniLM's folder costs what the table's "minilm-local" does.
    by_folder = filtering.embed_flops_per_token(str(minilm_path()), 64)
    assert by_folder == pytest.approx(filtering.embed_flops_per_token("minilm-local", 64), rel=1e-6)
    with pytest.raises(ConfigError, match="config.json"):
        filtering.embed_flops_per_token(str(tmp_path_factory.mktemp("no-config")), 64)
    # The budget's preset plan prices the same embedding pass as the stage's own estimate.
    from phi1lib.budget import preset_scenario, price_scenario

    for name, stage_est in (("tiny", tiny), ("phi1", paper)):
        planned = next(l for l in price_scenario(preset_scenario(name), prices).lines if l.item == "embed")
        assert planned.flops == pytest.approx(next(l for l in stage_est.lines if l.item == "embed").flops, rel=1e-3)


def test_count_tokens():
    assert filtering.count_tokens("def f(x):\n    return x+1") == 10


# ---- end to end (slow: loads the embedder, embeds ~60 files) ------------------------------------

STDLIB = sysconfig.get_paths()["stdlib"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("filter-run") / "filtering"
    cfg = FilterConfig.for_preset("tiny", corpus=STDLIB, corpus_samples=60, annotate_samples=48, n_estimators=50)
    return cfg, filtering.run_filtering(cfg, out, progress=False)


@pytest.mark.slow
def test_run_writes_the_contracted_files(small_run):
    import pandas as pd

    cfg, res = small_run
    kept, dropped = pd.read_parquet(res.files["kept"]), pd.read_parquet(res.files["dropped"])
    pool = pd.read_parquet(res.files["pool"])
    assert list(kept.columns) == filtering.OUT_COLUMNS and list(dropped.columns) == filtering.OUT_COLUMNS
    assert len(kept) + len(dropped) == len(pool) == 60
    assert set(kept["id"]) | set(dropped["id"]) == set(pool["id"]) and not set(kept["id"]) & set(dropped["id"])
    assert (kept["score"] >= res.threshold).all() and (dropped["score"] < res.threshold).all()
    # keep_fraction 1/3 of 60: the 20th-best score is the threshold; forest scores tie, ties are all kept.
    assert (pool["score"] > res.threshold).sum() < 20 <= len(kept)
    assert pool.loc[pool["kept"], "id"].tolist() == kept["id"].tolist()
    assert res.counts["kept_tokens"] == int(kept["n_tokens"].sum())
    labels = pd.read_parquet(res.files["labels"])
    assert len(labels) == 48 and set(labels["split"]) == {"train", "test"} and labels["rating"].between(1, 5).all()
    assert res.stand_in and "STAND-IN" in res.stand_in
    stored = json.loads((res.kept_path.parent / runs.RESULT_FILE).read_text())
    assert stored["stand_in"] == res.stand_in and stored["files"]["pool"].endswith("pool.parquet")
    for name in ("random_forest", "logreg_embeddings", "length_only", "heuristic_alone", "majority_class"):
        assert set(res.metrics[name]) >= {"precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    assert res.usage["usd"] == 0.0 and res.estimate["cost_usd"] == 0.0


@pytest.mark.slow
def test_saved_classifier_reproduces_pool_scores(small_run):
    import pandas as pd

    from phi1lib.embed import Embedder

    cfg, res = small_run
    clf, meta = filtering.load_classifier(res.files["classifier"])
    pool = pd.read_parquet(res.files["pool"]).head(10)
    emb = Embedder(meta["embedder"], pooling=meta["pooling"], max_length=meta["max_length"], progress=False)
    np.testing.assert_allclose(clf.predict_proba(emb.embed(pool["text"].tolist()))[:, 1], pool["score"], atol=1e-9)
    assert emb.texts_embedded_ == 0  # all cached by the run


@pytest.mark.slow
def test_rerun_returns_stored_result(small_run, monkeypatch):
    cfg, res = small_run

    def boom(*a, **k):
        raise AssertionError("a finished stage must not read the corpus again")

    monkeypatch.setattr(filtering, "load_corpus", boom)
    again = filtering.run_filtering(cfg, res.out_dir, progress=False)
    assert again.counts == res.counts and again.threshold == res.threshold


@pytest.mark.slow
def test_cli_filter(tmp_path, capsys):
    from phi1lib.cli import main

    args = ["filter", "--out", str(tmp_path), "--corpus", STDLIB, "--limit", "40", "--annotate", "30",
            "--threshold", "0.5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "estimate: $0.0000" in out and "heuristic-stand-in" in out and "STAND-IN" in out
    res = json.loads((tmp_path / "filtering" / "result.json").read_text())
    assert res["threshold"] == 0.5 and res["counts"]["pool_samples"] == 40
    assert (tmp_path / "ledger.jsonl").is_file()
    assert main(["filter", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err


@pytest.mark.slow
def test_score_pool_in_parallel_matches_serial(small_run, tmp_path):
    """num_proc=2 (two spawned workers, each with its own embedder, one shard each) gives the serial scores."""
    import pandas as pd

    cfg, res = small_run
    texts = pd.read_parquet(res.files["pool"])["text"].head(12).tolist() + ["def fresh():\n    return 'new'\n"]
    kwargs = dict(model=cfg.embedder, pooling=cfg.pooling, max_length=cfg.max_length, cache=tmp_path / "emb")
    serial, n1 = filtering.score_pool(texts, kwargs, res.files["classifier"], num_proc=1, batch_size=4,
                                      progress=False, return_fresh=True)
    parallel, n2 = filtering.score_pool(texts, {**kwargs, "cache": tmp_path / "emb2"}, res.files["classifier"],
                                        num_proc=2, batch_size=4, progress=False, return_fresh=True)
    assert n1 == n2 == len(texts)  # fresh caches: every text embedded once, none twice across the shards
    # Float noise across processes can flip a tree split at most: allow two of the 50 trees to differ.
    np.testing.assert_allclose(serial, parallel, atol=2 / cfg.n_estimators + 1e-9)
