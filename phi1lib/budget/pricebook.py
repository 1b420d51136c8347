"""Price books: dated, sourced prices read from `costs/prices/*.toml`, validated field by field.

Every number carries `source` and `as_of`. Dated snapshots of one product (gpt-3.5-turbo in
March 2023 vs January 2024, a p4d.24xlarge before and after the June-2025 AWS cut) are separate
entries tied together by an `[alias]`; an alias resolves to the newest snapshot whose `as_of`
is on or before the book's date, so one scenario can be priced "as of mid-2023" or "today".
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError, unknown_choice
from ..paths import check_file, costs_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class LLMPrice:
    name: str
    input_per_1k: float  # USD per 1,000 prompt tokens
    output_per_1k: float  # USD per 1,000 completion tokens
    source: str
    as_of: dt.date | None
    file: str = ""
    free: bool = False  # a local model or offline stand-in: no API charge


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float  # dense bf16/fp16 peak (fp32 for "cpu"), TFLOP/s per device
    source: str
    as_of: dt.date | None
    memory_gb: float = 0.0
    default_rental: str = ""  # rental used when a scenario names only the GPU
    file: str = ""


@dataclass(frozen=True)
class Rental:
    name: str
    usd_per_hour: float  # USD per hour for the whole machine
    gpu: str  # key into the GPU table
    n_gpus: int  # devices in the machine
    source: str
    as_of: dt.date | None
    file: str = ""

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.n_gpus


@dataclass(frozen=True)
class Coffee:
    name: str
    usd: float  # USD per cup
    source: str
    as_of: dt.date | None
    file: str = ""


# Schema: table -> {field: (python types, human description, required)}.
_NUM = (int, float)
_DATE = (dt.date, str)
_COMMON = {"source": (str, "a string (URL or citation)", True), "as_of": (_DATE, "a date like 2023-06-13", True),
           "notes": (str, "a string", False)}
SCHEMA: dict[str, dict[str, tuple]] = {
    "llm": {"input_per_1k": (_NUM, "a number (USD per 1K input tokens)", True),
            "output_per_1k": (_NUM, "a number (USD per 1K output tokens)", True),
            "context": (int, "an integer (context window, tokens)", False), **_COMMON},
    "gpu": {"peak_tflops": (_NUM, "a number (peak TFLOP/s per device)", True),
            "memory_gb": (_NUM, "a number (GB)", False),
            "default_rental": (str, "a rental name", False), **_COMMON},
    "rental": {"usd_per_hour": (_NUM, "a number (USD per machine-hour)", True),
               "gpu": (str, "a GPU name from the [gpu] table", True),
               "n_gpus": (int, "an integer (devices per machine)", True), **_COMMON},
    "coffee": {"usd": (_NUM, "a number (USD per cup)", True), **_COMMON},
    "batch": {"discount": (_NUM, "a number between 0 and 1 (fraction off)", True), **_COMMON},
    "free": {"models": (list, "a list of model names priced at $0", True), **_COMMON},
}
_ALLOWED_TOP = set(SCHEMA) | {"alias", "meta"}
# Numbers that must be > 0, not just >= 0 (FLOPs are divided by them), with why.
_POSITIVE = {("gpu", "peak_tflops"): "GPU-hours are FLOPs divided by the peak"}


def _where(file: Path, key: str) -> str:
    return f"{file}: {key}"


def _check_entry(file: Path, table: str, name: str, entry: Any) -> dict[str, Any]:
    """Validate one entry against SCHEMA; raise ConfigError naming file, key and expected type."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{_where(file, f'{table}.{name}')}: expected a table of fields, got {type(entry).__name__}")
    schema = SCHEMA[table]
    for key in entry:
        if key not in schema:
            raise ConfigError(f"{_where(file, f'{table}.{name}.{key}')}: unknown field; "
                              f"allowed fields: {', '.join(sorted(schema))}")
    out = {}
    for key, (types, desc, required) in schema.items():
        full = f"{table}.{name}.{key}"
        if key not in entry:
            if required:
                raise ConfigError(f"{_where(file, full)}: missing; expected {desc}")
            continue
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(f"{_where(file, full)}: expected {desc}, got {type(value).__name__} {value!r}")
        if key == "as_of":
            value = _parse_date(value, file, full)
        elif types is _NUM:
            value = float(value)
            low = _POSITIVE.get((table, key))
            if low is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{_where(file, full)}: expected {desc} > 0 ({low}), got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{_where(file, full)}: expected {desc} >= 0 (finite), got {value!r}")
        elif types is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{_where(file, full)}: expected {desc}, got {value!r}")
        out[key] = value
    if table == "batch" and not out["discount"] <= 1:
        raise ConfigError(f"{_where(file, f'batch.{name}.discount')}: expected {schema['discount'][1]}, "
                          f"got {out['discount']!r}")
    if table == "rental" and out["n_gpus"] < 1:
        raise ConfigError(f"{_where(file, f'rental.{name}.n_gpus')}: expected an integer >= 1, got {out['n_gpus']}")
    return out


