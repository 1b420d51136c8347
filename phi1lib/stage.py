"""The stage contract: a validated Config, an estimate before, a run into a RunDir, a Result with one Usage.

    config = FilterConfig.for_preset("tiny", corpus_samples=500)    # preset resolved once, overrides checked
    est = filtering.estimate(config, prices)                          # budget.StageEstimate (line items)
    res = filtering.run(config, run_dir, ledger=ledger)               # FilterResult, a StageResult
    res.compare()                                                     # estimate next to measured (DataFrame)

Every stage package (filtering, synthesis, decontam, training, evaluation; the pipeline's
ablation too) exposes exactly that: `<Stage>Config`, `budget_lines(config)`, `estimate(config,
prices)`, `run(config, run_dir, *, ledger, prices, force, progress)` and `<Stage>Result`.

The one rule for stored results (`load_stored`): a stage folder's result.json is reused only
when its fingerprint (the config's fields that change the result, plus the identity of every
input it read) equals the current one. Otherwise the stage stops with one line naming what
changed and how to redo it (`--force`); nothing is silently reused or silently redone. A result
made by another preset is refused first, by name (`other_preset`), whatever its fingerprint, and a
stage does not start a new result in a run folder whose other stages hold another preset's results
(`other_preset_in_run`): one run folder, one preset.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, TypeVar

from . import runs
from .errors import ConfigError, DataError
from .presets import Hardware, Preset, get_preset

R = TypeVar("R", bound="StageResult")


class FieldError(ConfigError):
    """A config field has a wrong value; carries the field so the CLI can name the flag the user typed."""

    def __init__(self, config: str, name: str, value: Any, expected: str):
        super().__init__(f"{config}.{name}={value!r}: expected {expected}")
        self.config, self.field, self.value, self.expected = config, name, value, expected


class StaleResult(ConfigError):
    """A stage folder holds a finished result made with other settings or other inputs."""


# ---- configs ---------------------------------------------------------------------------------------

def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"comma-separated {_describe(args[0])}s" if args and args[-1] is Ellipsis else \
            f"{len(args)} comma-separated values"
    if tp is dict or origin is dict:
        return 'a JSON object, e.g. {"partition": "cpu", "time": "4:00:00"}'
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def parse_value(text: str, tp: Any, where: str) -> Any:
    """A command-line string as a value of type `tp` (int, float, bool, str, Path, Optional, tuple, dict as JSON)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    raw = text.strip()
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.lower() in ("none", "null"):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return parse_value(raw, a, where)
            except ConfigError:
                continue
    elif origin is tuple:
        parts = [p for p in raw.split(",") if p.strip()]
        if args and args[-1] is Ellipsis:
            return tuple(parse_value(p, args[0], where) for p in parts)
        if len(parts) == len(args):
            return tuple(parse_value(p, a, where) for p, a in zip(parts, args))
    elif tp is bool:
        if raw.lower() in ("true", "yes", "1", "false", "no", "0"):
            return raw.lower() in ("true", "yes", "1")
    elif tp is int:
        try:
            number = float(raw.replace("_", ""))
            if number.is_integer():
                return int(number)
        except ValueError:
            pass
    elif tp is float:
        try:
            number = float(raw.replace("_", ""))
            if math.isfinite(number):
                return number
        except ValueError:
            pass
    elif tp in (str, Path):
        return raw
    elif tp is dict or origin is dict:  # e.g. a Slurm executor's settings: --set 'cluster={"partition": "cpu"}'
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    else:
        raise ConfigError(f"{where}: cannot be set from the command line")
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {text!r}")


