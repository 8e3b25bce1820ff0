"""sources.yaml: parsing and refusing mappings, and real ingestion of the user's own layouts on real DuckDB files."""

import hashlib
import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError, parse_sources
from seg_assets.ingest.sources import LINK_REFUSED, LINK_ROOTS_ENV, discover_files
from seg_assets_tests.sources_ingest import ingest, parse, write


def test_a_file_in_another_encoding_fails_with_the_reason_and_the_fix_not_the_row(tmp_path):
    path = tmp_path / "landing" / "orders" / "cp1252.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("order_id,user_id,order_ts,amount,items,status\no1,Zoë Müller,2026-03-01T00:00:00Z,5,1,completed\n"
                     .encode("cp1252"))
    _, ledger, _ = ingest(tmp_path)
    status, message = ledger[0][2], ledger[0][8]
    assert status == "failed" and "\n" not in message
    assert "not utf-8 encoded" in message and "save the file as UTF-8" in message
    assert "Original Line" not in message and "M\ufffdller" not in message and "ller" not in message


def test_a_file_whose_every_row_was_rejected_is_read_again_once_its_source_changes(tmp_path):
    """A timestamp_format that fits no row rejects every row; fixing it in sources.yaml took none of them in (the same
    bytes under a new name were counted as duplicates of rows never accepted). Nothing of the file was taken in, so it
    is read again, its ledger row and rejects replaced. A file with some rows taken in is not (first delivery wins)."""
    rows = "".join(f"o{i},u{i},01.03.2026 10:0{i},5,1,completed\n" for i in range(3))
    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\n" + rows)
    write(tmp_path, "orders/b.csv", "order_id,user_id,order_ts,amount,items,status\n"
                                    "p1,u1,2026-03-01T10:00:00Z,5,1,completed\np2,u2,01.03.2026 10:00,5,1,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert sorted((r[1], r[4], r[6]) for r in ledger) == [("orders/a.csv", 0, 3), ("orders/b.csv", 1, 1)]
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    timestamp_format: '%d.%m.%Y %H:%M'\n")
    _, ledger, rejects = ingest(tmp_path)
    assert sorted((r[1], r[2], r[3], r[4], r[5], r[6]) for r in ledger) == [
        ("orders/a.csv", "ingested", 3, 3, 0, 0), ("orders/b.csv", "ingested", 2, 1, 0, 1)]  # b: kept as it was
    assert [r[2] for r in rejects] == ["orders/b.csv"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT order_id, strftime(order_ts, '%H:%M') FROM raw.orders ORDER BY 1").fetchall() == [
        ("o0", "10:00"), ("o1", "10:01"), ("o2", "10:02"), ("p1", "10:00")]
    con.close()


def test_a_mapping_that_does_not_fit_the_file_fails_that_file_only_with_a_reason(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: orders\n    columns: {order_id: id, user_id: Customer, amount: total, items: 1}\n")
    write(tmp_path, "shop/a.csv", "id,customer,total,order_ts,status\no1,u1,10,2026-03-01T00:00:00Z,completed\n")
    write(tmp_path, "shop/b.csv", "id,client,total,order_ts,status\no2,u2,10,2026-03-01T00:00:00Z,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger] == [("shop/a.csv", "ingested", 1), ("shop/b.csv", "rejected_file", 0)]
    # named as the mapping writes it (it read 'customer', lower-cased: a tester's 'kunde' for Kunde)
    assert "Customer not in the file" in ledger[1][8] and "from 'Customer'" in ledger[1][8] and "sources.yaml" in ledger[1][8]
    assert len(rejects) == 1


def test_a_missing_column_is_named_as_the_mapping_writes_it_not_as_a_literal_spelling_it(tmp_path):
    """A reviewer's: the spelling was found by a pattern over the text, which took the literal 'menge' for MENGE."""
    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    columns: {order_id: id, user_id: u, "
                                           "amount: \"CASE WHEN kind = 'menge' THEN MENGE * price ELSE price END\", items: 1}\n")
    write(tmp_path, "shop/a.csv", "id,u,kind,price,order_ts,status\no1,u1,x,10,2026-03-01T00:00:00Z,completed\n")
    _, ledger, _ = ingest(tmp_path)
    assert "MENGE not in the file" in ledger[0][8] and "from 'MENGE'" in ledger[0][8], ledger[0][8]


def test_a_file_rejected_for_a_mapping_mistake_is_read_again_once_the_mapping_is_fixed(tmp_path):
    """Its rows were lost for good: the ledger took the rejected file in, and a re-delivery was a duplicate."""
    mapping = "sources:\n  shop:\n    table: orders\n    columns: {{order_id: id, user_id: {user}, amount: total, items: 1}}\n"
    (tmp_path / "sources.yaml").write_text(mapping.format(user="custmer"))
    write(tmp_path, "shop/a.csv", "id,customer,total,order_ts,status\no1,u1,10,2026-03-01T00:00:00Z,completed\n"
          "o2,u2,12,2026-03-01T00:00:00Z,completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[3], r[6]) for r in ledger] == [("shop/a.csv", "rejected_file", 2, 2)] and len(rejects) == 2
    report, ledger, rejects = ingest(tmp_path)  # the same mapping: not read again, nothing counted twice
    assert report.skipped == ["shop/a.csv"] and len(ledger) == 1 and len(rejects) == 2
    (tmp_path / "sources.yaml").write_text(mapping.format(user="customer"))
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[3], r[4]) for r in ledger] == [("shop/a.csv", "ingested", 2, 2)] and rejects == []
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert con.sql("SELECT order_id, user_id FROM raw.orders ORDER BY 1").fetchall() == [("o1", "u1"), ("o2", "u2")]
    con.close()
    report, ledger, _ = ingest(tmp_path)
    assert report.skipped == ["shop/a.csv"] and len(ledger) == 1


def test_a_copy_of_a_rejected_file_is_no_duplicate_and_both_are_read_again_after_the_fix(tmp_path):
    """A copy counted as duplicates of a rejected file's rows made the rows vanish once the first was read again."""
    mapping = "sources:\n  shop:\n    table: orders\n    columns: {{order_id: id, user_id: {user}, amount: total, items: 1}}\n"
    (tmp_path / "sources.yaml").write_text(mapping.format(user="custmer"))
    text = "id,customer,total,order_ts,status\no1,u1,10,2026-03-01T00:00:00Z,completed\no2,u2,12,2026-03-01T00:00:00Z,completed\n"
    write(tmp_path, "shop/a.csv", text)
    write(tmp_path, "shop/b.csv", text)
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[6]) for r in ledger] == [("shop/a.csv", "rejected_file", 2), ("shop/b.csv", "rejected_file", 2)]
    (tmp_path / "sources.yaml").write_text(mapping.format(user="customer"))
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[4], r[5]) for r in ledger] == [("shop/a.csv", "ingested", 2, 0), ("shop/b.csv", "duplicate_file", 0, 2)]
    assert rejects == []
    # files rejected before the ledger recorded the mapping keep their outcome (no surprise re-read after an upgrade)
    (tmp_path / "sources.yaml").write_text(mapping.format(user="custmer"))
    write(tmp_path, "shop/c.csv", text.replace("o1,", "o3,").replace("o2,", "o4,"))
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.sql("UPDATE meta.ingest_ledger SET source_key = NULL WHERE file_name = 'shop/c.csv'")
    (tmp_path / "sources.yaml").write_text(mapping.format(user="customer"))
    report, ledger, _ = ingest(tmp_path)
    assert "shop/c.csv" in report.skipped and ledger[-1][2] == "rejected_file"