def _parse_date(value, file: Path, key: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{_where(file, key)}: expected a date like 2023-06-13, got {value!r}") from None


def parse_date(value: str | dt.date | None) -> dt.date | None:
    """'latest'/'today'/None -> None (newest snapshot); else an ISO date."""
    if value is None or isinstance(value, dt.date):
        return value
    if str(value).lower() in ("latest", "today", "now", ""):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"as_of: expected a date like 2023-06-30 or 'latest', got {value!r}") from None


@dataclass
class PriceBook:
    """All loaded prices, merged; aliases resolve against `as_of` (None = newest snapshot)."""

    llms: dict[str, LLMPrice] = field(default_factory=dict)
    gpus: dict[str, GPU] = field(default_factory=dict)
    rentals: dict[str, Rental] = field(default_factory=dict)
    coffees: dict[str, Coffee] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    batch: dict[str, dict] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    as_of: dt.date | None = None

    # ---- lookups -------------------------------------------------------------------------
    def _resolve(self, name: str, table: dict) -> str:
        if name in table:
            return name
        if name in self.aliases:
            snaps = [s for s in self.aliases[name] if s in table]
            dated = sorted((table[s].as_of or dt.date.min, s) for s in snaps)
            eligible = [s for d, s in dated if self.as_of is None or d <= self.as_of]
            if eligible:
                return eligible[-1]
            if dated:
                raise ConfigError(f"{name!r} has no price on or before {self.as_of}; its snapshots start "
                                  f"{dated[0][0]} ({dated[0][1]})")
        return name

    def resolve_llm(self, model: str) -> str:
        """The dated snapshot a model name prices as (e.g. gpt-3.5-turbo -> gpt-3.5-turbo-0613)."""
        return self._resolve(model, self.llms)

    def llm(self, model: str) -> LLMPrice:
        """Per-1K input/output USD for `model`; unknown names raise ConfigError listing known ones."""
        name = self._resolve(model, self.llms)
        try:
            return self.llms[name]
        except KeyError:
            raise unknown_choice("LLM model (not in any price book; add a [llm.\"NAME\"] entry to a book in "
                                 "--prices DIR; for a self-hosted model, phi1 synth, filter and eval also take "
                                 "--price-free or --rental NAME --tokens-per-s N)", model,
                                 list(self.llms) + self._aliases_of(self.llms)) from None

    def _aliases_of(self, table: dict) -> list[str]:
        """The aliases that name snapshots in `table` (LLM aliases are not rentals, nor the other way round)."""
        return [a for a, snaps in self.aliases.items() if any(s in table for s in snaps)]

    @property
    def batch_discount(self) -> float:
        """Fraction taken off input and output prices by the OpenAI Batch API, as of this book's date
        (0 before the dated [batch] entry starts, or without one)."""
        entry = self.batch.get("openai") or next(iter(self.batch.values()), None)
        if not entry or (self.as_of is not None and entry.get("as_of") and entry["as_of"] > self.as_of):
            return 0.0
        return float(entry["discount"])

    def check_batch(self) -> None:
        """Raise unless a Batch discount is on offer as of this book's date (batch=true would price nothing off)."""
        if self.batch_discount:
            return
        entry = self.batch.get("openai") or next(iter(self.batch.values()), None)
        if not entry:
            raise ConfigError(f"batch=true: no [batch] discount in the price books ({', '.join(self.files)}); "
                              "add one, or set batch=false")
        raise ConfigError(f"batch=true: the Batch API discount starts {entry['as_of']} in the price books, after "
                          f"as_of={self.as_of}; set as_of={entry['as_of']} or later (or latest), or batch=false")

    def gpu(self, name: str) -> GPU:
        try:
            return self.gpus[name]
        except KeyError:
            raise unknown_choice("GPU", name, self.gpus) from None

    def rental(self, name: str) -> Rental:
        resolved = self._resolve(name, self.rentals)
        try:
            return self.rentals[resolved]
        except KeyError:
            raise unknown_choice("rental", name, list(self.rentals) + self._aliases_of(self.rentals)) from None

    def coffee(self, name: str) -> Coffee:
        try:
            return self.coffees[name]
        except KeyError:
            raise unknown_choice("coffee", name, self.coffees) from None

    def default_rental(self, gpu: str) -> Rental:
        """The rental a GPU prices with when a scenario names none."""
        g = self.gpu(gpu)
        if g.default_rental:
            return self.rental(g.default_rental)
        for r in self.rentals.values():
            if r.gpu == gpu:
                return r
        raise ConfigError(f"no rental for GPU {gpu!r} in the price books ({', '.join(self.files)}); "
                          f"add [rental.NAME] with gpu = {gpu!r} or set gpu.{gpu}.default_rental")

    # ---- variants ------------------------------------------------------------------------
    def at(self, as_of: str | dt.date | None) -> "PriceBook":
        """The same prices with aliases resolved as of `as_of` ('latest' or None = newest)."""
        return replace(self, as_of=parse_date(as_of))

    def with_free(self, *models: str, source: str = "runs locally; no API charge") -> "PriceBook":
        """A copy where `models` (local paths, stand-ins) are explicitly priced at $0."""
        llms = dict(self.llms)
        for m in models:
            llms[m] = LLMPrice(m, 0.0, 0.0, source, None, file="(with_free)", free=True)
        return replace(self, llms=llms)

    def with_llm(self, name: str, input_per_1k: float, output_per_1k: float, source: str = "user input") -> "PriceBook":
        """A copy with one LLM price added or replaced (the calculator's price knobs)."""
        return replace(self, llms={**self.llms, name: LLMPrice(name, float(input_per_1k), float(output_per_1k),
                                                                source, dt.date.today(), "(user)")})

    def with_rental(self, name: str, usd_per_hour: float, gpu: str, n_gpus: int, source: str = "user input") -> "PriceBook":
        self.gpu(gpu)
        return replace(self, rentals={**self.rentals, name: Rental(name, float(usd_per_hour), gpu, int(n_gpus), source,
                                                                    dt.date.today(), "(user)")})

    def with_coffee(self, name: str, usd: float, source: str = "user input") -> "PriceBook":
        return replace(self, coffees={**self.coffees, name: Coffee(name, float(usd), source, dt.date.today(), "(user)")})

    def llm_names(self) -> list[str]:
        return sorted(set(self.llms) | set(self._aliases_of(self.llms)))


