"""Activation stage assets: the global control group, campaign lift, the next-best-action policy, audiences.

``analytics/user_groups`` gives every scored user their hash bucket and whether they are in the global
control group (groups.py), with the salt version that drew it; its materialization shows the action
catalogue (actions.yaml) so a person sees in the UI what can be sent to whom.

``analytics/campaign_lift``: outcomes of the campaign sends (outcomes.py) per campaign x action x segment
(lift.py), with a sample-ratio-mismatch check against the catalogue's ``holdout_share``.
``analytics/next_best_action``: a contextual policy (contextual.py: Thompson sampling on per-action logistic
regressions of the user's history as of the send, context.py, and the segment) fitted on the treated sends, or the
per-segment Thompson-sampling policy (policy.py) while there are fewer than min_sends_per_action sends of an action
to fit it on; evaluated off-policy on the latest sends (offpolicy.py) against the policy in service (of either kind),
promoted only when not worse, recorded in ``meta.policies`` (policies.py: the policy's life, this asset wires
it); one action per eligible user, none for the global control.
``bi/audiences``: per campaign, the treated and held-out users as Parquet and CSV (audience_asset.py).
"""

import math
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from seg_assets.activation import policies
from seg_assets.activation.catalogue import ActionsConfigError, Catalogue, load_catalogue
from seg_assets.activation.context import context_at
from seg_assets.activation.contextual import CV_FOLDS, L2_GRID, ContextualPolicy, choose_contextual
from seg_assets.activation.groups import (
    BUCKETS,
    SALTS_TABLE,
    bucket_sql,
    control_cutoff,
    record_drawn,
    record_salt,
    salt_version,
)
from seg_assets.activation.lift import LIFT_COLUMNS, campaign_sample_ratio
from seg_assets.activation.lift import campaign_lift as lift_table
from seg_assets.activation.new_actions import NEW_ACTION_SHARE, WithNewActions
from seg_assets.activation.offpolicy import PROMOTION_TOLERANCE
from seg_assets.activation.outcomes import CONTROL_BREACH, LEFT_OUT, policy_context, send_outcomes
from seg_assets.activation.policy import NBA_COLUMNS, NBA_SCHEMA
from seg_assets.activation.policy import next_best_action as choose
from seg_assets.automation.conditions import rescore_on_new_inputs
from seg_assets.automation.limits import CheckedConfig
from seg_assets.errors import input_failure
from seg_assets.ingest.assets import RAW_KEYS
from seg_assets.markdown import frame as md_frame
from seg_assets.markdown import percent
from seg_assets.markdown import table as md_table
from seg_assets.publish.keys import SEGMENT_HISTORY
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation.scoring import USER_SEGMENTS
from seg_assets.warehouse import table_exists, transaction

GROUP = "activation"
USER_GROUPS = dg.AssetKey(["analytics", "user_groups"])
TABLE = "analytics.user_groups"
CAMPAIGN_LIFT = dg.AssetKey(["analytics", "campaign_lift"])
NEXT_BEST_ACTION = dg.AssetKey(["analytics", "next_best_action"])
AUDIENCES = dg.AssetKey(["bi", "audiences"])
RAW_CAMPAIGN_SENDS = RAW_KEYS["campaign_sends"]
STG_ORDERS = dg.AssetKey(["staging", "stg_orders"])


