"""`phi1 filter`: run the filtering stage (annotate, embed, classify, threshold) and print what it kept."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("filter", help="stage 1: keep the textbook-quality code of a corpus",
                       description="Annotate a subset for educational value, train a random forest on code "
                                   "embeddings, score the whole corpus and keep the best. Writes OUT/filtering/"
                                   "{kept,dropped,pool,labels}.parquet, classifier.joblib, metrics.json, result.json.")
    p.add_argument("--preset", default="tiny", help="preset the defaults come from (tiny | phi1-small | phi1)")
    p.add_argument("--out", default=None, help="run directory (default: $PHI1_RUN_DIR or runs/<preset>)")
    p.add_argument("--limit", type=int, default=None, help="at most N corpus samples (annotation shrinks to fit)")
    p.add_argument("--corpus", default=None, help="installed | the-stack-python | stackoverflow | hub:<id|folder> | "
                                                  "folder of .py | file.jsonl | file.parquet")
    p.add_argument("--granularity", choices=("file", "function"), default=None, help="file- or function-level samples")
    p.add_argument("--annotate", type=int, default=None, dest="annotate_samples", help="samples to annotate")
    p.add_argument("--annotator", default=None, help="'heuristic' (offline stand-in) or an LLM model name")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for the annotator (vLLM, ...)")
    p.add_argument("--embedder", default=None, help="'minilm-local', a hub id or a local transformers folder")
    p.add_argument("--pooling", choices=("mean", "last", "cls"), default=None)
    p.add_argument("--max-length", type=int, default=None, help="tokens per sample fed to the embedder")
    p.add_argument("--device", default=None, help="torch device for the embedder (cpu, cuda)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, default=None, help="keep samples scoring >= this probability")
    g.add_argument("--keep-fraction", type=float, default=None, help="keep this share of the pool (highest scores)")
    p.add_argument("--num-proc", type=int, default=None, help="processes for scoring the pool")
    p.add_argument("--cap-usd", type=float, default=None, help="budget cap for annotation (USD)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--force", action="store_true", help="redo the stage even if result.json exists")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import runs
    from ..errors import ConfigError
    from ..filtering.stage import STAGE, FilterConfig, estimate_cost, run_filtering
    from ..budget import Ledger

    keys = ("corpus", "granularity", "annotate_samples", "annotator", "base_url", "embedder", "pooling", "max_length",
            "device", "threshold", "keep_fraction", "num_proc", "cap_usd", "seed")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit {args.limit}: expected a positive number of samples")
        overrides["corpus_samples"] = args.limit
    config = FilterConfig.for_preset(args.preset, **overrides)
    root = Path(args.out).expanduser().resolve() if args.out else runs.run_dir(args.preset)
    out = root / STAGE
    est = estimate_cost(config)
    if not args.json:
        print(f"estimate: ${est.cost_usd:,.4f} ({est.tokens:,.0f} tokens, {est.gpu_hours:.4f} device-h, "
              f"{est.wall_hours * 60:.1f} min on {config.device})")
        if config.annotator == "heuristic":
            print("annotator: heuristic-stand-in (an offline STAND-IN for the paper's GPT-4 labels)")
    ledger = Ledger(root / "ledger.jsonl", cap_usd=args.cap_usd)
    result = run_filtering(config, out, ledger=ledger, force=args.force, progress=not args.json)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    c, m = result.counts, result.metrics["random_forest"]
    auc = f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "n/a"
    print(f"kept {c['kept_samples']:,} of {c['pool_samples']:,} samples, {c['kept_tokens']:,} of {c['pool_tokens']:,} "
          f"tokens ({result.threshold_rule})")
    print(f"classifier (held-out): precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f} "
          f"ROC-AUC {auc}; logistic-regression baseline ROC-AUC "
          f"{result.metrics['logreg_embeddings']['roc_auc'] or float('nan'):.3f}")
    if result.stand_in:
        print(f"labels: {result.stand_in}")
    print(f"measured: ${result.usage['usd']:,.4f}, {result.usage['wall_seconds']:.0f} s; files in {result.out_dir}")
    return 0
