"""``churn_model`` and ``analytics/churn_scores``: who is about to leave, and what they will spend.

Thin Dagster wiring around the pure parts of this package:

* ``churn_model`` (group ``segmentation``): plans the training snapshots inside the history up to the
  run's as-of time ``T`` (snapshots.py: features as of ``c_k``, labels from ``(c_k, c_k + H]``, never past
  ``T``), trains and calibrates the classifier and the spend regressor (model.py), stores the artifact
  under ``models/churn/<version>.joblib`` and a row in ``meta.churn_models``, and shows ROC-AUC, PR-AUC
  and Brier on the time-based holdout. A fit below ``min_auc`` is recorded but does not serve: the previous
  model keeps serving, or, without one, the churn columns stay null. It blocks nothing (segments are
  published either way): the ``churn_auc`` check (run in this asset's step) warns, and the reason is on the
  asset and in ``meta.churn_runs`` for the CLI summary. With too little history for the horizon (fewer than two
  snapshots: about ``H + step + min_history_days`` days) no model is trained: the asset says why, the
  check warns, and the scores are null.
* ``analytics/churn_scores``: every user of ``features.user_features`` scored with the model in service
  (incrementally: only users whose features were recomputed, or everyone after a model change):
  ``churn_probability`` (no completed order in the next H days), ``churn_risk`` (high /
  medium / low by the model's thresholds), ``expected_value_next_h`` (expected spend over the next H days),
  ``churn_model_version``, ``as_of`` (of the features scored). Without a model in service every user is still listed, with nulls.

``ChurnConfig.fit`` is ``when_needed`` by default (unlike ``segment_model``): the hourly refresh, the
sensor and the weekly automation all re-fit only when no model serves (or its artifact is gone), the model's settings (horizon,
kind, calibration, snapshot plan) changed, its data is older than ``max_age_days``, or the latest fit failed
the AUC floor. ``always`` forces a fit. Changing only the risk thresholds or ``min_auc`` updates the
model's row without a refit.
"""

from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from seg_assets.artifacts import MAX_SEED
from seg_assets.automation.conditions import WEEKLY_REFIT_CRON, rescore_on_new_inputs
from seg_assets.automation.limits import CheckedConfig
from seg_assets.churn import registry
from seg_assets.churn.keys import CHURN_MODEL, CHURN_SCORES, HORIZON_DAYS, RISK_HIGH, RISK_LEVELS, RISK_MEDIUM
from seg_assets.churn.model import KINDS, ChurnModel, train_churn_model
from seg_assets.churn.scoring import SCORE_COLUMNS, ChurnScorer, score_churn
from seg_assets.churn.snapshots import (
    MAX_SNAPSHOTS,
    MAX_USERS_PER_SNAPSHOT,
    MIN_HISTORY_DAYS,
    USER_SOURCES,
    build_snapshots,
    first_order_ts,
    plan_snapshots,
)
from seg_assets.errors import input_failure
from seg_assets.features import incremental as inc
from seg_assets.features.assets import USER_FEATURES
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.settings import MAX_DAYS
from seg_assets.spark import scoring as on_spark
from seg_assets.spark.session import Engine
from seg_assets.validation import with_checks
from seg_assets.warehouse import as_enums, registered, table_exists, transaction, upsert

GROUP = "segmentation"
STAGING_INPUTS = [dg.AssetKey(table.split(".")) for table, _ in USER_SOURCES]  # the staging tables users are read from
TABLE = "analytics.churn_scores"


