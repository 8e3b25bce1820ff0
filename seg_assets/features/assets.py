"""Feature assets: the SQL models of ``dbt_like_sql/`` plus ``features/user_features`` (polars)."""


import hashlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from seg_assets.automation.limits import CheckedConfig
from seg_assets.errors import input_failure
from seg_assets.features import dictionary
from seg_assets.features import incremental as inc
from seg_assets.features import user_features as user_features_module
from seg_assets.features.dictionary import markdown_table
from seg_assets.features.sql_files import SqlModelError, discover_models
from seg_assets.features.sql_models import GROUP, build_version, built_inputs, event_time_of, first_views, sql_assets
from seg_assets.features.user_features import (
    CATEGORY_INPUT,
    TOP_CATEGORIES,
    USER_FEATURES_TABLE,
    USER_INPUTS,
    FeatureError,
    build_user_features,
    check_input_columns,
    top_category_list,
    unread_advice,
    unread_columns,
)
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.spark.session import Engine
from seg_assets.warehouse import create_table_from, drop_other_kind, table_exists, transaction

USER_FEATURES = dg.AssetKey(["features", "user_features"])
TABLE = USER_FEATURES_TABLE
# Refreshed hourly: warn when 75 minutes old, fail at 2 hours (reported in the UI; never launches runs).
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75))
_INPUTS = {name: table for name, (table, _) in USER_INPUTS.items()} | dict([CATEGORY_INPUT])


def sources(models: dict) -> list[inc.Source]:
    """The views whose rows are behind a user's features (a user with a new row in any of them is recomputed), each with
    the column that dates its rows: both read from the SQL (sql_models.first_views, the ``-- event_time:`` header)."""
    out = [inc.Source(table, event_time_of(table, models)) for table in first_views(_INPUTS.values(), models)]
    if undated := [s.table for s in out if s.event_time is None]:
        files = ", ".join(str(models[t].path) if t in models else t for t in undated)
        raise SqlModelError(f"{files}: a view that user features read needs an `-- event_time: <column>` header (the "
                            "column that dates its rows: what finds the users with new rows)")
    return out


def _sources_in_run(models: dict) -> list[inc.Source]:
    """:func:`sources` in a step (the SQL edited after the definitions loaded): one line, not retried."""
    try:
        return sources(models)
    except SqlModelError as exc:
        raise input_failure(str(exc)) from None


class FeatureConfig(CheckedConfig):
    top_categories: int = Field(
        default=TOP_CATEGORIES, ge=1, le=100,
        description="Categories that get their own cat_share_<category> column; the rest go to cat_share_other.",
    )


def read_frame(con, table: str, where: str = "") -> "pl.DataFrame | None":
    return con.sql(f"SELECT * FROM {table} {where}").pl() if table_exists(con, table) else None


def _code_version(models: dict) -> str:
    """user_features is rebuilt in full when its code changes (the maths and the dictionary) or the SQL of what it
    reads (sql_models.build_version of its input models and views: their rows of unchanged users change too)."""
    digest = hashlib.sha256()
    for module in (user_features_module, dictionary):
        digest.update(Path(module.__file__).read_bytes())
    for table in sorted({t for t, _ in USER_INPUTS.values()} | {CATEGORY_INPUT[1]}):
        if table in models:
            digest.update(build_version(models[table], models).encode())
    return digest.hexdigest()[:12]


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=USER_FEATURES,
    deps=[dg.AssetKey(t.split(".")) for t in _INPUTS.values()],
    group_name=GROUP,
    kinds={"duckdb", "polars", "spark"},
    pool="duckdb",
    freshness_policy=FRESHNESS,
    description="One row per user: recency, frequency, monetary value, funnel and category features, as of the "
    "row's `as_of`. Incremental: only users with new rows are recomputed (a rebase recomputes everyone). "
    "See the feature dictionary in the metadata.",
)
def user_features(context: dg.AssetExecutionContext, config: FeatureConfig, duckdb: Warehouse, settings: SegSettings,
                  engine: Engine):
    if engine.is_spark:
        return _user_features_on_spark(context, config, duckdb, settings, engine)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        models = {m.table: m for m in discover_models()}
        behind = _sources_in_run(models)
        built = built_inputs([s.table for s in behind] + list(_INPUTS.values()), models)
        plan = inc.plan_build(con, model=TABLE, target=TABLE, key="user_id", sources=behind, code_version=_code_version(models),
                              as_of=as_of, rebase=inc.rebase_requested(context.run.tags),
                              params={"top_categories": config.top_categories}, built=built)
        where = f"WHERE user_id IN (SELECT user_id FROM temp.{inc.CHANGED})" if plan.incremental else ""
        frames = {name: read_frame(con, table, where) for name, table in _INPUTS.items()}
        try:
            check_input_columns(frames)
        except FeatureError as exc:
            raise input_failure(str(exc)) from None
        for table, columns in unread_columns(frames).items():
            context.log.warning(f"{table} has column(s) user_features does not read: {', '.join(columns)} "
                                f"({unread_advice(table, columns)})")
        activity = frames["category_activity"]
        if plan.incremental:
            categories = inc.read_state(con, TABLE).params["categories"]
        else:
            categories = top_category_list(activity, config.top_categories) if activity is not None else []
        stamp = inc.build_stamp(plan, _code_version(models), {"top_categories": config.top_categories, "categories": categories})
        try:
            features = build_user_features(**frames, as_of=as_of, top_categories=config.top_categories,
                                           categories=categories, build=stamp)
        except FeatureError as exc:
            raise input_failure(str(exc)) from None
        del frames, activity  # the inputs (5M category rows at 1M users) are freed before DuckDB copies the result
        with transaction(con):
            if plan.incremental:
                con.register("recomputed_features", features)
                inc.replace_keys(con, TABLE, "user_id", "recomputed_features", features.columns)
                con.unregister("recomputed_features")
            else:
                drop_other_kind(con, TABLE, "BASE TABLE")  # a view over Spark's Parquet after --engine spark
                create_table_from(con, TABLE, features)
            inc.write_state(con, TABLE, _code_version(models), as_of, plan,
                            params={"top_categories": config.top_categories, "categories": categories})
        users = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
    summary = features.select(
        pl.len().alias("rows_written"),
        (pl.col("frequency") > 0).sum().alias("buyers"),
        pl.col("monetary").sum().alias("revenue"),
        pl.col("recency_days").median().alias("median_recency_days"),
    ).row(0, named=True)
    context.log.info(f"user_features: {plan.mode} ({plan.reason}), {summary['rows_written']} of {users} users "
                     f"recomputed as of {as_of}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(users),
            "build": f"{plan.mode}: {plan.reason}",
            "users_recomputed": dg.MetadataValue.int(summary["rows_written"]),
            "dagster/table_name": TABLE,
            "recomputed_buyers": dg.MetadataValue.int(int(summary["buyers"])),
            "recomputed_revenue": dg.MetadataValue.float(float(summary["revenue"] or 0.0)),
            "recomputed_median_recency_days": dg.MetadataValue.float(float(summary["median_recency_days"] or 0.0)),
            "as_of": str(as_of),
            "columns": dg.MetadataValue.int(features.width),
            "feature_dictionary": dg.MetadataValue.md(markdown_table()),
            "preview": dg.MetadataValue.md(md_frame(features.head(5))),
        }
    )


