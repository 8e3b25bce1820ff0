"""The `seg-assets` command line, in-process through typer's runner, on real files."""

import shutil
import subprocess
import sys

from typer.testing import CliRunner

from seg_assets.cli import app
from seg_assets_tests.fresh_python import python_stdout

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "refresh", "init-dagster-home"):
        assert command in result.output


def test_generate_refresh_then_nothing_new_then_new_file(tmp_path, monkeypatch):
    root = tmp_path / "data"
    result = runner.invoke(app, ["generate", str(root), "--users", "1500", "--days", "45", "--seed", "2", "--format", "csv"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("SEG_DATA_DIR", str(root))

    first = runner.invoke(app, ["refresh"])
    assert first.exit_code == 0, first.output
    assert "Segments" in first.output and "Refresh done" in first.output

    again = runner.invoke(app, ["refresh"])
    assert again.exit_code == 0 and "Segments are current" in again.output

    # A re-delivered file under a new name is new to the folder: the refresh runs, and adds no rows.
    orders = sorted((root / "landing" / "orders").iterdir())[0]
    shutil.copy(orders, orders.with_name("resent_" + orders.name))
    third = runner.invoke(app, ["refresh"])
    assert third.exit_code == 0 and "Refresh done" in third.output, third.output
    assert "Segments are current" in runner.invoke(app, ["refresh"]).output


def test_refresh_reports_failure_with_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "empty"))
    result = runner.invoke(app, ["refresh"])  # no landing files: nothing to segment
    assert result.exit_code == 1
    assert "Refresh failed" in result.output


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
    """scikit-learn, SciPy, matplotlib, pandas and GE are imported by the steps that use them (or beside
    ingestion, or in the validation process), not when Dagster (webserver, daemon, CLI) loads the definitions."""
    code = ("import sys, seg_assets.definitions as d; d.defs; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sklearn', 'scipy', 'matplotlib', 'pandas', 'great_expectations'}))")
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
