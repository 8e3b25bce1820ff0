"""Incremental feature builds give the same rows as a full rebuild, and fall back to full when they must."""

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from seg_assets.definitions import build_defs
from seg_assets.demo.generate import DEFAULT_END, generate_followup
from seg_assets.features.additive import additive_merge
from seg_assets.features.incremental import REBASE_TAG, restrict_to_changed
from seg_assets.segmentation.rule_based import rule_based_segments
from seg_assets.segmentation.scoring import RULE_INPUTS
from seg_assets.settings import data_paths

INCREMENTAL = ("features.user_click_stats", "features.user_category_activity", "features.user_order_stats", "features.user_features")


def _build(root, tags=None, as_of=None):
    """Ingest + features, as one refresh does."""
    defs = build_defs(root, as_of)
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.materializable_asset_keys if graph.get(k).group_name in ("ingest", "features")]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=keys, tags=tags or {})
    assert result.success
    return result


def _builds(root) -> dict:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return {m: (mode, n) for m, mode, n in con.sql("SELECT model, mode, changed_keys FROM meta.model_builds").fetchall()}


def _rows(root, table) -> list:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


@pytest.fixture()
def two_deliveries(data_dir):
    _build(data_dir)
    generate_followup(data_dir, 3_000, 1, 5, start=DEFAULT_END + timedelta(seconds=1), changed_share=0.05, new_users=30)
    return data_dir


def test_incremental_build_equals_full_rebuild(two_deliveries, tmp_path):
    full = tmp_path / "full"
    shutil.copytree(two_deliveries, full)
    assert all(mode == "full" for mode, _ in _builds(two_deliveries).values())

    _build(two_deliveries)  # only the users of the new delivery are recomputed
    builds = _builds(two_deliveries)
    assert {m: builds[m][0] for m in INCREMENTAL} == dict.fromkeys(INCREMENTAL, "incremental")
    with duckdb.connect(str(data_paths(two_deliveries).warehouse), read_only=True) as con:
        users = con.sql("SELECT count(*) FROM features.user_features").fetchall()[0][0]
    assert 30 <= builds["features.user_features"][1] < users / 2
    # Changed keys are users, counted once: those with new clicks are among those with any new row.
    assert 0 < builds["features.user_click_stats"][1] <= builds["features.user_features"][1]

    _build(full, tags={REBASE_TAG: "true"})  # everything recomputed from scratch
    assert all(mode == "full" for mode, _ in _builds(full).values())
    for table in INCREMENTAL[:3]:  # the SQL models: exactly a full rebuild
        assert _rows(two_deliveries, table) == _rows(full, table), table
    # user_features: users recomputed now agree exactly; the others keep the row of their own as-of.
    with duckdb.connect(str(data_paths(two_deliveries).warehouse), read_only=True) as inc_con:
        inc_con.sql(f"ATTACH '{data_paths(full).warehouse}' AS full_build (READ_ONLY)")
        (as_of,) = inc_con.sql("SELECT max(as_of) FROM features.user_features").fetchall()[0]
        differing = inc_con.sql("""
            SELECT count(*) FROM (SELECT * FROM features.user_features WHERE as_of = $as_of
                                  EXCEPT SELECT * FROM full_build.features.user_features)""",
                                params={"as_of": as_of}).fetchall()[0][0]
        stale = inc_con.sql("SELECT count(*) FROM features.user_features WHERE as_of < $as_of",
                            params={"as_of": as_of}).fetchall()[0][0]
        same_users = inc_con.sql("SELECT count(*) FROM features.user_features f "
                                 "SEMI JOIN full_build.features.user_features g USING (user_id)").fetchall()[0][0]
    assert differing == 0
    assert stale > 0 and same_users == users


def test_nothing_new_changes_nothing_and_rebase_is_full(two_deliveries):
    _build(two_deliveries)
    before = {t: _rows(two_deliveries, t) for t in INCREMENTAL}
    _build(two_deliveries)  # no new files, same as-of: zero changed keys
    builds = _builds(two_deliveries)
    assert [builds[m] for m in INCREMENTAL] == [("incremental", 0)] * len(INCREMENTAL)
    assert {t: _rows(two_deliveries, t) for t in INCREMENTAL} == before
    _build(two_deliveries, tags={REBASE_TAG: "true"})
    assert all(mode == "full" for mode, _ in _builds(two_deliveries).values())


