"""Mapped columns and a source's where as SQL expressions on real landing files and real DuckDB files: one mapping
fits every file of a source (CSV text or typed Parquet), a row an expression fails on is one reject, not a failed
file (also where DuckDB repeats a part of it), and columns named like SQL (hyphens, dots, statements) are columns."""

import json
from datetime import datetime
from decimal import Decimal

import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError, parse_expression
from seg_assets_tests.sources_ingest import ingest, one_source, parse, write


def test_a_row_an_expression_fails_on_is_a_reject_not_a_failed_file(tmp_path):
    """CAST('n/a' AS INTEGER) or a division by zero in one row failed the whole file (a tester's: 48 good rows not
    taken in, nothing in raw.rejects); an expression that is NULL by design (NULLIF) is no failure."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  lines:\n    table: order_items\n    columns:\n"
        "      quantity: CAST(Qty AS INTEGER)\n      unit_price: Total // Units\n"
        "      category: NULLIF(Cat, '')\n      status: \"'completed'\"\n"
        "    where: \"100 // W > 1 OR Cat = 'keep'\"\n")
    header = "order_id,user_id,order_ts,product_id,Qty,Total,Units,Cat,W\n"
    write(tmp_path, "lines/a.csv", header +
          "o1,u1,2026-03-01T10:00:00Z,A,2,10,2,toys,1\n"
          "o2,u1,2026-03-01T10:00:00Z,A,n/a,10,2,toys,1\n"   # the CAST fails
          "o3,u2,2026-03-01T10:00:00Z,B,1,10,0,,1\n"         # 10 // 0 fails
          "o4,u2,2026-03-01T10:00:00Z,B,1,7,1,,1\n"          # NULLIF gives NULL: an empty category, kept
          "o5,u2,2026-03-01T10:00:00Z,B,1,7,1,toys,0\n")     # the where's 100 // 0 fails: rejected too
    write(tmp_path, "lines/b.csv", header + "o6,u2,2026-03-01T10:00:00Z,B,1,17,1,toys,90\n")  # left out by the where
    _, ledger, rejects = ingest(tmp_path)
    assert [r[:8] for r in ledger] == [("lines", "lines/a.csv", "ingested", 5, 2, 0, 3, 0),
                                       ("lines", "lines/b.csv", "ingested", 1, 0, 0, 0, 1)]
    # DuckDB's reason, on the first row each failed on, in the file's message
    assert "quantity could not be computed on 1 row(s) (mapping_failed), the first (row 2): Conversion Error: " \
        "Could not convert string 'n/a' to INT32" in ledger[0][8], ledger[0][8]
    assert "where could not be computed on 1 row(s) (mapping_failed), the first (row 5): Invalid Input Error: " \
        "Division by zero" in ledger[0][8], ledger[0][8]
    assert sorted((r[4], r[5]) for r in rejects) == [
        ("mapping_failed:quantity", "quantity (from CAST(Qty AS INTEGER)) fails on this row (Qty = 'n/a')"),
        ("mapping_failed:unit_price", "unit_price (from Total // Units) fails on this row (Total = '10', Units = '0')"),
        ("mapping_failed:where", "the source's where fails on this row (its values: raw.rejects.raw_values)")]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = con.sql("SELECT order_id, quantity, unit_price::DOUBLE, category FROM raw.order_items ORDER BY 1").fetchall()
    con.close()
    assert rows == [("o1", 2, 5.0, "toys"), ("o4", 1, 7.0, None)]


def test_expressions_timezones_formats_and_where_on_a_csv(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  lines:\n"
        "    table: order_items\n"
        "    timestamp_format: '%d.%m.%Y %H:%M'\n"
        "    timezone: Europe/Berlin\n"
        "    where: \"Kunde IS NOT NULL AND Kunde <> 'TEST'\"\n"
        "    columns:\n"
        "      order_id: Beleg\n"
        "      user_id: Kunde\n"
        "      order_ts: Datum\n"
        "      product_id: Artikel\n"
        "      quantity: abs(Menge)\n"
        "      unit_price: Preis / 100\n"
        "      status: \"CASE WHEN Menge < 0 THEN 'returned' ELSE 'completed' END\"\n")
    write(tmp_path, "lines/a.csv", "Beleg,Kunde,Datum,Artikel,Menge,Preis\n"
          "B1,007,01.07.2025 12:00,A1,2,250\n"      # CEST: 10:00 UTC; '007' stays text
          "B1,007,01.07.2025 12:00,A1,2,250\n"      # a genuine repeat line is kept
          "B2,,01.07.2025 12:00,A1,1,250\n"         # no customer: filtered by where
          "B3,TEST,01.07.2025 12:00,A1,1,250\n"     # filtered
          "C4,007,15.01.2025 09:30,A2,-1,999\n"     # CET: 08:30 UTC, a credit note
          "B5,008,31.02.2025 09:30,A2,1,100\n")     # no such date: rejected with a reason
    report, ledger, rejects = ingest(tmp_path)
    assert [r[:8] for r in ledger] == [("lines", "lines/a.csv", "ingested", 6, 3, 0, 1, 2)]
    assert "left out by the source's where" in ledger[0][8]
    assert [r[4] for r in rejects] == ["unparseable:order_ts"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = con.sql("SELECT order_id, user_id, order_ts, quantity, unit_price::DOUBLE, status FROM raw.order_items "
                   "ORDER BY order_id").fetchall()
    con.close()
    assert rows == [("B1", "007", datetime(2025, 7, 1, 10, 0), 2, 2.5, "completed"),
                    ("B1", "007", datetime(2025, 7, 1, 10, 0), 2, 2.5, "completed"),
                    ("C4", "007", datetime(2025, 1, 15, 8, 30), 1, 9.99, "returned")]
    # Re-delivered under another name: same bytes; and the same lines inside a new file: derived keys dedupe.
    write(tmp_path, "lines/a_again.csv", (tmp_path / "landing/lines/a.csv").read_text())
    write(tmp_path, "lines/b.csv", "Beleg,Kunde,Datum,Artikel,Menge,Preis\nB1,007,01.07.2025 12:00,A1,2,250\n"
          "B9,009,01.07.2025 12:00,A1,1,100\n")
    _, ledger, _ = ingest(tmp_path)
    # the copy's rows are duplicates, except those the source's where leaves out again (filtered, as in a.csv)
    assert [r[2:8] for r in ledger[1:]] == [("duplicate_file", 6, 0, 4, 0, 2), ("ingested", 2, 1, 1, 0, 0)]


def test_one_mapping_fits_every_file_of_a_source_whatever_its_values_look_like(tmp_path):
    """A column used as text stays text in a file where all its values are digits; a header-only file or an empty
    column fits any expression (each failed for good with the column typed from the file's values)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  lines:\n    table: order_items\n    timestamp_format: '%m/%d/%Y %H:%M'\n"
        "    where: \"CustomerID <> ''\"\n"
        "    columns:\n      order_id: InvoiceNo\n      user_id: CAST(CustomerID AS VARCHAR)\n      order_ts: InvoiceDate\n"
        "      product_id: StockCode\n      quantity: abs(Quantity)\n      unit_price: UnitPrice\n"
        "      status: \"CASE WHEN InvoiceNo LIKE 'C%' THEN 'returned' ELSE 'completed' END\"\n")
    header = "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
    write(tmp_path, "lines/d1.csv", header + "536365,A1,2,12/1/2010 8:26,2.5,12680\nC536366,A1,-1,12/1/2010 9:00,2.5,12680\n")
    write(tmp_path, "lines/d2.csv", header + "536367,A2,3,12/2/2010 8:26,1.5,12681\n536368,A2,1,12/2/2010 9:26,1.5,\n")
    write(tmp_path, "lines/d3.csv", header)  # a day without sales
    write(tmp_path, "lines/d4.csv", header + "536369,A3,,12/3/2010 8:26,1.5,12682\n")  # no quantity at all
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[3:8]) for r in ledger] == [
        ("lines/d1.csv", "ingested", (2, 2, 0, 0, 0)), ("lines/d2.csv", "ingested", (2, 1, 0, 0, 1)),
        ("lines/d3.csv", "ingested", (0, 0, 0, 0, 0)), ("lines/d4.csv", "ingested", (1, 0, 0, 1, 0))]
    assert [r[4] for r in rejects] == ["missing:quantity"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = con.sql("SELECT order_id, user_id, quantity, status FROM raw.order_items ORDER BY order_id").fetchall()
    con.close()
    assert rows == [("536365", "12680", 2, "completed"), ("536367", "12681", 3, "completed"), ("C536366", "12680", 1, "returned")]


def test_nullif_with_a_text_literal_reads_its_column_as_text(tmp_path):
    """``rating: NULLIF(Stars, '')`` on a column of digits rejected 146 of a tester's 149 reviews ('' is no number):
    NULLIF with a text literal compares as text, as ``=`` does."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  revs:\n    table: reviews\n    columns: {rating: \"NULLIF(Stars, '')\"}\n")
    write(tmp_path, "revs/a.csv", "review_id,user_id,review_ts,Stars,text\nr1,u1,2026-03-01T10:00:00Z,5,great\n"
          "r2,u2,2026-03-01T10:00:00Z,,fine\nr3,u3,2026-03-01T10:00:00Z,1,bad\n")
    _, ledger, rejects = ingest(tmp_path)
    assert ledger[0][2:8] == ("ingested", 3, 3, 0, 0, 0) and not rejects, (ledger, rejects)


def test_a_simple_case_with_text_literals_reads_its_column_as_text(tmp_path):
    """``CASE Stars WHEN '' THEN NULL ELSE Stars END`` is ``Stars = ''`` written another way: a column of digits was read
    as a number, and comparing it with '' failed on every row (the rule for comparisons and NULLIF missed this form)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  revs:\n    table: reviews\n    columns: {rating: \"CASE Stars WHEN '' THEN NULL WHEN 'n/a' THEN NULL "
        "ELSE Stars END\"}\n")
    write(tmp_path, "revs/a.csv", "review_id,user_id,review_ts,Stars,text\nr1,u1,2026-03-01T10:00:00Z,5,great\n"
          "r2,u2,2026-03-01T10:00:00Z,,fine\nr3,u3,2026-03-01T10:00:00Z,1,bad\n")
    _, ledger, rejects = ingest(tmp_path)
    assert ledger[0][2:8] == ("ingested", 3, 3, 0, 0, 0) and not rejects, (ledger, rejects)


def test_coalesce_and_between_with_text_literals_read_their_column_as_text(tmp_path):
    """``coalesce(Dept, 'unknown')`` on a column of digits: DuckDB typed the column as a number and the literal with it,
    so every row without a department failed ('unknown' is no number) instead of taking 'unknown'; ``BETWEEN`` with
    text bounds on such a column failed on every row."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: orders\n    columns: {category: \"coalesce(Dept, 'unknown')\"}\n"
        "    where: \"Store NOT BETWEEN 'x' AND 'z'\"\n")
    write(tmp_path, "shop/a.csv", "order_id,user_id,Dept,Store,order_ts,amount,items,status\n"
          "o1,u1,12,7,2026-03-01T10:00:00Z,10,1,completed\no2,u2,,8,2026-03-01T10:00:00Z,5,1,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert ledger[0][2:8] == ("ingested", 2, 2, 0, 0, 0) and not rejects, (ledger, rejects)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id, category FROM raw.orders ORDER BY 1").fetchall() == [("o1", "12"), ("o2", "unknown")]


def test_decimals_in_an_expression_keep_their_fraction_and_an_ids_parts_stay_text(tmp_path):
    """DuckDB's try_cast('8.16' AS BIGINT) is 8: a column of decimals was typed as whole numbers (amounts rounded), and
    GA4 ids made of digits and a dot became one number (200 users became one)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: orders\n"
        "    columns: {order_id: id, user_id: 'coalesce(uid, pseudo_id)', amount: total - shipping, items: 1}\n")
    write(tmp_path, "shop/a.csv", "id,uid,pseudo_id,total,shipping,order_ts,status\n"
          "o1,,1234567890.1700000123,10.16,2,2026-03-01T00:00:00Z,completed\n"
          "o2,,1234567890.1700000456,12.5,2.25,2026-03-01T00:00:00Z,completed\n"
          "o3,7,99,3,1,2026-03-01T00:00:00Z,completed\n")
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT order_id, user_id, amount::DOUBLE FROM raw.orders ORDER BY 1").fetchall()
    assert rows == [("o1", "1234567890.1700000123", 8.16), ("o2", "1234567890.1700000456", 10.25), ("o3", "7", 2.0)]


