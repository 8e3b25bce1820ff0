"""Writing one staged file (the temp table ``STAGE``) into its raw table, with its rejects and ledger row, all or
nothing: new ids inserted (the first delivery of an id wins), or, for a source with ``keep: latest``, a stored row
with other values replaced."""

from __future__ import annotations

from datetime import datetime

from seg_assets.ingest import contract as C
from seg_assets.ingest.ledger import FileOutcome, rollback, write_ledger
from seg_assets.ingest.row_rules import LEFT_OUT
from seg_assets.ingest.source_config import KEEP_LATEST, SourceDef

STAGE = "_seg_ingest_stage"
OTHER_VALUES = "repeat an id taken in with other values"  # a file's message; the CLI shows it as a warning


def insert_new_rows(con, spec: C.TableSpec, file_id: int) -> int:
    """Insert STAGE's good rows with a new id: the first row per id in the file, none already in the table.

    A dedupe clause is added only if a cheap look says it can drop a row (else a plain insert, in file order):
    ids strictly ascending in any row order are unique (a streaming lag() is cheaper than a GROUP BY), and the
    table is searched only between the file's min and max id (DuckDB skips other row groups by zonemap).
    """
    key, cols = spec.id_column, ", ".join(spec.column_names)
    ascending, lo, hi = con.execute(
        f"""SELECT coalesce(bool_and(k > prev), true), min(k), max(k)
        FROM (SELECT {key} AS k, lag({key}) OVER () AS prev FROM {STAGE} WHERE rule IS NULL)"""
    ).fetchall()[0]
    where, bounds = ["s.rule IS NULL"], {"lo": lo, "hi": hi}
    if not ascending:  # an id may repeat in the file: the first row wins
        where.append(f"s._row IN (SELECT min(_row) FROM {STAGE} WHERE rule IS NULL GROUP BY {key})")
    in_table = f"EXISTS (SELECT 1 FROM {spec.qualified} r WHERE r.{key} = s.{key} AND r.{key} BETWEEN $lo AND $hi)"
    sql = f"SELECT EXISTS (SELECT 1 FROM {STAGE} s WHERE s.rule IS NULL AND {in_table})"
    known = con.execute(sql, bounds).fetchall()[0][0]
    if known:  # a row already in the table wins
        where.append(f"NOT {in_table}")
    # ORDER BY _row: rows are stored in file order (the ascending-id shortcuts rely on it), in full row groups.
    # Without it DuckDB's order-preserving parallel insert also keeps file order but leaves a short row group
    # per batch of input row groups, which the next checkpoints merge by rewriting the table (8 s after a
    # cold load of 30M clicks); the sort is parallel and costs less than that (quiet machine, 2 files of
    # 5M clicks: insert + checkpoints 18.1 s without, 8.1 s with).
    return con.execute(
        f"""INSERT INTO {spec.qualified} ({cols}, _file_id, _row)
        SELECT {cols}, {int(file_id)}, _row FROM {STAGE} s WHERE {' AND '.join(where)} ORDER BY _row""",
        bounds if known else {},
    ).fetchall()[0][0]


def note_repeats(out: FileOutcome, spec: C.TableSpec, repeats: int) -> None:
    """Add to the file's message how many of its rows repeat an id taken in with other values, and the fix (both
    engines)."""
    if repeats:
        fix = "declare keep: latest for its source to take the newest" if spec.updatable else "give each its own id"
        out.message = "; ".join(filter(None, [out.message, f"{repeats} row(s) {OTHER_VALUES}: the first taken in is "
                                                           f"kept (if they are changes, {fix})"]))


