"""`phi1 run`: the whole pipeline on one preset, resumable stage by stage, with the run report (or only its plan)."""

from __future__ import annotations

import argparse
import os

from ..errors import ConfigError
from ..pipeline import Pipeline, RunConfig, report_markdown
from ..pipeline.stages import NAMES
from ..presets import get_preset
from . import _common as C


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every stage (filtering -> synthesis -> decontam -> training -> evaluation -> ablation), "
             "write the run report",
        description="Run the stages of a preset into one run folder, in order. A stage whose folder holds a "
                    "result made with the same settings and inputs is not redone; one made otherwise stops the run "
                    "with a line saying what changed (--force redoes). Writes OUT/report.json and OUT/report.md. "
                    "--dry-run prints each stage's estimate instead (the same numbers as `phi1 budget --preset`).",
        epilog="examples: phi1 run --preset tiny --out runs/tiny | phi1 run --preset phi1 --dry-run --json | "
               "phi1 run --out runs/tiny --stages decontam,evaluation --force",
    )
    C.add_preset(p)
    C.add_out(p)
    p.add_argument("--stages", metavar="S1,S2,...",
                   help=f"comma-separated subset of: {', '.join(NAMES)} (run in this order; default: all, "
                        "without the ablation on GPU presets)")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="ablation seeds (default: the preset's: 0,1,2,3,4 on tiny, 0,1,2 on the GPU presets)")
    p.add_argument("--pass-at-1", action="store_true",
                   help="also generate and score HumanEval for each ablation row (first seed); off by default: at tiny "
                        "scale every row scores 0")
    p.add_argument("--no-pass-at-1", action="store_true", help="(the default) skip HumanEval generation for the ablation")
    p.add_argument("--dry-run", action="store_true", help="print what would run and each stage's estimate; run nothing")
    p.add_argument("--single-process", action="store_true",
                   help="train in this one process even when the preset plans several GPUs (default: refused; "
                        "launch the training stages under accelerate instead)")
    C.add_prices(p)
    C.add_cap(p)
    C.add_force(p, "redo the selected stages even if their folders hold finished results")
    p.add_argument("--json", action="store_true", help="print the report (or the --dry-run plan) as JSON")
    p.set_defaults(func=run)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


def config_from_args(args: argparse.Namespace) -> RunConfig:
    try:
        seeds = None if args.seeds is None else tuple(int(s) for s in _csv(args.seeds))
    except ValueError:
        seeds = ()
    if seeds is not None and (not seeds or min(seeds) < 0):
        raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers >= 0, e.g. 0,1")
    stages = _csv(args.stages)
    if args.stages is not None and not stages:
        raise ConfigError(f"--stages {args.stages!r}: expected comma-separated stage names from: {', '.join(NAMES)}")
    return RunConfig(preset=args.preset, out=args.out, stages=stages or None, force=args.force,
                     seeds=seeds, cap_usd=args.cap_usd, eval_pass_at_1=args.pass_at_1 and not args.no_pass_at_1)


def _check_launch(config: RunConfig, out: str, single_process: bool) -> None:
    """A GPU preset plans its training on several GPUs; `phi1 run` is one process, so it would train on one
    (days longer). Refuse, naming the launch that uses them all, unless asked to go on."""
    n_gpus = get_preset(config.preset).hardware.n_gpus
    training = [s for s in config.stages if s in ("pretrain", "finetune")]
    if single_process or n_gpus <= 1 or not training or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    rest = [s for s in config.stages if s not in training]
    before = [s for s in rest if NAMES.index(s) < NAMES.index(training[0])]
    after = [s for s in rest if s not in before]
    steps = ([f"phi1 run --preset {config.preset} --out {out} --stages {','.join(before)}"] if before else []) + [
        f"accelerate launch --multi_gpu --num_processes {n_gpus} -m phi1lib.cli train {s} --preset {config.preset} "
        f"--out {out}" for s in training] + (
        [f"phi1 run --preset {config.preset} --out {out} --stages {','.join(after)}"] if after else [])
    raise ConfigError(f"the {config.preset} preset trains on {n_gpus} GPUs, and this one process would train on one "
                      f"(~{n_gpus}x the wall time); run: " + " ; ".join(steps) + " (or pass --single-process)")


def run(args: argparse.Namespace) -> int:
    pipeline = Pipeline(config_from_args(args), prices=C.load_prices(args))
    if args.dry_run:
        plan = pipeline.plan()
        if args.json:
            C.print_json(plan)
            return 0
        print(f"phi1 run --preset {plan['preset']} --out {plan['run_dir']} would run:")
        for s in plan["stages"]:
            print(f"  {s['stage']:<11} ${s['cost_usd']:>12,.2f}  {s['gpu_hours']:>10,.1f} GPU-h  "
                  f"{s['wall_hours']:>9,.2f} h wall  {s['tokens']:>16,.0f} tokens"
                  + ("  (a stored result exists)" if s["stored"] else ""))
        print(f"  {'total':<11} ${plan['total_usd']:>12,.2f}")
        return 0
    _check_launch(pipeline.config, str(pipeline.run_dir.root), args.single_process)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load would bury the stage log
    report = pipeline.run()
    if args.json:
        C.print_json(report)
    else:
        print(report_markdown(report))
    return 0
