"""LLM layer against a real local HTTP server: order, usage, caching, retries, limits, budget, redaction, dry run."""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import KEY_ENV, priced_book, serve  # noqa: E402

from phi1lib import budget  # noqa: E402
from phi1lib.errors import BudgetExceeded, ConfigError, DataError  # noqa: E402
from phi1lib.budget import Ledger  # noqa: E402
from phi1lib.llm import Backoff, FunctionProvider, LLMClient, OpenAIProvider, Request  # noqa: E402
from phi1lib.llm.limits import TokenBucket, parse_retry_after  # noqa: E402
from phi1lib.llm.store import ResultStore  # noqa: E402
from phi1lib.llm.tokens import TokenCounter  # noqa: E402

FAST = Backoff(max_attempts=4, base_s=0.02, max_s=0.1, seed=0)


@pytest.fixture
def server(monkeypatch):
    yield from serve(monkeypatch)


@pytest.fixture(scope="module")
def prices():
    return priced_book()


def make_client(server, tmp_path, prices, **kw):
    provider = OpenAIProvider("test-model", base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=kw.pop("timeout_s", 10))
    kw.setdefault("backoff", FAST)
    kw.setdefault("progress", False)
    return LLMClient(provider, store=tmp_path / "llm.sqlite", prices=prices, **kw)


def chat(text, **kw):
    return Request(messages=[{"role": "user", "content": text}], **kw)


def expected_usd(text, answer, prices):
    return budget.price_llm_usage("test-model", len(text.split()), len(answer.split()), prices)


# -- requests and keys -------------------------------------------------------------------------

def test_request_validation_names_the_field():
    with pytest.raises(ConfigError, match="exactly one of messages"):
        Request()
    with pytest.raises(ConfigError, match="exactly one of messages"):
        Request(messages=[{"role": "user", "content": "x"}], prompt="x")
    with pytest.raises(ConfigError, match="max_tokens"):
        Request(prompt="x", max_tokens=0)
    with pytest.raises(ConfigError, match=r"messages\[0\]"):
        Request(messages=[{"role": "user"}])
    with pytest.raises(ConfigError, match="temperature"):
        Request(prompt="x", temperature=3)
    assert Request(prompt="x", stop="\n").stop == ("\n",)


