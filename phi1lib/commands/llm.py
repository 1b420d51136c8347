"""`phi1 llm`: inspect an LLM result store, price a JSONL of requests, poll Batch API jobs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import budget
from ..errors import ConfigError, DataError
from ..jsonl import iter_jsonl
from ..llm import LLMClient, OpenAIProvider, Request
from ..llm.batch import BatchRunner
from ..llm.store import ResultStore
from ..paths import cache_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("llm", help="LLM layer tools: store stats, dry-run pricing, Batch API status",
                              description="Tools around phi1lib.llm's durable result store.")
    sub = p.add_subparsers(dest="llm_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser("stats", help="answers, failures, tokens and dollars held in a result store",
                       epilog="example: phi1 llm stats runs/tiny/synthesis/llm_store.sqlite")
    s.add_argument("store", help="path of the SQLite result store (e.g. runs/tiny/synthesis/llm.sqlite)")
    s.set_defaults(func=run_stats)

    d = sub.add_parser("dry-run", help="price a JSONL of requests without calling anything",
                       epilog='each line: {"prompt": "..."} or {"messages": [...]}, optional max_tokens, '
                              'temperature, top_p, stop, n_index. example: phi1 llm dry-run requests.jsonl '
                              '--model gpt-3.5-turbo --batch')
    d.add_argument("requests", help="JSONL file of requests")
    d.add_argument("--model", required=True, help="model name as priced in costs/prices (e.g. gpt-3.5-turbo)")
    d.add_argument("--store", help="result store: requests already answered there are not priced")
    d.add_argument("--max-tokens", type=int, default=512, help="default max_tokens for lines without one")
    d.add_argument("--expected-output", type=float, help="expected completion tokens per request (default: max_tokens)")
    d.add_argument("--batch", action="store_true", help="price with the Batch API discount")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--prices", action="append", default=[], metavar="DIR", help="extra folder of price books (*.toml)")
    d.set_defaults(func=run_dry_run)

    b = sub.add_parser("batch-status", help="poll the open Batch API jobs of a store once and merge finished ones",
                       epilog="example: phi1 llm batch-status runs/x/synthesis/llm_store.sqlite --model gpt-3.5-turbo")
    b.add_argument("store", help="path of the SQLite result store")
    b.add_argument("--model", required=True, help="model the batches were submitted for")
    b.add_argument("--base-url", help="OpenAI-compatible base URL (default: OpenAI)")
    b.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    b.add_argument("--prices", action="append", default=[], metavar="DIR", help="extra folder of price books (*.toml)")
    b.add_argument("--price-free", action="store_true", help="price the model at $0 (a self-hosted server)")
    b.set_defaults(func=run_batch_status)
    return p


class _Offline:
    """A provider that prices and counts like `model` but cannot send (dry runs need no key)."""

    kind = "openai"
    batch_size = None

    def __init__(self, model: str):
        self.model = self.price_model = model
        self.cache_id = f"openai:{model}"

    def call(self, request):  # pragma: no cover - dry runs never call
        raise RuntimeError("dry run: no calls")


def _read_requests(path: str, max_tokens: int):
    fields = ("messages", "prompt", "max_tokens", "temperature", "top_p", "stop", "n_index")
    out = []
    for i, row in enumerate(iter_jsonl(path), 1):
        kw = {k: row[k] for k in fields if k in row}
        kw.setdefault("max_tokens", max_tokens)
        try:
            out.append(Request(**kw))
        except ConfigError as exc:
            raise DataError(f"{path}: request {i}: {exc}") from None
    if not out:
        raise DataError(f"{path}: no requests in the file; expected one JSON object per line, e.g. "
                        '{"prompt": "..."} or {"messages": [...]}')
    return out


def run_stats(args) -> int:
    if not Path(args.store).exists():
        raise DataError(f"{args.store}: no such result store")
    stats = ResultStore(args.store).stats()
    print(json.dumps(stats, indent=2))
    return 0


def run_dry_run(args) -> int:
    store = args.store or (cache_dir("llm") / "dry-run.sqlite")
    client = LLMClient(_Offline(args.model), store=store, progress=False, stage="dry-run",
                       prices=budget.load_prices(args.prices))
    est = client.dry_run(_read_requests(args.requests, args.max_tokens), expected_output_tokens=args.expected_output,
                         batch=args.batch)
    if args.json:
        print(json.dumps(est.to_dict(), indent=2, default=str))
        return 0
    for line in est.lines:
        print(f"{line.item:<22} {line.detail:<70} ${line.cost_usd:,.4f}")
    print(f"{'total':<22} {est.tokens:,.0f} tokens{'':<52} ${est.cost_usd:,.4f}")
    return 0


def run_batch_status(args) -> int:
    prices = budget.load_prices(args.prices)
    if args.price_free:
        prices = prices.with_free(args.model, source="--price-free: self-hosted, priced at $0")
    client = LLMClient(OpenAIProvider(args.model, base_url=args.base_url, api_key_env=args.api_key_env),
                       store=args.store, progress=False, prices=prices)
    statuses = BatchRunner(client).poll()
    for bid, status in statuses.items():
        print(f"{bid}\t{status}")
    if not statuses:
        print("no open batches in", args.store)
    print(json.dumps(client.store.stats()))
    return 0
