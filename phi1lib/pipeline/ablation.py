"""The ablation of paper Figure 2.1 at the preset's scale: one training budget on each data mix, several seeds.

Rows: unfiltered pool, filtered code, filtered code + synthetic textbooks (pretraining), and that
model finetuned on the exercises. Seed 0 of the last two is the pipeline's own pretrain and
finetune stages (reused, not retrained); every other cell trains into <run>/ablation/<row>-seed<s>/.
Each model is scored by its HumanEval canonical-solution loss (nats per solution token, all 164
problems) and, for the first seed, greedy pass@1. It is a stage like the others (AblationConfig,
budget_lines, estimate, run, AblationResult), kept in the pipeline because it uses two stages.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import budget, evaluation, paper, runs, training
from ..presets import Hardware, Preset
from ..problems import N_PROBLEMS, load_humaneval
from ..runs import RunDir
from ..stage import StageConfig, StageResult, Timer, Usage, common_fields, load_stored, plan_defaults

STAGE = "ablation"
VARIANTS = tuple(paper.ABLATION_PASS_AT_1)  # unfiltered, filtered, filtered+textbooks, +exercises
PRETRAIN_VARIANTS = VARIANTS[:3]
# Planned tokens of one HumanEval prompt + canonical solution in the canonical-loss pass (estimate only).
CANONICAL_TOKENS = 250
NOTES = [
    "Equal token budgets: every pretraining row trains the same steps x batch x sequence length; "
    "the exercises row adds the finetuning tokens on top of the filtered+textbooks model.",
    "HumanEval solution loss: mean cross-entropy (nats/token) of the 164 canonical solutions given "
    "their prompts, solution tokens only; lower is better. Held-out loss is on each model's own "
    "training distribution, so it is not comparable across rows.",
    "Paper column: HumanEval pass@1 of the paper's 350M models (Figure 2.1; the exercises row is "
    "phi-1-small). A ~1M-parameter model trained for seconds solves no problems, so pass@1 here "
    "is expected to be 0; the loss column is the signal that can show the data effect.",
]


@dataclass
class AblationConfig(StageConfig):
    """The ablation's seeds and the stage configs it trains and evaluates with (the pipeline's own)."""

    STAGE: ClassVar[str] = STAGE
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("hardware",)

    preset: str = "tiny"  # preset the configs came from
    seeds: tuple[int, ...] = (0, 1)  # training seeds per row (>= 2 to state a spread)
    eval_pass_at_1: bool = True  # also generate + score HumanEval for the first seed of each row
    pretrain: training.TrainConfig | None = None  # the pipeline's pretraining config (each row varies data and seed)
    finetune: training.TrainConfig | None = None  # the pipeline's finetuning config
    evaluation: evaluation.EvalConfig | None = None  # the pipeline's evaluation config (pass@1 runs)
    hardware: Hardware | None = None  # the preset's hardware, for the estimate

    def validate(self) -> None:
        self.need(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds, at least one")
        for name in ("pretrain", "finetune", "evaluation", "hardware"):
            self.need(getattr(self, name) is not None, name, "a config (use AblationConfig.for_preset)")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        return dict(preset=p.name, pretrain=training.TrainConfig.for_preset(p, stage="pretrain"),
                    finetune=training.TrainConfig.for_preset(p, stage="finetune"),
                    evaluation=evaluation.EvalConfig.for_preset(p), hardware=p.hardware)


@dataclass(kw_only=True)
class AblationResult(StageResult):
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per variant, in the paper's order
    notes: list[str] = field(default_factory=list)


# ---- plan --------------------------------------------------------------------------------------------

def _scaled(line: dict[str, Any], k: float, item: str) -> dict[str, Any]:
    """An evaluation plan line done k times, as an ablation line."""
    out = dict(line, stage=STAGE, item=item)
    for key in ("tokens", "samples", "cpu_hours", "tokens_in", "tokens_out", "flops"):
        if key in out:
            out[key] = out[key] * k
    return out


def budget_lines(config: AblationConfig) -> list[dict[str, Any]]:
    """3 pretrainings and 1 finetune per seed, less the pipeline's own pair; pass@1 runs; the loss passes."""
    n, pre, fin = len(config.seeds), config.pretrain, config.finetune
    lines = [dict(stage=STAGE, item="ablation-pretrain", kind="training", model=config.preset,
                  tokens=float((3 * n - 1) * pre.tokens), seq_len=pre.seq_len,
                  note=f"{3 * n - 1} pretrainings of {pre.tokens:,} tokens (3 rows x {n} seeds, less the pipeline's own)")]
    if n > 1:
        lines.append(dict(stage=STAGE, item="ablation-finetune", kind="training", model=config.preset,
                          tokens=float((n - 1) * fin.tokens), seq_len=fin.seq_len,
                          note=f"{n - 1} finetunings of {fin.tokens:,} tokens (seeds after the first)"))
    if config.eval_pass_at_1:
        lines += [_scaled(line, len(PRETRAIN_VARIANTS), f"ablation-{line['item']}")
                  for line in evaluation.budget_lines(config.evaluation)]
    loss_tokens = 4 * n * N_PROBLEMS["humaneval"] * CANONICAL_TOKENS
    lines.append(dict(stage=STAGE, item="ablation-loss", kind="compute", model=config.preset, tokens=float(loss_tokens),
                      seq_len=CANONICAL_TOKENS, n_gpus=1,
                      note=f"canonical-solution loss of {4 * n} models on {N_PROBLEMS['humaneval']} problems"))
    return lines


