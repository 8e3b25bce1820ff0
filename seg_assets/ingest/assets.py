"""The ingestion asset: landing files -> raw.<contract table> / raw.rejects / meta.ingest_ledger.

One ``multi_asset`` (a single DuckDB writer, ``pool="duckdb"``) reads the sources (sources.yaml, else one
per contract folder), runs :func:`loader.ingest_landing` and reports, per output, what this run added:
accepted / updated / duplicate / rejected / filtered rows, the files it read (with their ledger rows), rejects by
rule, the extra columns it saw, and for clicks the rows per event name and funnel stage. A sources file
that cannot be used stops the step before any file is read, with one line saying what to fix.
"""

from datetime import UTC, datetime

import dagster as dg

from seg_assets.artifacts import preload_model_libraries
from seg_assets.automation.limits import check_limits
from seg_assets.automation.run_config import SettingsError
from seg_assets.errors import input_failure
from seg_assets.ingest import contract as C
from seg_assets.ingest import events, ledger, loader
from seg_assets.ingest.source_config import SourceConfigError, check_engine, load_sources
from seg_assets.ingest.sources import taken_files_metadata
from seg_assets.ingest.staging import LATEST_WITHOUT_ID
from seg_assets.ingest.writing import held_by_refused_files, lines_read_from
from seg_assets.markdown import table as md_table
from seg_assets.publish.bi import undo_unfinished_switch
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.spark.session import Engine
from seg_assets.warehouse import row_count, table_exists

GROUP = "ingest"
RAW_KEYS: dict[str, dg.AssetKey] = {name: dg.AssetKey(["raw", name]) for name in C.TABLES}
REJECTS_KEY = dg.AssetKey(["raw", "rejects"])
LEDGER_KEY = dg.AssetKey(["meta", "ingest_ledger"])
WITHHELD_KEY = dg.AssetKey(C.WITHHELD_TABLE.split("."))
MAX_TABLE_ROWS = 200  # rows of a metadata table shown in the UI


def _schema(columns) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, typ, description=desc) for name, typ, desc in columns])


def _raw_schema(spec: C.TableSpec) -> dg.TableSchema:
    cols = [(c.name, c.sql_type, c.description) for c in spec.columns]
    cols += [("_file_id", "BIGINT", "meta.ingest_ledger.file_id of the file the row came from."),
             ("_row", "BIGINT", "1-based data row of that file.")]
    return _schema(cols)


def _spec(key: dg.AssetKey, table: str, description: str, schema: dg.TableSchema) -> dg.AssetSpec:
    return dg.AssetSpec(
        key,
        description=description,
        group_name=GROUP,
        kinds={"duckdb"},
        metadata={"dagster/table_name": table, "dagster/column_schema": schema},
    )


SPECS = [
    *(_spec(RAW_KEYS[name], spec.qualified, spec.description, _raw_schema(spec)) for name, spec in C.TABLES.items()),
    _spec(REJECTS_KEY, C.REJECTS_TABLE,
          "Rows that broke the data contract, with file, row number, rule, readable reason and the raw values "
          "(e-mails hashed). sum(meta.ingest_ledger.rejected) = count(*).", _schema(C.REJECTS_COLUMNS)),
    _spec(LEDGER_KEY, C.LEDGER_TABLE,
          "One row per landing file read (keyed by source and content sha256; a source with keep: latest reads the same "
          "bytes again when delivered again): status and delivered = accepted + updated + duplicate + rejected + filtered.",
          _schema(C.LEDGER_COLUMNS)),
    _spec(WITHHELD_KEY, C.WITHHELD_TABLE,
          "Order ids delivered as order rows but not taken in (left out by a source's where, or rejected): their order "
          "lines are not made an order of their own by staging.line_orders.", _schema(C.WITHHELD_COLUMNS)),
]

_FILE_COLUMNS = ("file_id", "source", "table_name", "file_name", "status", *ledger.ROW_COUNTS, "extra_columns", "message")
_INT_COLUMNS = ("file_id", *ledger.ROW_COUNTS)


