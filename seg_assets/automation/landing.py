"""The landing sensor's side of the landing rule: which files are new and settled, and its cursor.

The rule itself (which files are candidates, when one is settled) lives in ``ingest/sources.py`` and is
the one ingestion applies too; the sensor looks at the same files (:func:`scan_landing`).

The sensor remembers what it already requested (by path, size and mtime) in its cursor, so a file
starts exactly one run; ingestion itself is idempotent (its ledger is keyed by content) as a second
line of defence. A run the sensor did not start (``seg-assets refresh``, a person in the UI) records the
files it took in on the ``meta/ingest_ledger`` materialization (:func:`taken_files_metadata`); the
sensor counts those as seen, so it does not redo what a CLI run ingested. It reads them from the
Dagster instance, never from the warehouse (a reader in another process would block the writers). The files of
a run that failed before taking them in are requested again, at most ``MAX_RETRIES`` times (:func:`retry_failed`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from seg_assets.ingest.sources import LandingFile, is_settled, quiet_seconds

MAX_RETRIES = 2  # a failed run's files are requested again this many times (a lock held for a while, a restart)
RETRY = "#retry"  # run key suffix of a retry: Dagster starts a sensor's run key once


@dataclass
class SensorCursor:
    seen: set[str] = field(default_factory=set)  # keys of files requested or taken in
    ledger_storage_id: int | None = None  # the last ledger materialization whose taken files are in ``seen``
    watching: dict[str, float] = field(default_factory=dict)  # key of a file not settled yet -> first seen as such
    requested: dict[str, int] = field(default_factory=dict)  # key requested, not yet taken in -> retries so far
    handled: list[str] = field(default_factory=list)  # failed runs whose files were requested again (the latest)


# A run key joins the files' keys with '|' (and a retry adds RETRY): a file name may hold '|' or '#', so each key is
# written with those (and '%') escaped, and read back by keys_of; a key without them is written as it is.
_ESCAPES = {"%": "%25", "|": "%7C", "#": "%23"}
_ESCAPED = re.compile("|".join(map(re.escape, _ESCAPES.values())))


def run_key(keys: list[str], retries: int) -> str:
    escaped = ("".join(_ESCAPES.get(ch, ch) for ch in k) for k in keys)
    return "|".join(escaped) + (f"{RETRY}{retries}" if retries else "")


def keys_of(key: str) -> list[str]:
    """The file keys of a :func:`run_key`."""
    back = {v: k for k, v in _ESCAPES.items()}
    return [_ESCAPED.sub(lambda m: back[m.group(0)], k) for k in key.split(RETRY)[0].split("|")]


def retry_failed(cursor: SensorCursor, failed: list[tuple[str, str]]) -> None:
    """Files of a failed run (``failed``: run id, run key) that no ingestion took in are new again, up to MAX_RETRIES
    times: they were marked seen when requested, so a run that failed before ingesting (the warehouse held by
    another process) left them to the hourly schedule. Files taken in are not retried (a later step's failure is not
    theirs, and retrying it would repeat it)."""
    for run_id, key in failed:
        if run_id in cursor.handled:
            continue
        cursor.handled = [*cursor.handled, run_id][-50:]
        keys = [k for k in keys_of(key) if k in cursor.requested and cursor.requested[k] < MAX_RETRIES]
        for k in keys:
            cursor.requested[k] += 1
            cursor.seen.discard(k)


def ready_files(files: list[LandingFile], cursor: SensorCursor, now: float, settle_seconds: float) -> list[LandingFile]:
    """New files (not seen) that are settled (the landing rule, ``sources.is_settled``). A file's key changes with
    its size and mtime, so the time since the cursor first saw a key is time watched unchanged: it settles a file
    whose mtime is in the future (another machine's clock) as ingestion's own watching does."""
    ready, watching = [], {}
    for f in files:
        if f.key in cursor.seen:
            continue
        since = cursor.watching.get(f.key, now)
        if is_settled(quiet_seconds(f.mtime, now - since, now), now - since, f.unfinished, settle_seconds):
            ready.append(f)
        else:
            watching[f.key] = since
    cursor.watching = watching
    return ready


def load_cursor(cursor: str | None) -> SensorCursor:
    data = json.loads(cursor) if cursor else {}
    if isinstance(data, list):  # a cursor written before the ledger was read: the seen keys only
        data = {"seen": data}
    return SensorCursor(set(data.get("seen", [])), data.get("ledger_storage_id"), dict(data.get("watching", {})),
                        dict(data.get("requested", {})), list(data.get("handled", [])))


def dump_cursor(cursor: SensorCursor, files: list[LandingFile]) -> str:
    """Keep only keys of files still present, so the cursor does not grow forever."""
    present = {f.key for f in files}
    return json.dumps({"seen": sorted(cursor.seen & present), "ledger_storage_id": cursor.ledger_storage_id,
                       "watching": {k: v for k, v in sorted(cursor.watching.items()) if k in present},
                       "requested": {k: v for k, v in sorted(cursor.requested.items()) if k in present},
                       "handled": cursor.handled})
