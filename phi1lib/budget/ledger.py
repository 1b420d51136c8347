"""Usage ledger: what each stage measured (tokens, GPU/CPU-seconds, dollars) against its estimate, under a cap.

One fsync'd JSONL line per record, so a killed run loses nothing it paid for; reloading the
file restores the running total (a torn line is skipped with a warning), and lines other
processes append to the same file count against the same cap. `check` raises
`BudgetExceeded` *before* a spend that would cross the cap; `reserve` does the same for
concurrent callers by holding the amount until the matching `record`.

One cap per job: a cap given to a file-backed ledger is written into the file (a `kind: "cap"`
line), so every later command on the same run folder honours it without being told again; a
new cap replaces it the same way. Dollar amounts in messages keep their significant digits
(`usd_text`): $0.00257 is never shown as $0.0000, nor a $0.005 cap as $0.01.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..errors import BudgetExceeded, ConfigError
from ..jsonl import append_jsonl

_NUMERIC = ("usd", "tokens_in", "tokens_out", "gpu_seconds", "cpu_seconds")


def usd_text(value: float) -> str:
    """Dollars with the digits that matter: $2,500.00, $12.35, $0.005, $0.00257, $0.000112."""
    value = float(value)
    if abs(value) >= 10 or value == 0:
        return f"${value:,.2f}"
    text = f"{value:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _num(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"ledger: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Ledger:
    """Running account of spend; persisted to `path` (JSONL) when given, in memory otherwise."""

    def __init__(self, path: str | os.PathLike | None = None, cap_usd: float | None = None):
        """`cap_usd`: the job's cap; None keeps the cap stored in the file (if any). A file-backed ledger
        writes a new cap into the file, so later commands on the run folder honour it too."""
        if cap_usd is not None:
            cap_usd = _num("cap_usd", cap_usd)
        self.path = Path(path) if path is not None else None
        self.cap_usd: float | None = None
        self.cap_source = ""  # where the cap came from, for messages
        self._lock = threading.RLock()
        self._records: list[dict[str, Any]] = []
        self._reserved = 0.0
        self._spent = 0.0
        self._offset = 0  # bytes of the file already read: other processes' appends are picked up
        self._warned: set[int] = set()
        self._refresh()
        if cap_usd is not None:
            self.set_cap(cap_usd, source="--cap-usd" if self.path is not None else "")

    def set_cap(self, cap_usd: float | None, source: str = "--cap-usd") -> None:
        """Make `cap_usd` the job's cap (None: no cap); written into the file when it changes."""
        cap = None if cap_usd is None else _num("cap_usd", cap_usd)
        with self._lock:
            self._refresh()
            if cap == self.cap_usd:
                return
            if self.path is not None:
                self.record("cap", kind="cap", cap_usd=cap, source=source)
            else:
                self.cap_usd, self.cap_source = cap, source

    def _refresh(self) -> None:
        """Read lines appended since the last read (by us or another process sharing the file)."""
        if self.path is None or not self.path.exists():
            return
        with self._lock:
            if self.path.stat().st_size <= self._offset:
                return
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            tail = data[len(complete):]
            start = self._offset
            for raw in complete.splitlines(keepends=True):
                self._parse(raw, start)
                start += len(raw)
            self._offset = start
            if tail.strip():  # no newline yet: a writer killed mid-line, or one still writing
                try:
                    json.loads(tail)
                except json.JSONDecodeError:
                    self._warn(start, "torn last line skipped (a writer was killed mid-line)")

    def _parse(self, raw: bytes, at: int) -> None:
        if not raw.strip():
            return
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._warn(at, "corrupt line skipped")
            return
        if isinstance(obj, dict):
            self._add(obj)

    def _add(self, rec: dict[str, Any]) -> None:
        self._records.append(rec)
        if rec.get("kind") == "cap":  # the job's cap, as last set in the file
            cap = rec.get("cap_usd")
            ok = cap is None or (isinstance(cap, (int, float)) and not isinstance(cap, bool)
                                 and math.isfinite(cap) and cap >= 0)
            if ok:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(rec.get("ts") or 0)))
                self.cap_usd = None if cap is None else float(cap)
                self.cap_source = f"{rec.get('source') or 'set'} on {when}, kept in {self.path}"
            else:
                self._warn(-len(self._records), f"cap line with a bad cap_usd {cap!r}")
        try:
            self._spent += float(rec.get("usd") or 0.0)
        except (TypeError, ValueError):
            self._warn(-len(self._records), f"record {len(self._records)} has a non-numeric usd {rec.get('usd')!r}")

    def _warn(self, at: int, what: str) -> None:
        if at not in self._warned:
            self._warned.add(at)
            warnings.warn(f"{self.path} (byte {at}): {what}; the other records are kept", stacklevel=3)

    # ---- totals --------------------------------------------------------------------------
    @property
    def records(self) -> list[dict[str, Any]]:
        """Spend and estimate records, oldest first (the job's cap lines are in `cap_usd`, not here)."""
        with self._lock:
            self._refresh()
            return [r for r in self._records if r.get("kind") != "cap"]

    @property
    def spent_usd(self) -> float:
        with self._lock:
            self._refresh()
            return self._spent  # running sum: checks stay O(1) however long the ledger grows

    @property
    def reserved_usd(self) -> float:
        return self._reserved

    @property
    def remaining_usd(self) -> float:
        """Dollars left under the cap (after reservations); infinity when there is no cap."""
        if self.cap_usd is None:
            return math.inf
        with self._lock:
            return max(0.0, self.cap_usd - self.spent_usd - self._reserved)

    # ---- the cap -------------------------------------------------------------------------
    def check(self, usd: float, what: str = "this call", *, pending_usd: float = 0.0) -> None:
        """Raise BudgetExceeded if spending `usd` more would cross the cap; spends nothing.

        `pending_usd`: spend already made but not yet written here (it counts as spent)."""
        usd = _num("usd", usd)
        if self.cap_usd is None:
            return
        with self._lock:
            spent = self.spent_usd + max(0.0, float(pending_usd))
            committed = spent + self._reserved
            if committed + usd > self.cap_usd + 1e-12:
                where = f" ({self.cap_source})" if self.cap_source else ""
                raise BudgetExceeded(
                    f"{what} may cost up to {usd_text(usd)}, but the job's {usd_text(self.cap_usd)} cap{where} has "
                    f"{usd_text(max(0.0, self.cap_usd - committed))} left: {usd_text(spent)} spent and "
                    f"{usd_text(self._reserved)} reserved by requests in flight. Nothing more was sent; raise the cap "
                    "(--cap-usd) and rerun the same command to continue (stored answers are not paid again)",
                    spent_usd=committed, cap_usd=self.cap_usd, needed_usd=usd)

    @contextlib.contextmanager
    def reserve(self, usd: float, what: str = "this call") -> Iterator[None]:
        """Hold `usd` against the cap while a call is in flight (check + reserve atomically)."""
        usd = _num("usd", usd)
        with self._lock:
            self.check(usd, what)
            self._reserved += usd
        try:
            yield
        finally:
            with self._lock:
                self._reserved = max(0.0, self._reserved - usd)

    # ---- recording -----------------------------------------------------------------------
    def record(self, stage: str, *, usd: float = 0.0, tokens_in: float = 0, tokens_out: float = 0,
               gpu_seconds: float = 0.0, cpu_seconds: float = 0.0, estimate_usd: float | None = None,
               **meta: Any) -> dict[str, Any]:
        """Append one measured-usage record (fsync'd before returning) and return it."""
        if not isinstance(stage, str) or not stage:
            raise ConfigError(f"ledger: stage must be a non-empty string, got {stage!r}")
        rec: dict[str, Any] = {"ts": time.time(), "stage": stage}
        for name, value in zip(_NUMERIC, (usd, tokens_in, tokens_out, gpu_seconds, cpu_seconds)):
            rec[name] = _num(name, value)
        rec["estimate_usd"] = None if estimate_usd is None else _num("estimate_usd", estimate_usd)
        for key in meta:
            if key in rec:
                raise ConfigError(f"ledger: meta key {key!r} clashes with a ledger field")
        rec.update(meta)
        with self._lock:
            if self.path is not None:
                self._refresh()  # catch up first, so our own line is the next one read
                append_jsonl(self.path, rec)
                self._refresh()
            else:
                self._add(rec)
        return rec

    def record_estimate(self, estimate, *, stage: str | None = None) -> dict[str, Any]:
        """Store a stage's estimate (a costs.StageEstimate or dollars) so summary() can compare."""
        usd = getattr(estimate, "cost_usd", estimate)
        name = stage or getattr(estimate, "stage", None)
        if name is None:
            raise ConfigError("ledger.record_estimate: pass stage= when giving a plain dollar amount")
        return self.record(name, estimate_usd=float(usd), kind="estimate")

    # ---- reporting -----------------------------------------------------------------------
    def by_stage(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.records:
            row = out.setdefault(r.get("stage", "?"), {k: 0.0 for k in ("estimate_usd",) + _NUMERIC} | {"calls": 0})
            for k in _NUMERIC:
                row[k] += float(r.get(k) or 0.0)
            row["estimate_usd"] += float(r.get("estimate_usd") or 0.0)
            row["calls"] += 0 if r.get("kind") == "estimate" else 1
        return out

    def summary(self):
        """DataFrame, one row per stage: estimate vs measured dollars, tokens, GPU/CPU-hours."""
        import pandas as pd

        rows = []
        for stage, r in self.by_stage().items():
            rows.append({"stage": stage, "estimate_usd": r["estimate_usd"], "spent_usd": r["usd"],
                         "spent/estimate": (r["usd"] / r["estimate_usd"]) if r["estimate_usd"] else float("nan"),
                         "tokens_in": int(r["tokens_in"]), "tokens_out": int(r["tokens_out"]),
                         "gpu_hours": r["gpu_seconds"] / 3600.0, "cpu_hours": r["cpu_seconds"] / 3600.0,
                         "calls": int(r["calls"])})
        cols = ["stage", "estimate_usd", "spent_usd", "spent/estimate", "tokens_in", "tokens_out", "gpu_hours",
                "cpu_hours", "calls"]
        return pd.DataFrame(rows, columns=cols).set_index("stage")

    def __repr__(self) -> str:
        cap = "no cap" if self.cap_usd is None else f"cap {usd_text(self.cap_usd)}"
        return f"Ledger({self.path or 'in memory'}, spent {usd_text(self.spent_usd)}, {cap})"


def job_ledger(path: str | os.PathLike, ledger: Ledger | None = None, cap_usd: float | None = None) -> Ledger:
    """The job's ledger: `ledger` if given, else the one at `path` (a run folder's ledger.jsonl, which keeps the
    job's cap across commands and reruns); `cap_usd`, when given, becomes the job's cap."""
    if ledger is None:
        ledger = Ledger(path)
    if cap_usd is not None:
        ledger.set_cap(cap_usd, source="--cap-usd")
    return ledger
