"""A source's CSV dialect (sources.yaml `csv:`) on the exports people actually land: what is refused at load, what
a person is told, and what is read. The tests before `test_a_csv_dialect_that_cannot_be_read_is_refused` were found
by a review of the first version (each failed on it); the ones from there on were written with the sources.yaml tests."""

import gzip
import os
import re
import time
from pathlib import Path

import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError
from seg_assets_tests.sources_ingest import ingest, parse, write

ORDERS = "order_id{d}user_id{d}order_ts{d}amount{d}items{d}status\r\no1{d}Zoë{d}2026-03-01T10:00:00Z{d}10{d}1{d}completed\r\n"


def land(root: Path, rel: str, data: bytes, sources: str, mtime: float | None = None) -> Path:
    (root / "sources.yaml").write_text(sources)
    path = root / "landing" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def ledger_message(root: Path) -> tuple[str, str]:
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        return con.sql("SELECT status, message FROM meta.ingest_ledger").fetchall()[0]
    finally:
        con.close()


def test_hive_delimiter_ctrl_a_is_refused_at_load(tmp_path):
    """'\\x01' (Hive's default field separator) is the CSV reader's null marker: refused at load in one line that says
    what to write instead, not a failure of every file."""
    sources = 'sources:\n  shop:\n    table: orders\n    folder: shop\n    csv: {delimiter: "\\x01"}\n'
    with pytest.raises(SourceConfigError, match=r"source 'shop': csv delimiter '\\x01' must be one character, not .*control "
                       r"character \(e\.g\. ';'") as refused:
        parse(sources)
    assert "\n" not in str(refused.value)


def test_the_suggested_csv_line_keeps_the_sources_encoding(tmp_path):
    """The csv line a rejected file's message suggests keeps the source's encoding: written as told, the file reads."""
    sources = "sources:\n  shop:\n    table: orders\n    csv: {encoding: cp1252}\n"
    land(tmp_path, "shop/a.csv", ORDERS.format(d=";").encode("cp1252"), sources)
    ingest(tmp_path)
    status, message = ledger_message(tmp_path)
    assert status == "rejected_file"
    line = re.search(r"set (csv: \{.*?\}) on source", message).group(1)
    (tmp_path / "sources.yaml").write_text(f"sources:\n  shop:\n    table: orders\n    {line}\n")
    ingest(tmp_path)
    status, message = ledger_message(tmp_path)
    assert status == "ingested", message


def test_the_suggested_csv_line_for_a_tab_is_accepted(tmp_path):
    """A tab is suggested as "\\t" (double quotes: YAML's single quotes would keep the backslash)."""
    sources = "sources:\n  shop:\n    table: orders\n"
    land(tmp_path, "shop/a.csv", ORDERS.format(d="\t").encode(), sources)
    ingest(tmp_path)
    _, message = ledger_message(tmp_path)
    line = re.search(r"set (csv: \{.*?\}) on source", message).group(1)
    declared = {d.name: d for d in parse(f"sources:\n  shop:\n    table: orders\n    {line}\n")}
    assert declared["shop"].csv.delimiter == "\t", line


def test_the_suggested_declaration_for_a_contract_folder_is_valid_yaml(tmp_path):
    """For a contract folder the suggested declaration is valid YAML that declares the dialect."""
    land(tmp_path, "orders/a.csv", ORDERS.format(d=";").encode(), "")
    ingest(tmp_path)
    _, message = ledger_message(tmp_path)
    snippet = re.search(r"sources.yaml: (sources: .*?) \(the file", message).group(1)
    assert parse(snippet)[0].csv.delimiter == ";"  # yaml.safe_load(snippet) raises first


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8"])
def test_a_gz_whose_writer_has_only_started_is_left_to_the_next_run(tmp_path, encoding):
    """A gzip writer writes its 10-byte header first; a .csv.gz with only that, just modified, is left to the next
    run like one cut short further in (the header read meets the end of the stream first)."""
    full = gzip.compress(ORDERS.format(d=";").encode(encoding))
    sources = f"sources:\n  shop:\n    table: orders\n    csv: {{delimiter: ';', encoding: {encoding}}}\n"
    land(tmp_path, "shop/a.csv.gz", full[:10], sources, mtime=time.time() - 5)
    report, ledger, _ = ingest(tmp_path)
    assert ledger == [] and "shop/a.csv.gz" in report.unsettled, ledger


def test_a_utf8_file_with_a_bom_in_a_cp1252_source_says_it_is_utf8(tmp_path):
    """Excel's "CSV UTF-8" (a byte-order mark) in a cp1252 source is read as UTF-8, and the ledger says so."""
    sources = "sources:\n  shop:\n    table: orders\n    csv: {delimiter: ';', encoding: cp1252}\n"
    land(tmp_path, "shop/a.csv", b"\xef\xbb\xbf" + ORDERS.format(d=";").encode(), sources)
    ingest(tmp_path)
    status, message = ledger_message(tmp_path)
    assert status == "ingested" and "read as UTF-8, not cp1252" in message and "byte-order mark" in message, message
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT order_id, user_id FROM raw.orders").fetchall() == [("o1", "Zoë")]


def test_a_utf8_redelivery_in_a_cp1252_source_is_not_silently_garbled(tmp_path):
    """UTF-8 bytes decode in cp1252 without error ('Zoë' as 'ZoÃ«', another user): a file that is valid UTF-8 is
    read as UTF-8, and the ledger says so."""
    sources = "sources:\n  shop:\n    table: orders\n    csv: {delimiter: ';', encoding: cp1252}\n"
    land(tmp_path, "shop/a.csv", ORDERS.format(d=";").encode(), sources)
    ingest(tmp_path)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    users = con.sql("SELECT user_id FROM raw.orders").fetchall()
    con.close()
    assert users == [("Zoë",)]
    assert "read as UTF-8, not cp1252: the file is valid UTF-8" in ledger_message(tmp_path)[1]


