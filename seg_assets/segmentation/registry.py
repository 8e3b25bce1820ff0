"""The model registry: versioned artifacts under ``SEG_DATA_DIR/models`` plus rows in ``meta``.

``meta.segment_models`` has one row per fitted segment model (why it was fitted, promoted or not and why), and
exactly one row with ``in_service`` true once a model has been promoted. ``meta.segment_classifiers``
does the same for classifiers, per model version. ``meta.segment_id_map`` records how each version's
clusters map to stable segment ids (kept / new / retired). Artifacts are joblib files written
atomically; a row is only written after its artifact exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from seg_assets.artifacts import (
    load_artifact,
    located_path,
    recorded_path,
    save_artifact,  # noqa: F401  (re-exported for the assets)
)
from seg_assets.segmentation.model import SegmentModel
from seg_assets.warehouse import naive_utc, numbered_version, table_exists, transaction

MODELS_DDL = """
CREATE TABLE IF NOT EXISTS meta.segment_models (
    version VARCHAR PRIMARY KEY, parent_version VARCHAR, algorithm VARCHAR, hierarchy VARCHAR, k INTEGER,
    features VARCHAR[], metrics JSON, fitted_at TIMESTAMP, data_as_of TIMESTAMP, promoted BOOLEAN,
    in_service BOOLEAN, reason VARCHAR, artifact VARCHAR, run_id VARCHAR, fit_reason VARCHAR
)"""
# reason: why the gate promoted or refused it; fit_reason: why it was fitted (rows of earlier versions: NULL, both in reason)
FIT_REASON_DDL = "ALTER TABLE meta.segment_models ADD COLUMN IF NOT EXISTS fit_reason VARCHAR"
ID_MAP_DDL = """
CREATE TABLE IF NOT EXISTS meta.segment_id_map (
    model_version VARCHAR, cluster INTEGER, segment_id INTEGER, segment_name VARCHAR, stage VARCHAR,
    status VARCHAR, distance DOUBLE, matched_old_id INTEGER
)"""
CLASSIFIERS_DDL = """
CREATE TABLE IF NOT EXISTS meta.segment_classifiers (
    version VARCHAR PRIMARY KEY, model_version VARCHAR, kind VARCHAR, metrics JSON, trained_at TIMESTAMP,
    in_service BOOLEAN, reason VARCHAR, artifact VARCHAR, run_id VARCHAR
)"""


@dataclass(frozen=True)
class InService:
    version: str
    metrics: dict
    artifact: Path


def ensure_tables(con) -> None:
    for ddl in (MODELS_DDL, FIT_REASON_DDL, ID_MAP_DDL, CLASSIFIERS_DDL):
        con.sql(ddl)


def model_path(models_dir: Path, version: str) -> Path:
    return models_dir / "segment_model" / f"{version}.joblib"


def classifier_path(models_dir: Path, version: str) -> Path:
    return models_dir / "segment_classifier" / f"{version}.joblib"


def next_version(con, table: str = "meta.segment_models", prefix: str = "v") -> str:
    ensure_tables(con)
    return numbered_version(con, table, prefix)


def in_service_model(con) -> InService | None:
    ensure_tables(con)
    rows = con.sql("SELECT version, metrics, artifact FROM meta.segment_models WHERE in_service").fetchall()
    if not rows:
        return None
    version, metrics, artifact = rows[0]
    return InService(version, json.loads(metrics) if metrics else {}, located_path(con, artifact))


def in_service_version(con) -> str | None:
    """The version of the segment model in service (None: none yet). A promotion moves many users at once: the stages
    that defer segment moves (basket counts, recommendations) catch up when it changes."""
    if not table_exists(con, "meta.segment_models"):
        return None
    rows = con.sql("SELECT version FROM meta.segment_models WHERE in_service").fetchall()
    return rows[0][0] if rows else None


@dataclass(frozen=True)
class Fit:
    version: str
    data_as_of: datetime | None


def latest_fit(con) -> Fit | None:
    """The latest fit, promoted or refused: what a 'when_needed' run dates the models' age from."""
    ensure_tables(con)
    rows = con.sql("SELECT version, data_as_of FROM meta.segment_models ORDER BY fitted_at DESC, version DESC LIMIT 1").fetchall()
    return Fit(*rows[0]) if rows else None


def record_model(con, model: SegmentModel, *, artifact: Path, promoted: bool, reason: str, fit_reason: str,
                 run_id: str | None) -> None:
    """Register a fitted model; if promoted it replaces the one in service, in one transaction."""
    ensure_tables(con)
    record = model.to_record()
    with transaction(con):
        if promoted:
            con.sql("UPDATE meta.segment_models SET in_service = false WHERE in_service")
        con.execute(
            "INSERT INTO meta.segment_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [model.version, model.parent_version, model.algorithm, model.hierarchy, model.k, list(model.features),
             json.dumps(record["metrics"]), naive_utc(model.fitted_at), naive_utc(model.as_of), promoted, promoted, reason,
             recorded_path(con, artifact), run_id, fit_reason],
        )
        frame = model.matching
        if frame is not None:
            names, stages = model.name_of, dict(zip(model.segment_ids, model.cluster_stage))
            rows = [(model.version, c, sid, names.get(sid), stages.get(sid), st, None if d != d else d, old)
                    for c, sid, st, d, old in frame.select("cluster", "segment_id", "status", "distance", "matched_old_id").iter_rows()]
            con.executemany("INSERT INTO meta.segment_id_map VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def in_service_classifier(con, model_version: str):
    """(version, metrics, fitted classifier) of the classifier in service for a model version, or None."""
    ensure_tables(con)
    rows = con.sql(
        "SELECT version, metrics, artifact FROM meta.segment_classifiers WHERE in_service AND model_version = ?",
        params=[model_version]).fetchall()
    if not rows:
        return None
    version, metrics, artifact = rows[0]
    return version, json.loads(metrics), load_artifact(located_path(con, artifact))


def record_classifier(con, *, version: str, model_version: str, kind: str, metrics: dict, artifact: Path,
                      in_service: bool, reason: str, run_id: str | None, trained_at: datetime) -> None:
    ensure_tables(con)
    with transaction(con):
        if in_service:
            con.sql("UPDATE meta.segment_classifiers SET in_service = false WHERE in_service")
        con.execute(
            "INSERT INTO meta.segment_classifiers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [version, model_version, kind, json.dumps(metrics), naive_utc(trained_at), in_service, reason,
             recorded_path(con, artifact), run_id],
        )
