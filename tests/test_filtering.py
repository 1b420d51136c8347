"""Filtering stage: threshold logic, config validation, classifier round trip, estimate, and end-to-end runs."""

from __future__ import annotations

import json
import re
import shutil
import sysconfig

import numpy as np
import pytest

from phi1lib import budget, filtering, runs
from phi1lib.cli import main
from phi1lib.embed import Embedder, minilm_path
from phi1lib.errors import ConfigError, DataError
from phi1lib.filtering import FilterConfig, choose_threshold
from phi1lib.filtering import stage as filtering_stage
from phi1lib.filtering.classifier import binary_metrics, load_classifier, save_classifier, train_classifier
from phi1lib.filtering.view import sample_view
from phi1lib.presets import get_preset
from phi1lib.runs import RunDir
from phi1lib.stage import StaleResult


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
    assert tiny.tokens_per_sample == 1000.0 and tiny.hardware == get_preset("tiny").hardware
    assert FilterConfig() == tiny  # the dataclass defaults are the tiny preset
    paper = FilterConfig.for_preset("phi1")
    assert paper.corpus == "the-stack-python" and paper.annotator == "gpt-4" and paper.device == "cuda"
    assert paper.keep_fraction == pytest.approx(6 / 35)
    assert paper.tokens_per_sample == get_preset("phi1").data.tokens_per_sample
    assert paper.hardware.gpu == "A100" and paper.hardware.n_gpus == 8
    assert (tiny.view, tiny.classifier) == ("outline", "auto")  # past licence headers; chosen by cross-validation
    by_threshold = FilterConfig.for_preset("tiny", threshold=0.6)
    assert by_threshold.keep_fraction is None and by_threshold.threshold == 0.6
    both = FilterConfig.for_preset("tiny", threshold=0.6, keep_fraction=0.5)
    assert both.keep_fraction == 0.5  # given explicitly: kept (the threshold still wins when choosing)
    # No silent clamping: a pool smaller than the annotated subset is an error naming the field.
    with pytest.raises(ConfigError, match=r"annotate_samples=600: expected at most the corpus samples \(50\)"):
        FilterConfig.for_preset("tiny", corpus_samples=50)
    assert FilterConfig.for_preset("tiny", corpus_samples=50, annotate_samples=50).annotate_samples == 50


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(keep_fraction=0.0), dict(keep_fraction=None),
                                 dict(pooling="max"), dict(granularity="line"), dict(corpus_samples=0),
                                 dict(positive_min=7), dict(test_fraction=0.9), dict(preset="huge"), dict(nope=1),
                                 dict(annotate_samples=3001), dict(seed=-1), dict(n_estimators=1.5),
                                 dict(tokens_per_sample=0.0), dict(hardware="A100"), dict(view="tail"),
                                 dict(classifier="svm")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        FilterConfig.for_preset(bad.pop("preset", "tiny"), **bad)


def test_fingerprint_ignores_how_it_runs():
    base = FilterConfig.for_preset("tiny")
    same = [dict(num_proc=4), dict(device="cuda"), dict(batch_size=8), dict(score_batch_size=16), dict(cap_usd=1.0),
            dict(base_url="http://localhost:8000/v1"), dict(annotate_tokens_in=1), dict(tokens_per_sample=5.0),
            dict(hardware=get_preset("phi1").hardware)]
    for change in same:
        assert FilterConfig.for_preset("tiny", **change).fingerprint() == base.fingerprint(), change
    for change in (dict(seed=1), dict(annotator="gpt-4"), dict(n_estimators=10), dict(max_length=32),
                   dict(view="head"), dict(classifier="random_forest"),
                   dict(keep_fraction=0.5), dict(corpus="the-stack-python"),
                   dict(annotate_tokens_out=100)):  # it caps the annotator's answer too
        assert FilterConfig.for_preset("tiny", **change).fingerprint() != base.fingerprint(), change


def test_metrics_on_a_known_case():
    m = binary_metrics([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.8, 0.3])
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs are ordered right


def test_classifier_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    clf = train_classifier(X, y, n_estimators=30, seed=0)
    path = save_classifier(clf, tmp_path / "c.joblib", {"embedder": "minilm-local"})
    again, meta = load_classifier(path)
    np.testing.assert_array_equal(clf.predict_proba(X), again.predict_proba(X))
    assert meta["embedder"] == "minilm-local"
    assert binary_metrics(y, again.predict_proba(X)[:, 1])["roc_auc"] > 0.9
    with pytest.raises(Exception, match="no saved classifier"):
        load_classifier(tmp_path / "missing.joblib")


