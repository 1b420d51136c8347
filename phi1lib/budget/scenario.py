"""Budget scenarios: line items from `costs/scenarios/*.toml` or derived from a preset, priced into a Budget.

A scenario is a list of lines (`kind` = llm | training | compute | rental | cpu | coffee |
fixed), each with a `stage` and a unique `item`, plus `[defaults]` (gpu, n_gpus, mfu, rental,
batch, coffee, tokens_per_minute) and the date prices are taken at (`as_of`). `--set KEY=VALUE`
edits a default (`gpu=H100`), the date (`as_of=latest`) or a line field (`textbooks.batch=true`).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import estimates
from ..errors import ConfigError, unknown_choice
from ..paths import costs_dir
from ..presets import PRESET_NAMES, ModelSpec, get_preset
from ..stage import parse_assignments
from .pricebook import PriceBook, _read_toml, load_prices, parse_date

_NUM, _INT, _BOOL, _STR = "number", "integer", "boolean", "string"
_HW = {"gpu": _STR, "n_gpus": _INT, "mfu": _NUM, "rental": _STR}
FIELDS: dict[str, dict[str, str]] = {
    "llm": {"model": _STR, "tokens_in": _NUM, "tokens_out": _NUM, "samples": _NUM, "in_per_sample": _NUM,
            "out_per_sample": _NUM, "input_ratio": _NUM, "batch": _BOOL, "tokens_per_minute": _NUM},
    "training": {"model": _STR, "params": _NUM, "tokens": _NUM, "steps": _INT, "batch_seqs": _INT,
                 "seq_len": _INT, "attention": _BOOL, **_HW},
    "compute": {"model": _STR, "params": _NUM, "tokens": _NUM, "flops": _NUM, "seq_len": _INT,
                "attention": _BOOL, **_HW},
    "rental": {"rental": _STR, "hours": _NUM, "machines": _INT},
    "cpu": {"cpu_hours": _NUM, "samples": _NUM, "seconds_per_sample": _NUM, "workers": _INT, "rental": _STR},
    "coffee": {"coffee": _STR, "cups": _NUM},
    "fixed": {"usd": _NUM},
}
_LINE_COMMON = {"stage": _STR, "item": _STR, "kind": _STR, "note": _STR}
# (kind, knob) -> totals that a file may give directly and that the knob feeds.
_SHADOWS = {("llm", "samples"): ("tokens_in", "tokens_out"), ("llm", "in_per_sample"): ("tokens_in",),
            ("llm", "out_per_sample"): ("tokens_out",), ("llm", "input_ratio"): ("tokens_in",),
            ("training", "steps"): ("tokens",), ("training", "batch_seqs"): ("tokens",),
            ("training", "seq_len"): ("tokens",)}
DEFAULTS: dict[str, str] = {**_HW, "batch": _BOOL, "coffee": _STR, "tokens_per_minute": _NUM}

# Model shapes a line may name besides the presets: the embedders the filtering stage uses.
# CodeGen-350M-mono has phi-1-small's shape; MiniLM-L6 is BERT-like (6 x 384, 256 positions).
_MINILM = ModelSpec(n_layer=6, d_model=384, d_mlp=1536, n_head=12, rotary_dim=32, n_ctx=256, vocab_size=30522,
                    tie_embeddings=True)
EXTRA_MODELS: dict[str, ModelSpec] = {
    "Salesforce/codegen-350M-mono": get_preset("phi1-small").model,
    "minilm-local": _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
}


def model_spec(name: str) -> ModelSpec:
    if name in PRESET_NAMES:
        return get_preset(name).model
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name]
    raise unknown_choice("model shape (a preset or a known embedder; else set params=)", name,
                         list(PRESET_NAMES) + list(EXTRA_MODELS))


# Fields whose accepted range is narrower than ">= 0": name -> (check, the range after "an integer"/"a number").
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "n_gpus": (lambda v: v >= 1, ">= 1 (GPUs per run)"),
    "machines": (lambda v: v >= 1, ">= 1"),
    "workers": (lambda v: v >= 1, ">= 1"),
    "seq_len": (lambda v: v >= 1, ">= 1 (tokens per sequence)"),
    "batch_seqs": (lambda v: v >= 1, ">= 1 (sequences per step)"),
    "mfu": (lambda v: 0 < v <= 1, "in (0, 1], the fraction of peak FLOP/s achieved, e.g. 0.5"),
    "tokens_per_minute": (lambda v: v > 0, "> 0 (LLM throughput)"),
}
_ARTICLE = {_INT: "an integer", _NUM: "a number", _BOOL: "a boolean (true/false)", _STR: "a string"}


def _coerce(value: Any, kind: str, where: str) -> Any:
    """Accept TOML values and --set strings; anything else gets an error naming `where` and the accepted range
    (the field's range is looked up from the last part of `where`, e.g. "--set mfu" or "line[0].n_gpus")."""
    if isinstance(value, str) and kind != _STR:
        text = value.strip().lower().replace("_", "")
        if kind == _BOOL and text in ("true", "yes", "1", "false", "no", "0"):
            return text in ("true", "yes", "1")
        try:
            value = float(text) if kind == _NUM else int(float(text)) if kind == _INT and float(text).is_integer() else value
        except (ValueError, OverflowError):
            pass
    ok = {_STR: isinstance(value, str), _BOOL: isinstance(value, bool),
          _INT: isinstance(value, int) and not isinstance(value, bool),
          _NUM: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}[kind]
    check, bounds = RANGES.get(where.rsplit(".", 1)[-1].rsplit(" ", 1)[-1], (lambda v: v >= 0, ">= 0"))
    if not ok or (kind in (_NUM, _INT) and not check(value)):
        expected = _ARTICLE[kind] + (f" {bounds}" if kind in (_NUM, _INT) else "")
        shown = repr(value) if isinstance(value, (str, int, float)) else f"{type(value).__name__} {value!r}"
        raise ConfigError(f"{where}: expected {expected}, got {shown}")
    return float(value) if kind == _NUM else value


@dataclass
class Scenario:
    name: str
    lines: list[dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    as_of: dt.date | None = None  # prices as of this date; None = newest
    description: str = ""
    note: str = ""
    source: str = ""  # file or preset it came from

    def items(self) -> list[str]:
        return [l["item"] for l in self.lines]

    def keys(self) -> list[str]:
        """Every KEY `--set KEY=VALUE` accepts."""
        return ["as_of", *DEFAULTS, *[f"{l['item']}.{f}" for l in self.lines for f in FIELDS[l["kind"]]]]

    def get(self, key: str) -> Any:
        if key == "as_of":
            return self.as_of
        if key in DEFAULTS:
            return self.defaults.get(key)
        item, _, fname = key.partition(".")
        return self._line(item).get(fname)

    def _line(self, item: str) -> dict[str, Any]:
        for l in self.lines:
            if l["item"] == item:
                return l
        raise unknown_choice(f"line item in scenario {self.name!r}", item, self.items())

    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[str]) -> "Scenario":
        """A copy with `key=value` overrides applied (strings are parsed by the field's type)."""
        if not isinstance(overrides, Mapping):
            overrides = parse_sets(overrides)
        new = copy.deepcopy(self)
        for key, value in overrides.items():
            if key == "as_of":
                new.as_of = parse_date(value)
            elif key in DEFAULTS:
                new.defaults[key] = _coerce(value, DEFAULTS[key], f"--set {key}")
            elif "." in key:
                item, _, fname = key.partition(".")
                line = new._line(item)
                allowed = FIELDS[line["kind"]]
                if fname not in allowed:
                    raise unknown_choice(f"field of {line['kind']} line {item!r}", fname, allowed)
                line[fname] = _coerce(value, allowed[fname], f"--set {key}")
                # A total typed in the file would silently win over the knob just set: drop it.
                for derived in _SHADOWS.get((line["kind"], fname), ()):
                    if f"{item}.{derived}" not in overrides:
                        line.pop(derived, None)
            else:
                raise ConfigError(f"unknown key {key!r} for scenario {self.name!r}; use as_of, "
                                  f"{', '.join(DEFAULTS)} or ITEM.FIELD with ITEM one of: {', '.join(self.items())}")
        return new


def parse_sets(pairs: Iterable[str]) -> dict[str, str]:
    return parse_assignments(pairs, "--set", "gpu=H100 or --set textbooks.batch=true", key_name="KEY")


# ---- loading ------------------------------------------------------------------------------

def scenario_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The shipped scenarios folder, then each extra one (each must be an existing folder)."""
    extra = [Path(d) for d in extra_dirs]
    for d in extra:
        if not d.is_dir():
            what = "is a file" if d.exists() else "does not exist"
            raise ConfigError(f"scenario folder {d} {what}; pass a folder holding *.toml scenarios (--scenarios DIR)")
    return [costs_dir() / "scenarios", *extra]


def list_scenarios(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in scenario_dirs(extra_dirs):
        for path in sorted(Path(d).glob("*.toml")):
            found[path.stem] = path
    return found


def _validate_line(raw: Any, i: int, where: str, seen: set) -> dict[str, Any]:
    at = f"{where}: line[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: expected a table ([[line]]), got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in FIELDS:
        raise unknown_choice(f"kind in {at}", kind, FIELDS)
    allowed = {**_LINE_COMMON, **FIELDS[kind]}
    line = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"{at}.{key}: unknown field for a {kind} line; allowed: {', '.join(allowed)}")
        line[key] = _coerce(value, allowed[key], f"{at}.{key}")
    for key in ("stage", "item"):
        if key not in line:
            raise ConfigError(f"{at}: missing {key!r} (a string)")
    if line["item"] in seen or "." in line["item"]:
        raise ConfigError(f"{at}.item: {line['item']!r} is repeated or contains '.'; items must be unique names")
    seen.add(line["item"])
    return line


def scenario_from_dict(data: Mapping[str, Any], where: str = "<scenario>",
                       preset_plan: Callable[[str], Scenario] | None = None) -> Scenario:
    """A validated Scenario. A file may build on a preset's plan (`preset = "phi1"`): `preset_plan(name)`
    gives that plan; the pipeline passes it, since only the pipeline knows every stage."""
    allowed = {"name", "description", "note", "as_of", "defaults", "line", "preset", "set"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: {key}: unknown key; allowed: {', '.join(sorted(allowed))}")
    defaults = {}
    for key, value in dict(data.get("defaults", {})).items():
        if key not in DEFAULTS:
            raise unknown_choice(f"default in {where}", key, DEFAULTS)
        defaults[key] = _coerce(value, DEFAULTS[key], f"{where}: defaults.{key}")
    if "preset" in data:
        if preset_plan is None:
            raise ConfigError(f"{where}: builds on preset {data['preset']!r}; load it with "
                              "phi1lib.pipeline.load_scenario (or `phi1 budget --scenario`), which knows the stages")
        base = preset_plan(str(data["preset"]))
    else:
        base = Scenario(name="", lines=[])
    seen = set(base.items())
    lines = base.lines + [_validate_line(l, i, where, seen) for i, l in enumerate(data.get("line", []))]
    if not lines:
        raise ConfigError(f"{where}: no [[line]] tables and no preset; nothing to price")
    try:
        as_of = parse_date(data.get("as_of", base.as_of))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    sc = Scenario(name=str(data.get("name", base.name)), lines=lines, defaults={**base.defaults, **defaults},
                  as_of=as_of, description=str(data.get("description", base.description)),
                  note=str(data.get("note", base.note)), source=where)
    if data.get("set"):
        sc = sc.with_overrides({k: v for k, v in data["set"].items()})
    return sc


def load_scenario(name_or_path: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = (),
                  preset_plan: Callable[[str], Scenario] | None = None) -> Scenario:
    """A scenario by name (costs/scenarios/NAME.toml, or extra_dirs) or by path (see scenario_from_dict)."""
    path = Path(name_or_path)
    if (path.suffix == ".toml" or os.sep in str(name_or_path)) and not path.exists():
        raise ConfigError(f"{path}: no such scenario file; give an existing .toml path or one of: "
                          f"{', '.join(list_scenarios(extra_dirs))}")
    if not (path.suffix == ".toml" and path.exists()):
        known = list_scenarios(extra_dirs)
        if str(name_or_path) not in known:
            raise unknown_choice("scenario (a name or a path to a .toml file)", str(name_or_path), known)
        path = known[str(name_or_path)]
    data = _read_toml(path)
    data.setdefault("name", path.stem)
    return scenario_from_dict(data, str(path), preset_plan)


# ---- pricing ------------------------------------------------------------------------------

@dataclass
class Budget:
    scenario: Scenario
    stages: list[estimates.StageEstimate]
    prices: PriceBook

    @property
    def lines(self) -> list[estimates.LineItem]:
        return [l for s in self.stages for l in s.lines]

    @property
    def total_usd(self) -> float:
        return sum(s.cost_usd for s in self.stages)

    def total(self, attr: str) -> float:
        return sum(getattr(s, attr) for s in self.stages)

    def stage(self, name: str) -> estimates.StageEstimate:
        for s in self.stages:
            if s.stage == name:
                return s
        raise unknown_choice("stage", name, [s.stage for s in self.stages])

    def to_dict(self) -> dict[str, Any]:
        sc = self.scenario
        return {"scenario": sc.name, "source": sc.source, "as_of": sc.as_of.isoformat() if sc.as_of else "latest",
                "total_usd": round(self.total_usd, 6), "cappuccinos": self.total("cappuccinos"),
                "gpu_hours": self.total("gpu_hours"), "wall_hours": self.total("wall_hours"),
                "cpu_hours": self.total("cpu_hours"), "tokens": self.total("tokens"), "note": sc.note,
                "stages": [s.to_dict() for s in self.stages]}

    def to_frame(self):
        """Line items as a pandas DataFrame (one row per line, plus the stage)."""
        import pandas as pd

        cols = ["stage", "item", "detail", "cost_usd", "tokens", "gpu_hours", "wall_hours", "cpu_hours", "source"]
        return pd.DataFrame([{c: getattr(l, c) for c in cols} for l in self.lines], columns=cols)

    def format(self) -> str:
        """A plain-text spreadsheet: every line, stage subtotals, the total."""
        out = [f"Scenario {self.scenario.name}  (prices as of {self.scenario.as_of or 'latest'})"]
        w = max([12, *(len(s.stage) for s in self.stages)])  # e.g. "evaluation-mbpp"
        for s in self.stages:
            out.append(f"  {s.stage:<{w}} {usd(s.cost_usd):>13}  {s.gpu_hours:>9,.1f} GPU-h  {s.wall_hours:>8,.1f} h  "
                       f"{s.cappuccinos:>9,.1f} cappuccinos")
            for l in s.lines:
                out.append(f"      {l.item:<{w + 8}} {usd(l.cost_usd):>13}  {l.detail}")
        out.append(f"  {'TOTAL':<{w}} {usd(self.total_usd):>13}  {self.total('gpu_hours'):>9,.1f} GPU-h  "
                   f"{self.total('wall_hours'):>8,.1f} h  {self.total('cappuccinos'):>9,.1f} cappuccinos")
        return "\n".join(out)


def usd(x: float) -> str:
    """Dollars to the cent, e.g. $6,478.10."""
    return f"${x:,.2f}"


def _llm_tokens(line: dict) -> tuple[float, float]:
    samples = line.get("samples")
    if "tokens_out" in line:
        out = line["tokens_out"]
    elif samples is not None and "out_per_sample" in line:
        out = samples * line["out_per_sample"]
    else:  # a missing count would price the line at $0 without a word
        raise ConfigError(f"llm line {line['item']!r}: give tokens_out, or samples and out_per_sample")
    if "tokens_in" in line:
        tin = line["tokens_in"]
    elif samples is not None and "in_per_sample" in line:
        tin = samples * line["in_per_sample"]
    elif "input_ratio" in line:
        tin = out * line["input_ratio"]
    else:
        raise ConfigError(f"llm line {line['item']!r}: give tokens_in, samples and in_per_sample, or input_ratio "
                          "(input tokens per output token)")
    return tin, out


def _check_context(line: dict, spec: ModelSpec | None) -> None:
    """A sequence longer than the model's context cannot be trained or run: refuse it rather than price it."""
    seq = line.get("seq_len")
    if spec is not None and seq is not None and spec.n_ctx and seq > spec.n_ctx:
        raise ConfigError(f"seq_len: {seq:,} tokens is longer than model {line['model']!r}'s context "
                          f"({spec.n_ctx:,} tokens); use seq_len <= {spec.n_ctx:,}")


def _line_tokens(line: dict) -> float:
    if "tokens" in line:
        return line["tokens"]
    if all(k in line for k in ("steps", "batch_seqs", "seq_len")):
        return float(line["steps"] * line["batch_seqs"] * line["seq_len"])
    raise ConfigError(f"{line['kind']} line {line['item']!r}: give tokens, or steps, batch_seqs and seq_len")


def price_line(line: dict, defaults: dict, prices: PriceBook) -> estimates.StageEstimate:
    """One line item priced with the scenario defaults filled in; the plan line's note travels with it."""
    est = _price_line(line, defaults, prices)
    if line.get("note") and line["kind"] != "fixed":
        for item in est.lines:
            item.note = line["note"]
    return est


def _price_line(line: dict, defaults: dict, prices: PriceBook) -> estimates.StageEstimate:
    get = lambda k, fallback=None: line.get(k, defaults.get(k, fallback))  # noqa: E731
    stage, item, kind, coffee = line["stage"], line["item"], line["kind"], defaults.get("coffee", estimates.DEFAULT_COFFEE)
    if kind == "llm":
        tin, tout = _llm_tokens(line)
        return estimates.estimate_llm(stage, line["model"], tin, tout, prices, batch=bool(get("batch", False)), item=item,
                                  coffee=coffee, tokens_per_minute=get("tokens_per_minute", estimates.DEFAULT_TOKENS_PER_MINUTE))
    if kind in ("training", "compute"):
        hw = dict(gpu=get("gpu", "A100"), n_gpus=int(get("n_gpus", 8)), mfu=get("mfu", estimates.DEFAULT_MFU),
                  rental=get("rental"), item=item, coffee=coffee)
        if kind == "compute" and "flops" in line:
            return estimates.estimate_compute(stage, line["flops"], prices, **hw)
        spec = model_spec(line["model"]) if "model" in line else None
        _check_context(line, spec)
        if "params" in line:  # explicit N replaces the shape's count; the attention term keeps the shape
            n = line["params"]
            attn = (estimates.flops_per_token(spec, line.get("seq_len"), True)
                    - estimates.flops_per_token(spec, line.get("seq_len"), False)) if spec else 0.0
            per_token = 6 * n + (attn if line.get("attention", True) else 0.0)
        elif spec is not None:
            per_token = estimates.flops_per_token(spec, line.get("seq_len"), line.get("attention", True))
        else:
            raise ConfigError(f"{kind} line {item!r}: give model (a preset or embedder), params, or flops")
        tokens = _line_tokens(line)
        factor = 1.0 if kind == "training" else 1.0 / 3.0  # compute lines are forward passes
        return estimates.estimate_compute(stage, per_token * factor * tokens, prices, tokens=tokens, **hw)
    if kind == "rental":
        if "hours" not in line:
            raise ConfigError(f"rental line {item!r}: give hours (how long the machines are booked)")
        return estimates.estimate_rental(stage, line["rental"], line["hours"], prices,
                                     machines=int(line.get("machines", 1)), item=item, coffee=coffee)
    if kind == "cpu":
        if "cpu_hours" not in line and not ("samples" in line and "seconds_per_sample" in line):
            raise ConfigError(f"cpu line {item!r}: give cpu_hours, or samples and seconds_per_sample")
        hours = line["cpu_hours"] if "cpu_hours" in line else line.get("samples", 0.0) * line.get("seconds_per_sample", 0.0) / 3600
        return estimates.estimate_cpu(stage, hours, prices, rental=line.get("rental", "own-laptop"), item=item,
                                  coffee=coffee, workers=int(line.get("workers", 1)))
    if kind == "coffee":
        return estimates.estimate_coffee(stage, line.get("cups", 1.0), prices, line.get("coffee", coffee), item=item)
    return estimates.estimate_fixed(stage, line.get("usd", 0.0), prices, item=item, detail=line.get("note", ""),
                                coffee=coffee)


def price_lines(stage: str, lines: Iterable[Mapping[str, Any]], defaults: Mapping[str, Any],
                prices: PriceBook | None = None) -> estimates.StageEstimate:
    """One stage's estimate from its plan lines, priced exactly as `price_scenario` prices a plan.

    Stages describe their work as these lines (`<stage>.budget_lines(config)`), so a stage's own
    estimate and the preset plan the calculator and `phi1 budget` show cannot disagree.
    """
    book = prices or load_prices()
    seen: set = set()
    checked = [_validate_line(dict(line), i, f"stage {stage!r}", seen) for i, line in enumerate(lines)]
    priced = []
    for line in checked:
        try:
            priced.append(price_line(line, dict(defaults), book))
        except ConfigError as exc:
            raise ConfigError(f"stage {stage!r}, line {line['item']!r}: {exc}") from None
    return estimates.combine(stage, priced, book, defaults.get("coffee", estimates.DEFAULT_COFFEE))


def _check_names(scenario: Scenario, book: PriceBook) -> None:
    """A gpu, rental or coffee default must exist in the price books even when no line uses it
    (`--set gpu=H100` on a plan of rentals only would otherwise be ignored without a word)."""
    lookups = {"gpu": book.gpu, "rental": book.rental, "coffee": book.coffee}
    for key, lookup in lookups.items():
        if scenario.defaults.get(key):
            try:
                lookup(scenario.defaults[key])
            except ConfigError as exc:
                raise ConfigError(f"scenario {scenario.name!r}: {key}: {exc}") from None
    if scenario.defaults.get("batch") and any(l["kind"] == "llm" for l in scenario.lines):
        try:
            book.check_batch()
        except ConfigError as exc:
            raise ConfigError(f"scenario {scenario.name!r}: {exc}") from None


def price_scenario(scenario: Scenario, prices: PriceBook | None = None) -> Budget:
    """Price every line at the scenario's date and group the lines into stages (file order)."""
    book = (prices or load_prices()).at(scenario.as_of)
    coffee = scenario.defaults.get("coffee", estimates.DEFAULT_COFFEE)
    _check_names(scenario, book)
    groups: dict[str, list[estimates.StageEstimate]] = {}
    for line in scenario.lines:
        try:
            est = price_line(line, scenario.defaults, book)
        except ConfigError as exc:
            raise ConfigError(f"scenario {scenario.name!r}, line {line['item']!r}: {exc}") from None
        groups.setdefault(line["stage"], []).append(est)
    stages = [estimates.combine(name, ests, book, coffee) for name, ests in groups.items()]
    return Budget(scenario, stages, book)
