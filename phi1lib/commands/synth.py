"""`phi1 synth textbooks|exercises`: generate synthetic records (offline stand-in or any OpenAI-compatible LLM)."""

from __future__ import annotations

import argparse
import json

KIND_ARGS = {"textbooks": "textbook", "exercises": "exercise", "all": None}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="stage 2: synthetic textbooks and exercises (estimate, generate, check, deduplicate)",
        description="Generate synthetic textbook sections or exercises through the LLM layer. Offline the "
                    "provider is the extractive STAND-IN (records built from stage 1's filtered code, not an LLM).",
        epilog="examples: phi1 synth exercises --preset tiny --out runs/tiny/synthesis | "
               "phi1 synth textbooks --provider openai --model gpt-3.5-turbo --n 100 --cap-usd 1 --out synth",
    )
    p.add_argument("kind", choices=sorted(KIND_ARGS), help="what to generate")
    p.add_argument("--preset", default="tiny", help="preset the sizes and defaults come from (default: tiny)")
    p.add_argument("--out", metavar="DIR", help="stage folder (default: $PHI1_RUN_DIR/synthesis)")
    p.add_argument("--provider", choices=["extractive", "openai"], help="extractive (offline stand-in) or openai")
    p.add_argument("--model", help="model name for --provider openai (priced from the price books)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (the key itself is never stored)")
    p.add_argument("--n", type=int, metavar="N", help="number of prompts (records requested) of this kind")
    p.add_argument("--seed", type=int, default=0, help="prompt draw seed (default 0)")
    p.add_argument("--cap-usd", type=float, metavar="USD", help="stop before spend would cross this many dollars")
    p.add_argument("--source", metavar="PARQUET", help="stand-in input (default: the run's filtering/kept.parquet)")
    p.add_argument("--no-sandbox", action="store_true", help="parse-check exercises only (no doctest runs)")
    p.add_argument("--estimate-only", action="store_true", help="print the cost estimate and stop")
    p.add_argument("--force", action="store_true", help="redo even if the folder holds a finished result")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    from ..errors import ConfigError
    from ..synthesis.stage import KINDS, SynthesisConfig

    kind = KIND_ARGS[args.kind]
    kw: dict = {"kinds": (kind,) if kind else KINDS, "seed": args.seed, "sandbox": not args.no_sandbox,
                "api_key_env": args.api_key_env}
    if args.provider:
        kw["provider"] = args.provider
        if args.provider == "extractive":
            kw["model"] = "extractive"
    if args.model:
        kw["model"] = args.model
        kw.setdefault("provider", "openai")
    if kw.get("provider") == "openai" and "model" not in kw:
        raise ConfigError("--provider openai needs --model NAME (e.g. gpt-3.5-turbo, or your vLLM model)")
    if args.base_url:
        kw["base_url"] = args.base_url
    if args.cap_usd is not None:
        kw["cap_usd"] = args.cap_usd
    if args.source:
        kw["source"] = args.source
    if args.n is not None:
        if args.n < 0:
            raise ConfigError(f"--n must be >= 0, got {args.n}")
        for k in kw["kinds"]:
            kw["n_textbooks" if k == "textbook" else "n_exercises"] = args.n
    return SynthesisConfig.for_preset(args.preset, **kw)


def run(args: argparse.Namespace) -> int:
    from ..synthesis.stage import estimate_cost, run_synthesis

    config = config_from_args(args)
    est = estimate_cost(config)
    who = "extractive STAND-IN (not an LLM)" if config.is_stand_in else config.model
    print(f"synthesis estimate ({who}): {est.tokens:,.0f} tokens, ${est.cost_usd:,.4f}")
    if args.estimate_only:
        return 0
    res = run_synthesis(config, args.out, force=args.force)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, default=str))
        return 0
    for kind in config.kinds:
        c = res.counts[kind]
        print(f"{kind}s: {c['accepted']} accepted of {c['requested']} requested "
              f"({c['failed_checks'] + c['failed_sandbox']} failed checks, {c['duplicates']} duplicates, "
              f"{c['llm_errors']} LLM errors, {c['no_source']} without stand-in source) -> {res.files[kind]}")
    print(f"checks: {res.checked}; rejected records with reasons: {res.rejected_path}")
    print(f"measured spend: ${res.measured_usd:,.4f} ({res.usage.get('cached', 0)} answers from the cache)")
    return 0
