"""Features stage: SQL models (dbt_like_sql/) and the per-user feature table."""

from seg_assets.features.assets import assets
from seg_assets.features.checks import asset_checks

__all__ = ["assets", "asset_checks"]
