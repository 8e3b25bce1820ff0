"""One landed file into the temp table STAGE: read, map, type and validate every row in one SQL statement (a file that
cannot feed its table is staged as rejected whole), and whether a file that failed to read is still being written.
Both engines run it: the DuckDB loader (loader.py) and the Spark engine, in a task per file (spark/ingest.py).
"""

from __future__ import annotations

import difflib
import errno
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from seg_assets.ingest import contract as C
from seg_assets.ingest import row_rules
from seg_assets.ingest.ledger import FileOutcome, redact
from seg_assets.ingest.mapping import (
    DERIVED_KEY,
    HYPHENATED,
    Mapped,
    derived_key_sql,
    map_columns,
    no_shared_subexpressions,
    try_alias,
)
from seg_assets.ingest.reading import GZIP_CUT_SHORT, OVERFLOW, SRC, Source, load_source, other_separator
from seg_assets.ingest.source_config import KEEP_LATEST, SourceDef
from seg_assets.ingest.sources import (
    CHANGED_SINCE_SETTLED,
    CHANGED_WHILE_READ,
    NO_LINE_END_YET,
    UNFINISHED_SETTLE_SECONDS,
    file_identity,
    quiet_seconds,
    unfinished,
)
from seg_assets.ingest.writing import STAGE
from seg_assets.warehouse import sql_string

GZIP_UNFINISHED = "its gzip stream has no end yet"
NO_LINE_END = "its last line has no line end"  # a file's message; the CLI shows it as a warning (a value cut: 8.76 -> 8.7)


@dataclass(frozen=True)
class Bounds:
    now: datetime
    future_limit: datetime
    min_ts: datetime


def _personal(spec: C.TableSpec, mapped: Mapped) -> set[str]:
    """The file columns (lower case) whose values are personal: the contract's and those mapped into one of them."""
    return set(spec.pii_columns) | set(mapped.pii_names)


def _raw_json(src: Source, spec: C.TableSpec, mapped: Mapped) -> str:
    """JSON of the row as read, of the columns the mapping reads: the file's other columns are not copied (a platform
    export carries names, addresses and phone numbers nothing here needs; the file and row number find them). PII
    columns hashed, any other text with an '@' (or '%40') hashed too."""
    pii, unread = _personal(spec, mapped), set(mapped.extras)
    parts = []
    for name, ident, typ in zip(src.names, src.idents, src.types):
        if name in unread:
            continue
        if name.strip().lower() in pii:
            value = f"sha256(CAST({ident} AS VARCHAR))"
        elif typ == "VARCHAR":
            # trimmed, as an id is taken in: a user id that is an address has the same hash here as in the tables
            value = f"CASE WHEN {C.has_at_sign_sql(ident)} THEN sha256(trim({ident})) ELSE {ident} END"
        else:
            value = ident
        parts += [sql_string(redact(name)), value]  # a headerless file makes data (maybe an e-mail) the header
    return f"json_object({', '.join(parts)})::VARCHAR" if parts else "'{}'"


LATEST_WITHOUT_ID = "keep: latest cannot replace rows of this file"  # a file's note; ingestion warns once per source


def _inputs_read(src: Source, expr) -> list[tuple[str, str]]:
    """(name, SQL identifier) of the file columns a mapped expression (not a plain column) reads; none for a column or
    a constant."""
    if expr is None or expr.column_name is not None:
        return []
    idents = {n.strip().lower(): (n.strip(), i) for n, i in zip(src.names, src.idents)}  # the file's own spelling
    return [idents[c] for c in sorted(expr.columns) if c in idents]


def _read_something(inputs: list[tuple[str, str]]) -> str | None:
    """SQL true where a mapped expression had a value to read: one of the file columns it reads is not empty. Its NULL
    there is a value it does not know (a status an export adds later, whatever the expression: CASE without ELSE,
    ``if(c, x, NULL)``, a MAP lookup), not an empty field."""
    return " OR ".join(f"{row_rules.text_sql(i)} IS NOT NULL" for _, i in inputs) or None


