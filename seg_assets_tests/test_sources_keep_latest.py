"""sources.yaml `keep: latest` at ingestion, on real DuckDB files: a later delivery's changed row replaces the stored
one and is counted as updated, an earlier file's bytes delivered again are the latest delivery, events and unknown
values are refused, and a ledger written before the `updated` column is migrated. (Through a whole refresh:
test_order_updates.py.)"""

import duckdb
import pytest

from seg_assets.ingest.source_config import SourceConfigError
from seg_assets_tests.sources_ingest import ingest, parse, write


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
