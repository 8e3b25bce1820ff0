"""``analytics/user_segments`` (users whose behaviour changed re-scored) and ``analytics/segment_profiles`` + rules.

Every refresh assigns a segment with the classifier in service (or the model itself when no classifier
passed its quality gate) to the users whose features were recomputed (new rows since the last refresh),
to new users, and to everyone after a model or classifier change or a rebase; the other users keep
their segment and the ``as_of`` of the features it was assigned from. A re-assigned user keeps the
segment they are in unless another one is clearly better (the refit margin, membership.py), so
neither a refit nor a few days of data reshuffle users near a boundary. Who actually moved is recorded
by the history asset in ``publish/``. RFM scores and groups, lifecycle stage and value tier are computed next
to the model's segment from visible, configurable thresholds (rule_based.py).

This module picks the rows and writes the table; the per-user maths is one function,
``batch.score_segments``, which the DuckDB engine calls here and the Spark engine on every batch
(``seg_assets/spark/scoring.py``), so both engines give every user the same row.
"""

import hashlib
import json
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field, model_validator

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.automation.limits import CheckedConfig
from seg_assets.churn.keys import CHURN_SCORES, RISK_LEVELS
from seg_assets.errors import input_failure
from seg_assets.features import incremental as inc
from seg_assets.features.assets import FRESHNESS, USER_FEATURES
from seg_assets.markdown import frame as md_frame
from seg_assets.publish.keys import HISTORY_TABLE
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.reviews.assets import REVIEW_SENTIMENT
from seg_assets.reviews.assets import TABLE as REVIEW_TABLE
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import GROUP, SEGMENT_CLASSIFIER, SEGMENT_MODEL
from seg_assets.segmentation.batch import (  # noqa: F401  (COLUMNS, RULE_INPUTS: imported from here too)
    CHURN_COLUMNS,
    COLUMNS,
    EXPECTED_VALUE,
    RULE_INPUTS,
    SegmentScorer,
    feature_columns,
    score_segments,
)
from seg_assets.segmentation.membership import previous_id_sql
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.profiles import review_profile, rules_markdown
from seg_assets.segmentation.profiles import segment_profiles as build_profiles
from seg_assets.segmentation.rule_based import (
    LIFECYCLE_STAGES,
    RFM_BINS,
    RFM_GROUPS,
    VALUE_TIERS,
    LifecycleThresholds,
    ValueTiers,
    reference_cuts,
    value_cuts,
)
from seg_assets.segmentation.rules import explain_model
from seg_assets.settings import MAX_DAYS
from seg_assets.spark import scoring as on_spark
from seg_assets.spark.session import Engine
from seg_assets.warehouse import (
    as_enums,
    create_table_from,
    read_parquet_sql,
    registered,
    sql_ident,
    sql_string,
    table_exists,
    transaction,
    upsert,
)

USER_SEGMENTS = dg.AssetKey(["analytics", "user_segments"])
SEGMENT_PROFILES = dg.AssetKey(["analytics", "segment_profiles"])
SEGMENT_RULES = dg.AssetKey(["analytics", "segment_rules"])
# Written by baskets/assets.py, which imports it from here (it reads USER_SEGMENTS: the other way round is a cycle).
SEGMENT_BASKET_RULES = dg.AssetKey(["analytics", "segment_basket_rules"])
PROFILE_BASKET_RULES = 5  # rules per segment in the profile asset's table (the column holds the basket stage's top_rules)
TABLE = "analytics.user_segments"

ENUMS = {"rfm_group": tuple(g[0] for g in RFM_GROUPS), "lifecycle_stage": LIFECYCLE_STAGES, "value_tier": VALUE_TIERS,
         "churn_risk": RISK_LEVELS}  # closed vocabularies, stored as ENUM


def segments_as_of(con):
    """The as-of of the published segments: the stages after scoring date their rows with it."""
    return con.sql(f"SELECT max(as_of) FROM {TABLE}").fetchall()[0][0]


LIFECYCLE, TIERS = LifecycleThresholds(), ValueTiers()  # the rules' defaults, so each lives in one place


