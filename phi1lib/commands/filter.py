"""`phi1 filter`: run the filtering stage (annotate, embed, classify, threshold) and print what it kept."""

from __future__ import annotations

import argparse
import sys

from .. import filtering
from ..embed import POOLINGS
from ..filtering.annotate import HEURISTIC
from ..filtering.corpus import GRANULARITIES
from ..stage import parse_assignments
from ..budget.ledger import usd_text
from . import _common as C

FLAGS = {"corpus_samples": "--limit", "corpus": "--corpus", "granularity": "--granularity",
         "annotate_samples": "--annotate", "annotator": "--annotator", "base_url": "--base-url",
         "embedder": "--embedder", "pooling": "--pooling", "max_length": "--max-length", "device": "--device",
         "threshold": "--threshold", "keep_fraction": "--keep-fraction", "num_proc": "--num-proc", "seed": "--seed",
         "cap_usd": "--cap-usd", "api_key_env": "--api-key-env", "concurrency": "--concurrency", "rpm": "--rpm",
         "tpm": "--tpm"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "filter",
        help="stage 1: keep the textbook-quality code of a corpus",
        description="Annotate a seeded subset of a code corpus for educational value, train a random forest on "
                    "code embeddings, score the whole pool and keep the best. Writes OUT/filtering/"
                    "{pool,kept,dropped,labels,examples}.parquet, classifier.joblib, metrics.json and result.json.",
        epilog="examples: phi1 filter --out runs/tiny | "
               "phi1 filter --out runs/x --corpus ~/src/myproject --limit 500 --annotate 200 --keep-fraction 0.3 | "
               "phi1 filter --out runs/x --annotator MODEL --base-url http://localhost:8000/v1 --price-free | "
               "phi1 filter --preset phi1 --estimate-only",
    )
    p.add_argument("--limit", type=int, metavar="N",
                   help="corpus samples read into the pool (default: the preset's); a smaller N than the preset's "
                        "annotation size annotates N samples")
    p.add_argument("--corpus", metavar="SPEC", help="installed | the-stack-python | stackoverflow | hub:<id|folder> | "
                                                    "folder of .py files | file.jsonl | file.parquet "
                                                    "(default: installed offline, the-stack-python otherwise)")
    p.add_argument("--granularity", choices=GRANULARITIES, help="one sample per file or per top-level function/class "
                                                                "(default: file)")
    p.add_argument("--annotate", type=int, metavar="N", help="samples sent to the annotator (default: the preset's)")
    p.add_argument("--annotator", metavar="MODEL", help=f"'{HEURISTIC}' (the offline stand-in) or an LLM model name "
                                                        "(default: the preset's)")
    p.add_argument("--embedder", metavar="ID|DIR", help="'minilm-local', a hub id or a local transformers folder "
                                                         "(default: the preset's)")
    p.add_argument("--pooling", choices=POOLINGS, help="how token states become one vector: mean, last (decoder "
                                                       "models) or cls (default: mean)")
    p.add_argument("--max-length", type=int, metavar="TOKENS", help="tokens of each sample the embedder reads "
                                                                    "(default: the preset's)")
    p.add_argument("--device", metavar="DEV", help="torch device for the embedder: cpu, cuda, cuda:1 "
                                                   "(default: cuda on GPU presets)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, metavar="SCORE", help="keep samples scoring >= SCORE (a probability "
                                                                    "in [0, 1]); replaces the preset's kept share")
    g.add_argument("--keep-fraction", type=float, metavar="SHARE", help="keep this share of the pool, highest scores "
                                                                       "first (default: the preset's plan)")
    p.add_argument("--num-proc", type=int, metavar="N",
                   help="processes scoring the pool (default: 1 offline, 8 otherwise)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the corpus sample, annotation subset, split and "
                                                         "forest (default: 0)")
    C.add_llm_args(p)
    C.add_stage_args(p, "FilterConfig")
    p.set_defaults(func=run)
    return p


def _annotate_within_limit(args: argparse.Namespace) -> dict:
    """A pool (--limit N) smaller than the preset's annotation size, with no --annotate: annotate all N
    samples, and say so (the config itself never shrinks a value silently)."""
    sets = parse_assignments(args.sets or [])
    if args.annotate is not None or "annotate_samples" in sets:
        return {}
    flag, limit = "--limit", args.limit
    if "corpus_samples" in sets:
        flag = "--set corpus_samples"
        limit = filtering.FilterConfig.parse_sets({"corpus_samples": sets["corpus_samples"]})["corpus_samples"]
    planned = filtering.FilterConfig.for_preset(args.preset).annotate_samples
    if limit is None or not 1 <= limit < planned:
        return {}
    print(f"{flag} {limit}: annotating all {limit} samples of the pool (the {args.preset} preset annotates "
          f"{planned}; --annotate N to choose)", file=sys.stderr if args.json else sys.stdout)
    return {"annotate_samples": limit}


def run(args: argparse.Namespace) -> int:
    config = C.stage_config(filtering.FilterConfig, args, FLAGS, _annotate_within_limit(args),
                            nullable=("api_key_env",))
    prices = C.llm_prices(args, None if config.annotator == HEURISTIC else config.annotator)
    res = C.run_stage(args, filtering, config, prices=prices, log=lambda *_: None)  # the summary below says it all
    if res is None:
        return 0
    c, m = res.counts, res.metrics
    rf = m["random_forest"]
    print(f"annotator: {res.annotation['annotator']}; {res.annotation['labelled']:,} of "
          f"{res.annotation['requested']:,} samples labelled, {c['positives']:,} positive")
    if res.stand_in:
        print(f"stand-in: {res.stand_in}")
    print(f"kept {c['kept_samples']:,} of {c['pool_samples']:,} samples, {c['kept_tokens']:,} of {c['pool_tokens']:,} "
          f"tokens: {res.threshold_rule}")
    print(f"classifier (held-out): precision {rf['precision']:.3f} recall {rf['recall']:.3f} f1 {rf['f1']:.3f} "
          f"ROC-AUC {_auc(rf)}; logistic-regression baseline ROC-AUC {_auc(m['logreg_embeddings'])}")
    print(f"measured: {usd_text(res.usage.usd)}, {res.usage.wall_s:,.0f} s wall; files in {res.out_dir}")
    return 0


def _auc(metrics: dict) -> str:
    return "n/a" if metrics.get("roc_auc") is None else f"{metrics['roc_auc']:.3f}"
