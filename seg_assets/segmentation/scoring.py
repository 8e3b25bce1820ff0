"""``analytics/user_segments`` (every user re-scored) and ``analytics/segment_profiles`` + rules.

Every refresh scores every user with the classifier in service (or the model itself when no
classifier passed its quality gate); scoring is vectorised and costs seconds for a million users, so
"the users whose behaviour changed" are always included. Who actually moved is recorded by the
history asset in ``publish/``. RFM scores and groups, lifecycle stage and value tier are computed next
to the model's segment from visible, configurable thresholds (rule_based.py).
"""

from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.churn.keys import CHURN_SCORES
from seg_assets.features.assets import FRESHNESS, USER_FEATURES
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import GROUP, SEGMENT_CLASSIFIER, SEGMENT_MODEL, read_features
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.profiles import segment_profiles as build_profiles
from seg_assets.segmentation.rule_based import LifecycleThresholds, ValueTiers, rule_based_segments, value_tier_expr
from seg_assets.segmentation.rules import explain_model
from seg_assets.warehouse import table_exists

USER_SEGMENTS = dg.AssetKey(["analytics", "user_segments"])
SEGMENT_PROFILES = dg.AssetKey(["analytics", "segment_profiles"])
SEGMENT_RULES = dg.AssetKey(["analytics", "segment_rules"])



# Joined from analytics.churn_scores (null while no churn model is in service).
CHURN_COLUMNS = ("user_id", "churn_probability", "churn_risk", "expected_value_next_h")
CHURN_SCHEMA = {"user_id": pl.String, "churn_probability": pl.Float64, "churn_risk": pl.String, "expected_value_next_h": pl.Float64}


class ScoringConfig(dg.Config):
    assign_with: Literal["classifier", "model"] = Field(
        default="classifier", description="Who assigns users: the classifier in service (falls back to the model if none).")
    rfm_bins: int = Field(default=5, ge=2, le=10, description="RFM score range 1..rfm_bins (quantiles).")
    new_max_tenure_days: float = Field(default=30.0, description="Lifecycle 'new': tenure up to this many days.")
    active_max_recency_days: float = Field(default=30.0, description="Lifecycle 'active': last order within this many days.")
    at_risk_max_recency_days: float = Field(default=90.0, description="Lifecycle 'at risk': last order within this many days.")
    dormant_max_recency_days: float = Field(default=180.0, description="Lifecycle 'dormant' up to this; 'churned' beyond.")
    value_high_quantile: float = Field(default=0.8, description="Value tier 'high': monetary at or above this quantile of buyers.")
    value_medium_quantile: float = Field(default=0.5, description="Value tier 'medium': at or above this quantile of buyers.")
    value_tier_from: Literal["monetary", "expected_value"] = Field(
        default="monetary", description="Rank value tiers by past spend, or by the churn model's expected spend over the next H days.")


def assign(frame: pl.DataFrame, model: SegmentModel, classifier) -> tuple[np.ndarray, np.ndarray, str]:
    """(segment ids, confidence, who assigned) for every row of ``frame``."""
    if classifier is not None:
        proba = classifier.predict_proba(frame)
        classes = np.asarray(classifier.classes, dtype=np.int64)
        return classes[proba.argmax(axis=1)], proba.max(axis=1), f"classifier {classifier.kind}"
    ids, conf = model.predict(frame)
    return ids, conf, "model"


