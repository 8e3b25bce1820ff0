"""What the published segments reflect, so a refresh with nothing new can stop in well under a second.

After each successful publication ``bi_segments`` writes ``SEG_DATA_DIR/state/published.json``: the
landing files (path and size) that the ingestion ledger had taken in, and the as-of setting. Before it
loads Dagster, ``seg-assets refresh`` compares the landing folder with that record; if no file is new
or changed and the as-of setting is the same, the published segments are current and it exits. The
file is only a shortcut: deleting it just means the next refresh runs (and finds nothing to ingest).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from seg_assets.automation.landing import scan_landing
from seg_assets.settings import DataPaths

STATE_FILE = "published.json"


def state_path(paths: DataPaths) -> Path:
    return paths.root / "state" / STATE_FILE


def ledger_files(con) -> list[list]:
    """(path under landing/, size) of every file the ledger has settled (failed files are retried)."""
    rows = con.sql("SELECT file_name, size_bytes FROM meta.ingest_ledger "
                   "WHERE status <> 'failed' ORDER BY 1").fetchall()
    return [[name, int(size)] for name, size in rows]


def write_published_state(paths: DataPaths, files: list[list], as_of: datetime, as_of_setting: str | None) -> Path:
    target = state_path(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": files, "as_of": str(as_of), "as_of_setting": as_of_setting,
                               "published_at": datetime.now(timezone.utc).isoformat()}))
    os.replace(tmp, target)
    return target


def nothing_new(paths: DataPaths, as_of_setting: str | None) -> str | None:
    """A message if the published segments already reflect every landing file, else None."""
    target = state_path(paths)
    if not target.exists() or not (paths.bi / "segments.duckdb").exists():
        return None
    state = json.loads(target.read_text())
    if state.get("as_of_setting") != as_of_setting:
        return None
    known = {(name, size) for name, size in state["files"]}
    landing = [(f.path, f.size) for f in scan_landing(paths.landing)]
    if any(f not in known for f in landing):
        return None
    return f"nothing new in {paths.landing} since the last refresh ({len(landing)} files, as of {state['as_of']})"
