"""The code location: every stage's assets and checks, resources, jobs, schedules and sensors.

``dagster dev -w workspace.yaml`` loads ``defs``; the CLI and the tests call :func:`build_defs` with
their own data root (and, for reproducible runs, a fixed as-of time).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg

from seg_assets import activation, baskets, churn, features, ingest, recommend, reviews, segmentation
from seg_assets.automation import jobs as automation
from seg_assets.publish import assets as publish
from seg_assets.resources import build_resources

STAGES = (ingest, reviews, features, segmentation, churn, baskets, recommend, activation, publish)


def all_assets() -> list:
    assets = [a for stage in STAGES for a in stage.assets]
    _one_writer_per_table(assets)
    return assets


def _one_writer_per_table(assets: list) -> None:
    """A SQL model named like a table a stage's Python writes (analytics/user_segments.sql) failed every run with
    Dagster's "Duplicate asset key" traceback (a tester's): refused in one line naming the file. Names compare as DuckDB
    does, case-blind (analytics/User_Segments.sql replaced the segments), with the tables Python writes that are no
    asset (a full build's recommendations); the project's own schemas are refused when a model is read."""
    from seg_assets.recommend.assets import NEXT

    written = Counter(".".join(key.path).lower() for a in assets for key in a.keys)
    written[NEXT] += 1
    if clash := [name for name, n in written.items() if n > 1]:
        from seg_assets.features.sql_files import SqlModelError, discover_models

        files = {".".join(m.key.path).lower(): m.path for m in discover_models()}
        name = next((n for n in clash if n in files), clash[0])
        raise SqlModelError(f"{files.get(name, name)}: {name} is a table the project's own Python writes (or another "
                            "model's, names compared case-blind): rename the model's file (its table takes the file's name)")


def stage_groups() -> tuple[str, ...]:
    """Asset groups in data-flow order (the order of STAGES): how the CLI reports a run, stage by stage."""
    names = [group for a in all_assets() for group in a.group_names_by_key.values()]
    return tuple(dict.fromkeys(names))


def all_checks() -> list:
    return [c for stage in STAGES for c in stage.asset_checks]


def build_defs(data_dir: str | Path | None = None, as_of: str | None = None, engine: str | None = None) -> dg.Definitions:
    resources = build_resources(data_dir, as_of, engine)
    if resources["engine"].is_spark:  # a model Spark cannot run fails here, naming it and the function
        from seg_assets.features.sql_files import discover_models
        from seg_assets.spark.sql import check_models

        check_models(discover_models())
    return dg.Definitions(
        assets=all_assets(),
        asset_checks=all_checks(),
        resources=resources,
        # One process per run: the heavy imports happen once, and steps never fight over the DuckDB file.
        executor=dg.in_process_executor,
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
    )


defs = build_defs()