def test_estimate(tmp_path_factory):
    prices = budget.load_prices()
    tiny = filtering.estimate(FilterConfig.for_preset("tiny"), prices)
    assert tiny.cost_usd == 0.0 and tiny.tokens > 0 and tiny.cpu_hours > 0  # stand-in + own laptop: free, not zero work
    assert [l["item"] for l in filtering.budget_lines(FilterConfig.for_preset("tiny"))] == [
        "read", "annotate", "view", "embed_labelled", "embed", "train", "classify", "dataflow start"]
    # On CPU the labelled samples are embedded first, in the stage's process (a serial line named as the step that
    # measures it); the scoring tasks then embed the rest of the pool, side by side, finding those in the cache.
    tp = budget.load_throughput()
    cfg = FilterConfig.for_preset("tiny")
    lines = {l["item"]: l for l in filtering.budget_lines(cfg, {"samples": 3000})}
    n_lab, seq = cfg.annotate_samples, cfg.max_length
    assert "workers" not in lines["embed_labelled"] and lines["embed"]["workers"] == lines["view"]["workers"] == 2
    assert lines["embed_labelled"]["cpu_hours"] * 3600 == pytest.approx(
        n_lab / tp.outline_samples_per_s + tp.embed_load_s + n_lab * seq / tp.embed_tokens_per_s)
    assert lines["embed"]["cpu_hours"] * 3600 == pytest.approx(2 * tp.embed_load_s + (3000 - n_lab) * seq / tp.embed_tokens_per_s)
    uncached = {l["item"]: l for l in filtering.budget_lines(FilterConfig.for_preset("tiny", embed_cache=False),
                                                             {"samples": 3000})}
    assert uncached["embed"]["cpu_hours"] * 3600 == pytest.approx(2 * tp.embed_load_s + 3000 * seq / tp.embed_tokens_per_s)
    assert "embed_labelled" not in {l["item"] for l in filtering.budget_lines(FilterConfig.for_preset("phi1"))}
    paper_cfg = FilterConfig.for_preset("phi1")
    paper = filtering.estimate(paper_cfg, prices)
    per_sample, _ = filtering_stage.annotate_prompt_tokens(paper_cfg)  # the real prompt, rendered and counted
    llm = budget.price_llm_usage("gpt-4", 100_000 * per_sample, 100_000 * 10, prices)
    annotate_usd = sum(l.cost_usd for l in paper.lines if l.item.startswith("annotate"))
    assert annotate_usd == pytest.approx(llm)
    # Embedding 20M samples x 512 tokens through CodeGen-350M: per token, 2 FLOPs per weight it
    # multiplies through (transformers' own CodeGen, less the embedding table and the unused LM
    # head) + the attention scores 4*L*d*T.
    import torch
    from transformers import AutoModel, CodeGenConfig, CodeGenForCausalLM

    with torch.device("meta"):
        codegen = CodeGenForCausalLM(CodeGenConfig(n_layer=20, n_embd=1024, n_head=16, rotary_dim=32,
                                                   vocab_size=51200, n_positions=2048, n_ctx=2048))
    assert sum(p.numel() for p in codegen.parameters()) == 356_712_448  # the released model's size
    body = sum(p.numel() for n, p in codegen.named_parameters() if not n.startswith(("transformer.wte", "lm_head")))
    embed_line = next(l for l in paper.lines if l.item == "embed")
    assert embed_line.flops == pytest.approx((2 * body + 4 * 20 * 1024 * 512) * 35_000_000 * 512, rel=1e-3)
    assert embed_line.gpu_hours > 1
    # the shipped MiniLM's real body is what the budget's table counts (GPU presets price its FLOPs)
    minilm = AutoModel.from_pretrained(str(minilm_path()))
    body = sum(p.numel() for n, p in minilm.named_parameters() if not n.startswith("embeddings."))
    assert budget.body_params(budget.EXTRA_MODELS["minilm-local"]) == pytest.approx(body, rel=0.02)
    # tiny (CPU): the pool's samples less the 600 labelled ones (cached) x their first 64 tokens at the measured
    # CPU rate, plus each of the 2 scoring tasks loading the embedder
    tiny_embed = next(l for l in tiny.lines if l.item == "embed")
    assert tiny_embed.cpu_hours * 3600 == pytest.approx(2 * tp.embed_load_s + 2400 * 64 / tp.embed_tokens_per_s)
    # An embedder given as a local folder is priced from its config.json's shape: the shipped
    # MiniLM's folder costs what the table's "minilm-local" does.
    by_folder = filtering_stage.embed_flops_per_token(str(minilm_path()), 64)
    assert by_folder == pytest.approx(filtering_stage.embed_flops_per_token("minilm-local", 64), rel=1e-6)
    folder_est = filtering.estimate(FilterConfig.for_preset("tiny", embedder=str(minilm_path())), prices)
    assert next(l for l in folder_est.lines if l.item == "embed").flops == pytest.approx(tiny_embed.flops, rel=1e-6)
    with pytest.raises(ConfigError, match="config.json"):
        filtering_stage.embed_flops_per_token(str(tmp_path_factory.mktemp("no-config")), 64)


