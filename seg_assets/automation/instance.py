"""The one Dagster instance: ``$DAGSTER_HOME``, else ``$SEG_DATA_DIR/dagster_home``, with the settings the project needs.

``make ui`` and ``seg-assets refresh`` both use it, so a run started in a terminal shows in the UI with
its logs and materializations, and the landing sensor sees what it ingested. Its sqlite storage takes
writers from several processes (a CLI run while ``dagster dev`` runs); the warehouse has its own lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from seg_assets.settings import DataPaths

if TYPE_CHECKING:
    import dagster as dg

# DuckDB allows one writing process at a time. Every asset that writes the warehouse is in the
# "duckdb" pool; a limit of 1 at run granularity makes Dagster queue whole runs that write the
# warehouse (the schedule, the sensor and a person in the UI may all start runs at once): one refresh
# at a time, so no run sees another's half-finished work between its steps. Step granularity would
# also claim and free a slot in the instance database around every step (0.8 s per refresh).
DAGSTER_YAML = """\
# Written by `seg-assets init-dagster-home`; safe to edit (it is not overwritten if present).
concurrency:
  pools:
    granularity: run
    default_limit: 1
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""


def write_dagster_yaml(home: str | Path) -> Path:
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        target.write_text(DAGSTER_YAML)
    return target


def dagster_home(paths: DataPaths) -> Path:
    """``$DAGSTER_HOME`` if set, else the data root's ``dagster_home``."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home).expanduser().resolve() if home else paths.dagster_home


def open_instance(paths: DataPaths) -> dg.DagsterInstance:
    """The instance at :func:`dagster_home`, prepared like ``make ui`` prepares it."""
    import dagster as dg  # here: init-dagster-home and the "segments are current" check do not load Dagster

    home = dagster_home(paths)
    write_dagster_yaml(home)
    return dg.DagsterInstance.from_config(str(home))
