"""A data root whose path DuckDB could misread: a folder named like a Hive partition (``env=prod``), glob characters
(``shop[eu]``) and a quote (``o'brien``). Every file DuckDB reads or writes by path goes through
``warehouse.read_parquet_sql`` / ``sql_string``: before, the BI copy's views and the Spark engine's tables gained an
``env`` column, ``shop[eu]`` matched no file and ``o'brien`` ended the SQL string (a failed run, retried)."""

import duckdb
import pytest

from seg_assets.publish.bi import publish_tables
from seg_assets.spark import scoring, tables
from seg_assets.warehouse import prepare_connection

ODD = ("env=prod", "shop[eu] o'brien")


@pytest.fixture
def odd_root(tmp_path):
    root = tmp_path.joinpath(*ODD)
    root.mkdir(parents=True)
    return root


def test_the_bi_copy_reads_its_files_as_written(odd_root):
    con = duckdb.connect(str(odd_root / "warehouse.duckdb"))
    prepare_connection(con)
    con.sql("CREATE TABLE analytics.user_segments AS SELECT 'u' || i AS user_id, i % 3 AS segment_id FROM range(10) t(i)")
    published = publish_tables(con, odd_root / "bi", ["analytics.user_segments"])
    bi = duckdb.connect(str(published.database), read_only=True)
    assert bi.sql("SELECT * FROM analytics.user_segments").columns == ["user_id", "segment_id"]
    assert bi.sql("SELECT count(*) FROM analytics.user_segments").fetchall() == [(10,)]
    con.sql("INSERT INTO analytics.user_segments VALUES ('v', 1)")
    assert publish_tables(con, odd_root / "bi", ["analytics.user_segments"]).rows == {"analytics.user_segments": 11}


def test_the_spark_engines_folders_are_read_as_written(odd_root):
    """The views over Spark's Parquet folders, their row counts, the scoring hand-over (no Spark needed: DuckDB's side)."""
    con = duckdb.connect(str(odd_root / "warehouse.duckdb"))
    prepare_connection(con)
    folder = odd_root / "spark" / "raw" / "orders" / "run_1"
    folder.mkdir(parents=True)
    con.sql(f"COPY (SELECT range AS n FROM range(5)) TO '{str(folder / 'part-0.parquet').replace(chr(39), chr(39) * 2)}' "
            "(FORMAT parquet)")
    tables.duckdb_view(con, "raw.orders", folder.parent)
    assert con.sql("SELECT * FROM raw.orders").columns == ["n"] and tables.parquet_rows(folder.parent) == 5
    path, rows = scoring.export_selection(con, "SELECT n AS user_id FROM raw.orders", odd_root / "work")
    assert rows == 5 and path.exists()
    scoring.scored_view(con, "scored", odd_root / "work")
    assert con.sql("SELECT * FROM scored").columns == ["user_id"] and con.sql("SELECT count(*) FROM scored").fetchall() == [(5,)]


@pytest.mark.slow
def test_spark_reads_a_non_ascii_root_under_the_c_locale(tmp_path):
    """The JVM names files in its locale's encoding: under LC_ALL=C (cron, a bare container) ``münchen`` was a path
    that "does not exist". A process of its own: the locale is read when the JVM starts."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "münchen" / "t"
    folder.mkdir(parents=True)
    duckdb.sql(f"COPY (SELECT 1 AS a) TO '{folder / 'p.parquet'}' (FORMAT parquet)")
    script = ("from seg_assets.spark.session import get_spark\nfrom seg_assets.spark.tables import read_path\n"
              f"print('ROWS', get_spark('local[1]').read.parquet(read_path({str(folder)!r})).count())")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))} | {"LC_ALL": "C", "LANG": "C"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "ROWS 1" in done.stdout, done.stderr[-2000:]
