"""JSONL files that survive crashes: fsync'd appends, reads that skip a torn last line, strict record reads."""

from __future__ import annotations

import gzip
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import DataError
from .paths import atomic_path


def iter_numbered(path: str | os.PathLike, *, strict: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (physical line number, record) for each line of a .jsonl or .jsonl.gz file.

    A line that is not a JSON object (typically the torn tail of a killed writer) is skipped
    with a warning naming file and line; with `strict=True` it raises `DataError` instead, as do
    bytes that are not UTF-8. Blank lines are ignored. A folder or a missing file is a DataError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (expected a JSONL file, one JSON object per line)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a JSONL file (one JSON object per line)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="strict" if strict else "replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    if strict:
                        raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                    warnings.warn(f"{path}:{lineno}: corrupt JSONL line skipped ({exc.msg}); the rest of the file "
                                  "is kept", stacklevel=3)
                    continue
                if not isinstance(obj, dict):
                    msg = f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                    if strict:
                        raise DataError(msg)
                    warnings.warn(msg + "; line skipped", stacklevel=3)
                    continue
                yield lineno, obj
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: not a UTF-8 JSONL file ({exc})") from None


def iter_jsonl(path: str | os.PathLike, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Yield one dict per line of `path` (see iter_numbered: torn lines skipped with a warning unless strict)."""
    for _, obj in iter_numbered(path, strict=strict):
        yield obj


def read_records(path: str | os.PathLike, required: Sequence[str], what: str, hint: str) -> list[dict[str, Any]]:
    """Every line of a .jsonl(.gz) file, strictly, each a record with the `required` fields; errors name file:line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found; {hint}")
    records = []
    for lineno, rec in iter_numbered(path, strict=True):
        missing = [f for f in required if f not in rec]
        if missing:
            raise DataError(f"{path}:{lineno}: {what} record lacks field(s) {missing}; needs {list(required)}")
        records.append(rec)
    return records


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
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    return n
