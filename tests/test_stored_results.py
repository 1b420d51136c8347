"""A stage folder made by one preset is never reused, or completed, by another (stage.other_preset).

A notebook's fallback (`run_pipeline(preset, out=run_dir.root, ...)`) or a stray `phi1 synth` into a
real run folder must not pass tiny artefacts off as phi1-small ones: every stage refuses a stored
result.json whose config names another preset, by name, and --force redoes it."""

from __future__ import annotations

import inspect
import statistics
import textwrap
from dataclasses import replace

import pandas as pd
import pytest

from phi1lib import decontam, evaluation, filtering, synthesis, training
from phi1lib.runs import RunDir
from phi1lib.stage import StageResult, StaleResult, load_stored

CONFIGS = {
    "filtering": lambda p: filtering.FilterConfig.for_preset(p),
    "decontam": lambda p: decontam.DecontamConfig.for_preset(p),
    "pretrain": lambda p: training.TrainConfig.for_preset(p, stage="pretrain"),
    "evaluation": lambda p: evaluation.EvalConfig.for_preset(p),
}


@pytest.mark.parametrize("stage", sorted(CONFIGS))
def test_a_result_of_another_preset_is_refused_by_name(tmp_path, stage):
    root = tmp_path / "run"
    tiny = CONFIGS[stage]("tiny")
    folder = root / tiny.stage_name
    folder.mkdir(parents=True)
    inputs = {"source": "filtering:abc"}
    # What a stage writes (common_fields): the config, its fingerprint over the same inputs.
    StageResult(stage=tiny.stage_name, out_dir=str(folder), config=tiny.to_dict(), inputs=inputs,
                fingerprint=tiny.fingerprint(root, inputs)).save()
    assert load_stored(StageResult, folder, tiny, root=root, inputs=inputs).reused  # same preset: reused
    small = CONFIGS[stage]("phi1-small")
    with pytest.raises(StaleResult, match=rf"{tiny.stage_name}: .* holds a result of preset 'tiny', and this run "
                                          r"asks for preset 'phi1-small'; pass --force"):
        load_stored(StageResult, folder, small, root=root, inputs=inputs)
    # Refused even when nothing else differs (the preset is named before the fingerprint is compared).
    with pytest.raises(StaleResult, match="preset 'tiny'"):
        load_stored(StageResult, folder, replace(tiny, preset="phi1-small"), root=root, inputs=inputs)
    assert load_stored(StageResult, folder, small, root=root, inputs=inputs, force=True) is None


def test_synthesis_refuses_a_folder_of_another_preset(tmp_path):
    """Synthesis does not fingerprint `preset` (a model name is what changes records), so before this
    rule a tiny folder was silently reused by a config that only differed in its preset."""
    rows = [{"id": m.__name__, "text": inspect.getsource(m)} for m in (textwrap, statistics)]
    src = tmp_path / "kept.parquet"
    pd.DataFrame(rows).to_parquet(src)
    cfg = synthesis.SynthesisConfig.for_preset("tiny", n_textbooks=2, n_exercises=4, sandbox=False, source=str(src))
    run_dir = RunDir(tmp_path / "run")
    first = synthesis.run(cfg, run_dir, progress=False)
    other = replace(cfg, preset="phi1-small")
    assert synthesis.kind_config(other, "exercise").fingerprint() == synthesis.kind_config(cfg, "exercise").fingerprint()
    with pytest.raises(StaleResult, match=r"synthesis: .* holds a result of preset 'tiny', and this run asks for "
                                          r"preset 'phi1-small'; pass --force"):
        synthesis.run(other, run_dir, progress=False)
    assert synthesis.run(cfg, run_dir, progress=False).finished_at == first.finished_at  # its own preset: reused
    redone = synthesis.run(other, run_dir, progress=False, force=True)
    assert redone.config["preset"] == "phi1-small" and redone.finished_at != first.finished_at


def test_a_new_result_is_not_started_in_a_run_folder_of_another_preset(tmp_path):
    """A half-finished phi1-small run (filtering done) is not completed by a tiny stage: the stage refuses
    before writing anything; --force (an explicit choice) mixes them anyway."""
    root = tmp_path / "run"
    small = filtering.FilterConfig.for_preset("phi1-small")
    (root / "filtering").mkdir(parents=True)
    StageResult(stage="filtering", out_dir=str(root / "filtering"), config=small.to_dict(),
                fingerprint=small.fingerprint(root)).save()
    tiny = decontam.DecontamConfig.for_preset("tiny")
    (root / "decontam").mkdir()
    with pytest.raises(StaleResult, match=r"decontam: .* holds a filtering result of preset 'phi1-small', and this "
                                          r"run asks for preset 'tiny'; a run folder holds one preset"):
        load_stored(StageResult, root / "decontam", tiny, root=root)
    assert load_stored(StageResult, root / "decontam", tiny, root=root, force=True) is None
    assert load_stored(StageResult, root / "decontam", decontam.DecontamConfig.for_preset("phi1-small"),
                       root=root) is None  # the same preset: nothing stored yet, go ahead
    # Synthesis (its own stored-result rule) refuses the same way, before reading or writing anything.
    cfg = synthesis.SynthesisConfig.for_preset("tiny", n_textbooks=2, n_exercises=2, sandbox=False)
    pd.DataFrame([{"id": "textwrap", "text": inspect.getsource(textwrap)}]).to_parquet(root / "filtering" / "kept.parquet")
    with pytest.raises(StaleResult, match=r"synthesis: .* holds a filtering result of preset 'phi1-small'"):
        synthesis.run(cfg, RunDir(root), progress=False)
    assert not (root / "synthesis" / "result.json").exists() and not (root / "synthesis" / "textbooks.jsonl").exists()