class ChurnConfig(CheckedConfig):
    fit: Literal["when_needed", "always"] = Field(
        default="when_needed", description="'when_needed': only without a model in service, after a settings change, "
        "when the model's data is older than max_age_days, or after a fit below min_auc. 'always' forces a fit.")
    horizon_days: int = Field(default=HORIZON_DAYS, ge=1, le=MAX_DAYS,
                              description="H: a user churns when they complete no order in the next H days.")
    kind: Literal[KINDS] = Field(
        default="auto", description="gbm (HistGradientBoosting), logreg, or auto: both, keep the better time-based holdout ROC-AUC.")
    calibration: Literal["sigmoid", "isotonic"] = Field(
        default="sigmoid", description="Probability calibration on out-of-time scores (sigmoid keeps the ranking).")
    step_days: int | None = Field(default=None, ge=1, le=MAX_DAYS, description="Days between training cut-offs (default max(7, H // 3)).")
    max_snapshots: int = Field(default=MAX_SNAPSHOTS, ge=2, description="Most training snapshots (cut-offs T-H, T-H-step, ...).")
    min_history_days: int = Field(default=MIN_HISTORY_DAYS, ge=0, le=MAX_DAYS, description="Days of data a cut-off needs before it.")
    max_users_per_snapshot: int = Field(default=MAX_USERS_PER_SNAPSHOT, ge=1_000, description="Users sampled per snapshot (bounds training "
                                        "cost; 50k, 100k and 200k gave the same holdout AUC at 1M users, bench/RESULTS.md).")
    risk_high: float = Field(default=RISK_HIGH, ge=0, le=1, description="churn_risk 'high' when churn_probability >= this.")
    risk_medium: float = Field(default=RISK_MEDIUM, ge=0, le=1,
                               description="churn_risk 'medium' when churn_probability >= this (else 'low').")
    min_auc: float = Field(default=0.65, ge=0, le=1, description="Holdout ROC-AUC floor: below it the fit does not serve "
                           "(churn columns null unless an earlier model serves) and the churn_auc check warns.")
    max_age_days: float = Field(default=7.0, gt=0, le=MAX_DAYS,
                                description="'when_needed' re-fits a model whose data is older than this (data time).")
    threads: int = Field(default=0, ge=0, le=1024,
                         description="OpenMP/BLAS threads for fitting (0: all cores; the fit is the same whatever the count).")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Random seed (sampling, boosting).")

    def settings(self) -> dict:
        """What a model in service must match for 'when_needed' to keep it."""
        return {"horizon_days": self.horizon_days, "kind_requested": self.kind, "calibration": self.calibration,
                "step_days": self.step_days, "max_snapshots": self.max_snapshots,
                "min_history_days": self.min_history_days, "max_users_per_snapshot": self.max_users_per_snapshot}


def refit_reason(current: "registry.ChurnRow | None", last: "registry.ChurnRow | None", as_of, config: ChurnConfig) -> str | None:
    """Why a 'when_needed' run should fit (None: keep the model in service)."""
    if current is None:
        return "no churn model in service"
    if not current.artifact.exists():
        return f"the artifact of {current.version} is missing ({current.artifact})"
    if last is not None and last.version != current.version and not last.passed:
        return f"the latest fit {last.version} was below its AUC floor"
    stored = current.metrics.get("settings", {})
    changed = [k for k, v in config.settings().items() if stored.get(k) != v]
    if changed:
        return "settings changed: " + ", ".join(changed)
    if current.data_as_of is not None and (as_of - current.data_as_of).total_seconds() > config.max_age_days * 86_400:
        return f"model older than {config.max_age_days:g} days (fitted on data as of {current.data_as_of:%Y-%m-%d})"
    return None


def _md(frame: pl.DataFrame, floatfmt: str = ".3f") -> dg.MetadataValue:
    return dg.MetadataValue.md(md_frame(frame, floatfmt=floatfmt))


def _model_metadata(model: ChurnModel, plan_text: str) -> dict:
    h = model.metrics["holdout"]
    v = model.metrics["value_holdout"]
    fmt = lambda x: None if x is None else float(x)  # noqa: E731
    meta = {
        "roc_auc": fmt(h["roc_auc"]), "pr_auc": fmt(h["pr_auc"]), "pr_auc_buyers": fmt(h["pr_auc_buyers"]),
        "brier": fmt(h["brier"]), "brier_base_rate": fmt(h["brier_base_rate"]), "log_loss": fmt(h["log_loss"]),
        "roc_auc_recency_only": fmt(h["roc_auc_recency_only"]), "holdout_churn_rate": fmt(h["churn_rate"]),
        "holdout_rows": int(h["rows"]), "holdout_scheme": model.metrics["holdout_scheme"], "kind": model.kind,
        "horizon_days": model.horizon_days, "training_rows": int(model.metrics["training_rows"]),
        "snapshots": dg.MetadataValue.md(plan_text),
        "candidates": dg.MetadataValue.json({k: v for k, v in model.metrics["candidates"].items()}),
        "value_mae": fmt(v["mae"]), "value_mae_mean_baseline": fmt(v["mae_mean_baseline"]),
        "value_total_predicted_over_actual": fmt(v["total_predicted"] / v["total_actual"]) if v["total_actual"] else None,
        "value_spearman": fmt(v["spearman"]),
        "not_converged": dg.MetadataValue.json(model.metrics.get("not_converged", [])),
        "reliability": _md(pl.DataFrame(model.metrics["holdout_reliability"]).with_columns(pl.col("rows").cast(pl.String))),
    }
    if model.importances is not None:
        meta["feature_importance"] = _md(model.importances.head(12), ".4f")
    return {k: v for k, v in meta.items() if v is not None}