def catalogue_markdown(catalogue: Catalogue) -> str:
    if not catalogue.actions:
        return "No actions declared (actions.yaml under the data root)."
    rows = [(name, a.channel, f"{a.cost_per_send:g}", ", ".join(map(str, a.eligible_segments)) or "all",
             ", ".join(a.eligible_stages) or "all", a.description) for name, a in catalogue.actions.items()]
    return md_table(["action", "channel", "cost per send", "segments", "lifecycle stages", "description"], rows,
                    right=["cost per send"])


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=USER_GROUPS, deps=[USER_SEGMENTS], group_name=GROUP, pool="duckdb", kinds={"duckdb"},
    automation_condition=rescore_on_new_inputs(),
    description="Every scored user's hash bucket (md5 of salt and user_id, 0-9,999) and whether they are in the "
    "global control group, which never receives an action: the same users on every refresh, refit and engine.",
)
def user_groups(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings) -> dg.MaterializeResult:
    catalogue = settings_catalogue(settings)
    control = catalogue.control
    with duckdb.get_connection() as con, transaction(con):
        # a new salt is recorded (dated) when its audiences are written (campaign_audiences): sends before then were
        # made against the group in place (groups.in_control_at_sql)
        version, recorded = salt_version(con, control.salt, control.share)
        if not recorded and version == 1:  # the first salt: no audiences before it, every send is judged by it
            record_salt(con, control.salt, control.share, datetime.now(UTC).replace(tzinfo=None))
            recorded = True
        record_drawn(con, control.salt, control.share)
        con.execute(f"""CREATE OR REPLACE TABLE {TABLE} AS
            SELECT user_id, bucket < {control_cutoff(control.share)} AS global_control, bucket,
                   {version}::INTEGER AS salt_version
            FROM (SELECT user_id, {bucket_sql('user_id', control.salt)} AS bucket FROM analytics.user_segments)""")
        users, in_control = con.sql(f"SELECT count(*), count(*) FILTER (WHERE global_control) FROM {TABLE}").fetchall()[0]
        salts = con.sql(f"SELECT salt_version, salt, share, since FROM {SALTS_TABLE} ORDER BY 1").fetchall()
    pending = [] if recorded else [(version, control.salt, f"{control.share:g}", "when its audiences are written")]
    history = md_table(["version", "salt", "share", "since"],
                       [(v, s, f"{sh:g}", f"{since:%Y-%m-%d %H:%M}") for v, s, sh, since in salts] + pending,
                       right=["share"])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(users)),
        "global_control_users": dg.MetadataValue.int(int(in_control)),
        "global_control_share": dg.MetadataValue.float(in_control / users if users else 0.0),
        "planned_share": dg.MetadataValue.float(control.share),
        "buckets": BUCKETS, "salt_version": version,
        "salt_history": dg.MetadataValue.md(history),
        "actions": dg.MetadataValue.md(catalogue_markdown(catalogue)),
    })


def settings_catalogue(settings: SegSettings) -> Catalogue:
    """The data root's action catalogue (actions.yaml); a mistake in it fails the step in one line."""
    try:
        return load_catalogue(settings.paths.root)
    except ActionsConfigError as exc:
        raise input_failure(str(exc)) from None


def _write(con, table: str, frame: pl.DataFrame) -> None:
    """Replace ``table`` with ``frame`` (registered under an explicit name, never a replacement scan)."""
    name = "activation_" + table.replace(".", "_") + "_frame"
    con.register(name, frame.to_arrow())
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {name}")
    finally:
        con.unregister(name)


