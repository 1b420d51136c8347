"""Progress bar for LLM runs (tqdm.auto: notebook-aware): requests done, tokens, dollars, retries, failures, ETA.

Messages during a run (a request that failed for good, the end-of-run summary) go through
`write`, which prints above the bar (tqdm.write) instead of gluing them onto it.
"""

from __future__ import annotations

import collections
import sys
import threading


def retry_reason(exc) -> str:
    """A short name for why a try failed: 'HTTP 429', 'HTTP 500', 'timeout', 'connection error'."""
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status}"
    text = str(exc).lower()
    if "timed out" in text:
        return "timeout"
    if "connection" in text:
        return "connection error"
    return "error"


class Progress:
    """Counts finished requests and retries; tqdm supplies rate and ETA. `enabled=False` makes it silent."""

    def __init__(self, total: int, initial: int, desc: str, *, enabled: bool = True):
        self.tokens = 0
        self.usd = 0.0
        self.failed = 0
        self.retries = 0
        self.retry_reasons: collections.Counter = collections.Counter()
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            # initial = answers already in the store, so the bar shows the whole job.
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="req", dynamic_ncols=True)
            self._bar.set_postfix_str(self._postfix(initial), refresh=False)
        self._cached = initial

    def _postfix(self, cached: int) -> str:
        return (f"{self.tokens:,} tok, ${self.usd:,.4f}, {self.retries} retries, {self.failed} failed, "
                f"{cached} stored before")

    def update(self, result) -> None:
        with self._lock:
            self.tokens += result.prompt_tokens + result.completion_tokens
            self.usd += result.usd
            self.failed += 0 if result.ok else 1
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(self._cached), refresh=False)
                self._bar.update(1)

    def retry(self, exc) -> None:
        """One failed try that will be retried (429, 5xx, timeout): counted on the bar."""
        with self._lock:
            self.retries += 1
            self.retry_reasons[retry_reason(exc)] += 1
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(self._cached), refresh=True)

    def write(self, message: str) -> None:
        """Print a line above the bar (to stderr), or plainly when there is no bar."""
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
