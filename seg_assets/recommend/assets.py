"""``analytics/user_recommendations``: each user's top-N products (model.py), refreshed with the order lines.

Thin wiring. A **full build** (first build, new order lines, cancelled order rows or replaced rows of either,
other settings or code, a rebase, a refresh as of another date in the past or the first one after it: the basket
counts' rule) recomputes the shared tables (``meta.rec_*``: popularity per segment and shop,
"also bought" products, category products, staples), re-fits the weights on the last horizon and re-ranks every user, a chunk of
users at a time. Otherwise nothing is ranked: users whose segment moved
since (with new clicks, say) and users new since keep their list, or have none, until the next delivery with
order lines or the daily rebase; new clicks and the exclusion window's clock wait for it too. Re-ranking the
moved users at once cost a scan of every click (4.7 CPU s at 1M users) for lists that the next full build redoes.
Only the lists of users no longer segmented are removed (a device a login linked to its customer: it left the
segments, churn scores and BI in that refresh, and its list stayed in BI until the next order lines; the anti-join
reads the table's user ids, 0.3 s at 10M rows and 1M users).
"""


import json

import dagster as dg
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.automation.limits import CheckedConfig
from seg_assets.baskets.assets import BASKET_INPUTS
from seg_assets.baskets.counts import as_of_moved, lines_after, watermark
from seg_assets.features import incremental as inc
from seg_assets.markdown import frame as md_frame
from seg_assets.recommend import model as M
from seg_assets.recommend.blend import Weights
from seg_assets.resources import Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation.registry import in_service_version
from seg_assets.segmentation.scoring import USER_SEGMENTS, segments_as_of
from seg_assets.settings import MAX_DAYS
from seg_assets.warehouse import table_exists, transaction

GROUP = "recommend"
USER_RECOMMENDATIONS = dg.AssetKey(["analytics", "user_recommendations"])
TABLE = "analytics.user_recommendations"
SEGMENTS = "SELECT user_id, segment_id FROM analytics.user_segments"
PREFIX = "meta.rec_"
NEXT = "analytics.user_recommendations_next"  # a full build's lists, renamed to TABLE in one transaction when complete
STATE_COLUMNS = ("watermark BIGINT, settings_key VARCHAR, as_of TIMESTAMP, weights JSON, users BIGINT, summary JSON, "
                 "built_at TIMESTAMP, until TIMESTAMP, segment_model VARCHAR")  # until: the as-of of lists that left
# later orders out; segment_model: the model in service they were ranked with


DEFAULTS = M.RecSettings()  # the model's defaults, so each lives in one place


class RecommendConfig(CheckedConfig):
    top_n: int = Field(default=DEFAULTS.top_n, ge=1, le=100, description="Products per user.")
    exclude_days: int = Field(default=DEFAULTS.exclude_days, ge=0, le=MAX_DAYS, description="Products the user bought in this many days "
                              "before as-of are not recommended, staples aside (re-bought in the next basket at least as "
                              "often as baskets hold them); 0: none excluded.")
    horizon_days: int = Field(default=DEFAULTS.horizon_days, ge=1, le=MAX_DAYS, description="The weights are fitted on purchases in this "
                              "many days before as-of (features as of its start).")
    candidates: int = Field(default=DEFAULTS.candidates, ge=1, le=1000, description="Per source (segment's popular, "
                            "also bought, category): products considered per user.")
    click_weight: float = Field(default=DEFAULTS.click_weight, ge=0, le=1000, description="A click counts this much of a purchased line "
                                "(category shares, clicked products); 0 ignores clicks.")
    click_days: int = Field(default=DEFAULTS.click_days, ge=0, le=MAX_DAYS, description="Only clicks in this many days "
                            "before as-of count (recent browsing; 0: every click).")
    max_basket_size: int = Field(default=DEFAULTS.max_basket_size, ge=2, description="Orders with more distinct products are left out "
                                 "(the rule and default of basket rules; set apart from basket_rules.max_basket_size).")
    max_fit_users: int = Field(default=DEFAULTS.max_fit_users, ge=100, description="Users (a hash sample) the weights are fitted on.")
    max_pair_users: int = Field(default=DEFAULTS.max_pair_users, ge=1_000, description="'Also bought' is counted over "
                                "up to this many shoppers (exact up to it, a hash sample beyond).")
    max_pair_products: int = Field(default=DEFAULTS.max_pair_products, ge=10, description="A shopper with more distinct "
                                   "products than this (a reseller) counts in no 'also bought' pair (its cost grows with "
                                   "the square of one shopper's products).")
    min_staple_repeats: int = Field(default=DEFAULTS.min_staple_repeats, ge=1, description="A product is a staple "
                                    "(recommendable the day after its purchase) only if bought again in the next basket "
                                    "at least this many times, besides as often as baskets hold it.")
    chunk_users: int = Field(default=125_000, ge=1_000, description="A full build ranks about this many users at a time "
                             "(bounds its memory; the result does not depend on it).")

    def settings(self) -> M.RecSettings:
        return M.RecSettings(**self.model_dump(exclude={"chunk_users"}))


