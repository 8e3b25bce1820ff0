"""Activation stage: from segments to actions (control groups, the action catalogue; lift and the policy next)."""

from seg_assets.activation.assets import asset_checks, assets

__all__ = ["assets", "asset_checks"]
