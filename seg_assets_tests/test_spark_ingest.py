"""Ingestion with the Spark engine against the DuckDB loader on the same landing files, over two runs: the same
ledger (accepted, duplicate, rejected, filtered per file), the same raw rows and the same rejects."""

import shutil
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from seg_assets.demo.generate import generate
from seg_assets.ingest import contract as C
from seg_assets.ingest.loader import ingest_landing
from seg_assets.settings import data_paths
from seg_assets.spark.ingest import raw_as_parquet_views, spark_ingested, spark_stager

NOW = datetime(2026, 11, 1, tzinfo=UTC)
LEDGER = ("SELECT file_id, source, file_name, status, delivered, accepted, duplicate, rejected, filtered, message "
          "FROM meta.ingest_ledger ORDER BY file_id")


def _ingest(root, engine, spark, run_id):
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        stager = None
        if engine == "spark":
            raw_as_parquet_views(con, data_paths(root))
            stager = spark_stager(spark, data_paths(root))
        ingest_landing(con, root / "landing", run_id=run_id, now=NOW, clock_skew=timedelta(minutes=60),
                       min_ts=datetime(1990, 1, 1), stage_files=stager)
    finally:
        con.close()


def _rows(root, sql):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(sql).fetchall()


@pytest.fixture(scope="module")
def landings(tmp_path_factory):
    base = tmp_path_factory.mktemp("spark_ingest")
    generate(base / "first", users=400, days=30, seed=3, fmt="csv", fault_rate=0.05)
    return base


def test_two_runs_give_the_same_ledger_rows_and_rejects(landings, spark, tmp_path):
    # under paths Spark and DuckDB could misread: a Hive-like folder, glob characters, a quote (test_odd_paths.py)
    roots = {e: tmp_path / "env=prod" / f"shop[eu] o'brien {e}" for e in ("duckdb", "spark")}
    for engine, root in roots.items():
        shutil.copytree(landings / "first" / "landing", root / "landing")
        (root / "sources.yaml").write_text("sources:\n  orders: {table: orders, where: \"status <> 'cancelled'\"}\n")
        bad = "order_id,order_ts,amount,items,status\nb1,2026-10-01T00:00:00Z,5,1,completed\nb2,2026-10-01T00:00:00Z,6,1,completed\n"
        for name in ("zz_bad.csv", "zz_bad_copy.csv"):  # no user_id: rejected whole; the copy too, with its own rejects
            (root / "landing" / "orders" / name).write_text(bad)
        misnamed = tmp_path / "misnamed.parquet"  # Parquet named .csv, twice: each fails saying so (Spark named the
        duckdb.sql(f"COPY (SELECT 'm1' AS order_id) TO '{misnamed}' (FORMAT parquet)")  # copy "same content as")
        for name in ("zz_misnamed.csv", "zz_misnamed_copy.csv"):
            shutil.copy(misnamed, root / "landing" / "orders" / name)
        _ingest(root, engine, spark, "run1")
        # Second run: a re-delivery under a new name, and a file whose rows are partly known.
        orders = sorted((root / "landing" / "orders").glob("*.csv"))[0]
        shutil.copy(orders, orders.with_name("again_" + orders.name))
        lines = orders.read_text().splitlines()
        (root / "landing" / "orders" / "zz_overlap.csv").write_text("\n".join([lines[0], *lines[1:40]]) + "\n")
        header, first = lines[0].split(","), lines[1].split(",")
        first[header.index("user_id")] = "someone_else"  # an id taken in, repeated with other values: named on both
        (root / "landing" / "orders" / "zz_reused_id.csv").write_text("\n".join([lines[0], ",".join(first)]) + "\n")
        _ingest(root, engine, spark, "run2")
    duck, spark_rows = (_rows(roots[e], LEDGER) for e in ("duckdb", "spark"))
    assert duck == spark_rows
    statuses = {row[3] for row in duck}
    assert {C.STATUS_INGESTED, C.STATUS_DUPLICATE_FILE} <= statuses
    assert [(r[2], r[3], r[7]) for r in duck if "zz_bad" in r[2]] == [("orders/zz_bad.csv", C.STATUS_REJECTED_FILE, 2),
                                                                    ("orders/zz_bad_copy.csv", C.STATUS_REJECTED_FILE, 2)]
    assert [(r[3], "a Parquet file named as CSV" in r[9]) for r in duck if "zz_misnamed" in r[2]] == [(C.STATUS_FAILED, True)] * 2
    assert sum(r[7] for r in duck) > 0 and sum(r[6] for r in duck) > 0  # rows rejected and rows duplicate
    [reused] = [r[9] for r in duck if r[2] == "orders/zz_reused_id.csv"]
    assert reused.endswith("; 1 row(s) repeat an id taken in with other values: the first taken in is kept (if they are "
                           "changes, declare keep: latest for its source to take the newest)"), reused
    for spec in C.TABLES.values():
        sql = f"SELECT * FROM {spec.qualified} ORDER BY _file_id, _row"
        assert _rows(roots["duckdb"], sql) == _rows(roots["spark"], sql), spec.name
    rejects = "SELECT table_name, file_id, file_name, row_number, rule, reason, raw_values FROM raw.rejects ORDER BY 2, 4"
    assert _rows(roots["duckdb"], rejects) == _rows(roots["spark"], rejects)
    withheld = f"SELECT rule, count(*), min(order_id) FROM {C.WITHHELD_TABLE} GROUP BY 1 ORDER BY 1"
    kept = _rows(roots["duckdb"], withheld)  # order rows left out by the where, or rejected, keep their ids alike
    assert kept == _rows(roots["spark"], withheld) and "left_out:where" in {r[0] for r in kept} and len(kept) > 1, kept
    with duckdb.connect(str(roots["spark"] / "warehouse.duckdb"), read_only=True) as con:
        assert spark_ingested(con)


