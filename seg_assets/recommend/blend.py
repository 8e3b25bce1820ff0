"""The blend's maths: per feature "has it" and "log of it" (:func:`design`), the logistic fit of the weights, and the
score and the reason as SQL expressions over the feature columns (model.py builds those columns in DuckDB)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("seg_pop", "shop_pop", "bought_before", "also_bought", "category", "clicked")
# The reason a row is recommended: the personal feature that adds most to its score, else the segment.
REASONS = {"bought_before": "bought_before", "also_bought": "also_bought", "category": "favourite_category",
           "clicked": "clicked"}
SEGMENT_POPULAR = "segment_popular"


@dataclass(frozen=True)
class Weights:
    coef: tuple[float, ...]  # per FEATURES "has it", then per FEATURES "ln of it" (design())
    intercept: float
    fitted: bool
    note: str
    fit_rows: int = 0
    fit_positives: int = 0

    def as_dict(self) -> dict:
        k = len(FEATURES)
        return {"has": dict(zip(FEATURES, self.coef[:k])), "log": dict(zip(FEATURES, self.coef[k:])),
                "intercept": self.intercept, "fitted": self.fitted,
                "note": self.note, "fit_rows": self.fit_rows, "fit_positives": self.fit_positives}


BASELINE = Weights(tuple(0.0 for _ in FEATURES) + tuple(1.0 if f == "seg_pop" else 0.0 for f in FEATURES), 0.0, False, "")


def design(x: np.ndarray) -> np.ndarray:
    """Per feature f: [f > 0, ln f where f > 0 else 0]: "has any of this signal" and "how much" (log-linear)."""
    x = np.asarray(x, dtype=np.float64)
    has = x > 0
    return np.column_stack([has, np.where(has, np.log(np.where(has, x, 1.0)), 0.0)])


def fit_weights(x: np.ndarray, y: np.ndarray, min_positives: int = 20) -> Weights:
    """Logistic regression of ``y`` (bought in the horizon) on :func:`design` of ``x`` (rows x FEATURES).

    Too few positives (or no negatives) returns the baseline's weights with the reason."""
    from sklearn.linear_model import LogisticRegression

    pos = int(np.sum(y))
    if pos < min_positives or pos == len(y):
        return Weights(BASELINE.coef, 0.0, False, f"{pos} purchases of {len(y)} candidates in the fitting horizon "
                       f"(need {min_positives}): ranked by segment popularity", len(y), pos)
    # Newton-Cholesky: few features, many rows (its documented case); 8 iterations where lbfgs took 70, to a closer optimum
    model = LogisticRegression(C=1.0, max_iter=5000, solver="newton-cholesky").fit(design(x), y)
    return Weights(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), True, "fitted", len(y), pos)


def _terms(w: Weights) -> dict[str, str]:
    """Each feature's term of the logit, in SQL (the columns of :func:`design` times their weights)."""
    k = len(FEATURES)
    return {f: f"(CASE WHEN {f} > 0 THEN {float(w.coef[i])!r} + {float(w.coef[k + i])!r} * ln({f}) ELSE 0 END)"
            for i, f in enumerate(FEATURES)}


def score_sql(w: Weights) -> str:
    """The blend's probability over the FEATURES columns; without fitted weights, the segment's popularity itself (the
    blend's form would put a product the segment never bought, ``ln`` term 0, above every product it did)."""
    if not w.fitted:
        return "seg_pop::DOUBLE"
    return f"1.0 / (1.0 + exp(-({float(w.intercept)!r} + {' + '.join(_terms(w).values())})))"


def reason_sql(w: Weights) -> str:
    """The personal feature adding most to the score (over its value at 0), else 'segment_popular'. Without fitted
    weights the ranking is the segment's popularity: a product the segment never bought is listed for a personal
    signal (clicks, say, in a shop without baskets yet), which is then its reason."""
    if not w.fitted:
        personal = " ".join(f"WHEN {f} > 0 THEN '{r}'" for f, r in REASONS.items())
        return f"CASE WHEN seg_pop > 0 THEN '{SEGMENT_POPULAR}' {personal} ELSE '{SEGMENT_POPULAR}' END"
    terms = _terms(w)
    gains = {REASONS[f]: f"greatest({terms[f]}, 0)" for f in FEATURES if f in REASONS}
    best = f"greatest({', '.join(gains.values())})"
    cases = " ".join(f"WHEN {g} THEN '{r}'" for r, g in gains.items())
    return f"CASE WHEN {best} <= 0 THEN '{SEGMENT_POPULAR}' ELSE CASE {best} {cases} END END"