def test_a_file_taken_in_with_rejected_rows_gets_one_line_naming_it_and_the_fix(tmp_path):
    from seg_assets.refresh import _files_not_taken

    good = "".join(f"o{i},u{i},2026-03-0{i}T10:00:00Z,10,1,completed\n" for i in range(1, 6))
    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\n" + good +
          "o8,u8,2026-13-45T10:00:00Z,10,1,completed\no9,u9,31/10/2026,10,1,completed\no10,u10,2026-03-01T10:00:00Z,-5,1,completed\n")
    ingest(tmp_path)
    [problem] = _files_not_taken(tmp_path / "warehouse.duckdb", "r1")
    assert (problem.kind, problem.where) == ("warning", "orders/a.csv")
    assert problem.message.startswith("3 of 8 rows rejected: unparseable:order_ts (2), ")
    assert "first: unparseable order_ts: '2026-13-45T10:00:00Z'" in problem.message
    assert "raw.rejects" in problem.message and "timestamp_format in sources.yaml" in problem.message


def test_a_file_with_every_row_rejected_is_named_as_not_taken_in(tmp_path):
    """902 of 902 Shopify rows rejected was a warning like any other: the closing line named no file, --strict exited 0."""
    from seg_assets.refresh import _files_not_taken

    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\n"
                                    "o1,u1,05.02.2026 23:14,10,1,completed\no2,u2,06.02.2026 10:00,10,1,completed\n")
    ingest(tmp_path)
    [problem] = _files_not_taken(tmp_path / "warehouse.duckdb", "r1")
    assert (problem.kind, problem.where) == ("file", "orders/a.csv")
    assert problem.message.startswith("2 of 2 rows rejected, none taken in: unparseable:order_ts (2); ")
    assert "read again" in problem.message and "timestamp_format in sources.yaml" in problem.message