def test_estimate_is_the_preset_plan_for_phi1():
    """The phi1 preset's filtering lines: annotation at the real prompt's tokens, the pool's embedding pass on ONE
    GPU in fp32 (what the stage does), the forest on CPU."""
    prices = budget.load_prices()
    config = FilterConfig.for_preset("phi1")
    est = filtering.estimate(config, prices)
    assert [l.item for l in est.lines] == ["annotate input", "annotate output", "view", "embed", "train", "classify",
                                           "dataflow start"]
    spec = budget.EXTRA_MODELS["Salesforce/codegen-350M-mono"]
    tokens = 35_000_000 * 512  # every sample's first 512 tokens (max_length < the 1,000 planned per sample)
    flops = (2 * budget.body_params(spec) + 4 * spec.n_layer * spec.d_model * 512) * tokens
    mfu = round(19.5 * 0.5 / 312, 4)  # fp32 on an A100 at a stated half of its fp32 peak
    # the pool's 8 scoring tasks embed on the box's 8 GPUs, one each
    embed = budget.estimate_compute("filtering", flops, prices, gpu="A100", n_gpus=8, mfu=mfu, tokens=tokens)
    classify = budget.estimate_cpu("filtering", 35_000_000 * 1e-4 / 3600, prices)
    # choosing and fitting the classifier on the 75,000 training labels, at the measured seconds per label
    train_h = 75_000 * budget.load_throughput().classifier_seconds_per_label / 3600
    train = budget.estimate_cpu("filtering", train_h, prices)
    # the outline view parses the 35M pool samples and the 100k labelled ones, at the measured rate
    view_h = 35_100_000 / budget.load_throughput().outline_samples_per_s / 3600
    view = budget.estimate_cpu("filtering", view_h, prices)
    per_sample, _ = filtering_stage.annotate_prompt_tokens(config)
    annotate = budget.price_llm_usage("gpt-4", 100_000 * per_sample, 100_000 * 10, prices)
    assert est.cost_usd == pytest.approx(annotate + embed.cost_usd + classify.cost_usd + train.cost_usd + view.cost_usd,
                                         rel=1e-12)
    assert est.flops == pytest.approx(flops, rel=1e-12) and est.gpu_hours == pytest.approx(embed.gpu_hours, rel=1e-12)
    start_h = budget.load_throughput().dataflow_start_s / 3600  # the local scoring stage's start
    assert est.cpu_hours == pytest.approx(35_000_000 * 1e-4 / 3600 + train_h + view_h + start_h, rel=1e-12)


def test_count_tokens():
    assert filtering.count_tokens("def f(x):\n    return x+1") == 10


# ---- end to end (slow: loads the embedder, embeds ~60 files) ------------------------------------

STDLIB = sysconfig.get_paths()["stdlib"]