def test_a_utf16_file_says_convert_to_utf8(tmp_path):
    """Excel's "Unicode Text" (UTF-16 with a BOM, tab-separated) is read by the landing rule (its line ends are
    UTF-16's) and fails saying to convert it."""
    sources = 'sources:\n  shop:\n    table: orders\n    csv: {delimiter: "\\t"}\n'
    land(tmp_path, "shop/a.csv", ORDERS.format(d="\t").encode("utf-16"), sources)
    ingest(tmp_path)
    _, message = ledger_message(tmp_path)
    assert "utf-16" in message.lower() and "universal-newline" not in message, message


@pytest.mark.parametrize("encoding", ["punycode", "utf-7", "cp500", "hz", "utf-32", "base64"])
def test_an_unusable_codec_is_a_config_error_not_a_traceback(encoding):
    """Encodings in which ASCII does not read as itself (the delimiter, quotes and line ends are ASCII)."""
    with pytest.raises(SourceConfigError, match="csv encoding"):
        parse(f"sources:\n  shop:\n    table: orders\n    csv: {{encoding: {encoding}}}\n")


def test_the_undecodable_byte_offset_is_exact_across_the_chunk_boundary(tmp_path):
    """The offset of an undecodable byte counts a two-byte character straddling the 1 MiB read chunk once."""
    from seg_assets.ingest.reading import _utf8_copy

    pre = ("x" * ((1 << 20) - 1)).encode("shift_jis") + "あ".encode("shift_jis") + b"abc"
    path = tmp_path / "a.csv"
    path.write_bytes(pre + b"\x80\n")
    with pytest.raises(ValueError, match=f"at byte offset {len(pre)} "):
        _utf8_copy(path, "csv", "shift_jis")



def test_windows_letters_in_a_latin1_source_fail_naming_cp1252(tmp_path):
    """cp1252's euro sign and curly quotes are C1 control characters in latin-1: stored, they would read as nothing."""
    sources = "sources:\n  shop:\n    table: orders\n    csv: {delimiter: ';', encoding: latin-1}\n"
    land(tmp_path, "shop/a.csv", ORDERS.format(d=";").replace("Zoë", "\u201eZoë\u201c €").encode("cp1252"), sources)
    ingest(tmp_path)
    status, message = ledger_message(tmp_path)
    assert status == "failed" and "not iso8859-1 encoded" in message and "cp1252" in message, message
    land(tmp_path, "shop/a.csv", ORDERS.format(d=";").encode("latin-1"), sources)  # no such letters: read
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT user_id FROM raw.orders").fetchall() == [("Zoë",)]


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


def test_a_semicolon_separated_file_is_told_so_and_read_once_its_source_says_so(tmp_path):
    write(tmp_path, "orders/a.csv", "order_id;user_id;order_ts;amount;items;status\no1;u1;2026-03-01T10:00:00Z;10,5;1;completed\n")
    _, ledger, rejects = ingest(tmp_path)
    assert ledger[0][2] == "rejected_file" and 'the file is not separated by ","' in ledger[0][8]
    assert 'sources: {orders: {table: orders, csv: {delimiter: ";"}}}' in ledger[0][8]
    assert {r[4] for r in rejects} == {"wrong_separator:file"}  # what the reject-ratio check counts it as
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


def test_a_semicolon_file_in_a_source_that_read_comma_files_is_told_to_come_as_they_do(tmp_path):
    """A colleague's ';' export among a source's ',' files was told to set the source's delimiter: that rejected every
    ',' file after it, and the rebuild the next warning advised rejected all of them (a tester's)."""
    write(tmp_path, "orders/a.csv", "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-03-01T10:00:00Z,10.5,1,completed\n")
    ingest(tmp_path)
    write(tmp_path, "orders/b.csv", "order_id;user_id;order_ts;amount;items;status\no2;u1;2026-03-02T10:00:00Z;10,5;1;completed\n")
    _, ledger, _ = ingest(tmp_path)
    said = {r[1]: r[8] for r in ledger}["orders/b.csv"]
    assert 'export it with "," and land it under a new name (1 file(s) of source \'orders\' were read with ","' in said, said
    assert "in a folder of their own" in said and "set csv" not in said, said


def test_a_semicolon_file_in_a_source_of_parquet_files_is_told_the_csv_line(tmp_path):
    """Parquet files ignore `csv:`: a source that took in only Parquet files was counted as having read files with
    ',' and its ';' file was told to come as they do, not the source's csv line that reads it (a reviewer's)."""
    import polars as pl

    folder = tmp_path / "landing" / "orders"
    folder.mkdir(parents=True)
    pl.DataFrame({"order_id": ["o1"], "user_id": ["u1"], "order_ts": ["2026-03-01T10:00:00Z"], "amount": [10.5],
                  "items": [1], "status": ["completed"]}).write_parquet(folder / "a.parquet")
    ingest(tmp_path)
    write(tmp_path, "orders/b.csv", "order_id;user_id;order_ts;amount;items;status\no2;u1;2026-03-02T10:00:00Z;10.5;1;completed\n")
    _, ledger, _ = ingest(tmp_path)
    by_file = {r[1]: (r[2], r[8]) for r in ledger}
    assert by_file["orders/a.parquet"][0] == "ingested"
    assert 'sources: {orders: {table: orders, csv: {delimiter: ";"}}}' in by_file["orders/b.csv"][1], by_file
