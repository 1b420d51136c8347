"""Budget model: price-book validation, the seed's spreadsheet, FLOPs, monotonicity, presets."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phi1lib import budget, paper, pipeline, presets
from phi1lib.errors import ConfigError, Phi1Error
from phi1lib.paths import costs_dir


@pytest.fixture(scope="module")
def prices():
    return budget.load_prices()


# ---- price books --------------------------------------------------------------------------

def test_price_books_have_source_and_date_for_every_number(prices):
    entries = [*prices.llms.values(), *prices.gpus.values(), *prices.rentals.values(), *prices.coffees.values()]
    assert len(entries) > 10
    for e in entries:
        assert e.source.strip(), e
        assert e.as_of is not None, e


def test_model_names_and_dated_aliases(prices):
    assert prices.at("2023-04-01").llm("gpt-3.5-turbo").name == "gpt-3.5-turbo-0301"
    june = prices.at("2023-06-30").llm("gpt-3.5-turbo")
    assert (june.name, june.input_per_1k, june.output_per_1k) == ("gpt-3.5-turbo-0613", 0.0015, 0.002)
    assert prices.llm("gpt-3.5-turbo").as_of >= june.as_of  # newest snapshot by default
    assert (prices.llm("gpt-4").input_per_1k, prices.llm("gpt-4").output_per_1k) == (0.03, 0.06)
    assert (prices.llm("gpt-4-32k").input_per_1k, prices.llm("gpt-4-32k").output_per_1k) == (0.06, 0.12)
    assert prices.batch_discount == 0.5
    assert prices.gpu("A100").peak_tflops == 312 and prices.gpu("H100").peak_tflops == 989
    assert prices.rental("seed-8xA100").usd_per_hour == 31.218
    assert prices.at("2024-01-01").rental("p4d.24xlarge").usd_per_hour == 32.77
    assert prices.at("2025-07-01").rental("p4d.24xlarge").usd_per_hour == 21.96
    assert prices.at("2024-01-01").rental("p5.48xlarge").usd_per_hour == 98.32
    assert prices.rental("p5.48xlarge").usd_per_hour == 55.04
    assert prices.coffee("grande-cappuccino-redmond").usd == 5.65


def test_unknown_model_lists_known_ones_and_free_is_explicit(prices):
    with pytest.raises(ConfigError) as err:
        prices.llm("gpt-5-ultra")
    assert "gpt-5-ultra" in str(err.value) and "gpt-4-32k" in str(err.value)
    with pytest.raises(ConfigError):
        budget.price_llm_usage("./my-local-model", 10, 10, prices)
    assert budget.price_llm_usage("./my-local-model", 10, 10, prices.with_free("./my-local-model")) == 0.0
    assert budget.price_llm_usage("heuristic", 1e6, 1e6, prices) == 0.0  # listed in local.toml


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    d = tmp_path / "prices"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


@pytest.mark.parametrize("text, key, expected", [
    ('[llm.m]\ninput_per_1k = "0.01"\noutput_per_1k = 0.02\nsource = "s"\nas_of = 2024-01-01\n',
     "llm.m.input_per_1k", "a number"),
    ('[llm.m]\ninput_per_1k = 0.01\nsource = "s"\nas_of = 2024-01-01\n', "llm.m.output_per_1k", "missing"),
    ('[gpu.X]\npeak_tflops = 100\nsource = "s"\nas_of = "June"\n', "gpu.X.as_of", "a date"),
    ('[rental.r]\nusd_per_hour = 1.0\ngpu = "A100"\nn_gpus = 2.5\nsource = "s"\nas_of = 2024-01-01\n',
     "rental.r.n_gpus", "an integer"),
    ('[coffee.c]\nusd = 5\nsource = "s"\nas_of = 2024-01-01\ncolour = "brown"\n', "coffee.c.colour", "unknown field"),
    ('[llm.m]\ninput_per_1k = 0.01\noutput_per_1k = 0.02\nas_of = 2024-01-01\n', "llm.m.source", "missing"),
    ('[gpus.A]\npeak_tflops = 1\n', "gpus", "unknown table"),
    ('[llm.m\ninput_per_1k = 1\n', "not valid TOML", "line"),
    ('[gpu.X]\npeak_tflops = 0\nsource = "s"\nas_of = 2024-01-01\n', "gpu.X.peak_tflops", "> 0"),
    ('[gpu.X]\npeak_tflops = inf\nsource = "s"\nas_of = 2024-01-01\n', "gpu.X.peak_tflops", "> 0"),
    ('[llm.m]\ninput_per_1k = nan\noutput_per_1k = 1\nsource = "s"\nas_of = 2024-01-01\n', "llm.m.input_per_1k",
     "finite"),
])
def test_malformed_price_book_names_file_key_and_type(tmp_path, text, key, expected):
    d = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        budget.load_prices([d])
    msg = str(err.value)
    assert "mine.toml" in msg and key in msg and expected in msg, msg


def test_unreadable_price_books_and_folders_are_one_error(tmp_path):
    d = tmp_path / "prices"
    d.mkdir()
    (d / "mine.toml").write_bytes(b"\xff\xfe[coffee]\n")
    with pytest.raises(ConfigError, match=r"mine.toml: not UTF-8 text \(byte 0xff"):
        budget.load_prices([d])
    (d / "mine.toml").unlink()
    with pytest.raises(ConfigError, match="holds no \\*.toml files"):
        budget.load_prices([d])
    (d / "sub.toml").mkdir()
    with pytest.raises(Phi1Error, match="sub.toml: is a folder"):
        budget.load_prices([d])
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        budget.load_prices([tmp_path / "f.txt"])
    with pytest.raises(ConfigError, match="does not exist"):
        budget.load_scenario("phi1-paper", [tmp_path / "nope"])


def test_zero_peak_or_throughput_never_divides_by_zero(tmp_path, prices):
    d = _write(tmp_path, '[gpu.B]\npeak_tflops = 0\nsource = "s"\nas_of = 2024-01-01\n')
    with pytest.raises(ConfigError, match="peak_tflops"):
        budget.load_prices([d])
    zero = replace(prices, gpus={**prices.gpus, "A100": replace(prices.gpus["A100"], peak_tflops=0.0)})
    with pytest.raises(ConfigError, match="peak_tflops must be > 0"):
        budget.estimate_compute("s", 1e18, zero, "A100", 8, 0.5)
    for tpm in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="tokens_per_minute"):
            budget.estimate_llm("s", "gpt-3.5-turbo", 10, 10, prices, tokens_per_minute=tpm)


@pytest.mark.parametrize("override, needle", [
    ("n_gpus=0", "n_gpus: expected an integer >= 1"), ("mfu=0", "in (0, 1]"), ("mfu=nan", "in (0, 1]"),
    ("tokens_per_minute=0", "> 0"), ("batch=on", "true/false"), ("textbooks.tokens_out=inf", ">= 0"),
    ("textbooks.tokens_per_minute=-1", "> 0"),
])
def test_set_rejects_meaningless_numbers_with_the_range(override, needle):
    sc = budget.load_scenario("phi1-paper")
    with pytest.raises(ConfigError) as err:
        sc.with_overrides([override])
    assert f"--set {override.split('=')[0]}" in str(err.value) and needle in str(err.value), str(err.value)


def test_unknown_gpu_is_refused_even_where_no_line_uses_it(prices):
    sc = budget.load_scenario("phi1-paper")  # a rental line only: gpu is not used by any line
    for key in ("gpu", "rental", "coffee"):
        with pytest.raises(ConfigError, match=f"{key}: unknown {key if key != 'gpu' else 'GPU'} 'nope'"):
            budget.price_scenario(sc.with_overrides([f"{key}=nope"]), prices)


def test_dropped_in_price_book_is_picked_up_and_overrides(tmp_path, prices):
    d = _write(tmp_path, '[llm."my-model"]\ninput_per_1k = 0.001\noutput_per_1k = 0.004\n'
                         'source = "my contract"\nas_of = 2025-02-01\n'
                         '[coffee."grande-cappuccino-redmond"]\nusd = 7.0\nsource = "2025 menu"\nas_of = 2025-03-01\n')
    book = budget.load_prices([d])
    assert book.llm("my-model").output_per_1k == 0.004
    assert book.coffee("grande-cappuccino-redmond").usd == 7.0  # a later folder overrides
    assert budget.price_llm_usage("my-model", 1000, 1000, book) == pytest.approx(0.005)
    # A file dropped into the shipped folder itself is found too (via PHI1_COSTS_DIR copy).
    copy = tmp_path / "costs"
    shutil.copytree(costs_dir(), copy)
    (copy / "prices" / "extra.toml").write_text((d / "mine.toml").read_text().split("[coffee")[0])
    import os
    old = os.environ.get("PHI1_COSTS_DIR")
    os.environ["PHI1_COSTS_DIR"] = str(copy)
    try:
        assert budget.load_prices().llm("my-model").input_per_1k == 0.001
    finally:
        if old is None:
            os.environ.pop("PHI1_COSTS_DIR")
        else:
            os.environ["PHI1_COSTS_DIR"] = old


def test_duplicate_entry_in_one_folder_is_an_error(tmp_path):
    d = _write(tmp_path, '[gpu.A100]\npeak_tflops = 1\nsource = "s"\nas_of = 2024-01-01\n')
    copy = tmp_path / "c"
    shutil.copytree(costs_dir() / "prices", copy)
    shutil.copy(d / "mine.toml", copy / "zz.toml")
    with pytest.raises(ConfigError, match="already defined in .*gpus.toml"):
        budget.load_prices(files=sorted(copy.glob("*.toml")))


# ---- the seed's spreadsheet ---------------------------------------------------------------

def test_seed_spreadsheet_to_the_cent(prices):
    b = budget.price_scenario(budget.load_scenario("phi1-paper"), prices)
    lines = {l.item: l.cost_usd for l in b.lines}
    # Hand arithmetic with exact decimals from the transcript's items and the June-2023 prices.
    D = Decimal
    expected = {
        "textbooks output": D(1_000_000_000) / 1000 * D("0.002"), "textbooks input": D(100_000_000) / 1000 * D("0.0015"),
        "exercises output": D(180_000_000) / 1000 * D("0.002"), "exercises input": D(18_000_000) / 1000 * D("0.0015"),
        "annotate input": D(100_000 * 100) / 1000 * D("0.06"), "annotate output": D(100_000 * 10) / 1000 * D("0.12"),
        "gpus": D("31.218") * 103, "cappuccino": D("5.65"),
    }
    assert set(lines) == set(expected)
    for item, usd in expected.items():
        assert lines[item] == pytest.approx(float(usd), abs=1e-6), item
    total = sum(expected.values())
    assert round(total, 2) == D("6478.10")
    assert round(b.total_usd, 2) == 6478.10
    assert 6000 < b.total_usd < 6500  # "a little under six and a half thousand dollars"
    assert b.stage("coffee").cappuccinos == pytest.approx(1.0)
    assert "$6,478.10" in b.format()
    assert "0.02" in b.scenario.note and "0.0015" in b.scenario.note


def test_misread_prices_cannot_give_the_seed_total(prices):
    # The transcript's "0.02"/"0.015" per 1K would make the total ~$29k: that's why they are misread.
    sc = budget.load_scenario("phi1-paper")
    misread = prices.with_free()  # a copy
    misread.llms["gpt-3.5-turbo-0613"] = budget.LLMPrice("gpt-3.5-turbo-0613", 0.015, 0.02, "misread",
                                                         prices.llms["gpt-3.5-turbo-0613"].as_of)
    assert round(budget.price_scenario(sc, misread).total_usd, 2) == 29_311.10  # as the scenario note says
    assert "29,311.10" in sc.note


# ---- FLOPs and the anchor -----------------------------------------------------------------

def test_flops_per_token_matches_hand_arithmetic_for_phi1():
    """6 x (N - input embedding) + 12 x L x d_model x T (#19: the embedding lookup is not a matmul)."""
    spec = presets.get_preset("phi1").model
    n = 1_418_270_720 - 51_200 * 2048  # the input-embedding table is a lookup; the untied LM head multiplies
    attn = 12 * 24 * 2048 * 2048  # 12 * L * d_model * T
    assert budget.flops_per_token(spec, 2048) == 6 * n + attn == 9_088_438_272
    assert budget.flops_per_token(spec, 2048, attention=False) == 6 * n
    assert budget.flops_per_token(spec, 1024) == 6 * n + attn // 2
    assert budget.forward_flops_per_token(spec, 2048) == pytest.approx((6 * n + attn) / 3)
    tied = replace(spec, tie_embeddings=True)  # one table, looked up and multiplied: counted once
    assert budget.flops_per_token(tied, 2048, attention=False) == 6 * tied.n_params()


def test_flops_per_token_matches_a_count_of_the_models_matmuls():
    """The formula against torch's own FLOP counter on a small Phi (forward x 3 = forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from phi1lib.training.model import build_model

    spec = presets.ModelSpec(n_layer=2, d_model=128, d_mlp=512, n_head=4, rotary_dim=16, n_ctx=256, vocab_size=1000)
    model = build_model(spec, attn_implementation="eager").eval()
    ids = torch.randint(0, 1000, (1, 256))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids)
    per_token = 3 * counter.get_total_flops() / 256
    # eager attention over the full (masked) 256 x 256 square: 4*L*d*T forward, as the formula counts it
    assert budget.flops_per_token(spec, 256) == pytest.approx(per_token, rel=0.01)


def test_phi1_pretraining_lands_near_770_a100_hours(prices):
    spec = presets.get_preset("phi1").model
    tokens = presets.get_preset("phi1").pretrain.tokens
    six_n = budget.estimate_training("pretrain", spec, tokens, prices, attention=False, mfu=paper.IMPLIED_MFU)
    # the implied MFU counts 6 x all parameters; our count leaves the input embedding's lookup out
    matmul = paper.PARAMS - spec.vocab_size * spec.d_model
    assert six_n.gpu_hours == pytest.approx(770.0 * matmul / paper.PARAMS, rel=1e-9)
    assert paper.IMPLIED_MFU == pytest.approx(0.495, abs=0.001)
    full = pipeline.estimate_preset("phi1", prices).stage("pretrain")
    assert 0.95 < full.gpu_hours / 770 < 1.20  # with the attention term: ~814 h at MFU 0.5
    assert full.wall_hours == pytest.approx(full.gpu_hours / 8)
    assert full.wall_hours < 4 * 24 + 24  # "under 4 days" give or take the attention term


def test_compute_pays_whole_machines(prices):
    one = budget.estimate_compute("x", 1e18, prices, gpu="A100", n_gpus=1)
    eight = budget.estimate_compute("x", 1e18, prices, gpu="A100", n_gpus=8)
    assert one.gpu_hours == pytest.approx(eight.gpu_hours)
    assert one.cost_usd == pytest.approx(8 * eight.cost_usd)
    with pytest.raises(ConfigError, match="H100"):
        budget.estimate_compute("x", 1e18, prices, gpu="A100", rental="p5.48xlarge")
    with pytest.raises(ConfigError, match="mfu"):
        budget.estimate_compute("x", 1e18, prices, mfu=1.5)


# ---- monotonicity -------------------------------------------------------------------------

_tokens = st.floats(min_value=0, max_value=1e12, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(a=_tokens, b=_tokens, c=_tokens, batch=st.booleans(),
       model=st.sampled_from(["gpt-3.5-turbo", "gpt-3.5-turbo-0301", "gpt-4", "gpt-4-32k", "gpt-4o-mini"]))
def test_more_llm_tokens_never_cheaper(a, b, c, batch, model):
    prices = budget.load_prices()
    lo = budget.estimate_llm("s", model, a, b, prices, batch=batch).cost_usd
    assert budget.estimate_llm("s", model, a + c, b, prices, batch=batch).cost_usd >= lo
    assert budget.estimate_llm("s", model, a, b + c, prices, batch=batch).cost_usd >= lo
    assert budget.estimate_llm("s", model, a, b, prices, batch=True).cost_usd <= \
        budget.estimate_llm("s", model, a, b, prices, batch=False).cost_usd


@settings(max_examples=40, deadline=None)
@given(t1=st.floats(min_value=0, max_value=1e12), dt=st.floats(min_value=0, max_value=1e12),
       gpu=st.sampled_from(["A100", "H100"]), n=st.integers(1, 64))
def test_more_training_tokens_never_cheaper(t1, dt, gpu, n):
    prices = budget.load_prices()
    spec = presets.get_preset("phi1-small").model
    a = budget.estimate_training("t", spec, t1, prices, gpu=gpu, n_gpus=n)
    b = budget.estimate_training("t", spec, t1 + dt, prices, gpu=gpu, n_gpus=n)
    assert b.cost_usd >= a.cost_usd and b.gpu_hours >= a.gpu_hours and b.wall_hours >= a.wall_hours


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(min_value=1.0, max_value=100.0),
       key=st.sampled_from(["textbooks.samples", "exercises.out_per_sample", "pretrain.steps", "annotate.samples",
                            "finetune.batch_seqs", "embed.tokens", "generate.tokens"]))
def test_preset_total_grows_with_any_token_knob(scale, key):
    base = pipeline.preset_scenario("phi1")
    value = base.get(key) * scale
    if key.endswith(("steps", "batch_seqs")):
        value = int(math.ceil(value))
    lo = budget.price_scenario(base).total_usd
    hi = budget.price_scenario(base.with_overrides({key: value})).total_usd
    assert hi >= lo


# ---- presets and scenarios ----------------------------------------------------------------

def test_preset_stages_are_derived_from_the_config(prices):
    p = presets.get_preset("phi1-small")
    b = pipeline.estimate_preset(p, prices)
    # What `phi1 run` runs on a GPU preset, in order; the ablation is opt-in there, MBPP when the preset scores it.
    mbpp = ["evaluation-mbpp"] if "mbpp" in p.eval.benchmarks else []
    assert [s.stage for s in b.stages] == ["filtering", "synthesis", "decontam", "pretrain", "finetune", "evaluation",
                                           *mbpp]
    pre = b.stage("pretrain")
    assert pre.tokens == p.pretrain.tokens
    assert pre.flops == pytest.approx(budget.flops_per_token(p.model, p.pretrain.seq_len) * p.pretrain.tokens)
    syn = b.stage("synthesis")
    out_tokens = p.data.n_textbooks * p.data.tokens_per_textbook + p.data.n_exercises * p.data.tokens_per_exercise
    assert out_tokens == pytest.approx(p.data.textbook_tokens + p.data.exercise_tokens, rel=1e-3)
    assert syn.tokens > out_tokens  # plus the prompts, measured from the real prompt templates
    changed = presets.with_overrides(p, pretrain={"steps": p.pretrain.steps * 2, "decay_steps": p.pretrain.decay_steps * 2})
    assert pipeline.estimate_preset(changed, prices).stage("pretrain").gpu_hours == pytest.approx(2 * pre.gpu_hours)


def test_tiny_preset_is_free_but_not_silent(prices):
    b = pipeline.estimate_preset("tiny", prices)
    assert b.total_usd == 0.0  # offline stand-ins and your own laptop cost nothing
    assert b.stage("pretrain").wall_hours > 0 and b.stage("filtering").tokens > 0
    assert b.stage("ablation").wall_hours > b.stage("pretrain").wall_hours  # tiny runs the ablation by default


def test_overrides_and_errors(prices):
    sc = budget.load_scenario("phi1-paper")
    assert budget.price_scenario(sc.with_overrides(["textbooks.batch=true", "as_of=latest"]), prices).total_usd < 6478
    h100 = pipeline.estimate_preset("phi1", prices, ["gpu=H100", "rental=p5.48xlarge"]).stage("pretrain")
    a100 = pipeline.estimate_preset("phi1", prices).stage("pretrain")
    assert h100.gpu_hours == pytest.approx(a100.gpu_hours * 312 / 989)
    for bad, needle in [(["nope=1"], "unknown key"), (["textbooks.colour=red"], "tokens_out"),
                        (["ghost.tokens_out=1"], "textbooks"), (["mfu=fast"], "expected a number"),
                        (["as_of=yesterday"], "date"), (["gpus"], "KEY=VALUE")]:
        with pytest.raises(ConfigError, match=needle):
            sc.with_overrides(bad)
    with pytest.raises(ConfigError, match="phi1-paper"):
        budget.load_scenario("no-such-scenario")


def test_malformed_scenario_names_file_and_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[line]]\nstage = "s"\nitem = "x"\nkind = "llm"\nmodel = "gpt-4"\ntokens_out = "lots"\n')
    with pytest.raises(ConfigError) as err:
        budget.load_scenario(path)
    assert "bad.toml" in str(err.value) and "tokens_out" in str(err.value) and "number" in str(err.value)


def test_budget_imports_no_heavy_modules():
    code = ("import sys, phi1lib.budget; "
            "print(sorted(m for m in ('ipywidgets','pandas','torch','transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_preset_based_scenario_file_and_params_override(prices):
    today = budget.price_scenario(pipeline.load_scenario("phi1-2025"), prices)
    a100 = pipeline.estimate_preset("phi1", prices)
    assert today.scenario.defaults["gpu"] == "H100" and today.scenario.as_of is None
    assert today.stage("pretrain").gpu_hours == pytest.approx(a100.stage("pretrain").gpu_hours * 312 / 989)
    assert today.stage("synthesis").cost_usd == pytest.approx(a100.stage("synthesis").cost_usd / 2)  # Batch API
    # params= replaces N in 6N; the attention term keeps the model's shape.
    sc = pipeline.preset_scenario("phi1").with_overrides({"pretrain.params": 2 * presets.get_preset("phi1").model.n_params()})
    spec, tokens = presets.get_preset("phi1").model, presets.get_preset("phi1").pretrain.tokens
    attn = budget.flops_per_token(spec, 2048) - budget.flops_per_token(spec, 2048, attention=False)
    want = (6 * 2 * spec.n_params() + attn) * tokens
    assert budget.price_scenario(sc, prices).stage("pretrain").flops == pytest.approx(want)
