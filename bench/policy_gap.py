"""How much of the gap between uniform random and the best action per shopper type the policy closes.

End to end on generated shoppers (``generate(..., with_campaigns=True)``, a refresh as of one second before the
first send, a refresh after), per seed: the published policy, its posterior-mean argmax, the best any
per-segment policy could do (the segment ceiling), the segments' purity, and a prototype that is not in the
pipeline: per-action logistic reward models on a context computed **as of each send** from the staged orders
and clicks (no post-send leak), applied to every user as of now. Figures in docs/activation.md.

    python bench/policy_gap.py --users 4000 --days 90 --seeds 1 2 3 5 7 [--shape] [--work /tmp/policy_gap]

``--shape`` plants other response rates (each shopper type's best action moved).
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

CONTEXT_SQL = """
WITH k AS (SELECT * FROM policy_gap_keys),
o AS (SELECT k.key,
        count(o.order_id) FILTER (WHERE o.status = 'completed') AS n_orders,
        count(o.order_id) FILTER (WHERE o.status = 'completed' AND o.order_ts > k.t - INTERVAL 90 DAY) AS n90,
        coalesce(sum(o.discount) FILTER (WHERE o.status = 'completed')
                 / nullif(sum(o.amount + o.discount) FILTER (WHERE o.status = 'completed'), 0), 0) * 10 AS disc,
        coalesce(avg(o.amount) FILTER (WHERE o.status = 'completed'), 0) AS aov,
        coalesce(date_diff('day', max(o.order_ts) FILTER (WHERE o.status = 'completed'), k.t), 999) AS rec,
        count(o.order_id) FILTER (WHERE o.status <> 'completed') AS n_other
      FROM k LEFT JOIN staging.stg_orders o ON o.user_id = k.user_id AND o.order_ts < k.t GROUP BY k.key, k.t),
c AS (SELECT k.key, count(DISTINCT c.session_id) AS sess, count(c.event_id) AS ev,
        count(c.event_id) FILTER (WHERE c.funnel_stage = 'add_to_cart') AS carts,
        coalesce(date_diff('day', min(c.event_ts), k.t), 0) AS age
      FROM k LEFT JOIN staging.stg_clicks c ON c.user_id = k.user_id AND c.event_ts < k.t GROUP BY k.key, k.t)
SELECT * EXCLUDE (key) FROM o JOIN c USING (key) ORDER BY key"""


def build(root: Path, users: int, days: int, seed: int, shape: bool) -> None:
    import seg_assets.demo.campaigns as campaigns
    from seg_assets.demo.generate import generate
    from seg_assets.refresh import run_refresh

    shutil.rmtree(root, ignore_errors=True)
    planted = campaigns.RESPONSE_RATES
    campaigns.RESPONSE_RATES = SHAPE_RATES if shape else planted
    try:
        generate(root, users=users, days=days, seed=seed, with_campaigns=True)
    finally:
        campaigns.RESPONSE_RATES = planted
    first = pl.read_parquet(root / "landing" / "campaign_sends" / "*.parquet")["sent_ts"].min()
    assert run_refresh(root, as_of=(first - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")).success
    assert run_refresh(root).success


def _context(con, keys: pl.DataFrame) -> np.ndarray:
    con.register("policy_gap_keys", keys.to_arrow())
    try:
        x = con.sql(CONTEXT_SQL).pl().cast(pl.Float64).fill_null(0).to_numpy()
    finally:
        con.unregister("policy_gap_keys")
    return np.log1p(np.clip(x, 0, None))


def measure(root: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from seg_assets.activation.outcomes import policy_context, send_outcomes
    from seg_assets.activation.policy import policy_from_state

    types = pl.read_parquet(root / "truth" / "shopper_types.parquet")
    rates = pl.read_parquet(root / "truth" / "planted_action_rates.parquet")
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        as_of = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0][0]
        nba = con.sql("SELECT user_id, segment_id, action_id, explore FROM analytics.next_best_action ORDER BY user_id").pl()
        state = con.sql("SELECT state FROM meta.policies WHERE promoted ORDER BY fitted_at DESC LIMIT 1").fetchall()[0][0]
        sends = policy_context(send_outcomes(con, as_of, 7)).filter(pl.col("group") == "treatment").with_row_index("key")
        x_sends = _context(con, sends.select("key", "user_id", pl.col("sent_ts").alias("t")))
        x_users = _context(con, nba.with_row_index("key").select("key", "user_id", pl.lit(as_of).alias("t")))
    finally:
        con.close()
    policy = policy_from_state(json.loads(state))
    arms = list(policy.arms)
    rate = {(t, a): r for t, a, r in rates.select("shopper_type", "action_id", "rate").iter_rows()}
    user_type = nba.join(types, on="user_id", how="left")["shopper_type"].to_list()
    uniform = np.mean([np.mean([rate[(t, a)] for a in arms]) for t in user_type])
    best = np.mean([max(rate[(t, a)] for a in arms) for t in user_type])

    def gap(choices) -> float:
        return float((np.mean([rate[(t, a)] for t, a in zip(user_type, choices, strict=True)]) - uniform) / (best - uniform))

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
    return {"segments": nba["segment_id"].n_unique(), "published": gap(nba["action_id"].to_list()), "greedy": gap(greedy),
            "segment_ceiling": gap([ceiling_choice[s] for s in nba["segment_id"].to_list()]),
            "send_time_logistic": gap([arms[j] for j in scores.argmax(axis=1)]),
            "explore_share": float(nba["explore"].mean()), "purity": [round(p, 2) for p in purity.to_list()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 7])
    parser.add_argument("--shape", action="store_true", help="other planted response rates")
    parser.add_argument("--work", type=Path, default=Path("/tmp/policy_gap"))
    args = parser.parse_args()
    for seed in args.seeds:
        root = args.work / f"{'shape' if args.shape else 'demo'}_{args.users}_{seed}"
        if not (root / "warehouse.duckdb").exists():
            build(root, args.users, args.days, seed, args.shape)
        print(json.dumps({"users": args.users, "days": args.days, "seed": seed, "shape": args.shape, **measure(root)}), flush=True)


if __name__ == "__main__":
    main()
