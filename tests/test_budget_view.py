"""The ipywidgets calculator, driven without a kernel: set `.value`, read the model state and HTML."""

from __future__ import annotations

import re

import pytest

from phi1lib import budget, pipeline
from phi1lib.budget.view import BudgetCalculator, plot_stages, stacked_bar_html


@pytest.fixture(scope="module")
def prices():
    return budget.load_prices()


def _shown_total(calc) -> float:
    m = re.search(r'class="phi1-total">\$([0-9,.]+)<', calc.total.value)
    assert m, calc.total.value
    return float(m.group(1).replace(",", ""))


def test_starts_on_the_seed_and_shows_every_line(prices):
    calc = BudgetCalculator(pipeline.plans(), prices=prices)
    assert _shown_total(calc) == 6478.10
    assert calc.table.value.count('class="phi1-line"') == 8
    for item in ("textbooks output", "annotate input", "gpus", "cappuccino"):
        assert item in calc.table.value
    assert calc.chart.value.count('class="phi1-seg"') == 4


def test_token_price_and_coffee_knobs_change_the_total(prices):
    calc = BudgetCalculator(pipeline.plans(), prices=prices)
    calc.knobs["textbooks.tokens_out"].widget.value = 2000  # millions: 2B instead of 1B
    # +1B out at $0.002/1K and +0.1B in at $0.0015/1K (input follows the 1:10 ratio)
    assert calc.state()["total_usd"] == pytest.approx(6478.104 + 2000 + 150)
    assert _shown_total(calc) == round(6478.104 + 2150, 2)
    calc.knobs["batch"].widget.value = True  # the seed is priced at 2023-06-30: no Batch API yet
    assert "Batch API discount starts 2024-04-15" in calc.error.value
    assert calc.state()["total_usd"] == pytest.approx(6478.104 + 2150)  # the last good result stays shown
    calc.knobs["batch"].widget.value = False
    assert calc.error.value == ""
    calc.knobs["price.rental"].widget.value = 10.0  # USD per machine-hour
    training = next(s for s in calc.state()["stages"] if s["stage"] == "training")
    assert training["cost_usd"] == pytest.approx(1030.0)
    calc.knobs["price.coffee"].widget.value = 6.0
    coffee = next(s for s in calc.state()["stages"] if s["stage"] == "coffee")
    assert coffee["cost_usd"] == 6.0 and coffee["cappuccinos"] == pytest.approx(1.0)


def test_preset_gpu_count_mfu_and_model_size(prices):
    calc = BudgetCalculator(pipeline.plans(), "preset: phi1", prices=prices)
    base = pipeline.estimate_preset("phi1", prices)
    assert calc.state()["total_usd"] == pytest.approx(base.total_usd)
    pre = lambda: next(s for s in calc.state()["stages"] if s["stage"] == "pretrain")  # noqa: E731
    a100_hours = pre()["gpu_hours"]
    calc.knobs["gpu"].widget.value = "H100"
    assert pre()["gpu_hours"] == pytest.approx(a100_hours * 312 / 989)
    assert calc.knobs["price.rental"].widget.value == prices.rental("p5.48xlarge").usd_per_hour
    calc.knobs["mfu"].widget.value = 0.25
    assert pre()["gpu_hours"] == pytest.approx(a100_hours * 312 / 989 * 2)
    wall = pre()["wall_hours"]
    calc.knobs["n_gpus"].widget.value = 16
    assert pre()["wall_hours"] == pytest.approx(wall / 2)
    calc.knobs["pretrain.model"].widget.value = "phi1-small"
    assert pre()["gpu_hours"] < a100_hours * 312 / 989 * 2 / 3
    calc.knobs["pretrain.tokens"].widget.value = 0
    assert pre()["cost_usd"] == 0


def test_price_date_and_plan_dropdowns(prices):
    calc = BudgetCalculator(pipeline.plans(), prices=prices)
    calc.as_of.value = "latest"  # gpt-3.5-turbo now resolves to the 2024 snapshot
    assert calc.state()["total_usd"] < 6478.10
    assert "gpt-3.5-turbo-0125" in calc.table.value
    calc.source.value = "preset: tiny"
    assert calc.state()["scenario"] == "tiny"
    assert "pretrain.tokens" in calc.knobs


def test_bad_input_shows_an_error_not_a_traceback(prices):
    calc = BudgetCalculator(pipeline.plans(), "preset: phi1", prices=prices)
    calc.knobs["gpu"].widget.value = "cpu"
    before = calc.state()["total_usd"]
    calc.knobs["n_gpus"].widget.value = 0
    assert "n_gpus" in calc.error.value and "Traceback" not in calc.error.value
    assert calc.state()["total_usd"] == before  # the last good result stays on screen
    calc.knobs["n_gpus"].widget.value = 1
    assert calc.error.value == ""


def test_stacked_bar_and_plot(prices):
    seed = budget.price_scenario(budget.load_scenario("phi1-paper"), prices)
    html = stacked_bar_html(seed)
    widths = [float(w) for w in re.findall(r"width:([0-9.]+)%", html)]
    assert sum(widths) == pytest.approx(100.0, abs=0.01)
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_stages({"seed": seed, "phi1": pipeline.estimate_preset("phi1", prices)})
    assert len(ax.patches) >= 4


def test_llm_price_knobs_follow_the_model_and_accept_user_prices(prices):
    calc = BudgetCalculator(pipeline.plans(), prices=prices)
    kin, kout = calc.knobs["price.textbooks.in"].widget, calc.knobs["price.textbooks.out"].widget
    assert (kin.value, kout.value) == (0.0015, 0.002)  # gpt-3.5-turbo as of June 2023
    # The transcript's misread prices typed in by hand: +$1,350 input and +$18,000 output on textbooks.
    kin.value, kout.value = 0.015, 0.02
    assert calc.state()["total_usd"] == pytest.approx(6478.104 + 1350 + 18000)
    assert "custom-textbooks" in calc.table.value
    calc.knobs["textbooks.model"].widget.value = "gpt-4"  # picking a model shows its list prices again
    assert (kin.value, kout.value) == (0.03, 0.06)
    synth = next(s for s in calc.state()["stages"] if s["stage"] == "synthesis")
    assert synth["cost_usd"] == pytest.approx(1e8 / 1000 * 0.03 + 1e9 / 1000 * 0.06 + 387)


def test_the_widget_says_it_is_a_snapshot_on_a_static_page_and_wraps_its_knobs(prices):
    calc = BudgetCalculator(pipeline.plans(), prices=prices)
    assert calc.widget.children[0] is calc.snapshot
    assert "snapshot" in calc.snapshot.value and "voila costs/calculator.ipynb" in calc.snapshot.value
    # A fixed two-column grid wider than the book's content column was clipped on the right.
    assert "auto-fill" in calc.knob_box.layout.grid_template_columns


def test_book_stylesheet_is_loaded_and_keeps_wide_outputs_unclipped():
    import os
    from pathlib import Path

    import yaml

    book = Path(__file__).resolve().parent.parent / "book"
    config = yaml.safe_load((book / "_config.yml").read_text(encoding="utf-8"))["sphinx"]["config"]
    extra = [book / p for p in config["html_extra_path"]]
    for src in config["html_css_files"]:
        rel = Path(os.path.normpath(Path("_static") / src))  # Sphinx prefixes _static/; ../ climbs to the root
        css = next(root / rel for root in extra if (root / rel).is_file())
        text = css.read_text(encoding="utf-8")
        assert "overflow-x: auto" in text and ".widget-gridbox" in text
