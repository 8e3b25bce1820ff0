"""Reading the published BI copy the way a BI tool does: its own read-only connection, closed after use."""

from pathlib import Path

import duckdb
import polars as pl


def read_bi(root: Path, sql: str) -> pl.DataFrame:
    con = duckdb.connect(str(root / "bi" / "segments.duckdb"), read_only=True)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()
