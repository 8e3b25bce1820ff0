"""RFM scores and groups, lifecycle stages and value tiers, checked by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seg_assets.segmentation.rule_based import (
    RFM_GROUPS,
    LifecycleThresholds,
    ValueTiers,
    lifecycle_expr,
    rank_cuts,
    rfm_group_expr,
    rfm_scores,
    rule_based_segments,
    value_tier_expr,
)


@pytest.fixture
def ten_users() -> pl.DataFrame:
    # recency 1..10 days; frequency 0 for two users; a tie in frequency and monetary
    return pl.DataFrame({
        "user_id": [f"u{i}" for i in range(10)],
        "recency_days": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "frequency": [9, 8, 7, 5, 5, 3, 2, 1, 0, 0],
        "monetary": [900.0, 800, 700, 500, 500, 300, 200, 100, 0, 0],
        "tenure_days": [400.0] * 10,
    })


def test_rfm_scores_by_hand(ten_users):
    out = rfm_scores(ten_users)
    # R: n=10, rank descending by recency: u0 (1 day) rank 10 -> 1 + floor(9*5/10) = 5; u9 rank 1 -> 1
    assert out["r_score"].to_list() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    # F among the 8 buyers: ranks 8,7,6,(4.5,4.5),3,2,1 -> 1+floor((rank-1)*5/8)
    assert out["f_score"].to_list() == [5, 4, 4, 3, 3, 2, 1, 1, 1, 1]
    assert out["m_score"].to_list() == out["f_score"].to_list()  # same order, same tie
    assert out["rfm_score"][0] == "555" and out["rfm_score"][9] == "111"
    # tied users share a score whatever the row order
    shuffled = rfm_scores(ten_users.reverse()).reverse()
    assert shuffled.select("r_score", "f_score", "m_score").equals(out.select("r_score", "f_score", "m_score"))


def test_rfm_group_grid_covers_every_cell():
    cells = pl.DataFrame({"r_score": [r for r in range(1, 6) for _ in range(5)], "f_score": [f for _ in range(5) for f in range(1, 6)]})
    groups = cells.with_columns(rfm_group_expr())
    assert groups["rfm_group"].null_count() == 0
    g = {(r, f): name for r, f, name in groups.iter_rows()}
    assert g[(5, 5)] == "Champions" and g[(5, 1)] == "New" and g[(4, 1)] == "Promising"
    assert g[(3, 4)] == "Loyal" and g[(4, 2)] == "Potential loyalist" and g[(3, 3)] == "Need attention"
    assert g[(3, 1)] == "About to sleep" and g[(1, 5)] == "Can't lose them" and g[(2, 3)] == "At risk"
    assert g[(2, 2)] == "Hibernating" and g[(1, 1)] == "Lost"
    assert {name for name, *_ in RFM_GROUPS} == set(groups["rfm_group"])
    custom = cells.with_columns(rfm_group_expr([("Top", 4, 5, 4, 5)]))
    assert custom.filter(pl.col("rfm_group") == "Top").height == 4 and custom["rfm_group"].null_count() == 21


def test_lifecycle_boundaries_are_exact():
    df = pl.DataFrame({
        "tenure_days": [30.0, 30.0001, 400, 400, 400, 400, 400, 400, 400],
        "recency_days": [500.0, 5, 30, 30.0001, 90, 90.0001, 180, 180.0001, 0],
    })
    assert df.select(lifecycle_expr())["lifecycle_stage"].to_list() == [
        "new", "active", "active", "at risk", "at risk", "dormant", "dormant", "churned", "active"]
    t = LifecycleThresholds(new_max_tenure_days=7, active_max_recency_days=14, at_risk_max_recency_days=60,
                            dormant_max_recency_days=120)
    assert df.select(lifecycle_expr(t))["lifecycle_stage"].to_list() == [
        "churned", "active", "at risk", "at risk", "dormant", "dormant", "churned", "churned", "active"]


def test_value_tiers(ten_users):
    out = ten_users.with_columns(value_tier_expr())
    # buyers' monetary: 900 800 700 500 500 300 200 100 -> q80 = 740, q50 = 500 (linear)
    assert out["value_tier"].to_list() == ["high", "high", "medium", "medium", "medium", "low", "low", "low", "low", "low"]
    top = ten_users.with_columns(value_tier_expr(ValueTiers(high_quantile=0.95, medium_quantile=0.1)))
    assert top["value_tier"].to_list()[:2] == ["high", "medium"] and top["value_tier"][8] == "low"


def test_rule_based_segments_columns_and_no_orders(ten_users):
    out = rule_based_segments(ten_users)
    assert out.columns == ["user_id", "r_score", "f_score", "m_score", "rfm_score", "rfm_group", "lifecycle_stage", "value_tier"]
    no_orders = out.filter(pl.col("user_id").is_in(["u8", "u9"]))
    assert no_orders["f_score"].to_list() == [1, 1] and no_orders["m_score"].to_list() == [1, 1]
    assert out.row(0, named=True)["rfm_group"] == "Champions"


def _population(n: int = 5_000, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frequency = rng.poisson(1.2, n)  # many ties, a third non-buyers
    return pl.DataFrame({
        "user_id": [f"u{i}" for i in range(n)],
        "recency_days": rng.integers(0, 200, n).astype(float),
        "frequency": frequency,
        "monetary": np.where(frequency > 0, np.round(rng.gamma(2.0, 40.0, n), 0), 0.0),
        "tenure_days": rng.integers(1, 400, n).astype(float),
    })


def test_scores_are_the_average_rank_quantiles():
    """Binary search in the sorted reference gives what rank("average") gives, ties and all."""
    frame = _population()
    out = rfm_scores(frame)
    n, buyers = frame.height, frame.filter(pl.col("frequency") > 0).height
    expected = frame.with_columns(
        r=(((pl.col("recency_days").rank("average", descending=True) - 1) * 5 / n).floor() + 1).clip(1, 5),
        f=pl.when(pl.col("frequency") > 0).then(
            ((pl.when(pl.col("frequency") > 0).then(pl.col("frequency")).rank("average") - 1) * 5 / buyers).floor() + 1).otherwise(1),
    )
    assert out["r_score"].to_list() == expected["r"].cast(pl.Int8).to_list()
    assert out["f_score"].to_list() == expected["f"].cast(pl.Int8).to_list()


def test_a_few_users_scored_against_everyone_get_what_scoring_everyone_gives():
    frame = _population()
    everyone = rule_based_segments(frame)
    few = frame.sample(300, seed=1)
    alone = rule_based_segments(few, reference=frame)
    expected = few.select("user_id").join(everyone, on="user_id", how="left", maintain_order="left")
    assert alone.equals(expected)
    assert alone["rfm_score"].n_unique() > 20  # the sample spans the grid: the comparison is not vacuous


def _rank_score(values: np.ndarray, reference: np.ndarray, bins: int, descending: bool) -> np.ndarray:
    """The definition: 1 + floor(bins * (average rank - 1) / n), the rank found by binary search."""
    ref = np.sort(reference)
    n = len(ref)
    below, up_to = np.searchsorted(ref, values, side="left"), np.searchsorted(ref, values, side="right")
    if descending:
        below, up_to = n - up_to, n - below
    return np.clip(np.floor(((below + up_to + 1) / 2 - 1) * bins / n) + 1, 1, bins).astype(np.int64)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("bins", [2, 5, 10])
def test_rank_cuts_give_the_score_of_the_average_rank_in_the_whole_reference(bins, descending):
    rng = np.random.default_rng(bins)
    for reference in (
        rng.integers(1, 8, 500).astype(float),  # heavy ties (order counts)
        np.round(rng.lognormal(3, 1, 997), 2),  # money, a few ties
        np.array([3.0] * 40),  # one value
        np.array([1.0, 2.0]),  # fewer values than bins
    ):
        # the reference's own values, values between and beyond them
        probe = np.concatenate([reference, rng.uniform(reference.min() - 1, reference.max() + 1, 300),
                                [reference.min() - 5, reference.max() + 5]])
        cuts = rank_cuts(reference, bins, descending=descending)
        assert len(cuts.at) == bins - 1
        assert np.array_equal(cuts.score(probe), _rank_score(probe, reference, bins, descending))


def test_an_empty_reference_scores_everyone_one():
    assert rank_cuts(np.array([]), 5).score(np.array([0.0, 3.0, 1e9])).tolist() == [1, 1, 1]


@pytest.mark.parametrize("bins", [2, 3, 4, 5, 7, 10])
def test_every_rfm_score_of_any_bin_count_has_a_group(bins):
    """The grid is written on scores 1..5; other bin counts are looked up by the quintile of their bin's middle."""
    cells = pl.DataFrame([(r, f) for r in range(1, bins + 1) for f in range(1, bins + 1)], schema=["r_score", "f_score"],
                         orient="row")
    groups = cells.with_columns(rfm_group_expr(bins=bins))
    assert groups["rfm_group"].null_count() == 0
    best = groups.filter((pl.col("r_score") == bins) & (pl.col("f_score") == bins))["rfm_group"][0]
    worst = groups.filter((pl.col("r_score") == 1) & (pl.col("f_score") == 1))["rfm_group"][0]
    if bins >= 3:  # with 2 bins the top half's middle is the 4th quintile ("Loyal")
        assert (best, worst) == ("Champions", "Lost")
    if bins == 10:  # the top two deciles are the top quintile
        assert groups.filter((pl.col("r_score") == 9) & (pl.col("f_score") == 9))["rfm_group"][0] == "Champions"
