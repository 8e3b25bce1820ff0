"""``analytics/review_sentiment``: one row per review with the sentiment of its text (never the text itself).

Incremental: only reviews not yet scored with the current scorer (VADER's version, the lexicon files, the
rules of sentiment.py) are read and scored, each distinct (text, stars) once; when raw.reviews and this table have
the rows (and raw.reviews the last file id) they had after the last scoring (``meta.review_sentiment_state``), nothing
is read at all. When the scorer changes, every review is scored again and the per-user review aggregates are rebuilt
in full (their incremental builds only see new rows).
"""

import time

import dagster as dg
import polars as pl

from seg_assets.errors import input_failure
from seg_assets.features import incremental as inc
from seg_assets.features.sql_files import discover_models
from seg_assets.features.sql_models import GROUP as FEATURES_GROUP
from seg_assets.features.user_features import USER_FEATURES_TABLE
from seg_assets.ingest.assets import RAW_KEYS
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.reviews.sentiment import LexiconError, load_scorer, score_reviews
from seg_assets.spark.session import Engine
from seg_assets.warehouse import registered, table_exists, transaction

GROUP = FEATURES_GROUP  # scoring text is feature preparation: the feature SQL (staging.stg_reviews) reads it
REVIEW_SENTIMENT = dg.AssetKey(["analytics", "review_sentiment"])
RAW_REVIEWS = RAW_KEYS["reviews"]
TABLE = "analytics.review_sentiment"
COLUMNS = {"review_id": "VARCHAR", "user_id": "VARCHAR", "order_id": "VARCHAR", "review_ts": "TIMESTAMP",
           "rating": "INTEGER", "language": "VARCHAR", "sentiment": "DOUBLE", "label": "VARCHAR", "label_from": "VARCHAR",
           "note": "VARCHAR", "scored_with": "VARCHAR"}
STATE = "meta.review_sentiment_state"  # raw.reviews as of the last scoring: while it holds, nothing new to score


def _reviews_seen(con, version: str) -> tuple | None:
    """(scorer version, rows and last file id of raw.reviews, rows scored): every row of raw.reviews, new or an edit
    replacing one (keep: latest), carries its file's ledger id, so this is cheap to read and moves with every
    delivery, rollback, new scorer or loss of scored rows (None: no reviews table)."""
    if not table_exists(con, "raw.reviews"):
        return None
    rows, last = con.sql("SELECT count(*), coalesce(max(_file_id), 0) FROM raw.reviews").fetchall()[0]
    (scored,) = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0]
    return (version, int(rows), int(last), int(scored))


