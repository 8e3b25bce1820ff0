"""Typed parquet columns (timestamps, decimals, integers) are used as is, not cast to text and parsed back:
same rules, reasons and values as the text path, on real parquet files (polars) and real DuckDB files.
Also the dedupe shortcuts of the insert (ids ascending in the file, id range disjoint from the table)."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from seg_assets_tests.test_ingest_loader import counts, ids, ledger, order, rejects, run, write  # noqa: F401

PARIS = ZoneInfo("Europe/Paris")
ORDER_SCHEMA = {
    "order_id": pl.Utf8, "user_id": pl.Utf8, "order_ts": pl.Datetime("us", "Europe/Paris"), "amount": pl.Decimal(10, 3),
    "items": pl.Int64, "category": pl.Utf8, "discount": pl.Float64, "status": pl.Utf8,
}


def typed_orders(rows: list[dict]) -> pl.DataFrame:
    """Orders with typed columns; unspecified fields take a valid default."""
    base = {"user_id": "u1", "order_ts": datetime(2026, 3, 1, 12, tzinfo=PARIS), "amount": Decimal("10"), "items": 1,
            "category": "books", "discount": None, "status": "completed"}
    return pl.DataFrame([base | r for r in rows], schema=ORDER_SCHEMA)


def write_parquet(landing, table: str, name: str, df: pl.DataFrame):
    path = landing / table / name
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return path


def test_typed_columns_keep_rules_and_reasons(con, landing):
    path = write_parquet(landing, "orders", "a.parquet", typed_orders([
        {"order_id": "o1", "amount": Decimal("2.345"), "items": 2, "status": " Completed "},
        {"order_id": "o2", "amount": Decimal("-1")},
        {"order_id": "o3", "order_ts": datetime(2026, 3, 10, 14, 30, tzinfo=PARIS)},  # 13:30 UTC: beyond the skew
        {"order_id": "o4", "order_ts": datetime(1980, 1, 1, 1, tzinfo=PARIS)},
        {"order_id": "o5", "items": 0},
        {"order_id": "o6", "items": 3_000_000_000},
        {"order_id": "o7", "order_ts": None},
        {"order_id": "o8", "amount": None},
        {"order_id": "o9", "discount": -0.5},
        {"order_id": "o1", "amount": Decimal("99")},
    ]))
    types = dict(r[:2] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall())
    assert types["order_ts"] == "TIMESTAMP WITH TIME ZONE" and types["amount"] == "DECIMAL(10,3)" and types["items"] == "BIGINT"
    run(con, landing)
    assert counts(ledger(con)["orders/a.parquet"]) == ("ingested", 10, 1, 1, 8)
    assert [r[1:] for r in rejects(con)] == [
        (2, "negative:amount", "negative amount: '-1.000'"),
        (3, "future:order_ts", "order_ts in the future: '2026-03-10 13:30:00+00'"),
        (4, "too_old:order_ts", "order_ts before 1990-01-01 00:00:00: '1980-01-01 00:00:00+00'"),
        (5, "below_min:items", "items < 1: '0'"),
        (6, "unparseable:items", "unparseable items: '3000000000'"),
        (7, "missing:order_ts", "missing order_ts"),
        (8, "missing:amount", "missing amount"),
        (9, "negative:discount", "negative discount: '-0.5'"),
    ]
    assert con.sql("SELECT order_id, order_ts, amount, items, discount, status, _row FROM raw.orders").fetchall() == [
        ("o1", datetime(2026, 3, 1, 11), Decimal("2.35"), 2, Decimal("0.00"), "completed", 1)]


def test_floating_point_columns_are_read_as_their_text(con, landing):
    """A double is typed from its shortest text, like CSV: 0.145 is 0.15, and an items of 1.5 is rejected."""
    df = pl.DataFrame({"order_id": ["o1", "o2"], "user_id": ["u1", "u1"], "order_ts": [datetime(2026, 3, 1)] * 2,
                       "amount": [0.145, 1.0], "items": [2.0, 1.5], "status": ["completed"] * 2})
    write_parquet(landing, "orders", "a.parquet", df)
    run(con, landing)
    assert counts(ledger(con)["orders/a.parquet"]) == ("ingested", 2, 1, 0, 1)
    assert [r[2:] for r in rejects(con)] == [("unparseable:items", "unparseable items: '1.5'")]
    assert con.sql("SELECT order_id, order_ts, amount, items FROM raw.orders").fetchall() == [
        ("o1", datetime(2026, 3, 1), Decimal("0.15"), 2)]


def test_typed_file_gives_the_same_result_as_its_text(tmp_path):
    """The same rows as typed parquet and as parquet of their DuckDB text (what the loader used to parse)."""
    typed = typed_orders([
        {"order_id": f"o{i:02d}", "order_ts": datetime(2026, 3, 1 + i % 12, i % 24, tzinfo=PARIS) if i % 11 else None,
         "amount": Decimal(i * 37 % 200 - 20) / 8, "items": i % 5 - (3_000_000_000 if i == 7 else 0),
         "discount": [None, 0.145, -1.5, 2.675][i % 4], "status": ["returned", "lost", " Cancelled"][i % 3]}
        for i in range(40)
    ])
    typed_file = write_parquet(tmp_path / "typed", "orders", "a.parquet", typed)
    text_file = tmp_path / "text" / "orders" / "a.parquet"
    text_file.parent.mkdir(parents=True)
    with duckdb.connect() as con:  # DuckDB's text of each typed value: what CAST(col AS VARCHAR) gave the loader
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY (SELECT COLUMNS(*)::VARCHAR FROM '{typed_file}') TO '{text_file}' (FORMAT parquet)")
        assert {r[1] for r in con.sql(f"DESCRIBE SELECT * FROM '{text_file}'").fetchall()} == {"VARCHAR"}
    results = []
    for name in ("typed", "text"):
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        run(con, tmp_path / name)
        results.append((counts(ledger(con)["orders/a.parquet"]), rejects(con),
                        con.sql("SELECT * EXCLUDE (_file_id) FROM raw.orders ORDER BY _row").fetchall()))
        con.close()
    assert results[0][0][2] > 0 and results[0][0][4] > 0  # both good and bad rows
    assert results[0] == results[1]


def test_dedupe_shortcuts_still_drop_every_duplicate(con, landing):
    """Ascending ids skip the in-file dedupe, an id range apart from the table skips the table lookup."""
    write(landing, "orders", "1.csv", order("a1"), order("a3"), order("a5"), order("a7"))
    run(con, landing)
    write(landing, "orders", "2.csv", order("a2"), order("a3", amount="2"), order("a4"))  # ascending, one known
    write(landing, "orders", "3.csv", order("b3"), order("b1"), order("b2"))  # unique, not ascending
    write(landing, "orders", "4.csv", order("a0"), order("a6"), order("z9"))  # range spans the table, all new
    write(landing, "orders", "5.csv", order("c1"), order("c1", amount="-1"), order("c2"))  # repeat is a reject
    run(con, landing, "r2")
    led = ledger(con)
    assert [counts(led[f"orders/{n}.csv"])[1:] for n in range(1, 6)] == [
        (4, 4, 0, 0), (3, 2, 1, 0), (3, 3, 0, 0), (3, 3, 0, 0), (3, 2, 0, 1)]
    assert con.sql("SELECT amount FROM raw.orders WHERE order_id = 'a3'").fetchall() == [(Decimal("10.00"),)]
    assert ids(con) == ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "b1", "b2", "b3", "c1", "c2", "z9"]


@pytest.mark.parametrize("ids_in_file, kept", [
    (["e2", "e1", "e2"], [("e1", "u2"), ("e2", "u1")]),
    (["e1", "e2", "e2"], [("e1", "u1"), ("e2", "u2")]),
])
def test_repeated_id_in_typed_clicks_first_row_wins(con, landing, ids_in_file, kept):
    df = pl.DataFrame({"event_id": ids_in_file, "user_id": ["u1", "u2", "u3"], "session_id": ["s"] * 3,
                       "event_ts": [datetime(2026, 3, 1, 10, tzinfo=PARIS)] * 3, "event_type": ["view"] * 3})
    write_parquet(landing, "clicks", "c.parquet", df)
    run(con, landing)
    assert counts(ledger(con)["clicks/c.parquet"]) == ("ingested", 3, 2, 1, 0)
    assert con.sql("SELECT event_id, user_id, event_ts FROM raw.clicks ORDER BY 1").fetchall() == [
        (e, u, datetime(2026, 3, 1, 9)) for e, u in kept]


def test_clicks_are_stored_in_file_order(con, landing):
    """The loader's and the raw checks' id tests stream over rows in file order (a lag(), no hash of the ids):
    the rule SQL must keep that order (an IN list of 5+ values, planned as a hash join, did not)."""
    n = 200_000
    df = pl.DataFrame({"event_id": [f"e{i:07d}" for i in range(n)], "user_id": [f"u{i % 997}" for i in range(n)],
                       "session_id": [f"s{i // 10}" for i in range(n)],
                       "event_ts": [datetime(2026, 3, 1, 10, tzinfo=PARIS)] * n,
                       "event_type": ["view", "search", "cart", "checkout", "purchase", "scroll"] * (n // 6) + ["view"] * (n % 6)})
    write_parquet(landing, "clicks", "c.parquet", df)
    run(con, landing)
    assert counts(ledger(con)["clicks/c.parquet"]) == ("ingested", n, n, 0, 0)
    assert con.sql("SELECT count(*) FILTER (WHERE _row <> rowid + 1) FROM raw.clicks").fetchall() == [(0,)]


def test_text_written_as_bare_binary_is_text(con, landing):
    """Impala, Hive and older Spark write strings as BINARY without the UTF-8 annotation: the same text as a CSV's,
    not escape codes (``Zo\\xC3\\xAB`` was a second user next to the CSV's ``Zoë``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = landing / "orders" / "bin.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "order_id": pa.array([b"o1"], pa.binary()), "user_id": pa.array(["Zoë".encode()], pa.binary()),
        "order_ts": pa.array([datetime(2026, 3, 1, 10)], pa.timestamp("us")), "amount": [10.0], "items": [1],
        "category": pa.array(["Café".encode()], pa.binary()), "status": pa.array([b"completed"], pa.binary())}), path)
    # bytes that are no text (a raw 16-byte UUID as the id) keep their escaped form: the file is read, not failed
    raw_id = bytes(range(0x80, 0x90))
    pq.write_table(pa.table({
        "order_id": ["o2"], "user_id": pa.array([raw_id], pa.binary()), "order_ts": pa.array([datetime(2026, 3, 1, 10)],
        pa.timestamp("us")), "amount": [10.0], "items": [1], "status": ["completed"]}), landing / "orders" / "uuid.parquet")
    run(con, landing)
    assert counts(ledger(con)["orders/bin.parquet"]) == ("ingested", 1, 1, 0, 0)
    assert counts(ledger(con)["orders/uuid.parquet"]) == ("ingested", 1, 1, 0, 0)
    assert con.sql("SELECT order_id, user_id, category, status FROM raw.orders ORDER BY 1").fetchall() == [
        ("o1", "Zoë", "Café", "completed"), ("o2", "".join(f"\\x{b:02X}" for b in raw_id), None, "completed")]


