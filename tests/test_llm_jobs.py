"""Whole LLM jobs through the `phi1` CLI against a local OpenAI-compatible server that bills each answer:
failures leave the job unfinished and a rerun sends exactly what is missing, the cap is the job's across
reruns, dead endpoints fail fast, self-hosted models are priced, shards merge, and the book's vLLM
commands run as written."""

from __future__ import annotations

import re
import shlex
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import KEY_ENV, ScriptedLLMServer  # noqa: E402

from phi1lib import budget  # noqa: E402
from phi1lib.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRICE = (1.0, 2.0)  # test-model, USD per 1K prompt / completion tokens (the server counts words)
QWEN = "Qwen/Qwen2.5-Coder-32B-Instruct"


@pytest.fixture
def prices_dir(tmp_path):
    d = tmp_path / "prices"
    d.mkdir()
    (d / "test.toml").write_text(f'[llm."test-model"]\ninput_per_1k = {PRICE[0]}\noutput_per_1k = {PRICE[1]}\n'
                                 'source = "test fixture"\nas_of = 2026-01-01\n')
    return d


@pytest.fixture
def server(monkeypatch):
    srv = ScriptedLLMServer()
    srv.start()
    monkeypatch.setenv(KEY_ENV, srv.api_key)
    yield srv
    srv.stop()