def _files_table(files: list[ledger.FileOutcome]) -> dg.MetadataValue:
    schema = dg.TableSchema(columns=[
        dg.TableColumn(c, "int" if c in _INT_COLUMNS else "string")
        for c in _FILE_COLUMNS
    ])
    records = []
    for f in files[:MAX_TABLE_ROWS]:
        values = {c: getattr(f, c) for c in _FILE_COLUMNS}
        values["extra_columns"] = ", ".join(f.extra_columns)
        values["message"] = f.message or ""
        records.append(dg.TableRecord(values))
    return dg.MetadataValue.table(records, schema)


def _rejects_by(con, column: str, run_id: str, table: str | None = None, limit: int = 50) -> dict[str, int]:
    where, params = "run_id = ?", [run_id]
    if table is not None:
        where, params = where + " AND table_name = ?", params + [table]
    rows = con.sql(
        f"SELECT {column}, count(*) AS n FROM {C.REJECTS_TABLE} WHERE {where} GROUP BY 1 ORDER BY n DESC, 1 LIMIT {limit}",
        params=params,
    ).fetchall()
    return {str(k): int(n) for k, n in rows}


def _reasons_markdown(con, run_id: str, limit: int = 20) -> str:
    """This run's rejects per table and rule, with the first row's reason as the example (as the CLI's summary shows
    them): a reason quotes the value it refused, so counting by reason listed 11 future order times of one rule as 11
    reasons of 1 row each (a session-34 tester's)."""
    rows = con.sql(
        f"SELECT table_name, rule, count(*) AS n, arg_min(reason, (file_id, row_number)) FROM {C.REJECTS_TABLE} "
        f"WHERE run_id = ? GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT {limit}", params=[run_id]).fetchall()
    if not rows:
        return "No rejects in this run."
    return md_table(["table", "rule", "rows", "example"], [(t, r, int(n), e) for t, r, n, e in rows])


def _counts(report: ledger.IngestReport, table: str | None) -> dict:
    t = report.totals(table)
    return {
        "files_this_run": dg.MetadataValue.int(t["files"]),
        "files_ingested": dg.MetadataValue.int(t["files_ingested"]),
        "files_duplicate": dg.MetadataValue.int(t["files_duplicate_file"]),
        "files_rejected": dg.MetadataValue.int(t["files_rejected_file"]),
        "files_failed": dg.MetadataValue.int(t["files_failed"]),
        **{f"rows_{k}": dg.MetadataValue.int(t[k]) for k in ledger.ROW_COUNTS},
    }


def orders_of_several_users(con, file_ids: list[int]) -> tuple[int, str | None]:
    """(orders, the first of them) among the orders of these files' order lines whose lines name more than one user:
    staging.line_orders gives such an order to the smallest id (two shops whose invoice numbers overlap: one shop's
    customers vanished and the other's spend doubled without a word, a tester's)."""
    if not file_ids:
        return 0, None
    ids = ", ".join(map(str, file_ids))
    (older,) = con.sql(f"SELECT count(*) FROM raw.order_items WHERE _file_id NOT IN ({ids})").fetchall()[0]
    # the lines of these files' orders; every line when they are all new (the semi-join doubled a cold load's cost:
    # 1.3 s against 0.6 s for 8M lines)
    lines = (f"raw.order_items WHERE order_id IN (SELECT order_id FROM raw.order_items WHERE _file_id IN ({ids}))"
             if older else "raw.order_items")
    # an order delivered as an order row (taken in or withheld) is no order of its lines: staging.line_orders leaves it
    # out (baskets/counts.py still reads its lines, as a basket)
    rows = f"WHERE {C.without_order_row_sql('order_id')}" if table_exists(con, "raw.orders") else ""
    return con.sql(f"""SELECT count(*), min(order_id) FROM (SELECT order_id FROM {lines}
        GROUP BY order_id HAVING min(user_id) <> max(user_id)) {rows}""").fetchall()[0]


