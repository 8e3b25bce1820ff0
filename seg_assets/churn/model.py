"""Churn probability and expected spend over the next H days: train, calibrate, evaluate, predict.

Pure maths over the snapshot frames of snapshots.py (``snapshot`` 0 = the latest cut-off ``c_0 = T - H``).

**Inputs** (:func:`churn_inputs`): the numeric model features of the feature dictionary and, when the
training snapshots hold reviews, the review features (availability.py), plus ratios
derived from them (orders and spend per 30 days of tenure, active span, mean gap between orders, recency
over that gap). The same function prepares the training snapshots and today's users.

**Models**: ``gbm`` (HistGradientBoostingClassifier) and ``logreg`` (signed log1p, standardise,
L2-regularised LogisticRegression, C = 0.1). The default ``auto`` fits both and keeps the one with the
higher ROC-AUC on the time-based holdout (ties go to ``gbm``). Target: ``churned`` = no completed order
in the next H days. Why not plain ``gbm`` by default: on CDNOW (one acquisition cohort) every customer
scored at ``T`` is older, and has a longer recency if they bought once, than any customer a snapshot can
show; trees cannot extrapolate beyond the training range and rank those customers at random (AUC 0.49
among one-time buyers, 0.760 overall on weeks 40-78), while the linear model extrapolates (0.777). The
honest holdout sees this (0.715 vs 0.743 on the sample, 0.745 vs 0.751 on the master file) and ``auto``
picks ``logreg``; on the demo data, with continuous acquisition, it picks ``gbm`` (0.759 vs 0.732).
C = 0.1 vs 1.0 is indistinguishable on the holdout (0.743 vs 0.743); it was chosen with the CDNOW
weeks 40-78 result in view (0.777 vs 0.775), see the README for every figure.

**Time-based holdout** (the metrics shown in the UI and gated by the AUC check): the model is trained as
it would have been at ``c_0``, i.e. only on snapshots whose label window ends by then
(``c_k + H <= c_0``), and tested on snapshot 0. Snapshots with ``c_0 - H < c_k < c_0`` are left out of
that fit on purpose: their labels overlap snapshot 0's window, and with one row per user per snapshot a
flexible model would partly memorise the answer (``gbm`` on the CDNOW sample with a 7-day step: holdout
AUC 0.789 with the overlapping snapshots, 0.714 without). With too little history for such a snapshot
(less than about ``2 H`` + 30 days), the fallback is ``out-of-time, unseen users``: a quarter of the users
is held out entirely, the model is trained on the other users' earlier snapshots and tested on the
held-out users' snapshot 0.

**Calibration**: Platt scaling (``sigmoid``, the default) or ``isotonic``, fitted on the holdout model's
out-of-time scores of snapshot 0 and applied to the model in service, which is refitted on all snapshots
(scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` scheme with a time-based split). Platt keeps
the ranking (isotonic creates ties, which cost about 0.01 AUC on CDNOW). The holdout's Brier score and
log loss are measured with cross-fitted calibration (calibrator fitted on one half of snapshot 0, applied
to the other, and the other way round), so they are honest too.

**Expected spend** over the next H days: a regressor of the chosen kind (``gbm``: gradient boosting with
Poisson loss, suited to a non-negative target with many zeros; ``logreg``: a Poisson GLM on the same
preprocessing), same holdout (MAE, RMSE, predicted / actual total, Spearman) and refitted on everything.

Fits run single-threaded by default (``threads``; see ``segmentation.selection.limit_threads``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from seg_assets.artifacts import load_artifact, save_artifact
from seg_assets.churn.keys import RISK_LEVELS
from seg_assets.churn.metrics import classification_metrics, regression_metrics, reliability, roc_auc
from seg_assets.features.dictionary import CHURN_FEATURES, REVIEW_FEATURES
from seg_assets.segmentation.selection import limit_threads, sample_indices

KINDS = ("auto", "gbm", "logreg")
CALIBRATIONS = ("sigmoid", "isotonic")
OUT_OF_TIME = "out-of-time"
UNSEEN_USERS = "out-of-time, unseen users"
# divisions by a constant as products with its reciprocal: polars divides a one-row column truly and a longer one by
# the reciprocal, so a refresh scoring one user gave other last digits than a batch of many (features/user_features.py)
_DAYS_PER_SECOND = 1.0 / 86_400.0
_MONTHS_PER_DAY = 1.0 / 30.0


def churn_inputs(frame: pl.DataFrame) -> pl.DataFrame:
    """The model's input columns (float64), from a frame with the feature dictionary's columns."""
    span = ((pl.col("last_order_ts") - pl.col("first_seen_ts")).dt.total_seconds() * _DAYS_PER_SECOND).fill_null(0.0).clip(lower_bound=0.0)
    months = pl.col("tenure_days").clip(lower_bound=1.0) * _MONTHS_PER_DAY
    gap = (pl.when(pl.col("frequency") >= 2).then(span / (pl.col("frequency") - 1).clip(lower_bound=1))
           .otherwise(pl.col("tenure_days"))).clip(lower_bound=1.0)
    base = [c for c in CHURN_FEATURES if c in frame.columns]
    return frame.select(
        *[pl.col(c).cast(pl.Float64) for c in base],
        orders_per_30d=pl.col("frequency") / months,
        active_span_days=span,
        mean_gap_days=gap,
        recency_over_gap=(pl.col("recency_days") / gap).clip(upper_bound=100.0),
        monetary_per_30d=pl.col("monetary") / months,
    ).fill_nan(0.0).fill_null(0.0)


def _matrix(frame: pl.DataFrame, features: tuple[str, ...]) -> np.ndarray:
    inputs = churn_inputs(frame)
    missing = [c for c in features if c not in inputs.columns]
    if missing:
        inputs = inputs.with_columns([pl.lit(0.0).alias(c) for c in missing])
    return inputs.select(features).to_numpy().astype(np.float64)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """log1p that keeps the sign (counts and amounts are heavy-tailed); module level so joblib can pickle it."""
    return np.sign(x) * np.log1p(np.abs(x))


def _log_pipeline(estimator):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(FunctionTransformer(signed_log1p, feature_names_out="one-to-one"), StandardScaler(), estimator)


def make_classifier(kind: str, seed: int = 0):
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        # 50 trees at rate 0.2: the holdout AUC of 100 at 0.1 and of 200 at 0.05 (0.7748 vs 0.7749 at 1M users;
        # earlier 0.7786 vs 0.7789 for 100 vs 200), with half the trees to fit and to walk when scoring a
        # million users (bench/RESULTS.md).
        return HistGradientBoostingClassifier(learning_rate=0.2, max_iter=50, max_leaf_nodes=15, min_samples_leaf=100,
                                              l2_regularization=1.0, early_stopping=False, random_state=seed)
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return _log_pipeline(LogisticRegression(C=0.1, max_iter=2_000))
    raise ValueError(f"kind must be 'gbm' or 'logreg', not {kind!r}")


def make_regressor(kind: str, seed: int = 0):
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(loss="poisson", learning_rate=0.2, max_iter=50, max_leaf_nodes=15,
                                             min_samples_leaf=100, l2_regularization=1.0, early_stopping=False,
                                             random_state=seed)
    if kind == "logreg":
        from sklearn.linear_model import PoissonRegressor

        return _log_pipeline(PoissonRegressor(alpha=1e-2, max_iter=1_000))
    raise ValueError(f"kind must be 'gbm' or 'logreg', not {kind!r}")


@contextmanager
def convergence_notes():
    """Collects scikit-learn's ConvergenceWarnings as one-line notes instead of letting them print (a 120-user shop's
    value model stopped at its iteration limit and the refresh printed six lines of advice to scale the data, which
    the pipeline does); other warnings pass through."""
    from sklearn.exceptions import ConvergenceWarning

    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            yield notes
    finally:
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                line = str(w.message).splitlines()[0].strip()
                if line not in notes:
                    notes.append(line)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class Calibrator:
    """Maps the base model's churn score to a calibrated probability (Platt or isotonic)."""

    def __init__(self, method: str = "sigmoid"):
        if method not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {method!r}")
        self.method = method
        self._model = None

    def fit(self, scores: np.ndarray, y: np.ndarray) -> Calibrator:
        if len(np.unique(y)) < 2:  # one class only: nothing to learn, keep the scores as they are
            self._model = None
            return self
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            self._model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, y)
        else:
            from sklearn.linear_model import LogisticRegression

            self._model = LogisticRegression(C=1e6, max_iter=1_000).fit(_logit(scores)[:, None], y)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        if self._model is None:
            return np.clip(scores, 0.0, 1.0)
        if self.method == "isotonic":
            return self._model.predict(scores)
        return self._model.predict_proba(_logit(scores)[:, None])[:, 1]


