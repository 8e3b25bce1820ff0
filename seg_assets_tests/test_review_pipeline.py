"""Review sentiment end to end: demo reviews through ingestion, scoring, review features, churn, profiles and BI;
only new reviews scored on the next refresh; without reviews everything still publishes."""


import dagster as dg
import duckdb
import polars as pl

from seg_assets.demo.generate import generate
from seg_assets.features.dictionary import REVIEW_FEATURES
from seg_assets.features.sql_files import discover_models
from seg_assets.features.sql_models import set_as_of
from seg_assets.publish.assets import BI_SEGMENTS, PUBLISHED_TABLES
from seg_assets.refresh import run_refresh
from seg_assets.report import not_computed
from seg_assets.reviews.assets import REVIEW_SENTIMENT
from seg_assets.segmentation.profiles import REVIEWS_NOT_AVAILABLE
from seg_assets_tests.bi_copy import read_bi


def scored_now(instance: dg.DagsterInstance) -> int:
    event = instance.get_latest_materialization_event(REVIEW_SENTIMENT)
    return int(event.asset_materialization.metadata["scored_now"].value)


def test_demo_reviews_show_per_segment_sentiment_and_only_new_reviews_are_scored(tmp_path):
    generate(tmp_path, users=2_500, days=200, seed=7, with_reviews=True, with_lines=True)
    (tmp_path / "landing" / "reviews" / "ghosts.csv").write_text(  # users no other delivery names: in no profile, counted
        "review_id,user_id,review_ts,rating,text\ng1,ghost1,2026-10-01T10:00:00Z,1,Awful\ng2,ghost2,2026-10-02T10:00:00Z,5,Great\n")
    instance = dg.DagsterInstance.ephemeral()
    outcome = run_refresh(tmp_path, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    profiled = instance.get_latest_materialization_event(dg.AssetKey(["analytics", "segment_profiles"])).asset_materialization
    assert profiled.metadata["reviews_without_segment"].value == 2
    landed = pl.concat([pl.read_parquet(tmp_path / "landing" / "reviews" / "*.parquet").select("review_id"),
                        pl.DataFrame({"review_id": ["g1", "g2"]})])
    scored = read_bi(tmp_path, "SELECT * FROM analytics.review_sentiment")
    assert scored.height == landed.height == scored_now(instance) and "text" not in scored.columns

    # the text's label agrees with the planted tone (English texts, clear tone)
    tones = pl.read_parquet(tmp_path / "truth" / "review_tones.parquet")
    clear = scored.join(tones, on="review_id").filter((pl.col("label_from") == "text") & (pl.col("tone") != "neutral"))
    assert clear.height > 500 and (clear["label"] == clear["tone"]).mean() >= 0.9
    assert scored.filter(pl.col("note") == "language not supported: de").height > 0  # German texts: stars only

    # per segment: where the lapsed shoppers land, reviews are more often negative than where the loyal ones do
    truth = pl.read_parquet(tmp_path / "truth" / "shopper_types.parquet")
    segments = read_bi(tmp_path, "SELECT user_id, segment_id FROM analytics.user_segments")
    home = dict(truth.join(segments, on="user_id").group_by("shopper_type", "segment_id").len()
                .sort("len", descending=True).unique("shopper_type", keep="first").select("shopper_type", "segment_id").iter_rows())
    profiles = read_bi(tmp_path, "SELECT * FROM analytics.segment_profiles")
    share = dict(profiles.select("segment_id", "negative_review_share").iter_rows())
    assert home["lapsed"] != home["loyal_high_value"]
    assert share[home["lapsed"]] > share[home["loyal_high_value"]] + 0.1
    notes = profiles["reviews_note"].to_list()
    assert all("reviews negative (shop: " in n for n in notes), notes
    assert profiles.filter(pl.col("basket_rules") != "").height >= 2  # strongest basket rules in the profile
    undocumented = read_bi(tmp_path, "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE comment "
                                     "IS NULL AND database_name = 'segments'")  # BI tools show each column's description
    assert undocumented.height == 0, undocumented.rows()
    meta = instance.get_latest_materialization_event(BI_SEGMENTS).asset_materialization.metadata
    assert {f"columns: {t}" for t in PUBLISHED_TABLES} <= set(meta)  # the same descriptions in the UI, with types
    schema = {c.name: c for c in meta["columns: analytics.user_segments"].schema.columns}
    assert schema["churn_probability"].type == "DOUBLE" and "probability" in schema["churn_probability"].description
    churn = read_bi(tmp_path, "SELECT count(*) AS n FROM analytics.churn_scores")["n"][0]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        features = con.sql("SELECT features FROM meta.churn_models ORDER BY fitted_at DESC LIMIT 1").fetchall()
        assert churn > 0 and set(REVIEW_FEATURES) & set(features[0][0])  # churn learns from reviews when they exist

        # a new delivery of three reviews: only those are scored; earlier ones keep their rows
        users = con.sql("SELECT user_id FROM features.user_features WHERE frequency > 0 ORDER BY user_id LIMIT 3").fetchall()
        (as_of,) = con.sql("SELECT max(as_of) FROM features.user_features").fetchall()[0]
        before = dict(con.sql("SELECT user_id, reviews FROM features.user_features").fetchall())
    finally:
        con.close()
    new = pl.DataFrame({"review_id": ["x1", "x2", "x3"], "user_id": [u for (u,) in users], "order_id": [None] * 3,
                        "review_ts": [as_of.replace(microsecond=0)] * 3, "rating": [1, 5, None],
                        "text": ["Broken on arrival, awful.", "Lovely, thank you!",
                                 "Die Qualität ist leider nicht gut, ich bin sehr enttäuscht."]})
    new.write_csv(tmp_path / "landing" / "reviews" / "reviews_extra.csv")
    outcome = run_refresh(tmp_path, instance=instance)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    assert scored_now(instance) == 3
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        labels = dict(con.sql("SELECT review_id, label FROM analytics.review_sentiment WHERE review_id LIKE 'x%'").fetchall())
        assert labels == {"x1": "negative", "x2": "positive", "x3": None}  # German, no stars: no label
        after = dict(con.sql("SELECT user_id, reviews FROM features.user_features").fetchall())
        assert all(after[u] == before[u] + 1 for (u,) in users)
        mode = con.sql("SELECT mode FROM meta.model_builds WHERE model = 'features.user_review_stats'").fetchall()
        assert mode == [("incremental",)]
        # the incremental table equals a full build of the model
        model = next(m for m in discover_models() if m.name == "user_review_stats")
        set_as_of(con, as_of)
        full = con.sql(model.sql).pl().sort("user_id")
        table = con.sql("SELECT * FROM features.user_review_stats").pl().sort("user_id")
        assert table.equals(full.select(table.columns))
    finally:
        con.close()


def test_without_reviews_everything_publishes_and_profiles_say_so(tmp_path):
    generate(tmp_path, users=1_200, days=60, seed=3)
    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    profiles = read_bi(tmp_path, "SELECT reviews, reviews_note, negative_review_share FROM analytics.segment_profiles")
    assert profiles["reviews_note"].to_list() == [REVIEWS_NOT_AVAILABLE] * profiles.height
    assert profiles["negative_review_share"].null_count() == profiles.height and profiles["reviews"].sum() == 0
    assert read_bi(tmp_path, "SELECT count(*) AS n FROM analytics.review_sentiment")["n"][0] == 0
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        assert any(line.startswith("reviews: no reviews delivered") for line in not_computed(con))
    finally:
        con.close()


def test_a_bad_lexicon_file_is_one_line_and_publishes_nothing(tmp_path):
    generate(tmp_path, users=300, days=30, seed=2)
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "de.txt").write_text("gut\tsehr\n", encoding="utf-8")
    outcome = run_refresh(tmp_path)
    assert not outcome.success
    errors = [p for p in outcome.problems if p.kind == "error"]
    assert any("de.txt:1: expected 'token<TAB>valence'" in p.message and p.traceback is None for p in errors), errors
    assert not (tmp_path / "bi" / "segments.duckdb").exists()


