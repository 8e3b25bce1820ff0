"""sources.yaml: parsing and refusing mappings, and real ingestion of the user's own layouts on real DuckDB files."""


import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError
from seg_assets_tests.sources_ingest import ingest, parse, write


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
