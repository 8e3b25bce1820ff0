"""How much of the gap between uniform random and the best action per shopper type the policy closes.

End to end on generated shoppers (``generate(..., with_campaigns=True)``, a refresh as of one second before the
first send, a refresh after), per seed: the published policy, its posterior-mean argmax, the best any
per-segment policy could do (the segment ceiling), the segments' purity, and for comparison per-action logistic
reward models (scikit-learn, argmax, no exploration) on the same send-time context the policy uses
(activation/context.py), without the segment. Figures in docs/activation.md.

    python bench/policy_gap.py --users 4000 --days 90 --seeds 1 2 3 5 7 [--shape] [--work /tmp/policy_gap]

``--shape`` plants other response rates (each shopper type's best action moved); ``--small`` a reviewer's
small-effect rates (each type's best action 0.08-0.15, the others 0.02-0.05).
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

SHAPE_RATES = np.array([  # rows: SHOPPER_TYPES; columns: campaigns.ACTIONS
    [0.20, 0.05, 0.05, 0.08], [0.05, 0.05, 0.25, 0.05], [0.10, 0.08, 0.06, 0.22],
    [0.04, 0.18, 0.04, 0.04], [0.02, 0.02, 0.10, 0.02], [0.15, 0.05, 0.05, 0.05]])

# A reviewer's rates (issue 14): each type's best action 0.08-0.15, the others 0.02-0.05 (small effects: harder)
SMALL_EFFECT_RATES = np.array([
    [0.02, 0.10, 0.02, 0.04], [0.03, 0.03, 0.03, 0.15], [0.12, 0.02, 0.02, 0.02],
    [0.02, 0.02, 0.14, 0.02], [0.08, 0.02, 0.02, 0.02], [0.02, 0.02, 0.02, 0.12]])


def build(root: Path, users: int, days: int, seed: int, shape: bool, rates: np.ndarray | None = None) -> None:
    import seg_assets.demo.campaigns as campaigns
    from seg_assets.demo.generate import generate
    from seg_assets.refresh import run_refresh

    shutil.rmtree(root, ignore_errors=True)
    planted = campaigns.RESPONSE_RATES
    campaigns.RESPONSE_RATES = rates if rates is not None else SHAPE_RATES if shape else planted
    try:
        generate(root, users=users, days=days, seed=seed, with_campaigns=True)
    finally:
        campaigns.RESPONSE_RATES = planted
    first = pl.read_parquet(root / "landing" / "campaign_sends" / "*.parquet")["sent_ts"].min()
    assert run_refresh(root, as_of=(first - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")).success
    assert run_refresh(root).success


def measure(root: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from seg_assets.activation.context import context_at
    from seg_assets.activation.contextual import ContextualPolicy, load_policy
    from seg_assets.activation.outcomes import policy_context, send_outcomes

    types = pl.read_parquet(root / "truth" / "shopper_types.parquet")
    rates = pl.read_parquet(root / "truth" / "planted_action_rates.parquet")
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        as_of = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0][0]
        nba = con.sql("SELECT user_id, segment_id, action_id, explore FROM analytics.next_best_action ORDER BY user_id").pl()
        state = con.sql("SELECT state FROM meta.policies WHERE promoted ORDER BY fitted_at DESC LIMIT 1").fetchall()[0][0]
        sends = policy_context(send_outcomes(con, as_of, 7)[0]).filter(pl.col("group") == "treatment")
        x_sends = context_at(con, sends.select("user_id", pl.col("sent_ts").alias("t")))
        x_users = context_at(con, nba.select("user_id", pl.lit(as_of).alias("t")))
    finally:
        con.close()
    policy = load_policy(json.loads(state))
    arms = list(policy.arms)
    rate = {(t, a): r for t, a, r in rates.select("shopper_type", "action_id", "rate").iter_rows()}
    user_type = nba.join(types, on="user_id", how="left")["shopper_type"].to_list()
    uniform = np.mean([np.mean([rate[(t, a)] for a in arms]) for t in user_type])
    best = np.mean([max(rate[(t, a)] for a in arms) for t in user_type])

    def gap(choices) -> float:
        return float((np.mean([rate[(t, a)] for t, a in zip(user_type, choices, strict=True)]) - uniform) / (best - uniform))

    if isinstance(policy, ContextualPolicy):  # the published segment_id is the current one; fine for a measure
        greedy = [arms[j] for j in policy.expected(x_users, nba["segment_id"].to_list()).argmax(axis=1)]
    else:
        greedy = [arms[int(np.argmax(policy.posterior_mean(s)))] for s in nba["segment_id"].to_list()]
    cells = (nba.select("segment_id", "user_id").join(types, on="user_id").join(rates, on="shopper_type")
             .group_by("segment_id", "action_id").agg(pl.col("rate").mean(), pl.len()))
    ceiling_choice = dict(cells.sort("rate", descending=True).group_by("segment_id").first()
                          .select("segment_id", "action_id").iter_rows())
    mix = nba.join(types, on="user_id").group_by("segment_id", "shopper_type").len()
    purity = mix.group_by("segment_id").agg(pl.col("len").max() / pl.col("len").sum()).sort("segment_id")["len"]
    scaler = StandardScaler().fit(x_sends)
    action = np.array([arms.index(a) for a in sends["action_id"].to_list()])
    converted = sends["converted"].to_numpy().astype(float)
    scores = np.column_stack([LogisticRegression(max_iter=2000).fit(scaler.transform(x_sends[action == j]), converted[action == j])
                              .predict_proba(scaler.transform(x_users))[:, 1] for j in range(len(arms))])
    return {"segments": nba["segment_id"].n_unique(), "kind": policy.state().get("kind", "segment"),
            "published": gap(nba["action_id"].to_list()), "greedy": gap(greedy),
            "segment_ceiling": gap([ceiling_choice[s] for s in nba["segment_id"].to_list()]),
            "send_time_logistic": gap([arms[j] for j in scores.argmax(axis=1)]),
            "explore_share": float(nba["explore"].mean()), "purity": [round(p, 2) for p in purity.to_list()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 7])
    parser.add_argument("--shape", action="store_true", help="other planted response rates")
    parser.add_argument("--small", action="store_true", help="a reviewer's small-effect rates (SMALL_EFFECT_RATES)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/policy_gap"))
    args = parser.parse_args()
    for seed in args.seeds:
        name = "small" if args.small else "shape" if args.shape else "demo"
        root = args.work / f"{name}_{args.users}_{seed}"
        if not (root / "warehouse.duckdb").exists():
            build(root, args.users, args.days, seed, args.shape, SMALL_EFFECT_RATES if args.small else None)
        print(json.dumps({"users": args.users, "days": args.days, "seed": seed, "rates": name, **measure(root)}), flush=True)


if __name__ == "__main__":
    main()