def test_restrict_to_changed_rewrites_only_the_named_inputs():
    sql = ("WITH c AS (SELECT * FROM staging.stg_clicks WHERE event_ts <= getvariable('as_of')) "
           "SELECT c.user_id, count(*) FROM c JOIN staging.other o USING (user_id) GROUP BY 1")
    out = restrict_to_changed(sql, {("staging", "stg_clicks")}, "user_id")
    assert "FROM staging.stg_clicks WHERE user_id IN (SELECT user_id FROM temp._seg_changed_keys)" in out
    assert "JOIN staging.other AS o" in out and "GETVARIABLE('as_of')" in out


def _as_of_counts(root, table) -> dict:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return dict(con.sql(f"SELECT as_of, count(*) FROM {table} GROUP BY 1").fetchall())


def test_refresh_rescores_only_changed_users_and_rebase_everyone(two_deliveries):
    """After a new delivery, churn scores and segments are redone for the recomputed users only; the
    others keep their row (and its as-of). The daily rebase redoes everyone."""
    from seg_assets.refresh import run_refresh

    first = run_refresh(two_deliveries)  # ingests the follow-up; segment model fitted on this data
    assert first.success, [f for s in first.stages for f in s.failures]
    with duckdb.connect(str(data_paths(two_deliveries).warehouse), read_only=True) as con:
        before = {r[0]: r for r in con.sql("SELECT * FROM analytics.user_segments").fetchall()}
    generate_followup(two_deliveries, 3_000, 1, 5, start=DEFAULT_END + timedelta(days=1, seconds=1),
                      changed_share=0.05, new_users=10, tag="second")
    second = run_refresh(two_deliveries)
    assert second.success, [f for s in second.stages for f in s.failures]
    features = _as_of_counts(two_deliveries, "features.user_features")
    latest = max(features)
    for table in ("analytics.churn_scores", "analytics.user_segments"):
        counts = _as_of_counts(two_deliveries, table)
        assert counts == features, table  # each row carries the as-of of the features it was scored from
        assert 10 <= counts[latest] < sum(counts.values()) / 2, table
    with duckdb.connect(str(data_paths(two_deliveries).warehouse), read_only=True) as con:
        kept = con.sql("SELECT * FROM analytics.user_segments WHERE as_of < $latest", params={"latest": latest}).fetchall()
        population = con.sql(f"SELECT user_id, {', '.join(RULE_INPUTS)} FROM features.user_features").pl()
        rescored = con.sql("SELECT user_id, r_score, f_score, m_score, rfm_group, lifecycle_stage, value_tier "
                           "FROM analytics.user_segments WHERE as_of = $latest ORDER BY user_id", params={"latest": latest}).pl()
    assert kept and all(before[row[0]] == row for row in kept)  # untouched users: the same row, segment and all
    # Re-scored users are ranked against everyone: what scoring the whole population would give them.
    everyone = rule_based_segments(population).join(rescored.select("user_id"), on="user_id", how="semi").sort("user_id")
    assert rescored.equals(everyone.select(rescored.columns))
    rebase = run_refresh(two_deliveries, rebase=True)
    assert rebase.success
    for table in ("features.user_features", "analytics.churn_scores", "analytics.user_segments"):
        assert list(_as_of_counts(two_deliveries, table)) == [latest], table