def _read_toml(path: Path) -> dict:
    """A TOML file's tables; a folder, a missing or unreadable file, non-UTF-8 bytes or bad syntax is one
    error naming the file."""
    path = check_file(path, "a .toml file")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax or remove the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "TOML files must be saved as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None


def _merge_file(book: dict, path: Path, seen: dict) -> None:
    """Add one price book file's entries into `book` (dict of tables); `seen` tracks owners."""
    data = _read_toml(path)
    for table, entries in data.items():
        if table not in _ALLOWED_TOP:
            raise ConfigError(f"{path}: {table}: unknown table; allowed tables: {', '.join(sorted(_ALLOWED_TOP))}")
        if table == "meta":
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: {table}: expected a table like [{table}.\"NAME\"], got {type(entries).__name__}")
        for name, entry in entries.items():
            if table == "alias":
                if not (isinstance(entry, list) and entry and all(isinstance(s, str) for s in entry)):
                    raise ConfigError(f"{path}: alias.{name}: expected a non-empty list of snapshot names, got {entry!r}")
                value: Any = tuple(entry)
            else:
                value = _check_entry(path, table, name, entry)
            owner = seen.get((table, name))
            if owner and owner[0] == path.parent:
                raise ConfigError(f"{path}: {table}.{name}: already defined in {owner[1]}; keep one definition "
                                  "per folder (a file in a later folder overrides)")
            seen[(table, name)] = (path.parent, path)
            book.setdefault(table, {})[name] = (value, path)


