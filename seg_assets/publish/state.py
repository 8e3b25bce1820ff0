"""What the published segments reflect, so a refresh with nothing new can stop in well under a second.

After each successful publication ``bi_segments`` writes ``SEG_DATA_DIR/state/published.json``: the
landing files (path and size) that the ingestion ledger holds (failed ones too: unchanged, they would fail
again), a fingerprint of the code that built them (the ``seg_assets`` package's ``.py`` files and the SQL
models), one of the sentiment lexicon files, one of the configuration files (sources.yaml, actions.yaml) and one
of the settings (the
as-of setting and the run's op config: ``--set``/``--config`` values, or the launchpad's). Before it
loads Dagster, ``seg-assets refresh`` compares the landing folder, the code and its settings with that
record; if nothing differs, the published segments are current and it exits. The file is only a
shortcut: deleting it just means the next refresh runs (and finds nothing to ingest).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from seg_assets.config_files import config_fingerprint
from seg_assets.ingest import contract as C
from seg_assets.ingest.ledger import NOTHING_TAKEN
from seg_assets.ingest.source_config import SourceConfigError, load_sources
from seg_assets.ingest.sources import discover_files, scan_landing, told
from seg_assets.publish.bi import BI_FILE, CURRENT, views_read
from seg_assets.settings import DataPaths, sql_dir
from seg_assets.warehouse import read_parquet_sql

STATE_FILE = "published.json"
FAILED_FILES = "file(s) not taken in"  # how "current" names the files that wait for a fix (cli --strict reads it)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # seg_assets/: this module is in seg_assets/publish/


def state_path(paths: DataPaths) -> Path:
    return paths.root / "state" / STATE_FILE


def ledger_files(con) -> list[list]:
    """(path under landing/, size, not taken in) of every file in the ledger that the features were built from (up to
    the ledger watermark of features.user_features' build). A file that failed or of which nothing was taken in
    (rejected as a whole, or every row rejected: ledger.NOTHING_TAKEN) and has not changed since (nor the
    configuration or the code) is no reason to run: it would fare the same. A file taken in after the features were
    built is: a `dagster dev` run killed after ingestion left its rows in no features, and the automation's next run
    (re-scoring other inputs) published them as reflected, so every refresh then said "Segments are current" (a
    tester's)."""
    from seg_assets.features.incremental import read_state
    from seg_assets.features.user_features import USER_FEATURES_TABLE

    built = read_state(con, USER_FEATURES_TABLE)
    # a file read again (failed, then fixed in place) counts by its latest reading: its earlier failed row alone made
    # it "not taken in" and reflected (a reviewer's)
    until = f"HAVING max(file_id) <= {built.max_file_id}" if built is not None else ""
    rows = con.sql(f"SELECT file_name, size_bytes, bool_and(status = '{C.STATUS_FAILED}' OR {NOTHING_TAKEN}) "
                   f"FROM {C.LEDGER_TABLE} GROUP BY ALL {until} ORDER BY 1").fetchall()
    return [[name, int(size), bool(failed)] for name, size, failed in rows]


def _changed_at(landing: Path, name: str) -> int | None:
    """The file's ctime (ns): it moves when its permissions, owner or content change, which its size may not show (a
    file that failed as unreadable is fixed with chmod)."""
    try:
        return (landing / name).stat().st_ctime_ns
    except OSError:
        return None


def code_files() -> list[tuple[str, Path, Path]]:
    """(label, root, path) of what the code fingerprint covers: the package's .py files, the SQL models, its lexicons."""
    return [(label, root, path)
            for label, root, pattern in (("py", PACKAGE_DIR, "*.py"), ("sql", sql_dir(), "*.sql"), ("lexicon", PACKAGE_DIR, "*.txt"))
            for path in sorted(root.rglob(pattern))]


@functools.cache
def code_fingerprint() -> str:
    """sha256 over :func:`code_files`, by relative path and content.

    Computed once per process: a long-running code server records the code it loaded (about), not
    edits made on disk since.
    """
    digest = hashlib.sha256()
    for label, root, path in code_files():
        digest.update(f"{label}:{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def lexicon_fingerprint(paths: DataPaths) -> str:
    """sha256 of the review-sentiment lexicon files (reviews/sentiment.py): a new one is a reason to run."""
    digest = hashlib.sha256()
    folder = paths.sentiment_lexicons
    from seg_assets.reviews.sentiment import LexiconError, lexicon_text  # its checks: a pipe or /dev/zero hung here

    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        try:
            content = lexicon_text(path).encode()
        except LexiconError as exc:  # not current: the run says what is wrong
            content = f"unreadable: {exc}".encode()
        digest.update(path.name.encode() + b"\0" + content)
    return digest.hexdigest()[:16]


def settings_fingerprint(ops_config: dict, as_of_setting: str | None, engine: str = "duckdb") -> str:
    """sha256 of the run's op config as the refresh runs it (laid over the refresh's own: a sensor's or automation's
    run carries none, and its publication never looked current to the hourly schedule or the CLI), less the ops' fit
    modes (when to fit, not what a publication reflects: after ``refresh --refit`` the next refresh ran the whole job
    for nothing), as-of setting and engine (key order does not matter). The as-of counts as the instant it names, not
    as typed: ``...Z``, ``...+00:00`` and ``... `` with a space are one setting (each had made the next refresh run
    again)."""
    from seg_assets.automation.run_config import merge, refresh_run_config, without_fit_modes
    from seg_assets.warehouse import parse_utc

    ops = without_fit_modes(merge(refresh_run_config()["ops"], ops_config or {}))
    if isinstance(as_of_setting, str):
        try:
            as_of_setting = parse_utc(as_of_setting).isoformat()
        except ValueError:  # not a time: the run refuses it, and no fingerprint matches it
            pass
    what = {"ops": ops, "as_of": as_of_setting, **({"engine": engine} if engine != "duckdb" else {})}
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_state(paths: DataPaths) -> dict | None:
    """The last publication's record; None without one, or when it cannot be read (the next refresh then runs)."""
    target = state_path(paths)
    try:
        return json.loads(target.read_text()) if target.exists() else None
    except (OSError, ValueError):
        return None


STALE_STAGED_SECONDS = 3600.0  # a staged record older than this was left by a killed run


def _stage_state(paths: DataPaths, state: dict) -> Path:
    """The state written under a name of its own (a CLI and a daemon run may write at once): what can fail (the
    folder, the disk) fails here, before ``bi_segments`` switches BI; :func:`commit_state` then renames it."""
    target = state_path(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a killed run's: one is staged for seconds
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_STAGED_SECONDS:
                stale.unlink()
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(state))
    return tmp


def commit_state(paths: DataPaths, tmp: Path) -> Path:
    """Put a staged state in place (a rename in its own folder); the staged file is removed if it cannot be (they
    piled up in state/ after every failed attempt, a tester's)."""
    try:
        os.replace(tmp, state_path(paths))
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return state_path(paths)


def stage_published_state(paths: DataPaths, files: list[list], as_of: datetime, settings: str) -> Path:
    """The record of a publication, staged (:func:`commit_state` after the switch). It is ``pending`` until the audiences
    of the same publication are written (:func:`finish_publication`): a run killed in between is not current."""
    files = [[*f, _changed_at(paths.landing, f[0])] if f[2] else f for f in files]  # a failed file: when it last changed
    return _stage_state(paths, {"files": files, "as_of": str(as_of), "settings": settings, "code": code_fingerprint(),
                                "lexicons": lexicon_fingerprint(paths), "config": config_fingerprint(paths.root),
                                "published_at": datetime.now(UTC).isoformat(), "pending": True})


def finish_publication(paths: DataPaths) -> None:
    """The audiences of the publication are written: the record no longer waits for them."""
    state = read_state(paths)
    if state is not None and state.get("pending"):
        commit_state(paths, _stage_state(paths, {k: v for k, v in state.items() if k != "pending"}))


def mark_not_current(paths: DataPaths) -> None:
    """The warehouse holds tables newer than the publication (a run that wrote some and did not finish): the next
    refresh must run, whatever the landing files and settings say (it said "Segments are current" and left them)."""
    state = read_state(paths)
    if state is not None and state.get("settings") is not None:
        try:
            commit_state(paths, _stage_state(paths, {**state, "settings": None}))
        except OSError:  # the state folder cannot be written: the failure being reported says more; the landing
            pass         # files or settings that changed still make the next refresh run


def published(paths: DataPaths) -> bool:
    """Whether a refresh has ever published segments for BI."""
    return (paths.bi / BI_FILE).exists()


def shown_as_of(paths: DataPaths) -> str | None:
    """The as-of of the segments BI shows, read from them (None: none readable). The record can be a publication
    behind (one whose record could not be put in place after its switch: the next failed run named the as-of before,
    a reviewer's)."""
    import duckdb

    segments = paths.bi / CURRENT / "analytics.user_segments.parquet"  # segmentation/scoring.py's TABLE, as published
    try:
        with duckdb.connect() as con:
            [(as_of,)] = con.sql(f"SELECT max(as_of) FROM {read_parquet_sql(segments)}").fetchall()
    except (duckdb.Error, ValueError):
        return None
    return None if as_of is None else str(as_of)


def not_read(paths: DataPaths) -> dict[str, str]:
    """Landing files no source reads, with the reason (a link out of landing/, an unknown format, a folder no source
    reads); in-progress names are left out: they are not read by design."""
    try:
        return told(discover_files(paths.landing, load_sources(paths.root))[1])
    except SourceConfigError:
        return {}


def landed(paths: DataPaths) -> bool:
    """Whether any file a source reads is in the landing folder (a configuration error counts: the refresh says it)."""
    try:
        return bool(scan_landing(paths.landing, load_sources(paths.root)))
    except SourceConfigError:
        return True


def _failed_in(known: dict, landing: list[tuple[str, int]]) -> list[str]:
    """The landing files the publication recorded as not taken in (failed or rejected whole), as they are still."""
    present = set(landing)
    return sorted(name for (name, size), flag in known.items() if flag[:1] == [True] and (name, size) in present)


def not_taken_in(paths: DataPaths) -> list[str]:
    """Landing files the last publication could not take in and that are there unchanged: --strict counts them after a
    refresh that took in other files, as it does when the segments are current."""
    state = read_state(paths)
    if state is None:
        return []
    try:
        landing = [(f.path, f.size) for f in scan_landing(paths.landing, load_sources(paths.root))]
    except SourceConfigError:
        return []
    return _failed_in({(name, size): failed for name, size, *failed in state["files"]}, landing)


def _whole_database(path: Path) -> bool:
    """DuckDB's magic bytes and its three 4 KiB headers are there: a file cut short or overwritten from its start is
    not current (the refresh that runs then says it is damaged and what to do; it said "Segments are current")."""
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
        return head[8:12] == b"DUCK" and path.stat().st_size >= 3 * 4096
    except OSError:
        return False


def nothing_new(paths: DataPaths, settings: str) -> str | None:
    """A message if the published segments already reflect every landing file, this code and these settings."""

    state = read_state(paths)
    if state is None or not published(paths) or views_read(paths.bi) is None:  # None: BI's views read another folder
        return None
    if not _whole_database(paths.warehouse):  # moved aside to be rebuilt (a damaged file's advice), or cut short
        return None
    if state.get("pending") or state.get("settings") != settings or state.get("code") != code_fingerprint():
        return None  # pending: the publication's audiences were never written (a run killed after the switch)
    if state.get("lexicons") != lexicon_fingerprint(paths) or state.get("config") != config_fingerprint(paths.root):
        return None
    known = {(name, size): failed for name, size, *failed in state["files"]}  # failed: [] or [True, ctime] or [False]
    try:
        sources = load_sources(paths.root)
    except SourceConfigError:
        return None  # the refresh says what is wrong
    landing = [(f.path, f.size) for f in scan_landing(paths.landing, sources)]
    if any(f not in known for f in landing):
        return None
    failed = _failed_in(known, landing)
    if any(known[(name, size)][1:] != [_changed_at(paths.landing, name)] for name, size in landing if name in failed):
        return None  # a failed file was touched since (its permissions fixed, rewritten at the same size): read it again
    waiting = (f"; {len(failed)} {FAILED_FILES} ({', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''}) are read "
               "again when they change (their permissions too), the configuration or the code changes, or with --rebase "
               "(see meta.ingest_ledger)") if failed else ""
    return f"nothing new in {paths.landing} since the last refresh ({len(landing)} files, as of {state['as_of']}){waiting}"


def refuse_tables_of_failed_runs(context, settings, keys) -> None:
    """A run that failed or was killed may have written some tables (each step commits its own): published later by
    another run (automation re-publishes after any new materialization), they put settings no finished run had in
    front of BI (the Parquet copy or bi/audiences). The tables stay out until a run writes them again and finishes.
    A run that published BI before it failed (at the audiences, say) is what BI shows: its tables are not refused."""
    import dagster as dg

    from seg_assets.automation.instance import ROOT_TAG
    from seg_assets.automation.jobs import published_and_unfinished
    from seg_assets.errors import input_failure

    broken = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    root = str(settings.paths.root.resolve())
    for key in keys:
        event = context.instance.get_latest_materialization_event(key)
        if event is None or event.run_id == context.run.run_id:
            continue
        run = context.instance.get_run_by_id(event.run_id)
        if run is not None and run.tags.get(ROOT_TAG, root) != root:  # another data root's run (a shared instance)
            continue
        if run is not None and run.status in broken and not published_and_unfinished(context.instance, event.run_id, settings.paths.bi)[0]:
            mark_not_current(settings.paths)  # the next refresh runs (and rewrites the table), not "current"
            raise input_failure(f"{key.to_user_string()} was last written by run {event.run_id}, which did not finish "
                                f"({run.status.value.lower()}): BI keeps the last publication until a run that rewrites it "
                                "finishes (the next scheduled refresh, or seg-assets refresh now; --rebase rewrites every "
                                "table)")
