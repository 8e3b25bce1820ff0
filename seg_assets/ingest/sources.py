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
file; or a file changed in the last ``WRITER_CHECK_SECONDS`` that a process on this machine still holds open for
writing, :func:`open_for_writing`) unless it has stayed so for ``UNFINISHED_SETTLE_SECONDS`` and we watched it
unchanged for ``settle_seconds`` (a CSV exported without a final line end is read then). The sensor starts a run only
for settled files; ingestion waits (a bounded time) for a young file to settle and leaves one still
changing, or still looking cut short, to the next run: a file
being written slowly is not read half-written, even when its writer pauses longer than ``settle_seconds``
in the middle of a line or before a Parquet footer, or at a line end while it holds the file open on this machine
(a writer elsewhere, on a shared mount, or one that opens and closes the file for each line, ``echo >> file``, is
not seen: there the rename is the safe way).

Each file is read as a relation by ``reading.py``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from seg_assets.ingest import contract as C
from seg_assets.ingest.source_config import SourceDef


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


IN_PROGRESS_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".inprogress", "~", ".filepart", ".crdownload", ".download")
UNFINISHED_SETTLE_SECONDS = 600.0  # a file that looks cut short is read once unchanged this long (see unfinished())
WRITER_CHECK_SECONDS = 3600.0  # a file changed this recently is looked for among the files local processes write
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


def ignore_reason(rel: str, readers: list[SourceDef], folder: str, missing: list[SourceDef] = ()) -> str | None:
    """Why a file that is not read deserves a person's attention; None for in-progress names (by design).
    ``missing``: declared sources whose folder does not exist (a typo there left the files unread, unnamed)."""
    if _in_progress(rel):
        return None
    if file_format(Path(rel)) is None:
        suffix = Path(rel).suffix or "no extension"
        return f"unknown format ({suffix}): land it as .csv, .csv.gz or .parquet"
    if not readers:
        astray = "".join(f"; source {s.name!r} reads landing/{s.folder}/, which does not exist (folder: is a folder "
                         "under landing/)" for s in missing)
        return (f"no source reads folder '{folder}': use a contract table's folder or declare a source in "
                f"sources.yaml{astray}")
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


