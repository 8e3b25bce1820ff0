"""Campaign outcomes from the warehouse: one row per campaign and user, with the segment at send time.

A send's outcome is read from the orders already ingested (``staging.stg_orders``): ``converted`` when the
user completed an order in ``(sent_ts, sent_ts + attribution_days]``, ``revenue`` the sum of those orders'
amounts. Only sends whose attribution window has closed by the run's as-of are counted (an open window
would count part of an outcome). A user sent twice in one campaign counts once (the first send).

``segment_id`` is the user's segment at send time (``analytics.segment_history``: valid_from <= sent_ts <
valid_to, or the open row), null when the user had none then (first scored after the send: a refresh that
ran only after the campaign, or a user who signed up in between). Such a user is **not** given their current
segment for lift: the current segment is assigned after the send, and the send changes it (a treated user
who responds has one more order and moves to a more valuable segment, a held-out user does not), so per
segment the treated/control split would be broken by the treatment itself. Lift counts them in a cell of
their own (segment null), where the random split holds. ``current_segment_id`` (``analytics.user_segments``)
is kept for the policy, which needs a context for every send. Sends of users with neither are left out.

Every send is accounted for (:data:`LEFT_OUT`): a send not counted says why, as ingestion's ledger does for rows.
A user in the global control group is never to be sent an action: their sends (either group) are left out of
lift and of the policy, so the treated/control split stays the random one, and a treatment send to them is a
broken promise the asset warns about (as soon as it is delivered, its window open or not). The group is the one in
force when the send was made (groups.py: the salt and share recorded by then), not today's. A user in both groups
of one campaign is contaminated: left out. Repeats keep the first send as delivered (send time, then file and row:
not the send id's spelling).
"""

from __future__ import annotations

import polars as pl

from seg_assets.activation.groups import SALTS_TABLE, in_control_at_sql
from seg_assets.ingest.contract import exact_money_sql
from seg_assets.publish.keys import HISTORY_TABLE
from seg_assets.warehouse import table_exists

OUTCOME_COLUMNS = ("send_id", "campaign_id", "action_id", "segment_id", "current_segment_id", "user_id", "group",
                   "sent_ts", "propensity", "converted", "revenue")
LEFT_OUT = {  # why a send is not counted (lift, policy), by the first reason that applies
    "window_open": "its attribution window has not closed by the as-of",
    "both_groups": "its user is in both groups of the campaign",
    "repeat": "a repeat send to its user in the campaign (the first one counts)",
    "global_control": "its user is in the global control group",
    "unknown_user": "its user has no segment (unknown, or never scored)",
}
CONTROL_BREACH = "treatment_to_global_control"  # of the global_control sends: those that sent an action