def md_rows(frame: pl.DataFrame, limit: int = 40) -> str:
    """The first ``limit`` rows as a markdown table for the UI, saying how many more the table holds."""
    if not frame.height:
        return "(none)"
    return md_frame(frame.head(limit)) + (
        f"\n\n({frame.height - limit} more rows in the table)" if frame.height > limit else "")


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=CAMPAIGN_LIFT, deps=[RAW_CAMPAIGN_SENDS, STG_ORDERS, USER_SEGMENTS, SEGMENT_HISTORY, USER_GROUPS], group_name=GROUP,
    pool="duckdb", kinds={"duckdb"}, automation_condition=rescore_on_new_inputs(),
    check_specs=[dg.AssetCheckSpec("sample_ratio", asset=CAMPAIGN_LIFT, description="Treated/control split of every "
                                   "campaign x action x segment, and of every campaign as a whole, against the planned "
                                   "holdout share (chi-square, Holm-adjusted p < 0.001 warns)."),
                 dg.AssetCheckSpec("no_sends_to_global_control", asset=CAMPAIGN_LIFT, description="No treatment send "
                                   "went to a user of the global control group (such sends are left out of lift; warns).")],
    description="Lift of each campaign x action x segment: conversion (completed order within the attribution window "
    "after the send) and revenue of treated vs held-out users, with 95 % intervals, p-values, MDE and a sample-ratio check.",
)
def campaign_lift(context: dg.AssetExecutionContext, duckdb: Warehouse, settings: SegSettings) -> dg.MaterializeResult:
    catalogue = settings_catalogue(settings)
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)  # the refresh's (--as-of closes windows even when no user had new rows)
        outcomes, left_out = send_outcomes(con, as_of, catalogue.attribution_days)
        delivered = (con.sql("SELECT DISTINCT campaign_id FROM raw.campaign_sends").fetchall()
                     if table_exists(con, "raw.campaign_sends") else [])
        planned = {c: catalogue.holdout_of(c) for (c,) in delivered}  # every campaign delivered, counted or not yet
        lift = lift_table(outcomes.select("campaign_id", "action_id", "segment_id", "user_id", "group", "converted", "revenue"),
                          planned_control_share=planned).select(LIFT_COLUMNS)
        with transaction(con):
            _write(con, "analytics.campaign_lift", lift)
    broken = lift.filter(pl.col("srm_warning").fill_null(False))
    campaigns = campaign_sample_ratio(lift)
    _warn_broken_campaigns(context, campaigns.filter("srm_warning"))
    treated = outcomes.filter(pl.col("group") == "treatment")
    control = outcomes.filter(pl.col("group") == "control")
    per_action = outcomes.group_by("action_id", "group").agg(pl.col("converted").mean().alias("rate"))
    plots = {}  # numeric metadata per action: the asset's Plots tab draws each over refreshes
    for action in sorted(set(outcomes["action_id"].to_list())):
        rates = dict(per_action.filter(pl.col("action_id") == action).select("group", "rate").iter_rows())
        if "treatment" in rates and "control" in rates:
            plots[f"lift_{action}"] = dg.MetadataValue.float(float(rates["treatment"] - rates["control"]))
    breach = left_out.get(CONTROL_BREACH, 0)
    if breach:
        context.log.warning(f"campaign_lift: {breach} treatment send(s) to users of the global control group, which never "
                            "receives an action: left out of lift and of the policy; fix the audience the sender used "
                            "(bi/audiences excludes them)")
    unmatched = sorted(set(catalogue.campaigns) - set(planned))
    if unmatched:
        context.log.warning(f"campaign_lift: actions.yaml sets a holdout share for campaign(s) no send names: "
                            f"{', '.join(map(repr, unmatched[:5]))} (ids match exactly, case included)")
    if left_out.get("unknown_user"):
        context.log.warning(f"campaign_lift: {left_out['unknown_user']} send(s) to users with no segment (an id no delivery "
                            "names, or not scored yet): left out of lift and of the policy; check the sender's user ids")
    unknown = sorted(set(outcomes["action_id"].to_list()) - set(catalogue.actions))
    if unknown:
        context.log.warning(f"campaign_lift: sends of actions not in actions.yaml ({', '.join(unknown[:5])}): their lift is "
                            "measured, the policy never chooses them")
    control_check = dg.AssetCheckResult(
        check_name="no_sends_to_global_control", passed=breach == 0, severity=dg.AssetCheckSeverity.WARN,
        metadata={"treatment_sends_to_global_control": breach})
    check = dg.AssetCheckResult(
        check_name="sample_ratio", passed=broken.height == 0 and not campaigns["srm_warning"].any(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"cells": lift.height, "cells_with_mismatch": broken.height,
                  "campaigns_with_mismatch": int(campaigns["srm_warning"].sum()),
                  "campaigns": dg.MetadataValue.md(md_rows(campaigns)),
                  "planned_control_share": catalogue.holdout_share,
                  "campaigns_with_own_share": len(set(catalogue.campaigns) & set(planned)),
                  "mismatched": dg.MetadataValue.md(md_rows(broken.select("campaign_id", "action_id", "segment_id", "n_treated",
                                                                      "n_control", "srm_p_value")))})
    shown = lift.sort("campaign_id", "action_id", "segment_id").select(
        "campaign_id", "action_id", "segment_id", "n_treated", "n_control", "conv_rate_treated", "conv_rate_control",
        "abs_lift", "abs_lift_ci_low", "abs_lift_ci_high", "p_value", "srm_warning")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(lift.height), "as_of": str(as_of),
        "sends": dg.MetadataValue.int(outcomes.height), "treated": dg.MetadataValue.int(treated.height),
        "sends_left_out": dg.MetadataValue.md(md_rows(pl.DataFrame(
            [(k, LEFT_OUT.get(k, "of all sends left out: treatment sent to a global-control user (counted above too)"), v)
             for k, v in left_out.items() if v],
            schema=["reason", "meaning", "sends"], orient="row"))),
        "control": dg.MetadataValue.int(control.height),
        "conversion_treated": dg.MetadataValue.float(float(treated["converted"].mean() or 0.0)),
        "conversion_control": dg.MetadataValue.float(float(control["converted"].mean() or 0.0)),
        "attribution_days": catalogue.attribution_days, **plots,
        "lift": dg.MetadataValue.md(md_rows(shown)),
    }, check_results=[check, control_check])


