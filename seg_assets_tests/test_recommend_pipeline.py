"""Recommendations end to end: generated shoppers with planted co-purchases and the public retail extract.

Issue 15's acceptance asks the recommendations to beat the most-popular-in-segment baseline on hit rate@10; on a
fair time split they are level with it and better on recall (README, Evaluation). Here: hit rate and recall above
it on one generated shop (segments of all the data; on the cut-off's segments too, 0.3309 vs 0.3275, measured with
bench/recommend.py), well above it on a shop of shoppers with tastes of their own (bench/taste_shop.py), recall on
the retail extract, whose hit rates postage saturates.
Wiring: the table is published for BI and its top 3 reach the audience files; a materialization with nothing
new or only segment moves writes nothing (the moves wait for the next order lines or the rebase), and a full
build in chunks of users gives the lists of one in a piece."""

import json
import shutil
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from seg_assets.demo.generate import generate
from seg_assets.features import incremental as inc
from seg_assets.recommend import blend as B
from seg_assets.recommend import evaluate as E
from seg_assets.recommend import model as M
from seg_assets.recommend.assets import SEGMENTS, user_recommendations
from seg_assets.refresh import run_refresh
from seg_assets.resources import build_resources
from seg_assets_tests.bi_copy import read_bi
from seg_assets_tests.rec_staples import staples

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO.parent / "shared" / "data" / "online_retail_germany.csv"


