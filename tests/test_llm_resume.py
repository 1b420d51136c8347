"""Kill -9 a generating client mid-run, rerun it, and check against the server's log that nothing was paid twice or lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import ScriptedLLMServer  # noqa: E402

import pytest  # noqa: E402

from phi1lib.budget import Ledger  # noqa: E402

N = 40
CONCURRENCY = 4

CLIENT = """
import sys
from phi1lib.budget import load_prices
from phi1lib.budget import Ledger
from phi1lib.llm import LLMClient, OpenAIProvider, Request
from phi1lib.budget.pricebook import LLMPrice

url, store, ledger, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prices = load_prices()
prices.llms["test-model"] = LLMPrice("test-model", 1.0, 2.0, "test fixture", None)
client = LLMClient(OpenAIProvider("test-model", base_url=url, api_key_env="PHI1_TEST_LLM_KEY"), store=store,
                   ledger=Ledger(ledger), prices=prices, concurrency={concurrency}, progress=False, flush_every=7)
results = client.generate([Request(prompt=f"job {{i}} [[slow:0.2]]") for i in range(n)])
print("DONE", sum(r.ok for r in results), flush=True)
""".format(concurrency=CONCURRENCY)


def stored(store: Path) -> dict[str, tuple[str, str, float]]:
    """prompt -> (key, text, usd) for every answer committed to the store."""
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT key, text, usd, request FROM results WHERE ok=1").fetchall()
    finally:
        db.close()
    return {json.loads(req)["prompt"]: (key, text, usd) for key, text, usd, req in rows}


def test_sigkill_mid_run_loses_nothing_stored_and_pays_nothing_twice(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    store, ledger = tmp_path / "llm.sqlite", tmp_path / "ledger.jsonl"
    with ScriptedLLMServer() as server:
        env = {**os.environ, "PHI1_TEST_LLM_KEY": server.api_key, "PHI1_OFFLINE": "1"}
        cmd = [sys.executable, str(script), server.base_url, str(store), str(ledger), str(N)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(server.paid()) < 12:  # kill once a good part of the run is done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "client made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        before = stored(store)
        while server.in_flight:  # the server finishes (and bills) what the dead client had sent
            time.sleep(0.01)
        paid_at_kill = Counter(server.paid())
        assert 0 < len(before) < N

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert f"DONE {N}" in rerun.stdout
        paid = Counter(server.paid())

    after = stored(store)
    assert len(after) == N  # everything answered in the end
    for prompt, row in before.items():
        assert paid[prompt] == 1, f"{prompt!r} was stored before the kill but paid {paid[prompt]} times"
        assert after[prompt] == row, "a result stored before the kill changed or was lost"
    # Only requests in flight at the kill (paid by the server, not yet committed) are paid again.
    repaid = [p for p, c in paid.items() if c > 1]
    assert len(repaid) <= CONCURRENCY
    assert all(p in paid_at_kill and p not in before for p in repaid)
    # The ledger never under-counts the provider's bill: requests in flight at the kill (billed by
    # the server, never stored) were marked as sent before they left, and the rerun charged them
    # at their worst-case estimate.
    def billed(prompt):  # the server's usage: words, at test-model's $1 / $2 per 1K tokens
        return (len(prompt.split()) * 1.0 + len(("answer to: " + prompt).split()) * 2.0) / 1000.0

    store_usd = sum(usd for _, _, usd in after.values())
    assert store_usd == pytest.approx(sum(billed(p) for p in after))
    server_bill = sum(billed(p) * c for p, c in paid.items())
    spent = Ledger(ledger).spent_usd
    assert spent >= server_bill - 1e-9, f"ledger ${spent} under-counts the server's bill ${server_bill}"
    charged = [r for r in Ledger(ledger).records if r.get("kind") == "in-flight at a kill"]
    in_flight = sum(r["requests"] for r in charged)
    assert len(repaid) <= in_flight <= CONCURRENCY
    # Over-counts only by estimate minus actual of those few (and a kill between a ledger line and its confirmation).
    worst = max(r["usd"] / r["requests"] for r in charged) if charged else 0.0
    assert spent <= store_usd + in_flight * worst + 1e-9
