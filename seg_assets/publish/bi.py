"""Publish the analytics tables for BI: Parquet files, and a DuckDB file of views over them.

BI tools never open the warehouse (a reader in another process would block every refresh). They open
``SEG_DATA_DIR/bi/segments.duckdb`` read-only, or the Parquet files beside it. Each publication writes
every table's Parquet file into a new version folder (``bi/.v-<token>/``) and then, in one atomic rename,
points the link ``bi/current`` at it (``bi/<schema>.<table>.parquet`` are links through it, for tools that read
Parquet). ``segments.duckdb`` holds only views, and each view reads its table's folder ``bi/tables/<table>/`` of
immutable files, one per publication that changed the table, named so that the newest sorts first:

* a reader that keeps one connection open sees each new publication at its next query; nobody ever sees a
  half-written table, and nobody blocks the writer;
* why not a view over ``bi/current/<table>.parquet``: DuckDB opens a view's file twice per query, its footer when
  the query is bound and its pages when it runs, at the offsets of the first; a query bound before a switch and run
  after it read the new file with the old offsets and failed (measured: 0.5-1.5 % of queries of a reader in a tight
  loop across rapid switches). A view picks the newest file with ``glob()`` at bind, in the same statement as the
  scan, and the scan joins on its file name, so it opens that file only (an empty table's folder keeps one file:
  see :func:`_trim_tables`): a file never changes once named, and the
  one before stays until the next publication (:data:`KEEP`), so a query bound before a switch reads the file it
  was bound to (0 errors in 24,600 queries over 11,600 publications of a race harness: README, BI; the test keeps a
  reader in a loop across publications);
* limits (README, BI): a statement reading the same view three or more times, across a publication, may get 0 rows
  from one read (DuckDB lists the folder more than once per statement); a table flipping between empty and not may
  fail one query at that switch;
* every table's new file is first linked into its folder under a temporary name (:func:`_stage_tables`: a folder
  that cannot take it fails the publication before anything is seen), then the tables are switched one rename after
  another in a few milliseconds: a query over several views may mix two publications if it runs across the switch.
  A failure after the switch (the views file not written, say) undoes it (:class:`_Switch`): a failed refresh
  leaves every table as it was; only a publication killed in those milliseconds leaves the tables switched so far
  until the next refresh starts (its ingestion removes them: :func:`undo_unfinished_switch`).

The DuckDB file itself is written again (under a temporary name, renamed into place) only when the set of
tables or the folder changes. The version folder before the current one is kept until the next
publication, for Parquet readers whose query started before the switch.

Only tables whose content changed are written again. Each table's fingerprint (its columns, row count and
the sum of its rows' hashes: one scan, 0.13 s for 10M rows) is kept in ``meta.bi_tables`` with the time
the content was last written; an unchanged table's file is hard-linked into the new version, not copied.

A publication killed before the switch (SIGKILL, power loss) leaves its temporary files and version
folder; the next one removes them (:func:`remove_leftovers`).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from seg_assets import interrupts
from seg_assets.warehouse import glob_escaped, read_parquet_sql, sql_ident, sql_string

BI_FILE = "segments.duckdb"
CURRENT = "current"  # the link to the current version folder
TABLES = "tables"  # bi/tables/<table>/<key>.parquet: what the views read (newest key sorts first)
KEEP = 2  # files per table folder: the newest, and the one a query bound before its switch may still read
KEY_DIGITS = 12
FILE_COLUMN = "__bi_file"  # the file name column of a view's scan (a published table may not have one so named)
MANIFEST = "meta.bi_tables"  # table_name, rows, fingerprint, written_at (of the content)
LAYOUT = "meta.bi_layout"  # in the DuckDB file: what its views read (rewritten when that changes)
TOKEN_HEX = 12
RUN_FILE = "_run"  # in a version folder: the id of the run that published it (publishing_run)
VERSION = re.compile(rf"^\.v-[0-9a-f]{{{TOKEN_HEX}}}$")
# Temporary names of a publication: .segments.duckdb.<token>.tmp (and DuckDB's .wal beside it), .<name>.<token>.tmp links
TEMP_NAME = re.compile(rf"^\..+\.[0-9a-f]{{{TOKEN_HEX}}}(\.parquet)?\.tmp(\.wal)?$")


@dataclass(frozen=True)
class Publication:
    database: Path
    parquet: dict[str, Path]
    rows: dict[str, int]
    written: tuple[str, ...]  # tables whose content changed since the last publication (written again)
    columns: dict[str, list[tuple]]  # per table: (name, type, description) (published_columns)


def fingerprint(con, table: str) -> tuple[int, str]:
    """(rows, fingerprint) of a warehouse table: equal fingerprints, equal content (as a multiset of rows)."""
    columns = con.sql(f"DESCRIBE {table}").fetchall()
    rows, total = con.sql(f"SELECT count(*), sum(hash(t))::VARCHAR FROM {table} t").fetchall()[0]
    text = repr(([(c[0], c[1]) for c in columns], rows, total))
    return int(rows), hashlib.sha256(text.encode()).hexdigest()[:32]


def _current_version(bi_dir: Path) -> Path | None:
    link = bi_dir / CURRENT
    target = link.resolve() if link.is_symlink() else None
    return target if target is not None and target.is_dir() and target.parent == bi_dir.resolve() else None


def publishing_run(bi_dir: Path) -> str | None:
    """The run whose publication BI shows (None: none recorded). A run killed between its switch and the end of its
    step has no materialization of bi/segments, and every message said BI was not touched (a tester's)."""
    version = _current_version(bi_dir)
    try:
        return (version / RUN_FILE).read_text().strip() or None if version else None
    except OSError:
        return None


def _manifest(con, version: Path | None) -> dict[str, tuple[int, str, datetime]]:
    """The manifest of the current version: table -> (rows, fingerprint, written_at)."""
    path = version / f"{MANIFEST}.parquet" if version else None
    if path is None or not path.exists():
        return {}
    rows = con.sql(f"SELECT table_name, rows, fingerprint, written_at FROM {read_parquet_sql(path)}").fetchall()
    return {name: (n, fp, at) for name, n, fp, at in rows}


def _replace_link(link: Path, target: str, token: str) -> None:
    """Point ``link`` at ``target`` in one rename (a reader sees the old target or the new, never no file)."""
    tmp = link.with_name(f".{link.name}.{token}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def remove_leftovers(bi_dir: Path) -> list[str]:
    """Remove what earlier publications left: temporary files of one killed before its own cleanup (in ``bi/`` and
    the staged links in the tables' folders), and version folders other than the current one (the previous one was
    kept for queries running across its switch); their names.

    Only these names are touched, never the live files. Safe because publications never overlap: the one caller
    (publish/assets.py: bi_segments) publishes while holding the warehouse's write connection, i.e. its file lock
    (resources.py: warehouse_lock) and DuckDB's one-writer lock, so no other publication is writing now.
    """
    removed = []
    current = _current_version(bi_dir)
    staged = [p for folder in (bi_dir / TABLES).iterdir() if folder.is_dir() for p in folder.iterdir()] \
        if (bi_dir / TABLES).is_dir() else []
    for path in [*(bi_dir.iterdir() if bi_dir.is_dir() else ()), *staged]:
        if TEMP_NAME.match(path.name) and (path.is_symlink() or path.is_file()):
            path.unlink(missing_ok=True)
            removed.append(path.name)
        elif VERSION.match(path.name) and path.is_dir() and not path.is_symlink() and path.resolve() != current:
            shutil.rmtree(path)
            removed.append(path.name)
    return sorted(removed)


def undo_unfinished_switch(bi_dir: Path) -> list[str]:
    """Table files that a publication killed during its switch left to the views (they switch table by table, before
    ``current``; a SIGKILL or a second Ctrl-C there left some views on the killed run's tables, the rest and the Parquet
    links on the last publication: a tester's): each file sorting before the one that is ``current``'s own is removed,
    so every view reads the publication ``current`` names again. A folder without ``current``'s file (hard links a copy
    did not keep) is left alone. Only under the warehouse's write lock, as publications are (remove_leftovers); the
    names removed."""
    current = _current_version(bi_dir)
    if current is None or not (bi_dir / TABLES).is_dir():
        return []
    removed = []
    for folder in sorted((bi_dir / TABLES).iterdir()):
        own = current / f"{folder.name}.parquet"
        if not folder.is_dir() or not own.is_file():
            continue
        files = sorted(folder.glob("*.parquet"))
        at = next((i for i, f in enumerate(files) if os.path.samefile(f, own)), 0)
        for newer in files[:at]:
            newer.unlink(missing_ok=True)
            removed.append(f"{folder.name}/{newer.name}")
    return removed


def _layout(bi_dir: Path, tables, comments: Mapping[str, Mapping[str, str]]) -> str:
    """What the views file holds: the folder its views read, the tables, and a digest of the column comments (a
    column or a description that changed rewrites the file)."""
    digest = hashlib.sha256(repr(sorted((t, sorted(c.items())) for t, c in comments.items())).encode()).hexdigest()[:16]
    return repr((str((bi_dir / TABLES).absolute()), sorted(tables), digest))


def views_read(bi_dir: Path) -> list[str] | None:
    """The tables whose views ``bi/segments.duckdb`` holds, if they read this folder's ``bi/tables``; None when they
    read another folder (the data folder was moved or copied), or the file is of an earlier layout."""
    if not (bi_dir / CURRENT).is_symlink():
        return None
    layout = _stored_layout(bi_dir)
    if layout is None:
        return None
    folder, tables = ast.literal_eval(layout)[:2]
    return list(tables) if folder == str((bi_dir / TABLES).absolute()) else None


def view_sql(folder: Path) -> str:
    """The newest file of a table's ``folder``: ``glob()`` is expanded when the query is bound, before the scan's
    own expansion in the same FROM, and the join on the file name keeps the scan to that one file."""
    files = sql_string(glob_escaped(folder.absolute()) + "/*.parquet")
    return (f"SELECT t.* EXCLUDE ({FILE_COLUMN}) FROM (SELECT min(file) AS f FROM glob({files})) AS p "
            f"JOIN read_parquet({files}, filename = '{FILE_COLUMN}', hive_partitioning = false) AS t "
            f"ON t.{FILE_COLUMN} = p.f")


def _stage_tables(bi_dir: Path, version: Path, tables: list[str], token: str) -> tuple[dict[str, Path], str]:
    """The first half of the switch for the views: each table's file of ``version`` linked into its folder under a
    temporary name (no ``*.parquet`` a view reads), unless it is that folder's newest already (an unchanged table);
    so a folder that cannot take its file fails the publication before anything is seen. Returns the staged links
    and the key their final names take, which sorts before every earlier one."""
    folders = {t: bi_dir / TABLES / t for t in tables}
    keys = [int(f.stem) for d in folders.values() if d.is_dir() for f in d.glob("*.parquet") if f.stem.isdigit()]
    key = f"{min(keys, default=10**KEY_DIGITS) - 1:0{KEY_DIGITS}d}"
    staged = {}
    for table, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        files = sorted(folder.glob("*.parquet"))
        source = version / f"{table}.parquet"
        if not files or not os.path.samefile(files[0], source):
            staged[table] = folder / f".{key}.{token}.parquet.tmp"
            os.link(source, staged[table])
    return staged, key


def _trim_tables(bi_dir: Path, tables: list[str], empty: set[str]) -> None:
    """After a publication: each folder keeps its :data:`KEEP` newest files, an ``empty`` table only its newest (with an
    empty file DuckDB builds the join's hash table from the scan, which then reads every file of the folder: a column
    added since failed every query). Best effort: the publication is already seen; the next one trims again."""
    for table in tables:
        with contextlib.suppress(OSError):
            for old in sorted((bi_dir / TABLES / table).glob("*.parquet"))[1 if table in empty else KEEP:]:
                old.unlink(missing_ok=True)


@dataclass
class _Switch:
    """What a publication has switched so far, to undo it if a later part fails: the BI folder as it was."""

    bi_dir: Path
    named: list[Path] = field(default_factory=list)  # tables' new files, under their final names
    before: str | None = None  # the target of ``current`` before (None: the first publication)
    aside: Path | None = None  # a ``current`` folder (a copy of bi/ that followed the links), renamed out of the way
    current: bool = False

    def set_aside(self) -> None:
        link = self.bi_dir / CURRENT
        if link.is_symlink():
            self.before = os.readlink(link)
        elif link.exists():
            self.aside = self.bi_dir / f".v-{uuid.uuid4().hex[:TOKEN_HEX]}"
            os.rename(link, self.aside)

    def point_current(self, target: str, token: str) -> None:
        _replace_link(self.bi_dir / CURRENT, target, token)
        self.current = True

    def undo(self) -> None:
        """``current`` first (Parquet readers), then each table's new file (views: the file before is the folder's
        newest again; a query bound to the new file in these milliseconds fails once). Every step is tried, whatever
        failed before it."""
        link, token = self.bi_dir / CURRENT, uuid.uuid4().hex[:TOKEN_HEX]
        steps = []
        if self.current:
            steps.append(lambda: _replace_link(link, self.before, token) if self.before else link.unlink(missing_ok=True))
        if self.aside is not None:
            steps.append(lambda: os.rename(self.aside, link))
        steps += [lambda path=path: path.unlink(missing_ok=True) for path in self.named]
        for step in steps:
            with contextlib.suppress(OSError):
                step()


def _link_tables(bi_dir: Path, tables: list[str], token: str) -> None:
    """``bi/<table>.parquet`` -> ``current/<table>.parquet`` for Parquet readers, where missing (the first publication,
    or a regular file of an earlier layout). After the switch and best effort: the next publication links what is
    missing."""
    for table in tables:
        link = bi_dir / f"{table}.parquet"
        if not link.is_symlink():
            with contextlib.suppress(OSError):
                _replace_link(link, f"{CURRENT}/{table}.parquet", token)


def _stored_layout(bi_dir: Path) -> str | None:
    try:
        with duckdb.connect(str(bi_dir / BI_FILE), read_only=True) as views:
            [(layout,)] = views.sql(f"SELECT layout FROM {LAYOUT}").fetchall()
    except (duckdb.Error, ValueError):  # no file, tables not views, another DuckDB version, damaged
        return None
    return layout


MANIFEST_COLUMNS = ("table_name", "rows", "fingerprint", "written_at")


def published_columns(con, tables: list[str], describe: Callable[[str, str], str | None]) -> dict[str, list[tuple]]:
    """Per table, its columns now as (name, DuckDB type, description or ''): the views' comments, and the column
    tables of the asset's metadata."""
    return {t: [(c[0], str(c[1]), describe(t, c[0]) or "") for c in con.sql(f"DESCRIBE {t}").fetchall()] for t in tables}


def _comments(columns: Mapping[str, list[tuple]], describe: Callable[[str, str], str | None]) -> dict[str, dict[str, str]]:
    """Per table (and the manifest), column -> description."""
    comments = {t: {name: text for name, _, text in cols} for t, cols in columns.items()}
    return comments | {MANIFEST: {c: describe(MANIFEST, c) or "" for c in MANIFEST_COLUMNS}}


def _write_views(bi_dir: Path, tables: list[str], comments: Mapping[str, Mapping[str, str]], token: str) -> Path | None:
    """A new DuckDB file of views over ``bi/tables``' Parquet files, when the current one reads another set of
    tables or another folder, or its column comments differ; None when it already holds these. Each column with a
    description carries it as a comment (``duckdb_columns().comment``, what BI tools show beside the column)."""
    layout = _layout(bi_dir, tables, comments)
    if (bi_dir / CURRENT).is_symlink() and _stored_layout(bi_dir) == layout:
        return None
    tmp = bi_dir / f".{BI_FILE}.{token}.tmp"
    with duckdb.connect(str(tmp)) as out:
        for table in [*tables, MANIFEST]:
            schema, _ = table.split(".", 1)
            out.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            out.sql(f"CREATE VIEW {table} AS {view_sql(bi_dir / TABLES / table)}")
            for column, text in comments.get(table, {}).items():
                if text:
                    out.sql(f"COMMENT ON COLUMN {table}.{sql_ident(column)} IS {sql_string(text)}")
        out.sql(f"CREATE TABLE {LAYOUT} (layout VARCHAR)")
        out.sql(f"COMMENT ON COLUMN {LAYOUT}.layout IS 'For the publisher: the folder and tables these views read, and a "
                "digest of their column comments (this file is written again when they change).'")
        out.execute(f"INSERT INTO {LAYOUT} VALUES (?)", [layout])
    return tmp


def publish_tables(con, bi_dir: Path, tables: list[str],
                   describe: Callable[[str, str], str | None] = lambda table, column: None,
                   run_id: str | None = None) -> Publication:
    """Copy ``tables`` (``schema.name``) from the warehouse into a new BI version and switch to it; tables whose
    content did not change since the last publication are linked, not written again. ``describe(table, column)``:
    the comment BI tools show for a column (None: none). ``run_id``: recorded in the version (:func:`publishing_run`)."""
    bi_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(bi_dir)
    token = uuid.uuid4().hex[:TOKEN_HEX]
    version = bi_dir / f".v-{token}"
    version.mkdir()
    now = datetime.now(UTC).replace(tzinfo=None)
    rows, manifest, written = {}, [], []
    tmp_db, switched = None, False
    # Tables are sets: letting DuckDB write them in any order lets both cores write (about -10%).
    con.sql("SET preserve_insertion_order = false")
    try:
        current = _current_version(bi_dir)
        previous = _manifest(con, current)
        for table in tables:
            if FILE_COLUMN in con.sql(f"SELECT * FROM {table} LIMIT 0").columns:
                raise ValueError(f"{table} has a column named {FILE_COLUMN}, the name the BI views give the file they "
                                 "read: rename that column")
            rows[table], fp = fingerprint(con, table)
            old = current / f"{table}.parquet" if current else None
            if old is not None and table in previous and previous[table][1] == fp and old.exists():
                os.link(old, version / old.name)  # unchanged: the same file in the new version
                manifest.append((table, rows[table], fp, previous[table][2]))
                continue
            con.sql(f"COPY (SELECT * FROM {table}) TO {sql_string(version / f'{table}.parquet')} (FORMAT parquet)")
            manifest.append((table, rows[table], fp, now))
            written.append(table)
        values = ", ".join("(?, ?, ?, ?)" for _ in manifest) or "(NULL, NULL, NULL, NULL)"
        con.execute(f"""COPY (SELECT * FROM (VALUES {values}) t({', '.join(MANIFEST_COLUMNS)})
                        WHERE table_name IS NOT NULL) TO {sql_string(version / f'{MANIFEST}.parquet')} (FORMAT parquet)""",
                    [v for row in manifest for v in row])
        if run_id:
            (version / RUN_FILE).write_text(run_id)
        interrupts.check()  # Ctrl-C / SIGTERM before the switch: nothing of this publication is seen
        published = [*tables, MANIFEST]
        staged, key = _stage_tables(bi_dir, version, published, token)
        columns = published_columns(con, tables, describe)
        switch = _Switch(bi_dir)
        try:
            switch.set_aside()
            for link in staged.values():  # the switch for the views, one rename per table
                os.replace(link, link.with_name(f"{key}.parquet"))
                switch.named.append(link.with_name(f"{key}.parquet"))
            switch.point_current(version.name, token)  # and for Parquet readers
            # after the switch: a view is checked against its file
            tmp_db = _write_views(bi_dir, tables, _comments(columns, describe), token)
            if tmp_db is not None:
                os.replace(tmp_db, bi_dir / BI_FILE)
        except BaseException:
            switch.undo()  # a reader sees the publication before again
            raise
        switched = True
        _link_tables(bi_dir, published, token)
        _trim_tables(bi_dir, published, {t for t in tables if not rows[t]})
        for table in set(previous) - set(tables):
            (bi_dir / f"{table}.parquet").unlink(missing_ok=True)
            shutil.rmtree(bi_dir / TABLES / table, ignore_errors=True)
        return Publication(database=bi_dir / BI_FILE, parquet={t: bi_dir / f"{t}.parquet" for t in tables}, rows=rows,
                           written=tuple(written), columns=columns)
    except BaseException:
        if not switched and _current_version(bi_dir) != version.resolve():  # nothing of it is seen (the undo worked)
            shutil.rmtree(version, ignore_errors=True)
            for table in [*tables, MANIFEST]:
                for link in (bi_dir / TABLES / table).glob(f".*.{token}.parquet.tmp"):
                    link.unlink(missing_ok=True)
        raise
    finally:
        con.sql("RESET preserve_insertion_order")
        for leftover in [tmp_db, tmp_db.with_name(tmp_db.name + ".wal")] if tmp_db else []:
            leftover.unlink(missing_ok=True)
