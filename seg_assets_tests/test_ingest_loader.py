"""The ingestion loader on real DuckDB files and real landing files: one test per bad-input kind,
each with the exact per-file accounting (delivered = accepted + duplicate + rejected) and the ids kept."""

import gzip
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from seg_assets.ingest import contract as C
from seg_assets.ingest.loader import ingest_landing
from seg_assets.ingest.sources import UNFINISHED_SETTLE_SECONDS

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ORDERS = "order_id,user_id,order_ts,amount,items,category,discount,status"
CLICKS = "event_id,user_id,session_id,event_ts,event_type,product_id,category"
CUSTOMERS = "user_id,signup_ts,country,channel,email"


def order(oid, user="u1", ts="2026-03-01T10:00:00Z", amount="10.00", items="1", category="books", discount="", status="completed"):
    return ",".join([oid, user, ts, amount, items, category, discount, status])


def write(landing: Path, table: str, name: str, *lines: str, header: str = ORDERS, newline_at_end: bool = True) -> Path:
    path = landing / table / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *lines]) + ("\n" if newline_at_end else "")
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run(con, landing, run_id="r1", now=NOW):
    report = ingest_landing(
        con, landing, run_id=run_id, now=now, clock_skew=timedelta(minutes=60), min_ts=datetime(1990, 1, 1)
    )
    check_invariants(con)
    return report


def check_invariants(con):
    """Accounting that must hold after any ingest, whatever the files."""
    for file_id, table, status, delivered, accepted, updated, duplicate, rejected, filtered in con.sql(
        "SELECT file_id, table_name, status, delivered, accepted, updated, duplicate, rejected, filtered FROM meta.ingest_ledger"
    ).fetchall():
        assert delivered == accepted + updated + duplicate + rejected + filtered, file_id
        stored = con.sql(f"SELECT count(*) FROM raw.{table} WHERE _file_id = {file_id}").fetchall()[0][0]
        replaced = con.sql(f"SELECT sum(updated) FROM meta.ingest_ledger WHERE table_name = '{table}'").fetchall()[0][0]
        assert stored == accepted + updated if not replaced else stored <= accepted + updated, file_id  # (keep: latest
        # moves a replaced row to the later file)
        assert con.sql(f"SELECT count(*) FROM raw.rejects WHERE file_id = {file_id}").fetchall()[0][0] == rejected
        if status == C.STATUS_FAILED:
            assert delivered == 0
    total = con.sql("SELECT coalesce(sum(rejected), 0) FROM meta.ingest_ledger").fetchall()[0][0]
    assert total == con.sql("SELECT count(*) FROM raw.rejects").fetchall()[0][0]


def ledger(con) -> dict[str, dict]:
    df = con.sql("SELECT * FROM meta.ingest_ledger ORDER BY file_id").df()
    return {r["file_name"]: r for r in df.to_dict("records")}


def counts(row: dict) -> tuple:
    return (row["status"], row["delivered"], row["accepted"], row["duplicate"], row["rejected"])


def ids(con, table="orders", id_column="order_id") -> list[str]:
    return [r[0] for r in con.sql(f"SELECT {id_column} FROM raw.{table} ORDER BY 1").fetchall()]


def rejects(con) -> list[tuple]:
    return con.sql("SELECT file_name, row_number, rule, reason FROM raw.rejects ORDER BY file_id, row_number").fetchall()


def snapshot(con) -> dict:
    return {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("raw.orders", "raw.clicks", "raw.customers", "raw.rejects", "meta.ingest_ledger")}


def test_clean_file_is_typed_with_lineage(con, landing):
    write(landing, "orders", "a.csv",
          order("o1", ts="2026-03-01T12:34:56Z", amount="10.5", discount="", category=""),
          order("o2", ts="2026-03-01T12:34:56+02:00", amount="20", items="3", discount="1.25", status=" Cancelled "))
    report = run(con, landing)
    assert [(f.file_name, f.status, f.delivered, f.accepted) for f in report.files] == [("orders/a.csv", "ingested", 2, 2)]
    rows = con.sql("SELECT order_id, order_ts, amount, items, category, discount, status, _file_id, _row "
                   "FROM raw.orders ORDER BY 1").fetchall()
    file_id = report.files[0].file_id
    assert rows == [
        ("o1", datetime(2026, 3, 1, 12, 34, 56), pytest.approx(10.5), 1, None, 0, "completed", file_id, 1),
        ("o2", datetime(2026, 3, 1, 10, 34, 56), 20, 3, "books", pytest.approx(1.25), "cancelled", file_id, 2),
    ]
    types = dict(con.sql("SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_schema='raw' AND table_name='orders'").fetchall())
    assert types["order_ts"] == "TIMESTAMP" and types["amount"] == "DECIMAL(12,2)" and types["items"] == "INTEGER"
    assert types["_file_id"] == "BIGINT" and types["_row"] == "BIGINT"