def _events_table(con, report: ledger.IngestReport, sources) -> tuple[dict, dict[tuple[str, str], int]]:
    """(metadata: rows per event name, funnel stage and the rule that gave it among this run's new clicks, an
    unmapped name showing as 'other'; rows per (name, stage) of names staged by their words, other than 'other')."""
    files = {f.file_id: f.source for f in report.for_table("clicks") if f.status == C.STATUS_INGESTED}
    if not files:
        return {}, {}
    declared = {s.name: events.check_overrides(s.event_types) for s in sources}
    rows = con.sql(
        f"SELECT _file_id, event_type, funnel_stage::VARCHAR, count(*) FROM raw.clicks WHERE _file_id IN "
        f"({', '.join(map(str, files))}) GROUP BY ALL").fetchall()
    schema = dg.TableSchema(columns=[dg.TableColumn("event_type", "string"), dg.TableColumn("funnel_stage", "string"),
                                     dg.TableColumn("stage_from", "string"), dg.TableColumn("rows", "int")])
    stages: dict[str, int] = {}
    names: dict[tuple[str, str, str], int] = {}  # an e-mail in an event name (a tracking bug) is not shown
    for file_id, name, stage, n in rows:
        stages[stage] = stages.get(stage, 0) + int(n)
        key = (ledger.redact(name), stage, events.stage_from(name, declared.get(files[file_id])))
        names[key] = names.get(key, 0) + int(n)
    top = sorted(names.items(), key=lambda item: (-item[1], item[0]))
    guessed = {(e, s): n for (e, s, rule), n in top if rule == events.WORDS and s != events.OTHER}
    return {
        "events_by_name": dg.MetadataValue.table([dg.TableRecord({"event_type": e, "funnel_stage": s, "stage_from": r,
                                                                  "rows": n}) for (e, s, r), n in top[:200]], schema),
        "rows_by_funnel_stage": dg.MetadataValue.json(stages),
    }, guessed


def build_metadata(con, report: ledger.IngestReport, sources) -> tuple[dict[dg.AssetKey, dict], dict[tuple[str, str], int]]:
    """Metadata of each output for one ingest report (queried after the load, on the same connection), and the event
    names staged by their words (_events_table)."""
    out: dict[dg.AssetKey, dict] = {}
    clicks, guessed = _events_table(con, report, sources)
    for name, spec in C.TABLES.items():
        total = row_count(con, spec.qualified)
        out[RAW_KEYS[name]] = {
            "dagster/row_count": dg.MetadataValue.int(total),
            "total_rows": dg.MetadataValue.int(total),
            **_counts(report, name),
            "files": _files_table(report.for_table(name)),
            "rejects_by_rule": dg.MetadataValue.json(_rejects_by(con, "rule", report.run_id, name)),
            "extra_columns_seen": dg.MetadataValue.json(report.extra_columns(name)),
            **(clicks if name == "clicks" else {}),
        }
    this_run = [f.file_id for f in report.for_table(C.WITHHELD_FROM)] or [0]
    out[WITHHELD_KEY] = {
        "dagster/row_count": dg.MetadataValue.int(row_count(con, C.WITHHELD_TABLE)),
        "withheld_this_run": dg.MetadataValue.int(con.sql(
            f"SELECT count(*) FROM {C.WITHHELD_TABLE} WHERE _file_id IN ({', '.join(map(str, this_run))})").fetchall()[0][0]),
    }
    total_rejects = row_count(con, C.REJECTS_TABLE)
    t = report.totals()
    read = sum(f.delivered for f in report.files if f.status != C.STATUS_DUPLICATE_FILE)
    out[REJECTS_KEY] = {
        "dagster/row_count": dg.MetadataValue.int(total_rejects),
        "rejected_this_run": dg.MetadataValue.int(t["rejected"]),
        "reject_ratio_this_run": dg.MetadataValue.float(t["rejected"] / read if read else 0.0),
        "rejects_by_table": dg.MetadataValue.json(_rejects_by(con, "table_name", report.run_id)),
        "rejects_by_rule": dg.MetadataValue.json(_rejects_by(con, "rule", report.run_id)),
        "top_reasons": dg.MetadataValue.md(_reasons_markdown(con, report.run_id)),
    }
    failed = {f.file_name: f.message or "" for f in report.files if f.status == C.STATUS_FAILED}
    out[LEDGER_KEY] = {
        "dagster/row_count": dg.MetadataValue.int(row_count(con, C.LEDGER_TABLE)),
        **_counts(report, None),
        "files": _files_table(report.files),
        "files_skipped_already_ingested": dg.MetadataValue.int(len(report.skipped)),
        "ignored_files": dg.MetadataValue.json(report.ignored),
        "failed_files": dg.MetadataValue.json(failed),
        "extra_columns_seen": dg.MetadataValue.json({n: report.extra_columns(n) for n in C.TABLES if report.extra_columns(n)}),
    }
    return out, guessed


