"""JSONL files that survive crashes: fsync'd appends, and reads that skip a torn last line."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError


def iter_jsonl(path: str | os.PathLike, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Yield one dict per line of `path`.

    A line that is not valid JSON (typically the torn tail of a killed writer) is skipped
    with a warning naming file and line; with `strict=True` it raises `DataError` instead.
    Blank lines are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (expected a JSONL file, one JSON object per line)")
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{path}:{lineno}: corrupt JSONL line skipped ({exc.msg}); the rest of the file is kept"
                if strict:
                    raise DataError(msg) from exc
                warnings.warn(msg, stacklevel=2)
                continue
            if not isinstance(obj, dict):
                msg = f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}; line skipped"
                if strict:
                    raise DataError(msg)
                warnings.warn(msg, stacklevel=2)
                continue
            yield obj


def read_jsonl(path: str | os.PathLike, *, strict: bool = False) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, strict=strict))


def _ends_with_newline(fh) -> bool:
    fh.seek(0, os.SEEK_END)
    if fh.tell() == 0:
        return True
    fh.seek(-1, os.SEEK_END)
    return fh.read(1) == b"\n"


def append_jsonl(path: str | os.PathLike, records: dict | Iterable[dict], *, fsync: bool = True) -> int:
    """Append record(s) as lines and (by default) fsync, so a SIGKILL loses nothing written.

    If the file ends in a torn line (no trailing newline), a newline is written first so the
    new records stay parseable. Returns the number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(records, dict):
        records = [records]
    lines = [json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records]
    with path.open("ab+") as fh:
        prefix = b"" if _ends_with_newline(fh) else b"\n"
        fh.seek(0, os.SEEK_END)
        fh.write(prefix + "".join(lines).encode("utf-8"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return len(lines)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write all records atomically (temp file + rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return n
