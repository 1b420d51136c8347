"""Issue #14: estimates from the code path that runs (real prompts counted, measured CPU rates from one file),
everything `phi1 run` runs priced, dated prices, the MFU range, and the budget's bad-input messages."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from phi1lib import budget, llm, pipeline
from phi1lib.budget.throughput import parse_throughput
from phi1lib.errors import ConfigError
from phi1lib.filtering import FilterConfig
from phi1lib.filtering.annotate import build_prompt
from phi1lib.filtering.stage import annotate_prompt_tokens
from phi1lib.filtering.stage import budget_lines as filter_lines
from phi1lib.llm.tokens import TokenCounter
from phi1lib.pipeline import stages as table
from phi1lib.synthesis import SynthesisConfig
from phi1lib.synthesis.prompts import distinct_prompts, exercise_prompts
from phi1lib.synthesis.stage import distinct_prompt_count


# ---- 1. input tokens from the real prompt ---------------------------------------------------------

def _corpus(tmp_path, sizes):
    root = tmp_path / "corpus"
    root.mkdir()
    for i, n in enumerate(sizes):
        body = "".join(f"    x{j} = {j} * 2  # step {j}\n" for j in range(n))
        (root / f"m{i}.py").write_text(f"def f{i}():\n{body}    return 0\n", encoding="utf-8")
    return root


def test_annotation_input_tokens_are_the_rendered_prompt_counted(tmp_path):
    root = _corpus(tmp_path, [3, 40, 400])  # the last is longer than annotate_max_chars: the prompt cuts it
    cfg = FilterConfig.for_preset("tiny", corpus=str(root), corpus_samples=3, annotate_samples=3,
                                  annotate_max_chars=500)
    mean, how = annotate_prompt_tokens(cfg)
    counter = TokenCounter(cfg.annotator)
    texts = [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))]
    want = [counter.count_request(llm.Request(messages=[{"role": "user", "content": build_prompt(t, 500)}]))
            for t in texts]
    assert mean == pytest.approx(sum(want) / 3)
    assert max(want) < min(want) + 500 / 2  # the long file counts only its first 500 characters
    assert "3 samples of corpus" in how and counter.method in how
    line = next(l for l in filter_lines(cfg) if l["item"] == "annotate")
    assert line["in_per_sample"] == pytest.approx(mean) and "rendered" in line["note"]


def test_phi1_budget_prices_annotation_at_the_real_prompt_length_and_every_stage_it_runs(capsys):
    from phi1lib.cli import main

    assert main(["budget", "--preset", "phi1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    lines = {l["item"]: l for s in out["stages"] for l in s["lines"]}
    cfg = FilterConfig.for_preset("phi1")
    per_sample = lines["annotate input"]["tokens"] / cfg.annotate_samples
    assert per_sample == pytest.approx(annotate_prompt_tokens(cfg)[0])
    assert per_sample > len(build_prompt("", cfg.annotate_max_chars)) / 4  # the template alone, before any code
    assert "rendered" in lines["annotate input"]["note"]
    # Every stage `phi1 run --preset phi1` runs is priced, and nothing else (the ablation is opt-in there).
    assert [s["stage"] for s in out["stages"]] == list(table.default_stages("phi1"))
    assert "ablation" not in [s["stage"] for s in out["stages"]]
    assert [r["mfu"] for r in out["mfu_sensitivity"]["rows"]] == [0.35, 0.45, 0.5, 0.55]


def test_synthesis_counts_prompt_tokens_the_same_way_and_reports_distinct_prompts():
    cfg = SynthesisConfig.for_preset("tiny")
    line = next(l for l in table.get("synthesis").budget_lines(cfg) if l["item"] == "exercises")
    counter = TokenCounter(cfg.model)
    prompts = cfg.prompts("exercise", 2000)
    want = sum(counter.count_request(llm.Request(messages=list(p.messages))) for p in prompts) / len(prompts)
    assert line["in_per_sample"] == pytest.approx(want)
    assert f"({distinct_prompt_count(cfg, 'exercise'):,} distinct)" in line["note"]


# ---- 5. distinct synthesis prompts ---------------------------------------------------------------

def test_every_repeat_of_a_combination_is_a_different_prompt_text():
    ps = exercise_prompts(13, seed=0, topics=["sets", "loops"], name_prefixes=["count"],
                          settings=["a zoo", "a bank", "a farm"], levels=["easy", "hard"])
    texts = [p.user_text for p in ps]
    assert len(set(texts[:12])) == 12  # 2 combinations x 6 settings-levels: all distinct
    assert texts[12] in texts[:12]  # the 13th has to repeat one
    assert distinct_prompts(13, ["sets", "loops"], ["count"], settings=["a zoo", "a bank", "a farm"],
                            levels=["easy", "hard"]) == 12
    assert all(p.setting in p.user_text and p.level in p.user_text for p in ps)
    off = exercise_prompts(4, seed=0, topics=["sets", "loops"], name_prefixes=["count"], settings=[])
    assert len({p.user_text for p in off}) == 2  # without the axis, repeats are identical text


@pytest.mark.parametrize("kind", ["textbook", "exercise"])
def test_paper_scale_plan_has_a_distinct_prompt_for_every_request(kind):
    cfg = SynthesisConfig.for_preset("phi1")
    assert cfg.n_for(kind) > 600_000
    assert distinct_prompt_count(cfg, kind) == cfg.n_for(kind)


# ---- 1. measured CPU rates: one file ---------------------------------------------------------------

def test_shipped_throughput_file_parses_and_feeds_the_cpu_estimates():
    tp = budget.load_throughput()
    assert isinstance(tp.date, dt.date) and tp.machine and tp.embed_tokens_per_s > 0
    cfg = table.get("decontam").config("tiny")
    lines = {l["item"]: l for l in table.get("decontam").budget_lines(cfg)}
    texts = cfg.planned_records + 164
    assert lines["decontam-embed"]["cpu_hours"] * 3600 == pytest.approx(
        tp.embed_load_s + texts * cfg.embed_max_length / tp.embed_tokens_per_s)
    assert lines["decontam-ast"]["cpu_hours"] * 3600 == pytest.approx(cfg.planned_records * 164 / tp.ast_pairs_per_s)
    assert str(tp.date) in lines["decontam-embed"]["note"]


@pytest.mark.parametrize("text, names", [
    ('[meta]\ndate = 2026-12-02\nmachine = "x"\n[cpu]\nembed_tokens_per_s = "fast"\n', "cpu.embed_tokens_per_s"),
    ('[cpu]\nembed_tokens_per_s = 1.0\n', "[meta]"),
    ('[meta]\ndate = 2026-12-02\nmachine = "x"\n[cpu]\nembed_tokens_per_s = 1.0\n', "cpu.embed_load_s"),
    ('[meta]\ndate = 2026-12-02\nmachine = "x"\n[cpu]\nwarp_speed = 9\n', "cpu.warp_speed"),
    ('[meta]\ndate = "soon"\nmachine = "x"\n[cpu]\n', "meta.date"),
])
def test_a_malformed_throughput_file_is_one_error_naming_it_and_the_fix(tmp_path, text, names):
    path = tmp_path / "throughput.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        budget.load_throughput(path)
    msg = str(err.value)
    assert str(path) in msg and names in msg and "bench_throughput.py" in msg and "\n" not in msg


def test_bad_toml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "throughput.toml"
    bad.write_text("[meta\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        budget.load_throughput(bad)
    with pytest.raises(ConfigError, match="bench_throughput.py"):
        budget.load_throughput(tmp_path / "none.toml")


def test_the_benchmarks_output_is_what_the_loader_reads(tmp_path):
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("bench_throughput", budget.throughput_path().parent.parent
                                                  / "benchmarks" / "bench_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rates = {"corpus_samples_per_s": 300.0, "embed_tokens_per_s": 4000.0, "embed_load_s": 1.5,
             "ast_pairs_per_s": 2e6, "heuristic_tokens_per_s": 3e5, "generate_tokens_per_s": 1500.0,
             "sandbox_seconds_per_program": 0.02, "extractive_seconds_per_request": 0.03,
             "classifier_seconds_per_label": 0.02, "outline_samples_per_s": 110.0, "dataflow_start_s": 3.0}
    tp = parse_throughput(tomllib.loads(bench.render(rates, 'shared "box"')), "x.toml")
    assert tp.embed_tokens_per_s == 4000.0 and tp.date == dt.date.today() and tp.note == 'shared "box"'


# ---- 4. dated prices, MFU range --------------------------------------------------------------------

def test_batch_discount_only_where_the_dated_book_offers_it():
    prices = budget.load_prices()
    assert prices.at("2023-06-30").batch_discount == 0.0
    assert prices.at("2024-05-01").batch_discount == 0.5
    sc = pipeline.load_scenario("phi1-paper")
    with pytest.raises(ConfigError, match="Batch API discount starts 2024-04-15.*as_of=2023-06-30"):
        budget.price_scenario(sc.with_overrides(["batch=true"]), prices)
    cheap = budget.price_scenario(sc.with_overrides(["batch=true", "as_of=latest"]), prices)
    full = budget.price_scenario(sc.with_overrides(["as_of=latest"]), prices)
    assert cheap.stage("synthesis").cost_usd == pytest.approx(full.stage("synthesis").cost_usd / 2)


def test_latest_a100_price_is_the_latest_dated_entry_and_40gb_is_p4d():
    prices = budget.load_prices()
    assert prices.at("2023-06-30").default_rental("A100").name == "seed-8xA100"
    latest = prices.at(None).default_rental("A100")
    assert latest.as_of == max(r.as_of for r in prices.rentals.values() if r.gpu == "A100")
    assert prices.at(None).default_rental("A100-40GB").name.startswith("p4d.")
    assert prices.gpu("A100-40GB").memory_gb == 40 and prices.gpu("A100").memory_gb == 80
    assert prices.rental("p4de.24xlarge").gpu == "A100"  # 8x A100 80GB


def test_mfu_sensitivity_moves_the_gpu_lines_and_skips_rental_only_plans():
    sc = pipeline.preset_scenario("phi1")
    table_ = budget.mfu_sensitivity(sc)
    rows = table_["rows"]
    assert [r["default"] for r in rows].count(True) == 1 and table_["default"] == 0.5
    hours = [r["gpu_hours"] for r in rows]
    assert hours == sorted(hours, reverse=True)  # more utilisation, fewer GPU-hours
    assert "0.495" in table_["why"]
    assert budget.mfu_sensitivity(pipeline.load_scenario("phi1-paper"))["rows"] == []


def test_corpus_pool_is_the_papers_35m_samples():
    from phi1lib.presets import get_preset

    for name in ("phi1", "phi1-small"):
        assert get_preset(name).data.corpus_samples == 35_000_000


# ---- 7. message slips --------------------------------------------------------------------------------

def test_choice_lists_do_not_mix_rentals_and_llms():
    prices = budget.load_prices()
    with pytest.raises(ConfigError) as err:
        prices.rental("gpt-3.5-turbo")
    assert "p4d.24xlarge" in str(err.value) and "gpt-3.5-turbo;" not in str(err.value) \
        and "gpt-3.5-turbo," not in str(err.value)
    with pytest.raises(ConfigError) as err:
        prices.llm("p4d.24xlarge")
    assert "gpt-3.5-turbo" in str(err.value) and "p4d.24xlarge," not in str(err.value) \
        and "p5.48xlarge" not in str(err.value)


@pytest.mark.parametrize("line, match", [
    (dict(kind="rental", rental="p4d.24xlarge"), "give hours"),
    (dict(kind="llm", model="gpt-4", samples=10.0, in_per_sample=5.0), "out_per_sample"),
    (dict(kind="llm", model="gpt-4", tokens_out=10.0), "in_per_sample, or input_ratio"),
    (dict(kind="cpu", samples=10.0), "seconds_per_sample"),
    (dict(kind="training", model="phi1", tokens=1e9, seq_len=10**9), "longer than model 'phi1''s context"),
])
def test_lines_that_would_price_at_zero_or_nonsense_are_refused(line, match):
    with pytest.raises(ConfigError, match=match):
        budget.price_lines("s", [dict(stage="s", item="x", **line)], {"gpu": "A100", "n_gpus": 8, "mfu": 0.5})


@pytest.mark.parametrize("key, value, bounds", [("n_gpus", "-8", "an integer >= 1"), ("mfu", "-0.1", "in (0, 1]"),
                                                ("tokens_per_minute", "0", "> 0")])
def test_set_errors_name_the_set_key_and_the_true_bounds(key, value, bounds):
    sc = pipeline.preset_scenario("tiny")
    with pytest.raises(ConfigError) as err:
        sc.with_overrides([f"{key}={value}"])
    assert str(err.value).startswith(f"--set {key}: expected") and bounds in str(err.value)


def test_another_embedder_on_cpu_is_the_measured_rate_scaled_by_forward_flops():
    tp = budget.load_throughput()
    # CodeGen-350M-mono on the CPU (a GPU preset's decontamination set to embed there)
    cfg = table.get("decontam").config("phi1", device="cpu", tasks=1, workers=1)
    line = next(l for l in table.get("decontam").budget_lines(cfg) if l["item"] == "decontam-embed")
    seq, texts = cfg.embed_max_length, cfg.planned_records + 164
    ratio = (budget.embed_flops_per_token(budget.EXTRA_MODELS["minilm-local"], seq)
             / budget.embed_flops_per_token(budget.EXTRA_MODELS["Salesforce/codegen-350M-mono"], seq))
    assert 0 < ratio < 0.1  # a 350M body costs far more per token than MiniLM's
    assert line["cpu_hours"] * 3600 == pytest.approx(tp.embed_load_s + texts * seq / (tp.embed_tokens_per_s * ratio))
    filt = FilterConfig.for_preset("tiny")
    read = next(l for l in filter_lines(filt) if l["item"] == "read")
    assert read["cpu_hours"] * 3600 == pytest.approx(filt.corpus_samples / tp.corpus_samples_per_s)


def test_the_offline_annotator_runs_at_its_measured_rate_an_api_at_the_plans_throughput():
    tp = budget.load_throughput()
    tiny = next(l for l in filter_lines(FilterConfig.for_preset("tiny")) if l["item"] == "annotate")
    assert tiny["tokens_per_minute"] == pytest.approx(tp.heuristic_tokens_per_s * 60)
    paper = next(l for l in filter_lines(FilterConfig.for_preset("phi1")) if l["item"] == "annotate")
    assert "tokens_per_minute" not in paper  # gpt-4: the plan's LLM throughput default


def test_stand_in_synthesis_takes_its_measured_time_per_prompt_and_an_llm_the_api_speed():
    """The offline stand-in is a local function: its wall time is requests x the measured seconds per prompt of
    the stage (costs/throughput.toml), whatever its planned tokens; an LLM keeps the API tokens-per-minute."""
    from phi1lib import synthesis

    tp = budget.load_throughput()
    tiny = SynthesisConfig.for_preset("tiny")
    est = synthesis.estimate(tiny)
    requested = sum(tiny.n_for(kind) for kind in tiny.kinds)
    assert est.wall_hours * 3600 == pytest.approx(requested * tp.extractive_seconds_per_request)
    llm_cfg = SynthesisConfig.for_preset("tiny", provider="openai", model="gpt-3.5-turbo")
    llm_est = synthesis.estimate(llm_cfg)
    assert llm_est.wall_hours * 3600 == pytest.approx(llm_est.tokens / budget.DEFAULT_TOKENS_PER_MINUTE * 60)


def test_run_time_annotation_count_is_what_the_stand_in_annotator_uses():
    """count_annotation (what a filtering run prices once its pool is read) equals the tokens the LLM client then
    records for the same samples through the offline annotator: input and output exactly."""
    from phi1lib.filtering.annotate import annotate
    from phi1lib.filtering.corpus import load_corpus
    from phi1lib.filtering.stage import count_annotation

    cfg = FilterConfig.for_preset("tiny")
    samples = load_corpus("installed", 40, seed=3)
    counted = count_annotation(cfg, [s["text"] for s in samples])
    _, stats = annotate(samples, max_chars=cfg.annotate_max_chars, max_tokens=max(cfg.annotate_tokens_out, 8))
    assert stats.prompt_tokens == pytest.approx(counted["in_per_sample"] * 40) and stats.prompt_tokens > 40 * 100
    assert stats.completion_tokens == counted["out_per_sample"] * 40
    lines = filter_lines(cfg, {"annotation": counted, "embed": (7, 700)})
    assert next(l for l in lines if l["item"] == "annotate")["samples"] == 40
    assert "7 texts not in the embedding cache, 700 padded tokens" in next(l for l in lines if l["item"] == "embed")["note"]


def test_gpu_presets_decontaminate_on_their_gpus_one_task_each():
    """phi1's decontamination embeds on the box's 8 GPUs, one datatrove task each, in fp32: the embedder's forward
    FLOPs over every exercise and problem, priced like the filter's pass; the AST work splits over the 8 tasks."""
    cfg = table.get("decontam").config("phi1")
    assert (cfg.device, cfg.tasks, cfg.workers) == ("cuda", 8, 8)
    est = table.get("decontam").estimate(cfg, budget.load_prices())
    embed = next(l for l in est.lines if l.item == "decontam-embed")
    spec = budget.EXTRA_MODELS["Salesforce/codegen-350M-mono"]
    seq, texts = cfg.embed_max_length, cfg.planned_records + 164
    flops = (2 * budget.body_params(spec) + 4 * spec.n_layer * spec.d_model * seq) * texts * seq
    assert embed.flops == pytest.approx(flops, rel=1e-9)
    assert embed.wall_hours == pytest.approx(embed.gpu_hours / 8)
    assert table.get("decontam").config("tiny").device == "cpu"
