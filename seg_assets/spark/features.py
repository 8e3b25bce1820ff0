"""The feature stage on Spark: the SQL models (transpiled, spark/sql.py) and ``features.user_features``.

Every run rebuilds the SQL models in full on Spark. ``user_features`` follows the DuckDB engine's incremental plan
(``features/incremental.py: plan_build``, decided in DuckDB on the raw Parquet views): the changed users' rows are
recomputed on Spark, every other user keeps their row and its as-of, so both engines publish the same rows after any
refresh, not only after a full one. ``user_features`` calls the SAME
polars function as the DuckDB path (``build_user_features``) on each Arrow batch of users (``mapInArrow``):
the per-user inputs are joined on Spark into one row per user, split back into the function's four frames in
the batch, with the top categories (a global choice) computed once and passed in. One function per rule, both
engines call it: that is why the features are identical.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from seg_assets.features import user_features as uf
from seg_assets.settings import DataPaths
from seg_assets.spark.sql import SparkSqlError, model_spark_sql
from seg_assets.spark.tables import SparkTables, parquet_rows, read_path, write_table

INPUTS = uf.USER_INPUTS
ACTIVITY = uf.CATEGORY_INPUT[1]
USER_FEATURES = uf.USER_FEATURES_TABLE


def build_model(spark, paths: DataPaths, model, models: dict, as_of: datetime) -> int:
    """Build one table/incremental SQL model in full on Spark into its Parquet folder; its row count."""
    tables = SparkTables(spark, paths, models, as_of)
    for upstream in model.upstream:
        tables.ensure(".".join(upstream))
    frame = spark.sql(model_spark_sql(model, as_of))
    refuse_intervals(model, frame.schema)
    key = model.keys[0] if model.keys else None
    target = paths.spark_table(model.table)
    write_table(frame, target, by=key)
    return parquet_rows(target)


def refuse_intervals(model, schema) -> None:
    """A column of time intervals (``max(ts) - min(ts)``) is an INTERVAL in DuckDB's build and, written by Spark to
    Parquet, a BIGINT of microseconds: DuckDB read '143 days 04:39:00' on one engine, 12371940000000 on the other, for
    every user of a helper's model, without a word. Refused in one line instead (no Spark form can write an INTERVAL)."""
    from pyspark.sql.types import CalendarIntervalType, DayTimeIntervalType, YearMonthIntervalType

    intervals = [f.name for f in schema.fields
                 if isinstance(f.dataType, (DayTimeIntervalType, YearMonthIntervalType, CalendarIntervalType))]
    if intervals:
        raise SparkSqlError(f"{model.path}: column(s) {', '.join(intervals)} hold time intervals, which Spark writes to "
                            "Parquet as a number of microseconds (an INTERVAL on DuckDB): return a number instead (seconds, "
                            "days), one both engines compute alike, or leave the difference to the reader of the table")


def _prefix(side: str, column: str) -> str:
    return f"{side}__{column}"


def _read_columns(name: str, present: list[str]) -> list[str]:
    """An input's columns that build_user_features reads: its schema's, and those that pass through (uf.passes_through)."""
    schema = INPUTS[name][1]
    return [*schema, *(c for c in present if c not in schema and uf.passes_through(c))]


def _wide_sql(views: dict[str, str], activity: str, present: dict[str, list[str]]) -> str:
    """One row per user: each input's columns under ``<input>__`` (``present``: the columns each view has), the
    category activity as a list of structs."""
    unions = " UNION ".join(f"SELECT user_id FROM {views[name]}" for name in INPUTS)
    cols, joins = [], []
    for name in INPUTS:
        cols += [f"{name}.{c} AS {_prefix(name, c)}" for c in _read_columns(name, present[name])]
        joins.append(f"LEFT JOIN {views[name]} AS {name} ON {name}.user_id = u.user_id")
    return (f"SELECT u.user_id, {', '.join(cols)}, a.activity FROM ({unions}) AS u {' '.join(joins)} "
            f"LEFT JOIN (SELECT user_id, collect_list(named_struct('category', category, 'events', events)) AS activity "
            f"FROM {activity} GROUP BY user_id) AS a ON a.user_id = u.user_id")


