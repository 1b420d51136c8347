"""`phi1 train pretrain|finetune`: train the preset's Phi model on JSONL/Parquet text (resumable)."""

from __future__ import annotations

import argparse
import os

from .. import training
from ..errors import ConfigError
from . import _common as C

FLAGS = {"data": "--data", "init_from": "--init-from", "tokenizer": "--tokenizer", "steps": "--max-steps",
         "compile": "--compile"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="stages 3-4: pretrain or finetune the phi-1 model of a preset (accelerate; resumable)",
        description="Pretrain on CodeTextbook or finetune on CodeExercises. Writes OUT/<stage>/final (model + "
                    "tokenizer), OUT/<stage>/checkpoints, OUT/<stage>/log.jsonl and OUT/<stage>/result.json (last). "
                    "A finished run is reused only with the same settings and inputs; --resume continues its "
                    "checkpoints (e.g. with more --max-steps), --force starts over. Runs data-parallel unchanged "
                    "under `accelerate launch --multi_gpu --num_processes N -m phi1lib.cli train ...` (on a "
                    "CPU-only machine the same command runs N gloo processes).",
        epilog="examples: phi1 train pretrain --out runs/tiny | phi1 train finetune --out runs/tiny | "
               "phi1 train pretrain --out runs/x --data corpus.jsonl --data textbooks.jsonl:2 --max-steps 300 | "
               "phi1 train pretrain --out runs/x --max-steps 600 --resume",
    )
    p.add_argument("stage", choices=training.STAGES,
                   help="pretrain (a fresh model) or finetune (from a pretrained one)")
    p.add_argument("--data", action="append", default=None, metavar="FILE[:WEIGHT]",
                   help="JSONL/Parquet with a `text` column; WEIGHT = passes per epoch (default 1); repeatable. "
                        "Default: OUT/filtering/kept.parquet + OUT/synthesis/textbooks.jsonl (pretrain) or "
                        "OUT/synthesis/exercises.jsonl (finetune)")
    p.add_argument("--init-from", metavar="DIR",
                   help="finetune: saved pretrained model folder (default: OUT/pretrain/final)")
    p.add_argument("--tokenizer", metavar="ID|DIR", help="'bpe-train', a hub id or a local folder "
                                                        "(default: the preset's; finetune: the model's)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="optimizer steps (replaces the preset's; the LR schedule follows)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in OUT/<stage> (also to train a finished run longer)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    C.add_stage_args(p, "TrainConfig")
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> training.TrainConfig:
    """TrainConfig from the flags; bad values name the flag, before any work starts."""
    if any(item.partition("=")[0].strip() == "stage" for item in args.sets):
        raise ConfigError("--set stage: the stage is the command's first argument (train pretrain|finetune)")
    extra = {"stage": args.stage}
    if args.data is not None:
        args.data = tuple(args.data)
    if args.max_steps is not None:
        extra["decay_steps"] = None  # the schedule follows the new length (--set decay_steps=N still wins)
    return C.stage_config(training.TrainConfig, args, FLAGS, extra)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    where, prices = C.run_dir(args), C.load_prices(args)
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch / torchrun, talk once
    est = training.estimate(config, prices)
    if main_process and not args.json and not args.estimate_only:
        print(f"[{config.stage}] {config.preset}: {config.steps:,} steps x {config.batch_seqs} x {config.seq_len} "
              f"tokens = {config.tokens:,} tokens into {where.path(config.stage)}")
    if C.show_estimate(args, config.stage, est) if main_process else args.estimate_only:
        return 0
    res = training.run(config, where, ledger=C.ledger(args, where), prices=prices, force=args.force,
                       resume=args.resume, progress=not args.json)
    if not main_process:
        return 0
    if args.json:
        C.print_json(res.to_dict())
        return 0
    if res.reused:
        print(f"[{config.stage}] stored result from {res.finished_at} (same settings and inputs; --force to redo)")
    he = f"{res.humaneval_loss_initial:.4f} -> {res.humaneval_loss:.4f}" \
        if res.humaneval_loss_initial is not None and res.humaneval_loss is not None else _num(res.humaneval_loss)
    print(f"[{config.stage}] done: loss {_num(res.train_loss)}, held-out {_num(res.heldout_loss)}, "
          f"HumanEval solution loss {he}; {res.usage.wall_s:.1f} s, {res.tokens_per_s:,.0f} tokens/s; "
          f"model in {res.final_dir}")
    return 0


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
