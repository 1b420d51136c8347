"""`phi1 run`: the stages of one preset in one run folder, in order, each reused when finished with the same fingerprint."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import budget, runs
from ..errors import ConfigError
from ..llm import IncompleteRun
from ..presets import PRESET_NAMES, get_preset
from ..runs import RunDir
from ..stage import StageConfig, StaleResult
from . import stages as table
from .report import StageRecord, build_report, write_report


@dataclass
class RunConfig:
    preset: str = "tiny"  # preset name (phi1lib.presets)
    out: str | os.PathLike | None = None  # run folder; None = $PHI1_RUN_DIR, else runs/<preset>
    stages: tuple[str, ...] | None = None  # stages to run, in pipeline order; None = the preset's default
    seeds: tuple[int, ...] | None = None  # ablation seeds (>= 3 for a confidence interval); None = the preset's
    cap_usd: float | None = None  # budget cap for the whole run folder (USD); None = no cap
    force: bool = False  # redo the selected stages even when their stored results match
    eval_pass_at_1: bool = False  # the ablation also generates + scores HumanEval for its first seed (opt-in)

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
        self.stages = table.default_stages(self.preset) if self.stages is None else tuple(self.stages)
        for s in self.stages:
            table.get(s)
        if self.cap_usd is not None and not (math.isfinite(self.cap_usd) and self.cap_usd >= 0):
            raise ConfigError(f"cap_usd={self.cap_usd}: expected a budget cap in USD >= 0")
        if "ablation" in self.stages and self.seeds is not None and not self.seeds:
            raise ConfigError("seeds: the ablation needs at least one seed (two to state a spread)")


class Pipeline:
    """The stage table run over one RunDir: estimate, then run (or reuse) each selected stage."""

    def __init__(self, config: RunConfig, prices: budget.PriceBook | None = None,
                 log: Callable[[str], None] = print):
        self.config = config
        self.preset = get_preset(config.preset)
        self.run_dir = RunDir.for_preset(self.preset.name, config.out)
        self.prices = prices or budget.load_prices()
        self.log = log
        self.configs: dict[str, StageConfig] = table.stage_configs(
            self.preset, config.stages, seeds=config.seeds, eval_pass_at_1=config.eval_pass_at_1)

    def plan(self) -> dict[str, Any]:
        """What `run` would do, without doing it: each stage's estimate and whether its stored result is reusable."""
        rows = []
        for name, cfg in self.configs.items():
            est = table.get(name).estimate(cfg, self.prices)
            rows.append({"stage": name, "cost_usd": est.cost_usd, "gpu_hours": est.gpu_hours,
                         "wall_hours": est.wall_hours, "cpu_hours": est.cpu_hours, "tokens": est.tokens,
                         "stored": self.run_dir.result(name) is not None})
        return {"preset": self.preset.name, "run_dir": str(self.run_dir.root), "stages": rows,
                "total_usd": sum(r["cost_usd"] for r in rows)}

    def _step(self, name: str, ledger: budget.Ledger) -> StageRecord:
        stage, cfg = table.get(name), self.configs[name]
        if self.config.force or self.run_dir.result(name) is None:  # a stored result says so below instead
            est = stage.estimate(cfg, self.prices)
            self.log(f"[{name}] estimate: ${est.cost_usd:,.2f}, {est.gpu_hours:.4f} GPU-h, {est.tokens:,.0f} tokens")
        t0 = time.perf_counter()
        try:
            result = stage.run(cfg, self.run_dir, ledger=ledger, prices=self.prices, force=self.config.force,
                               progress=False)
        except StaleResult as exc:
            raise StaleResult(f"{exc} (phi1 run: --force redoes the selected --stages)") from None
        except IncompleteRun as exc:  # requests failed for good: this stage and the ones after it are not done
            later = list(self.configs)[list(self.configs).index(name) + 1:]
            note = f"; {', '.join(later)} did not run" if later else ""
            raise IncompleteRun(f"{exc} (phi1 run: stopped at {name}{note}; rerun the same command)",
                                exc.results) from None
        if result.reused:
            self.log(f"[{name}] finished earlier with the same settings and inputs: "
                     f"{self.run_dir.path(name, runs.RESULT_FILE)} (not redone)")
        else:
            self.log(f"[{name}] done in {time.perf_counter() - t0:.1f} s")
        return StageRecord(name, "stored" if result.reused else "ran", result)

    def run(self) -> dict[str, Any]:
        """Run (or reuse) every selected stage in order; returns the report, also written to report.json/md."""
        t0 = time.perf_counter()
        self.run_dir.root.mkdir(parents=True, exist_ok=True)
        ledger = budget.Ledger(self.run_dir.ledger_path, cap_usd=self.config.cap_usd)
        ran = {name: self._step(name, ledger) for name in self.configs}
        # The report covers every stage with a result in the folder, not only this invocation's subset.
        records = []
        for s in table.STAGES:
            if s.name in ran:
                records.append(ran[s.name])
            elif (stored := s.result.load(self.run_dir.path(s.name))) is not None:
                records.append(StageRecord(s.name, "stored", stored))
        report = build_report(self.preset.name, self.run_dir.root, records, time.perf_counter() - t0,
                              ledger.spent_usd)
        write_report(self.run_dir.root, report)
        return report


def run_pipeline(preset: str = "tiny", out: str | os.PathLike | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run (or resume) the pipeline of a preset; returns the report dict (also in <run>/report.json, report.md)."""
    return Pipeline(RunConfig(preset=preset, out=Path(out) if out else None, **kwargs)).run()
