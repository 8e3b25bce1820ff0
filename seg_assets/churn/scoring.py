"""The per-user maths of ``analytics.churn_scores``, one batch of users at a time, for both engines.

:func:`score_churn` turns a batch of feature rows into score rows with the model in service held by a
picklable :class:`ChurnScorer`; DuckDB's path calls it on the users of one refresh, Spark's on each
Arrow batch (``seg_assets/spark/scoring.py``, the scorer broadcast). A row depends on its user only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from seg_assets.churn.model import ChurnModel, risk_levels

# analytics.churn_scores, column by column (the Spark schema is derived from it).
OUTPUT: dict[str, pl.DataType] = {
    "user_id": pl.String, "churn_probability": pl.Float64, "churn_risk": pl.String, "expected_value_next_h": pl.Float64,
    "churn_model_version": pl.String, "as_of": pl.Datetime("us"), "features_build": pl.String,
}
SCORE_COLUMNS = tuple(OUTPUT)


@dataclass(frozen=True)
class ChurnScorer:
    model: ChurnModel | None  # None: no model in service, every score null
    risk_high: float  # ChurnConfig's thresholds
    risk_medium: float


def score_churn(batch: pl.DataFrame, scorer: ChurnScorer) -> pl.DataFrame:
    """Score rows for ``batch`` (nulls without a model), stamped with the as-of and build of the features scored
    (columns :data:`OUTPUT`)."""
    n, model = batch.height, scorer.model
    if model is None:
        p = pl.Series("churn_probability", [None] * n, dtype=pl.Float64)
        risk = pl.Series("churn_risk", [None] * n, dtype=pl.String)
        value = pl.Series("expected_value_next_h", [None] * n, dtype=pl.Float64)
        version = None
    else:
        prob, expected = model.scores(batch)
        p = pl.Series("churn_probability", prob, dtype=pl.Float64)
        risk = pl.Series("churn_risk", risk_levels(prob, scorer.risk_high, scorer.risk_medium) if n else [], dtype=pl.String)
        value = pl.Series("expected_value_next_h", np.round(expected, 2), dtype=pl.Float64)
        version = model.version
    return pl.DataFrame({"user_id": batch["user_id"]}).with_columns(
        p, risk, value, churn_model_version=pl.lit(version, dtype=pl.String),
        as_of=batch["as_of"].cast(pl.Datetime("us")), features_build=batch["features_build"].cast(pl.String)).select(
        [pl.col(c).cast(t) for c, t in OUTPUT.items()])
