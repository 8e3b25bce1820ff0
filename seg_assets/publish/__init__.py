"""Publish stage: segment history and transitions, and the BI copy of the analytics tables."""

from seg_assets.publish.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