def addresses_taken_in_clear(con) -> int:
    """Users whose id holds an '@' in the feature table: taken in before such ids were stored as their sha256
    (contract.user_id_sql). One row per user, so a cheap look (the raw tables are the events)."""
    if not table_exists(con, "features.user_features"):
        return 0
    return con.sql(f"SELECT count(*) FROM features.user_features WHERE {C.has_at_sign_sql('user_id')}").fetchall()[0][0]


@dg.multi_asset(
    retry_policy=TRANSIENT_RETRY,
    name="ingest_landing",
    specs=SPECS,
    pool="duckdb",
    can_subset=False,
    description="Ingest new landing files of every source (sources.yaml) into raw.* with rejects and a ledger keyed by "
    "source and content.",
)
def ingest_landing(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings, engine: Engine):
    now = datetime.now(UTC)  # the future rule is against real time, not the data's as-of
    min_ts, future_limit = settings.timestamp_bounds(now)
    landing = settings.paths.landing
    try:
        check_limits(context.job_def, context.run.run_config)  # a run launched from the UI: its settings, first
        sources = load_sources(settings.paths.root)
        check_engine(sources, engine.is_spark)
    except (SourceConfigError, SettingsError) as exc:  # configuration, not a transient fault: no retry, nothing ingested
        raise input_failure(str(exc)) from None
    preload_model_libraries()  # the model steps unpickle scikit-learn objects: import it beside DuckDB's work
    from seg_assets.spark.ingest import (  # (Spark tasks import it)
        kept_engine_message,
        raw_as_parquet_views,
        spark_ingested,
        spark_stager,
    )

    with duckdb.get_connection() as con:
        if undone := undo_unfinished_switch(settings.paths.bi):  # under the write lock: no publication runs now
            context.log.warning(f"BI: {len(undone)} table file(s) of a publication killed during its switch removed; the "
                                "views read the last finished publication again")
        stage_files = None
        if engine.is_spark:  # files read and validated in Spark tasks, raw tables as Parquet (spark/ingest.py)
            spark = engine.spark()  # first: a Spark that cannot start (an old Java, a cluster not reached) leaves the
            # raw tables DuckDB's (made views first, a fresh root was then refused to --engine duckdb for good, h2)
            raw_as_parquet_views(con, settings.paths)
            stage_files = spark_stager(spark, settings.paths)
        elif spark_ingested(con):
            raise input_failure(kept_engine_message(settings.paths.root))
        if clear := addresses_taken_in_clear(con):
            raise input_failure(f"{clear} user id(s) in features.user_features hold an '@' (e-mail addresses), taken in "
                                "before such ids were stored as their sha256: new files would count those users twice. Rebuild "
                                f"from landing/: move {settings.paths.warehouse.name} and bi/ aside, then refresh")
        report = loader.ingest_landing(
            con, landing, sources=sources, run_id=context.run_id, now=now, clock_skew=future_limit - now.replace(tzinfo=None),
            min_ts=min_ts, settle_seconds=settings.settle_seconds, max_settle_wait=settings.max_settle_wait_seconds,
            stage_files=stage_files,
        )
        metadata, guessed = build_metadata(con, report, sources)
        if engine.is_spark:  # staging.line_orders reads it on Spark too
            from seg_assets.spark.tables import export_duckdb_table

            export_duckdb_table(con, C.WITHHELD_TABLE, settings.paths)
        kept_old = ledger.remapped(con, sources, context.run_id)
        shared, first = orders_of_several_users(
            con, [f.file_id for f in report.for_table("order_items") if f.status == C.STATUS_INGESTED])
        held, refused = held_by_refused_files(con)
        # an orders file refused whole beside lines of other files: their orders are made of the lines meanwhile
        refused_orders = {f.file_name for f in report.for_table(C.WITHHELD_FROM)
                          if f.status in (C.STATUS_REJECTED_FILE, C.STATUS_FAILED)}  # read only when there are some
        apart = sorted(refused_orders - lines_read_from(con)) if refused_orders and row_count(con, "raw.order_items") else []
    taken = {f.file_name: f.size_bytes for f in report.files if f.status != C.STATUS_FAILED}
    metadata[LEDGER_KEY].update(taken_files_metadata(landing, sources, taken))
    metadata[LEDGER_KEY]["files_still_settling"] = dg.MetadataValue.json(report.unsettled)
    t = report.totals()
    context.log.info(
        f"ingest: {t['files']} new file(s) from {landing} ({len(report.skipped)} already ingested, "
        f"{len(report.ignored)} ignored): " + ", ".join(f"{t[k]} {k}" for k in ledger.ROW_COUNTS[1:]) + " rows"
    )
    for name, reason in [(n, r) for n, r in report.ignored.items() if r][:10]:
        context.log.warning(f"ingest: landing/{name} not read: {reason}")
    if report.unsettled:
        context.log.warning(f"ingest: {len(report.unsettled)} file(s) left to the next run: "
                            + "; ".join(f"{path}: {why}" for path, why in list(report.unsettled.items())[:5]))
    for f in report.files:
        if f.status == C.STATUS_FAILED:
            context.log.warning(f"ingest: {f.file_name} failed: {f.message}")
        elif f.status == C.STATUS_REJECTED_FILE:
            context.log.warning(f"ingest: {f.message}")
    if shared:
        context.log.warning(f"ingest: {shared} order(s) have order lines of more than one user (first: order {first!r}): "
                            "each is counted as the smallest user id's order; if two shops' or systems' order ids "
                            "overlap, map order_id to a unique one in sources.yaml (e.g. store || '-' || InvoiceNo)")
    if held:
        context.log.warning(f"ingest: {held} order(s) of order lines are held, not counted: the orders source refused the "
                            f"file their lines came from (first: {refused}); fix its mapping (its failure above says "
                            "how) and they count with their order rows at the next refresh")
    if apart:
        context.log.warning(f"ingest: {len(apart)} orders file(s) refused whole (first: {apart[0]}): order lines of "
                            "their orders delivered in other files are counted as orders of their own (completed, "
                            "valued from the lines) until the file is read; fix it (its message above) and refresh")
    if guessed:
        context.log.warning("ingest: event name(s) given a funnel stage by their words, a guess (neither built in nor in "
                            "the source's event_types): " + ", ".join(f"{e} -> {s} ({n:,} rows)" for (e, s), n in
                                                                      list(guessed.items())[:10])
                            + "; if one is wrong (a thank-you page beside a purchase event counts each order twice), "
                            "declare it under the source's event_types in sources.yaml, e.g. {name: other}")
    for name in sorted({f.source for f in report.files if LATEST_WITHOUT_ID in (f.message or "")}):
        context.log.warning(f"ingest: source {name!r} says keep: latest, but its files carry no line id (it is derived "
                            "from each line's values): a changed line (a refund, a cancellation) is taken in beside the "
                            "old one, which keeps counting; map line_id to the export's line id column in sources.yaml")
    for name, files in kept_old.items():
        context.log.warning(f"ingest: sources.yaml's mapping of source {name!r} changed since {files} file(s) were taken "
                            "in: their rows keep the mapping they were read with (a file is read once); to read them "
                            f"with this one, rebuild from landing/: move {settings.paths.warehouse.name} and bi/ aside, "
                            "then refresh")
    for spec in SPECS:
        yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata[spec.key])
