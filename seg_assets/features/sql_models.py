"""SQL models from ``dbt_like_sql/``: one file, one table or view, one Dagster asset (the files are read by
sql_files.py; this module builds them).

``dbt_like_sql/<schema>/<name>.sql`` becomes the asset ``<schema>/<name>`` and the DuckDB object
``<schema>.<name>``. Its upstream assets are read from the SQL itself with sqlglot (every qualified
table it selects from, CTE names excluded), so adding a model means adding a file: there is no list to
keep in sync. A leading comment block configures the model::

    -- materialized: view | table | incremental     (default: table)
    -- description: what the model holds
    -- unique_key: user_id          (incremental: one row per key, built from that key's input rows only)
    -- incremental_strategy: recompute | delete+insert | additive
         recompute (default): the changed keys' rows are rebuilt; delete+insert: the same for a table with
         several rows per key (every row of a changed key is replaced); additive: counts, sums, min/max per
         unique_key, the new input rows merged in (additive.py), over inputs whose rows are never rewritten
    -- event_time: event_ts         (on an input model: the column that dates its rows; raw tables: the contract's)

Models may use ``getvariable('as_of')``: the run's "now", set on the connection before the model runs.
An ``incremental`` model (dbt's word) is rebuilt only for the keys with new input rows (incremental.py);
its inputs must expose ``_file_id`` and be dated (``event_time``; a raw table by its contract timestamp, e.g.
``order_ts``), and it may use as-of only to compare an
input's event time with as-of or with as-of minus an interval ("orders in the last 30 days": a key is also
rebuilt when one of its rows leaves such a window). The windows are read from those comparisons
(incremental.sliding_windows), never declared: a declaration could disagree with the SQL.
"""


import hashlib
import sys
from contextlib import contextmanager
from dataclasses import replace
from graphlib import TopologicalSorter
from pathlib import Path

import dagster as dg
import duckdb

from seg_assets.errors import input_failure
from seg_assets.features import additive
from seg_assets.features import delta as delta_rows
from seg_assets.features import incremental as inc
from seg_assets.features.sql_files import SqlModel, SqlModelError, discover_models
from seg_assets.ingest import contract as C
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.settings import DEFAULT_SQL_DIR
from seg_assets.spark.session import Engine
from seg_assets.spark.sql import SparkSqlError, explicit_form_advice
from seg_assets.warehouse import drop_other_kind, transaction

GROUP = "features"  # the SQL models and user_features (features/assets.py)


def set_as_of(con, as_of) -> None:
    """Expose the run's "now" to SQL as ``getvariable('as_of')`` (a naive UTC TIMESTAMP)."""
    con.sql(f"SET VARIABLE as_of = TIMESTAMP '{as_of.isoformat(sep=' ')}'")


def _read_through_views(tables, models: dict[str, SqlModel]) -> set[str]:
    """The tables that reading ``tables`` reads, with each view replaced by what it reads."""
    found: set[str] = set()
    for table in tables:
        model = models.get(table)
        found.update(_read_through_views(model.inputs, models) if model is not None and model.materialized == "view"
                     else [table])
    return found


def build_version(model: SqlModel, models: dict[str, SqlModel]) -> str:
    """What a build of ``model`` computes from: its SQL, that of every view it reads through and the build version of
    every SQL model it reads. An incremental model keeps its rows of keys without new input rows, so a changed input
    (a view reading a category holding an address as NULL, a table model rebuilt with other rows) must rebuild it in
    full, as a change of its own SQL does."""
    digest = hashlib.sha256(model.sql.encode())
    for view in sorted(_views_read_through(model.inputs, models)):
        digest.update(models[view].sql.encode())
    for table in built_inputs(model.inputs, models):
        digest.update(build_version(models[table], models).encode())
    return digest.hexdigest()[:12]


def _views_read_through(tables, models: dict[str, SqlModel]) -> set[str]:
    found: set[str] = set()
    for table in tables:
        model = models.get(table)
        if model is not None and model.materialized == "view":
            found |= {table} | _views_read_through(model.inputs, models)
    return found


