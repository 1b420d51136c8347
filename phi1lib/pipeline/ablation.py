"""The ablation of paper §2.1 / Figure 2.1 at the preset's scale: one model per data mix and seed, one tokenizer.

Rows: unfiltered pool, filtered code, filtered code + synthetic textbooks (pretraining), and that
model finetuned on the exercises. Every cell trains into <run>/ablation/<row>-seed<s>/ with the
same shape, schedule and tokenizer, so the only thing a row changes is its data: the tokenizer is
one byte-level BPE trained once on a fixed mix of every row's data (<run>/ablation/tokenizer/;
GPU presets use their own fixed tokenizer as is). The yardstick is the loss of HumanEval's 164
canonical solutions given their prompts in bits per byte of solution text, which does not depend
on how a tokenizer cuts the text. Each row is reported with a t-interval over its seeds, and each
step (row against the row before it) with a paired t-interval over seeds (same seed = same
initialisation and data order): when that interval holds 0 the table says "within noise".

The paper ran it otherwise (§2.1): its 350M unfiltered model saturates at 12.19% HumanEval pass@1
after ~96K steps, the filtered one reaches 17.68% after 36K, and filtered + textbooks 20.12%; each
row for its own number of steps, not equal budgets, scored by pass@1. Here every row gets the same
steps (a tiny model solves nothing, so pass@1 cannot rank rows), which the notes say.
It is a stage like the others (AblationConfig, budget_lines, estimate, run, AblationResult), kept
in the pipeline because it uses two stages.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import budget, evaluation, paper, runs, training
from ..presets import Hardware, Preset
from ..problems import N_PROBLEMS, load_humaneval
from ..runs import RunDir
from ..stage import StageConfig, StageResult, Timer, Usage, common_fields, load_stored, plan_defaults
from ..training.shards import iter_texts, round_robin
from ..training.tokenizer import BPE_FORMAT, TRAINED_BPE, train_bpe

STAGE = "ablation"
VARIANTS = ("unfiltered", "filtered", "filtered+textbooks", "filtered+textbooks+exercises")
PRETRAIN_VARIANTS = VARIANTS[:3]
CONFIDENCE = 0.95  # of every interval in the table
TOKENIZER_DIR = "tokenizer"
# Planned tokens of one HumanEval prompt + canonical solution in the canonical-loss pass (estimate only).
CANONICAL_TOKENS = evaluation.config.CANONICAL_TOKENS  # one plan for both loss passes
# tiny: the ablation's own pretraining length and seeds (see tiny_schedule); the pretrain stage keeps the preset's.
TINY_STEPS = 48
TINY_SEEDS = (0, 1, 2, 3, 4)
GPU_SEEDS = (0, 1, 2)  # a GPU preset's ablation (opt-in): each seed is three more full pretrainings
NOTES = [
    "Yardstick: HumanEval solution loss in bits per byte (bpb): the cross-entropy of the 164 canonical "
    "solutions given their prompts, summed over the solution's tokens (and end-of-text), divided by ln 2 "
    "and by the solution's UTF-8 bytes; lower is better. Bytes do not depend on the tokenizer, and every "
    "row also shares one tokenizer, so rows compare.",
    "Each row: mean over seeds ± the half-width of its 95% t-interval. 'Step' compares a row with the row "
    "above it, seed by seed (same seed = same initialisation and data order): mean difference ± 95% "
    "t-interval; 'within noise' when that interval contains 0.",
    "Equal budgets here, unlike the paper: every pretraining row trains the same steps x batch x sequence "
    "length; the exercises row finetunes the filtered+textbooks model on top (more tokens in total). In "
    "the paper (§2.1) the 350M unfiltered model saturates at 12.19% pass@1 after ~96K steps, the filtered "
    "one reaches 17.68% after 36K steps, and filtered + synthetic textbooks 20.12%. It has no 350M "
    "ablation point for the exercises row (phi-1-small's 45% in Table 1 is the full 51B-token schedule "
    "plus finetuning), so that cell of the paper column is empty.",
    "Held-out loss is on each row's own training distribution (nats/token), so it does not compare "
    "across rows. A model this small solves no HumanEval problem, so its pass@1 is 0 or close to it; the "
    "loss is the signal that can show a data effect.",
]


def tiny_schedule() -> dict[str, Any]:
    """The tiny ablation's pretraining overrides: fewer steps than the pipeline's pretrain stage, so that 5 seeds
    x 3 rows + 5 finetunes + scoring fit in ~5-6 minutes on 2 idle cores.

    Chosen by measurement (2026-12-02, over one tiny run's filtering and synthesis outputs, 2 shared cores;
    CPU seconds of the whole ablation, bpb mean ± 95% t-interval for unfiltered / filtered / +textbooks /
    +exercises; the table is on the book's results page):
    80 steps x 3 seeds (the previous setting; idle machine): 312 CPU s; 2.928±0.055 / 2.875±0.057 / 2.882±0.083 /
    2.835±0.011, every step within noise. Sequences of 256 tokens (batch 4, same tokens): 519 CPU s contended
    (the same work as 80 x 3, so ~1.7x contention); 2.971±0.096 / 2.917±0.048 / 2.894±0.066 / 2.848±0.018, every
    step within noise. d_model 64, 160 steps of 4 x 256: 575 CPU s contended; 2.872±0.103 / 2.834±0.137 /
    2.835±0.080 / 2.809±0.033, every step within noise. 48 steps x 5 seeds: 496 CPU s contended (~300 s idle by
    the 256-token run's ratio); 3.034±0.036 / 3.053±0.059 / 3.051±0.048 / 2.922±0.029: the exercises step beyond
    noise (-0.129 ± 0.043), the pretraining steps within it. More seeds narrow the intervals more than more steps
    do for the same CPU time (a 3-seed t-interval's half-width is 4.3 standard errors, a 5-seed one's 2.8), so
    this is the setting used; none of the four separates the pretraining rows on the stand-in data.
    """
    return {"steps": TINY_STEPS, "warmup_steps": TINY_STEPS // 10, "max_source_chars": TINY_STEPS * 8 * 128 * 12,
            "humaneval_problems": 1, "eval_blocks": 4, "checkpoint_every": 0}


@dataclass
class AblationConfig(StageConfig):
    """The ablation's seeds, its shared tokenizer and the stage configs it trains and evaluates with."""

    STAGE: ClassVar[str] = STAGE
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("hardware",)

    preset: str = "tiny"  # preset the configs came from
    seeds: tuple[int, ...] = GPU_SEEDS  # training seeds per row (>= 3 for a t-interval; tiny: TINY_SEEDS)
    eval_pass_at_1: bool = True  # also generate + score HumanEval for the first seed of each row
    tokenizer_chars: int = 1_000_000  # "bpe-train": characters of the fixed mix the shared BPE learns from
    pretrain: training.TrainConfig | None = None  # each row's pretraining (the row varies data and seed)
    finetune: training.TrainConfig | None = None  # the exercises row's finetuning
    evaluation: evaluation.EvalConfig | None = None  # the pass@1 runs
    hardware: Hardware | None = None  # the preset's hardware, for the estimate

    def validate(self) -> None:
        self.need(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds, at least one")
        self.need_ints("tokenizer_chars")
        for name in ("pretrain", "finetune", "evaluation", "hardware"):
            self.need(getattr(self, name) is not None, name, "a config (use AblationConfig.for_preset)")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        pre = tiny_schedule() if p.name == "tiny" else {}
        return dict(preset=p.name, seeds=TINY_SEEDS if p.name == "tiny" else GPU_SEEDS,
                    pretrain=training.TrainConfig.for_preset(p, stage="pretrain", **pre),
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


def loss_tokens_per_model(tokenizer: str | None, n_ctx: int) -> tuple[float, str]:
    """Tokens one model's canonical-solution loss pass reads: counted with the shared tokenizer when its folder
    exists (a run, once it is built), else planned at CANONICAL_TOKENS per problem."""
    if tokenizer and (Path(tokenizer) / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        return float(evaluation.loss_pass_tokens(tok, load_humaneval(), n_ctx)), "counted with the shared tokenizer"
    return float(N_PROBLEMS["humaneval"] * CANONICAL_TOKENS), f"planned at {CANONICAL_TOKENS} tokens a problem"


def budget_lines(config: AblationConfig, tokenizer: str | None = None) -> list[dict[str, Any]]:
    """3 pretrainings and 1 finetune per seed; pass@1 runs for the first seed of each row; the loss passes
    (`tokenizer`: the shared tokenizer's folder, once built, to count the loss pass's tokens exactly)."""
    n, pre, fin = len(config.seeds), config.pretrain, config.finetune
    lines = [dict(stage=STAGE, item="ablation-pretrain", kind="training", model=config.preset,
                  tokens=float(3 * n * pre.tokens), seq_len=pre.seq_len,
                  note=f"{3 * n} pretrainings of {pre.tokens:,} tokens (3 rows x {n} seeds)"),
             dict(stage=STAGE, item="ablation-finetune", kind="training", model=config.preset,
                  tokens=float(n * fin.tokens), seq_len=fin.seq_len,
                  note=f"{n} finetunings of {fin.tokens:,} tokens (the exercises row, one per seed)")]
    if config.eval_pass_at_1:  # the pass@1 runs skip the evaluation's own loss pass (the rows score it below)
        lines += [_scaled(line, len(VARIANTS), f"ablation-{line['item']}")
                  for line in evaluation.budget_lines(replace(config.evaluation, canonical_loss=False))]
    per_model, how = loss_tokens_per_model(tokenizer, pre.model.n_ctx)
    lines.append(dict(stage=STAGE, item="ablation-loss", kind="compute", model=config.preset,
                      tokens=4 * n * per_model, seq_len=CANONICAL_TOKENS, n_gpus=1,
                      note=f"canonical-solution loss of {4 * n} models on {N_PROBLEMS['humaneval']} problems, "
                           f"{per_model:,.0f} tokens each ({how})"))
    return lines


def estimate(config: AblationConfig, prices: budget.PriceBook | None = None,
             tokenizer: str | None = None) -> budget.StageEstimate:
    return budget.price_lines(STAGE, budget_lines(config, tokenizer), plan_defaults(config.hardware), prices)


# ---- statistics ----------------------------------------------------------------------------------------

def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float | None]:
    """(mean, half-width of the two-sided t-interval of the mean); half-width None with fewer than 2 values."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


def verdict(mean: float, half: float | None, than: str) -> str:
    """Plain words for a difference and its interval."""
    if half is None:
        return f"one seed: no interval, cannot tell from noise (vs {than})"
    if mean + half < 0:
        return f"lower than {than}, beyond noise"
    if mean - half > 0:
        return f"higher than {than}, beyond noise"
    return f"within noise of {than}"


def compare_rows(rows: list[dict[str, Any]], key: str = "humaneval_bpb") -> None:
    """Add each row's interval and its step against the row above (paired by seed) to the rows, in place."""
    for k, row in enumerate(rows):
        row[f"{key}_mean"], row[f"{key}_ci"] = t_interval(row[key])
        row[f"{key}_std"] = statistics.stdev(row[key]) if len(row[key]) > 1 else 0.0
        if k == 0:
            continue
        before = rows[k - 1]
        mine, theirs = dict(zip(row["seeds"], row[key])), dict(zip(before["seeds"], before[key]))
        diffs = [mine[s] - theirs[s] for s in row["seeds"] if s in theirs]
        row["step_vs"] = before["model"]
        row["step_mean"], row["step_ci"] = t_interval(diffs) if diffs else (None, None)
        row["step_verdict"] = verdict(row["step_mean"], row["step_ci"], before["model"]) if diffs else "no shared seeds"


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _pm(mean: float | None, half: float | None, fmt: str = ".4f") -> str:
    if mean is None:
        return "–"
    return f"{mean:+{fmt}}" if half is None else f"{mean:+{fmt}} ± {half:{fmt}}"


def table_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The ablation table as Markdown lines (for the run report and the results page)."""
    lines = [f"| model | seeds | HumanEval bpb (mean ± {CONFIDENCE:.0%} CI) | step vs row above (bpb) | reading | "
             "pass@1 % | paper pass@1 % (350M, own schedule) |", "|---|---|---:|---:|---|---:|---:|"]
    for r in rows:
        bpb = r.get("humaneval_bpb_mean")
        cell = "–" if bpb is None else (f"{bpb:.4f}" + (f" ± {r['humaneval_bpb_ci']:.4f}"
                                                         if r.get("humaneval_bpb_ci") is not None else ""))
        p1, paper_p1 = r.get("pass_at_1"), r.get("paper_pass_at_1")
        lines.append(f"| {r['model']} | {len(r.get('seeds', []))} | {cell} | {_pm(r.get('step_mean'), r.get('step_ci'))} | "
                     f"{r.get('step_verdict', '–')} | {'–' if p1 is None else f'{p1:.2f}'} | "
                     f"{'–' if paper_p1 is None else f'{paper_p1:.2f}'} |")
    return lines


# ---- run ---------------------------------------------------------------------------------------------

def variant_data(run_dir: RunDir) -> dict[str, tuple[str, ...]]:
    """The pretraining data of each row, from the filtering and synthesis stages of this run."""
    kept = str(run_dir.input("filtering", "kept.parquet"))
    return {"unfiltered": (str(run_dir.input("filtering", "pool.parquet")),), "filtered": (kept,),
            "filtered+textbooks": (kept, str(run_dir.input("synthesis", "textbooks.jsonl")))}


def tokenizer_mix(files: list[str], max_chars: int) -> list[str]:
    """Documents round-robin from each file (in file order) until about `max_chars`: the same text whatever row trains."""
    return round_robin([iter_texts(f) for f in files], max_chars)


def shared_tokenizer(config: AblationConfig, run_dir: RunDir, out: Path) -> str:
    """The tokenizer every row trains with. "bpe-train": one BPE on equal parts of the pool, the textbooks and the
    exercises (every row's data), saved in <ablation>/tokenizer with a result.json naming its content, so
    its identity (what each cell's fingerprint records) is the tokenizer itself. Otherwise the preset's."""
    if config.pretrain.tokenizer != TRAINED_BPE:
        return config.pretrain.tokenizer
    folder = out / TOKENIZER_DIR
    files = [str(run_dir.input("filtering", "pool.parquet")), str(run_dir.input("synthesis", "textbooks.jsonl")),
             str(run_dir.input("synthesis", "exercises.jsonl"))]
    per_file = config.tokenizer_chars // len(files)
    built_from = {"files": {f: runs.identity(f) for f in files}, "chars_per_file": per_file,
                  "vocab_size": config.pretrain.model.vocab_size, "format": BPE_FORMAT}
    if (runs.load_result(folder) or {}).get("built_from") != built_from:  # none yet, or from other data
        shutil.rmtree(folder, ignore_errors=True)
        texts = [t for f in files for t in tokenizer_mix([f], per_file)]
        train_bpe(texts, config.pretrain.model.vocab_size, folder)
        digest = hashlib.sha1((folder / "tokenizer.json").read_bytes()).hexdigest()[:20]
        runs.save_result(folder, {"stage": "ablation-tokenizer", "fingerprint": digest, "built_from": built_from})
    return str(folder)


def train_rows(config: AblationConfig, run_dir: RunDir, out: Path, tokenizer: str,
               **kw: Any) -> dict[str, list[tuple[int, Any]]]:
    """Every (row, seed) model: {row: [(seed, TrainResult)]}. kw: ledger, prices, force, progress."""
    data = variant_data(run_dir)
    exercises = str(run_dir.input("synthesis", "exercises.jsonl"))
    models: dict[str, list[tuple[int, Any]]] = {v: [] for v in VARIANTS}
    for seed in config.seeds:
        for variant, files in data.items():
            res = training.run(replace(config.pretrain, data=files, seed=seed, tokenizer=tokenizer),
                               RunDir(out / f"{variant}-seed{seed}"), **kw)
            models[variant].append((seed, res))
        base = models["filtered+textbooks"][-1][1].final_dir
        res = training.run(replace(config.finetune, data=(exercises,), init_from=str(base), seed=seed),
                           RunDir(out / f"{VARIANTS[3]}-seed{seed}"), **kw)
        models[VARIANTS[3]].append((seed, res))
    return models


def pass_at_1(config: AblationConfig, out: Path, variant: str, seed: int, final_dir: str, **kw: Any) -> float | None:
    """Greedy pass@1 (%) of one model, or None when the config leaves pass@1 out."""
    if not config.eval_pass_at_1:
        return None
    res = evaluation.run(replace(config.evaluation, model=final_dir, canonical_loss=False),
                         RunDir(out / f"eval-{variant}-seed{seed}"), **kw)
    return 100.0 * res.metrics.get("pass@1", 0.0)


def score_rows(config: AblationConfig, out: Path, models: dict[str, list[tuple[int, Any]]],
               loss_tokens: list[int] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """One row per variant; `loss_tokens` (when given) collects the tokens each row's loss passes read."""
    problems = load_humaneval()
    loss_tokens = [] if loss_tokens is None else loss_tokens
    threads = config.evaluation.threads
    rows = []
    for variant, cells in models.items():
        losses = [evaluation.canonical_loss(problems, res.final_dir, threads=threads) for _, res in cells]
        loss_tokens.append(sum(l["forward_tokens"] for l in losses))
        he_mean, he_std = _mean_std([l["mean"] for l in losses])
        ho_mean, ho_std = _mean_std([res.heldout_loss for _, res in cells])
        seed0, res0 = cells[0]
        tokens = res0.tokens + (config.pretrain.tokens if variant == VARIANTS[3] else 0)
        rows.append({"model": variant, "seeds": [s for s, _ in cells], "humaneval_bpb": [l["bpb"] for l in losses],
                     "humaneval_solution_loss": [l["mean"] for l in losses],
                     "humaneval_solution_loss_mean": he_mean, "humaneval_solution_loss_std": he_std,
                     "heldout_loss_mean": ho_mean, "heldout_loss_std": ho_std, "tokens": tokens,
                     "pass_at_1": pass_at_1(config, out, variant, seed0, res0.final_dir, **kw),
                     "paper_pass_at_1": paper.ABLATION_PASS_AT_1.get(variant),
                     "paper_setup": paper.ABLATION_SETUP.get(variant)})
    compare_rows(rows)
    return rows


def run(config: AblationConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True) -> AblationResult:
    """Train and score every cell in <run>/ablation; `force` retrains them (the pipeline's own stages are never touched)."""
    out = run_dir.stage(STAGE)
    inputs = {"filtering": runs.identity(run_dir.input("filtering", "pool.parquet")),
              "synthesis": runs.identity(run_dir.input("synthesis", "exercises.jsonl"))}
    if (done := load_stored(AblationResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    t = Timer()
    with t("tokenizer"):
        tokenizer = shared_tokenizer(config, run_dir, out)
    est = estimate(config, prices, tokenizer)  # after the (cheap) tokenizer: the loss pass's tokens are counted
    with t("train"):
        models = train_rows(config, run_dir, out, tokenizer, ledger=ledger, prices=prices, force=force,
                            progress=progress)
    with t("score"):
        loss_tokens: list[int] = []
        rows = score_rows(config, out, models, loss_tokens, prices=prices, progress=progress)
    made_by = [s for s in ("filtering", "synthesis") if (run_dir.result(s) or {}).get("stand_in")]
    stand_in = f"trained on data made with offline stand-ins ({', '.join(made_by)})" if made_by else None
    own = [res for cells in models.values() for _, res in cells]
    usage = Usage(cpu_s=t.cpu_s, wall_s=t.wall_s, gpu_s=sum(r.usage.gpu_s for r in own),
                  usd=sum(r.usage.usd for r in own), tokens_in=sum(r.usage.tokens_in for r in own) + sum(loss_tokens))
    return AblationResult(**common_fields(config, out, run_dir, inputs, est), metrics={"rows": len(rows)},
                          usage=usage, seconds=t.finish(), stand_in=stand_in, rows=rows, notes=list(NOTES)).save()
