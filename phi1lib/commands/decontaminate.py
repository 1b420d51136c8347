"""`phi1 decontaminate`: 13-gram, embedding and AST-match checks of exercises against HumanEval; tau pruning."""

from __future__ import annotations

import argparse

from .. import decontam
from . import _common as C

def _taus(text: str) -> tuple[float, ...]:
    try:
        return tuple(sorted((float(t) for t in text.split(",") if t.strip()), reverse=True))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers in (0, 1], e.g. 0.95,0.9") from None


FLAGS = {"taus": "--taus", "embedder": "--embedder", "mbpp_path": "--mbpp", "exercises_file": "--exercises",
         "textbooks_file": "--textbooks"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "decontaminate",
        help="stage 2b: check synthetic exercises against HumanEval (and MBPP), prune at AST match-rate taus",
        description="Measure overlap between synthetic exercises and benchmark problems (13-gram, embedding "
                    "distance, AST match rate with normalized identifiers) and write the similar/non-similar "
                    "HumanEval split (Table 3 of the paper) and pruned exercise files into OUT/decontam/.",
        epilog="examples: phi1 decontaminate --out runs/tiny | "
               "phi1 decontaminate --out runs/x --exercises my_exercises.jsonl --embedder none --taus 0.95,0.9",
    )
    p.add_argument("--exercises", metavar="JSONL", help="exercises to check (default: OUT/synthesis/exercises.jsonl)")
    p.add_argument("--textbooks", metavar="JSONL", help="textbooks to check for n-gram overlap "
                                                        "(default: OUT/synthesis/textbooks.jsonl when present)")
    p.add_argument("--taus", type=_taus, metavar="T1,T2,...", help="AST match-rate thresholds, highest first (default 0.95,0.9,0.85,0.8)")
    p.add_argument("--embedder", metavar="ID|DIR|none", help="transformers model for the embedding distance "
                                                              "('none' skips it; default: the preset's)")
    p.add_argument("--mbpp", metavar="JSONL", help="MBPP problems (task_id + code) to check as well")
    C.add_stage_args(p, "DecontamConfig")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = C.stage_config(decontam.DecontamConfig, args, FLAGS, nullable=("embedder",))
    res = C.run_stage(args, decontam, config)
    if res is None:
        return 0
    print(f"{res.n_records} exercises checked; {res.ngram_hits} (problem, record) pairs share a {config.ngram}-gram")
    if not res.embedding.get("skipped"):
        print(f"embedding: nearest-record L2 min {res.embedding.get('min_l2', float('nan')):.3f}, "
              f"{res.embedding.get('flagged', 0)} problems below {config.embed_flag_l2}")
    print("tau   removed  kept  similar  non-similar  (paper similar/non-similar)")
    for row in res.table:
        print(f"{row['tau']:<5} {row['removed']:>7} {row['kept']:>5} {row['similar']:>8} {row['non_similar']:>12}"
              f"  ({row['paper_similar']}/{row['paper_non_similar']})")
    print(f"split: {res.split_path}")
    return 0
