"""Load the landing zone into ``raw.*`` with set-based DuckDB SQL, one transaction per file.

``ingest_landing`` walks the folders of the sources (sources.yaml, else one per contract table) in name
order, skips files a source already ingested (``meta.ingest_ledger`` is keyed by source and sha256 of
the content), reads each new file, maps it onto its contract table (mapping.py), types and validates
every row in one SQL statement, writes bad rows to ``raw.rejects`` and new good rows to ``raw.<table>``
(deduplicated by id: first row in the file wins, a row already in the table wins; or with ``keep: latest`` the
last row wins and replaces a stored row with other values: writing.py), and records the file's accounting in the
ledger: ``delivered = accepted + updated + duplicate + rejected + filtered`` (filtered: left out by the source's
``where``; ledger.py). Finding the files is in sources.py, reading one in reading.py.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from seg_assets import interrupts
from seg_assets.ingest import contract as C
from seg_assets.ingest import row_rules
from seg_assets.ingest.ledger import (
    FileOutcome,
    IngestReport,
    failed_outcome,
    ledger_only,
    redact,
    reject_as,
    taken_rows,
    unreadable_outcome,
)
from seg_assets.ingest.mapping import DERIVED_KEY, Mapped, derived_key_sql, map_columns
from seg_assets.ingest.reading import GZIP_CUT_SHORT, OVERFLOW, SRC, Source, load_source
from seg_assets.ingest.source_config import KEEP_LATEST, SourceDef, load_sources
from seg_assets.ingest.sources import (
    CHANGED_SINCE_SETTLED,
    CHANGED_WHILE_READ,
    GONE,
    UNFINISHED_SETTLE_SECONDS,
    discover_files,
    file_identity,
    file_sha256,
    opened_inside,
    quiet_seconds,
    wait_until_settled,
)
from seg_assets.ingest.writing import STAGE, commit_file
from seg_assets.warehouse import prepare_connection, sql_string

GZIP_UNFINISHED = "its gzip stream has no end yet"
REWRITTEN = "was ingested before with other content (landed files must not change)"


@dataclass(frozen=True)
class _Bounds:
    now: datetime
    future_limit: datetime
    min_ts: datetime


def naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Schemas, UTC session, the (empty) raw tables of the contract, raw.rejects and meta.ingest_ledger."""
    prepare_connection(con)
    for ddl in C.all_ddl():
        con.execute(ddl)
    present = set(con.sql("SELECT table_schema || '.' || table_name || '.' || column_name "
                          "FROM information_schema.columns").fetchall())
    for table, column, statements in C.MIGRATIONS:
        if (f"{table}.{column}",) not in present:
            for statement in statements:
                con.execute(statement)


# ----------------------------------------------------------------------------------------- typing and rules


def _raw_json(src: Source, spec: C.TableSpec, mapped: Mapped) -> str:
    """JSON of the row as read, of the columns the mapping reads: the file's other columns are not copied (a platform
    export carries names, addresses and phone numbers nothing here needs; the file and row number find them). PII
    columns hashed, any other text with an '@' hashed too."""
    pii, unread = set(spec.pii_columns) | set(mapped.pii_names), set(mapped.extras)
    parts = []
    for name, ident, typ in zip(src.names, src.idents, src.types):
        if name in unread:
            continue
        if name.strip().lower() in pii:
            value = f"sha256(CAST({ident} AS VARCHAR))"
        elif typ == "VARCHAR":
            value = f"CASE WHEN {ident} LIKE '%@%' THEN sha256({ident}) ELSE {ident} END"
        else:
            value = ident
        parts += [sql_string(redact(name)), value]  # a headerless file makes data (maybe an e-mail) the header
    return f"json_object({', '.join(parts)})::VARCHAR" if parts else "'{}'"


