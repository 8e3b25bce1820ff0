"""Load the landing zone into ``raw.*`` with set-based DuckDB SQL, one transaction per file.

``ingest_landing`` walks the folders of the sources (sources.yaml, else one per contract table) in name
order, skips files a source already ingested (``meta.ingest_ledger`` is keyed by source and sha256 of
the content), reads each new file, maps it onto its contract table (mapping.py), types and validates
every row in one SQL statement (staging.py), writes bad rows to ``raw.rejects`` and new good rows to ``raw.<table>``
(deduplicated by id: first row in the file wins, a row already in the table wins; or with ``keep: latest`` the
last row wins and replaces a stored row with other values: writing.py), and records the file's accounting in the
ledger: ``delivered = accepted + updated + duplicate + rejected + filtered`` (filtered: left out by the source's
``where``; ledger.py). Finding the files is in sources.py, reading one in reading.py.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from seg_assets import interrupts
from seg_assets.errors import disk_full
from seg_assets.ingest import contract as C
from seg_assets.ingest.ledger import (
    FileOutcome,
    IngestReport,
    failed_outcome,
    ledger_only,
    reject_as,
    taken_rows,
    unreadable_outcome,
)
from seg_assets.ingest.reading import SRC
from seg_assets.ingest.source_config import KEEP_LATEST, SourceDef, load_sources
from seg_assets.ingest.sources import (
    CHANGED_SINCE_SETTLED,
    GONE,
    discover_files,
    file_identity,
    file_sha256,
    opened_inside,
    wait_until_settled,
)
from seg_assets.ingest.staging import GZIP_UNFINISHED, Bounds, stage_file, still_written, unchanged
from seg_assets.ingest.writing import STAGE, commit_file, withhold_lines_of_refused_files
from seg_assets.warehouse import naive_utc, prepare_connection

REWRITTEN = "was ingested before with other content (landed files must not change)"
SAME_BYTES_AGAIN = "holds the same bytes as a file taken in before"
# the note, ``<file> holds the same bytes ... (<earlier file>)``, and the earlier file read back out of a ledger message
# (notes are joined by '; ', which a file name may hold too, as it may hold ')': "export; v1 (1).csv")
_SAME_BYTES_NOTE = re.compile(re.escape(SAME_BYTES_AGAIN) + r" \((.*?)\)(?:; |$)", re.DOTALL)


def same_bytes_note(rel: str, earlier: str) -> str:
    return f"{rel} {SAME_BYTES_AGAIN} ({earlier})"


def same_bytes_as(message: str) -> str | None:
    """The earlier file a ledger message's :func:`same_bytes_note` names (None: it has none)."""
    found = _SAME_BYTES_NOTE.search(message or "")
    return found.group(1) if found else None


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Schemas, UTC session, the (empty) raw tables of the contract, raw.rejects and meta.ingest_ledger."""
    prepare_connection(con)
    for ddl in C.all_ddl():
        con.execute(ddl)
    # base tables only: on the Spark engine a raw table is a view over its Parquet (spark/ingest.py gives it new columns)
    present = set(con.sql("SELECT c.table_schema || '.' || c.table_name, c.column_name FROM information_schema.columns c "
                          "JOIN information_schema.tables t USING (table_schema, table_name) "
                          "WHERE t.table_type = 'BASE TABLE'").fetchall())
    tables = {table for table, _ in present}
    for table, column, statements in C.MIGRATIONS:
        if table in tables and (table, column) not in present:
            for statement in statements:
                con.execute(statement)


def _ingest_file(con, source: SourceDef, path: Path, out: FileOutcome, run_id: str, bounds: Bounds, identity: tuple) -> None:
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
    bounds = Bounds(now=now, future_limit=now + clock_skew, min_ts=naive_utc(min_ts))
    landing_dir = Path(landing_dir)
    files, ignored = discover_files(landing_dir, sources)
    settled, unsettled = wait_until_settled(sorted({p for _, p, _ in files}), settle_seconds, max_settle_wait)
    files = [f for f in files if f[1] in settled]
    report = IngestReport(run_id=run_id, ignored=ignored,
                          unsettled={p.relative_to(landing_dir).as_posix(): why for p, why in sorted(unsettled.items())
                                     if why != GONE})  # moved away: not left to a next run
    run = _LandingRun(con, landing_dir, run_id, now, bounds, settled, report, rehash_known,
                      taken=taken_rows({s.name: s.key for s in sources}))
    for source, path, fmt in files:
        interrupts.check()  # Ctrl-C / SIGTERM: stop between files
        rel = path.relative_to(landing_dir).as_posix()
        if (hashed := run.hash_file(source, path, fmt, rel)) is None:
            continue
        identity, sha, size = hashed
        if (recorded := run.record_new(source, rel, fmt, sha, size)) is None:
            continue
        out, known = recorded
        if stage_files is not None and not known:
            run.plan_staged(source, path, out, identity)
        else:
            run.take_in(source, path, fmt, rel, out, identity, known)
    run.finish_staged(stage_files)
    withhold_lines_of_refused_files(con)
    return report


@dataclass
class _LandingRun:
    """What one :func:`ingest_landing` call carries from file to file, so that each step of a file is a method: the
    report, the ledger as it was before the run, the ledger ids given out, and the files left to ``stage_files``."""

    con: duckdb.DuckDBPyConnection
    landing_dir: Path
    run_id: str
    now: datetime
    bounds: Bounds
    settled: dict[Path, tuple[int, int]]  # each settled file's (size, mtime ns) when it settled
    report: IngestReport
    rehash_known: bool
    taken: str  # SQL of the ledger rows whose file is taken in (ledger.taken_rows)
    seen: dict[tuple[str, str], set[tuple[str, int]]] = field(init=False)  # (source, name) -> (sha, size) in the ledger
    rows_in: set[tuple[str, str]] = field(init=False)  # (source, name) of files whose rows were taken in (a rewrite keeps them)
    # stage_files: the files read at the end, by (source, sha, format)
    planned: dict[tuple[str, str, str], FileOutcome] = field(default_factory=dict)
    # their (source, path, outcome, identity hashed: sources.file_identity)
    pending: list[tuple[SourceDef, Path, FileOutcome, tuple]] = field(default_factory=list)
    # a pending item and the outcome of the file it copies
    copies: list[tuple[SourceDef, Path, FileOutcome, tuple, FileOutcome]] = field(default_factory=list)
    next_id: int = 0

    def __post_init__(self) -> None:
        """Reads the ledger once, before any file of this run is recorded in it."""
        self.seen, self.rows_in = {}, set()
        for source, name, sha, size, status in self.con.sql(
                f"SELECT source, file_name, content_sha256, size_bytes, status FROM ({self.taken})").fetchall():
            self.seen.setdefault((source, name), set()).add((sha, size))
            if status == C.STATUS_INGESTED:
                self.rows_in.add((source, name))

    def hash_file(self, source: SourceDef, path: Path, fmt: str, rel: str) -> tuple[tuple, str, int] | None:
        """(identity, sha256, size) of a landing file, hashed through a handle pinned inside landing/; None when that is
        all there is to do: a file known by name and size is skipped, one still being written is left to the next run,
        an unreadable one is recorded as such."""
        try:
            if not self.rehash_known and path.stat().st_size in {size for _, size in self.seen.get((source.name, rel), ())}:
                self.report.skipped.append(rel)
                return None
            with opened_inside(path, self.landing_dir) as pinned:
                identity = file_identity(pinned)
                if identity[1:] != self.settled[path]:  # read well after it settled (files before it): its writer went on
                    raise OSError(errno.ESTALE, CHANGED_SINCE_SETTLED)
                sha, size = file_sha256(pinned)
                unchanged(pinned, identity)  # written to while hashed: the hash is of no one content
        except OSError as exc:  # unreadable (permissions, gone, a link swapped in): this file fails, the others go on
            if why := still_written(fmt, path, exc):
                self.report.unsettled[rel] = why
                return None
            out = unreadable_outcome(source, rel, fmt, path, exc)
            out.file_id = self.next_id = _next_file_id(self.con, self.next_id)
            self.report.files.append(out)
            ledger_only(self.con, out, self.run_id, self.now)
            return None
        return identity, sha, size

    def record_new(self, source: SourceDef, rel: str, fmt: str, sha: str, size: int) -> tuple[FileOutcome, list] | None:
        """The outcome of a file not yet in the ledger under this name and content, in the report with its ledger id,
        and the ledger rows of the same content taken in under other names (the file is then a copy of the first, not
        read; with ``keep: latest`` none, it is read again); None: the file is known, skipped."""
        known = self.con.sql(
            f"""SELECT file_id, file_name, delivered, status, filtered FROM ({self.taken})
            WHERE source = ? AND content_sha256 = ? ORDER BY (file_name = ?) DESC, file_id""",
            params=[source.name, sha, rel],
        ).fetchall()
        if known and known[0][1] == rel:
            self.report.skipped.append(rel)
            return None
        # a re-delivery of rows taken in; a copy of a file rejected as a whole is read on its own (its rows were not
        # taken in: counted as duplicates of them, they were lost once the first was read again under a fixed mapping)
        known = [k for k in known if k[3] == C.STATUS_INGESTED]
        again = None
        if source.keep == KEEP_LATEST:  # the same bytes delivered again are the latest: they restore what came between
            again, known = (known[0][1] if known else None), []
        out = FileOutcome(source.name, source.table, rel, fmt, sha, size, C.STATUS_INGESTED, source_key=source.key)
        if again:
            out.note = same_bytes_note(rel, again)
        out.file_id = self.next_id = _next_file_id(self.con, self.next_id)
        if (source.name, rel) in self.rows_in and source.keep != KEEP_LATEST:  # with keep: latest its rows are replaced
            out.note = f"{rel} {REWRITTEN}"
        self.report.files.append(out)
        return out, known

    def plan_staged(self, source: SourceDef, path: Path, out: FileOutcome, identity: tuple) -> None:
        """Leaves a new file to ``stage_files`` at the end; a twin of one planned (same bytes, same format) copies it."""
        twin = (source.name, out.content_sha256, out.file_format)  # the same bytes under the same format: a Parquet file named .csv fails,
        if twin in self.planned:  # its twin named .parquet is read (the engine read the first only and failed both)
            self.copies.append((source, path, out, identity, self.planned[twin]))
        else:
            self.planned[twin] = out
            self.pending.append((source, path, out, identity))

    def take_in(self, source: SourceDef, path: Path, fmt: str, rel: str, out: FileOutcome, identity: tuple,
                known: list) -> None:
        """Records a copy of content taken in, or reads the file in its own transaction; a failure is the file's alone
        (recorded failed), and a file found still being written is left to the next run, unrecorded."""
        try:
            if known:  # the same bytes under another name: a re-delivery, nothing to read
                orig_id, orig_name, delivered, _, filtered = known[0]
                out.as_copy_of(orig_id, orig_name, delivered, filtered)
                ledger_only(self.con, out, self.run_id, self.now)
            else:
                with opened_inside(path, self.landing_dir) as pinned:  # checked again: a link may be swapped in after hashing
                    unchanged(pinned, identity)
                    _ingest_file(self.con, source, pinned, out, self.run_id, self.bounds, identity)
        except Exception as exc:  # noqa: BLE001 - one bad file never blocks the others
            interrupts.check()  # a query stopped by Ctrl-C / SIGTERM: not the file's fault
            if disk_full(exc):  # nor a full disk: the step stops in one line (resources.WarehouseDiskFull)
                raise
            if why := still_written(fmt, path, exc):
                self.report.files.remove(out)
                self.report.unsettled[rel] = why
                return
            out.__dict__.update(failed_outcome(out, exc).__dict__)
            ledger_only(self.con, out, self.run_id, self.now)
        finally:
            for temp in (SRC, STAGE):
                self.con.execute(f"DROP TABLE IF EXISTS temp.{temp}")

    def finish_staged(self, stage_files) -> None:
        """Reads the files left to ``stage_files`` (then the first copy of each that failed, on its own), and records
        each remaining copy as its first fared: left to the next run with it, rejected as it was, or a copy of it."""
        while self.pending:
            for out in stage_files(self.con, self.pending, self.bounds, self.run_id, self.now):  # returned: still being written, not read
                self.report.files.remove(out)
                self.report.unsettled[out.file_name] = out.note or GZIP_UNFINISHED
            self.pending, self.copies = _copies_to_read(self.copies, self.report.unsettled)
        for _, _, out, _, first in self.copies:
            if first.file_name in self.report.unsettled:  # the same bytes as a file still being written: read with it, later
                self.report.files.remove(out)
                self.report.unsettled[out.file_name] = self.report.unsettled[first.file_name]
                continue
            if first.status == C.STATUS_REJECTED_FILE:  # rejected as the first was: its rows are its own rejects
                reject_as(self.con, out, first, self.run_id, self.now)
                continue
            else:
                out.as_copy_of(first.file_id, first.file_name, first.delivered, first.filtered)
            ledger_only(self.con, out, self.run_id, self.now)