def test_plan_build_falls_back_to_full_only_when_it_must():
    from datetime import datetime

    from seg_assets.features import incremental as inc

    con = duckdb.connect()
    con.sql("CREATE SCHEMA meta; CREATE SCHEMA s")
    con.sql("CREATE TABLE meta.ingest_ledger (file_id BIGINT)")
    con.sql("INSERT INTO meta.ingest_ledger VALUES (1), (2)")
    con.sql("CREATE TABLE s.events (user_id VARCHAR, ts TIMESTAMP, _file_id BIGINT)")
    con.sql("INSERT INTO s.events VALUES ('a', '2026-01-01', 1), ('b', '2026-01-02', 2), ('c', '2026-01-09', 2)")
    con.sql("INSERT INTO s.events SELECT 'u' || i, '2026-01-01', 1 FROM range(10) t(i)")  # users that stay put
    con.sql("CREATE TABLE s.target AS SELECT DISTINCT user_id FROM s.events")
    sources = [inc.Source("s.events", "ts"), inc.Source("s.absent", "ts")]  # an input that does not exist yet

    def plan(as_of, **kw):
        return inc.plan_build(con, model="m", target="s.target", key="user_id", sources=sources, code_version="v1",
                              as_of=datetime.fromisoformat(as_of), params={"k": 1}, **kw)

    first = plan("2026-01-05")
    assert first.mode == "full" and first.reason == "first build"
    inc.write_state(con, "m", "v1", datetime(2026, 1, 5), first, params={"k": 1})
    con.sql("INSERT INTO meta.ingest_ledger VALUES (3)")
    con.sql("INSERT INTO s.events VALUES ('d', '2026-01-04', 3)")
    step = plan("2026-01-10")  # 'd' is a new row; 'c' (Jan 9) has just come inside the as-of window
    assert step.mode == "incremental", step.reason
    assert sorted(r[0] for r in con.sql(f"SELECT user_id FROM temp.{inc.CHANGED}").fetchall()) == ["c", "d"]
    assert plan("2026-01-04").reason.startswith("as-of moved back")
    assert plan("2026-01-10", rebase=True).reason == "rebase requested"
    assert inc.plan_build(con, model="m", target="s.target", key="user_id", sources=sources, code_version="v2",
                          as_of=datetime(2026, 1, 10)).reason == "code changed"
    assert inc.plan_build(con, model="m", target="s.target", key="user_id", sources=sources, code_version="v1",
                          as_of=datetime(2026, 1, 10), params={"k": 2}).reason == "settings changed"
    # a backfill, then "now" again: the rows of users who did nothing since would keep the past as-of
    back = plan("2026-01-04")
    inc.write_state(con, "m", "v1", datetime(2026, 1, 4), back, params={"k": 1})
    assert plan("2026-01-04").mode == "incremental"  # the backfill again: nothing new
    assert plan("2026-01-10").reason.startswith("the last build was a backfill")
    # a state reset by another asset (reviews re-scored): one full build that says why, not "first build"
    inc.write_state(con, "m", "v1", datetime(2026, 1, 10), plan("2026-01-10"), params={"k": 1})
    inc.reset_state(con, ["m"], "reviews scored again with a new scorer")
    reset = plan("2026-01-10")
    assert (reset.mode, reset.reason) == ("full", "build state reset: reviews scored again with a new scorer")
    assert inc.built_watermark(con, 3, ["m"])[1] == "input m has no build state"  # a build reading it: as if deleted
    inc.write_state(con, "m", "v1", datetime(2026, 1, 10), reset, params={"k": 1})
    assert plan("2026-01-10").mode == "incremental"


def test_new_rule_settings_rescore_everyone(two_deliveries):
    """The rule-based columns are stamped with a hash of their settings: changing one rewrites every row."""
    from seg_assets.refresh import run_refresh
    from seg_assets.segmentation.scoring import USER_SEGMENTS

    assert run_refresh(two_deliveries).success
    defs = build_defs(two_deliveries)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[USER_SEGMENTS],
        run_config={"ops": {"analytics__user_segments": {"config": {"rfm_bins": 3}}}})
    assert result.success
    [mat] = result.asset_materializations_for_node("analytics__user_segments")
    with duckdb.connect(str(data_paths(two_deliveries).warehouse), read_only=True) as con:
        users, versions, top = con.sql("SELECT count(*), count(DISTINCT rules_version), max(r_score) "
                                       "FROM analytics.user_segments").fetchall()[0]
    assert mat.metadata["rows_rewritten"].value == users and versions == 1 and top == 3
    assert mat.metadata["users_assigned"].value == 0  # the segments themselves were kept


