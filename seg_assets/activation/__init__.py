"""Activation maths (issue 14): campaign lift, the next-best-action policy and off-policy evaluation.

Pure functions only (frames and arrays in, frames and dataclasses out); the Dagster assets that call
them live elsewhere. The modules are imported explicitly so that this package stays light::

    from seg_assets.activation.lift import campaign_lift, sample_ratio_mismatch
    from seg_assets.activation.policy import fit_policy, next_best_action
    from seg_assets.activation.offpolicy import evaluate_candidates, promote

``lift`` needs statsmodels and ``policy`` mabwiser; nothing is imported here.
"""