def test_key_depends_on_model_input_params_and_sample_but_not_url_or_meta(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k" * 10)
    a = OpenAIProvider("m1", base_url="http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    b = OpenAIProvider("m1", base_url="http://127.0.0.1:2/v1", api_key_env=KEY_ENV)
    c = OpenAIProvider("m2", base_url="http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    r = chat("hi", meta={"id": 1})
    assert r.key(a.cache_id) == r.key(b.cache_id) == chat("hi", meta={"id": 2}).key(a.cache_id)
    variants = [chat("hi", n_index=1), chat("hi", temperature=0.5), chat("hi", top_p=0.9), chat("hi", max_tokens=7),
                chat("hi", stop=["x"]), chat("ho"), Request(prompt="hi")]
    keys = {v.key(a.cache_id) for v in variants} | {r.key(c.cache_id), r.key(a.cache_id)}
    assert len(keys) == len(variants) + 2


# -- generation over HTTP -----------------------------------------------------------------------

def test_results_in_request_order_with_usage_and_prices(server, tmp_path, prices):
    # The first requests are slow, so answers arrive out of order.
    texts = [f"item {i} [[slow:0.3]]" if i < 2 else f"item {i}" for i in range(8)]
    reqs = [chat(t) if i % 2 else Request(prompt=t) for i, t in enumerate(texts)]
    client = make_client(server, tmp_path, prices, concurrency=4)
    results = client.generate(reqs)
    assert [r.text for r in results] == [f"answer to: {t}" for t in texts]
    assert all(r.ok and not r.cached and r.request is q for r, q in zip(results, reqs))
    for r, t in zip(results, texts):
        assert r.prompt_tokens == len(t.split()) and r.completion_tokens == len(r.text.split())
        assert r.usd == pytest.approx(expected_usd(t, r.text, prices))
    assert {e["path"] for e in server.log} == {"/v1/chat/completions", "/v1/completions"}
    assert client.ledger.spent_usd == pytest.approx(sum(r.usd for r in results))


def test_cache_hits_cost_nothing_and_send_nothing(server, tmp_path, prices):
    reqs = [chat(f"q{i}") for i in range(5)]
    first = make_client(server, tmp_path, prices).generate(reqs)
    n_sent = len(server.log)
    again = make_client(server, tmp_path, prices)  # a new process would build a new client
    second = again.generate(reqs + [chat("q-new")])
    assert len(server.log) == n_sent + 1  # only the new one went out
    assert [r.text for r in second[:5]] == [r.text for r in first]
    assert all(r.cached and r.usd == 0 for r in second[:5]) and not second[5].cached
    assert again.ledger.spent_usd == pytest.approx(second[5].usd)


def test_identical_requests_in_one_call_are_paid_once(server, tmp_path, prices):
    results = make_client(server, tmp_path, prices).generate([chat("same"), chat("same"), chat("same", n_index=1)])
    assert server.paid().count("same") == 2  # n_index 0 once, n_index 1 once
    assert results[0].text == results[1].text == "answer to: same"
    assert results[0].usd > 0 and results[1].usd == 0 and results[1].cached  # summing usd counts it once


def test_retry_after_is_honoured(server, tmp_path, prices):
    t0 = time.monotonic()
    [res] = make_client(server, tmp_path, prices).generate([chat("busy [[429:2:0.3]]")])
    assert res.ok and res.attempts == 3 and res.text == "answer to: busy [[429:2:0.3]]"
    tries = [e for e in server.log if "busy" in e["text"]]
    assert [e["status"] for e in tries] == [429, 429, 200]
    gaps = [b["t0"] - a["t1"] for a, b in zip(tries, tries[1:])]
    assert all(g >= 0.3 for g in gaps), gaps  # the server asked for 0.3 s; backoff alone would be <= 0.1 s
    assert time.monotonic() - t0 >= 0.6


def test_5xx_backoff_then_success_and_final_failure_is_recorded(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices, backoff=Backoff(max_attempts=3, base_s=0.02, max_s=0.05))
    ok, bad, rejected = client.generate([chat("flaky [[500:2]]"), chat("down [[500:99]]"), chat("no [[400]]")])
    assert ok.ok and ok.attempts == 3
    assert not bad.ok and bad.text == "" and "HTTP 500" in bad.error and "3 attempts" in bad.error
    assert not rejected.ok and "HTTP 400" in rejected.error and rejected.attempts == 1  # 400 is not retried
    assert sum(1 for e in server.log if "down" in e["text"]) == 3
    row = client.store.get(bad.key)
    assert row["ok"] == 0 and "HTTP 500" in row["error"]
    # A rerun tries the failure again (it was never an answer) and serves the success from the store.
    again = client.generate([chat("flaky [[500:2]]"), chat("down [[500:99]]")])
    assert again[0].cached and not again[1].ok
    assert sum(1 for e in server.log if "down" in e["text"]) == 6


def test_timeouts_are_retried_then_recorded(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices, timeout_s=0.2, backoff=Backoff(max_attempts=2, base_s=0.01, max_s=0.02))
    [res] = client.generate([chat("sleepy [[slow:0.5]]")])
    assert not res.ok and "timed out" in res.error and res.attempts == 2


def test_concurrency_cap_is_reached_not_exceeded(server, tmp_path, prices):
    make_client(server, tmp_path, prices, concurrency=3).generate([chat(f"c{i} [[slow:0.15]]") for i in range(9)])
    assert server.max_in_flight == 3


def test_rpm_limit_spaces_requests(server, tmp_path, prices):
    rate = 5.0  # per second
    client = make_client(server, tmp_path, prices, concurrency=8, rpm=rate * 60, burst_s=0.2)  # bucket holds 1
    starts, send = [], client.provider.call
    # Send times taken in the client: the server's arrival times add connection-setup jitter.
    client.provider.call = lambda r: (starts.append(time.monotonic()), send(r))[1]
    client.generate([chat(f"r{i}") for i in range(8)])
    assert len(server.paid()) == 8
    starts.sort()
    assert starts[-1] - starts[0] >= 7 / rate - 0.01
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            assert starts[j] - starts[i] >= (j - i - 1) / rate - 0.01  # at most capacity + rate*W in any window


def test_tpm_limit_counts_prompt_and_max_tokens(server, tmp_path, prices):
    reqs = [Request(prompt=f"t{i}", max_tokens=50) for i in range(4)]  # ~52 tokens reserved each
    client = make_client(server, tmp_path, prices, concurrency=4, tpm=6000, burst_s=0.5)  # 100 tok/s, bucket 50
    t0 = time.monotonic()
    client.generate(reqs)
    assert time.monotonic() - t0 >= 1.0  # 4 x >=50 tokens through a 50-token bucket at 100/s


def test_token_bucket_and_retry_after_parsing():
    now = [0.0]
    bucket = TokenBucket(2.0, 1.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    waited = [bucket.acquire() for _ in range(5)]
    assert waited[0] == 0 and now[0] == pytest.approx(2.0)  # 4 more at 2/s
    assert bucket.acquire(10) == pytest.approx(0.5)  # larger than the bucket: waits for a full one, goes negative
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None


# -- budget -------------------------------------------------------------------------------------

def test_budget_cap_stops_before_crossing(server, tmp_path, prices):
    reqs = [chat(f"spend {i} " + "word " * 20, max_tokens=40) for i in range(30)]
    ledger = Ledger(tmp_path / "ledger.jsonl", cap_usd=0.5)
    client = make_client(server, tmp_path, prices, ledger=ledger, concurrency=8)
    with pytest.raises(BudgetExceeded) as info:
        client.generate(reqs)
    exc = info.value
    msg = str(exc)
    assert "cap" in msg and "left" in msg and "stored in" in msg and "rerun the same command" in msg
    assert re.search(r"\$0\.[0-9]+ spent and \$[0-9.]+ reserved", msg), msg
    paid = sum(expected_usd(t, "answer to: " + t, prices) for t in server.paid())
    assert 0 < paid <= 0.5 and ledger.spent_usd == pytest.approx(paid)
    assert Ledger(tmp_path / "ledger.jsonl").spent_usd == pytest.approx(paid)  # on disk too
    done = [r for r in exc.results if r.ok]
    assert len(done) == len(server.paid()) < 30
    assert all("not sent" in r.error for r in exc.results if not r.ok)
    # Raising the cap finishes the job without paying again for what is stored.
    ledger.cap_usd = 100.0
    results = client.generate(reqs)
    assert all(r.ok for r in results) and len(server.paid()) == 30


def test_client_cap_without_ledger(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices, cap_usd=0.0001)
    with pytest.raises(BudgetExceeded, match=r"\$0\.0001 cap has \$0\.0001 left"):
        client.generate([chat("expensive", max_tokens=100)])
    assert server.log == []


def test_unknown_model_price_fails_before_work(server, tmp_path, prices):
    provider = OpenAIProvider("no-such-model", base_url=server.base_url, api_key_env=KEY_ENV)
    with pytest.raises(ConfigError, match="no-such-model"):
        LLMClient(provider, store=tmp_path / "s.sqlite", prices=prices)
    free = prices.with_free("no-such-model")
    [res] = LLMClient(provider, store=tmp_path / "s.sqlite", prices=free, progress=False).generate([chat("x")])
    assert res.ok and res.usd == 0


# -- keys and secrets ---------------------------------------------------------------------------

def test_missing_key_is_a_clear_error_before_any_work(monkeypatch):
    monkeypatch.delenv("PHI1_NOT_SET_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$PHI1_NOT_SET_KEY"):
        OpenAIProvider("gpt-3.5-turbo", api_key_env="PHI1_NOT_SET_KEY")
    assert OpenAIProvider("local", base_url="http://127.0.0.1:9/v1", api_key_env=None).cache_id == "openai:local"


def test_api_key_never_leaks(server, tmp_path, prices, monkeypatch, caplog):
    secret = "sk-proj-SECRET-0123456789abcdef"
    monkeypatch.setenv("PHI1_BAD_KEY", secret)
    caplog.set_level(logging.DEBUG)  # openai/httpx debug logs included
    provider = OpenAIProvider("test-model", base_url=server.base_url, api_key_env="PHI1_BAD_KEY")
    client = LLMClient(provider, store=tmp_path / "leak.sqlite", prices=prices, progress=False, backoff=FAST)
    with pytest.raises(ConfigError) as info:
        client.generate([chat("hello")])
    assert "401" in str(info.value)
    assert server.log[-1]["status"] == 401  # the server did echo the key back
    exposed = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)),
               repr(provider), str(provider), repr(client), caplog.text]
    for r in info.value.results:
        exposed += [repr(r), str(r.error)]
    for path in tmp_path.iterdir():
        exposed.append(path.read_bytes().decode("latin-1"))
    for text in exposed:
        assert secret not in text
    # The run stopped at the first rejection instead of hammering the server with a bad key.
    assert sum(1 for e in server.log if e["status"] == 401) == 1


# -- store ---------------------------------------------------------------------------------------

def test_store_failure_never_overwrites_an_answer(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.put({"key": "k", "provider": "p", "model": "m", "ok": 1, "text": "paid", "usd": 0.5})
    store.put({"key": "k", "provider": "p", "model": "m", "ok": 0, "error": "later failure"})
    assert store.get("k")["text"] == "paid" and store.get("k")["ok"] == 1
    assert store.claim_unledgered()["usd"] == 0.5
    store.confirm_ledgered()
    assert store.claim_unledgered()["requests"] == 0


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="garbage.sqlite"):
        ResultStore(bad)


# -- offline stand-ins, dry run, progress ---------------------------------------------------------

def test_function_provider_is_free_cached_and_records_exceptions(tmp_path):
    calls = []

    def standin(req):
        calls.append(req.prompt)
        if "boom" in req.prompt:
            raise ValueError("cannot answer boom")
        return req.prompt.upper()

    client = LLMClient(FunctionProvider(standin, "upper-standin"), store=tmp_path / "f.sqlite", progress=False)
    res = client.generate([Request(prompt="a"), Request(prompt="boom"), Request(prompt="b")])
    assert [r.text for r in res] == ["A", "", "B"] and [r.ok for r in res] == [True, False, True]
    assert "ValueError: cannot answer boom" in res[1].error and all(r.usd == 0 for r in res)
    client.generate([Request(prompt="a"), Request(prompt="b")])
    assert sorted(calls) == ["a", "b", "boom"]  # each sent once; threads finish in any order


def test_dry_run_prices_only_missing_requests_and_calls_nothing(server, tmp_path, prices):
    reqs = [chat(f"plan {i} " + "x " * i, max_tokens=30) for i in range(6)]
    client = make_client(server, tmp_path, prices)
    client.generate(reqs[:2])
    n_sent = len(server.log)
    est = client.dry_run(reqs)
    assert len(server.log) == n_sent
    counter = client.counter
    tokens_in = sum(counter.count_request(r) for r in reqs[2:])
    ref = budget.estimate_llm("llm", "test-model", tokens_in, 4 * 30, prices)
    assert est.cost_usd == pytest.approx(ref.cost_usd) and est.tokens == pytest.approx(ref.tokens)
    note = est.lines[-1].detail
    assert "4 requests to send (2 already stored)" in note and counter.method in note
    batch = client.dry_run(reqs, batch=True)
    assert batch.cost_usd == pytest.approx(ref.cost_usd * (1 - prices.batch_discount))


def test_approximate_counter_is_labelled_and_bounded():
    approx = TokenCounter(model="some-unknown-model-offline")
    assert approx.exact or "approximate" in approx.method
    r = Request(prompt="héllo wörld " * 10)
    assert approx.upper_bound(r) >= approx.count_request(r) >= 1


def test_counter_never_downloads_for_stand_ins_or_when_told_not_to(monkeypatch, tmp_path):
    """The offline stand-ins never reach tiktoken; download=False uses only a cached BPE file."""
    import tiktoken

    calls = []
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: calls.append(name) or (_ for _ in ()).throw(OSError))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: nothing is cached
    for name in ("heuristic", "extractive"):
        c = TokenCounter(name)
        assert not c.exact and "offline stand-in" in c.method and c.count_text("x" * 40) == 10
    off = TokenCounter("gpt-4", download=False)
    assert not off.exact and "downloads are off" in off.method
    assert calls == []  # neither tried to fetch a BPE file
    TokenCounter("gpt-4", download=True)  # allowed: tiktoken is asked (and fails here: labelled, no crash)
    assert calls == ["cl100k_base"]


