"""The ingestion ledger: what became of each landing file, written with its rows or alone, and read back.

One row per file in ``meta.ingest_ledger`` (contract.py: LEDGER_DDL): ``delivered = accepted + updated + duplicate +
rejected + filtered`` (:data:`ROW_COUNTS`). A file is *taken in* by every row but a ``failed`` one and a
``rejected_file`` read under another mapping of its source (:func:`taken_rows`): those are read again, and their new
row replaces the old one, with its rejects (:func:`write_ledger`). Both engines write the ledger through here
(loader.py, spark/ingest.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from seg_assets.ingest import contract as C
from seg_assets.warehouse import sql_string

_NOT_IN_AN_ADDRESS = r"\s,;:\"'<>()\[\]{}|="
_EMAIL = re.compile(rf"[^{_NOT_IN_AN_ADDRESS}]+(?:{'|'.join(map(re.escape, C.AT_SIGNS))})[^{_NOT_IN_AN_ADDRESS}]+")


# A file's row counts, as the ledger stores them: delivered = accepted + updated + duplicate + rejected + filtered
ROW_COUNTS = ("delivered", "accepted", "updated", "duplicate", "rejected", "filtered")


@dataclass
class FileOutcome:
    source: str
    table_name: str
    file_name: str  # relative to the landing folder
    file_format: str
    content_sha256: str
    size_bytes: int
    status: str
    file_id: int | None = None
    delivered: int = 0
    accepted: int = 0
    updated: int = 0  # rows that replaced the stored row of their id (keep: latest)
    duplicate: int = 0
    rejected: int = 0
    filtered: int = 0
    extra_columns: tuple[str, ...] = ()
    message: str | None = None
    note: str | None = None  # prepended to the message when the ledger row is written
    source_key: str | None = None  # SourceDef.key of the source that read it

    def count_duplicates(self) -> None:
        """The rows neither taken in, replaced, rejected nor filtered were duplicates (the ledger's identity)."""
        self.duplicate = self.delivered - self.accepted - self.updated - self.rejected - self.filtered

    def as_copy_of(self, file_id: int, file_name: str, delivered: int, filtered: int) -> None:
        """A file with the same bytes as one taken in (keep: first): its rows are duplicates, but for those its
        source's where leaves out again (and the original's rejects: seen, counted with the duplicates)."""
        self.status, self.delivered, self.filtered = C.STATUS_DUPLICATE_FILE, delivered, filtered
        self.count_duplicates()
        self.message = f"same content as {file_name} (file_id {file_id}): all rows are duplicates"


@dataclass
class IngestReport:
    run_id: str
    files: list[FileOutcome] = field(default_factory=list)  # processed by this call, in order
    skipped: list[str] = field(default_factory=list)  # already in the ledger under this name (see ingest_landing)
    ignored: dict[str, str | None] = field(default_factory=dict)  # not read: path -> reason (None: in progress)
    unsettled: dict[str, str] = field(default_factory=dict)  # not settled (path -> why): left to the next run

    def for_table(self, table: str) -> list[FileOutcome]:
        return [f for f in self.files if f.table_name == table]

    def totals(self, table: str | None = None) -> dict[str, int]:
        files = self.files if table is None else self.for_table(table)
        out = {k: sum(getattr(f, k) for f in files) for k in ROW_COUNTS}
        out["files"] = len(files)
        for status in C.STATUSES:
            out[f"files_{status}"] = sum(f.status == status for f in files)
        return out

    def extra_columns(self, table: str) -> list[str]:
        return sorted({c for f in self.for_table(table) for c in f.extra_columns})


def redact(text: str | None) -> str | None:
    """Replace anything that may be an e-mail address (a word with an '@', plain or URL-encoded) by a marker."""
    return None if text is None else _EMAIL.sub("<redacted e-mail>", text)


UNREAD = ""  # content_sha256 of a file that could not be read: its content is unknown


def write_ledger(con, out: FileOutcome, run_id: str, now: datetime) -> None:
    """The file's ledger row, replacing an earlier attempt at the same file that is read again (`failed`, or nothing
    taken in under another mapping: :data:`NOTHING_TAKEN`, whose rejects go with it); inside a transaction."""
    if out.note:
        out.message, out.note = "; ".join(filter(None, [out.note, out.message])), None
    out.message = redact(out.message)  # one place for every message (a source's `where` may name an address)
    earlier = (f"SELECT file_id FROM {C.LEDGER_TABLE} WHERE source = ? AND file_name = ? AND file_id <> ? "
               f"AND ((content_sha256 = ? AND (status = '{C.STATUS_FAILED}' OR {NOTHING_TAKEN})) "
               f"OR (content_sha256 = '{UNREAD}' AND status = '{C.STATUS_FAILED}'))")
    params = [out.source, out.file_name, out.file_id, out.content_sha256]
    con.execute(f"DELETE FROM {C.REJECTS_TABLE} WHERE file_id IN ({earlier})", params)
    con.execute(f"DELETE FROM {C.WITHHELD_TABLE} WHERE _file_id IN ({earlier})", params)
    con.execute(f"DELETE FROM {C.LEDGER_TABLE} WHERE file_id IN ({earlier})", params)
    row = {"file_id": out.file_id, "source": out.source, "table_name": out.table_name, "file_name": out.file_name,
           "file_format": out.file_format, "content_sha256": out.content_sha256, "size_bytes": out.size_bytes,
           "status": out.status, "delivered": out.delivered, "accepted": out.accepted, "updated": out.updated,
           "duplicate": out.duplicate,
           "rejected": out.rejected, "filtered": out.filtered, "extra_columns": list(out.extra_columns),
           "message": out.message, "run_id": run_id, "ingested_at": now, "source_key": out.source_key}
    con.execute(f"INSERT INTO {C.LEDGER_TABLE} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def rollback(con) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # already rolled back (e.g. a failed COMMIT): keep the original error
        pass


def ledger_only(con, out: FileOutcome, run_id: str, now: datetime) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        write_ledger(con, out, run_id, now)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


# Lines of a reader's error that do not help a person fix the file: the row as read (it may hold personal data),
# the reader's own option dump and its hints about reader options the loader sets itself.
_NOISE = ("Original Line", "Possible", "*", "LINE ", "^")
# How DuckDB's CSV errors explain themselves after the row (its csv_error.cpp): where the row's lines end.
_EXPLAINS = re.compile(r"Error when converting column|Maximum line size|The CSV Parser|Value with unterminated quote|"
                       r"Expected Number of Columns|Invalid unicode|The parallel scanner")
_FIXES = {"not utf-8 encoded": "save the file as UTF-8 (the data contract's encoding) and land it again, or set its "
                               "source's csv encoding in sources.yaml (e.g. csv: {encoding: cp1252})",
          "unexpected end of gzip stream": "the compressed file is cut short: land it again whole, under a new name",
          "is not valid utf8": "a text column of the Parquet file holds bytes that are not UTF-8 text: write its "
                               "strings as UTF-8 and land it again"}


def error_line(exc: Exception) -> str:
    """One line of ``exc``: its first line and the lines explaining it, plus how to fix it where known."""
    lines = str(exc).splitlines()
    if not lines:
        return type(exc).__name__
    kept, in_row = [lines[0].strip()], False
    for x in lines[1:]:
        # DuckDB's "Original Line" goes on over as many lines as the row has (a quote read with the wrong delimiter, an
        # address in a quoted value): they are the row (personal data) up to DuckDB's explanation, whatever they hold
        in_row = x.startswith("Original Line") or (in_row and not _EXPLAINS.match(x))
        if x.strip() and not in_row and not x.startswith((" ", "\t")) and not x.startswith(_NOISE):
            kept.append(x.strip())
    text = "; ".join(k.rstrip(".") for k in kept)
    fixes = [fix for words, fix in _FIXES.items() if words in text.lower()]
    return "; ".join([text, *fixes])


def failed_outcome(out: FileOutcome, exc: Exception) -> FileOutcome:
    """A file that could not be read: status failed, one redacted line (read again by the next run that ingests)."""
    failed = FileOutcome(out.source, out.table_name, out.file_name, out.file_format, out.content_sha256, out.size_bytes,
                         C.STATUS_FAILED, file_id=out.file_id, note=out.note, source_key=out.source_key)
    rel = out.file_name
    # the engine names the file by the path it read (absolute, or the open file's): the line starts with its name
    text = re.sub(r"""(['"]?)(/[^'"\s]*/""" + re.escape(rel) + r"|/proc/self/fd/\d+)\1", "the file", error_line(exc))
    plain = "source" in text or getattr(exc, "for_people", False)  # reading.FileProblem: said for a person already
    failed.message = (f"{rel}: {text}" if plain else f"{rel}: {type(exc).__name__}: {text}")[:1000]
    return failed


def unreadable_outcome(source, rel: str, fmt: str, path, exc: OSError) -> FileOutcome:
    """A file that cannot even be opened or hashed (permissions, gone): failed, with one line saying what to fix."""
    try:
        size = path.stat().st_size  # the size the CLI's "segments are current" check compares
    except OSError:
        size = 0
    why = (exc.strerror or type(exc).__name__).lower()
    fix = ("land the file itself" if why.startswith("a link out") else  # sources.opened_inside: LINK_REFUSED
           "fix its permissions" if isinstance(exc, PermissionError) else "fix the file or remove it")
    out = FileOutcome(source.name, source.table, rel, fmt, UNREAD, size, C.STATUS_FAILED, source_key=source.key)
    out.message = f"{rel}: cannot read {rel}: {why}; {fix}"
    return out


def reject_as(con, out: FileOutcome, first: FileOutcome, run_id: str, now: datetime) -> None:
    """``out``, a copy of ``first`` read in the same run (the Spark engine reads each content once), rejected as a
    whole as ``first`` was: its ledger row and a copy of ``first``'s rejects under its own file, in one transaction."""
    out.status, out.delivered, out.rejected, out.filtered = first.status, first.delivered, first.rejected, first.filtered
    out.message, out.extra_columns = (first.message or "").replace(first.file_name, out.file_name) or None, first.extra_columns
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"""INSERT INTO {C.REJECTS_TABLE} SELECT table_name, ?, ?, row_number, rule, reason, raw_values, ?, ?
                        FROM {C.REJECTS_TABLE} WHERE file_id = ? ORDER BY row_number""",
                    [out.file_id, out.file_name, run_id, now, first.file_id])
        write_ledger(con, out, run_id, now)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


# A file none of whose rows was taken in: rejected as a whole, or every row rejected (a timestamp_format that fits
# no row). Read again once its source reads files differently; its ledger row and rejects are replaced.
NOTHING_TAKEN = (f"(status = '{C.STATUS_REJECTED_FILE}' OR (status = '{C.STATUS_INGESTED}' AND accepted = 0 AND duplicate = 0 "
                 "AND updated = 0 AND rejected > 0))")


def _keys_sql(keys: dict[str, str]) -> str:
    """The sources' mapping fingerprints (source -> SourceDef.key) as a relation k(source, key)."""
    values = ", ".join(f"({sql_string(name)}, {sql_string(key)})" for name, key in keys.items()) or "(NULL, NULL)"
    return f"(VALUES {values}) k(source, key)"


def taken_rows(keys: dict[str, str]) -> str:
    """SQL of the ledger rows whose file is taken in (not read again): all but failed ones and files of which nothing
    was taken in (:data:`NOTHING_TAKEN`) under another mapping of their source (``keys``: source -> SourceDef.key);
    rows written before the ledger recorded the mapping keep theirs."""
    return (f"SELECT l.* FROM {C.LEDGER_TABLE} l LEFT JOIN {_keys_sql(keys)} ON k.source = l.source "
            f"WHERE l.status <> '{C.STATUS_FAILED}' AND NOT ({NOTHING_TAKEN} "
            "AND l.source_key IS NOT NULL AND l.source_key IS DISTINCT FROM k.key)")


def remapped(con, sources, run_id: str | None = None) -> dict[str, int]:
    """Per declared source whose mapping changed since its files were taken in, and that had read no file with the new
    one before this run (``run_id``): how many files keep the mapping they were read with (rows taken in are not read
    again; a tester's corrected time zone changed nothing, and nothing said so). Files whose rows the old mapping's
    ``where`` left out count too; a file read with the new mapping in this very run (the day's delivery beside the
    correction) does not silence it (a reviewer's)."""
    keys = {s.name: s.key for s in sources if s.declared}
    if not keys:
        return {}
    rows = con.sql(f"""SELECT l.source, count(*) FILTER (WHERE l.source_key <> k.key) AS old,
                              count(*) FILTER (WHERE l.source_key = k.key AND l.run_id IS DISTINCT FROM $run) AS new
        FROM {C.LEDGER_TABLE} l JOIN {_keys_sql(keys)} ON k.source = l.source
        WHERE l.status = '{C.STATUS_INGESTED}' AND (l.accepted > 0 OR l.updated > 0 OR l.filtered > 0)
          AND l.source_key IS NOT NULL
        GROUP BY 1""", params={"run": run_id}).fetchall()
    return {source: int(old) for source, old, new in rows if old and not new}


# Where the empty-warehouse line starts quoting a file's own message (the CLI, naming the file itself, cuts it there).
FIRST_PROBLEM = "; first problem: "


def why_no_rows(con) -> str:
    """For a person looking at an empty warehouse: were files landed at all, and what happened to them."""
    if not con.sql(f"SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = "
                   f"'{C.LEDGER_TABLE}'").fetchall()[0][0]:
        return "no landing files ingested yet: land orders, order lines or clicks under landing/ (see the README)"
    files, ingested, accepted = con.sql(f"SELECT count(*), count(*) FILTER (status = '{C.STATUS_INGESTED}'), "
                                        f"coalesce(sum(accepted), 0) FROM {C.LEDGER_TABLE}").fetchall()[0]
    if not files:
        return "no landing files ingested yet: land orders, order lines or clicks under landing/ (see the README)"
    # a file whose rows were all rejected: its first reject's reason (its message holds only notes then: "line_id
    # derived ...", which a tester saw named as the problem); another file without rows: its message
    problems = con.sql(f"""SELECT l.file_name, coalesce(
            (SELECT l.rejected || ' of ' || l.delivered || ' rows rejected, first: ' || arg_min(r.reason, r.row_number)
             FROM {C.REJECTS_TABLE} r WHERE r.file_id = l.file_id AND l.rejected > 0), l.message)
        FROM {C.LEDGER_TABLE} l WHERE l.accepted = 0 AND (l.message IS NOT NULL OR l.rejected > 0)
        ORDER BY l.file_id LIMIT 1""").fetchall()
    name, what = problems[0] if problems else (None, None)
    first = f"{FIRST_PROBLEM}{what if what.startswith(f'{name}: ') else f'{name}: {what}'}" if what else ""
    return (f"{files} landing file(s) read, {ingested} ingested, {accepted} row(s) accepted (see meta.ingest_ledger and "
            "raw.rejects)"
            f"{first}")