def _user_features_on_spark(context, config: FeatureConfig, duckdb: Warehouse, settings: SegSettings, engine: Engine):
    """The changed users' features on Spark (spark/features.py: the same polars function per batch of users; everyone
    on a first build or a rebase, the others' rows kept), written as Parquet and read by DuckDB through the view
    features.user_features: the steps downstream do not change."""
    from seg_assets.spark.features import build_user_features as build_on_spark
    from seg_assets.spark.tables import duckdb_view
    from seg_assets.warehouse import sql_string

    params = {"top_categories": config.top_categories, "engine": "spark"}
    folder = settings.paths.spark_table(TABLE)
    changed, categories = None, None
    models = {m.table: m for m in discover_models()}
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        # the DuckDB engine's plan, on the raw Parquet views: the SQL models are rebuilt in full on Spark in this run,
        # so only the raw inputs (built=()) say which users changed
        plan = inc.plan_build(con, model=TABLE, target=TABLE, key="user_id", sources=_sources_in_run(models),
                              code_version=_code_version(models),
                              as_of=as_of, rebase=inc.rebase_requested(context.run.tags), params=params, built=())
        if plan.incremental:
            categories = inc.read_state(con, TABLE).params["categories"]
            changed = folder.parent / "user_features_changed.parquet"
            con.sql(f"COPY (SELECT user_id FROM temp.{inc.CHANGED}) TO {sql_string(str(changed))} (FORMAT parquet)")

    def stamp(cats: list[str]) -> str:  # the categories are known on Spark, on a first build
        return inc.build_stamp(plan, _code_version(models), {"top_categories": config.top_categories, "categories": cats})

    try:
        users, categories = build_on_spark(engine.spark(), settings.paths, models, as_of, config.top_categories,
                                           changed=changed, categories=categories, stamp=stamp)
    except FeatureError as exc:
        raise input_failure(str(exc)) from None
    with duckdb.get_connection() as con, transaction(con):
        duckdb_view(con, TABLE, folder)
        inc.write_state(con, TABLE, _code_version(models), as_of, plan, params={**params, "categories": categories})
        # of the users recomputed, as the DuckDB engine reports them (the whole table was read here: a UI's
        # recomputed_revenue then changed meaning and name with the engine, a tester's); a changed key without rows
        # now (a device a login linked to its customer) is no user recomputed, as on DuckDB
        only = "" if changed is None else \
            f"WHERE user_id IN (SELECT user_id FROM read_parquet({sql_string(str(changed))}))"
        summary = con.sql(f"SELECT count(*) FILTER (WHERE frequency > 0), coalesce(sum(monetary), 0), "
                          f"coalesce(median(recency_days), 0), count(*) FROM {TABLE} {only}").fetchall()[0]
        preview = con.sql(f"SELECT * FROM {TABLE} ORDER BY user_id LIMIT 5").pl()
    if changed is not None:
        changed.unlink()
    context.log.info(f"user_features: {plan.mode} on Spark ({plan.reason}), {users} users as of {as_of} -> {folder}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(users),
            "build": f"{plan.mode} on Spark: {plan.reason}",
            "engine": "spark",
            "users_recomputed": dg.MetadataValue.int(int(summary[3])),
            "dagster/table_name": TABLE,
            "parquet": dg.MetadataValue.path(str(folder)),
            "recomputed_buyers": dg.MetadataValue.int(int(summary[0])),
            "recomputed_revenue": dg.MetadataValue.float(float(summary[1])),
            "recomputed_median_recency_days": dg.MetadataValue.float(float(summary[2])),
            "as_of": str(as_of),
            "categories": dg.MetadataValue.json(categories),
            "columns": dg.MetadataValue.int(preview.width),
            "feature_dictionary": dg.MetadataValue.md(markdown_table()),
            "preview": dg.MetadataValue.md(md_frame(preview)),
        }
    )


_MODELS = discover_models()
sources({m.table: m for m in _MODELS})  # an undated view is refused when the definitions load, as SQL errors are
assets = [*sql_assets(models=_MODELS), user_features]