def built_inputs(tables, models: dict[str, SqlModel]) -> tuple[str, ...]:
    """The SQL table and incremental models that reading ``tables`` reads, directly or through views: their rows
    are rewritten by their builds. An incremental build over them sees the raw rows only as far as their last
    build (incremental.built_watermark), and an additive one cannot use them."""
    return tuple(sorted(t for t in _read_through_views(tables, models) if t in models))


def updatable_inputs(tables, models: dict[str, SqlModel]) -> tuple[str, ...]:
    """The raw tables that reading ``tables`` reads, directly or through views, whose rows a later delivery can
    replace (contract ``updatable``: a source with ``keep: latest``)."""
    return tuple(sorted(t for t in _read_through_views(tables, models) if t not in models and t.startswith("raw.")
                        and getattr(C.TABLES.get(t[4:]), "updatable", False)))


def incremental_windows(model: SqlModel, models: dict[str, SqlModel]) -> tuple[str, ...]:
    """The sliding windows an incremental model counts in, read from its SQL, after checking what makes its
    builds exact: it reads raw tables or SQL models that say which column dates their rows, and uses as-of only
    to bound those columns (an additive model: ``<= as-of`` alone, over inputs whose rows are never rewritten).
    A ``ValueError`` at load time if not."""
    if model.materialized != "incremental":
        return ()
    undated = [t for t in model.inputs if event_time_of(t, models) is None]
    if undated and (inc.reads_as_of(model.sql) or model.strategy == "additive"):  # else new files alone change keys
        raise SqlModelError(f"{model.path}: incremental model reads {', '.join(undated)}, which must be raw tables or SQL "
                         "models with an '-- event_time:' header")
    windows = inc.sliding_windows(model.sql, set(_event_times(model, models).values()), source=str(model.path))
    if dated := sorted(v for v in _views_read_through(model.inputs, models) if inc.reads_as_of(models[v].sql)):
        raise SqlModelError(f"{model.path}: incremental model reads {', '.join(dated)}, a view that uses "
                            "getvariable('as_of'): its rows change as as-of moves, which an incremental build cannot see "
                            "(a row that left the view stays counted); compare the event time with as-of in this model "
                            "instead, or make it '-- materialized: table'")
    if model.strategy == "additive":
        if rewritten := built_inputs(model.inputs, models) + updatable_inputs(model.inputs, models):
            raise SqlModelError(f"{model.path}: an additive model adds the rows that are new since its last build, but it "
                             f"reads {', '.join(rewritten)}, whose rows can be rewritten (by their builds, or by a delivery "
                             "with keep: latest; a row counted again would be "
                             "counted twice): use '-- incremental_strategy: delete+insert'")
        if windows:
            raise SqlModelError(f"{model.path}: an additive model cannot count in sliding windows (rows leave them): "
                             f"{', '.join(windows)}")
        additive.additive_merge(model.sql, model.keys, _event_times(model, models), source=str(model.path))
    return windows


def first_views(tables, models: dict[str, SqlModel]) -> tuple[str, ...]:
    """The views (or raw tables) whose rows reach ``tables`` first: each table itself if it is one, else those of the
    models it reads (not the views behind a view: its rows carry theirs). A user with a new row in one of them has
    new features (features/assets.py), so a new source's view is found here, not added to a list by hand (one left
    off the list left its users' features stale until the daily rebase: a reviewer's)."""
    found: set[str] = set()
    for table in tables:
        model = models.get(table)
        found.update(first_views(model.inputs, models) if model is not None and model.materialized != "view" else [table])
    return tuple(sorted(found))


def event_time_of(table: str, models: dict[str, SqlModel]) -> str | None:
    """The column that dates ``table``'s rows: its model's ``event_time``, or a raw table's contract timestamp."""
    if table in models:
        return models[table].event_time
    schema, name = table.split(".", 1)
    spec = C.TABLES.get(name) if schema == "raw" else None
    return spec.timestamp_columns[0] if spec is not None and len(spec.timestamp_columns) == 1 else None


