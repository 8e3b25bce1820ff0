"""The floor: one DuckDB SQL pass over the landing files computing the per-user aggregates.

No validation, no dedupe, no ledger, no model, no Dagster: the least work that still reads every
event and produces per-user counts, sums and last timestamps. Nothing that does more can beat it,
so ``cold / floor`` says how much the pipeline's extra guarantees cost.

    python bench/floor.py LANDING_DIR OUT.parquet
"""

from __future__ import annotations

import argparse
import glob
import os

import duckdb

from seg_assets.ingest.events import DEFAULT_EVENT_STAGES


def names_of(stage: str) -> str:
    """The built-in event names of one funnel stage, as a SQL list (the demo data uses only those)."""
    return ", ".join(f"'{n}'" for n, s in DEFAULT_EVENT_STAGES.items() if s == stage)


def scan(landing: str, table: str) -> str:
    """A SQL source over every parquet and CSV file of one landing folder (either may be absent)."""
    folder = os.path.join(landing, table)
    parts = []
    if glob.glob(os.path.join(folder, "*.parquet")):
        parts.append(f"SELECT * FROM read_parquet('{folder}/*.parquet', union_by_name = true)")
    if glob.glob(os.path.join(folder, "*.csv*")):
        parts.append(f"SELECT * FROM read_csv('{folder}/*.csv*', header = true, union_by_name = true)")
    if not parts:
        raise SystemExit(f"no landing files in {folder}")
    return " UNION ALL BY NAME ".join(parts)


QUERY = """
COPY (
    WITH o AS (
        SELECT user_id,
               count(*) FILTER (WHERE status = 'completed') AS orders,
               count(*) AS all_orders,
               coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0) AS monetary,
               max(order_ts::TIMESTAMP) FILTER (WHERE status = 'completed') AS last_order_ts
        FROM ({orders}) GROUP BY user_id
    ), c AS (
        SELECT user_id,
               count(DISTINCT session_id) AS sessions,
               count(*) FILTER (WHERE event_type IN ({view})) AS views,
               count(*) FILTER (WHERE event_type IN ({search})) AS searches,
               count(*) FILTER (WHERE event_type IN ({add_to_cart})) AS add_to_carts,
               count(*) FILTER (WHERE event_type IN ({checkout})) AS checkouts,
               max(event_ts::TIMESTAMP) AS last_click_ts
        FROM ({clicks}) GROUP BY user_id
    )
    SELECT * FROM o FULL OUTER JOIN c USING (user_id)
) TO '{out}' (FORMAT parquet)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing")
    parser.add_argument("out")
    args = parser.parse_args()
    con = duckdb.connect()
    stages = {s: names_of(s) for s in ("view", "search", "add_to_cart", "checkout")}
    con.sql(QUERY.format(orders=scan(args.landing, "orders"), clicks=scan(args.landing, "clicks"), out=args.out, **stages))
    users = con.sql(f"SELECT count(*) FROM read_parquet('{args.out}')").fetchall()[0][0]
    print(f"{users:,} users -> {args.out}")


if __name__ == "__main__":
    main()
