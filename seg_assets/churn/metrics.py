"""The churn model's holdout metrics: classification, expected-spend regression, calibration table."""

from __future__ import annotations

import warnings

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """None when ``y`` holds one class (no ranking to measure)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def classification_metrics(y_churn: np.ndarray, p_churn: np.ndarray) -> dict:
    """ROC-AUC, PR-AUC (churners, and buyers: the rarer class in most stores), Brier, log loss."""
    from sklearn.metrics import average_precision_score, log_loss

    both = len(np.unique(y_churn)) == 2
    rate = float(np.mean(y_churn)) if len(y_churn) else float("nan")
    return {
        "roc_auc": roc_auc(y_churn, p_churn),
        "pr_auc": float(average_precision_score(y_churn, p_churn)) if both else None,
        "pr_auc_buyers": float(average_precision_score(1 - y_churn, 1 - p_churn)) if both else None,
        "brier": float(np.mean((p_churn - y_churn) ** 2)),
        "brier_base_rate": float(np.mean((y_churn - rate) ** 2)),
        "log_loss": float(log_loss(y_churn, np.clip(p_churn, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "churn_rate": rate,
        "mean_churn_probability": float(np.mean(p_churn)),
        "rows": int(len(y_churn)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    err = pred - y
    with warnings.catch_warnings():  # ranks that tie throughout (few distinct values): no correlation, said as None
        warnings.simplefilter("ignore")  # (SciPy's ConstantInputWarning reached the CLI's console, a tester's)
        rho = spearmanr(y, pred).statistic if np.std(y) > 0 and np.std(pred) > 0 else float("nan")
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "mae_mean_baseline": float(np.mean(np.abs(y - np.mean(y)))),
        "total_actual": float(np.sum(y)),
        "total_predicted": float(np.sum(pred)),
        "spearman": None if rho != rho else float(rho),
    }


def reliability(y_churn: np.ndarray, p_churn: np.ndarray, bins: int = 10) -> list[dict]:
    """Calibration table: per decile of predicted probability, mean prediction vs observed churn rate."""
    if len(y_churn) == 0:
        return []
    order = np.argsort(p_churn, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(order))):
        out.append({"rows": int(len(part)), "mean_predicted": float(p_churn[part].mean()),
                    "observed": float(y_churn[part].mean())})
    return out
