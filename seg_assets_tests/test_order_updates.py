"""Orders whose status changes after delivery (sources.yaml `keep: latest`), through a real refresh: a later export
that cancels orders replaces their rows, every model built from them follows incrementally, and the result equals a
cold build of the same files."""

import shutil

import duckdb
import polars as pl

from seg_assets.demo.generate import generate
from seg_assets.refresh import run_refresh
from seg_assets.settings import data_paths

SOURCES = "sources:\n  orders: {table: orders, keep: latest}\n  order_items: {table: order_items, keep: latest}\n"
AS_OF = "2026-10-01T00:00:00Z"


def _refresh(root) -> None:
    outcome = run_refresh(root, as_of=AS_OF)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]


def _read(root, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return con.sql(sql).pl()


def test_a_later_export_cancelling_orders_and_changing_lines_equals_a_cold_build(tmp_path):
    """40 orders cancelled and 30 lines changed (another product) by a later export: the ledger counts them as
    updated; order features and the whole shop's basket counts and rules equal those of one cold refresh of the same
    files (per-segment counts are not compared: the two fit their segments apart)."""
    live, cold = tmp_path / "live", tmp_path / "cold"
    generate(live, users=400, days=90, seed=11, fmt="csv", with_lines=True)
    (live / "sources.yaml").write_text(SOURCES)
    _refresh(live)
    iso = pl.col("order_ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    orders = _read(live, """SELECT * EXCLUDE (_file_id, _row) FROM raw.orders WHERE status = 'completed'
                            AND order_id IN (SELECT order_id FROM raw.order_items) ORDER BY hash(order_id) LIMIT 40""")
    orders.with_columns(status=pl.lit("cancelled"), order_ts=iso).write_csv(
        data_paths(live).landing / "orders" / "zz_status_update.csv")
    lines = _read(live, """SELECT * EXCLUDE (_file_id, _row) REPLACE ('p71502' AS product_id) FROM raw.order_items
                           WHERE status = 'completed' AND product_id <> 'p71502' ORDER BY hash(line_id) LIMIT 30""")
    lines.with_columns(order_ts=iso).write_csv(data_paths(live).landing / "order_items" / "zz_line_update.csv")
    shutil.copytree(live / "landing", cold / "landing")
    shutil.copy(live / "sources.yaml", cold / "sources.yaml")
    _refresh(live)
    _refresh(cold)

    ledger = _read(live, "SELECT file_name, accepted, updated, duplicate FROM meta.ingest_ledger WHERE file_name LIKE '%zz_%' "
                         "ORDER BY 1")
    assert ledger.rows() == [("order_items/zz_line_update.csv", 0, 30, 0), ("orders/zz_status_update.csv", 0, 40, 0)]
    assert _read(live, "SELECT mode FROM meta.basket_state")["mode"][0] == "full"  # the counted lines are gone
    for sql in ("SELECT * FROM features.user_order_stats ORDER BY user_id",
                "SELECT product_id, baskets::BIGINT AS n FROM meta.basket_items WHERE scope = -1 ORDER BY product_id",
                "SELECT baskets::BIGINT AS n FROM meta.basket_scopes WHERE scope = -1",
                "SELECT * FROM analytics.basket_rules WHERE segment_id IS NULL ORDER BY antecedent, consequent"):
        a, b = _read(live, sql), _read(cold, sql)
        assert a.height and a.equals(b), (sql, a, b)
    kept = _read(live, """SELECT count(DISTINCT order_id) AS n FROM raw.order_items WHERE status = 'completed'
                          AND order_id NOT IN (SELECT order_id FROM raw.orders WHERE status = 'cancelled')""")["n"][0]
    assert _read(live, "SELECT baskets::BIGINT AS n FROM meta.basket_scopes WHERE scope = -1")["n"][0] == kept
    assert set(orders["order_id"]) <= set(_read(live, "SELECT order_id FROM raw.orders WHERE status = 'cancelled'")["order_id"])


def test_keep_latest_on_the_spark_engine_is_one_line_and_ingests_nothing(tmp_path):
    """The Spark engine's raw tables are append-only Parquet: a replaced row would be a rewrite it does not do yet."""
    generate(tmp_path, users=50, days=30, seed=1, fmt="csv", with_clicks=False, with_customers=False)
    (tmp_path / "sources.yaml").write_text(SOURCES)
    outcome = run_refresh(tmp_path, as_of=AS_OF, engine="spark")
    failures = [f for s in outcome.stages for f in s.failures]
    assert not outcome.success and any("keep: latest" in f and "--engine duckdb" in f for f in failures), failures
    assert not (data_paths(tmp_path).spark / "raw").exists() or not any((data_paths(tmp_path).spark / "raw").rglob("*.parquet"))
