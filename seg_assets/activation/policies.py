"""The next-best-action policy's life: which policy serves, fitting a candidate, judging it off-policy on the latest
sends against the one in service, and recording every decision in ``meta.policies`` (the asset in assets.py wires
these to the warehouse)."""

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from seg_assets.activation.catalogue import Catalogue
from seg_assets.activation.contextual import ContextualPolicy, fit_contextual_policy, load_policy
from seg_assets.activation.lift import CONTROL
from seg_assets.activation.new_actions import WithNewActions
from seg_assets.activation.offpolicy import (
    PROMOTION_TOLERANCE,
    Evaluation,
    PromotionDecision,
    cell_reward_model,
    evaluate_candidates,
    promote,
)
from seg_assets.activation.outcomes import time_split
from seg_assets.activation.policy import ThompsonPolicy, fit_policy
from seg_assets.publish.keys import HISTORY_TABLE

POLICIES_TABLE = "meta.policies"
POLICIES_DDL = f"""CREATE TABLE IF NOT EXISTS {POLICIES_TABLE} (
  policy_version VARCHAR NOT NULL, fitted_at TIMESTAMP NOT NULL, as_of TIMESTAMP, run_id VARCHAR,
  fit_sends BIGINT, holdout_sends BIGINT, promoted BOOLEAN NOT NULL, reason VARCHAR, state JSON, estimates JSON)"""
# Defaults of NextBestActionConfig (activation/assets.py), the settings a user can change:
EVALUATION_SHARE = 0.3  # latest share of sends (by send time) held out to evaluate a candidate policy
MIN_SENDS_PER_ACTION = 100  # fewer treated sends of any action to fit on: the per-segment policy, not the contextual one
# A uniform share mixed into the contextual policy's choices: every eligible action keeps a propensity of at least
# EXPLORE_FLOOR / k, so the next round's off-policy evaluation has sends of every action to judge a change on (a
# tester's 20,000 users: without it 0.8 % explored and 95.6 % had a propensity >= 0.99; it costs EXPLORE_FLOOR x the gap)
EXPLORE_FLOOR = 0.05
Policy = ThompsonPolicy | ContextualPolicy | WithNewActions


def eligible_lists(catalogue: Catalogue, arms: tuple[str, ...], users: pl.DataFrame) -> pl.DataFrame:
    """``users`` (segment_id, segment_name, lifecycle_stage, ...) with ``eligible_actions`` from the catalogue."""
    keys = users.select("segment_id", "segment_name", "lifecycle_stage").unique()
    lists = [[a for a in arms if catalogue.actions[a].eligible(int(sid), name or "", stage)] for sid, name, stage in keys.iter_rows()]
    keys = keys.with_columns(pl.Series("eligible_actions", lists, dtype=pl.List(pl.Utf8)))
    return users.join(keys, on=["segment_id", "segment_name", "lifecycle_stage"], how="left", nulls_equal=True)


def in_service(con) -> tuple[Policy | None, str, object]:
    """The promoted policy, its version and the as-of it was fitted at (it saw the sends whose window closed by then)."""
    row = con.sql(f"SELECT state, as_of FROM {POLICIES_TABLE} WHERE promoted ORDER BY fitted_at DESC LIMIT 1").fetchall()
    if not row:
        return None, "none", None
    policy = load_policy(json.loads(row[0][0]))
    return policy, policy.policy_version, row[0][1]


def control_baselines(outcomes: pl.DataFrame) -> pl.DataFrame:
    """(campaign_id, baseline): the log-odds of each campaign's control conversion, (conversions + 0.5) / (sends + 1);
    a campaign without control sends gets every campaign's control pooled (none at all: 0, no baseline)."""
    control = outcomes.filter(pl.col("group") == CONTROL)
    smoothed = ((pl.col("converted").cast(pl.Float64).sum() + 0.5) / (pl.len() + 1)).alias("rate")
    pooled = control.select(smoothed)["rate"][0] if control.height else 0.5
    rates = control.group_by("campaign_id").agg(smoothed)
    return (outcomes.select("campaign_id").unique().join(rates, on="campaign_id", how="left")
            .with_columns(baseline=(pl.col("rate").fill_null(pooled) / (1 - pl.col("rate").fill_null(pooled))).log())
            .select("campaign_id", "baseline"))