def _stage_rows(con, source: SourceDef, src: Source, mapped: Mapped, bounds: _Bounds) -> None:
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
    for col in spec.columns:
        if col in keys:
            continue
        sql, typ = mapped.columns.get(col.name, (None, None))
        mapped_from = source.columns[col.name].text if col.name in source.columns else None
        texts, i, final, rules = row_rules.column_sql(col, sql, typ, bounds.future_limit, bounds.min_ts,
                                              source.timestamp_format, local_time, mapped_from)
        values += texts
        inner += i
        finals.append(f"{final} AS {col.name}")
        cases += rules
    why = "CASE " + " ".join(cases) + " END" if cases else "NULL"
    con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
    typed = {c.name for c in spec.columns if c not in keys}
    derived = "".join(f", {derived_key_sql(col, typed)} AS {col.name}" for col in keys)
    con.execute(
        f"""CREATE TEMP TABLE {STAGE} AS SELECT *{derived} FROM (
        SELECT _row, {', '.join(finals)},
               split_part(why, '|', 1) AS rule,
               substr(why, strpos(why, '|') + 1) AS reason,
               CASE WHEN why IS NOT NULL THEN {_raw_json(src, spec, mapped)} END AS raw_values
        FROM (SELECT *, {why} AS why FROM (
            SELECT *, {', '.join(inner) if inner else 'NULL AS _seg_none'} FROM (
                SELECT *, {', '.join(values) if values else 'NULL AS _seg_no_text'} FROM (
                    SELECT *, {src.row_expr} AS _row FROM {src.relation}) WHERE {mapped.where or 'true'}))))"""
    )


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
        name, used_by = next(iter(mapped.missing_inputs.items()))
        listed = ", ".join(sorted(mapped.missing_inputs))
        # `upper(a.b)` reads field b of a STRUCT column a: a column named "a.b" is written in double quotes
        dotted = next((e for e in mapped.extras if e.strip().lower().startswith(f"{name}.")), None)
        hint = f' (the file has a column {dotted!r}: in an expression write it in double quotes, "{dotted}")' if dotted else ""
        return (f"missing_column:{name}",
                f"column(s) {listed} not in the file (source {source.name!r} maps {', '.join(used_by)} from {name!r}){hint}: "
                "fix the file or the mapping in sources.yaml")
    missing = mapped.missing_required(source.spec)
    listed = ", ".join(f"'{source.spec.column(c).file_name}'" for c in missing)
    fix = (f"land the file with the column under a new name, or map it in sources.yaml under sources.{source.name}.columns "
           "(the file is then read again)" if source.declared
           else "land the file with the column under a new name, or declare a source in sources.yaml that maps your column "
           "names (see the README; the file is then read again)")
    return f"missing_column:{missing[0]}", f"missing required column{'s' if len(missing) > 1 else ''} {listed}: {fix}"


def stage_file(con, source: SourceDef, path: Path, out: FileOutcome, bounds: _Bounds) -> bool:
    """Read, map, type and validate one file into the temp table STAGE (``out`` gets delivered, filtered, status,
    message); whether its good rows may be inserted (False: the whole file is rejected). Both engines run this:
    the DuckDB loader on the warehouse connection, the Spark engine in a task per file (spark/ingest.py)."""
    spec = source.spec
    src = load_source(con, path, out.file_format, source.csv)
    if src is None:
        out.status, out.message = C.STATUS_REJECTED_FILE, f"{out.file_name}: empty file (no header row)"
        con.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")
        con.execute(f"CREATE TEMP TABLE {STAGE} (_row BIGINT, rule VARCHAR, reason VARCHAR, raw_values VARCHAR)")
        return False
    mapped = map_columns(con, source, src)
    out.extra_columns = tuple(redact(e) for e in mapped.extras)
    notes = [*([src.note] if src.note else []), *mapped.notes]
    rejected = bool(mapped.missing_inputs or mapped.missing_required(spec))
    out.delivered = con.sql(f"SELECT count(*) FROM {src.relation}").fetchall()[0][0]
    if rejected:
        rule, what = _missing_message(source, mapped)
        delimiter = source.csv.delimiter
        separator = next((s for s in ",;\t|" if src.is_csv and len(src.names) == 1 and s in src.names[0]
                          and s != delimiter), None)
        if separator:  # the whole header read as one column: that is the one thing to fix (no mapping can)
            csv = source.csv.yaml(delimiter=separator)
            where = (f"set csv: {csv} on source {source.name!r} in sources.yaml" if source.declared else
                     f"declare its folder in sources.yaml: sources: {{{source.name}: {{table: {source.table}, csv: {csv}}}}}")
            rule, what = "not_comma_separated:file", (
                f"the file is not separated by {json.dumps(delimiter)} (its header is one column holding "
                f"{json.dumps(separator)}): {where} (the file is then read again), or export it with {json.dumps(delimiter)}")
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
            _stage_rows(con, source, src, mapped, bounds)
        finally:
            con.execute("SET TimeZone = 'UTC'")
        if source.keep == KEEP_LATEST and mapped.columns.get(spec.id_column, (None,))[0] == DERIVED_KEY:
            notes.append(f"keep: latest cannot replace rows of this file: its {spec.id_column} is derived from each "
                         "row's values, so a changed row is a new row; deliver or map an id column")
        out.filtered = out.delivered - con.sql(f"SELECT count(*) FROM {STAGE}").fetchall()[0][0]
        if out.filtered:
            notes.append(f"{out.filtered} row(s) left out by the source's where: {source.where.text}")
    if out.extra_columns:
        notes.append(f"extra column(s) ignored: {', '.join(out.extra_columns)}")
    out.message = "; ".join(notes) or None
    con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
    return not rejected


