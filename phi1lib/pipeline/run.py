"""`phi1 run`: every stage on one preset, resumable stage by stage, then the ablation and the run report."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import paper, runs
from ..errors import ConfigError, unknown_choice
from ..presets import PRESET_NAMES, get_preset

STAGES = ("filtering", "synthesis", "decontam", "pretrain", "finetune", "evaluation", "ablation")

ABLATION_VARIANTS = tuple(paper.ABLATION_PASS_AT_1)


@dataclass
class RunConfig:
    preset: str = "tiny"  # preset name (phi1lib.presets)
    out: Path | None = None  # run directory; None = runs.run_dir(preset)
    stages: tuple[str, ...] = STAGES  # which stages to run, in pipeline order
    seeds: tuple[int, ...] = (0, 1)  # ablation seeds (>= 2 to state a variance)
    cap_usd: float | None = None  # budget cap over the whole run (USD); None = no cap
    force: tuple[str, ...] = ()  # stages to redo even if finished
    eval_pass_at_1: bool = True  # also generate + score HumanEval for the ablation models (seed 0)

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise unknown_choice("preset", self.preset, PRESET_NAMES)
        for s in tuple(self.stages) + tuple(self.force):
            if s not in STAGES:
                raise unknown_choice("stage", s, STAGES)
        if self.cap_usd is not None and self.cap_usd < 0:
            raise ConfigError(f"cap_usd must be >= 0 USD, got {self.cap_usd}")
        if "ablation" in self.stages and len(self.seeds) < 1:
            raise ConfigError("seeds: the ablation needs at least one seed (two to state a variance)")
        self.out = Path(self.out).expanduser().resolve() if self.out else runs.run_dir(self.preset)
        self.out.mkdir(parents=True, exist_ok=True)


@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" | "stored" | "skipped"
    seconds: float
    estimate: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def _jsonable(obj: Any) -> Any:
    """Turn a stage result (dataclass, dict, paths) into plain JSON data."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def _estimate_dict(est: Any) -> dict[str, Any]:
    if est is None:
        return {}
    d = _jsonable(est)
    keep = ("stage", "cost_usd", "tokens", "gpu_hours", "wall_hours", "cappuccinos")
    return {k: d.get(k) for k in keep if k in d}


def _measured_usd(result: dict[str, Any]) -> float:
    """Dollars a stage reports having spent (0 for offline stand-ins and CPU runs)."""
    for key in ("measured_usd", "usd", "cost_usd", "spent_usd"):
        if isinstance(result.get(key), (int, float)):
            return float(result[key])
    usage = result.get("usage") or {}
    for key in ("usd", "cost_usd", "spent_usd"):
        if isinstance(usage.get(key), (int, float)):
            return float(usage[key])
    return 0.0