CHURN_AUC = dg.AssetCheckSpec(
    "churn_auc", asset=CHURN_MODEL, blocking=False,
    description="The latest churn model's holdout ROC-AUC reached min_auc (otherwise it does not serve; segments "
    "are published anyway, with the churn columns of the model still in service, or null).")


def below_floor_note(version: str, auc, min_auc: float, serving: str | None) -> str:
    """Why the churn columns are what they are after a fit below its floor, in words (asset, check, CLI)."""
    shown = "n/a" if auc is None else f"{auc:.2f}"
    then = f"{serving} keeps serving" if serving else "churn columns left empty"
    return f"{version} not in service: holdout ROC-AUC {shown} < min_auc {min_auc:g}: {then}"


def churn_auc(con) -> dg.AssetCheckResult:
    """WARN, never blocking: a fit below ``min_auc`` does not serve, the rest of the refresh goes on (thin data
    must degrade, not stop the segments). Also WARN with no model trained yet (history shorter than the horizon)."""
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
    description = (f"{last.version}: holdout ROC-AUC {shown} >= {last.min_auc}" if passed else
                   below_floor_note(last.version, auc, last.min_auc, serving.version if serving else None))
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={
            "version": last.version, "in_service_version": serving.version if serving else "",
            "roc_auc": float(auc) if auc is not None else 0.0, "min_auc": float(last.min_auc),
            "pr_auc": float(holdout.get("pr_auc") or 0.0), "brier": float(holdout.get("brier") or 0.0),
            "holdout_scheme": last.metrics.get("holdout_scheme", ""), "horizon_days": last.horizon_days, "kind": last.kind,
        },
    )


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=CHURN_MODEL, deps=[USER_FEATURES, *STAGING_INPUTS], group_name=GROUP, pool="duckdb", kinds={"scikitlearn"},
    automation_condition=(dg.AutomationCondition.on_missing() | dg.AutomationCondition.on_cron(WEEKLY_REFIT_CRON))
    .with_label(f"fit when missing; weekly check ({WEEKLY_REFIT_CRON})"),
    check_specs=[CHURN_AUC],
    description="Churn (no completed order in the next H days) and expected spend over H days, trained on time-based "
    "snapshots of the history up to as-of; ROC-AUC / PR-AUC / Brier on a time-based holdout. Artifact under "
    "models/churn/, one row per fit in meta.churn_models.",
)
def churn_model(context: dg.AssetExecutionContext, config: ChurnConfig, duckdb: Warehouse, settings: SegSettings):
    return with_checks(context, _churn_model(context, config, duckdb, settings), duckdb, [(CHURN_AUC, churn_auc)])


