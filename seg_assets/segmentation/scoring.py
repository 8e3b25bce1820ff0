"""``analytics/user_segments`` (users whose behaviour changed re-scored) and ``analytics/segment_profiles`` + rules.

Every refresh assigns a segment with the classifier in service (or the model itself when no classifier
passed its quality gate) to the users whose features were recomputed (new rows since the last refresh),
to new users, and to everyone after a model or classifier change or a rebase; the other users keep
their segment and the ``as_of`` of the features it was assigned from. A re-assigned user keeps the
segment they are in unless another one is clearly better (the refit margin, membership.py), so
neither a refit nor a few days of data reshuffle users near a boundary. Who actually moved is recorded
by the history asset in ``publish/``. RFM scores and groups, lifecycle stage and value tier are computed next
to the model's segment from visible, configurable thresholds (rule_based.py).
"""

import hashlib
import json
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.churn.keys import CHURN_SCORES, RISK_LEVELS
from seg_assets.errors import input_failure
from seg_assets.features import incremental as inc
from seg_assets.features.assets import FRESHNESS, USER_FEATURES
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.reviews.assets import REVIEW_SENTIMENT
from seg_assets.reviews.assets import TABLE as REVIEW_TABLE
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import GROUP, SEGMENT_CLASSIFIER, SEGMENT_MODEL
from seg_assets.segmentation.membership import DEFAULT_ODDS, NO_SEGMENT, model_proba, same_stage, sticky_assign
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.profiles import review_profile, rules_markdown
from seg_assets.segmentation.profiles import segment_profiles as build_profiles
from seg_assets.segmentation.rule_based import (
    LIFECYCLE_STAGES,
    RFM_GROUPS,
    VALUE_TIERS,
    LifecycleThresholds,
    ValueTiers,
    rule_based_segments,
    value_cuts,
    value_tier_expr,
)
from seg_assets.segmentation.rules import explain_model
from seg_assets.warehouse import as_enums, create_table_from, registered, table_exists, transaction, upsert

USER_SEGMENTS = dg.AssetKey(["analytics", "user_segments"])
SEGMENT_PROFILES = dg.AssetKey(["analytics", "segment_profiles"])
SEGMENT_RULES = dg.AssetKey(["analytics", "segment_rules"])
# Written by baskets/assets.py, which imports it from here (it reads USER_SEGMENTS: the other way round is a cycle).
SEGMENT_BASKET_RULES = dg.AssetKey(["analytics", "segment_basket_rules"])
PROFILE_BASKET_RULES = 5  # rules per segment in the profile asset's table (the column holds the basket stage's top_rules)
TABLE = "analytics.user_segments"

# Joined from analytics.churn_scores (null while no churn model is in service).
CHURN_COLUMNS = ("user_id", "churn_probability", "churn_risk", "expected_value_next_h")
RULE_INPUTS = ("recency_days", "frequency", "monetary", "tenure_days")  # what rule_based_segments reads
ENUMS = {"rfm_group": tuple(g[0] for g in RFM_GROUPS), "lifecycle_stage": LIFECYCLE_STAGES, "value_tier": VALUE_TIERS,
         "churn_risk": RISK_LEVELS}  # closed vocabularies, stored as ENUM
COLUMNS = ("user_id", "segment_id", "segment_name", "confidence", "model_version", "as_of", "segment_stage",
           "r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier",
           *CHURN_COLUMNS[1:], "assigned_by", "rules_version")


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