def _warn_broken_campaigns(context, broken: pl.DataFrame) -> None:
    """One line per campaign whose treated/control split as a whole is off its plan; a campaign without any control
    row is named as such, the likeliest cause (its holdout was not delivered)."""
    for c in broken.iter_rows(named=True):
        share = percent(c["planned_control_share"])
        if c["n_control"] == 0:
            context.log.warning(f"campaign_lift: campaign {c['campaign_id']!r} has {c['n_treated']:,} treated sends and no "
                                f"control row ({share} planned): its lift cannot be measured and the policy judges its "
                                "sends against the other campaigns' control; deliver its held-out users as sends with "
                                "send_group 'control'")
        else:
            context.log.warning(f"campaign_lift: campaign {c['campaign_id']!r} held out {c['n_control']:,} of "
                                f"{c['n_treated'] + c['n_control']:,} users, {share} planned (p {c['srm_p_holm']:.1e}): "
                                "its lift is suspect; check how the sender drew the holdout, or its share in actions.yaml")


class NextBestActionConfig(CheckedConfig):
    min_sends_per_action: int = Field(default=policies.MIN_SENDS_PER_ACTION, ge=1, description="Treated sends every "
                                      "action needs before the contextual policy replaces the per-segment one.")
    explore_floor: float = Field(default=policies.EXPLORE_FLOOR, ge=0, le=1, description="Uniform share mixed into the "
                                 "contextual policy's choices: every eligible action keeps a propensity of at least this / k "
                                 "(docs/activation.md, 'An exploration floor').")
    evaluation_share: float = Field(default=policies.EVALUATION_SHARE, gt=0, lt=1, description="Latest share of the sends "
                                    "(by send time) a candidate policy is not fitted on, and judged on against the one in "
                                    "service (not a campaign's control share: actions.yaml's holdout_share).")
    l2_lambda: float | None = Field(default=None, gt=0, description="L2 penalty of the contextual policy's per-action "
                                    f"logistic regressions; empty: chosen at each fit by {CV_FOLDS}-fold cross-validation "
                                    f"among {', '.join(f'{g:g}' for g in L2_GRID)} (docs/activation.md, 'How strongly to "
                                    "trust each action's model').")
    new_action_share: float = Field(default=NEW_ACTION_SHARE, gt=0, le=1, description="Share of the users eligible "
                                    "for an action the policy in service has not learnt (new in actions.yaml) who are "
                                    "sent one, until a candidate policy that knows it is promoted (none is before it has "
                                    "min_sends_per_action sends); the others keep the policy in service "
                                    "(activation/new_actions.py).")
    promotion_tolerance: float = Field(default=PROMOTION_TOLERANCE, ge=0, le=1, description="A candidate policy "
                                       "whose off-policy value is below the one in service by more than this share of it "
                                       "is refused (relative: reward rates are small numbers).")


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=NEXT_BEST_ACTION, deps=[CAMPAIGN_LIFT, RAW_CAMPAIGN_SENDS, STG_ORDERS, USER_SEGMENTS, USER_GROUPS, SEGMENT_HISTORY],
    group_name=GROUP, pool="duckdb", kinds={"duckdb"}, automation_condition=rescore_on_new_inputs(),
    description="One action per eligible user from a Thompson-sampling policy (per-action logistic regressions) on the user's "
    "history as of each send and their segment, learnt from the campaign outcomes (per segment while sends are few; "
    "uniform over the eligible actions "
    "before any send), with its propensity; the policy is promoted only "
    "when its off-policy value on the latest sends is not worse than the policy in service (meta.policies). "
    "Global-control users never get an action.",
)
def next_best_action(context: dg.AssetExecutionContext, config: NextBestActionConfig, duckdb: Warehouse,
                     settings: SegSettings) -> dg.MaterializeResult:
    catalogue = settings_catalogue(settings)
    arms = tuple(sorted(catalogue.actions))
    with duckdb.get_connection() as con:
        as_of = settings.resolve_as_of(con)
        users = con.sql("""SELECT s.user_id, s.segment_id::BIGINT AS segment_id, s.segment_name,
                                  CAST(s.lifecycle_stage AS VARCHAR) AS lifecycle_stage,
                                  coalesce(g.global_control, false) AS global_control
                           FROM analytics.user_segments s LEFT JOIN analytics.user_groups g USING (user_id)""").pl()
        if not arms:
            with transaction(con):
                _write(con, "analytics.next_best_action", pl.DataFrame(schema=NBA_SCHEMA))
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "reason": "no actions in actions.yaml"})
        outcomes = policy_context(send_outcomes(con, as_of, catalogue.attribution_days)[0])
        con.execute(policies.POLICIES_DDL)
        in_service, in_service_version, in_service_as_of = policies.in_service(con)
        treated = outcomes.filter((pl.col("group") == "treatment") & pl.col("action_id").is_in(list(arms))).with_columns(
            pl.col("converted").cast(pl.Int8).alias("reward")).with_row_index("__row")
        treated = treated.join(policies.control_baselines(outcomes), on="campaign_id", how="left", maintain_order="left")
        x_sends = context_at(con, treated.select("user_id", pl.col("sent_ts").alias("t")))
    notes = []
    users = policies.eligible_lists(catalogue, arms, users)
    reachable = users.filter(~pl.col("global_control")).group_by("eligible_actions").len()  # a list per segment
    offered = {a for lst in reachable["eligible_actions"].to_list() for a in (lst or ())}
    if in_service is not None and tuple(in_service.arms) != arms:  # new_actions.py: it serves what it knows
        in_service = WithNewActions(in_service, arms, config.new_action_share).expecting(
            [lst or [] for lst in reachable["eligible_actions"].to_list()], reachable["len"].to_list(),
            catalogue.holdout_share)
        gone = sorted(set(in_service.base.arms) - set(arms))
        notes.append(f"the catalogue's actions changed since {in_service_version}: "
                     + "; ".join(part for part in (
                         f"new {', '.join(in_service.new)}, sent to {percent(config.new_action_share)} of the users "
                         "eligible for them until a candidate policy that knows them is promoted (none before each "
                         "has the treated sends it needs: " + ", ".join(
                             f"{a} {n}" for a, n in in_service.sends_needed(config.min_sends_per_action).items()) + ")"
                         if in_service.new else "",
                         f"removed {', '.join(gone)}" if gone else "") if part))
    if set(arms) - offered:
        context.log.warning(f"next_best_action: no user is eligible for {', '.join(sorted(set(arms) - offered))}: its "
                            "eligible_segments / eligible_stages in actions.yaml name no current segment or stage of a user")
    current = {str(v).strip().lower() for v in [*users["segment_id"].to_list(), *users["segment_name"].to_list()] if v is not None}
    for action_id in arms:  # a typo in one entry of a list silently left that segment without the action
        unknown = [s for s in catalogue.actions[action_id].eligible_segments if str(s).strip().lower() not in current]
        if unknown:
            context.log.warning(f"next_best_action: {action_id}'s eligible_segments name no current segment: "
                                f"{', '.join(map(repr, unknown[:5]))} (current: "
                                f"{', '.join(sorted(map(str, users['segment_name'].unique().to_list())))})")
    eligible_of = dict(zip(users["user_id"].to_list(), users["eligible_actions"].to_list()))
    gate = policies.decide(treated, x_sends, arms, eligible_of, (in_service, in_service_version, in_service_as_of),
                           evaluation_share=config.evaluation_share, attribution_days=catalogue.attribution_days,
                           tolerance=config.promotion_tolerance, min_sends=config.min_sends_per_action,
                           explore_floor=config.explore_floor, l2_lambda=config.l2_lambda)
    candidate, served, decision, evaluation = gate.candidate, gate.served, gate.decision, gate.evaluation
    base = served.base if isinstance(served, WithNewActions) else served
    with duckdb.get_connection() as con:
        context_users = policies.policy_segments(con, served, users).select(
            "user_id", pl.col("policy_segment").alias("segment_id"), "global_control", "eligible_actions")
        if isinstance(base, ContextualPolicy):
            context_users = context_users.filter(~pl.col("global_control"))
            x_users = context_at(con, context_users.select("user_id", pl.lit(as_of).alias("t")))
    chooser = ((lambda u: choose_contextual(base, u, x_users)) if isinstance(base, ContextualPolicy)
               else (lambda u: choose(base, u)))
    nba = (served.choose(context_users, chooser, round_key=str(as_of)) if isinstance(served, WithNewActions)
           else chooser(context_users))
    nba = nba.drop("segment_id")
    nba = nba.join(users.select("user_id", "segment_id"), on="user_id", how="left").select(NBA_COLUMNS)
    estimates = evaluation.table.to_dicts() if evaluation is not None else []
    with duckdb.get_connection() as con, transaction(con):
        policies.record(con, version=served.policy_version if decision.promote else candidate.policy_version, as_of=as_of,
                        run_id=context.run_id, fit_sends=gate.fit_sends, holdout_sends=gate.holdout_sends,
                        promoted=decision.promote,
                        reason="; ".join([decision.reason, *notes, *(evaluation.notes if evaluation is not None else ())]),
                        state=served.state() if decision.promote else candidate.state(), estimates=estimates)
        _write(con, "analytics.next_best_action", nba)
        con.execute("DELETE FROM analytics.next_best_action WHERE user_id IN "
                    "(SELECT user_id FROM analytics.user_groups WHERE global_control)")  # never, defensively
    meta = {
        "dagster/row_count": dg.MetadataValue.int(nba.height), "as_of": str(as_of),
        "policy_version": served.policy_version, "candidate_version": candidate.policy_version,
        "policy_kind": ("per segment (Thompson)" if not isinstance(base, ContextualPolicy) else
                        "contextual (logistic TS)" if base.link == "logit" else "contextual (LinTS)")
        + (f", new actions explored: {', '.join(served.new)}" if isinstance(served, WithNewActions) and served.new else ""),
        **{f"{who}l2_lambda": dg.MetadataValue.float(p.l2_lambda) for who, p in (("", base), ("candidate_", candidate))
           if getattr(p, "l2_lambda", None)},  # the served policy's penalty, and the one the candidate chose
        "promoted": decision.promote, "reason": decision.reason, "fit_sends": gate.fit_sends,
        "holdout_sends": gate.holdout_sends,
        "explore_share": dg.MetadataValue.float(float(nba["explore"].mean() or 0.0)),
        **{f"users_{a}": dg.MetadataValue.int(int(n)) for a, n in nba.group_by("action_id").len().sort("action_id").iter_rows()},
    }
    if evaluation is not None:
        for name, est in (("candidate", evaluation.candidate), ("in_service", evaluation.in_service),
                          ("uniform_random", evaluation.uniform), ("best_single_action", evaluation.best_single_action)):
            if math.isfinite(est.value):
                meta[f"value_{name}"] = dg.MetadataValue.float(est.value)
        meta["best_single_action"] = arms[evaluation.best_action]
        meta["estimates"] = dg.MetadataValue.md(md_rows(evaluation.table))
    return dg.MaterializeResult(metadata=meta)


assets = [user_groups, campaign_lift, next_best_action]
asset_checks: list = []