def test_exact_duplicate_row_in_file_counts_once(con, landing):
    write(landing, "orders", "a.csv", order("o1"), order("o2"), order("o1"), order("o1", amount="99"))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 4, 2, 2, 0)
    assert ids(con) == ["o1", "o2"]
    assert con.sql("SELECT amount, _row FROM raw.orders WHERE order_id = 'o1'").fetchall() == [(10, 1)]  # first row wins


def test_duplicate_of_existing_row_keeps_existing(con, landing):
    write(landing, "orders", "a.csv", order("o1", amount="1"))
    run(con, landing, "r1")
    write(landing, "orders", "b.csv", order("o1", amount="2"), order("o3"))
    run(con, landing, "r2")
    assert counts(ledger(con)["orders/b.csv"]) == ("ingested", 2, 1, 1, 0)
    assert con.sql("SELECT amount FROM raw.orders WHERE order_id = 'o1'").fetchall() == [(1,)]
    assert ids(con) == ["o1", "o3"]


def test_an_id_repeated_with_other_values_is_named_in_the_files_message(con, landing):
    """A tester's campaign send id reused for another user was only counted as a duplicate, silently: a repeat with
    other values (in the file, or of a stored row) is likely a mistake, so the file's message (and the CLI) says so;
    an exact repeat stays a plain duplicate."""
    write(landing, "orders", "a.csv", order("o1", amount="1"), order("o2"))
    run(con, landing, "r1")
    write(landing, "orders", "b.csv", order("o1", amount="2"), order("o2"), order("o3"), order("o3", user="u9"))
    run(con, landing, "r2")
    assert counts(ledger(con)["orders/b.csv"]) == ("ingested", 4, 1, 3, 0)
    message = con.sql("SELECT message FROM meta.ingest_ledger WHERE file_name = 'orders/b.csv'").fetchall()[0][0]
    assert "2 row(s) repeat an id taken in with other values" in message and "keep: latest" in message, message
    assert con.sql("SELECT message FROM meta.ingest_ledger WHERE file_name = 'orders/a.csv'").fetchall()[0][0] is None
    from seg_assets.refresh import _ledger_problems

    lines = [p.line() for p in _ledger_problems(con, "r2")]
    assert lines == ["orders/b.csv: 2 row(s) repeat an id taken in with other values: the first taken in is kept (if they "
                     "are changes, declare keep: latest for its source to take the newest)"], lines


def test_an_old_export_landed_again_with_keep_latest_is_said(con, landing):
    """keep: latest takes the last file delivered: an old export landed again under another name puts back the values
    it had (a tester's 82 refunds counted as revenue again), by design and unsaid. Its rows are still taken as the
    latest, and the CLI warns, naming the earlier file, when they replaced anything."""
    (landing.parent / "sources.yaml").write_text("sources:\n  orders: {table: orders, keep: latest}\n")
    a = write(landing, "orders", "export (1).csv", order("o1"), order("o2"))  # a browser's names (a reviewer's)
    run(con, landing, "r1")
    write(landing, "orders", "export (2).csv", order("o1", status="returned"))
    run(con, landing, "r2")
    (landing / "orders" / "c_again.csv").write_bytes(a.read_bytes())
    run(con, landing, "r3")
    assert con.sql("SELECT status FROM raw.orders WHERE order_id = 'o1'").fetchall() == [("completed",)]
    from seg_assets.refresh import _ledger_problems

    lines = [p.line() for p in _ledger_problems(con, "r3")]
    assert len(lines) == 1 and lines[0].startswith("orders/c_again.csv: holds the same bytes as orders/export (1).csv, "
                                                   "taken in before: with keep: latest its 1 row(s) replaced newer "
                                                   "values"), lines


def test_redelivered_file_under_new_name(con, landing):
    write(landing, "orders", "a.csv", order("o1"), order("o2"), order("bad", amount="-1"))
    (landing / "orders" / "b_copy.csv").write_bytes((landing / "orders" / "a.csv").read_bytes())
    run(con, landing, "r1")
    (landing / "orders" / "c_later.csv").write_bytes((landing / "orders" / "a.csv").read_bytes())
    report = run(con, landing, "r2")
    led = ledger(con)
    assert counts(led["orders/a.csv"]) == ("ingested", 3, 2, 0, 1)
    assert counts(led["orders/b_copy.csv"]) == ("duplicate_file", 3, 0, 3, 0)
    assert counts(led["orders/c_later.csv"]) == ("duplicate_file", 3, 0, 3, 0)
    assert "orders/a.csv" in led["orders/c_later.csv"]["message"]
    assert report.skipped == ["orders/a.csv", "orders/b_copy.csv"]
    assert ids(con) == ["o1", "o2"] and len(rejects(con)) == 1


def test_null_id_rejected(con, landing):
    write(landing, "orders", "a.csv", order("o1"), order(""), order("   "), order("o4", user=""))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 4, 1, 0, 3)
    assert rejects(con) == [
        ("orders/a.csv", 2, "missing:order_id", "missing order_id"),
        ("orders/a.csv", 3, "missing:order_id", "missing order_id"),
        ("orders/a.csv", 4, "missing:user_id", "missing user_id"),
    ]
    assert ids(con) == ["o1"]