def _evaluate(root: Path, test_days: int) -> dict[str, dict]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        s = M.RecSettings()
        M.load(con, s, SEGMENTS)
        (last,) = con.sql(f"SELECT max(order_ts) FROM {M.BASKETS}").fetchall()[0]
        result = E.evaluate(con, last - timedelta(days=test_days), s, test_days)
    finally:
        con.close()
    return {r["method"]: r for r in result.to_dicts()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recs_demo")
    generate(root, users=4_000, days=180, seed=3, with_customers=False, with_lines=True, with_campaigns=True)
    outcome = run_refresh(root)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    return root


@pytest.mark.slow
def test_generated_shoppers_recommendations_beat_the_segment_baseline(demo):
    r = _evaluate(demo, test_days=30)
    assert r["recommendations"]["users"] > 500
    assert r["recommendations"]["hit_rate"] > r["segment_popular"]["hit_rate"], r
    assert r["recommendations"]["recall"] > r["segment_popular"]["recall"], r


@pytest.mark.slow
def test_shoppers_with_tastes_of_their_own_get_what_shoppers_like_them_bought(tmp_path):
    """bench/taste_shop.py: each shopper's products follow a taste the segments (fitted on order features) cannot see,
    with follow-ups bought in later orders; the personal signals carry it (README: 0.87 against 0.76 at 5,000 users).
    That "also bought" counts shoppers, not baskets, is pinned by test_recommend_maths (a per-basket count also
    passes this one: 0.85 at 5,000 users)."""
    from bench.taste_shop import generate as taste_shop

    taste_shop(tmp_path, users=2_000, seed=5, follow=0.7)
    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    r = _evaluate(tmp_path, test_days=30)
    weights = json.loads(r["recommendations"]["weights"])
    assert weights["fitted"] and weights["has"]["also_bought"] > 1, weights
    assert r["recommendations"]["hit_rate"] > r["segment_popular"]["hit_rate"] + 0.05, r
    assert r["recommendations"]["recall"] > 1.3 * r["segment_popular"]["recall"], r


def test_retail_extract_recommendations_beat_the_baselines_on_recall(tmp_path):
    """On the retail extract nearly every basket holds postage (``POST``), so every method's hit rate@10 is 0.94-1.0
    and they differ by one or two of 40-70 test users, either way (bench/RESULTS.md, session 18); what the blend adds
    is the other products a buyer re-orders: recall."""
    landing = tmp_path / "landing" / "retail_lines"
    landing.mkdir(parents=True)
    shutil.copy(RETAIL, landing / "online_retail.csv")
    shutil.copy(REPO / "examples" / "online_retail" / "sources.yaml", tmp_path / "sources.yaml")
    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    r = _evaluate(tmp_path, test_days=90)
    assert r["recommendations"]["users"] >= 40
    assert r["recommendations"]["hit_rate"] >= 0.9, r
    assert r["recommendations"]["recall"] > 1.2 * max(r["segment_popular"]["recall"], r["shop_popular"]["recall"]), r



def test_published_to_bi_and_audiences_and_refreshed_only_when_needed(demo):
    recs = read_bi(demo, "SELECT * FROM analytics.user_recommendations")
    users = read_bi(demo, "SELECT count(*) AS n FROM analytics.user_segments")["n"][0]
    assert recs["user_id"].n_unique() == users and recs.group_by("user_id").len()["len"].max() == 10
    assert set(recs["reason"]) >= {B.SEGMENT_POPULAR, "bought_before"}
    con = duckdb.connect(str(demo / "warehouse.duckdb"), read_only=True)
    (as_of,) = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0]
    recent = con.sql("SELECT DISTINCT user_id, product_id FROM raw.order_items WHERE status = 'completed' "
                     "AND order_ts > ? AND order_ts <= ?", params=[as_of - timedelta(days=M.RecSettings.exclude_days), as_of]).pl()
    kept = staples(con, as_of)
    con.close()
    # what was just bought is listed again only if it is a staple (re-bought in the next basket as often as any holds it)
    relisted = recs.join(recent, on=["user_id", "product_id"], how="semi")
    one_offs = recent.filter(~pl.col("product_id").is_in(list(kept)))
    assert one_offs.height > 0 and recs.join(one_offs, on=["user_id", "product_id"], how="semi").height == 0
    assert set(relisted["product_id"]) <= kept, set(relisted["product_id"]) - kept
    top3 = recs.filter(pl.col("rank") <= 3).sort("rank").group_by("user_id").agg(pl.col("product_id").str.join(","))
    files = sorted((demo / "bi" / "audiences").glob("*.parquet"))
    assert files
    audience = pl.concat([pl.read_parquet(f) for f in files])
    joined = audience.join(top3, on="user_id")
    assert joined.height == audience.height and (joined["recommended_products"] == joined["product_id"]).all()

    resources = build_resources(demo)
    again = dg.materialize([user_recommendations], resources=resources, raise_on_error=False)
    assert again.success
    (event,) = again.get_asset_materialization_events()
    assert event.materialization.metadata["mode"].value == "unchanged"
    con = duckdb.connect(str(demo / "warehouse.duckdb"))
    moved = [u for (u,) in con.sql("SELECT user_id FROM analytics.user_segments ORDER BY user_id LIMIT 5").fetchall()]
    before = con.sql("SELECT * FROM analytics.user_recommendations ORDER BY user_id, rank").pl()
    con.execute("UPDATE analytics.user_segments SET segment_id = (SELECT max(segment_id) FROM analytics.user_segments) + 1 "
                "WHERE user_id IN (SELECT unnest(?))", [moved])
    con.close()
    # segment moves without new order lines wait for the next full build, and the metadata says so
    after_move = dg.materialize([user_recommendations], resources=resources, raise_on_error=False)
    (event,) = after_move.get_asset_materialization_events()
    md = event.materialization.metadata
    assert md["mode"].value == "unchanged" and md["users_ranked"].value == 0 and "daily rebase" in md["why"].value
    assert _recs(demo).equals(before)
    # the rebase ranks everyone; in chunks of 1,000 users (4 here) the lists are the same as in one
    tags = {inc.REBASE_TAG: "true"}
    rebased = dg.materialize([user_recommendations], resources=resources, raise_on_error=False, tags=tags)
    (event,) = rebased.get_asset_materialization_events()
    assert event.materialization.metadata["mode"].value == "full"
    whole = _recs(demo)
    assert set(whole["user_id"]) == set(before["user_id"])
    config = {"ops": {"analytics__user_recommendations": {"config": {"chunk_users": 1_000}}}}
    chunked = dg.materialize([user_recommendations], resources=resources, raise_on_error=False, tags=tags, run_config=config)
    again = _recs(demo)
    assert chunked.success and again.equals(whole)  # scores too: the features' sums are exact (model.EXACT)


def _recs(root: Path) -> pl.DataFrame:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.sql("SELECT * FROM analytics.user_recommendations ORDER BY user_id, rank").pl()
