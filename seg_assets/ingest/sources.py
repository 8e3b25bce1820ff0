"""Landing files: which files there are (the one landing rule), their content hash, and each as a relation.

**The landing rule**, used by ingestion (so by the CLI, the schedule and the UI's runs) and by the landing
sensor alike: a file is a *candidate* when a source reads its folder, its name ends in ``.csv``,
``.csv.gz`` or ``.parquet``, and neither its name nor a folder on its path below the landing folder starts
with ``.`` or ``_`` (Spark's ``_temporary/``, hidden staging folders), nor does its name end like a file
in progress (``.tmp``, ``.part``, ``~``, ...: write under such a name, then rename into place: a rename is
atomic). A candidate is *settled* (:func:`is_settled`) when its size and modification time have not
changed for ``settle_seconds``, as watched by us or told by an mtime in the past (an mtime in the future,
another machine's clock, tells nothing: then only watching counts), and it does not look cut short
(:func:`unfinished`: a Parquet file without its closing footer, a CSV whose last line has no end, an empty
file) unless it has stayed so for ``UNFINISHED_SETTLE_SECONDS`` and we watched it unchanged for
``settle_seconds`` (a CSV exported without a final line end is read then). The sensor starts a run only
for settled files; ingestion waits (a bounded time) for a young file to settle and leaves one still
changing, or still looking cut short, to the next run: a file
being written slowly is not read half-written, even when its writer pauses longer than ``settle_seconds``
in the middle of a line or before a Parquet footer.

Parquet is read in place with its own types (``read_parquet``); CSV is read without DuckDB's sniffer
(explicit dialect, every column VARCHAR, header parsed here), plus one overflow column and a NULL
sentinel, so that the loader's SQL can tell a missing field (a truncated row: NULL) from an empty one
(``''``) and spot rows with too many fields (overflow not NULL). A source's CSV dialect (source_config.CsvDialect)
sets the delimiter; a file of a source in another encoding than UTF-8 is decoded by Python's codec into a UTF-8 copy
first (DuckDB's reader knows UTF-8, UTF-16 and a Latin-1 that refuses Windows-1252's curly quotes and euro sign), unless
it is UTF-8 after all (:func:`_utf8_copy`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from seg_assets.ingest import contract as C
from seg_assets.ingest.source_config import CONTRACT_CSV, CsvDialect, SourceDef

SRC = "_seg_ingest_src"  # temp table holding a CSV file as read
NULL_SENTINEL = "\x01"  # CSV nullstr: empty fields stay '', only padded (missing) fields become NULL
OVERFLOW = "_seg_overflow"  # one column past the header: not NULL <=> the row has too many fields
GZIP_CUT_SHORT = "Unexpected end of GZIP stream"  # DuckDB's error reading a .csv.gz cut short (ours says the same)


@dataclass(frozen=True)
class Source:
    names: list[str]  # column names as delivered, in file order
    idents: list[str]  # their SQL identifiers in SRC
    types: list[str]  # their DuckDB types in SRC
    row_expr: str  # SQL giving the 1-based data row number
    is_csv: bool
    relation: str  # what to select from: the temp table SRC (CSV) or read_parquet(...)
    note: str | None = None  # how the file was read, where that differs from its source's settings


def sql_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _path_lit(path: Path) -> str:
    """A file path for read_csv/read_parquet, which glob: '[', '*', '?' become one-character classes."""
    escaped = "".join(f"[{ch}]" if ch in "[*?" else ch for ch in str(path))
    return sql_string(escaped)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


IN_PROGRESS_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".inprogress", "~", ".filepart", ".crdownload", ".download")
UNFINISHED_SETTLE_SECONDS = 600.0  # a file that looks cut short is read once unchanged this long (see unfinished())
TAKEN_FILES = "landing_files_taken"  # metadata entry of meta/ingest_ledger: keys of the files the run took in


def file_format(path: Path) -> str | None:
    name = path.name.lower()
    return next((fmt for suffix, fmt in C.FORMATS if name.endswith(suffix)), None)


def _in_progress(rel: str) -> bool:
    """A name (or a folder on the path) that says "not for reading yet" (see the landing rule above)."""
    return any(part.startswith((".", "_")) for part in rel.split("/")) or rel.lower().endswith(IN_PROGRESS_SUFFIXES)


def is_candidate(rel: str) -> bool:
    """A data file's path below its source's folder that is not in progress (see the landing rule above)."""
    return not _in_progress(rel) and file_format(Path(rel)) is not None


def ignore_reason(rel: str, readers: list[SourceDef], folder: str) -> str | None:
    """Why a file that is not read deserves a person's attention; None for in-progress names (by design)."""
    if _in_progress(rel):
        return None
    if file_format(Path(rel)) is None:
        suffix = Path(rel).suffix or "no extension"
        return f"unknown format ({suffix}): land it as .csv, .csv.gz or .parquet"
    if not readers:
        return f"no source reads folder '{folder}': use a contract table's folder or declare a source in sources.yaml"
    return None


