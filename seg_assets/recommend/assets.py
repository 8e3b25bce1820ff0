"""``analytics/user_recommendations``: each user's top-N products (model.py), refreshed with the order lines.

Thin wiring. A **full build** (first build, new order lines, other settings, a rebase) recomputes the shared
tables (``meta.rec_*``: popularity per segment and shop, co-purchases, category products), re-fits the
weights on the last horizon and re-ranks every user. Otherwise only the users whose segment changed
since (``meta.rec_members``) are re-ranked, against the stored tables; with no such user nothing is read
but the order-lines watermark and the segments, and nothing is written. New clicks alone wait for the
next full build (new order lines or the daily rebase), and so does the exclusion window's clock.
"""


import json

import dagster as dg
from pydantic import Field

from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.baskets.assets import ORDER_ITEMS
from seg_assets.baskets.counts import watermark
from seg_assets.features import incremental as inc
from seg_assets.recommend import model as M
from seg_assets.resources import Warehouse
from seg_assets.segmentation.scoring import USER_SEGMENTS
from seg_assets.warehouse import table_exists, transaction

GROUP = "recommend"
USER_RECOMMENDATIONS = dg.AssetKey(["analytics", "user_recommendations"])
TABLE = "analytics.user_recommendations"
SEGMENTS = "SELECT user_id, segment_id FROM analytics.user_segments"
PREFIX = "meta.rec_"
STATE_DDL = ("CREATE TABLE IF NOT EXISTS meta.rec_state (watermark BIGINT, settings_key VARCHAR, as_of TIMESTAMP, "
             "weights JSON, mode VARCHAR, users BIGINT, built_at TIMESTAMP)")


class RecommendConfig(dg.Config):
    top_n: int = Field(default=10, ge=1, le=100, description="Products per user.")
    exclude_days: int = Field(default=14, ge=0, description="Products the user bought in this many days before as-of are "
                              "not recommended (0: none excluded).")
    horizon_days: int = Field(default=30, ge=1, description="The weights are fitted on purchases in this many days before "
                              "as-of (features as of its start).")
    candidates: int = Field(default=10, ge=1, description="Per source (segment's popular, co-purchased, category): "
                            "products considered per user.")
    click_weight: float = Field(default=0.1, ge=0, description="A click counts this much of a purchased line "
                                "(category shares, clicked products); 0 ignores clicks.")
    max_basket_size: int = Field(default=1000, ge=2, description="Orders with more distinct products are left out, "
                                 "as in basket rules.")
    max_fit_users: int = Field(default=5_000, ge=100, description="Users (a hash sample) the weights are fitted on.")

    def settings(self) -> M.RecSettings:
        return M.RecSettings(top_n=self.top_n, exclude_days=self.exclude_days, horizon_days=self.horizon_days,
                             candidates=self.candidates, click_weight=self.click_weight,
                             max_basket_size=self.max_basket_size, max_fit_users=self.max_fit_users)


def _empty(con) -> None:
    con.sql(f"CREATE OR REPLACE TABLE {TABLE} (" + ", ".join(f"{c} {t}" for c, t in M.REC_COLUMNS.items()) + ")")


def _md(con) -> str:
    rows = con.sql(f"""SELECT reason, count(DISTINCT user_id) AS users, count(*) AS rows FROM {TABLE} GROUP BY 1 ORDER BY 3 DESC""").pl()
    return rows.to_pandas().to_markdown(index=False) if rows.height else "no recommendations"