def parse_assignments(items: Iterable[str], flag: str = "--set", example: str = "seed=1",
                      key_name: str = "FIELD") -> dict[str, str]:
    """["KEY=VALUE", ...] as {KEY: VALUE} (strings; each consumer parses by type); a malformed item names `flag`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected {key_name}=VALUE, e.g. {flag} {example}")
        out[key.strip()] = value.strip()
    return out


def _type_ok(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if args and args[-1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is Path:
        return isinstance(value, (str, os.PathLike))
    if tp is Any or not isinstance(tp, type):
        return True
    return isinstance(value, tp)


def _canon(value: Any, root: str | None) -> Any:
    """JSON-ready value with paths under the run folder written as "<run>/..." (a moved run keeps its fingerprints)."""
    if isinstance(value, dict):
        return {str(k): _canon(v, root) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canon(v, root) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and root and os.sep in value:
        resolved = str(Path(value).expanduser().resolve())
        if resolved == root or resolved.startswith(root + os.sep):
            return "<run>" + resolved[len(root):]
    return value


class StageConfig:
    """Mixin for a stage's @dataclass config: built from a preset in one place, type-checked, fingerprinted.

    Subclasses set STAGE, list NOT_FINGERPRINTED fields (how the work runs, not what it computes:
    threads, workers, devices; and planning numbers used only by the estimate), implement
    `_from_preset(preset) -> dict` and `validate()`.
    """

    STAGE: ClassVar[str] = ""
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):  # JSON and YAML give lists where the config keeps tuples
                value = tuple(value)
                setattr(self, f.name, value)
            if not _type_ok(value, hints[f.name]):
                raise FieldError(type(self).__name__, f.name, value, _describe(hints[f.name]))
        self.validate()

    @property
    def stage_name(self) -> str:
        """The stage (and its folder in the run) this config is for."""
        return self.STAGE

    def validate(self) -> None:
        """Range checks beyond the types; raise self.bad(...)."""

    def bad(self, name: str, expected: str) -> FieldError:
        return FieldError(type(self).__name__, name, getattr(self, name), expected)

    def need(self, condition: bool, name: str, expected: str) -> None:
        if not condition:
            raise self.bad(name, expected)

    def need_ints(self, *names: str, minimum: int = 1) -> None:
        for name in names:
            self.need(getattr(self, name) >= minimum, name, f"an integer >= {minimum}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def _from_preset(cls, preset: Preset) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def for_preset(cls, preset: str | Preset = "tiny", **overrides: Any):
        """The preset's values for this stage, then `overrides` (unknown names are a ConfigError)."""
        p = get_preset(preset)
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}; fields: {', '.join(cls.field_names())}")
        return cls(**{**cls._from_preset(p), **overrides})

    @classmethod
    def parse_sets(cls, pairs: dict[str, str]) -> dict[str, Any]:
        """`--set FIELD=VALUE` strings parsed by each field's type (before any work starts)."""
        hints = typing.get_type_hints(cls)
        out = {}
        for name, text in pairs.items():
            if name not in hints or name not in cls.field_names():
                raise ConfigError(f"--set {name}: {cls.__name__} has no such field; fields: {', '.join(cls.field_names())}")
            out[name] = parse_value(text, hints[name], f"--set {name}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))  # type: ignore[call-overload]

    def fingerprint_dict(self, root: str | os.PathLike | None = None) -> dict[str, Any]:
        """The fields that change the result (NOT_FINGERPRINTED left out), paths relative to the run folder."""
        root_s = str(Path(root).resolve()) if root else None
        return {k: _canon(v, root_s) for k, v in self.to_dict().items() if k not in self.NOT_FINGERPRINTED}

    def fingerprint(self, root: str | os.PathLike | None = None, inputs: dict[str, str] | None = None) -> str:
        doc = {"stage": self.stage_name, "config": self.fingerprint_dict(root), "inputs": dict(sorted((inputs or {}).items()))}
        return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_defaults(hardware: Hardware, **extra: Any) -> dict[str, Any]:
    """The defaults a stage's plan lines are priced with (`budget.price_lines`): the hardware, plus `extra`.
    The pipeline prices a whole preset with the same defaults, so both add up to the same dollars."""
    return {"gpu": hardware.gpu, "n_gpus": hardware.n_gpus, "mfu": hardware.mfu, **extra}


# ---- usage and timing ------------------------------------------------------------------------------

@dataclass
class Usage:
    """What a stage measured it used, this run only (a resumed stage counts what it redid)."""

    tokens_in: int = 0  # tokens sent to a model: LLM prompts, training tokens, evaluation prompts
    tokens_out: int = 0  # tokens a model generated (LLM answers, completions)
    requests: int = 0  # LLM requests answered (from the store included)
    gpu_s: float = 0.0  # GPU-seconds (wall seconds x GPUs); 0 on CPU
    cpu_s: float = 0.0  # CPU seconds of this process
    wall_s: float = 0.0  # wall seconds of the whole stage
    usd: float = 0.0  # new spend: 0 for stored answers, offline stand-ins and the local CPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Timer:
    """Named blocks of a stage, datatrove-style: `with t("embed"): ...`; `t.seconds` per block, CPU and wall in total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self._wall0

    @property
    def cpu_s(self) -> float:
        return time.process_time() - self._cpu0

    def finish(self) -> dict[str, float]:
        """The per-block seconds with "total" (wall seconds since the timer started) added."""
        self.seconds["total"] = self.wall_s
        return self.seconds


# ---- results ---------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class StageResult:
    """What every stage returns and stores as <stage folder>/result.json (written last)."""

    stage: str  # stage name
    out_dir: str  # the stage folder
    files: dict[str, str] = field(default_factory=dict)  # name -> path of each file written
    metrics: dict[str, Any] = field(default_factory=dict)  # what the stage measured
    usage: Usage = field(default_factory=Usage)
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per named block, "total" included
    estimate: dict[str, Any] = field(default_factory=dict)  # budget.StageEstimate.to_dict(), made before the run
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> identity (runs.identity) when it was read
    fingerprint: str = ""  # config + inputs; a stored result is reused only when this matches
    stand_in: str | None = None  # what stood in for the paper's LLM or data (None: the real thing)
    finished_at: str = ""  # local time the result was written (ISO 8601, microseconds: it identifies the run)
    reused: ClassVar[bool] = False  # True on a result read back from result.json instead of made now (not stored)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        if isinstance(kw.get("usage"), dict):
            known = {f.name for f in fields(Usage)}
            kw["usage"] = Usage(**{k: v for k, v in kw["usage"].items() if k in known})
        try:
            return cls(**kw)
        except TypeError as exc:
            raise DataError(f"{data.get('out_dir', '?')}/{runs.RESULT_FILE}: written by another version of phi1 "
                            f"({exc}); rerun the stage with --force") from None

    @classmethod
    def from_stored(cls: type[R], data: dict[str, Any]) -> R:
        """A result read back from result.json, marked `reused`."""
        result = cls.from_dict(data)
        result.reused = True
        return result

    @classmethod
    def load(cls: type[R], folder: str | os.PathLike) -> R | None:
        stored = runs.load_result(folder)
        return None if stored is None else cls.from_stored(stored)

    def save(self: R) -> R:
        self.finished_at = self.finished_at or datetime.datetime.now().isoformat(timespec="microseconds")
        runs.save_result(self.out_dir, self.to_dict())
        return self

    def compare(self):
        """Estimate next to measured for the figures both have (pandas DataFrame)."""
        import pandas as pd

        e, u = self.estimate, self.usage
        rows = [("USD", e.get("cost_usd"), u.usd), ("wall seconds", _times(e.get("wall_hours"), 3600), u.wall_s),
                ("GPU-hours", e.get("gpu_hours"), u.gpu_s / 3600), ("CPU-hours", e.get("cpu_hours"), u.cpu_s / 3600),
                ("tokens", e.get("tokens"), u.tokens_in + u.tokens_out)]
        df = pd.DataFrame(rows, columns=["quantity", "estimate", "measured"]).set_index("quantity")
        df["measured / estimate"] = [m / est if est else None for est, m in zip(df["estimate"], df["measured"])]
        return df


def _times(x: float | None, k: float) -> float | None:
    return None if x is None else x * k


def common_fields(config: StageConfig, out: Path, run_dir: runs.RunDir, inputs: dict[str, str], estimate) -> dict[str, Any]:
    """The StageResult fields every stage fills the same way (identity, config, estimate)."""
    return dict(stage=config.stage_name, out_dir=str(out), config=config.to_dict(), inputs=dict(inputs),
                fingerprint=config.fingerprint(run_dir.root, inputs), estimate=estimate.to_dict())


def load_stored(cls: type[R], folder: str | os.PathLike, config: StageConfig, *, root: str | os.PathLike,
                inputs: dict[str, str] | None = None, force: bool = False) -> R | None:
    """The stored result in `folder` if it was made with this config and these inputs; None if there is
    none (or `force`); StaleResult naming what changed if it was made otherwise."""
    if force:
        return None
    stored = runs.load_result(folder)
    if stored is None:
        if (other := other_preset_in_run(root, config)) is not None:
            raise StaleResult(f"{config.stage_name}: {Path(root).resolve()} {other}; a run folder holds one preset "
                              f"(use another run folder, --out, or pass --force to mix them anyway)")
        return None
    if (other := other_preset(stored, config)) is not None:
        raise StaleResult(f"{config.stage_name}: {folder} {other}; pass --force to redo it with this preset "
                          f"(or use another run folder, --out)")
    want = config.fingerprint(root, inputs)
    if stored.get("fingerprint") == want:
        return cls.from_stored(stored)
    raise StaleResult(f"{config.stage_name}: {folder} holds a result made {_what_changed(stored, config, root, inputs)}; "
                      f"pass --force to redo it (or use another run folder, --out)")


def other_preset(stored: dict[str, Any], config: StageConfig) -> str | None:
    """None when `stored` (a result.json) was made by the preset `config` asks for (or either names none),
    else the end of "<folder> holds ..." naming both presets. A folder made by one preset is never
    completed, or passed off as current, by another (e.g. a notebook's tiny fallback in a real run folder)."""
    before, now = (stored.get("config") or {}).get("preset"), getattr(config, "preset", None)
    if before is None or now is None or before == now:
        return None
    return f"holds a result of preset {before!r}, and this run asks for preset {now!r}"


def other_preset_in_run(root: str | os.PathLike, config: StageConfig) -> str | None:
    """None when no stage folder directly under the run folder `root` holds a result of another preset than
    `config`'s, else the end of "<root> holds ..." naming the first such stage. A stage about to make a new
    result checks it, so a half-finished run of one preset is never completed with another's artefacts."""
    now, base = getattr(config, "preset", None), Path(root)
    if now is None or not base.is_dir():
        return None
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        try:
            stored = runs.load_result(folder)
        except DataError:  # an unreadable result is its own stage's problem, reported when that stage runs
            continue
        before = ((stored or {}).get("config") or {}).get("preset")
        if before is not None and before != now:
            return f"holds a {folder.name} result of preset {before!r}, and this run asks for preset {now!r}"
    return None


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 48 else text[:45] + "..."


def describe_change(before: dict[str, Any] | None, now: dict[str, Any], inputs_before: dict[str, str],
                    inputs_now: dict[str, str]) -> str:
    """Why something stored differs from what is asked now, as the end of "... holds X made <this>":
    the settings that changed (first three), else the inputs that changed. `before` None: it was
    stored without a fingerprint. Every stored-result message (stages, synthesis kinds, samples) uses it."""
    if before is None:
        return "by an older version of phi1 (no fingerprint)"
    diffs = [f"{k} {_short(before.get(k))} -> now {_short(now.get(k))}" for k in sorted(set(before) | set(now))
             if before.get(k) != now.get(k)]
    if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        return "with other settings (" + "; ".join(diffs[:3]) + more + ")"
    changed = [k for k in sorted(set(inputs_before) | set(inputs_now)) if inputs_before.get(k) != inputs_now.get(k)]
    if changed:
        return f"from other inputs ({', '.join(changed)} changed since: an earlier stage was redone)"
    return "by another version of phi1 (its fingerprint differs)"


def _what_changed(stored: dict[str, Any], config: StageConfig, root, inputs: dict[str, str] | None) -> str:
    root_s = str(Path(root).resolve())
    before = {k: _canon(v, root_s) for k, v in (stored.get("config") or {}).items()
              if k not in config.NOT_FINGERPRINTED} if stored.get("fingerprint") else None
    return describe_change(before, config.fingerprint_dict(root), stored.get("inputs") or {}, inputs or {})