def estimate(config: AblationConfig, prices: budget.PriceBook | None = None) -> budget.StageEstimate:
    return budget.price_lines(STAGE, budget_lines(config), plan_defaults(config.hardware), prices)


# ---- run ---------------------------------------------------------------------------------------------

def variant_data(run_dir: RunDir) -> dict[str, tuple[str, ...]]:
    """The pretraining data of each row, from the filtering and synthesis stages of this run."""
    kept = str(run_dir.input("filtering", "kept.parquet"))
    return {"unfiltered": (str(run_dir.input("filtering", "pool.parquet")),), "filtered": (kept,),
            "filtered+textbooks": (kept, str(run_dir.input("synthesis", "textbooks.jsonl")))}


def train_rows(config: AblationConfig, run_dir: RunDir, out: Path, **kw: Any) -> dict[str, list[tuple[int, Any]]]:
    """Every (row, seed) model: {row: [(seed, TrainResult)]}. kw: ledger, prices, force, progress."""
    data, force = variant_data(run_dir), kw.pop("force")
    exercises = str(run_dir.input("synthesis", "exercises.jsonl"))
    models: dict[str, list[tuple[int, Any]]] = {v: [] for v in VARIANTS}
    for seed in config.seeds:
        for variant, files in data.items():
            if variant == "filtered+textbooks" and seed == 0:  # the pipeline's pretrain stage is this cell
                res = training.run(config.pretrain, run_dir, **kw)
            else:
                res = training.run(replace(config.pretrain, data=files, seed=seed), RunDir(out / f"{variant}-seed{seed}"),
                                   force=force, **kw)
            models[variant].append((seed, res))
        if seed == 0:  # the pipeline's finetune stage
            res = training.run(config.finetune, run_dir, **kw)
        else:
            base = models["filtered+textbooks"][-1][1].final_dir
            res = training.run(replace(config.finetune, data=(exercises,), init_from=str(base), seed=seed),
                               RunDir(out / f"{VARIANTS[3]}-seed{seed}"), force=force, **kw)
        models[VARIANTS[3]].append((seed, res))
    return models


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pass_at_1(config: AblationConfig, run_dir: RunDir, out: Path, variant: str, seed: int, final_dir: str,
              **kw: Any) -> float | None:
    """Greedy pass@1 (%) of one model; the pipeline's evaluation stage already scored seed 0 of the last row."""
    main = run_dir.result("evaluation")
    if variant == VARIANTS[3] and seed == 0 and main:
        return 100.0 * main["metrics"].get("pass@1", 0.0)
    if not config.eval_pass_at_1:
        return None
    res = evaluation.run(replace(config.evaluation, model=final_dir, canonical_loss=False),
                         RunDir(out / f"eval-{variant}-seed{seed}"), **kw)
    return 100.0 * res.metrics.get("pass@1", 0.0)


def score_rows(config: AblationConfig, run_dir: RunDir, out: Path, models: dict[str, list[tuple[int, Any]]],
               **kw: Any) -> list[dict[str, Any]]:
    problems = load_humaneval()
    rows = []
    for variant, cells in models.items():
        he = [evaluation.canonical_loss(problems, res.final_dir)["mean"] for _, res in cells]
        he_mean, he_std = _mean_std(he)
        ho_mean, ho_std = _mean_std([res.heldout_loss for _, res in cells])
        seed0, res0 = cells[0]
        rows.append({"model": variant, "seeds": [s for s, _ in cells], "humaneval_solution_loss": he,
                     "humaneval_solution_loss_mean": he_mean, "humaneval_solution_loss_std": he_std,
                     "heldout_loss_mean": ho_mean, "heldout_loss_std": ho_std, "tokens": res0.tokens,
                     "pass_at_1": pass_at_1(config, run_dir, out, variant, seed0, res0.final_dir, **kw),
                     "paper_pass_at_1": paper.ABLATION_PASS_AT_1[variant]})
    return rows


def run(config: AblationConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True) -> AblationResult:
    """Train and score every row; `force` retrains the ablation's own cells, never the pipeline's stages."""
    out = run_dir.stage(STAGE)
    inputs = {"filtering": runs.identity(run_dir.input("filtering", "pool.parquet")),
              "synthesis": runs.identity(run_dir.input("synthesis", "exercises.jsonl"))}
    if (done := load_stored(AblationResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    est = estimate(config, prices)
    t = Timer()
    with t("train"):
        models = train_rows(config, run_dir, out, ledger=ledger, prices=prices, force=force, progress=progress)
    with t("score"):
        rows = score_rows(config, run_dir, out, models, prices=prices, progress=progress)
    made_by = [s for s in ("filtering", "synthesis") if (run_dir.result(s) or {}).get("stand_in")]
    stand_in = f"trained on data made with offline stand-ins ({', '.join(made_by)})" if made_by else None
    own = [res for cells in models.values() for _, res in cells if Path(res.out_dir).is_relative_to(out)]
    usage = Usage(cpu_s=t.cpu_s, wall_s=t.wall_s, gpu_s=sum(r.usage.gpu_s for r in own),
                  usd=sum(r.usage.usd for r in own), tokens_in=sum(r.usage.tokens_in for r in own))
    return AblationResult(**common_fields(config, out, run_dir, inputs, est), metrics={"rows": len(rows)},
                          usage=usage, seconds=t.finish(), stand_in=stand_in, rows=rows, notes=list(NOTES)).save()