@dg.asset(
    key=USER_SEGMENTS, deps=[USER_FEATURES, SEGMENT_MODEL, SEGMENT_CLASSIFIER, CHURN_SCORES], group_name=GROUP, pool="duckdb",
    kinds={"duckdb", "polars"}, automation_condition=rescore_on_new_inputs(), freshness_policy=FRESHNESS,
    description="One row per user: segment (stable id and name), confidence, model version, as-of, "
    "RFM scores and group, lifecycle stage, value tier, churn probability and risk, expected value. Published for BI.",
)
def user_segments(context: dg.AssetExecutionContext, config: ScoringConfig, duckdb: Warehouse, settings: SegSettings):
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        current = registry.in_service_model(con)
        if current is None:
            raise dg.Failure("No segment model in service: materialize segment_model first "
                             "(automation does so when none exists; `seg-assets refresh` does it too).")
        model = SegmentModel.load(current.artifact)
        served = registry.in_service_classifier(con, model.version) if config.assign_with == "classifier" else None
        frame = read_features(con)
        churn = (con.sql(f"SELECT {', '.join(CHURN_COLUMNS)} FROM analytics.churn_scores").pl()
                 if table_exists(con, "analytics.churn_scores") else pl.DataFrame(schema=CHURN_SCHEMA))
    ids, confidence, assigned_by = assign(frame, model, served[2] if served else None)
    rules = rule_based_segments(
        frame, bins=config.rfm_bins,
        lifecycle=LifecycleThresholds(config.new_max_tenure_days, config.active_max_recency_days,
                                      config.at_risk_max_recency_days, config.dormant_max_recency_days),
        tiers=ValueTiers(config.value_high_quantile, config.value_medium_quantile),
    )
    stage_of = dict(zip(model.segment_ids, model.cluster_stage))
    scored = pl.DataFrame({"user_id": frame["user_id"], "segment_id": ids.astype(np.int32), "confidence": confidence}).with_columns(
        segment_name=pl.col("segment_id").replace_strict(model.name_of, return_dtype=pl.String),
        segment_stage=pl.col("segment_id").replace_strict(stage_of, return_dtype=pl.String),
        model_version=pl.lit(model.version), as_of=pl.lit(as_of).cast(pl.Datetime("us")),
    ).join(rules, on="user_id", how="left").join(churn, on="user_id", how="left").select(
        "user_id", "segment_id", "segment_name", "confidence", "model_version", "as_of", "segment_stage",
        "r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier", *CHURN_COLUMNS[1:])
    if config.value_tier_from == "expected_value" and scored["expected_value_next_h"].null_count() < scored.height:
        tiers = ValueTiers(config.value_high_quantile, config.value_medium_quantile)
        scored = scored.with_columns(value_tier_expr(tiers, monetary="expected_value_next_h", frequency="expected_value_next_h"))
    with duckdb.get_connection() as con:
        con.sql("CREATE OR REPLACE TABLE analytics.user_segments AS SELECT * FROM scored")
    sizes = scored.group_by("segment_id", "segment_name").agg(pl.len().alias("users"), pl.col("confidence").mean().alias("mean_confidence")).sort("segment_id")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(scored.height), "dagster/table_name": "analytics.user_segments",
        "model_version": model.version, "assigned_by": assigned_by, "as_of": str(as_of),
        "segments": dg.MetadataValue.md(sizes.to_pandas().to_markdown(index=False)),
        "rfm_groups": dg.MetadataValue.md(scored["rfm_group"].value_counts(sort=True).to_pandas().to_markdown(index=False)),
    })


@dg.multi_asset(
    specs=[
        dg.AssetSpec(SEGMENT_PROFILES, deps=[USER_SEGMENTS, USER_FEATURES], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Per segment: size, share, revenue share, mean and median of each feature, the most "
                     "distinguishing features, a one-line description and the rules that describe it."),
        dg.AssetSpec(SEGMENT_RULES, deps=[USER_SEGMENTS, USER_FEATURES], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Plain-text rules (a shallow surrogate decision tree) per segment, with precision and coverage."),
    ],
    name="segment_profiles", pool="duckdb",
)
def segment_profiles(context: dg.AssetExecutionContext, duckdb: Warehouse):
    with duckdb.get_connection() as con:
        current = registry.in_service_model(con)
        model = SegmentModel.load(current.artifact)
        frame = con.sql("SELECT f.*, s.segment_id, s.segment_name, s.as_of AS scored_as_of FROM features.user_features f "
                        "JOIN analytics.user_segments s USING (user_id) ORDER BY user_id").pl()
    ids = frame["segment_id"].to_numpy()
    features = list(model.features)
    profiles = build_profiles(frame, ids, features, names=model.name_of)
    rules = explain_model(model, frame)  # the segments' definition: stage rules, then behaviour rules
    summary = rules.summary().select("segment_id", pl.col("rules"), pl.col("precision").alias("rules_precision"),
                                     pl.col("coverage").alias("rules_coverage"))
    profiles = profiles.join(summary, on="segment_id", how="left").with_columns(
        model_version=pl.lit(model.version), as_of=pl.lit(frame["scored_as_of"][0]).cast(pl.Datetime("us")))
    profiles = profiles.rename({"size": "users"})
    rule_rows = rules.rules.with_columns(
        segment_name=pl.col("segment_id").replace_strict(model.name_of, default=None, return_dtype=pl.String),
        model_version=pl.lit(model.version), surrogate_fidelity=pl.lit(rules.fidelity))
    with duckdb.get_connection() as con:
        con.sql("CREATE OR REPLACE TABLE analytics.segment_profiles AS SELECT * FROM profiles")
        con.sql("CREATE OR REPLACE TABLE analytics.segment_rules AS SELECT * FROM rule_rows")
    shown = profiles.select("segment_id", "segment_name", "users", "share", "revenue_share", "description", "rules")
    yield dg.MaterializeResult(asset_key=SEGMENT_PROFILES, metadata={
        "dagster/row_count": dg.MetadataValue.int(profiles.height), "dagster/table_name": "analytics.segment_profiles",
        "profiles": dg.MetadataValue.md(shown.to_pandas().to_markdown(index=False, floatfmt=".3f")),
    })
    yield dg.MaterializeResult(asset_key=SEGMENT_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(rule_rows.height), "dagster/table_name": "analytics.segment_rules",
        "surrogate_fidelity": dg.MetadataValue.float(float(rules.fidelity)),
        "rules": dg.MetadataValue.md(rule_rows.select("segment_id", "segment_name", "rule", "precision", "coverage")
                                     .to_pandas().to_markdown(index=False, floatfmt=".2f")),
    })
