"""LLM layer benchmark against the local OpenAI-compatible server: throughput vs concurrency, RPM/concurrency
saturation (reached, never exceeded), and the overhead of a cached request.

    .venv/bin/python benchmarks/bench_llm.py [--latency 0.05] [--quick]

The server runs in its own process (tests/llm_server.py), so its threads do not share our GIL.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phi1lib.llm import LLMClient, OpenAIProvider, Request  # noqa: E402

KEY = "sk-bench-local"


class Probe:
    """Wraps provider.call to record send times and the number of requests in flight."""

    def __init__(self, provider):
        self.starts: list[float] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._call = provider.call
        provider.call = self.call

    def call(self, request):
        with self._lock:
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._call(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def max_in_window(self, window: float) -> int:
        s = sorted(self.starts)
        best, j = 0, 0
        for i in range(len(s)):
            while s[i] - s[j] >= window:
                j += 1
            best = max(best, i - j + 1)
        return best


def client(url, store, prices, **kw):
    provider = OpenAIProvider("test-model", base_url=url, api_key_env="PHI1_BENCH_KEY")
    c = LLMClient(provider, store=store, prices=prices, progress=False, **kw)
    return c, Probe(provider)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per answer")
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    args = ap.parse_args()
    os.environ["PHI1_BENCH_KEY"] = KEY
    os.environ.setdefault("PHI1_OFFLINE", "1")
    from phi1lib.budget import load_prices

    prices = load_prices().with_free("test-model")
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency", str(args.latency),
                               "--key", KEY], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    try:
        per = 4 if args.quick else 8
        print(f"server latency {args.latency * 1000:.0f} ms per answer; ideal throughput = concurrency / latency\n")
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'ideal':>8} {'measured/ideal':>15} {'max in flight':>14} {'client CPU ms/req':>18}")
        for conc in (1, 2, 4, 8, 16, 32):
            n = per * conc
            c, probe = client(url, tmp / f"c{conc}.sqlite", prices, concurrency=conc)
            t0, cpu0 = time.perf_counter(), time.process_time()
            res = c.generate([Request(prompt=f"conc {conc} #{i}", max_tokens=16) for i in range(n)])
            dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert all(r.ok for r in res)
            ideal = conc / args.latency
            print(f"{conc:>11} {n:>8} {n / dt:>8.1f} {ideal:>8.1f} {n / dt / ideal:>15.2f} {probe.max_in_flight:>14} {cpu / n * 1e3:>18.1f}")
        print("(once CPU ms/req x req/s nears the cores available, the client itself is the limit)")

        rpm = 1200.0  # 20 requests/s, far below what concurrency 32 could do
        n = 60 if args.quick else 160
        c, probe = client(url, tmp / "rpm.sqlite", prices, concurrency=32, rpm=rpm, burst_s=1.0)
        t0 = time.perf_counter()
        c.generate([Request(prompt=f"rpm #{i}", max_tokens=16) for i in range(n)])
        dt = time.perf_counter() - t0
        cap = c.throttle.rpm.capacity
        rate = rpm / 60
        steady = (n - cap) / (probe.starts[-1] - probe.starts[0]) if n > cap else float("nan")
        print(f"\nRPM limit {rpm:.0f}/min = {rate:.0f}/s, bucket {cap:.0f}: {n} requests in {dt:.2f} s")
        print(f"  steady rate after the initial bucket: {steady:.2f}/s = {steady / rate:.2f} x the limit")
        worst = probe.max_in_window(1.0)
        print(f"  most starts in any 1 s window: {worst} (allowed: bucket + rate x 1 s = {cap + rate:.0f})")
        print(f"  max in flight {probe.max_in_flight} of 32 allowed")

        # Cached requests: a full generate() over answers already in the store.
        n = 1000 if args.quick else 5000
        reqs = [Request(prompt=f"cache #{i}", max_tokens=16) for i in range(n)]
        c, _ = client(url, tmp / "cache.sqlite", prices, concurrency=32)
        t0 = time.perf_counter()
        c.generate(reqs)
        uncached = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        got = c.generate(reqs)
        cached = (time.perf_counter() - t0) / n
        assert all(r.cached for r in got)
        table = {r.key(c.provider.cache_id): r for r in reqs}
        t0 = time.perf_counter()
        for r in reqs:
            table[r.key(c.provider.cache_id)]
        lookup = (time.perf_counter() - t0) / n
        print(f"\ncached request: {cached * 1e6:.0f} us each ({n} in one generate call)")
        print(f"  vs uncached at concurrency 32: {uncached * 1e6:.0f} us each -> cached is {uncached / cached:.0f}x faster")
        print(f"  vs hashing the key + a dict lookup: {lookup * 1e6:.1f} us -> store overhead {cached / lookup:.1f}x")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
