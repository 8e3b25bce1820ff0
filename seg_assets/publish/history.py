"""Segment history and transitions: who moved between segments, refresh by refresh.

``analytics.segment_history`` is slowly-changing (type 2): a user has a new row only when their
segment changes; the open row (``valid_to IS NULL``) is their current segment. The open rows are also
the "previous assignment" the next refresh compares against, so no snapshot has to be kept.
``analytics.segment_transitions`` counts, per refresh, the users who entered a segment (``from_segment``
NULL: first seen) or moved from one to another. Re-running with nothing changed writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from seg_assets.warehouse import transaction

SEGMENT_HISTORY = dg.AssetKey(["analytics", "segment_history"])  # written by publish/assets.py, read by activation too
SEGMENT_TRANSITIONS = dg.AssetKey(["analytics", "segment_transitions"])

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS analytics.segment_history (
    user_id VARCHAR NOT NULL, segment_id INTEGER NOT NULL, segment_name VARCHAR,
    valid_from TIMESTAMP NOT NULL, valid_to TIMESTAMP, model_version VARCHAR
)"""
TRANSITIONS_DDL = """
CREATE TABLE IF NOT EXISTS analytics.segment_transitions (
    as_of TIMESTAMP NOT NULL, from_segment INTEGER, to_segment INTEGER NOT NULL,
    from_name VARCHAR, to_name VARCHAR, users BIGINT NOT NULL, run_id VARCHAR, recorded_at TIMESTAMP
)"""


@dataclass(frozen=True)
class HistoryUpdate:
    new_users: int
    moved_users: int
    unchanged_users: int


def ensure_history_tables(con) -> None:
    con.sql(HISTORY_DDL)
    con.sql(TRANSITIONS_DDL)


def record_history(con, as_of: datetime, run_id: str | None = None, source: str = "analytics.user_segments") -> HistoryUpdate:
    """Compare the current assignment with the open history rows and record the differences, atomically."""
    ensure_history_tables(con)
    with transaction(con):
        con.sql(f"""
            CREATE OR REPLACE TEMP TABLE _changes AS
            SELECT u.user_id, h.segment_id AS from_segment, h.segment_name AS from_name,
                   u.segment_id AS to_segment, u.segment_name AS to_name, u.model_version
            FROM {source} u
            LEFT JOIN analytics.segment_history h ON h.user_id = u.user_id AND h.valid_to IS NULL
            WHERE h.segment_id IS DISTINCT FROM u.segment_id
        """)
        con.execute(
            "UPDATE analytics.segment_history SET valid_to = ? WHERE valid_to IS NULL AND user_id IN "
            "(SELECT user_id FROM _changes WHERE from_segment IS NOT NULL)", [as_of])
        con.execute(
            "INSERT INTO analytics.segment_history SELECT user_id, to_segment, to_name, ?, NULL, model_version FROM _changes",
            [as_of])
        con.execute(
            "INSERT INTO analytics.segment_transitions "
            "SELECT ?, from_segment, to_segment, any_value(from_name), any_value(to_name), count(*), ?, now()::TIMESTAMP "
            "FROM _changes GROUP BY from_segment, to_segment ORDER BY from_segment NULLS FIRST, to_segment",
            [as_of, run_id])
        new, moved = con.sql(
            "SELECT count(*) FILTER (WHERE from_segment IS NULL), count(*) FILTER (WHERE from_segment IS NOT NULL) FROM _changes"
        ).fetchall()[0]
        total = con.sql(f"SELECT count(*) FROM {source}").fetchall()[0][0]
        con.sql("DROP TABLE _changes")
    return HistoryUpdate(new_users=int(new), moved_users=int(moved), unchanged_users=int(total - new - moved))


def segment_sizes_over_time(con):
    """Users per segment at each recorded as-of (for the sizes-over-time plot), as a polars frame."""
    return con.sql("""
        WITH points AS (SELECT DISTINCT valid_from AS ts FROM analytics.segment_history)
        SELECT p.ts AS as_of, h.segment_id, any_value(h.segment_name) AS segment_name, count(*) AS users
        FROM points p JOIN analytics.segment_history h
          ON h.valid_from <= p.ts AND (h.valid_to IS NULL OR h.valid_to > p.ts)
        GROUP BY ALL ORDER BY as_of, segment_id
    """).pl()
