"""Corpus readers: code samples (id, source, path, text, meta) from folders, JSONL/Parquet files and the hub.

Every reader yields plain dicts and counts what it skipped (non-UTF-8, empty, huge, binary,
unparseable when splitting into functions) in a `CorpusStats`, so a run can report exactly
how much of its input it used. The offline default is the Python installed on this machine
(standard library + site-packages), sampled with a seed and round-robin over top-level
packages so a small sample is not all from one package.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import site
import sysconfig
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import ConfigError, DataError
from ..jsonl import iter_jsonl, iter_parquet_rows

GRANULARITIES = ("file", "function")
DEFAULT_MAX_BYTES = 100_000  # files above this are "huge": generated tables, vendored bundles

# Hub datasets the paper draws from. `data_dir`/field names follow the dataset cards; a user
# with a different dump passes their own spec (any name or local folder `load_dataset` accepts).
HUB_SOURCES: dict[str, dict[str, Any]] = {
    "the-stack-python": {"name": "bigcode/the-stack-dedup", "data_dir": "data/python", "split": "train",
                         "text_field": "content", "path_field": "max_stars_repo_path", "id_field": "hexsha"},
    "stackoverflow": {"name": "mikex86/stackoverflow-posts", "data_dir": None, "split": "train",
                      "text_field": ["Title", "Body"], "path_field": None, "id_field": "Id"},
}


@dataclass
class CorpusStats:
    """What a reader saw: samples yielded and files/records skipped, by reason."""

    files_seen: int = 0
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"non_utf8": 0, "empty": 0, "huge": 0, "binary": 0,
                                                              "syntax_error": 0, "unreadable": 0})

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_id(source: str, path: str, text: str) -> str:
    """Stable id: the same text at the same place always gets the same id (cache and join key)."""
    h = hashlib.sha1(f"{source}\0{path}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()
    return h[:16]


def check_text(text: str, stats: CorpusStats, max_bytes: int) -> bool:
    """Apply the skip rules to a decoded text; counts the reason and returns False if it is skipped."""
    if not text.strip():
        stats.skip("empty")
        return False
    if "\x00" in text:
        stats.skip("binary")
        return False
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        stats.skip("huge")
        return False
    return True


def read_source_file(path: Path, stats: CorpusStats, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """The file's text, or None (and the reason counted) if it is unreadable, binary, huge, empty or not UTF-8."""
    stats.files_seen += 1
    try:
        size = path.stat().st_size
        if size > max_bytes:  # decide before reading: a huge file is never loaded
            stats.skip("huge")
            return None
        raw = path.read_bytes()
    except OSError:
        stats.skip("unreadable")
        return None
    if b"\x00" in raw[:8192]:
        stats.skip("binary")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("non_utf8")
        return None
    return text if check_text(text, stats, max_bytes) else None


