"""How landed values are typed, on real files and real DuckDB files: ids delivered as numbers are the same ids as in
a CSV, local times around a clock change and typed Parquet times (INT96 too) are the instants the README says, Unix
times, lines without an id are the same lines in any format, and the contract's ranges on reviews and campaign sends."""

from datetime import UTC, datetime
from decimal import Decimal

import duckdb

from seg_assets_tests.sources_ingest import ingest, write


def test_an_id_delivered_as_a_float_is_the_same_id_as_in_a_csv(tmp_path):
    """pandas writes an integer id column with gaps as floats: 12680.0 in Parquet, 12680 in CSV, one customer."""
    import pandas as pd

    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    where: customer IS NOT NULL\n"
                                           "    columns: {order_id: id, user_id: customer, amount: total, items: 1}\n")
    folder = tmp_path / "landing" / "shop"
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ["o1", "o2", "o3"], "customer": [12680.0, None, 7.5], "total": [10.0, 5.0, 1.0],
                  "order_ts": pd.to_datetime(["2026-03-01"] * 3), "status": ["completed"] * 3}).to_parquet(folder / "a.parquet")
    write(tmp_path, "shop/b.csv", "id,customer,total,order_ts,status\no4,12680,10,2026-03-02T00:00:00Z,completed\n")
    # pandas' CSV export of the same column writes the float's text; a GA4-style id with a real fraction stays as it is
    write(tmp_path, "shop/c.csv", "id,customer,total,order_ts,status\no5,12680.0,10,2026-03-03T00:00:00Z,completed\n"
                                  "o6,1234567890.17,1,2026-03-03T00:00:00Z,completed\n")
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT order_id, user_id FROM raw.orders ORDER BY 1").fetchall()
    assert rows == [("o1", "12680"), ("o3", "7.5"), ("o4", "12680"), ("o5", "12680"), ("o6", "1234567890.17")]