def fit(sends: pl.DataFrame, x: np.ndarray, arms: tuple[str, ...], *, min_sends: int = MIN_SENDS_PER_ACTION,
        explore_floor: float = EXPLORE_FLOOR, l2_lambda: float | None = None) -> Policy:
    """The contextual policy when every action has ``min_sends`` sends with a context, else per segment (thin
    data); uniform over the eligible actions before any send (epsilon 1: propensity exactly 1/k). With a ``baseline``
    column (:func:`control_baselines`) the contextual policy judges each action against its campaign's control: when
    normal buying dropped between campaigns, the actions sent in the later one looked worse than they were (a tester's
    loop moved a segment to its worst action)."""
    per_action = dict(sends.group_by("action_id").len().iter_rows())
    if sends.height and min(per_action.get(a, 0) for a in arms) >= min_sends:
        baseline = sends["baseline"].to_numpy() if "baseline" in sends.columns else None
        now = float(sends.sort("sent_ts")["baseline"][-1]) if baseline is not None else 0.0
        return fit_contextual_policy(x[sends["__row"].to_numpy()], sends["segment_id"].to_list(), sends["action_id"].to_list(),
                                     sends["reward"].cast(pl.Float64).to_numpy(), arms, offsets=baseline, offset_now=now,
                                     epsilon=explore_floor, l2_lambda=l2_lambda)
    return fit_policy(sends, arms, seed=0) if sends.height else fit_policy(sends, arms, seed=0, epsilon=1.0)


def probabilities(policy: Policy, rows: pl.DataFrame, x: np.ndarray, eligible) -> np.ndarray:
    """(n, k) choice probabilities of ``policy`` for logged sends (``segment_id``, ``__row`` into the send contexts)."""
    if isinstance(policy, WithNewActions):
        return policy.mix(probabilities(policy.base, rows, x, policy.split(eligible)[0]), eligible)
    if isinstance(policy, ContextualPolicy):
        return policy.action_probabilities(x[rows["__row"].to_numpy()], rows["segment_id"].to_list(), eligible)
    return policy.action_probabilities(rows["segment_id"].to_list(), eligible)


def evaluate(candidate: Policy, in_service: Policy | None, holdout: pl.DataFrame, x: np.ndarray, arms, eligible_of):
    """Off-policy evaluation of ``candidate`` on the held-out treated sends with a logged propensity."""
    logs = holdout.filter(pl.col("propensity").is_not_null() & (pl.col("propensity") > 0))
    if logs.height == 0:
        return None, logs
    index = {a: i for i, a in enumerate(arms)}
    segs = logs["segment_id"].to_list()
    elig = [eligible_of.get(u) for u in logs["user_id"].to_list()]
    frame = pl.DataFrame({"action": [index[a] for a in logs["action_id"].to_list()],
                          "reward": logs["converted"].cast(pl.Float64), "propensity": logs["propensity"]})
    mask = np.array([[e is None or a in e for a in arms] for e in elig], dtype=bool)
    q_hat = cell_reward_model(segs, frame["action"].to_numpy(), frame["reward"].to_numpy(), len(arms))
    evaluation = evaluate_candidates(
        frame, probabilities(candidate, logs, x, elig),
        probabilities(in_service, logs, x, elig) if in_service is not None else None, len(arms),
        eligible=mask, q_hat=q_hat, primary="snips", n_boot=500)
    return evaluation, logs


@dataclass(frozen=True)
class Gate:
    """:func:`decide`'s result: the candidate, the policy to serve (the refitted candidate or the one in service), the
    decision and the evaluation it rests on, and how many sends each side had."""

    candidate: Policy
    served: Policy
    decision: PromotionDecision
    evaluation: Evaluation | None
    fit_sends: int
    holdout_sends: int