class ScoringConfig(CheckedConfig):
    assign_with: Literal["classifier", "model"] = Field(
        default="classifier", description="Who assigns users: the classifier in service (falls back to the model if none).")
    rfm_bins: int = Field(default=RFM_BINS, ge=2, le=10, description="RFM score range 1..rfm_bins (quantiles).")
    new_max_tenure_days: float = Field(default=LIFECYCLE.new_max_tenure_days, ge=0, le=MAX_DAYS,
                                       description="Lifecycle 'new': tenure up to this many days.")
    active_max_recency_days: float = Field(default=LIFECYCLE.active_max_recency_days, ge=0, le=MAX_DAYS,
                                           description="Lifecycle 'active': last order within this many days.")
    at_risk_max_recency_days: float = Field(default=LIFECYCLE.at_risk_max_recency_days, ge=0, le=MAX_DAYS,
                                            description="Lifecycle 'at risk': last order within this many days.")
    dormant_max_recency_days: float = Field(default=LIFECYCLE.dormant_max_recency_days, ge=0, le=MAX_DAYS,
                                            description="Lifecycle 'dormant' up to this; 'churned' beyond.")
    value_high_quantile: float = Field(default=TIERS.high_quantile, ge=0, le=1,
                                       description="Value tier 'high': monetary at or above this quantile of buyers.")
    value_medium_quantile: float = Field(default=TIERS.medium_quantile, ge=0, le=1,
                                         description="Value tier 'medium': at or above this quantile of buyers.")
    value_tier_from: Literal["monetary", "expected_value"] = Field(
        default="monetary", description="Rank value tiers by past spend, or by the churn model's expected spend over the next H days.")

    @model_validator(mode="after")
    def _ordered(self):
        days = (self.active_max_recency_days, self.at_risk_max_recency_days, self.dormant_max_recency_days)
        if list(days) != sorted(days):
            raise ValueError("recency thresholds must not decrease: active <= at_risk <= dormant, not "
                             f"{' / '.join(f'{d:g}' for d in days)}")
        if self.value_medium_quantile > self.value_high_quantile:
            raise ValueError(f"value_medium_quantile ({self.value_medium_quantile:g}) must not exceed value_high_quantile "
                             f"({self.value_high_quantile:g})")
        return self


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=USER_SEGMENTS, deps=[USER_FEATURES, SEGMENT_MODEL, SEGMENT_CLASSIFIER, CHURN_SCORES], group_name=GROUP, pool="duckdb",
    kinds={"duckdb", "polars"}, automation_condition=rescore_on_new_inputs(), freshness_policy=FRESHNESS,
    description="One row per user: segment (stable id and name), confidence, model version, as-of, "
    "RFM scores and group, lifecycle stage, value tier, churn probability and risk, expected value. Published for BI.",
)
def user_segments(context: dg.AssetExecutionContext, config: ScoringConfig, duckdb: Warehouse, settings: SegSettings,
                  engine: Engine):
    """Rewrites only the rows that changed: users with recomputed features (re-assigned), new users,
    changed churn scores; every row after a new model or classifier (re-assigned) or new rule settings
    (segments kept). A rebase replaces the table. With the spark engine the same rows are scored on Spark
    (segmentation/batch.py, the one per-batch function) and loaded here."""
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
                    or not {"rules_version", "features_build"} <= set(con.table(TABLE).columns))
        selection = _selection_sql(con, versions, rules_version, everyone=everyone, as_of=as_of)
        scorer = _scorer(con, config, model, served[2] if served else None, scored_with, rules_version)
        work, selected = None, 0
        if engine.is_spark:
            work = on_spark.work_dir(settings.paths.root, TABLE)
            path, selected = on_spark.export_selection(con, selection, work)
            (assigning,) = con.sql(f"SELECT count(*) FROM {read_parquet_sql(path)} WHERE kept_id IS NULL").fetchall()[0]
        if not selected:  # the DuckDB engine, or nobody to score (Spark is not started for nothing)
            have = set(con.table("features.user_features").columns)  # what scoring reads: half the columns
            read = ", ".join(f"f.{sql_ident(c)}" for c in feature_columns(model, scorer.classifier) if c in have)
            batch = con.sql(f"SELECT {read}, s.* EXCLUDE (user_id) FROM features.user_features f "
                            f"JOIN ({selection}) s USING (user_id) ORDER BY user_id").pl()
            selected, assigning = batch.height, batch["kept_id"].null_count()
    if work is not None and selected:
        scored = on_spark.score_users_spark(engine.spark(), on_spark.require_features(settings.paths.root),
                                            work / "selection.parquet", scorer, work / "scored")
    else:
        scored = score_segments(batch, scorer)
    with duckdb.get_connection() as con:
        if isinstance(scored, pl.DataFrame):
            with registered(con, rescored=scored):
                _write(con, "rescored", everyone)
        else:
            on_spark.scored_view(con, "rescored", scored)
            _write(con, "rescored", everyone)
            con.sql("DROP VIEW rescored")
        sizes = con.sql(f"SELECT segment_id, segment_name, count(*) AS users, avg(confidence) AS mean_confidence "
                        f"FROM {TABLE} GROUP BY ALL ORDER BY segment_id").pl()
        groups = con.sql(f"SELECT rfm_group, count(*) AS users FROM {TABLE} GROUP BY ALL ORDER BY users DESC").pl()
        (total,) = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0]
    where = "on spark" if work is not None and selected else "in process"
    context.log.info(f"user_segments: {assigning} of {total} users assigned ({scored_with}), "
                     f"{selected} rows rewritten ({where}), as of {as_of}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(total)), "dagster/table_name": TABLE,
        "users_assigned": dg.MetadataValue.int(int(assigning)), "rows_rewritten": dg.MetadataValue.int(int(selected)),
        "engine": engine.kind, "scored": where,
        "model_version": model.version, "assigned_by": scored_with, "rules_version": rules_version, "as_of": str(as_of),
        "segments": dg.MetadataValue.md(md_frame(sizes)),
        "rfm_groups": dg.MetadataValue.md(md_frame(groups)),
    })


