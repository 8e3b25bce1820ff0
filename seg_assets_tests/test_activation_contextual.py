"""The contextual next-best-action policy: honest propensities (against mabwiser's own LinTS draws), choices,
state round trip, the send-time context (nothing at or after the time is read) and the thin-data fallback."""

from datetime import datetime

import duckdb
import numpy as np
import polars as pl
import pytest

from seg_assets.activation.context import CONTEXT_FEATURES, context_at
from seg_assets.activation.contextual import (
    L2_GRID,
    ContextualPolicy,
    _design,
    choose_contextual,
    choose_l2,
    fit_contextual_policy,
    load_policy,
)
from seg_assets.activation.policies import MIN_SENDS_PER_ACTION
from seg_assets.activation.policies import fit as _fit
from seg_assets.activation.policy import ThompsonPolicy

ARMS = ("a", "b", "c", "d")


def planted(n=4000, seed=0):
    """Sends with a context in which action b converts far better when feature 0 is high, c when it is low."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(CONTEXT_FEATURES)))
    segs = rng.choice([1, 2], n).tolist()
    actions = rng.choice(ARMS, n)
    p = 0.05 + 0.3 * ((x[:, 0] > 0.5) & (actions == "b")) + 0.3 * ((x[:, 0] <= 0.5) & (actions == "c"))
    return x, segs, actions.tolist(), (rng.random(n) < p).astype(float)


def test_propensities_are_the_chance_each_action_wins_an_independent_lints_draw():
    from mabwiser.mab import MAB, LearningPolicy

    x, segs, actions, rewards = planted(1500)
    policy = fit_contextual_policy(x, segs, actions, rewards, ARMS, alpha=1.0, model="linear")
    probe = np.random.default_rng(1).random((3, len(CONTEXT_FEATURES)))
    probs = policy.action_probabilities(probe, [1, 2, 1], [None, ["a", "c"], None])
    assert np.allclose(probs.sum(axis=1), 1) and probs[1, 1] == probs[1, 3] == 0
    # the same models fitted by mabwiser; coefficients drawn from each arm's posterior independently, 20,000 times
    mab = MAB(list(ARMS), LearningPolicy.LinTS(alpha=1.0, l2_lambda=1.0), seed=7)
    mab.fit(np.array(actions, dtype=object), rewards, contexts=_design(x, segs, policy.segments, policy.mean, policy.scale))
    z = _design(probe, [1, 2, 1], policy.segments, policy.mean, policy.scale)
    rng = np.random.default_rng(3)
    for i in (0, 2):
        models = [mab._imp.arm_to_model[a] for a in ARMS]
        scores = np.column_stack([rng.multivariate_normal(m.beta, m.A_inv, size=20_000) @ z[i] for m in models])
        wins = np.bincount(scores.argmax(axis=1), minlength=4) / 20_000
        assert np.abs(wins - probs[i]).max() < 0.015, (wins, probs[i])


def test_the_policy_learns_the_planted_context_and_choices_are_logged_honestly():
    x, segs, actions, rewards = planted()
    policy = fit_contextual_policy(x, segs, actions, rewards, ARMS)
    users = pl.DataFrame({"user_id": [f"u{i:03d}" for i in range(200)], "segment_id": [1, 2] * 100,
                          "global_control": [i % 10 == 0 for i in range(200)],
                          "eligible_actions": [["a", "d"] if i % 7 == 0 else None for i in range(200)]})
    ux = np.random.default_rng(2).random((200, len(CONTEXT_FEATURES)))
    nba = choose_contextual(policy, users, ux)
    assert nba.height == 180 and not set(nba["user_id"]) & {f"u{i:03d}" for i in range(0, 200, 10)}
    restricted = nba.join(users, on="user_id").filter(pl.col("eligible_actions").is_not_null())
    assert set(restricted["action_id"]) <= {"a", "d"}
    free = nba.join(users.with_row_index("i"), on="user_id").filter(pl.col("eligible_actions").is_null())
    want = np.where(ux[free["i"].to_numpy(), 0] > 0.5, "b", "c")
    assert (free["action_id"].to_numpy() == want).mean() > 0.9
    probs = policy.action_probabilities(ux, users["segment_id"].to_list(), users["eligible_actions"].to_list())
    got = nba.join(users.with_row_index("i"), on="user_id")
    logged = probs[got["i"].to_numpy(), [ARMS.index(a) for a in got["action_id"]]]
    assert np.allclose(got["propensity"].to_numpy(), logged) and (logged > 0).all()
    again = choose_contextual(load_policy(policy.state()), users.reverse(), ux[::-1])  # state round trip, row order
    assert again.sort("user_id").equals(nba.sort("user_id"))


def test_the_context_reads_only_what_happened_before_its_time():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging")
    con.execute("""CREATE TABLE staging.stg_orders AS SELECT * FROM (VALUES
        ('o1', 'u1', TIMESTAMP '2024-01-01', 'completed', 40.0, 10.0),
        ('o2', 'u1', TIMESTAMP '2024-02-01', 'completed', 60.0, 0.0),
        ('o3', 'u1', TIMESTAMP '2024-03-01', 'returned', 30.0, 0.0)) t(order_id, user_id, order_ts, status, amount, discount)""")
    t = [datetime(2024, 2, 1), datetime(2024, 2, 1, 0, 0, 1), datetime(2024, 6, 1)]
    x = np.expm1(context_at(con, pl.DataFrame({"user_id": ["u1"] * 3, "t": t})))  # no click table: zeros
    col = {f: x[:, i] for i, f in enumerate(CONTEXT_FEATURES)}
    assert np.allclose(col["orders"], [1, 2, 2]) and np.allclose(col["other_orders"], [0, 0, 1])
    assert np.allclose(col["avg_order_value"], [40, 50, 50]) and np.isclose(col["days_since_order"][0], 31)
    assert np.allclose(col["discount_share_x10"][:2], [10 / 50 * 10, 10 / 110 * 10]) and (col["sessions"] == 0).all()


@pytest.mark.parametrize("per_action, kind", [(MIN_SENDS_PER_ACTION - 1, ThompsonPolicy), (MIN_SENDS_PER_ACTION, ContextualPolicy)])
def test_thin_data_keeps_the_per_segment_policy(per_action, kind):
    x, segs, actions, rewards = planted(4 * per_action)
    sends = pl.DataFrame({"segment_id": segs, "action_id": np.repeat(ARMS, per_action).tolist(),
                          "reward": rewards.astype(np.int8)}).with_row_index("__row")
    assert isinstance(_fit(sends, x, ARMS), kind)


def test_the_logistic_model_is_the_laplace_posterior_and_its_choices_are_the_probability_ranking():
    """The default model: per action a penalised logistic regression whose posterior is its Laplace approximation.
    Unpenalised, coefficients and covariance are statsmodels' Logit MLE and its cov_params (the inverse Hessian)."""
    import statsmodels.api as sm

    x, _, actions, rewards = planted(3000)
    segs = [None] * len(x)  # no segment indicator: the design (context and constant) has full rank
    policy = fit_contextual_policy(x, segs, actions, rewards, ARMS, l2_lambda=1e-8)
    assert policy.link == "logit" and load_policy(policy.state()).link == "logit"
    z = _design(x, segs, policy.segments, policy.mean, policy.scale)
    for k, arm in enumerate(ARMS):
        rows = np.array(actions) == arm
        fit = sm.Logit(rewards[rows], z[rows]).fit(disp=0)
        assert np.allclose(policy.beta[k], fit.params, atol=1e-3), (arm, policy.beta[k], fit.params)
        assert np.allclose(policy.a_inv[k], fit.cov_params(), rtol=1e-2, atol=1e-5), arm
    # propensities: the chance each action wins a draw of the coefficients from its (alpha-scaled) Laplace posterior
    policy = fit_contextual_policy(x, segs, actions, rewards, ARMS, alpha=1.0)
    probe = np.random.default_rng(1).random((2, len(CONTEXT_FEATURES)))
    probs = policy.action_probabilities(probe, [None, None])
    z = _design(probe, [None, None], policy.segments, policy.mean, policy.scale)
    rng = np.random.default_rng(3)
    for i in (0, 1):
        scores = np.column_stack([rng.multivariate_normal(policy.beta[k], policy.a_inv[k], size=20_000) @ z[i]
                                  for k in range(len(ARMS))])
        wins = np.bincount(scores.argmax(axis=1), minlength=4) / 20_000
        assert np.abs(wins - probs[i]).max() < 0.015, (wins, probs[i])
    # the estimates are probabilities, ranked as the scores the Thompson draw compares
    probe = np.random.default_rng(4).random((50, len(CONTEXT_FEATURES)))
    p = policy.expected(probe, [None] * 50)
    assert ((p > 0) & (p < 1)).all()
    assert (p.argmax(axis=1) == (policy._design(probe, [None] * 50) @ policy.beta.T).argmax(axis=1)).all()