LINK_ROOTS_ENV = "SEG_LANDING_LINK_ROOTS"  # folders outside the data root that links in landing/ may lead to
LINK_REFUSED = (f"a link out of the landing folder: not read (links in landing/ are followed only into it and into the "
                f"folders {LINK_ROOTS_ENV} lists, separated by '{os.pathsep}')")


def link_roots(landing: Path) -> tuple[str, ...]:
    """Where a link in ``landing`` may lead: landing itself (wherever it is mounted) and the folders the operator
    lists in ``SEG_LANDING_LINK_ROOTS``. Whoever can drop files can often create links (SFTP can): followed anywhere,
    ``landing/orders/x.csv -> /etc/passwd`` copied a system file into raw.rejects."""
    listed = [p for p in os.environ.get(LINK_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return tuple({os.path.realpath(p) for p in (landing, *listed)})


def _inside(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _files_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """(every file below ``folder``, the links refused), through links to folders elsewhere too when
    :func:`link_roots` allows them (a landing folder linked to a mounted export share is read like any other;
    ``Path.rglob`` skipped it silently). A link to a folder inside ``folder`` is not followed (its files are read
    under their own path, once) and each outside folder is entered once (a link loop ends)."""
    roots = {os.path.abspath(folder), os.path.realpath(folder)}
    allowed = link_roots(folder)
    entered: set[str] = set()
    out, refused = [], []
    for top, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()  # links to one folder: the first by name is entered, on every machine
        for d in list(dirs):
            path = os.path.join(top, d)
            if not os.path.islink(path):
                continue
            target = os.path.normpath(os.path.join(top, os.readlink(path)))
            real = os.path.realpath(path)
            if any(_inside(p, roots) for p in (target, real)) or real in entered:
                dirs.remove(d)
            elif not _inside(real, allowed):
                dirs.remove(d)
                refused.append(Path(path))
            else:
                entered.add(real)
        for p in (Path(top) / n for n in names):
            if p.is_symlink() and not _inside(os.path.realpath(p), allowed):
                refused.append(p)
            elif p.is_file():
                out.append(p)
    return out, refused


def discover_files(landing_dir: Path, sources: list[SourceDef]
                   ) -> tuple[list[tuple[SourceDef, Path, str]], dict[str, str | None]]:
    """(source, path, format) of every candidate file a source reads, sorted by relative name (then source
    order: two sources may read one folder); and the files not read, each with the reason a person should
    hear (None: an in-progress name, ignored by design)."""
    found, ignored = [], {}
    if not landing_dir.is_dir():
        return found, ignored
    files, refused = _files_under(landing_dir)
    ignored.update({p.relative_to(landing_dir).as_posix(): LINK_REFUSED for p in refused})
    for path in sorted(files, key=lambda p: p.relative_to(landing_dir).as_posix()):
        rel = path.relative_to(landing_dir).as_posix()
        readers = [s for s in sources if rel.startswith(s.folder + "/")]
        # below the source's folder (a folder a source declares may itself start with '_')
        inner = rel[max((len(s.folder) + 1 for s in readers), default=0):]
        if not readers or not is_candidate(inner):
            ignored[rel] = ignore_reason(inner, readers, rel.rsplit("/", 1)[0] if "/" in rel else ".")
        else:
            found += [(source, path, file_format(path)) for source in readers]
    return found, ignored


@dataclass(frozen=True)
class LandingFile:
    path: str  # relative to the landing folder
    size: int
    mtime: float
    unfinished: str | None = None  # why it looks cut short (unfinished()), None when it does not

    @property
    def key(self) -> str:
        return f"{self.path}:{self.size}:{int(self.mtime)}"


def scan_landing(landing: Path, sources: list[SourceDef]) -> list[LandingFile]:
    """The candidate files the sources read (each once, however many sources read it), by path."""
    files: dict[str, LandingFile] = {}
    for _, path, _ in discover_files(landing, sources)[0]:
        rel = path.relative_to(landing).as_posix()
        if rel not in files:
            stat = path.stat()
            files[rel] = LandingFile(rel, stat.st_size, stat.st_mtime, unfinished(path, stat.st_size))
    return list(files.values())


def taken_files_metadata(landing: Path, sources: list[SourceDef], taken: Mapping[str, int]) -> dict[str, list[str]]:
    """The ledger materialization's entry: keys of the files an ingestion took in (path -> size it read).

    A file whose size is no longer the size read changed since, and stays new to the sensor.
    """
    return {TAKEN_FILES: sorted(f.key for f in scan_landing(landing, sources) if taken.get(f.path) == f.size)}


def unfinished(path: Path, size: int) -> str | None:
    """Why a file looks cut short, or None: a Parquet file ends with its footer's magic bytes (a writer adds the
    footer last), a CSV file with a line end (a writer paused mid-line left a value cut short: '131.52' read as
    '13'), and an empty file is a writer that has not started. Cheap: the last bytes only."""
    if size == 0:
        return "empty so far"
    fmt = file_format(path)
    if fmt not in ("parquet", "csv"):
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 4))
            tail = handle.read(4)
    except OSError:
        return None  # unreadable: ingestion says so, file by file
    if fmt == "parquet" and tail != b"PAR1":
        return "no Parquet footer yet"
    if fmt == "csv" and not tail.endswith((b"\n", b"\r", b"\n\x00", b"\r\x00")):  # UTF-16 LE's too: read, told to convert
        return "its last line has no end yet"
    return None


def quiet_seconds(mtime: float, watched: float, now: float) -> float:
    """How long a file is known not to have changed: as long as we watched it unchanged, or its mtime's age;
    an mtime in the future (another machine's clock) tells nothing."""
    return max(watched, now - mtime if mtime <= now else 0.0)


def is_settled(quiet: float, watched: float, unfinished_reason: str | None, settle_seconds: float) -> bool:
    """The landing rule's *settled* (module docstring), for the sensor and ingestion alike. A file that looks cut
    short must also have been watched unchanged for ``settle_seconds``: its old mtime may be a copy's or another
    clock's, and only watching tells a paused writer from a finished one."""
    if unfinished_reason:
        return quiet >= max(settle_seconds, UNFINISHED_SETTLE_SECONDS) and watched >= settle_seconds
    return quiet >= settle_seconds


def _stamp(path: Path) -> tuple[int, float] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime


def wait_until_settled(paths: list[Path], settle_seconds: float, max_wait: float,
                       clock=time.time, sleep=time.sleep) -> tuple[set[Path], dict[Path, str]]:
    """(settled, not settled -> why) after waiting at most ``max_wait`` seconds for files to settle (:func:`is_settled`).

    A file that changes is watched anew; one that looks cut short and has not changed for ``settle_seconds`` of
    watching is not waited for further (its writer may have paused for minutes: the next run looks again)."""
    start = clock()
    watch = {p: (_stamp(p), start) for p in paths}  # stamp, and since when we have seen it unchanged
    settled: set[Path] = set()
    why: dict[Path, str] = {}
    deadline = start + max_wait
    while True:
        now = clock()
        for path, (stamp, since) in list(watch.items()):
            current = _stamp(path)
            if current is None or current != stamp:
                watch[path] = (current, now)
                why[path] = "gone" if current is None else "still being written"
                continue
            reason = unfinished(path, current[0])
            quiet = quiet_seconds(current[1], now - since, now)
            if is_settled(quiet, now - since, reason, settle_seconds):
                settled.add(path)
                del watch[path]
                why.pop(path, None)
            elif reason and now - since >= settle_seconds:  # unchanged but cut short: not worth waiting for
                why[path] = reason
                del watch[path]
            else:
                why[path] = reason or "still being written"
        if not watch or now >= deadline:
            return settled, why
        sleep(max(0.05, min(deadline - now, 1.0)))


# Byte-order marks that say a file is not in its source's encoding (UTF-32 LE first: it starts like UTF-16 LE's)
_FOREIGN_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
                 (codecs.BOM_UTF16_BE, "UTF-16"))