def test_progress_bar_shows_tokens_dollars_and_eta(server, tmp_path, prices, capsys):
    make_client(server, tmp_path, prices, progress=True).generate([chat(f"p{i}") for i in range(3)], desc="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "3/3" in err and "tok" in err and "$" in err and "<" in err  # tqdm's elapsed<remaining


# -- command line --------------------------------------------------------------------------------

def test_cli_dry_run_and_stats(server, tmp_path, prices, capsys):
    from phi1lib.cli import main
    from phi1lib.jsonl import write_jsonl

    path = tmp_path / "reqs.jsonl"
    write_jsonl(path, [{"prompt": "write a function " * 5, "max_tokens": 100},
                       {"messages": [{"role": "user", "content": "explain recursion"}]}])
    assert main(["llm", "dry-run", str(path), "--model", "gpt-3.5-turbo", "--json"]) == 0
    est = __import__("json").loads(capsys.readouterr().out)
    counter = TokenCounter(model="gpt-3.5-turbo")
    reqs = [Request(prompt="write a function " * 5, max_tokens=100),
            Request(messages=[{"role": "user", "content": "explain recursion"}], max_tokens=512)]
    ref = budget.estimate_llm("dry-run", "gpt-3.5-turbo", sum(map(counter.count_request, reqs)), 612, budget.load_prices())
    assert est["cost_usd"] == pytest.approx(ref.cost_usd) and est["cost_usd"] > 0
    write_jsonl(path, [{"prompt": 3}])
    assert main(["llm", "dry-run", str(path), "--model", "gpt-3.5-turbo"]) == 2
    assert "request 1" in capsys.readouterr().err
    make_client(server, tmp_path, prices).generate([chat("a"), chat("b [[400]]")])
    assert main(["llm", "stats", str(tmp_path / "llm.sqlite")]) == 0
    stats = __import__("json").loads(capsys.readouterr().out)
    assert stats["ok"] == 1 and stats["failed"] == 1


def test_torn_wal_tail_from_a_kill_is_ignored(tmp_path):
    import shutil

    store = ResultStore(tmp_path / "live.sqlite")
    for i in range(5):
        store.put({"key": f"k{i}", "provider": "p", "model": "m", "ok": 1, "text": f"answer {i}"})
    # Snapshot the files as a SIGKILL would leave them (WAL not checkpointed), then tear the tail.
    crash = tmp_path / "crash"
    crash.mkdir()
    for suffix in ("", "-wal", "-shm"):
        src = tmp_path / f"live.sqlite{suffix}"
        if src.exists():
            shutil.copy(src, crash / f"live.sqlite{suffix}")
    assert (crash / "live.sqlite-wal").stat().st_size > 0
    with open(crash / "live.sqlite-wal", "ab") as fh:
        fh.write(b"\x00\x01half a frame" * 37)
    (crash / "live.sqlite-shm").unlink(missing_ok=True)
    reopened = ResultStore(crash / "live.sqlite")
    assert {k: v["text"] for k, v in reopened.get_ok([f"k{i}" for i in range(6)]).items()} == {
        f"k{i}": f"answer {i}" for i in range(5)}
    reopened.put({"key": "k5", "provider": "p", "model": "m", "ok": 1, "text": "after"})
    assert reopened.get("k5")["text"] == "after"


# -- bookkeeping at scale ------------------------------------------------------------------------

def test_ledger_flush_reads_only_new_rows_through_an_index(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    for sql in ("UPDATE results SET ledgered=-1 WHERE ledgered=0 AND (ok=1 OR usd>0)",
                "SELECT COUNT(*), COALESCE(SUM(usd),0) FROM results WHERE ledgered=-1",
                "UPDATE results SET ledgered=1 WHERE ledgered=-1",
                "UPDATE results SET in_flight=-1 WHERE in_flight=1"):
        plan = " ".join(str(row[-1]) for row in store._db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX" in plan and "SCAN" not in plan, (sql, plan)
    # What the flush claims: exactly the rows stored since the last one.
    for i in range(5):
        store.put({"key": f"k{i}", "provider": "p", "model": "m", "ok": 1, "text": "t", "usd": 0.5})
    store.put({"key": "bad", "provider": "p", "model": "m", "ok": 0, "error": "HTTP 500"})
    assert store.claim_unledgered()["requests"] == 5
    store.confirm_ledgered()
    store.put({"key": "k9", "provider": "p", "model": "m", "ok": 1, "text": "t", "usd": 0.25})
    got = store.claim_unledgered()
    assert got["requests"] == 1 and got["usd"] == 0.25


def test_requests_in_flight_at_a_kill_are_charged_once_at_their_estimate(server, tmp_path, prices):
    """A request marked as sent whose answer never reached the store (the process died) counts as spent
    on the next run, at its estimate, once; a request whose answer was stored is not charged twice."""
    store = ResultStore(tmp_path / "llm.sqlite")
    store.mark_sent("dead", provider="openai:test-model", model="test-model", est_usd=0.75)
    store.mark_sent("lived", provider="openai:test-model", model="test-model", est_usd=0.5)
    store.put({"key": "lived", "provider": "openai:test-model", "model": "test-model", "ok": 1, "text": "x", "usd": 0.01})
    store.close()
    ledger = Ledger(tmp_path / "ledger.jsonl")
    client = make_client(server, tmp_path, prices, ledger=ledger)
    client.generate([chat("hello")])
    charged = [r for r in ledger.records if r.get("kind") == "in-flight at a kill"]
    assert len(charged) == 1 and charged[0]["requests"] == 1 and charged[0]["usd"] == pytest.approx(0.75)
    answer = expected_usd("hello", "answer to: hello", prices)
    assert ledger.spent_usd == pytest.approx(0.75 + 0.01 + answer)
    client.generate([chat("hello")])  # nothing charged again
    assert ledger.spent_usd == pytest.approx(0.75 + 0.01 + answer)


def test_dead_endpoints_are_told_apart_from_transient_connection_errors():
    import socket

    from phi1lib.llm.providers import _unreachable, check_base_url

    def chained(inner):
        try:
            try:
                raise inner
            except Exception as exc:
                raise RuntimeError("Connection error.") from exc
        except RuntimeError as outer:
            return outer

    assert _unreachable(chained(socket.gaierror(-2, "Name or service not known"))) == "unknown host"
    assert _unreachable(chained(ConnectionRefusedError(111, "Connection refused"))) == "connection refused"
    assert _unreachable(chained(ConnectionResetError(104, "Connection reset by peer"))) is None  # retried
    for bad in ("127.0.0.1:8000/v1", "localhost:8000", "ftp://host/v1", "http:///v1"):
        with pytest.raises(ConfigError, match="not an http\\(s\\) URL; give it with its scheme"):
            check_base_url(bad)
    check_base_url("https://api.example.com/v1")
