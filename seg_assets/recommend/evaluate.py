"""Time-split evaluation: recommend as of a cut-off, score against the purchases after it.

Train on the baskets up to ``cut`` (the model fits its own weights on the horizon before ``cut``), test on
the distinct products each user bought in (``cut``, ``cut + test_days``]. Every user who bought in the test
window is a test user (those without history get their segment's popular items, from every method).
**hit rate@k**: share of test users with at least one bought product among their k recommendations;
**recall@k**: per test user, bought products recommended / bought products, averaged over test users.
Baselines, served under the same rule (no product the user bought in the ``exclude_days`` before ``cut``, staples
aside):
the k most popular products of the user's segment (share of the segment's baskets) and of the whole shop.
Segments are those given to ``model.load`` (the current ones), the same for every method.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl

from seg_assets.recommend import model as M


def hit_rate_recall(recs: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """``recs`` (user_id, product_id: the top k of each user), ``truth`` (user_id, product_id bought later).

    Users of ``truth`` without recommendations count as misses; users only in ``recs`` do not count."""
    t = truth.select("user_id", "product_id").unique()
    users = t["user_id"].n_unique()
    if users == 0:
        return {"users": 0, "hit_rate": float("nan"), "recall": float("nan")}
    hits = t.join(recs.select("user_id", "product_id").unique(), on=["user_id", "product_id"], how="semi")
    per_user = (t.group_by("user_id").len("bought")
                .join(hits.group_by("user_id").len("hits"), on="user_id", how="left").fill_null(0))
    return {"users": users, "hit_rate": float((per_user["hits"] > 0).mean()),
            "recall": float((per_user["hits"] / per_user["bought"]).mean())}


def popular_sql(cut: datetime, users: str, s: M.RecSettings, prefix: str, scope: str) -> str:
    """The ``top_n`` most popular products of the user's segment (``scope='segment'``; the shop's most popular
    fill in when the segment has too few) or of the shop, less the products the user bought in the
    ``exclude_days`` before ``cut`` (``prefix``: model_tables' tables)."""
    recent = (f"SELECT user_id, product_id FROM {M.BASKETS} WHERE order_ts <= {M._ts(cut)} "
              f"AND {M.just_bought('order_ts', 'product_id', cut, s, prefix)}")
    # Enough of each list for top_n after the exclusions, whatever the model's ``candidates``: drawn from the top
    # ``candidates`` it was cut short when candidates < top_n (3: the segment baseline's hit rate 0.289 -> 0.236 on
    # generated shoppers, and the model "won" by that).
    n = (f"{int(s.top_n)} + (SELECT coalesce(max(k), 0) FROM (SELECT count(DISTINCT product_id) AS k FROM ({recent}) "
         f"GROUP BY user_id))")
    shop = f"SELECT product_id, shop_pop FROM {prefix}shop_pop WHERE pop_rank <= {n}"
    if scope == "segment":
        ranked = f"""SELECT u.user_id, c.product_id, coalesce(sp.seg_pop, 0) AS pop, coalesce(p.shop_pop, 0) AS pop2
            FROM {users} u JOIN (SELECT segment_id, product_id FROM {prefix}seg_pop WHERE pop_rank <= {n}
                                 UNION SELECT g.segment_id, s.product_id FROM ({shop}) s, (SELECT DISTINCT segment_id FROM {users}) g) c
              USING (segment_id)
            LEFT JOIN {prefix}seg_pop sp ON sp.segment_id = u.segment_id AND sp.product_id = c.product_id
            LEFT JOIN {prefix}shop_pop p ON p.product_id = c.product_id"""
    else:
        ranked = f"SELECT u.user_id, s.product_id, s.shop_pop AS pop, 0 AS pop2 FROM {users} u, ({shop}) s"
    return f"""SELECT user_id, product_id FROM ({ranked}) r ANTI JOIN ({recent}) x USING (user_id, product_id)
               QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY pop DESC, pop2 DESC, product_id) <= {int(s.top_n)}"""


def evaluate(con, cut: datetime, s: M.RecSettings, test_days: int | None = None) -> pl.DataFrame:
    """Hit rate@top_n and recall@top_n of the recommendations and both baselines (one row each), with the
    fitted weights' note. Needs ``model.load`` first (its tables; every id here is a code: hits compare codes)."""
    end = cut + timedelta(days=test_days or s.horizon_days)
    truth = con.sql(f"SELECT DISTINCT user_id, product_id FROM {M.BASKETS} WHERE order_ts > {M._ts(cut)} "
                    f"AND order_ts <= {M._ts(end)}").pl()
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _eval_users AS SELECT DISTINCT user_id, segment_id FROM {M.BASKETS}
                WHERE order_ts > {M._ts(cut)} AND order_ts <= {M._ts(end)}""")
    weights = M.fit(con, cut, s, serve=("_ev_", True))
    M.candidates(con, cut, "_eval_users", s, "_ev_")
    M.rank(con, weights, s, "_eval_users", "_ev_")
    rows = []
    for method, sql in (("recommendations", f"SELECT user_id, product_id FROM {M.RECS}"),
                        ("segment_popular", popular_sql(cut, "_eval_users", s, "_ev_", "segment")),
                        ("shop_popular", popular_sql(cut, "_eval_users", s, "_ev_", "shop"))):
        rows.append({"method": method, **hit_rate_recall(con.sql(sql).pl(), truth)})
    M.drop_candidates(con)
    con.sql(f"DROP TABLE {M.RECS}; DROP TABLE _eval_users")
    M.drop_model_tables(con, "_ev_")
    out = pl.DataFrame(rows).with_columns(k=pl.lit(s.top_n), cut=pl.lit(cut), test_days=pl.lit(test_days or s.horizon_days))
    return out.with_columns(weights=pl.lit(json.dumps(weights.as_dict())))