def test_the_features_check_names_the_feature_out_of_range(two_deliveries):
    """DuckDB's aggregates per feature, compared with the dictionary: a failure says which feature broke which bound."""
    from seg_assets.definitions import all_assets, all_checks
    from seg_assets.features.assets import USER_FEATURES
    from seg_assets.resources import build_resources

    check = dg.AssetCheckKey(USER_FEATURES, "user_features_valid")

    def run_check():
        result = dg.materialize([*all_assets(), *all_checks()], selection=dg.AssetSelection.checks(check),
                                resources=build_resources(two_deliveries), raise_on_error=False)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation

    good = run_check()
    assert good.passed and good.metadata["violations"].value == []
    with duckdb.connect(str(data_paths(two_deliveries).warehouse)) as con:
        con.sql("UPDATE features.user_features SET recency_days = -3 WHERE user_id = (SELECT min(user_id) FROM features.user_features)")
        con.sql("UPDATE features.user_features SET sessions = NULL WHERE user_id = (SELECT max(user_id) FROM features.user_features)")
    bad = run_check()
    assert not bad.passed
    assert bad.metadata["violations"].value == ["recency_days: min -3 < lowest 0", "sessions: 1 nulls (allowed 0)"]
    assert "recency_days: min -3 < lowest 0; sessions: 1 nulls (allowed 0)" in bad.description


ADDITIVE_CLICKS = """-- materialized: incremental
-- incremental_strategy: additive
-- unique_key: user_id, category
SELECT user_id, category, count(*) AS events FROM raw.clicks
WHERE event_ts <= getvariable('as_of') AND category IS NOT NULL
GROUP BY user_id, category
"""


