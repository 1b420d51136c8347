"""`phi1 decontaminate`: 13-gram, embedding and AST-match checks of exercises against HumanEval; tau pruning."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "decontaminate",
        help="stage 2b: check synthetic exercises against HumanEval (and MBPP), prune at AST match-rate taus",
        description="Measure overlap between synthetic exercises and benchmark problems (13-gram, embedding "
                    "distance, AST match rate with normalized identifiers) and write the similar/non-similar "
                    "HumanEval split (Table 3 of the paper) and pruned exercise files.",
        epilog="example: phi1 decontaminate --data runs/tiny/synthesis --out runs/tiny/decontam",
    )
    p.add_argument("--data", metavar="DIR", help="synthesis folder with exercises.jsonl (default: the run's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: $PHI1_RUN_DIR/decontam)")
    p.add_argument("--preset", default="tiny", help="preset (chooses the embedder; default tiny)")
    p.add_argument("--taus", default="0.95,0.9,0.85,0.8", help="comma-separated AST match-rate thresholds")
    p.add_argument("--embedder", help="transformers model id/folder for the embedding distance ('none' to skip)")
    p.add_argument("--mbpp", metavar="JSONL", help="MBPP problems (task_id + code) to check as well")
    p.add_argument("--force", action="store_true", help="redo even if the folder holds a finished result")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..decontam.stage import DecontamConfig, run_decontamination
    from ..errors import ConfigError

    try:
        taus = tuple(float(t) for t in args.taus.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--taus {args.taus!r}: expected comma-separated numbers in (0, 1], e.g. 0.95,0.9") from None
    kw: dict = {"taus": taus, "mbpp_path": args.mbpp}
    if args.embedder:
        kw["embedder"] = None if args.embedder.lower() == "none" else args.embedder
    config = DecontamConfig.for_preset(args.preset, **kw)
    res = run_decontamination(config, args.data, args.out, force=args.force)
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
