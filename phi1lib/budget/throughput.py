"""CPU throughput constants for wall-time estimates, measured by `benchmarks/bench_throughput.py`.

One file, `costs/throughput.toml` (or $PHI1_COSTS_DIR/throughput.toml), holds every measured rate with
the date and machine it was measured on. Stage estimates read it through `load_throughput()`; a
malformed file is one error naming the file, the key and the fix (rerun the benchmark).

    [meta]
    date = 2026-12-02
    machine = "2-core AMD EPYC VM, 24 GiB, no GPU"
    note = "..."

    [cpu]
    embed_tokens_per_s = 4100.0     # minilm-local forward on CPU: texts x max_length tokens per second
    embed_load_s = 1.5              # loading the embedder once per stage
    ast_pairs_per_s = 2.0e6         # decontam AST (record, problem) pairs per second after the exact filter
    corpus_samples_per_s = 350.0    # reading installed Python files into the filtering pool
    heuristic_tokens_per_s = 3e5    # prompt tokens/s through the offline heuristic annotator (tiny's stand-in)
    generate_tokens_per_s = 1700.0  # HF generate on CPU, tiny preset's shape, batch 8: (prompt + new) tokens/s
    sandbox_seconds_per_program = 0.02  # core-seconds per sandboxed test run
    extractive_seconds_per_request = 0.03  # wall seconds per prompt of the stand-in synthesis stage, all steps
    classifier_seconds_per_label = 0.02  # choosing + fitting the filter's classifier, seconds per training label
    outline_samples_per_s = 110.0   # samples turned into the filter's outline view per second
    dataflow_start_s = 3.0          # a 2-task local datatrove stage before its first document
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ConfigError
from ..paths import costs_dir
from ..presets import ModelSpec
from .estimates import embed_flops_per_token
from .pricebook import _read_toml
from .scenario import EXTRA_MODELS

FILE = "throughput.toml"
FIX = "rerun `.venv/bin/python benchmarks/bench_throughput.py` to rewrite it"


@dataclass(frozen=True)
class Throughput:
    """Measured CPU rates (per second, one process) and where and when they were measured."""

    embed_tokens_per_s: float  # embedder forward on CPU: texts x max_length tokens per second
    embed_load_s: float  # seconds to load the embedder (once per stage that embeds)
    ast_pairs_per_s: float  # AST (record, problem) pairs per second, candidate filter included
    corpus_samples_per_s: float  # installed-Python files read into a pool per second
    heuristic_tokens_per_s: float  # prompt tokens per second the offline heuristic annotator (a stand-in) rates
    generate_tokens_per_s: float  # HF generate on CPU, tiny preset's shape, batch 8: (prompt + new) tokens/s
    sandbox_seconds_per_program: float  # core-seconds per sandboxed test run (pool start-up shared)
    extractive_seconds_per_request: float  # wall seconds per prompt of the stand-in synthesis stage, all steps
    classifier_seconds_per_label: float  # choosing (cross-validation) and fitting the filter's classifier, per label
    outline_samples_per_s: float  # samples turned into the filter's outline view (an AST parse each) per second
    dataflow_start_s: float  # a 2-task local datatrove stage before its first document (worker pool, torch import)
    date: dt.date
    machine: str
    note: str = ""
    file: str = ""

    def source(self) -> str:
        """'measured 2026-12-02 on <machine> (costs/throughput.toml)', for plan-line notes."""
        return f"measured {self.date} on {self.machine} ({self.file})"


def throughput_path() -> Path:
    return costs_dir() / FILE


def _number(table: dict, key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        got = "missing" if value is None else repr(value)
        raise ConfigError(f"{where}: cpu.{key}: expected a number > 0, got {got}; {FIX}")
    return float(value)


def parse_throughput(data: dict, where: str) -> Throughput:
    """A validated Throughput from a parsed TOML table (`where` names the file in errors)."""
    meta, cpu = data.get("meta"), data.get("cpu")
    if not isinstance(meta, dict) or not isinstance(cpu, dict):
        raise ConfigError(f"{where}: needs a [meta] table (date, machine) and a [cpu] table of rates; {FIX}")
    date = meta.get("date")
    if isinstance(date, dt.datetime):
        date = date.date()
    if not isinstance(date, dt.date):
        raise ConfigError(f"{where}: meta.date: expected a date like 2026-12-02, got {date!r}; {FIX}")
    machine = meta.get("machine")
    if not isinstance(machine, str) or not machine.strip():
        raise ConfigError(f"{where}: meta.machine: expected the machine it was measured on, got {machine!r}; {FIX}")
    rates = [f.name for f in fields(Throughput) if f.name not in ("date", "machine", "note", "file")]
    unknown = sorted(set(cpu) - set(rates))
    if unknown:
        raise ConfigError(f"{where}: cpu.{unknown[0]}: unknown rate; allowed: {', '.join(rates)}; {FIX}")
    return Throughput(**{k: _number(cpu, k, where) for k in rates}, date=date, machine=machine.strip(),
                      note=str(meta.get("note", "")), file=where)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Throughput:
    return parse_throughput(_read_toml(Path(path)), _shown(Path(path)))


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(costs_dir().parent))
    except ValueError:
        return str(path)


def load_throughput(path: str | os.PathLike | None = None) -> Throughput:
    """The measured rates (default: costs/throughput.toml); a missing or malformed file raises ConfigError."""
    p = Path(path) if path is not None else throughput_path()
    if not p.is_file():
        raise ConfigError(f"{p}: no throughput constants file; {FIX}")
    return _load(str(p), p.stat().st_mtime)


def cpu_embed_seconds(tp: Throughput, texts: float, seq_len: int, spec: ModelSpec | None = None,
                      tokens: float | None = None) -> float:
    """Wall seconds to embed `texts` texts of `seq_len` tokens on CPU (or `tokens` padded tokens in all, as
    `Embedder.plan` counts them): the load once, then the measured minilm-local rate, scaled by forward FLOPs per
    token for another embedder's shape `spec`."""
    if texts <= 0:
        return 0.0
    rate = tp.embed_tokens_per_s
    if spec is not None:
        rate *= embed_flops_per_token(EXTRA_MODELS["minilm-local"], seq_len) / embed_flops_per_token(spec, seq_len)
    return tp.embed_load_s + (texts * seq_len if tokens is None else tokens) / rate
