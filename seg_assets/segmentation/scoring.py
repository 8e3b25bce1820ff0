"""``analytics/user_segments`` (users whose behaviour changed re-scored) and ``analytics/segment_profiles`` + rules.

Every refresh assigns a segment with the classifier in service (or the model itself when no classifier
passed its quality gate) to the users whose features were recomputed (new rows since the last refresh),
to new users, and to everyone after a model or classifier change or a rebase; the other users keep
their segment and the ``as_of`` of the features it was assigned from. Who actually moved is recorded
by the history asset in ``publish/``. RFM scores and groups, lifecycle stage and value tier are computed next
to the model's segment from visible, configurable thresholds (rule_based.py).
"""

from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.churn.keys import CHURN_SCORES
from seg_assets.features import incremental as inc
from seg_assets.features.assets import FRESHNESS, USER_FEATURES
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import GROUP, SEGMENT_CLASSIFIER, SEGMENT_MODEL
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.profiles import segment_profiles as build_profiles
from seg_assets.segmentation.rule_based import LifecycleThresholds, ValueTiers, rule_based_segments, value_tier_expr
from seg_assets.segmentation.rules import explain_model
from seg_assets.warehouse import table_exists

USER_SEGMENTS = dg.AssetKey(["analytics", "user_segments"])
SEGMENT_PROFILES = dg.AssetKey(["analytics", "segment_profiles"])
SEGMENT_RULES = dg.AssetKey(["analytics", "segment_rules"])
TABLE = "analytics.user_segments"



# Joined from analytics.churn_scores (null while no churn model is in service).
CHURN_COLUMNS = ("user_id", "churn_probability", "churn_risk", "expected_value_next_h")
RULE_INPUTS = ("recency_days", "frequency", "monetary", "tenure_days")  # what rule_based_segments reads


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
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), "nobody to assign"
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
    rebase = inc.rebase_requested(context.run.tags)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        current = registry.in_service_model(con)
        if current is None:
            raise dg.Failure("No segment model in service: materialize segment_model first "
                             "(automation does so when none exists; `seg-assets refresh` does it too).")
        model = SegmentModel.load(current.artifact)
        served = registry.in_service_classifier(con, model.version) if config.assign_with == "classifier" else None
        scored_with = f"classifier {served[0]}" if served else f"model {model.version}"
        everyone = rebase or not table_exists(con, TABLE)
        versions = {"model_version": model.version, "assigned_by": scored_with}
        pending = inc.pending_rows_sql(con, TABLE, versions, everyone=everyone)
        changed = con.sql(f"{pending} ORDER BY user_id").pl()
        # Everyone, narrow: RFM scores and value tiers rank the whole population; kept segments; churn.
        sql, params = _population_sql(con, everyone, versions)
        frame = con.sql(sql, params=params or None).pl()
    ids, confidence, _ = assign(changed, model, served[2] if served else None)
    assigned = frame.select("user_id", pl.col("kept_id").alias("segment_id"), pl.col("kept_confidence").alias("confidence")).update(
        pl.DataFrame({"user_id": changed["user_id"], "segment_id": ids.astype(np.int32), "confidence": confidence}),
        on="user_id", how="left")
    rules = rule_based_segments(
        frame, bins=config.rfm_bins,
        lifecycle=LifecycleThresholds(config.new_max_tenure_days, config.active_max_recency_days,
                                      config.at_risk_max_recency_days, config.dormant_max_recency_days),
        tiers=ValueTiers(config.value_high_quantile, config.value_medium_quantile),
    )
    stage_of = dict(zip(model.segment_ids, model.cluster_stage))
    scored = frame.select("user_id", "as_of", *CHURN_COLUMNS[1:]).join(assigned, on="user_id", how="left").with_columns(
        segment_name=pl.col("segment_id").replace_strict(model.name_of, return_dtype=pl.String),
        segment_stage=pl.col("segment_id").replace_strict(stage_of, return_dtype=pl.String),
        model_version=pl.lit(model.version), assigned_by=pl.lit(scored_with),
        as_of=pl.col("as_of").cast(pl.Datetime("us")),
    ).join(rules, on="user_id", how="left").select(
        "user_id", "segment_id", "segment_name", "confidence", "model_version", "as_of", "segment_stage",
        "r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier", *CHURN_COLUMNS[1:],
        "assigned_by")
    if config.value_tier_from == "expected_value" and scored["expected_value_next_h"].null_count() < scored.height:
        tiers = ValueTiers(config.value_high_quantile, config.value_medium_quantile)
        scored = scored.with_columns(value_tier_expr(tiers, monetary="expected_value_next_h", frequency="expected_value_next_h"))
    with duckdb.get_connection() as con:
        con.sql(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT * FROM scored")
    sizes = scored.group_by("segment_id", "segment_name").agg(pl.len().alias("users"), pl.col("confidence").mean().alias("mean_confidence")).sort("segment_id")
    context.log.info(f"user_segments: {changed.height} of {scored.height} users assigned ({scored_with}), as of {as_of}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(scored.height), "dagster/table_name": TABLE,
        "users_assigned": dg.MetadataValue.int(changed.height),
        "model_version": model.version, "assigned_by": scored_with, "as_of": str(as_of),
        "segments": dg.MetadataValue.md(sizes.to_pandas().to_markdown(index=False)),
        "rfm_groups": dg.MetadataValue.md(scored["rfm_group"].value_counts(sort=True).to_pandas().to_markdown(index=False)),
    })


