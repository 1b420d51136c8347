"""The orchestrator's own logic: the stage table, the dry run (= the budget), config checks and the report.

The whole tiny run is in test_notebooks (slow); here nothing trains.
"""

from __future__ import annotations

import json

import pytest

from phi1lib import budget, cli, pipeline
from phi1lib.errors import ConfigError
from phi1lib.paper import ABLATION_PASS_AT_1 as PAPER_ABLATION, ABLATION_SETUP
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
    # §2.1 / Figure 2.1 (350M): 12.19 / 17.68 / 20.12, each after its own number of steps. The paper has no
    # 350M ablation point for the exercises row: phi-1-small's 45% (Table 1) is never paired with it.
    assert [PAPER_ABLATION.get(v) for v in VARIANTS] == [12.19, 17.68, 20.12, None]
    assert "96K" in ABLATION_SETUP["unfiltered"] and "36K" in ABLATION_SETUP["filtered"]


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
        assert [l.item for l in mbpp.lines] == ["generate", "sandbox", "canonical_loss"]
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
    assert line.gpu_hours == pytest.approx(9 * pre.gpu_hours)  # 3 rows x 3 seeds, each its own training
    assert AblationConfig.for_preset("phi1", seeds=(0, 1)).fingerprint() != cfg.fingerprint()


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
        "ablation": [{"model": v, "seeds": [0, 1, 2], "humaneval_bpb_mean": 2.5 + i, "humaneval_bpb_ci": 0.1,
                      "pass_at_1": 0.0, "paper_pass_at_1": PAPER_ABLATION.get(v)} for i, v in enumerate(VARIANTS)],
        "ablation_notes": ["note one"],
    }
    md = report_markdown(report)
    for stage in NAMES:
        assert f"| {stage} | ran |" in md
    assert "| synthesis | ran | 1.0 | 0.5000 | 0.0100 | 0.2500 | yes |" in md
    assert "| filtered+textbooks | 3 | 4.5000 ± 0.1000 |" in md and "| 0.00 | 20.12 |" in md
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


# ---- the ablation's statistics and its shared tokenizer --------------------------------------------------

def test_t_interval_is_students_and_needs_two_values():
    from phi1lib.pipeline.ablation import t_interval

    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-6)  # t(0.975, 2) x sd / sqrt(n)
    assert t_interval([5.0]) == (5.0, None)


