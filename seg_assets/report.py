"""What a refresh built, as rich tables for the terminal (``seg-assets refresh``, ``make demo``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from seg_assets.resources import Warehouse
from seg_assets.settings import data_paths
from seg_assets.warehouse import row_count, table_exists


def _table(title: str, columns: list[str], rows: list[tuple]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col not in ("file", "table", "status", "segment", "description", "reason") else "left")
    for row in rows:
        table.add_row(*[f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    return table


def print_summary(data_dir: str | Path | None = None, console: Console | None = None) -> None:
    console = console or Console()
    paths = data_paths(data_dir)
    if not paths.warehouse.exists():
        console.print("[yellow]No warehouse yet.[/yellow]")
        return
    with Warehouse(database=str(paths.warehouse)).get_connection() as con:
        if table_exists(con, "meta.ingest_ledger"):
            rows = con.sql(
                "SELECT table_name, count(*)::INT, sum(delivered)::BIGINT, sum(accepted)::BIGINT, "
                "sum(duplicate)::BIGINT, sum(rejected)::BIGINT FROM meta.ingest_ledger GROUP BY 1 ORDER BY 1"
            ).fetchall()
            console.print(_table("Ingested (all files so far)", ["table", "files", "delivered", "accepted", "duplicate", "rejected"],
                                 [tuple(int(v) if isinstance(v, int) else v for v in r) for r in rows]))
        counts = [(t, row_count(con, t)) for t in ("raw.orders", "raw.clicks", "raw.customers", "raw.rejects", "features.user_features")]
        console.print(_table("Tables", ["table", "rows"], counts))
        if table_exists(con, "analytics.segment_profiles"):
            rows = con.sql(
                "SELECT segment_id, segment_name, users, share, revenue_share, description "
                "FROM analytics.segment_profiles ORDER BY segment_id"
            ).fetchall()
            console.print(_table("Segments", ["id", "segment", "users", "share", "revenue share", "description"],
                                 [(sid, name, int(u), f"{s:.1%}", f"{r:.1%}", d) for sid, name, u, s, r, d in rows]))
