"""The `seg-assets` commands themselves, in-process through typer's runner and as the installed entry point: help,
generate and its refusals, a first refresh end to end then "Segments are current", the console entry point's exit
codes and output, and what loading the code location imports."""

import shutil
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from seg_assets.cli import app
from seg_assets_tests.cli_runner import runner
from seg_assets_tests.fresh_python import python_stdout
from seg_assets_tests.warehouse_read import read_warehouse


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "refresh", "init-dagster-home"):
        assert command in result.output


@pytest.mark.slow
def test_generate_refresh_then_nothing_new_then_new_file(tmp_path, monkeypatch):
    root = tmp_path / "data"
    result = runner.invoke(app, ["generate", str(root), "--users", "1500", "--days", "45", "--seed", "2", "--format", "csv",
                                 "--devices"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    first = runner.invoke(app, ["refresh"])
    assert first.exit_code == 0, first.output
    assert "Segments" in first.output and "Refresh done" in first.output
    assert "Segment model v0001 in service (" in first.output and "no model in service" in first.output
    _devices_are_their_customers(root, first.output)

    # The run is in the instance `make ui` uses, as the `refresh` job, with its materializations.
    instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    [run] = instance.get_runs()
    assert run.job_name == "refresh" and run.status == dg.DagsterRunStatus.SUCCESS
    assert instance.get_latest_materialization_event(dg.AssetKey(["bi", "segments"])).run_id == run.run_id

    again = runner.invoke(app, ["refresh"])
    assert again.exit_code == 0 and "Segments are current" in again.output

    # A setting is part of what was published: a new value refreshes, the same value again does not.
    setting = ["refresh", "--set", "raw_contracts.sample_rows=10000"]
    changed = runner.invoke(app, setting)
    assert changed.exit_code == 0 and "Refresh done" in changed.output, changed.output
    assert "Segments are current" in runner.invoke(app, setting).output
    assert len(instance.get_runs()) == 2

    # A re-delivered file under a new name is new to the folder: the refresh runs, and adds no rows.
    orders = sorted((root / "landing" / "orders").iterdir())[0]
    shutil.copy(orders, orders.with_name("resent_" + orders.name))
    third = runner.invoke(app, setting)
    assert third.exit_code == 0 and "Refresh done" in third.output, third.output
    assert "Segments are current" in runner.invoke(app, setting).output


def _devices_are_their_customers(root, output: str) -> None:
    """The generator's devices (--devices, truth/devices.parquet): a device a login links is its customer's, counted
    here from the landing files; the others stay users of their own."""
    truth = pl.read_parquet(root / "truth" / "devices.parquet")
    linked = truth.filter("logs_in")
    assert 0 < linked.height < truth.height
    assert f"Identities: {linked.height:,} of {truth.height:,} click devices linked" in output
    owner_of = dict(zip(linked["anonymous_id"], linked["user_id"]))
    clicks = pl.scan_csv(str(root / "landing" / "clicks" / "*.csv")).select("user_id", "anonymous_id", "session_id").collect()
    anonymous = clicks["user_id"] == clicks["anonymous_id"]
    assert 0 < anonymous.sum() < clicks.height
    owner = [owner_of.get(d, d) if a else u for u, d, a in zip(clicks["user_id"], clicks["anonymous_id"], anonymous)]
    expected = clicks.with_columns(owner=pl.Series(owner)).group_by("owner").agg(pl.col("session_id").n_unique())
    features = read_warehouse(root, "SELECT user_id, sessions FROM features.user_features WHERE sessions > 0")
    assert set(features.iter_rows()) == set(expected.iter_rows())
    segmented = read_warehouse(root, "SELECT user_id FROM analytics.user_segments")["user_id"]
    assert not segmented.is_in(linked["anonymous_id"]).any()


def _console(*args: str) -> "subprocess.CompletedProcess[str]":
    """The installed entry point's code path (``seg_assets.cli:main``) in a fresh interpreter."""
    code = "import sys; from seg_assets.cli import main; sys.argv = ['seg-assets', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_the_console_entry_point_keeps_exit_codes_and_output(tmp_path):
    """main() ends the process without Python's module teardown: output still arrives, codes still say what happened."""
    ok = _console("init-dagster-home", str(tmp_path / "home"))
    assert ok.returncode == 0 and "DAGSTER_HOME ready" in ok.stdout
    assert (tmp_path / "home" / "dagster.yaml").exists()
    bad = _console("generate", str(tmp_path / "x"), "--format", "xml")
    assert bad.returncode == 2 and "--format must be csv or parquet" in bad.stderr
    assert _console("no-such-command").returncode == 2


def test_loading_the_code_location_does_not_import_the_heavy_libraries():
    """scikit-learn, SciPy, matplotlib, pandas, GE and pyspark are imported by the steps that use them (or beside
    ingestion), not when Dagster (webserver, daemon, CLI) loads the definitions."""
    code = ("import sys, seg_assets.definitions as d; d.defs; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sklearn', 'scipy', 'matplotlib', 'pandas', 'great_expectations', 'pyspark'}))")
    assert python_stdout(code).strip() == "[]"


def test_ingestion_preloads_scikit_learn_in_a_background_thread():
    """The model steps unpickle scikit-learn objects; ingestion starts importing it beside DuckDB's work."""
    code = ("import sys, threading\n"
            "from seg_assets.artifacts import preload_model_libraries\n"
            "preload_model_libraries(); preload_model_libraries()\n"
            "threads = [t for t in threading.enumerate() if t.name == 'preload-scikit-learn']\n"
            "[t.join() for t in threads]\n"
            "print(len(threads), 'sklearn.ensemble' in sys.modules)\n")
    assert python_stdout(code).split() == ["1", "True"]


def test_generate_with_faults_says_it_writes_no_lines_or_reviews(tmp_path):
    result = runner.invoke(app, ["generate", str(tmp_path / "d"), "--users", "200", "--days", "20", "--fault-rate", "0.02",
                                 "--devices"])
    assert result.exit_code == 0 and "no order lines, reviews or devices are written" in result.output
    assert not (tmp_path / "d" / "landing" / "order_items").exists()
    assert not (tmp_path / "d" / "truth" / "devices.parquet").exists()


@pytest.mark.parametrize("args, words", [
    (["--users", "0"], "users and days must be >= 1"), (["--fault-rate", "1.5"], "rates and shares must be in [0, 1)"),
    (["--end", "notadate"], "is no ISO-8601 timestamp"),
])
def test_generate_refuses_bad_numbers_in_one_line(tmp_path, args, words):
    """They were 40-line tracebacks (exit 1)."""
    result = runner.invoke(app, ["generate", str(tmp_path / "d"), *args])
    assert result.exit_code == 2 and words in " ".join(result.output.split()) and "Traceback" not in result.output, result.output
