"""Reviews stage (asset group ``features``): the sentiment of each review's text (VADER, a lexicon per language),
which the review features (dbt_like_sql/features/user_review_stats.sql) read."""

from seg_assets.reviews.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
