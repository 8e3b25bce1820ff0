"""Segmentation stage: the segment model, the classifier, user segments, profiles and rules."""

from seg_assets.segmentation.assets import segment_model
from seg_assets.segmentation.checks import asset_checks
from seg_assets.segmentation.classifier_asset import segment_classifier
from seg_assets.segmentation.scoring import segment_profiles, user_segments

assets = [segment_model, segment_classifier, user_segments, segment_profiles]

__all__ = ["assets", "asset_checks"]