def _downstream_models() -> list[str]:
    """Incremental tables whose rows are built from review sentiment: rebuilt in full after a re-score."""
    return [m.table for m in discover_models() if ("staging", "stg_reviews") in m.upstream] + [USER_FEATURES_TABLE]


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=REVIEW_SENTIMENT, deps=[RAW_REVIEWS], group_name=GROUP, pool="duckdb", kinds={"duckdb", "python"},
    description="Per review: language, text sentiment (VADER compound, -1..1; NULL when the language has no lexicon), "
    "label (positive / neutral / negative; from the stars when the text cannot be scored) and where the label came "
    "from. The text itself stays in raw.reviews. Incremental: only new and edited reviews are scored.",
)
def review_sentiment(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings, engine: Engine):
    lexicons = settings.paths.sentiment_lexicons
    try:
        scorer = load_scorer(lexicons)
    except (LexiconError, UnicodeDecodeError) as error:
        raise input_failure(f"review sentiment: {error} (fix or remove the file in {lexicons})") from None
    with duckdb.get_connection() as con:
        con.sql(f"CREATE TABLE IF NOT EXISTS {TABLE} (" + ", ".join(f"{c} {t}" for c, t in COLUMNS.items()) + ")")
        con.sql(f"CREATE TABLE IF NOT EXISTS {STATE} (scored_with VARCHAR, reviews BIGINT, max_file_id BIGINT, scored BIGINT)")
        seen = _reviews_seen(con, scorer.version)
        state = con.sql(f"SELECT * FROM {STATE}").fetchall()
        unchanged = seen is not None and state == [seen]
        # rows of files since the last scoring are new, or replaced an edited review (keep: latest): scored (again)
        since = int(state[0][2]) if state and state[0][0] == scorer.version else -1
        pending = pl.DataFrame() if seen is None or unchanged else con.sql(
            f"SELECT r.review_id, r.user_id, r.order_id, r.review_ts, r.rating, r.text, ($since >= 0 AND r._file_id > $since) "
            f"OR NOT EXISTS (SELECT 1 FROM {TABLE} s WHERE s.review_id = r.review_id) AS _owner_rebuilt "
            f"FROM raw.reviews r WHERE r._file_id > $since "
            f"OR NOT EXISTS (SELECT 1 FROM {TABLE} s WHERE s.review_id = r.review_id AND s.scored_with = $v) "
            "ORDER BY r.review_id", params={"v": scorer.version, "since": since}).pl()
        t0 = time.perf_counter()
        scored = score_reviews(pending, scorer) if pending.height else pl.DataFrame()
        seconds = time.perf_counter() - t0
        distinct = pending.select("text", "rating").n_unique() if pending.height else 0
        rescored, edited = 0, 0
        if pending.height:
            rows = pending.drop("text", "_owner_rebuilt").join(scored, on="review_id", how="left").with_columns(
                scored_with=pl.lit(scorer.version))
            # scored before, not edited since: only the scorer changed (the incremental builds cannot see that)
            old_rows = pending.filter(~pl.col("_owner_rebuilt")).select("review_id")
            with transaction(con), registered(con, scored_reviews=rows, rescored_reviews=old_rows):
                # an edited review's owner is recomputed by the incremental builds (its raw row is new); a review
                # whose unchanged text got another score is not: those make the per-user aggregates rebuild in full
                rescored, edited = con.sql(
                    f"SELECT count(*) FILTER (WHERE review_id IN (SELECT review_id FROM rescored_reviews)), count(*) "
                    f"FROM {TABLE} WHERE review_id IN (SELECT review_id FROM scored_reviews)").fetchall()[0]
                edited -= rescored  # scored before and scored again for their new row (keep: latest)
                con.sql(f"DELETE FROM {TABLE} WHERE review_id IN (SELECT review_id FROM scored_reviews)")
                con.sql(f"INSERT INTO {TABLE} BY NAME SELECT * FROM scored_reviews")
                if rescored:  # old reviews changed score: the per-user aggregates cannot be updated by new rows alone
                    inc.reset_state(con, _downstream_models(), "reviews scored again with a new scorer (a lexicon "
                                    "or the scoring rules changed)")
        if seen is not None and not unchanged:
            with transaction(con):
                con.sql(f"DELETE FROM {STATE}")
                con.execute(f"INSERT INTO {STATE} VALUES (?, ?, ?, ?)", list(_reviews_seen(con, scorer.version)))
        (total,) = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0]
        labels = con.sql(f"SELECT label, label_from, count(*) AS reviews, round(avg(sentiment), 3) AS mean_sentiment "
                         f"FROM {TABLE} GROUP BY ALL ORDER BY ALL").pl()
        notes = con.sql(f"SELECT note, count(*) AS reviews FROM {TABLE} WHERE note IS NOT NULL GROUP BY ALL "
                        "ORDER BY reviews DESC LIMIT 10").pl()
        if engine.is_spark:  # the review feature models run on Spark and read this table there
            from seg_assets.spark.tables import export_duckdb_table

            export_duckdb_table(con, TABLE, settings.paths)
    rate = pending.height / seconds if seconds > 0 else 0.0
    how = (f"{pending.height:,} reviews scored ({distinct:,} distinct texts and stars; {edited:,} edited since their score; "
           f"{rescored:,} again with a new scorer), "
           f"{rate:,.0f}/s" if pending.height
           else "no new reviews since the last scoring (raw.reviews has the rows and files it had): nothing read"
           if unchanged else "no new reviews")
    context.log.info(f"review_sentiment: {how}; {total:,} reviews in {TABLE}; languages {', '.join(scorer.languages)}")
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(int(total)), "dagster/table_name": TABLE,
        "scored_now": dg.MetadataValue.int(pending.height), "scored_again": dg.MetadataValue.int(int(rescored)),
        "scored_edited": dg.MetadataValue.int(int(edited)), "scoring": how,
        "distinct_scored": dg.MetadataValue.int(distinct),
        "reviews_per_second": dg.MetadataValue.float(round(rate, 1)), "scorer_version": scorer.version,
        "languages": ", ".join(scorer.languages), "lexicon_folder": str(lexicons),
        "labels": dg.MetadataValue.md(md_frame(labels) if labels.height else "no reviews"),
    }
    if notes.height:
        metadata["not_scored"] = dg.MetadataValue.md(md_frame(notes))
    if not total:
        metadata["skipped"] = "no reviews (landing/reviews/ is empty): review features are left out"
    return dg.MaterializeResult(metadata=metadata)


assets = [review_sentiment]
asset_checks: list = []