def _small_config(**overrides) -> FilterConfig:
    return FilterConfig.for_preset("tiny", **{**dict(corpus=STDLIB, corpus_samples=60, annotate_samples=48,
                                                     n_estimators=50), **overrides})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = RunDir(tmp_path_factory.mktemp("filter-run"))
    cfg = _small_config()
    return cfg, filtering.run(cfg, run_dir, progress=False)


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
    # The classifier was chosen on the training split's cross-validation, and the saved one is that choice.
    cv = res.metrics["cv_roc_auc"]
    assert set(cv) == {"random_forest", "logreg_embeddings"} and res.metrics["chosen"] == max(cv, key=cv.get)
    _, meta = load_classifier(res.files["classifier"])
    assert {"random_forest": "random_forest", "logreg_embeddings": "logreg"}[res.metrics["chosen"]] == meta["classifier"]
    assert meta["view"] == cfg.view == "outline"
    # The hand-written snippets: scored by the filter and by the rubric, every snippet in heldout.parquet.
    held = res.metrics["heldout_snippets"]
    snippets = pd.read_parquet(res.files["heldout"])
    assert held["n"] == len(snippets) >= 40 and held["filter"] == res.metrics["chosen"]
    assert held["roc_auc"]["filter"] == held["roc_auc"][res.metrics["chosen"]]
    assert held["roc_auc"]["rubric"] >= 0.95  # the labeller itself ranks these obvious cases
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(snippets["label"] == "high", snippets["filter_score"]) == pytest.approx(held["roc_auc"]["filter"])
    assert "heldout" in res.seconds
    assert res.usage.usd == 0.0 and res.estimate["cost_usd"] == 0.0
    # The stage contract: one Usage, named steps, the corpus as an input, the annotator's store in the stage folder.
    assert res.usage.tokens_in == res.annotation["prompt_tokens"] > 0 and res.usage.requests == 48
    assert res.usage.wall_s > 0 and res.usage.cpu_s > 0 and res.usage.gpu_s == 0.0
    assert set(res.seconds) >= {"read", "annotate", "embed_labelled", "train", "score", "total"}
    assert res.stage == "filtering" and res.inputs["corpus"].startswith("file:") and res.fingerprint
    assert (res.kept_path.parent / "annotations.sqlite").is_file()
    assert res.kept_path.parent.name == "filtering"
    assert filtering.load_pool(RunDir(res.kept_path.parent.parent))["id"].tolist() == pool["id"].tolist()
    assert filtering.load_pool(res.out_dir)["id"].tolist() == pool["id"].tolist()


@pytest.mark.slow
def test_saved_classifier_reproduces_pool_scores(small_run):
    import pandas as pd

    cfg, res = small_run
    clf, meta = load_classifier(res.files["classifier"])
    pool = pd.read_parquet(res.files["pool"]).head(10)
    emb = Embedder(meta["embedder"], pooling=meta["pooling"], max_length=meta["max_length"], progress=False)
    views = [sample_view(t, meta["view"]) for t in pool["text"]]
    np.testing.assert_allclose(clf.predict_proba(emb.embed(views))[:, 1], pool["score"], atol=1e-9)
    assert emb.texts_embedded_ == 0  # all cached by the run


@pytest.mark.slow
def test_rerun_returns_stored_result(small_run, monkeypatch):
    cfg, res = small_run

    def boom(*a, **k):
        raise AssertionError("a finished stage must not read the corpus again")

    monkeypatch.setattr(filtering_stage, "load_corpus", boom)
    monkeypatch.setattr(filtering_stage, "iter_corpus", boom)  # what the stage streams the pool with
    run_dir = RunDir(res.kept_path.parent.parent)
    again = filtering.run(cfg, run_dir, progress=False)
    assert again.counts == res.counts and again.threshold == res.threshold and again.finished_at == res.finished_at
    # Settings that only change how the work runs (or what the estimate plans) reuse the stored result too.
    same = filtering.run(_small_config(num_proc=2, batch_size=8, device="cuda", tokens_per_sample=3.0), run_dir,
                         progress=False)
    assert same.finished_at == res.finished_at
    # A setting that changes the result does not: the stage stops and says what changed and how to redo it.
    with pytest.raises(StaleResult, match=r"n_estimators 50 -> now 20.*--force"):
        filtering.run(_small_config(n_estimators=20), run_dir, progress=False)


@pytest.mark.slow
def test_force_redoes_and_a_changed_corpus_is_stale(small_run, tmp_path):
    import pandas as pd

    cfg, res = small_run
    run_dir = RunDir(tmp_path / "run")
    shutil.copytree(res.kept_path.parent, run_dir.path("filtering"))
    # The same 60 texts as files of a folder of our own (so the embeddings are all cache hits).
    code = tmp_path / "code"
    code.mkdir()
    for i, text in enumerate(pd.read_parquet(res.files["pool"])["text"]):
        (code / f"m{i:02d}.py").write_text(text, encoding="utf-8")
    config = _small_config(corpus=str(code), keep_fraction=0.5)
    with pytest.raises(StaleResult, match="corpus"):
        filtering.run(config, run_dir, progress=False)
    redone = filtering.run(config, run_dir, progress=False, force=True)
    assert redone.finished_at != res.finished_at and redone.fingerprint != res.fingerprint
    assert redone.counts["pool_samples"] == 60 and redone.counts["kept_samples"] >= 30
    assert redone.counts["embedded_by_model"] == 0  # every text was a cache hit of the first run
    assert filtering.run(config, run_dir, progress=False).finished_at == redone.finished_at
    # The folder changed since (a file added): another input, so the stored result is stale, named.
    (code / "new.py").write_text("def added():\n    return 1\n", encoding="utf-8")
    with pytest.raises(StaleResult, match=r"from other inputs \(corpus changed"):
        filtering.run(config, run_dir, progress=False)