class Pipeline:
    """Runs the stages of one preset into one run directory; a finished stage is not redone."""

    def __init__(self, config: RunConfig, log: Callable[[str], None] = print):
        from ..budget import load_prices
        from ..budget import Ledger

        self.config = config
        self.preset = get_preset(config.preset)
        self.root: Path = config.out  # type: ignore[assignment]
        self.log = log
        self.prices = load_prices()
        self.ledger = Ledger(self.root / "ledger.jsonl", cap_usd=config.cap_usd)
        self.records: list[StageRecord] = []

    # -- bookkeeping ---------------------------------------------------------------------
    def _book(self) -> dict[str, Any]:
        path = self.root / "pipeline.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _save_book(self, book: dict[str, Any]) -> None:
        tmp = self.root / "pipeline.json.tmp"
        tmp.write_text(json.dumps(book, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.root / "pipeline.json")

    def _step(self, stage: str, estimate: Callable[[], Any], run: Callable[[Path, bool], Any]) -> dict[str, Any]:
        """Estimate, then run one stage. Stages keep their own result.json and return it when
        present, so a finished stage is not redone; pipeline.json keeps the first run's timing."""
        folder = self.root / stage
        force = stage in self.config.force
        finished = runs.load_result(folder) is not None and not force
        book = self._book()
        if finished:
            self.log(f"[{stage}] finished earlier: {folder / runs.RESULT_FILE} (not redone)")
            est = book.get(stage, {}).get("estimate", {})
        else:
            est = _estimate_dict(estimate())
            if est:
                self.log(f"[{stage}] estimate: ${est.get('cost_usd') or 0:,.2f}, "
                         f"{est.get('gpu_hours') or 0:.4f} GPU-h, {est.get('tokens') or 0:,.0f} tokens")
        t0 = time.perf_counter()
        result = _jsonable(run(folder, force)) or {}
        seconds = time.perf_counter() - t0
        if finished:
            seconds = float(book.get(stage, {}).get("seconds", seconds))
        else:
            book[stage] = {"seconds": seconds, "estimate": est, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self._save_book(book)
            self.log(f"[{stage}] done in {seconds:.1f} s")
        self.records.append(StageRecord(stage, "stored" if finished else "ran", seconds, est, result))
        return result

    # -- the run -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from . import stages as ps

        t0 = time.perf_counter()
        # Stage configs locate earlier stages through $PHI1_RUN_DIR: point it at this run.
        previous = os.environ.get("PHI1_RUN_DIR")
        os.environ["PHI1_RUN_DIR"] = str(self.root)
        try:
            for stage in STAGES:
                if stage not in self.config.stages:
                    continue
                estimate, execute = ps.STAGE_FUNCS[stage](self)
                self._step(stage, estimate, execute)
        finally:
            if previous is None:
                os.environ.pop("PHI1_RUN_DIR", None)
            else:
                os.environ["PHI1_RUN_DIR"] = previous
        report = self.report(total_seconds=time.perf_counter() - t0)
        write_report(self.root, report)
        return report

    def report(self, total_seconds: float) -> dict[str, Any]:
        stages = {}
        for rec in self.records:
            stages[rec.stage] = {
                "status": rec.status,
                "seconds": round(rec.seconds, 2),
                "estimate_usd": (rec.estimate or {}).get("cost_usd"),
                "estimate_wall_hours": (rec.estimate or {}).get("wall_hours"),
                "estimate_gpu_hours": (rec.estimate or {}).get("gpu_hours"),
                "estimate_tokens": (rec.estimate or {}).get("tokens"),
                "measured_usd": _measured_usd(rec.result),
                "stand_in": rec.result.get("stand_in"),
            }
        ablation = next((r.result for r in self.records if r.stage == "ablation"), {})
        return {
            "preset": self.preset.name,
            "run_dir": str(self.root),
            "total_seconds": round(total_seconds, 2),
            "stages_seconds": round(sum(r.seconds for r in self.records), 2),
            "stages": stages,
            "ablation": ablation.get("rows", []),
            "ablation_notes": ablation.get("notes", []),
            "evaluation": next((r.result.get("metrics", {}) for r in self.records if r.stage == "evaluation"), {}),
            "spent_usd": self.ledger.spent_usd,
        }


def write_report(root: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """report.json (machine-readable) and report.md (the same numbers as tables)."""
    jpath = root / "report.json"
    jpath.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    mpath = root / "report.md"
    mpath.write_text(report_markdown(report), encoding="utf-8")
    return jpath, mpath


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str) and len(x) > 90:
        return x[:87].rstrip() + "..."
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# phi1 run report: preset `{report['preset']}`", "",
             f"Run directory: `{report['run_dir']}`; stages took {report['stages_seconds']:.1f} s "
             f"(this invocation {report['total_seconds']:.1f} s). Spent: ${report['spent_usd']:.2f}.", "",
             "## Stages: estimate next to measured", "",
             "| stage | status | seconds | estimate USD | estimate wall h | measured USD | stand-in |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.1f} | {_fmt(s['estimate_usd'], ',.4f')} | "
                     f"{_fmt(s['estimate_wall_hours'], '.4f')} | {_fmt(s['measured_usd'], ',.4f')} | "
                     f"{_fmt(s.get('stand_in'))} |")
    if report.get("ablation"):
        lines += ["", "## Ablation (equal token budgets)", "",
                  "| model | seeds | HumanEval solution loss | held-out loss | pass@1 % | paper pass@1 % (350M) |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in report["ablation"]:
            loss = f"{_fmt(r.get('humaneval_solution_loss_mean'))} ± {_fmt(r.get('humaneval_solution_loss_std'))}"
            held = f"{_fmt(r.get('heldout_loss_mean'))} ± {_fmt(r.get('heldout_loss_std'))}"
            lines.append(f"| {r['model']} | {r.get('seeds')} | {loss} | {held} | "
                         f"{_fmt(r.get('pass_at_1'), '.2f')} | {_fmt(r.get('paper_pass_at_1'), '.2f')} |")
        for note in report.get("ablation_notes", []):
            lines += ["", note]
    return "\n".join(lines) + "\n"


def run_pipeline(preset: str = "tiny", out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the report dict (also written to report.json/md)."""
    return Pipeline(RunConfig(preset=preset, out=Path(out) if out else None, **kwargs)).run()
