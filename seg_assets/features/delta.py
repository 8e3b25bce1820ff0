"""Writing a keyed model's build: its changed keys' rows replaced (incremental.py says which keys changed), and the users
an order left recorded for the per-user models above it.

An order delivered as order lines and then as an order row naming another user leaves its first user without a new
row of their own: the rows of an order's table (``staging.line_orders``, keyed by order) that no longer give a user
that order are kept in ``meta.replaced_keys`` like a replaced row's old keys, under the build's watermark, so the
per-user models recompute that user in the same refresh, not at the daily rebase.
"""

from __future__ import annotations

from collections.abc import Callable

from seg_assets.features.incremental import CHANGED, DELTA, replace_keys
from seg_assets.features.sql_files import OWNER
from seg_assets.warehouse import sql_string, table_exists, transaction

OWNERS_BEFORE = "_seg_owners_before"
KEPT_OWNERS = "meta.owners_before_build"  # (target, key, user_id): the owners before a build outside the transaction


def _owned(con, target: str, owner_key: str | None) -> bool:
    """Whether ``target`` has an owner key (``SqlModel.owner_key``) and names a user in its rows."""
    return owner_key is not None and table_exists(con, target) and OWNER in con.table(target).columns


def record_left_owners(con, target: str, key: str, before: str, after: str, file_id: int) -> None:
    """Users whom ``before``'s rows of ``target`` (SQL with ``key`` and ``user_id``) named and ``after``'s no longer
    give that key: an order delivered as lines, then as an order row naming another user. Kept in
    ``meta.replaced_keys`` like a replaced row's old keys (under ``file_id``, the build's watermark), so the per-user
    models recompute them in this refresh, not at the daily rebase (their own rows are unchanged)."""
    from seg_assets.ingest.contract import REPLACED_KEYS_DDL, REPLACED_KEYS_TABLE

    con.sql(REPLACED_KEYS_DDL)
    con.sql(f"""INSERT INTO {REPLACED_KEYS_TABLE} SELECT DISTINCT {sql_string(target)}, {int(file_id)}, '{OWNER}', b.{OWNER}
                FROM ({before}) b WHERE b.{OWNER} IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM ({after}) a WHERE a.{key} = b.{key} AND a.{OWNER} = b.{OWNER})""")


def rebuild_recording_owners(con, target: str, key: str | None, build: Callable[[], None], file_id: int) -> None:
    """``build()`` rebuilds ``target`` in full (DuckDB's ``CREATE OR REPLACE TABLE``, or Spark's Parquet and its view);
    the users it no longer gives a key are recorded (as :func:`record_left_owners`): a full rebuild while the per-user
    models above it build incrementally (more than half its keys changed, or every build on Spark) must not leave them
    the order a user lost."""
    owned = _owned(con, target, key)
    if owned:
        con.sql(f"CREATE OR REPLACE TEMP TABLE {OWNERS_BEFORE} AS SELECT DISTINCT {key}, {OWNER} FROM {target}")
    build()
    if owned:
        record_left_owners(con, target, key, f"SELECT * FROM temp.{OWNERS_BEFORE}", f"SELECT * FROM {target}", file_id)
        con.sql(f"DROP TABLE temp.{OWNERS_BEFORE}")


def rebuild_outside_transaction(con, target: str, key: str | None, build: Callable[[], None], file_id: int,
                                then: Callable[[], None] = lambda: None) -> None:
    """:func:`rebuild_recording_owners` for a ``build()`` that writes outside DuckDB's transaction (Spark's Parquet,
    swapped into place; the view over it is DuckDB's): the owners before it are kept in ``KEPT_OWNERS``, committed
    before the build, and recorded and dropped in the transaction that ends it (``then()`` runs in it too). A failure
    after the swap rolls that back and leaves them: the re-run compares the table with them, not with the new table
    (it found the new one and recorded nobody, a reviewer's reading). Each build adds the table's owners as they are
    to any kept ones (builds on DuckDB in between leave them: a later order's owner was missing, a reviewer's); one
    recorded twice is recomputed once more."""
    owned = _owned(con, target, key)
    if owned:
        con.sql(f"CREATE TABLE IF NOT EXISTS {KEPT_OWNERS} (target VARCHAR, key VARCHAR, {OWNER} VARCHAR)")
        con.sql(f"""INSERT INTO {KEPT_OWNERS} SELECT DISTINCT {sql_string(target)}, {key}::VARCHAR, {OWNER}::VARCHAR
                    FROM {target} EXCEPT SELECT * FROM {KEPT_OWNERS} WHERE target = {sql_string(target)}""")  # committed
    with transaction(con):
        build()
        if owned:
            kept = f"SELECT key AS {key}, {OWNER} FROM {KEPT_OWNERS} WHERE target = {sql_string(target)}"
            record_left_owners(con, target, key, kept, f"SELECT {key}::VARCHAR AS {key}, {OWNER}::VARCHAR AS {OWNER} "
                               f"FROM {target}", file_id)
            con.sql(f"DELETE FROM {KEPT_OWNERS} WHERE target = {sql_string(target)}")
        then()


def _record_changed_owners(con, target: str, key: str | None, file_id: int) -> None:
    """:func:`record_left_owners` for the changed keys' rows of ``target`` and their new rows (temp ``DELTA``);
    ``key``: its owner key (None: nothing to record)."""
    if _owned(con, target, key):
        record_left_owners(con, target, key, f"SELECT {key}, {OWNER} FROM {target} WHERE {key} IN (SELECT {key} FROM "
                           f"temp.{CHANGED})", f"SELECT * FROM temp.{DELTA}", file_id)


def replace_changed(con, target: str, key: str, delta_sql: str, file_id: int, owner_key: str | None) -> int:
    """Replace the changed keys' rows of ``target`` by ``delta_sql`` (call inside a transaction); rows written.
    ``file_id``: the build's watermark; ``owner_key``: ``SqlModel.owner_key`` (:func:`record_left_owners`)."""
    con.sql(f"CREATE OR REPLACE TEMP TABLE {DELTA} AS {delta_sql}")
    _record_changed_owners(con, target, owner_key, file_id)
    replace_keys(con, target, key, f"temp.{DELTA}", con.table(f"temp.{DELTA}").columns)
    return int(con.sql(f"SELECT count(*) FROM temp.{DELTA}").fetchall()[0][0])


def replace_changed_groups(con, target: str, key: str, delta_sql: str, file_id: int, owner_key: str | None) -> int:
    """Replace every row of the changed keys in ``target`` (several rows per key: ``delete+insert``) by
    ``delta_sql``'s rows (call inside a transaction); rows written."""
    con.sql(f"CREATE OR REPLACE TEMP TABLE {DELTA} AS {delta_sql}")
    _record_changed_owners(con, target, owner_key, file_id)
    con.sql(f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM temp.{CHANGED})")
    con.sql(f"INSERT INTO {target} BY NAME SELECT * FROM temp.{DELTA}")
    return int(con.sql(f"SELECT count(*) FROM temp.{DELTA}").fetchall()[0][0])
