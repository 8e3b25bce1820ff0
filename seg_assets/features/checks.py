"""Great Expectations checks on ``features.user_features``.

The checks run on exact aggregates computed by DuckDB over the whole table, not on a pandas copy of a
million-row table: one row for the ids (rows, duplicates, nulls) and one row per numeric feature (nulls,
min, max, and the bounds the feature dictionary allows). Three column-pair expectations cover every
feature at once (a few ms each instead of 50 single-column expectations), and a failure names the
feature that broke it (``unexpected_index_list``: feature, observed value, bound).
"""


import dagster as dg
import polars as pl

from seg_assets.features.assets import USER_FEATURES
from seg_assets.features.dictionary import FEATURES, MODEL_FEATURES
from seg_assets.resources import Warehouse
from seg_assets.expectations import expect
from seg_assets.validation import check_result, merge_outcomes, validate_frame

_NUMERIC = [f for f in FEATURES if f.dtype in ("int", "float")]


def feature_aggregates(con) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one row: rows, duplicate and null user ids; one row per numeric feature: nulls, min, max and bounds)."""
    parts = ["count(*) AS rows", "count(*) - count(DISTINCT user_id) AS duplicate_user_ids",
             "count(*) FILTER (WHERE user_id IS NULL) AS user_id__nulls"]
    for f in _NUMERIC:
        parts += [
            f"count(*) FILTER (WHERE {f.name} IS NULL OR isnan({f.name}::DOUBLE)) AS {f.name}__nulls",
            f"min({f.name})::DOUBLE AS {f.name}__min",
            f"max({f.name})::DOUBLE AS {f.name}__max",
        ]
    wide = con.sql(f"SELECT {', '.join(parts)} FROM features.user_features").fetchall()[0]
    ids = pl.DataFrame([dict(zip(("rows", "duplicate_user_ids", "user_id__nulls"), wide[:3]))])
    features = pl.DataFrame({
        "feature": [f.name for f in _NUMERIC],
        "nulls": wide[3::3], "min": wide[4::3], "max": wide[5::3],
        "nulls_allowed": [0 if f.name in MODEL_FEATURES else None for f in _NUMERIC],  # None: not checked
        "lowest": [f.min_value for f in _NUMERIC], "highest": [f.max_value for f in _NUMERIC],
    }, schema={"feature": pl.String, "nulls": pl.Int64, "min": pl.Float64, "max": pl.Float64,
               "nulls_allowed": pl.Int64, "lowest": pl.Float64, "highest": pl.Float64})
    return ids, features


ID_EXPECTATIONS = [expect("ExpectColumnValuesToBeBetween", column=c, min_value=0, max_value=0)
                   for c in ("duplicate_user_ids", "user_id__nulls")]


def _at_least(a: str, b: str):
    return expect("ExpectColumnPairValuesAToBeGreaterThanB", column_A=a, column_B=b, or_equal=True,
                  ignore_row_if="either_value_is_missing")


# Per feature: nulls <= allowed (model features: none), min >= lowest, max <= highest (where defined).
FEATURE_EXPECTATIONS = [_at_least("nulls_allowed", "nulls"), _at_least("min", "lowest"), _at_least("highest", "max")]


@dg.asset_check(
    asset=USER_FEATURES,
    blocking=True,
    description="GE: user_id unique and not null, no nulls in model features, every feature within its dictionary range.",
)
def user_features_valid(duckdb: Warehouse) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        ids, features = feature_aggregates(con)
    outcome = merge_outcomes(validate_frame(ids, "user_features_ids", ID_EXPECTATIONS),
                             validate_frame(features, "user_features_ranges", FEATURE_EXPECTATIONS, index_columns=["feature"]))
    return check_result(outcome, metadata={"users": dg.MetadataValue.int(int(ids["rows"][0])),
                                           "features": dg.MetadataValue.md(features.to_pandas().to_markdown(index=False))})


asset_checks = [user_features_valid]
