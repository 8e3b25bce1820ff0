"""Recommend stage: each user's top-N products from purchases (and clicks), with a time-split evaluation."""

from seg_assets.recommend.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
