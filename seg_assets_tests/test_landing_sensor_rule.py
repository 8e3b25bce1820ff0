"""The landing sensor's readiness rule (pure)."""

import json
import os
import time
from pathlib import Path

from seg_assets.automation.landing import SensorCursor, dump_cursor, load_cursor, ready_files
from seg_assets.ingest.source_config import parse_sources
from seg_assets.ingest.sources import TAKEN_FILES, is_candidate, taken_files_metadata, wait_until_settled
from seg_assets.ingest.sources import scan_landing as scan

SOURCES = parse_sources("", Path("sources.yaml"))  # the contract's folders


def scan_landing(landing):
    return scan(landing, SOURCES)


def test_in_progress_names_are_never_candidates():
    assert is_candidate("orders_2026.csv") and is_candidate("x.csv.gz") and is_candidate("x.parquet")
    for name in (".orders.csv", "_tmp.csv", "orders.csv.part", "orders.parquet.tmp", "x.csv.inprogress", "notes.txt"):
        assert not is_candidate(name), name


def test_files_are_ready_after_settling_and_only_once(tmp_path):
    (tmp_path / "orders").mkdir()
    (tmp_path / "clicks").mkdir()
    old = tmp_path / "orders" / "a.csv"
    old.write_text("order_id\n1\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    fresh = tmp_path / "clicks" / "b.parquet"
    fresh.write_bytes(b"x")
    (tmp_path / "clicks" / "c.parquet.part").write_bytes(b"x")

    files = scan_landing(tmp_path)
    assert [f.path for f in files] == ["clicks/b.parquet", "orders/a.csv"]
    now = time.time()
    first = ready_files(files, set(), now, settle_seconds=10)
    assert [f.path for f in first] == ["orders/a.csv"]  # b.parquet is still settling

    seen = load_cursor(dump_cursor(SensorCursor({f.key for f in first}), files)).seen
    assert ready_files(files, seen, now, 10) == []  # never twice
    assert [f.path for f in ready_files(files, seen, now + 11, 10)] == ["clicks/b.parquet"]

    # A file that changes again is a new version (the ledger decides by content whether it adds rows).
    fresh.write_bytes(b"xy")
    later = scan_landing(tmp_path)
    assert [f.path for f in ready_files(later, seen, time.time() + 11, 10)] == ["clicks/b.parquet"]


def test_cursor_forgets_files_that_left(tmp_path):
    (tmp_path / "orders").mkdir()
    f = tmp_path / "orders" / "a.csv"
    f.write_text("x")
    files = scan_landing(tmp_path)
    cursor = load_cursor(dump_cursor(SensorCursor({files[0].key, "orders/gone.csv:1:1"}, ledger_storage_id=7), files))
    assert cursor.seen == {files[0].key} and cursor.ledger_storage_id == 7


def test_a_cursor_of_the_earlier_format_is_read(tmp_path):
    assert load_cursor(json.dumps(["orders/a.csv:1:1"])) == SensorCursor({"orders/a.csv:1:1"}, None)
    assert load_cursor(None) == SensorCursor()


def test_taken_files_are_the_ones_still_as_read(tmp_path):
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "a.csv").write_text("abc")
    (tmp_path / "orders" / "b.csv").write_text("grown since it was read")
    [a, _] = scan_landing(tmp_path)
    assert taken_files_metadata(tmp_path, SOURCES, {"orders/a.csv": 3, "orders/b.csv": 3}) == {TAKEN_FILES: [a.key]}


def test_waiting_for_a_file_to_settle(tmp_path):
    """Ingestion's side of the rule: a young file is waited for; one still changing at the deadline is left."""
    old, young = tmp_path / "old.csv", tmp_path / "young.csv"
    old.write_text("x")
    young.write_text("x")
    os.utime(old, (time.time() - 60, time.time() - 60))
    now = [time.time()]

    def sleep(seconds):
        now[0] += seconds
        young.write_text(young.read_text() + "x")  # the writer keeps appending while we wait
        os.utime(young, (now[0], now[0]))

    settled, changing = wait_until_settled([old, young], 5, 10, clock=lambda: now[0], sleep=sleep)
    assert settled == {old} and changing == {young}
    settled, changing = wait_until_settled([young], 5, 30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert settled == {young} and not changing  # the writer stopped: read after 5 quiet seconds
