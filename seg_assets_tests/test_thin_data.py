"""Thin data degrades, never crashes (issue 12): orders only, clicks only, no revenue, 50 users, one day, a
churn model under its floor. Each refresh succeeds and publishes ``bi/segments.duckdb``; what could not be
computed is left out (features, names, descriptions) or left null (churn), and the reason is shown.

Pure rules first (availability.py, naming.py, profiles.py), then real refreshes on real files and DuckDB.
"""

import shutil
from datetime import timedelta

import duckdb
import numpy as np
import polars as pl
import pytest
from rich.console import Console

from seg_assets.automation.jobs import refresh_run_config
from seg_assets.definitions import build_defs
from seg_assets.demo.generate import DEFAULT_END, generate, generate_followup
from seg_assets.refresh import SILENT as QUIET
from seg_assets.refresh import run_refresh
from seg_assets.report import not_computed, print_summary
from seg_assets.segmentation import naming
from seg_assets.segmentation.availability import (
    CLICK_FEATURES,
    NO_CLICKS,
    NO_ORDERS,
    NO_REVENUE,
    REVENUE_FEATURES,
    feature_availability,
    gained_data,
)
from seg_assets.segmentation.profiles import segment_profiles
from seg_assets.settings import data_paths

MODEL = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "discount_share", "cancel_rate",
         "sessions", "views", "session_to_order", "days_since_last_visit")