def features_of_batch(wide: pl.DataFrame, as_of: datetime, top_categories: int, categories: list[str],
                      build: str | None = None) -> pl.DataFrame:
    """``build_user_features`` on one batch of whole users (the rows of ``_wide_sql``)."""
    frames = {}
    for name in INPUTS:
        present = wide.filter(pl.col(_prefix(name, "user_id")).is_not_null())
        frames[name] = present.select([pl.col(c).alias(c.removeprefix(_prefix(name, ""))) for c in wide.columns
                                       if c.startswith(_prefix(name, ""))])
    activity = (wide.select("user_id", "activity").filter(pl.col("activity").is_not_null())
                .explode("activity").unnest("activity"))
    return uf.build_user_features(**frames, **{uf.CATEGORY_INPUT[0]: activity}, as_of=as_of,
                                  top_categories=top_categories, categories=categories, build=build)


def top_categories_of(spark, activity_view: str, top_n: int) -> list[str]:
    """The share columns: the same ``top_category_list`` as the DuckDB path, on per-category totals."""
    totals = spark.sql(f"SELECT category, CAST(sum(events) AS BIGINT) AS events FROM {activity_view} GROUP BY category")
    frame = pl.from_arrow(totals.toArrow()) if totals.columns else None
    return uf.top_category_list(frame, top_n) if frame is not None and frame.height else []


def build_user_features(spark, paths: DataPaths, models: dict, as_of: datetime, top_categories: int,
                        changed: Path | None = None, categories: list[str] | None = None,
                        stamp=lambda categories: None) -> tuple[int, list[str]]:
    """``features.user_features`` on Spark into its Parquet folder, hash-partitioned by user; (users, categories).

    ``changed``: a Parquet file of the user ids to recompute (an incremental build); the others keep their rows of
    the current folder, and ``categories`` (the share columns) are the last build's. ``stamp(categories)``: the
    ``features_build`` of the recomputed rows."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    tables = SparkTables(spark, paths, models, as_of)
    views = {name: tables.ensure(table) for name, (table, _) in INPUTS.items()}
    activity = tables.ensure(ACTIVITY)
    if categories is None:
        categories = top_categories_of(spark, activity, top_categories)
    build = stamp(categories)
    empty = uf.build_user_features(None, None, None, None, as_of=as_of, top_categories=top_categories, categories=categories)
    schema = from_arrow_schema(empty.to_arrow().schema, prefer_timestamp_ntz=True)
    arrow_schema = to_arrow_schema(schema)

    def per_batch(batches):
        import pyarrow as pa

        for batch in batches:
            wide = pl.from_arrow(pa.Table.from_batches([batch]))
            out = features_of_batch(wide, as_of, top_categories, categories, build)
            yield from out.to_arrow().cast(arrow_schema).to_batches()

    typed = {name: pl.from_arrow(to_arrow_schema(spark.table(view).schema).empty_table()) for name, view in views.items()}
    present = {name: frame.columns for name, frame in typed.items()}
    # a declared or dictionary column no input carries, or of a type its entry cannot be, fails here, on the driver, in
    # one line (not in every batch's worker, nor as Spark's AnalysisException in the wide query)
    uf.check_input_columns(typed)
    uf.build_user_features(**typed, category_activity=None, as_of=as_of, categories=categories)
    wide = spark.sql(_wide_sql(views, activity, present))
    target = paths.spark_table(USER_FEATURES)
    if changed is not None:
        keys = spark.read.parquet(read_path(changed))
        kept = spark.read.schema(schema).parquet(read_path(target)).join(keys, "user_id", "left_anti")
        frame = kept.unionByName(wide.join(keys, "user_id", "left_semi").mapInArrow(per_batch, schema))
    else:
        frame = wide.mapInArrow(per_batch, schema)
    write_table(frame, target, by="user_id")  # beside the current folder, then swapped in: kept rows read it first
    return parquet_rows(target), categories
