"""LLM bookkeeping at scale: the per-request overhead of the store and the spend ledger stays flat as the store
grows from 10k to 100k to 1M stored answers (paper-scale synthesis is ~1.5M requests).

    .venv/bin/python benchmarks/bench_llm_store.py [--sizes 10000,100000,1000000] [--requests 2000]

For each size a fresh store is filled with that many answered (and ledgered) rows, then one LLMClient
generates `--requests` new answers from a zero-latency priced stand-in, so everything measured is
bookkeeping: the sent mark before each request, the answer's commit, the budget reservation, and the
ledger flush every 50 answers (indexed: it reads only the rows stored since the last flush). Printed: the
mean per-request overhead and the median flush, each as a ratio to the 10k baseline of the same run
(the goal: flat, where the old full-table flush grew linearly: 10x at 100k and 100x at 1M).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phi1lib import budget  # noqa: E402
from phi1lib.llm import Completion, FunctionProvider, LLMClient, Request  # noqa: E402
from phi1lib.llm.store import RESULT_COLUMNS, ResultStore  # noqa: E402

ANSWER = "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n" * 4


class PricedStandIn(FunctionProvider):
    """A zero-latency provider priced like gpt-3.5-turbo, so every answer has spend to account."""

    price_model = "gpt-3.5-turbo"


def fill(path: Path, n: int) -> None:
    """n answered, already-ledgered rows, written in bulk (what a long run leaves behind)."""
    ResultStore(path).close()
    db = sqlite3.connect(path)
    cols = ", ".join(RESULT_COLUMNS) + ", ledgered"
    marks = ", ".join("?" * (len(RESULT_COLUMNS) + 1))
    req = json.dumps({"messages": [{"role": "user", "content": "write a function"}], "max_tokens": 512})
    now = time.time()
    rows = ((f"{i:064x}", "function:bench", "bench", 1, ANSWER, None, 120, 80, 0.00018, "stop", 1, 0, now, req, 1)
            for i in range(n))
    with db:
        db.executemany(f"INSERT INTO results ({cols}) VALUES ({marks})", rows)
    db.close()


def measure(n_stored: int, n_requests: int, tmp: Path) -> dict[str, float]:
    path = tmp / f"store-{n_stored}.sqlite"
    t0 = time.perf_counter()
    fill(path, n_stored)
    fill_s = time.perf_counter() - t0
    provider = PricedStandIn(lambda r: Completion(ANSWER, 120, 80, "stop"), name="bench")
    ledger = budget.Ledger(tmp / f"ledger-{n_stored}.jsonl", cap_usd=1e6)
    client = LLMClient(provider, store=path, ledger=ledger, concurrency=8, progress=False, stage="bench")
    flushes: list[float] = []
    flush = client.guard.flush

    def timed_flush(**meta):
        t = time.perf_counter()
        flush(**meta)
        flushes.append(time.perf_counter() - t)

    client.guard.flush = timed_flush
    reqs = [Request(messages=[{"role": "user", "content": f"write function {i}"}], max_tokens=512)
            for i in range(n_requests)]
    t0 = time.perf_counter()
    results = client.generate(reqs)
    seconds = time.perf_counter() - t0
    assert all(r.ok and not r.cached for r in results)
    stats = client.store.stats()
    assert stats["ok"] == n_stored + n_requests
    return {"stored": n_stored, "fill_s": fill_s, "per_request_ms": 1000 * seconds / n_requests,
            "flush_ms": 1000 * statistics.median(flushes), "max_flush_ms": 1000 * max(flushes), "flushes": len(flushes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="stored answers before each measurement")
    ap.add_argument("--requests", type=int, default=2000, help="new requests measured at each size")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        rows = [measure(n, args.requests, Path(d)) for n in sizes]
    base = rows[0]
    print(f"{'stored answers':>15} {'fill s':>8} {'per request':>12} {'ratio':>7} {'median flush':>13} {'ratio':>7} "
          f"{'max flush':>10}")
    for r in rows:
        print(f"{r['stored']:>15,} {r['fill_s']:>8.1f} {r['per_request_ms']:>9.3f} ms "
              f"{r['per_request_ms'] / base['per_request_ms']:>6.2f}x {r['flush_ms']:>10.2f} ms "
              f"{r['flush_ms'] / base['flush_ms']:>6.2f}x {r['max_flush_ms']:>7.2f} ms")
    print(f"(ratios vs the {base['stored']:,}-answer baseline of this run; {args.requests:,} requests each, "
          f"{rows[0]['flushes']} ledger flushes)")


if __name__ == "__main__":
    main()