def _write(con, source: str, everyone: bool) -> None:
    """The scored rows of ``source`` into the table: replaced in full, or upserted in one transaction
    (readers of the warehouse see the old rows or the new ones, never half)."""
    if everyone:
        con.sql(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT {as_enums(ENUMS)} FROM {source}")
        return
    with transaction(con):
        con.sql(f"DELETE FROM {TABLE} WHERE user_id NOT IN (SELECT user_id FROM features.user_features)")
        upsert(con, TABLE, "user_id", source, list(COLUMNS))


def _scorer(con, config: ScoringConfig, model: SegmentModel, classifier, scored_with: str,
            rules_version: str) -> SegmentScorer:
    """The scorer every batch gets: the models in service and the whole population's RFM and value cuts."""
    reference = con.sql(_reference_sql(con, config)).pl()
    tiers = ValueTiers(config.value_high_quantile, config.value_medium_quantile)
    ev = EXPECTED_VALUE
    by_expected = config.value_tier_from == "expected_value" and reference[ev].null_count() < reference.height
    return SegmentScorer(
        model=model, classifier=classifier, assigned_by=scored_with, rules_version=rules_version, bins=config.rfm_bins,
        lifecycle=LifecycleThresholds(config.new_max_tenure_days, config.active_max_recency_days,
                                      config.at_risk_max_recency_days, config.dormant_max_recency_days),
        tiers=tiers, cuts=reference_cuts(reference, bins=config.rfm_bins, tiers=tiers),
        value_cuts_expected=value_cuts(reference, tiers, ev, ev) if by_expected else None,
    )


def _rules_version(config: ScoringConfig) -> str:
    """A short hash of what the rule-based columns depend on: a change re-scores everyone."""
    params = {**config.model_dump(exclude={"assign_with"}), "groups": RFM_GROUPS}
    return "rules-" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def _selection_sql(con, versions: dict[str, str], rules_version: str, everyone: bool, as_of=None) -> str:
    """Every user (``everyone``) or the users whose row must be rewritten, with the segment kept from the
    last refresh (``kept_id``, NULL when the user must be re-assigned, as in ``pending_rows_sql``), the
    one the history recorded in force at ``as_of`` (the open spell; a backfill's own day), else the published one
    (``previous_id``, for the sticky rule: history only moves forward, so a backfill's published past is not what a
    return to now sticks to) and the churn scores. A row is rewritten when its
    user is re-assigned, when its churn scores changed or when the rule settings did."""
    has_churn, has_table = table_exists(con, "analytics.churn_scores"), table_exists(con, TABLE)
    churn = "LEFT JOIN analytics.churn_scores c ON c.user_id = f.user_id" if has_churn else ""
    types = ("DOUBLE", "VARCHAR", "DOUBLE")
    cols = ", ".join(f"c.{c}::{t} AS {c}" if has_churn else f"NULL::{t} AS {c}" for c, t in zip(CHURN_COLUMNS[1:], types))
    history_join, previous = previous_id_sql(table_exists(con, HISTORY_TABLE), "s" if has_table else None, "f.user_id",
                                              as_of)
    published = f"LEFT JOIN {TABLE} s ON s.user_id = f.user_id {history_join}" if has_table else history_join
    previous += " AS previous_id"
    if everyone:
        return (f"SELECT f.user_id, NULL::INTEGER AS kept_id, NULL::DOUBLE AS kept_confidence, {previous}, {cols} "
                f"FROM features.user_features f {published} {churn}")
    keep = f"NOT {inc.stale_row_sql(versions)}"  # the segment stays: what pending_rows_sql would not select
    churn_changed = " OR ".join(f"s.{c} IS DISTINCT FROM {'c.' + c if has_churn else 'NULL'}" for c in CHURN_COLUMNS[1:])
    return (f"SELECT f.user_id, CASE WHEN {keep} THEN s.segment_id END::INTEGER AS kept_id, "
            f"CASE WHEN {keep} THEN s.confidence END::DOUBLE AS kept_confidence, {previous}, {cols} "
            f"FROM features.user_features f {published} {churn} "
            f"WHERE NOT ({keep}) OR {churn_changed} OR s.rules_version IS DISTINCT FROM {sql_string(rules_version)}")


def _reference_sql(con, config: ScoringConfig) -> str:
    """The whole population's columns that RFM scores and value tiers are ranked in."""
    if config.value_tier_from == "expected_value" and table_exists(con, "analytics.churn_scores"):
        return (f"SELECT {', '.join(f'f.{c}' for c in RULE_INPUTS)}, c.expected_value_next_h FROM features.user_features f "
                "LEFT JOIN analytics.churn_scores c ON c.user_id = f.user_id")
    return f"SELECT {', '.join(RULE_INPUTS)}, NULL::DOUBLE AS expected_value_next_h FROM features.user_features"


@dg.multi_asset(
    retry_policy=TRANSIENT_RETRY,
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
        unprofiled = int(review_counts.filter(pl.col("segment_id").is_null())["reviews"].sum()) if review_counts.height else 0
        review_counts = review_counts.filter(pl.col("segment_id").is_not_null()) if review_counts.height else review_counts
        basket_rules, best_rules = _basket_rules(con)
        current = registry.in_service_model(con)
        model = SegmentModel.load(current.artifact)
        cached = _cached_rules(con, model.version) if not inc.rebase_requested(context.run.tags) else None
        # Profiles read the model's features only; fitting rules reads every column, in a fixed order
        # (the rules' sample is by position).
        cols = "f.*" if cached is None else ", ".join(f"f.{c}" for c in model.features)
        frame = con.sql(f"SELECT {cols}, s.segment_id, s.segment_name, s.as_of AS scored_as_of FROM features.user_features f "
                        "JOIN analytics.user_segments s USING (user_id)" + (" ORDER BY user_id" if cached is None else "")).pl()
        (first_order,) = con.sql("SELECT min(first_order_ts) FROM features.user_order_stats").fetchall()[0]
    ids = frame["segment_id"].to_numpy()
    features = list(model.features)
    history = (as_of - first_order).total_seconds() / 86_400 if first_order is not None else None
    profiles = build_profiles(frame, ids, features, names=model.name_of, order_history_days=history)
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
        "profiles": dg.MetadataValue.md(_markdown(shown, ".3f")),
        "reviews": dg.MetadataValue.md(_markdown(profiles.select("segment_id", "segment_name", "reviews", "negative_review_share",
                                                                 "avg_sentiment", "avg_rating", "reviews_note"), ".3f")),
        "basket_rules": dg.MetadataValue.md(rules_markdown(best_rules, model.name_of)),
        "reviews_without_segment": dg.MetadataValue.int(unprofiled),
    })
    if unprofiled:
        context.log.info(f"segment_profiles: {unprofiled:,} reviews by users with no segment (no order, click or sign-up of "
                         "theirs delivered) are scored in analytics.review_sentiment but in no profile")
    yield dg.MaterializeResult(asset_key=SEGMENT_RULES, metadata={
        "dagster/row_count": dg.MetadataValue.int(rule_rows.height), "dagster/table_name": "analytics.segment_rules",
        "surrogate_fidelity": dg.MetadataValue.float(fidelity),
        "rules_from": "cache (same model version)" if cached is not None else "fitted now",
        "rules": dg.MetadataValue.md(_markdown(rule_rows.select("segment_id", "segment_name", "rule", "precision", "coverage"),
                                               ".2f")),
    })


def _review_counts(con, as_of) -> pl.DataFrame:
    """Per current segment, sums over its users' reviews up to as-of (review_profile's input); segment_id NULL: the
    reviews of users with no segment (no order, click or sign-up of theirs delivered: scored, in no profile)."""
    if not table_exists(con, REVIEW_TABLE):
        return pl.DataFrame()
    return con.sql(f"""
        SELECT s.segment_id, count(*) AS reviews, count(r.label) AS labelled_reviews,
               count(*) FILTER (WHERE r.label = 'negative') AS negative_reviews,
               coalesce(sum(r.sentiment), 0)::DOUBLE AS sentiment_sum, count(r.sentiment) AS scored_reviews,
               coalesce(sum(r.rating), 0)::DOUBLE AS rating_sum, count(r.rating) AS rated_reviews
        FROM {REVIEW_TABLE} r LEFT JOIN {TABLE} s USING (user_id)
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


def _markdown(frame: pl.DataFrame, floatfmt: str) -> str:
    """A table for the UI with "n/a" where a value is missing."""
    return md_frame(frame, floatfmt=floatfmt, missing="n/a")
