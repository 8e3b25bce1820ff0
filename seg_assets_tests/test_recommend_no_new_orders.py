"""Issue 15, speed: a refresh whose delivery has clicks only (no orders, order lines or reviews) adds nothing in
the three stages: no review is read, no basket counted, no recommendation ranked, each asset says so (and what
waits); the next delivery with order lines catches up with the segment moves, to the same counts as a recount."""

import shutil
from datetime import timedelta

import dagster as dg
import duckdb
import pytest

from seg_assets.baskets import counts as C
from seg_assets.baskets.assets import BASKET_RULES, BasketRulesConfig, basket_rules
from seg_assets.demo.generate import DEFAULT_END, generate, generate_followup
from seg_assets.recommend.assets import USER_RECOMMENDATIONS
from seg_assets.refresh import run_refresh
from seg_assets.resources import build_resources
from seg_assets.reviews.assets import REVIEW_SENTIMENT
from seg_assets_tests.rec_staples import staples

COUNTS = ("basket_scopes", "basket_items", "basket_pairs")


def _metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _tables(root, *tables: str) -> dict:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").pl() for t in tables}


@pytest.mark.slow
def test_a_delivery_of_clicks_only_adds_no_work_and_the_next_order_lines_catch_up(tmp_path):
    root, extra, orders = tmp_path / "shop", tmp_path / "clicks_delivery", tmp_path / "orders_delivery"
    generate(root, users=600, days=90, seed=11, with_lines=True, with_reviews=True)
    instance = dg.DagsterInstance.ephemeral()
    outcome = run_refresh(root, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    assert _metadata(instance, REVIEW_SENTIMENT)["scored_now"] > 100
    assert _metadata(instance, USER_RECOMMENDATIONS)["why"] == "first build"
    assert _metadata(instance, BASKET_RULES)["counts"].startswith("full")
    published = ("analytics.user_recommendations", "analytics.basket_rules", "analytics.review_sentiment",
                 *(f"meta.{t}" for t in COUNTS))
    before = _tables(root, *published)

    generate_followup(extra, 600, 3, 11, start=DEFAULT_END + timedelta(seconds=1), changed_share=0.1, tag="clk")
    shutil.copytree(extra / "landing" / "clicks", root / "landing" / "clicks", dirs_exist_ok=True)
    outcome = run_refresh(root, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]

    sentiment, recs = _metadata(instance, REVIEW_SENTIMENT), _metadata(instance, USER_RECOMMENDATIONS)
    counts = _metadata(instance, BASKET_RULES)["counts"]
    records = instance.get_records_for_run(outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    checks = {e.check_name: e for e in (r.event_log_entry.dagster_event.event_specific_data for r in records)}
    for table in ("orders", "order_items", "reviews"):  # the last delivery's rows are not counted again
        check = checks[f"raw_{table}_contract"]
        assert check.passed and check.description.endswith("nothing new to check"), check.description
    assert checks["raw_clicks_contract"].metadata["rows_checked"].value > 0  # the new clicks are
    assert sentiment["scored_now"] == 0 and "nothing read" in sentiment["scoring"], sentiment
    assert recs["mode"] == "unchanged" and recs["users_ranked"] == 0 and "daily rebase" in recs["why"], recs
    assert recs["dagster/row_count"] == before["analytics.user_recommendations"].height
    assert counts == f"unchanged: {C.DEFERRED}", counts
    after = _tables(root, *published)
    assert all(after[t].equals(before[t]) for t in published), [t for t in published if not after[t].equals(before[t])]
    # buyers moved to another segment without new order lines: their counts wait, and the asset says so
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.sql("UPDATE analytics.user_segments SET segment_id = (SELECT min(segment_id) FROM analytics.user_segments) "
                "WHERE user_id IN (SELECT m.user_id FROM meta.basket_members m JOIN analytics.user_segments s USING (user_id) "
                "WHERE s.segment_id <> (SELECT min(segment_id) FROM analytics.user_segments) ORDER BY m.user_id LIMIT 5)")
    result = dg.materialize([basket_rules], resources=build_resources(root), instance=instance)
    assert _metadata(instance, BASKET_RULES)["counts"] == f"unchanged: {C.DEFERRED}" and result.success
    assert _tables(root, *published)["meta.basket_items"].equals(before["meta.basket_items"])

    # ... but a promoted refit moves many at once (a tester's: 31 % of a segment's baskets counted in the wrong one,
    # new segments without rules or lists): the movers are counted again and the lists rebuilt at once
    from seg_assets.recommend.assets import user_recommendations

    refit = "UPDATE meta.segment_models SET in_service = (version = ?)"
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        [(served,)] = con.sql("SELECT version FROM meta.segment_models WHERE in_service").fetchall()
        con.sql("INSERT INTO meta.segment_models SELECT * REPLACE ('v9999' AS version) FROM meta.segment_models "
                "WHERE in_service")
        con.execute(refit, ["v9999"])
    assert dg.materialize([basket_rules, user_recommendations], resources=build_resources(root), instance=instance).success
    assert _metadata(instance, BASKET_RULES)["counts"].startswith("incremental")
    assert _metadata(instance, USER_RECOMMENDATIONS)["mode"] == "full"
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        assert con.sql("SELECT count(*) FROM meta.basket_members m JOIN analytics.user_segments s USING (user_id) "
                       "WHERE s.segment_id IS DISTINCT FROM m.segment_id").fetchall()[0][0] == 0
        con.execute(refit, [served])  # the model in service again (its artifact is the one on disk)
        con.sql("DELETE FROM meta.segment_models WHERE version = 'v9999'")

    # the next delivery with order lines: every buyer counted in their current segment, as a recount would
    generate_followup(orders, 600, 2, 11, start=DEFAULT_END + timedelta(days=3, seconds=1), tag="ord",
                      with_lines=True, with_reviews=True)
    shutil.copytree(orders / "landing", root / "landing", dirs_exist_ok=True)
    outcome = run_refresh(root, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    assert _metadata(instance, USER_RECOMMENDATIONS)["mode"] == "full"
    assert _metadata(instance, BASKET_RULES)["counts"].split(":")[0] in ("incremental", "full")
    copy = tmp_path / "recount.duckdb"
    shutil.copy(root / "warehouse.duckdb", copy)
    with duckdb.connect(str(copy)) as con:
        assert con.sql("SELECT count(*) FROM meta.basket_members m JOIN analytics.user_segments s USING (user_id) "
                       "WHERE s.segment_id IS DISTINCT FROM m.segment_id").fetchall()[0][0] == 0
        assert con.sql("SELECT as_of FROM meta.rec_state").fetchall() == \
            con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()  # ranked in the current segments
        exact = {"basket_scopes": "scope, baskets", "basket_items": "scope, product_id, baskets"}  # pairs: tracked ones only
        kept = {t: con.sql(f"SELECT {cols} FROM meta.{t} ORDER BY ALL").pl() for t, cols in exact.items()}
        C.rebuild(con, BasketRulesConfig().settings().counts)
        for t, cols in exact.items():
            assert kept[t].equals(con.sql(f"SELECT {cols} FROM meta.{t} ORDER BY ALL").pl()), t


def test_scored_reviews_lost_since_the_last_scoring_are_scored_again(tmp_path):
    generate(tmp_path, users=300, days=60, seed=5, with_lines=True, with_reviews=True)
    instance = dg.DagsterInstance.ephemeral()
    assert run_refresh(tmp_path, instance=instance).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        (total,) = con.sql("SELECT count(*) FROM analytics.review_sentiment").fetchall()[0]
        con.sql("DELETE FROM analytics.review_sentiment WHERE review_id IN "
                "(SELECT review_id FROM analytics.review_sentiment ORDER BY review_id LIMIT 7)")
    assert run_refresh(tmp_path, instance=instance).success
    assert _metadata(instance, REVIEW_SENTIMENT)["scored_now"] == 7 and total > 7


@pytest.mark.slow
def test_lists_follow_a_refresh_as_of_a_past_date_and_back(tmp_path):
    """A tester's find: after a refresh as of a past date the lists stayed as of whichever date came first (later
    purchases used before it; just-bought products recommended and new buyers without a list after it). Like the
    basket counts, a change to or from a past as-of rebuilds them."""
    root = tmp_path / "shop"
    generate(root, users=600, days=90, seed=23, with_lines=True)
    instance = dg.DagsterInstance.ephemeral()
    past = DEFAULT_END - timedelta(days=20)

    def refresh_and_check(as_of: str | None, why: str) -> None:
        outcome = run_refresh(root, instance=instance, **({"as_of": as_of} if as_of else {}))
        assert outcome.success, [m for s in outcome.stages for m in s.failures]
        recs = _metadata(instance, USER_RECOMMENDATIONS)
        assert recs["mode"] == "full" and recs["why"].startswith(why), recs
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            (segments_as_of,) = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0]
            assert con.sql("SELECT as_of FROM meta.rec_state").fetchall() == [(segments_as_of,)]
            # no list recommends what its user bought (a completed order) in the day before the as-of, staples aside
            just_bought = {p for (p,) in con.sql("""SELECT DISTINCT r.product_id FROM analytics.user_recommendations r
                JOIN raw.order_items b USING (user_id, product_id) WHERE b.status = 'completed' AND b.order_ts <= $t
                AND b.order_ts > $t - INTERVAL 1 DAY""", params={"t": segments_as_of}).fetchall()}
            assert just_bought <= staples(con, segments_as_of), just_bought
            listed = con.sql("SELECT count(DISTINCT user_id) FROM analytics.user_recommendations").fetchall()[0][0]
            buyers = con.sql("""SELECT count(DISTINCT user_id) FROM raw.order_items SEMI JOIN analytics.user_segments
                                USING (user_id) WHERE order_ts <= $t""", params={"t": segments_as_of}).fetchall()[0][0]
            assert listed >= buyers > 0

    refresh_and_check(None, "first build")
    refresh_and_check(f"{past:%Y-%m-%dT%H:%M:%S}Z", f"as of {past:%Y-%m-%d %H:%M}: orders placed after it left out")
    refresh_and_check(None, "no longer as of a past date")