def _ingest_file(con, source: SourceDef, path: Path, out: FileOutcome, run_id: str, bounds: _Bounds, identity: tuple) -> None:
    """Stage, then commit only if the file is still the one hashed: a writer that went on during the read left rows
    of no one content (the end of a line it was still writing)."""
    insert_rows = stage_file(con, source, path, out, bounds)
    unchanged(path, identity)
    commit_file(con, out, source, run_id, bounds.now, insert_rows=insert_rows)


def _next_file_id(con, last: int) -> int:
    """A ledger id after ``last`` (ids given out in this run) and after every ledger row."""
    return max(last + 1, con.sql(f"SELECT coalesce(max(file_id), 0) + 1 FROM {C.LEDGER_TABLE}").fetchall()[0][0])


def _copies_to_read(copies: list, unsettled: dict) -> tuple[list, list]:
    """(files to read next, copies left): of the copies of a file that failed, the first is read itself (the failure
    may be its name's or its moment's: a Parquet file named .csv, a file replaced while read; a copy read alone fared
    better), the others copy it."""
    again: dict[int, tuple] = {}
    left = []
    for source, path, out, identity, first in copies:
        if first.status != C.STATUS_FAILED or first.file_name in unsettled:
            left.append((source, path, out, identity, first))
        elif id(first) in again:
            left.append((source, path, out, identity, again[id(first)][2]))
        else:
            again[id(first)] = (source, path, out, identity)
    return list(again.values()), left


