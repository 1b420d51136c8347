"""The filtering stage's classifier: random forest on embeddings, cheap baselines, metrics, save/load.

Kept apart from `filtering` (the stage's flow) so the model side reads on its own: what is
trained, what it is compared with on the same held-out split, and how it is stored (joblib,
with the embedder settings it expects, so scores are reproducible from the saved file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..paths import atomic_path


def binary_metrics(y_true, y_score, threshold: float = 0.5) -> dict[str, Any]:
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score, recall_score,
                                 roc_auc_score)

    y_true = np.asarray(y_true)
    y_pred = (np.asarray(y_score) >= threshold).astype(int)
    both = len(set(y_true.tolist())) == 2
    return {"precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "roc_auc": float(roc_auc_score(y_true, y_score)) if both else None,
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),  # [[tn, fp], [fn, tp]]
            "support": int(len(y_true)), "positives": int(y_true.sum())}


def train_classifier(X, y, *, n_estimators: int, min_samples_leaf: int = 1, seed: int = 0):
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                 class_weight="balanced", n_jobs=-1, random_state=seed)
    return clf.fit(X, y)


def evaluate_models(X_train, y_train, X_test, y_test, *, clf, extra_test: dict[str, np.ndarray],
                    extra_train: dict[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Forest vs cheap baselines on the same held-out split, so the reader sees what embeddings buy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {"random_forest": binary_metrics(y_test, clf.predict_proba(X_test)[:, 1])}
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", C=0.1))
    out["logreg_embeddings"] = binary_metrics(y_test, logreg.fit(X_train, y_train).predict_proba(X_test)[:, 1])
    size = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    out["length_only"] = binary_metrics(y_test, size.fit(extra_train["length"], y_train).predict_proba(
        extra_test["length"])[:, 1])
    # The rubric's continuous total, thresholded where it best fits the training labels.
    h_train, h_test = extra_train["heuristic"][:, 0], extra_test["heuristic"][:, 0]
    cands = np.unique(h_train)
    best = max(cands, key=lambda t: ((h_train >= t).astype(int) == y_train).mean()) if len(cands) else 0.5
    out["heuristic_alone"] = binary_metrics(y_test, np.clip(h_test - best + 0.5, 0, 1))
    out["majority_class"] = binary_metrics(y_test, np.full(len(y_test), float(np.mean(y_train) >= 0.5)))
    return out


def save_classifier(clf, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    import joblib

    path = Path(path)
    with atomic_path(path) as tmp:
        joblib.dump({"model": clf, "meta": meta}, tmp)
    return path


def load_classifier(path: str | os.PathLike):
    """(classifier, meta) saved by the filtering stage; meta names the embedder the forest expects."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no saved classifier; run the filtering stage first")
    obj = joblib.load(path)
    return obj["model"], obj["meta"]


