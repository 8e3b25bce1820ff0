"""The landing sensor's readiness rule (pure)."""

import json
import os
import time
from pathlib import Path

from seg_assets.automation.landing import SensorCursor, dump_cursor, load_cursor, ready_files
from seg_assets.ingest.source_config import parse_sources
from seg_assets.ingest.sources import (
    TAKEN_FILES,
    UNFINISHED_SETTLE_SECONDS,
    is_candidate,
    taken_files_metadata,
    unfinished,
    wait_until_settled,
)
from seg_assets.ingest.sources import scan_landing as scan

SOURCES = parse_sources("", Path("sources.yaml"))  # the contract's folders


def scan_landing(landing):
    return scan(landing, SOURCES)


def test_in_progress_names_are_never_candidates():
    assert is_candidate("orders_2026.csv") and is_candidate("x.csv.gz") and is_candidate("x.parquet")
    assert is_candidate("orders/2026/11/x.csv")
    for name in (".orders.csv", "_tmp.csv", "orders.csv.part", "orders.parquet.tmp", "x.csv.inprogress", "notes.txt",
                 "orders/x.csv~", "orders/x.csv.crdownload", "orders/x.csv.filepart",
                 "orders/_temporary/0/_temporary/attempt_1/part-00000.csv", "orders/.staging/f.csv"):  # Spark, hidden
        assert not is_candidate(name), name


PARQUET_TAIL = b"PAR1" + b"x" * 8 + b"PAR1"  # a footer's magic bytes: what unfinished() looks for


