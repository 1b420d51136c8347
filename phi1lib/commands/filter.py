"""`phi1 filter`: run the filtering stage (annotate, embed, classify, threshold) and print what it kept;
`phi1 filter score`: score your own code with a run's trained filter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import filtering
from ..embed import POOLINGS
from ..errors import DataError
from ..filtering.annotate import HEURISTIC
from ..filtering.classifier import CLASSIFIERS, load_classifier
from ..filtering.corpus import GRANULARITIES
from ..filtering.view import VIEWS
from ..jsonl import read_records
from ..runs import RunDir
from ..stage import parse_assignments
from ..budget.ledger import usd_text
from . import _common as C

FLAGS = {"corpus_samples": "--limit", "corpus": "--corpus", "granularity": "--granularity",
         "annotate_samples": "--annotate", "annotator": "--annotator", "base_url": "--base-url",
         "embedder": "--embedder", "pooling": "--pooling", "max_length": "--max-length", "device": "--device",
         "threshold": "--threshold", "keep_fraction": "--keep-fraction", "num_proc": "--num-proc", "seed": "--seed",
         "cap_usd": "--cap-usd", "api_key_env": "--api-key-env", "concurrency": "--concurrency", "rpm": "--rpm",
         "tpm": "--tpm", "view": "--view", "classifier": "--classifier"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "filter",
        help="stage 1: keep the textbook-quality code of a corpus",
        description="Annotate a seeded subset of a code corpus for educational value, train a classifier on "
                    "code embeddings (the paper's random forest or a logistic regression, chosen by cross-validation "
                    "on the training split), score the whole pool and keep the best. Writes OUT/filtering/"
                    "{pool,kept,dropped,labels,examples,heldout}.parquet, classifier.joblib, metrics.json and "
                    "result.json. Action: score (phi1 filter score --run DIR FILE.jsonl scores your own code).",
        epilog="examples: phi1 filter --out runs/tiny | "
               "phi1 filter --out runs/x --corpus ~/src/myproject --limit 500 --annotate 200 --keep-fraction 0.3 | "
               "phi1 filter --out runs/x --annotator MODEL --base-url http://localhost:8000/v1 --price-free | "
               "phi1 filter --preset phi1 --estimate-only | phi1 filter score --run runs/tiny mycode.jsonl",
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
    p.add_argument("--view", choices=VIEWS, help="what of each sample is embedded: head (as is), body (past its "
                                                  "licence header), outline (signatures and docstring first lines; "
                                                  "default)")
    p.add_argument("--classifier", choices=CLASSIFIERS, help="auto (best cross-validated ROC-AUC on the training "
                                                             "split; default), random_forest or logreg")
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
    sub = p.add_subparsers(dest="filter_command", metavar="ACTION")
    s = sub.add_parser(
        "score", help="score your own code with a run's trained filter",
        description="Read FILE (JSONL, one record per line with a 'text' field) and print one JSON object per record, "
                    "in order: the record's other fields and its 'score', the trained filter's probability that the "
                    "code is educational (higher = more educational; the run's kept threshold is in "
                    "RUN/filtering/result.json). The text is embedded as the filter was trained (same embedder, "
                    "view and length).",
        epilog="examples: phi1 filter score --run runs/tiny mycode.jsonl | "
               "phi1 filter score --run runs/tiny mycode.jsonl > scores.jsonl")
    s.add_argument("file", metavar="FILE.jsonl", help="records with a 'text' field (other fields are echoed)")
    s.add_argument("--run", required=True, metavar="DIR", help="a run folder whose filtering stage has finished")
    s.add_argument("--device", dest="score_device", default="cpu", metavar="DEV",
                   help="torch device for the embedder (default: cpu)")
    s.set_defaults(func=run_score)
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
    rf = m[m.get("chosen", "random_forest")]
    held = m.get("heldout_snippets") or {}
    print(f"annotator: {res.annotation['annotator']}; {res.annotation['labelled']:,} of "
          f"{res.annotation['requested']:,} samples labelled, {c['positives']:,} positive")
    if res.stand_in:
        print(f"stand-in: {res.stand_in}")
    print(f"kept {c['kept_samples']:,} of {c['pool_samples']:,} samples, {c['kept_tokens']:,} of {c['pool_tokens']:,} "
          f"tokens: {res.threshold_rule}")
    print(f"classifier: {m.get('chosen', 'random_forest')} ({m.get('selection', 'configured')})")
    print(f"held-out split: precision {rf['precision']:.3f} recall {rf['recall']:.3f} f1 {rf['f1']:.3f} "
          f"ROC-AUC {_auc(rf)}; random forest ROC-AUC {_auc(m['random_forest'])}, logistic regression ROC-AUC "
          f"{_auc(m['logreg_embeddings'])}, majority class {_auc(m['majority_class'])}")
    if held:
        aucs = held["roc_auc"]
        print(f"hand-written snippets ({held['high']} high, {held['low']} low, never trained on): filter ROC-AUC "
              f"{aucs['filter']:.3f}, rubric (the labeller) {aucs['rubric']:.3f}")
    print(f"measured: {usd_text(res.usage.usd)}, {res.usage.wall_s:,.0f} s wall; files in {res.out_dir}")
    return 0


def _auc(metrics: dict) -> str:
    return "n/a" if metrics.get("roc_auc") is None else f"{metrics['roc_auc']:.3f}"


def _records_to_score(path: Path) -> list[dict]:
    hint = "give a JSONL file with one {\"text\": \"...\"} object per line"
    records = read_records(path, ["text"], "records to score", hint)
    for i, rec in enumerate(records, 1):
        if not isinstance(rec["text"], str):
            raise DataError(f"{path}: record {i} has a 'text' that is not a string; {hint}")
    if not records:
        raise DataError(f"{path}: no records to score; {hint}")
    return records


def run_score(args: argparse.Namespace) -> int:
    """Score FILE's texts with RUN's classifier (filtering.score_pool: the stage's own scoring path)."""
    run_dir = RunDir(Path(args.run).expanduser())
    clf_path = run_dir.path(filtering.STAGE, "classifier.joblib")
    if not clf_path.is_file():
        raise DataError(f"{run_dir.root}: no trained filter ({clf_path} not found); train one first: "
                        f"phi1 filter --out {run_dir.root}")
    records = _records_to_score(Path(args.file).expanduser())
    _, meta = load_classifier(clf_path)
    settings = dict(model=meta["embedder"], pooling=meta["pooling"], max_length=meta["max_length"],
                    device=args.score_device)
    scores = filtering.score_pool([r["text"] for r in records], settings, clf_path, progress=False)
    for rec, score in zip(records, scores):
        print(json.dumps({**{k: v for k, v in rec.items() if k != "text"}, "score": round(float(score), 6)},
                         ensure_ascii=False))
    return 0
