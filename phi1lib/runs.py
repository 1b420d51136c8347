"""The run directory shared by `phi1 run` and the notebooks: one folder per stage, result.json last."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT

RESULT_FILE = "result.json"


def run_dir(preset: str = "tiny") -> Path:
    """$PHI1_RUN_DIR if set, else <repo>/runs/<preset>; created on demand."""
    env = os.environ.get("PHI1_RUN_DIR")
    path = Path(env).expanduser() if env else REPO_ROOT / "runs" / preset
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_dir(stage: str, root: str | os.PathLike | None = None, preset: str = "tiny") -> Path:
    path = Path(root) if root is not None else run_dir(preset)
    path = path / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_result(folder: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write result.json atomically; its presence marks the stage finished."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / RESULT_FILE)
    return folder / RESULT_FILE


def load_result(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The stored result of a finished stage, or None if it has not finished."""
    path = Path(folder) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
