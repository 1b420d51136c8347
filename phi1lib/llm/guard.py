"""Budget guard for LLM calls: worst-case reservations under the cap, and spend fed from the store to the ledger."""

from __future__ import annotations

import threading
import time

from ..budget.ledger import usd_text
from ..errors import BudgetExceeded


class SpendGuard:
    """Keeps an LLM client under its caps: the ledger's (shared) and an optional client-level one.

    Each request reserves its worst case (prompt tokens + max_tokens at list price) before it
    is sent, through `Ledger.reserve`, so requests in flight together can never cross the cap;
    the reservation is released when the answer is stored. Spend reaches the ledger in
    batches (`flush`) straight from the store's not-yet-ledgered rows, so a killed run's spend
    is recorded by the next run; until then it still counts against the cap here. Requests a
    killed run had in flight (sent, never stored) are charged at their worst-case estimate by
    `recover` (the provider billed them; the store has no answer to say how much).
    Each flush reads only the rows stored since the last one (indexed), so it costs the same
    at 10k stored answers as at 1M.
    """

    def __init__(self, ledger, store, *, cap_usd: float | None, stage: str, provider_id: str,
                 flush_every: int = 50, flush_s: float = 10.0):
        self.ledger = ledger
        self.store = store
        self.cap_usd = cap_usd  # an extra, client-level cap on top of the ledger's
        self.stage = stage
        self.provider_id = provider_id
        self.flush_every, self.flush_s = int(flush_every), float(flush_s)
        self._lock = threading.Lock()
        self.unflushed_usd = 0.0
        self.spent_usd = 0.0  # by this client
        self.reserved_usd = 0.0  # by this client's requests in flight
        self._since_flush = 0
        self._last_flush = time.monotonic()

    def check(self, usd: float, what: str, committed: float = 0.0) -> None:
        """Raise BudgetExceeded if `usd` more (on top of `committed`, e.g. open batches) would cross a cap."""
        # Spend stored but not yet written to the ledger counts as spent.
        self.ledger.check(usd + committed, what, pending_usd=self.unflushed_usd)
        if self.cap_usd is not None:
            used = self.spent_usd + self.reserved_usd + committed
            if used + usd > self.cap_usd + 1e-12:
                raise BudgetExceeded(
                    f"{what} may cost up to {usd_text(usd)}, but this client's {usd_text(self.cap_usd)} cap has "
                    f"{usd_text(max(0.0, self.cap_usd - used))} left: {usd_text(self.spent_usd)} spent and "
                    f"{usd_text(self.reserved_usd + committed)} reserved. Nothing more was sent; raise cap_usd and "
                    "rerun to continue (stored answers are not paid again)",
                    spent_usd=used, cap_usd=self.cap_usd, needed_usd=usd)

    def reserve(self, usd: float, what: str):
        """Check and hold `usd`; returns a handle for `release` (held across retries)."""
        with self._lock:
            self.check(usd, what)
            handle = self.ledger.reserve(usd, what)  # visible to other clients sharing the ledger
            handle.__enter__()
            self.reserved_usd += usd
        return handle, usd

    def release(self, held) -> None:
        handle, usd = held
        with self._lock:
            handle.__exit__(None, None, None)
            self.reserved_usd = max(0.0, self.reserved_usd - usd)

    def account(self, usd: float) -> None:
        """Count one stored answer's spend; flush to the ledger every `flush_every` answers or `flush_s` seconds."""
        with self._lock:
            self.unflushed_usd += usd
            self.spent_usd += usd
            self._since_flush += 1
            due = self._since_flush >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_s
        if due:
            self.flush()

    def recover(self) -> dict[str, float]:
        """Charge requests a killed run left in flight at their estimate (once); returns what was charged."""
        with self._lock:
            got = self.store.claim_in_flight()
            if got["requests"]:
                self.ledger.record(self.stage, usd=got["usd"], requests=got["requests"], provider=self.provider_id,
                                   kind="in-flight at a kill",
                                   note="sent by a run that was killed before their answers were stored: the "
                                        "provider may have billed them, so they count at their worst-case estimate")
            self.store.confirm_in_flight()
        return got

    def flush(self, **meta) -> None:
        """Write spend stored since the last flush (including a killed run's) to the ledger."""
        with self._lock:
            got = self.store.claim_unledgered()
            if got["requests"]:
                self.ledger.record(self.stage, usd=got["usd"], tokens_in=got["tokens_in"], tokens_out=got["tokens_out"],
                                   requests=got["requests"], provider=self.provider_id, **meta)
            self.store.confirm_ledgered()
            self.unflushed_usd = max(0.0, self.unflushed_usd - got["usd"])
            self._since_flush = 0
            self._last_flush = time.monotonic()