def test_folder_names_are_not_columns(con, landing):
    """A folder named like a Hive partition (``status=cancelled/``) is a folder: DuckDB's guess would have made it a
    column overriding the file's own status."""
    write_parquet(landing, "orders", "status=cancelled/part-0.parquet", typed_orders([{"order_id": "o1"}]))
    run(con, landing)
    assert counts(ledger(con)["orders/status=cancelled/part-0.parquet"]) == ("ingested", 1, 1, 0, 0)
    assert con.sql("SELECT order_id, status FROM raw.orders").fetchall() == [("o1", "completed")]


def test_file_columns_named_like_the_loaders_own_are_data(con, landing):
    """The loader's own names (``_row``, ``why``, ``v__<column>``, ``p__<column>``) in a Parquet file are extra columns,
    not the loader's: both orders kept, no row rejected with the file's text as its reason."""
    df = typed_orders([{"order_id": "o1"}, {"order_id": "o2"}]).with_columns(
        v__order_id=pl.lit("A"), why=pl.Series(["see note", "customer asked"]), _row=pl.Series([98, 99]),
        p__amount=pl.lit("x"))
    write_parquet(landing, "orders", "a.parquet", df)
    run(con, landing)
    assert counts(ledger(con)["orders/a.parquet"]) == ("ingested", 2, 2, 0, 0)
    assert con.sql("SELECT order_id, _row FROM raw.orders ORDER BY 1").fetchall() == [("o1", 1), ("o2", 2)]
    write_parquet(landing, "orders", "b.parquet", typed_orders([{"order_id": "o3"}]).with_columns(file_row_number=pl.lit(7)))
    run(con, landing, run_id="r2")
    row = ledger(con)["orders/b.parquet"]
    assert row["status"] == "failed" and "column named file_row_number" in row["message"], row["message"]


