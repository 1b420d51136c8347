"""How much the GPU lines of a plan move with the one number nobody has measured yet: the MFU.

`mfu_sensitivity(scenario)` prices the same plan at MFU 35%, 45% and 55% next to its default, so
`phi1 budget`, its JSON and notebook 00 show the range rather than one confident figure.
Only lines that take the plan's default MFU move (a line with its own `mfu`, like filtering's fp32
embedding pass, keeps it).
"""

from __future__ import annotations

from typing import Any

from .. import paper
from .estimates import DEFAULT_MFU
from .pricebook import PriceBook
from .scenario import Scenario, price_scenario, usd

MFU_SENSITIVITY = (0.35, 0.45, 0.55)
WHY_DEFAULT = (f"default MFU {DEFAULT_MFU:g}: the paper's {paper.PRETRAIN_A100_HOURS:g} A100-hours for phi-1-base's "
               f"{paper.PRETRAIN_TOKENS / 1e9:.0f}B tokens imply {paper.IMPLIED_MFU:.3f} counting 6N FLOPs per token "
               "(rounded). This budget also counts attention FLOPs, so the paper's hours would mean a higher MFU "
               "than that; a plain PyTorch/HF training loop more often reaches 35-45%. Unmeasured on a GPU here: "
               "benchmarks/gpu_check.sh measures it.")


def uses_default_mfu(scenario: Scenario) -> bool:
    """Whether any training or compute line takes the plan's default MFU (else the table would be flat)."""
    return any(l["kind"] in ("training", "compute") and "mfu" not in l for l in scenario.lines)


def mfu_sensitivity(scenario: Scenario, prices: PriceBook | None = None,
                    mfus: tuple[float, ...] = MFU_SENSITIVITY) -> dict[str, Any]:
    """{"default", "why", "rows": [{mfu, total_usd, gpu_hours, wall_hours, default}]}; rows are empty when no
    line takes the default MFU (a plan of rentals only, or every line with its own mfu)."""
    default = float(scenario.defaults.get("mfu", DEFAULT_MFU))
    out: dict[str, Any] = {"default": default, "why": WHY_DEFAULT, "rows": []}
    if not uses_default_mfu(scenario):
        return out
    for m in sorted({*mfus, default}):
        b = price_scenario(scenario.with_overrides({"mfu": m}), prices)
        out["rows"].append({"mfu": m, "total_usd": round(b.total_usd, 2), "gpu_hours": round(b.total("gpu_hours"), 1),
                            "wall_hours": round(b.total("wall_hours"), 1), "default": m == default})
    return out


def format_sensitivity(table: dict[str, Any]) -> str:
    """The table as plain text (empty when there are no rows)."""
    if not table["rows"]:
        return ""
    out = ["MFU sensitivity (lines at the plan's default MFU; the rest unchanged):",
           f"  {'MFU':>5}  {'total':>14}  {'GPU-h':>10}  {'wall h':>9}"]
    for r in table["rows"]:
        mark = "  <- default" if r["default"] else ""
        out.append(f"  {r['mfu']:>5.0%}  {usd(r['total_usd']):>14}  {r['gpu_hours']:>10,.1f}  {r['wall_hours']:>9,.1f}{mark}")
    out.append("  " + table["why"])
    return "\n".join(out)