def test_a_rejected_value_names_the_file_column_or_expression_it_was_mapped_from(tmp_path):
    """'missing product_id' on 21 Shopify lines did not say the column was 'Lineitem sku'."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: order_items\n    columns:\n      order_id: Name\n      product_id: Lineitem sku\n"
        "      quantity: Lineitem quantity\n      unit_price: Lineitem price\n"
        "      status: \"CASE WHEN Paid = 'yes' THEN 'completed' ELSE 'pending' END\"\n")
    write(tmp_path, "shop/a.csv", "Name,user_id,order_ts,Lineitem sku,Lineitem quantity,Lineitem price,Paid\n"
                                  "#1,u1,2026-03-01T10:00:00Z,,1,5,yes\n#2,u1,2026-03-01T10:00:00Z,p1,1,5,no\n"
                                  "#3,u1,2026-03-01T10:00:00Z,p1,1,5,yes\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[4], r[6]) for r in ledger] == [(1, 2)]
    assert [r[5] for r in rejects] == ["missing product_id (from Lineitem sku)",
                                       "unknown status (from CASE WHEN Paid = 'yes' THEN 'completed' ELSE 'pending' END) 'pending'"]


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


@pytest.mark.parametrize("name, stage", [
    ("Product Added", "add_to_cart"), ("Cart Viewed", "other"), ("Product Viewed", "view"), ("Product List Viewed", "view"),
    ("Products Searched", "search"), ("Checkout Started", "checkout"), ("Order Completed", "purchase"),
])
def test_segments_ecommerce_event_names_land_in_their_stage(name, stage):
    from seg_assets.ingest.events import stage_of

    assert stage_of(name) == stage  # "Product Added" was a view and "Cart Viewed" an add to cart (keywords)


@pytest.mark.parametrize("name, stage", [
    # Klaviyo-style names: the verb before the noun; "review" holds "view", "Subscribed to List" holds "list"
    ("Placed Order", "purchase"), ("Ordered Product", "purchase"), ("Completed Order", "purchase"),
    ("Order Submitted", "purchase"), ("place_order", "purchase"), ("Viewed Product", "view"), ("Started Checkout", "checkout"),
    ("Added to Cart", "add_to_cart"), ("item_added", "add_to_cart"), ("scAdd", "add_to_cart"), ("Wrote Review", "other"),
    ("review_submitted", "other"), ("Subscribed to List", "other"), ("cart_view", "other"), ("Order Cancelled", "other"),
    ("purchase_refund", "other"), ("add_payment_info", "checkout"), ("Checked Out", "checkout"),
    ("productview", "view"), ("ordercomplete", "purchase"),  # run together: patterns inside the name
    # a purchase that failed is none, a completed checkout step is still checking out, "buy now" starts a checkout
    ("purchase_failed", "other"), ("Payment Declined", "other"), ("paymentfailed", "other"),
    ("Completed Checkout Step", "checkout"), ("checkout_step_2_completed", "checkout"), ("Buy Now Clicked", "checkout"),
    ("one_click_buy", "purchase"), ("buy_now_purchase_completed", "purchase"),
])
def test_event_names_are_read_by_their_words(name, stage):
    from seg_assets.ingest.events import stage_of

    assert stage_of(name) == stage


def test_a_gzip_file_still_being_written_is_left_to_the_next_run(tmp_path):
    """Its last bytes tell nothing (compressed), so the landing rule cannot see a .csv.gz cut short: reading it can."""
    import gzip

    text = "order_id,user_id,order_ts,amount,items,status\n" + "".join(
        f"o{i},u{i % 50},2026-03-01T10:00:00Z,{i % 90 + 1}.25,1,completed\n" for i in range(20_000))
    whole = gzip.compress(text.encode())
    path = tmp_path / "landing" / "orders" / "a.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(whole[: len(whole) // 2])  # the writer has not finished
    report, ledger, rejects = ingest(tmp_path)
    assert (ledger, rejects) == ([], []) and report.unsettled == {"orders/a.csv.gz": "its gzip stream has no end yet"}
    path.write_bytes(whole)  # finished: read whole by the next run
    report, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger] == [("orders/a.csv.gz", "ingested", 20_000)] and not report.unsettled


def test_a_semicolon_separated_file_is_told_so_and_read_once_its_source_says_so(tmp_path):
    write(tmp_path, "orders/a.csv", "order_id;user_id;order_ts;amount;items;status\no1;u1;2026-03-01T10:00:00Z;10,5;1;completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert ledger[0][2] == "rejected_file" and 'the file is not separated by ","' in ledger[0][8]
    assert 'sources: {orders: {table: orders, csv: {delimiter: ";"}}}' in ledger[0][8]
    assert {r[4] for r in rejects} == {"not_comma_separated:file"}  # what the reject-ratio check counts it as
    # the fix the message names: the same file is read again (its source now reads files differently)
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    csv: {delimiter: ';'}\n"
                                           "    columns: {amount: \"replace(amount, ',', '.')\"}\n")
    _, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger][-1] == ("orders/a.csv", "ingested", 1)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT order_id, amount::DOUBLE FROM raw.orders").fetchall() == [("o1", 10.5)]
    con.close()


@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_a_windows_export_is_read_with_its_source_dialect(tmp_path, suffix):
    """';' and Windows-1252 (a euro sign and curly quotes, which DuckDB's own Latin-1 refuses), quoted fields with the
    delimiter and a line break inside, a tab-separated second source: every value as written."""
    import gzip

    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  erp:\n    table: order_items\n    folder: erp\n    csv: {delimiter: ';', encoding: cp1252}\n"
        "  web:\n    table: clicks\n    folder: web\n    csv: {delimiter: \"\\t\", encoding: latin-1}\n")
    lines = ("order_id;user_id;order_ts;product_id;quantity;unit_price;description;status\r\n"
             "A1;Zoë;2026-03-01T10:00:00Z;p1;2;3.5;\"Tasse \u201eCafé\u201c; 2 € \r\nrot\";completed\r\n"
             "A1;Zoë;2026-03-01T10:00:00Z;p2;1;9;Crème;completed\r\n").encode("cp1252")
    clicks = "event_id\tuser_id\tsession_id\tevent_ts\tevent_type\tcategory\ne1\tZoë\ts1\t2026-03-01T09:00:00Z\tview\tKüche\n"
    for rel, data in (("erp/a", lines), ("web/b", clicks.encode("latin-1"))):
        path = tmp_path / "landing" / f"{rel}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if suffix == "csv.gz" else data)
    _, ledger, rejects = ingest(tmp_path)
    assert sorted((r[1], r[2], r[4]) for r in ledger) == [(f"erp/a.{suffix}", "ingested", 2), (f"web/b.{suffix}", "ingested", 1)]
    assert rejects == []
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.sql("SELECT user_id, description FROM raw.order_items ORDER BY product_id").fetchall() == [
        ("Zoë", "Tasse \u201eCafé\u201c; 2 € \r\nrot"), ("Zoë", "Crème")]
    assert con.sql("SELECT user_id, category FROM raw.clicks").fetchall() == [("Zoë", "Küche")]
    con.close()


def test_a_file_not_in_its_sources_encoding_fails_alone_with_the_byte_and_the_fix(tmp_path):
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    csv: {encoding: cp1252}\n")
    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    path = tmp_path / "landing" / "orders" / "b.csv"
    path.write_bytes(b"order_id,user_id,order_ts,amount,items,status\no2,u\x81,2026-03-01T10:00:00Z,10,1,completed\n")
    _, ledger, _ = ingest(tmp_path)
    by_file = {r[1]: (r[2], r[8]) for r in ledger}
    assert by_file["orders/a.csv"][0] == "ingested" and by_file["orders/b.csv"][0] == "failed"
    assert "not cp1252 encoded: byte 0x81 at byte offset 50" in by_file["orders/b.csv"][1]
    assert "csv encoding in sources.yaml" in by_file["orders/b.csv"][1]


@pytest.mark.parametrize("csv, words", [
    ("{delimiter: ';;'}", "one character"), ("{delimiter: '\"'}", "one character"), ("{delimiter: a}", "one character"),
    ("{encoding: klingon}", "unknown csv encoding"), ("{encoding: rot13}", "unknown csv encoding"),
    ("{encoding: utf-16}", "convert the files to UTF-8"), ("{quote: \"'\"}", "quote"),
])
def test_a_csv_dialect_that_cannot_be_read_is_refused(csv, words):
    with pytest.raises(SourceConfigError, match=words):
        parse(f"sources:\n  shop:\n    table: orders\n    csv: {csv}\n")


def test_the_contract_dialect_keeps_a_sources_key():
    """Sources written before the csv option keep their key (a changed key re-reads every file rejected as a whole)."""
    plain, spelled = parse("sources:\n  shop:\n    table: orders\n"), parse(
        "sources:\n  shop:\n    table: orders\n    csv: {delimiter: ',', encoding: UTF8}\n")
    semi = parse("sources:\n  shop:\n    table: orders\n    csv: {delimiter: ';'}\n")
    assert plain[0].key == spelled[0].key == "2f8ed0a2d8be" and semi[0].key != plain[0].key  # the key before the option


def test_a_landing_folder_linked_to_an_allowed_share_is_read(tmp_path, monkeypatch):
    export = tmp_path / "share" / "orders"
    export.mkdir(parents=True)
    (export / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    (tmp_path / "root" / "landing").mkdir(parents=True)
    (tmp_path / "root" / "landing" / "orders").symlink_to(export)
    (tmp_path / "root" / "landing" / "loop").symlink_to(tmp_path / "root" / "landing")  # a link loop ends
    (tmp_path / "root" / "landing" / "latest").symlink_to(tmp_path / "root" / "landing" / "orders")  # not followed
    (export / "back").symlink_to(export)  # a loop outside ends too
    _, ledger, _ = ingest(tmp_path / "root")
    assert ledger == []  # the share is not allowed: nothing read through the link
    assert discover_files(tmp_path / "root" / "landing", parse_sources("", Path("sources.yaml")))[1] == {"orders": LINK_REFUSED}
    monkeypatch.setenv(LINK_ROOTS_ENV, str(tmp_path / "share"))
    _, ledger, _ = ingest(tmp_path / "root")
    assert [(r[1], r[2], r[4]) for r in ledger] == [("orders/a.csv", "ingested", 1)]


def test_a_link_out_of_landing_is_not_read(tmp_path):
    """Whoever drops files can often make links (SFTP): a link to a system file or to the data root's own files (the
    warehouse, the Dagster home) is named as not read, and nothing of it reaches the warehouse."""
    secret = tmp_path / "outside" / "secret_orders.csv"
    secret.parent.mkdir()
    secret.write_text("order_id,user_id,order_ts,amount,items,status\nSECRET1,uSECRET,2026-03-01T10:00:00Z,999,1,completed\n")
    write(tmp_path / "root", "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    landing = tmp_path / "root" / "landing"
    (landing / "orders" / "zz_secret.csv").symlink_to(secret)
    (landing / "orders" / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "orders" / "db.csv").symlink_to(tmp_path / "root" / "sources.yaml")
    (landing / "orders" / "sub").symlink_to(secret.parent)
    (landing / "orders" / "copy.csv").symlink_to(landing / "orders" / "a.csv")  # inside landing: read (a duplicate)
    os.mkfifo(landing / "orders" / "pipe.csv")  # named, not skipped in silence (or read: it would wait for a writer)
    (landing / "orders" / "gone.csv").symlink_to("moved_away.csv")  # a link to nothing inside landing: named too
    _, ignored = discover_files(landing, parse_sources("", Path("sources.yaml")))
    assert ignored == {f"orders/{n}": LINK_REFUSED for n in ("zz_secret.csv", "passwd.csv", "db.csv", "sub")} | {
        "orders/pipe.csv": "not a regular file (a pipe, socket or device): not read",
        "orders/gone.csv": "a link to nothing (its target is gone): not read; land the file itself"}
    report, ledger, rejects = ingest(tmp_path / "root")
    assert sorted((r[1], r[2]) for r in ledger) == [("orders/a.csv", "ingested"), ("orders/copy.csv", "duplicate_file")]
    assert rejects == []


def test_a_link_swapped_in_after_discovery_is_not_read(tmp_path, monkeypatch):
    """Discovery saw a plain file; while ingestion waited for it to settle, it became a link to a file outside
    (``ln -sf /outside/secret.csv tmp && mv tmp young.csv``): the file is opened once and checked as opened, so
    nothing of the secret is read (it was ingested into raw.orders)."""
    from seg_assets.ingest import loader

    secret = tmp_path / "outside" / "secret_orders.csv"
    secret.parent.mkdir()
    secret.write_text("order_id,user_id,order_ts,amount,items,status\nSECRET1,uSECRET,2026-03-01T10:00:00Z,999,1,completed\n")
    write(tmp_path / "root", "orders/young.csv", "order_id,user_id,order_ts,amount,items,status\n"
          "o1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    young = tmp_path / "root" / "landing" / "orders" / "young.csv"
    settle = loader.wait_until_settled

    def swap_while_waiting(paths, *args):
        swapped = young.with_suffix(".tmp")
        swapped.symlink_to(secret)
        os.replace(swapped, young)
        return settle(paths, *args)

    monkeypatch.setattr(loader, "wait_until_settled", swap_while_waiting)
    _, ledger, rejects = ingest(tmp_path / "root")
    assert [(r[1], r[2]) for r in ledger] == [("orders/young.csv", "failed")] and "a link out of the landing" in ledger[0][8]
    assert "land the file itself" in ledger[0][8] and "permissions" not in ledger[0][8]
    with duckdb.connect(str(tmp_path / "root" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM raw.orders").fetchall() == [(0,)] and rejects == []


@pytest.mark.parametrize("in_place", [False, True])
def test_a_file_changed_while_hashed_is_left_to_the_next_run(tmp_path, monkeypatch, in_place):
    """An exporter that rewrites a fixed name between the hash and the read (by rename): the ledger held A's hash with
    B's rows, and A's rows, landed again later, counted as duplicates of rows never taken in. Rewritten in place while
    hashed: the identity was taken after the hash, with the same result. Now the file is left to the next run (no
    ledger row: it failed, with advice to fix a file that was only still being written), which reads it whole, under
    the hash of what it read."""
    from seg_assets.ingest import loader

    head = "order_id,user_id,order_ts,amount,items,status\n"
    write(tmp_path, "orders/a.csv", head + "oA,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    a = tmp_path / "landing" / "orders" / "a.csv"
    hashed = loader.file_sha256
    b = head + "oB,u2,2026-03-01T10:00:00Z,12,1,completed\n" + "oC,u3,2026-03-01T11:00:00Z,9,1,completed\n"

    def hash_then_change(path):
        out = hashed(path)
        if not (tmp_path / "changed").exists():
            (tmp_path / "changed").touch()
            if in_place:
                a.write_text(b)
            else:
                a.with_name("b.tmp").write_text(b)
                os.replace(a.with_name("b.tmp"), a)
        return out

    monkeypatch.setattr(loader, "file_sha256", hash_then_change)
    report, ledger, _ = ingest(tmp_path)
    assert ledger == [] and "changed while it was read" in report.unsettled["orders/a.csv"]
    _, ledger, _ = ingest(tmp_path)  # the next run reads it whole
    assert [(r[1], r[2], r[4]) for r in ledger] == [("orders/a.csv", "ingested", 2)]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id FROM raw.orders ORDER BY 1").fetchall() == [("oB",), ("oC",)]
        assert con.sql("SELECT content_sha256 FROM meta.ingest_ledger WHERE status = 'ingested'").fetchall() == [
            (hashlib.sha256(a.read_bytes()).hexdigest(),)]


@pytest.mark.parametrize("when", ["after_it_settled", "while_it_was_read"])
def test_a_writer_that_goes_on_after_a_pause_is_not_read_half_written(tmp_path, monkeypatch, when):
    """A writer paused at a line end long enough for the file to settle, then went on while the files before it were
    read (the file is hashed and read later): the half-written line it was adding was stored ('fashi' for 'fashion',
    or a truncated-row reject beside the whole row read next run). Found by an outside tester with a 39 MB file read
    first. Changed after it settled, or during its own read: nothing of it is taken in, and the next run reads it."""
    from seg_assets.ingest import loader

    head = "order_id,user_id,order_ts,amount,items,status\n"
    write(tmp_path, "orders/a.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    a = tmp_path / "landing" / "orders" / "a.csv"

    def go_on():
        with open(a, "a") as handle:  # the writer resumes: half a line, then (next run) the rest
            handle.write("o2,u2,2026-03-01T11:00:00Z,131.52,1,compl")

    if when == "after_it_settled":
        settle = loader.wait_until_settled
        monkeypatch.setattr(loader, "wait_until_settled", lambda *args: (settle(*args), go_on())[0])
    else:
        stage = loader.stage_file
        monkeypatch.setattr(loader, "stage_file", lambda *args: (stage(*args), go_on())[0])
    report, ledger, rejects = ingest(tmp_path)
    assert ledger == [] and rejects == [] and "orders/a.csv" in report.unsettled, (ledger, report.unsettled)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM raw.orders").fetchall() == [(0,)]
    monkeypatch.undo()
    with open(a, "a") as handle:
        handle.write("eted\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger] == [("orders/a.csv", "ingested", 2)] and rejects == []
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id, amount::DOUBLE, status FROM raw.orders ORDER BY 1").fetchall() == [
            ("o1", 10.0, "completed"), ("o2", 131.52, "completed")]


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


def test_rejects_keep_the_columns_the_mapping_reads_not_the_names_and_phones_beside_them(tmp_path):
    """A platform export carries names, addresses and phones nothing here reads: a rejected row's raw values hold
    the columns its source maps (the file and row number find the rest), also when the whole file is rejected."""

    (tmp_path / "sources.yaml").write_text(
        "sources:\n  shop:\n    table: orders\n    columns: {order_id: Name, user_id: Customer, amount: Total, items: 1, "
        "order_ts: Created, status: \"'completed'\"}\n")
    header = "Name,Customer,Total,Created,Billing Name,Phone,Shipping Street\n"
    write(tmp_path, "shop/a.csv", header + "#1,c1,10,2026-03-01T00:00:00Z,Jane Roe,+49 30 1234567,Hauptstr. 1\n"
          "#2,c2,-5,2026-03-01T00:00:00Z,John Doe,+49 30 7654321,Nebenstr. 2\n")
    write(tmp_path, "shop/b.csv", "Name,Client,Total,Created,Billing Name,Phone,Shipping Street\n"
          "#3,c3,10,2026-03-01T00:00:00Z,Ann Poe,+49 30 5555555,Weg 3\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[1], r[2]) for r in ledger] == [("shop/a.csv", "ingested"), ("shop/b.csv", "rejected_file")]
    raws = {r[2]: json.loads(r[6]) for r in rejects}
    assert raws["shop/a.csv"] == {"Name": "#2", "Customer": "c2", "Total": "-5", "Created": "2026-03-01T00:00:00Z"}
    assert raws["shop/b.csv"] == {"Name": "#3", "Total": "10", "Created": "2026-03-01T00:00:00Z"}
    dump = json.dumps(rejects, default=str)
    assert not any(word in dump for word in ("Doe", "Poe", "+49", "str.", "Weg"))
    assert "Billing Name" not in ledger[1][8] and "not repeated here" in ledger[1][8]  # a CSV's first line may be data


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


def test_keep_latest_replaces_a_changed_row_and_counts_it(tmp_path):
    """A later export with an order's new status replaces the stored row (keep: latest); the same values again are a
    duplicate; within a file the last row of an id wins. delivered = accepted + updated + duplicate + rejected."""
    (tmp_path / "sources.yaml").write_text("sources:\n  shop:\n    table: orders\n    keep: latest\n")
    head = "order_id,user_id,order_ts,amount,items,status\n"
    write(tmp_path, "shop/a.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,completed\no2,u2,2026-03-01T10:00:00Z,12,1,completed\n")
    ingest(tmp_path)
    write(tmp_path, "shop/b.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,cancelled\n"   # changed: replaces
          "o2,u2,2026-03-01T10:00:00Z,12,1,completed\n"                                   # the same: a duplicate
          "o3,u3,2026-03-02T10:00:00Z,5,1,completed\n"                                    # new
          "o4,u4,2026-03-02T10:00:00Z,7,1,completed\no4,u4,2026-03-02T10:00:00Z,7,1,returned\n")  # the last wins
    ingest(tmp_path)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    led = con.sql("SELECT file_name, delivered, accepted, updated, duplicate, rejected, filtered FROM meta.ingest_ledger "
                  "ORDER BY file_id").fetchall()
    rows = con.sql("SELECT order_id, status, _file_id FROM raw.orders ORDER BY 1").fetchall()
    con.close()
    assert led == [("shop/a.csv", 2, 2, 0, 0, 0, 0), ("shop/b.csv", 5, 2, 1, 2, 0, 0)]
    b = rows[0][2]
    assert rows == [("o1", "cancelled", b), ("o2", "completed", b - 1), ("o3", "completed", b), ("o4", "returned", b)]


@pytest.mark.parametrize("source, words", [
    ("  web:\n    table: clicks\n    keep: latest\n", "clicks rows are events"),
    ("  shop:\n    table: orders\n    keep: last\n", "keep must be 'first'"),
])
def test_keep_latest_is_refused_for_events_and_unknown_values(source, words):
    with pytest.raises(SourceConfigError) as err:
        parse("sources:\n" + source)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_keep_latest_reads_an_earlier_files_bytes_again_when_delivered_again(tmp_path):
    """A change reverted by an export identical to an earlier one: with keep: latest that file is the latest delivery
    (read, not skipped as a copy); with keep: first it stays a copy."""
    head = "order_id,user_id,order_ts,amount,items,status\n"
    first = head + "o1,u1,2026-03-01T10:00:00Z,10,1,completed\n"
    for keep in ("latest", "first"):
        root = tmp_path / keep
        (root / "sources.yaml").parent.mkdir(parents=True)
        (root / "sources.yaml").write_text(f"sources:\n  shop:\n    table: orders\n    keep: {keep}\n")
        write(root, "shop/a.csv", first)
        write(root, "shop/b.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,cancelled\n")
        write(root, "shop/c.csv", first)  # the same bytes as a.csv
        _, ledger, _ = ingest(root)
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        status = con.sql("SELECT status FROM raw.orders").fetchall()[0][0]
        con.close()
        if keep == "latest":  # cancelled by b.csv, completed again by c.csv
            assert [(r[1], r[2], r[9]) for r in ledger] == [("shop/a.csv", "ingested", 0), ("shop/b.csv", "ingested", 1),
                                                           ("shop/c.csv", "ingested", 1)] and status == "completed"
        else:  # b.csv's change was a duplicate; c.csv a copy of a.csv
            assert [(r[1], r[2]) for r in ledger][1:] == [("shop/b.csv", "ingested"), ("shop/c.csv", "duplicate_file")]


def test_a_ledger_from_before_the_updated_column_is_migrated_and_keeps_its_rows(tmp_path):
    """A warehouse written by an earlier version (no `updated` column): the next ingestion adds it, 0 for the old
    rows, and the accounting holds for old and new files alike."""
    from seg_assets.ingest import contract as C

    head = "order_id,user_id,order_ts,amount,items,status\n"
    write(tmp_path, "orders/a.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,completed\n")
    ingest(tmp_path)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.sql(f"ALTER TABLE {C.LEDGER_TABLE} DROP COLUMN updated")  # as an earlier version left it
    con.close()
    (tmp_path / "sources.yaml").write_text("sources:\n  orders:\n    table: orders\n    keep: latest\n")
    write(tmp_path, "orders/b.csv", head + "o1,u1,2026-03-01T10:00:00Z,10,1,cancelled\n")
    _, ledger, _ = ingest(tmp_path)  # (its helper checks delivered = the counts, updated included, on every row)
    assert [(r[1], r[4], r[9]) for r in ledger] == [("orders/a.csv", 1, 0), ("orders/b.csv", 0, 1)]


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


def test_with_every_row_rejected_the_first_problem_is_a_reject_not_a_note(tmp_path):
    """A timestamp_format that fits no row: the closing line named the file's notes ("line_id derived from each row's
    values; ...") as its first problem, the 399 unparseable times after it (a tester's)."""
    from seg_assets.refresh import run_refresh

    (tmp_path / "sources.yaml").write_text(
        "sources:\n  lines:\n    table: order_items\n    timestamp_format: '%Y-%m-%d %H:%M'\n    columns:\n"
        "      order_id: Invoice\n      order_ts: Date\n      status: \"'completed'\"\n")
    write(tmp_path, "lines/a.csv", "Invoice,user_id,Date,product_id,quantity,unit_price,Country\n"
          "i1,u1,12/1/2010 13:04,A,1,2.5,DE\ni2,u2,12/2/2010 13:04,B,1,2.5,DE\n")
    outcome = run_refresh(tmp_path)
    assert not outcome.success
    line = next(m for s in outcome.stages for m in s.failures if "first problem" in m)
    assert "first problem: lines/a.csv: 2 of 2 rows rejected, first: unparseable order_ts (from Date): '12/1/2010 13:04'" \
        in line and "derived" not in line, line


