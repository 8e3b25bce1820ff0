"""Ingestion with ``--engine spark``: the raw tables as Parquet, one file per landing file, for Spark to read.

What runs where (an honest split, see docs/spark.md): each landing file is still read, mapped, validated and
deduplicated by the DuckDB loader (ingest/loader.py: one definition of the contract's rules, the ledger and
raw.rejects stay in DuckDB keyed by (source, sha256)), then its accepted rows are written to
``spark/raw/<table>/file_id=<n>.parquet``: append-only, like the raw tables. Spark's models read those folders.
A file is exported once: the ledger's ``file_id`` names the Parquet file, so a re-run writes only what is new.
"""

from __future__ import annotations

from pathlib import Path

from seg_assets.ingest import contract as C
from seg_assets.settings import DataPaths
from seg_assets.spark.tables import sql_string

EMPTY = "file_id=0.parquet"  # a table with no rows yet still has its schema for Spark (file ids start at 1)


def _exported(folder: Path) -> set[int]:
    return {int(p.stem.split("=", 1)[1]) for p in folder.glob("file_id=*.parquet")}


def export_raw(con, paths: DataPaths) -> dict[str, int]:
    """Write each raw table's rows of not yet exported files to Parquet; rows written per table."""
    written = {}
    for name, spec in C.TABLES.items():
        folder = paths.spark_table(spec.qualified)
        folder.mkdir(parents=True, exist_ok=True)
        done = _exported(folder)
        ids = [r[0] for r in con.sql(f"SELECT DISTINCT _file_id FROM {spec.qualified} ORDER BY 1").fetchall()]
        rows = 0
        for file_id in (i for i in ids if i not in done):
            target = folder / f"file_id={file_id}.parquet"
            tmp = folder / f".file_id={file_id}.parquet.tmp"
            con.sql(f"COPY (SELECT * FROM {spec.qualified} WHERE _file_id = {int(file_id)} ORDER BY _row) "
                    f"TO {sql_string(str(tmp))} (FORMAT parquet)")
            tmp.rename(target)
            rows += con.sql(f"SELECT count(*) FROM {spec.qualified} WHERE _file_id = {int(file_id)}").fetchall()[0][0]
        if not any(folder.glob("*.parquet")):
            con.sql(f"COPY (SELECT * FROM {spec.qualified} LIMIT 0) TO {sql_string(str(folder / EMPTY))} (FORMAT parquet)")
        written[name] = rows
    return written
