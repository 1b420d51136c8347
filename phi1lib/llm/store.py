"""Durable LLM result store: SQLite in WAL mode, one commit per answer, keyed by a request hash.

A run killed at any point (even SIGKILL) keeps every committed answer; the rerun looks keys
up here and pays only for what is missing. Failed requests are stored too (ok=0, with their
error) for the record, but never count as answers: a rerun tries them again. The store also
remembers which spend has reached the usage ledger, which requests were sent and not yet
answered (`mark_sent`: a run killed with requests in flight has them counted at their estimate
by the next run, `claim_in_flight`), and the Batch API jobs in flight.

Bookkeeping stays O(log n) per request however large the store grows: the ledger and in-flight
columns are indexed, so a flush touches only the rows it claims, never the whole table.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    ok INTEGER NOT NULL,
    text TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    finish_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    via_batch INTEGER NOT NULL DEFAULT 0,
    ledgered INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    request TEXT,
    in_flight INTEGER NOT NULL DEFAULT 0,
    sent_usd REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    input_file_id TEXT,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    keys TEXT NOT NULL,
    reserved_usd REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL
);
"""

# Columns added after the first release: older stores get them on open.
MIGRATIONS = {"in_flight": "INTEGER NOT NULL DEFAULT 0", "sent_usd": "REAL NOT NULL DEFAULT 0"}
INDEXES = """
CREATE INDEX IF NOT EXISTS results_ledgered ON results(ledgered);
CREATE INDEX IF NOT EXISTS results_in_flight ON results(in_flight);
"""

RESULT_COLUMNS = (
    "key", "provider", "model", "ok", "text", "error", "prompt_tokens", "completion_tokens",
    "usd", "finish_reason", "attempts", "via_batch", "created", "request",
)


