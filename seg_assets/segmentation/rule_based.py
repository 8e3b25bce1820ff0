"""Rule-based segments next to the clusters: RFM scores and groups, lifecycle stage, value tier.

Everything is a vectorised polars expression (no loop over rows), deterministic and visible:

* **RFM scores 1-5**: rank-based quintiles (``rank("average")``, so tied values always share a
  score whatever the row order): ``score = 1 + floor(5 * (rank - 1) / n)``. R ranks recency descending
  (the most recent order scores 5) over all users; a user without orders has ``recency_days = tenure``
  (feature dictionary), so a fresh sign-up scores high R and lands in "New". F and M are ranked among
  buyers only; users with no completed order get F = M = 1.
* **RFM group** from the common R x F grid, :data:`RFM_GROUPS` (first matching row wins; pass your own
  table to change it). Every one of the 25 cells is covered.
* **Lifecycle stage** from tenure and order recency (:class:`LifecycleThresholds`, bounds inclusive):
  new (tenure <= 30d), active (recency <= 30d), at risk (<= 90d), dormant (<= 180d), churned.
* **Value tier** from monetary quantiles among buyers: high (>= 80th percentile), medium (>= 50th),
  low otherwise; non-buyers are low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import polars as pl

# (group, R min, R max, F min, F max); the first match wins.
RFM_GROUPS: tuple[tuple[str, int, int, int, int], ...] = (
    ("Champions", 5, 5, 4, 5),
    ("Loyal", 3, 4, 4, 5),
    ("Potential loyalist", 4, 5, 2, 3),
    ("New", 5, 5, 1, 1),
    ("Promising", 4, 4, 1, 1),
    ("Need attention", 3, 3, 3, 3),
    ("About to sleep", 3, 3, 1, 2),
    ("Can't lose them", 1, 2, 5, 5),
    ("At risk", 1, 2, 3, 4),
    ("Hibernating", 2, 2, 1, 2),
    ("Lost", 1, 1, 1, 2),
)


@dataclass(frozen=True)
class LifecycleThresholds:
    new_max_tenure_days: float = 30.0
    active_max_recency_days: float = 30.0
    at_risk_max_recency_days: float = 90.0
    dormant_max_recency_days: float = 180.0


@dataclass(frozen=True)
class ValueTiers:
    high_quantile: float = 0.8
    medium_quantile: float = 0.5


LIFECYCLE_STAGES = ("new", "active", "at risk", "dormant", "churned")
VALUE_TIERS = ("high", "medium", "low")


def _score(values: pl.Expr, eligible: pl.Expr, bins: int, descending: bool = False) -> pl.Expr:
    """1..bins by average rank among ``eligible`` rows; others get 1."""
    v = pl.when(eligible).then(values)
    rank = v.rank("average", descending=descending)
    n = eligible.sum()
    score = (((rank - 1) * bins / n).floor() + 1).clip(1, bins)
    return pl.when(eligible).then(score).otherwise(1).cast(pl.Int8)


def rfm_scores(frame: pl.DataFrame, *, bins: int = 5, recency: str = "recency_days", frequency: str = "frequency",
               monetary: str = "monetary") -> pl.DataFrame:
    """``frame`` plus r_score, f_score, m_score (Int8) and rfm_score ("545")."""
    buyer = pl.col(frequency) > 0
    return frame.with_columns(
        r_score=_score(pl.col(recency), pl.col(recency).is_not_null(), bins, descending=True),
        f_score=_score(pl.col(frequency), buyer, bins),
        m_score=_score(pl.col(monetary), buyer, bins),
    ).with_columns(rfm_score=pl.concat_str([pl.col("r_score"), pl.col("f_score"), pl.col("m_score")]))


def rfm_group_expr(table: Sequence[tuple[str, int, int, int, int]] = RFM_GROUPS, r: str = "r_score",
                   f: str = "f_score") -> pl.Expr:
    """The group of each row from its R and F scores (null if the table leaves a cell uncovered)."""
    expr = None
    for name, r_lo, r_hi, f_lo, f_hi in table:
        cond = pl.col(r).is_between(r_lo, r_hi) & pl.col(f).is_between(f_lo, f_hi)
        expr = pl.when(cond).then(pl.lit(name)) if expr is None else expr.when(cond).then(pl.lit(name))
    return expr.otherwise(pl.lit(None, dtype=pl.Utf8)).alias("rfm_group")


def lifecycle_expr(t: LifecycleThresholds = LifecycleThresholds(), tenure: str = "tenure_days",
                   recency: str = "recency_days") -> pl.Expr:
    return (pl.when(pl.col(tenure) <= t.new_max_tenure_days).then(pl.lit("new"))
            .when(pl.col(recency) <= t.active_max_recency_days).then(pl.lit("active"))
            .when(pl.col(recency) <= t.at_risk_max_recency_days).then(pl.lit("at risk"))
            .when(pl.col(recency) <= t.dormant_max_recency_days).then(pl.lit("dormant"))
            .otherwise(pl.lit("churned")).alias("lifecycle_stage"))


def value_tier_expr(tiers: ValueTiers = ValueTiers(), monetary: str = "monetary", frequency: str = "frequency") -> pl.Expr:
    buyer = pl.col(frequency) > 0
    spend = pl.when(buyer).then(pl.col(monetary))
    hi, mid = spend.quantile(tiers.high_quantile, "linear"), spend.quantile(tiers.medium_quantile, "linear")
    return (pl.when(buyer & (pl.col(monetary) >= hi)).then(pl.lit("high"))
            .when(buyer & (pl.col(monetary) >= mid)).then(pl.lit("medium"))
            .otherwise(pl.lit("low")).alias("value_tier"))


def rule_based_segments(frame: pl.DataFrame, *, id_col: str = "user_id", bins: int = 5,
                        groups: Sequence[tuple[str, int, int, int, int]] = RFM_GROUPS,
                        lifecycle: LifecycleThresholds = LifecycleThresholds(),
                        tiers: ValueTiers = ValueTiers()) -> pl.DataFrame:
    """One row per user: id, r/f/m scores, rfm_score, rfm_group, lifecycle_stage, value_tier."""
    out = rfm_scores(frame, bins=bins).with_columns(rfm_group_expr(groups), lifecycle_expr(lifecycle), value_tier_expr(tiers))
    keep = [c for c in (id_col,) if c in frame.columns]
    return out.select(keep + ["r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier"])
