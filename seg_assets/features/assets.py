"""Feature assets: the SQL models of ``dbt_like_sql/`` plus ``features/user_features`` (polars)."""


from datetime import timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from seg_assets.features.dictionary import markdown_table
from seg_assets.features.sql_models import sql_assets
from seg_assets.features.user_features import build_user_features
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.warehouse import table_exists

USER_FEATURES = dg.AssetKey(["features", "user_features"])
# Refreshed hourly: warn when 75 minutes old, fail at 2 hours (reported in the UI; never launches runs).
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75))
_INPUTS = {
    "order_stats": "features.user_order_stats",
    "click_stats": "features.user_click_stats",
    "category_activity": "features.user_category_activity",
    "customers": "staging.stg_customers",
}


class FeatureConfig(dg.Config):
    top_categories: int = Field(
        default=10, ge=1, description="Categories that get their own cat_share_<category> column; the rest go to cat_share_other."
    )


def read_frame(con, table: str) -> "pl.DataFrame | None":
    return con.sql(f"SELECT * FROM {table}").pl() if table_exists(con, table) else None


@dg.asset(
    key=USER_FEATURES,
    deps=[dg.AssetKey(t.split(".")) for t in _INPUTS.values()],
    group_name="features",
    kinds={"duckdb", "polars"},
    pool="duckdb",
    freshness_policy=FRESHNESS,
    description="One row per user: recency, frequency, monetary value, funnel and category features. "
    "See the feature dictionary in the metadata.",
)
def user_features(context: dg.AssetExecutionContext, config: FeatureConfig, duckdb: Warehouse, settings: SegSettings):
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        frames = {name: read_frame(con, table) for name, table in _INPUTS.items()}
        features = build_user_features(**frames, as_of=as_of, top_categories=config.top_categories)
        con.sql("CREATE OR REPLACE TABLE features.user_features AS SELECT * FROM features")
    summary = features.select(
        pl.len().alias("users"),
        (pl.col("frequency") > 0).sum().alias("buyers"),
        pl.col("monetary").sum().alias("revenue"),
        pl.col("recency_days").median().alias("median_recency_days"),
    ).row(0, named=True)
    context.log.info(f"user_features: {summary['users']} users as of {as_of}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(summary["users"]),
            "dagster/table_name": "features.user_features",
            "buyers": dg.MetadataValue.int(int(summary["buyers"])),
            "revenue": dg.MetadataValue.float(float(summary["revenue"] or 0.0)),
            "median_recency_days": dg.MetadataValue.float(float(summary["median_recency_days"] or 0.0)),
            "as_of": str(as_of),
            "columns": dg.MetadataValue.int(features.width),
            "feature_dictionary": dg.MetadataValue.md(markdown_table()),
            "preview": dg.MetadataValue.md(features.head(5).to_pandas().to_markdown(index=False)),
        }
    )


assets = [*sql_assets(), user_features]