def repeats_with_other_values(con, spec: C.TableSpec, file_id: int) -> int:
    """STAGE's good rows not taken in (``keep: first``) whose id is stored with other values: an id reused for
    another order, user or send is likelier a mistake than a re-delivery. Run only when the file had duplicates: the
    rows not taken in (not among this file's stored rows) are set apart first, so the lookup by id builds on those
    few (as one query, DuckDB could build its hash table on the stored rows: 0.7-1.4 s against 0.5 s for a 5M-row file
    over 30M stored rows, measured), and reads only the stored ids between their smallest and largest."""
    key = spec.id_column
    same = " AND ".join(f"r.{c} IS NOT DISTINCT FROM d.{c}" for c in spec.column_names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _seg_repeats AS SELECT s.* FROM {STAGE} s
                    ANTI JOIN (SELECT _row FROM {spec.qualified} WHERE _file_id = {int(file_id)}) t USING (_row)
                    WHERE s.rule IS NULL""")
    lo, hi = con.execute(f"SELECT min({key}), max({key}) FROM _seg_repeats").fetchall()[0]
    n = con.execute(f"""SELECT count(*) FROM _seg_repeats d JOIN (SELECT * FROM {spec.qualified} WHERE {key} BETWEEN $lo
                        AND $hi) r ON r.{key} = d.{key} WHERE NOT ({same})""", {"lo": lo, "hi": hi}).fetchall()[0][0]
    con.execute("DROP TABLE _seg_repeats")
    return n


def replace_changed_rows(con, spec: C.TableSpec, file_id: int) -> tuple[int, int]:
    """``keep: latest``: STAGE's good rows, the last per id in the file, go in; a stored row of the same id with other
    values is replaced (deleted, then inserted with this file's id: incremental builds see the row as new and
    recompute its owner; an owner or order it no longer names is recorded in ``REPLACED_KEYS_TABLE`` for them).
    Returns (new ids, replaced rows); the rest are duplicates."""
    key, cols = spec.id_column, ", ".join(spec.column_names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _seg_latest AS SELECT * FROM {STAGE} s WHERE rule IS NULL
                    AND _row IN (SELECT max(_row) FROM {STAGE} WHERE rule IS NULL GROUP BY {key})""")
    same = " AND ".join(f"r.{c} IS NOT DISTINCT FROM l.{c}" for c in spec.column_names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _seg_known AS SELECT l.{key}, {same} AS same
                    FROM _seg_latest l JOIN {spec.qualified} r ON r.{key} = l.{key}""")
    for col in (c.name for c in spec.columns if c.kind == C.ID and c.name != key):  # e.g. a line moved to another order
        con.execute(f"""INSERT INTO {C.REPLACED_KEYS_TABLE} SELECT DISTINCT '{spec.name}', {int(file_id)}, '{col}', r.{col}
                        FROM {spec.qualified} r JOIN _seg_latest l ON l.{key} = r.{key}
                        WHERE r.{key} IN (SELECT {key} FROM _seg_known WHERE NOT same) AND r.{col} IS DISTINCT FROM l.{col}
                        AND r.{col} IS NOT NULL""")
    replaced = con.execute(f"DELETE FROM {spec.qualified} WHERE {key} IN (SELECT {key} FROM _seg_known WHERE NOT same)"
                           ).fetchall()[0][0]
    inserted = con.execute(
        f"""INSERT INTO {spec.qualified} ({cols}, _file_id, _row) SELECT {cols}, {int(file_id)}, _row FROM _seg_latest l
        WHERE {key} NOT IN (SELECT {key} FROM _seg_known WHERE same) ORDER BY _row""").fetchall()[0][0]
    con.execute("DROP TABLE _seg_latest; DROP TABLE _seg_known")
    return inserted - replaced, replaced


def record_withheld(con, staged: str) -> None:
    """The ids of ``staged``'s rows (SQL: id, rule, _file_id, _row) that were left out or rejected and are not in the
    table (contract.WITHHELD_TABLE); a whole file rejected has no typed ids and records none."""
    spec = C.TABLES[C.WITHHELD_FROM]
    key = spec.id_column
    con.execute(f"""INSERT INTO {C.WITHHELD_TABLE} SELECT s.* FROM ({staged}) s
                    WHERE s.rule IS NOT NULL AND s.{key} IS NOT NULL
                    AND s.{key} NOT IN (SELECT {key} FROM {spec.qualified}) ORDER BY s._file_id, s._row""")


REFUSED_FILE = "file_refused"  # raw.withheld_orders' rule of an order whose lines' file the orders source refused
# a ledger row ({t}: its alias) of a file whose order lines were taken in
_LINES_TAKEN = ("{t}table_name = 'order_items' AND {t}status = '" + C.STATUS_INGESTED + "' AND {t}accepted + {t}updated > 0")


def withhold_lines_of_refused_files(con) -> int:
    """The order ids of lines read from a landing file that the orders table's source refused (rejected as a whole,
    or failed), recorded in ``raw.withheld_orders`` under that refusal's file id: one file read by both grains (a
    Shopify export) whose orders mapping does not fit would otherwise publish its lines' orders as completed revenue,
    voided and refunded ones included (a tester's: 479 orders, +20,745.81). Held until the orders source reads the file
    (write_ledger then drops them with the refusal); ids with an order row or already withheld are not recorded.
    Returns the ids recorded; the small ledger is read first, the lines only when such a file exists."""
    ids = con.execute(f"""SELECT r.file_id, list(DISTINCT l.file_id) FROM {C.LEDGER_TABLE} r
        JOIN {C.LEDGER_TABLE} l ON l.file_name = r.file_name AND {_LINES_TAKEN.format(t='l.')}
        WHERE r.table_name = '{C.WITHHELD_FROM}' AND r.status IN ('{C.STATUS_REJECTED_FILE}', '{C.STATUS_FAILED}')
          AND NOT EXISTS (SELECT 1 FROM {C.LEDGER_TABLE} k WHERE k.source = r.source AND k.file_name = r.file_name
                          AND k.status IN ('{C.STATUS_INGESTED}', '{C.STATUS_DUPLICATE_FILE}') AND k.file_id > r.file_id)
        GROUP BY r.file_id""").fetchall()
    recorded = 0
    for refused, lines in ids:
        recorded += con.execute(f"""INSERT INTO {C.WITHHELD_TABLE}
            SELECT order_id, '{REFUSED_FILE}', {int(refused)}, min(_row) FROM raw.order_items
            WHERE _file_id IN ({', '.join(str(int(i)) for i in lines)}) AND order_id IS NOT NULL
              AND {C.without_order_row_sql('order_id')}
            GROUP BY order_id ORDER BY min(_row)""").fetchall()[0][0]
    return recorded


def lines_read_from(con) -> set[str]:
    """The landing files (names) order lines were taken in from (those whose refusal for orders holds their lines)."""
    return {r[0] for r in con.execute(f"SELECT DISTINCT file_name FROM {C.LEDGER_TABLE} WHERE {_LINES_TAKEN.format(t='')}"
                                      ).fetchall()}


def held_by_refused_files(con) -> tuple[int, str | None]:
    """(orders held by :func:`withhold_lines_of_refused_files`, the first refused file's name) for the run's warning."""
    return con.execute(f"""SELECT count(*), min(l.file_name) FROM {C.WITHHELD_TABLE} w
        JOIN {C.LEDGER_TABLE} l ON l.file_id = w._file_id WHERE w.rule = '{REFUSED_FILE}'""").fetchall()[0]


def commit_file(con, out: FileOutcome, source: SourceDef, run_id: str, now: datetime, insert_rows: bool) -> None:
    """Rejects, new rows and the ledger row of one file, all or nothing."""
    spec = source.spec
    con.execute("BEGIN TRANSACTION")
    try:
        out.rejected = con.execute(
            f"""INSERT INTO {C.REJECTS_TABLE} SELECT ?, ?, ?, _row, rule, reason, raw_values, ?, ?
            FROM {STAGE} WHERE rule IS NOT NULL AND rule <> '{LEFT_OUT}' ORDER BY _row""",
            [spec.name, out.file_id, out.file_name, run_id, now],
        ).fetchall()[0][0]
        if insert_rows and source.keep == KEEP_LATEST:
            out.accepted, out.updated = replace_changed_rows(con, spec, out.file_id)
        elif insert_rows:
            out.accepted = insert_new_rows(con, spec, out.file_id)
        if insert_rows and spec.name == C.WITHHELD_FROM and out.rejected + out.filtered:
            record_withheld(con, f"SELECT {spec.id_column}, rule, {int(out.file_id)} AS _file_id, _row FROM {STAGE}")
        out.count_duplicates()
        if insert_rows and source.keep != KEEP_LATEST and out.duplicate:
            note_repeats(out, spec, repeats_with_other_values(con, spec, out.file_id))
        write_ledger(con, out, run_id, now)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
