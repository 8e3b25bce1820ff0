"""Great Expectations checks on ``features.user_features``.

The checks run on one row of exact aggregates computed by DuckDB over the whole table (null counts,
minima, maxima, duplicate ids), not on a pandas copy of a million-row table: the cost stays flat as the
table grows, and a failure is named by the aggregate that broke (``recency_days__min``).
"""


import dagster as dg
import polars as pl

from seg_assets.features.assets import USER_FEATURES
from seg_assets.features.dictionary import FEATURES, MODEL_FEATURES
from seg_assets.resources import Warehouse
from seg_assets.validation import check_result, validate_frame

_NUMERIC = [f for f in FEATURES if f.dtype in ("int", "float")]


def feature_aggregates(con) -> pl.DataFrame:
    """One row: rows, duplicate ids, and per numeric feature its nulls, min and max."""
    parts = ["count(*) AS rows", "count(*) - count(DISTINCT user_id) AS duplicate_user_ids",
             "count(*) FILTER (WHERE user_id IS NULL) AS user_id__nulls"]
    for f in _NUMERIC:
        parts += [
            f"count(*) FILTER (WHERE {f.name} IS NULL OR isnan({f.name}::DOUBLE)) AS {f.name}__nulls",
            f"min({f.name})::DOUBLE AS {f.name}__min",
            f"max({f.name})::DOUBLE AS {f.name}__max",
        ]
    return con.sql(f"SELECT {', '.join(parts)} FROM features.user_features").pl()


def feature_expectations(gxe):
    exps = [
        gxe.ExpectColumnValuesToBeBetween(column="duplicate_user_ids", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="user_id__nulls", min_value=0, max_value=0),
    ]
    for f in _NUMERIC:
        if f.name in MODEL_FEATURES:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=f"{f.name}__nulls", min_value=0, max_value=0))
        if f.min_value is not None:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=f"{f.name}__min", min_value=f.min_value))
        if f.max_value is not None:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=f"{f.name}__max", max_value=f.max_value))
    return exps


@dg.asset_check(
    asset=USER_FEATURES,
    blocking=True,
    description="GE: user_id unique and not null, no nulls in model features, every feature within its dictionary range.",
)
def user_features_valid(duckdb: Warehouse) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        aggregates = feature_aggregates(con)
    outcome = validate_frame(aggregates, "user_features", feature_expectations)
    return check_result(outcome, metadata={"users": dg.MetadataValue.int(int(aggregates["rows"][0]))})


asset_checks = [user_features_valid]
