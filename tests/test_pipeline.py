"""The orchestrator's own logic: the stage table, the dry run (= the budget), config checks and the report.

The whole tiny run is in test_notebooks (slow); here nothing trains.
"""

from __future__ import annotations

import json

import pytest

from phi1lib import budget, cli, pipeline
from phi1lib.errors import ConfigError
from phi1lib.paper import ABLATION_PASS_AT_1 as PAPER_ABLATION
from phi1lib.pipeline import NAMES, RunConfig, report_markdown
from phi1lib.pipeline.ablation import VARIANTS, AblationConfig
from phi1lib.presets import PRESET_NAMES, get_preset


def _cli_json(capsys, *argv) -> dict:
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_unknown_stage_and_preset_are_named(tmp_path):
    with pytest.raises(ConfigError, match="pretrian"):
        RunConfig(out=tmp_path, stages=("pretrian",))
    with pytest.raises(ConfigError, match="phi-2"):
        RunConfig(preset="phi-2", out=tmp_path)
    with pytest.raises(ConfigError, match="cap_usd"):
        RunConfig(out=tmp_path, cap_usd=-1)
    assert not (tmp_path / "filtering").exists()  # configs create no folders


def test_paper_ablation_numbers_match_the_paper():
    # Figure 2.1 (350M): 12.19 / 17.68 / 20.12; phi-1-small after finetuning on CodeExercises: 45.
    assert [PAPER_ABLATION[v] for v in VARIANTS] == [12.19, 17.68, 20.12, 45.0]


def test_ablation_is_opt_in_on_gpu_presets():
    assert pipeline.default_stages("tiny") == tuple(n for n in NAMES if n != "evaluation-mbpp")
    assert "ablation" not in pipeline.default_stages("phi1")
    assert RunConfig(preset="phi1").stages == pipeline.default_stages("phi1")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_mbpp_is_run_exactly_where_it_is_priced(preset):
    """A preset whose eval plan lists MBPP runs it as its own stage (evaluation-mbpp/) and its budget
    prices that stage's generation and sandbox; tiny (offline: MBPP lives on the hub) does neither."""
    wants = "mbpp" in get_preset(preset).eval.benchmarks
    assert ("evaluation-mbpp" in pipeline.default_stages(preset)) == wants
    priced = {s.stage: s for s in pipeline.estimate_preset(preset).stages}
    assert ("evaluation-mbpp" in priced) == wants
    if wants:
        config = pipeline.stage_configs(preset)["evaluation-mbpp"]
        assert config.benchmark == "mbpp" and config.stage_name == "evaluation-mbpp"
        mbpp, he = priced["evaluation-mbpp"], priced["evaluation"]
        assert [l.item for l in mbpp.lines] == ["generate", "sandbox"]
        assert mbpp.tokens / he.tokens == pytest.approx(500 / 164, rel=0.01)  # MBPP's 500 test problems


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_dry_run_equals_the_budget_stage_for_stage(preset, tmp_path, capsys):
    plan = _cli_json(capsys, "run", "--preset", preset, "--out", str(tmp_path / "run"), "--dry-run", "--json")
    priced = _cli_json(capsys, "budget", "--preset", preset, "--json")
    assert [s["stage"] for s in plan["stages"]] == [s["stage"] for s in priced["stages"]] \
        == list(pipeline.default_stages(preset))
    for ours, theirs in zip(plan["stages"], priced["stages"]):
        for key in ("cost_usd", "gpu_hours", "wall_hours", "tokens"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-12), (ours["stage"], key)
    assert plan["total_usd"] == pytest.approx(priced["total_usd"], abs=1e-6)  # the budget's JSON rounds to 1e-6
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_every_stage_estimate_is_its_own_plan_lines_priced():
    prices = budget.load_prices()
    for name, cfg in pipeline.stage_configs("phi1", pipeline.NAMES).items():
        stage = pipeline.stages.get(name)
        est = stage.estimate(cfg, prices)
        lines = stage.budget_lines(cfg)
        assert {line["stage"] for line in lines} == {name}
        # An llm line prices as two items (input, output); every priced item comes from one plan line.
        assert [line["item"] for line in lines] == list(dict.fromkeys(
            next(p["item"] for p in lines if item.item == p["item"] or item.item.startswith(p["item"] + " "))
            for item in est.lines))
        assert est.cost_usd > 0 or name == "decontam"  # decontamination runs on the box's own CPUs


