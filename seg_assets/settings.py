"""Where seg-assets reads and writes.

Everything the project writes lives under one folder, ``SEG_DATA_DIR`` (default ``./data``), so a
test, a benchmark or a demo can point the whole platform at a temporary folder with one variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "SEG_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
SETTLE_ENV = "SEG_SETTLE_SECONDS"
DEFAULT_SETTLE_SECONDS = 5.0
MEMORY_LIMIT_ENV = "SEG_DUCKDB_MEMORY_LIMIT"
_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)
_MIB = {"KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024**2}  # near enough to tell a usable size (KiB: the same keys)
MAX_DAYS = 36_500  # a day count in a setting: 100 years; past it a typo overflows Python's and DuckDB's dates mid-run

# The SQL models (features/sql_files.py reads them); here, without Dagster, for the published state's code fingerprint.
SQL_DIR_ENV = "SEG_SQL_DIR"
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[1] / "dbt_like_sql"
WAREHOUSE_FILE = "warehouse.duckdb"  # its stem is the catalog name a connection to it reads tables under


def sql_dir() -> Path:
    return Path(os.environ.get(SQL_DIR_ENV) or DEFAULT_SQL_DIR)


@dataclass(frozen=True)
class DataPaths:
    """The layout of a data root. Only paths; nothing is created until asked."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def landing_for(self, table: str) -> Path:
        return self.landing / table

    @property
    def warehouse(self) -> Path:
        """The DuckDB file all assets write to (one writer at a time)."""
        return self.root / WAREHOUSE_FILE

    @property
    def models(self) -> Path:
        """Versioned model artifacts (segment models, classifiers)."""
        return self.root / "models"

    @property
    def bi(self) -> Path:
        """The read-only copy BI tools open; replaced atomically after each refresh."""
        return self.root / "bi"

    @property
    def spark(self) -> Path:
        """The Spark engine's tables: Parquet folders ``spark/<schema>/<table>/`` (DuckDB reads them through views)."""
        return self.root / "spark"

    def spark_table(self, qualified: str) -> Path:
        schema, name = qualified.split(".", 1)
        return self.spark / schema / name

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def truth(self) -> Path:
        """Ground truth written by the demo generator (never read by the pipeline)."""
        return self.root / "truth"

    @property
    def sentiment_lexicons(self) -> Path:
        """Optional review-sentiment lexicons, one ``<language>.txt`` each (reviews/sentiment.py)."""
        return self.root / "sentiment"

    def ensure(self) -> DataPaths:
        for folder in (self.root, self.models, self.bi, self.landing):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def settle_seconds() -> float:
    """How long a landing file's size and mtime must stay unchanged before it is read (the landing rule)."""
    text = (os.environ.get(SETTLE_ENV) or "").strip()
    try:
        value = float(text) if text else DEFAULT_SETTLE_SECONDS
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 86_400:  # nan too
        from seg_assets.errors import InputError

        raise InputError(f"{SETTLE_ENV}={text!r} is not a number of seconds from 0 to 86400 (a day), e.g. 5")
    return value


def duckdb_memory_limit() -> str | None:
    """DuckDB's memory limit for the warehouse connections (``SEG_DUCKDB_MEMORY_LIMIT``, e.g. ``4GB``); None: DuckDB's
    default, 80 % of RAM. Past the limit DuckDB spills sorts, joins and temp tables to disk instead of growing."""
    value = (os.environ.get(MEMORY_LIMIT_ENV) or "").strip()
    if not value:
        return None
    size = _SIZE.fullmatch(value)
    mib = float(size.group(0)[: size.start(2) - size.start(0)]) * _MIB[size.group(2).upper().replace("I", "")] if size else 0
    if not 64 <= mib <= 1 << 30:  # DuckDB cannot work below tens of MB, and refuses a size past its range mid-run
        from seg_assets.errors import InputError

        raise InputError(f"{MEMORY_LIMIT_ENV}={value!r} is not a size from 64MB to 1PB: give a number and a unit, e.g. "
                         "4GB or 1500MB")
    return value


def data_dir() -> Path:
    """The data root from ``SEG_DATA_DIR``, resolved to an absolute path."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()


def data_paths(root: str | os.PathLike | None = None) -> DataPaths:
    return DataPaths(Path(root).expanduser().resolve() if root is not None else data_dir())
