"""Rule-based segments next to the clusters: RFM scores and groups, lifecycle stage, value tier.

Everything is a vectorised polars expression (no loop over rows), deterministic and visible:

* **RFM scores 1-5**: rank-based quintiles (average rank, so tied values always share a score
  whatever the row order): ``score = 1 + floor(5 * (rank - 1) / n)``. R ranks recency descending
  (the most recent order scores 5) over all users; a user without orders has ``recency_days = tenure``
  (feature dictionary), so a fresh sign-up scores high R and lands in "New". F and M are ranked among
  buyers only; users with no completed order get F = M = 1. Ranks are taken in a *reference*
  population (default: the frame itself), so a refresh can score the users whose features changed
  against everyone without re-scoring everyone: a value's average rank is found by binary search in
  the sorted reference (``(below + up_to + 1) / 2``), the same number ``rank("average")`` gives.
* **RFM group** from the common R x F grid, :data:`RFM_GROUPS` (first matching row wins; pass your own
  table to change it). Every one of the 25 cells is covered.
* **Lifecycle stage** from tenure and order recency (:class:`LifecycleThresholds`, bounds inclusive):
  new (tenure <= 30d), active (recency <= 30d), at risk (<= 90d), dormant (<= 180d), churned.
* **Value tier** from monetary quantiles among the reference's buyers: high (>= 80th percentile),
  medium (>= 50th), low otherwise; non-buyers are low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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


def _ranked_score(values: pl.Series, eligible: pl.Series, reference: pl.Series, bins: int,
                  descending: bool = False) -> pl.Series:
    """1..bins by the average rank of each value among ``reference`` (its eligible values); others get 1."""
    ref = np.sort(reference.drop_nulls().cast(pl.Float64).to_numpy())
    n = len(ref)
    x = values.cast(pl.Float64).fill_null(0.0).to_numpy()
    if n == 0:
        return pl.Series(values.name, np.ones(len(x)), dtype=pl.Int8)
    below, up_to = np.searchsorted(ref, x, side="left"), np.searchsorted(ref, x, side="right")
    if descending:
        below, up_to = n - up_to, n - below
    rank = (below + up_to + 1) / 2  # ties share the mean of their positions, 1-based
    score = np.clip(np.floor((rank - 1) * bins / n) + 1, 1, bins)
    return pl.Series(values.name, np.where(eligible.fill_null(False).to_numpy(), score, 1), dtype=pl.Int8)


def rfm_scores(frame: pl.DataFrame, *, bins: int = 5, recency: str = "recency_days", frequency: str = "frequency",
               monetary: str = "monetary", reference: pl.DataFrame | None = None) -> pl.DataFrame:
    """``frame`` plus r_score, f_score, m_score (Int8) and rfm_score ("545"), ranked within ``reference``
    (same columns; default ``frame``)."""
    ref = frame if reference is None else reference
    ref_buyer = ref[frequency] > 0
    buyer = frame[frequency] > 0
    return frame.with_columns(
        r_score=_ranked_score(frame[recency], frame[recency].is_not_null(), ref[recency], bins, descending=True),
        f_score=_ranked_score(frame[frequency], buyer, ref[frequency].filter(ref_buyer), bins),
        m_score=_ranked_score(frame[monetary], buyer, ref[monetary].filter(ref_buyer), bins),
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


def value_cuts(reference: pl.DataFrame, tiers: ValueTiers = ValueTiers(), monetary: str = "monetary",
               frequency: str = "frequency") -> tuple[float | None, float | None]:
    """(high, medium) spend thresholds: quantiles of ``monetary`` among the reference's buyers."""
    spend = reference.filter(pl.col(frequency) > 0)[monetary]
    return spend.quantile(tiers.high_quantile, "linear"), spend.quantile(tiers.medium_quantile, "linear")


def value_tier_expr(tiers: ValueTiers = ValueTiers(), monetary: str = "monetary", frequency: str = "frequency",
                    cuts: tuple[float | None, float | None] | None = None) -> pl.Expr:
    """high / medium / low by ``cuts`` (:func:`value_cuts` of a reference), default the quantiles of the frame itself."""
    buyer = pl.col(frequency) > 0
    if cuts is None:
        spend = pl.when(buyer).then(pl.col(monetary))
        hi, mid = spend.quantile(tiers.high_quantile, "linear"), spend.quantile(tiers.medium_quantile, "linear")
    else:
        hi, mid = (pl.lit(c, dtype=pl.Float64) for c in cuts)
    return (pl.when(buyer & (pl.col(monetary) >= hi)).then(pl.lit("high"))
            .when(buyer & (pl.col(monetary) >= mid)).then(pl.lit("medium"))
            .otherwise(pl.lit("low")).alias("value_tier"))


def rule_based_segments(frame: pl.DataFrame, *, id_col: str = "user_id", bins: int = 5,
                        groups: Sequence[tuple[str, int, int, int, int]] = RFM_GROUPS,
                        lifecycle: LifecycleThresholds = LifecycleThresholds(),
                        tiers: ValueTiers = ValueTiers(), reference: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per user of ``frame``: id, r/f/m scores, rfm_score, rfm_group, lifecycle_stage, value_tier.

    Scores and tiers are relative to ``reference`` (recency, frequency, monetary of the whole population;
    default ``frame``): scoring a few users against everyone gives them what scoring everyone would.
    """
    ref = frame if reference is None else reference
    out = rfm_scores(frame, bins=bins, reference=ref).with_columns(
        rfm_group_expr(groups), lifecycle_expr(lifecycle), value_tier_expr(tiers, cuts=value_cuts(ref, tiers)))
    keep = [c for c in (id_col,) if c in frame.columns]
    return out.select(keep + ["r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier"])