def decide(treated: pl.DataFrame, x: np.ndarray, arms: tuple[str, ...], eligible_of: dict, in_service: tuple,
           *, evaluation_share: float, attribution_days: int, tolerance: float = PROMOTION_TOLERANCE, **tuning) -> Gate:
    """Fit a candidate on the earlier treated sends, judge it off-policy on the latest ``evaluation_share`` against the
    policy in service (``in_service``: policy, version, the as-of it was fitted at), and choose what serves: a promoted
    candidate is refitted on every send (the gate judged the fitting procedure, with the penalty it chose, on sends it
    had not seen), else the policy in service stays. ``tuning``: :func:`fit`'s keywords."""
    policy, version, fitted_as_of = in_service
    fit_sends, holdout = time_split(treated, evaluation_share)
    candidate = fit(fit_sends, x, arms, **tuning)
    if policy is not None and fitted_as_of is not None:
        # only sends the policy in service was not fitted on: on its own training sends it would look better than it is
        holdout = holdout.filter(pl.col("sent_ts") + pl.duration(days=attribution_days) > fitted_as_of)
    evaluation, logs = evaluate(candidate, policy, holdout, x, arms, eligible_of)
    if evaluation is None:
        decision = PromotionDecision(policy is None, "no held-out sends (that the policy in service was not fitted on) "
                                     "to evaluate on: " + ("nothing in service, promoting" if policy is None else
                                                           f"keeping {version}"))
    else:
        decision = promote(evaluation.candidate, evaluation.in_service if policy is not None else None, tolerance,
                           difference=evaluation.difference if policy is not None else None,
                           fit_conversions=int(fit_sends["reward"].cast(pl.Float64).sum()) if fit_sends.height else 0,
                           holdout_conversions=int(logs["converted"].cast(pl.Float64).sum()))
    if isinstance(policy, WithNewActions):  # no candidate knows a new action before it has sends to learn from
        sent = dict(treated.group_by("action_id").len().iter_rows())
        need = policy.sends_needed(tuning.get("min_sends", MIN_SENDS_PER_ACTION))
        if thin := [f"{a} ({sent.get(a, 0)} of {need[a]} treated sends)" for a in policy.new if sent.get(a, 0) < need[a]]:
            decision = PromotionDecision(False, f"exploring new actions: {', '.join(thin)}; {version} serves the others")
    served = policy
    if decision.promote:
        chosen = {"l2_lambda": candidate.l2_lambda} if isinstance(candidate, ContextualPolicy) and candidate.l2_lambda else {}
        served = fit(treated, x, arms, **(tuning | chosen)) if treated.height and evaluation is not None else candidate
    return Gate(candidate, served, decision, evaluation, fit_sends.height, logs.height)


def policy_segments(con, policy: Policy, users: pl.DataFrame) -> pl.DataFrame:
    """``users`` with ``policy_segment``: the segment whose posterior chooses the user's action. That is the current
    segment when the policy has sends of it; a segment it has none of (new after a refit) takes the user's latest
    earlier segment that it has (analytics.segment_history), else the pooled posterior."""
    policy = policy.base if isinstance(policy, WithNewActions) else policy
    known = list(policy.segments) if isinstance(policy, ContextualPolicy) else [k for k in policy.counts if isinstance(k, int)]
    users = users.with_columns(pl.col("segment_id").alias("policy_segment"))
    if not known or users.filter(~pl.col("segment_id").is_in(known)).height == 0:
        return users
    history = con.sql(f"SELECT user_id, segment_id::BIGINT AS segment_id, valid_from FROM {HISTORY_TABLE}").pl()
    earlier = history.filter(pl.col("segment_id").is_in(known)).sort("valid_from").group_by("user_id").agg(
        pl.col("segment_id").last().alias("earlier_segment"))
    return users.join(earlier, on="user_id", how="left").with_columns(
        pl.when(pl.col("segment_id").is_in(known)).then(pl.col("segment_id"))
        .otherwise(pl.coalesce("earlier_segment", "segment_id")).alias("policy_segment")).drop("earlier_segment")


def record(con, *, version: str, as_of, run_id: str, fit_sends: int, holdout_sends: int, promoted: bool, reason: str,
           state: dict, estimates: list[dict]) -> None:
    """One row of ``meta.policies``: a fitted policy and the decision on it (non-finite estimates stored as null)."""
    con.execute(POLICIES_DDL)
    con.execute(f"INSERT INTO {POLICIES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        version, datetime.now(UTC).replace(tzinfo=None), as_of, run_id, fit_sends, holdout_sends, promoted, reason,
        json.dumps(state),
        json.dumps(estimates, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v))])