def test_the_penalty_is_chosen_by_cross_validation_strong_on_noise_weak_on_signal():
    """How far to trust each action's coefficients depends on the data (a fixed penalty of 1 under-closed a tester's
    six-action gap): on pure noise cross-validation takes the strongest penalty of the grid, on a strong planted
    signal with many sends a weak one; the choice is repeatable and the served policy records it."""
    rng = np.random.default_rng(5)
    x = rng.random((1200, len(CONTEXT_FEATURES)))
    z = _design(x, [None] * len(x), (), x.mean(axis=0), x.std(axis=0))
    actions = np.asarray(rng.choice(ARMS, len(x)), dtype=object)
    noise = (rng.random(len(x)) < 0.05).astype(float)
    chosen, losses = choose_l2(z, noise, actions, ARMS)
    assert chosen == max(L2_GRID) and set(losses) == set(L2_GRID)
    x = rng.random((20_000, len(CONTEXT_FEATURES)))  # every feature moves the conversion, strongly
    dense = (rng.random(len(x)) < 1 / (1 + np.exp(2 - 3 * (x - 0.5) @ rng.normal(size=x.shape[1])))).astype(float)
    z = _design(x, [None] * len(x), (), x.mean(axis=0), x.std(axis=0))
    actions = np.asarray(rng.choice(ARMS, len(x)), dtype=object)
    strong, _ = choose_l2(z, dense, actions, ARMS)
    assert strong <= 3 and choose_l2(z, dense, actions, ARMS)[0] == strong
    x, segs, actions, rewards = planted(3000)
    policy = fit_contextual_policy(x, segs, actions, rewards, ARMS)
    assert policy.l2_lambda in L2_GRID and load_policy(policy.state()).l2_lambda == policy.l2_lambda
    offsets = np.where(np.arange(len(x)) < 5, np.nan, -2.0)  # sends without a campaign's baseline: the others' mean
    assert np.isfinite(fit_contextual_policy(x, segs, actions, rewards, ARMS, offsets=offsets, offset_now=-2.0).beta).all()


