"""`phi1 eval`: generate completions for HumanEval/MBPP, and score samples in the sandbox (pass@k)."""

from __future__ import annotations

import argparse
import json


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k {text!r}: give comma-separated integers, e.g. 1,10,100")
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k {text!r}: each k must be >= 1")
    return ks


def _common(p):
    p.add_argument("--benchmark", default="humaneval", choices=["humaneval", "mbpp", "jsonl"],
                   help="problem set (default humaneval, shipped offline; mbpp needs the hub or --problems)")
    p.add_argument("--problems", metavar="FILE", help="problem file: HumanEval-format JSONL, or MBPP's original records")
    p.add_argument("--mbpp-style", default="docstring", choices=["docstring", "3shot"],
                   help="MBPP prompt format: docstring (signature + text + one test) or 3shot (original paper)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="generate completions and score them in the sandbox (pass@k)",
                              description="Evaluation: HumanEval / MBPP generation and sandboxed scoring.")
    sub = p.add_subparsers(dest="eval_command", metavar="ACTION")

    g = sub.add_parser("generate", help="write task_id/completion samples from a model",
                       epilog="example: phi1 eval generate --model runs/tiny/finetune/final --out samples.jsonl")
    g.add_argument("--model", required=True, metavar="DIR|openai:NAME",
                   help="a causal-LM folder (save_pretrained) or openai:<model> through the LLM layer")
    g.add_argument("--out", required=True, metavar="FILE", help="samples JSONL to write (resumes if it exists)")
    _common(g)
    g.add_argument("--n", type=int, default=1, help="samples per problem (default 1)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); paper pass@k: 0.8")
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--limit", type=int, help="first N problems only")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", help="torch device (default: cuda if available)")
    g.add_argument("--threads", type=int, help="CPU torch threads (default: torch's; 1 is fastest for tiny models)")
    g.add_argument("--cap-usd", type=float, help="budget cap for API models (USD)")
    g.set_defaults(func=run_generate)

    s = sub.add_parser("score", help="score a samples file (drop-in for evaluate_functional_correctness)",
                       epilog="writes <samples>_results.jsonl; prints {\"pass@1\": ...}")
    s.add_argument("--samples", required=True, metavar="FILE", help="JSONL with task_id and completion per line")
    _common(s)
    s.add_argument("--k", type=_ks, default=(1, 10, 100), help="comma-separated ks (default 1,10,100)")
    s.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3)")
    s.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per program (default 1024)")
    s.add_argument("--workers", type=int, help="parallel sandbox workers (default: CPU count, at most 8)")
    s.add_argument("--json", action="store_true", help="print only the pass@k JSON")
    s.set_defaults(func=run_score)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def run_generate(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..evaluation.generate import generate_api, generate_local
    from ..jsonl import append_jsonl, iter_jsonl
    from ..problems import load_benchmark

    if args.n < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        raise ConfigError("--n, --max-new-tokens and --batch-size must be >= 1")
    if args.temperature == 0 and args.n > 1:
        raise ConfigError(f"--n {args.n} with --temperature 0 gives identical samples; pass --temperature 0.8")
    problems = load_benchmark(args.benchmark, args.problems, args.mbpp_style)
    problems = problems[: args.limit] if args.limit else problems
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["task_id"], r.get("completion_id", 0)) for r in iter_jsonl(out)} if out.exists() else set()
    if args.model.startswith("openai:"):
        from ..llm import LLMClient, OpenAIProvider

        client = LLMClient(OpenAIProvider(args.model.split(":", 1)[1]), store=str(out) + ".llm.sqlite",
                           cap_usd=args.cap_usd)
        for r in generate_api(problems, client, n=args.n, temperature=args.temperature, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens, skip=done):
            append_jsonl(out, r)
    else:
        generate_local(problems, args.model, n=args.n, temperature=args.temperature, top_p=args.top_p,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device,
                       seed=args.seed, skip=done, threads=args.threads, on_batch=lambda recs: [append_jsonl(out, r) for r in recs])
    print(f"wrote {out}")
    return 0


def run_score(args) -> int:
    from ..evaluation.stage import score_file

    result = score_file(args.samples, benchmark=args.benchmark, problems_file=args.problems,
                        mbpp_style=args.mbpp_style, ks=args.k, timeout_s=args.timeout, memory_mb=args.memory_mb,
                        workers=args.workers, progress=not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"results: {args.samples}_results.jsonl")
        print(json.dumps(result, indent=2))
    return 0