def test_a_run_killed_between_two_tables_commits_leaves_no_rows_of_the_uncommitted_one(landings, spark, tmp_path):
    """A run commits table by table: killed after committing orders and before customers' ledger rows, it left the
    customers' Parquet in place, and the next run counted those files' rows as duplicates (a tester's). Simulated by
    removing the customers' ledger rows after a run: the next run reads them as the first one did."""
    roots = {e: tmp_path / e for e in ("duckdb", "spark")}
    for engine, root in roots.items():
        shutil.copytree(landings / "first" / "landing", root / "landing")
        _ingest(root, engine, spark, "run1")
    with duckdb.connect(str(roots["spark"] / "warehouse.duckdb")) as con:
        assert con.execute(f"DELETE FROM {C.LEDGER_TABLE} WHERE table_name = 'customers'").fetchall()[0][0] > 0
        con.execute(f"DELETE FROM {C.REJECTS_TABLE} WHERE table_name = 'customers'")
    _ingest(roots["spark"], "spark", spark, "run2")
    counts = ("SELECT file_name, status, delivered, accepted, duplicate, rejected, filtered FROM meta.ingest_ledger "
              "ORDER BY file_name")
    assert _rows(roots["duckdb"], counts) == _rows(roots["spark"], counts)
    for spec in C.TABLES.values():
        sql = f"SELECT * EXCLUDE (_file_id) FROM {spec.qualified} ORDER BY ALL"
        assert _rows(roots["duckdb"], sql) == _rows(roots["spark"], sql), spec.name


