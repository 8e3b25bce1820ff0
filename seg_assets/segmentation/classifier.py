"""A supervised classifier that assigns users to segments between re-fits.

Trained on the segment model's labels (features -> segment id) on a bounded, deterministic sample
(default <= 200k rows) so training cost does not grow with the user base. A stratified held-out
split gives accuracy, macro-F1 and per-segment recall (the quality gate uses macro-F1: a classifier
that is good only on the big segments fails it). Kinds:

* ``logreg``: multinomial logistic regression on the model preprocessing (log1p, clip, standardize);
  importances = mean |coefficient| across classes (inputs standardized, so comparable);
* ``tree``: a decision tree (depth 8) on raw features; importances = impurity decrease;
* ``gbm``: HistGradientBoosting on raw features; importances = permutation importance (sample);
* ``mlp``: a small neural net on the preprocessing; importances = permutation importance (sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import polars as pl

from seg_assets.artifacts import load_artifact
from seg_assets.segmentation.preprocess import Preprocessor, to_matrix
from seg_assets.segmentation.selection import limit_threads, sample_indices

KINDS = ("logreg", "tree", "gbm", "mlp")
_SCALED = ("logreg", "mlp")


def _estimator(kind: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    if kind == "logreg":
        return LogisticRegression(max_iter=500, C=1.0)
    if kind == "tree":
        return DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=seed)
    if kind == "gbm":
        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, early_stopping=False, random_state=seed)
    if kind == "mlp":
        return MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, early_stopping=True, random_state=seed)
    raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


@dataclass
class SegmentClassifier:
    kind: str
    features: list[str]
    estimator: Any
    preprocessor: Preprocessor | None
    classes: list[int]
    metrics: dict[str, Any] = field(default_factory=dict)  # accuracy, macro_f1, recall_by_segment, rows
    importances: pl.DataFrame | None = None  # feature, importance (sorted, descending)
    model_version: str | None = None  # the segment model whose labels it learned

    def _X(self, frame: pl.DataFrame) -> np.ndarray:
        if self.preprocessor is not None:
            return self.preprocessor.transform(frame)
        X = to_matrix(frame, self.features)
        return np.where(np.isfinite(X), X, 0.0)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict(self._X(frame)), dtype=np.int64)

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Columns follow ``classes``."""
        return self.estimator.predict_proba(self._X(frame))

    def save(self, path) -> None:
        joblib.dump(self, path, compress=3)

    @staticmethod
    def load(path) -> SegmentClassifier:
        obj = load_artifact(path)
        if not isinstance(obj, SegmentClassifier):
            raise TypeError(f"{path} does not hold a SegmentClassifier")
        return obj


def _importances(kind: str, est: Any, X: np.ndarray, y: np.ndarray, features: list[str], seed: int,
                 perm_rows: int) -> pl.DataFrame:
    if kind == "logreg":
        imp = np.abs(np.atleast_2d(est.coef_)).mean(axis=0)
    elif kind == "tree":
        imp = est.feature_importances_
    else:
        from sklearn.inspection import permutation_importance

        idx = sample_indices(len(X), perm_rows, seed)
        imp = permutation_importance(est, X[idx], y[idx], n_repeats=3, random_state=seed, n_jobs=1).importances_mean
    return pl.DataFrame({"feature": features, "importance": np.asarray(imp, dtype=np.float64)}).sort(
        ["importance", "feature"], descending=[True, False])


# Rows a classifier of the model's labels trains on, in the gate and in service: the labels are nearest-centre cells (about
# 100 parameters); at 1M users 200k rows moved 0.25 % of users' first segment for 4x the training (bench/RESULTS.md)
TRAINING_ROWS = 50_000


def train_classifier(X: pl.DataFrame, y: Sequence[int] | np.ndarray, kind: str = "logreg", *,
                     features: Sequence[str] | None = None, max_rows: int = TRAINING_ROWS, test_size: float = 0.2,
                     seed: int = 0, perm_rows: int = 5_000, model_version: str | None = None,
                     threads: int | None = 1) -> SegmentClassifier:
    """Train ``kind`` on (features of ``X`` -> segment ids ``y``) and measure it on a held-out split.

    ``threads`` caps OpenMP/BLAS threads while training (see ``selection.limit_threads``).
    """
    with limit_threads(threads):
        return _train(X, y, kind, features, max_rows, test_size, seed, perm_rows, model_version)


def _train(X: pl.DataFrame, y, kind: str, features, max_rows: int, test_size: float, seed: int, perm_rows: int,
           model_version: str | None) -> SegmentClassifier:
    from sklearn.metrics import accuracy_score, f1_score, recall_score
    from sklearn.model_selection import train_test_split

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    y_all = np.asarray(y, dtype=np.int64)
    if len(y_all) != X.height:
        raise ValueError(f"{len(y_all)} labels for {X.height} rows")
    feats = list(features or [c for c in X.columns if X[c].dtype.is_numeric()])
    idx = sample_indices(X.height, max_rows, seed)
    frame, labels = X[idx], y_all[idx]
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError("need at least two segments to train a classifier")
    strat = labels if counts.min() >= 2 else None
    tr, te = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=strat)
    pre = Preprocessor().fit(frame[tr], feats) if kind in _SCALED else None
    clf = SegmentClassifier(kind, feats, _estimator(kind, seed), pre, [int(c) for c in classes], model_version=model_version)
    X_all = clf._X(frame)
    clf.estimator.fit(X_all[tr], labels[tr])
    pred = clf.estimator.predict(X_all[te])
    recall = recall_score(labels[te], pred, labels=classes, average=None, zero_division=0)
    clf.metrics = {
        "accuracy": float(accuracy_score(labels[te], pred)),
        "macro_f1": float(f1_score(labels[te], pred, labels=classes, average="macro", zero_division=0)),
        "recall_by_segment": {int(c): float(r) for c, r in zip(classes, recall)},
        "train_rows": int(len(tr)), "test_rows": int(len(te)), "kind": kind,
    }
    clf.importances = _importances(kind, clf.estimator, X_all[te], labels[te], feats, seed, perm_rows)
    return clf