def test_a_mapping_that_does_not_fit_one_file_names_the_expression_and_the_value(tmp_path):
    """`summe * 1.0` works where the file's values read as numbers; a file with decimal commas gives text."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  pos:\n    table: orders\n    columns:\n      order_id: bon\n      user_id: kunde\n      order_ts: zeit\n"
        "      amount: summe * 1.0\n      items: anzahl\n      status: \"'completed'\"\n")
    head = "bon,kunde,zeit,summe,anzahl\n"
    write(tmp_path, "pos/a.csv", head + "B1,K1,2024-05-01T10:00:00Z,10.50,1\n")
    write(tmp_path, "pos/b.csv", head + 'C1,K1,2024-05-02T10:00:00Z,"10,50",1\n')
    _, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2]) for r in ledger] == [("pos/a.csv", "ingested"), ("pos/b.csv", "failed")]
    assert "amount: summe * 1.0 does not fit this file (summe is VARCHAR (e.g. '10,50'))" in ledger[1][8]
    # one stray text among numbers: that value is shown (the first value, '6', was), and the cast that fixes it
    write(tmp_path, "pos/c.csv", head + "D1,K1,2024-05-03T10:00:00Z,6,1\nD2,K1,2024-05-03T11:00:00Z,abc,1\n")
    _, ledger, _ = ingest(tmp_path)
    said = {r[1]: r[8] for r in ledger}["pos/c.csv"]
    assert "(summe is VARCHAR (e.g. 'abc'))" in said and "CAST(col AS DOUBLE) where text meets a number" in said, said
    # a leading zero keeps a column text too: that value is the one shown (a reviewer's '6' beside '007')
    write(tmp_path, "pos/d.csv", head + "E1,K1,2024-05-04T10:00:00Z,6,1\nE2,K1,2024-05-04T11:00:00Z,007,1\n")
    _, ledger, _ = ingest(tmp_path)
    assert "(summe is VARCHAR (e.g. '007'))" in {r[1]: r[8] for r in ledger}["pos/d.csv"]


def test_a_column_named_with_a_hyphen_is_that_column(tmp_path):
    """`user_id: Kunden-ID` parses as `Kunden - ID` (a subtraction): it was rejected as missing columns 'kunden', 'id'."""
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    columns:\n      order_id: Bestell-Nr.\n"
                                           "      user_id: Kunden-ID\n      amount: \"Betrag-EUR * 1\"\n")
    write(tmp_path, "orders/a.csv", "Bestell-Nr.,Kunden-ID,order_ts,Betrag-EUR,items,status\n"
                                    "o1,k7,2026-03-01T10:00:00Z,10,1,completed\n")
    _, ledger, _ = ingest(tmp_path)
    assert ledger[0][2] == "rejected_file" and "Betrag" in ledger[0][8]  # an expression stays an expression
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    columns:\n      order_id: Bestell-Nr.\n"
                                           "      user_id: Kunden-ID\n      amount: '\"Betrag-EUR\" * 1'\n")
    _, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger][-1] == ("orders/a.csv", "ingested", 1), ledger
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT order_id, user_id, amount::DOUBLE FROM raw.orders").fetchall() == [("o1", "k7", 10.0)]
    con.close()


def test_a_column_named_like_a_sql_statement_is_that_column(tmp_path):
    """`order_id: Comment` (or Show, Drop, Set, Begin) parses as a statement, which was refused as a command."""
    for text in ("ts AT TIME ZONE tz", "INTERVAL 1 DAY", "amount * 1"):  # expressions stay expressions
        assert parse_expression(text, "x").column_name is None, text
    with pytest.raises(SourceConfigError, match="not allowed"):
        parse_expression("*", "x")
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    columns:\n      order_id: Comment\n"
                                           "      user_id: Show\n      status: Drop Status\n      items: Set\n")
    write(tmp_path, "orders/a.csv", "Comment,Show,order_ts,amount,Set,Drop Status\n"
                                    "o1,k7,2026-03-01T10:00:00Z,10,1,completed\n")
    _, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger][-1] == ("orders/a.csv", "ingested", 1), ledger
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT order_id, user_id, items, status FROM raw.orders").fetchall() == [("o1", "k7", 1, "completed")]
    con.close()


def test_a_column_named_with_a_dot_in_an_expression_is_told_to_be_quoted(tmp_path):
    """``upper(a.b)`` reads field b of a STRUCT column a; a file whose column is literally named "a.b" is told how to
    write it (it said only "column a not in the file")."""
    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    columns: {category: upper(cat.name)}\n")
    write(tmp_path, "shop/a.csv", "order_id,user_id,order_ts,amount,items,status,cat.name\n"
          "o1,u1,2026-03-01T10:00:00Z,10,1,completed,books\n")
    _, ledger, _ = ingest(tmp_path)
    assert ledger[0][2] == "rejected_file" and 'write it in double quotes, "cat.name"' in ledger[0][8], ledger
    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    columns: {category: 'upper(\"cat.name\")'}\n")
    _, ledger, _ = ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT category FROM raw.orders").fetchall() == [("BOOKS",)]


def test_a_ga4_export_maps_struct_fields_with_a_dot_and_text_functions_fit_typed_parquet(tmp_path):
    """A GA4 export nests: ``device.category`` is a field of the STRUCT column device (it was refused as "another
    table"), the session id sits in event_params. And ``replace(Betrag, ',', '.')`` written for a CSV's decimal commas
    fits a Parquet file of the same source where Betrag is DOUBLE (it failed: replace() takes text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  ga4:\n    table: clicks\n"
        "    columns: {user_id: user_pseudo_id, event_ts: event_timestamp, event_type: event_name, category: device.category,\n"
        "              session_id: \"list_filter(event_params, p -> p.key = 'ga_session_id')[1].value.int_value\"}\n"
        "  erp:\n    table: orders\n    columns: {amount: \"TRY_CAST(replace(Betrag, ',', '.') AS DOUBLE)\"}\n")
    param = pa.struct([("key", pa.string()), ("value", pa.struct([("string_value", pa.string()), ("int_value", pa.int64())]))])
    (tmp_path / "landing" / "ga4").mkdir(parents=True)
    pq.write_table(pa.table({
        "event_timestamp": pa.array([1772366400000000], pa.int64()), "event_name": ["page_view"],
        "user_pseudo_id": ["123.456"], "device": pa.array([{"category": "mobile"}], pa.struct([("category", pa.string())])),
        "event_params": pa.array([[{"key": "page_title", "value": {"string_value": "Home", "int_value": None}},
                                   {"key": "ga_session_id", "value": {"string_value": None, "int_value": 1772366}}]],
                                 pa.list_(param))}), tmp_path / "landing" / "ga4" / "events.parquet")
    (tmp_path / "landing" / "erp").mkdir(parents=True)
    pq.write_table(pa.table({"order_id": ["o1"], "user_id": ["u1"], "order_ts": pa.array([datetime(2026, 3, 1)], pa.timestamp("us")),
                             "Betrag": [12.5], "items": [1], "status": ["completed"]}), tmp_path / "landing" / "erp" / "a.parquet")
    write(tmp_path, "erp/b.csv", "order_id,user_id,order_ts,Betrag,items,status\no2,u1,2026-03-01T00:00:00Z,\"7,25\",1,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert rejects == [] and [r[2] for r in ledger] == ["ingested"] * 3, ledger
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        clicks = con.sql("SELECT user_id, session_id, category, event_ts FROM raw.clicks").fetchall()
        orders = con.sql("SELECT order_id, amount FROM raw.orders ORDER BY 1").fetchall()
    assert clicks == [("123.456", "1772366", "mobile", datetime(2026, 3, 1, 12))]
    assert orders == [("o1", Decimal("12.50")), ("o2", Decimal("7.25"))]
    with pytest.raises(SourceConfigError, match="reads another table"):
        parse(one_source('      user_id: "staging.stg_orders.user_id"\n'))


def test_a_typed_parquet_column_compared_with_a_text_literal_is_compared_as_its_type(tmp_path):
    """Only a string function's column is cast to text: ``amount < '100'`` on a DOUBLE compares numbers (cast to
    text, '99.5' < '100' was false and '10.0' <> '10' true: the filter kept the row it was written to drop)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    where: \"amount <> '10' AND amount < '100'\"\n")
    (tmp_path / "landing" / "shop").mkdir(parents=True)
    pq.write_table(pa.table({"order_id": ["o1", "o2", "o3"], "user_id": ["u1"] * 3, "amount": [10.0, 99.5, 150.0],
                             "order_ts": pa.array([datetime(2026, 3, 1)] * 3, pa.timestamp("us")), "items": [1] * 3,
                             "status": ["completed"] * 3}), tmp_path / "landing" / "shop" / "a.parquet")
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id FROM raw.orders").fetchall() == [("o2",)]



CASE_NO_ELSE = "CASE Status WHEN 'bezahlt' THEN 'completed' WHEN 'storniert' THEN 'cancelled'"


@pytest.mark.parametrize("case", [
    f"{CASE_NO_ELSE} END", f"lower({CASE_NO_ELSE} END)", f"trim(({CASE_NO_ELSE} END))", f"{CASE_NO_ELSE} ELSE NULL END",
    f"{CASE_NO_ELSE} ELSE CAST(NULL AS VARCHAR) END", f"{CASE_NO_ELSE} ELSE (NULL) END",
    "if(Status = 'bezahlt', 'completed', if(Status = 'storniert', 'cancelled', NULL))",
    "MAP {'bezahlt': 'completed', 'storniert': 'cancelled'}[Status]",
    "['completed', 'cancelled'][list_position(['bezahlt', 'storniert'], Status)]"])
def test_a_line_status_an_expression_leaves_null_is_rejected_not_taken_for_paid(tmp_path, case):
    """A status CASE without ELSE gave NULL for a new ERP status ('offen', payment pending), and the line was taken in
    as completed (an empty delivered status's default): a tester's 60 unpaid lines counted 9,913 EUR as revenue. The
    same CASE over an orders file rejected them. An empty delivered status keeps its default, also through an
    expression that passes it on (a reviewer's). Whatever the expression's form: the CASE inside a function, ELSE
    NULL, a MAP or list lookup (reviewers' each): a NULL from a non-empty value is a status it does not know."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  lines:\n    table: order_items\n    columns:\n"
        f"      status: \"{case}\"\n"
        "  plain:\n    table: order_items\n"
        # a reviewer's: an expression that passes an empty status through keeps its default
        "  passed:\n    table: order_items\n    columns: {status: \"lower(Status)\"}\n")
    header = "order_id,user_id,order_ts,product_id,quantity,unit_price,Status\n"
    write(tmp_path, "lines/a.csv", header + "o1,u1,2026-03-01T10:00:00Z,A,1,5,bezahlt\n"
                                            "o2,u1,2026-03-01T10:00:00Z,A,1,5,offen\n"
                                            "o3,u2,2026-03-01T10:00:00Z,B,1,5,storniert\n"
                                            "o4,u2,2026-03-01T10:00:00Z,B,1,5,\n")  # empty: its default
    write(tmp_path, "plain/a.csv", header.replace("Status", "status") + "p1,u3,2026-03-01T10:00:00Z,A,1,5,\n")
    write(tmp_path, "passed/a.csv", header + "q1,u4,2026-03-01T10:00:00Z,A,1,5,\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[1:7] for r in ledger] == [("lines/a.csv", "ingested", 4, 3, 0, 1), ("passed/a.csv", "ingested", 1, 1, 0, 0),
                                        ("plain/a.csv", "ingested", 1, 1, 0, 0)], ledger
    [reject] = rejects
    assert reject[4] == "unknown:status" and "gives no value for Status = 'offen': map each value" in reject[5], reject
    assert "coalesce" not in reject[5]  # a default would book what it does not know as paid (a tester's)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id, status FROM raw.order_items ORDER BY 1").fetchall() == [
            ("o1", "completed"), ("o3", "cancelled"), ("o4", "completed"), ("p1", "completed"), ("q1", "completed")]


def test_an_empty_text_in_a_parquet_file_is_no_value_as_in_a_csv_file(tmp_path):
    """`where: Kunde IS NOT NULL` left a guest's line (empty customer number) out of CSV files, but pandas writes it
    to Parquet as '': there it was kept and rejected as missing:user_id, told to be corrected (a tester's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    columns: {user_id: Kunde}\n"
                                           "    where: \"Kunde IS NOT NULL\"\n")
    header, rows = "order_id,Kunde,order_ts,amount,items,status\n", ["o1,k1", "o2,", "o3,k3"]
    write(tmp_path, "shop/a.csv", header + "".join(f"{r},2026-03-01T10:00:00Z,5,1,completed\n" for r in rows))
    pq.write_table(pa.table({"order_id": ["p1", "p2", "p3"], "Kunde": ["k1", "", "k3"], "amount": [5.0] * 3,
                             "order_ts": pa.array([datetime(2026, 3, 1)] * 3, pa.timestamp("us")), "items": [1] * 3,
                             "status": ["completed"] * 3}), tmp_path / "landing" / "shop" / "b.parquet")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[1:8] for r in ledger] == [("shop/a.csv", "ingested", 3, 2, 0, 0, 1),
                                        ("shop/b.parquet", "ingested", 3, 2, 0, 0, 1)] and rejects == []


@pytest.mark.parametrize("columns, where", [
    ({"quantity": "NULLIF(CAST(Qty AS INTEGER), 0)"}, None),  # the README's "NULL by design" idiom
    ({"quantity": "Qty", "status": "CASE CAST(Qty AS INTEGER) WHEN 0 THEN 'cancelled' WHEN -1 THEN 'returned' ELSE 'completed' END"}, None),
    ({"quantity": "Qty"}, "CAST(Qty AS INTEGER) BETWEEN 1 AND 99"),
    ({"quantity": "Qty"}, "CAST(Qty AS INTEGER) IN (1, 2, 3)"),
    ({"quantity": 'CAST("Qty" AS INTEGER)', "unit_price": "CAST(Qty AS INTEGER) * 2"}, None),
])
def test_a_part_duckdb_itself_repeats_still_fails_one_row_only(tmp_path, columns, where):
    """DuckDB's binder repeats an operand of its own (NULLIF, a simple CASE, BETWEEN, IN; "Qty" and Qty are one
    column): its common-subexpression pass then computed it once outside the TRYs, and one bad row failed the file
    (a reviewer's five forms; the text of the expressions showed no repeat)."""
    mapping = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in {"status": "'completed'", **columns}.items())
    (tmp_path / "sources.yaml").write_text("sources:\n  lines:\n    table: order_items\n"
                                           + (f"    where: {json.dumps(where)}\n" if where else "") + "    columns:\n" + mapping)
    write(tmp_path, "lines/a.csv", "order_id,user_id,order_ts,product_id,unit_price,Qty\n"
          "o1,u1,2026-03-01T10:00:00Z,A,1.5,2\no2,u1,2026-03-01T10:00:00Z,A,1.5,n/a\no3,u2,2026-03-01T10:00:00Z,B,1.5,3\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[:8] for r in ledger] == [("lines", "lines/a.csv", "ingested", 3, 2, 0, 1, 0)], ledger
    assert len(rejects) == 1  # mapping_failed, or the plain Qty's own rule first (not an integer)


def test_an_expression_written_twice_still_fails_one_row_only(tmp_path):
    """DuckDB computed a subexpression repeated inside one column, across two columns or inside the where once,
    outside the TRYs (its common-subexpression pass), and the row's error failed the file again (a reviewer's)."""
    cast = "CAST(Qty AS INTEGER)"
    (tmp_path / "sources.yaml").write_text(
        f"sources:\n  lines:\n    table: order_items\n    where: \"{cast} > 0 AND {cast} < 100\"\n    columns:\n"
        f"      quantity: CASE WHEN {cast} > 0 THEN {cast} END\n      unit_price: {cast} * 2\n"
        "      status: \"'completed'\"\n")
    write(tmp_path, "lines/a.csv", "order_id,user_id,order_ts,product_id,Qty\n"
          "o1,u1,2026-03-01T10:00:00Z,A,2\no2,u1,2026-03-01T10:00:00Z,A,n/a\no3,u2,2026-03-01T10:00:00Z,B,200\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[:8] for r in ledger] == [("lines", "lines/a.csv", "ingested", 3, 1, 0, 1, 1)]
    assert [r[4] for r in rejects] == ["mapping_failed:where"]


def test_a_computed_event_type_a_row_fails_on_is_a_reject(tmp_path):
    """The event names were listed, and the funnel stage computed, from the raw expression outside any TRY: one bad
    row failed the whole clicks file (a reviewer's)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  web:\n    table: clicks\n    columns:\n"
        "      event_type: \"CASE WHEN NULLIF(CAST(Code AS INTEGER), 0) = 1 THEN 'view' ELSE 'purchase' END\"\n")
    write(tmp_path, "web/a.csv", "event_id,user_id,session_id,event_ts,Code\n"
          "e1,u1,s1,2026-03-01T10:00:00Z,1\ne2,u1,s1,2026-03-01T10:01:00Z,n/a\ne3,u2,s2,2026-03-01T10:02:00Z,2\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[:8] for r in ledger] == [("web", "web/a.csv", "ingested", 3, 2, 0, 1, 0)], ledger
    assert [r[4] for r in rejects] == ["mapping_failed:event_type"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT event_id, event_type, funnel_stage FROM raw.clicks ORDER BY 1").fetchall() == [
        ("e1", "view", "view"), ("e3", "purchase", "purchase")]
    con.close()


def test_an_order_status_an_expression_leaves_null_is_unknown_with_its_value_not_missing(tmp_path):
    """An order's status is required: its CASE's NULL for `payment_review` was rejected as "missing status", without
    the value or the fix (a tester's); an empty status field is still missing."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: orders\n    columns:\n"
        "      status: \"CASE state WHEN 'complete' THEN 'completed' WHEN 'canceled' THEN 'cancelled' END\"\n")
    write(tmp_path, "shop/a.csv", "order_id,user_id,order_ts,amount,items,state\n"
                                  "o1,u1,2026-03-01T10:00:00Z,5,1,complete\n"
                                  "o2,u1,2026-03-01T10:00:00Z,5,1,payment_review\n"
                                  "o3,u2,2026-03-01T10:00:00Z,5,1,\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [r[1:7] for r in ledger] == [("shop/a.csv", "ingested", 3, 1, 0, 2)], ledger
    by_rule = {r[4]: r[5] for r in rejects}
    assert set(by_rule) == {"unknown:status", "missing:status"}, by_rule
    assert "gives no value for state = 'payment_review': map each value" in by_rule["unknown:status"], by_rule


def test_a_struct_field_no_row_of_a_file_carries_is_named_with_a_mapping_that_fits_every_file(tmp_path):
    """A Segment drop converted from NDJSON with read_json has in its STRUCT only the keys its events carry: a drop of
    page calls has no ``properties.product_id``. The file failed with DuckDB's 'Could not find key' and advice to CAST,
    which cannot help (a tester's, session 33); the message names the field, the fields the file has, and a mapping
    that reads the key through JSON (NULL where absent), which then takes the file in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "landing" / "segment").mkdir(parents=True)
    props = pa.struct([("path", pa.string()), ("url", pa.string())])
    pq.write_table(pa.table({
        "messageId": ["m1", "m2"], "anonymousId": ["d1", "d1"], "event": ["Page Viewed", "Page Viewed"],
        "timestamp": pa.array([datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 11)], pa.timestamp("us")),
        "properties": pa.array([{"path": "/", "url": "u"}, {"path": "/cart", "url": None}], props)}),
        tmp_path / "landing" / "segment" / "a.parquet")
    mapping = ("sources:\n  segment:\n    table: clicks\n    columns: {event_id: messageId, user_id: anonymousId, "
               "session_id: anonymousId, event_ts: timestamp, event_type: event, product_id: %s}\n")
    (tmp_path / "sources.yaml").write_text(mapping % "properties.product_id")
    _, ledger, _ = ingest(tmp_path)
    assert ledger[0][2] == "failed", ledger
    message = ledger[0][8]
    assert "properties has no field 'product_id' in this file (its fields: path, url)" in message, message
    assert "json_extract_string(to_json(properties), '$.product_id')" in message, message
    assert "CAST(col AS VARCHAR)" not in message, message
    # of two STRUCTs read for one key, the one that lacks it is named
    rows = {"messageId": ["m1"], "anonymousId": ["d1"], "event": ["Page Viewed"],
            "timestamp": pa.array([datetime(2026, 3, 1, 10)], pa.timestamp("us")),
            "properties": pa.array([{"path": "/", "url": "u"}], props)}
    (tmp_path / "landing" / "segment" / "a.parquet").unlink()
    pq.write_table(pa.table({**rows, "context": pa.array([{"url": "x"}], pa.struct([("url", pa.string())]))}),
                   tmp_path / "landing" / "segment" / "b.parquet")
    (tmp_path / "sources.yaml").write_text(mapping % "\"coalesce(properties.path, context.path)\"")
    _, ledger, _ = ingest(tmp_path)
    [b] = [r for r in ledger if r[1] == "segment/b.parquet"]
    assert "context has no field 'path' in this file (its fields: url)" in b[8], b[8]
    (tmp_path / "landing" / "segment" / "b.parquet").unlink()
    pq.write_table(pa.table({**rows, "messageId": ["m2"]}), tmp_path / "landing" / "segment" / "c.parquet")
    (tmp_path / "sources.yaml").write_text(mapping % "\"json_extract_string(to_json(properties), '$.product_id')\"")
    _, ledger, rejects = ingest(tmp_path)
    [c] = [r for r in ledger if r[1] == "segment/c.parquet"]
    assert rejects == [] and c[2:5] == ("ingested", 1, 1), ledger


def test_the_json_mapping_offered_for_a_key_that_is_no_plain_name_reads_that_key(tmp_path):
    """Segment property names may hold a dot ("a.b"): the mapping offered read '$.a.b', which JSON paths take as key a,
    then b: NULL in every file, the field's values lost without a word. Offered as a JSON Pointer ('/a.b'), copied as
    the message writes it, it reads the key where a file has it."""
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "landing" / "segment").mkdir(parents=True)
    rows = {"messageId": ["m1"], "anonymousId": ["d1"], "event": ["Page Viewed"],
            "timestamp": pa.array([datetime(2026, 3, 1, 10)], pa.timestamp("us"))}
    fields = pa.struct([("path", pa.string()), ("x,y", pa.string())])  # a name with a comma: its fields were split by hand
    pq.write_table(pa.table({**rows, "properties": pa.array([{"path": "/", "x,y": "1"}], fields)}),
                   tmp_path / "landing" / "segment" / "a.parquet")
    mapping = ("sources:\n  segment:\n    table: clicks\n    columns: {event_id: messageId, user_id: anonymousId, "
               "session_id: anonymousId, event_ts: timestamp, event_type: event, product_id: %s}\n")
    (tmp_path / "sources.yaml").write_text(mapping % "'properties.\"a.b\"'")
    _, ledger, _ = ingest(tmp_path)
    assert ledger[0][2] == "failed" and "properties has no field 'a.b' in this file (its fields: path, x,y)" in \
        ledger[0][8], ledger
    offered = re.search(r'product_id: ("(?:[^"\\]|\\.)*")', ledger[0][8]).group(1)
    assert "'/a.b'" in offered, offered
    (tmp_path / "landing" / "segment" / "a.parquet").unlink()
    props = pa.struct([("path", pa.string()), ("a.b", pa.string())])
    pq.write_table(pa.table({**rows, "messageId": ["m2"], "properties": pa.array([{"path": "/", "a.b": "P7"}], props)}),
                   tmp_path / "landing" / "segment" / "b.parquet")
    (tmp_path / "sources.yaml").write_text(mapping % offered)
    _, ledger, rejects = ingest(tmp_path)
    [b] = [r for r in ledger if r[1] == "segment/b.parquet"]
    assert rejects == [] and b[2:5] == ("ingested", 1, 1), ledger
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        assert con.sql("SELECT product_id FROM raw.clicks WHERE event_id = 'm2'").fetchall() == [("P7",)]


@pytest.mark.parametrize("product_id", ["items.item_id", "items"])
def test_a_ga4_items_list_mapped_as_a_struct_says_it_is_a_list_and_how_to_read_an_item(tmp_path, product_id):
    """GA4's ``items`` is a LIST of STRUCTs. The file's line cut its type to 60 characters, ``STRUCT(item_id VARCHAR,
    ... VAR``, without the ``[]``, and advised ``column.field for a STRUCT``: ``items.item_id``, which the same line then
    refused again (DuckDB reads it as the list indexed by a text). It now says the column is a list and how to read its
    first item (a session-34 tester's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sources.yaml").write_text(
        "sources:\n  ga4:\n    table: clicks\n"
        "    columns: {user_id: user_pseudo_id, event_ts: event_timestamp, event_type: event_name, session_id: sid,\n"
        f"              product_id: \"{product_id}\"}}\n")
    item = pa.struct([("item_id", pa.string()), ("item_name", pa.string()), ("item_category", pa.string()),
                      ("price", pa.float64())])
    (tmp_path / "landing" / "ga4").mkdir(parents=True)
    pq.write_table(pa.table({
        "event_timestamp": pa.array([1772366400000000], pa.int64()), "event_name": ["purchase"], "sid": ["s1"],
        "user_pseudo_id": ["123.456"],
        "items": pa.array([[{"item_id": "A", "item_name": "a", "item_category": "c", "price": 1.0},
                            {"item_id": "B", "item_name": "b", "item_category": "c", "price": 2.0}]], pa.list_(item))}),
        tmp_path / "landing" / "ga4" / "events.parquet")
    _, ledger, _ = ingest(tmp_path)
    message = ledger[0][8]
    assert ledger[0][2] == "failed" and "product_id is read from a nested value (STRUCT(" in message, ledger
    assert "items is a list (STRUCT(item_id VARCHAR, item_name VARCHAR, item_category VAR...)[]): " in message, message
    assert "items[1].field reads its first item" in message, message
    (tmp_path / "sources.yaml").write_text((tmp_path / "sources.yaml").read_text().replace(product_id, "items[1].item_id"))
    _, ledger, _ = ingest(tmp_path)
    assert ledger[0][2] == "ingested", ledger
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT product_id FROM raw.clicks").fetchall() == [("A",)]
