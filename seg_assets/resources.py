"""Resources, picked per environment in one place.

Every asset talks to DuckDB through :class:`Warehouse` (Dagster's ``DuckDBResource``; a lock held by another
process is waited for briefly, then told as one line) and finds its folders and its notion of "now" through :class:`SegSettings`.
Tests, the CLI and ``dagster dev`` all build their resources with :func:`build_resources`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from filelock import FileLock
from pydantic import Field, model_validator

from seg_assets import interrupts
from seg_assets.errors import disk_full
from seg_assets.settings import DEFAULT_SETTLE_SECONDS, DataPaths, data_paths, duckdb_memory_limit, settle_seconds
from seg_assets.spark.session import Engine, engine_from_env, spark_master
from seg_assets.warehouse import CLOCK_SKEW_MINUTES, as_of_setting, naive_utc, parse_utc, prepare_connection, resolve_as_of

# Resource fields that belong to the deployment (the environment the code location starts with), not to a run: where
# the data root and the warehouse are, how DuckDB and Spark are set up. The Dagster launchpad lets a run config set any
# resource field; a tester's `resources.settings.config.data_dir` read another folder's landing/ into this warehouse and
# published there, and `duckdb.database` or `engine.conf` (JVM options) reach further still. A run config may repeat
# the deployment's value (the launchpad asks for data_dir beside as_of), never set another: refused when a run starts.
# Dagster takes a resource's run config whole: a field left out gets the class default, not the deployment's (an
# `engine` block of `kind` alone ran on local[2] beside a cluster's SEG_SPARK_MASTER), so the values compared are the
# ones the run gets.
DEPLOYMENT_FIELDS = {
    ("settings", "data_dir"): "SEG_DATA_DIR", ("duckdb", "database"): "SEG_DATA_DIR",
    ("duckdb", "connection_config"): "SEG_DUCKDB_MEMORY_LIMIT", ("engine", "kind"): "SEG_ENGINE",
    ("engine", "master"): "SEG_SPARK_MASTER", ("engine", "conf"): "the code location",
}
_PATHS = {("settings", "data_dir"), ("duckdb", "database")}
# Fields the environment sets that a run may set too, but not lose by leaving them out of a block it gives (an as_of
# run from the launchpad, which gives `settings`, read landing files after 5 s beside SEG_SETTLE_SECONDS=600)
KEPT_FIELDS = {("settings", "settle_seconds"): "SEG_SETTLE_SECONDS"}


def _compared(field: tuple[str, str], value: object) -> object:
    """A value as compared: a path resolved (``data`` and ``/abs/data`` are one folder)."""
    return str(Path(str(value)).expanduser().resolve()) if field in _PATHS else value


def refuse_deployment_config(context: dg.InitResourceContext, key: str, resource: dg.ConfigurableResource) -> None:
    """Fail the run, in one line and without retries, when ``resource`` (key ``key``) gets another value of a
    :data:`DEPLOYMENT_FIELDS` field than the deployment's, or leaves out a :data:`KEPT_FIELDS` one the deployment set:
    the value the resource was built with (:func:`build_resources`; Dagster keeps those as the default of the
    resource's config), else the field's default."""
    schema, run = getattr(context.resource_def, "config_schema", None), context.dagster_run
    if run is None or schema is None or not schema.default_provided:  # a sensor's or schedule's resources: no run
        return
    deployed, gets = schema.default_value or {}, context.resource_config or {}
    written = (((run.run_config or {}).get("resources") or {}).get(key) or {}).get("config") or {}
    for (owner, name), where in sorted({**DEPLOYMENT_FIELDS, **KEPT_FIELDS}.items(), key=lambda f: f[0][1] not in written):
        if owner != key or (owner, name) in KEPT_FIELDS and name in written:  # (written first)
            continue
        default = type(resource).model_fields[name].get_default(call_default_factory=True)
        if _compared((key, name), gets.get(name, default)) == _compared((key, name), deployed.get(name, default)):
            continue
        said = (f"sets resources.{key}.config.{name} to {str(written[name])[:120]!r}" if name in written else
                f"gives resources.{key}.config without {name} (Dagster then takes {str(gets.get(name))[:120]!r})")
        raise dg.Failure(description=f"run config {said}, not this deployment's: it is set by {where} where Dagster "
                         f"starts{'' if (key, name) in KEPT_FIELDS else ', not by a run'} (leave resources.{key} out of the run "
                         f"config, or repeat the deployment's {name})", allow_retries=False)


class Warehouse(DuckDBResource):
    """The DuckDB warehouse file under ``SEG_DATA_DIR``.

    DuckDB allows one writing process per file. Inside Dagster, writer steps share the ``duckdb`` pool
    (limit 1, see automation/instance.py); a file lock beside the warehouse also serializes processes
    that Dagster does not schedule (``seg-assets refresh`` next to ``dagster dev``), so a second writer
    waits for the first instead of failing on DuckDB's lock. The lock is re-entrant within a process.
    """

    lock_timeout_seconds: float = Field(default=3600.0, description="How long a writer waits for the warehouse.")
    other_process_wait_seconds: float = Field(
        default=20.0, ge=0,
        description="How long to wait for a process outside the refresh that holds the warehouse open (a notebook, "
        "a BI tool) before failing with what to do.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Tag the run with this process (pid, host) when it has none (a daemon's run worker): one killed with `dagster
        dev` stayed STARTED, held the 'duckdb' pool and made `seg-assets refresh` wait for it an hour; tagged, the CLI
        and the dead_cli_runs sensor mark it failed (automation/instance.py: fail_dead_runs). And with its data root:
        an instance shared by several roots told one root's failed run as another's (publish/state.py)."""
        from seg_assets.automation.instance import process_tags

        refuse_deployment_config(context, "duckdb", self)
        run, instance, mine = context.dagster_run, context.instance, process_tags(Path(self.database).parent)
        # a re-executed run copies its parent's tags: the parent's (dead) process would get the live run failed
        if run is not None and instance is not None and any(run.tags.get(k) != v for k, v in mine.items()):
            instance.add_run_tags(run.run_id, mine)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        interrupts.check()
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with warehouse_lock(self.database, self.lock_timeout_seconds):
            con = self._connect()
            try:
                with interrupts.interruptible(con):
                    prepare_connection(con)
                    yield con
            except (duckdb.Error, OSError) as exc:  # a damaged block a step reads (not one the connection read), a full
                if disk_full(exc):  # disk: one line, no retry
                    raise WarehouseDiskFull(self.database, exc) from None
                if isinstance(exc, duckdb.Error) and (DAMAGED_BLOCK.search(str(exc)) or (
                        DAMAGED.search(str(exc)) and Path(self.database).name in str(exc))):
                    raise WarehouseDamaged(self.database, exc) from None
                raise
            finally:
                con.close()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """A write connection. Writers of this project queue on the file lock; DuckDB's own lock held past it is
        another process (DuckDBResource retried it for 100 s, and each step's retries again: 7 minutes of silence):
        waited for briefly, then :class:`WarehouseLocked`."""
        config = {"custom_user_agent": "dagster", **self.connection_config}
        create_atomically(Path(self.database), config)
        deadline, delay = time.monotonic() + self.other_process_wait_seconds, 0.1
        while True:
            try:
                return duckdb.connect(self.database, read_only=False, config=config)
            except duckdb.Error as exc:  # a checksum mismatch is a plain duckdb.Error, not an IOException
                if DAMAGED.search(str(exc)):
                    raise WarehouseDamaged(self.database, exc) from None
                if not isinstance(exc, duckdb.IOException) or "Could not set lock" not in str(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise WarehouseLocked(self.database, exc) from None
            time.sleep(delay)
            interrupts.check()
            delay = min(delay * 2, 2.0)


class WarehouseLocked(dg.Failure):
    """Another process holds the warehouse file open: one line saying what to do, never retried."""

    def __init__(self, database: str, error: Exception) -> None:
        holder = re.search(r"held in (.*?) \(PID (\d+)\)", str(error))
        by = f" (PID {holder[2]}, {holder[1]})" if holder else ""
        from seg_assets.publish.bi import BI_FILE

        bi = data_paths(Path(database).parent).bi / BI_FILE  # the warehouse's own data root
        super().__init__(description=f"the warehouse {database} is locked by another process{by}: BI tools and notebooks "
                         f"must open {bi} (read-only), never the warehouse; close it and run again", allow_retries=False)


def create_atomically(database: Path, config: dict | None = None) -> None:
    """Create a missing warehouse beside it and link it into place. DuckDB writes a new file's three 4 KiB headers
    one after another: a refresh killed between them left a file no later run could open ("Could not read enough
    bytes ... location 8192"). Called under the warehouse lock, so a leftover from a killed creation is stale."""
    if database.exists():
        return
    wal = database.with_name(database.name + ".wal")  # left by a warehouse moved aside without it: DuckDB refuses a new
    if wal.exists():  # file beside it ("WAL does not match database file", a reviewer's 129-line traceback)
        wal.rename(wal.with_name(f"{wal.name}.orphaned-{time.time_ns()}"))
    for stale in database.parent.glob(f".{database.name}.*.creating"):
        stale.unlink(missing_ok=True)
    tmp = database.with_name(f".{database.name}.{os.getpid()}.creating")
    try:
        duckdb.connect(str(tmp), config=config or {}).close()  # created as the writers open it
        try:
            os.link(tmp, database)  # unlike a rename, never replaces a warehouse another process just created
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, under the lock all writers take
            if not database.exists():
                os.replace(tmp, database)
    finally:
        tmp.unlink(missing_ok=True)


DAMAGED = re.compile(r"not a valid DuckDB database file|Could not read enough bytes|Corrupt database file")
DAMAGED_BLOCK = re.compile(r"Corrupt database file")  # DuckDB storage's checksum: no landing file's error (those name it)


class WarehouseDamaged(dg.Failure):
    """The warehouse file is no DuckDB database DuckDB can open (cut short, overwritten): one line and the way out, never
    retried (a 128-line traceback on every run, a reviewer's)."""

    def __init__(self, database: str, error: Exception) -> None:
        why = str(error).splitlines()[0].removeprefix("IO Error: ")
        super().__init__(description=f"the warehouse {database} cannot be read ({why}): restore it from a backup, or move "
                         "it aside and refresh to rebuild it from landing/ (the model registry, segment history and "
                         "campaign groups kept in it start again)", allow_retries=False)


class WarehouseDiskFull(dg.Failure):
    """The disk under the warehouse (or its copies) is full: one line, never retried; the write that failed is rolled
    back (a tester's 40-line traceback, and a good landing file marked failed with "fix the file"). Not "nothing this step
    wrote was kept", as it said: ingestion commits file by file, and the files read before the disk filled stay in,
    accounted for in the ledger (a tester's: 1 of 7 new files kept, 21,068 rows)."""

    def __init__(self, database: str, error: BaseException) -> None:
        super().__init__(description=f"no space left on the disk of {Path(database).parent} (writing: "
                         f"{str(error).splitlines()[0][:200]}): free space and refresh again; the write that failed was "
                         "rolled back, what was committed before it stays (landing files taken in are in the ledger, the "
                         "others are read next time) and the published tables are as they were", allow_retries=False)


_LOCKS: dict[str, FileLock] = {}


def warehouse_lock(database: str, timeout: float) -> FileLock:
    """One re-entrant FileLock object per warehouse path in this process."""
    path = str(Path(database).resolve()) + ".lock"
    if path not in _LOCKS:
        _LOCKS[path] = FileLock(path, timeout=timeout)
    return _LOCKS[path]


class SegSettings(dg.ConfigurableResource):
    """Project-wide settings shared by all assets of one run."""

    data_dir: str = Field(description="The data root (SEG_DATA_DIR): landing/, warehouse.duckdb, models/, bi/.")
    as_of: str | None = Field(
        default=None,
        description="Fixed 'now' (ISO-8601, UTC) for recency and windows. "
        "Default: the latest order or event time in the warehouse, so results are reproducible.",
    )

    clock_skew_minutes: int = Field(
        default=CLOCK_SKEW_MINUTES, ge=0,
        description="Allowance for producer clocks: a timestamp later than now + this many minutes is rejected as 'in the future'.",
    )
    min_valid_ts: str = Field(
        default="1990-01-01",
        description="ISO-8601 (UTC) lower bound: an order, event or signup time before it is rejected as implausible.",
    )

    settle_seconds: float = Field(
        default=DEFAULT_SETTLE_SECONDS, ge=0,
        description="A landing file is read once its size and mtime have not changed for this long (the sensor waits "
        "for it; ingestion waits up to max_settle_wait_seconds, then leaves a file still changing to the next run).",
    )
    max_settle_wait_seconds: float = Field(default=60.0, ge=0, description="How long ingestion waits for young files.")

    psi_threshold: float = Field(
        default=0.25, gt=0,
        description="Population drift: a model feature whose PSI against the model's reference exceeds this "
        "triggers a re-fit (the drift check fails; 'when_needed' runs fit).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        refuse_deployment_config(context, "settings", self)

    @model_validator(mode="after")
    def _as_of_is_a_time_up_to_now(self):
        if self.as_of:
            as_of_setting(self.as_of, self.clock_skew_minutes)
        return self

    @property
    def paths(self) -> DataPaths:
        return data_paths(self.data_dir)

    def timestamp_bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """The contract's plausible range for timestamps (naive UTC): [min_valid_ts, now + clock skew].

        One place for both ingestion (which rejects rows outside it) and its checks (which verify it).
        """
        now = naive_utc(now)
        return parse_utc(self.min_valid_ts), now + timedelta(minutes=self.clock_skew_minutes)

    def resolve_as_of(self, con: duckdb.DuckDBPyConnection) -> datetime:
        return resolve_as_of(con, self.as_of)


def build_resources(data_dir: str | Path | None = None, as_of: str | None = None, engine: str | None = None) -> dict:
    """The resources for one environment: the data root decides everything else. ``engine`` (duckdb or spark;
    default ``$SEG_ENGINE``, else duckdb) is chosen here and nowhere else (spark/session.py)."""
    paths = data_paths(data_dir)
    kind = engine or engine_from_env()
    limit = duckdb_memory_limit()
    return {
        "duckdb": Warehouse(database=str(paths.warehouse), connection_config={"memory_limit": limit} if limit else {}),
        "settings": SegSettings(data_dir=str(paths.root), as_of=as_of, settle_seconds=settle_seconds()),
        "engine": Engine(kind=kind, master=spark_master()),
    }