def _values_read(inputs: list[tuple[str, str]], personal: set[str]) -> str | None:
    """SQL text of the values an expression read on the row, for its reasons: ``qty = 'n/a'`` (a tester saw none); a
    personal column's (``personal``, as raw_values hashes it) by the start of its sha256 (a reviewer saw a review's
    name and address in a reason)."""
    def shown(name: str, ident: str) -> str:
        if name.strip().lower() in personal:
            return f"'sha256:' || left(sha256(CAST({ident} AS VARCHAR)), 16)"
        return row_rules.shown_sql(row_rules.text_sql(ident))

    parts = [f"'{name.replace(chr(39), chr(39) * 2)} = ' || coalesce({shown(name, i)}, 'empty')" for name, i in inputs]
    return " || ', ' || ".join(parts) or None


def _stage_rows(con, source: SourceDef, src: Source, mapped: Mapped, bounds: Bounds) -> None:
    """STAGE = one row per delivered row the source keeps: _row, typed contract columns, rule/reason (NULL if
    good), raw_values.

    A parquet column whose type fits its kind (row_rules.typed_sql) is used as is, not cast to text and parsed back.
    """
    spec = source.spec
    values, inner, finals, cases = [], [], [], []
    if src.is_csv:  # structural rules first: a truncated row, a row with too many fields
        n = len(src.idents)
        present = " + ".join(f"({c} IS NOT NULL)::INT" for c in src.idents)
        cases.append(
            f"WHEN {src.idents[-1]} IS NULL THEN 'truncated_row:row|truncated row: ' || "
            f"({present}) || ' of {n} fields'"
        )
        cases.append(f"WHEN {OVERFLOW} IS NOT NULL THEN 'too_many_fields:row|too many fields: more than {n}'")
    local_time = source.timezone != "UTC"
    keys = [col for col in spec.columns if mapped.columns.get(col.name, (None,))[0] == DERIVED_KEY]
    tries = []  # a mapped expression is computed under TRY, so a row it fails on is a reject, not a failed file
    personal = _personal(spec, mapped)
    for col in spec.columns:
        if col in keys:
            continue
        sql, typ = mapped.columns.get(col.name, (None, None))
        failed = None
        if col.name in mapped.computed:
            # one TRY per expression, of a struct: NULL only where it failed (its value may be NULL), not a second TRY
            # for the test (see mapping.no_shared_subexpressions: DuckDB would compute the shared expression once, outside both)
            tries.append(f"try(struct_pack(v := {sql})) AS {try_alias(col.name)}")
            sql, failed = f"{try_alias(col.name)}.v", f"{try_alias(col.name)} IS NULL"
        inputs = _inputs_read(src, source.columns.get(col.name))
        texts, i, final, rules = row_rules.column_sql(col, sql, typ, bounds.future_limit, bounds.min_ts,
                                              source.timestamp_format, local_time,
                                              source.columns[col.name].text if col.name in source.columns else None,
                                              failed, _read_something(inputs), _values_read(inputs, personal))
        values += texts
        inner += i
        finals.append(f"{final} AS {col.name}")
        cases += rules
    keep, where = "true", "NULL AS _seg_no_where"
    if mapped.where:  # under TRY too: a row the condition fails on is kept, to be rejected (not the whole file)
        t = try_alias("where")
        keep, where = f"{t} IS NULL OR {t}.v", f"try(struct_pack(v := {mapped.where})) AS {t}"
        if src.is_csv:  # a row cut short or overlong is a reject, whatever the where says of its shifted fields (it
            keep += f" OR {src.idents[-1]} IS NULL OR {OVERFLOW} IS NOT NULL"  # was counted as left out: a tester's)
        cases.insert(0, f"WHEN {t} IS NULL THEN '{row_rules.MAPPING_FAILED}where|the source''s where fails on this "
                        f"row ({row_rules.RAW_VALUES})'")
        if spec.name == C.WITHHELD_FROM:  # rows left out stay, marked, for their ids (contract.WITHHELD_TABLE)
            cases.insert(0, f"WHEN NOT coalesce({keep}, false) THEN '{row_rules.LEFT_OUT}|left out by the source''s where'")
            keep = "true"
    why = "CASE " + " ".join(cases) + " END" if cases else "NULL"
    con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
    typed = {c.name for c in spec.columns if c not in keys}
    derived = "".join(f", {derived_key_sql(col, typed)} AS {col.name}" for col in keys)
    con.execute(
        f"""CREATE TEMP TABLE {STAGE} AS SELECT *{derived} FROM (
        SELECT _row, {', '.join(finals)},
               split_part(why, '|', 1) AS rule,
               substr(why, strpos(why, '|') + 1) AS reason,
               CASE WHEN why IS NOT NULL AND NOT starts_with(why, '{row_rules.LEFT_OUT}')
                    THEN {_raw_json(src, spec, mapped)} END AS raw_values
        FROM (SELECT *, {why} AS why FROM (
            SELECT *, {', '.join(inner) if inner else 'NULL AS _seg_none'} FROM (
                SELECT *, {', '.join(values) if values else 'NULL AS _seg_no_text'} FROM (
                    SELECT *, {', '.join(tries) if tries else 'NULL AS _seg_no_try'} FROM (
                        SELECT *, {src.row_expr} AS _row, {where} FROM {src.relation}) WHERE {keep})))))"""
    )