def test_a_file_that_looks_cut_short_is_not_settled_until_long_unchanged(tmp_path):
    """A writer that pauses longer than the settle time mid-line, before a Parquet footer or before its first byte."""
    cut = {"a.csv": b"order_id,amount\no1,13", "b.parquet": b"PAR1" + b"x" * 20, "c.csv": b""}
    whole = {"d.csv": b"order_id,amount\no1,131.52\r\n", "e.parquet": PARQUET_TAIL, "f.csv.gz": b"\x1f\x8b"}
    for name, data in {**cut, **whole}.items():
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, (time.time() - 60, time.time() - 60))  # quiet for a minute
    assert {n: unfinished(tmp_path / n, len(d)) is not None for n, d in {**cut, **whole}.items()} == (
        {n: True for n in cut} | {n: False for n in whole})
    paths = [tmp_path / n for n in {**cut, **whole}]
    start = time.time()
    now = [start]
    settled, why = wait_until_settled(paths, 5, 60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert set(settled) == {tmp_path / n for n in whole}
    assert why == {tmp_path / "a.csv": "its last line has no end yet", tmp_path / "b.parquet": "no Parquet footer yet",
                   tmp_path / "c.csv": "empty so far"}
    assert now[0] - start <= 6  # watched unchanged for the settle time, not waited for until the deadline
    old = time.time() - UNFINISHED_SETTLE_SECONDS - 1  # a CSV exported without a last line end is read in the end
    os.utime(tmp_path / "a.csv", (old, old))
    assert set(wait_until_settled([tmp_path / "a.csv"], 0.2, 60)[0]) == {tmp_path / "a.csv"}  # after watching it 0.2 s



def test_an_mtime_in_the_future_settles_by_watching(tmp_path):
    """Another machine's clock: the mtime's age tells nothing, watching the file unchanged does (CLI and sensor)."""
    (tmp_path / "orders").mkdir()
    f = tmp_path / "orders" / "a.csv"
    f.write_text("order_id\n1\n")
    later = time.time() + 3600
    os.utime(f, (later, later))
    clock = [time.time()]
    settled, _ = wait_until_settled([f], 5, 60, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert set(settled) == {f}
    files, cursor = scan_landing(tmp_path), SensorCursor()
    assert ready_files(files, cursor, clock[0], 5) == []  # first seen now
    cursor = load_cursor(dump_cursor(cursor, files))
    assert [x.path for x in ready_files(files, cursor, clock[0] + 6, 5)] == ["orders/a.csv"]


def test_files_are_ready_after_settling_and_only_once(tmp_path):
    (tmp_path / "orders").mkdir()
    (tmp_path / "clicks").mkdir()
    old = tmp_path / "orders" / "a.csv"
    old.write_text("order_id\n1\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    fresh = tmp_path / "clicks" / "b.parquet"
    fresh.write_bytes(PARQUET_TAIL)
    (tmp_path / "clicks" / "c.parquet.part").write_bytes(b"x")

    files = scan_landing(tmp_path)
    assert [f.path for f in files] == ["clicks/b.parquet", "orders/a.csv"]
    now = time.time()
    first = ready_files(files, SensorCursor(), now, settle_seconds=10)
    assert [f.path for f in first] == ["orders/a.csv"]  # b.parquet is still settling

    cursor = load_cursor(dump_cursor(SensorCursor({f.key for f in first}), files))
    assert ready_files(files, cursor, now, 10) == []  # never twice
    assert [f.path for f in ready_files(files, cursor, now + 11, 10)] == ["clicks/b.parquet"]

    # A file that changes again is a new version (the ledger decides by content whether it adds rows).
    fresh.write_bytes(PARQUET_TAIL * 2)
    later = scan_landing(tmp_path)
    assert [f.path for f in ready_files(later, cursor, time.time() + 11, 10)] == ["clicks/b.parquet"]


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
    old.write_text("x\n")
    young.write_text("x\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    now = [time.time()]

    def sleep(seconds):
        now[0] += seconds
        young.write_text(young.read_text() + "x\n")  # the writer keeps appending while we wait
        os.utime(young, (now[0], now[0]))

    settled, changing = wait_until_settled([old, young], 5, 10, clock=lambda: now[0], sleep=sleep)
    assert set(settled) == {old} and changing == {young: "still being written"}
    settled, changing = wait_until_settled([young], 5, 30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert set(settled) == {young} and not changing  # the writer stopped: read after 5 quiet seconds


def test_a_file_moved_away_while_waited_for_is_not_waited_for(tmp_path):
    """An archiver moved a discovered file out of landing/: ingestion waited the whole max_settle_wait for it, and it
    was then reported as left to the next run (--strict exited 3 for a file that no longer existed)."""
    young = tmp_path / "young.csv"
    young.write_text("a\n1\n")
    now = [time.time()]

    def sleep(seconds):
        young.unlink(missing_ok=True)  # moved away during the first wait
        now[0] += seconds

    settled, why = wait_until_settled([young], 5, 60, clock=lambda: now[0], sleep=sleep)
    assert not settled and why == {young: "gone"} and now[0] - time.time() < 5  # not the full 60 s


def test_a_file_a_local_process_holds_open_for_writing_is_named_and_so_is_a_link_to_it(tmp_path):
    """A writer paused at a line end looks finished by time and bytes; psutil tells it is still open for writing.
    A link to it in landing/ is the same file (a reviewer's: only the link was named, the file was read)."""
    from seg_assets.ingest.sources import open_for_writing

    target, link, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    hard = tmp_path / "landing" / "d.csv"  # a hard link: an exporter writing elsewhere, linked into landing/ (a reviewer's)
    hard.parent.mkdir()
    other.write_text("id\n1\n")
    with target.open("w") as writer:
        writer.write("id\n1\n")
        writer.flush()
        link.symlink_to(target)
        os.link(target, hard)
        with other.open() as reader:  # open for reading only: no writer
            held = open_for_writing([target, link, other, hard])
            assert reader.readable()
    assert set(held) == {target, link, hard} and "open for writing by process" in held[target]
    assert open_for_writing([target, link, hard]) == {}  # closed


def test_a_held_file_quiet_for_ten_minutes_is_read_by_ingestion_as_the_sensor_says(tmp_path):
    """One rule for a file its writer still holds open: it waits like one cut short (read once unchanged for
    UNFINISHED_SETTLE_SECONDS and watched), for the sensor and ingestion alike. Ingestion refused it for an hour
    while the sensor started a run for it after ten minutes: a run that read nothing, then no run (a reviewer's)."""
    (tmp_path / "landing" / "orders").mkdir(parents=True)
    old, young = tmp_path / "landing" / "orders" / "old.csv", tmp_path / "landing" / "orders" / "young.csv"
    with old.open("w") as w_old, young.open("w") as w_young:
        for w, path, age in ((w_old, old, UNFINISHED_SETTLE_SECONDS + 60), (w_young, young, 120)):
            w.write("order_id,user_id,order_ts,amount\no1,u1,2026-10-30T10:00:00Z,10.5\n")
            w.flush()
            os.utime(path, (time.time() - age, time.time() - age))
        now = time.time()
        files = scan(tmp_path / "landing", SOURCES)
        assert all(f.unfinished and "open for writing" in f.unfinished for f in files)
        cursor = SensorCursor()
        ready_files(files, cursor, now, 5)
        sensor = {f.path for f in ready_files(files, cursor, now + 5, 5)}
        clock = [now]

        def sleep(seconds):
            clock[0] += seconds

        settled, why = wait_until_settled([old, young], 5, 60, clock=lambda: clock[0], sleep=sleep)
    assert sensor == {"orders/old.csv"} and set(settled) == {old}
    assert "open for writing" in why[young] and clock[0] - now < 10  # not waited for the full minute


def test_a_failed_runs_files_are_retried_whatever_their_names_hold():
    """A run key joins the files' keys with '|' and a retry adds '#retry<n>': a landing file named with either
    ('orders/export|2026.csv', 'clicks/#retry1.csv') was split into keys no request knew, so its failed run was never
    retried (left to the hourly schedule). The keys are written and read back by one rule."""
    from seg_assets.automation.landing import keys_of, retry_failed, run_key

    keys = ["orders/export|2026.csv:10:1700000000", "clicks/#retry1.csv:5:1700000000", "orders/100%.csv:1:1"]
    assert keys_of(run_key(keys, 0)) == keys and keys_of(run_key(keys, 1)) == keys
    cursor = SensorCursor(seen=set(keys), requested=dict.fromkeys(keys, 0))
    retry_failed(cursor, [("run-1", run_key(keys, 0))])
    assert cursor.seen == set() and cursor.requested == dict.fromkeys(keys, 1)
    assert run_key(["orders/a.csv:1:1", "orders/b.csv:2:2"], 0) == "orders/a.csv:1:1|orders/b.csv:2:2"  # as before
