"""Spark's tables: Parquet folders under ``$SEG_DATA_DIR/spark/<schema>/<table>/``, and the DuckDB views over them.

A Spark step registers what it reads as temp views (``<schema>__<name>``, see spark/sql.py): a raw table from
its Parquet folder, a ``view`` SQL model from its (transpiled) SQL, a table model from the Parquet its own step
wrote. A step writes its table to a new folder and swaps it into place, so a failed step leaves the previous
table whole; DuckDB then reads it through ``CREATE VIEW ... AS SELECT * FROM read_parquet(...)``, so the Python
steps downstream (fit on a sample, history, publish) run unchanged and nothing loads every row into one machine.
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path

from seg_assets.settings import DataPaths
from seg_assets.spark.sql import model_spark_sql, view_name
from seg_assets.warehouse import drop_other_kind, read_parquet_sql, sql_string


class SparkTables:
    """The temp views one Spark step reads, registered on demand (fresh per step: a rebuilt folder is re-listed)."""

    def __init__(self, spark, paths: DataPaths, models: dict, as_of: datetime):
        self.spark, self.paths, self.models, self.as_of = spark, paths, models, as_of
        self._done: set[str] = set()

    def ensure(self, table: str) -> str:
        """Register ``schema.name`` (and what it reads) and return its temp view name."""
        schema, name = table.split(".", 1)
        view = view_name(schema, name)
        if table in self._done:
            return view
        model = self.models.get(table)
        if model is not None and model.materialized == "view":
            for upstream in model.upstream:
                self.ensure(".".join(upstream))
            self.spark.sql(model_spark_sql(model, self.as_of)).createOrReplaceTempView(view)
        else:
            folder = self.paths.spark_table(table)
            if not folder.is_dir():
                built_by = "its SQL model's step" if model is not None else "ingestion (raw tables)"
                raise FileNotFoundError(f"{table}: no Spark table at {folder}; it is written by {built_by} with "
                                        "--engine spark: materialize that first")
            # a raw folder's files may have different columns (written before a contract column was added): merged
            reader = (self.spark.read.option("recursiveFileLookup", "true").option("mergeSchema", "true") if schema == "raw"
                      else self.spark.read)
            reader.parquet(read_path(folder)).createOrReplaceTempView(view)
        self._done.add(table)
        return view


def write_table(frame, target: Path, *, partitions: int | None = None, by: str | None = None) -> None:
    """Write a Spark DataFrame as the Parquet folder ``target``, whole or not at all: written beside it, then
    swapped in. ``by``: hash-partition the rows by this column into ``partitions`` files (features: by user)."""
    if by is not None:
        frame = frame.repartition(partitions or int(frame.sparkSession.conf.get("spark.sql.shuffle.partitions")), by)
    _swap_in(target, lambda fresh: frame.write.mode("overwrite").parquet(str(fresh)))


def export_duckdb_table(con, table: str, paths: DataPaths) -> Path:
    """A table a Python step keeps in DuckDB (e.g. ``analytics.review_sentiment``) as Spark's Parquet folder, so the
    SQL models that read it run on Spark like the rest; whole or not at all, like :func:`write_table`."""
    target = paths.spark_table(table)
    _swap_in(target, lambda fresh: (fresh.mkdir(parents=True),
                                    con.sql(f"COPY {table} TO {sql_string(str(fresh / 'part-0.parquet'))} (FORMAT parquet)")))
    return target


def _swap_in(target: Path, write) -> None:
    """Run ``write(fresh)`` into a folder beside ``target``, then swap it into place (a failed write leaves ``target``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = uuid.uuid4().hex[:8]
    fresh, old = target.with_name(f".{target.name}.new-{stamp}"), target.with_name(f".{target.name}.old-{stamp}")
    write(fresh)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def parquet_rows(folder: Path, by: str | None = None):
    """Rows of a Parquet folder Spark just wrote, counted by DuckDB from the files' footers (no Spark job);
    with ``by``: {value: rows}."""
    import duckdb

    if not any(folder.rglob("*.parquet")):
        return 0 if by is None else {}
    source = read_parquet_sql(folder, PARQUET_FILES)
    with duckdb.connect() as con:
        if by is None:
            return int(con.sql(f"SELECT count(*) FROM {source}").fetchall()[0][0])
        return dict(con.sql(f"SELECT {by}, count(*) FROM {source} GROUP BY 1").fetchall())


PARQUET_FILES = "**/*.parquet"  # every Parquet file under a folder Spark wrote
_HADOOP_GLOB = re.compile(r"([\[\]{}*?\\])")


def read_path(path: str | Path) -> str:
    """A path for Spark's readers, which glob (Hadoop's patterns): ``[ ] { } * ? \\`` escaped with a backslash, so a
    data root ``shop[eu]`` is read as written."""
    return _HADOOP_GLOB.sub(r"\\\1", str(path))


def duckdb_view(con, table: str, folder: Path, by_name: bool = False) -> None:
    """``table`` in DuckDB as a view over Spark's Parquet folder (what downstream steps and checks read). ``by_name``:
    its files may have different columns (raw tables: files written before a column was added), read by name."""
    drop_other_kind(con, table, "VIEW")
    con.sql(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {read_parquet_sql(folder, PARQUET_FILES, by_name)}")
