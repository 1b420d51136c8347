"""`phi1 train pretrain|finetune`: train the preset's Phi model on JSONL/Parquet text (resumable)."""

from __future__ import annotations

import argparse
import ast
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="pretrain or finetune the phi-1 model of a preset (accelerate; resumable)",
        description="Pretrain on CodeTextbook or finetune on CodeExercises. Writes OUT/final (model + "
                    "tokenizer), OUT/checkpoints, OUT/log.jsonl and OUT/result.json (last). Runs data-parallel "
                    "unchanged under `accelerate launch --multi_gpu --num_processes N -m phi1lib.cli train ...` (on a CPU-only "
                    "machine the same command runs N gloo processes).",
        epilog="example: phi1 train pretrain --preset tiny --out runs/tiny/pretrain "
               "--data runs/tiny/filtering/kept.parquet --data runs/tiny/synthesis/textbooks.jsonl:2",
    )
    p.add_argument("stage", choices=("pretrain", "finetune"))
    p.add_argument("--preset", default="tiny", help="tiny, phi1-small or phi1 (default: tiny)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run dir>/<stage>)")
    p.add_argument("--data", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="JSONL/Parquet with a `text` column; WEIGHT = passes per epoch (default 1); repeatable. "
                        "Default: the run dir's filtering/synthesis (pretrain) or exercises (finetune) files")
    p.add_argument("--init-from", metavar="DIR", help="finetune: saved pretrained model folder (default: <run dir>/pretrain/final)")
    p.add_argument("--tokenizer", metavar="ID|DIR", help="'bpe-train', a hub id or a local folder (default: the preset's)")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (replaces the preset's; LR schedule follows)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--force", action="store_true", help="delete an earlier run in --out and start over")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="any TrainConfig field, e.g. --set peak_lr=1e-3 --set precision=bf16 --set threads=1")
    p.add_argument("--cap-usd", type=float, help="budget cap for the ledger (refuses to start past it)")
    p.add_argument("--ledger", metavar="FILE", help="ledger JSONL to record measured usage in")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # plain strings need no quotes: --set precision=bf16


def build_config(args: argparse.Namespace):
    from ..errors import ConfigError
    from ..training.stage import TrainConfig

    overrides = {}
    for item in args.sets:
        key, sep, val = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        overrides[key.strip()] = _value(val.strip())
    if args.out:
        overrides["out_dir"] = args.out
    if args.data:
        overrides["data"] = tuple(args.data)
    if args.init_from:
        overrides["init_from"] = args.init_from
    if args.tokenizer:
        overrides["tokenizer"] = args.tokenizer
    if args.compile:
        overrides["compile"] = True
    if args.max_steps is not None:
        overrides["steps"] = args.max_steps
        overrides.setdefault("decay_steps", None)
    return TrainConfig.for_preset(args.preset, args.stage, **overrides)


def run(args: argparse.Namespace) -> int:
    from ..budget import load_prices
    from ..training.stage import estimate_cost, run_training

    import os

    config = build_config(args)
    prices = load_prices()
    est = estimate_cost(config, prices)
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch / torchrun, talk once
    if main_process:
        print(f"[{config.stage}] {config.preset}: {config.steps} steps x {config.batch_seqs} x {config.seq_len} tokens "
          f"= {config.tokens:,} tokens; estimate {est.gpu_hours:.4g} GPU-h, ${est.cost_usd:,.2f}")
    ledger = None
    if args.ledger or args.cap_usd is not None:
        from ..budget import Ledger

        ledger = Ledger(args.ledger, cap_usd=args.cap_usd)
    result = run_training(config, ledger=ledger, prices=prices, force=args.force, resume=args.resume)
    if not main_process:
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        he = f"{result.humaneval_loss_initial:.3f} -> {result.humaneval_loss:.3f}" if result.humaneval_loss_initial \
            and result.humaneval_loss else str(result.humaneval_loss)
        print(f"[{config.stage}] done: loss {result.train_loss}, held-out {result.heldout_loss}, "
              f"HumanEval solution loss {he}; {result.seconds:.1f} s, {result.tokens_per_s:,.0f} tokens/s; "
              f"model in {result.final_dir}")
    return 0