def users(n=200, seed=0, clicks=True, orders=True, revenue=True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(1, 300, n)
    freq = rng.poisson(3, n) if orders else np.zeros(n, dtype=int)
    sessions = rng.poisson(5, n) if clicks else np.zeros(n, dtype=int)
    money = freq * rng.gamma(2, 30, n) if revenue else np.zeros(n)
    return pl.DataFrame({
        "user_id": [f"u{i}" for i in range(n)], "tenure_days": tenure,
        "recency_days": np.where(freq > 0, rng.uniform(0, 1, n) * tenure, tenure), "frequency": freq, "monetary": money,
        "avg_order_value": np.where(freq > 0, money / np.maximum(freq, 1), 0.0),
        "discount_share": rng.uniform(0, 0.4, n) * (money > 0), "cancel_rate": rng.uniform(0, 0.2, n) * (freq > 0),
        "sessions": sessions, "views": sessions * 3, "session_to_order": np.minimum(freq / np.maximum(sessions, 1), 1) * (sessions > 0),
        "days_since_last_visit": np.where(sessions > 0, rng.uniform(0, 1, n) * tenure, tenure),
    })


def test_orders_only_leaves_out_every_click_feature():
    a = feature_availability(users(clicks=False), MODEL)
    assert set(a.left_out_features) == {f for f in CLICK_FEATURES if f in MODEL}
    assert set(a.by_reason()) == {NO_CLICKS}
    assert "days_since_last_visit" not in a.used  # it is the tenure without clicks: no information
    assert "frequency" in a.used and "monetary" in a.used


def test_no_revenue_and_no_orders_and_constant_columns():
    a = feature_availability(users(revenue=False), MODEL)
    assert dict(a.left_out) == {f: NO_REVENUE for f in REVENUE_FEATURES}
    b = feature_availability(users(orders=False), MODEL)
    assert {"recency_days", "frequency", "monetary"} <= set(b.by_reason()[NO_ORDERS])
    assert "sessions" in b.used and "days_since_last_visit" in b.used
    assert "cancel_rate" in b.left_out_features  # 0 for everyone without orders: constant
    c = feature_availability(users().with_columns(cancel_rate=pl.lit(0.0)), MODEL)
    assert c.left_out == (("cancel_rate", "the same value for every user"),)
    assert feature_availability(users(), MODEL).left_out == ()
    assert "no click events" in feature_availability(users(clicks=False), MODEL).describe()
    # purchase events are clicks: without clicks they are missing, not "the same value for every user"
    no_clicks = dict(feature_availability(users(clicks=False).with_columns(purchases=pl.lit(0)), (*MODEL, "purchases")).left_out)
    assert no_clicks["purchases"] == no_clicks["sessions"] == "no click events", no_clicks


def test_nothing_informative_keeps_everything_rather_than_nothing():
    one = users(1)
    assert feature_availability(one, MODEL).used == tuple(MODEL)


def test_identical_users_are_one_segment_of_everyone_said_so():
    """Nothing tells 30 users apart: one segment, named for no contrast ("At risk" for users who ordered today)."""
    from seg_assets.segmentation.fit import fit_segment_model
    from seg_assets.segmentation.model import ModelConfig

    same = users(1).select(pl.all().repeat_by(30).explode()).with_columns(user_id=pl.Series([f"u{i}" for i in range(30)]))
    model = fit_segment_model(same, ModelConfig(features=MODEL))
    assert model.k == 1 and model.names == ["All customers"]
    assert model.metrics["single_segment"] == "one segment of all 30 users: every feature has one value for everyone"


def test_gained_data_says_which_left_out_features_have_data_now():
    left_out = [f for f in CLICK_FEATURES if f in MODEL]
    assert gained_data(left_out, users(clicks=False)) == []
    assert set(gained_data(left_out, users())) == set(left_out)


def test_names_only_use_archetypes_whose_data_is_there():
    browsing_like = {"frequency": 0.2, "recency_days": 0.6, "monetary": 0.3, "tenure_days": 0.5}  # no click features
    scores = naming.archetype_scores(browsing_like)
    assert "Window shoppers" not in scores and "Bargain hunters" not in scores
    names = naming.assign_names({1: browsing_like, 2: {**browsing_like, "frequency": 0.8}, 3: {**browsing_like, "tenure_days": 0.9}},
                                stages={1: "engaged", 2: "engaged", 3: "engaged"})
    assert not any("Window shoppers" in n or "Bargain" in n for n in names.values()), names
    assert len(set(names.values())) == 3
    # no archetype has its data: a neutral name, still unique
    bare = naming.assign_names({1: {"cancel_rate": 0.7}, 2: {"cancel_rate": 0.2}}, stages={1: "engaged", 2: "engaged"})
    assert len(set(bare.values())) == 2 and all(n.startswith("Segment") for n in bare.values())


def test_descriptions_say_nothing_about_visits_without_click_data():
    frame = users(300, clicks=False)
    used = feature_availability(frame, MODEL).used
    ids = np.arange(frame.height) % 3
    prof = segment_profiles(frame, ids, used)
    text = " ".join(prof["description"])
    assert "session" not in text and "visit" not in text and "spends" in text
    no_money = users(300, revenue=False)
    prof = segment_profiles(no_money, ids, feature_availability(no_money, MODEL).used)
    assert prof["revenue_share"].null_count() == prof.height and "spends" not in " ".join(prof["description"])


# --- real refreshes -------------------------------------------------------------------------------------------

def published(root) -> tuple[pl.DataFrame, pl.DataFrame]:
    bi = data_paths(root).bi / "segments.duckdb"
    assert bi.is_file()
    with duckdb.connect(str(bi), read_only=True) as con:
        return (con.sql("SELECT * FROM analytics.user_segments ORDER BY user_id").pl(),
                con.sql("SELECT * FROM analytics.segment_profiles ORDER BY segment_id").pl())


def refresh_ok(root, **kwargs):
    outcome = run_refresh(root, **kwargs)
    failures = [f for s in outcome.stages for f in s.failures]
    assert outcome.success, failures
    assert not [f for f in failures if "(WARN)" not in f], failures
    return outcome


def summary_text(root) -> str:
    console = Console(record=True, width=200)
    print_summary(root, console=console)
    return console.export_text()


def notes(root) -> list[str]:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return not_computed(con)


def write_csv(root, table: str, frame: pl.DataFrame) -> None:
    folder = data_paths(root).landing / table
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_csv(folder / f"{table}.csv")


def test_orders_only_refresh_never_talks_about_sessions(tmp_path):
    generate(tmp_path, users=600, days=60, seed=3, with_clicks=False, with_customers=False)
    refresh_ok(tmp_path)
    segs, prof = published(tmp_path)
    assert segs.height > 0 and segs["segment_name"].null_count() == 0
    assert not any("Window shoppers" in n for n in prof["segment_name"])
    text = " ".join(prof["description"]) + " ".join(prof["top_features"]) + " ".join(prof["rules"].fill_null(""))
    assert "session" not in text and "visit" not in text
    assert any("no click events" in n and "sessions" in n for n in notes(tmp_path))
    assert "segments: features without data when v0001 was fitted, left out (no click events)" in summary_text(tmp_path)
    # Clicks arrive later: the left-out features have data now, so the next (when_needed) refresh re-fits with them.
    generate(tmp_path / "with_clicks", users=600, days=60, seed=3, with_customers=False)
    shutil.copytree(tmp_path / "with_clicks" / "landing" / "clicks", data_paths(tmp_path).landing / "clicks",
                    dirs_exist_ok=True)
    refresh_ok(tmp_path)
    with duckdb.connect(str(data_paths(tmp_path).warehouse), read_only=True) as con:
        (reason, features), = con.sql("SELECT fit_reason, features FROM meta.segment_models WHERE in_service").fetchall()
    assert "now have data: sessions" in reason and "sessions" in features
    assert not any("no click events" in n for n in notes(tmp_path))


def test_clicks_only_refresh_publishes_segments(tmp_path):
    generate(tmp_path, users=600, days=60, seed=3, with_customers=False)
    shutil.rmtree(data_paths(tmp_path).landing / "orders")
    refresh_ok(tmp_path)
    segs, prof = published(tmp_path)
    assert segs.height > 0 and segs["segment_id"].n_unique() >= 2
    assert prof["revenue_share"].null_count() == prof.height
    assert not any(a in n for n in prof["segment_name"] for a in ("High-value", "Bargain", "Occasional buyers"))
    assert "ordered" not in " ".join(prof["description"])
    assert any(NO_ORDERS in n for n in notes(tmp_path))
    assert any(n.startswith("basket rules and recommendations: no order lines delivered") for n in notes(tmp_path))
    text = summary_text(tmp_path)
    assert "n/a" in text and NO_ORDERS in text


def test_a_customers_only_shop_fits_on_its_one_feature_without_a_retry(tmp_path):
    """A first delivery of the CRM export alone leaves one model feature (tenure): the fit's projection plot asked PCA
    for two components of one, failed after the fit was recorded, and the retry said "kept v0001 (no refit needed)"
    for the model that run had fitted (a tester's)."""
    generate(tmp_path, users=600, days=60, seed=3, with_clicks=False)
    shutil.rmtree(data_paths(tmp_path).landing / "orders")
    outcome = refresh_ok(tmp_path)
    assert not [p for p in outcome.problems if "retried" in p.message], outcome.problems
    segs, _ = published(tmp_path)
    assert segs.height > 0


def test_a_shops_first_order_publishes_one_user_without_a_retry(tmp_path):
    """One order, one user: the projection plot asked PCA for two components of one row and the step failed once,
    then was retried ("segment_model: failed and was retried: ValueError: n_components=2 ...", found by accident)."""
    (data_paths(tmp_path).landing / "orders").mkdir(parents=True)
    (data_paths(tmp_path).landing / "orders" / "first.csv").write_text(
        "order_id,user_id,order_ts,amount,items,status\no1,u1,2026-10-01T10:00:00Z,5,1,completed\n")
    outcome = refresh_ok(tmp_path)
    assert not [p for p in outcome.problems if "retried" in p.message], outcome.problems
    segs, _ = published(tmp_path)
    assert segs["user_id"].to_list() == ["u1"]


def test_one_segment_is_said_with_its_cause_when_only_one_stage_is_big_enough():
    """A shop in its first month: only the 'new' stage has enough users, and it is one segment by design; the model
    had one segment and "Not computed" said nothing."""
    import numpy as np

    from seg_assets.segmentation.fit import fit_segment_model
    from seg_assets.segmentation.model import ModelConfig

    rng = np.random.default_rng(0)
    n = 200
    frame = pl.DataFrame({"user_id": np.arange(n), "tenure_days": rng.integers(0, 30, n).astype(float),
                          "recency_days": rng.integers(0, 30, n).astype(float), "frequency": rng.integers(0, 6, n),
                          "monetary": rng.gamma(2, 50, n), "sessions": rng.integers(1, 40, n).astype(float),
                          "days_since_last_visit": rng.integers(0, 30, n).astype(float)})
    model = fit_segment_model(frame, ModelConfig())
    assert len(model.segment_ids) == 1
    assert "only the 'new' lifecycle stage has the" in model.metrics["single_segment"]


def test_not_computed_names_unscored_languages_and_empty_rules():
    """Reviews in a language without a lexicon, and order lines that give no rule or list: said, with why."""
    con = duckdb.connect()
    for schema in ("raw", "meta", "analytics"):
        con.sql(f"CREATE SCHEMA {schema}")
    con.sql("CREATE TABLE analytics.review_sentiment AS SELECT * FROM (VALUES ('de', NULL, 'language not supported: de'), "
            "('fr', NULL, 'language not supported: fr'), ('en', 0.5, NULL), ('en', NULL, 'no text')) t(language, sentiment, note)")
    con.sql("CREATE TABLE raw.order_items AS SELECT * FROM (VALUES ('o1', 'p1', 'completed'), ('o1', 'p2', 'completed'), "
            "('o2', 'p1', 'completed')) t(order_id, product_id, status)")
    con.sql("CREATE TABLE analytics.basket_rules (segment_id INTEGER)")
    con.sql("CREATE TABLE meta.basket_scopes AS SELECT -1 AS scope, 40 AS baskets")
    con.sql("CREATE TABLE analytics.user_recommendations (user_id VARCHAR)")
    lines = not_computed(con)
    assert "reviews: 2 of 4 without a sentiment score, in a language without a lexicon (de, fr)" in lines[0]
    assert lines[1].startswith("basket rules: none passed the thresholds in 40 baskets")
    assert lines[2].startswith("recommendations: none")
    # no basket at all (every order cancelled): thresholds are not the cause; rows delivered but all rejected are not
    # "none delivered"
    # every basket of one product (a Shopify export's later lines rejected): no threshold is the cause either
    con.sql("DELETE FROM raw.order_items WHERE product_id = 'p2'")
    con.sql("CREATE TABLE meta.ingest_ledger AS SELECT 'order_items' AS table_name, 77113 AS delivered, 38924 AS rejected")
    assert ("basket rules: none of the 40 baskets holds two products (one line per order); 38,924 order lines were "
            "rejected (raw.rejects says why): no threshold finds a pair") in not_computed(con)
    con.sql("DROP TABLE meta.ingest_ledger")
    con.sql("UPDATE meta.basket_scopes SET baskets = 0")
    assert any(n.startswith("basket rules: no basket left: every order") for n in not_computed(con))
    con.sql("DELETE FROM analytics.review_sentiment; DELETE FROM raw.order_items")
    con.sql("CREATE TABLE meta.ingest_ledger AS SELECT * FROM (VALUES ('order_items', 143, 143), ('reviews', 18, 18)) "
            "t(table_name, delivered, rejected)")
    lines = not_computed(con)
    assert "reviews: no reviews taken in: 18 delivered, 18 rejected" in lines[0]
    assert "basket rules and recommendations: no order lines taken in: 143 delivered, 143 rejected" in lines[1]


def test_zero_amounts_no_revenue_features_and_the_summary_does_not_crash(tmp_path):
    """A clickstream whose purchase events became orders with amount 0 (CSV, as a source would deliver)."""
    generate(tmp_path, users=600, days=60, seed=4, with_customers=False, with_clicks=True)
    orders_dir = data_paths(tmp_path).landing / "orders"
    orders = pl.concat([pl.read_parquet(f) for f in sorted(orders_dir.glob("*.parquet"))])
    shutil.rmtree(orders_dir)
    write_csv(tmp_path, "orders", orders.with_columns(amount=pl.lit(0.0), discount=pl.lit(None, dtype=pl.Float64),
                                                      order_ts=pl.col("order_ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")))
    refresh_ok(tmp_path)
    segs, prof = published(tmp_path)
    assert segs.height > 0 and prof["revenue_share"].null_count() == prof.height
    assert not any("Bargain" in n or "High-value" in n for n in prof["segment_name"])  # no amounts: no value claims
    assert set(segs["value_tier"]) == {"low"}  # nothing spent is never high or medium value
    assert any(NO_REVENUE in n and "monetary" in n for n in notes(tmp_path))
    assert NO_REVENUE in summary_text(tmp_path)


@pytest.mark.parametrize("users_, days", [(50, 60), (300, 1), (12, 60)], ids=["50-users", "one-day", "12-users"])
def test_tiny_populations_and_one_day_publish_segments(tmp_path, users_, days):
    generate(tmp_path, users=users_, days=days, seed=7)
    refresh_ok(tmp_path)
    segs, prof = published(tmp_path)
    assert segs.height == users_ and segs["segment_id"].null_count() == 0 and prof.height >= 1
    assert segs["churn_probability"].null_count() == segs.height  # no history for a churn model
    assert "churn: not scored" in summary_text(tmp_path)
    if users_ < 20:  # no lifecycle stage with min_stage_rows users: one segment of everyone, said so
        assert segs["segment_id"].n_unique() == 1 and prof.height == 1
        assert any("one segment of all 12 users" in n for n in notes(tmp_path))
        # the shop grows: the one-segment model does not lock the segmentation of the new data out of service
        generate_followup(tmp_path, users_, 120, 7, start=DEFAULT_END + timedelta(seconds=1), new_users=600)
        refresh_ok(tmp_path, refit=True)
        segs, prof = published(tmp_path)
        assert segs["segment_id"].n_unique() > 1 and prof.height > 1


def test_a_churn_model_under_its_floor_blocks_nothing(tmp_path):
    generate(tmp_path, users=600, days=200, seed=11, with_clicks=False, with_customers=False)
    job = build_defs(tmp_path).resolve_implicit_global_asset_job_def()
    config = refresh_run_config()
    config["ops"]["churn_model"] = {"config": {"min_auc": 0.99}}
    result = job.execute_in_process(run_config={**QUIET, **config}, raise_on_error=False)
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "churn_auc"]
    assert not check.passed and check.severity.value == "WARN"
    assert "churn columns left empty" in check.description
    segs, _ = published(tmp_path)
    assert segs.height > 0
    assert segs.select("churn_probability", "churn_risk", "expected_value_next_h").null_count().row(0) == (segs.height,) * 3
    with duckdb.connect(str(data_paths(tmp_path).warehouse), read_only=True) as con:
        assert con.sql("SELECT in_service, passed FROM meta.churn_models").fetchall() == [(False, False)]
    (line,) = [n for n in notes(tmp_path) if n.startswith("churn")]
    assert "< min_auc 0.99" in line and "churn_model.min_auc" in line


