"""The check on ``features.user_features``: ids and every feature within its dictionary range.

Exact aggregates computed by DuckDB over the whole table (one scan, no copy of a million-row table):
duplicate and null ids, and per numeric feature its nulls, min and max, compared in Python with the
bounds the feature dictionary allows. Comparing fifty numbers needs no Great Expectations; the
description names each feature and bound broken.
"""


import dagster as dg
import polars as pl

from seg_assets.features.assets import USER_FEATURES
from seg_assets.features.dictionary import FEATURES, MODEL_FEATURES
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import Warehouse
from seg_assets.retries import TRANSIENT_RETRY

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


def range_violations(ids: pl.DataFrame, features: pl.DataFrame) -> list[str]:
    """What breaks the rules, one line each: ids duplicated or null, per feature nulls over the allowed
    count (model features: none), min under its lowest or max over its highest value (where defined)."""
    out = [f"{c} {ids[c][0]:,}" for c in ("duplicate_user_ids", "user_id__nulls") if ids[c][0]]
    for f in features.iter_rows(named=True):
        if f["nulls_allowed"] is not None and f["nulls"] > f["nulls_allowed"]:
            out.append(f"{f['feature']}: {f['nulls']:,} nulls (allowed {f['nulls_allowed']})")
        if f["min"] is not None and f["lowest"] is not None and f["min"] < f["lowest"]:
            out.append(f"{f['feature']}: min {f['min']:g} < lowest {f['lowest']:g}")
        if f["max"] is not None and f["highest"] is not None and f["max"] > f["highest"]:
            out.append(f"{f['feature']}: max {f['max']:g} > highest {f['highest']:g}")
    return out


@dg.asset_check(
    retry_policy=TRANSIENT_RETRY,
    asset=USER_FEATURES,
    blocking=True,
    description="user_id unique and not null, no nulls in model features, every feature within its dictionary range.",
)
def user_features_valid(duckdb: Warehouse) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        ids, features = feature_aggregates(con)
    broken = range_violations(ids, features)
    users = int(ids["rows"][0])
    return dg.AssetCheckResult(
        passed=not broken,
        description=(f"features.user_features ({users:,} users): " + ("; ".join(broken) if broken else
                     f"ids unique, {len(features)} features within their ranges")),
        metadata={"users": dg.MetadataValue.int(users), "violations": dg.MetadataValue.json(broken),
                  "features": dg.MetadataValue.md(md_frame(features))})

asset_checks = [user_features_valid]