def send_outcomes(con, as_of, attribution_days: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Outcomes of the sends counted (see the module docstring), and how many were left out per :data:`LEFT_OUT`
    reason (plus :data:`CONTROL_BREACH`)."""
    empty = pl.DataFrame(schema={"send_id": pl.Utf8, "campaign_id": pl.Utf8, "action_id": pl.Utf8,
                                 "segment_id": pl.Int64, "current_segment_id": pl.Int64, "user_id": pl.Utf8, "group": pl.Utf8,
                                 "sent_ts": pl.Datetime("us"), "propensity": pl.Float64, "converted": pl.Boolean,
                                 "revenue": pl.Float64})
    if not table_exists(con, "raw.campaign_sends"):
        return empty, {}
    days = int(attribution_days)
    scored = table_exists(con, SALTS_TABLE) and table_exists(con, "analytics.user_groups")
    # only a scored user is in a group (an id no delivery names stays an unknown user, whatever its hash)
    control = (f"(r.user_id IN (SELECT user_id FROM analytics.user_groups) AND {in_control_at_sql('r.user_id', 'r.sent_ts')})"
               if scored else "false")
    at_send = f""",
        at_send AS (
            SELECT s.send_id, h.segment_id
            FROM sends s
            JOIN {HISTORY_TABLE} h
              ON h.user_id = s.user_id AND h.valid_from <= s.sent_ts AND (h.valid_to IS NULL OR s.sent_ts < h.valid_to)
            QUALIFY row_number() OVER (PARTITION BY s.send_id ORDER BY h.valid_from DESC) = 1
        )""" if table_exists(con, HISTORY_TABLE) else """,
        at_send AS (SELECT NULL::VARCHAR AS send_id, NULL::INTEGER AS segment_id WHERE false)"""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _judged_sends AS
        SELECT *, CASE WHEN sent_ts + INTERVAL {days} DAY > ? THEN 'window_open'
                       WHEN groups > 1 THEN 'both_groups' WHEN nth > 1 THEN 'repeat'
                       WHEN global_control THEN 'global_control' END AS left_out
        FROM (SELECT r.*, coalesce({control}, false) AS global_control
              FROM (SELECT send_id, campaign_id, user_id, action_id, sent_ts, CAST(send_group AS VARCHAR) AS "group",
                           CAST(propensity AS DOUBLE) AS propensity,
                           row_number() OVER (PARTITION BY campaign_id, user_id ORDER BY sent_ts, _file_id, _row) AS nth,
                           count(DISTINCT send_group) OVER (PARTITION BY campaign_id, user_id) AS groups
                    FROM raw.campaign_sends) r)""", [as_of])
    left_out = dict(con.sql("SELECT left_out, count(*) FROM _judged_sends WHERE left_out IS NOT NULL GROUP BY 1").fetchall())
    # a broken promise is one whatever else is true of the send (its window still open, say: it was reported a week late)
    (breach,) = con.sql("""SELECT count(*) FROM _judged_sends WHERE global_control AND "group" = 'treatment'""").fetchall()[0]
    frame = con.sql(f"""
        WITH sends AS (
            SELECT send_id, campaign_id, user_id, action_id, sent_ts, "group", propensity FROM _judged_sends
            WHERE left_out IS NULL
        ),
        outcome AS (
            SELECT s.send_id, count(o.order_id) > 0 AS converted,
                   coalesce(sum({exact_money_sql('o.amount')}), 0)::DOUBLE AS revenue
            FROM sends s
            LEFT JOIN staging.stg_orders o
              ON o.user_id = s.user_id AND o.status = 'completed'
             AND o.order_ts > s.sent_ts AND o.order_ts <= s.sent_ts + INTERVAL {days} DAY
            GROUP BY s.send_id
        ){at_send}
        SELECT s.send_id, s.campaign_id, s.action_id,
               CAST(a.segment_id AS BIGINT) AS segment_id, CAST(u.segment_id AS BIGINT) AS current_segment_id,
               s.user_id, s."group", s.sent_ts, s.propensity, o.converted, o.revenue
        FROM sends s
        JOIN outcome o USING (send_id)
        LEFT JOIN at_send a USING (send_id)
        LEFT JOIN analytics.user_segments u ON u.user_id = s.user_id
        ORDER BY s.sent_ts, s.send_id""").pl()
    con.execute("DROP TABLE _judged_sends")
    known = frame.filter(pl.col("segment_id").is_not_null() | pl.col("current_segment_id").is_not_null())
    left_out["unknown_user"] = frame.height - known.height
    accounting = {k: int(left_out.get(k, 0)) for k in LEFT_OUT} | {CONTROL_BREACH: int(breach)}
    return (known.cast({c: t for c, t in empty.schema.items()}).select(OUTCOME_COLUMNS) if known.height else empty), accounting


def policy_context(outcomes: pl.DataFrame) -> pl.DataFrame:
    """``outcomes`` with ``segment_id`` filled by the current segment where the segment at send time is unknown:
    the context a policy learns from (it needs one for every send; lift must not use it, see the module doc)."""
    return outcomes.with_columns(pl.coalesce("segment_id", "current_segment_id").alias("segment_id"))


def time_split(outcomes: pl.DataFrame, evaluation_share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, holdout): the latest ``evaluation_share`` of sends by ``sent_ts`` are held out to evaluate a policy
    (NextBestActionConfig; not a campaign's control share).

    The cut is at a send time, so one campaign (one send time) is never split between the two.
    """
    if outcomes.height == 0:
        return outcomes, outcomes
    times = outcomes["sent_ts"].sort()
    cut = times[min(int(round((1 - evaluation_share) * len(times))), len(times) - 1)]
    fit, holdout = outcomes.filter(pl.col("sent_ts") < cut), outcomes.filter(pl.col("sent_ts") >= cut)
    if fit.height == 0:  # a single send time: nothing earlier to fit on
        return outcomes, outcomes.clear()
    return fit, holdout