def _event_times(model: SqlModel, models: dict[str, SqlModel]) -> dict[tuple[str, str], str]:
    return {u: event_time_of(".".join(u), models) for u in model.upstream}


def run_model(con, model: SqlModel, as_of, *, models: dict[str, SqlModel] | None = None,
              rebase: bool = False) -> tuple[int | None, inc.Plan | None]:
    """Build the model's table/view (incremental models: only the changed keys); (row count, plan). A view's rows
    are not counted: that would run it (``stg_orders`` then aggregated every order line: 1.2-1.6 s per refresh at
    8M lines), and the count is stale by the next delivery anyway."""
    set_as_of(con, as_of)
    body = model.sql.strip().rstrip(";")
    plan = None
    if model.materialized == "view":
        con.sql(f"CREATE OR REPLACE VIEW {model.table} AS\n{body}")
        return None, plan
    models = models if models is not None else {m.table: m for m in discover_models(model.path.parents[1])}
    if model.materialized == "incremental":
        version = build_version(model, models)
        windows = incremental_windows(model, models)
        sources = [inc.Source(".".join(u), t) for u, t in _event_times(model, models).items()]
        additive_model = model.strategy == "additive"
        plan = inc.plan_build(con, model=model.table, target=model.table, key=None if additive_model else model.unique_key,
                              sources=sources, code_version=version, as_of=as_of, rebase=rebase,
                              windows=windows, built=built_inputs(model.inputs, models), dated=inc.reads_as_of(model.sql))
        with transaction(con):
            if plan.incremental and additive_model:
                times = _event_times(model, models)
                delta = additive.restrict_to_new_rows(body, times, since_file_id=plan.since_file_id, until_file_id=plan.max_file_id,
                                                      since_as_of=plan.since_as_of, until_as_of=as_of)
                merged = additive.merge_new_rows(con, model.table, model.keys, additive.additive_merge(body, model.keys, times), delta)
                plan = replace(plan, changed=merged, reason=f"{merged:,} rows merged from the rows since the last build")
            elif plan.incremental:
                delta = inc.restrict_to_changed(body, set(model.upstream), model.unique_key)
                write_delta = delta_rows.replace_changed_groups if model.strategy == "delete+insert" else delta_rows.replace_changed
                write_delta(con, model.table, model.unique_key, delta, plan.max_file_id, model.owner_key)
            else:
                drop_other_kind(con, model.table, "BASE TABLE")  # a view over Spark's Parquet after --engine spark
                delta_rows.rebuild_recording_owners(con, model.table, model.owner_key,
                                                    lambda: con.sql(f"CREATE OR REPLACE TABLE {model.table} AS\n{body}"),
                                                    plan.max_file_id)
            inc.write_state(con, model.table, version, as_of, plan)
    else:
        watermark, _ = inc.built_watermark(con, inc.ledger_watermark(con), built_inputs(model.inputs, models))
        with transaction(con):  # its build state: how far the incremental models that read it may trust it
            delta_rows.rebuild_recording_owners(con, model.table, model.owner_key,
                                                lambda: con.sql(f"CREATE OR REPLACE TABLE {model.table} AS\n{body}"), watermark)
            inc.write_state(con, model.table, build_version(model, models), as_of, inc.Plan("full", "table model", watermark))
    return int(con.sql(f"SELECT count(*) FROM {model.table}").fetchall()[0][0]), plan


def _columns(con, table: str) -> dg.TableSchema:
    rows = con.sql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        params=table.split(".", 1),
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype) for name, dtype in rows])