def test_a_root_ingested_by_duckdb_moves_to_spark_without_losing_a_row(landings, spark, tmp_path):
    """DuckDB's raw rows move into the Parquet folders; the next files dedupe against them as before."""
    roots = {e: tmp_path / e for e in ("duckdb", "mixed")}
    for name, root in roots.items():
        shutil.copytree(landings / "first" / "landing", root / "landing")
        _ingest(root, "duckdb", spark, "run1")
        orders = sorted((root / "landing" / "orders").glob("*.csv"))[0]
        lines = orders.read_text().splitlines()
        (root / "landing" / "orders" / "zz_overlap.csv").write_text("\n".join([lines[0], *lines[1:40]]) + "\n")
        _ingest(root, "duckdb" if name == "duckdb" else "spark", spark, "run2")
    assert _rows(roots["duckdb"], LEDGER) == _rows(roots["mixed"], LEDGER)
    for spec in C.TABLES.values():
        sql = f"SELECT * FROM {spec.qualified} ORDER BY _file_id, _row"
        assert _rows(roots["duckdb"], sql) == _rows(roots["mixed"], sql), spec.name
    assert (roots["mixed"] / "spark" / "raw" / "orders" / "duckdb_engine" / "rows.parquet").exists()


def test_a_gzip_still_being_written_waits_and_a_windows_export_reads_the_same_on_both_engines(spark, tmp_path):
    """The landing rule on Spark as on DuckDB: a .csv.gz cut short while still being written is left to the next run
    (no ledger row), and its copy in the same run with it; a ';'-separated Windows-1252 source gives the same rows."""
    import gzip

    text = "order_id;user_id;order_ts;amount;items;category;status\r\n" + "".join(
        f"o{i};Zoë{i % 7};2026-10-01T10:00:00Z;{i % 9 + 1};1;Küche „{i % 3}“ €;completed\r\n" for i in range(3000))
    whole = gzip.compress(text.encode("cp1252"))
    roots = {e: tmp_path / e for e in ("duckdb", "spark")}
    for engine, root in roots.items():
        (root / "sources.yaml").parent.mkdir(parents=True)
        (root / "sources.yaml").write_text("sources:\n  erp:\n    table: orders\n    csv: {delimiter: ';', encoding: cp1252}\n")
        folder = root / "landing" / "erp"
        folder.mkdir(parents=True)
        (folder / "a.csv").write_bytes(text.encode("cp1252"))
        for name in ("b.csv.gz", "b_copy.csv.gz"):
            (folder / name).write_bytes(whole[: len(whole) // 2])  # the writer has not finished
        _ingest(root, engine, spark, "run1")
        assert [r[2:5] for r in _rows(root, LEDGER)] == [("erp/a.csv", "ingested", 3000)], engine
        for name in ("b.csv.gz", "b_copy.csv.gz"):
            (folder / name).write_bytes(whole)  # finished: read whole, all rows known from a.csv
        _ingest(root, engine, spark, "run2")
    duck, spark_rows = (_rows(roots[e], LEDGER) for e in ("duckdb", "spark"))
    assert duck == spark_rows and [(r[2], r[3], r[6]) for r in duck] == [
        ("erp/a.csv", "ingested", 0), ("erp/b.csv.gz", "ingested", 3000), ("erp/b_copy.csv.gz", "duplicate_file", 3000)]
    sql = "SELECT order_id, user_id, category FROM raw.orders ORDER BY order_id"
    assert _rows(roots["duckdb"], sql) == _rows(roots["spark"], sql)
    assert _rows(roots["duckdb"], sql)[0] == ("o0", "Zoë0", "Küche „0“ €")


def test_a_misnamed_twin_does_not_fail_the_well_named_file_on_spark(spark, tmp_path):
    """A Parquet file landed again as .csv (and renamed, as its error says, but the .csv left behind): on Spark the
    same bytes were read once and the well-named file failed with its twin; its rows were lost for good."""
    import polars as pl

    frame = pl.DataFrame({"order_id": ["o1", "o2"], "user_id": ["u1", "u2"], "order_ts": [datetime(2026, 10, 1)] * 2,
                          "amount": [5.0, 6.0], "items": [1, 1], "status": ["completed"] * 2})
    roots = {e: tmp_path / e for e in ("duckdb", "spark")}
    for engine, root in roots.items():
        folder = root / "landing" / "orders"
        folder.mkdir(parents=True)
        frame.write_parquet(folder / "b_orders.parquet")
        shutil.copy(folder / "b_orders.parquet", folder / "a_orders.csv")
        _ingest(root, engine, spark, "run1")
    duck, spark_rows = (_rows(roots[e], LEDGER) for e in ("duckdb", "spark"))
    assert [r[2:4] for r in spark_rows] == [("orders/a_orders.csv", "failed"), ("orders/b_orders.parquet", "ingested")]
    assert [r[2:6] for r in duck] == [r[2:6] for r in spark_rows]
    assert _rows(roots["spark"], "SELECT order_id FROM raw.orders ORDER BY 1") == [("o1",), ("o2",)]


def test_a_killed_spark_write_and_a_half_committed_run_folder_lose_no_committed_row(tmp_path):
    """What a killed Spark run leaves (no Spark needed to lay it out): a run folder written in two rounds, the first
    committed (files 1 and 2 in the ledger) and the second not (file 5), lost the first round's rows with the second's;
    a job killed mid-write leaves part files without a footer under ``_temporary``, which failed every later refresh
    with a traceback (a reviewer's)."""
    from seg_assets.ingest import loader

    paths = data_paths(tmp_path)
    spec = C.TABLES["orders"]
    with duckdb.connect(str(paths.warehouse)) as con:
        loader.ensure_tables(con)
        for fid in (1, 2):
            con.execute(f"""INSERT INTO {C.LEDGER_TABLE} (file_id, source, table_name, file_name, file_format,
                content_sha256, size_bytes, status, delivered, accepted, duplicate, rejected, filtered, extra_columns,
                run_id, ingested_at, updated) VALUES (?, 'orders', 'orders', ?, 'csv', ?, 10, 'ingested', 3, 3, 0, 0, 0,
                [], 'R', now(), 0)""", [fid, f"orders/f{fid}.csv", f"sha{fid}"])
        columns = con.sql(f"DESCRIBE {spec.qualified}").fetchall()

        def part(folder, file_ids, name):
            select = ", ".join("i::INTEGER AS _file_id" if c == "_file_id" else "r::BIGINT AS _row" if c == "_row" else
                               f"'o' || i || '-' || r AS {c}" if c == spec.id_column else f"NULL::{t} AS {c}"
                               for c, t, *_ in columns)
            folder.mkdir(parents=True, exist_ok=True)
            con.sql(f"""COPY (SELECT {select} FROM unnest({list(file_ids)}) u(i), range(3) t(r))
                        TO '{folder / name}' (FORMAT parquet)""")

        run = paths.spark_table(spec.qualified) / "run_R"
        part(run, (1, 2), "part-00000-a.snappy.parquet")  # round 1, committed
        part(run, (5,), "part-00000-b.snappy.parquet")  # round 2, its ledger commit never happened
        for folder in (run, paths.spark_table(spec.qualified) / "run_killed"):  # a job killed mid-write
            attempt = folder / "_temporary" / "0" / "_temporary" / "attempt_1"
            attempt.mkdir(parents=True)
            (attempt / "part-00000-c.snappy.parquet").write_bytes(b"PAR1" + b"\0" * 100)  # no footer
            (attempt / "part-00001-c.snappy.parquet").write_bytes(b"")
        raw_as_parquet_views(con, paths)
        kept = dict(con.sql(f"SELECT _file_id, count(*) FROM {spec.qualified} GROUP BY 1").fetchall())
    assert kept == {1: 3, 2: 3}
    assert not (paths.spark_table(spec.qualified) / "run_killed").exists()
    assert not (run / "_temporary").exists()


def test_parquet_written_before_a_contract_column_existed_reads_it_as_null(tmp_path):
    """A Spark root from before `clicks.anonymous_id`: its Parquet files and empty schema file lack the column. The
    raw view reads the files by name (DuckDB by position took the first file's columns and dropped later ones without
    a word), the empty file is written again with the contract's columns, and the old rows read the new column as NULL."""
    paths = data_paths(tmp_path)
    folder = paths.spark_table("raw.clicks")
    (folder / "run-old").mkdir(parents=True)
    old = [c for c in C.CLICKS.columns if c.name != C.ANONYMOUS_ID]
    select = ", ".join(f"CAST({v} AS {c.sql_type}) AS {c.name}" for c, v in zip(old, (
        "'e1'", "'u1'", "'s1'", "TIMESTAMP '2026-10-01 10:00:00'", "'view'", "'view'", "'p1'", "'garden'"), strict=True))
    with duckdb.connect() as con:
        con.sql(f"COPY (SELECT {select}, 1::BIGINT AS _file_id, 1::BIGINT AS _row) TO '{folder}/run-old/part-0.parquet'")
        con.sql(f"COPY (SELECT {select}, 1::BIGINT AS _file_id, 1::BIGINT AS _row LIMIT 0) TO '{folder}/empty.parquet'")
    con = duckdb.connect(str(paths.warehouse))
    try:
        con.sql("CREATE SCHEMA IF NOT EXISTS meta")
        raw_as_parquet_views(con, paths)
        assert con.sql("SELECT event_id, user_id, anonymous_id FROM raw.clicks").fetchall() == [("e1", "u1", None)]
        (found,) = con.sql(f"SELECT count(*) FROM parquet_schema('{folder}/empty.parquet') WHERE name = 'anonymous_id'"
                           ).fetchall()[0]
        assert found == 1
    finally:
        con.close()


def test_the_duckdb_engine_on_a_root_spark_ingested_is_refused_before_a_run(tmp_path, monkeypatch):
    """It failed in the run's first step, after the summary tables, exit 1 (a tester's): now one line and exit 2 before
    anything runs, as the other engine mismatches are; the warehouse is not opened (another process may hold it)."""
    from typer.testing import CliRunner

    from seg_assets.cli import app

    paths = data_paths(tmp_path)
    folder = paths.spark_table("raw.orders") / "run-1"
    folder.mkdir(parents=True)
    with duckdb.connect() as con:
        con.sql(f"COPY (SELECT 1 AS x) TO '{folder}/part-0.parquet'")
    (paths.landing / "orders").mkdir(parents=True)
    (paths.landing / "orders" / "o.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                     "o1,u1,2026-10-01T10:00:00Z,5,1,completed\n")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(app, ["refresh", "--engine", "duckdb", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Parquet written by --engine spark" in result.output, result.output
    assert not paths.warehouse.exists()


def test_a_spark_that_cannot_start_leaves_the_root_to_either_engine(tmp_path, monkeypatch):
    """An old Java (JAVA_GATEWAY_EXITED) failed the first --engine spark run after the raw tables had become views
    over Parquet files of no rows: the root was then refused to --engine duckdb ("Parquet written by --engine spark",
    exit 2) although Spark never ran (h2, session 35). Spark is started before the raw tables are touched, and its
    failure to start is one line about Java, not "unexpected: please report it" retried."""
    from seg_assets.refresh import run_refresh
    from seg_assets.spark import session

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    paths = data_paths(tmp_path)
    (paths.landing / "orders").mkdir(parents=True)
    (paths.landing / "orders" / "o.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                   "o1,u1,2026-10-01T10:00:00Z,5,1,completed\n")

    def no_java(*args, **kwargs):
        from pyspark.errors import PySparkRuntimeError

        raise PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={})

    monkeypatch.setattr(session, "get_spark", no_java)
    failed = run_refresh(tmp_path, engine="spark")
    said = [f for s in failed.stages for f in s.failures]
    assert not failed.success and len(said) == 1 and "pyspark 4 needs Java 17 or later" in said[0], said
    assert "unexpected" not in said[0] and "retried" not in " ".join(p.message for p in failed.problems)
    assert not list((tmp_path / "spark").rglob("*.parquet"))
    assert run_refresh(tmp_path, engine="duckdb").success
