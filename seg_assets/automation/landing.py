"""The landing sensor's side of the landing rule: which files are new and settled, and its cursor.

The rule itself (which files are candidates, when one is settled) lives in ``ingest/sources.py`` and is
the one ingestion applies too; the sensor looks at the same files (:func:`scan_landing`).

The sensor remembers what it already requested (by path, size and mtime) in its cursor, so a file
starts exactly one run; ingestion itself is idempotent (its ledger is keyed by content) as a second
line of defence. A run the sensor did not start (``seg-assets refresh``, a person in the UI) records the
files it took in on the ``meta/ingest_ledger`` materialization (:func:`taken_files_metadata`); the
sensor counts those as seen, so it does not redo what a CLI run ingested. It reads them from the
Dagster instance, never from the warehouse (a reader in another process would block the writers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from seg_assets.ingest.sources import LandingFile


def ready_files(files: list[LandingFile], seen: set[str], now: float, settle_seconds: float) -> list[LandingFile]:
    """New files (not in ``seen``) whose last change is at least ``settle_seconds`` old."""
    return [f for f in files if f.key not in seen and now - f.mtime >= settle_seconds]


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