def _materialize(context, con, model: SqlModel, as_of, models: dict[str, SqlModel] | None) -> dg.MaterializeResult:
    """Build one model on ``con`` and describe it for the UI."""
    rows, plan = run_model(con, model, as_of, models=models, rebase=inc.rebase_requested(context.run.tags))
    how = f"{plan.mode}: {plan.reason}" if plan else model.materialized
    context.log.info(f"{model.table}: {'a view' if rows is None else f'{rows} rows'} ({how}, as of {as_of})")
    build = {"build": how, "changed_keys": dg.MetadataValue.int(plan.changed)} if plan and plan.changed is not None else (
        {"build": how} if plan else {})
    return dg.MaterializeResult(
        asset_key=model.key,
        metadata={
            **build,
            **({} if rows is None else {"dagster/row_count": dg.MetadataValue.int(rows)}),
            "dagster/table_name": model.table,
            "dagster/column_schema": _columns(con, model.table),
            "materialized": model.materialized,
            "as_of": str(as_of),
            "sql": dg.MetadataValue.md(f"```sql\n{model.sql.strip()}\n```"),
            "path": dg.MetadataValue.path(str(model.path)),
        },
    )


def _materialize_on_spark(context, con, engine: Engine, settings: SegSettings, model: SqlModel,
                          models: dict[str, SqlModel] | None) -> dg.MaterializeResult:
    """Build a table model in full on Spark (spark/features.py) and expose it to DuckDB as a view."""
    from seg_assets.spark.features import build_model
    from seg_assets.spark.sql import model_spark_sql
    from seg_assets.spark.tables import duckdb_view

    as_of = settings.resolve_as_of(con)
    models = models if models is not None else {m.table: m for m in discover_models(model.path.parents[1])}
    folder = settings.paths.spark_table(model.table)
    built = {}

    def build() -> None:
        built["rows"] = build_model(engine.spark(), settings.paths, model, models, as_of)
        duckdb_view(con, model.table, folder)

    # the users an order left are recorded, as on DuckDB, for user_features' changed users; a later DuckDB build of
    # this table starts from a full one (forget_state)
    delta_rows.rebuild_outside_transaction(con, model.table, model.owner_key, build, inc.ledger_watermark(con),
                                           then=lambda: inc.forget_state(con, model.table))
    rows = built["rows"]
    context.log.info(f"{model.table}: {rows} rows (full build on Spark, as of {as_of}) -> {folder}")
    return dg.MaterializeResult(
        asset_key=model.key,
        metadata={
            "build": "full on Spark",
            "dagster/row_count": dg.MetadataValue.int(rows),
            "dagster/table_name": model.table,
            "dagster/column_schema": _columns(con, model.table),
            "materialized": model.materialized,
            "engine": "spark",
            "parquet": dg.MetadataValue.path(str(folder)),
            "as_of": str(as_of),
            "sql": dg.MetadataValue.md(f"```sql\n{model.sql.strip()}\n```"),
            "spark_sql": dg.MetadataValue.md(f"```sql\n{model_spark_sql(model, as_of)}\n```"),
            "path": dg.MetadataValue.path(str(model.path)),
        },
    )


@contextmanager
def _your_sql(model: SqlModel):
    """A model of a folder the user keeps (``SEG_SQL_DIR``) that DuckDB cannot parse, bind or run, or that Spark refuses
    as transpiled, is the user's SQL to fix: one line naming the file, not retried (it was "unexpected: please report
    it", retried twice; on Spark with 100 KB of JVM plans on the console, a helper's)."""
    try:
        yield
    except (duckdb.ParserException, duckdb.SyntaxException, duckdb.BinderException, duckdb.CatalogException,
            duckdb.ConversionException, duckdb.InvalidInputException, duckdb.OutOfRangeException, duckdb.TypeMismatchException,
            duckdb.InvalidTypeException, duckdb.NotImplementedException, duckdb.DependencyException) as exc:
        if Path(model.path).resolve().is_relative_to(DEFAULT_SQL_DIR):
            raise  # the project's own SQL: a bug to report, with its traceback
        first = str(exc).strip().splitlines()[0]
        raise input_failure(f"SQL model {model.path}: {first}: fix the model (DuckDB SQL) and refresh again") from None
    except Exception as exc:
        if not _refused_by_spark(exc) or Path(model.path).resolve().is_relative_to(DEFAULT_SQL_DIR):
            raise
        if isinstance(exc, SparkSqlError):  # what Spark would compute otherwise, found in the step (spark/features.py)
            raise input_failure(f"SQL model {exc}") from None
        first = str(exc).strip().splitlines()[0]
        raise input_failure(f"SQL model {model.path}: Spark cannot run it as transpiled: {first}: rewrite it, or "
                            + explicit_form_advice(model.path)) from None


