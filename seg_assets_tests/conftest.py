"""Shared fixtures: small generated datasets (real files, real DuckDB, under pytest's tmp dirs)."""

import os
import shutil
from pathlib import Path

import duckdb
import pytest

# Tests write landing files and read them at once: no settling wait (the landing rule's own tests set it).
os.environ["SEG_SETTLE_SECONDS"] = "0"

from seg_assets import interrupts
from seg_assets.demo.generate import generate


@pytest.fixture(autouse=True)
def _no_signal_left_set():
    """A test that signals its own process (a refresh stopped by SIGTERM while it waits) leaves ``interrupts.STOP``
    set for the caller to read; cleared after each test, or every later test of that worker is "interrupted"."""
    yield
    interrupts.STOP.clear()
    interrupts.received.clear()


@pytest.fixture(scope="session")
def small_landing(tmp_path_factory):
    """3,000 users x 60 days, generated once per session; copy it before mutating (see `data_dir`)."""
    root = tmp_path_factory.mktemp("small_landing")
    generate(root, users=3_000, days=60, seed=5)
    return root


@pytest.fixture()
def data_dir(small_landing, tmp_path):
    """A fresh SEG_DATA_DIR holding a copy of the small dataset's landing files and truth."""
    root = tmp_path / "data"
    shutil.copytree(small_landing, root)
    return root


@pytest.fixture(scope="session")
def refreshed_template(small_landing, tmp_path_factory):
    """The small dataset after one default refresh (`run_refresh`), built once per worker: most pipeline tests start
    there, and a refresh is 7-10 s of a suite that must stay under CI's 15 minutes. Copy it (see `refreshed`)."""
    from seg_assets.refresh import run_refresh

    root = tmp_path_factory.mktemp("refreshed") / "data"
    shutil.copytree(small_landing, root)
    outcome = run_refresh(root)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    return root


@pytest.fixture()
def refreshed(refreshed_template, tmp_path):
    """A fresh SEG_DATA_DIR as `data_dir` after one default refresh: warehouse, models, BI and state copied (BI's
    links are relative; its views read the template's folder until this copy publishes again)."""
    root = tmp_path / "data"
    shutil.copytree(refreshed_template, root, symlinks=True)
    return root


@pytest.fixture
def con(tmp_path):
    """A warehouse file of its own (ingestion tests)."""
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


@pytest.fixture
def landing(tmp_path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole test session (it takes ~5 s to start): every Spark test and every
    ``--engine spark`` refresh in this process uses it (the Engine resource stops only a session it started).
    Under `make test`'s workers all Spark modules run on one worker (`pytest_xdist_make_scheduler` below)."""
    from seg_assets.spark.session import get_spark

    session = get_spark("local[2]")
    yield session
    session.stop()



def _module_has_a_slow_test(items: list[pytest.Item]) -> set[str]:
    return {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with a slow test first (each module kept in one piece, so its module fixtures are built once), so that
    under `make test`'s workers the long ones start at once instead of ending the run on one worker."""
    slow = _module_has_a_slow_test(items)
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`pytest -n 2 --dist loadscope` (make test): whole modules per worker (a module fixture is built once, not on
    every worker), and all `test_spark_*.py` modules on one worker (one Spark JVM per run, not one per worker).
    pytest-xdist's own `xdist_group` marks do not work with pytest 9 (they rename node ids through a private field)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return "spark" if Path(module).name.startswith("test_spark_") else module

    return ModuleScheduling(config, log)
