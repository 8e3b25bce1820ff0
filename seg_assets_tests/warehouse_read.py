"""A refresh that must succeed, and reading its warehouse the way a test inspects it: its own read-only connection."""

from pathlib import Path

import duckdb
import polars as pl

from seg_assets.refresh import run_refresh
from seg_assets.settings import data_paths


def refresh_ok(root: Path, as_of: str | None = None) -> None:
    outcome = run_refresh(root, as_of=as_of)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]


def read_warehouse(root: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return con.sql(sql).pl()
