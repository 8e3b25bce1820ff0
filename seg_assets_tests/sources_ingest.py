"""Helpers of the sources.yaml tests: parse a sources file's text, write landing files, and ingest them on a real
DuckDB file, every delivered row accounted for (the modules `test_sources_*.py`, `test_csv_dialect.py`)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from seg_assets.ingest.loader import ingest_landing
from seg_assets.ingest.source_config import parse_sources

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def parse(text: str):
    return parse_sources(text, Path("sources.yaml"))


def one_source(columns: str, table: str = "orders", extra: str = "") -> str:
    return f"sources:\n  shop:\n    table: {table}\n{extra}    columns:\n{columns}"


def ingest(root: Path, now=NOW):
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        report = ingest_landing(con, root / "landing", run_id="r1", now=now, clock_skew=timedelta(minutes=60),
                                min_ts=datetime(1990, 1, 1))
        ledger = con.sql("SELECT source, file_name, status, delivered, accepted, duplicate, rejected, filtered, message, "
                         "updated FROM meta.ingest_ledger ORDER BY file_id").fetchall()
        for row in ledger:
            assert row[3] == sum(row[4:8]) + row[9], row  # every delivered row accounted for
        return report, ledger, con.sql("SELECT * FROM raw.rejects").fetchall()
    finally:
        con.close()


def write(root: Path, rel: str, text: str) -> None:
    path = root / "landing" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
