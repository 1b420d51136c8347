"""The run folder: one folder per stage, each stage's result.json written last, found through an explicit RunDir.

    run_dir = RunDir.for_preset("tiny")                    # $PHI1_RUN_DIR or runs/tiny, read once here
    kept = run_dir.input("filtering", "kept.parquet")     # DataError naming the stage to run when missing
    out = run_dir.stage("synthesis")                      # <root>/synthesis, created

Stages receive a RunDir; nothing below the CLI and the notebooks' first cell reads the
environment. A stage's identity (`identity`) is its result's fingerprint, so a stage that
reads another's output can tell when that output was redone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError
from .paths import REPO_ROOT, atomic_path

RESULT_FILE = "result.json"
LEDGER_FILE = "ledger.jsonl"
ENV_VAR = "PHI1_RUN_DIR"


def default_root(preset: str) -> Path:
    """runs/<preset> in the source checkout when phi1lib is one (notebooks, CI), else in the current folder."""
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return base / "runs" / preset


@dataclass(frozen=True)
class RunDir:
    """One run's folder: <root>/<stage>/ per stage, <root>/ledger.jsonl, <root>/report.{json,md}."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        up = self.root
        while not up.exists() and up != up.parent:  # the deepest part of the path that exists must be a folder
            up = up.parent
        if not up.is_dir():
            where = "is a file" if up == self.root else f"lies under {up}, which is a file"
            raise DataError(f"{self.root}: {where}, not a run folder; give a folder (a new one, or one "
                            "a phi1 command wrote)")

    @classmethod
    def for_preset(cls, preset: str = "tiny", out: str | os.PathLike | None = None) -> "RunDir":
        """`out` when given, else $PHI1_RUN_DIR, else `default_root(preset)`. Creates nothing."""
        env = os.environ.get(ENV_VAR)
        return cls(Path(out) if out else Path(env) if env else default_root(preset))

    def stage(self, name: str) -> Path:
        """<root>/<name>, created."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, stage: str, file: str = "") -> Path:
        """<root>/<stage>/<file>, not created."""
        return self.root / stage / file if file else self.root / stage

    def input(self, stage: str, file: str) -> Path:
        """An earlier stage's output file; a DataError that names the stage to run if it is missing."""
        path = self.path(stage, file)
        if not path.exists():
            raise DataError(f"{path}: not found; the {stage} stage has not run in {self.root} "
                            f"(run it first: phi1 run --out {self.root} --stages {stage})")
        return path

    def result(self, stage: str) -> dict[str, Any] | None:
        return load_result(self.path(stage))

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_FILE


def identity(path: str | os.PathLike) -> str:
    """What a stage's input is, for its fingerprint: the fingerprint of the stage result that wrote it
    (the nearest folder above holding a result.json), else the file's size and modification time."""
    path = Path(path).expanduser().resolve()
    for folder in ([path] if path.is_dir() else []) + list(path.parents)[:2]:
        stored = load_result(folder)
        if stored and stored.get("fingerprint"):
            return f"{stored.get('stage', folder.name)}:{stored['fingerprint']}"
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"file:{st.st_size}:{st.st_mtime_ns}"


def save_result(folder: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write result.json atomically; its presence marks the stage finished."""
    path = Path(folder) / RESULT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str, sort_keys=True), encoding="utf-8")
    return path


def load_result(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The stored result of a finished stage, or None if it has not finished."""
    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable stage result ({exc}); delete it or rerun the stage with --force") from None

