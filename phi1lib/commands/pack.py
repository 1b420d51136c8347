"""`phi1 pack pretrain|finetune`: tokenizer and packed training blocks, as a step of their own (resumable)."""

from __future__ import annotations

import argparse

from .. import training
from . import _common as C
from .train import build_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pack",
        help="stage 3-4 data: tokenise and pack training text into blocks before training (resumable)",
        description="Train or load the tokenizer and pack the stage's training text into fixed-length blocks: "
                    "OUT/<stage>/tokenizer and OUT/<stage>/data (Arrow shards, memory-mapped by training). "
                    "Sources are streamed (never whole in memory) in shards of --set pack_shard_docs documents, "
                    "each written atomically: an interrupted pack keeps its finished shards. `phi1 train` (and "
                    "`accelerate launch ... train`) reuse what this wrote when settings and inputs match, so run it "
                    "before a multi-GPU launch: no rank then waits on packing. Same data flags as `phi1 train`.",
        epilog="examples: phi1 pack pretrain --out runs/phi1 --workers 16 | "
               "phi1 pack finetune --out runs/phi1 | phi1 pack pretrain --out runs/x --data corpus.jsonl:2",
    )
    p.add_argument("stage", choices=training.STAGES, help="pretrain or finetune: whose data to pack")
    p.add_argument("--data", action="append", default=None, metavar="FILE[:WEIGHT]",
                   help="JSONL/Parquet with a `text` column; repeatable (default: the run's, as for phi1 train)")
    p.add_argument("--init-from", metavar="DIR", help="finetune: the pretrained model whose tokenizer to use")
    p.add_argument("--tokenizer", metavar="ID|DIR", help="'bpe-train', a hub id or a local folder")
    p.add_argument("--workers", type=C.positive_int, default=1, metavar="N",
                   help="processes packing shards in parallel (default 1; the tokenizer already uses every core "
                        "within a process)")
    C.add_preset(p)
    C.add_out(p)
    C.add_sets(p, "TrainConfig")
    C.add_json(p)
    p.set_defaults(func=run, max_steps=None, compile=None)
    return p


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    stats = training.pack(config, C.run_dir(args), workers=args.workers, progress=not args.json)
    if args.json:
        C.print_json(stats)
        return 0
    for src in stats["sources"]:
        print(f"[pack] {src['path']}: {src['documents']:,} documents ({src['heldout_documents']:,} held out) -> "
              f"{src['blocks']:,} blocks in {src['shards']} shard(s)")
    print(f"[pack] {config.stage}: {stats['train_blocks']:,} training blocks of {stats['block_size']} tokens "
          f"({stats['train_tokens']:,} tokens), {stats['heldout_blocks']:,} held-out blocks; {stats['seconds']:.1f} s; "
          f"in {stats['folder']}")
    return 0
