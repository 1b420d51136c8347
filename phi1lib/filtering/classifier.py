"""The filtering stage's classifier: candidates on embeddings, chosen by cross-validation, baselines, save/load.

Kept apart from `filtering` (the stage's flow) so the model side reads on its own: which models
are tried (the paper's random forest and a regularised logistic regression), how one is chosen
(`select_classifier`: mean ROC-AUC of a stratified k-fold cross-validation on the *training*
split only, so the held-out split stays untouched), what the chosen one is compared with on the
same held-out split, and how it is stored (joblib, with the embedder settings and the view it
expects, so scores are reproducible from the saved file).
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


CLASSIFIERS = ("auto", "random_forest", "logreg")  # "auto": the candidate with the best cross-validated ROC-AUC
CANDIDATES = ("random_forest", "logreg")
METRIC_NAMES = {"random_forest": "random_forest", "logreg": "logreg_embeddings"}  # keys in the stage's metrics
LOGREG_CS = (0.001, 0.01, 0.1, 1.0)  # inverse regularisation strengths the logistic regression picks from (inner CV)
CV_FOLDS = 5


def make_classifier(name: str, *, n_estimators: int = 200, min_samples_leaf: int = 1, seed: int = 0,
                    min_class: int | None = None):
    """An unfitted candidate: the paper's random forest, or a logistic regression on standardised embeddings
    whose regularisation is chosen by an inner 3-fold cross-validation on the data it is fitted on (with
    fewer than 3 samples in the smaller class, `min_class`, there is nothing to cross-validate: C = 0.01)."""
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                      class_weight="balanced", n_jobs=-1, random_state=seed)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000, C=0.01))
        if min_class is not None and min_class < 3:
            return model
        return GridSearchCV(model, {"logisticregression__C": list(LOGREG_CS)}, scoring="roc_auc",
                            cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=seed))
    raise ValueError(f"classifier={name!r}; choose one of {', '.join(CANDIDATES)}")


def train_classifier(X, y, *, n_estimators: int, min_samples_leaf: int = 1, seed: int = 0, name: str = "random_forest"):
    return make_classifier(name, n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, seed=seed,
                           min_class=int(np.bincount(np.asarray(y), minlength=2).min())).fit(X, y)


def cross_validated_auc(X, y, name: str, *, n_estimators: int, min_samples_leaf: int = 1, seed: int = 0) -> float:
    """Mean ROC-AUC of `name` over a stratified k-fold split of (X, y) (fewer folds when a class is small)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    smaller = int(np.bincount(np.asarray(y), minlength=2).min())
    folds = min(CV_FOLDS, smaller)
    if folds < 2:
        return float("nan")
    model = make_classifier(name, n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, seed=seed,
                            min_class=smaller * (folds - 1) // folds)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, X, y, cv=cv, scoring="roc_auc")))


def select_classifier(X, y, choice: str = "auto", *, n_estimators: int, min_samples_leaf: int = 1,
                      seed: int = 0) -> tuple[str, dict[str, float]]:
    """(chosen candidate, cross-validated ROC-AUC of every candidate) on the training split.

    `choice` "auto" takes the best cross-validated candidate (the random forest on a tie or when
    there is too little data to cross-validate); a candidate's name forces it (scores still reported)."""
    if choice not in CLASSIFIERS:
        raise ValueError(f"classifier={choice!r}; choose one of {', '.join(CLASSIFIERS)}")
    scores = {name: cross_validated_auc(X, y, name, n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                        seed=seed) for name in CANDIDATES}
    if choice != "auto":
        return choice, scores
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    best = max(finite, key=lambda k: (finite[k], k == "random_forest")) if finite else "random_forest"
    return best, scores


def evaluate_models(X_test, y_test, *, models: dict[str, Any], extra_test: dict[str, np.ndarray],
                    extra_train: dict[str, np.ndarray], y_train) -> dict[str, Any]:
    """The fitted candidates (`models`: metrics key -> model) and cheap baselines on the same held-out split,
    so the reader sees what embeddings buy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {key: binary_metrics(y_test, model.predict_proba(X_test)[:, 1]) for key, model in models.items()}
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