def _population_sql(con, everyone: bool, versions: dict[str, str]) -> tuple[str, dict]:
    """Every user with the columns the rule-based segments need, the segment kept from the last refresh
    (NULL when the user must be re-assigned, as in ``pending_rows_sql``) and the churn scores."""
    kept, params = "", {}
    if not everyone:
        kept = ("LEFT JOIN (SELECT user_id, segment_id, confidence, as_of FROM analytics.user_segments "
                "WHERE model_version = $version AND assigned_by = $by) s ON s.user_id = f.user_id AND s.as_of = f.as_of")
        params = {"version": versions["model_version"], "by": versions["assigned_by"]}
    has_churn = table_exists(con, "analytics.churn_scores")
    churn = "LEFT JOIN analytics.churn_scores c ON c.user_id = f.user_id" if has_churn else ""
    cols = ", ".join(f"c.{c}" if has_churn else f"NULL::{t} AS {c}"
                     for c, t in zip(CHURN_COLUMNS[1:], ("DOUBLE", "VARCHAR", "DOUBLE")))
    segment = ("s.segment_id::INTEGER AS kept_id, s.confidence::DOUBLE AS kept_confidence" if kept
               else "NULL::INTEGER AS kept_id, NULL::DOUBLE AS kept_confidence")
    sql = (f"SELECT f.user_id, f.as_of, {', '.join(f'f.{c}' for c in RULE_INPUTS)}, {segment}, {cols} "
           f"FROM features.user_features f {kept} {churn}")  # no ORDER BY: ranks and quantiles ignore row order
    return sql, params


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
        cached = _cached_rules(con, model.version) if not inc.rebase_requested(context.run.tags) else None
        frame = con.sql("SELECT f.*, s.segment_id, s.segment_name, s.as_of AS scored_as_of FROM features.user_features f "
                        "JOIN analytics.user_segments s USING (user_id)"
                        + (" ORDER BY user_id" if cached is None else "")).pl()  # the rules' sample is by position
    ids = frame["segment_id"].to_numpy()
    features = list(model.features)
    profiles = build_profiles(frame, ids, features, names=model.name_of)
    if cached is None:  # the rules describe the model: worked out once per model version (or on a rebase)
        rules = explain_model(model, frame)  # the segments' definition: stage rules, then behaviour rules
        summary = rules.summary().select("segment_id", pl.col("rules"), pl.col("precision").alias("rules_precision"),
                                         pl.col("coverage").alias("rules_coverage"))
        rule_rows = rules.rules.with_columns(
            segment_name=pl.col("segment_id").replace_strict(model.name_of, default=None, return_dtype=pl.String),
            model_version=pl.lit(model.version), surrogate_fidelity=pl.lit(rules.fidelity))
    else:
        summary, rule_rows = cached
    profiles = profiles.join(summary, on="segment_id", how="left").with_columns(
        model_version=pl.lit(model.version), as_of=pl.lit(frame["scored_as_of"].max()).cast(pl.Datetime("us")))
    profiles = profiles.rename({"size": "users"})
    with duckdb.get_connection() as con:
        con.sql("CREATE OR REPLACE TABLE analytics.segment_profiles AS SELECT * FROM profiles")
        if cached is None:
            con.sql("CREATE OR REPLACE TABLE analytics.segment_rules AS SELECT * FROM rule_rows")
    fidelity = float(rule_rows["surrogate_fidelity"][0]) if rule_rows.height else 0.0
    shown = profiles.select("segment_id", "segment_name", "users", "share", "revenue_share", "description", "rules")
    yield dg.MaterializeResult(asset_key=SEGMENT_PROFILES, metadata={
        "dagster/row_count": dg.MetadataValue.int(profiles.height), "dagster/table_name": "analytics.segment_profiles",
        "profiles": dg.MetadataValue.md(shown.to_pandas().to_markdown(index=False, floatfmt=".3f")),
    })
    yield dg.MaterializeResult(asset_key=SEGMENT_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(rule_rows.height), "dagster/table_name": "analytics.segment_rules",
        "surrogate_fidelity": dg.MetadataValue.float(fidelity),
        "rules_from": "cache (same model version)" if cached is not None else "fitted now",
        "rules": dg.MetadataValue.md(rule_rows.select("segment_id", "segment_name", "rule", "precision", "coverage")
                                     .to_pandas().to_markdown(index=False, floatfmt=".2f")),
    })


def _cached_rules(con, version: str) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(per-segment summary, rule rows) stored for this model version, or None."""
    if not (table_exists(con, "analytics.segment_rules") and table_exists(con, "analytics.segment_profiles")):
        return None
    rules = con.sql("SELECT * FROM analytics.segment_rules WHERE model_version = ?", params=[version]).pl()
    summary = con.sql("SELECT segment_id, rules, rules_precision, rules_coverage FROM analytics.segment_profiles "
                      "WHERE model_version = ?", params=[version]).pl()
    return (summary, rules) if rules.height and summary.height else None
