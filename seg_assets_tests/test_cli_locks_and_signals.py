"""`seg-assets refresh` beside other writers, and stopped: a process holding the warehouse open, a run writing it
under dagster dev, a second command-line refresh, Ctrl-C or SIGTERM (nothing published), and a SIGKILLed refresh's
run marked failed by the next."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from seg_assets.cli import app
from seg_assets_tests.cli_runner import runner


def one_settled_order(tmp_path: Path) -> Path:
    """A data root whose landing holds one settled orders file of one order."""
    import os
    import time

    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    landed = root / "landing" / "orders" / "a.csv"
    landed.write_text("order_id,user_id,order_ts,amount,items,category,discount,status\n"
                      "o1,u1,2026-03-01T10:00:00Z,10.00,1,books,,completed\n")
    os.utime(landed, (time.time() - 60, time.time() - 60))  # settled
    return root


def test_a_process_holding_the_warehouse_open_fails_the_refresh_soon_in_one_line(tmp_path, monkeypatch):
    """A notebook holding warehouse.duckdb (read-only) made a refresh wait 7 minutes in silence (DuckDB's backoff x
    step retries), then print a traceback. Now: about 20 s, one line naming the holder and what to do, exit 1."""
    import time

    import duckdb

    root = one_settled_order(tmp_path)
    duckdb.connect(str(root / "warehouse.duckdb")).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys\nc = duckdb.connect(sys.argv[1], read_only=True)\n"
                               "print('open', flush=True)\nsys.stdin.read()", str(root / "warehouse.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        monkeypatch.setenv("SEG_DATA_DIR", str(root))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        start = time.monotonic()
        result = runner.invoke(app, ["refresh", "--no-summary"])
        took = time.monotonic() - start
    finally:
        holder.communicate("", timeout=30)
    assert result.exit_code == 1, result.output
    assert took < 60, took
    assert "Traceback" not in result.output and "Stack Trace" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error")]
    assert line.startswith("error ingest_landing: the warehouse ") and f"is locked by another process (PID {holder.pid}," in line
    assert line.endswith(f"must open {root / 'bi' / 'segments.duckdb'} (read-only), never the warehouse; close it and run again")



def test_a_warehouse_whose_creation_is_killed_half_written_is_not_left_behind(tmp_path, monkeypatch):
    """A refresh SIGKILLed while DuckDB wrote a new file's headers left 8 KiB of the 12 no run could open again ("Could
    not read enough bytes ... location 8192"). The warehouse is created beside its place and linked in whole."""
    import duckdb

    from seg_assets import resources
    from seg_assets.resources import Warehouse

    database, real_connect = tmp_path / "warehouse.duckdb", duckdb.connect

    def killed_while_creating(path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 8192)  # the first two of three headers written
        raise KeyboardInterrupt

    monkeypatch.setattr(resources.duckdb, "connect", killed_while_creating)
    with pytest.raises(KeyboardInterrupt), Warehouse(database=str(database)).get_connection():
        pass
    assert not database.exists()
    monkeypatch.setattr(resources.duckdb, "connect", real_connect)
    with Warehouse(database=str(database)).get_connection() as con:
        assert con.execute("SELECT 1").fetchone() == (1,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb", "warehouse.duckdb.lock"]


def test_a_damaged_warehouse_is_one_line_and_moved_aside_it_is_rebuilt(data_dir, monkeypatch):
    """A warehouse cut short (a refresh killed while an earlier version created it) failed every run with a 128-line
    traceback (a reviewer's). One line says what to do; once it is moved aside the next refresh rebuilds it (the
    published state alone said "Segments are current"). Refreshed in place: a copied root is never current, and a
    reviewer found this root said "Segments are current" with exit 0 while its warehouse was cut short."""
    import os

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    assert "Segments are current" in runner.invoke(app, ["refresh", "--no-summary"]).output
    warehouse, refreshed = data_dir / "warehouse.duckdb", data_dir
    os.truncate(warehouse, 8192)
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error")]
    assert line.startswith(f"error ingest_landing: the warehouse {warehouse} cannot be read (Could not read enough bytes")
    assert "move it aside and refresh to rebuild it from landing/" in line
    warehouse.rename(refreshed / "warehouse.damaged")
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert result.exit_code == 0 and "Segments are current" not in result.output, result.output
    assert warehouse.stat().st_size > 8192


def test_a_warehouse_with_an_overwritten_block_is_one_line(tmp_path):
    """A block overwritten after the headers fails DuckDB's checksum with a plain duckdb.Error, which was not taken
    for a damaged file: a 129-line traceback (a reviewer's)."""
    import os

    from seg_assets.resources import Warehouse, WarehouseDamaged

    database = tmp_path / "warehouse.duckdb"
    with Warehouse(database=str(database)).get_connection() as con:
        con.sql("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    with database.open("r+b") as handle:
        handle.seek(12288 + 100)
        handle.write(os.urandom(65536))
    with pytest.raises(WarehouseDamaged, match="cannot be read .*Corrupt database file"):
        with Warehouse(database=str(database), other_process_wait_seconds=0).get_connection():
            pass


def test_a_damaged_block_a_step_reads_is_one_line_too(tmp_path):
    """A data block overwritten: the connection opens (it reads the catalog only), the query that reads the block
    failed with DuckDB's plain error, a traceback, retried twice (a reviewer's)."""
    import os

    from seg_assets.resources import Warehouse, WarehouseDamaged

    database = tmp_path / "warehouse.duckdb"
    with Warehouse(database=str(database)).get_connection() as con:
        con.sql("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(300000)")
    with database.open("r+b") as handle:
        handle.seek(12288 + 262144 + 100)  # inside the first data block after the headers and the first block
        handle.write(os.urandom(65536))
    with pytest.raises(WarehouseDamaged, match="cannot be read .*Corrupt database file"):
        with Warehouse(database=str(database), other_process_wait_seconds=0).get_connection() as con:
            con.sql("SELECT max(s) FROM t").fetchall()


def test_a_warehouse_moved_aside_without_its_wal_is_created_again(tmp_path):
    """The damaged-file advice followed, `warehouse.duckdb.wal` left behind: DuckDB refused the new file beside it
    ("WAL does not match database file", a reviewer's 129-line traceback). The orphan is renamed out of the way."""
    import duckdb

    from seg_assets.resources import Warehouse

    database = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(database))
    con.sql("CREATE TABLE base AS SELECT 1 AS i")
    con.sql("CHECKPOINT")
    con.sql("PRAGMA disable_checkpoint_on_shutdown")
    con.sql("SET wal_autocheckpoint = '10GB'")
    con.sql("CREATE TABLE from_wal AS SELECT range AS i FROM range(1000)")
    con.close()
    database.rename(tmp_path / "aside.duckdb")
    assert (tmp_path / "warehouse.duckdb.wal").exists()
    with Warehouse(database=str(database), other_process_wait_seconds=0).get_connection() as con:
        assert con.sql("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("warehouse.duckdb.wal.orphaned-")]


def test_a_warehouse_is_created_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    import errno
    import os

    from seg_assets import resources
    from seg_assets.resources import Warehouse

    def no_links(*_):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(resources.os, "link", no_links)
    with Warehouse(database=str(tmp_path / "warehouse.duckdb")).get_connection() as con:
        con.sql("CREATE TABLE t AS SELECT 1 AS x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb", "warehouse.duckdb.lock"]
    assert os.path.getsize(tmp_path / "warehouse.duckdb") >= 12288


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_the_refresh_and_publishes_nothing(data_dir, signum, code):
    """The job's retry policy retried Dagster's interrupt: the run went on and ended 'Refresh done', exit 0. Now the
    steps after the signal fail without a retry, the run is failed, and one line says nothing was published."""
    import os
    import time

    from seg_assets.automation.instance import write_dagster_yaml

    env = {**os.environ, "SEG_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    home = data_dir / "dagster_home"
    write_dagster_yaml(home)
    instance = dg.DagsterInstance.from_config(str(home))  # its storage is made here, not raced with the child's
    code_ = "import sys; from seg_assets.cli import main; sys.argv = ['seg-assets', *sys.argv[1:]]; main()"
    child = subprocess.Popen([sys.executable, "-c", code_, "refresh", "--no-summary"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    started = False
    while not started and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        started = any(e.step_key == "features__user_features"
                      for run in instance.get_runs()
                      for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))
    assert started, "the refresh ended before its features step"
    child.send_signal(signum)
    out, err = child.communicate(timeout=120)
    assert child.returncode == code, out + err
    assert "Traceback" not in out + err and "Refresh done" not in out
    [line] = [line for line in out.splitlines() if line.startswith("interrupted")]
    assert line.startswith("interrupted: nothing published by this run; nothing has been published yet; run seg-assets "
                           "refresh again to finish")
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert not (data_dir / "bi" / "segments.duckdb").exists()


@pytest.mark.slow
def test_a_killed_refresh_is_marked_failed_by_the_next_so_it_holds_no_pool_slot(data_dir, monkeypatch):
    """A SIGKILLed CLI refresh stayed STARTED, holding the 'duckdb' pool (limit 1) that queued runs wait for. The next
    refresh marks it failed; runs of a live process or of another host are left alone."""
    import os
    import signal
    import socket
    import time
    import uuid

    from seg_assets.automation.instance import HOST_TAG, PID_TAG, write_dagster_yaml

    home = data_dir / "dagster_home"
    write_dagster_yaml(home)
    instance = dg.DagsterInstance.from_config(str(home))
    env = {**os.environ, "SEG_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    code = "import sys; from seg_assets.cli import main; sys.argv = ['seg-assets', *sys.argv[1:]]; main()"
    child = subprocess.Popen([sys.executable, "-c", code, "refresh", "--no-summary"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline and not any(
            instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START) for r in instance.get_runs()):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    [killed] = instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED and killed.tags[PID_TAG] == str(child.pid)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    others = {}
    for name, tags in {"live": {PID_TAG: str(live.pid), HOST_TAG: socket.gethostname()},
                       "elsewhere": {PID_TAG: str(child.pid), HOST_TAG: "another-host"}}.items():
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="refresh", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags))
        others[name] = run_id
    try:
        monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        result = runner.invoke(app, ["refresh", "--no-summary"])
    finally:
        live.kill()
        live.wait()
    assert result.exit_code == 0, result.output
    assert f"warning run {killed.run_id} was left in progress by process {child.pid}, which ended" in result.output
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"process {child.pid} on {socket.gethostname()} ended without finishing this run" in failure.message
    assert {instance.get_run_by_id(r).status for r in others.values()} == {dg.DagsterRunStatus.STARTED}


def test_a_refresh_waits_for_a_run_that_writes_the_warehouse(data_dir, monkeypatch):
    """`seg-assets refresh` ran beside a sensor's run under dagster dev, their steps interleaved (its in-process run
    took no turn in the 'duckdb' pool). It now waits for such a run; one stuck for the whole wait is named."""
    import dagster as dg
    from dagster._core.storage.dagster_run import RunOpConcurrency

    from seg_assets import cli
    from seg_assets.automation.instance import open_instance, runs_writing
    from seg_assets.settings import data_paths

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    instance = open_instance(data_paths(data_dir))
    pools = RunOpConcurrency(root_key_counts={"duckdb": 1}, has_unconstrained_root_nodes=False, all_pools={"duckdb"})
    sensor_run = dg.DagsterRun(job_name="refresh", run_id="sensor-run-1", status=dg.DagsterRunStatus.STARTED,
                               run_op_concurrency=pools)  # a daemon's run worker: no pid tags, alive
    instance.add_run(sensor_run)
    instance.add_run(dg.DagsterRun(job_name="other", run_id="reader-1", status=dg.DagsterRunStatus.STARTED))
    assert [r.run_id for r in runs_writing(instance)] == ["sensor-run-1"]
    monkeypatch.setattr(cli, "WAIT_FOR_RUNS_SECONDS", 0.5)
    stuck = runner.invoke(app, ["refresh"])
    flat = " ".join(stuck.output.split())
    assert stuck.exit_code == 1 and "waiting for run sensor-run-1 (refresh) to finish" in flat
    assert "Refresh not started: run sensor-run-1 has been writing the warehouse" in flat
    assert not (data_dir / "warehouse.duckdb").exists()  # nothing ran


def test_a_second_command_line_refresh_waits_for_the_first(data_dir, monkeypatch):
    """Two refreshes started half a second apart both ran, their steps interleaved. The second now waits (here: the
    first is simulated by holding its lock); a bad setting is still refused at once, without waiting."""
    from filelock import FileLock

    from seg_assets import cli

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(cli, "WAIT_FOR_RUNS_SECONDS", 0.5)
    first = FileLock(str(data_dir / ".refresh.lock"), thread_local=False)
    first.acquire()
    try:
        bad = runner.invoke(app, ["refresh", "--set", "segment_model.k_min=-3"])
        assert bad.exit_code == 2 and "waiting" not in bad.output
        second = runner.invoke(app, ["refresh"])
        flat = " ".join(second.output.split())
        assert second.exit_code == 1 and "waiting for another seg-assets refresh of this data root" in flat
    finally:
        first.release()
    assert not (data_dir / "warehouse.duckdb").exists()


def test_a_damaged_model_file_is_one_line_naming_it_not_retried(refreshed):
    """The classifier in service overwritten (a bad restore, a disk fault): pickle raised a bare `KeyError: 216`, the
    step was retried twice and the CLI printed a 40-line traceback (a tester's). One line names the file."""
    import os

    from seg_assets.refresh import run_refresh

    [artifact] = sorted((refreshed / "models").rglob("c0001.joblib"))
    artifact.write_bytes(os.urandom(1000))
    outcome = run_refresh(refreshed, rebase=True)
    assert not outcome.success
    errors = [p for p in outcome.problems if p.kind == "error"]
    assert errors and all(p.traceback is None for p in errors), errors
    assert any(f"the model file {artifact} cannot be read" in p.message and "restore it from a backup" in p.message
               for p in errors), errors
    assert not [p for p in outcome.problems if "retried" in p.message], outcome.problems


def test_a_read_only_data_root_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """A tester's data root on a read-only mount: the refresh lock failed with a 170-line traceback (EROFS). Now one line
    naming the root and what to do, exit 2, before the Dagster instance (which may live in the root) is touched."""
    import errno
    import os

    from seg_assets import refresh_cli

    root = one_settled_order(tmp_path)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only mount, as the tests do not run with mount rights
        if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(refresh_cli.os, "open", read_only)
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith(f"error cannot write the data root {root} (Read-only file system: {root / '.refresh.lock'})"), line
    assert "give it write access (landing/ alone may be read-only)" in line
    assert not (root / "dagster_home").exists() and not (root / "warehouse.duckdb").exists()


def _hold_then_die(data_dir, seconds: float):
    """A stand-in for a refresh that holds the data root's turn and a STARTED run writing the warehouse, then is
    SIGKILLed after ``seconds``: (its process, the run's id, the thread that kills it and releases the turn)."""
    import socket
    import threading
    import time
    import uuid

    import dagster as dg
    from dagster._core.storage.dagster_run import RunOpConcurrency
    from filelock import FileLock

    from seg_assets.automation.instance import HOST_TAG, PID_TAG, open_instance
    from seg_assets.settings import data_paths

    instance = open_instance(data_paths(data_dir))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    pools = RunOpConcurrency(root_key_counts={"duckdb": 1}, has_unconstrained_root_nodes=False, all_pools={"duckdb"})
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="refresh", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   run_op_concurrency=pools,
                                   tags={PID_TAG: str(holder.pid), HOST_TAG: socket.gethostname()}))
    turn = FileLock(str(data_dir / ".refresh.lock"), thread_local=False)
    turn.acquire()

    def die() -> None:
        time.sleep(seconds)
        holder.kill()  # SIGKILL: its run stays STARTED, its lock goes with it
        holder.wait()
        turn.release()

    return holder, run_id, threading.Thread(target=die, daemon=True)


def test_a_refresh_killed_while_another_waits_for_it_is_not_waited_for(data_dir, monkeypatch):
    """The second of two refreshes, waiting for the first's turn, then waited for the first's run after it was SIGKILLed:
    dead runs were marked failed only before the wait (a tester's waited 6 min of the hour it would have). Now the
    dead run is marked failed when the turn comes, and the refresh runs."""
    from seg_assets import cli

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(cli, "WAIT_FOR_RUNS_SECONDS", 20.0)
    from seg_assets import refresh_cli

    holder, run_id, killer = _hold_then_die(data_dir, 3.0)
    real_take_turn = refresh_cli._take_turn

    def take_turn(*args, **kwargs):  # the first dies once the second is past its first check of dead runs, waiting
        killer.start()
        return real_take_turn(*args, **kwargs)

    monkeypatch.setattr(refresh_cli, "_take_turn", take_turn)
    try:
        result = runner.invoke(app, ["refresh", "--no-summary"])
    finally:
        holder.kill()
    killer.join()
    flat = " ".join(result.output.split())
    assert "waiting for another seg-assets refresh of this data root to finish" in flat
    assert f"warning run {run_id} was left in progress by process {holder.pid}, which ended" in flat, flat
    assert "Refresh not started" not in flat and result.exit_code == 0, flat
    assert (data_dir / "warehouse.duckdb").exists()


def test_a_signal_while_waiting_for_the_turn_is_one_line(data_dir, monkeypatch):
    """SIGTERM (or Ctrl-C) while a refresh waited for another one printed a traceback of interrupts.interrupted()."""
    import signal
    import threading
    import time

    from filelock import FileLock

    from seg_assets import cli

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(cli, "WAIT_FOR_RUNS_SECONDS", 30.0)
    first = FileLock(str(data_dir / ".refresh.lock"), thread_local=False)
    first.acquire()
    sender = threading.Timer(3.0, lambda: signal.raise_signal(signal.SIGTERM))
    try:
        sender.start()
        start = time.monotonic()
        result = runner.invoke(app, ["refresh"])
    finally:
        sender.cancel()
        first.release()
    flat = " ".join(result.output.split())
    assert time.monotonic() - start < 20 and result.exit_code == 143, (result.exit_code, flat)
    assert "Traceback" not in result.output and "Refresh not started: interrupted (Ctrl-C or SIGTERM) while waiting" in flat
    assert not (data_dir / "warehouse.duckdb").exists()


def test_a_signal_after_the_run_ended_is_not_said_as_not_started(data_dir, monkeypatch):
    """A signal that lands after the run (the closing look at the warehouse checks for it) raised there, and the line
    said "Refresh not started ... while waiting for its turn" after a run that may have published (a reviewer's)."""
    from seg_assets import interrupts, refresh

    def run_then_signal(root, before_run, **_):
        before_run()  # the turn is taken: the run starts
        interrupts.received.append(2)  # Ctrl-C (SIGINT) as it ends, as interrupts._on_signal records it
        interrupts.STOP.set()
        raise interrupts.interrupted()

    monkeypatch.setenv("SEG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(refresh, "run_refresh", run_then_signal)
    result = runner.invoke(app, ["refresh"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 130 and "Traceback" not in result.output, (result.exit_code, flat)
    assert "Refresh not started" not in flat and "Refresh stopped: interrupted (Ctrl-C or SIGTERM) after its run ended" in flat