def test_negative_amount_and_discount_rejected(con, landing):
    write(landing, "orders", "a.csv", order("o1", amount="0"), order("o2", amount="-5.00"), order("o3", discount="-1"),
          order("o4", items="0"), order("o5", amount="ten"), order("o6", items="1.5"))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 6, 1, 0, 5)
    assert [r[3] for r in rejects(con)] == [
        "negative amount: '-5.00'", "negative discount: '-1'", "items < 1: '0'",
        "unparseable amount: 'ten'", "unparseable items: '1.5'",
    ]
    assert ids(con) == ["o1"]


def test_unknown_enum_rejected_and_any_event_name_accepted(con, landing):
    write(landing, "orders", "a.csv", order("o1", status="shipped"), order("o2", status="RETURNED"), order("o3", status=""))
    write(landing, "clicks", "c.csv", "e1,u1,s1,2026-03-01T10:00:00Z,hover,p1,books", "e2,u1,s1,2026-03-01T10:00:00Z,search,,",
          "e3,u1,s1,2026-03-01T10:00:00Z, Product_View ,p1,books", "e4,u1,s1,2026-03-01T10:00:00Z,,p1,books", header=CLICKS)
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 3, 1, 0, 2)
    assert counts(ledger(con)["clicks/c.csv"]) == ("ingested", 4, 3, 0, 1)
    assert [r[2:] for r in rejects(con)] == [  # files in name order: clicks/ before orders/
        ("missing:event_type", "missing event_type"),
        ("unknown:status", "unknown status 'shipped'"), ("missing:status", "missing status"),
    ]
    assert ids(con) == ["o2"] and con.sql("SELECT status FROM raw.orders").fetchall() == [("returned",)]
    assert con.sql("SELECT event_id, event_type, funnel_stage::VARCHAR, product_id FROM raw.clicks ORDER BY 1").fetchall() == [
        ("e1", "hover", "other", "p1"), ("e2", "search", "search", None), ("e3", "Product_View", "view", "p1")]


def test_unparseable_timestamp_rejected(con, landing):
    write(landing, "orders", "a.csv", order("o1", ts="not-a-date"), order("o2", ts="2026-02-30T00:00:00Z"),
          order("o3", ts="2026-03-01"), order("o4", ts="2026-03-01 08:00:00"))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 4, 2, 0, 2)
    assert [r[3] for r in rejects(con)] == ["unparseable order_ts: 'not-a-date'", "unparseable order_ts: '2026-02-30T00:00:00Z'"]
    assert ids(con) == ["o3", "o4"]


def test_an_offset_after_a_space_is_read_as_iso_8601(con, landing):
    """Shopify writes '2026-02-05 23:14:00 +0100' (a space before the offset): every row was rejected."""
    write(landing, "orders", "a.csv", order("o1", ts="2026-03-01 08:00:00 +0100"), order("o2", ts="2026-03-01 08:00:00 -05:00"),
          order("o3", ts="2026-03-01T08:00:00 Z"), order("o4", ts="2026-03-01 08:00 +02"), order("o5", ts="08:00 +0100"),
          order("o6", ts="2026-03-01t08:00:00z"))  # RFC 3339 allows lower case (a tester's row was rejected)
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 6, 5, 0, 1)
    assert con.sql("SELECT order_id, strftime(order_ts, '%d %H:%M') FROM raw.orders ORDER BY 1").fetchall() == [
        ("o1", "01 07:00"), ("o2", "01 13:00"), ("o3", "01 08:00"), ("o4", "01 06:00"), ("o6", "01 08:00")]


def test_far_future_and_too_old_timestamps_rejected(con, landing):
    write(landing, "orders", "a.csv",
          order("o1", ts="2026-03-10T12:30:00Z"),  # within the 60 min clock-skew allowance
          order("o2", ts="2026-03-10T13:30:00Z"),  # beyond it
          order("o3", ts="2099-01-01T00:00:00Z"),
          order("o4", ts="1970-01-01T00:00:00Z"),
          order("o5", ts="2026-01-01T00:00:00Z"))  # late events are normal
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 5, 2, 0, 3)
    assert [r[2:] for r in rejects(con)] == [
        ("future:order_ts", "order_ts in the future: '2026-03-10T13:30:00Z'"),
        ("future:order_ts", "order_ts in the future: '2099-01-01T00:00:00Z'"),
        ("too_old:order_ts", "order_ts before 1990-01-01 00:00:00: '1970-01-01T00:00:00Z'"),
    ]
    assert ids(con) == ["o1", "o5"]


