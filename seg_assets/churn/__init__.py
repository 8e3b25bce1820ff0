"""Churn stage: churn probability, risk and expected value over the next H days (group ``segmentation``).

``churn_model`` (artifact + ``meta.churn_models``) and ``analytics/churn_scores``, the ``churn_auc`` check,
and, for validation on real purchase data, the CDNOW import (cdnow.py), BG/NBD (bgnbd.py) and the
evaluation against the paper's split (evaluate.py).
"""

from seg_assets.churn.assets import churn_model, churn_scores
from seg_assets.churn.checks import asset_checks

assets = [churn_model, churn_scores]

__all__ = ["assets", "asset_checks"]
