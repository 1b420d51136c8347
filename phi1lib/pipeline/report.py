"""The run report: each stage's estimate next to what it measured, the ablation table; report.json and report.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import atomic_path
from ..runs import load_result
from ..stage import StageResult
from .ablation import table_markdown
from .stages import NAMES


@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" | "stored" (finished earlier with the same fingerprint)
    result: StageResult


def estimate_vs_measured(est: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A stage's estimate (StageEstimate.to_dict) next to its measured Usage (to_dict): dollars, wall and GPU
    hours, tokens, and measured / estimated wall time. Measured fields are None for a usage without wall_s
    (a result written by an older phi1)."""
    measured = "wall_s" in usage
    wall_h = float(usage["wall_s"]) / 3600 if measured else None
    est_wall = est.get("wall_hours")
    return {"estimate_usd": est.get("cost_usd"), "measured_usd": usage.get("usd"),
            "estimate_wall_hours": est_wall, "measured_wall_hours": wall_h,
            "wall_ratio": (wall_h / est_wall) if est_wall and measured else None,
            "estimate_gpu_hours": est.get("gpu_hours"),
            "measured_gpu_hours": float(usage.get("gpu_s", 0.0)) / 3600 if measured else None,
            "estimate_tokens": est.get("tokens"),
            "measured_tokens": int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0)) if measured else None}


def stage_row(rec: StageRecord) -> dict[str, Any]:
    usage = rec.result.usage
    return {"status": rec.status, "seconds": round(usage.wall_s, 2),
            **estimate_vs_measured(rec.result.estimate, usage.to_dict()), "stand_in": rec.result.stand_in}


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
        lines += ["", "## Ablation (one tokenizer, HumanEval solutions in bits per byte)", "",
                  *table_markdown(report["ablation"])]
        for note in report.get("ablation_notes", []):
            lines += ["", note]
    return "\n".join(lines) + "\n"


# ---- reconciliation: estimate next to measured, from a run folder's stored results --------------------

def reconcile(root: str | Path) -> list[dict[str, Any]]:
    """One row per finished stage in the run folder `root` (pipeline order): the estimate it recorded before
    it ran next to what it measured (wall hours, GPU-hours, dollars, tokens), the wall-time ratio, and its
    estimate's lines with the measured seconds of the step of the same name where the stage timed one."""
    rows = []
    for name in NAMES:
        stored = load_result(Path(root) / name)
        if stored is None:
            continue
        est, usage, seconds = (v if isinstance(v, dict) else {} for v in
                               (stored.get("estimate"), stored.get("usage"), stored.get("seconds")))
        rows.append({
            "stage": name, **estimate_vs_measured(est, usage),
            "lines": [{"item": line.get("item"), "estimate_seconds": (line.get("wall_hours") or 0.0) * 3600,
                       "measured_seconds": seconds.get(line.get("item"))}
                      for line in est.get("lines") or [] if isinstance(line, dict)],
            "stand_in": stored.get("stand_in"),
        })
    return rows


def reconcile_markdown(rows: list[dict[str, Any]]) -> str:
    """The reconciliation as a Markdown table, stage by stage."""
    lines = ["| stage | estimate wall s | measured wall s | measured / estimate | estimate USD | measured USD | "
             "estimate tokens | measured tokens |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        est_s = r["estimate_wall_hours"] * 3600 if r["estimate_wall_hours"] is not None else None
        wall_s = r["measured_wall_hours"] * 3600 if r["measured_wall_hours"] is not None else None
        lines.append(f"| {r['stage']} | {_fmt(est_s, ',.1f')} | {_fmt(wall_s, ',.1f')} | "
                     f"{_fmt(r['wall_ratio'], '.2f')} | {_fmt(r['estimate_usd'], ',.4f')} | "
                     f"{_fmt(r['measured_usd'], ',.4f')} | {_fmt(r['estimate_tokens'], ',.0f')} | "
                     f"{_fmt(r['measured_tokens'], ',.0f')} |")
    return "\n".join(lines) + "\n"