def test_missing_required_column_rejects_whole_file(con, landing):
    write(landing, "orders", "a.csv", order("o1"))
    write(landing, "orders", "b_no_amount.csv", "o2,u2,2026-03-01T10:00:00Z,1,completed", "o3,u3,2026-03-01T10:00:00Z,1,completed",
          header="order_id,user_id,order_ts,items,status")
    write(landing, "orders", "c.csv", order("o4"))
    report = run(con, landing)
    led = ledger(con)
    assert counts(led["orders/b_no_amount.csv"]) == ("rejected_file", 2, 0, 0, 2)
    assert led["orders/b_no_amount.csv"]["message"].startswith("orders/b_no_amount.csv: missing required column 'amount'")
    assert counts(led["orders/a.csv"]) == ("ingested", 1, 1, 0, 0) and counts(led["orders/c.csv"]) == ("ingested", 1, 1, 0, 0)
    assert ids(con) == ["o1", "o4"]
    assert {r[3].split(":")[0] + ":" + r[3].split(":")[1] for r in rejects(con)} == {"file rejected: missing required column 'amount'"}
    assert "sources.yaml" in rejects(con)[0][3]  # says how to fix it
    raw = json.loads(con.sql("SELECT raw_values FROM raw.rejects WHERE row_number = 1").fetchall()[0][0])
    assert raw == {"order_id": "o2", "user_id": "u2", "order_ts": "2026-03-01T10:00:00Z", "items": "1", "status": "completed"}
    assert report.totals("orders")["files_rejected_file"] == 1


def test_missing_optional_columns_are_empty(con, landing):
    write(landing, "orders", "a.csv", "o1,u1,2026-03-01T10:00:00Z,5,1,completed", header="order_id,user_id,order_ts,amount,items,status")
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 1, 1, 0, 0)
    assert "category, discount" in ledger(con)["orders/a.csv"]["message"]
    assert con.sql("SELECT category, discount FROM raw.orders").fetchall() == [(None, 0)]


def test_truncated_last_line_rejected(con, landing):
    """A file cut short that stays so (the landing rule reads it once unchanged for 10 minutes): the cut row is rejected."""
    write(landing, "orders", "a.csv", order("o1"), order("o2"), "o3,u3,2026-03-0", newline_at_end=False)
    run(con, landing)
    assert "orders/a.csv" not in ledger(con)  # not yet: a writer may have paused mid-line
    long_ago = time.time() - UNFINISHED_SETTLE_SECONDS - 1
    os.utime(landing / "orders" / "a.csv", (long_ago, long_ago))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 3, 2, 0, 1)
    assert rejects(con) == [("orders/a.csv", 3, "truncated_row:row", "truncated row: 3 of 8 fields")]
    assert ids(con) == ["o1", "o2"]


def test_too_many_fields_rejected(con, landing):
    write(landing, "orders", "a.csv", order("o1"), order("o2") + ",surplus", order("o3") + ",", order("o4") + ",a,b,c")
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 4, 1, 0, 3)
    assert [r[1:3] for r in rejects(con)] == [(2, "too_many_fields:row"), (3, "too_many_fields:row"), (4, "too_many_fields:row")]
    assert ids(con) == ["o1"]


def test_extra_column_ignored_and_reported(con, landing):
    write(landing, "orders", "a.csv", order("o1") + ",x,y", header=ORDERS + ",coupon,Note")
    report = run(con, landing)
    row = ledger(con)["orders/a.csv"]
    assert counts(row) == ("ingested", 1, 1, 0, 0)
    assert list(row["extra_columns"]) == ["coupon", "Note"] and "coupon, Note" in row["message"]
    assert report.extra_columns("orders") == ["Note", "coupon"]
    assert "coupon" not in con.sql("SELECT * FROM raw.orders").columns


def test_reordered_columns_matched_by_name(con, landing):
    write(landing, "orders", "a.csv", "completed,2,o1,7.50,2026-03-01T10:00:00Z,u9,,toys",
          header="STATUS,items,order_id,amount,order_ts,user_id,discount,category")
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 1, 1, 0, 0)
    assert con.sql("SELECT order_id, user_id, amount, items, category, status FROM raw.orders").fetchall() == [
        ("o1", "u9", pytest.approx(7.5), 2, "toys", "completed")]