def test_an_additive_model_merges_rows_whose_time_has_come(data_dir, tmp_path, monkeypatch):
    """An additive model (clicks per user and category) adds the new rows' counts to the stored ones. Rows
    delivered earlier but dated after the last build's as-of count once as-of passes them, with no new file:
    still exactly a full rebuild."""
    from seg_assets.features.sql_models import sql_assets
    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment
    from seg_assets.settings import sql_dir

    sql = tmp_path / "sql"
    shutil.copytree(sql_dir(), sql)
    (sql / "features" / "user_click_categories.sql").write_text(ADDITIVE_CLICKS)
    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    assets = [ingest_landing, review_sentiment, *sql_assets(sql)]  # staging.stg_reviews reads review_sentiment

    def build(root, as_of=None, tags=None):
        assert dg.materialize(assets, resources=build_resources(root, as_of), tags=tags).success

    build(data_dir, (DEFAULT_END - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    before = _rows(data_dir, "features.user_click_categories")
    build(data_dir)  # as-of moves to the latest event: three days of already-loaded rows come inside it
    mode, merged = _builds(data_dir)["features.user_click_categories"]
    assert mode == "incremental" and merged > 0
    after = _rows(data_dir, "features.user_click_categories")
    assert after != before
    full = tmp_path / "full"
    shutil.copytree(data_dir, full)
    build(full, tags={REBASE_TAG: "true"})
    assert _rows(full, "features.user_click_categories") == after


def test_an_additive_model_cannot_read_rewritten_rows(tmp_path):
    """stg_orders reads staging.line_orders, whose builds rewrite an order's row (more lines, or the order row
    delivered later), and raw.orders, whose rows a source with keep: latest replaces: added up again, that order
    would count twice. Refused at load time, with the fix. Raw clicks are events, never replaced, but stg_clicks gives
    a device's anonymous clicks to the customer a later login links it to (staging.identities): refused as well."""
    from seg_assets.features.sql_files import discover_models
    from seg_assets.features.sql_models import built_inputs, incremental_windows, updatable_inputs
    from seg_assets.settings import sql_dir

    sql = tmp_path / "sql"
    shutil.copytree(sql_dir(), sql)
    (sql / "features" / "user_order_categories.sql").write_text(
        ADDITIVE_CLICKS.replace("raw.clicks", "staging.stg_orders").replace("event_ts", "order_ts"))
    (sql / "features" / "user_click_categories.sql").write_text(ADDITIVE_CLICKS.replace("raw.clicks", "staging.stg_clicks"))
    models = {m.table: m for m in discover_models(sql)}
    assert built_inputs(["staging.stg_orders", "staging.stg_clicks", "raw.orders"], models) == ("staging.identities",
                                                                                                  "staging.line_orders")
    assert updatable_inputs(["staging.stg_orders", "staging.stg_clicks", "raw.clicks"], models) == ("raw.orders",)
    with pytest.raises(ValueError, match="reads staging.line_orders, raw.orders, whose rows can be rewritten.*delete\\+insert"):
        incremental_windows(models["features.user_order_categories"], models)
    with pytest.raises(ValueError, match="reads staging.identities, whose rows can be rewritten"):
        incremental_windows(models["features.user_click_categories"], models)


def test_an_additive_model_must_say_what_makes_it_additive():
    keys = ["user_id", "category"]
    times = {("staging", "stg_clicks"): "event_ts"}
    good = ("SELECT user_id, category, count(*) AS events, sum(n) AS n, min(event_ts) AS first_ts, max(event_ts) AS last_ts "
            "FROM staging.stg_clicks WHERE event_ts <= getvariable('as_of') GROUP BY user_id, category")
    assert set(additive_merge(good, keys, times)) == {"events", "n", "first_ts", "last_ts"}
    with pytest.raises(ValueError, match="without DISTINCT"):
        additive_merge(good.replace("count(*)", "count(DISTINCT session_id)"), keys, times)
    with pytest.raises(ValueError, match="without DISTINCT"):
        additive_merge(good.replace("count(*)", "avg(n)"), keys, times)
    with pytest.raises(ValueError, match="groups by exactly its unique key"):
        additive_merge(good.replace("GROUP BY user_id, category", "GROUP BY user_id, category, n"), keys, times)
    with pytest.raises(ValueError, match="event_ts <= getvariable"):
        additive_merge(good.replace("WHERE event_ts <= getvariable('as_of') ", ""), keys, times)


def test_a_new_windowed_column_stays_exact(data_dir, tmp_path, monkeypatch):
    """Add ``orders_7d`` to user_order_stats and nothing else: its 7-day window is read from the SQL, so as
    as-of moves and orders leave the window, the incremental table stays exactly what a full rebuild gives."""
    from seg_assets.features.sql_files import discover_models
    from seg_assets.features.sql_models import incremental_windows, set_as_of, sql_assets
    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources
    from seg_assets.reviews.assets import review_sentiment
    from seg_assets.settings import sql_dir

    sql = tmp_path / "sql"
    shutil.copytree(sql_dir(), sql, ignore=shutil.ignore_patterns("user_click_stats.sql", "user_category_activity.sql"))
    path = sql / "features" / "user_order_stats.sql"
    path.write_text(path.read_text().replace("    max(order_ts) FILTER", "    count(*) FILTER (WHERE status = 'completed' "
                                             "AND order_ts > getvariable('as_of') - INTERVAL 7 DAY) AS orders_7d,\n"
                                             "    max(order_ts) FILTER", 1))
    monkeypatch.setenv("SEG_SQL_DIR", str(sql))
    models = {m.table: m for m in discover_models(sql)}
    stats = models["features.user_order_stats"]
    assert incremental_windows(stats, models) == ("7 days", "30 days", "90 days")
    assets = [ingest_landing, review_sentiment, *sql_assets(sql)]  # staging.stg_reviews reads review_sentiment
    previous, left_window = {}, 0
    for days_back in (12, 9, 6, 3, 0):  # as-of moves forward: orders leave the 7-day window of users with no new order
        as_of = DEFAULT_END - timedelta(days=days_back)
        resources = build_resources(data_dir, as_of.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert dg.materialize(assets, resources=resources).success
        with duckdb.connect(str(data_paths(data_dir).warehouse), read_only=True) as con:
            set_as_of(con, as_of)
            table = con.sql("SELECT * FROM features.user_order_stats ORDER BY ALL").fetchall()
            full = con.sql(f"SELECT * FROM ({stats.sql.strip().rstrip(';')}) ORDER BY ALL").fetchall()
            (mode,) = con.sql("SELECT mode FROM meta.model_builds WHERE model = 'features.user_order_stats'").fetchall()[0]
            column = con.table("features.user_order_stats").columns.index("orders_7d")
        assert mode == ("full" if days_back == 12 else "incremental")
        assert table == full, as_of
        now = {row[0]: row for row in table}
        left_window += sum(now[user][column] < row[column] for user, row in previous.items())
        previous = now
    assert left_window > 0  # the case the window is for did happen


def test_late_rows_at_an_unchanged_as_of_are_scored_again(refreshed):
    """Orders that arrive late (dated before the latest activity) recompute their users' features at the same
    as-of; their churn scores and segments were kept until the daily rebase, as the as-of had not moved."""
    from seg_assets.refresh import run_refresh

    with duckdb.connect(str(data_paths(refreshed).warehouse), read_only=True) as con:
        as_of = con.sql("SELECT max(as_of) FROM features.user_features").fetchall()[0][0]
        late = [r[0] for r in con.sql("SELECT user_id FROM features.user_features WHERE frequency = 0 "
                                      "AND as_of = $a ORDER BY user_id LIMIT 40", params={"a": as_of}).fetchall()]
    rows = [f"late-{i},{u},{as_of - timedelta(days=2):%Y-%m-%d %H:%M:%S},250.00,3,,0,completed" for i, u in enumerate(late)]
    (refreshed / "landing" / "orders" / "late_orders.csv").write_text(
        "order_id,user_id,order_ts,amount,items,category,discount,status\n" + "\n".join(rows) + "\n")
    assert run_refresh(refreshed).success
    with duckdb.connect(str(data_paths(refreshed).warehouse), read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT as_of) FROM features.user_features").fetchall()[0][0] == 1  # not moved
        for table in ("analytics.churn_scores", "analytics.user_segments"):
            stale = con.sql(f"SELECT count(*) FROM features.user_features f JOIN {table} s USING (user_id) "
                            "WHERE s.features_build IS DISTINCT FROM f.features_build").fetchall()[0][0]
            assert stale == 0, table
        population = con.sql(f"SELECT user_id, {', '.join(RULE_INPUTS)} FROM features.user_features").pl()
        scored = con.sql("SELECT user_id, r_score, f_score, m_score, rfm_group, lifecycle_stage, value_tier "
                         "FROM analytics.user_segments WHERE list_contains($late, user_id) ORDER BY user_id",
                         params={"late": late}).pl()
    assert scored.height == len(late) and scored["f_score"].min() > 1  # buyers now, scored as buyers
    everyone = rule_based_segments(population).join(scored.select("user_id"), on="user_id", how="semi").sort("user_id")
    assert scored.equals(everyone.select(scored.columns))


def test_back_to_now_after_a_backfill_publishes_what_it_did_before(refreshed):
    """A backfill (--as-of in the past) rebuilds everything as of then; a plain refresh after it published that past
    for every user who did nothing since, and re-recorded the latest as-of's moves from it (a tester lost 189 moves)."""
    from seg_assets.refresh import run_refresh

    def published():
        with duckdb.connect(str(data_paths(refreshed).warehouse), read_only=True) as con:
            return (con.sql("SELECT user_id, segment_id, as_of FROM analytics.user_segments ORDER BY ALL").fetchall(),
                    con.sql("SELECT * FROM analytics.segment_history ORDER BY ALL").fetchall())

    before = published()
    as_of = max(r[2] for r in before[0])
    assert run_refresh(refreshed, as_of=f"{as_of - timedelta(days=10):%Y-%m-%dT%H:%M:%SZ}").success
    assert published()[1] == before[1]  # the backfill records no history
    assert run_refresh(refreshed, as_of=f"{as_of:%Y-%m-%dT%H:%M:%S}Z").success
    # every user as of now again, none left in the backfill's past, and none kept by the sticky rule in the segment
    # the backfill gave them: it sticks to the history, which a backfill does not write
    assert published() == before


def test_a_build_outside_the_transaction_that_fails_after_its_swap_leaves_the_left_users_to_its_rerun(tmp_path):
    """Spark swaps its Parquet outside DuckDB's transaction: the owners before the build were a temp table of the
    transaction, so a failure after the swap lost them and the re-run compared the new table with itself (a reviewer's)."""
    import duckdb

    from seg_assets.features.delta import KEPT_OWNERS, rebuild_outside_transaction
    from seg_assets.ingest.contract import REPLACED_KEYS_DDL, REPLACED_KEYS_TABLE

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.sql("CREATE SCHEMA meta; CREATE SCHEMA staging")
    con.sql(REPLACED_KEYS_DDL)
    now, later = tmp_path / "lines.parquet", tmp_path / "next.parquet"
    con.sql(f"COPY (SELECT 'o1' AS order_id, 'u1' AS user_id UNION ALL SELECT 'o2', 'u3') TO '{now}'")
    con.sql(f"COPY (SELECT 'o1' AS order_id, 'u2' AS user_id UNION ALL SELECT 'o2', 'u3') TO '{later}'")  # o1 moved
    con.sql(f"CREATE VIEW staging.lines AS SELECT * FROM read_parquet('{now}')")

    def fail() -> None:
        raise RuntimeError("after the swap")

    with pytest.raises(RuntimeError):
        rebuild_outside_transaction(con, "staging.lines", "order_id", lambda: shutil.copy(later, now), 7, then=fail)
    assert con.sql(f"SELECT count(*) FROM {REPLACED_KEYS_TABLE}").fetchall() == [(0,)]  # rolled back with the step
    rebuild_outside_transaction(con, "staging.lines", "order_id", lambda: None, 8)  # the re-run: the table is new already
    assert con.sql(f"SELECT file_id, value FROM {REPLACED_KEYS_TABLE}").fetchall() == [(8, "u1")]
    assert con.sql(f"SELECT count(*) FROM {KEPT_OWNERS}").fetchall() == [(0,)]
    # a failed build, builds elsewhere that bring an order o3 (u5), then a build that moves it: u5 is recorded too
    with pytest.raises(RuntimeError):
        rebuild_outside_transaction(con, "staging.lines", "order_id", lambda: None, 9, then=fail)
    con.sql(f"COPY (SELECT * FROM (VALUES ('o1', 'u2'), ('o2', 'u3'), ('o3', 'u5')) t(order_id, user_id)) TO '{now}'")
    con.sql(f"COPY (SELECT * FROM (VALUES ('o1', 'u2'), ('o2', 'u3'), ('o3', 'u6')) t(order_id, user_id)) TO '{later}'")
    rebuild_outside_transaction(con, "staging.lines", "order_id", lambda: shutil.copy(later, now), 10)
    assert con.sql(f"SELECT file_id, value FROM {REPLACED_KEYS_TABLE} WHERE file_id = 10").fetchall() == [(10, "u5")]


def test_only_a_table_keyed_by_one_other_id_records_the_users_it_leaves():
    """A key of two columns (`user_id, category`, an additive model's) was read as one: every later Spark build of such
    a model failed on the SQL it made (a reviewer's)."""
    import duckdb

    from seg_assets.features.delta import _owned
    from seg_assets.features.sql_files import SqlModel

    def model(key: str | None, strategy: str = "recompute") -> SqlModel:  # the one rule both engines read (a reviewer's)
        return SqlModel("staging", "t", "SELECT 1", "incremental", "", (), Path("t.sql"), key, None, strategy)

    assert model("order_id").owner_key == "order_id" and model(" order_id ").owner_key == "order_id"
    assert model("user_id, category").owner_key is None and model("user_id").owner_key is None and model(None).owner_key is None
    assert model("order_id", "additive").owner_key is None  # merged rows, not a key's rebuilt
    con = duckdb.connect()
    con.sql("CREATE TABLE t (order_id VARCHAR, user_id VARCHAR, category VARCHAR)")
    con.sql("CREATE TABLE n (order_id VARCHAR)")
    assert _owned(con, "main.t", "order_id") and not _owned(con, "main.t", None) and not _owned(con, "main.n", "order_id")


def test_a_build_record_replaced_says_when_it_was_built():
    """`INSERT OR REPLACE` left a replaced row's `built_at` at its first build (a tester's)."""
    import time
    from types import SimpleNamespace

    from seg_assets.features import incremental

    con = duckdb.connect()
    plan = SimpleNamespace(max_file_id=1, mode="full", changed=0, reason="first")
    incremental.write_state(con, "m", "v1", datetime(2026, 1, 1), plan)
    [(first,)] = con.sql(f"SELECT built_at FROM {incremental.STATE_TABLE}").fetchall()
    time.sleep(0.01)
    incremental.write_state(con, "m", "v1", datetime(2026, 1, 2), plan)
    assert con.sql(f"SELECT built_at > ? FROM {incremental.STATE_TABLE}", params=[first]).fetchall() == [(True,)]
