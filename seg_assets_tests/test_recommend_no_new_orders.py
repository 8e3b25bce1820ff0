"""Issue 15, speed: a refresh whose delivery has clicks only (no orders, order lines or reviews) scores no
review, recounts no basket and rebuilds no recommendation; what moved segments is updated for those users only,
and each asset says what it did in its metadata."""

import shutil
from datetime import timedelta

import dagster as dg
import duckdb

from seg_assets.baskets.assets import BASKET_RULES
from seg_assets.demo.generate import DEFAULT_END, generate, generate_followup
from seg_assets.recommend.assets import USER_RECOMMENDATIONS
from seg_assets.refresh import run_refresh
from seg_assets.reviews.assets import REVIEW_SENTIMENT


def _metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_a_delivery_of_clicks_only_recomputes_no_rules_recommendations_or_sentiment(tmp_path):
    root, extra = tmp_path / "shop", tmp_path / "clicks_delivery"
    generate(root, users=600, days=90, seed=11, with_lines=True, with_reviews=True)
    instance = dg.DagsterInstance.ephemeral()
    outcome = run_refresh(root, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    assert _metadata(instance, REVIEW_SENTIMENT)["scored_now"] > 100
    assert _metadata(instance, USER_RECOMMENDATIONS)["why"] == "first build"
    assert _metadata(instance, BASKET_RULES)["counts"].startswith("full")
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        before = con.sql("SELECT * FROM analytics.user_recommendations ORDER BY user_id, rank").pl()
        rules = con.sql("SELECT * FROM analytics.basket_rules ORDER BY ALL").pl()
        members = dict(con.sql("SELECT user_id, segment_id FROM meta.rec_members").fetchall())

    generate_followup(extra, 600, 3, 11, start=DEFAULT_END + timedelta(seconds=1), tag="clk")
    shutil.copytree(extra / "landing" / "clicks", root / "landing" / "clicks", dirs_exist_ok=True)
    outcome = run_refresh(root, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]

    assert _metadata(instance, REVIEW_SENTIMENT)["scored_now"] == 0
    counts = _metadata(instance, BASKET_RULES)["counts"]
    recs = _metadata(instance, USER_RECOMMENDATIONS)
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        moved = {u for u, s in con.sql("SELECT user_id, segment_id FROM analytics.user_segments").fetchall()
                 if members.get(u) != s}
        after = con.sql("SELECT * FROM analytics.user_recommendations ORDER BY user_id, rank").pl()
        rules_after = con.sql("SELECT * FROM analytics.basket_rules ORDER BY ALL").pl()
    if moved:  # new clicks can move a user's segment: only those are re-ranked and re-counted
        assert recs["mode"] == "segments" and recs["users_ranked"] == len(moved), (recs, len(moved))
        assert counts.startswith("incremental") and f"{len(moved)} users" in counts, counts
    else:
        assert recs["mode"] == "unchanged" and recs["users_ranked"] == 0 and recs["why"].startswith("no new order lines")
        assert counts.startswith("unchanged") and rules_after.equals(rules), counts
    kept = ~after["user_id"].is_in(list(moved))
    assert after.filter(kept).equals(before.filter(~before["user_id"].is_in(list(moved))))