def assign(frame: pl.DataFrame, model: SegmentModel, classifier, previous: np.ndarray | None = None,
           chunk_rows: int = 500_000) -> tuple[np.ndarray, np.ndarray, str]:
    """(segment ids, confidence, who assigned) for every row of ``frame``.

    ``previous``: each user's published segment id (``NO_SEGMENT`` for none); a user keeps it unless
    another segment is clearly better (the model's ``sticky_odds``, membership.py). Confidence is the
    assigner's probability of the segment given.
    """
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), "nobody to assign"
    odds = getattr(model.config, "sticky_odds", DEFAULT_ODDS)
    prev = np.full(frame.height, NO_SEGMENT, dtype=np.int64) if previous is None else np.asarray(previous, dtype=np.int64)
    ids, conf = [], []
    for start in range(0, frame.height, chunk_rows):
        part, before = frame.slice(start, chunk_rows), prev[start:start + chunk_rows]
        if classifier is not None:
            proba, classes = classifier.predict_proba(part), classifier.classes
        else:
            proba, classes = model_proba(model, part), model.segment_ids
        i, c = sticky_assign(proba, classes, before, odds, same_stage(model, part, before))
        ids.append(i)
        conf.append(c)
    return np.concatenate(ids), np.concatenate(conf), (f"classifier {classifier.kind}" if classifier is not None else "model")


@dg.asset(
    key=USER_SEGMENTS, deps=[USER_FEATURES, SEGMENT_MODEL, SEGMENT_CLASSIFIER, CHURN_SCORES], group_name=GROUP, pool="duckdb",
    kinds={"duckdb", "polars"}, automation_condition=rescore_on_new_inputs(), freshness_policy=FRESHNESS,
    description="One row per user: segment (stable id and name), confidence, model version, as-of, "
    "RFM scores and group, lifecycle stage, value tier, churn probability and risk, expected value. Published for BI.",
)
def user_segments(context: dg.AssetExecutionContext, config: ScoringConfig, duckdb: Warehouse, settings: SegSettings):
    """Rewrites only the rows that changed: users with recomputed features (re-assigned), new users,
    changed churn scores; every row after a new model or classifier (re-assigned) or new rule settings
    (segments kept). A rebase replaces the table."""
    rules_version = _rules_version(config)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        current = registry.in_service_model(con)
        if current is None:
            raise input_failure("No segment model in service: materialize segment_model first "
                             "(automation does so when none exists; `seg-assets refresh` does it too).")
        model = SegmentModel.load(current.artifact)
        served = registry.in_service_classifier(con, model.version) if config.assign_with == "classifier" else None
        scored_with = f"classifier {served[0]}" if served else f"model {model.version}"
        versions = {"model_version": model.version, "assigned_by": scored_with}
        everyone = (inc.rebase_requested(context.run.tags) or not table_exists(con, TABLE)
                    or "rules_version" not in con.table(TABLE).columns)
        sql, params = _rows_sql(con, versions, rules_version, everyone=everyone)
        rows = con.sql(sql, params=params).pl()
        reference = rows if everyone else con.sql(_reference_sql(con, config)).pl()
        pending = rows.filter(pl.col("kept_id").is_null()).select("user_id")  # to (re-)assign: no kept segment
        only = "" if everyone else "WHERE user_id IN (SELECT user_id FROM pending_users)"
        with registered(con, pending_users=pending):
            changed = con.sql(f"SELECT * FROM features.user_features {only} ORDER BY user_id").pl()
        previous = _previous_ids(con, changed)
    ids, confidence, _ = assign(changed, model, served[2] if served else None, previous)
    scored = _score_rows(rows, reference, changed["user_id"], ids, confidence, model, config).with_columns(
        model_version=pl.lit(model.version), assigned_by=pl.lit(scored_with), rules_version=pl.lit(rules_version)
    ).select(*COLUMNS)
    with duckdb.get_connection() as con:
        if everyone:
            create_table_from(con, TABLE, scored, as_enums(ENUMS))
        else:
            with transaction(con):  # readers of the warehouse see the old rows or the new ones, never half
                con.sql(f"DELETE FROM {TABLE} WHERE user_id NOT IN (SELECT user_id FROM features.user_features)")
                con.register("rescored", scored)
                upsert(con, TABLE, "user_id", "rescored", scored.columns)
                con.unregister("rescored")
        sizes = con.sql(f"SELECT segment_id, segment_name, count(*) AS users, avg(confidence) AS mean_confidence "
                        f"FROM {TABLE} GROUP BY ALL ORDER BY segment_id").df()
        groups = con.sql(f"SELECT rfm_group, count(*) AS users FROM {TABLE} GROUP BY ALL ORDER BY users DESC").df()
        (total,) = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0]
    context.log.info(f"user_segments: {changed.height} of {total} users assigned ({scored_with}), "
                     f"{scored.height} rows rewritten, as of {as_of}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(total)), "dagster/table_name": TABLE,
        "users_assigned": dg.MetadataValue.int(changed.height), "rows_rewritten": dg.MetadataValue.int(scored.height),
        "model_version": model.version, "assigned_by": scored_with, "rules_version": rules_version, "as_of": str(as_of),
        "segments": dg.MetadataValue.md(sizes.to_markdown(index=False)),
        "rfm_groups": dg.MetadataValue.md(groups.to_markdown(index=False)),
    })


