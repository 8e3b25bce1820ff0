"""Checks of the churn model.

* ``churn_auc`` (on ``churn_model``, blocking): the latest fit's ROC-AUC on the time-based holdout reached
  ``ChurnConfig.min_auc``. A fit below it is not in service, and the failed check stops this run's
  downstream steps (``analytics/churn_scores`` and what depends on it). When no model could be trained yet
  (history shorter than the horizon needs), the check fails with WARN severity: nothing is blocked and the
  scores stay null.
"""

import dagster as dg

from seg_assets.churn import registry
from seg_assets.churn.assets import CHURN_MODEL
from seg_assets.resources import Warehouse


@dg.asset_check(asset=CHURN_MODEL, blocking=True, pool="duckdb",
                description="The latest churn model's holdout ROC-AUC reached min_auc (otherwise it does not serve).")
def churn_auc(duckdb: Warehouse) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        last = registry.latest(con)
        serving = registry.in_service(con)
    if last is None:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN,
            description="no churn model trained yet (too little history for the horizon? see churn_model's materialization)")
    holdout = last.metrics.get("holdout", {})
    auc = last.roc_auc
    passed = auc is not None and auc >= last.min_auc
    shown = "n/a" if auc is None else f"{auc:.3f}"
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{last.version}: holdout ROC-AUC {shown} {'>=' if passed else '<'} {last.min_auc}",
        metadata={
            "version": last.version, "in_service_version": serving.version if serving else "",
            "roc_auc": float(auc) if auc is not None else 0.0, "min_auc": float(last.min_auc),
            "pr_auc": float(holdout.get("pr_auc") or 0.0), "brier": float(holdout.get("brier") or 0.0),
            "holdout_scheme": last.metrics.get("holdout_scheme", ""), "horizon_days": last.horizon_days, "kind": last.kind,
        },
    )


asset_checks = [churn_auc]