def test_a_large_id_delivered_as_a_double_or_decimal_is_its_whole_number(tmp_path):
    """16 digits and more (a snowflake or a database sequence): a whole double and a decimal of any size are the
    id's digits as in the CSV twin, not '1234567890123456.0', '...456.00' or '1e+16' (another user)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n"
                                           "    columns: {order_id: id, user_id: customer, amount: total, items: 1}\n")
    folder = tmp_path / "landing" / "shop"
    folder.mkdir(parents=True)
    base = {"total": [1.0], "order_ts": pa.array([datetime(2026, 3, 1)], pa.timestamp("us")), "status": ["completed"]}
    pq.write_table(pa.table({"id": ["o1", "o3"], "customer": pa.array([1234567890123456.0, 1e16], pa.float64()),
                             "total": [1.0, 1.0], "order_ts": pa.array([datetime(2026, 3, 1)] * 2, pa.timestamp("us")),
                             "status": ["completed"] * 2}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["o2"], "customer": pa.array([Decimal("12345678901234567890.00")], pa.decimal128(22, 2)),
                             **base}), folder / "b.parquet")
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT order_id, user_id FROM raw.orders ORDER BY 1").fetchall()
    assert rows == [("o1", "1234567890123456"), ("o2", "12345678901234567890"), ("o3", "10000000000000000")]


def test_local_times_of_a_clock_change_are_read_as_the_readme_says(tmp_path):
    """The autumn hour that repeats: its second occurrence (standard time); the spring hour that is skipped: the
    standard-time offset; the same with and without a timestamp_format."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  iso: {table: orders, timezone: Europe/Berlin}\n"
        "  fmt: {table: orders, timezone: Europe/Berlin, timestamp_format: '%d.%m.%Y %H:%M'}\n")
    head = "order_id,user_id,order_ts,amount,items,status\n"
    write(tmp_path, "iso/a.csv", head + "o1,u1,2025-10-26 02:30,1,1,completed\no2,u1,2025-03-30 02:30,1,1,completed\n")
    write(tmp_path, "fmt/a.csv", head + "p1,u1,26.10.2025 02:30,1,1,completed\np2,u1,30.03.2025 02:30,1,1,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert rejects == [] and [r[4] for r in ledger] == [2, 2]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = dict(con.sql("SELECT order_id, order_ts FROM raw.orders").fetchall())
    con.close()
    assert rows["o1"] == rows["p1"] == datetime(2025, 10, 26, 1, 30)
    assert rows["o2"] == rows["p2"] == datetime(2025, 3, 30, 1, 30)


def test_typed_times_ignore_a_text_format_and_int96_is_utc(tmp_path):
    """A source's timestamp_format is for its text times: a Parquet file of the same source with nanosecond times,
    zoned times or dates is typed as delivered (it was parsed back from text with the format: every row rejected).
    Naive times and dates are the source's local time; Spark's legacy INT96 times are UTC instants whatever it says."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text(
        "sources:\n  erp: {table: orders, timezone: Europe/Berlin, timestamp_format: '%d.%m.%Y %H:%M', columns: {order_ts: Datum}}\n")
    noon = datetime(2026, 1, 29, 12)
    kinds = {"ns": pa.timestamp("ns"), "nstz": pa.timestamp("ns", tz="UTC"), "ms": pa.timestamp("ms"), "date": pa.date32()}
    (tmp_path / "landing" / "erp").mkdir(parents=True)
    for name, kind in kinds.items():
        value = noon.date() if name == "date" else noon
        table = pa.table({"order_id": [name], "user_id": ["u1"], "Datum": pa.array([value], kind), "amount": [1.0],
                          "items": [1], "status": ["completed"]})
        pq.write_table(table, tmp_path / "landing" / "erp" / f"{name}.parquet")
    pq.write_table(pa.table({"order_id": ["int96"], "user_id": ["u1"], "Datum": pa.array([noon], pa.timestamp("us")),
                             "amount": [1.0], "items": [1], "status": ["completed"]}),
                   tmp_path / "landing" / "erp" / "int96.parquet", use_deprecated_int96_timestamps=True)
    write(tmp_path, "erp/text.csv", "order_id,user_id,Datum,amount,items,status\ntext,u1,29.01.2026 12:00,1,1,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert rejects == [] and all(r[2] == "ingested" for r in ledger), ledger
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = dict(con.sql("SELECT order_id, order_ts FROM raw.orders").fetchall())
    con.close()
    local_noon = datetime(2026, 1, 29, 11)  # 12:00 in Berlin (winter) is 11:00 UTC
    assert rows == {"ns": local_noon, "ms": local_noon, "text": local_noon, "nstz": noon, "int96": noon,
                    "date": datetime(2026, 1, 28, 23)}


def test_reviews_and_unix_times_with_the_contract_layout(tmp_path):
    write(tmp_path, "reviews/r.csv", "review_id,user_id,order_id,review_ts,rating,text\n"
          "r1,u1,o1,1767225600,5,Lovely mug\n"           # Unix seconds: 2026-01-01
          "r2,u2,,1767225600000,,\n"                      # milliseconds; rating and text may be empty
          "r3,u3,o3,2026-01-02T00:00:00Z,6,Too many stars\n"
          "r4,u4,o4,2026-01-02T00:00:00Z,0,mail me at someone@example.com\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[2:8] for r in ledger] == [("ingested", 4, 2, 0, 2, 0)]
    assert sorted(r[4] for r in rejects) == ["above_max:rating", "below_min:rating"]
    assert all("someone@example.com" not in (r[6] or "") for r in rejects)  # review text is personal data
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = con.sql("SELECT review_id, review_ts, rating FROM raw.reviews ORDER BY 1").fetchall()
    con.close()
    assert rows == [("r1", datetime(2026, 1, 1), 5), ("r2", datetime(2026, 1, 1), None)]


def test_lines_without_an_id_are_the_same_lines_in_any_format(tmp_path):
    """The derived line id hashes the typed values: the same lines re-delivered as CSV ('8.5', another way to write the
    time) after Parquet (DECIMAL 8.500, a TIMESTAMP, integer ids) are duplicates, not a second copy of the order."""

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "landing" / "order_items"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({
        "order_id": pa.array([537197, 537197, 537197], pa.int64()), "user_id": pa.array([12662, 12662, 12662], pa.int64()),
        "order_ts": pa.array([datetime(2010, 12, 5, 12, 16)] * 3, pa.timestamp("us")),
        "product_id": ["22138", "22138", "84029E"], "quantity": pa.array([1, 1, 6], pa.int32()),
        "unit_price": pa.array([Decimal("8.500"), Decimal("8.500"), Decimal("3.750")], pa.decimal128(10, 3)),
    }), folder / "a.parquet")
    write(tmp_path, "order_items/b.csv", "order_id,user_id,order_ts,product_id,quantity,unit_price\n"
          "537197,12662,2010-12-05 12:16:00,22138,1,8.5\n537197,12662,2010-12-05T12:16:00Z,22138,1,8.50\n"
          "537197,12662,2010-12-05 12:16,84029E,6,3.75\n537197,12662,2010-12-05 12:16,22138,1,8.5\n")
    _, ledger, _ = ingest(tmp_path, now=datetime(2011, 1, 1, tzinfo=UTC))
    # the two identical lines of the first file are two lines (occurrence); the CSV's first three are the same three
    assert [(r[1], r[3], r[4], r[5]) for r in ledger] == [("order_items/a.parquet", 3, 3, 0), ("order_items/b.csv", 4, 1, 3)]


def test_campaign_sends_with_bad_rows_are_accounted_like_any_table(tmp_path):
    write(tmp_path, "campaign_sends/s.csv", "send_id,campaign_id,user_id,action_id,sent_ts,group,propensity\n"
          "s1,c1,u1,a1,2026-01-02T10:00:00Z,treatment,0.25\n"
          "s2,c1,u2,a1,2026-01-02T10:00:00Z,control,\n"           # propensity may be empty
          "s3,c1,u3,a1,2026-01-02T10:00:00Z,holdout,0.5\n"        # not a group
          "s4,c1,u4,a1,2026-01-02T10:00:00Z,treatment,0\n"        # propensity must be > 0
          "s5,c1,u5,a1,2026-01-02T10:00:00Z,Treatment,1.5\n"      # and <= 1
          "s1,c1,u1,a1,2026-01-02T10:00:00Z,treatment,0.25\n")    # a repeated send
    _, ledger, rejects = ingest(tmp_path)
    assert [r[2:8] for r in ledger] == [("ingested", 6, 2, 1, 3, 0)]
    assert sorted(r[4] for r in rejects) == ["above_max:propensity", "below_min:propensity", "unknown:send_group"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = con.sql("SELECT send_id, send_group, propensity FROM raw.campaign_sends ORDER BY 1").fetchall()
    con.close()
    assert rows == [("s1", "treatment", 0.25), ("s2", "control", None)]