@dg.asset(
    key=USER_RECOMMENDATIONS, deps=[USER_SEGMENTS, ORDER_ITEMS], group_name=GROUP, pool="duckdb", kinds={"duckdb"},
    automation_condition=rescore_on_new_inputs(),
    description="Top-N products per user (user_id, rank, product_id, score, reason): a logistic blend of the segment's "
    "popular products with the user's own purchases, co-purchases, categories and clicks, fitted on the last horizon; "
    "products bought recently excluded; users with thin history get their segment's popular products.",
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
        con.sql(STATE_DDL)
        wm = watermark(con)
        (as_of,) = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0]
        state = con.sql("SELECT watermark, settings_key, weights FROM meta.rec_state").fetchall()
        why = ("rebase requested" if inc.rebase_requested(context.run.tags) else "first build" if not state
               else "new order lines" if state[0][0] != wm else "settings changed" if state[0][1] != s.key()
               else "table missing" if not table_exists(con, TABLE) else "")
        full = bool(why)
        with transaction(con):
            if full:
                mode, users, weights = "full", *_full_build(con, s, as_of)
            else:
                stored = json.loads(state[0][2])
                weights = M.Weights(**{**stored, "coef": tuple(stored["coef"])})
                mode, users = "segments", _rerank_moved(con, s, weights)
            if mode == "full":
                con.sql("DELETE FROM meta.rec_state")
                con.execute("INSERT INTO meta.rec_state VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
                            [wm, s.key(), as_of, json.dumps(weights.__dict__), mode, users])
            elif users:  # the shared tables, weights and cut-off (as_of) stay those of the last full build
                con.execute("UPDATE meta.rec_state SET mode = ?, users = ?, built_at = now()::TIMESTAMP", [mode, users])
            else:
                mode = "unchanged"
        why = why or (f"{users:,} users changed segment: re-ranked with the last full build's tables and weights" if users
                      else "no new order lines and no user changed segment: nothing re-ranked or written (new clicks wait "
                      "for the next full build)")
        rows = con.sql(f"SELECT count(*), count(DISTINCT user_id) FROM {TABLE}").fetchall()[0]
        table = _md(con)
    context.log.info(f"recommendations: {mode} ({why}), {users} users ranked; {weights.note}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(rows[0])), "dagster/table_name": TABLE,
        "users": dg.MetadataValue.int(int(rows[1])), "mode": mode, "why": why, "users_ranked": dg.MetadataValue.int(users),
        "weights": dg.MetadataValue.json(weights.as_dict()), "reasons": dg.MetadataValue.md(table),
    })


def _full_build(con, s: M.RecSettings, as_of) -> tuple[int, M.Weights]:
    M.load_baskets(con, s)
    weights = M.fit(con, as_of, SEGMENTS, s)
    M.model_tables(con, as_of, s, SEGMENTS, PREFIX, temp=False)
    con.sql(f"CREATE OR REPLACE TABLE meta.rec_members AS {SEGMENTS}")
    M.candidates(con, as_of, "meta.rec_members", s, PREFIX)
    M.rank(con, weights, s, "meta.rec_members")
    con.sql(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT * FROM _recs ORDER BY user_id, rank")
    users = int(con.sql("SELECT count(*) FROM meta.rec_members").fetchall()[0][0])
    M.drop_candidates(con)
    con.sql(f"DROP TABLE _recs; DROP TABLE {M.BASKETS}")
    return users, weights


def _rerank_moved(con, s: M.RecSettings, weights: M.Weights) -> int:
    """Re-rank the users whose segment changed (or who are new) since the last build, at that build's cut-off."""
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _moved AS SELECT g.user_id, g.segment_id FROM ({SEGMENTS}) g
                LEFT JOIN meta.rec_members m USING (user_id) WHERE m.segment_id IS DISTINCT FROM g.segment_id""")
    moved = int(con.sql("SELECT count(*) FROM _moved").fetchall()[0][0])
    if moved:
        (cut,) = con.sql("SELECT as_of FROM meta.rec_state").fetchall()[0]
        M.load_baskets(con, s, orders_of="_moved")
        M.candidates(con, cut, "_moved", s, PREFIX)
        M.rank(con, weights, s, "_moved")
        con.sql(f"DELETE FROM {TABLE} WHERE user_id IN (SELECT user_id FROM _moved)")
        con.sql(f"INSERT INTO {TABLE} SELECT * FROM _recs")
        con.sql("DELETE FROM meta.rec_members WHERE user_id IN (SELECT user_id FROM _moved)")
        con.sql("INSERT INTO meta.rec_members SELECT * FROM _moved")
        M.drop_candidates(con)
        con.sql(f"DROP TABLE _recs; DROP TABLE {M.BASKETS}")
    con.sql("DROP TABLE _moved")
    return moved


assets = [user_recommendations]
asset_checks: list = []
