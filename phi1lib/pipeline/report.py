"""The run report: each stage's estimate next to what it measured, the ablation table; report.json and report.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import atomic_path
from ..stage import StageResult


@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" | "stored" (finished earlier with the same fingerprint)
    result: StageResult


def stage_row(rec: StageRecord) -> dict[str, Any]:
    est, usage = rec.result.estimate, rec.result.usage
    return {"status": rec.status, "seconds": round(usage.wall_s, 2), "estimate_usd": est.get("cost_usd"),
            "estimate_wall_hours": est.get("wall_hours"), "estimate_gpu_hours": est.get("gpu_hours"),
            "estimate_tokens": est.get("tokens"), "measured_usd": usage.usd, "measured_gpu_hours": usage.gpu_s / 3600,
            "stand_in": rec.result.stand_in}


def _headline(evaluation: StageResult | None) -> dict[str, Any]:
    """An evaluation's scalar metrics and its pass@k."""
    return {k: v for k, v in (evaluation.metrics if evaluation else {}).items()
            if not isinstance(v, (list, dict)) or k.startswith("pass")}


def build_report(preset: str, root: Path, records: list[StageRecord], total_seconds: float,
                 spent_usd: float) -> dict[str, Any]:
    """The report of one `phi1 run` (stage seconds are those measured when each stage ran)."""
    by_stage = {r.stage: r.result for r in records}
    ablation = by_stage.get("ablation")
    evaluation = by_stage.get("evaluation")
    return {
        "preset": preset,
        "run_dir": str(root),
        "total_seconds": round(total_seconds, 2),
        "stages_seconds": round(sum(r.result.usage.wall_s for r in records), 2),
        "stages": {r.stage: stage_row(r) for r in records},
        "ablation": getattr(ablation, "rows", []),
        "ablation_notes": getattr(ablation, "notes", []),
        "evaluation": _headline(evaluation),
        **({"evaluation_mbpp": _headline(by_stage["evaluation-mbpp"])} if "evaluation-mbpp" in by_stage else {}),
        "spent_usd": spent_usd,
    }


def write_report(root: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """report.json (machine-readable) and report.md (the same numbers as tables)."""
    jpath, mpath = Path(root) / "report.json", Path(root) / "report.md"
    with atomic_path(jpath) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    with atomic_path(mpath) as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")
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
