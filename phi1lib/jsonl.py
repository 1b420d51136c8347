"""Record files: JSONL that survives crashes (fsync'd appends, reads that skip a torn last line, strict
record reads) and Parquet tables read with the same one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import DataError
from .paths import atomic_path, check_file


def iter_numbered(path: str | os.PathLike, *, strict: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (physical line number, record) for each line of a .jsonl or .jsonl.gz file.

    A line that is not a UTF-8 JSON object (typically the torn tail of a killed writer) is skipped,
    and one warning at the end names the file, the first such line and how many there were; with
    `strict=True` the first one raises `DataError` instead. A file none of whose lines is a JSON
    object (another format, binary data, a wrong encoding) is a DataError either way, unless its
    only line is a torn tail. Blank lines are ignored. A folder, a missing or unreadable file, and
    a .gz that is not gzip are DataErrors naming the path.
    """
    path = check_file(path, "a JSONL file (one JSON object per line)")
    opener = gzip.open if path.suffix == ".gz" else open
    skipped: list[tuple[int, str]] = []
    good, torn_tail = 0, False
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                obj, problem = _parse_line(raw, lineno)
                if problem is None and obj is None:  # blank
                    continue
                if problem is not None:
                    if strict:
                        raise DataError(f"{path}:{lineno}: {problem}; expected one JSON object per line")
                    skipped.append((lineno, problem))
                    torn_tail = not raw.endswith(b"\n")
                    continue
                good += 1
                yield lineno, obj
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); give plain .jsonl or a complete .jsonl.gz") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check the file and its permissions") from None
    if skipped:
        (first, problem), more = skipped[0], len(skipped) - 1
        if not good and not (len(skipped) == 1 and torn_tail):
            raise DataError(f"{path}: not a JSONL file: none of its lines is a JSON object (line {first}: {problem}); "
                            "expected one JSON object per line, UTF-8")
        rest = f", and {more} more (lines {', '.join(str(n) for n, _ in skipped[1:6])}" \
               f"{', ...' if more > 5 else ''})" if more else ""
        warnings.warn(f"{path}:{first}: corrupt JSONL line skipped ({problem}){rest}; the rest of the file is kept",
                      stacklevel=3)


def _parse_line(raw: bytes, lineno: int) -> tuple[Any, str | None]:
    """(record, None), (None, None) for a blank line, or (None, what is wrong with it)."""
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    if not line.strip():
        return None, None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object {{...}}, got {_JSON_TYPES.get(type(obj), type(obj).__name__)}"
    return obj, None


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


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


def parquet_columns(path: str | os.PathLike, *, what: str = "records") -> list[str]:
    """The column names of a Parquet file (its footer only); a missing file, a folder or a file that is
    not Parquet is a DataError naming the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = check_file(path, f"a Parquet file of {what}")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc, what) from None


def read_parquet(path: str | os.PathLike, columns: Sequence[str] | None = None, *, what: str = "records"):
    """A Parquet file as a pyarrow Table (`columns` only, when given). A missing file, a folder, a file
    that is not Parquet, and a missing column are DataErrors naming the path and the columns it has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = parquet_columns(path, what=what)
    missing = [c for c in columns or () if c not in names]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} (columns: {names}); {what} need {list(columns or ())}")
    try:
        return pq.read_table(path, columns=list(columns) if columns else None)
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc, what) from None


def iter_parquet_rows(path: str | os.PathLike, *, what: str = "records", batch_size: int = 1024,
                      columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """A Parquet file's rows as dicts (only `columns` when given), streamed in batches (never the whole file in
    memory). A file that is not Parquet fails before the first row, a damaged page when it is reached: DataErrors
    naming the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    parquet_columns(path, what=what)
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size,
                                                       columns=list(columns) if columns is not None else None):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc, what) from None


def _not_parquet(path: Path, exc: BaseException, what: str) -> DataError:
    return DataError(f"{path}: not a readable Parquet file ({_first_line(exc)}); expected a Parquet file of {what}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


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
