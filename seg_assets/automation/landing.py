"""Which landing files are ready to ingest: the pure rule behind the landing sensor.

A writer may still be writing a file when the sensor looks. The rule (documented in the README):

* files whose names start with ``.`` or ``_`` or end with ``.tmp``, ``.part`` or ``.inprogress`` are
  never read: write under such a name and rename into place when done (an atomic rename is the
  recommended way to deliver);
* any other file is ready once its size and modification time have not changed for ``settle_seconds``.

The sensor remembers what it already requested (by path, size and mtime) in its cursor, so a file
starts exactly one run; ingestion itself is idempotent (its ledger is keyed by content) as a second
line of defence. A run the sensor did not start (``seg-assets refresh``, a person in the UI) records the
files it took in on the ``meta/ingest_ledger`` materialization (:func:`taken_files_metadata`); the
sensor counts those as seen, so it does not redo what a CLI run ingested. It reads them from the
Dagster instance, never from the warehouse (a reader in another process would block the writers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from seg_assets.settings import LANDING_TABLES

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".inprogress")
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
TAKEN_FILES = "landing_files_taken"  # metadata entry of meta/ingest_ledger: keys of the files the run took in


@dataclass(frozen=True)
class LandingFile:
    path: str  # relative to the landing folder
    size: int
    mtime: float

    @property
    def key(self) -> str:
        return f"{self.path}:{self.size}:{int(self.mtime)}"


def is_candidate(name: str) -> bool:
    lowered = name.lower()
    return (not name.startswith((".", "_")) and not lowered.endswith(IN_PROGRESS_SUFFIXES)
            and lowered.endswith(DATA_SUFFIXES))


def scan_landing(landing: Path) -> list[LandingFile]:
    files = []
    for table in LANDING_TABLES:
        folder = landing / table
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and is_candidate(entry.name):
                stat = entry.stat()
                files.append(LandingFile(f"{table}/{entry.name}", stat.st_size, stat.st_mtime))
    return files


def ready_files(files: list[LandingFile], seen: set[str], now: float, settle_seconds: float) -> list[LandingFile]:
    """New files (not in ``seen``) whose last change is at least ``settle_seconds`` old."""
    return [f for f in files if f.key not in seen and now - f.mtime >= settle_seconds]


def taken_files_metadata(landing: Path, taken: Mapping[str, int]) -> dict[str, list[str]]:
    """The ledger materialization's entry: keys of the files an ingestion took in (path -> size it read).

    A file whose size is no longer the size read changed since, and stays new to the sensor.
    """
    return {TAKEN_FILES: sorted(f.key for f in scan_landing(landing) if taken.get(f.path) == f.size)}


@dataclass
class SensorCursor:
    seen: set[str] = field(default_factory=set)  # keys of files requested or taken in
    ledger_storage_id: int | None = None  # the last ledger materialization whose taken files are in ``seen``


def load_cursor(cursor: str | None) -> SensorCursor:
    data = json.loads(cursor) if cursor else {}
    if isinstance(data, list):  # a cursor written before the ledger was read: the seen keys only
        data = {"seen": data}
    return SensorCursor(set(data.get("seen", [])), data.get("ledger_storage_id"))


def dump_cursor(cursor: SensorCursor, files: list[LandingFile]) -> str:
    """Keep only keys of files still present, so the cursor does not grow forever."""
    present = {f.key for f in files}
    return json.dumps({"seen": sorted(cursor.seen & present), "ledger_storage_id": cursor.ledger_storage_id})
