"""Checks of the segmentation stage.

* ``population_stable`` (on ``segment_model``, WARN): PSI of each model feature, today vs. the data the
  model in service was fitted on. It runs whenever the features change; when it newly fails, the
  automation re-fits the model (conditions.py).
* ``candidate_promoted`` (on ``segment_model``, WARN) and ``classifier_quality`` (on
  ``segment_classifier``, WARN) run in their asset's own step (assets.py, classifier_asset.py): whether the latest fit
  passed the promotion gate and why not (a refused fit is not an error: the model in service stays),
  and whether the latest classifier reached its macro-F1 threshold (if not, it does not serve and the
  segment model itself assigns users: thin data, e.g. one day of it, still gets segments).
* ``user_segments_valid`` (on ``analytics/user_segments``, blocking): exact DuckDB counts of broken rows
  (each must be 0) before anything is published; the description names the rules broken.
"""


import dagster as dg
import polars as pl

from seg_assets.automation.conditions import check_drift_on_new_features
from seg_assets.churn.keys import RISK_LEVELS
from seg_assets.features.assets import USER_FEATURES
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import DRIFT_CHECK, PSI_METADATA, SEGMENT_MODEL, drift_table, read_drift_panel
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.rule_based import LIFECYCLE_STAGES, VALUE_TIERS
from seg_assets.segmentation.scoring import USER_SEGMENTS
from seg_assets.validation import describe_counts, nonzero


@dg.asset_check(
    retry_policy=TRANSIENT_RETRY,
    asset=SEGMENT_MODEL, name=DRIFT_CHECK.name, additional_deps=[USER_FEATURES], blocking=False, pool="duckdb",
    automation_condition=check_drift_on_new_features(),
    description="Population stability index of each model feature against the model's reference data.",
)
def population_stable(context: dg.AssetCheckExecutionContext, duckdb: Warehouse, settings: SegSettings) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        current = registry.in_service_model(con)
        if current is None:
            return dg.AssetCheckResult(passed=True, metadata={"note": "no model in service yet"})
        psi, measured_by = _psi_of_this_run(context, current.version), "segment_model, in this run"
        if psi is None:  # not measured by segment_model in this run (it fitted, or the check runs alone)
            model = SegmentModel.load(current.artifact)
            panel = read_drift_panel(con, model.features)
            psi, measured_by = drift_table(model, panel, settings.resolve_as_of(con)), "this check"
    worst = float(psi["psi"].max() or 0.0)
    return dg.AssetCheckResult(
        passed=worst <= settings.psi_threshold, severity=dg.AssetCheckSeverity.WARN,
        description=f"max PSI {worst:.3f} ({psi['feature'][0]}) vs threshold {settings.psi_threshold}",
        metadata={"model_version": current.version, "psi_measured_by": measured_by, "max_psi": worst, "threshold": settings.psi_threshold,
                  "psi_by_feature": dg.MetadataValue.md(md_frame(psi, floatfmt=".3f"))},
    )


def _psi_of_this_run(context: dg.AssetCheckExecutionContext, version: str) -> pl.DataFrame | None:
    """The PSI table segment_model measured for ``version`` in this run (it keeps a model only after measuring)."""
    event = context.instance.get_latest_materialization_event(SEGMENT_MODEL)
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        return None
    stored = event.asset_materialization.metadata.get(PSI_METADATA)
    if stored is None or stored.value.get("model_version") != version:
        return None
    return pl.DataFrame(stored.value["psi"], schema={"feature": pl.String, "psi": pl.Float64})


def _segment_aggregates(con, model: SegmentModel) -> pl.DataFrame:
    ids = ", ".join(str(i) for i in model.segment_ids)
    stages = ", ".join(f"'{s}'" for s in LIFECYCLE_STAGES)
    tiers = ", ".join(f"'{t}'" for t in VALUE_TIERS)
    risks = ", ".join(f"'{r}'" for r in RISK_LEVELS)
    return con.sql(f"""
        SELECT
            (SELECT count(*) FROM features.user_features) - count(*) AS users_missing,
            count(*) - count(DISTINCT user_id) AS duplicate_user_ids,
            count(*) FILTER (WHERE segment_id IS NULL OR segment_id NOT IN ({ids})) AS unknown_segments,
            count(*) FILTER (WHERE segment_name IS NULL) AS unnamed,
            count(*) FILTER (WHERE confidence IS NULL OR confidence < 0 OR confidence > 1) AS bad_confidence,
            count(*) FILTER (WHERE r_score NOT BETWEEN 1 AND 10 OR f_score NOT BETWEEN 1 AND 10 OR m_score NOT BETWEEN 1 AND 10) AS bad_rfm,
            count(*) FILTER (WHERE rfm_group IS NULL) AS no_rfm_group,
            count(*) FILTER (WHERE lifecycle_stage NOT IN ({stages})) AS bad_lifecycle,
            count(*) FILTER (WHERE value_tier NOT IN ({tiers})) AS bad_value_tier,
            count(*) FILTER (WHERE model_version <> '{model.version}') AS wrong_model_version,
            count(*) FILTER (WHERE churn_probability < 0 OR churn_probability > 1
                             OR (churn_risk IS NOT NULL AND churn_risk NOT IN ({risks}))) AS bad_churn
        FROM analytics.user_segments""").pl()


@dg.asset_check(retry_policy=TRANSIENT_RETRY, asset=USER_SEGMENTS, blocking=True, pool="duckdb",
                description="Every user once, known segment ids and names, confidence in [0, 1], valid RFM and enums.")
def user_segments_valid(duckdb: Warehouse) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        current = registry.in_service_model(con)
        aggregates = _segment_aggregates(con, SegmentModel.load(current.artifact))
    counts = aggregates.row(0, named=True)
    broken = nonzero(counts)
    return dg.AssetCheckResult(
        passed=not broken, description=describe_counts("analytics.user_segments (rows breaking each rule)", broken),
        metadata={"counts": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
                  "failed_rules": dg.MetadataValue.json(sorted(broken))})


asset_checks = [population_stable, user_segments_valid]
