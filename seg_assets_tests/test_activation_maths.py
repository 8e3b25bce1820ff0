"""Activation maths (issue 14): lift on hand-made cases, the SRM check, the learned policy against random
and the per-segment oracle on planted rates, off-policy estimators recovering a known value, the promotion
rule, and the Open Bandit Dataset check on a tiny synthetic file in the OBD format (no download)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from seg_assets.activation.lift import _conversion_stats, campaign_lift, minimum_detectable_effect, sample_ratio_mismatch
from seg_assets.activation.offpolicy import cell_reward_model, dr, evaluate_candidates, ips, promote, snips
from seg_assets.activation.policy import (
    NBA_COLUMNS,
    fit_policy,
    next_best_action,
    policy_from_state,
    policy_true_value,
    true_value,
)

Z = stats.norm.ppf(0.975)


def cell_frame(x_t, n_t, x_c, n_c, rev_t=None, rev_c=None, campaign="c1", action="a", segment=1):
    """Users of one cell: the first x converted; revenue per user from the given arrays (default 0)."""
    rev_t = np.zeros(n_t) if rev_t is None else np.asarray(rev_t, float)
    rev_c = np.zeros(n_c) if rev_c is None else np.asarray(rev_c, float)
    return pl.DataFrame({
        "campaign_id": campaign, "action_id": action, "segment_id": segment,
        "user_id": [f"{campaign}{action}{segment}t{i}" for i in range(n_t)] + [f"{campaign}{action}{segment}c{i}" for i in range(n_c)],
        "group": ["treatment"] * n_t + ["control"] * n_c,
        "converted": [i < x_t for i in range(n_t)] + [i < x_c for i in range(n_c)],
        "revenue": np.r_[rev_t, rev_c],
    })


def wilson(x, n):
    p = x / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


# --- lift -------------------------------------------------------------------------------------------

def test_conversion_lift_matches_hand_computation():
    out = campaign_lift(cell_frame(60, 1000, 40, 1000)).row(0, named=True)
    assert (out["n_treated"], out["n_control"], out["conversions_treated"], out["conversions_control"]) == (1000, 1000, 60, 40)
    assert out["conv_rate_treated"] == pytest.approx(0.06) and out["conv_rate_control"] == pytest.approx(0.04)
    assert out["abs_lift"] == pytest.approx(0.02) and out["rel_lift"] == pytest.approx(0.5)
    # Newcomb's hybrid score interval from the two Wilson intervals
    (l1, u1), (l2, u2) = wilson(60, 1000), wilson(40, 1000)
    assert out["abs_lift_ci_low"] == pytest.approx(0.02 - math.sqrt((0.06 - l1) ** 2 + (u2 - 0.04) ** 2), rel=1e-6)
    assert out["abs_lift_ci_high"] == pytest.approx(0.02 + math.sqrt((u1 - 0.06) ** 2 + (0.04 - l2) ** 2), rel=1e-6)
    # pooled two-proportion test = Pearson chi-square without continuity correction
    assert out["p_value"] == pytest.approx(stats.chi2_contingency([[60, 940], [40, 960]], correction=False)[1], rel=1e-9)
    # ratio interval contains the point and is roughly the Katz log interval
    se = math.sqrt(1 / 60 - 1 / 1000 + 1 / 40 - 1 / 1000)
    assert out["rel_lift_ci_low"] < 0.5 < out["rel_lift_ci_high"]
    assert out["rel_lift_ci_low"] == pytest.approx(1.5 * math.exp(-Z * se) - 1, abs=0.02)
    assert out["rel_lift_ci_high"] == pytest.approx(1.5 * math.exp(Z * se) - 1, abs=0.05)
    assert out["srm_warning"] is False and out["srm_p_value"] == pytest.approx(1.0)


def test_small_cells_get_an_exact_test_that_keeps_its_level():
    """The score test called a tester's 0/3 treated vs 1/1 control cell significant (p 0.046; Fisher's exact 0.25), and
    11-13 % of simulated 3-vs-1 cells without an effect. Cells with an expected count under 5 get Fisher's exact test
    and the Agresti-Caffo interval; on null cells neither calls more than 5 % significant."""
    tiny = campaign_lift(cell_frame(0, 3, 1, 1)).row(0, named=True)
    assert tiny["conversion_test"] == "exact" and tiny["p_value"] > 0.2
    assert tiny["abs_lift_ci_low"] == -1.0 and tiny["abs_lift_ci_high"] > 0
    assert campaign_lift(cell_frame(60, 1000, 40, 1000)).row(0, named=True)["conversion_test"] == "score"
    # a reviewer's: a large cell with a rare conversion (Boschloo's test took 89 s on it), and one where nobody converted
    rare = _conversion_stats(38, 20_000, 3, 2_000, 0.05)
    assert rare["conversion_test"] == "exact" and 0 < rare["p_value"] <= 1
    assert _conversion_stats(0, 20_000, 0, 2_000, 0.05)["conversion_test"] == "score"
    rng = np.random.default_rng(3)
    for n_t, n_c in ((3, 1), (8, 2), (20, 5)):
        significant = excludes_zero = 0
        for _ in range(150):
            x_t, x_c = int(rng.binomial(n_t, 0.25)), int(rng.binomial(n_c, 0.25))
            out = _conversion_stats(x_t, n_t, x_c, n_c, 0.05)
            significant += out["p_value"] is not None and out["p_value"] < 0.05
            excludes_zero += not out["abs_lift_ci_low"] <= 0 <= out["abs_lift_ci_high"]
        assert significant <= 0.05 * 150 and excludes_zero <= 0.05 * 150, (n_t, n_c, significant, excludes_zero)


def test_revenue_lift_is_welch_and_matches_statsmodels():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    rng = np.random.default_rng(0)
    rev_t, rev_c = rng.gamma(2.0, 12.0, 300), rng.gamma(2.0, 10.0, 500)
    out = campaign_lift(cell_frame(30, 300, 40, 500, rev_t, rev_c)).row(0, named=True)
    cm = CompareMeans(DescrStatsW(rev_t), DescrStatsW(rev_c))
    low, high = cm.tconfint_diff(usevar="unequal")
    assert out["revenue_per_user_treated"] == pytest.approx(rev_t.mean())
    assert out["revenue_abs_lift"] == pytest.approx(rev_t.mean() - rev_c.mean())
    assert (out["revenue_abs_lift_ci_low"], out["revenue_abs_lift_ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert out["revenue_p_value"] == pytest.approx(cm.ttest_ind(usevar="unequal")[1], rel=1e-9)
    assert out["revenue_rel_lift_ci_low"] < out["revenue_rel_lift"] < out["revenue_rel_lift_ci_high"]


def test_mde_is_the_normal_power_formula_and_shrinks_with_n():
    # two-sided 5 %, power 80 %: h = (z_0.975 + z_0.8) * sqrt(1/n1 + 1/n2), back to rates at the control rate
    n, p_c = 5000, 0.05
    h = (Z + stats.norm.ppf(0.8)) * math.sqrt(2 / n)
    expected = math.sin(math.asin(math.sqrt(p_c)) + h / 2) ** 2 - p_c
    assert minimum_detectable_effect(n, n, p_c) == pytest.approx(expected, rel=1e-3)
    assert minimum_detectable_effect(4 * n, 4 * n, p_c) == pytest.approx(expected / 2, rel=0.05)
    assert math.isnan(minimum_detectable_effect(0, 10, 0.1))


def test_cells_are_split_by_campaign_action_segment_and_degenerate_cells_are_null():
    frame = pl.concat([cell_frame(5, 100, 5, 100), cell_frame(3, 50, 0, 50, action="b"), cell_frame(4, 40, 0, 0, segment=2)])
    out = campaign_lift(frame)
    assert out.select("action_id", "segment_id").rows() == [("a", 1), ("a", 2), ("b", 1)]
    no_control = out.row(1, named=True)
    assert no_control["n_control"] == 0 and no_control["abs_lift"] is None and no_control["p_value"] is None
    zero_control = out.row(2, named=True)
    assert zero_control["abs_lift"] == pytest.approx(0.06) and zero_control["rel_lift"] is None
    assert zero_control["abs_lift_ci_low"] < 0.06 < zero_control["abs_lift_ci_high"]
    with pytest.raises(ValueError, match="group"):
        campaign_lift(frame.with_columns(pl.lit("holdout").alias("group")))
    with pytest.raises(ValueError, match="more than once"):
        campaign_lift(pl.concat([frame, frame.head(1)]))


def test_lift_intervals_cover_the_planted_lift_in_most_cells():
    rng = np.random.default_rng(7)
    parts, planted = [], {}
    for seg in range(4):
        for action in ("a", "b", "c"):
            p_c = rng.uniform(0.03, 0.1)
            p_t = p_c + rng.uniform(0.0, 0.04)
            planted[(action, seg)] = p_t - p_c
            n_t, n_c = 2000, 2000
            parts.append(cell_frame(int(rng.binomial(n_t, p_t)), n_t, int(rng.binomial(n_c, p_c)), n_c, action=action, segment=seg))
    out = campaign_lift(pl.concat(parts))
    covered = [lo <= planted[(a, s)] <= hi for a, s, lo, hi in out.select("action_id", "segment_id", "abs_lift_ci_low",
                                                                          "abs_lift_ci_high").rows()]
    assert sum(covered) >= 10  # of 12; 95 % intervals


def test_srm_flags_a_45_55_split_when_50_50_was_planned():
    srm = sample_ratio_mismatch(9_000, 11_000, 0.5)
    assert srm.chi2 == pytest.approx(200.0) and srm.p_value < 1e-40 and srm.warning
    ok = sample_ratio_mismatch(10_050, 9_950, 0.5)
    assert not ok.warning and ok.p_value == pytest.approx(stats.chisquare([10_050, 9_950]).pvalue)
    assert not sample_ratio_mismatch(18_000, 2_000, 0.1).warning  # a planned 90/10 split is fine
    frame = cell_frame(0, 900, 0, 1100)
    assert campaign_lift(frame, planned_control_share={"c1": 0.5})["srm_warning"].to_list() == [True]
    assert campaign_lift(frame, planned_control_share=0.55)["srm_warning"].to_list() == [False]


# --- policy -----------------------------------------------------------------------------------------

ARMS = ["a0", "a1", "a2", "a3"]


def planted_world(seed: int, n_segments: int = 5, n_sends: int = 4000):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.01, 0.12, size=(n_segments, len(ARMS)))
    seg = rng.integers(0, n_segments, n_sends)
    act = rng.integers(0, len(ARMS), n_sends)  # uniform random logging policy, propensity 1/k
    logs = pl.DataFrame({"segment_id": seg, "action_id": [ARMS[a] for a in act],
                         "reward": (rng.random(n_sends) < rates[seg, act]).astype(int), "propensity": 1 / len(ARMS)})
    planted = {(s, ARMS[k]): float(rates[s, k]) for s in range(n_segments) for k in range(len(ARMS))}
    return rates, logs, planted


@pytest.mark.parametrize("seed", [1, 2])
def test_learned_policy_closes_at_least_half_the_gap_to_the_oracle(seed):
    rates, logs, planted = planted_world(seed)
    policy = fit_policy(logs, ARMS, seed=seed)
    rng = np.random.default_rng(100 + seed)
    users = pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(6000)], "segment_id": rng.integers(0, len(rates), 6000),
                          "global_control": rng.random(6000) < 0.1})
    nba = next_best_action(policy, users)
    treated = users.filter(~pl.col("global_control"))
    segs = treated["segment_id"].to_list()
    uniform = float(np.mean([rates[s].mean() for s in segs]))
    oracle = float(np.mean([rates[s].max() for s in segs]))
    expected = policy_true_value(policy, segs, planted)
    assert (expected - uniform) / (oracle - uniform) >= 0.5
    assert (true_value(nba, planted) - uniform) / (oracle - uniform) >= 0.5  # the published draws, too


def test_next_best_action_rows_propensities_and_determinism():
    _, logs, _ = planted_world(3, n_segments=3, n_sends=1500)
    policy = fit_policy(logs, ARMS + ["new"], seed=0)
    users = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4", "u5"], "segment_id": [0, 1, 2, 9, 0],
                          "global_control": [False, True, False, False, False],
                          "eligible_actions": [["a0", "a1"], None, None, ["a2"], []]})
    nba = next_best_action(policy, users)
    assert nba.columns == list(NBA_COLUMNS)
    assert nba["user_id"].to_list() == ["u1", "u3", "u4"]  # global control and no eligible action: no row
    assert nba.row(0, named=True)["action_id"] in ("a0", "a1")
    assert nba.row(2, named=True)["action_id"] == "a2" and nba.row(2, named=True)["propensity"] == 1.0  # unseen segment: pooled
    for row in nba.iter_rows(named=True):
        probs = policy.probabilities(row["segment_id"], users.filter(pl.col("user_id") == row["user_id"])["eligible_actions"][0])
        assert row["propensity"] == pytest.approx(probs[policy.arms.index(row["action_id"])]) and 0 < row["propensity"] <= 1
        mean = policy.posterior_mean(row["segment_id"])
        assert row["expected_reward"] == pytest.approx(mean[policy.arms.index(row["action_id"])])
    assert policy.probabilities(0).sum() == pytest.approx(1.0)
    assert nba.equals(next_best_action(policy, users.reverse()))  # row order does not matter
    rebuilt = policy_from_state(policy.state())
    assert rebuilt.policy_version == policy.policy_version and nba.equals(next_best_action(rebuilt, users))
    assert fit_policy(logs.head(1000), ARMS + ["new"], seed=0).policy_version != policy.policy_version
    # posterior = Beta(1 + successes, 1 + failures), as mabwiser counts
    seg0 = logs.filter((pl.col("segment_id") == 0) & (pl.col("action_id") == "a0"))
    assert policy.counts[0]["a0"] == (1 + seg0["reward"].sum(), 1 + seg0.height - seg0["reward"].sum())
    assert policy._posterior_draws(0).mean(axis=0) == pytest.approx(policy.posterior_mean(0), abs=0.01)


def test_fit_policy_needs_binary_rewards_or_a_binarizer_and_epsilon_floors_propensity():
    logs = pl.DataFrame({"segment_id": [1, 1, 1], "action_id": ["a", "b", "a"], "reward": [12.0, 0.0, 30.0]})
    with pytest.raises(ValueError, match="binarize"):
        fit_policy(logs)
    policy = fit_policy(logs, binarize=lambda action, revenue: revenue > 20, epsilon=0.2)
    assert policy.counts[1]["a"] == (2.0, 2.0)
    assert policy.probabilities(1).min() >= 0.1


# --- off-policy evaluation -----------------------------------------------------------------------------

def simulated_logs(seed: int = 5, n: int = 6000, n_segments: int = 4, k: int = 3):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.02, 0.2, size=(n_segments, k))
    seg = rng.integers(0, n_segments, n)
    act = rng.integers(0, k, n)
    reward = (rng.random(n) < rates[seg, act]).astype(float)
    return rates, seg, act, reward


def test_ips_snips_dr_recover_a_known_target_value():
    rates, seg, act, reward = simulated_logs()
    n, k = len(act), rates.shape[1]
    target = np.full((n, k), 0.2 / k)
    target[np.arange(n), rates[seg].argmax(axis=1)] += 0.8
    truth = float((target * rates[seg]).sum(axis=1).mean())
    p = np.full(n, 1 / k)
    tp = target[np.arange(n), act]
    q = cell_reward_model(seg, act, reward, k)
    for e in (ips(reward, p, tp, n_boot=300), snips(reward, p, tp, n_boot=300), dr(reward, p, target, act, q, n_boot=300)):
        assert e.ci_low <= truth <= e.ci_high, e
        assert e.ci_high - e.ci_low < 0.04
    # IPS of the logging policy itself is the observed mean
    assert ips(reward, p, p, n_boot=10).value == pytest.approx(reward.mean())
    with pytest.raises(ValueError, match="propensities"):
        ips(reward, np.zeros(n), tp)


def test_evaluate_candidates_and_the_promotion_rule():
    rates, seg, act, reward = simulated_logs(seed=6)
    n, k = len(act), rates.shape[1]
    logs = pl.DataFrame({"action": act, "reward": reward, "propensity": 1 / k})
    good = np.zeros((n, k))
    good[np.arange(n), rates[seg].argmax(axis=1)] = 1.0
    bad = np.zeros((n, k))
    bad[np.arange(n), rates[seg].argmin(axis=1)] = 1.0
    ev = evaluate_candidates(logs, good, None, k, q_hat=cell_reward_model(seg, act, reward, k), n_boot=200)
    assert set(ev.table["policy"]) == {"candidate", "in_service", "uniform_random", *(f"action_{i}" for i in range(k))}
    assert ev.uniform.value == pytest.approx(reward.mean())  # the logs are uniform random
    assert ev.candidate.value > ev.best_single_action.value > ev.uniform.value * 0.9
    assert ev.difference.ci_low > 0 and promote(ev.candidate, ev.in_service, difference=ev.difference).promote
    worse = evaluate_candidates(logs, bad, good, k, n_boot=200)
    decision = promote(worse.candidate, worse.in_service, difference=worse.difference)
    assert not decision.promote and "worse" in decision.reason
    assert promote(worse.candidate, None).promote  # nothing in service
    # within tolerance and not worse beyond noise: promoted
    same = evaluate_candidates(logs, good, good, k, n_boot=200)
    assert same.difference.value == pytest.approx(0.0) and promote(same.candidate, same.in_service, difference=same.difference).promote
    # fitted on sends without a conversion: nothing learned, the policy in service stays (none in service: promoted)
    assert not promote(same.candidate, same.in_service, difference=same.difference, fit_conversions=0).promote
    assert promote(same.candidate, None, fit_conversions=0).promote
    # judged on held-out sends without a conversion (both 0.0000): they cannot tell the two apart, nothing swaps
    decision = promote(same.candidate, same.in_service, difference=same.difference, fit_conversions=3, holdout_conversions=0)
    assert not decision.promote and "held-out sends have no conversion" in decision.reason
    assert promote(same.candidate, None, holdout_conversions=0).promote
    assert not ev.notes
    # a campaign of one action logs propensity 1 where others were eligible: said, since IPS then undercounts (a tester's)
    forced = logs.with_columns(propensity=pl.when(pl.int_range(pl.len()) < 100).then(1.0).otherwise(pl.col("propensity")))
    noted = evaluate_candidates(forced, good, None, k, n_boot=20).notes
    assert any(f"100 of {n} held-out sends were logged with propensity 1" in note for note in noted), noted


def test_learned_policy_as_candidate_end_to_end():
    """Fit on the first half of uniform logs, evaluate on the second half: the candidate beats uniform random."""
    rates, logs, _ = planted_world(4, n_sends=6000)
    train, test = logs.head(3000), logs.tail(3000)
    policy = fit_policy(train, ARMS, seed=0)
    target = policy.action_probabilities(test["segment_id"].to_list())
    test_logs = test.select(pl.col("action_id").replace_strict({a: i for i, a in enumerate(policy.arms)}).alias("action"),
                            "reward", "propensity")
    ev = evaluate_candidates(test_logs, target, None, len(policy.arms), n_boot=200)
    assert ev.candidate.value > ev.uniform.value
    assert promote(ev.candidate, ev.in_service, difference=ev.difference).promote


# --- Open Bandit Dataset check (synthetic file in the OBD format) ----------------------------------------------

def test_obd_validation_on_a_synthetic_file_in_the_obd_format(tmp_path):
    from bench.obd_validation import markdown, read_obd, validate

    rng = np.random.default_rng(0)
    k, n = 10, 20_000
    ctr = rng.uniform(0.005, 0.05, size=k)

    def write(name, probs):
        item = np.array([rng.choice(k, p=probs) for _ in range(n)])
        position = rng.integers(1, 4, n)
        frame = pl.DataFrame({"": np.arange(n), "timestamp": "2019-11-24 00:00:00+00:00", "item_id": item, "position": position,
                              "click": (rng.random(n) < ctr[item]).astype(int), "propensity_score": probs[item],
                              "user_feature_0": "x"})
        path = tmp_path / f"{name}.csv"
        frame.write_csv(path)
        return path

    bts_probs = np.r_[0.5, np.full(k - 1, 0.5 / (k - 1))]  # a logging policy that favours item 0
    random_logs = read_obd(write("random", np.full(k, 1 / k)))
    bts_logs = read_obd(write("bts", bts_probs))
    assert random_logs.columns == ["item_id", "position", "click", "propensity_score"]
    check = validate(random_logs, bts_logs, "synthetic", n_boot=200)
    truth = float(ctr.mean())
    assert check.n_actions == k and check.mean_weight == pytest.approx(1.0, abs=0.05)
    assert check.on_policy.ci_low <= truth <= check.on_policy.ci_high
    assert check.ips.ci_low <= truth <= check.ips.ci_high and check.snips.ci_low <= truth <= check.snips.ci_high
    assert check.covers(check.snips) and check.overlaps(check.ips)
    assert "| synthetic | 10 |" in markdown([check], 200, 0)


def test_a_cell_where_a_group_converted_entirely_has_no_ratio_interval_and_no_mde():
    """4/4 treated against 2/2 held out: the ratio's interval was [0, 0] (the method's at x = n) and the MDE 0 (no rate
    above 1 to detect), both read as certainty; the difference keeps its (wide) interval."""
    row = campaign_lift(cell_frame(4, 4, 2, 2)).row(0, named=True)
    assert row["rel_lift"] == 0.0 and row["rel_lift_ci_low"] is None and row["rel_lift_ci_high"] is None
    assert row["mde_abs"] is None and row["abs_lift_ci_low"] < 0 < row["abs_lift_ci_high"]
    # one group where everyone converted adds no variance to the log ratio: 50/100 vs 5/5 read "-39 % to -59 %"
    # beside p 0.058, 19,999/20,000 vs 2/2 +-0.0001 (a reviewer's): no interval either
    for cell in ((4, 4, 1, 2), (50, 100, 5, 5), (19_999, 20_000, 2, 2)):
        out = _conversion_stats(*cell, 0.05)
        assert out["rel_lift"] is not None and (out["rel_lift_ci_low"], out["rel_lift_ci_high"]) == (None, None), cell
    half = campaign_lift(cell_frame(3, 4, 1, 2)).row(0, named=True)  # neither group: an interval
    assert half["rel_lift_ci_low"] < half["rel_lift"] < half["rel_lift_ci_high"] and half["mde_abs"] > 0
    none_treated = _conversion_stats(0, 30, 2, 10, 0.05)  # the interval holds rel_lift's -100 %
    assert none_treated["rel_lift"] == none_treated["rel_lift_ci_low"] == -1.0 < none_treated["rel_lift_ci_high"]


def test_campaigns_that_hold_out_nobody_and_campaigns_with_their_own_share():
    """``holdout_share: 0`` passed the actions.yaml check and then failed every refresh with sends ("planned_control_share
    must be in (0, 1)"); a 50/50 test was checked against the shop's 15 % and warned."""
    none_held = campaign_lift(cell_frame(3, 200, 0, 0), planned_control_share=0.0).row(0, named=True)
    assert none_held["srm_p_value"] == 1.0 and not none_held["srm_warning"] and none_held["abs_lift"] is None
    off_plan = campaign_lift(cell_frame(3, 200, 1, 30), planned_control_share=0.0).row(0, named=True)
    assert off_plan["srm_p_value"] == 0.0 and off_plan["srm_warning"]
    frame = pl.concat([cell_frame(10, 100, 9, 100, campaign="half"), cell_frame(10, 850, 2, 150, campaign="usual")])
    from seg_assets.activation.catalogue import Catalogue

    catalogue = Catalogue(holdout_share=0.15, campaigns={"half": {"holdout_share": 0.5}})
    planned = {c: catalogue.holdout_of(c) for c in ("half", "usual")}
    lift = campaign_lift(frame, planned_control_share=planned)
    assert lift["planned_control_share"].to_list() == [0.5, 0.15] and not lift["srm_warning"].any()
    assert campaign_lift(frame, planned_control_share=0.15).filter(pl.col("campaign_id") == "half")["srm_warning"].item()


def test_a_tie_for_the_best_action_is_not_exploring():
    """Before any send every action's posterior mean is the prior's: 75 % of users were marked exploring."""
    policy = fit_policy(pl.DataFrame(schema={"segment_id": pl.Int64, "action_id": pl.Utf8, "reward": pl.Int64}), ARMS, seed=0)
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(400)], "segment_id": 1, "global_control": False})
    nba = next_best_action(policy, users)
    assert nba.height == 400 and not nba["explore"].any()
    assert nba["action_id"].n_unique() == 4


def test_revenue_lift_without_any_spread_has_no_interval():
    """No revenue in either group (19 treated, 4 control, a tester's thin shop): the interval read [0, 0], p 1.0,
    certainty from four users; a variance of zero estimates nothing."""
    out = campaign_lift(cell_frame(0, 19, 0, 4, np.zeros(19), np.zeros(4))).row(0, named=True)
    assert out["revenue_abs_lift"] == 0.0
    assert (out["revenue_abs_lift_ci_low"], out["revenue_abs_lift_ci_high"], out["revenue_p_value"]) == (None, None, None)
    out = campaign_lift(cell_frame(19, 19, 4, 4, np.full(19, 10.0), np.full(4, 5.0))).row(0, named=True)  # all alike
    assert out["revenue_rel_lift"] == 1.0 and (out["revenue_rel_lift_ci_low"], out["revenue_rel_lift_ci_high"]) == (None, None)
