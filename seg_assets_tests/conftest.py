"""Shared fixtures: small generated datasets (real files, real DuckDB, under pytest's tmp dirs)."""

import os
import shutil
from pathlib import Path

import duckdb
import pytest

# Tests write landing files and read them at once: no settling wait (the landing rule's own tests set it).
os.environ["SEG_SETTLE_SECONDS"] = "0"

from seg_assets.demo.generate import generate


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
    """One local Spark session for the whole test session (starting one takes 5-10 s): tests share it, and
    the engine resource's ``get_spark()`` in a materialization returns this same session."""
    from seg_assets.spark.session import get_spark

    session = get_spark()
    yield session
    session.stop()