def test_csv_gz_and_parquet_mixed_with_other_files(con, landing):
    write(landing, "orders", "a.csv.gz", order("o1"), order("o2"))
    pq = landing / "orders" / "b.parquet"
    con.sql("""COPY (SELECT * FROM (VALUES
        ('o2', 'u2', TIMESTAMPTZ '2026-03-01 12:00:00+02', 3.5::DOUBLE, 2::BIGINT, 'toys', NULL::DOUBLE, 'completed'),
        ('o3', 'u3', TIMESTAMPTZ '2026-03-02 00:00:00+00', 4.25::DOUBLE, 1::BIGINT, NULL, 0.5::DOUBLE, 'returned'),
        ('o4', 'u4', TIMESTAMPTZ '2026-03-02 00:00:00+00', -1::DOUBLE, 1::BIGINT, NULL, NULL, 'returned'))
        t(order_id, user_id, order_ts, amount, items, category, discount, status)) TO '""" + str(pq) + "' (FORMAT parquet)")
    (landing / "orders" / "notes.txt").write_text("not data")
    write(landing, "orders", "_in_progress.csv", order("o99"))
    (landing / "stray.csv").write_text("x\n1\n")
    report = run(con, landing)
    led = ledger(con)
    assert counts(led["orders/a.csv.gz"]) == ("ingested", 2, 2, 0, 0) and led["orders/a.csv.gz"]["file_format"] == "csv.gz"
    assert counts(led["orders/b.parquet"]) == ("ingested", 3, 1, 1, 1)
    assert rejects(con) == [("orders/b.parquet", 3, "negative:amount", "negative amount: '-1.0'")]
    assert report.ignored == {  # in-progress names are ignored by design; the others say what to do
        "orders/_in_progress.csv": None,
        "orders/notes.txt": "unknown format (.txt): land it as .csv, .csv.gz or .parquet",
        "stray.csv": "no source reads folder '.': use a contract table's folder or declare a source in sources.yaml"}
    assert con.sql("SELECT order_id, order_ts, amount, discount, _row FROM raw.orders WHERE order_id = 'o3'").fetchall() == [
        ("o3", datetime(2026, 3, 2), pytest.approx(4.25), pytest.approx(0.5), 2)]


def test_clicks_and_customers(con, landing):
    write(landing, "clicks", "c.csv", "e1,u1,s1,2026-03-01T10:00:00Z,view,p1,books", "e2,u1,s1,2026-03-01T10:01:00Z,search,,",
          "e3,,s1,2026-03-01T10:02:00Z,view,p1,books", header=CLICKS)
    write(landing, "customers", "k.csv", "u1,2025-01-01T00:00:00Z,DE,ads,ann@example.com", "u1,2025-02-01T00:00:00Z,FR,,x@y.z",
          "u2,2025-01-01,,,", header=CUSTOMERS)
    run(con, landing)
    assert counts(ledger(con)["clicks/c.csv"]) == ("ingested", 3, 2, 0, 1)
    assert counts(ledger(con)["customers/k.csv"]) == ("ingested", 3, 2, 1, 0)
    assert con.sql("SELECT user_id, country, channel, email FROM raw.customers ORDER BY 1").fetchall() == [
        ("u1", "DE", "ads", "ann@example.com"), ("u2", None, None, None)]


def test_idempotent_second_run_changes_nothing(con, landing):
    write(landing, "orders", "a.csv", order("o1"), order("o2", amount="-1"))
    write(landing, "clicks", "c.csv", "e1,u1,s1,2026-03-01T10:00:00Z,view,p1,books", header=CLICKS)
    (landing / "orders" / "dup.csv").write_bytes((landing / "orders" / "a.csv").read_bytes())
    run(con, landing, "r1")
    before = snapshot(con)
    report = run(con, landing, "r2", now=NOW + timedelta(days=1))
    assert report.files == [] and sorted(report.skipped) == ["clicks/c.csv", "orders/a.csv", "orders/dup.csv"]
    assert snapshot(con) == before


def test_incremental_file_adds_exactly_its_new_rows(con, landing):
    write(landing, "orders", "2026-03-01.csv", order("o1"), order("o2"))
    run(con, landing, "r1")
    write(landing, "orders", "2026-03-02.csv", order("o2"), order("o3"), order("o4", status="lost"))
    report = run(con, landing, "r2")
    assert [f.file_name for f in report.files] == ["orders/2026-03-02.csv"]
    assert counts(ledger(con)["orders/2026-03-02.csv"]) == ("ingested", 3, 1, 1, 1)
    assert ids(con) == ["o1", "o2", "o3"]
    by_run = con.sql("SELECT run_id, count(*) FROM raw.orders JOIN meta.ingest_ledger l ON _file_id = l.file_id "
                     "GROUP BY 1 ORDER BY 1").fetchall()
    assert by_run == [("r1", 2), ("r2", 1)]


def test_orders_only_creates_empty_tables(con, landing):
    write(landing, "orders", "a.csv", order("o1"))
    report = run(con, landing)
    assert report.totals("clicks")["files"] == 0 and report.totals("customers")["files"] == 0
    for table in ("raw.clicks", "raw.customers", "raw.rejects"):
        assert con.sql(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]
    assert "event_ts" in con.sql("SELECT * FROM raw.clicks").columns
    assert ingest_landing(con, landing / "missing", run_id="r2", now=NOW, clock_skew=timedelta(0), min_ts=datetime(1990, 1, 1)).files == []


