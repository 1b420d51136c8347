"""The budget calculator as ipywidgets: knobs over `phi1lib.budget`, a live line-item table and a stacked bar.

Everything the view shows is computed in Python when a knob's `.value` changes, so it is live
wherever Python runs (tests set values directly; Voilà: costs/calculator.ipynb; Jupyter). In the
static book only the widget's state is embedded: a snapshot, and the widget says so above its knobs.
The plans it offers come from the caller: `phi1lib.pipeline.plans()` gives every scenario file
and every preset's plan (the stages' own estimates), which only the pipeline can build.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import ipywidgets as W

from . import estimates, scenario
from .pricebook import PriceBook, Rental, load_prices
from ..errors import unknown_choice
from ..presets import PRESET_NAMES

PRICE_DATES = {"mid-2023 (the paper)": "2023-06-30", "early 2024": "2024-02-01", "latest": "latest"}
STAGE_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]
CUSTOM_RENTAL, CUSTOM_COFFEE = "custom-rental", "custom-coffee"
# Shown above the knobs everywhere: in the static book nothing recomputes (no Python behind the page).
SNAPSHOT_NOTE = ('<div style="font-size:12px;padding:4px 8px;border-left:3px solid #f28e2b;background:#fff8ee">'
                 '<b>On a static web page this calculator is a snapshot</b>: the knobs move but nothing recomputes, '
                 'because no Python runs behind the page. For a live calculator run <code>voila costs/calculator.ipynb'
                 '</code> (or open the notebook in Jupyter); <code>phi1 budget --preset phi1 --set KEY=VALUE</code> '
                 'prices the same plans on the command line.</div>')


@dataclass
class Knob:
    key: str  # a --set key, or "price.rental" / "price.coffee"
    widget: W.ValueWidget
    scale: float = 1.0  # widget value x scale = model value (e.g. millions of tokens)
    initial: Any = None


def stacked_bar_html(result: scenario.Budget, width_px: int = 640) -> str:
    """One horizontal bar, a segment per stage sized by its dollars, with a legend."""
    total = result.total_usd or 1.0
    segs, legend = [], []
    for i, s in enumerate(result.stages):
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        pct = 100.0 * s.cost_usd / total
        title = html.escape(f"{s.stage}: {scenario.usd(s.cost_usd)} ({pct:.1f}%)")
        segs.append(f'<div class="phi1-seg" data-stage="{html.escape(s.stage)}" title="{title}" '
                    f'style="width:{pct:.3f}%;background:{colour};height:22px"></div>')
        legend.append(f'<span style="margin-right:12px"><span style="display:inline-block;width:10px;height:10px;'
                      f'background:{colour}"></span> {title}</span>')
    return (f'<div class="phi1-bar" style="display:flex;width:{width_px}px;border:1px solid #999">{"".join(segs)}</div>'
            f'<div style="font-size:12px;margin-top:4px">{"".join(legend)}</div>')


def table_html(result: scenario.Budget) -> str:
    """Every line item with its arithmetic, stage subtotals and the total."""
    rows = ['<tr><th>stage</th><th>item</th><th style="text-align:right">USD</th><th style="text-align:right">'
            'GPU-h</th><th style="text-align:right">wall h</th><th style="text-align:right">cappuccinos</th>'
            '<th>how</th></tr>']
    for s in result.stages:
        for l in s.lines:
            rows.append(f'<tr class="phi1-line"><td>{html.escape(s.stage)}</td><td>{html.escape(l.item)}</td>'
                        f'<td style="text-align:right">{scenario.usd(l.cost_usd)}</td><td style="text-align:right">'
                        f'{l.gpu_hours:,.1f}</td><td style="text-align:right">{l.wall_hours:,.1f}</td>'
                        f'<td style="text-align:right">{estimates.cappuccinos(l.cost_usd, result.prices, _coffee(result)):,.1f}'
                        f'</td><td style="font-size:11px">{html.escape(l.detail)}</td></tr>')
        rows.append(f'<tr style="font-weight:bold"><td>{html.escape(s.stage)}</td><td>subtotal</td>'
                    f'<td style="text-align:right">{scenario.usd(s.cost_usd)}</td><td style="text-align:right">'
                    f'{s.gpu_hours:,.1f}</td><td style="text-align:right">{s.wall_hours:,.1f}</td>'
                    f'<td style="text-align:right">{s.cappuccinos:,.1f}</td><td></td></tr>')
    rows.append(f'<tr style="font-weight:bold;border-top:2px solid #333"><td>TOTAL</td><td></td>'
                f'<td style="text-align:right">{scenario.usd(result.total_usd)}</td><td style="text-align:right">'
                f'{result.total("gpu_hours"):,.1f}</td><td style="text-align:right">{result.total("wall_hours"):,.1f}</td>'
                f'<td style="text-align:right">{result.total("cappuccinos"):,.1f}</td><td></td></tr>')
    return f'<table class="phi1-table" cellpadding="4" style="border-collapse:collapse">{"".join(rows)}</table>'


def _coffee(result: scenario.Budget) -> str:
    return result.scenario.defaults.get("coffee", estimates.DEFAULT_COFFEE)


def plot_stages(budgets: dict[str, scenario.Budget], ax=None):
    """Matplotlib stacked bars: one bar per budget, one colour per stage (dollars)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.6 * len(budgets) + 1.5))
    stages: list[str] = []
    for b in budgets.values():
        stages += [s.stage for s in b.stages if s.stage not in stages]
    left = [0.0] * len(budgets)
    for i, stage in enumerate(stages):
        vals = [next((s.cost_usd for s in b.stages if s.stage == stage), 0.0) for b in budgets.values()]
        ax.barh(list(budgets), vals, left=left, label=stage, color=STAGE_COLOURS[i % len(STAGE_COLOURS)])
        left = [l + v for l, v in zip(left, vals)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {scenario.usd(total)}", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("USD")
    ax.legend(loc="lower right", fontsize=8)
    return ax


class BudgetCalculator:
    """Knobs -> scenario overrides and price tweaks -> Budget -> HTML. `.widget` is the app."""

    def __init__(self, plans: Mapping[str, Callable[[], scenario.Scenario]], source: str = "scenario: phi1-paper",
                 prices: PriceBook | None = None):
        """plans: label -> a function giving that plan (`phi1lib.pipeline.plans()`); `source` is the one shown first."""
        self.base_prices = prices or load_prices()
        self.sources: dict[str, Callable[[], scenario.Scenario]] = dict(plans)
        if source not in self.sources:
            raise unknown_choice("plan", source, self.sources)
        self.source = W.Dropdown(options=list(self.sources), value=source, description="Plan")
        self.as_of = W.Dropdown(options=list(PRICE_DATES) + ["from the plan"], value="from the plan",
                                description="Prices as of")
        self.total = W.HTML(layout=W.Layout(margin="6px 0"))
        self.total.add_class("phi1-total-box")
        self.chart = W.HTML()
        self.table = W.HTML()
        self.error = W.HTML()
        # Two columns where the page is wide enough, one where it is not: a fixed 2 x 420 px grid is clipped
        # by the book's content column.
        self.knob_box = W.GridBox(layout=W.Layout(grid_template_columns="repeat(auto-fill, minmax(400px, 1fr))",
                                                  width="100%"))
        self.knobs: dict[str, Knob] = {}
        self.result: scenario.Budget | None = None
        self._quiet = False
        self.source.observe(lambda _: self._load(), "value")
        self.as_of.observe(lambda _: self._load(keep_knobs=True), "value")
        from pathlib import Path

        names = ", ".join(Path(f).name for f in self.base_prices.files)
        self.books = W.HTML(f'<span style="font-size:11px">price books: {html.escape(names)}</span>')
        self.snapshot = W.HTML(SNAPSHOT_NOTE)
        self.snapshot.add_class("phi1-snapshot-note")
        self.widget = W.VBox([self.snapshot, W.HBox([self.source, self.as_of]), self.books, self.knob_box, self.total,
                              self.chart, self.error, self.table])
        self._load()

    # ---- building knobs for the current plan ---------------------------------------------
    def _add(self, key: str, widget: W.ValueWidget, scale: float = 1.0) -> None:
        widget.add_class("phi1-knob-" + key.replace(".", "-").replace("_", "-"))
        widget.style = {"description_width": "200px"}
        widget.layout = W.Layout(width="400px")
        self.knobs[key] = Knob(key, widget, scale, widget.value)
        widget.observe(lambda _: self.recompute(), "value")

    def _load(self, keep_knobs: bool = False) -> None:
        self.scenario = self.sources[self.source.value]()
        if self.as_of.value != "from the plan":
            self.scenario = self.scenario.with_overrides({"as_of": PRICE_DATES[self.as_of.value]})
        kept = {k: v.widget.value for k, v in self.knobs.items()
                if keep_knobs and not k.startswith("price.") and v.widget.value != v.initial}
        self._quiet = True
        self.knobs = {}
        self._models: dict[str, str] = {}  # llm item -> model its price knobs show
        sc, llms = self.scenario, self.base_prices.llm_names()
        for line in sc.lines:
            item, kind = line["item"], line["kind"]
            if kind == "llm":
                if "samples" in line and "tokens_out" not in line:
                    self._add(f"{item}.samples", W.FloatText(value=line["samples"], description=f"{item}: samples"))
                else:
                    tin, tout = scenario._llm_tokens(line)
                    self._add(f"{item}.tokens_out", W.FloatText(value=tout / 1e6, description=f"{item}: output tokens (M)"),
                              scale=1e6)
                if line.get("model") in llms:
                    self._add(f"{item}.model", W.Dropdown(options=llms, value=line["model"], description=f"{item}: model"))
                    price = self.base_prices.at(sc.as_of).llm(line["model"])
                    self._add(f"price.{item}.in", W.FloatText(value=price.input_per_1k, description=f"{item}: USD/1K in"))
                    self._add(f"price.{item}.out", W.FloatText(value=price.output_per_1k,
                                                               description=f"{item}: USD/1K out"))
                    self._models[item] = line["model"]
            elif kind == "training":
                if line.get("model") in PRESET_NAMES:
                    self._add(f"{item}.model", W.Dropdown(options=list(PRESET_NAMES), value=line["model"],
                                                         description=f"{item}: model size"))
                self._add(f"{item}.tokens", W.FloatText(value=scenario._line_tokens(line) / 1e9,
                                                        description=f"{item}: tokens trained (B)"), scale=1e9)
            elif kind == "rental":
                self._add(f"{item}.hours", W.FloatText(value=line.get("hours", 0.0), description=f"{item}: hours"))
            elif kind == "coffee":
                self._add(f"{item}.cups", W.FloatText(value=line.get("cups", 1.0), description="cappuccinos bought"))
        book = self.base_prices.at(sc.as_of)
        if any(l["kind"] in ("training", "compute") for l in sc.lines):
            self._add("gpu", W.Dropdown(options=sorted(book.gpus), value=sc.defaults.get("gpu", "A100"), description="GPU"))
            self._add("n_gpus", W.IntText(value=int(sc.defaults.get("n_gpus", 8)), description="GPUs"))
            self._add("mfu", W.BoundedFloatText(value=float(sc.defaults.get("mfu", estimates.DEFAULT_MFU)), min=0.01, max=1.0,
                                                step=0.01, description="MFU"))
        if any(l["kind"] == "llm" for l in sc.lines):
            self._add("batch", W.Checkbox(value=bool(sc.defaults.get("batch", False)), description="Batch API (-50%)"))
        self._add("price.rental", W.FloatText(value=self._rental(book).usd_per_hour, description="hourly price (USD/machine-h)"))
        coffee = book.coffee(sc.defaults.get("coffee", estimates.DEFAULT_COFFEE))
        self._add("price.coffee", W.FloatText(value=coffee.usd, description="coffee (USD/cup)"))
        for key, value in kept.items():  # a new price date keeps the knobs the user moved
            if key in self.knobs:
                self.knobs[key].widget.value = value
        if kept:  # the rental price shown must follow the kept GPU choice
            try:
                rk = self.knobs["price.rental"]
                rk.widget.value = rk.initial = self._rental(book).usd_per_hour
            except Exception:  # e.g. no rental on that date: recompute() shows the error
                pass
        self.knob_box.children = [k.widget for k in self.knobs.values()]
        self._last_gpu = self.knobs["gpu"].widget.value if "gpu" in self.knobs else None
        self._quiet = False
        self.recompute()

    def _rental(self, book: PriceBook, gpu: str | None = None) -> Rental:
        """The rental the plan's GPU lines (or its first rental line) are priced with."""
        for line in self.scenario.lines:
            if line["kind"] == "rental":
                return book.rental(line["rental"])
        if gpu is None and "gpu" in self.knobs:
            gpu = self.knobs["gpu"].widget.value
        gpu = gpu or self.scenario.defaults.get("gpu", "A100")
        name = self.scenario.defaults.get("rental")
        if name and book.rental(name).gpu == gpu:
            return book.rental(name)
        return book.default_rental(gpu)

    # ---- the model -----------------------------------------------------------------------
    def overrides(self) -> dict[str, Any]:
        """--set style overrides for every knob moved away from the plan's value."""
        out = {}
        for key, k in self.knobs.items():
            if not key.startswith("price.") and k.widget.value != k.initial:
                out[key] = k.widget.value * k.scale if k.scale != 1.0 else k.widget.value
        return out

    def recompute(self) -> None:
        if self._quiet:
            return
        try:
            sc = self.scenario.with_overrides(self.overrides())
            book = self.base_prices.at(sc.as_of)
            self._sync_rental_price(book)
            rental = self.knobs["price.rental"]
            base_rental = self._rental(book)
            if abs(rental.widget.value - base_rental.usd_per_hour) > 1e-9:
                book = book.with_rental(CUSTOM_RENTAL, rental.widget.value, base_rental.gpu, base_rental.n_gpus)
                sc = sc.with_overrides({"rental": CUSTOM_RENTAL} if not any(l["kind"] == "rental" for l in sc.lines)
                                       else {f"{l['item']}.rental": CUSTOM_RENTAL for l in sc.lines if l["kind"] == "rental"})
            book, sc = self._llm_prices(book, sc)
            cup = self.knobs["price.coffee"].widget.value
            if abs(cup - book.coffee(sc.defaults.get("coffee", estimates.DEFAULT_COFFEE)).usd) > 1e-9:
                book = book.with_coffee(CUSTOM_COFFEE, cup)
                sc = sc.with_overrides({"coffee": CUSTOM_COFFEE, **{f"{l['item']}.coffee": CUSTOM_COFFEE
                                                                    for l in sc.lines if l["kind"] == "coffee"}})
            self.result = scenario.price_scenario(sc, book)
        except Exception as exc:  # show the message in the app instead of a dead widget
            self.error.value = f'<div class="phi1-error" style="color:#b00">{html.escape(str(exc))}</div>'
            return
        self.error.value = ""
        r = self.result
        self.total.value = (f'<b>Total: <span class="phi1-total">{scenario.usd(r.total_usd)}</span></b> &middot; '
                            f'{r.total("gpu_hours"):,.1f} GPU-hours &middot; {r.total("wall_hours"):,.1f} wall-clock hours '
                            f'&middot; {r.total("cappuccinos"):,.1f} cappuccinos &middot; prices as of '
                            f'{sc.as_of or "latest"}')
        self.chart.value = stacked_bar_html(r)
        self.table.value = table_html(r)

    def _llm_prices(self, book: PriceBook, sc: scenario.Scenario) -> tuple[PriceBook, scenario.Scenario]:
        """Per-line USD/1K knobs: follow the chosen model, or price the line at the user's numbers."""
        custom = {}
        for line in sc.lines:
            item = line["item"]
            if item not in self._models:
                continue
            kin, kout = self.knobs[f"price.{item}.in"], self.knobs[f"price.{item}.out"]
            listed = book.llm(line["model"])
            if line["model"] != self._models[item]:  # a new model: show its list prices
                self._quiet = True
                kin.widget.value = kin.initial = listed.input_per_1k
                kout.widget.value = kout.initial = listed.output_per_1k
                self._quiet = False
                self._models[item] = line["model"]
            if (kin.widget.value, kout.widget.value) != (listed.input_per_1k, listed.output_per_1k):
                name = f"custom-{item}"
                book = book.with_llm(name, kin.widget.value, kout.widget.value)
                custom[f"{item}.model"] = name
        return book, (sc.with_overrides(custom) if custom else sc)

    def _sync_rental_price(self, book: PriceBook) -> None:
        """When the GPU changes, show that GPU's rental price unless the user typed their own."""
        knob = self.knobs["price.rental"]
        gpu_knob = self.knobs.get("gpu")
        if gpu_knob is None:
            return
        current_gpu = gpu_knob.widget.value
        if getattr(self, "_last_gpu", current_gpu) != current_gpu and knob.widget.value == knob.initial:
            price = self._rental(book, current_gpu).usd_per_hour
            self._quiet = True
            knob.widget.value = knob.initial = price
            self._quiet = False
        self._last_gpu = current_gpu

    def state(self) -> dict[str, Any]:
        """Plain numbers for tests and notebooks."""
        return self.result.to_dict() if self.result else {}

    def _ipython_display_(self):  # pragma: no cover - display glue
        from IPython.display import display

        display(self.widget)


def calculator(plans: Mapping[str, Callable[[], scenario.Scenario]], source: str = "scenario: phi1-paper",
               prices: PriceBook | None = None) -> W.Widget:
    """The app widget, ready to display: `calculator(phi1lib.pipeline.plans())`."""
    return BudgetCalculator(plans, source, prices).widget
