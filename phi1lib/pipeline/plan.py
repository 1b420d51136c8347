"""A preset's budget plan: every stage's own plan lines, priced with the preset's hardware (one cost model).

`phi1 budget --preset P`, the calculator's "preset: P" plans and scenario files that build on a
preset (`preset = "phi1"` in costs/scenarios/*.toml) all come from here, and `phi1 run --dry-run`
sums the same stages' `estimate`, so the planner's numbers are the ones the run will show.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping

from .. import budget
from ..presets import PRESET_NAMES, Preset, get_preset
from ..stage import plan_defaults
from . import stages as table


def preset_scenario(preset: str | Preset, stages: tuple[str, ...] | None = None, *, seeds: tuple[int, ...] | None = None,
                    eval_pass_at_1: bool = False) -> budget.Scenario:
    """The stages `phi1 run` would run for `preset` (default: its default stages) as one editable plan."""
    p = get_preset(preset)
    configs = table.stage_configs(p, stages, seeds=seeds, eval_pass_at_1=eval_pass_at_1)
    lines = [line for name, cfg in configs.items() for line in table.get(name).budget_lines(cfg)]
    defaults = plan_defaults(p.hardware, batch=False, coffee=budget.DEFAULT_COFFEE)
    return budget.Scenario(name=p.name, lines=lines, defaults=defaults, as_of=None, description=p.description,
                           source=f"preset {p.name} (the stages' own plan lines: {', '.join(configs)})")


def estimate_preset(preset: str | Preset, prices: budget.PriceBook | None = None,
                    overrides: Mapping[str, Any] | Iterable[str] = ()) -> budget.Budget:
    """The whole recipe of a preset, priced (overrides as for `phi1 budget --set`)."""
    sc = preset_scenario(preset)
    return budget.price_scenario(sc.with_overrides(overrides) if overrides else sc, prices)


def load_scenario(name_or_path: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = ()) -> budget.Scenario:
    """A scenario file by name or path; one that builds on a preset gets that preset's plan."""
    return budget.load_scenario(name_or_path, extra_dirs, preset_plan=lambda name: preset_scenario(name))


def plans(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, Callable[[], budget.Scenario]]:
    """Every plan the calculator offers: "scenario: NAME" for each scenario file, "preset: NAME" for each preset."""
    out: dict[str, Callable[[], budget.Scenario]] = {}
    for name in budget.list_scenarios(extra_dirs):
        out[f"scenario: {name}"] = lambda n=name: load_scenario(n, extra_dirs)
    for name in PRESET_NAMES:
        out[f"preset: {name}"] = lambda n=name: preset_scenario(n)
    return out