def test_email_never_in_clear_outside_customers(con, landing):
    email, other = "jane.doe@example.com", "john@example.org"
    write(landing, "customers", "k.csv", f"u1,2025-01-01T00:00:00Z,DE,ads,{email}", f"u2,not-a-date,DE,ads,{email}",
          f"u3,{other},DE,ads,", f"u4,,DE,ads,{other}", header=CUSTOMERS)
    write(landing, "customers", "bad.csv", f"u5,{email}", header="user_id,email")  # no signup_ts: whole file rejected
    write(landing, "customers", "no_header.csv", f"u6,2025-01-01,DE,ads,{email}", header=f"u5,2025-01-01,DE,ads,{other}")
    run(con, landing)
    assert counts(ledger(con)["customers/no_header.csv"]) == ("rejected_file", 1, 0, 0, 1)
    assert counts(ledger(con)["customers/k.csv"]) == ("ingested", 4, 1, 0, 3)
    dump = json.dumps([con.sql(f"SELECT * FROM {t}").fetchall() for t in ("raw.rejects", "meta.ingest_ledger")], default=str)
    assert email not in dump and other not in dump and "@" not in dump
    hashed = con.sql(f"SELECT sha256('{email}')").fetchall()[0][0]
    raws = {(f, n): json.loads(v) for f, n, v in con.sql("SELECT file_name, row_number, raw_values FROM raw.rejects").fetchall()}
    assert raws[("customers/bad.csv", 1)]["email"] == hashed and raws[("customers/k.csv", 2)]["email"] == hashed
    assert raws[("customers/k.csv", 3)]["signup_ts"] == con.sql(f"SELECT sha256('{other}')").fetchall()[0][0]
    reasons = {(r[0], r[1]): r[3] for r in rejects(con)}
    short = con.sql(f"SELECT left(sha256('{other}'), 16)").fetchall()[0][0]
    assert reasons[("customers/k.csv", 3)] == f"unparseable signup_ts: 'sha256:{short}'"  # reasons hash e-mails too
    assert con.sql("SELECT email FROM raw.customers").fetchall() == [(email,)]


