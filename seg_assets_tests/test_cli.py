"""The `seg-assets` command line, in-process through typer's runner, on real files."""

import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import pytest

from seg_assets import published_state
from seg_assets.cli import app
from seg_assets.settings import data_paths
from seg_assets_tests.cli_runner import runner


def test_a_change_of_code_or_as_of_makes_the_segments_not_current(tmp_path, monkeypatch):
    import duckdb

    from seg_assets.publish.bi import publish_tables

    paths = data_paths(tmp_path).ensure()
    with duckdb.connect() as con:  # a publication of no table: the views file and bi/current
        publish_tables(con, paths.bi, [])
    settings = published_state.settings_fingerprint({}, None)

    def record(files):  # as bi_segments records a publication: staged, then put in place
        published_state.commit_state(paths, published_state.stage_published_state(paths, files, "2026-10-31", settings))

    record([])
    assert published_state.nothing_new(paths, settings)
    assert published_state.nothing_new(paths, published_state.settings_fingerprint({}, "2026-10-01")) is None
    # a configuration file is input too: a new or changed sources.yaml or actions.yaml refreshes
    (paths.root / "actions.yaml").write_text("actions: {}\n")
    assert published_state.nothing_new(paths, settings) is None
    record([])
    assert published_state.nothing_new(paths, settings)
    # a file that failed is read again when it changes, not on every refresh (it would fail the same way)
    (paths.landing / "orders").mkdir(parents=True)
    (paths.landing / "orders" / "a.csv").write_text("x\n")
    assert published_state.nothing_new(paths, settings) is None
    record([["orders/a.csv", 2, True]])
    assert "1 file(s) not taken in (orders/a.csv) are read again" in published_state.nothing_new(paths, settings)
    # fixed without a change of size (chmod of an unreadable file, a rewrite at the same size): read again
    time.sleep(0.05)  # past the file system's timestamp tick
    os.chmod(paths.landing / "orders" / "a.csv", 0o600)
    assert published_state.nothing_new(paths, settings) is None
    record([["orders/a.csv", 2, True]])
    assert published_state.nothing_new(paths, settings)
    (paths.landing / "orders" / "a.csv").write_text("x,y\n")
    assert published_state.nothing_new(paths, settings) is None
    monkeypatch.setattr(published_state, "code_fingerprint", lambda: "other code")
    assert published_state.nothing_new(paths, settings) is None


