"""`phi1 run`: the whole pipeline on one preset, resumable, with the run report."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every stage (filtering → synthesis → training → evaluation → ablation) and write the run report",
        description="Run every stage on a preset into one run directory. A stage whose result.json exists "
        "is not redone (use --force STAGE). Writes report.json and report.md in the run directory.",
    )
    p.add_argument("--preset", default="tiny", help="tiny | phi1-small | phi1 (default: tiny)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset> or $PHI1_RUN_DIR)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in pipeline order")
    p.add_argument("--force", default="", help="comma-separated stages to redo even if finished")
    p.add_argument("--seeds", default="0,1", help="ablation seeds (default: 0,1)")
    p.add_argument("--cap-usd", type=float, default=None, help="budget cap for the whole run in USD")
    p.add_argument("--no-pass-at-1", action="store_true", help="skip HumanEval generation for ablation models")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
    p.set_defaults(func=run)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import ConfigError
    from ..pipeline.run import STAGES, Pipeline, RunConfig, report_markdown

    try:
        seeds = tuple(int(s) for s in _csv(args.seeds))
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    config = RunConfig(
        preset=args.preset,
        out=args.out,
        stages=_csv(args.stages) or STAGES,
        force=_csv(args.force),
        seeds=seeds,
        cap_usd=args.cap_usd,
        eval_pass_at_1=not args.no_pass_at_1,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load would bury the stage log
    report = Pipeline(config).run()
    print(json.dumps(report, indent=2, default=str) if args.json else report_markdown(report))
    return 0