@contextmanager
def opened_inside(path: Path, landing: Path, roots: tuple[str, ...] | None = None) -> Iterator[Path]:
    """``path`` opened, as a path to that open file (``/proc/self/fd/N`` where the system has it) that reads it
    however ``path`` changes meanwhile, after checking that the file actually opened lies where :func:`link_roots`
    allows (``roots``: computed by the caller, the Spark driver, whose environment names them). Discovery checks links
    when it lists the files; a link swapped in during the settle wait (``x.csv -> /etc/passwd``) was followed by the
    read. Each read (the hash, the ingestion) opens the file this way. Without ``/proc`` (macOS) the path is checked
    and read by name: a swap between the check and the read is not caught there. OSError for a file outside
    (LINK_REFUSED), or not a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # non-blocking: a FIFO does not hang the run
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        pinned = Path(f"/proc/self/fd/{fd}")
        real = os.readlink(pinned) if pinned.exists() else os.path.realpath(path)
        if not _inside(real, roots if roots is not None else link_roots(landing)):
            raise OSError(errno.EPERM, LINK_REFUSED)
        yield pinned if pinned.exists() else path
    finally:
        os.close(fd)


def file_identity(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime ns) of the file at ``path`` (an :func:`opened_inside` path: the opened file): the same
    between hashing a file and reading it, or it changed in between (the ledger would hold another file's hash). Not
    the device: a Spark executor on another host numbers a shared mount's device its own way."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


CHANGED_WHILE_READ = "changed while it was read (still being written?)"
CHANGED_SINCE_SETTLED = "changed after it had settled (its writer went on)"
GONE = "gone"  # a file discovered, then moved away or deleted before it was read


NOT_A_FILE = "not a regular file (a pipe, socket or device): not read"
LINK_BROKEN = "a link to nothing (its target is gone): not read; land the file itself"


def _files_under(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """(every file below ``folder``, what is not read there and why: links refused or broken, pipes, sockets and devices),
    through links to folders elsewhere too when :func:`link_roots` allows them (a landing folder linked to a mounted
    export share is read like any other;
    ``Path.rglob`` skipped it silently). A link to a folder inside ``folder`` is not followed (its files are read
    under their own path, once) and each outside folder is entered once (a link loop ends)."""
    roots = {os.path.abspath(folder), os.path.realpath(folder)}
    allowed = link_roots(folder)
    entered: set[str] = set()
    out, refused = [], {}
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
                refused[Path(path)] = LINK_REFUSED
            else:
                entered.add(real)
        for p in (Path(top) / n for n in names):
            if p.is_symlink() and not _inside(os.path.realpath(p), allowed):
                refused[p] = LINK_REFUSED
            elif p.is_file():
                out.append(p)
            elif p.exists():
                refused[p] = NOT_A_FILE
            elif p.is_symlink():  # dangling: skipped in silence, so --strict stayed green
                refused[p] = LINK_BROKEN
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
    missing = [s for s in sources if s.declared and not (landing_dir / s.folder).is_dir()]
    ignored.update({p.relative_to(landing_dir).as_posix(): why for p, why in refused.items()})
    for path in sorted(files, key=lambda p: p.relative_to(landing_dir).as_posix()):
        rel = path.relative_to(landing_dir).as_posix()
        readers = [s for s in sources if rel.startswith(s.folder + "/")]
        # below the source's folder (a folder a source declares may itself start with '_')
        inner = rel[max((len(s.folder) + 1 for s in readers), default=0):]
        if not readers or not is_candidate(inner):
            ignored[rel] = ignore_reason(inner, readers, rel.rsplit("/", 1)[0] if "/" in rel else ".", missing)
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


def told(ignored: dict[str, str]) -> dict[str, str]:
    """Of :func:`discover_files`' ignored files, those a person hears of (path -> why: an unknown format, a folder no
    source reads, a link out of landing/); in-progress names carry no reason: not read, by design."""
    return {rel: why for rel, why in ignored.items() if why}


def scan_landing(landing: Path, sources: list[SourceDef], not_read: dict[str, str] | None = None) -> list[LandingFile]:
    """The candidate files the sources read (each once, however many sources read it), by path. ``not_read``, when
    given, is filled with the files no run will read that a person should hear of (path -> why: an unknown format,
    a folder no source reads, a link out of landing/; not in-progress names), from the same scan."""
    files: dict[str, LandingFile] = {}
    found, ignored = discover_files(landing, sources)
    if not_read is not None:
        not_read.update(told(ignored))
    for _, path, _ in found:
        rel = path.relative_to(landing).as_posix()
        if rel not in files:
            stat = path.stat()
            files[rel] = LandingFile(rel, stat.st_size, stat.st_mtime, unfinished(path, stat.st_size))
    recent = [landing / f.path for f in files.values() if not f.unfinished and f.mtime > time.time() - WRITER_CHECK_SECONDS]
    for path, why in open_for_writing(recent).items():
        rel = path.relative_to(landing).as_posix()
        files[rel] = replace(files[rel], unfinished=why)
    return list(files.values())


def open_for_writing(paths: list[Path]) -> dict[Path, str]:
    """Of ``paths``, the ones a process on this machine holds open for writing (-> why, naming it): a writer paused
    at a line end longer than ``settle_seconds`` leaves a file that looks finished (a tester's: 788 of 2,365 rows
    read, the rest by the next run). psutil reads the processes' open files; those of another user's processes (not
    visible without privileges) and writers on other machines are not seen; nor any writer where psutil gives no
    file mode (only Linux does). Files are compared by device and inode, not by name: a symbolic or hard link in
    landing/ to a file written elsewhere, or a writer in a container that mounts the folder under another path, is
    the same file (the open descriptor is looked at through /proc). It reads every process's open files: 6-13 ms
    here, 0.4 s beside a process holding 15,000 (a reviewer's), so it is asked only about files about to settle."""
    wanted: dict[tuple[int, int], list[Path]] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        wanted.setdefault((st.st_dev, st.st_ino), []).append(p)
    if not wanted:
        return {}
    import psutil

    held: dict[Path, str] = {}
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            for f in proc.open_files():
                if getattr(f, "mode", "r") == "r":
                    continue
                try:
                    st = os.stat(f"/proc/{proc.pid}/fd/{f.fd}" if getattr(f, "fd", -1) >= 0 else f.path)
                except OSError:  # closed meanwhile
                    continue
                for p in wanted.get((st.st_dev, st.st_ino), []):
                    held[p] = f"open for writing by process {proc.info['pid']} ({proc.info['name']})"
        except (psutil.Error, OSError):  # gone, not ours to read, or a platform that cannot say
            continue
    return held


def taken_files_metadata(landing: Path, sources: list[SourceDef], taken: Mapping[str, int]) -> dict[str, list[str]]:
    """The ledger materialization's entry: keys of the files an ingestion took in (path -> size it read).

    A file whose size is no longer the size read changed since, and stays new to the sensor.
    """
    return {TAKEN_FILES: sorted(f.key for f in scan_landing(landing, sources) if taken.get(f.path) == f.size)}


PARQUET_MAGIC = b"PAR1"  # a Parquet file's first and last four bytes
NO_LINE_END_YET = "its last line has no end yet"


def unfinished(path: Path, size: int, fmt: str | None = None) -> str | None:
    """Why a file looks cut short, or None: a Parquet file ends with its footer's magic bytes (a writer adds the
    footer last), a CSV file with a line end (a writer paused mid-line left a value cut short: '131.52' read as
    '13'), and an empty file is a writer that has not started. Cheap: the last bytes only. ``fmt``: the format of a
    landing file opened under another name (``/proc/self/fd/N``)."""
    if size == 0:
        return "empty so far"
    fmt = fmt or file_format(path)
    if fmt not in ("parquet", "csv"):
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, size - 4))
            tail = handle.read(4)
    except OSError:
        return None  # unreadable: ingestion says so, file by file
    if size >= 4 and (fmt == "parquet") != (head == PARQUET_MAGIC):  # a writer starts with the magic: another format
        return None  # (read at once, and reading.misnamed says what it is)
    if fmt == "parquet" and tail != PARQUET_MAGIC:
        return "no Parquet footer yet"
    if fmt == "csv" and not tail.endswith((b"\n", b"\r", b"\n\x00", b"\r\x00")):  # UTF-16 LE's too: read, told to convert
        return NO_LINE_END_YET
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


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime ns): what :func:`file_identity` compares, less the inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def wait_until_settled(paths: list[Path], settle_seconds: float, max_wait: float,
                       clock=time.time, sleep=time.sleep) -> tuple[dict[Path, tuple[int, int]], dict[Path, str]]:
    """(settled -> its (size, mtime ns) when it settled, not settled -> why) after waiting at most ``max_wait`` seconds
    for files to settle (:func:`is_settled`). Ingestion reads a settled file later (after the files before it): one whose
    size or mtime differs by then was read half-written when its writer paused and went on.

    A file that changes is watched anew; one that looks cut short and has not changed for ``settle_seconds`` of
    watching is not waited for further (its writer may have paused for minutes: the next run looks again)."""
    start = clock()
    watch = {p: (_stamp(p), start) for p in paths}  # stamp, and since when we have seen it unchanged
    settled: dict[Path, tuple[int, int]] = {}
    why: dict[Path, str] = {}
    deadline = start + max_wait
    while True:
        now = clock()
        settling: dict[Path, tuple[tuple[int, int], float, float]] = {}  # -> (stamp, quiet, watched)
        for path, (stamp, since) in list(watch.items()):
            current = _stamp(path)
            if current is None:  # moved away or deleted (an archiver): nothing to wait for, nothing left to read
                why[path] = GONE
                del watch[path]
                continue
            if current != stamp:
                watch[path] = (current, now)
                why[path] = "still being written"
                continue
            reason = unfinished(path, current[0])
            quiet = quiet_seconds(current[1] / 1e9, now - since, now)
            if is_settled(quiet, now - since, reason, settle_seconds):
                settling[path] = (current, quiet, now - since)
            elif reason and now - since >= settle_seconds:  # unchanged but cut short: not worth waiting for
                why[path] = reason
                del watch[path]
            else:
                why[path] = reason or "still being written"
        held = open_for_writing([p for p, ((_, ns), _, _) in settling.items() if ns / 1e9 > now - WRITER_CHECK_SECONDS])
        for path, (current, quiet, watched) in settling.items():
            # settled by time and bytes, but its writer still holds it: as if cut short, as scan_landing (the sensor) says
            if path in held and not is_settled(quiet, watched, held[path], settle_seconds):
                why[path] = held[path]
                if watched >= settle_seconds:  # unchanged and held: not worth waiting for (as a file cut short)
                    del watch[path]
                continue
            del watch[path]
            settled[path] = current
            why.pop(path, None)
        if not watch or now >= deadline:
            return settled, why
        sleep(max(0.05, min(deadline - now, 1.0)))
