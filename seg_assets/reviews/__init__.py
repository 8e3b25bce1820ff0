"""Reviews stage: the sentiment of each review's text (VADER, lexicons per language), for the review features."""

from seg_assets.reviews.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