def test_misnamed_and_damaged_files_fail_at_once_saying_what_they_are(con, landing):
    """A Parquet file named .csv (and the reverse) is not taken for a file still being written (the landing rule
    waited 10 minutes for its "last line"), and fails with what it is; a damaged Parquet file says so, without the
    engine's words only; bytes that are not UTF-8 in a column typed as text say that."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seg_assets.ingest.sources import unfinished

    good = write_parquet(landing, "orders", "a.parquet", typed_orders([{"order_id": "o1"}]))
    other = write_parquet(landing.parent / "elsewhere", "orders", "b.parquet", typed_orders([{"order_id": "o9"}]))
    (landing / "orders" / "b.csv").write_bytes(other.read_bytes())
    (landing / "orders" / "c.parquet").write_text("order_id,user_id\no2,u1\n")
    (landing / "orders" / "d.parquet").write_bytes(good.read_bytes()[:200] + b"PAR1")
    pq.write_table(pa.table({"order_id": pa.array([b"o5"], pa.binary()), "user_id": pa.array([b"\xff\xfe"], pa.binary()).view(pa.string()),
                             "order_ts": pa.array([datetime(2026, 3, 1)], pa.timestamp("us")), "amount": [1.0],
                             "items": [1], "status": ["completed"]}), landing / "orders" / "e.parquet")
    for name in ("b.csv", "c.parquet"):
        path = landing / "orders" / name
        assert unfinished(path, path.stat().st_size) is None, name
    started = landing.parent / "started.parquet"  # a writer's first bytes: still being written, not "another format"
    started.write_bytes(b"PA")
    assert unfinished(started, 2) is not None
    run(con, landing)
    rows = ledger(con)
    assert rows["orders/a.parquet"]["status"] == "ingested"
    expected = {"b.csv": "a Parquet file named as CSV: rename it to .parquet", "c.parquet": "named .parquet but not a Parquet file",
                "d.parquet": "the Parquet file is damaged or cut short", "e.parquet": "holds bytes that are not UTF-8 text"}
    for name, words in expected.items():
        row = rows[f"orders/{name}"]
        assert row["status"] == "failed" and words in row["message"] and str(landing) not in row["message"], row["message"]
        assert "'the file'" not in row["message"] and "/proc/" not in row["message"], row["message"]
        assert "ValueError" not in row["message"], row["message"]  # the loader's own words, without a class name
    from seg_assets.ingest.reading import _parquet_source

    cut = landing.parent / "cut.parquet"  # held back while it may be written; read when it is old enough
    cut.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(ValueError) as failed:
        _parquet_source(con, cut)
    assert "cut short (" in str(failed.value) and "'" not in str(failed.value) and str(cut) not in str(failed.value)


def test_a_nested_column_read_as_one_value_fails_the_file_saying_so(con, landing):
    """A LIST id was stored as the text "['a']" (a STRUCT as '{...}'): one line says to map one of its parts."""
    df = typed_orders([{"order_id": "o1"}]).with_columns(user_id=pl.Series([["u1", "u2"]]))
    write_parquet(landing, "orders", "lists.parquet", df)
    df = typed_orders([{"order_id": "o2"}]).with_columns(category=pl.Series([{"main": "books", "sub": "sf"}]))
    write_parquet(landing, "orders", "structs.parquet", df)
    run(con, landing)
    for name, column, kind in (("lists", "user_id", "VARCHAR[]"), ("structs", "category", "STRUCT(")):
        row = ledger(con)[f"orders/{name}.parquet"]
        assert row["status"] == "failed" and f"{column} is read from a nested value ({kind}" in row["message"], row["message"]
        assert "column.field for a STRUCT" in row["message"]
    assert con.sql("SELECT count(*) FROM raw.orders").fetchall() == [(0,)]
