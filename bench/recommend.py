"""Recommendations with a time split: our blend vs the popularity baselines and `implicit`'s models.

    python bench/recommend.py demo [--users 5000 --days 180 --seed 3] [--test-days 30]
    python bench/recommend.py taste [--users 5000 --seed 1 --follow 0.7]   # shoppers with tastes of their own
    python bench/recommend.py retail ../shared/data/online_retail_germany.csv [--test-days 90]
    python bench/recommend.py warehouse DIR        # a data root already refreshed (its landing is read again)

Generates (or copies) the data into a temporary root and refreshes it (to find the last order), then refreshes a
copy of the same landing **as of the cut-off** ``last order - test_days``: its segments, and the lists it publishes,
know nothing of the test window (segments from a refresh over all the data were fitted on the test window's
purchases too, which moved the segment baseline: on a generated shop 24 more hits for it, 16 for the blend). On that
copy it evaluates the model offline (seg_assets/recommend/evaluate.py: every buyer of the test window) and the lists
the refresh *published* (``analytics.user_recommendations``, for the buyers known at the cut-off, against both
baselines on the same buyers), and prints markdown tables. With
``--implicit`` it also fits implicit's ALS and item-item (cosine, BM25) models on the same training
baskets (purchases weight 1, product clicks ``click_weight``) and serves them under the same rules
(recently bought excluded, users without history get their segment's popular products).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.data import link_or_copy  # noqa: E402
from seg_assets import markdown  # noqa: E402
from seg_assets.recommend import evaluate as E  # noqa: E402
from seg_assets.recommend import model as M  # noqa: E402
from seg_assets.recommend.assets import SEGMENTS  # noqa: E402
from seg_assets.warehouse import table_exists  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def prepare(kind: str, args, root: Path) -> Path:
    from seg_assets.refresh import run_refresh

    if kind == "demo":
        from seg_assets.demo.generate import generate

        generate(root, users=args.users, days=args.days, seed=args.seed, with_customers=False, with_lines=True)
    elif kind == "taste":
        from bench.taste_shop import generate

        generate(root, args.users, args.seed, args.follow)
    elif kind == "retail":
        (root / "landing" / "retail_lines").mkdir(parents=True)
        shutil.copy(args.path, root / "landing" / "retail_lines" / "online_retail.csv")
        shutil.copy(REPO / "examples" / "online_retail" / "sources.yaml", root / "sources.yaml")
    else:
        return Path(args.path)
    outcome = run_refresh(root)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    return root


def as_of_copy(root: Path, cut, into: Path) -> Path:
    """The same landing (hard links) and settings files, refreshed as of ``cut``."""
    from seg_assets.refresh import run_refresh
    from seg_assets.settings import data_paths

    into.mkdir()
    shutil.copytree(data_paths(root).landing, data_paths(into).landing, copy_function=link_or_copy)
    for name in ("sources.yaml", "actions.yaml"):
        if (root / name).exists():
            shutil.copy(root / name, into / name)
    if data_paths(root).sentiment_lexicons.exists():
        shutil.copytree(data_paths(root).sentiment_lexicons, data_paths(into).sentiment_lexicons)
    outcome = run_refresh(into, as_of=f"{cut:%Y-%m-%dT%H:%M:%S}Z")
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    return into


def published_rows(con, cut, s: M.RecSettings, test_days: int) -> list[dict]:
    """The published lists (``analytics.user_recommendations`` of a refresh as of ``cut``) and both baselines, on the
    test window's buyers who have a list (a buyer first seen after the cut-off has none). Needs ``model.load``."""
    end = cut + timedelta(days=test_days)
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _pub AS SELECT u.code AS user_id, p.code AS product_id
                FROM analytics.user_recommendations r JOIN {M.USERS} u ON u.name = r.user_id
                JOIN {M.PRODUCTS} p ON p.name = r.product_id WHERE r.rank <= {int(s.top_n)}""")
    truth = con.sql(f"SELECT DISTINCT user_id, product_id FROM {M.BASKETS} WHERE order_ts > {M._ts(cut)} "
                    f"AND order_ts <= {M._ts(end)} AND user_id IN (SELECT user_id FROM _pub)").pl()
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _pu AS SELECT DISTINCT b.user_id, coalesce(g.segment_id, -1) AS segment_id
                FROM {M.BASKETS} b LEFT JOIN {M.SEGMENTS} g USING (user_id) WHERE b.order_ts > {M._ts(cut)}
                AND b.order_ts <= {M._ts(end)} AND b.user_id IN (SELECT user_id FROM _pub)""")
    M.model_tables(con, s, {"_pb_": (cut, True)})
    rows = [{"method": "published lists", **E.hit_rate_recall(con.sql("SELECT * FROM _pub").pl(), truth)}]
    for method, scope in (("segment_popular", "segment"), ("shop_popular", "shop")):
        rows.append({"method": method, **E.hit_rate_recall(con.sql(E.popular_sql(cut, "_pu", s, "_pb_", scope)).pl(), truth)})
    con.sql("DROP TABLE _pub; DROP TABLE _pu")
    M.drop_model_tables(con, "_pb_")
    return rows


