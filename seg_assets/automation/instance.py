"""The Dagster instance settings the project needs (written into DAGSTER_HOME by ``make ui``)."""

from __future__ import annotations

from pathlib import Path

# DuckDB allows one writing process at a time. Every asset that writes the warehouse is in the
# "duckdb" pool; a limit of 1 makes Dagster queue their steps across runs instead of letting them
# fail on the file lock (the schedule, the sensor and a person in the UI may all start runs at once).
DAGSTER_YAML = """\
# Written by `seg-assets init-dagster-home`; safe to edit (it is not overwritten if present).
concurrency:
  pools:
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
