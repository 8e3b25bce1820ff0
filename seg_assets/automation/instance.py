"""The Dagster instance settings the project needs (written into DAGSTER_HOME by ``make ui``)."""

from __future__ import annotations

from pathlib import Path

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
