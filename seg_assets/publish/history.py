"""Segment history and transitions: who moved between segments, refresh by refresh.

``analytics.segment_history`` is slowly-changing (type 2): a user has a new row only when their
segment changes; the open row (``valid_to IS NULL``) is their current segment. The open rows are also
the "previous assignment" the next refresh compares against, so no snapshot has to be kept.
``analytics.segment_transitions`` counts, per as-of, the users who entered a segment (``from_segment``
NULL: first seen) or moved from one to another. A user no longer segmented (a device whose clicks a login gave to its
customer: staging.identities; a user whose only order now names another) has their open spell closed, with no
transition; a spell opened at the very as-of the user leaves at (a re-run at an unchanged as-of) is removed, with its
transition: no spell is empty. Re-running with nothing changed writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from seg_assets.publish.keys import HISTORY_TABLE, TRANSITIONS_TABLE
from seg_assets.segmentation.scoring import TABLE
from seg_assets.warehouse import transaction

HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    user_id VARCHAR NOT NULL, segment_id INTEGER NOT NULL, segment_name VARCHAR,
    valid_from TIMESTAMP NOT NULL, valid_to TIMESTAMP, model_version VARCHAR
)"""
TRANSITIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {TRANSITIONS_TABLE} (
    as_of TIMESTAMP NOT NULL, from_segment INTEGER, to_segment INTEGER NOT NULL,
    from_name VARCHAR, to_name VARCHAR, users BIGINT NOT NULL, run_id VARCHAR, recorded_at TIMESTAMP
)"""


@dataclass(frozen=True)
class HistoryUpdate:
    new_users: int
    moved_users: int
    unchanged_users: int
    left_users: int = 0  # open spells closed: users no longer in the segment table
    skipped: str | None = None  # why nothing was recorded (a publication dated before the history's latest as-of)


def ensure_history_tables(con) -> None:
    con.sql(HISTORY_DDL)
    con.sql(TRANSITIONS_DDL)


def recorded_as_of(con) -> datetime | None:
    """The latest as-of the history recorded (every spell's end is another spell's start)."""
    ensure_history_tables(con)
    return con.sql(f"SELECT max(valid_from) FROM {HISTORY_TABLE}").fetchall()[0][0]


CHANGES = f"""
    CREATE OR REPLACE TEMP TABLE _changes AS
    SELECT u.user_id, h.segment_id AS from_segment, u.segment_id AS to_segment, u.segment_name AS to_name, u.model_version
    FROM {TABLE} u
    LEFT JOIN {HISTORY_TABLE} h ON h.user_id = u.user_id AND h.valid_to IS NULL
    WHERE h.segment_id IS DISTINCT FROM u.segment_id"""


def record_history(con, as_of: datetime, run_id: str | None = None) -> HistoryUpdate:
    """Compare the current assignment with the open history rows and record the differences, atomically.

    History is a forward-only record: a publication dated before its latest as-of (a backfill) would
    close spells before they opened, so it records nothing and says why. One at the latest as-of (a re-run,
    a refit) replaces what that as-of recorded: a user moves at most once per as-of, no spell is empty.
    """
    latest = recorded_as_of(con)
    if latest is not None and as_of < latest:
        return HistoryUpdate(0, 0, 0, skipped=f"as of {as_of} is before the latest as-of in the history ({latest}): "
                                              "history only moves forward, left as it was")
    with transaction(con):
        con.sql(CHANGES)
        changed = con.sql("SELECT count(*) FROM _changes").fetchall()[0][0]
        if changed and as_of == latest:  # undo this as-of's move of the users it changes again: their spell before it reopens
            con.execute(f"DELETE FROM {HISTORY_TABLE} WHERE valid_from = ? AND user_id IN (SELECT user_id FROM _changes)",
                        [as_of])
            con.execute(f"UPDATE {HISTORY_TABLE} SET valid_to = NULL WHERE valid_to = ? AND user_id IN "
                        "(SELECT user_id FROM _changes)", [as_of])
            con.sql(CHANGES)
        con.execute(
            f"UPDATE {HISTORY_TABLE} SET valid_to = ? WHERE valid_to IS NULL AND user_id IN "
            "(SELECT user_id FROM _changes WHERE from_segment IS NOT NULL)", [as_of])
        gone = 0
        if as_of == latest:  # a user gone at the as-of that opened their spell was never in it: no spell is empty
            gone = con.execute(f"DELETE FROM {HISTORY_TABLE} WHERE valid_from = ? AND valid_to IS NULL AND user_id NOT IN "
                               f"(SELECT user_id FROM {TABLE})", [as_of]).fetchall()[0][0]
        left = con.execute(f"UPDATE {HISTORY_TABLE} SET valid_to = ? WHERE valid_to IS NULL AND user_id NOT IN "
                           f"(SELECT user_id FROM {TABLE})", [as_of]).fetchall()[0][0]
        con.execute(
            f"INSERT INTO {HISTORY_TABLE} SELECT user_id, to_segment, to_name, ?, NULL, model_version FROM _changes",
            [as_of])
        if changed or gone:  # this as-of's transitions, as the history now holds them
            con.execute(f"DELETE FROM {TRANSITIONS_TABLE} WHERE as_of = ?", [as_of])
            con.execute(f"""
                INSERT INTO {TRANSITIONS_TABLE}
                SELECT h.valid_from, p.segment_id, h.segment_id, any_value(p.segment_name), any_value(h.segment_name),
                       count(*), ?, now()::TIMESTAMP
                FROM {HISTORY_TABLE} h
                LEFT JOIN {HISTORY_TABLE} p ON p.user_id = h.user_id AND p.valid_to = h.valid_from
                WHERE h.valid_from = ?
                GROUP BY ALL ORDER BY 2 NULLS FIRST, 3""", [run_id, as_of])
        new, moved = con.sql(
            "SELECT count(*) FILTER (WHERE from_segment IS NULL), count(*) FILTER (WHERE from_segment IS NOT NULL) FROM _changes"
        ).fetchall()[0]
        total = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
        con.sql("DROP TABLE _changes")
    return HistoryUpdate(new_users=int(new), moved_users=int(moved), unchanged_users=int(total - new - moved),
                         left_users=int(left + gone))


def segment_sizes_over_time(con):
    """Users per segment at each recorded as-of (for the sizes-over-time plot), as a polars frame."""
    return con.sql(f"""
        WITH points AS (SELECT DISTINCT valid_from AS ts FROM {HISTORY_TABLE})
        SELECT p.ts AS as_of, h.segment_id, any_value(h.segment_name) AS segment_name, count(*) AS users
        FROM points p JOIN {HISTORY_TABLE} h
          ON h.valid_from <= p.ts AND (h.valid_to IS NULL OR h.valid_to > p.ts)
        GROUP BY ALL ORDER BY as_of, segment_id
    """).pl()