def phi1(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def synth(server, out, prices_dir, *extra, count=24, url=None):
    return ["synth", "exercises", "--provider", "openai", "--model", "test-model", "--base-url",
            url or server.base_url, "--api-key-env", KEY_ENV, "--prices", prices_dir, "--count", count,
            "--no-sandbox", "--out", out, *extra]


def answered(server) -> Counter:
    return Counter(server.paid())


# -- failures leave the job unfinished ------------------------------------------------------------

def test_failed_requests_leave_the_job_unfinished_and_reruns_send_exactly_the_rest(server, tmp_path, prices_dir,
                                                                                  capsys):
    out = tmp_path / "run"
    server.fail_share = (1, 4)  # about a quarter of the prompts fail on every try (HTTP 500, Retry-After: 0)
    rc, _, err = phi1(synth(server, out, prices_dir), capsys)
    failing = {e["text"] for e in server.log if e["status"] == 500}
    first = answered(server)
    assert rc != 0 and 0 < len(failing) < 24
    assert re.search(rf"{len(failing)} of 24 LLM requests failed for good \({len(failing)}x HTTP 500 from "
                     rf"{re.escape(server.base_url)}: scripted failure for good\)", err), err
    assert "Rerun the same command to retry exactly those" in err and "never paid again" in err
    assert f"{len(failing) * 5} retries" in err  # retried (and counted) before failing for good
    assert not (out / "synthesis" / "result.json").exists()
    assert set(first) == {e["text"] for e in server.log} - failing and max(first.values()) == 1

    server.fail_share = None  # healthy again: the plain rerun sends exactly the missing requests
    rc, stdout, err = phi1(synth(server, out, prices_dir), capsys)
    assert rc == 0, err
    second = answered(server) - first
    assert set(second) == failing and max(answered(server).values()) == 1  # none twice
    assert (out / "synthesis" / "result.json").exists()
    assert f"({24 - len(failing)} answers from the store, not paid again)" in stdout

    n = len(server.log)
    rc, stdout, _ = phi1(synth(server, out, prices_dir), capsys)
    assert rc == 0 and len(server.log) == n  # a third run sends nothing
    assert "nothing sent, nothing spent now" in stdout
    # The run folder's ledger holds what the server billed (never less).
    bill = server.bill(*PRICE)
    assert budget.Ledger(out / "ledger.jsonl").spent_usd == pytest.approx(bill)


def test_the_cap_is_the_jobs_across_reruns(server, tmp_path, prices_dir, capsys):
    out = tmp_path / "run"
    cap = 2.5  # about a tenth of the job; each request reserves its worst case (~$1.3) while in flight
    rc, _, err = phi1(synth(server, out, prices_dir, "--cap-usd", cap, "--concurrency", 4), capsys)
    assert rc == 2 and "cap" in err
    bills = [server.bill(*PRICE)]
    m = re.search(r"the job's (\$[\d.,]+) cap .* has (\$[\d.,]+) left: (\$[\d.,]+) spent and (\$[\d.,]+) reserved", err)
    assert m and m.group(1) == "$2.50", err
    total = re.search(r"this ledger now records (\$[\d.,]+) spent of its \$2\.50 cap", err)
    assert total and float(total.group(1)[1:]) == pytest.approx(bills[0], abs=1e-6), err  # every digit, no "$0.0000"
    assert 0 < bills[0] <= cap
    # Three reruns: with the same --cap-usd, without any (the cap is kept in the run folder), and the same again.
    for extra in (("--cap-usd", cap), (), ("--cap-usd", cap)):
        rc, _, err = phi1(synth(server, out, prices_dir, *extra, "--concurrency", 4), capsys)
        bills.append(server.bill(*PRICE))
        assert rc == 2 and "kept in" in err and str(out / "ledger.jsonl") in err
        assert bills[-1] <= cap + 1e-9, f"billed {bills[-1]} over the job's cap {cap}"
    assert max(answered(server).values()) == 1  # and nothing was paid twice
    # Raising the cap finishes the job, paying only for what is missing.
    rc, _, err = phi1(synth(server, out, prices_dir, "--cap-usd", 100), capsys)
    assert rc == 0, err
    assert len(answered(server)) == 24 and max(answered(server).values()) == 1
    assert budget.Ledger(out / "ledger.jsonl").spent_usd == pytest.approx(server.bill(*PRICE))


# -- fail fast --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["refused", "no-scheme", "unknown-model", "wrong-key", "not-json", "no-choices"])
def test_unfixable_errors_stop_within_seconds_naming_endpoint_and_fix(case, server, tmp_path, prices_dir, capsys,
                                                                      monkeypatch):
    out = tmp_path / "run"
    url, expect = server.base_url, None
    if case == "refused":
        url = f"http://127.0.0.1:{free_port()}/v1"
        expect = f"cannot reach {url}: connection refused; start the server there or fix --base-url"
    elif case == "no-scheme":
        url = server.base_url.removeprefix("http://")
        expect = f"base URL '{url}' is not an http(s) URL; give it with its scheme, e.g. http://{url}"
    elif case == "unknown-model":
        server.models = {"another-model"}
        expect = "HTTP 404 from .*model `test-model` does not exist.*check --model test-model"
    elif case == "wrong-key":
        monkeypatch.setenv(KEY_ENV, "sk-wrong-key-123")
        expect = "HTTP 401 from .*check the API key"
    else:
        server.broken = case
        expect = (f"the first 10 requests to {re.escape(url)} all failed .*stopped before sending the rest"
                  ".*rerun the same command")
    t0 = time.monotonic()
    rc, _, err = phi1(synth(server, out, prices_dir, count=60, url=url), capsys)
    assert rc == 2 and time.monotonic() - t0 < 15
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and re.search(expect if case not in ("refused", "no-scheme") else re.escape(expect),
                                         lines[0]), err
    assert "sk-wrong-key-123" not in err
    assert len(server.log) <= 10 + 8  # stopped (10 failed, 8 in flight): not 60 requests, each retried six times
    # Once fixed, the same command resumes and finishes.
    server.models = server.broken = None
    monkeypatch.setenv(KEY_ENV, server.api_key)
    rc, _, err = phi1(synth(server, out, prices_dir, count=60), capsys)
    assert rc == 0, err


# -- self-hosted models ---------------------------------------------------------------------------

def test_self_hosted_model_priced_free_or_from_gpu_hours(tmp_path, capsys, monkeypatch):
    srv = ScriptedLLMServer(api_key=None, models={QWEN})
    srv.start()
    try:
        base = ["synth", "exercises", "--provider", "openai", "--model", QWEN, "--base-url", srv.base_url,
                "--api-key-env", "none", "--count", 10, "--no-sandbox"]
        rc, _, err = phi1([*base, "--out", tmp_path / "a"], capsys)
        assert rc == 2 and f"--model {QWEN}: no price" in err and "--price-free" in err and "--rental NAME" in err
        assert "PriceBook.with_free" not in err and "api_key_env=" not in err and len(srv.log) == 0

        rc, _, err = phi1([*base, "--price-free", "--out", tmp_path / "free"], capsys)
        assert rc == 0, err
        assert budget.Ledger(tmp_path / "free" / "ledger.jsonl").spent_usd == 0.0

        rc, _, err = phi1([*base, "--rental", "p4d.24xlarge", "--tokens-per-s", 100, "--out", tmp_path / "gpu"], capsys)
        assert rc == 0, err
        rental = budget.load_prices().rental("p4d.24xlarge")
        tokens = sum(e["prompt_tokens"] + e["completion_tokens"] for e in srv.log if e["status"] == 200) / 2
        expected = rental.usd_per_hour / 3600 * tokens / 100  # the hours 100 tokens/s takes, at the rental's rate
        assert budget.Ledger(tmp_path / "gpu" / "ledger.jsonl").spent_usd == pytest.approx(expected)

        rc, _, err = phi1([*base, "--tokens-per-s", 100, "--out", tmp_path / "bad"], capsys)
        assert rc == 2 and "--tokens-per-s is used with --rental NAME" in err
    finally:
        srv.stop()


def book_commands() -> list[list[str]]:
    """The phi1 commands of book/a100.md's vLLM section, as written (continuations joined, loops unrolled)."""
    text = (ROOT / "book" / "a100.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "localhost:8000" in b]
    assert blocks, "book/a100.md has no vLLM commands"
    commands = []
    for block in blocks:
        block = block.replace("\\\n", " ")
        loop = re.search(r"for i in ([\d ]+); do\n(.*?)\ndone; wait", block, re.S)
        if loop:
            body = loop.group(2).strip().rstrip("&").strip()
            block = block.replace(loop.group(0), "\n".join(body.replace("$i", i) for i in loop.group(1).split()))
        commands += [shlex.split(line)[1:] for line in block.splitlines() if line.strip().startswith("phi1 ")]
    return commands


def test_the_books_vllm_commands_run_against_a_local_server(tmp_path, capsys, monkeypatch):
    """Each command exactly as the book writes it, with the local server's URL for localhost:8000 and, where
    a command would run phi1-small's whole plan (hundreds of thousands of requests), --count 6 added."""
    srv = ScriptedLLMServer(api_key=None, models={QWEN})
    srv.start()
    monkeypatch.chdir(tmp_path)  # the book's scratch folder, runs/vllm-try, lands here
    monkeypatch.setenv("PHI1_RUN_DIR", str(tmp_path / "runs" / "phi1-small"))  # not the checkout's runs/
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    try:
        commands = book_commands()
        assert len(commands) >= 5 and any("--shard" in c for c in commands)
        for argv in commands:
            argv = [a.replace("http://localhost:8000/v1", srv.base_url) for a in argv]
            if "--count" not in argv and "--estimate-only" not in argv:
                argv += ["--count", "6"]
            rc, out, err = phi1(argv, capsys)
            assert rc == 0, f"{shlex.join(argv)}\n{err}"
        # Shards and merge after the full run: nothing paid twice in one run folder.
        assert max(Counter(t for t in srv.paid()).values()) <= 2  # at most once per folder (try + full)
        assert (tmp_path / "runs" / "vllm-try" / "synthesis" / "result.json").exists()
        assert (tmp_path / "runs" / "phi1-small" / "synthesis" / "result.json").exists()
    finally:
        srv.stop()


# -- shards ---------------------------------------------------------------------------------------

def test_shards_then_merge_send_each_request_once(server, tmp_path, prices_dir, capsys):
    out = tmp_path / "run"
    for i in range(3):
        rc, stdout, err = phi1(synth(server, out, prices_dir, "--shard", f"{i}/3", count=30), capsys)
        assert rc == 0 and f"shard {i}/3: all 10 requests answered" in stdout, err
    assert len(answered(server)) == 30 and max(answered(server).values()) == 1
    assert not (out / "synthesis" / "result.json").exists()
    n = len(server.log)
    rc, stdout, err = phi1(synth(server, out, prices_dir, count=30), capsys)
    assert rc == 0 and len(server.log) == n, err  # the merge sends nothing
    assert "(30 answers from the store, not paid again)" in stdout
    assert budget.Ledger(out / "ledger.jsonl").spent_usd == pytest.approx(server.bill(*PRICE))
    rc, _, err = phi1(synth(server, out, prices_dir, "--shard", "3/3"), capsys)
    assert rc == 2 and "--shard 3/3: expected I/N with 0 <= I < N" in err


# -- console --------------------------------------------------------------------------------------

def test_retries_are_counted_and_summarised_above_the_bar(server, tmp_path, capsys):
    from phi1lib.llm import Backoff, LLMClient, OpenAIProvider, Request

    from llm_server import priced_book

    client = LLMClient(OpenAIProvider("test-model", base_url=server.base_url, api_key_env=KEY_ENV),
                       store=tmp_path / "s.sqlite", prices=priced_book(), progress=True,
                       backoff=Backoff(max_attempts=3, base_s=0.01, max_s=0.02, seed=0))
    reqs = [Request(prompt=f"p{i} [[500:2]]") for i in range(3)] + [Request(prompt="bad [[500:9]]")]
    results = client.generate(reqs)
    err = capsys.readouterr().err
    assert [r.ok for r in results] == [True, True, True, False]
    assert client.last_run["retries"] == 8 and client.last_run["retry_reasons"] == {"HTTP 500": 8}
    assert "8 retries" in err  # on the bar
    summary = [line for line in err.splitlines() if "sent requests answered" in line]
    assert summary == ["llm: 3 of 4 sent requests answered after 8 retries (8x HTTP 500); 1 failed for good "
                       f"(1x HTTP 500 from {server.base_url}: scripted server error)"]
    failed_line = [line for line in err.splitlines() if "failed after 3 attempts" in line]
    assert len(failed_line) == 1 and failed_line[0].startswith("llm: request ")  # its own line, not glued on


# -- phi1 run -------------------------------------------------------------------------------------

def test_phi1_run_exits_non_zero_when_a_stage_has_failed_requests(tmp_path, capsys, monkeypatch):
    """A stage whose requests failed for good stops `phi1 run` there, non-zero, naming what did not run."""
    from dataclasses import replace

    from phi1lib.llm import IncompleteRun
    from phi1lib.pipeline import stages as table

    def unfinished(config, run_dir, **kw):
        raise IncompleteRun("filtering: 2 of 30 LLM requests failed for good (2x HTTP 500 from http://x/v1); rerun")

    rows = tuple(replace(s, run=unfinished) if s.name == "filtering" else s for s in table.STAGES)
    monkeypatch.setattr(table, "STAGES", rows)
    rc, _, err = phi1(["run", "--preset", "tiny", "--out", tmp_path / "run", "--stages", "filtering,synthesis"], capsys)
    assert rc == 2
    assert "2 of 30 LLM requests failed for good" in err and "stopped at filtering; synthesis did not run" in err
    assert not (tmp_path / "run" / "synthesis").exists()


def test_eval_generate_against_a_self_hosted_server_resumes_exactly_the_failures(server, tmp_path, capsys):
    """`phi1 eval generate` is the stage's generation with the shared LLM flags: any model name at --base-url,
    priced free; requests that fail for good leave it unfinished (exit 2), the rerun sends exactly those."""
    run = tmp_path / "run"
    argv = ["eval", "generate", "--model", "openai:my-vllm-coder", "--base-url", server.base_url, "--api-key-env",
            KEY_ENV, "--price-free", "--limit", "12", "--concurrency", "4", "--out", run]
    server.fail_share = (1, 3)
    rc, out, err = phi1(argv, capsys)
    failed = sum(1 for t in set(server.paid()) if server.fails_for_good(t))
    first = answered(server)
    assert rc == 2 and "LLM requests failed for good" in err and "Traceback" not in err
    assert failed == 0 and 0 < sum(first.values()) < 12  # the failing ones were never answered
    server.fail_share = None
    rc, out, err = phi1(argv, capsys)
    again = answered(server)
    assert rc == 0 and sum(again.values()) == 12 and max(again.values()) == 1  # none twice
    samples = (run / "evaluation" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 12
    rc, out, err = phi1(argv, capsys)
    assert rc == 0 and answered(server) == again  # a third run sends nothing
    rc, out, err = phi1(["eval", "generate", "--model", "openai:my-vllm-coder", "--base-url", server.base_url,
                         "--api-key-env", KEY_ENV, "--limit", "1", "--out", tmp_path / "r2"], capsys)
    assert rc == 2 and "--price-free" in err  # an unpriced self-hosted name names the flags that fix it
