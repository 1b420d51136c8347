"""Progress bar for LLM runs (tqdm.auto: notebook-aware): requests done, tokens, dollars, failures, ETA."""

from __future__ import annotations

import threading


class Progress:
    """Counts finished requests; tqdm supplies rate and ETA. `enabled=False` makes it silent."""

    def __init__(self, total: int, initial: int, desc: str, *, enabled: bool = True):
        self.tokens = 0
        self.usd = 0.0
        self.failed = 0
        self._lock = threading.Lock()
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            # initial = answers already in the store, so the bar shows the whole job.
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="req", dynamic_ncols=True)
            self._bar.set_postfix_str(self._postfix(initial), refresh=False)
        self._cached = initial

    def _postfix(self, cached: int) -> str:
        return f"{self.tokens:,} tok, ${self.usd:,.4f}, {self.failed} failed, {cached} stored before"

    def update(self, result) -> None:
        with self._lock:
            self.tokens += result.prompt_tokens + result.completion_tokens
            self.usd += result.usd
            self.failed += 0 if result.ok else 1
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(self._cached), refresh=False)
                self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