def test_an_as_of_before_every_row_says_so(tmp_path):
    """Rows were taken in, none by the as-of: the message names the as-of and the earliest row, not an empty ledger."""
    generate(tmp_path, users=50, days=30, seed=3)
    outcome = run_refresh(tmp_path, as_of="2020-01-01T00:00:00Z")
    failures = " ".join(str(f) for s in outcome.stages for f in s.failures)
    assert not outcome.success and "nothing happened by the as-of 2020-01-01 00:00" in failures, failures
    assert "refresh with a later --as-of" in failures


def test_customer_records_alone_date_the_refresh_by_the_latest_sign_up():
    """Without orders or clicks the as-of was the wall clock: the same files gave another refresh every day."""
    from datetime import datetime

    from seg_assets.warehouse import resolve_as_of

    con = duckdb.connect()
    con.sql("CREATE SCHEMA raw; CREATE TABLE raw.customers AS SELECT * FROM (VALUES ('u1', TIMESTAMP '2026-01-02 03:04:05'), "
            "('u2', TIMESTAMP '2026-02-01 00:00:00')) t(user_id, signup_ts)")
    assert resolve_as_of(con, None) == datetime(2026, 2, 1)
    con.sql("CREATE TABLE raw.orders AS SELECT TIMESTAMP '2026-01-15 00:00:00' AS order_ts")
    assert resolve_as_of(con, None) == datetime(2026, 1, 15)  # activity dates a refresh when there is some


