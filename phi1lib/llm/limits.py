"""Client-side rate limits for LLM calls: RPM/TPM token buckets, a shared 429 cool-down, backoff with jitter."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass

from ..errors import ConfigError


class TokenBucket:
    """A token bucket that refills at `rate` per second up to `capacity`.

    `acquire(n)` blocks until the bucket holds min(n, capacity) and then takes n, so the level
    may go negative: a request larger than the whole bucket still goes out (alone, once the
    bucket is full) instead of waiting forever, and the debt delays the requests after it.
    In any window of W seconds at most `capacity + rate * W` units are taken.
    """

    def __init__(self, rate: float, capacity: float, *, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0 or capacity <= 0:
            raise ConfigError(f"token bucket rate and capacity must be > 0, got rate={rate}, capacity={capacity}")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._level = float(capacity)
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, n: float = 1.0) -> float:
        """Take n units, sleeping as needed; returns the seconds waited."""
        waited = 0.0
        need = min(float(n), self.capacity)
        while True:
            with self._lock:
                self._refill()
                if self._level >= need:
                    self._level -= n
                    return waited
                delay = (need - self._level) / self.rate
            # Sleep outside the lock so other threads can refund or check.
            self._sleep(delay)
            waited += delay

    def refund(self, n: float) -> None:
        """Give back units reserved but not used (e.g. estimated minus actual tokens)."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level + n)


@dataclass
class RateLimits:
    """The limits one client enforces; None means unlimited."""

    concurrency: int = 8  # requests in flight at once
    rpm: float | None = None  # requests started per minute
    # Tokens per minute, counted as OpenAI's limiter counts them: prompt tokens + max_tokens at
    # send time, with no refund when the answer is shorter.
    tpm: float | None = None
    burst_s: float = 1.0  # bucket capacity, in seconds of rate: how bursty the start may be

    def __post_init__(self):
        if int(self.concurrency) < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency!r}")
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"{name} must be > 0 or None (unlimited), got {v!r}")
        if not self.burst_s > 0:
            raise ConfigError(f"burst_s must be > 0 seconds, got {self.burst_s!r}")


class Throttle:
    """Everything a worker waits on before sending: RPM, TPM and a cool-down set by 429s."""

    def __init__(self, limits: RateLimits):
        self.limits = limits
        self.rpm = self._bucket(limits.rpm, limits.burst_s)
        self.tpm = self._bucket(limits.tpm, limits.burst_s)
        self._cooldown_until = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _bucket(per_minute, burst_s):
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        return TokenBucket(rate, max(1.0, rate * burst_s))

    def cool_down(self, seconds: float) -> None:
        """After a 429 every worker pauses, not just the one that got it."""
        with self._lock:
            self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)

    def wait(self, tokens: int) -> None:
        while True:
            with self._lock:
                left = self._cooldown_until - time.monotonic()
            if left <= 0:
                break
            time.sleep(left)
        if self.rpm is not None:
            self.rpm.acquire(1)
        if self.tpm is not None:
            self.tpm.acquire(tokens)

@dataclass
class Backoff:
    """Exponential backoff with full jitter; a server's Retry-After wins when it is given."""

    max_attempts: int = 6  # total tries per request, first one included
    base_s: float = 1.0  # first backoff before jitter
    max_s: float = 60.0  # ceiling of one wait
    seed: int | None = None

    def __post_init__(self):
        if int(self.max_attempts) < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.base_s < 0 or self.max_s < 0:
            raise ConfigError(f"backoff seconds must be >= 0, got base_s={self.base_s}, max_s={self.max_s}")
        self._rng = random.Random(self.seed)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            # Honour the server exactly, plus a little jitter so workers don't return in lockstep.
            return max(0.0, retry_after) + self._rng.uniform(0, 0.1 * max(retry_after, 0.1))
        cap = min(self.max_s, self.base_s * (2 ** (attempt - 1)))
        return self._rng.uniform(0.5 * cap, cap)


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent or bad."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