def _refused_by_spark(exc: BaseException) -> bool:
    """Whether Spark refused the query (parse or analysis: an unknown signature, a construct Spark does not allow): the
    model's SQL to fix, as DuckDB's own refusals are. Checked without importing pyspark on the DuckDB engine."""
    if isinstance(exc, SparkSqlError):
        return True
    errors = sys.modules.get("pyspark.errors")
    return errors is not None and isinstance(exc, errors.AnalysisException)


def build_sql_asset(model: SqlModel, models: dict[str, SqlModel] | None = None) -> dg.AssetsDefinition:
    @dg.asset(
        retry_policy=TRANSIENT_RETRY,
        key=model.key,
        deps=[dg.AssetKey(list(t)) for t in model.upstream],
        group_name=GROUP,
        description=model.description,
        code_version=model.code_version,
        kinds={"duckdb", "sql", "spark"},
        pool="duckdb",
    )
    def _sql_model(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings, engine: Engine):
        with duckdb.get_connection() as con, _your_sql(model):
            if engine.is_spark:
                return _materialize_on_spark(context, con, engine, settings, model, models)
            return _materialize(context, con, model, settings.resolve_as_of(con), models)

    return _sql_model


def _in_dependency_order(views: list[SqlModel]) -> list[SqlModel]:
    """Views before the views that read them (DuckDB binds a view when it is made): in path order, a mart over a
    staging view failed every refresh (a tester's), and Dagster refuses outputs yielded before their inputs."""
    by_table = {m.table: m for m in views}
    graph = {m.table: [t for t in m.inputs if t in by_table] for m in views}
    return [by_table[t] for t in TopologicalSorter(graph).static_order()]


def build_view_assets(views: list[SqlModel]) -> dg.AssetsDefinition:
    """All ``view`` models as one multi-asset: one step creates them all (a view holds no data, and every
    step costs about 70 ms of Dagster work). Each view is still its own asset, and can be built alone."""
    @dg.multi_asset(
        retry_policy=TRANSIENT_RETRY,
        specs=[dg.AssetSpec(m.key, deps=[dg.AssetKey(list(t)) for t in m.upstream], group_name=GROUP,
                            description=m.description, code_version=m.code_version, kinds={"duckdb", "sql"}, skippable=True)
               for m in views],
        name=f"{views[0].schema}_views" if len({m.schema for m in views}) == 1 else "sql_views",
        can_subset=True, pool="duckdb",
    )
    def _views(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings):
        with duckdb.get_connection() as con:
            as_of = settings.resolve_as_of(con)
            for model in _in_dependency_order(views):
                if model.key in context.selected_asset_keys:
                    with _your_sql(model):
                        yield _materialize(context, con, model, as_of, None)

    return _views


def sql_assets(root: Path | None = None, models: list[SqlModel] | None = None) -> list[dg.AssetsDefinition]:
    """The assets of the SQL models under ``root`` (or of ``models``, when the caller has read them)."""
    models = discover_models(root) if models is None else models
    by_table = {m.table: m for m in models}
    for model in models:
        incremental_windows(model, by_table)
    views = [m for m in models if m.materialized == "view"]
    return ([build_view_assets(views)] if views else []) + [
        build_sql_asset(m, models=by_table) for m in models if m.materialized != "view"]