def _first_failures(con, src: Source, mapped: Mapped) -> list[str]:
    """For each computed column (or the where) that failed on rows: how many, and DuckDB's reason on the first of
    them, computed again without TRY (a wrong strptime format said why when it failed the file; as rejects it did not)."""
    if not (mapped.computed or mapped.where):
        return []
    out = []
    for rule, row, n in con.sql(f"SELECT rule, min(_row), count(*) FROM temp.{STAGE} WHERE starts_with(rule, '{row_rules.MAPPING_FAILED}') "
                                "GROUP BY rule ORDER BY rule").fetchall():
        name = rule.removeprefix(row_rules.MAPPING_FAILED)
        sql = mapped.where if name == "where" else mapped.columns[name][0]
        try:
            con.sql(f"SELECT {sql} FROM (SELECT *, {src.row_expr} AS _row FROM {src.relation}) WHERE _row = {int(row)}").fetchall()
            why = "it computes alone"  # an error of its row's other values, under the same optimizer: said as it is
        except duckdb.Error as exc:
            why = str(exc).splitlines()[0].strip()
        out.append(f"{name} could not be computed on {n} row(s) (mapping_failed), the first (row {row}): {why}")
    return out


def _stage_file_rejected(con, spec: C.TableSpec, src: Source, rule: str, reason: str, mapped: Mapped) -> None:
    con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
    con.execute(
        f"""CREATE TEMP TABLE {STAGE} AS SELECT {src.row_expr} AS _row, {sql_string(rule)} AS rule,
        {sql_string(reason)} AS reason, {_raw_json(src, spec, mapped)} AS raw_values FROM {src.relation}"""
    )


def still_written(fmt: str, path: Path, exc: BaseException) -> str | None:
    """Why a file that failed to read is left to the next run (no ledger row), or None: it changed while it was read
    (:data:`CHANGED_WHILE_READ`), or its gzip stream is still being written (its end is read only when the file is
    read: the landing rule reads last bytes); one cut short and unchanged for UNFINISHED_SETTLE_SECONDS is a broken
    file (failed, said so)."""
    if isinstance(exc, OSError) and exc.errno == errno.ESTALE and exc.strerror in (CHANGED_WHILE_READ, CHANGED_SINCE_SETTLED):
        return exc.strerror
    return GZIP_UNFINISHED if fmt == "csv.gz" and GZIP_CUT_SHORT in str(exc) and _recent(path) else None


def unchanged(pinned: Path, identity: tuple) -> None:
    """Raise the error :func:`still_written` leaves to the next run when the opened file is no longer ``identity``."""
    if file_identity(pinned) != identity:
        raise OSError(errno.ESTALE, CHANGED_WHILE_READ)


def _recent(path: Path) -> bool:
    """Changed within UNFINISHED_SETTLE_SECONDS: a writer may still be at it (the landing rule's wait for files cut short)."""
    try:
        return quiet_seconds(path.stat().st_mtime, 0.0, time.time()) < UNFINISHED_SETTLE_SECONDS
    except OSError:
        return False


