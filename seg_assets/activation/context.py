"""The next-best-action policy's user context, computed as of a given time: one SQL for training and serving.

A send is described by its user's history **before** ``sent_ts`` (its own response is after, so it cannot leak into
the context it is judged on); a user is served with the same SQL as of the run's as-of. One definition for both,
so the model is applied to exactly the features it was fitted on. The published feature tables (features/) are
computed as of one time for every user, hence the per-row time here: each row is a (key, user_id, t) triple.

Features (:data:`CONTEXT_FEATURES`, all ``log1p`` of a non-negative count or amount): completed orders before
``t`` and in the 90 days before, discount share of completed spend (x 10), average completed order value, days
since the last completed order (999 when none), cancelled or returned orders, sessions, click events,
add-to-carts, days since the first click. A store without clicks (orders only) gets zero click features.
"""

from __future__ import annotations

import numpy as np
import polars as pl

CONTEXT_FEATURES = ("orders", "orders_90d", "discount_share_x10", "avg_order_value", "days_since_order",
                    "other_orders", "sessions", "events", "add_to_carts", "days_since_first_click")
KEYS_VIEW = "activation_context_keys"
# Money summed in DECIMAL: exact, so the context (and the fitted policy, whose version seeds its draws) does not
# depend on the order threads add rows up (over Spark's Parquet files a DOUBLE sum moved the fit by 1e-10, enough to
# cross a rounding step of the version: 9.5 % of users got another action than on DuckDB, a tester's find)
EXACT = "DECIMAL(38, 4)"
NO_CLICKS = ("(SELECT NULL::VARCHAR AS user_id, NULL::VARCHAR AS session_id, NULL::VARCHAR AS event_id, "
             "NULL::VARCHAR AS funnel_stage, NULL::TIMESTAMP AS event_ts WHERE false)")

CONTEXT_SQL = f"""
WITH k AS (SELECT key, user_id, CAST(t AS TIMESTAMP) AS t FROM {KEYS_VIEW}),
o AS (SELECT k.key,
        count(o.order_id) FILTER (WHERE o.status = 'completed') AS orders,
        count(o.order_id) FILTER (WHERE o.status = 'completed' AND o.order_ts > k.t - INTERVAL 90 DAY) AS orders_90d,
        coalesce(sum(o.discount::{EXACT}) FILTER (WHERE o.status = 'completed')
                 / nullif(sum((o.amount + o.discount)::{EXACT}) FILTER (WHERE o.status = 'completed'), 0), 0) * 10
          AS discount_share_x10,
        coalesce(avg(o.amount::{EXACT}) FILTER (WHERE o.status = 'completed'), 0) AS avg_order_value,
        coalesce(date_diff('day', max(o.order_ts) FILTER (WHERE o.status = 'completed'), k.t), 999) AS days_since_order,
        count(o.order_id) FILTER (WHERE o.status <> 'completed') AS other_orders
      FROM k LEFT JOIN staging.stg_orders o ON o.user_id = k.user_id AND o.order_ts < k.t GROUP BY k.key, k.t),
c AS (SELECT k.key, count(DISTINCT c.session_id) AS sessions, count(c.event_id) AS events,
        count(c.event_id) FILTER (WHERE c.funnel_stage = 'add_to_cart') AS add_to_carts,
        coalesce(date_diff('day', min(c.event_ts), k.t), 0) AS days_since_first_click
      FROM k LEFT JOIN {{clicks}} c ON c.user_id = k.user_id AND c.event_ts < k.t GROUP BY k.key, k.t)
SELECT key, {", ".join(CONTEXT_FEATURES)} FROM o JOIN c USING (key) ORDER BY key"""


def context_at(con, keys: pl.DataFrame) -> np.ndarray:
    """(len(keys), len(CONTEXT_FEATURES)) context matrix, in the order of ``keys``.

    ``keys``: ``user_id`` and ``t`` (the time the context is taken at: a send's ``sent_ts``, or the run's as-of for
    serving). Only orders and clicks strictly before ``t`` are read.
    """
    if keys.height == 0:
        return np.zeros((0, len(CONTEXT_FEATURES)))
    frame = keys.select(pl.col("user_id").cast(pl.Utf8), pl.col("t").cast(pl.Datetime("us"))).with_row_index("key")
    has_clicks = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'staging' "
                             "AND table_name = 'stg_clicks'").fetchall()[0][0]
    con.register(KEYS_VIEW, frame.to_arrow())
    try:
        sql = CONTEXT_SQL.replace("{clicks}", "staging.stg_clicks" if has_clicks else NO_CLICKS)
        x = con.sql(sql).pl().sort("key").drop("key").cast(pl.Float64).fill_null(0).to_numpy()
    finally:
        con.unregister(KEYS_VIEW)
    return np.log1p(np.clip(x, 0, None))