def test_ablation_prices_its_extra_trainings():
    cfg = AblationConfig.for_preset("phi1", seeds=(0, 1, 2))
    prices = budget.load_prices()
    abl = pipeline.stages.get("ablation").estimate(cfg, prices)
    pre = pipeline.stages.get("pretrain").estimate(cfg.pretrain, prices)
    line = next(line for line in abl.lines if line.item == "ablation-pretrain")
    assert line.gpu_hours == pytest.approx(8 * pre.gpu_hours)  # 3 rows x 3 seeds, less the pipeline's own
    assert AblationConfig.for_preset("phi1").fingerprint() != cfg.fingerprint()


def test_calculator_plans_include_each_preset_and_scenario():
    plans = pipeline.plans()
    assert {"scenario: phi1-paper", "scenario: phi1-2025", "preset: tiny", "preset: phi1"} <= set(plans)
    today = plans["scenario: phi1-2025"]()  # a scenario file built on the phi1 preset's plan
    assert today.defaults["gpu"] == "H100" and "pretrain" in today.items()
    with pytest.raises(ConfigError, match="pipeline.load_scenario"):
        budget.load_scenario("phi1-2025")  # the budget alone cannot build a preset's plan


def test_report_markdown_shows_every_stage_and_row():
    report = {
        "preset": "tiny", "run_dir": "/x", "total_seconds": 1.0, "stages_seconds": 10.0, "spent_usd": 0.0,
        "stages": {s: {"status": "ran", "seconds": 1.0, "estimate_usd": 0.5, "estimate_wall_hours": 0.01,
                       "measured_usd": 0.25, "stand_in": s == "synthesis"} for s in NAMES},
        "ablation": [{"model": v, "seeds": [0, 1], "humaneval_solution_loss_mean": 5.0 + i,
                      "humaneval_solution_loss_std": 0.1, "heldout_loss_mean": None, "heldout_loss_std": None,
                      "pass_at_1": 0.0, "paper_pass_at_1": PAPER_ABLATION[v]} for i, v in enumerate(VARIANTS)],
        "ablation_notes": ["note one"],
    }
    md = report_markdown(report)
    for stage in NAMES:
        assert f"| {stage} | ran |" in md
    assert "| synthesis | ran | 1.0 | 0.5000 | 0.0100 | 0.2500 | yes |" in md
    assert "| filtered+textbooks | [0, 1] | 7.0000 ± 0.1000 | – ± – | 0.00 | 20.12 |" in md
    assert md.rstrip().endswith("note one")


def test_run_refuses_to_train_a_multi_gpu_preset_in_one_process(tmp_path, capsys, monkeypatch):
    """phi1 run on a GPU preset would train on one GPU: it says how to launch on all of them, before any work."""
    out = tmp_path / "run"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(["run", "--preset", "phi1-small", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trains on 8 GPUs" in err and "accelerate launch --multi_gpu --num_processes 8 -m phi1lib.cli train " \
        f"pretrain --preset phi1-small --out {out}" in err and "--single-process" in err
    assert "--stages evaluation,evaluation-mbpp" in err and not out.exists()
    from phi1lib.commands.run import _check_launch

    config = RunConfig(preset="phi1-small", stages=("evaluation",))
    _check_launch(config, str(out), False)  # no training stage: nothing to refuse
    _check_launch(RunConfig(preset="phi1-small"), str(out), True)  # asked to go on
    monkeypatch.setenv("WORLD_SIZE", "8")  # under accelerate launch / torchrun
    _check_launch(RunConfig(preset="phi1-small"), str(out), False)
