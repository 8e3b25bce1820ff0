"""Orders whose status changes after delivery (sources.yaml `keep: latest`), through a real refresh: a later export
that cancels orders replaces their rows, every model built from them follows incrementally, and the result equals a
cold build of the same files."""

import shutil

import duckdb
import polars as pl

from seg_assets.demo.generate import generate
from seg_assets.refresh import run_refresh
from seg_assets.settings import data_paths
from seg_assets_tests.warehouse_read import read_warehouse as _read
from seg_assets_tests.warehouse_read import refresh_ok

SOURCES = "sources:\n  orders: {table: orders, keep: latest}\n  order_items: {table: order_items, keep: latest}\n"
AS_OF = "2026-10-01T00:00:00Z"


def _refresh(root) -> None:
    refresh_ok(root, AS_OF)


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
    kept = _read(live, f"""SELECT count(DISTINCT order_id) AS n FROM raw.order_items WHERE status = 'completed'
                           AND order_ts <= '{AS_OF[:10]}'::TIMESTAMP  -- placed by the refresh's as-of
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
    # the command line refuses it before anything runs, as a bad configuration (exit 2; it was exit 1, a failed run)
    from typer.testing import CliRunner

    from seg_assets.cli import app

    cli = CliRunner().invoke(app, ["refresh", "--engine", "spark", "--data-dir", str(tmp_path)])
    assert cli.exit_code == 2 and "keep: latest" in cli.output and "Traceback" not in cli.output


def _materialize(root) -> None:
    """Ingestion, review scores and the feature tables, without models: what the incremental builds do."""
    import dagster as dg

    from seg_assets.features.assets import assets as feature_assets
    from seg_assets.ingest.assets import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment

    result = dg.materialize([ingest_landing, review_sentiment, *feature_assets], resources=build_resources(str(root), AS_OF))
    assert result.success


def test_a_replacement_that_moves_a_line_or_an_order_recomputes_what_it_left(tmp_path):
    """A line moved to another order, and an order moved to another user: the order and the user they left are
    recomputed at once (they have no new row: the replaced row's old keys are recorded), equal to a cold build."""
    live, cold = tmp_path / "live", tmp_path / "cold"
    lines = "line_id,order_id,user_id,order_ts,product_id,quantity,unit_price,status\n"
    orders = "order_id,user_id,order_ts,amount,items,status\n"
    filler_lines = "".join(f"f{i},p{i},v{i},2026-08-{1 + i % 28:02d}T10:00:00Z,C,1,5,completed\n" for i in range(20))
    filler_orders = "".join(f"q{i},w{i},2026-08-{1 + i % 28:02d}T10:00:00Z,5,1,completed\n" for i in range(20))
    files = {"order_items/a.csv": lines + "l1,o1,u1,2026-09-01T10:00:00Z,A,1,10,completed\n"
                                          "l2,o1,u1,2026-09-01T10:00:00Z,B,1,20,completed\n" + filler_lines,
             "orders/a.csv": orders + "o3,u3,2026-09-03T10:00:00Z,30,1,completed\no4,u3,2026-09-04T10:00:00Z,5,1,completed\n"
             + filler_orders}  # (other users' orders: the refresh after the move is incremental, not a rebuild)
    later = {"order_items/b.csv": lines + "l2,o2,u1,2026-09-02T10:00:00Z,B,1,20,completed\n",
             "orders/b.csv": orders + "o3,u4,2026-09-03T10:00:00Z,30,1,completed\n"}
    for root, deliveries in ((live, (files, later)), (cold, ({**files, **later},))):
        (root / "landing").mkdir(parents=True)
        (root / "sources.yaml").write_text(SOURCES)
        for delivery in deliveries:
            for name, text in delivery.items():
                (root / "landing" / name).parent.mkdir(exist_ok=True)
                (root / "landing" / name).write_text(text)
            _materialize(root)
    sql = ("SELECT user_id, all_orders, completed_orders, monetary FROM features.user_order_stats ORDER BY 1",
           "SELECT order_id, user_id, amount, items FROM staging.line_orders ORDER BY 1")
    assert _read(live, sql[1]).rows()[:2] == [("o1", "u1", 10, 1), ("o2", "u1", 20, 1)]
    for q in sql:
        assert _read(live, q).equals(_read(cold, q)), (q, _read(live, q), _read(cold, q))
    modes = _read(live, "SELECT model, mode FROM meta.model_builds WHERE model IN ('staging.line_orders', "
                        "'features.user_order_stats') ORDER BY 1").rows()
    assert modes == [("features.user_order_stats", "incremental"), ("staging.line_orders", "incremental")]


def test_an_edited_review_is_scored_again_and_its_owner_recomputed(tmp_path):
    """keep: latest on reviews: the edit replaces the raw row, the review is scored again (it was kept with its old
    score), and only the edited reviews' owners are recomputed, not every user (a new scorer would be everyone)."""
    import dagster as dg

    from seg_assets.features.assets import assets as feature_assets
    from seg_assets.ingest.assets import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment

    (tmp_path / "landing" / "reviews").mkdir(parents=True)
    (tmp_path / "sources.yaml").write_text("sources:\n  reviews: {table: reviews, keep: latest}\n")
    head = "review_id,user_id,order_id,review_ts,rating,text\n"
    (tmp_path / "landing" / "reviews" / "a.csv").write_text(
        head + "r1,u1,o1,2026-09-01T10:00:00Z,5,Absolutely love it. Great value!\n"
        "r2,u2,o2,2026-09-02T10:00:00Z,4,Nice and sturdy.\n")

    def run():
        result = dg.materialize([ingest_landing, review_sentiment, *feature_assets],
                                resources=build_resources(str(tmp_path), AS_OF))
        assert result.success
        (event,) = [e for e in result.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey(["analytics", "review_sentiment"])]
        edits = event.materialization.metadata["scored_edited"].value
        return _read(tmp_path, "SELECT review_id, rating, label FROM analytics.review_sentiment ORDER BY 1").rows(), edits

    first, _ = run()
    assert first == [("r1", 5, "positive"), ("r2", 4, "positive")]
    (tmp_path / "landing" / "reviews" / "b.csv").write_text(
        head + "r1,u1,o1,2026-09-01T10:00:00Z,1,Awful. Broke in a week. Total waste of money.\n")
    second, edits = run()
    assert second == [("r1", 1, "negative"), ("r2", 4, "positive")] and edits == 1  # the asset says one was an edit
    stats = _read(tmp_path, "SELECT user_id, negative_reviews FROM features.user_review_stats ORDER BY 1").rows()
    assert stats == [("u1", 1), ("u2", 0)], stats
    build = _read(tmp_path, "SELECT mode FROM meta.model_builds WHERE model = 'features.user_review_stats'")["mode"][0]
    assert build == "incremental"


def test_an_order_row_naming_another_user_than_its_lines_recomputes_the_user_it_left(tmp_path):
    """An order delivered as lines (user u1), then as an order row naming u2 (an id delivered at both grains is taken
    from the order row): u1 loses the order at once, not at the daily rebase (a tester: Spark, which rebuilds in
    full, and DuckDB's incremental build disagreed on u1 until then). No keep: latest needed: nothing is replaced,
    the derived order is dropped, and the user it named is recorded like a replaced row's."""
    live, cold = tmp_path / "live", tmp_path / "cold"
    lines = "line_id,order_id,user_id,order_ts,product_id,quantity,unit_price,status\n"
    orders = "order_id,user_id,order_ts,amount,items,status\n"
    filler = "".join(f"q{i},w{i},2026-08-{1 + i % 28:02d}T10:00:00Z,5,1,completed\n" for i in range(20))
    for other_lines, line_orders_build in (("l2,o5,u1,2026-09-05T10:00:00Z,B,1,20,completed\n", "incremental"),
                                           ("", "full")):  # o1 alone: 1 of 1 keys changed, line_orders rebuilt in full
        files = {"order_items/a.csv": lines + "l1,o1,u1,2026-09-01T10:00:00Z,A,1,10,completed\n" + other_lines,
                 "orders/a.csv": orders + filler + "q99,u1,2026-08-03T10:00:00Z,7,1,completed\n"}
        later = {"orders/b.csv": orders + "o1,u2,2026-09-01T10:00:00Z,10,1,completed\n"}
        for root, deliveries in ((live, (files, later)), (cold, ({**files, **later},))):
            shutil.rmtree(root, ignore_errors=True)
            (root / "landing").mkdir(parents=True)
            for delivery in deliveries:
                for name, text in delivery.items():
                    (root / "landing" / name).parent.mkdir(exist_ok=True)
                    (root / "landing" / name).write_text(text)
                _materialize(root)
        sql = "SELECT user_id, all_orders, completed_orders, monetary FROM features.user_order_stats WHERE user_id LIKE 'u%' ORDER BY 1"
        assert _read(live, sql).rows()[1] == ("u2", 1, 1, 10.0) and _read(live, sql).equals(_read(cold, sql)), _read(live, sql)
        features = "SELECT user_id, frequency, monetary FROM features.user_features WHERE user_id LIKE 'u%' ORDER BY 1"
        assert _read(live, features).equals(_read(cold, features)), (_read(live, features), _read(cold, features))
        modes = dict(_read(live, "SELECT model, mode FROM meta.model_builds WHERE model IN ('staging.line_orders', "
                                 "'features.user_order_stats', 'features.user_features')").rows())
        assert modes == {"staging.line_orders": line_orders_build, "features.user_order_stats": "incremental",
                         "features.user_features": "incremental"}, modes


def test_the_largest_lines_the_contract_takes_make_exact_orders_and_larger_ones_are_rejected(tmp_path):
    """A tester's lines (2,000,000 units at 9,999,999,999, and 2,000,000,000 units) stopped the DuckDB refresh with a
    decimal overflow and a traceback, and wrapped around on Spark. The contract bounds a line (quantity <= 1,000,000,
    unit_price <= 1,000,000,000): larger lines are rejected with their reason, and an order of the largest lines is
    exact."""
    lines = "line_id,order_id,user_id,order_ts,product_id,quantity,unit_price,status\n"
    big = "".join(f"l{i},o1,u1,2026-09-01T10:00:00Z,P{i},1000000,1000000000,completed\n" for i in range(10))
    (tmp_path / "landing" / "order_items").mkdir(parents=True)
    (tmp_path / "landing" / "order_items" / "a.csv").write_text(
        lines + big + "l8,o2,u2,2026-09-01T10:00:00Z,P,2000000,9999999999,completed\n"
                      "l9,o3,u3,2026-09-01T10:00:00Z,P,2000000000,1,completed\n")
    _materialize(tmp_path)
    assert _read(tmp_path, "SELECT order_id, amount, items FROM staging.line_orders").rows() == [("o1", 1e16, 10_000_000)]
    assert sorted(_read(tmp_path, "SELECT rule FROM raw.rejects").rows()) == [
        ("above_max:quantity",), ("above_max:quantity",)]
    assert _read(tmp_path, "SELECT monetary FROM features.user_order_stats").rows() == [(1e16,)]  # 10 lines: was an overflow


def test_orders_left_out_or_rejected_beside_their_lines_are_no_orders(tmp_path):
    """A tester's pending orders, left out of the orders source with a where, came back as completed orders of their
    lines (10 % of revenue). An order row left out or rejected now keeps its id (raw.withheld_orders), and its lines
    make no order: at once, and when the order row arrives after its lines (the incremental builds drop the order and
    recompute its user), equal to a cold build of the same files."""
    import shutil

    live = tmp_path / "live"
    (live / "landing" / "shop").mkdir(parents=True)
    (live / "landing" / "items").mkdir(parents=True)
    (live / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    where: \"status <> 'pending'\"\n"
                                       "  items:\n    table: order_items\n")
    head = "order_id,user_id,order_ts,amount,items,status\n"
    (live / "landing" / "shop" / "a.csv").write_text(head + "o1,u1,2026-09-01T10:00:00Z,5,1,completed\n"
                                                     "o2,u1,2026-09-01T11:00:00Z,9,1,pending\n"
                                                     "o3,u2,2026-09-01T12:00:00Z,7,1,on-hold\n")
    lines = "line_id,order_id,user_id,order_ts,product_id,quantity,unit_price\n"
    (live / "landing" / "items" / "a.csv").write_text(
        lines + "l1,o1,u1,2026-09-01T10:00:00Z,p1,1,5\nl2,o2,u1,2026-09-01T11:00:00Z,p2,1,9\n"
                "l3,o3,u2,2026-09-01T12:00:00Z,p3,1,7\nl4,o4,u2,2026-09-02T12:00:00Z,p4,2,4\n"
                + "".join(f"m{i},x{i},v{i},2026-09-03T12:00:00Z,p1,1,3\n" for i in range(6)))  # others: builds stay incremental
    _materialize(live)
    assert _read(live, "SELECT order_id FROM staging.stg_orders WHERE order_id LIKE 'o%' ORDER BY 1").rows() == [
        ("o1",), ("o4",)]
    assert _read(live, "SELECT order_id, rule FROM raw.withheld_orders ORDER BY 1").rows() == [
        ("o2", "left_out:where"), ("o3", "unknown:status")]
    assert _read(live, "SELECT rule FROM raw.rejects").rows() == [("unknown:status",)]  # the row left out is no reject
    assert _read(live, "SELECT delivered, accepted, rejected, filtered FROM meta.ingest_ledger WHERE source = 'shop'"
                 ).rows() == [(3, 1, 1, 1)]
    # o4's order row arrives after its lines, pending: the order of its lines goes, and u2 is recomputed at once
    stats = "SELECT user_id, all_orders, monetary FROM features.user_order_stats WHERE user_id LIKE 'u%' ORDER BY 1"
    assert _read(live, stats).rows() == [("u1", 1, 5.0), ("u2", 1, 8.0)]
    (live / "landing" / "shop" / "b.csv").write_text(head + "o4,u2,2026-09-02T12:00:00Z,8,2,pending\n")
    _materialize(live)
    cold = tmp_path / "cold"
    shutil.copytree(live / "landing", cold / "landing")
    shutil.copy(live / "sources.yaml", cold / "sources.yaml")
    _materialize(cold)
    for root in (live, cold):
        assert _read(root, "SELECT order_id FROM staging.stg_orders WHERE order_id LIKE 'o%'").rows() == [("o1",)], root
        assert _read(root, stats).rows() == [("u1", 1, 5.0)], root
    modes = dict(_read(live, "SELECT model, mode FROM meta.model_builds WHERE model IN ('staging.line_orders', "
                             "'features.user_order_stats')").rows())
    assert modes == {"staging.line_orders": "incremental", "features.user_order_stats": "incremental"}, modes


def test_a_withheld_order_with_lines_of_two_users_is_not_said_to_be_the_smallest_ids(tmp_path):
    """The "order lines of more than one user" warning restated line_orders' rule without the withheld ids: it named
    an order whose row the where left out, which makes no order at all (a reviewer's)."""
    import dagster as dg

    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources

    root = tmp_path / "data"
    (root / "landing" / "shop").mkdir(parents=True)
    (root / "landing" / "items").mkdir(parents=True)
    (root / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    where: \"status <> 'pending'\"\n"
                                       "  items:\n    table: order_items\n")
    (root / "landing" / "shop" / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                     "o1,u1,2026-03-01T10:00:00Z,5,1,completed\n"
                                                     "o2,u1,2026-03-01T11:00:00Z,9,2,pending\n")
    (root / "landing" / "items" / "a.csv").write_text("order_id,user_id,order_ts,product_id,quantity,unit_price\n"
                                                      "o1,u1,2026-03-01T10:00:00Z,p1,1,5\n"
                                                      "o2,u1,2026-03-01T11:00:00Z,p2,1,4\no2,u2,2026-03-01T11:00:00Z,p3,1,5\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ingest_landing], resources=build_resources(root, "2026-03-02T00:00:00Z"), instance=instance)
    said = [r.user_message for r in instance.all_logs(result.run_id) if "more than one user" in r.user_message]
    assert result.success and not said, said


def test_lines_of_a_file_the_orders_source_refused_make_no_order_until_it_reads_it(tmp_path):
    """One export read at both grains (Shopify's) whose orders mapping did not fit the file: the file was refused for
    the orders and taken in for the lines, and its lines' orders were published as completed revenue, the voided
    ones too (a tester's 479 orders, +20,745.81). They are held (raw.withheld_orders, file_refused) until the orders
    source reads the file; then its order rows decide."""
    from seg_assets.ingest.writing import held_by_refused_files

    root = tmp_path / "data"
    (root / "landing" / "shop").mkdir(parents=True)
    lines = ("lines:\n    table: order_items\n    folder: shop\n    columns: {order_id: Name, user_id: Email, "
             "order_ts: Created, product_id: Sku, quantity: Qty, unit_price: Price, status: \"'completed'\"}\n")
    orders = ("orders:\n    table: orders\n    folder: shop\n    where: '\"Status\" IS NOT NULL'\n    columns: {order_id: "
              "Name, user_id: Email, order_ts: Created, amount: {total}, items: Qty, status: \"CASE WHEN Status = "
              "'voided' THEN 'cancelled' ELSE 'completed' END\"}\n")
    (root / "sources.yaml").write_text("sources:\n  " + lines + "  " + orders.replace("{total}", "Totl"))  # a typo
    (root / "landing" / "shop" / "a.csv").write_text(
        "Name,Email,Created,Status,Total,Sku,Qty,Price\n"
        "#1,u1,2026-09-01T10:00:00Z,paid,12.5,p1,1,5\n#1,u1,2026-09-01T10:00:00Z,,,p2,1,9\n"
        "#2,u2,2026-09-01T11:00:00Z,voided,7,p3,1,7\n"
        + "".join(f"#x{i},v{i},2026-09-03T12:00:00Z,paid,3,p1,1,3\n" for i in range(4)))
    _materialize(root)
    status = "SELECT status FROM meta.ingest_ledger WHERE source = 'orders'"
    assert _read(root, status).rows() == [("rejected_file",)]
    assert _read(root, "SELECT count(*) FROM staging.stg_orders").rows() == [(0,)]  # none made of the lines
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        assert held_by_refused_files(con) == (6, "shop/a.csv")
    (root / "sources.yaml").write_text("sources:\n  " + lines + "  " + orders.replace("{total}", "Total"))
    _materialize(root)
    assert _read(root, "SELECT order_id, amount, status FROM staging.stg_orders WHERE order_id IN ('#1', '#2') "
                       "ORDER BY 1").rows() == [("#1", 12.5, "completed"), ("#2", 7.0, "cancelled")]
    assert _read(root, "SELECT count(*) FROM raw.withheld_orders").rows() == [(0,)]
    assert _read(root, "SELECT monetary FROM features.user_order_stats WHERE user_id = 'u1'").rows() == [(12.5,)]


def test_an_orders_file_refused_whole_beside_lines_of_other_files_is_said(tmp_path):
    """An orders file refused whole (no typed ids) whose lines came in another file: the lines make orders of their own
    meanwhile, which a warning says (a reviewer's: nothing said it once the withheld ids came)."""
    import dagster as dg

    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources

    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "order_items").mkdir(parents=True)
    (root / "landing" / "orders" / "a.csv").write_text("order_id,user_id,order_ts,total,status\n"  # no amount column
                                                       "o1,u1,2026-03-01T10:00:00Z,5,cancelled\n")
    (root / "landing" / "order_items" / "a.csv").write_text("order_id,user_id,order_ts,product_id,quantity,unit_price\n"
                                                            "o1,u1,2026-03-01T10:00:00Z,p1,1,5\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ingest_landing], resources=build_resources(root, "2026-03-02T00:00:00Z"), instance=instance)
    said = [r.user_message for r in instance.all_logs(result.run_id) if "refused whole" in r.user_message]
    assert result.success and len(said) == 1 and "orders/a.csv" in said[0], said
