"""OpenAI Batch API flow against the local server: submit, poll, merge, discount, resume, failures, budget."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import KEY_ENV, priced_book, serve  # noqa: E402

from phi1lib import budget  # noqa: E402
from phi1lib.errors import BudgetExceeded  # noqa: E402
from phi1lib.budget import Ledger  # noqa: E402
from phi1lib.llm import LLMClient, OpenAIProvider, Request  # noqa: E402
from phi1lib.llm.batch import BatchRunner  # noqa: E402



@pytest.fixture
def server(monkeypatch):
    yield from serve(monkeypatch, batch_polls=1)


@pytest.fixture(scope="module")
def prices():
    return priced_book()


def make_client(server, tmp_path, prices, **kw):
    provider = OpenAIProvider("test-model", base_url=server.base_url, api_key_env=KEY_ENV)
    return LLMClient(provider, store=tmp_path / "llm.sqlite", prices=prices, progress=False, **kw)


def reqs(n, tag="b"):
    return [Request(messages=[{"role": "user", "content": f"{tag} {i}"}], max_tokens=20) for i in range(n)]


def test_batch_flow_merges_into_store_at_the_discount(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices)
    requests = reqs(5) + [Request(prompt="raw prompt", max_tokens=20)]
    results = BatchRunner(client).generate(requests, poll_s=0.01)
    assert [r.text for r in results] == [f"answer to: b {i}" for i in range(5)] + ["answer to: raw prompt"]
    assert len(server.batches) == 2  # one per endpoint (chat, completions)
    discount = prices.batch_discount
    assert 0 < discount < 1
    for r in results:
        full = budget.price_llm_usage("test-model", r.prompt_tokens, r.completion_tokens, prices)
        assert r.ok and not r.cached and r.usd == pytest.approx(full * (1 - discount))
    assert client.ledger.spent_usd == pytest.approx(sum(r.usd for r in results))
    assert not any(e["path"].endswith("completions") for e in server.log)  # nothing went through the live API
    # A rerun (batch or live) serves everything from the store.
    again = BatchRunner(make_client(server, tmp_path, prices)).generate(requests, poll_s=0.01)
    assert all(r.cached and r.usd == 0 for r in again) and len(server.batches) == 2
    assert all(r.cached for r in make_client(server, tmp_path, prices).generate(requests))


def test_resume_polls_stored_batch_ids_instead_of_resubmitting(server, tmp_path, prices):
    server.batch_polls = 3
    requests = reqs(4)
    ids = BatchRunner(make_client(server, tmp_path, prices)).submit(requests)  # then the process "dies"
    assert len(ids) == 1 and len(server.batches) == 1
    # A new process with the same store picks the open batch up.
    runner = BatchRunner(make_client(server, tmp_path, prices))
    assert runner.submit(requests) == []
    results = runner.generate(requests, poll_s=0.01)
    assert all(r.ok for r in results) and len(server.batches) == 1
    assert sorted(server.paid()) == sorted(f"b {i}" for i in range(4))


def test_kill_between_create_and_record_is_recovered(server, tmp_path, prices, monkeypatch):
    client = make_client(server, tmp_path, prices)
    runner = BatchRunner(client)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed right after batches.create")

    monkeypatch.setattr(client.store, "rename_batch", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.submit(reqs(3))
    assert len(server.batches) == 1
    monkeypatch.undo()
    monkeypatch.setenv(KEY_ENV, server.api_key)
    results = BatchRunner(make_client(server, tmp_path, prices)).generate(reqs(3), poll_s=0.01)
    assert all(r.ok for r in results)
    assert len(server.batches) == 1 and len(server.paid()) == 3  # adopted, not submitted again


def test_failed_lines_are_recorded_and_resubmitted(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices)
    requests = reqs(2) + [Request(prompt="reject me [[400]]")]
    good0, good1, bad = BatchRunner(client).generate(requests, poll_s=0.01)
    assert good0.ok and good1.ok
    assert not bad.ok and bad.text == "" and "HTTP 400" in bad.error and "scripted bad request" in bad.error
    assert client.store.get(bad.key)["ok"] == 0
    BatchRunner(client).generate(requests, poll_s=0.01)
    assert server.paid().count("b 0") == 1
    assert sum(1 for e in server.log if e["text"] == "reject me [[400]]") == 2  # tried again, alone


def test_timeout_leaves_batch_open_and_a_later_call_collects(server, tmp_path, prices):
    server.batch_polls = 10**6
    client = make_client(server, tmp_path, prices)
    results = BatchRunner(client).generate(reqs(2), poll_s=0.01, timeout_s=0.05)
    assert all(not r.ok and "still running in batch" in r.error for r in results)
    assert client.store.get(results[0].key) is None  # pending is not a failure
    server.batch_polls = 0
    results = BatchRunner(client).generate(reqs(2), poll_s=0.01)
    assert all(r.ok for r in results) and len(server.batches) == 1


def test_batch_budget_is_checked_before_upload(server, tmp_path, prices):
    client = make_client(server, tmp_path, prices, ledger=Ledger(cap_usd=0.01))
    with pytest.raises(BudgetExceeded, match="batch of 5 requests"):
        BatchRunner(client).submit(reqs(5))
    assert server.files == {} and server.batches == {}


def test_cli_batch_status_polls_and_merges(server, tmp_path, prices, capsys):
    from phi1lib.cli import main

    requests = reqs(3)
    [bid] = BatchRunner(make_client(server, tmp_path, prices)).submit(requests)
    store = str(tmp_path / "llm.sqlite")
    args = ["llm", "batch-status", store, "--model", "test-model", "--base-url", server.base_url,
            "--api-key-env", KEY_ENV, "--price-free"]
    assert main(args) == 0 and f"{bid}\tin_progress" in capsys.readouterr().out
    assert main(args) == 0 and f"{bid}\tcompleted" in capsys.readouterr().out
    assert all(r.cached for r in make_client(server, tmp_path, prices).generate(requests))
    assert main(args) == 0 and "no open batches" in capsys.readouterr().out
