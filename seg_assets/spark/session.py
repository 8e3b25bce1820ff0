"""The Spark session, started once per process (one run: the code location uses the in-process executor).

Minimal version for the scoring work; the engine setting (CLI flag, env) is wired in resources.py.
pyspark is imported inside the functions only, so the code location loads without starting a JVM.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Literal

import dagster as dg

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",  # local mode: a few partitions, not 200
}


def get_spark(master: str = "local[2]", conf: dict[str, str] | None = None) -> SparkSession:
    """The process's SparkSession (built on first call, then reused: ``getOrCreate``)."""
    from pyspark.sql import SparkSession

    if master.startswith("local"):  # local workers must run this interpreter (pyarrow, sklearn, seg_assets)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName("seg-assets")
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class Engine(dg.ConfigurableResource):
    """Which engine runs the heavy steps: ``duckdb`` (default) or ``spark`` (``master`` local or a cluster)."""

    kind: Literal["duckdb", "spark"] = "duckdb"
    master: str = "local[2]"
    conf: dict[str, str] = {}

    def spark(self) -> SparkSession:
        return get_spark(self.master, self.conf)

    @property
    def is_spark(self) -> bool:
        return self.kind == "spark"