def _previous_ids(con, frame: pl.DataFrame) -> np.ndarray:
    """Each user's segment id in the table now (``NO_SEGMENT`` for a new user), aligned with ``frame``."""
    if frame.height == 0 or not table_exists(con, TABLE):
        return np.full(frame.height, NO_SEGMENT, dtype=np.int64)
    with registered(con, assigning=frame.select("user_id")):
        published = con.sql(f"SELECT s.user_id, s.segment_id FROM {TABLE} s SEMI JOIN assigning a USING (user_id)").pl()
    joined = frame.select("user_id").join(published, on="user_id", how="left", maintain_order="left")
    return joined["segment_id"].fill_null(NO_SEGMENT).to_numpy().astype(np.int64)


def _rules_version(config: ScoringConfig) -> str:
    """A short hash of what the rule-based columns depend on: a change re-scores everyone."""
    params = {**config.model_dump(exclude={"assign_with"}), "groups": RFM_GROUPS}
    return "rules-" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def _score_rows(rows: pl.DataFrame, reference: pl.DataFrame, assigned_users: pl.Series, ids: np.ndarray,
                confidence: np.ndarray, model: SegmentModel, config: ScoringConfig) -> pl.DataFrame:
    """The table's rows for ``rows``: kept or newly assigned segment, rule-based columns ranked in ``reference``."""
    new = pl.DataFrame({"user_id": assigned_users, "segment_id": ids.astype(np.int32), "confidence": confidence})
    assigned = rows.select("user_id", pl.col("kept_id").alias("segment_id"), pl.col("kept_confidence").alias("confidence")
                           ).update(new, on="user_id", how="left")
    tiers = ValueTiers(config.value_high_quantile, config.value_medium_quantile)
    rules = rule_based_segments(
        rows, bins=config.rfm_bins, reference=reference, tiers=tiers,
        lifecycle=LifecycleThresholds(config.new_max_tenure_days, config.active_max_recency_days,
                                      config.at_risk_max_recency_days, config.dormant_max_recency_days),
    )
    stage_of = dict(zip(model.segment_ids, model.cluster_stage))
    scored = rows.select("user_id", "as_of", *CHURN_COLUMNS[1:]).join(assigned, on="user_id", how="left").with_columns(
        segment_name=pl.col("segment_id").replace_strict(model.name_of, return_dtype=pl.String),
        segment_stage=pl.col("segment_id").replace_strict(stage_of, return_dtype=pl.String),
        as_of=pl.col("as_of").cast(pl.Datetime("us")),
    ).join(rules, on="user_id", how="left")
    ev = "expected_value_next_h"
    if config.value_tier_from == "expected_value" and reference[ev].null_count() < reference.height:
        scored = scored.with_columns(value_tier_expr(tiers, monetary=ev, frequency=ev, cuts=value_cuts(reference, tiers, ev, ev)))
    return scored


