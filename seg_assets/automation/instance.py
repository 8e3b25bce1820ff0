"""The one Dagster instance: ``$DAGSTER_HOME``, else ``$SEG_DATA_DIR/dagster_home``, with the settings the project needs.

``make ui`` and ``seg-assets refresh`` both use it, so a run started in a terminal shows in the UI with
its logs and materializations, and the landing sensor sees what it ingested. Its sqlite storage takes
writers from several processes (a CLI run while ``dagster dev`` runs); the warehouse has its own lock.
"""

from __future__ import annotations

import os
import socket
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
    path = Path(home).expanduser().resolve() if home else paths.dagster_home
    if path.exists() and not path.is_dir():
        from seg_assets.errors import InputError

        raise InputError(f"DAGSTER_HOME={path} is a file, not a folder: point it at a folder (created if missing)")
    return path


def open_instance(paths: DataPaths) -> dg.DagsterInstance:
    """The instance at :func:`dagster_home`, prepared like ``make ui`` prepares it."""
    import dagster as dg  # here: init-dagster-home and the "segments are current" check do not load Dagster

    home = dagster_home(paths)
    write_dagster_yaml(home)
    return dg.DagsterInstance.from_config(str(home))


# A run in progress holds the "duckdb" pool slot. One whose process was killed (SIGKILL, a closed laptop) stays
# STARTED forever, and every queued run would wait for it: the runs of `seg-assets refresh` carry its pid and host.
PID_TAG = "seg-assets/pid"
HOST_TAG = "seg-assets/host"
ROOT_TAG = "seg-assets/data_root"  # the data root a run wrote (Warehouse.setup_for_execution): one instance may serve several


def process_tags(root: Path) -> dict[str, str]:
    """Tags that let a later process tell whether this one still runs the run, and the data root it writes. Given at
    launch by the CLI; added by the warehouse resource to a run launched without them (each step's resource sees the
    run as launched: missing, they are added by every step, a SQLite write each)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), ROOT_TAG: str(Path(root).resolve())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _active() -> list:
    """Run statuses of a run that may still hold the warehouse."""
    import dagster as dg

    return [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def fail_dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark failed the runs left in progress by a process of this machine that no longer exists; those marked.

    Only runs with our pid and host tags are judged: a run of a live process (a reused pid counts as live), of
    another host or without the tags (the daemon's own run workers, which its run monitoring watches) is left alone.
    """
    import dagster as dg

    host, out = socket.gethostname(), []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_active(), tags={HOST_TAG: host})):
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            instance.report_run_failed(run, message=f"process {pid} on {host} ended without finishing this run (killed?); "
                                       "marked failed so that queued runs get the 'duckdb' pool. Steps it completed are "
                                       "kept; BI tables are replaced only by a finished publication.")
            out.append(run)
    return out


WRITERS_POOL = "duckdb"  # the pool of every asset that writes the warehouse


def runs_writing(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The runs in progress that write the warehouse (their plan holds the ``duckdb`` pool): the daemon queues its own
    runs behind them, and ``seg-assets refresh`` waits for them (its in-process run took no turn: its steps and a
    sensor run's interleaved)."""
    import dagster as dg

    return [r for r in instance.get_runs(filters=dg.RunsFilter(statuses=_active()))
            if r.run_op_concurrency is not None and WRITERS_POOL in (r.run_op_concurrency.all_pools or ())]