def test_rows_compare_seed_by_seed_and_say_when_it_is_noise():
    from phi1lib.pipeline.ablation import compare_rows, table_markdown

    rows = [{"model": "unfiltered", "seeds": [0, 1, 2], "humaneval_bpb": [3.00, 3.10, 2.90]},
            # lower by exactly 0.1 on every seed: the paired interval is a point below zero
            {"model": "filtered", "seeds": [0, 1, 2], "humaneval_bpb": [2.90, 3.00, 2.80]},
            # differences +0.2, -0.2, +0.05: the interval holds zero
            {"model": "filtered+textbooks", "seeds": [0, 1, 2], "humaneval_bpb": [3.10, 2.80, 2.85]},
            {"model": "filtered+textbooks+exercises", "seeds": [2], "humaneval_bpb": [2.0]}]
    compare_rows(rows)
    assert rows[0]["humaneval_bpb_mean"] == pytest.approx(3.0) and "step_verdict" not in rows[0]
    assert rows[1]["step_mean"] == pytest.approx(-0.1) and rows[1]["step_ci"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["step_verdict"] == "lower than unfiltered, beyond noise"
    assert rows[2]["step_verdict"] == "within noise of filtered"
    # only seed 2 is shared with the row above: one difference, no interval
    assert rows[3]["step_mean"] == pytest.approx(2.0 - 2.85) and rows[3]["step_ci"] is None
    assert rows[3]["step_verdict"].startswith("one seed: no interval")
    table = "\n".join(table_markdown(rows))
    assert "| filtered | 3 | 2.9000 ± 0.2484 | -0.1000 ± 0.0000 | lower than unfiltered, beyond noise |" in table


def test_shared_tokenizer_is_trained_once_on_every_rows_data(tmp_path):
    """One BPE for every row, from equal parts of the pool, the textbooks and the exercises; stored with a
    result.json naming its content, so a cell's record of it does not change when the ablation finishes."""
    from phi1lib import runs
    from phi1lib.jsonl import write_jsonl
    from phi1lib.pipeline.ablation import AblationConfig, shared_tokenizer, tokenizer_mix
    from phi1lib.runs import RunDir
    from phi1lib.training.tokenizer import load_tokenizer

    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = RunDir(tmp_path / "run")
    pool = [f"def pool_{i}(x):\n    return x + {i}\n" for i in range(300)]
    (run_dir.root / "filtering").mkdir(parents=True)
    pq.write_table(pa.table({"text": pool}), run_dir.path("filtering", "pool.parquet"))
    (run_dir.root / "synthesis").mkdir()
    write_jsonl(run_dir.path("synthesis", "textbooks.jsonl"), [{"text": f"# Lesson {i}\nprint('textbook')\n"} for i in range(300)])
    write_jsonl(run_dir.path("synthesis", "exercises.jsonl"), [{"text": f"def ex_{i}():\n    \"\"\"Exercise.\"\"\"\n"} for i in range(300)])
    mixed = tokenizer_mix([str(run_dir.path("filtering", "pool.parquet"))], 100)
    assert mixed == pool[:len(mixed)] and sum(map(len, mixed)) >= 100 > sum(map(len, mixed[:-1]))
    cfg = AblationConfig.for_preset("tiny", tokenizer_chars=6000)
    folder = shared_tokenizer(cfg, run_dir, run_dir.stage("ablation"))
    tok = load_tokenizer(folder)
    vocab = tok.get_vocab()
    assert any("pool" in t for t in vocab) and any("textbook" in t for t in vocab) and any("Exercise" in t for t in vocab)
    before = runs.identity(folder)
    assert before.startswith("ablation-tokenizer:")
    assert shared_tokenizer(cfg, run_dir, run_dir.path("ablation")) == folder and runs.identity(folder) == before
    runs.save_result(run_dir.path("ablation"), {"stage": "ablation", "fingerprint": "abc"})  # the stage finishing
    assert runs.identity(folder) == before
    write_jsonl(run_dir.path("synthesis", "textbooks.jsonl"), [{"text": f"# Chapter {i}\nprint('other')\n"} for i in range(300)])
    shared_tokenizer(cfg, run_dir, run_dir.path("ablation"))  # other data: trained again, a new identity
    assert runs.identity(folder) != before and any("Chapter" in t for t in load_tokenizer(folder).get_vocab())


def _ablation_inputs(run_dir, n: int = 300, textbooks: str = "print('textbook')") -> None:
    """A run folder with the filtering and synthesis outputs the ablation reads (small real-looking code)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phi1lib.jsonl import write_jsonl

    pool = [f"def pool_{i}(x):\n    \"\"\"Add {i}.\"\"\"\n    return x + {i}\n" for i in range(n)]
    (run_dir.root / "filtering").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": pool}), run_dir.path("filtering", "pool.parquet"))
    pq.write_table(pa.table({"text": pool[: n // 2]}), run_dir.path("filtering", "kept.parquet"))
    (run_dir.root / "synthesis").mkdir(exist_ok=True)
    write_jsonl(run_dir.path("synthesis", "textbooks.jsonl"), [{"text": f"# Lesson {i}\n{textbooks}\n"} for i in range(n)])
    write_jsonl(run_dir.path("synthesis", "exercises.jsonl"),
                [{"text": f"def ex_{i}(a):\n    \"\"\"Return a times {i}.\"\"\"\n    return a * {i}\n"} for i in range(n)])


@pytest.mark.slow
def test_ablation_runs_every_cell_with_one_tokenizer_and_is_stored(tmp_path, monkeypatch):
    from dataclasses import replace

    from phi1lib.pipeline import ablation
    from phi1lib.problems import load_humaneval
    from phi1lib.runs import RunDir

    problems = load_humaneval()[:3]
    monkeypatch.setattr(ablation, "load_humaneval", lambda: problems)  # 3 problems keep the scoring short
    run_dir = RunDir(tmp_path / "run")
    _ablation_inputs(run_dir)
    cfg = AblationConfig.for_preset("tiny", seeds=(0, 1), eval_pass_at_1=False, tokenizer_chars=20_000)
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, steps=2, warmup_steps=1, seq_len=32),
                  finetune=replace(cfg.finetune, steps=2, warmup_steps=1, seq_len=32))
    res = ablation.run(cfg, run_dir, progress=False)
    assert [r["model"] for r in res.rows] == list(VARIANTS)
    tok = str(run_dir.path("ablation", "tokenizer"))
    for r in res.rows:
        assert r["seeds"] == [0, 1] and len(r["humaneval_bpb"]) == 2 and all(0 < b < 20 for b in r["humaneval_bpb"])
        assert r["humaneval_bpb_ci"] is not None and r["paper_pass_at_1"] == PAPER_ABLATION.get(r["model"])
        for s in (0, 1):
            stage = "finetune" if r["model"] == VARIANTS[3] else "pretrain"
            stored = json.loads((run_dir.path("ablation") / f"{r['model']}-seed{s}" / stage / "result.json").read_text())
            assert stored["config"]["seed"] == s
            assert stage == "finetune" or stored["config"]["tokenizer"] == tok  # every pretraining row: one tokenizer
    assert [r.get("step_verdict", "").split(" ")[0] for r in res.rows[1:]] != [] and res.notes
    # priced from what ran: training tokens and the loss passes' tokens (counted with the shared tokenizer once it
    # exists) are the tokens the stage measured
    assert res.estimate["tokens"] == res.usage.tokens_in > 0
    again = ablation.run(cfg, run_dir, progress=False)  # stored: nothing retrains
    assert again.finished_at == res.finished_at and again.rows == res.rows