def split_functions(text: str) -> list[tuple[str, str]]:
    """Top-level functions and classes of a module as (qualname, source); raises SyntaxError."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            out.append((node.name, "".join(lines[start:node.end_lineno])))
    return out


def _samples_from_text(text: str, source: str, path: str, granularity: str, stats: CorpusStats,
                       meta: dict | None = None) -> Iterator[dict[str, Any]]:
    meta = dict(meta or {})
    if granularity == "file":
        stats.samples += 1
        yield {"id": sample_id(source, path, text), "source": source, "path": path, "text": text,
               "meta": {**meta, "unit": "file"}}
        return
    try:
        parts = split_functions(text)
    except (SyntaxError, ValueError, RecursionError):  # Python 2 files and broken sources exist in the wild
        stats.skip("syntax_error")
        return
    for name, code in parts:
        if not code.strip():
            continue
        stats.samples += 1
        yield {"id": sample_id(source, f"{path}::{name}", code), "source": source, "path": f"{path}::{name}",
               "text": code, "meta": {**meta, "unit": "function", "name": name}}


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r}; choose one of {', '.join(GRANULARITIES)}")


def read_folder(root: str | os.PathLike, *, granularity: str = "file", max_bytes: int = DEFAULT_MAX_BYTES,
                limit: int | None = None, stats: CorpusStats | None = None, source: str = "folder",
                files: Iterable[Path] | None = None) -> Iterator[dict[str, Any]]:
    """Samples from the `.py` files under `root` (sorted walk, or the given `files` in that order)."""
    _check_granularity(granularity)
    root = Path(root)
    if files is None:
        if not root.is_dir():
            raise DataError(f"{root}: corpus folder not found; pass a folder containing .py files")
        files = sorted(root.rglob("*.py"))
    stats = stats if stats is not None else CorpusStats()
    n = 0
    for path in files:
        text = read_source_file(Path(path), stats, max_bytes)
        if text is None:
            continue
        try:
            rel = str(Path(path).relative_to(root))
        except ValueError:
            rel = str(path)
        for rec in _samples_from_text(text, source, rel, granularity, stats):
            yield rec
            n += 1
            if limit is not None and n >= limit:
                return


def installed_python_roots() -> list[Path]:
    """The standard library and every site-packages folder of the running interpreter."""
    roots = [sysconfig.get_paths()["stdlib"], *site.getsitepackages()]
    out: list[Path] = []
    for r in roots:
        p = Path(r).resolve()
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _group_files(roots: list[Path]) -> "OrderedDict[str, list[tuple[Path, Path]]]":
    """(root, file) pairs of .py files grouped by top-level package (stdlib modules each form their own group)."""
    groups: dict[str, list[tuple[Path, Path]]] = {}
    site_dirs = [r for r in roots if r.name in ("site-packages", "dist-packages")]
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dp = Path(dirpath)
            # site-packages sits inside the stdlib folder of a venv-less install: walk it once, as its own root.
            dirnames[:] = sorted(d for d in dirnames if dp / d not in site_dirs and d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    rel = (dp / fn).relative_to(root)
                    key = f"{root.name}/{rel.parts[0]}"
                    groups.setdefault(key, []).append((root, dp / fn))
    return OrderedDict(sorted(groups.items()))


def iter_installed_python(n: int, *, seed: int = 0, granularity: str = "file",
                          max_bytes: int = DEFAULT_MAX_BYTES, stats: CorpusStats | None = None,
                          roots: list[Path] | None = None) -> Iterator[dict[str, Any]]:
    """`n` samples of the Python installed here, streamed; deterministic for a seed and spread across packages.

    Files are shuffled within each top-level package, packages are shuffled, then files are
    taken round-robin (one per package per round) until `n` samples are read.
    """
    _check_granularity(granularity)
    if n <= 0:
        raise ConfigError(f"corpus_samples={n}; need a positive number of samples")
    roots = roots or installed_python_roots()
    rng = random.Random(seed)
    queues = []
    for key, files in _group_files(roots).items():
        files = list(files)
        rng.shuffle(files)
        queues.append((key, files))
    rng.shuffle(queues)
    stats = stats if stats is not None else CorpusStats()
    count, depth = 0, 0
    while count < n and any(depth < len(f) for _, f in queues):
        for key, files in queues:
            if depth >= len(files):
                continue
            root, path = files[depth]
            text = read_source_file(path, stats, max_bytes)
            if text is None:
                continue
            src = "stdlib" if root.name not in ("site-packages", "dist-packages") else "site-packages"
            for rec in _samples_from_text(text, src, str(path.relative_to(root)), granularity, stats,
                                          {"package": key.split("/", 1)[1]}):
                count += 1
                stats.samples = count
                yield rec
                if count >= n:
                    return
        depth += 1
    stats.samples = count


def read_installed_python(n: int, *, seed: int = 0, granularity: str = "file",
                          max_bytes: int = DEFAULT_MAX_BYTES, stats: CorpusStats | None = None,
                          roots: list[Path] | None = None) -> list[dict[str, Any]]:
    """`iter_installed_python` as a list (small samples: estimates, benchmarks)."""
    return list(iter_installed_python(n, seed=seed, granularity=granularity, max_bytes=max_bytes, stats=stats,
                                      roots=roots))


def _join_fields(row: dict, fields: str | list[str]) -> Any:
    if isinstance(fields, str):
        return row.get(fields)
    parts = [str(row[f]) for f in fields if row.get(f) not in (None, "")]
    return "\n\n".join(parts)


def _records_from_rows(rows: Iterable[dict], *, source: str, where: str, text_field: str | list[str],
                       path_field: str | None, id_field: str | None, granularity: str, max_bytes: int,
                       limit: int | None, stats: CorpusStats) -> Iterator[dict[str, Any]]:
    n = 0
    needed = [text_field] if isinstance(text_field, str) else list(text_field)
    for i, row in enumerate(rows):
        stats.files_seen += 1
        if i == 0:
            missing = [f for f in needed if f not in row]
            if missing:
                raise DataError(f"{where}: records have no field(s) {missing}; fields present: {sorted(row)}; "
                                f"pass text_field= one of them")
        text = _join_fields(row, text_field)
        if not isinstance(text, str):
            stats.skip("empty" if text is None else "binary")
            continue
        if not check_text(text, stats, max_bytes):
            continue
        path = str(row.get(path_field) or "") if path_field else ""
        path = path or f"{where}#{i}"
        meta = {"row": i}
        if id_field and row.get(id_field) is not None:
            meta["source_id"] = str(row[id_field])
        for rec in _samples_from_text(text, source, path, granularity, stats, meta):
            yield rec
            n += 1
            if limit is not None and n >= limit:
                return


def read_table(path: str | os.PathLike, *, text_field: str | list[str] = "text", path_field: str | None = "path",
               id_field: str | None = "id", granularity: str = "file", max_bytes: int = DEFAULT_MAX_BYTES,
               limit: int | None = None, stats: CorpusStats | None = None) -> Iterator[dict[str, Any]]:
    """Samples from a JSONL (.jsonl, .json) or Parquet file, one record per row."""
    _check_granularity(granularity)
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found; pass a .jsonl or .parquet file")
    if path.suffix in (".jsonl", ".json"):
        rows: Iterable[dict] = iter_jsonl(path)
    elif path.suffix == ".parquet":
        rows = iter_parquet_rows(path, what="corpus records")  # not Parquet: one line, before the first row
    else:
        raise DataError(f"{path}: unknown corpus file type {path.suffix!r}; use .jsonl or .parquet")
    yield from _records_from_rows(rows, source=path.stem, where=str(path), text_field=text_field,
                                  path_field=path_field, id_field=id_field, granularity=granularity,
                                  max_bytes=max_bytes, limit=limit, stats=stats)


def read_hub(name: str, *, data_dir: str | None = None, split: str = "train", text_field: str | list[str] = "content",
             path_field: str | None = None, id_field: str | None = None, granularity: str = "file",
             max_bytes: int = DEFAULT_MAX_BYTES, limit: int | None = None, stats: CorpusStats | None = None,
             source: str | None = None, **load_kwargs) -> Iterator[dict[str, Any]]:
    """Samples streamed from a `datasets` dataset: a hub id (needs network, maybe a token) or a local folder.

    Streaming means the first samples arrive without downloading the whole dataset (The Stack's
    Python subset alone is hundreds of GB).
    """
    _check_granularity(granularity)
    import datasets

    kwargs = dict(load_kwargs)
    if data_dir:
        kwargs["data_dir"] = data_dir
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True, **kwargs)
    except FileNotFoundError as exc:
        raise DataError(f"dataset {name!r} (data_dir={data_dir!r}) not found: {exc}. Pass a hub id (with network "
                        f"and, for gated sets like The Stack, `huggingface-cli login`) or a local folder of "
                        f"parquet/jsonl files") from exc
    except ConnectionError as exc:
        raise DataError(f"dataset {name!r}: the hub is unreachable ({exc}); offline, use the installed Python "
                        f"corpus (--corpus installed) or a local folder") from exc
    stats = stats if stats is not None else CorpusStats()
    yield from _records_from_rows(iter(ds), source=source or Path(name).name, where=name, text_field=text_field,
                                  path_field=path_field, id_field=id_field, granularity=granularity,
                                  max_bytes=max_bytes, limit=limit, stats=stats)


def iter_corpus(spec: str, n: int, *, seed: int = 0, granularity: str = "file", max_bytes: int = DEFAULT_MAX_BYTES,
                text_field: str | list[str] | None = None,
                stats: CorpusStats | None = None) -> Iterator[dict[str, Any]]:
    """Up to `n` samples from a corpus spec, streamed (never the whole corpus in memory).

    spec: "installed" (this machine's Python), a known hub source ("the-stack-python",
    "stackoverflow"), "hub:<dataset id or folder>", a folder of .py files, or a .jsonl/.parquet file.
    """
    stats = stats if stats is not None else CorpusStats()
    if spec == "installed":
        return iter_installed_python(n, seed=seed, granularity=granularity, max_bytes=max_bytes, stats=stats)
    if spec in HUB_SOURCES or spec.startswith("hub:"):
        src = dict(HUB_SOURCES.get(spec) or {"name": spec[4:], "data_dir": None, "split": "train",
                                             "text_field": "content", "path_field": None, "id_field": None})
        if text_field is not None:
            src["text_field"] = text_field
        name = src.pop("name")
        return read_hub(name, granularity=granularity, max_bytes=max_bytes, limit=n, stats=stats,
                        source=spec.removeprefix("hub:"), **src)
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_folder(path, granularity=granularity, max_bytes=max_bytes, limit=n, stats=stats)
    if path.is_file():
        return read_table(path, text_field=text_field or "text", granularity=granularity, max_bytes=max_bytes,
                          limit=n, stats=stats)
    raise ConfigError(f"corpus={spec!r} is neither 'installed', a hub source ({', '.join(HUB_SOURCES)}, "
                      f"hub:<id>), an existing folder of .py files, nor a .jsonl/.parquet file")


def load_corpus(spec: str, n: int, *, seed: int = 0, granularity: str = "file", max_bytes: int = DEFAULT_MAX_BYTES,
                text_field: str | list[str] | None = None, stats: CorpusStats | None = None) -> list[dict[str, Any]]:
    """`iter_corpus` as a list (small samples: the estimate's prompt sample, benchmarks)."""
    return list(iter_corpus(spec, n, seed=seed, granularity=granularity, max_bytes=max_bytes, text_field=text_field,
                            stats=stats))


# ---- the pool as JSONL shards (what the datatrove pipelines read) ------------------------------------

@dataclass
class PoolShards:
    """The candidate pool on disk: `<folder>/<k:05d>.jsonl`, contiguous runs of the pool in reading order,
    each record `id, source, path, text, shard` plus what `write_shards` was asked to add. Read back by
    streaming; `take` and `texts` read only what they return."""

    folder: Path
    files: list[Path]
    n: int

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for f in self.files:
            yield from iter_jsonl(f, strict=True)

    def take(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        """The records at these pool positions, in the order given."""
        indices = [int(i) for i in indices]
        wanted = set(indices)
        found = {i: rec for i, rec in enumerate(self) if i in wanted}
        missing = wanted - set(found)
        if missing:
            raise DataError(f"{self.folder}: pool positions {sorted(missing)[:5]} out of range (pool of {self.n})")
        return [found[i] for i in indices]

    def texts(self, ids: Iterable[str]) -> dict[str, str]:
        """{id: text} of these sample ids (the first record of each id)."""
        wanted, out = set(ids), {}
        for rec in self:
            if rec["id"] in wanted and rec["id"] not in out:
                out[rec["id"]] = rec["text"]
        return out


def write_shards(records: Iterable[dict[str, Any]], folder: str | os.PathLike, per_shard: int,
                 extra=None) -> PoolShards:
    """Stream `records` into JSONL shards of `per_shard` records (`<folder>/00000.jsonl`, ...), replacing any
    shards already there; each record keeps id/source/path/text, gets its `shard` name and `extra(record)`'s
    fields. Only one record is held at a time; each shard file appears whole (written aside, then renamed)."""
    if per_shard < 1:
        raise ConfigError(f"per_shard={per_shard}: need at least 1 record per shard")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    files: list[Path] = []
    n, fh, tmp = 0, None, None
    try:
        for rec in records:
            if n % per_shard == 0:
                if fh is not None:
                    fh.close()
                    os.replace(tmp, files[-1])
                files.append(folder / f"{len(files):05d}.jsonl")
                tmp = files[-1].with_name(f".{files[-1].name}.tmp")
                fh = open(tmp, "w", encoding="utf-8")
            row = {"id": rec["id"], "source": rec["source"], "path": rec["path"], "text": rec["text"],
                   "shard": files[-1].stem, **(extra(rec) if extra else {})}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if fh is not None:
            fh.close()
            os.replace(tmp, files[-1])
    return PoolShards(folder, files, n)
