"""Publish the analytics tables for BI: a DuckDB file and Parquet files, each replaced atomically.

BI tools never open the warehouse (a reader in another process would block every refresh). They open
``SEG_DATA_DIR/bi/segments.duckdb`` read-only, or the Parquet files beside it. Each publication is
written to a temporary file in the same folder and moved into place with ``os.replace`` (an atomic
rename on POSIX): a reader that holds the old file open keeps reading the old, complete file; the next
one opens the new, complete file. Nobody ever sees a half-written table, and nobody blocks the writer.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

BI_FILE = "segments.duckdb"


@dataclass(frozen=True)
class Publication:
    database: Path
    parquet: dict[str, Path]
    rows: dict[str, int]


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def publish_tables(con, bi_dir: Path, tables: list[str]) -> Publication:
    """Copy ``tables`` (``schema.name``) from the warehouse into a fresh BI file and Parquet files."""
    bi_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp_db = bi_dir / f".{BI_FILE}.{token}.tmp"
    alias = f"bi_{token}"
    rows, staged = {}, {}
    # Tables are sets: letting DuckDB write them in any order lets both cores write (about -10%).
    con.sql("SET preserve_insertion_order = false")
    try:
        con.sql(f"ATTACH '{_sql_path(tmp_db)}' AS {alias}")
        try:
            for table in tables:
                schema, name = table.split(".", 1)
                con.sql(f"CREATE SCHEMA IF NOT EXISTS {alias}.{schema}")
                con.sql(f"CREATE TABLE {alias}.{schema}.{name} AS SELECT * FROM {table}")
                rows[table] = int(con.sql(f"SELECT count(*) FROM {alias}.{schema}.{name}").fetchall()[0][0])
                tmp_parquet = bi_dir / f".{table}.{token}.parquet.tmp"
                con.sql(f"COPY (SELECT * FROM {table}) TO '{_sql_path(tmp_parquet)}' (FORMAT parquet)")
                staged[table] = tmp_parquet
        finally:
            con.sql(f"DETACH {alias}")
            con.sql("RESET preserve_insertion_order")
        # Everything is written: now swap each file into place.
        target_db = bi_dir / BI_FILE
        os.replace(tmp_db, target_db)
        parquet = {}
        for table, tmp in staged.items():
            parquet[table] = bi_dir / f"{table}.parquet"
            os.replace(tmp, parquet[table])
        return Publication(database=target_db, parquet=parquet, rows=rows)
    finally:
        for leftover in [tmp_db, tmp_db.with_name(tmp_db.name + ".wal"), *staged.values()]:
            if leftover.exists():
                leftover.unlink()
