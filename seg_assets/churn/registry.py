"""The churn model registry: artifacts under ``SEG_DATA_DIR/models/churn/`` and rows in ``meta.churn_models``.

One row per fit (in service or not, with the reason). The fit in service is the latest one whose holdout
ROC-AUC reached ``min_auc``; a fit below it is recorded with ``in_service = false`` and the previous model
keeps serving; with none, the churn columns stay null. Nothing is blocked: the ``churn_auc`` check warns. The risk thresholds used by
``analytics/churn_scores`` are stored with the model (``risk_high``, ``risk_medium``), as is the AUC floor;
both are updated without a refit when only they change. A row is only written after its artifact exists.

``meta.churn_runs`` holds one row per ``churn_model`` run: which model serves after it, the run's
:data:`OUTCOMES` value and, in words, why (or why the churn columns are empty): the asset shows the words, the
CLI summary decides from the outcome what to tell the person.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from seg_assets.artifacts import located_path, recorded_path
from seg_assets.warehouse import naive_utc, numbered_version, table_exists, transaction

DDL = """
CREATE TABLE IF NOT EXISTS meta.churn_models (
    version VARCHAR PRIMARY KEY, kind VARCHAR, horizon_days INTEGER, calibration VARCHAR,
    roc_auc DOUBLE, pr_auc DOUBLE, brier DOUBLE, min_auc DOUBLE, passed BOOLEAN, in_service BOOLEAN,
    risk_high DOUBLE, risk_medium DOUBLE, metrics JSON, features VARCHAR[], cutoffs TIMESTAMP[],
    fitted_at TIMESTAMP, data_as_of TIMESTAMP, reason VARCHAR, artifact VARCHAR, run_id VARCHAR
)"""

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS meta.churn_runs (
    recorded_at TIMESTAMP, run_id VARCHAR, as_of TIMESTAMP, in_service_version VARCHAR, note VARCHAR
)"""
OUTCOME_DDL = "ALTER TABLE meta.churn_runs ADD COLUMN IF NOT EXISTS outcome VARCHAR"  # warehouses from before it
# What a run of churn_model did: put a new fit in service, kept the model in service without a fit, fitted one below
# min_auc (not serving), or could not fit at all (too little history, nothing to learn).
OUTCOMES = ("fitted", "kept", "below_floor", "not_fitted")


@dataclass(frozen=True)
class ChurnRow:
    version: str
    kind: str
    horizon_days: int
    calibration: str
    roc_auc: float | None
    min_auc: float
    passed: bool
    in_service: bool
    risk_high: float
    risk_medium: float
    metrics: dict
    data_as_of: datetime | None
    reason: str
    artifact: Path


_COLUMNS = ("version, kind, horizon_days, calibration, roc_auc, min_auc, passed, in_service, risk_high, risk_medium, "
            "metrics, data_as_of, reason, artifact")


def ensure_tables(con) -> None:
    con.sql(DDL)
    con.sql(RUNS_DDL)
    con.sql(OUTCOME_DDL)


@dataclass(frozen=True)
class ChurnRun:
    in_service_version: str | None
    note: str
    outcome: str | None  # one of OUTCOMES (None: recorded before the column existed)


def record_run(con, *, run_id: str | None, as_of: datetime | None, in_service_version: str | None, note: str,
               outcome: str) -> None:
    """What this run of ``churn_model`` left in service, what it did (``outcome``) and why, in words."""
    assert outcome in OUTCOMES, outcome
    ensure_tables(con)
    con.execute("INSERT INTO meta.churn_runs (recorded_at, run_id, as_of, in_service_version, note, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [datetime.now(UTC).replace(tzinfo=None), run_id, naive_utc(as_of), in_service_version or None, note, outcome])


def latest_run(con) -> ChurnRun | None:
    """The latest ``churn_model`` run, or None before the first. Reads only (the CLI summary calls it)."""
    if not table_exists(con, "meta.churn_runs"):
        return None
    rel = con.sql("SELECT * FROM meta.churn_runs ORDER BY recorded_at DESC LIMIT 1")
    rows = rel.fetchall()
    if not rows:
        return None
    row = dict(zip(rel.columns, rows[0]))
    return ChurnRun(row["in_service_version"], row["note"], row.get("outcome"))


def artifact_path(models_dir: Path, version: str) -> Path:
    return Path(models_dir) / "churn" / f"{version}.joblib"


def next_version(con) -> str:
    ensure_tables(con)
    return numbered_version(con, "meta.churn_models", "churn-")


def _row(con, values) -> ChurnRow:
    (version, kind, horizon, calibration, auc, min_auc, passed, serving, high, medium, metrics, as_of, reason, artifact) = values
    return ChurnRow(version, kind, int(horizon), calibration, auc, float(min_auc), bool(passed), bool(serving), float(high),
                    float(medium), json.loads(metrics) if metrics else {}, as_of, reason or "", located_path(con, artifact))


def in_service(con) -> ChurnRow | None:
    ensure_tables(con)
    rows = con.sql(f"SELECT {_COLUMNS} FROM meta.churn_models WHERE in_service").fetchall()
    return _row(con, rows[0]) if rows else None


def latest(con) -> ChurnRow | None:
    ensure_tables(con)
    rows = con.sql(f"SELECT {_COLUMNS} FROM meta.churn_models ORDER BY version DESC LIMIT 1").fetchall()
    return _row(con, rows[0]) if rows else None


def record(con, model, *, artifact: Path, min_auc: float, risk_high: float, risk_medium: float, reason: str,
           run_id: str | None) -> bool:
    """Register a fit; it replaces the model in service when its holdout AUC reached ``min_auc``. Returns that."""
    ensure_tables(con)
    holdout = model.metrics.get("holdout", {})
    auc = holdout.get("roc_auc")
    passed = auc is not None and auc >= min_auc
    with transaction(con):
        if passed:
            con.sql("UPDATE meta.churn_models SET in_service = false WHERE in_service")
        con.execute(
            "INSERT INTO meta.churn_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [model.version, model.kind, model.horizon_days, model.metrics.get("calibration"), auc, holdout.get("pr_auc"),
             holdout.get("brier"), min_auc, passed, passed, risk_high, risk_medium, json.dumps(model.metrics),
             list(model.features), [naive_utc(c) for c in model.cutoffs], naive_utc(model.fitted_at), naive_utc(model.as_of),
             reason, recorded_path(con, artifact), run_id],
        )
    return passed


def update_thresholds(con, version: str, *, risk_high: float, risk_medium: float, min_auc: float) -> None:
    """New risk thresholds and AUC floor for a model, without a refit (the ``churn_auc`` check reads ``min_auc``)."""
    con.execute("UPDATE meta.churn_models SET risk_high = ?, risk_medium = ?, min_auc = ? WHERE version = ?",
                [risk_high, risk_medium, min_auc, version])
