"""Scoring every user on Spark with the same per-batch functions the DuckDB path calls.

Fit small, score everywhere: the models are fitted in Python on a sample (as with DuckDB); the scoring
of each user runs where the features are, as ``mapInArrow`` over the features' Parquet: each Arrow batch
becomes a polars frame, goes through :func:`seg_assets.segmentation.batch.score_segments` or
:func:`seg_assets.churn.scoring.score_churn` with the fitted scorer (models, thresholds, the population's
RFM and value cuts) broadcast once per executor, and comes back as Arrow. The same function on the same
rows gives the same results on both engines (docs/spark.md, "Scoring").

Layout under the Spark root (``$SEG_DATA_DIR/spark``): the features at ``features/user_features/``; per
scored table ``scoring/<table>/selection.parquet`` (the users to score, written by DuckDB with what
the warehouse knows of them: kept and previous segment, churn scores) and ``scoring/<table>/scored/``
(Spark's output, loaded into the DuckDB table, which BI's copy is made from as with DuckDB).
pyspark is imported inside the functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from seg_assets.errors import input_failure
from seg_assets.features.user_features import USER_FEATURES_TABLE
from seg_assets.settings import data_paths
from seg_assets.spark.tables import read_path
from seg_assets.warehouse import read_parquet_sql, sql_string

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from seg_assets.churn.scoring import ChurnScorer
    from seg_assets.segmentation.batch import SegmentScorer


def features_dir(data_root: str | Path) -> Path:
    """Where the Spark engine keeps ``features.user_features`` (Parquet; the layout is DataPaths.spark_table's)."""
    return data_paths(data_root).spark_table(USER_FEATURES_TABLE)


def work_dir(data_root: str | Path, table: str) -> Path:
    """``scoring/<table>``: the selection DuckDB hands to Spark and Spark's scored rows."""
    return data_paths(data_root).spark / "scoring" / table.split(".")[-1]


def _types(dtype: pl.DataType) -> tuple[Any, Any]:
    """(Spark type, Arrow type) of a polars output column: the output schemas are declared once, in polars."""
    import pyarrow as pa
    from pyspark.sql import types as T

    table = {pl.String: (T.StringType(), pa.string()), pl.Float64: (T.DoubleType(), pa.float64()),
             pl.Int64: (T.LongType(), pa.int64()), pl.Int32: (T.IntegerType(), pa.int32()),
             pl.Int8: (T.ByteType(), pa.int8()), pl.Boolean: (T.BooleanType(), pa.bool_())}
    if dtype == pl.Datetime("us"):  # naive UTC, as the warehouse stores it
        return T.TimestampNTZType(), pa.timestamp("us")
    return table[dtype]


def spark_schema(schema: dict[str, pl.DataType]):
    from pyspark.sql import types as T

    return T.StructType([T.StructField(name, _types(dtype)[0], True) for name, dtype in schema.items()])


def _naive_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Spark's session-zoned timestamps arrive as UTC-aware: make them naive UTC, as the warehouse's."""
    aware = [c for c, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone is not None]
    return frame.with_columns([pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None) for c in aware])


def map_batches(spark: SparkSession, frame: DataFrame, fn: Callable[[pl.DataFrame, Any], pl.DataFrame], scorer: Any,
                schema: dict[str, pl.DataType]) -> DataFrame:
    """``frame.mapInArrow``: every Arrow batch through ``fn(batch, scorer)``, ``scorer`` broadcast once."""
    import pyarrow as pa

    shared = spark.sparkContext.broadcast(scorer)
    target = pa.schema([(name, _types(dtype)[1]) for name, dtype in schema.items()])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fitted = shared.value
        for batch in batches:
            out = fn(_naive_utc(pl.from_arrow(batch)), fitted)
            yield from out.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(target).to_batches()

    return frame.mapInArrow(run, spark_schema(schema))


def score_on_spark(spark: SparkSession, features: Path, selection: Path | None, fn, scorer: Any,
                   schema: dict[str, pl.DataType], out_dir: Path) -> Path:
    """Score the users of ``selection`` (every user of ``features`` when None), joined to their features;
    write the rows to ``out_dir`` (Parquet, replaced)."""
    frame = spark.read.parquet(read_path(features))
    if selection is not None:
        frame = frame.join(spark.read.parquet(read_path(selection)), on="user_id", how="inner")
    map_batches(spark, frame, fn, scorer, schema).write.mode("overwrite").parquet(str(out_dir))
    return out_dir


def score_users_spark(spark: SparkSession, features: Path, previous_segments: Path, scorer: SegmentScorer,
                      out_dir: Path) -> Path:
    """``analytics.user_segments`` rows on Spark for the users of ``previous_segments`` (a Parquet selection:
    user_id, kept_id, kept_confidence, previous_id and the churn columns, see segmentation/batch.py)."""
    from seg_assets.segmentation.batch import OUTPUT, score_segments  # here: the stages import this module

    return score_on_spark(spark, features, previous_segments, score_segments, scorer, OUTPUT, out_dir)


def churn_scores_spark(spark: SparkSession, features: Path, pending: Path | None, scorer: ChurnScorer,
                       out_dir: Path) -> Path:
    """``analytics.churn_scores`` rows on Spark for the users of ``pending`` (user_id; None: everyone)."""
    from seg_assets.churn.scoring import OUTPUT, score_churn

    return score_on_spark(spark, features, pending, score_churn, scorer, OUTPUT, out_dir)


def export_selection(con, sql: str, work: Path) -> tuple[Path, int]:
    """Write the rows of ``sql`` (DuckDB) to ``work/selection.parquet`` for Spark; (path, rows)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "selection.parquet"
    con.sql(f"COPY ({sql}) TO {sql_string(path)} (FORMAT parquet)")
    return path, int(con.sql(f"SELECT count(*) FROM {read_parquet_sql(path)}").fetchall()[0][0])


def scored_view(con, name: str, out_dir: Path) -> None:
    """A temp view ``name`` over Spark's scored Parquet, for the warehouse's write."""
    con.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {read_parquet_sql(out_dir, '*.parquet')}")


def require_features(data_root: str | Path) -> Path:
    """The features' Parquet folder, or a one-line error saying what to run first."""
    path = features_dir(data_root)
    if not any(path.glob("*.parquet")):
        raise input_failure(f"engine spark: no user features at {path}: materialize features.user_features "
                            "with the spark engine first (`seg-assets refresh --engine spark` does).")
    return path