def implicit_rows(con, cut, s: M.RecSettings, test_days: int) -> list[dict]:
    """implicit's models on the training baskets, served like ours; users without history get segment-popular."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    end = cut + timedelta(days=test_days)
    truth = con.sql(f"SELECT DISTINCT user_id, product_id FROM {M.BASKETS} "
                    f"WHERE order_ts > {M._ts(cut)} AND order_ts <= {M._ts(end)}").pl()
    train = con.sql(f"SELECT user_id, product_id, 1.0 AS w FROM {M.BASKETS} WHERE order_ts <= {M._ts(cut)}").pl()
    if s.click_weight > 0 and table_exists(con, M.CLICKS):
        clicks = con.sql(f"SELECT user_id, product_id, {s.click_weight!r} * n AS w FROM ({M.click_counts_sql(cut, s)}) "
                         "WHERE product_id IS NOT NULL").pl()  # the clicks our model reads (click_days)
        train = pl.concat([train, clicks.filter(pl.col("product_id").is_in(train["product_id"].unique().implode()))])
    users = sorted(set(train["user_id"]) | set(truth["user_id"]))
    items = sorted(set(train["product_id"]))
    uix, iix = {u: i for i, u in enumerate(users)}, {p: i for i, p in enumerate(items)}
    x = sp.csr_matrix((train["w"].to_numpy().astype(np.float32),
                       ([uix[u] for u in train["user_id"]], [iix[p] for p in train["product_id"]])), shape=(len(users), len(items)))
    x.sum_duplicates()
    recent = con.sql(f"SELECT DISTINCT user_id, product_id FROM {M.BASKETS} WHERE order_ts <= {M._ts(cut)} "
                     f"AND order_ts > {M._ts(cut - timedelta(days=s.exclude_days))}").pl()
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _eu AS SELECT DISTINCT user_id, segment_id FROM {M.BASKETS}
                WHERE order_ts > {M._ts(cut)} AND order_ts <= {M._ts(end)}""")
    M.model_tables(con, s, {"_im_": (cut, True)})
    fill = con.sql(E.popular_sql(cut, "_eu", s, "_im_", "segment")).pl()
    test_users = truth["user_id"].unique().to_list()
    rows = []
    models = (("implicit ALS (64 factors)", AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=0)),
              ("implicit item-item cosine", CosineRecommender(K=100)), ("implicit item-item BM25", BM25Recommender(K=100)))
    for name, model in models:
        t = time.time()
        model.fit(x, show_progress=False)
        idx = np.array([uix[u] for u in test_users])
        ids, scores = model.recommend(idx, x[idx], N=s.top_n + 50, filter_already_liked_items=False)
        recs = pl.DataFrame({"user_id": np.repeat(test_users, ids.shape[1]),
                             "product_id": [items[j] if j >= 0 else None for j in ids.ravel()],
                             "s": scores.ravel(), "pos": np.tile(np.arange(ids.shape[1]), len(test_users))})
        has = np.asarray(x[idx].getnnz(axis=1) > 0)
        recs = (recs.filter(pl.col("product_id").is_not_null() & pl.col("s").is_finite()
                            & pl.col("user_id").is_in(pl.Series(np.array(test_users)[has]).implode()))
                .join(recent, on=["user_id", "product_id"], how="anti").sort("user_id", "pos").group_by("user_id").head(s.top_n))
        recs = pl.concat([recs.select("user_id", "product_id"), fill.join(recs.select("user_id").unique(), on="user_id", how="anti")],
                         how="vertical_relaxed")  # codes: python ints from the model, INTEGER from DuckDB
        rows.append({"method": name, **E.hit_rate_recall(recs, truth), "seconds": round(time.time() - t, 1)})
    con.sql("DROP TABLE _eu")
    M.drop_model_tables(con, "_im_")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("demo", "taste", "retail", "warehouse"))
    ap.add_argument("path", nargs="?")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--test-days", type=int, default=30)
    ap.add_argument("--follow", type=float, default=0.7, help="taste: chance a product brings its follow-up later")
    ap.add_argument("--exclude-days", type=int, default=M.RecSettings.exclude_days)
    ap.add_argument("--implicit", action="store_true")
    args = ap.parse_args()
    s = M.RecSettings(exclude_days=args.exclude_days)
    with tempfile.TemporaryDirectory(prefix="seg-recs-") as tmp:
        root = prepare(args.kind, args, Path(tmp) / "all")
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            M.load(con, s, SEGMENTS)
            (last,) = con.sql(f"SELECT max(order_ts) FROM {M.BASKETS}").fetchall()[0]
        cut = last - timedelta(days=args.test_days)
        root = as_of_copy(root, cut, Path(tmp) / "as_of_cut")
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        M.load(con, s, SEGMENTS)
        t = time.time()
        result = E.evaluate(con, cut, s, args.test_days)
        seconds = round(time.time() - t, 1)
        rows = [{**r, "seconds": seconds if r["method"] == "recommendations" else None}
                for r in result.select("method", "users", "hit_rate", "recall").to_dicts()]
        if args.implicit:
            rows += implicit_rows(con, cut, s, args.test_days)
        print(f"cut-off {cut}, test {args.test_days} days, k={s.top_n}, exclude {s.exclude_days} days; segments as of the "
              "cut-off\n\nThe model offline, every buyer of the test window:\n")
        print(markdown.frame(pl.DataFrame(rows), floatfmt=".4f"))
        print("\nThe published lists, the test window's buyers known at the cut-off:\n")
        print(markdown.frame(pl.DataFrame(published_rows(con, cut, s, args.test_days)), floatfmt=".4f"))
        print("weights:", result["weights"][0])
        con.close()


if __name__ == "__main__":
    main()