def _rows_sql(con, versions: dict[str, str], rules_version: str, everyone: bool) -> tuple[str, dict | None]:
    """Every user (``everyone``) or the users whose row must be rewritten, with the columns the rule-based
    segments need, the segment kept from the last refresh (NULL when the user must be re-assigned, as in
    ``pending_rows_sql``) and the churn scores. A row is rewritten when its user is re-assigned, when its
    churn scores changed or when the rule settings did."""
    has_churn = table_exists(con, "analytics.churn_scores")
    churn = "LEFT JOIN analytics.churn_scores c ON c.user_id = f.user_id" if has_churn else ""
    types = ("DOUBLE", "VARCHAR", "DOUBLE")
    cols = ", ".join(f"c.{c}" if has_churn else f"NULL::{t} AS {c}" for c, t in zip(CHURN_COLUMNS[1:], types))
    inputs = ", ".join(f"f.{c}" for c in RULE_INPUTS)
    if everyone:
        return (f"SELECT f.user_id, f.as_of, {inputs}, NULL::INTEGER AS kept_id, NULL::DOUBLE AS kept_confidence, "
                f"{cols} FROM features.user_features f {churn}", None)  # no ORDER BY: ranks and quantiles ignore row order
    keep = f"NOT {inc.stale_row_sql(versions)}"  # the segment stays: what pending_rows_sql would not select
    churn_changed = " OR ".join(f"s.{c} IS DISTINCT FROM {'c.' + c if has_churn else 'NULL'}" for c in CHURN_COLUMNS[1:])
    sql = (f"SELECT f.user_id, f.as_of, {inputs}, CASE WHEN {keep} THEN s.segment_id END::INTEGER AS kept_id, "
           f"CASE WHEN {keep} THEN s.confidence END::DOUBLE AS kept_confidence, {cols} "
           f"FROM features.user_features f LEFT JOIN {TABLE} s ON s.user_id = f.user_id {churn} "
           f"WHERE NOT ({keep}) OR {churn_changed} OR s.rules_version IS DISTINCT FROM $rules")
    return sql, {"rules": rules_version}


def _reference_sql(con, config: ScoringConfig) -> str:
    """The whole population's columns that RFM scores and value tiers are ranked in."""
    if config.value_tier_from == "expected_value" and table_exists(con, "analytics.churn_scores"):
        return (f"SELECT {', '.join(f'f.{c}' for c in RULE_INPUTS)}, c.expected_value_next_h FROM features.user_features f "
                "LEFT JOIN analytics.churn_scores c ON c.user_id = f.user_id")
    return f"SELECT {', '.join(RULE_INPUTS)}, NULL::DOUBLE AS expected_value_next_h FROM features.user_features"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(SEGMENT_PROFILES, deps=[USER_SEGMENTS, USER_FEATURES, SEGMENT_BASKET_RULES, REVIEW_SENTIMENT],
                     group_name=GROUP, kinds={"duckdb"}, automation_condition=rescore_on_new_inputs(),
                     description="Per segment: size, share, revenue share, mean and median of each feature, the most "
                     "distinguishing features, a one-line description, the rules that describe it, what its reviews "
                     "say (share negative vs the shop) and its strongest basket rules (by lift, with support)."),
        dg.AssetSpec(SEGMENT_RULES, deps=[USER_SEGMENTS, USER_FEATURES], group_name=GROUP, kinds={"duckdb"},
                     automation_condition=rescore_on_new_inputs(),
                     description="Plain-text rules (a shallow surrogate decision tree) per segment, with precision and coverage."),
    ],
    name="segment_profiles", pool="duckdb",
)
def segment_profiles(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings):
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        review_counts = _review_counts(con, as_of)
        basket_rules, best_rules = _basket_rules(con)
        current = registry.in_service_model(con)
        model = SegmentModel.load(current.artifact)
        cached = _cached_rules(con, model.version) if not inc.rebase_requested(context.run.tags) else None
        # Profiles read the model's features only; fitting rules reads every column, in a fixed order
        # (the rules' sample is by position).
        cols = "f.*" if cached is None else ", ".join(f"f.{c}" for c in model.features)
        frame = con.sql(f"SELECT {cols}, s.segment_id, s.segment_name, s.as_of AS scored_as_of FROM features.user_features f "
                        "JOIN analytics.user_segments s USING (user_id)" + (" ORDER BY user_id" if cached is None else "")).pl()
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
    profiles = profiles.rename({"size": "users"}).join(review_profile(review_counts, profiles["segment_id"].to_list()),
                                                       on="segment_id", how="left")
    profiles = profiles.join(basket_rules, on="segment_id", how="left")
    with duckdb.get_connection() as con:
        create_table_from(con, "analytics.segment_profiles", profiles)
        if cached is None:
            create_table_from(con, "analytics.segment_rules", rule_rows)
    fidelity = float(rule_rows["surrogate_fidelity"][0]) if rule_rows.height else 0.0
    shown = profiles.select("segment_id", "segment_name", "users", "share", "revenue_share", "description", "rules",
                            "reviews_note")
    yield dg.MaterializeResult(asset_key=SEGMENT_PROFILES, metadata={
        "dagster/row_count": dg.MetadataValue.int(profiles.height), "dagster/table_name": "analytics.segment_profiles",
        "profiles": dg.MetadataValue.md(shown.to_pandas().to_markdown(index=False, floatfmt=".3f")),
        "reviews": dg.MetadataValue.md(profiles.select("segment_id", "segment_name", "reviews", "negative_review_share",
                                                       "avg_sentiment", "avg_rating", "reviews_note")
                                       .to_pandas().to_markdown(index=False, floatfmt=".3f")),
        "basket_rules": dg.MetadataValue.md(rules_markdown(best_rules, model.name_of)),
    })
    yield dg.MaterializeResult(asset_key=SEGMENT_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(rule_rows.height), "dagster/table_name": "analytics.segment_rules",
        "surrogate_fidelity": dg.MetadataValue.float(fidelity),
        "rules_from": "cache (same model version)" if cached is not None else "fitted now",
        "rules": dg.MetadataValue.md(rule_rows.select("segment_id", "segment_name", "rule", "precision", "coverage")
                                     .to_pandas().to_markdown(index=False, floatfmt=".2f")),
    })