def test_strict_exits_3_while_a_landing_file_is_not_taken_in(tmp_path, monkeypatch):
    """A good delivery and one unconverted file: published, exit 0 by default (the file named), 3 with --strict, also
    when nothing changed since (the file still waits for a fix); cron and CI can tell."""
    from seg_assets.demo.generate import generate

    root = tmp_path / "data"
    generate(root, users=60, days=60, seed=3)
    (root / "landing" / "orders" / "export.csv").write_text("customer,date,qty,amount\n1,19970101,1,29.33\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    strict = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert strict.exit_code == 3, strict.output
    assert "Refresh done" in strict.output and "orders/export.csv: rejected file" in strict.output
    again = runner.invoke(app, ["refresh", "--no-summary"])
    assert again.exit_code == 0 and "Segments are current" in again.output and "(orders/export.csv)" in again.output
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3
    # a file no source reads counts too (a link out of landing/), named, also when the segments are current
    (root / "landing" / "orders" / "export.csv").unlink()
    (root / "landing" / "orders" / "passwd.csv").symlink_to("/etc/passwd")
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    linked = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert linked.exit_code == 3 and "not read landing/orders/passwd.csv: a link out of the landing folder" in linked.output
    # a refresh that runs names it in its closing line too, with the files not taken in (it was only in a warning)
    shutil.copy(next((root / "landing" / "orders").glob("*.parquet")), root / "landing" / "orders" / "again.parquet")
    ran = runner.invoke(app, ["refresh", "--no-summary"])
    [closing] = [line for line in ran.output.splitlines() if line.startswith("Refresh done")]
    assert "orders/passwd.csv: a link out of the landing folder" in closing, ran.output
    # a file read but every row of it rejected is not taken in either, on the next runs too (it was forgotten there)
    (root / "landing" / "orders" / "passwd.csv").unlink()
    (root / "landing" / "orders" / "bad_rows.csv").write_text(
        "order_id,user_id,order_ts,amount,items,category,discount,status\n"
        "x1,u1,2026-01-01T10:00:00Z,-5.00,1,books,,completed\nx2,u1,2026-01-01T11:00:00Z,-1.00,1,books,,completed\n")
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3
    again = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert again.exit_code == 3 and "Segments are current" in again.output and "(orders/bad_rows.csv)" in again.output
    (root / "landing" / "orders" / "sheet.xlsx").write_bytes(b"PK")  # named beside the failed file (it was not)
    again = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert again.exit_code == 3 and "not read landing/orders/sheet.xlsx" in again.output, again.output


def test_an_empty_data_root_has_nothing_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "Nothing to do: no landing files under" in said and "does not exist" in said
    assert f"seg-assets generate {tmp_path / 'data'}" in said  # the command to run, whole
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()


def test_a_landing_folder_of_files_no_source_reads_is_not_empty(tmp_path, monkeypatch):
    """A tab-separated export named .tsv and a folder no source reads: "Nothing to do: no landing files", exit 0 even
    with --strict. Each file is named; --strict exits 3; no warehouse is made."""
    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "export.tsv").write_text("order_id\tuser_id\no1\tu1\n")
    (root / "landing" / "ordres").mkdir()
    (root / "landing" / "ordres" / "a.csv").write_text("order_id,user_id\no1,u1\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    plain = runner.invoke(app, ["refresh"])
    assert plain.exit_code == 0 and "Nothing read: 2 file(s)" in plain.output and "Nothing to do" not in plain.output
    assert "not read landing/orders/export.tsv" in plain.output and "not read landing/ordres/a.csv" in plain.output
    assert runner.invoke(app, ["refresh", "--strict"]).exit_code == 3
    assert not (root / "warehouse.duckdb").exists()


def test_a_file_written_slowly_during_a_refresh_is_not_read_half_written(tmp_path, monkeypatch):
    """The landing rule in the CLI's run: a file still growing is waited for (size and mtime quiet for
    SEG_SETTLE_SECONDS), then read whole; nothing of it is read while it is being written."""
    import threading
    import time

    import duckdb

    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "300", "--days", "20", "--seed", "4",
                               "--format", "csv", "--no-clicks"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "1.5")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    slow = root / "landing" / "orders" / "slow.csv"
    rows = [f"slow{i},u{i % 50},2026-10-30T10:00:00Z,12.50,1,books,,completed" for i in range(40)]

    def writer():
        with open(slow, "w") as handle:
            handle.write("order_id,user_id,order_ts,amount,items,category,discount,status\n")
            for i in range(0, 40, 5):
                handle.write("\n".join(rows[i:i + 5]) + "\n")
                handle.flush()
                time.sleep(0.4)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    result = runner.invoke(app, ["refresh"])
    thread.join()
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    ledger = con.sql("SELECT delivered, accepted FROM meta.ingest_ledger WHERE file_name = 'orders/slow.csv'").fetchall()
    con.close()
    assert ledger == [(40, 40)]


