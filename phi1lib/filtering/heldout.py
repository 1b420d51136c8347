"""A yardstick the filter never sees: hand-written snippets of obviously high and obviously low educational value.

`data/filter_heldout.jsonl` holds short programs written for this check, none taken from any
corpus the stage reads: clear, self-contained, documented algorithms (label `high`) next to
configuration boilerplate, generated code, dense uncommented glue, licence-only files and long
constant tables (label `low`). The stage scores them with the trained filter and with the
rubric that labelled its training data, and reports both ROC-AUCs. Nothing is trained, tuned
or chosen on these snippets: the classifier and its settings are chosen by cross-validation on
the pool's training split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..jsonl import iter_jsonl
from ..paths import data_file

HELDOUT_FILE = "filter_heldout.jsonl"
LABELS = ("high", "low")


def heldout_path() -> Path:
    return data_file(HELDOUT_FILE)


def load_snippets(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The snippets (id, label high|low, text); a record without text or with another label is refused."""
    path = Path(path) if path is not None else heldout_path()
    rows = list(iter_jsonl(path, strict=True))
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError(f"{path}: record {i} has no text; every snippet needs a non-empty 'text'")
        if row.get("label") not in LABELS:
            raise DataError(f"{path}: record {i} has label {row.get('label')!r}; expected one of {', '.join(LABELS)}")
    if {r["label"] for r in rows} != set(LABELS):
        raise DataError(f"{path}: needs snippets of both labels ({', '.join(LABELS)}) to compute a ROC-AUC")
    return rows


def roc_auc(labels: list[str], scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([label == "high" for label in labels], np.asarray(scores, dtype=float)))


def heldout_report(snippets: list[dict[str, Any]], scores: dict[str, Any]) -> dict[str, Any]:
    """ROC-AUC of each scorer (name -> one score per snippet, higher = more educational) on the snippets."""
    labels = [s["label"] for s in snippets]
    return {"n": len(snippets), "high": labels.count("high"), "low": labels.count("low"),
            "roc_auc": {name: roc_auc(labels, values) for name, values in scores.items()},
            "source": f"phi1lib/data/{HELDOUT_FILE}",
            "note": "hand-written snippets, not from the pool; never used to train, tune or choose the filter"}