def test_corrupt_file_mid_batch_fails_alone(con, landing):
    write(landing, "orders", "a.csv", order("o1"))
    data = gzip.compress(("\n".join([ORDERS, *(order(f"b{i}") for i in range(20000))]) + "\n").encode())
    (landing / "orders" / "b.csv.gz").write_bytes(data[: len(data) // 2])  # rows readable before the stream breaks
    write(landing, "orders", "c.csv", order("o3"))
    report = run(con, landing)  # just written: perhaps still being written, left to the next run
    assert "orders/b.csv.gz" not in ledger(con) and report.unsettled == {"orders/b.csv.gz": "its gzip stream has no end yet"}
    assert ids(con) == ["o1", "o3"] and rejects(con) == []
    old = time.time() - UNFINISHED_SETTLE_SECONDS - 1  # unchanged for long: broken, failed with the reason
    os.utime(landing / "orders" / "b.csv.gz", (old, old))
    run(con, landing)
    led = ledger(con)
    assert counts(led["orders/b.csv.gz"]) == ("failed", 0, 0, 0, 0) and "GZIP" in led["orders/b.csv.gz"]["message"]
    assert ids(con) == ["o1", "o3"] and rejects(con) == []


def test_failure_inside_transaction_leaves_no_partial_rows_and_is_retried(con, landing):
    con.sql("CREATE SCHEMA raw")  # a stricter raw.orders than ours: its inserts fail after the rejects were written
    con.sql(C.ORDERS.ddl().replace("(\n", "(\n  CHECK (amount < 1000),\n", 1))
    write(landing, "orders", "a.csv", order("o1"))
    write(landing, "orders", "b.csv", order("o2", amount="-1"), order("o3", amount="5000"))
    write(landing, "orders", "c.csv", order("o4"))
    run(con, landing, "r1")
    led = ledger(con)
    assert counts(led["orders/b.csv"]) == ("failed", 0, 0, 0, 0) and "Constraint" in led["orders/b.csv"]["message"]
    assert ids(con) == ["o1", "o4"] and rejects(con) == []  # b's reject row was rolled back with the rest
    con.sql("CREATE OR REPLACE TABLE raw.orders AS SELECT * FROM raw.orders")  # the same table without the CHECK
    report = run(con, landing, "r2")
    assert [(f.file_name, f.status) for f in report.files] == [("orders/b.csv", "ingested")]
    assert counts(ledger(con)["orders/b.csv"]) == ("ingested", 2, 1, 0, 1)
    assert con.sql("SELECT count(*) FROM meta.ingest_ledger WHERE file_name = 'orders/b.csv'").fetchall() == [(1,)]


def test_quoted_fields_with_commas_and_line_breaks(con, landing):
    write(landing, "orders", "a.csv", order("o1", category='"home, garden"'), order("o2", category='"multi\nline ""x"""'),
          order("o3"))
    run(con, landing)
    assert counts(ledger(con)["orders/a.csv"]) == ("ingested", 3, 3, 0, 0)
    assert con.sql("SELECT order_id, category, _row FROM raw.orders ORDER BY 1").fetchall() == [
        ("o1", "home, garden", 1), ("o2", 'multi\nline "x"', 2), ("o3", "books", 3)]


def test_empty_files(con, landing):
    write(landing, "orders", "header_only.csv")
    (landing / "orders" / "zero.csv").write_bytes(b"")
    run(con, landing)
    assert "orders/zero.csv" not in ledger(con)  # a writer that has not started yet, for all we know
    long_ago = time.time() - UNFINISHED_SETTLE_SECONDS - 1
    os.utime(landing / "orders" / "zero.csv", (long_ago, long_ago))
    run(con, landing)
    led = ledger(con)
    assert counts(led["orders/header_only.csv"]) == ("ingested", 0, 0, 0, 0)
    # settled, it is a day without rows (mysqldump --tab writes 0 bytes), not a reject that --strict counts for ever
    assert counts(led["orders/zero.csv"]) == ("ingested", 0, 0, 0, 0), led["orders/zero.csv"]
    assert led["orders/zero.csv"]["message"] == "orders/zero.csv: empty file (0 bytes): no rows"


def test_row_numbers_follow_file_order_on_a_multi_threaded_read(con, landing):
    path = landing / "clicks" / "big.csv"
    path.parent.mkdir(parents=True)
    con.sql(f"""COPY (SELECT 'e' || i AS event_id, 'u' || (i % 97) AS user_id, 's' || (i // 5) AS session_id,
        '2026-03-01T10:00:00Z' AS event_ts, 'view' AS event_type, 'product-' || i AS product_id,
        'a-fairly-long-category-name-' || (i % 13) AS category FROM range(700000) t(i)) TO '{path}' (HEADER)""")
    run(con, landing)
    assert counts(ledger(con)["clicks/big.csv"]) == ("ingested", 700000, 700000, 0, 0)
    assert con.sql("SELECT count(*) FROM raw.clicks WHERE _row <> CAST(substr(event_id, 2) AS BIGINT) + 1").fetchall() == [(0,)]


def test_glob_characters_in_file_names_are_literal(con, landing):
    write(landing, "orders", "x[1].csv", order("bracket"))
    write(landing, "orders", "x1.csv", order("plain"))
    write(landing, "orders", "y*.csv", order("star"))
    run(con, landing)
    assert ids(con) == ["bracket", "plain", "star"]
    assert {name: row["accepted"] for name, row in ledger(con).items()} == {"orders/x1.csv": 1, "orders/x[1].csv": 1, "orders/y*.csv": 1}


def test_known_files_skipped_without_rehash_unless_asked(con, landing):
    path = write(landing, "orders", "a.csv", order("o1"))
    run(con, landing, "r1")
    path.write_text(path.read_text().replace("o1", "o2"))  # a contract breach: same name, same size, new bytes
    assert run(con, landing, "r2").skipped == ["orders/a.csv"]  # name + size known: not even hashed
    report = ingest_landing(con, landing, run_id="r3", now=NOW, clock_skew=timedelta(minutes=60),
                            min_ts=datetime(1990, 1, 1), rehash_known=True)
    check_invariants(con)
    assert [(f.file_name, f.status, f.accepted) for f in report.files] == [("orders/a.csv", "ingested", 1)]
    assert "ingested before with other content" in ledger(con)["orders/a.csv"]["message"]
    assert ids(con) == ["o1", "o2"]


def test_an_unreadable_file_fails_alone_in_one_line_and_is_read_once_readable(tmp_path, landing):
    """Permission denied on one file: a failed ledger row saying what to fix, the files after it ingested. The
    ingestion runs in a child without root's read override (root reads a chmod 000 file)."""
    import os
    import shutil
    import subprocess
    import sys

    write(landing, "orders", "a.csv", order("o1"))
    locked = write(landing, "orders", "b.csv", order("o2"))
    write(landing, "orders", "c.csv", order("o3"))
    locked.chmod(0)
    caps = "-dac_override,-dac_read_search"
    prefix = [] if os.geteuid() else [shutil.which("setpriv") or pytest.skip("root, and no setpriv to drop its read override"),
                                      f"--inh-caps={caps}", f"--bounding-set={caps}"]
    database = tmp_path / "wh.duckdb"
    code = ("import sys, duckdb; from seg_assets_tests.test_ingest_loader import run; from pathlib import Path\n"
            "con = duckdb.connect(sys.argv[1]); run(con, Path(sys.argv[2])); con.close()")
    child = subprocess.run([*prefix, sys.executable, "-c", code, str(database), str(landing)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    import duckdb

    with duckdb.connect(str(database)) as con:
        led = ledger(con)
        assert counts(led["orders/b.csv"]) == ("failed", 0, 0, 0, 0)
        assert led["orders/b.csv"]["message"] == "orders/b.csv: cannot read orders/b.csv: permission denied; fix its permissions"
        assert ids(con) == ["o1", "o3"]
        locked.chmod(0o644)  # fixed: the next run reads it, and its row replaces the failed one
        run(con, landing, "r2")
        assert counts(ledger(con)["orders/b.csv"]) == ("ingested", 1, 1, 0, 0)
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger WHERE file_name = 'orders/b.csv'").fetchall() == [(1,)]
        assert ids(con) == ["o1", "o2", "o3"]


def test_a_column_repeated_in_the_header_is_read_once_and_named(con, landing):
    """An export with two 'amount' columns (a tester's; the second 99): the first is read, as before, and the file's
    message now says so instead of choosing silently."""
    write(landing, "orders", "a.csv", order("o1") + ",99.00", header=ORDERS + ",Amount")
    report = run(con, landing)
    assert con.sql("SELECT amount FROM raw.orders").fetchall()[0][0] == 10
    (f,) = report.files
    assert f.status == C.STATUS_INGESTED
    assert "column(s) amount appear more than once in the header: the first of each is read" in f.message, f.message


def test_the_same_bytes_warning_names_an_earlier_file_holding_a_semicolon_whole(con, landing):
    """The warning read the earlier file's name out of the ledger message up to the first '; ' (the notes' separator):
    a name holding one ("export; v1 (1).csv") was shown as 'orders/export'. The note is written and read by one rule."""
    (landing.parent / "sources.yaml").write_text("sources:\n  orders: {table: orders, keep: latest}\n")
    a = write(landing, "orders", "export; v1 (1).csv", order("o1"), order("o2"))
    run(con, landing, "r1")
    write(landing, "orders", "export; v2.csv", order("o1", status="returned"))
    run(con, landing, "r2")
    (landing / "orders" / "c_again.csv").write_bytes(a.read_bytes())
    run(con, landing, "r3")
    from seg_assets.refresh import _ledger_problems

    lines = [p.line() for p in _ledger_problems(con, "r3")]
    assert len(lines) == 1 and lines[0].startswith("orders/c_again.csv: holds the same bytes as orders/export; v1 (1).csv, "
                                                   "taken in before"), lines


def test_a_full_disk_is_no_fault_of_the_file_and_one_line(tmp_path, landing, monkeypatch):
    """A tester's warehouse on a full disk: a good landing file was recorded failed ("fix the file") and the step
    showed a 40-line traceback. The full disk stops the step, the file is not recorded, and the warehouse resource
    says it in one line, never retried."""
    import dagster as dg
    import duckdb

    from seg_assets.ingest import loader
    from seg_assets.resources import Warehouse

    write(landing, "orders", "a.csv", order("o1"))

    def full(*args, **kwargs):
        raise duckdb.IOException('IO Error: Could not write file "warehouse.duckdb.wal": No space left on device')

    monkeypatch.setattr(loader, "_ingest_file", full)
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(dg.Failure) as err, warehouse.get_connection() as con:
        run(con, landing)
    assert err.value.description.startswith(f"no space left on the disk of {tmp_path} (writing: IO Error: Could not "
                                            "write file"), err.value.description
    assert not err.value.allow_retries and "free space and refresh again" in err.value.description
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger").fetchall() == [(0,)]  # not blamed on the file


def test_a_full_disk_after_some_files_says_those_are_kept(tmp_path, landing, monkeypatch):
    """Ingestion commits file by file: a disk that fills on the second file keeps the first (in the ledger, its rows in
    raw), and the one line said "nothing this step wrote was kept" (a tester's tmpfs: 1 of 7 new files kept)."""
    import dagster as dg
    import duckdb

    from seg_assets.ingest import loader
    from seg_assets.resources import Warehouse

    write(landing, "orders", "a.csv", order("o1"))
    write(landing, "orders", "b.csv", order("o2"))
    real, calls = loader._ingest_file, []

    def full_on_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise duckdb.IOException('IO Error: Could not write file "warehouse.duckdb.wal": No space left on device')
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "_ingest_file", full_on_the_second)
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(dg.Failure) as err, warehouse.get_connection() as con:
        run(con, landing)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT file_name, accepted FROM meta.ingest_ledger").fetchall() == [("orders/a.csv", 1)]
        assert con.sql("SELECT order_id FROM raw.orders").fetchall() == [("o1",)]
    said = err.value.description
    assert "nothing this step wrote was kept" not in said and "landing files taken in are in the ledger" in said, said
    assert "\n" not in said and "the published tables are as they were" in said


def test_a_disk_quota_exceeded_is_a_full_disk_too(tmp_path, landing, monkeypatch):
    """EDQUOT ("Disk quota exceeded", a user's quota on a shared disk) is no fault of the file either: errors.disk_full
    knew ENOSPC only, so the good landing file was recorded failed with advice to fix it (the BI publication already
    counted both as the folder's problem)."""
    import errno

    import dagster as dg
    import duckdb

    from seg_assets.errors import disk_full
    from seg_assets.ingest import loader
    from seg_assets.resources import Warehouse

    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    write(landing, "orders", "a.csv", order("o1"))

    def over_quota(*args, **kwargs):
        raise duckdb.IOException('IO Error: Could not write file "warehouse.duckdb.wal": Disk quota exceeded')

    monkeypatch.setattr(loader, "_ingest_file", over_quota)
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(dg.Failure) as err, warehouse.get_connection() as con:
        run(con, landing)
    assert not err.value.allow_retries and "Disk quota exceeded" in err.value.description
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger").fetchall() == [(0,)]