def risk_levels(p: np.ndarray, high: float, medium: float) -> np.ndarray:
    """'high' when p >= high, 'medium' when p >= medium, else 'low' (keys.RISK_LEVELS; SQL: churn/assets._risk_sql)."""
    top, middle, bottom = RISK_LEVELS
    return np.where(p >= high, top, np.where(p >= medium, middle, bottom))


@dataclass(frozen=True)
class Holdout:
    train: np.ndarray  # boolean masks over the snapshot rows
    test: np.ndarray
    scheme: str


def holdout_split(snapshots: pl.DataFrame, horizon_days: int, *, seed: int = 0, unseen_share: float = 0.25) -> Holdout:
    """Train on snapshots whose label window ends by ``c_0``, test on snapshot 0 (see the module docstring)."""
    k = snapshots["snapshot"].to_numpy()
    ts = snapshots["snapshot_ts"]
    c0 = ts.filter(snapshots["snapshot"] == 0).max()
    test = k == 0
    if c0 is None:
        raise ValueError("no rows in the latest snapshot (0): nothing to test on")
    train = (k >= 1) & (ts + timedelta(days=horizon_days) <= c0).to_numpy()
    if train.any():
        return Holdout(train, test, OUT_OF_TIME)
    users = snapshots["user_id"].unique().sort()
    held = users[sample_indices(users.len(), max(1, int(round(users.len() * unseen_share))), seed + 7)]
    is_held = snapshots["user_id"].is_in(held.implode()).to_numpy()
    return Holdout((k >= 1) & ~is_held, test & is_held, UNSEEN_USERS)