def price_files(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Shipped price books, then each extra folder's (later folders override earlier ones)."""
    dirs = [costs_dir() / "prices", *[Path(d) for d in extra_dirs]]
    files: list[Path] = []
    for i, d in enumerate(dirs):
        if d.is_file():
            raise ConfigError(f"price book folder {d} is a file; pass the folder that holds it (--prices DIR)")
        if not d.is_dir():
            raise ConfigError(f"price book folder {d} does not exist; pass a folder holding *.toml price books")
        found = sorted(d.glob("*.toml"))
        if i and not found:
            raise ConfigError(f"price book folder {d} holds no *.toml files; pass a folder holding price books")
        files.extend(found)
    return files


def load_prices(extra_dirs: Iterable[str | os.PathLike] = (), *, as_of: str | dt.date | None = None,
                files: Iterable[str | os.PathLike] | None = None) -> PriceBook:
    """Load and validate every price book (`costs/prices/*.toml` plus `extra_dirs`) into one PriceBook."""
    paths = [Path(f) for f in files] if files is not None else price_files(extra_dirs)
    tables: dict[str, dict] = {}
    seen: dict = {}
    for path in paths:
        _merge_file(tables, path, seen)
    book = PriceBook(files=tuple(str(p) for p in paths), as_of=parse_date(as_of))
    for name, (e, path) in tables.get("llm", {}).items():
        book.llms[name] = LLMPrice(name, e["input_per_1k"], e["output_per_1k"], e["source"], e["as_of"], str(path))
    for name, (e, path) in tables.get("free", {}).items():
        for model in e["models"]:
            book.llms[model] = LLMPrice(model, 0.0, 0.0, e["source"], e["as_of"], str(path), free=True)
    for name, (e, path) in tables.get("gpu", {}).items():
        book.gpus[name] = GPU(name, e["peak_tflops"], e["source"], e["as_of"], e.get("memory_gb", 0.0),
                              e.get("default_rental", ""), str(path))
    for name, (e, path) in tables.get("rental", {}).items():
        book.rentals[name] = Rental(name, e["usd_per_hour"], e["gpu"], e["n_gpus"], e["source"], e["as_of"], str(path))
    for name, (e, path) in tables.get("coffee", {}).items():
        book.coffees[name] = Coffee(name, e["usd"], e["source"], e["as_of"], str(path))
    for name, (e, path) in tables.get("batch", {}).items():
        book.batch[name] = e
    for name, (snaps, path) in tables.get("alias", {}).items():
        book.aliases[name] = snaps
    # Cross-references: a rental's GPU and a GPU's default rental must exist.
    for r in book.rentals.values():
        if r.gpu not in book.gpus:
            raise ConfigError(f"{r.file}: rental.{r.name}.gpu: unknown GPU {r.gpu!r}; known: {', '.join(sorted(book.gpus))}")
    for name, snaps in book.aliases.items():
        missing = [s for s in snaps if s not in book.llms and s not in book.rentals]
        if missing:
            path = tables["alias"][name][1]
            raise ConfigError(f"{path}: alias.{name}: unknown snapshot(s) {', '.join(missing)}")
    return book
