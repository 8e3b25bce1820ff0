"""BI publication: atomic replacement, readable while a reader holds the old file open."""

import subprocess
import sys

import duckdb

from seg_assets.publish.bi import publish_tables
from seg_assets.warehouse import prepare_connection


def test_publish_replaces_files_and_keeps_schema(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.user_segments AS SELECT 'u' || i AS user_id, i % 3 AS segment_id FROM range(10) t(i)")
    first = publish_tables(con, tmp_path / "bi", ["analytics.user_segments"])
    assert first.rows == {"analytics.user_segments": 10}

    # A reader in another process holds the published file open read-only while we publish again.
    reader = subprocess.Popen(
        [sys.executable, "-c", (
            "import duckdb, sys, time\n"
            f"c = duckdb.connect(r'{first.database}', read_only=True)\n"
            "print(c.sql('select count(*) from analytics.user_segments').fetchall()[0][0], flush=True)\n"
            "sys.stdin.readline()\n"
            "print(c.sql('select count(*) from analytics.user_segments').fetchall()[0][0], flush=True)\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "10"
    con.sql("INSERT INTO analytics.user_segments SELECT 'v' || i, 1 FROM range(5) t(i)")
    second = publish_tables(con, tmp_path / "bi", ["analytics.user_segments"])  # must not block on the reader
    out, _ = reader.communicate("go\n", timeout=30)
    assert out.strip() == "10"  # the reader kept its complete old copy
    assert second.rows == {"analytics.user_segments": 15}
    fresh = duckdb.connect(str(second.database), read_only=True)
    assert fresh.sql("SELECT count(*) FROM analytics.user_segments").fetchall() == [(15,)]
    assert duckdb.sql(f"SELECT count(*) FROM '{second.parquet['analytics.user_segments']}'").fetchall() == [(15,)]
    assert sorted(p.name for p in (tmp_path / "bi").iterdir()) == ["analytics.user_segments.parquet", "segments.duckdb"]