def _review_counts(con, as_of) -> pl.DataFrame:
    """Per current segment, sums over its users' reviews up to as-of (review_profile's input)."""
    if not table_exists(con, REVIEW_TABLE):
        return pl.DataFrame()
    return con.sql(f"""
        SELECT s.segment_id, count(*) AS reviews, count(r.label) AS labelled_reviews,
               count(*) FILTER (WHERE r.label = 'negative') AS negative_reviews,
               coalesce(sum(r.sentiment), 0)::DOUBLE AS sentiment_sum, count(r.sentiment) AS scored_reviews,
               coalesce(sum(r.rating), 0)::DOUBLE AS rating_sum, count(r.rating) AS rated_reviews
        FROM {REVIEW_TABLE} r JOIN {TABLE} s USING (user_id)
        WHERE r.review_ts <= $as_of GROUP BY s.segment_id""", params={"as_of": as_of}).pl()


def _basket_rules(con) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(segment_id, baskets, basket_rules: the strongest rules as text) per segment, and the strongest rules
    one per row for the UI, from the basket stage's tables (empty without order lines)."""
    from seg_assets.baskets.rules import top_rules  # here: the basket stage imports this module

    if not (table_exists(con, "analytics.segment_basket_rules") and table_exists(con, "analytics.basket_rules")):
        return (pl.DataFrame(schema={"segment_id": pl.Int64, "baskets": pl.Int64, "basket_rules": pl.String}),
                pl.DataFrame(schema={"segment_id": pl.Int32, "rank": pl.UInt32, "rule": pl.String}))
    per_segment = con.sql("SELECT segment_id::BIGINT AS segment_id, baskets::BIGINT AS baskets, top_rules AS basket_rules "
                          "FROM analytics.segment_basket_rules WHERE segment_id IS NOT NULL").pl()
    return per_segment, top_rules(con.sql("SELECT * FROM analytics.basket_rules").pl(), PROFILE_BASKET_RULES)


def _cached_rules(con, version: str) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(per-segment summary, rule rows) stored for this model version, or None."""
    if not (table_exists(con, "analytics.segment_rules") and table_exists(con, "analytics.segment_profiles")):
        return None
    rules = con.sql("SELECT * FROM analytics.segment_rules WHERE model_version = ?", params=[version]).pl()
    summary = con.sql("SELECT segment_id, rules, rules_precision, rules_coverage FROM analytics.segment_profiles "
                      "WHERE model_version = ?", params=[version]).pl()
    return (summary, rules) if rules.height and summary.height else None