def _cross_fitted(scores: np.ndarray, y: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Calibrated probabilities for every row from a calibrator fitted on the other half."""
    half = np.zeros(len(y), dtype=bool)
    half[sample_indices(len(y), len(y) // 2, seed + 13)] = True
    out = np.empty(len(y))
    for fit_on in (half, ~half):
        out[~fit_on] = Calibrator(method).fit(scores[fit_on], y[fit_on]).transform(scores[~fit_on])
    return out


@dataclass
class ChurnModel:
    """A fitted churn + expected value model, as stored under ``models/churn/<version>.joblib``."""

    version: str
    kind: str  # the kind in service (gbm or logreg), after ``auto`` chose
    horizon_days: int
    features: tuple[str, ...]
    classifier: object
    calibrator: Calibrator
    regressor: object
    metrics: dict
    as_of: datetime | None = None
    cutoffs: tuple[datetime, ...] = ()
    fitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    importances: pl.DataFrame | None = None

    @property
    def auc(self) -> float | None:
        return self.metrics.get("holdout", {}).get("roc_auc")

    def churn_probability(self, frame: pl.DataFrame) -> np.ndarray:
        return self._probability(_matrix(frame, self.features)) if frame.height else np.zeros(0)

    def expected_value(self, frame: pl.DataFrame) -> np.ndarray:
        return self._value(_matrix(frame, self.features)) if frame.height else np.zeros(0)

    def scores(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(churn_probability, expected_value) from one input matrix (scoring reads both for every row)."""
        if frame.height == 0:
            return np.zeros(0), np.zeros(0)
        x = _matrix(frame, self.features)
        return self._probability(x), self._value(x)

    def _probability(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.calibrator.transform(self.classifier.predict_proba(x)[:, 1]), 0.0, 1.0)

    def _value(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.regressor.predict(x), 0.0, None)

    def save(self, path: str | Path) -> Path:
        return save_artifact(self, path)

    @staticmethod
    def load(path: Path) -> ChurnModel:
        return load_artifact(path)


IMPORTANCE_ROWS, IMPORTANCE_REPEATS = 5_000, 3


def _ranking_score(clf, x: np.ndarray) -> np.ndarray:
    """What scikit-learn's ``roc_auc`` scorer ranks by: the decision function if there is one, else P(class 1)."""
    if hasattr(clf, "decision_function"):
        return clf.decision_function(x)
    return clf.predict_proba(x)[:, 1]


def _importances(clf, x: np.ndarray, y: np.ndarray, features: tuple[str, ...], seed: int) -> pl.DataFrame | None:
    """Permutation importance (drop of the holdout ROC-AUC when one feature's column is shuffled), exactly as
    ``sklearn.inspection.permutation_importance(clf, ..., scoring="roc_auc", n_repeats=3, random_state=seed)`` on the
    same rows: the same shuffles (one RandomState per column from the same seed, each repeat shuffling the column
    again), but every shuffled copy is scored in ONE call of the model instead of one per feature and repeat. The
    model scores each row on its own, so the scores are the same; with 50 trees and 26 features the per-call overhead
    of 78 calls (3,900 tree walks of 5,000 rows, each an OpenMP region) was most of the churn fit's importance cost."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    idx = sample_indices(len(y), IMPORTANCE_ROWS, seed + 17)
    xs, ys = np.asarray(x[idx], dtype=np.float64), y[idx]
    n, width = xs.shape
    column_seed = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    stacked = np.tile(xs, (1 + width * IMPORTANCE_REPEATS, 1))  # block 0 as is, then one per (column, repeat)
    for col in range(width):
        rng, order, column = np.random.RandomState(column_seed), np.arange(n), xs[:, col]
        for rep in range(IMPORTANCE_REPEATS):
            rng.shuffle(order)
            column = column[order]  # each repeat shuffles the shuffled column again, as scikit-learn does
            block = 1 + col * IMPORTANCE_REPEATS + rep
            stacked[block * n:(block + 1) * n, col] = column
    scores = _ranking_score(clf, stacked).reshape(-1, n)
    baseline = roc_auc_score(ys, scores[0])
    drops = np.array([baseline - roc_auc_score(ys, s) for s in scores[1:]]).reshape(width, IMPORTANCE_REPEATS)
    return pl.DataFrame({"feature": list(features), "auc_drop": drops.mean(axis=1)}).sort("auc_drop", descending=True)


def train_churn_model(snapshots: pl.DataFrame, *, horizon_days: int, kind: str = "auto", calibration: str = "sigmoid",
                      version: str = "churn-0001", as_of: datetime | None = None, cutoffs: tuple[datetime, ...] = (),
                      seed: int = 0, threads: int | None = 1) -> ChurnModel:
    """Evaluate on the time-based holdout, pick the kind (``auto``), refit on everything, calibrate."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
    split = holdout_split(snapshots, horizon_days, seed=seed)
    if not split.train.any() or not split.test.any():
        raise ValueError("need the latest snapshot (0) to test on and at least one earlier snapshot to train on")
    from seg_assets.segmentation.availability import without_data

    no_data = without_data(snapshots, REVIEW_FEATURES)  # review features only when the history has reviews
    features = tuple(c for c in churn_inputs(snapshots.head(1)).columns if c not in no_data)
    x = _matrix(snapshots, features)
    y = snapshots["churned"].to_numpy().astype(np.int64)
    spend = snapshots["spend_next_h"].to_numpy().astype(np.float64)
    tr, te = split.train, split.test
    if len(np.unique(y[tr])) < 2:
        raise ValueError("the training snapshots hold a single class (everyone churned or nobody did)")

    with limit_threads(threads), convergence_notes() as unconverged:
        candidates = {}
        for name in (("gbm", "logreg") if kind == "auto" else (kind,)):
            holdout_model = make_classifier(name, seed).fit(x[tr], y[tr])
            raw = holdout_model.predict_proba(x[te])[:, 1]
            candidates[name] = (roc_auc(y[te], raw), holdout_model, raw)
        chosen = max(candidates, key=lambda n: (candidates[n][0] or 0.0, n == "gbm"))
        auc, holdout_model, raw = candidates[chosen]

        calibrated = _cross_fitted(raw, y[te], calibration, seed)
        holdout = classification_metrics(y[te], calibrated)
        holdout["roc_auc_calibrated"] = holdout["roc_auc"]
        holdout["roc_auc"] = auc  # the model's ranking (Platt keeps it; isotonic may add ties)
        recency = snapshots["recency_days"].to_numpy()[te]
        holdout["roc_auc_recency_only"] = roc_auc(y[te], recency)
        holdout["roc_auc_frequency_only"] = roc_auc(y[te], -snapshots["frequency"].to_numpy()[te].astype(float))
        importances = _importances(holdout_model, x[te], y[te], features, seed)

        value_model = make_regressor(chosen, seed).fit(x[tr], spend[tr])
        value_holdout = regression_metrics(spend[te], np.clip(value_model.predict(x[te]), 0.0, None))

        # The model in service: all snapshots, calibrated on the holdout model's out-of-time scores.
        classifier = make_classifier(chosen, seed).fit(x, y)
        calibrator = Calibrator(calibration).fit(raw, y[te])
        regressor = make_regressor(chosen, seed).fit(x, spend)

    k = snapshots["snapshot"].to_numpy()
    metrics = {
        "holdout": holdout,
        "value_holdout": value_holdout,
        "holdout_scheme": split.scheme,
        "holdout_reliability": reliability(y[te], calibrated),
        "holdout_train_rows": int(tr.sum()),
        "candidates": {n: c[0] for n, c in candidates.items()},
        "kind_requested": kind,
        "calibration": calibration,
        "training_rows": int(len(y)),
        "training_churn_rate": float(y.mean()),
        "snapshots": int(k.max() + 1),
        "rows_by_snapshot": {str(int(i)): int((k == i).sum()) for i in np.unique(k)},
        "not_converged": unconverged,  # scikit-learn's ConvergenceWarnings, one line each (a fit stopped at max_iter)
    }
    return ChurnModel(version=version, kind=chosen, horizon_days=horizon_days, features=features, classifier=classifier,
                      calibrator=calibrator, regressor=regressor, metrics=metrics, as_of=as_of, cutoffs=tuple(cutoffs),
                      importances=importances)