_C1 = re.compile("[\x80-\x9f]")  # control characters no text holds: what cp1252's letters become in latin-1


def _open(path: Path, fmt: str):
    return (gzip.open if fmt == "csv.gz" else open)(path, "rb")


def _csv_header(path: Path, fmt: str, dialect: CsvDialect) -> tuple[list[str] | None, bool]:
    """(the header's column names, or None for a file without one; whether the file starts with a UTF-8 byte-order
    mark, which says it is UTF-8 whatever its source's encoding)."""
    try:
        with _open(path, fmt) as handle:
            line = handle.readline(1 << 20)
    except EOFError:  # a gzip stream whose writer has written its header only
        raise ValueError(f"{GZIP_CUT_SHORT}: the file ends before its compressed stream does") from None
    for bom, name in _FOREIGN_BOMS:
        if line.startswith(bom):
            raise ValueError(f"the file is {name} (its byte-order mark says so): save it as UTF-8 (or as the source's "
                             f"csv encoding, {dialect.encoding}) and land it again")
    utf8 = dialect.utf8 or line.startswith(codecs.BOM_UTF8)
    text = line.decode("utf-8-sig" if utf8 else dialect.encoding, errors="replace")
    if not text.strip():
        return None, utf8
    return [name.strip() for name in next(csv.reader([text], delimiter=dialect.delimiter))], utf8


