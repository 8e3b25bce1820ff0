"""Baskets stage: association rules (product pairs bought together) per segment and for the whole shop."""

from seg_assets.baskets.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
