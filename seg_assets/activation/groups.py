"""Control groups drawn from a salted hash of ``user_id``: the same user, the same bucket, everywhere.

``bucket = first 32 bits of md5(salt || ':' || user_id) mod 10,000``, in DuckDB (:func:`bucket_sql`, which
``user_groups`` runs on either engine) and in Python (:func:`bucket`, the same numbers), so a user's bucket is
the same on every refresh, after a refit or a drift, after a re-delivery and on any engine; it depends on
nothing but the salt and the id (a Spark form would be ``conv(substr(md5(...), 1, 8), 16, 10)``). Buckets
below ``share * 10,000`` are the global control group, which never receives an action. Changing the salt
re-draws the group; the history of salts is kept in ``meta.control_salts`` (one row per salt and share, with the time it came into use).
"""

from __future__ import annotations

import hashlib
import math

import duckdb

from seg_assets.warehouse import sql_string

BUCKETS = 10_000
SALTS_TABLE = "meta.control_salts"
SALTS_DDL = f"""CREATE TABLE IF NOT EXISTS {SALTS_TABLE} (
  salt_version INTEGER PRIMARY KEY, salt VARCHAR NOT NULL, share DOUBLE NOT NULL, since TIMESTAMP NOT NULL)"""


def bucket(user_id: str, salt: str) -> int:
    return int(hashlib.md5(f"{salt}:{user_id}".encode()).hexdigest()[:8], 16) % BUCKETS


def bucket_sql(user_column: str, salt: str) -> str:
    """The same bucket in DuckDB SQL."""
    return salted_bucket_sql(user_column, sql_string(salt))


def salted_bucket_sql(user_column: str, salt_sql: str) -> str:
    """The bucket with the salt an SQL expression (a column of :data:`SALTS_TABLE`, say)."""
    return f"(('0x' || substr(md5({salt_sql} || ':' || {user_column}), 1, 8))::UBIGINT % {BUCKETS})::INTEGER"


def in_control_at_sql(user_column: str, time_column: str) -> str:
    """SQL: whether the user was in the global control group at that time, by the salt and share in force then (the
    one recorded latest by then; before the first, the first). A new salt re-draws the group from its use on: the
    sends before it are judged by the group they were sent against (judged by today's group, a salt change dropped
    past sends from lift and called sends to users then outside the group broken promises). ``since`` is the wall
    clock of the refresh that first wrote audiences drawn with a salt (:func:`record_salt`): the data's as-of lags behind sends
    made from the previous audiences, and moves back and forth with ``--as-of``."""
    return f"""(SELECT {salted_bucket_sql(user_column, 'v.salt')} < round(v.share * {BUCKETS}) FROM {SALTS_TABLE} v
                ORDER BY (v.since <= {time_column}) DESC, CASE WHEN v.since <= {time_column} THEN -epoch(v.since)
                ELSE epoch(v.since) END, -v.salt_version LIMIT 1)"""


def control_cutoff(share: float) -> int:
    """Buckets below this are in the global control group: half up, as DuckDB's round() in :func:`in_control_at_sql`
    (Python's round() takes halves to even: 12.5 was 12 here and 13 there)."""
    return math.floor(share * BUCKETS + 0.5)


def salt_version(con, salt: str, share: float) -> tuple[int, bool]:
    """(version of (salt, share), whether it is recorded): the latest recorded one when it is the same, else the next
    number, which :func:`record_salt` records when the audiences drawn with it are written."""
    con.execute(SALTS_DDL)
    rows = con.sql(f"SELECT salt_version, salt, share FROM {SALTS_TABLE} ORDER BY salt_version DESC LIMIT 1").fetchall()
    if rows and rows[0][1] == salt and rows[0][2] == share:
        return int(rows[0][0]), True
    return (int(rows[0][0]) if rows else 0) + 1, False


DRAWN_TABLE = "meta.control_group_drawn"  # one row: the (salt, share) analytics.user_groups was last drawn with


def record_drawn(con, salt: str, share: float) -> None:
    """What ``user_groups`` drew the group with, in its transaction: the audiences date that salt, not whatever
    actions.yaml says when they are written (an edit in between dated a group nobody was drawn against)."""
    con.execute(f"CREATE OR REPLACE TABLE {DRAWN_TABLE} AS SELECT ?::VARCHAR AS salt, ?::DOUBLE AS share", [salt, share])


def drawn_with(con) -> tuple[str, float] | None:
    """(salt, share) of the group in ``analytics.user_groups``; None for a group drawn before it was recorded."""
    try:
        rows = con.sql(f"SELECT salt, share FROM {DRAWN_TABLE}").fetchall()
    except duckdb.CatalogException:
        return None
    return (rows[0][0], rows[0][1]) if rows else None


def record_salt(con, salt: str, share: float, now) -> None:
    """Record (salt, share) with ``now`` as its ``since`` when it is new: called once the audiences drawn with it are
    written, as sends from then on are made against it. Recorded when the group was drawn, a refresh stopped before
    its audiences dated a group nobody had sent against, and sends made meanwhile from the audiences in place were
    judged by it: 10 of 10 called breaches (a tester's)."""
    version, recorded = salt_version(con, salt, share)
    if not recorded:
        con.execute(f"INSERT INTO {SALTS_TABLE} VALUES (?, ?, ?, ?)", [version, salt, share, now])
