"""`phi1 synth textbooks|exercises|all`: synthetic records (offline stand-in or any OpenAI-compatible LLM)."""

from __future__ import annotations

import argparse

from .. import synthesis
from ..errors import ConfigError
from ..presets import get_preset
from ..synthesis.extractive import STAND_IN_NAME
from ..budget.ledger import usd_text
from . import _common as C

KIND_ARGS = {"textbooks": ("textbook",), "exercises": ("exercise",), "all": synthesis.KINDS}
COUNT_FIELDS = {"textbook": "n_textbooks", "exercise": "n_exercises"}
FLAGS = {"provider": "--provider", "model": "--model", "base_url": "--base-url", "api_key_env": "--api-key-env",
         "seed": "--seed", "source": "--source", "cap_usd": "--cap-usd", "concurrency": "--concurrency",
         "rpm": "--rpm", "tpm": "--tpm"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="stage 2: synthetic textbooks and exercises (estimate, generate, check, deduplicate)",
        description="Generate synthetic textbook sections or exercises through the LLM layer, check and "
                    "deduplicate them, and write OUT/synthesis/{textbooks,exercises,rejected}.jsonl. Offline the "
                    "provider is the extractive STAND-IN (records retrieved by topic from stage 1's filtered code, "
                    "OUT/filtering/kept.parquet; not an LLM). Each kind is stored on its own: generating "
                    "textbooks, then exercises, into one run folder keeps both.",
        epilog="examples: phi1 synth all --out runs/tiny | "
               "phi1 synth exercises --out runs/tiny --count 50 --no-sandbox | "
               "phi1 synth textbooks --preset phi1 --provider openai --model gpt-3.5-turbo --count 100 "
               "--cap-usd 1 --out runs/x | phi1 synth all --preset phi1 --provider openai --model MODEL --base-url "
               "http://localhost:8000/v1 --price-free --concurrency 256 --shard 0/4 (then the same without --shard "
               "merges) | phi1 synth exercises --preset phi1 --estimate-only",
    )
    p.add_argument("kind", choices=sorted(KIND_ARGS), help="what to generate: textbooks, exercises, or all (both)")
    p.add_argument("--count", type=int, metavar="N",
                   help="records requested (prompts) of each chosen kind, e.g. --count 100 "
                        "(default: the preset's data plan; tiny: 200 textbooks, 488 exercises)")
    p.add_argument("--provider", choices=synthesis.PROVIDERS,
                   help="extractive (offline stand-in) or openai (any OpenAI-compatible endpoint), e.g. --provider "
                        "openai (default: the preset's)")
    p.add_argument("--model", metavar="NAME",
                   help="model for --provider openai, priced from the price books, e.g. --model gpt-3.5-turbo")
    p.add_argument("--seed", type=int, metavar="INT", help="prompt draw seed, e.g. --seed 1 (default 0)")
    p.add_argument("--source", metavar="PARQUET",
                   help="the stand-in's input, a parquet with id and text columns, e.g. --source kept.parquet "
                        "(default: OUT/filtering/kept.parquet)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="parse-check exercises only, without running their doctests in the sandbox")
    p.add_argument("--shard", metavar="I/N",
                   help="answer only shard I of N (every N-th prompt) into OUT/synthesis/shards/, e.g. --shard 0/4 in "
                        "four processes sharing OUT; then run the same command without --shard to merge them "
                        "(nothing is paid twice; one --cap-usd for the whole job)")
    C.add_llm_args(p)
    C.add_stage_args(p, "SynthesisConfig")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> synthesis.SynthesisConfig:
    kinds = KIND_ARGS[args.kind]
    extra: dict = {"kinds": kinds}
    flags = dict(FLAGS)
    if args.count is not None:
        for kind in kinds:
            flags[COUNT_FIELDS[kind]] = "--count"  # read from args.count; a bad value names --count
    if args.no_sandbox:
        extra["sandbox"] = False
    if args.provider == "extractive" and args.model is None:
        extra["model"] = STAND_IN_NAME
    if args.model and args.provider is None:
        extra["provider"] = "openai"
    if args.provider == "openai" and not args.model and get_preset(args.preset).synthesizer == STAND_IN_NAME:
        raise ConfigError("--provider openai needs --model NAME (e.g. gpt-3.5-turbo, or your vLLM model)")
    return C.stage_config(synthesis.SynthesisConfig, args, flags, extra, nullable=("api_key_env",))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    shard = synthesis.parse_shard(args.shard) if args.shard is not None else None
    prices = C.llm_prices(args, None if config.is_stand_in else config.model)
    if not args.json:
        who = "extractive STAND-IN (not an LLM)" if config.is_stand_in else config.model
        print(f"[{synthesis.STAGE}] synthesizer: {who}")
    if shard is not None and not args.estimate_only:
        where = C.run_dir(args)
        done = synthesis.run_shard(config, where, shard, ledger=C.ledger(args, where), prices=prices,
                                   progress=not args.json)
        if args.json:
            C.print_json(done)
        else:
            print(f"shard {done['shard']}: all {done['requests']} requests answered into {done['store']} "
                  f"({usd_text(done['usd'])} spent now); when every shard is done, run the same command without "
                  "--shard to merge them (nothing is paid again)")
        return 0
    res = C.run_stage(args, synthesis, config, prices=prices)
    if res is None:
        return 0
    for kind in config.kinds:
        c = res.counts[kind]
        print(f"{kind}s: {c['accepted']} accepted of {c['requested']} requested "
              f"({c['failed_checks'] + c['failed_sandbox']} failed checks, {c['duplicates']} duplicates, "
              f"{c['llm_errors']} LLM errors, {c['no_source']} without stand-in source) -> {res.files[kind]}")
    print(f"checks: {res.checked}; rejected records with reasons: {res.rejected_path}")
    if res.reused:
        print("finished earlier with the same settings: nothing sent, nothing spent now (--force redoes it from "
              "the stored answers)")
    else:
        print(f"spent now: {usd_text(res.usage.usd)} ({res.metrics.get('cached', 0)} answers from the store, "
              f"not paid again)")
    return 0
