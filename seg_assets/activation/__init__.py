"""Activation stage: from segments to actions. The maths (lift.py, policy.py, offpolicy.py, groups.py) imports
no Dagster; assets.py and audience_asset.py wire it to the warehouse and the BI folder."""

from seg_assets.activation.assets import assets as _tables
from seg_assets.activation.audience_asset import campaign_audiences

assets = [*_tables, campaign_audiences]
asset_checks: list = []

__all__ = ["assets", "asset_checks"]