def test_the_version_does_not_depend_on_the_last_bits_of_the_contexts():
    """It seeds the draws: DuckDB and Spark compute the same contexts up to 1e-16, and must serve the same actions."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(CONTEXT_FEATURES)))
    actions = rng.choice(["a", "b"], size=400)
    rewards = (rng.random(400) < 0.2).astype(float)
    one = fit_contextual_policy(x, [1] * 400, actions, rewards, ["a", "b"])
    two = fit_contextual_policy(x * (1 + 1e-15), [1] * 400, actions, rewards, ["a", "b"])
    assert one.policy_version == two.policy_version


def test_each_action_is_judged_against_its_own_campaigns_control():
    """A tester's loop: normal buying dropped between campaigns, and the action sent mostly in the later campaign looked
    worse than it was (its raw conversion), so the policy moved a segment to its worst action. With each send's campaign
    control log-odds as an offset the better action wins, and ``expected`` states conversion at the latest baseline."""
    from seg_assets.activation.policies import control_baselines

    rng = np.random.default_rng(3)
    rows = []
    for campaign, base, shares in (("c1", 0.30, {"a": 900, "b": 100}), ("c2", 0.05, {"a": 100, "b": 900})):
        lo = np.log(base / (1 - base))
        for action, n in shares.items():
            p = 1 / (1 + np.exp(-(lo + {"a": 0.2, "b": 0.8}[action])))
            rows += [(campaign, action, "treatment", bool(c)) for c in rng.random(n) < p]
        rows += [(campaign, None, "control", bool(c)) for c in rng.random(600) < base]
    outcomes = pl.DataFrame(rows, schema=["campaign_id", "action_id", "group", "converted"], orient="row").with_columns(
        sent_ts=pl.when(pl.col("campaign_id") == "c1").then(pl.lit(datetime(2026, 1, 1))).otherwise(pl.lit(datetime(2026, 3, 1))))
    sends = (outcomes.filter(pl.col("group") == "treatment").join(control_baselines(outcomes), on="campaign_id", how="left",
                                                                  maintain_order="left"))
    x = rng.random((sends.height, len(CONTEXT_FEATURES)))
    args = (x, [1] * sends.height, sends["action_id"].to_list(), sends["converted"].cast(pl.Float64).to_numpy(), ("a", "b"))
    raw = fit_contextual_policy(*args).expected(x[:200], [1] * 200).mean(axis=0)
    fair = fit_contextual_policy(*args, offsets=sends["baseline"].to_numpy(), offset_now=sends["baseline"][-1])
    judged = fair.expected(x[:200], [1] * 200).mean(axis=0)
    assert raw[0] > raw[1] and judged[1] > judged[0], (raw, judged)
    assert 0.05 < judged[1] < 0.15  # at the latest campaign's baseline (5 %) with b's lift
    assert load_policy(fair.state()).expected(x[:5], [1] * 5) == pytest.approx(fair.expected(x[:5], [1] * 5))


def test_the_served_contextual_policy_keeps_every_eligible_action_at_the_exploration_floor():
    """Without a floor a tester's 20,000 users had 95.6 % of propensities >= 0.99: the gate had no sends to judge on."""
    from seg_assets.activation.policies import EXPLORE_FLOOR

    rng = np.random.default_rng(5)
    n = 4 * MIN_SENDS_PER_ACTION
    sends = pl.DataFrame({"action_id": ["a", "b"] * (n // 2), "segment_id": [1] * n, "sent_ts": [datetime(2026, 1, 1)] * n,
                          "reward": (rng.random(n) < np.tile([0.02, 0.6], n // 2)).astype(np.int8),
                          "baseline": [-2.0] * n}).with_row_index("__row")
    x = rng.random((n, len(CONTEXT_FEATURES)))
    policy = _fit(sends, x, ("a", "b"))
    p = policy.action_probabilities(x, [1] * n)
    assert policy.epsilon == EXPLORE_FLOOR and p.min() >= EXPLORE_FLOOR / 2 - 1e-12 and p[:, 1].mean() > 0.9
