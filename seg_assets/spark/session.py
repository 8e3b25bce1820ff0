"""The Spark session as a Dagster resource, and the engine setting (``duckdb`` or ``spark``).

Why a resource in the run's process and not Dagster Pipes: the code location runs every step of a run in one
process (``dg.in_process_executor``), so one lazily built SparkSession serves every Spark step of the run
(a session starts in about 5 s locally). Pipes would start a session per asset in a subprocess, or force the
Spark work into one opaque asset; the in-process resource keeps the asset graph, the logs and the metadata
of the DuckDB path. ``master`` points the session at a cluster (``spark://...``, ``yarn``, ``k8s://...``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINE_ENV = "SEG_ENGINE"
SPARK_MASTER_ENV = "SEG_SPARK_MASTER"
ENGINES = ("duckdb", "spark")

# Local mode on a small machine: few shuffle partitions (the default 200 costs seconds of task overhead on
# thousands of users), no UI, UTC everywhere (timestamps are naive UTC, as in the warehouse).
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "2g",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}

_LOCK = threading.Lock()
_OWNED: list = []  # the session an Engine resource started (stopped at process exit); not a test's session


def get_spark(master: str = "local[2]", conf: dict[str, str] | None = None) -> SparkSession:
    """The process's SparkSession (built once; ``getOrCreate`` returns the running one to later callers)."""
    from pyspark.sql import SparkSession

    with _LOCK:
        builder = SparkSession.builder.master(master).appName("seg-assets")
        # Python workers run this interpreter (polars, the project's maths; SparkContext reads PYSPARK_PYTHON, not
        # spark.pyspark.python, which only spark-submit reads). On a cluster: ship the same environment.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
            builder = builder.config(key, value)
        with _utf8_locale():
            spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        quiet_query_context_loggers()
        return spark


# pyspark 4 logs every AnalysisException it converts, when it is made, at ERROR as one JSON line to stderr with the
# whole plan (about 50 KB per failed query, again on every retry): the exception itself is what the step reports.
QUERY_CONTEXT_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def quiet_query_context_loggers() -> None:
    """Silence pyspark's loggers of failed queries (the exception carries the message; the step says it)."""
    import logging

    from pyspark.logger import PySparkLogger

    for name in QUERY_CONTEXT_LOGGERS:
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def _utf8_locale():
    """The JVM names files in its locale's encoding: under ``LC_ALL=C`` (cron, a bare container) a data root
    ``münchen`` was a path that "does not exist". The local JVM is started with a UTF-8 locale instead."""
    import locale

    if locale.nl_langinfo(locale.CODESET).replace("-", "").upper() == "UTF8":
        yield
        return
    saved = {k: os.environ.get(k) for k in ("LC_ALL", "LC_CTYPE")}
    os.environ["LC_ALL"] = os.environ["LC_CTYPE"] = "C.UTF-8"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def engine_from_env() -> str:
    """``SEG_ENGINE`` (for ``make ui`` and the schedule's runs): duckdb unless it says spark."""
    kind = (os.environ.get(ENGINE_ENV) or "duckdb").strip().lower()
    if kind not in ENGINES:
        raise ValueError(f"{ENGINE_ENV}={kind!r}: the engine is 'duckdb' or 'spark'")
    return kind


def spark_master() -> str:
    """``SEG_SPARK_MASTER`` (a cluster's master URL), else two local cores."""
    return os.environ.get(SPARK_MASTER_ENV) or "local[2]"


class Engine(dg.ConfigurableResource):
    """Where the heavy steps run: ``duckdb`` (the default, one machine) or ``spark`` (local mode or a cluster).

    DuckDB stays the ledger, the metadata store and what BI reads in both; with ``spark``, ingestion writes
    raw Parquet, the SQL models and ``user_features`` run on Spark over Parquet under ``$SEG_DATA_DIR/spark``,
    and DuckDB reads the results through views.
    """

    kind: Literal["duckdb", "spark"] = Field(default="duckdb", description="duckdb or spark.")
    master: str = Field(default="local[2]", description="spark.master: local[N], spark://host:7077, yarn, k8s://...")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings laid over the defaults.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from seg_assets.resources import refuse_deployment_config  # (resources.py imports this module)

        refuse_deployment_config(context, "engine", self)

    @property
    def is_spark(self) -> bool:
        return self.kind == "spark"

    def spark(self) -> SparkSession:
        """The process's session, started on first use (a run without Spark work starts no JVM) and stopped when
        the process ends (a CLI refresh, or the run worker of ``dagster dev``: one run, one session). Not a
        resource teardown: that would make this a context-manager resource, which sensors and schedules
        evaluated outside a ``with`` block cannot build."""
        from pyspark import SparkContext

        if not self.is_spark:
            raise RuntimeError("the engine is duckdb: no Spark session (set --engine spark or SEG_ENGINE=spark)")
        running = SparkContext._active_spark_context  # any thread's: a test session's fixture, say
        try:
            spark = get_spark(self.master, self.conf)
        except Exception as exc:
            if _condition(exc) != "JAVA_GATEWAY_EXITED":
                raise
            from seg_assets.errors import input_failure

            # the machine's Java, not a bug: it was "unexpected: please report it", with a traceback, retried (h2)
            raise input_failure(f"Spark could not start ({str(exc).splitlines()[0]}): pyspark 4 needs Java 17 or later "
                                "(`java -version`, JAVA_HOME); or use --engine duckdb") from None
        if running is None and not _OWNED:
            _OWNED.append(spark)
            atexit.register(_stop_owned)
        return spark


def _condition(exc: BaseException) -> str | None:
    """A pyspark error's class (``JAVA_GATEWAY_EXITED``), None for any other exception."""
    get = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    return get() if callable(get) else None


def _stop_owned() -> None:
    while _OWNED:
        _OWNED.pop().stop()