def _missing_message(source: SourceDef, mapped: Mapped) -> tuple[str, str]:
    """(rule, one-line message) of a file that cannot feed its table: what is missing and how to fix it."""
    if mapped.missing_inputs:
        exprs = [*source.columns.values(), *([source.where] if source.where is not None else [])]

        def written(column: str) -> str:  # the mapping's spelling (`Kunde`), not the lower-cased name it is matched by
            as_written = (e.spelling(column) or (e.text.strip() if e.text.strip().lower() == column else None)
                          for e in exprs)  # (a whole value read as one column's name: `Kunden-Nr`)
            return next((s for s in as_written if s), column)

        name, used_by = next(iter(mapped.missing_inputs.items()))
        listed = ", ".join(sorted(map(written, mapped.missing_inputs)))
        # `upper(a.b)` reads field b of a STRUCT column a: a column named "a.b" is written in double quotes
        dotted = next((e for e in mapped.extras if e.strip().lower().startswith(f"{name}.")), None)
        hint = f' (the file has a column {dotted!r}: in an expression write it in double quotes, "{dotted}")' if dotted else ""
        if not hint and HYPHENATED.fullmatch(written(name)):  # `brutto-rabatt`: a column's name, or a subtraction?
            hint = f" (for a subtraction, write it with spaces: {written(name).replace('-', ' - ')})"
        # a column renamed by a new export (`event` -> `event_name`) or mistyped (`Created_at`): the one field named is
        # a near-match of a missing name, not a row's data (the other fields are still not repeated; a tester's)
        near = difflib.get_close_matches(name, [e.strip().lower() for e in mapped.extras], n=1, cutoff=0.6)
        if not hint and near:
            hint = f" (the file has {next(e for e in mapped.extras if e.strip().lower() == near[0])!r})"
        return (f"missing_column:{name}",
                f"column(s) {listed} not in the file (source {source.name!r} maps {', '.join(used_by)} from {written(name)!r})"
                f"{hint}: "
                "fix the file or the mapping in sources.yaml")
    missing = mapped.missing_required(source.spec)
    listed = ", ".join(f"'{source.spec.column(c).file_name}'" for c in missing)
    fix = (f"land the file with the column under a new name, or map it in sources.yaml under sources.{source.name}.columns "
           "(the file is then read again)" if source.declared
           else "land the file with the column under a new name, or declare a source in sources.yaml that maps your column "
           "names (see the README; the file is then read again)")
    return f"missing_column:{missing[0]}", f"missing required column{'s' if len(missing) > 1 else ''} {listed}: {fix}"