def _empty(con, table: str = TABLE) -> None:
    con.sql(f"CREATE OR REPLACE TABLE {table} (" + ", ".join(f"{c} {t}" for c, t in M.REC_COLUMNS.items()) + ")")


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=USER_RECOMMENDATIONS, deps=[USER_SEGMENTS, *BASKET_INPUTS], group_name=GROUP, pool="duckdb", kinds={"duckdb"},
    automation_condition=rescore_on_new_inputs(),
    description="Top-N products per user (user_id, rank, product_id, score, reason): a logistic blend of the segment's "
    "popular products with the user's own purchases, what shoppers who bought them also bought, categories and clicks, "
    "fitted on the last horizon; "
    "products bought recently excluded (staples aside); users with thin history get their segment's popular products.",
)
def user_recommendations(context: dg.AssetExecutionContext, config: RecommendConfig, duckdb: Warehouse) -> dg.MaterializeResult:
    s = config.settings()
    with duckdb.get_connection() as con:
        lines = table_exists(con, "raw.order_items") and con.sql("SELECT count(*) > 0 FROM raw.order_items").fetchall()[0][0]
        if not lines or not table_exists(con, "analytics.user_segments"):
            reason = "no order lines (raw.order_items is empty): nothing to recommend from" if not lines else "no segments yet"
            _empty(con)
            context.log.info(f"recommendations skipped: {reason}")
            return dg.MaterializeResult(metadata={"skipped": reason, "dagster/row_count": 0})
        wm, as_of, model = watermark(con), segments_as_of(con), in_service_version(con)
        until = lines_after(con, as_of)  # the basket counts' rule: a refresh as of a past date
        state = con.sql("SELECT * FROM meta.rec_state").pl().to_dicts() if table_exists(con, "meta.rec_state") else []
        why = ("rebase requested" if inc.rebase_requested(context.run.tags) else "first build" if not state
               else "state of an older version" if "segment_model" not in state[0]
               else "new order lines or cancellations" if state[0]["watermark"] != wm
               else "settings or code changed" if state[0]["settings_key"] != s.key()
               else as_of_moved(until, state[0]["until"])
               or ("a new segment model in service" if state[0]["segment_model"] != model
                   else "table missing" if not table_exists(con, TABLE) else ""))
        if why:
            # built outside a transaction (each chunk's temp tables are freed as it ends; in one transaction DuckDB
            # keeps them all until the commit: 9.3 GiB at 1M users), published in one: a failure leaves the table
            users, weights = _full_build(con, s, as_of, config.chunk_users)
            summary = _summary(con, NEXT)
            with transaction(con):  # a rename, not a copy of 10M rows at 1M users
                con.sql(f"DROP TABLE IF EXISTS {TABLE}")
                con.sql(f"ALTER TABLE {NEXT} RENAME TO {TABLE.split('.')[1]}")
                con.sql(f"CREATE OR REPLACE TABLE meta.rec_state ({STATE_COLUMNS})")
                con.execute("INSERT INTO meta.rec_state VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?)",
                            [wm, s.key(), as_of, json.dumps(weights.__dict__), users, json.dumps(summary), until, model])
            mode = "full"
        else:
            stored = json.loads(state[0]["weights"])
            weights, summary, users = Weights(**{**stored, "coef": tuple(stored["coef"])}), json.loads(state[0]["summary"]), 0
            mode, as_of = "unchanged", state[0]["as_of"]
            left = _drop_unsegmented(con)
            why = ("no new order lines or cancellations: nothing re-ranked. Users whose segment moved or who are new "
                   f"since the last full build (as of {as_of:%Y-%m-%d %H:%M}) keep their list, or have none, until the next "
                   "delivery with order lines or the daily rebase; so do new clicks"
                   + (f"; the lists of {left} user(s) no longer segmented removed" if left else ""))
            if left:
                summary = json.loads(con.sql("SELECT summary FROM meta.rec_state").fetchall()[0][0])
    context.log.info(f"recommendations: {mode} ({why}), {users} users ranked; {weights.note}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(summary["rows"]), "dagster/table_name": TABLE,
        "users": dg.MetadataValue.int(summary["users"]), "mode": mode, "why": why, "users_ranked": dg.MetadataValue.int(users),
        "as_of": str(as_of), "weights": dg.MetadataValue.json(weights.as_dict()), "reasons": dg.MetadataValue.md(summary["reasons"]),
    })


