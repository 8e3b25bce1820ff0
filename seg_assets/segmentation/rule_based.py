"""Rule-based segments next to the clusters: RFM scores and groups, lifecycle stage, value tier.

Everything is a vectorised polars expression (no loop over rows), deterministic and visible:

* **RFM scores 1-5**: rank-based quintiles (average rank, so tied values always share a score
  whatever the row order): ``score = 1 + floor(5 * (rank - 1) / n)``. R ranks recency descending
  (the most recent order scores 5) over all users; a user without orders has ``recency_days = tenure``
  (feature dictionary), so a fresh sign-up scores high R and lands in "New". F and M are ranked among
  buyers only; users with no completed order get F = M = 1. Ranks are taken in a *reference*
  population (default: the frame itself), so a refresh can score the users whose features changed
  against everyone without re-scoring everyone. The reference is reduced once to *cuts*
  (:class:`RankCuts`: the ``bins - 1`` values where the score of a value's average rank,
  ``(below + up_to + 1) / 2``, steps up), so every batch of users, on one machine or on Spark,
  is scored with a handful of numbers and gets exactly the score a rank in the whole population gives.
* **RFM group** from the common R x F grid, :data:`RFM_GROUPS` (first matching row wins; pass your own
  table to change it). Every one of the 25 cells is covered; scores of another ``bins`` are looked up on it
  by the quintile of their bin's middle (:func:`on_grid`).
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

# (group, R min, R max, F min, F max) on scores 1..GRID_BINS; the first match wins.
GRID_BINS = 5
RFM_BINS = 5  # the default score range 1..RFM_BINS (ScoringConfig.rfm_bins)
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


@dataclass(frozen=True)
class RankCuts:
    """A 1..bins rank score as thresholds: ``score(x) = 1 + #{i : x > at[i] or (x == at[i] and closed[i])}``
    (on ``-x`` when ``descending``). Exactly the score of ``x``'s average rank in the reference
    (:func:`rank_cuts`), in ``bins - 1`` numbers instead of the sorted reference: what every batch of a
    distributed scoring needs from the whole population."""

    at: tuple[float, ...]
    closed: tuple[bool, ...]
    descending: bool = False

    def score(self, values: np.ndarray) -> np.ndarray:
        x = -values if self.descending else values
        score = np.ones(len(x), dtype=np.int64)
        for at, closed in zip(self.at, self.closed):
            score += (x > at) | ((x == at) if closed else False)
        return score


def rank_cuts(reference: pl.Series | np.ndarray, bins: int, descending: bool = False) -> RankCuts:
    """The cuts of ``1 + floor(bins * (rank - 1) / n)`` (average rank in ``reference``, nulls dropped).

    The score only changes at a reference value or just after it: between two distinct reference values
    ``u_i < x < u_{i+1}`` every ``x`` has the same rank. So the score is evaluated once per distinct value
    and per gap, and each step up is recorded as ``x >= u`` (at a value) or ``x > u`` (in the gap after it).
    """
    ref = pl.Series(reference).drop_nulls().cast(pl.Float64).to_numpy()
    ref = np.sort(-ref if descending else ref)
    n = len(ref)
    if n == 0:
        return RankCuts((np.inf,) * (bins - 1), (False,) * (bins - 1), descending)  # everyone scores 1
    values, counts = np.unique(ref, return_counts=True)
    up_to = np.cumsum(counts)
    below = up_to - counts
    # positions in order: the gap before the first value, then each value followed by the gap after it
    lo = np.concatenate([[0], np.column_stack([below, up_to]).ravel()])
    hi = np.concatenate([[0], np.column_stack([up_to, up_to]).ravel()])
    rank = (lo + hi + 1) / 2  # ties share the mean of their positions, 1-based
    score = np.clip(np.floor((rank - 1) * bins / n) + 1, 1, bins)
    at, closed = [], []
    for s in range(2, bins + 1):
        first = int(np.searchsorted(score, s, side="left"))
        if first == len(score):
            at.append(np.inf), closed.append(False)
        elif first == 0:
            at.append(-np.inf), closed.append(True)
        else:
            at.append(float(values[(first - 1) // 2])), closed.append(first % 2 == 1)
    return RankCuts(tuple(at), tuple(closed), descending)


def _ranked_score(values: pl.Series, eligible: pl.Series, cuts: RankCuts) -> pl.Series:
    """1..bins by ``cuts``; rows not ``eligible`` get 1."""
    score = cuts.score(values.cast(pl.Float64).fill_null(0.0).to_numpy())
    return pl.Series(values.name, np.where(eligible.fill_null(False).to_numpy(), score, 1), dtype=pl.Int8)


@dataclass(frozen=True)
class ReferenceCuts:
    """All a user's rule-based columns need from the population: RFM rank cuts and value-tier cuts.

    Computed once from the reference (:func:`reference_cuts`) and passed to every batch, so scoring a few
    users, or every user in parallel batches, gives each one what ranking them in the whole population would.
    """

    r: RankCuts
    f: RankCuts
    m: RankCuts
    value: tuple[float | None, float | None]


def reference_cuts(reference: pl.DataFrame, *, bins: int = RFM_BINS, tiers: ValueTiers = ValueTiers(),
                   recency: str = "recency_days", frequency: str = "frequency", monetary: str = "monetary") -> ReferenceCuts:
    """R ranks recency (descending) among all users; F and M rank among buyers; value cuts among buyers."""
    buyer = reference[frequency] > 0
    return ReferenceCuts(
        r=rank_cuts(reference[recency], bins, descending=True),
        f=rank_cuts(reference[frequency].filter(buyer), bins),
        m=rank_cuts(reference[monetary].filter(buyer), bins),
        value=value_cuts(reference, tiers, monetary, frequency),
    )


def rfm_scores(frame: pl.DataFrame, *, bins: int = RFM_BINS, recency: str = "recency_days", frequency: str = "frequency",
               monetary: str = "monetary", reference: pl.DataFrame | None = None,
               cuts: ReferenceCuts | None = None) -> pl.DataFrame:
    """``frame`` plus r_score, f_score, m_score (Int8) and rfm_score ("545"), ranked within ``reference``
    (same columns; default ``frame``) or by its precomputed ``cuts``."""
    if cuts is None:
        cuts = reference_cuts(frame if reference is None else reference, bins=bins, recency=recency,
                              frequency=frequency, monetary=monetary)
    buyer = frame[frequency] > 0
    return frame.with_columns(
        r_score=_ranked_score(frame[recency], frame[recency].is_not_null(), cuts.r),
        f_score=_ranked_score(frame[frequency], buyer, cuts.f),
        m_score=_ranked_score(frame[monetary], buyer, cuts.m),
    ).with_columns(rfm_score=pl.concat_str([pl.col("r_score"), pl.col("f_score"), pl.col("m_score")]))


def on_grid(score: pl.Expr, bins: int) -> pl.Expr:
    """A 1..bins score as the 1..5 score of the grid: the quintile holding the middle of its bin (bins 10: 1-2 -> 1,
    ..., 9-10 -> 5; bins 3: 1, 3, 5), so :data:`RFM_GROUPS` covers every cell whatever ``rfm_bins`` is."""
    if bins == GRID_BINS:
        return score
    return (GRID_BINS * (score - 0.5) / bins).ceil().cast(pl.Int64)


def rfm_group_expr(table: Sequence[tuple[str, int, int, int, int]] = RFM_GROUPS, r: str = "r_score",
                   f: str = "f_score", bins: int = GRID_BINS) -> pl.Expr:
    """The group of each row from its R and F scores of 1..``bins`` (null if the table leaves a cell uncovered)."""
    expr = None
    r_grid, f_grid = on_grid(pl.col(r), bins), on_grid(pl.col(f), bins)
    for name, r_lo, r_hi, f_lo, f_hi in table:
        cond = r_grid.is_between(r_lo, r_hi) & f_grid.is_between(f_lo, f_hi)
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
    """high / medium / low by ``cuts`` (:func:`value_cuts` of a reference), default the quantiles of the frame itself.
    Nothing spent is never high or medium value: with every amount 0 the quantiles are 0 and every buyer was "high"."""
    buyer = (pl.col(frequency) > 0) & (pl.col(monetary) > 0)
    if cuts is None:
        spend = pl.when(buyer).then(pl.col(monetary))
        hi, mid = spend.quantile(tiers.high_quantile, "linear"), spend.quantile(tiers.medium_quantile, "linear")
    else:
        hi, mid = (pl.lit(c, dtype=pl.Float64) for c in cuts)
    return (pl.when(buyer & (pl.col(monetary) >= hi)).then(pl.lit("high"))
            .when(buyer & (pl.col(monetary) >= mid)).then(pl.lit("medium"))
            .otherwise(pl.lit("low")).alias("value_tier"))


def rule_based_segments(frame: pl.DataFrame, *, id_col: str = "user_id", bins: int = RFM_BINS,
                        groups: Sequence[tuple[str, int, int, int, int]] = RFM_GROUPS,
                        lifecycle: LifecycleThresholds = LifecycleThresholds(),
                        tiers: ValueTiers = ValueTiers(), reference: pl.DataFrame | None = None,
                        cuts: ReferenceCuts | None = None) -> pl.DataFrame:
    """One row per user of ``frame``: id, r/f/m scores, rfm_score, rfm_group, lifecycle_stage, value_tier.

    Scores and tiers are relative to ``reference`` (recency, frequency, monetary of the whole population;
    default ``frame``), or to its ``cuts`` computed beforehand: scoring a few users against everyone gives
    them what scoring everyone would.
    """
    if cuts is None:
        cuts = reference_cuts(frame if reference is None else reference, bins=bins, tiers=tiers)
    out = rfm_scores(frame, bins=bins, cuts=cuts).with_columns(
        rfm_group_expr(groups, bins=bins), lifecycle_expr(lifecycle), value_tier_expr(tiers, cuts=cuts.value))
    keep = [c for c in (id_col,) if c in frame.columns]
    return out.select(keep + ["r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier"])
