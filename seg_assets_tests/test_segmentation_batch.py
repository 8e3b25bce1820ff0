"""The per-batch scoring function both engines call (segmentation/batch.py): any split of the users into
batches gives the same rows, kept segments stay, and the reference cuts rank like the whole population."""

from datetime import datetime

import numpy as np
import polars as pl

from seg_assets.segmentation.batch import COLUMNS, SegmentScorer, score_segments
from seg_assets.segmentation.fit import fit_segment_model
from seg_assets.segmentation.model import ModelConfig
from seg_assets.segmentation.rule_based import LifecycleThresholds, ValueTiers, reference_cuts, rule_based_segments
from seg_assets.segmentation.selection import SelectionConfig


def _users(n: int = 600, seed: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 3, n)
    pts = rng.normal(0, 0.5, (n, 2)) + np.array([(0, 0), (3, 0), (0, 3)])[centre]
    return pl.DataFrame({
        "user_id": [f"u{i:04d}" for i in range(n)], "monetary": np.round(np.exp(pts[:, 0]), 2),
        "frequency": np.exp(pts[:, 1]).round(), "recency_days": rng.integers(0, 200, n).astype(float),
        "tenure_days": rng.integers(10, 400, n).astype(float), "as_of": [datetime(2026, 10, 31)] * n, "features_build": ["7-0"] * n,
        "churn_probability": rng.uniform(0, 1, n), "churn_risk": ["low"] * n, "expected_value_next_h": rng.uniform(0, 50, n),
    })


def _scorer(frame: pl.DataFrame) -> SegmentScorer:
    cfg = ModelConfig(features=("monetary", "frequency"), hierarchy="flat", k_range=(3, 3), balance_groups=False,
                      selection=SelectionConfig(k_min=3, k_max=3, random_state=0))
    model = fit_segment_model(frame, cfg)
    tiers = ValueTiers()
    return SegmentScorer(model=model, classifier=None, assigned_by=f"model {model.version}", rules_version="rules-x",
                         bins=5, lifecycle=LifecycleThresholds(), tiers=tiers,
                         cuts=reference_cuts(frame, bins=5, tiers=tiers))


def test_any_split_into_batches_gives_the_same_rows_and_kept_segments_stay():
    users = _users()
    scorer = _scorer(users)
    ids = scorer.model.segment_ids
    rng = np.random.default_rng(0)
    kept = rng.uniform(size=users.height) < 0.2
    batch = users.with_columns(
        kept_id=pl.Series([ids[0] if k else None for k in kept], dtype=pl.Int32),
        kept_confidence=pl.Series([0.5 if k else None for k in kept], dtype=pl.Float64),
        previous_id=pl.Series([None if i == len(ids) else ids[i] for i in rng.integers(0, len(ids) + 1, users.height)],
                              dtype=pl.Int64),
    )
    whole = score_segments(batch, scorer)
    assert whole.columns == list(COLUMNS) and whole["user_id"].to_list() == batch["user_id"].to_list()
    shuffled = batch.sample(fraction=1.0, shuffle=True, seed=1)
    parts = pl.concat([score_segments(shuffled.slice(s, 137), scorer) for s in range(0, shuffled.height, 137)])
    assert parts.sort("user_id").equals(whole)
    on_kept = whole.filter(pl.Series(kept))
    assert (on_kept["segment_id"] == ids[0]).all() and (on_kept["confidence"] == 0.5).all()
    # the cuts rank each user as ranking them in the whole population does
    rules = rule_based_segments(users.select("user_id", "recency_days", "frequency", "monetary", "tenure_days"))
    assert whole.select(rules.columns).equals(rules)
