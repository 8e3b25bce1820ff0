"""Churn stage: churn probability, risk and expected value over the next H days (group ``segmentation``).

``churn_model`` (artifact + ``meta.churn_models``, with its ``churn_auc`` check) and ``analytics/churn_scores``,
and, for validation on real purchase data, the CDNOW import (cdnow.py), BG/NBD (bgnbd.py) and the
evaluation against the paper's split (evaluate.py).
"""

from seg_assets.churn.assets import churn_model, churn_scores

assets = [churn_model, churn_scores]
asset_checks: list = []  # churn_auc runs in churn_model's own step (check_specs)

__all__ = ["assets", "asset_checks"]
