"""The LLM access layer every stage uses: cached, rate-limited, resumable, budget-capped generation.

    client = LLMClient(OpenAIProvider("gpt-3.5-turbo"), store="runs/x/llm.sqlite", cap_usd=5)
    results = client.generate([Request(messages=[{"role": "user", "content": "hi"}])])

Answers are committed to the store as they arrive, so a rerun after a crash pays only for
what is missing; failed requests come back as `Result(ok=False, error=...)`, never as blanks.
A caller whose job needs every answer calls `require_all(results, stage)`: any request that
failed for good raises `IncompleteRun` (one line: how many failed, why, and that rerunning the
same command retries exactly those), so the job is never written as finished.

Errors retrying cannot fix (no server at the URL, unknown host, a rejected key, an unknown
model) stop the whole run at once; so does a run whose first `fail_fast_after` requests all
failed (a server answering garbage). Each request is marked as sent in the store before it
leaves, so a killed run's requests in flight are charged (at their estimate) by the next run.
Providers live in `providers` / `local`, limits in `limits`, the store in
`store`, token counting in `tokens`, the Batch API in `batch`.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import budget
from ..budget.ledger import usd_text
from ..errors import BudgetExceeded, ConfigError, Phi1Error
from ..paths import cache_dir
from .guard import SpendGuard
from .limits import Backoff, RateLimits, Throttle
from .progress import Progress
from .providers import Completion, ProviderError
from .store import ResultStore
from .tokens import TokenCounter

log = logging.getLogger(__name__)



@dataclass
class Request:
    """One generation: chat `messages` or a raw `prompt`, sampling params, and a sample index.

    `n_index` tells apart repeated samples of the same prompt (pass@k); `meta` travels with
    the request for the caller's bookkeeping and is not part of the cache key.
    """

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 512  # completion tokens at most
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] | None = None
    n_index: int = 0  # sample number for repeated sampling of one prompt
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ConfigError("Request: give exactly one of messages=[{'role':..., 'content':...}] or prompt='...'")
        if self.messages is not None:
            if not isinstance(self.messages, list) or not self.messages:
                raise ConfigError(f"Request.messages must be a non-empty list of dicts, got {self.messages!r:.80}")
            for i, m in enumerate(self.messages):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                    raise ConfigError(f"Request.messages[{i}] must be a dict with string 'role' and 'content', got {m!r:.80}")
        elif not isinstance(self.prompt, str):
            raise ConfigError(f"Request.prompt must be a string, got {type(self.prompt).__name__}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ConfigError(f"Request.max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ConfigError(f"Request.temperature must be in [0, 2], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"Request.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop) if self.stop else None
        if self.stop and not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"Request.stop must be non-empty strings, got {self.stop!r}")
        if isinstance(self.n_index, bool) or not isinstance(self.n_index, int) or self.n_index < 0:
            raise ConfigError(f"Request.n_index must be an int >= 0, got {self.n_index!r}")

    def key(self, provider_id: str) -> str:
        """Cache key: hash of provider/model, input, sampling params and sample index."""
        payload = {"provider": provider_id, "messages": self.messages, "prompt": self.prompt,
                   "max_tokens": self.max_tokens, "temperature": float(self.temperature),
                   "top_p": float(self.top_p), "stop": list(self.stop) if self.stop else None, "n_index": self.n_index}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop) if self.stop else None
        return d


@dataclass
class Result:
    """The outcome of one Request; `ok=False` carries `error` and an empty text by construction.

    `usd` is what this call paid: 0 for an answer served from the store (`cached=True`).
    """

    key: str
    text: str
    ok: bool
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    usd: float
    cached: bool
    request: Request | None = None
    finish_reason: str | None = None
    attempts: int = 0  # tries this run made (0 for a cached answer)


def _result_from_row(row: dict, request: Request) -> Result:
    # usd=0: a stored answer costs nothing this time (its original price stays in the store),
    # so summing Result.usd over a run gives what that run spent.
    return Result(key=row["key"], text=row["text"], ok=True, error=None, prompt_tokens=row["prompt_tokens"],
                  completion_tokens=row["completion_tokens"], usd=0.0, cached=True, request=request,
                  finish_reason=row["finish_reason"], attempts=0)


class IncompleteRun(Phi1Error):
    """Some requests failed for good: the job is not finished. Rerunning the same command sends exactly
    those again (the stored answers are reused, never paid twice). `.results` holds every result."""

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results or []


_ATTEMPTS = re.compile(r" after \d+ attempts?$")


def failure_reasons(results: Sequence[Result], top: int = 3) -> str:
    """The main reasons among failed results, most common first: '3x HTTP 500 from ...; 1x timed out'."""
    return error_reasons((r.error for r in results if not r.ok), top)


def error_reasons(errors: Iterable[str | None], top: int = 3) -> str:
    """The most common of these error messages with their counts ('3x HTTP 500 from ...; 1x timed out; 2 other'),
    retry counts stripped so the same failure groups together."""
    counts = collections.Counter(_ATTEMPTS.sub("", str(e or "unknown error"))[:140] for e in errors)
    parts = [f"{n}x {why}" for why, n in counts.most_common(top)]
    if len(counts) > top:
        parts.append(f"{sum(counts.values()) - sum(n for _, n in counts.most_common(top))} other")
    return "; ".join(parts)


def incomplete(stage: str, n_failed: int, total: int, reasons: str, store=None, results=None) -> IncompleteRun:
    """The IncompleteRun for `n_failed` of `total` requests that failed for good."""
    where = f" in {store}" if store is not None else ""
    return IncompleteRun(
        f"{stage}: {n_failed} of {total} LLM requests failed for good ({reasons}), so the stage is not marked "
        f"finished. Rerun the same command to retry exactly those {n_failed}: the {total - n_failed} stored "
        f"answers{where} are reused, never paid again", results)


def require_all(results: Sequence[Result], stage: str, store=None) -> None:
    """Raise IncompleteRun when any result failed: n of N failed, the main reasons, how to finish."""
    failed = [r for r in results if not r.ok]
    if failed:
        raise incomplete(stage, len(failed), len(results), failure_reasons(failed), store, list(results))


class _Stop(Exception):
    """Raised in a worker to stop the whole run (budget cap, rejected key)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class LLMClient:
    """Generation through one provider with a durable store, rate limits, retries and a budget cap.

    store: path of the SQLite result store (None: a store under $PHI1_CACHE/llm). ledger: a
    `phi1lib.ledger.Ledger` (its cap applies; spend is recorded there); cap_usd: a cap for
    this client (with no ledger, an in-memory one is made). prices: a `PriceBook` (default:
    the project's price books). The provider's model must be priced (or free) before any call.
    """

    def __init__(self, provider, store: str | Path | None = None, ledger=None, cap_usd: float | None = None,
                 concurrency: int = 8, rpm: float | None = None, tpm: float | None = None, prices=None, *,
                 backoff: Backoff | None = None, stage: str = "llm", flush_every: int = 50, flush_s: float = 10.0,
                 progress: bool = True, burst_s: float = 1.0, fail_fast_after: int = 10):
        if not all(hasattr(provider, a) for a in ("cache_id", "call")):
            raise ConfigError(f"LLMClient: provider must be an OpenAIProvider, TransformersProvider or FunctionProvider, got {provider!r}")
        self.provider = provider
        self.limits = RateLimits(concurrency=concurrency, rpm=rpm, tpm=tpm, burst_s=burst_s)
        self.backoff = backoff or Backoff()
        self.stage = stage
        self.fail_fast_after = int(fail_fast_after)  # the first N finished requests all failed: stop
        self.last_run: dict[str, Any] = {}  # counts of the latest generate(): sent, answered, failed, retries, ...
        self._bar: Progress | None = None
        self.progress = progress
        if store is None:
            store = cache_dir("llm") / "results.sqlite"
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.prices = prices if prices is not None else budget.load_prices()
        self.price_model = getattr(provider, "price_model", None)
        if self.price_model is not None:
            try:
                self.prices.llm(self.price_model)  # unknown model: ConfigError now, before any work
            except ConfigError:
                raise ConfigError(
                    f"{stage}: no price for LLM {self.price_model!r} in the price books. A self-hosted model: add "
                    "--price-free, or --rental NAME --tokens-per-s N to price it from GPU-hours (Python: prices="
                    "load_prices().with_free(model)); an API model: an [llm.\"NAME\"] entry in a *.toml under "
                    "--prices DIR") from None
        if ledger is None:
            ledger = budget.Ledger(cap_usd=cap_usd)
            cap_usd = None  # enforced by the ledger itself
        self.ledger = ledger
        self.guard = SpendGuard(ledger, self.store, cap_usd=cap_usd, stage=stage, provider_id=provider.cache_id,
                                flush_every=flush_every, flush_s=flush_s)
        counter = getattr(provider, "token_counter", None)
        self.counter = counter() if callable(counter) else TokenCounter(model=self.price_model)
        self.throttle = Throttle(self.limits)

    def __repr__(self) -> str:
        return f"LLMClient({self.provider!r}, store={str(self.store.path)!r}, stage={self.stage!r})"

    # -- pricing and budget ----------------------------------------------------------------
    def price(self, prompt_tokens: float, completion_tokens: float, batch: bool = False) -> float:
        if self.price_model is None:
            return 0.0
        return budget.price_llm_usage(self.price_model, prompt_tokens, completion_tokens, self.prices, batch=batch)

    def check_budget(self, usd: float, what: str, committed: float = 0.0) -> None:
        """Raise BudgetExceeded if `usd` more (on top of `committed`) would cross a cap; spends nothing."""
        self.guard.check(usd, what, committed)

    def flush_ledger(self, **meta) -> None:
        """Write spend stored since the last flush (including a killed run's) to the ledger."""
        self.guard.flush(**meta)

    # -- one request -----------------------------------------------------------------------
    def _fail(self, key: str, request: Request | None, error: str, attempts: int) -> Result:
        error = self.provider.redact(error) if hasattr(self.provider, "redact") else error
        self.store.put({"key": key, "provider": self.provider.cache_id, "model": self.provider.model, "ok": 0,
                        "error": error, "attempts": attempts,
                        "request": request.to_dict() if request is not None else None})
        return Result(key, "", False, error, 0, 0, 0.0, False, request, None, attempts)

    def _settle(self, key: str, request: Request | None, comp: Completion, attempts: int, batch: bool = False) -> Result:
        pt = comp.prompt_tokens
        if pt is None:
            pt = self.counter.count_request(request) if request is not None else 0
        ct = comp.completion_tokens if comp.completion_tokens is not None else self.counter.count_text(comp.text)
        usd = self.price(pt, ct, batch=batch)
        # Commit before anything else: from here on a crash cannot make us pay for it again.
        self.store.put({"key": key, "provider": self.provider.cache_id, "model": self.provider.model, "ok": 1,
                        "text": comp.text, "prompt_tokens": pt, "completion_tokens": ct, "usd": usd,
                        "finish_reason": comp.finish_reason, "attempts": attempts, "via_batch": batch,
                        "request": request.to_dict() if request is not None else None})
        self.guard.account(usd)
        return Result(key, comp.text, True, None, pt, ct, usd, False, request, comp.finish_reason, attempts)

    def _run_one(self, key: str, request: Request, stop_flag: threading.Event) -> Result:
        est_prompt = self.counter.upper_bound(request)  # never below the real count: safe for the budget
        worst = self.price(est_prompt, request.max_tokens)
        rate_tokens = self.counter.count_request(request) + request.max_tokens  # as OpenAI's TPM limiter estimates
        try:
            held = self.guard.reserve(worst, f"request {key[:12]} ({est_prompt} prompt + {request.max_tokens} max tokens)")
        except BudgetExceeded as exc:
            raise _Stop(exc) from None
        try:
            attempt = 0
            sent = False
            while True:
                attempt += 1
                if stop_flag.is_set():
                    return self._fail(key, request, "not sent: the run was stopped (budget cap or rejected key)", attempt - 1)
                self.throttle.wait(rate_tokens)
                if not sent:  # durable before it leaves: a kill from here on is charged at `worst` next run
                    self.store.mark_sent(key, provider=self.provider.cache_id, model=self.provider.model,
                                         est_usd=worst, request=request.to_dict())
                    sent = True
                try:
                    comp = self.provider.call(request)
                except Exception as exc:
                    if not isinstance(exc, ProviderError):  # a bug or an unexpected reply: record, don't crash
                        redact = getattr(self.provider, "redact", str)
                        exc = ProviderError(redact(f"unexpected reply from {getattr(self.provider, 'endpoint', self.provider)}"
                                                   f": {type(exc).__name__}: {exc}"))
                    if exc.fatal:
                        self._fail(key, request, str(exc), attempt)
                        raise _Stop(ConfigError(str(exc))) from None
                    if exc.retryable and attempt < self.backoff.max_attempts:
                        delay = self.backoff.delay(attempt, exc.retry_after)
                        log.info("%s: request %s try %d failed (%s); retrying in %.2f s",
                                 self.stage, key[:12], attempt, exc, delay)
                        if self._bar is not None:
                            self._bar.retry(exc)
                        if exc.status == 429:
                            self.throttle.cool_down(delay)
                        time.sleep(delay)
                        continue
                    tries = f" after {attempt} attempt{'s' if attempt > 1 else ''}"
                    msg = f"{self.stage}: request {key[:12]} failed{tries}: {exc}"
                    if self._bar is not None and self._bar.enabled:
                        self._bar.write(msg)  # above the bar, not glued onto it
                    else:
                        log.warning("%s", msg)
                    return self._fail(key, request, f"{exc}{tries}", attempt)
                return self._settle(key, request, comp, attempt)
        finally:
            self.guard.release(held)

    # -- many requests ---------------------------------------------------------------------
    def _keys(self, requests: Sequence[Request]) -> list[str]:
        for i, r in enumerate(requests):
            if not isinstance(r, Request):
                raise ConfigError(f"generate: item {i} is a {type(r).__name__}, expected phi1lib.llm.Request")
        return [r.key(self.provider.cache_id) for r in requests]

    def generate(self, requests: Iterable[Request], desc: str | None = None) -> list[Result]:
        """Answers for `requests`, in order: stored ones from the store, the rest from the provider.

        Raises BudgetExceeded (with `.results`: what finished, failures for the rest) when the
        cap stops the run; every finished answer is in the store either way.
        """
        requests = list(requests)
        keys = self._keys(requests)
        self.guard.recover()  # requests a killed run had in flight: charged at their estimate
        self.flush_ledger(recovered=True)  # a previous run killed before its last flush
        stored = self.store.get_ok(set(keys))
        results: list[Result | None] = [None] * len(requests)
        todo: dict[str, Request] = {}
        for i, (k, r) in enumerate(zip(keys, requests)):
            if k in stored:
                results[i] = _result_from_row(stored[k], r)
            else:
                todo.setdefault(k, r)  # identical requests in one call are paid once
        bar = Progress(len(requests), len(requests) - sum(1 for k in keys if k in todo), desc or self.stage,
                       enabled=self.progress)
        self._bar = bar
        fresh: dict[str, Result] = {}
        stop: _Stop | None = None
        t0 = time.monotonic()
        try:
            if getattr(self.provider, "batch_size", None):
                stop = self._generate_local(todo, fresh, bar)
            else:
                stop = self._generate_threads(todo, fresh, bar)
        finally:
            bar.close()
            self._bar = None
            self.flush_ledger()
            self._summarise(len(requests), len(todo), fresh, bar, time.monotonic() - t0)
        for i, k in enumerate(keys):
            if results[i] is None:
                got = fresh.get(k)
                if got is None:
                    got = Result(k, "", False, f"not sent: {stop.error if stop else 'run stopped'}", 0, 0, 0.0, False, requests[i])
                elif got.request is not requests[i]:
                    # A repeat of an earlier request in this call: same answer, paid once (there).
                    got = Result(**{**got.__dict__, "request": requests[i], "usd": 0.0, "cached": got.ok})
                results[i] = got
        if stop is not None:
            err = stop.error
            done = sum(1 for r in results if r.ok)
            msg = f"{self.stage}: stopped with {done} of {len(requests)} answers (all stored in {self.store.path}): {err}"
            if isinstance(err, BudgetExceeded):
                spent = self.ledger.spent_usd  # after the final flush: what the requests in flight then cost too
                msg += f". In all, this ledger now records {usd_text(spent)} spent"
                if self.ledger.cap_usd is not None:
                    msg += f" of its {usd_text(self.ledger.cap_usd)} cap"
                new = BudgetExceeded(msg, spent_usd=spent, cap_usd=err.cap_usd, needed_usd=err.needed_usd)
            else:
                new = type(err)(msg)
            new.results = results
            raise new
        return results

    def _summarise(self, total: int, todo: int, fresh: dict[str, Result], bar: Progress, seconds: float) -> None:
        """`last_run` counts, and one summary line (above where the bar was) when anything was retried or failed."""
        answered = [r for r in fresh.values() if r.ok]
        failed = [r for r in fresh.values() if not r.ok]
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in answered)
        self.last_run = {"requests": total, "stored_before": total - todo, "sent": len(fresh), "answered": len(answered),
                         "failed": len(failed), "retries": bar.retries, "retry_reasons": dict(bar.retry_reasons),
                         "usd": sum(r.usd for r in answered), "tokens": tokens, "seconds": seconds,
                         "tokens_per_s": tokens / seconds if seconds > 0 and answered else None}
        if not bar.enabled:
            return
        if answered and seconds > 0:  # the figure --tokens-per-s wants for GPU-hour pricing of a self-hosted model
            bar.write(f"{self.stage}: measured {tokens / seconds:,.0f} tokens/s (prompt + completion, "
                      f"{len(answered)} answers in {seconds:,.1f} s at concurrency {self.limits.concurrency})")
        if not (bar.retries or failed):
            return
        line = f"{self.stage}: {len(answered)} of {len(fresh)} sent requests answered"
        if bar.retries:
            why = ", ".join(f"{n}x {k}" for k, n in bar.retry_reasons.most_common(3))
            line += f" after {bar.retries} retries ({why})"
        if failed:
            line += f"; {len(failed)} failed for good ({failure_reasons(failed)})"
        bar.write(line)

    def _generate_threads(self, todo: dict[str, Request], fresh: dict, bar) -> _Stop | None:
        stop_flag = threading.Event()
        stop: _Stop | None = None
        items = iter(todo.items())
        width = self.limits.concurrency
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="phi1-llm") as pool:
            running: dict = {}

            def refill():
                while len(running) < width and not stop_flag.is_set():
                    nxt = next(items, None)
                    if nxt is None:
                        return
                    running[pool.submit(self._run_one, nxt[0], nxt[1], stop_flag)] = nxt[0]

            finished = ok = 0
            try:
                refill()
                while running:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        key = running.pop(fut)
                        try:
                            res = fut.result()
                        except _Stop as exc:
                            stop = stop or exc
                            stop_flag.set()
                            continue
                        fresh[key] = res
                        bar.update(res)
                        if not stop_flag.is_set():
                            finished += 1
                            ok += res.ok
                            if not ok and finished >= self.fail_fast_after > 0:
                                stop = stop or self._fail_fast(finished, fresh)
                                stop_flag.set()
                    refill()
            except BaseException:
                # Ctrl-C: send nothing new; requests in flight finish and are stored on the way out.
                stop_flag.set()
                raise
        return stop

    def _fail_fast(self, finished: int, fresh: dict[str, Result]) -> _Stop:
        endpoint = getattr(self.provider, "endpoint", repr(self.provider))
        why = failure_reasons([r for r in fresh.values() if not r.ok], top=2)
        return _Stop(ConfigError(
            f"the first {finished} requests to {endpoint} all failed ({why}); stopped before sending the rest. Fix "
            f"the endpoint or model (--base-url, --model) and rerun the same command"))

    def _generate_local(self, todo: dict[str, Request], fresh: dict, bar) -> _Stop | None:
        """Local models: one batch at a time in this thread (the model uses the cores itself)."""
        items = list(todo.items())
        size = int(self.provider.batch_size)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            outs = self.provider.call_batch([r for _, r in chunk])
            for (key, req), out in zip(chunk, outs):
                res = self._fail(key, req, str(out), 1) if isinstance(out, Exception) else self._settle(key, req, out, 1)
                fresh[key] = res
                bar.update(res)
        return None

    # -- planning --------------------------------------------------------------------------
    def dry_run(self, requests: Iterable[Request], *, expected_output_tokens: float | None = None,
                batch: bool = False, stage: str | None = None):
        """Price the requests not yet stored, calling nothing: a `budget.StageEstimate`.

        Prompt tokens are counted with `self.counter` (its method is named in the estimate);
        output tokens are `expected_output_tokens` per request, or each request's max_tokens.
        """
        requests = list(requests)
        keys = self._keys(requests)
        stored = self.store.get_ok(set(keys))
        todo = {k: r for k, r in zip(keys, requests) if k not in stored}
        tokens_in = sum(self.counter.count_request(r) for r in todo.values())
        if expected_output_tokens is None:
            tokens_out = sum(r.max_tokens for r in todo.values())
            out_note = "output at each request's max_tokens (an upper bound)"
        else:
            tokens_out = float(expected_output_tokens) * len(todo)
            out_note = f"output at {expected_output_tokens:g} tokens per request"
        model, prices = self.price_model, self.prices
        if model is None:
            model = self.provider.cache_id
            prices = prices.with_free(model, source="offline stand-in; no API charge")
        stage = stage or self.stage
        est = budget.estimate_llm(stage, model, tokens_in, tokens_out, prices, batch=batch)
        note = (f"{len(todo)} requests to send ({len(requests) - len(todo)} already stored); prompt tokens by "
                f"{self.counter.method}; {out_note}")
        est.lines.append(budget.LineItem(stage, "llm requests", note, 0.0))
        return est