def test_missing_inputs_name_what_to_do(tmp_path):
    with pytest.raises(DataError, match="the filtering stage has not run"):
        filtering.load_pool(RunDir(tmp_path / "empty"))
    with pytest.raises(DataError, match="phi1 filter"):
        filtering.load_pool(tmp_path)
    with pytest.raises(ConfigError, match="corpus='/no/such/code'"):
        filtering.run(FilterConfig.for_preset("tiny", corpus="/no/such/code"), RunDir(tmp_path / "run"))
    assert not (tmp_path / "run" / "filtering" / "result.json").exists()


def test_cli_bad_flags_name_the_flag(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["filter", "--out", out, "--keep-fraction", "1.5"]) == 2
    assert "--keep-fraction 1.5: expected a share in (0, 1]" in capsys.readouterr().err
    assert main(["filter", "--out", out, "--limit", "0"]) == 2
    assert "--limit 0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["filter", "--out", out, "--limit", "40", "--annotate", "100"]) == 2
    assert "--annotate 100: expected at most the corpus samples (40)" in capsys.readouterr().err
    assert main(["filter", "--out", out, "--set", "positive_min=x"]) == 2
    assert "--set positive_min: expected an integer, got 'x'" in capsys.readouterr().err
    assert main(["filter", "--out", out, "--preset", "phi1", "--estimate-only"]) == 0
    assert "[filtering] estimate: $" in capsys.readouterr().out
    # --limit below the preset's annotation size shrinks the annotated subset, and says so.
    assert main(["filter", "--out", out, "--limit", "40", "--estimate-only"]) == 0
    assert "--limit 40: annotating all 40 samples" in capsys.readouterr().out
    assert not (tmp_path / "filtering").exists()  # nothing ran, nothing was created


@pytest.mark.slow
def test_cli_filter(tmp_path, capsys):
    args = ["filter", "--out", str(tmp_path), "--corpus", STDLIB, "--limit", "40", "--annotate", "30",
            "--threshold", "0.5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "estimate: $0.0000" in out and "heuristic-stand-in" in out and "STAND-IN" in out
    assert out.count("heuristic-stand-in") == 1 and out.count("STAND-IN") == 1  # said once
    aucs = re.findall(r"ROC-AUC (\d\.\d{3}|n/a)\b", out)  # formatted: 3 decimals
    assert len(aucs) == 4, out  # the chosen classifier, the forest, the logistic regression; the filter on snippets
    assert "hand-written snippets" in out and "rubric (the labeller)" in out
    res = json.loads((tmp_path / "filtering" / "result.json").read_text())  # --out is the run folder
    assert res["threshold"] == 0.5 and res["counts"]["pool_samples"] == 40
    assert (tmp_path / "ledger.jsonl").is_file()
    assert main(args + ["--json"]) == 0  # stored: printed as JSON, not redone
    printed = json.loads(capsys.readouterr().out)
    assert printed["finished_at"] == res["finished_at"] and printed["stage"] == "filtering"
    assert main(args[:-1] + ["0.6"]) == 2
    assert "threshold 0.5 -> now 0.6" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse rejects an unknown preset before any work
        main(["filter", "--preset", "nope", "--out", str(tmp_path)])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


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


@pytest.mark.slow
def test_filter_score_reproduces_the_stage_scores(small_run, tmp_path, capsys):
    """`phi1 filter score` on the pool's own texts prints the scores the stage gave them (same view, same model)."""
    import pandas as pd

    cfg, res = small_run
    pool = pd.read_parquet(res.files["pool"]).head(8)
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"path": p, "text": t}) + "\n" for p, t in zip(pool["path"], pool["text"])))
    assert main(["filter", "score", "--run", str(res.kept_path.parent.parent), str(data)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == pool["path"].tolist()
    np.testing.assert_allclose([r["score"] for r in rows], pool["score"], atol=1e-5)