def _churn_model(context: dg.AssetExecutionContext, config: ChurnConfig, duckdb: Warehouse,
                 settings: SegSettings) -> dg.MaterializeResult:
    if config.risk_medium > config.risk_high:
        raise input_failure(f"risk_medium ({config.risk_medium}) must not exceed risk_high ({config.risk_high}): "
                            "set them with --set churn_model.risk_medium=... / risk_high=...")
    with duckdb.get_connection() as con:
        registry.ensure_tables(con)
        as_of = settings.resolve_as_of(con)
        current, last = registry.in_service(con), registry.latest(con)
        reason = "forced (fit=always)" if config.fit == "always" else refit_reason(current, last, as_of, config)
        if reason is None:
            registry.update_thresholds(con, current.version, risk_high=config.risk_high, risk_medium=config.risk_medium,
                                       min_auc=config.min_auc)
            context.log.info(f"keeping churn model {current.version} in service")
            registry.record_run(con, run_id=context.run_id, as_of=as_of, in_service_version=current.version,
                                note=f"{current.version} in service (kept; holdout ROC-AUC {_auc(current.roc_auc)})",
                                outcome="kept")
            return dg.MaterializeResult(metadata={
                "decision": f"kept {current.version} in service (no refit needed)", "in_service_version": current.version,
                "roc_auc": float(current.roc_auc or 0.0), "horizon_days": current.horizon_days})
        plan = plan_snapshots(first_order_ts(con, as_of), as_of, config.horizon_days, step_days=config.step_days,
                              max_snapshots=config.max_snapshots, min_history_days=config.min_history_days)
        if not plan.enough:
            message = f"no churn model: not enough history for a {config.horizon_days}-day horizon ({plan.describe()})"
            return _not_fitted(context, duckdb, message, current, as_of)  # which logs it
        snapshots = build_snapshots(con, plan, max_users_per_snapshot=config.max_users_per_snapshot, seed=config.seed)
        version = registry.next_version(con)
    context.log.info(f"fitting {version}: {reason}; {plan.describe()}; {snapshots.height} snapshot rows")
    try:
        model = train_churn_model(snapshots, horizon_days=config.horizon_days, kind=config.kind, calibration=config.calibration,
                                  version=version, as_of=as_of, cutoffs=plan.cutoffs, seed=config.seed,
                                  threads=config.threads or None)
    except ValueError as err:  # e.g. every user churned in the training window: nothing to learn
        return _not_fitted(context, duckdb, f"no churn model: {err}", current, as_of)
    model.metrics["settings"] = config.settings()
    model.metrics["plan"] = plan.describe()
    for note in model.metrics["not_converged"]:  # a small shop's fit stopped at its iteration limit: one line, not six
        context.log.warning(f"{version}: a fit did not converge: {note}")
    artifact = model.save(registry.artifact_path(settings.paths.models, version))
    with duckdb.get_connection() as con:
        serving = registry.record(con, model, artifact=artifact, min_auc=config.min_auc, risk_high=config.risk_high,
                                  risk_medium=config.risk_medium, reason=reason, run_id=context.run_id)
    auc = model.metrics["holdout"]["roc_auc"]
    kept = current.version if current and not serving else None
    decision = (f"{version} in service (holdout ROC-AUC {auc:.3f} >= {config.min_auc})" if serving else
                below_floor_note(version, auc, config.min_auc, kept))
    with duckdb.get_connection() as con:
        registry.record_run(con, run_id=context.run_id, as_of=as_of, in_service_version=version if serving else kept,
                            note=decision, outcome="fitted" if serving else "below_floor")
    (context.log.info if serving else context.log.warning)(decision)
    return dg.MaterializeResult(metadata={
        "version": version, "decision": decision, "trigger": reason, "in_service": serving,
        "in_service_version": version if serving else (current.version if current else ""),
        "artifact": dg.MetadataValue.path(str(artifact)), **_model_metadata(model, plan.describe()),
    })


def _auc(auc) -> str:
    return "n/a" if auc is None else f"{auc:.2f}"


def _not_fitted(context, duckdb: Warehouse, message: str, current, as_of) -> dg.MaterializeResult:
    """No model could be trained this run: say why, here and in meta.churn_runs; the columns stay as they are."""
    context.log.warning(message)
    note = f"{message}: {current.version} keeps serving" if current else f"{message}: churn columns left empty"
    with duckdb.get_connection() as con:
        registry.record_run(con, run_id=context.run_id, as_of=as_of, in_service_version=current.version if current else None,
                            note=note, outcome="not_fitted")
    return dg.MaterializeResult(metadata={"decision": note, "in_service_version": current.version if current else ""})


