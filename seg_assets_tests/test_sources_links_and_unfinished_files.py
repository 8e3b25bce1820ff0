"""Which landed files ingestion reads, on real files and real DuckDB files: a link out of landing/ (also one swapped
in after discovery) is not read, a folder linked to an allowed share is; a file still being written, or changed
while hashed or read, is left to the next run and read whole there. (The landing rule itself:
test_landing_sensor_rule.py; through the CLI: test_cli_landing_and_strict.py.)"""

import hashlib
import os
from pathlib import Path

import duckdb
import pytest

from seg_assets.ingest.source_config import parse_sources
from seg_assets.ingest.sources import LINK_REFUSED, LINK_ROOTS_ENV, discover_files
from seg_assets_tests.sources_ingest import ingest, write


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
