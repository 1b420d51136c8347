"""The pipeline as a table: each stage's name, how its config comes from a preset, its plan lines, estimate, run and result.

Every row follows the stage contract (phi1lib.stage), so `phi1 run`, `phi1 run --dry-run`
and `phi1 budget --preset` all walk this one table: the budget of a preset is the sum of the
stages' own estimates, and the run is the same stages called the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .. import decontam, evaluation, filtering, synthesis, training
from ..errors import unknown_choice
from ..presets import Preset, get_preset
from ..stage import StageConfig, StageResult
from . import ablation


@dataclass(frozen=True)
class Stage:
    name: str  # also the stage's folder in the run
    config: Callable[..., StageConfig]  # (preset, **overrides) -> the preset's config for this stage
    budget_lines: Callable[[Any], list[dict]]
    estimate: Callable[..., Any]  # (config, prices) -> budget.StageEstimate
    run: Callable[..., StageResult]  # (config, run_dir, *, ledger, prices, force, progress) -> result
    result: type[StageResult]


def _training(stage: str) -> Callable[..., StageConfig]:
    return lambda preset, **kw: training.TrainConfig.for_preset(preset, stage=stage, **kw)


STAGES: tuple[Stage, ...] = (
    Stage("filtering", filtering.FilterConfig.for_preset, filtering.budget_lines, filtering.estimate, filtering.run,
          filtering.FilterResult),
    Stage("synthesis", synthesis.SynthesisConfig.for_preset, synthesis.budget_lines, synthesis.estimate,
          synthesis.run, synthesis.SynthesisResult),
    Stage("decontam", decontam.DecontamConfig.for_preset, decontam.budget_lines, decontam.estimate, decontam.run,
          decontam.DecontamResult),
    Stage("pretrain", _training("pretrain"), training.budget_lines, training.estimate, training.run,
          training.TrainResult),
    Stage("finetune", _training("finetune"), training.budget_lines, training.estimate, training.run,
          training.TrainResult),
    Stage("evaluation", evaluation.EvalConfig.for_preset, evaluation.budget_lines, evaluation.estimate,
          evaluation.run, evaluation.EvalResult),
    # MBPP beside HumanEval, on presets whose eval plan lists it (the paper reports both): its own folder.
    Stage("evaluation-mbpp", lambda preset, **kw: evaluation.EvalConfig.for_preset(preset, benchmark="mbpp", **kw),
          evaluation.budget_lines, evaluation.estimate, evaluation.run, evaluation.EvalResult),
    Stage("ablation", ablation.AblationConfig.for_preset, ablation.budget_lines, ablation.estimate, ablation.run,
          ablation.AblationResult),
)
NAMES = tuple(s.name for s in STAGES)


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise unknown_choice("stage", name, NAMES)


def default_stages(preset: str | Preset) -> tuple[str, ...]:
    """Every stage on an offline preset; on GPU presets the ablation (five more pretrainings) is opt-in.
    MBPP is evaluated where the preset's eval plan lists it (the GPU presets; tiny is offline, MBPP is on the hub)."""
    p = get_preset(preset)
    names = tuple(n for n in NAMES if n != "evaluation-mbpp" or "mbpp" in p.eval.benchmarks)
    return names if p.offline else tuple(n for n in names if n != "ablation")


def stage_configs(preset: str | Preset, stages: tuple[str, ...] | None = None, *, seeds: tuple[int, ...] | None = None,
                  eval_pass_at_1: bool = False) -> dict[str, StageConfig]:
    """The config of each selected stage (pipeline order), all from one resolved preset."""
    p = get_preset(preset)
    chosen = default_stages(p) if stages is None else tuple(stages)
    for name in chosen:
        get(name)
    out: dict[str, StageConfig] = {}
    for s in STAGES:
        if s.name in chosen:
            extra = ({"eval_pass_at_1": eval_pass_at_1, **({} if seeds is None else {"seeds": tuple(seeds)})}
                     if s.name == "ablation" else {})  # seeds None: the preset's (AblationConfig.for_preset)
            out[s.name] = s.config(p, **extra)
    return out