def test_a_source_of_another_table_over_a_contract_folder_says_the_folders_rows_are_not_taken_in(tmp_path):
    """Orders declared from the purchases in landing/clicks/: the folder's clicks reached no table, without a word
    (a tester's 450 clicks). Each file's line now says so and how to take them in; reading them beside the declared
    source instead had every file of a declared order_items source over orders/ rejected whole (a reviewer's)."""
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  web_purchases:\n    table: orders\n    folder: clicks\n    where: \"event_type = 'purchase'\"\n"
        "    columns: {order_id: event_id, amount: 0, items: 1, status: \"'completed'\", order_ts: event_ts}\n")
    write(tmp_path, "clicks/a.csv", "event_id,user_id,session_id,event_ts,event_type\n"
          "e1,u1,s1,2026-03-01T10:00:00Z,view\ne2,u1,s1,2026-03-01T10:01:00Z,purchase\n")
    _, ledger, rejects = ingest(tmp_path)
    assert [(r[0], r[4], r[7]) for r in ledger] == [("web_purchases", 1, 1)] and rejects == []
    assert "its rows are not taken in as clicks (declare a source of table clicks with folder: clicks" in ledger[0][8]
    (tmp_path / "sources.yaml").write_text(  # an order_items source over orders/ (Shopify's line-item export)
        "sources:\n  shop:\n    table: order_items\n    folder: orders\n")
    write(tmp_path, "orders/b.csv", "order_id,user_id,order_ts,product_id,quantity,unit_price\no1,u1,2026-03-01T10:00:00Z,p1,1,2\n")
    _, ledger, _ = ingest(tmp_path)
    assert [(r[1], r[2], r[4]) for r in ledger if r[0] == "shop"] == [("orders/b.csv", "ingested", 1)]  # no file rejected