def ingest_landing(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    *,
    sources: list[SourceDef] | None = None,
    run_id: str,
    now: datetime,
    clock_skew: timedelta,
    min_ts: datetime,
    rehash_known: bool = False,
    settle_seconds: float = 0.0,
    max_settle_wait: float = 60.0,
    stage_files=None,
) -> IngestReport:
    """Ingest every new landing file of every source; see the module docstring. Idempotent: known files are skipped.

    A file whose name and size match a ledger row of its source (not ``failed``) is skipped without hashing,
    as landed files never change (data contract); ``rehash_known=True`` hashes every file and skips only on
    equal content. ``sources`` default: those of the data root holding ``landing_dir`` (source_config.py).
    ``stage_files(con, pending, bounds, run_id, now)``: read the new files elsewhere, all at once (the Spark
    engine, spark/ingest.py); it fills each pending file's outcome and writes its ledger row and rejects, and returns
    the outcomes of the files it found still being written (:func:`still_written`: no ledger row, left to the next run).
    Files not settled yet are waited for, at most ``max_settle_wait`` seconds; one still changing or looking cut
    short then is left to the next run (the landing rule, sources.py).
    """
    ensure_tables(con)
    if sources is None:
        sources = load_sources(Path(landing_dir).parent)
    now = naive_utc(now)
    bounds = _Bounds(now=now, future_limit=now + clock_skew, min_ts=naive_utc(min_ts))
    landing_dir = Path(landing_dir)
    files, ignored = discover_files(landing_dir, sources)
    settled, unsettled = wait_until_settled(sorted({p for _, p, _ in files}), settle_seconds, max_settle_wait)
    files = [f for f in files if f[1] in settled]
    report = IngestReport(run_id=run_id, ignored=ignored,
                          unsettled={p.relative_to(landing_dir).as_posix(): why for p, why in sorted(unsettled.items())
                                     if why != GONE})  # moved away: not left to a next run
    taken = taken_rows({s.name: s.key for s in sources})
    seen: dict[tuple[str, str], set[tuple[str, int]]] = {}
    rows_in: set[tuple[str, str]] = set()  # (source, name) of files whose rows were taken in (a rewrite keeps them)
    for source, name, sha, size, status in con.sql(
            f"SELECT source, file_name, content_sha256, size_bytes, status FROM ({taken})").fetchall():
        seen.setdefault((source, name), set()).add((sha, size))
        if status == C.STATUS_INGESTED:
            rows_in.add((source, name))
    planned: dict[tuple[str, str, str], FileOutcome] = {}  # stage_files: the files read at the end, by (source, sha, format)
    pending: list[tuple[SourceDef, Path, FileOutcome, tuple]] = []  # with the identity hashed (sources.file_identity)
    copies: list[tuple[SourceDef, Path, FileOutcome, tuple, FileOutcome]] = []  # a pending item and the file it copies
    next_id = 0
    for source, path, fmt in files:
        interrupts.check()  # Ctrl-C / SIGTERM: stop between files
        rel = path.relative_to(landing_dir).as_posix()
        try:
            if not rehash_known and path.stat().st_size in {size for _, size in seen.get((source.name, rel), ())}:
                report.skipped.append(rel)
                continue
            with opened_inside(path, landing_dir) as pinned:
                identity = file_identity(pinned)
                if identity[1:] != settled[path]:  # read well after it settled (files before it): its writer went on
                    raise OSError(errno.ESTALE, CHANGED_SINCE_SETTLED)
                sha, size = file_sha256(pinned)
                unchanged(pinned, identity)  # written to while hashed: the hash is of no one content
        except OSError as exc:  # unreadable (permissions, gone, a link swapped in): this file fails, the others go on
            if why := still_written(fmt, path, exc):
                report.unsettled[rel] = why
                continue
            out = unreadable_outcome(source, rel, fmt, path, exc)
            out.file_id = next_id = _next_file_id(con, next_id)
            report.files.append(out)
            ledger_only(con, out, run_id, now)
            continue
        known = con.sql(
            f"""SELECT file_id, file_name, delivered, status, filtered FROM ({taken})
            WHERE source = ? AND content_sha256 = ? ORDER BY (file_name = ?) DESC, file_id""",
            params=[source.name, sha, rel],
        ).fetchall()
        if known and known[0][1] == rel:
            report.skipped.append(rel)
            continue
        # a re-delivery of rows taken in; a copy of a file rejected as a whole is read on its own (its rows were not
        # taken in: counted as duplicates of them, they were lost once the first was read again under a fixed mapping)
        known = [k for k in known if k[3] == C.STATUS_INGESTED]
        if source.keep == KEEP_LATEST:  # the same bytes delivered again are the latest: they restore what came between
            known = []
        out = FileOutcome(source.name, source.table, rel, fmt, sha, size, C.STATUS_INGESTED, source_key=source.key)
        out.file_id = next_id = _next_file_id(con, next_id)
        if (source.name, rel) in rows_in and source.keep != KEEP_LATEST:  # with keep: latest its rows are replaced
            out.note = f"{rel} {REWRITTEN}"
        report.files.append(out)
        if stage_files is not None and not known:
            twin = (source.name, sha, fmt)  # the same bytes under the same format: a Parquet file named .csv fails,
            if twin in planned:  # its twin named .parquet is read (the engine read the first only and failed both)
                copies.append((source, path, out, identity, planned[twin]))
            else:
                planned[twin] = out
                pending.append((source, path, out, identity))
            continue
        try:
            if known:  # the same bytes under another name: a re-delivery, nothing to read
                orig_id, orig_name, delivered, _, filtered = known[0]
                out.as_copy_of(orig_id, orig_name, delivered, filtered)
                ledger_only(con, out, run_id, now)
            else:
                with opened_inside(path, landing_dir) as pinned:  # checked again: a link may be swapped in after hashing
                    unchanged(pinned, identity)
                    _ingest_file(con, source, pinned, out, run_id, bounds, identity)
        except Exception as exc:  # noqa: BLE001 - one bad file never blocks the others
            interrupts.check()  # a query stopped by Ctrl-C / SIGTERM: not the file's fault
            if why := still_written(fmt, path, exc):
                report.files.remove(out)
                report.unsettled[rel] = why
                continue
            out.__dict__.update(failed_outcome(out, exc).__dict__)
            ledger_only(con, out, run_id, now)
        finally:
            for temp in (SRC, STAGE):
                con.execute(f"DROP TABLE IF EXISTS temp.{temp}")
    while pending:
        for out in stage_files(con, pending, bounds, run_id, now):  # returned: still being written, not read
            report.files.remove(out)
            report.unsettled[out.file_name] = out.note or GZIP_UNFINISHED
        pending, copies = _copies_to_read(copies, report.unsettled)
    for _, _, out, _, first in copies:
        if first.file_name in report.unsettled:  # the same bytes as a file still being written: read with it, later
            report.files.remove(out)
            report.unsettled[out.file_name] = report.unsettled[first.file_name]
            continue
        if first.status == C.STATUS_REJECTED_FILE:  # rejected as the first was: its rows are its own rejects
            reject_as(con, out, first, run_id, now)
            continue
        else:
            out.as_copy_of(first.file_id, first.file_name, first.delivered, first.filtered)
        ledger_only(con, out, run_id, now)
    return report


