"""How `phi1 run` calls each stage: one (estimate, run) pair per stage, plus the tiny ablation."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import paper

if TYPE_CHECKING:  # pragma: no cover
    from .run import Pipeline

StagePair = tuple[Callable[[], Any], Callable[[Path, bool], Any]]


def filtering(p: "Pipeline") -> StagePair:
    from ..filtering.stage import FilterConfig, estimate_cost, run_filtering

    cfg = FilterConfig.for_preset(p.preset.name)
    return (lambda: estimate_cost(cfg, p.prices),
            lambda out, force: run_filtering(cfg, out_dir=out, ledger=p.ledger, force=force, progress=False,
                                             log=p.log))


def synthesis(p: "Pipeline") -> StagePair:
    from ..synthesis.stage import SynthesisConfig, estimate_cost, run_synthesis

    cfg = SynthesisConfig.for_preset(p.preset.name)
    return (lambda: estimate_cost(cfg, p.prices),
            lambda out, force: run_synthesis(cfg, out, ledger=p.ledger, prices=p.prices, force=force,
                                             progress=False))


def decontam(p: "Pipeline") -> StagePair:
    from .. import decontam as stage
    from ..runs import RunDir

    cfg = stage.DecontamConfig.for_preset(p.preset.name)
    return (lambda: stage.estimate(cfg, p.prices),
            lambda out, force: stage.run(cfg, RunDir(p.root), ledger=p.ledger, prices=p.prices, force=force,
                                         progress=False))


def _train(p: "Pipeline", stage: str, out: Path, **overrides: Any):
    from ..training.stage import TrainConfig

    return TrainConfig.for_preset(p.preset.name, stage, out_dir=out, **overrides)


def pretrain(p: "Pipeline") -> StagePair:
    from ..training.stage import estimate_cost, run_training

    cfg = _train(p, "pretrain", p.root / "pretrain")
    return (lambda: estimate_cost(cfg, p.prices),
            lambda out, force: run_training(cfg, ledger=p.ledger, prices=p.prices, force=force, progress=False))


def finetune(p: "Pipeline") -> StagePair:
    from ..training.stage import estimate_cost, run_training

    cfg = _train(p, "finetune", p.root / "finetune", init_from=str(p.root / "pretrain" / "final"),
                 data=(_exercises(p.root),))
    return (lambda: estimate_cost(cfg, p.prices),
            lambda out, force: run_training(cfg, ledger=p.ledger, prices=p.prices, force=force, progress=False))


def evaluation(p: "Pipeline") -> StagePair:
    from ..evaluation.stage import EvalConfig, estimate_cost, run_evaluation

    cfg = EvalConfig.for_preset(p.preset.name, model=str(p.root / "finetune" / "final"),
                                out=str(p.root / "evaluation"))
    return (lambda: estimate_cost(cfg, p.prices),
            lambda out, force: run_evaluation(cfg, ledger=p.ledger, prices=p.prices, force=force,
                                              progress=False))


# ---- the ablation (paper Figure 2.1 at tiny scale) -------------------------------------------

def _variant_data(root: Path) -> dict[str, tuple[str, ...]]:
    kept = str(root / "filtering" / "kept.parquet")
    return {
        "unfiltered": (str(root / "filtering" / "pool.parquet"),),
        "filtered": (kept,),
        "filtered+textbooks": (kept, str(root / "synthesis" / "textbooks.jsonl")),
    }


def _exercises(root: Path) -> str:
    """CodeExercises as synthesized (the paper's phi-1 finetunes on the unpruned set too)."""
    return str(root / "synthesis" / "exercises.jsonl")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _run_ablation(p: "Pipeline", out: Path, force: bool) -> dict[str, Any]:
    """Equal-token-budget models on each data mix, several seeds; HumanEval solution loss on all
    164 problems (nats/token, solution tokens only), pass@1 (greedy) for the first seed."""
    from .. import runs
    from ..evaluation.generate import canonical_loss
    from ..evaluation.stage import EvalConfig, run_evaluation
    from ..problems import load_humaneval
    from ..training.stage import run_training

    root = p.root
    problems = load_humaneval()
    data = _variant_data(root)
    models: dict[str, list[tuple[int, Path, dict]]] = {v: [] for v in data}
    models["filtered+textbooks+exercises"] = []
    for seed in p.config.seeds:
        for variant, files in data.items():
            if variant == "filtered+textbooks" and seed == 0:
                folder = root / "pretrain"  # the main pipeline's pretraining run is this cell
            else:
                folder = out / f"{variant}-seed{seed}"
            res = run_training(_train(p, "pretrain", folder, data=files, seed=seed), ledger=p.ledger,
                               prices=p.prices, force=force, progress=False)
            models[variant].append((seed, folder, res.to_dict()))
        base = models["filtered+textbooks"][-1][1]
        folder = root / "finetune" if seed == 0 else out / f"filtered+textbooks+exercises-seed{seed}"
        res = run_training(_train(p, "finetune", folder, data=(_exercises(root),), init_from=str(base / "final"),
                                  seed=seed), ledger=p.ledger, prices=p.prices, force=force, progress=False)
        models["filtered+textbooks+exercises"].append((seed, folder, res.to_dict()))

    rows = []
    for variant, runs_ in models.items():
        he_losses, heldouts = [], []
        for seed, folder, res in runs_:
            loss = canonical_loss(problems, folder / "final")
            he_losses.append(loss["mean"])
            heldouts.append(res.get("heldout_loss"))
        pass1 = None
        main_eval = runs.load_result(root / "evaluation")
        if variant == "filtered+textbooks+exercises" and runs_ and runs_[0][0] == 0 and main_eval:
            pass1 = 100.0 * main_eval["metrics"].get("pass@1", 0.0)  # the evaluation stage scored this model
        elif p.config.eval_pass_at_1 and runs_:
            folder0 = runs_[0][1]
            ev = run_evaluation(EvalConfig.for_preset(p.preset.name, model=str(folder0 / "final"),
                                                      out=str(out / f"eval-{variant}-seed{runs_[0][0]}"),
                                                      canonical_loss=False),
                                prices=p.prices, progress=False)
            pass1 = 100.0 * ev.metrics.get("pass@1", 0.0)
        he_mean, he_std = _mean_std(he_losses)
        ho_mean, ho_std = _mean_std(heldouts)
        rows.append({
            "model": variant,
            "seeds": [s for s, _, _ in runs_],
            "humaneval_solution_loss": he_losses,
            "humaneval_solution_loss_mean": he_mean,
            "humaneval_solution_loss_std": he_std,
            "heldout_loss_mean": ho_mean,
            "heldout_loss_std": ho_std,
            "tokens": runs_[0][2].get("tokens") if runs_ else None,
            "pass_at_1": pass1,
            "paper_pass_at_1": paper.ABLATION_PASS_AT_1[variant],
        })
    notes = [
        "Equal token budgets: every pretraining row trains the same steps x batch x sequence length; "
        "the exercises row adds the finetuning tokens on top of the filtered+textbooks model.",
        "HumanEval solution loss: mean cross-entropy (nats/token) of the 164 canonical solutions given "
        "their prompts, solution tokens only; lower is better. Held-out loss is on each model's own "
        "training distribution, so it is not comparable across rows.",
        "Paper column: HumanEval pass@1 of the paper's 350M models (Figure 2.1; the exercises row is "
        "phi-1-small). A ~1M-parameter model trained for seconds solves no problems, so pass@1 here "
        "is expected to be 0; the loss column is the signal that can show the data effect.",
    ]
    return {"rows": rows, "notes": notes, "stand_in": "offline stand-ins (heuristic annotator, extractive "
            "synthesizer)" if p.preset.offline else None}


def ablation(p: "Pipeline") -> StagePair:
    from ..training.stage import estimate_cost

    def estimate():
        from ..budget import combine

        n = len(p.config.seeds)
        pre = estimate_cost(_train(p, "pretrain", p.root / "ablation" / "estimate"), p.prices)
        fin = estimate_cost(_train(p, "finetune", p.root / "ablation" / "estimate"), p.prices)
        # 3 pretraining mixes per seed and one finetune, minus the main pipeline's own pair.
        return combine("ablation", [pre] * max(3 * n - 1, 0) + [fin] * max(n - 1, 0), p.prices)

    def run(out: Path, force: bool):
        from .. import runs

        stored = runs.load_result(out)
        if stored is not None and not force:
            return stored
        result = _run_ablation(p, out, force)
        runs.save_result(out, result)
        return result

    return estimate, run


STAGE_FUNCS: dict[str, Callable[["Pipeline"], StagePair]] = {
    "filtering": filtering,
    "synthesis": synthesis,
    "decontam": decontam,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluation": evaluation,
    "ablation": ablation,
}