def _decode_into(src, out, encoding: str, gz: bool) -> bool:
    """Decode ``src`` (a binary file) with ``encoding`` into ``out``; whether any character was not ASCII. Raises
    ValueError at the first byte the codec cannot decode, or that it decodes to a C1 control character."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, wide = 0, False
    where = "of its uncompressed text" if gz else "of the file"
    while True:
        chunk = src.read(1 << 20)
        pending = len(decoder.getstate()[0])  # bytes of a character begun in the chunk before
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            at = offset - pending + exc.start
            raise ValueError(f"not {encoding} encoded: byte {exc.object[exc.start]:#04x} at byte offset {at} {where} has "
                             f"no character in {encoding}; set the source's csv encoding in sources.yaml to the file's "
                             "own") from None
        if (c1 := _C1.search(text)) is not None:
            raise ValueError(f"not {encoding} encoded: it holds {c1.group()!r}, a control character no text holds (in "
                             f"{encoding}); Windows files are cp1252: set the source's csv encoding in sources.yaml")
        wide = wide or not text.isascii()
        out.write(text)
        offset += len(chunk)
        if not chunk:
            return wide


def _utf8_copy(path: Path, fmt: str, encoding: str) -> tuple[Path, str | None]:
    """The file as a UTF-8 temp file (the caller deletes it; ``TMPDIR`` says where), and a note when it was read as
    UTF-8 rather than ``encoding``: a file with letters beyond ASCII that decodes as UTF-8 is UTF-8 (text in a
    single-byte code page practically never forms valid UTF-8 sequences), and decoding it with the source's code page
    would store every such letter garbled (``Zoë`` as ``ZoÃ«``: another user). One clear error at the first byte that
    decodes to nothing, and a gzip stream cut short reported as DuckDB reports it."""
    handle, temp = tempfile.mkstemp(prefix="seg-ingest-", suffix=".csv")
    try:
        with open(handle, "w", encoding="utf-8", newline="") as out:
            try:
                with _open(path, fmt) as src:
                    wide = _decode_into(src, out, "utf-8", fmt == "csv.gz")
                note = f"read as UTF-8, not {encoding}: the file is valid UTF-8" if wide else None
            except ValueError:  # not UTF-8: the source's own encoding
                out.seek(0)
                out.truncate()
                with _open(path, fmt) as src:
                    _decode_into(src, out, encoding, fmt == "csv.gz")
                note = None
    except EOFError:
        os.unlink(temp)
        raise ValueError(f"{GZIP_CUT_SHORT}: the file ends before its compressed stream does") from None
    except BaseException:
        os.unlink(temp)
        raise
    return Path(temp), note


def load_source(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, dialect: CsvDialect = CONTRACT_CSV) -> Source | None:
    """Describe one file; a CSV is read into the temp table SRC (for rowid). None: a CSV without a header row."""
    con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
    if fmt == "parquet":  # typed columns and file_row_number: read straight into the stage, no copy
        relation = f"read_parquet({_path_lit(path)}, file_row_number=true)"
        described = [(r[0], r[1]) for r in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
        described = [(n, t) for n, t in described if n != "file_row_number"]
        names = [n for n, _ in described]
        return Source(names, [_ident(n) for n in names], [t for _, t in described], "file_row_number + 1", False, relation)
    header, utf8 = _csv_header(path, fmt, dialect)
    if header is None:
        return None
    copy, note = (None, None) if utf8 else _utf8_copy(path, fmt, dialect.encoding)
    if utf8 and not dialect.utf8:
        note = f"read as UTF-8, not {dialect.encoding}: the file starts with UTF-8's byte-order mark"
    idents = [f"c{i}" for i in range(len(header))]
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in [*idents, OVERFLOW]) + "}"
    options = (
        f"columns={columns}, header=true, auto_detect=false, delim={sql_string(dialect.delimiter)}, quote='\"', "
        f"escape='\"', null_padding=true, strict_mode=false, nullstr='{NULL_SENTINEL}', encoding='utf-8', "
        f"compression='{'gzip' if fmt == 'csv.gz' and copy is None else 'none'}'"
    )
    sql = f"CREATE TEMP TABLE {SRC} AS SELECT * FROM read_csv({_path_lit(copy or path)}, {options}"
    try:
        try:
            con.execute(sql + ")")
        except duckdb.Error as exc:  # quoted line breaks + null_padding need the single-threaded reader
            if "parallel=false" not in str(exc):
                raise
            con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
            con.execute(sql + ", parallel=false)")
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)
    # rowid follows insertion order, which DuckDB preserves (preserve_insertion_order): the file's row order.
    return Source(header, idents, ["VARCHAR"] * len(header), "rowid + 1", True, SRC, note)
