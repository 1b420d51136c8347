"""The orchestrator's own logic: config validation and the report (the whole run is in test_notebooks)."""

from __future__ import annotations

import pytest

from phi1lib.errors import ConfigError
from phi1lib.paper import ABLATION_PASS_AT_1 as PAPER_ABLATION
from phi1lib.pipeline import ABLATION_VARIANTS, STAGES, RunConfig, report_markdown


def test_unknown_stage_and_preset_are_named(tmp_path):
    with pytest.raises(ConfigError, match="pretrian"):
        RunConfig(out=tmp_path, stages=("pretrian",))
    with pytest.raises(ConfigError, match="phi-2"):
        RunConfig(preset="phi-2", out=tmp_path)
    with pytest.raises(ConfigError, match="cap_usd"):
        RunConfig(out=tmp_path, cap_usd=-1)


def test_paper_ablation_numbers_match_paper_md():
    # PAPER.md: 350M ablation 12.19 / 17.68 / 20.12; phi-1-small after finetuning 45.
    assert [PAPER_ABLATION[v] for v in ABLATION_VARIANTS] == [12.19, 17.68, 20.12, 45.0]


def test_report_markdown_shows_every_stage_and_row():
    report = {
        "preset": "tiny", "run_dir": "/x", "total_seconds": 1.0, "stages_seconds": 10.0, "spent_usd": 0.0,
        "stages": {s: {"status": "ran", "seconds": 1.0, "estimate_usd": 0.5, "estimate_wall_hours": 0.01,
                       "measured_usd": 0.25, "stand_in": s == "synthesis"} for s in STAGES},
        "ablation": [{"model": v, "seeds": [0, 1], "humaneval_solution_loss_mean": 5.0 + i,
                      "humaneval_solution_loss_std": 0.1, "heldout_loss_mean": None, "heldout_loss_std": None,
                      "pass_at_1": 0.0, "paper_pass_at_1": PAPER_ABLATION[v]} for i, v in enumerate(ABLATION_VARIANTS)],
        "ablation_notes": ["note one"],
    }
    md = report_markdown(report)
    for stage in STAGES:
        assert f"| {stage} | ran |" in md
    assert "| synthesis | ran | 1.0 | 0.5000 | 0.0100 | 0.2500 | yes |" in md
    assert "| filtered+textbooks | [0, 1] | 7.0000 ± 0.1000 | – ± – | 0.00 | 20.12 |" in md
    assert md.rstrip().endswith("note one")
