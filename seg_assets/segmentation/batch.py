"""The per-user maths of ``analytics.user_segments``, one batch of users at a time, for both engines.

:func:`score_segments` takes a batch (the users' features, the segment each keeps or had, their churn
scores) and returns the table's rows for them. Everything it needs from the population or the registry
is in one picklable :class:`SegmentScorer` built before the first batch: the model and the classifier in
service, the RFM rank cuts and value cuts of the whole population (rule_based.py). A row depends on its
own user and the scorer only, so any split of the users into batches gives the same rows: DuckDB's
path calls it on the users of one refresh, Spark's (``seg_assets/spark/scoring.py``) on each Arrow
batch of every partition, with the scorer broadcast. That is how both engines give the same segments.

Batch columns: the feature table's columns, ``kept_id`` / ``kept_confidence`` (the segment a user keeps
without re-assignment, null to re-assign), ``previous_id`` (the published segment, for the sticky rule of
membership.py; null for none) and :data:`CHURN_COLUMNS` (joined from ``analytics.churn_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from seg_assets.segmentation.membership import NO_SEGMENT, in_stage, model_proba, same_stage, sticky_assign, sticky_odds_of
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.rule_based import (
    RFM_GROUPS,
    LifecycleThresholds,
    ReferenceCuts,
    ValueTiers,
    rule_based_segments,
    value_tier_expr,
)

# Joined from analytics.churn_scores (null while no churn model is in service).
CHURN_COLUMNS = ("user_id", "churn_probability", "churn_risk", "expected_value_next_h")
RULE_INPUTS = ("recency_days", "frequency", "monetary", "tenure_days")  # what rule_based_segments reads
EXPECTED_VALUE = "expected_value_next_h"
# analytics.user_segments, column by column: what score_segments returns (and the Spark schema, derived from it).
OUTPUT: dict[str, pl.DataType] = {
    "user_id": pl.String, "segment_id": pl.Int32, "segment_name": pl.String, "confidence": pl.Float64,
    "model_version": pl.String, "as_of": pl.Datetime("us"), "segment_stage": pl.String,
    "r_score": pl.Int8, "f_score": pl.Int8, "m_score": pl.Int8, "rfm_score": pl.String, "rfm_group": pl.String,
    "lifecycle_stage": pl.String, "value_tier": pl.String, "churn_probability": pl.Float64, "churn_risk": pl.String,
    EXPECTED_VALUE: pl.Float64, "assigned_by": pl.String, "rules_version": pl.String, "features_build": pl.String,
}
COLUMNS = tuple(OUTPUT)


@dataclass(frozen=True)
class SegmentScorer:
    """What every batch needs, fitted or computed once: models, thresholds, the population's cuts."""

    model: SegmentModel
    classifier: Any  # SegmentClassifier in service, or None: the model assigns
    assigned_by: str
    rules_version: str
    bins: int
    lifecycle: LifecycleThresholds
    tiers: ValueTiers
    cuts: ReferenceCuts  # RFM ranks and monetary value cuts of the whole population
    value_cuts_expected: tuple[float | None, float | None] | None = None  # value tiers by expected spend instead
    groups: tuple[tuple[str, int, int, int, int], ...] = RFM_GROUPS


def feature_columns(model: SegmentModel, classifier) -> list[str]:
    """The columns of ``features.user_features`` that :func:`score_segments` reads (the batch's others come from the
    selection): the model's and the classifier's inputs, the rules' inputs and the stamps copied to each row."""
    return list(dict.fromkeys(["user_id", "as_of", "features_build", *RULE_INPUTS, *model.input_columns(),
                               *(classifier.features if classifier is not None else ())]))


def assign(frame: pl.DataFrame, model: SegmentModel, classifier, previous: np.ndarray | None = None,
           chunk_rows: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """(segment ids, confidence) for every row of ``frame``.

    ``previous``: each user's published segment id (``NO_SEGMENT`` for none); a user keeps it unless
    another segment is clearly better (the model's ``sticky_odds``, membership.py). Confidence is the
    assigner's probability of the segment given.
    """
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    odds = sticky_odds_of(model)
    prev = np.full(frame.height, NO_SEGMENT, dtype=np.int64) if previous is None else np.asarray(previous, dtype=np.int64)
    ids, conf = [], []
    for start in range(0, frame.height, chunk_rows):
        part, before = frame.slice(start, chunk_rows), prev[start:start + chunk_rows]
        if classifier is not None:  # kept to the user's lifecycle stage, as the model's own assignment is
            proba, classes = in_stage(classifier.predict_proba(part), classifier.classes, model, part), classifier.classes
        else:
            proba, classes = model_proba(model, part), model.segment_ids
        i, c = sticky_assign(proba, classes, before, odds, same_stage(model, part, before))
        ids.append(i)
        conf.append(c)
    return np.concatenate(ids), np.concatenate(conf)


def score_segments(batch: pl.DataFrame, scorer: SegmentScorer) -> pl.DataFrame:
    """The rows of ``analytics.user_segments`` for ``batch`` (columns :data:`OUTPUT`, in the batch's order):
    kept or newly assigned segment, rule-based columns by the population's cuts, churn columns as given."""
    model = scorer.model
    todo = batch.filter(pl.col("kept_id").is_null())
    previous = todo["previous_id"].fill_null(NO_SEGMENT).to_numpy().astype(np.int64)
    ids, confidence = assign(todo, model, scorer.classifier, previous)
    new = pl.DataFrame({"user_id": todo["user_id"], "segment_id": ids.astype(np.int32), "confidence": confidence},
                       schema={"user_id": pl.String, "segment_id": pl.Int32, "confidence": pl.Float64})
    assigned = batch.select("user_id", pl.col("kept_id").cast(pl.Int32).alias("segment_id"),
                            pl.col("kept_confidence").cast(pl.Float64).alias("confidence")
                            ).update(new, on="user_id", how="left")
    rules = rule_based_segments(batch.select("user_id", *RULE_INPUTS), bins=scorer.bins, groups=scorer.groups,
                                lifecycle=scorer.lifecycle, tiers=scorer.tiers, cuts=scorer.cuts)
    if scorer.value_cuts_expected is not None:
        tier = batch.select("user_id", value_tier_expr(scorer.tiers, monetary=EXPECTED_VALUE, frequency=EXPECTED_VALUE,
                                                       cuts=scorer.value_cuts_expected))
        rules = rules.drop("value_tier").join(tier, on="user_id", how="left", maintain_order="left")
    stage_of = dict(zip(model.segment_ids, model.cluster_stage))
    scored = batch.select("user_id", "as_of", "features_build", *CHURN_COLUMNS[1:]).join(
        assigned, on="user_id", how="left", maintain_order="left").with_columns(
        segment_name=pl.col("segment_id").replace_strict(model.name_of, return_dtype=pl.String),
        segment_stage=pl.col("segment_id").replace_strict(stage_of, return_dtype=pl.String),
        model_version=pl.lit(model.version), assigned_by=pl.lit(scorer.assigned_by),
        rules_version=pl.lit(scorer.rules_version),
    ).join(rules, on="user_id", how="left", maintain_order="left")
    return scored.select([pl.col(c).cast(t) for c, t in OUTPUT.items()])