def test_a_file_whose_writer_pauses_mid_line_is_not_read_until_it_is_whole(tmp_path, monkeypatch):
    """A writer paused longer than the settle time in the middle of a line (a value cut short: '131.52' would be
    read as '13'), or at a line end with the file still open (a tester's: 788 of 2,365 rows read): not read; read
    whole once finished."""
    import duckdb

    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "300", "--days", "20", "--seed", "4",
                               "--format", "csv", "--no-clicks", "--no-reviews"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "1")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    slow = root / "landing" / "orders" / "slow.csv"
    text = "order_id,user_id,order_ts,status,items,category,discount,amount\n" + "".join(
        f"slow{i},u{i % 50},2026-10-30T10:00:00Z,completed,1,books,,131.52\n" for i in range(40))
    cut = text.index("131.52", len(text) // 2) + 2
    slow.write_text(text[:cut])  # ... ,13 and the writer pauses for the whole refresh
    paused = root / "landing" / "orders" / "paused.csv"
    lines = text.replace("slow", "paused")
    half = lines.index("\n", len(lines) // 2) + 1
    writer = paused.open("w")  # whole lines so far, and the writer still at it
    writer.write(lines[:half])
    writer.flush()
    first = runner.invoke(app, ["refresh", "--strict"])  # published without them; named, and not taken in for --strict
    [closing] = [line for line in first.output.splitlines() if line.startswith("Refresh done")]
    assert first.exit_code == 3 and "orders/slow.csv: left to the next run: its last line has no end yet" in closing, first.output
    assert "orders/paused.csv: left to the next run: open for writing by process" in closing, first.output
    writer.write(lines[half:])
    writer.close()
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM meta.ingest_ledger WHERE file_name = 'orders/slow.csv'").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM raw.orders WHERE order_id LIKE 'slow%'").fetchall() == [(0,)]
    slow.write_text(text)
    second = runner.invoke(app, ["refresh"])
    assert second.exit_code == 0, second.output
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT delivered, accepted FROM meta.ingest_ledger WHERE file_name IN ('orders/slow.csv', "
                       "'orders/paused.csv')").fetchall() == [(40, 40)] * 2
        amounts = con.sql("SELECT min(amount)::DOUBLE, max(amount)::DOUBLE FROM raw.orders WHERE order_id LIKE 'slow%'")
        assert amounts.fetchall() == [(131.52, 131.52)]


def test_a_process_holding_the_warehouse_open_fails_the_refresh_soon_in_one_line(tmp_path, monkeypatch):
    """A notebook holding warehouse.duckdb (read-only) made a refresh wait 7 minutes in silence (DuckDB's backoff x
    step retries), then print a traceback. Now: about 20 s, one line naming the holder and what to do, exit 1."""
    import os
    import time

    import duckdb

    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    landed = root / "landing" / "orders" / "a.csv"
    landed.write_text("order_id,user_id,order_ts,amount,items,category,discount,status\n"
                      "o1,u1,2026-03-01T10:00:00Z,10.00,1,books,,completed\n")
    os.utime(landed, (time.time() - 60, time.time() - 60))  # settled
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


def test_a_landed_file_rewritten_under_its_name_is_named(tmp_path, monkeypatch):
    """Read again with its known ids kept as first taken in: the only trace was the ledger's message."""
    root = tmp_path / "data"
    assert runner.invoke(app, ["generate", str(root), "--users", "60", "--days", "30", "--seed", "5", "--format", "csv",
                               "--no-reviews", "--no-lines"]).exit_code == 0
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    orders = sorted((root / "landing" / "orders").glob("*.csv"))[0]
    orders.write_text("".join(orders.read_text().splitlines(keepends=True)[:5]))  # cut: other content, other size
    again = runner.invoke(app, ["refresh", "--no-summary"])
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and f"orders/{orders.name}: was taken in before with other content" in said, again.output


def test_strict_counts_a_file_an_earlier_refresh_could_not_take_in(tmp_path, monkeypatch):
    """A rejected file, then a good delivery: the refresh that took the good one in exited 0 under --strict, the one
    before and after (segments current) 3, for the same landing folder."""
    from seg_assets.demo.generate import generate

    root = tmp_path / "data"
    generate(root, users=60, days=60, seed=3, with_reviews=False, with_lines=False)
    (root / "landing" / "orders" / "export.csv").write_text("customer,date,qty,amount\n1,19970101,1,29.33\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert runner.invoke(app, ["refresh", "--no-summary"]).exit_code == 0
    good = (root / "landing" / "orders" / "late.csv")
    good.write_text("order_id,user_id,order_ts,amount,items,status\nlate1,u000001,2026-10-30T10:00:00Z,10,1,completed\n")
    strict = runner.invoke(app, ["refresh", "--no-summary", "--strict"])
    assert strict.exit_code == 3 and "not taken in landing/orders/export.csv" in strict.output, strict.output
    assert runner.invoke(app, ["refresh", "--no-summary", "--strict"]).exit_code == 3  # current: as before