def _drop_unsegmented(con) -> int:
    """Remove the lists of users no longer in the segment table (a device a login linked to its customer, an order's
    user who has nothing left: docs/identity.md), as segments and churn scores drop them, in the refresh that drops
    them, not at the next delivery with order lines; the state's summary follows. Returns the users removed."""
    with transaction(con):
        left = int(con.sql(f"SELECT count(DISTINCT user_id) FROM {TABLE} WHERE user_id NOT IN "
                           "(SELECT user_id FROM analytics.user_segments)").fetchall()[0][0])
        if left:
            con.sql(f"DELETE FROM {TABLE} WHERE user_id NOT IN (SELECT user_id FROM analytics.user_segments)")
            con.execute("UPDATE meta.rec_state SET summary = ?", [json.dumps(_summary(con, TABLE))])
    return left


def _summary(con, table: str) -> dict:
    """Rows, users and rows per reason of the table: kept in the state, so a run without new order lines reports
    them without reading the table (10M rows at 1M users)."""
    rows = con.sql(f"SELECT reason, count(DISTINCT user_id) AS users, count(*) AS rows FROM {table} GROUP BY 1 ORDER BY 3 DESC").pl()
    users = int(con.sql(f"SELECT count(DISTINCT user_id) FROM {table}").fetchall()[0][0])
    return {"rows": int(rows["rows"].sum()) if rows.height else 0, "users": users,
            "reasons": md_frame(rows) if rows.height else "no recommendations"}


def _full_build(con, s: M.RecSettings, as_of, chunk_users: int) -> tuple[int, Weights]:
    """Every user ranked into ``NEXT``, in chunks of about ``chunk_users`` users (by hash): a chunk's candidates are
    independent of the other users', and sorting one chunk at a time bounds the memory (and the sorts' cost, which
    grows faster than the rows). The ``meta.rec_*`` tables it replaces are read by full builds only."""
    M.load(con, s, SEGMENTS)
    weights = M.fit(con, as_of, s, serve=(PREFIX, False))
    for old in ("members", "together"):  # written by earlier versions, read by nothing
        con.sql(f"DROP TABLE IF EXISTS meta.rec_{old}")
    users = int(con.sql(f"SELECT count(*) FROM {M.SEGMENTS}").fetchall()[0][0])
    chunks = max(1, -(-users // chunk_users))
    chunk = f"hash(user_id) % {chunks}"
    clicks = s.click_weight > 0 and M._clicks(con)
    if clicks:  # every user's clicks counted once (one scan of the clicks), not once per chunk
        con.sql(f"CREATE OR REPLACE TEMP TABLE _clicks AS SELECT *, {chunk} AS chunk FROM ({M.click_counts_sql(as_of, s)})")
    _empty(con, NEXT)
    for i in range(chunks):
        con.sql(f"CREATE OR REPLACE TEMP TABLE _chunk AS SELECT * FROM {M.SEGMENTS} WHERE {chunk} = {i}")
        M.candidates(con, as_of, "_chunk", s, PREFIX,
                     clicks=f"SELECT user_id, product_id, category, n FROM _clicks WHERE chunk = {i}" if clicks else None)
        M.rank(con, weights, s, "_chunk", PREFIX)
        con.sql(f"INSERT INTO {NEXT} SELECT user_id, rank, product_id, score, reason FROM ({M.decoded(M.RECS)})")
        M.drop_candidates(con)
        con.sql(f"DROP TABLE {M.RECS}; DROP TABLE _chunk")
    M.unload(con)
    if clicks:
        con.sql("DROP TABLE _clicks")
    return users, weights


assets = [user_recommendations]
asset_checks: list = []