def stage_file(con, source: SourceDef, path: Path, out: FileOutcome, bounds: Bounds) -> bool:
    """Read, map, type and validate one file into the temp table STAGE (``out`` gets delivered, filtered, status,
    message); whether its good rows may be inserted (False: the whole file is rejected). Both engines run this:
    the DuckDB loader on the warehouse connection, the Spark engine in a task per file (spark/ingest.py)."""
    spec = source.spec
    if path.stat().st_size == 0:  # settled empty: a day without rows (mysqldump --tab writes 0 bytes), not a reject
        con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
        typed = ", ".join(f"NULL::{c.sql_type} AS {c.name}" for c in spec.columns)
        con.execute(f"CREATE TEMP TABLE {STAGE} AS SELECT NULL::BIGINT AS _row, {typed}, NULL::VARCHAR AS rule, "
                    "NULL::VARCHAR AS reason, NULL::VARCHAR AS raw_values WHERE false")
        out.message = f"{out.file_name}: empty file (0 bytes): no rows"
        return True
    src = load_source(con, path, out.file_format, source.csv)
    if src is None:
        out.status, out.message = C.STATUS_REJECTED_FILE, f"{out.file_name}: empty file (no header row)"
        con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
        con.execute(f"CREATE TEMP TABLE {STAGE} (_row BIGINT, rule VARCHAR, reason VARCHAR, raw_values VARCHAR)")
        return False
    mapped = map_columns(con, source, src)
    out.extra_columns = tuple(redact(e) for e in mapped.extras)
    notes = [*([src.note] if src.note else []), *([source.note] if source.note else []), *mapped.notes]
    rejected = bool(mapped.missing_inputs or mapped.missing_required(spec))
    out.delivered = con.sql(f"SELECT count(*) FROM {src.relation}").fetchall()[0][0]
    if out.delivered and unfinished(path, path.stat().st_size, out.file_format) == NO_LINE_END_YET:  # read once settled
        notes.append(f"{NO_LINE_END} (row {out.delivered}): if the file was cut short, that row's last value may be cut "
                     "too (check it, and if it is, land the row corrected in a new file)")  # no '; ': notes are joined by it
    if rejected:
        rule, what = _missing_message(source, mapped)
        delimiter = source.csv.delimiter
        separator = other_separator(src.names, delimiter) if src.is_csv else None
        if separator:  # the whole header read as one column: that is the one thing to fix (no mapping can)
            csv = source.csv.yaml(delimiter=separator)
            try:  # CSV files of this source already read with its delimiter: a source-wide change would reject them
                read = con.sql(f"SELECT count(*) FROM {C.LEDGER_TABLE} WHERE source = ? AND accepted + duplicate > 0 "
                               "AND file_format LIKE 'csv%'", params=[source.name]).fetchall()[0][0]
            except duckdb.Error:
                read = 0
            where = (f"set csv: {csv} on source {source.name!r} in sources.yaml" if source.declared else
                     f"declare its folder in sources.yaml: sources: {{{source.name}: {{table: {source.table}, csv: {csv}}}}}")
            rule, what = "wrong_separator:file", (
                f"the file is not separated by {json.dumps(delimiter)} (its header is one column holding "
                f"{json.dumps(separator)}): "
                + (f"export it with {json.dumps(delimiter)} and land it under a new name ({read} file(s) of source "
                   f"{source.name!r} were read with {json.dumps(delimiter)}: changing the source's csv would reject "
                   f"them and every later one), or land files written with {json.dumps(separator)} in a folder of their "
                   f"own with a source that sets csv: {csv}" if read else
                   f"{where} (the file is then read again), or export it with {json.dumps(delimiter)}"))
            out.extra_columns, notes = (), []
        elif src.is_csv and mapped.extras:  # the first line may be data (no header row): its fields are not repeated
            what += (f"; the other {len(mapped.extras)} field(s) of its first line are not repeated here (if they are "
                     "data, the file lacks its header row)")
            out.extra_columns = ()
        out.status = C.STATUS_REJECTED_FILE
        notes.insert(0, f"{out.file_name}: {what}")
        _stage_file_rejected(con, spec, src, rule, f"file rejected: {what}", mapped)
    else:
        absent = [c for c in spec.column_names if c not in mapped.columns]
        if absent:
            notes.append(f"optional column(s) {', '.join(absent)} absent: treated as empty")
        if source.timezone != "UTC":
            con.execute(f"SET TimeZone = {sql_string(source.timezone)}")
        try:
            with no_shared_subexpressions(con) if mapped.computed or mapped.where else nullcontext():
                _stage_rows(con, source, src, mapped, bounds)
                notes += _first_failures(con, src, mapped)
        finally:
            con.execute("SET TimeZone = 'UTC'")
        if source.keep == KEEP_LATEST and mapped.columns.get(spec.id_column, (None,))[0] == DERIVED_KEY:
            notes.append(f"{LATEST_WITHOUT_ID}: its {spec.id_column} is derived from each row's values, so a changed "
                         f"row is a new row beside the old one; map {spec.id_column} to the export's own id column")
        out.filtered = out.delivered - con.sql(f"SELECT count(*) FROM {STAGE} WHERE rule IS DISTINCT FROM "
                                               f"'{row_rules.LEFT_OUT}'").fetchall()[0][0]
        if out.filtered:
            notes.append(f"{out.filtered} row(s) left out by the source's where: {source.where.text}")
    if out.extra_columns:
        notes.append(f"extra column(s) ignored: {', '.join(out.extra_columns)}")
    out.message = "; ".join(notes) or None
    con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
    return not rejected