class ResultStore:
    """Thread-safe SQLite store; every `put` is its own committed transaction."""

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "NORMAL"):
        if synchronous not in ("NORMAL", "FULL"):
            raise DataError(f"ResultStore: synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0, isolation_level=None)
            # WAL: readers never block the writer, and a killed process leaves a consistent file
            # (an uncommitted tail of the WAL is discarded on the next open).
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is in the WAL file (the OS has it) before put() returns,
            # so a killed process (even SIGKILL) loses nothing committed; only an OS crash or
            # power loss can drop the last commits. FULL also fsyncs each commit (~4 ms here).
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            for col, decl in MIGRATIONS.items():
                if col not in have:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {col} {decl}")
            self._db.executescript(INDEXES)
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"{self.path}: not a usable LLM result store ({exc}); move it aside or pass another store path"
            ) from exc

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- answers ---------------------------------------------------------------------------
    def get_ok(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Stored successful answers for these keys (missing and failed keys are absent)."""
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        cols = ", ".join(RESULT_COLUMNS)
        with self._lock:
            for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT {cols} FROM results WHERE ok=1 AND key IN ({marks})", chunk)
                for row in rows:
                    found[row[0]] = dict(zip(RESULT_COLUMNS, row))
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        cols = ", ".join(RESULT_COLUMNS)
        with self._lock:
            row = self._db.execute(f"SELECT {cols} FROM results WHERE key=?", (key,)).fetchone()
        return dict(zip(RESULT_COLUMNS, row)) if row else None

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace one result. A failure never overwrites a stored answer."""
        rec = {c: record.get(c) for c in RESULT_COLUMNS}
        rec["created"] = rec["created"] or time.time()
        rec["ok"] = int(bool(rec["ok"]))
        rec["via_batch"] = int(bool(rec["via_batch"]))
        for c in ("prompt_tokens", "completion_tokens", "attempts"):
            rec[c] = int(rec[c] or 0)
        rec["usd"] = float(rec["usd"] or 0.0)
        if isinstance(rec["request"], (dict, list)):
            rec["request"] = json.dumps(rec["request"], ensure_ascii=False, default=str)
        cols = ", ".join(RESULT_COLUMNS)
        marks = ", ".join("?" * len(RESULT_COLUMNS))
        sql = f"INSERT INTO results ({cols}) VALUES ({marks}) ON CONFLICT(key) DO UPDATE SET "
        sql += ", ".join(f"{c}=excluded.{c}" for c in RESULT_COLUMNS if c != "key")
        # New spend on this key has not reached the ledger yet; the request is no longer in flight.
        sql += ", ledgered=CASE WHEN excluded.ok=1 OR excluded.usd>0 THEN 0 ELSE 1 END, in_flight=0, sent_usd=0"
        if not rec["ok"]:
            # A failed retry must not erase an answer we already paid for; its spend (if any)
            # is still recorded by the caller through the ledger.
            sql += " WHERE results.ok = 0"
        with self._lock:
            self._db.execute(sql, [rec[c] for c in RESULT_COLUMNS])
            if not (rec["ok"] or rec["usd"] > 0):  # a fresh failure row: nothing for the ledger
                self._db.execute("UPDATE results SET ledgered=1 WHERE key=? AND ledgered=0 AND ok=0 AND usd=0",
                                 (rec["key"],))

    def mark_sent(self, key: str, *, provider: str, model: str, est_usd: float, request: Any = None) -> None:
        """Record, before it leaves, that a request is being sent and what it may cost at most: if this
        process dies before the answer is stored, the next run counts it as spent (`claim_in_flight`)."""
        if isinstance(request, (dict, list)):
            request = json.dumps(request, ensure_ascii=False, default=str)
        with self._lock:
            self._db.execute(
                "INSERT INTO results (key, provider, model, ok, error, created, request, ledgered, in_flight, sent_usd)"
                " VALUES (?, ?, ?, 0, 'sent, not answered yet', ?, ?, 1, 1, ?)"
                " ON CONFLICT(key) DO UPDATE SET in_flight=1, sent_usd=excluded.sent_usd WHERE results.ok=0",
                (key, provider, model, time.time(), request, float(est_usd)))

    def claim_in_flight(self) -> dict[str, float]:
        """Requests a killed run sent and never stored an answer for: claim them (-1) and return their
        count and estimated dollars. Call `confirm_in_flight()` after writing them to the ledger (a kill
        in between counts them again next time: an over-count, never an under-count)."""
        with self._lock:
            self._db.execute("UPDATE results SET in_flight=-1 WHERE in_flight=1")
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(sent_usd),0) FROM results WHERE in_flight=-1").fetchone()
        return {"requests": row[0], "usd": row[1]}

    def confirm_in_flight(self) -> None:
        with self._lock:
            self._db.execute("UPDATE results SET in_flight=0, sent_usd=0 WHERE in_flight=-1")

    # -- ledger bookkeeping ----------------------------------------------------------------
    def claim_unledgered(self) -> dict[str, float]:
        """Mark spend not yet in the usage ledger as claimed (-1) and return its totals.

        Call `confirm_ledgered()` after writing the ledger line. A kill between the two leaves
        the rows claimed, and the next claim counts them again: the ledger may over-count a
        crash's spend, never under-count it.
        """
        with self._lock:
            # Indexed on `ledgered`: touches only the rows stored since the last flush.
            self._db.execute("UPDATE results SET ledgered=-1 WHERE ledgered=0 AND (ok=1 OR usd>0)")
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(usd),0), COALESCE(SUM(prompt_tokens),0), "
                "COALESCE(SUM(completion_tokens),0) FROM results WHERE ledgered=-1"
            ).fetchone()
        return {"requests": row[0], "usd": row[1], "tokens_in": row[2], "tokens_out": row[3]}

    def confirm_ledgered(self) -> None:
        with self._lock:
            self._db.execute("UPDATE results SET ledgered=1 WHERE ledgered=-1")

    def import_answers(self, other: str | os.PathLike) -> int:
        """Copy the answers of another store (a shard's) that this one lacks; returns how many. Their spend
        keeps its ledger state: what the shard already wrote to the ledger is not counted again here."""
        cols = ", ".join(RESULT_COLUMNS)
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
            try:
                before = self._db.total_changes
                self._db.execute(
                    f"INSERT INTO results ({cols}, ledgered) SELECT {cols}, CASE WHEN ledgered=1 THEN 1 ELSE 0 END "
                    "FROM other.results WHERE ok=1 ON CONFLICT(key) DO UPDATE SET "
                    + ", ".join(f"{c}=excluded.{c}" for c in RESULT_COLUMNS if c != "key")
                    + ", ledgered=excluded.ledgered, in_flight=0, sent_usd=0 WHERE results.ok=0")
                return self._db.total_changes - before
            except sqlite3.DatabaseError as exc:
                raise DataError(f"{other}: not a usable LLM result store ({exc}); remove it or rerun its shard") from exc
            finally:
                self._db.execute("DETACH DATABASE other")

    # -- batch jobs ------------------------------------------------------------------------
    def add_batch(self, batch_id: str, *, input_file_id: str, model: str, endpoint: str, keys: list[str], reserved_usd: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches (batch_id, input_file_id, model, endpoint, keys, reserved_usd, status, created)"
                " VALUES (?, ?, ?, ?, ?, ?, 'submitted', ?)",
                (batch_id, input_file_id, model, endpoint, json.dumps(keys), float(reserved_usd), time.time()),
            )

    def batches(self, *, open_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT batch_id, input_file_id, model, endpoint, keys, reserved_usd, status, created, finished FROM batches"
        if open_only:
            sql += " WHERE finished IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created").fetchall()
        names = ("batch_id", "input_file_id", "model", "endpoint", "keys", "reserved_usd", "status", "created", "finished")
        out = []
        for row in rows:
            d = dict(zip(names, row))
            d["keys"] = json.loads(d["keys"])
            out.append(d)
        return out

    def rename_batch(self, old_id: str, new_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET batch_id=? WHERE batch_id=?", (new_id, old_id))

    def set_batch_status(self, batch_id: str, status: str, *, finished: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE batches SET status=?, finished=? WHERE batch_id=?",
                (status, time.time() if finished else None, batch_id),
            )

    # -- summaries -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(ok),0), COALESCE(SUM(usd),0), COALESCE(SUM(prompt_tokens),0),"
                " COALESCE(SUM(completion_tokens),0) FROM results"
            ).fetchone()
            open_batches = self._db.execute("SELECT COUNT(*) FROM batches WHERE finished IS NULL").fetchone()[0]
        return {
            "results": row[0], "ok": row[1], "failed": row[0] - row[1], "usd": row[2],
            "prompt_tokens": row[3], "completion_tokens": row[4], "open_batches": open_batches,
        }