def test_a_refresh_as_of_before_the_first_order_line_says_so_not_that_orders_were_cancelled():
    """A backfill before any order said "every order with lines was cancelled or a credit note" (a tester's --as-of)."""
    from seg_assets.report import not_computed

    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw; CREATE SCHEMA analytics; CREATE SCHEMA meta")
    con.execute("CREATE TABLE raw.order_items AS SELECT 'o1' AS order_id, TIMESTAMP '2026-06-01' AS order_ts")
    con.execute("CREATE TABLE analytics.user_segments AS SELECT 'u1' AS user_id, TIMESTAMP '2026-01-01' AS as_of, "
                "'model v0001' AS assigned_by")
    con.execute("CREATE TABLE analytics.basket_rules (segment_id INTEGER); CREATE TABLE analytics.user_recommendations (user_id VARCHAR)")
    con.execute("CREATE TABLE meta.basket_scopes (scope INTEGER, baskets BIGINT)")
    lines = [line for line in not_computed(con) if line.startswith(("basket rules", "recommendations"))]
    assert lines == ["basket rules: no order line placed by the as-of, 2026-01-01 00:00",
                     "recommendations: none: no order line placed by the as-of, 2026-01-01 00:00"], lines
    con.execute("UPDATE analytics.user_segments SET as_of = TIMESTAMP '2026-07-01'")
    assert any("every order with lines was cancelled" in line for line in not_computed(con))