def _risk_sql(high: float, medium: float) -> str:
    """churn_risk from churn_probability in SQL, exactly as :func:`risk_levels`."""
    top, middle, bottom = RISK_LEVELS
    return (f"CASE WHEN churn_probability IS NULL THEN NULL WHEN churn_probability >= {float(high)!r} THEN '{top}' "
            f"WHEN churn_probability >= {float(medium)!r} THEN '{middle}' ELSE '{bottom}' END")


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=CHURN_SCORES, deps=[USER_FEATURES, CHURN_MODEL], group_name=GROUP, pool="duckdb", kinds={"duckdb", "polars"},
    automation_condition=rescore_on_new_inputs(),
    description="One row per user: churn_probability (no completed order in the next H days), churn_risk "
    "(high / medium / low), expected_value_next_h (expected spend over the next H days), model version, and the "
    "as-of of the features scored. Incremental: only users with new features (or all, after a model change) are "
    "re-scored. Nulls while no churn model serves.",
)
def churn_scores(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings, engine: Engine):
    rebase = inc.rebase_requested(context.run.tags)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        row = registry.in_service(con)
        version = row.version if row else None
        everyone = rebase or not table_exists(con, TABLE) or "features_build" not in con.table(TABLE).columns
        pending = inc.pending_rows_sql(con, TABLE, {"churn_model_version": version}, everyone=everyone)
        work, selected = None, 0
        if engine.is_spark:
            work = on_spark.work_dir(settings.paths.root, TABLE)
            _, selected = on_spark.export_selection(con, f"SELECT user_id FROM ({pending})", work)
        if not selected:  # the DuckDB engine, or nobody to score (Spark is not started for nothing)
            frame = con.sql(f"{pending} ORDER BY user_id").pl()
            selected = frame.height
    model = ChurnModel.load(row.artifact) if row else None
    high, medium = (row.risk_high, row.risk_medium) if row else (RISK_HIGH, RISK_MEDIUM)
    scorer = ChurnScorer(model, high, medium)
    on = work is not None and selected
    if on:
        scores = on_spark.churn_scores_spark(engine.spark(), on_spark.require_features(settings.paths.root),
                                             None if everyone else work / "selection.parquet", scorer, work / "scored")
    else:
        scores = score_churn(frame, scorer)
    with duckdb.get_connection() as con:
        if on:
            on_spark.scored_view(con, "new_scores", scores)
            _write_scores(con, "new_scores", everyone, high, medium)
            con.sql("DROP VIEW new_scores")
        else:
            with registered(con, new_scores=scores):
                _write_scores(con, "new_scores", everyone, high, medium)
        users = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
        summary = con.sql(f"""SELECT churn_risk, count(*) AS users, avg(churn_probability) AS mean_probability,
                              sum(expected_value_next_h) AS expected_value FROM {TABLE} GROUP BY 1 ORDER BY 3 DESC""").pl()
    metadata = {"dagster/row_count": dg.MetadataValue.int(users), "dagster/table_name": TABLE,
                "users_scored": dg.MetadataValue.int(int(selected)), "as_of": str(as_of), "engine": engine.kind,
                "churn_model_version": version or ""}
    if model is not None and users:
        metadata.update({
            "horizon_days": model.horizon_days,
            "mean_churn_probability": float((summary["mean_probability"] * summary["users"]).sum() / users),
            "expected_value_total": float(summary["expected_value"].sum()),
            "risk": _md(summary),
        })
    else:
        with duckdb.get_connection() as con:
            last = registry.latest_run(con)
        why = last.note if last else "no churn model in service"
        metadata["churn_columns"] = f"null: {why}"
        context.log.warning(f"no churn model in service: churn columns are null ({why})")
    context.log.info(f"churn_scores: {selected} of {users} users scored ({'on spark' if on else 'in process'})")
    return dg.MaterializeResult(metadata=metadata)


def _write_scores(con, source: str, everyone: bool, high: float, medium: float) -> None:
    """The score rows of ``source`` into the table, replaced in full or upserted, in one transaction."""
    with transaction(con):
        if everyone:
            con.sql(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT {as_enums({'churn_risk': RISK_LEVELS})} FROM {source}")
            return
        upsert(con, TABLE, "user_id", source, list(SCORE_COLUMNS))
        con.sql(f"DELETE FROM {TABLE} WHERE user_id NOT IN (SELECT user_id FROM features.user_features)")
        con.sql(f"UPDATE {TABLE} SET churn_risk = {_risk_sql(high, medium)} "  # thresholds may have changed
                f"WHERE churn_risk IS DISTINCT FROM ({_risk_sql(high, medium)})")
