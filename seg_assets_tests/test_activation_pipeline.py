"""Activation wired end to end: generated shoppers with planted per-type responses to actions, campaign sends, a
refresh before the first send (the segments the sends were made to) and one after; lift, the next-best-action
policy and the audience files are checked against the planted truth."""

import filecmp
import re
from datetime import timedelta

import duckdb
import polars as pl
import pytest

from seg_assets.activation.groups import bucket, control_cutoff
from seg_assets.demo.campaigns import CONTROL_SALT, CONTROL_SHARE, HOLDOUT_SHARE
from seg_assets.demo.generate import generate
from seg_assets.refresh import run_refresh
from seg_assets_tests.bi_copy import read_bi


@pytest.fixture(scope="module")
def campaigns_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaigns")
    generate(root, users=4_000, days=90, seed=5, with_campaigns=True)
    first_send = pl.read_parquet(root / "landing" / "campaign_sends" / "*.parquet")["sent_ts"].min()
    before = (first_send - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_refresh(root, as_of=before).success  # the segments the campaigns were sent to
    outcome = run_refresh(root)
    assert outcome.success, [p.message for p in outcome.problems if p.kind == "error"]
    return root



def global_control(root) -> set[str]:
    return set(read_bi(root, "SELECT user_id FROM analytics.user_groups WHERE global_control")["user_id"].to_list())


def test_campaigns_are_an_extra_the_other_files_stay_byte_identical(tmp_path):
    generate(tmp_path / "a", 300, 40, 3)
    generate(tmp_path / "b", 300, 40, 3, with_campaigns=True)
    plain = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "landing").rglob("*.parquet"))
    for rel in plain:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    extra = {p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "landing").rglob("*.parquet")} - set(plain)
    assert {p.parts[1] for p in extra} == {"campaign_sends", "orders"}
    sends = pl.read_parquet(tmp_path / "b" / "landing" / "campaign_sends" / "*.parquet")
    assert set(sends["group"]) == {"treatment", "control"} and (sends["propensity"] == 0.25).all()
    cutoff = control_cutoff(CONTROL_SHARE)
    assert not any(bucket(u, CONTROL_SALT) < cutoff for u in sends["user_id"].to_list())  # the sender honours it
    assert (tmp_path / "b" / "actions.yaml").exists() and not (tmp_path / "a" / "actions.yaml").exists()


@pytest.mark.slow
def test_lift_and_policy_are_published_and_no_control_user_gets_an_action(campaigns_root):
    lift = read_bi(campaigns_root, "SELECT * FROM analytics.campaign_lift")
    nba = read_bi(campaigns_root, "SELECT * FROM analytics.next_best_action")
    assert lift.height > 20 and nba.height > 1000
    assert set(nba.columns) >= {"user_id", "action_id", "expected_reward", "explore", "propensity", "policy_version"}
    assert nba["user_id"].is_unique().all() and nba["policy_version"].n_unique() == 1
    assert not set(nba["user_id"].to_list()) & global_control(campaigns_root)
    # The demo splits as planned. Users who signed up after the pre-send refresh have no send-time segment: they
    # are counted in a cell of their own (segment null), not in the segment the send itself moved them to.
    assert not lift["srm_warning"].any(), lift.filter("srm_warning").select("campaign_id", "action_id", "segment_id",
                                                                              "n_treated", "n_control")
    assert lift["segment_id"].null_count() > 0 and lift["segment_id"].n_unique() > 4
    con = duckdb.connect(str(campaigns_root / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql("SELECT promoted, reason, estimates, state->>'kind' FROM meta.policies ORDER BY fitted_at").fetchall()
    finally:
        con.close()
    assert len(rows) == 2 and rows[0][0] and rows[0][3] is None  # before any send: uniform per segment, promoted
    assert rows[1][0] and "not worse" in rows[1][1] and "snips" in rows[1][2]
    assert rows[1][3] == "lints"  # enough sends: the contextual policy replaced it through the gate
    assert ((nba["propensity"] > 0) & (nba["propensity"] <= 1)).all() and 0 < nba["explore"].mean() < 0.2


def test_audience_files_per_campaign_hold_treatment_and_holdout_and_no_control_user(campaigns_root):
    folder = campaigns_root / "bi" / "audiences"
    nba = read_bi(campaigns_root, "SELECT user_id, action_id FROM analytics.next_best_action")
    as_of = read_bi(campaigns_root, "SELECT max(as_of) AS t FROM analytics.user_segments")["t"][0]
    control = global_control(campaigns_root)
    seen = []
    for action in sorted(set(nba["action_id"])):
        campaign = f"{action}-{as_of:%Y%m%d}"
        parquet, csv = pl.read_parquet(folder / f"{campaign}.parquet"), pl.read_csv(folder / f"{campaign}.csv")
        assert parquet.sort("user_id").equals(csv.sort("user_id").cast(parquet.schema))
        assert (parquet["campaign_id"] == campaign).all() and (parquet["action_id"] == action).all()
        assert not set(parquet["user_id"].to_list()) & control
        held = parquet.filter(pl.col("group") == "control")
        assert parquet.height == nba.filter(pl.col("action_id") == action).height
        if parquet.height >= 100:
            assert 0 < held.height < parquet.height and abs(held.height / parquet.height - HOLDOUT_SHARE) < 0.08
        assert all(bucket(u, campaign) < control_cutoff(HOLDOUT_SHARE) for u in held["user_id"].to_list())
        seen += parquet["user_id"].to_list()
    assert len(seen) == len(set(seen)) == nba.height
    assert not list(folder.glob(".*"))  # no temporary file left


def gap_closed(root) -> float:
    """Share of the gap between uniform random and the best action per shopper type that the published actions close."""
    types = pl.read_parquet(root / "truth" / "shopper_types.parquet")
    rates = pl.read_parquet(root / "truth" / "planted_action_rates.parquet")
    per_type = rates.group_by("shopper_type").agg(pl.col("rate").mean().alias("uniform"), pl.col("rate").max().alias("best"))
    nba = read_bi(root, "SELECT user_id, action_id FROM analytics.next_best_action")
    scored = nba.join(types, on="user_id").join(rates, on=["shopper_type", "action_id"]).join(per_type, on="shopper_type")
    return (scored["rate"].mean() - scored["uniform"].mean()) / (scored["best"].mean() - scored["uniform"].mean())


def test_the_policy_closes_half_the_gap_and_lift_intervals_cover_the_planted_lift(campaigns_root):
    truth = campaigns_root / "truth"
    types = pl.read_parquet(truth / "shopper_types.parquet")
    rates = pl.read_parquet(truth / "planted_action_rates.parquet")
    assert gap_closed(campaigns_root) >= 0.55  # 0.64 on this seed; 0.64-0.73 on five (docs/activation.md)

    # Planted lift of a cell: its treated users' mean planted rate, times the chance they would not have ordered anyway.
    sends = pl.read_parquet(campaigns_root / "landing" / "campaign_sends" / "*.parquet")
    lift = read_bi(campaigns_root, "SELECT * FROM analytics.campaign_lift WHERE abs_lift_ci_low IS NOT NULL")
    con = duckdb.connect(str(campaigns_root / "warehouse.duckdb"), read_only=True)
    try:
        from seg_assets.activation.outcomes import send_outcomes
        as_of = con.sql("SELECT max(as_of) FROM analytics.user_segments").fetchall()[0][0]
        segment_at_send = send_outcomes(con, as_of, 7)[0].select("send_id", "segment_id")
    finally:
        con.close()
    planted = (sends.filter(pl.col("group") == "treatment").join(segment_at_send, on="send_id")
               .join(types, on="user_id").join(rates, on=["shopper_type", "action_id"])
               .group_by("campaign_id", "action_id", "segment_id").agg(pl.col("rate").mean().alias("rate")))
    cells = lift.join(planted, on=["campaign_id", "action_id", "segment_id"]).with_columns(
        (pl.col("rate") * (1 - pl.col("conv_rate_control"))).alias("planted"))
    covered = ((cells["abs_lift_ci_low"] <= cells["planted"]) & (cells["planted"] <= cells["abs_lift_ci_high"])).mean()
    assert cells.height > 20 and covered >= 0.8, (cells.height, covered)


def test_audience_files_of_campaigns_no_longer_current_are_removed(tmp_path):
    from datetime import datetime

    from seg_assets.activation.audiences import audience_files, audiences, write_audiences

    nba = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "action_id": ["a", "b", "a"], "propensity": [0.5, 0.5, 0.5],
                        "policy_version": ["ts-1"] * 3})
    folder = tmp_path / "audiences"
    (folder / "notes").mkdir(parents=True)  # not an audience file: left alone
    write_audiences(audiences(nba, datetime(2026, 11, 1), 0.1), folder)
    assert [p.name for p in audience_files(folder)] == ["a-20261101.csv", "a-20261101.parquet", "b-20261101.csv",
                                                        "b-20261101.parquet"]
    counts = write_audiences(audiences(nba.filter(pl.col("action_id") == "a"), datetime(2026, 11, 2), 0.1), folder)
    assert set(counts) == {"a-20261102"}
    assert [p.name for p in audience_files(folder)] == ["a-20261102.csv", "a-20261102.parquet"]
    write_audiences(audiences(nba.clear(), datetime(2026, 11, 3), 0.1), folder)  # nobody to target: no campaign
    assert audience_files(folder) == [] and sorted(p.name for p in folder.iterdir()) == ["notes"]


@pytest.mark.slow
def test_the_policy_closes_half_the_gap_on_other_planted_rates(tmp_path):
    """Each shopper type's best action moved (bench/policy_gap.py --shape): the segment model then finds 3 segments
    and no per-segment policy closes more than 0.23 of the gap; the contextual policy does (0.59-0.65 on 3 seeds with LinTS;
    0.61 on seed 2 with the logistic model)."""
    from bench.policy_gap import build

    build(tmp_path / "shape", users=8_000, days=120, seed=2, shape=True)
    assert gap_closed(tmp_path / "shape") >= 0.55  # 0.61 on this seed


def test_a_refit_without_new_sends_keeps_the_policy_in_service(campaigns_root, tmp_path):
    """The gate judges a candidate only on sends the policy in service was not fitted on: with none, it keeps it
    (on its own training sends the policy in service looked better than a candidate fitted on fewer)."""
    import shutil

    root = tmp_path / "again"
    shutil.copytree(campaigns_root, root)
    served = read_bi(root, "SELECT DISTINCT policy_version FROM analytics.next_best_action")["policy_version"].to_list()
    assert run_refresh(root, refit=True).success
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        promoted, reason = con.sql("SELECT promoted, reason FROM meta.policies ORDER BY fitted_at DESC LIMIT 1").fetchall()[0]
    finally:
        con.close()
    assert not promoted and "not fitted on" in reason and served[0] in reason
    assert read_bi(root, "SELECT DISTINCT policy_version FROM analytics.next_best_action")["policy_version"].to_list() == served


def test_a_later_as_of_closes_attribution_windows_without_new_data(campaigns_root, tmp_path):
    """Activation read the as-of of the published segments, which only moves for users with new rows: ``refresh
    --as-of`` a week on, with no new delivery, left the windows open by the old as-of open and the policy and the
    audiences dated as before."""
    import shutil

    root = tmp_path / "later"
    shutil.copytree(campaigns_root, root)
    later = read_bi(root, "SELECT max(as_of) AS t FROM analytics.user_segments")["t"].item() + timedelta(days=8)

    def counted() -> tuple[int, object]:
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        try:
            (n,) = con.sql("SELECT sum(n_treated + n_control) FROM analytics.campaign_lift").fetchall()[0]
            (as_of,) = con.sql("SELECT as_of FROM meta.policies ORDER BY fitted_at DESC LIMIT 1").fetchall()[0]
        finally:
            con.close()
        return int(n), as_of

    before, _ = counted()
    assert run_refresh(root, as_of=later.strftime("%Y-%m-%dT%H:%M:%SZ")).success
    after, as_of = counted()
    assert after >= before and as_of == later
    assert {p.stem.rsplit("-", 1)[1] for p in (root / "bi" / "audiences").glob("*.csv")} == {f"{later:%Y%m%d}"}


def test_settings_that_match_nothing_are_named(campaigns_root, tmp_path):
    """A campaign share for an id no send names, and one mistyped segment in an eligibility list (the action still had
    users, so nothing warned: a segment silently never got it). In the same refresh (one refresh for both: it is the
    slow part), a campaign delivered without its control rows is named and fails the sample-ratio check."""
    import shutil

    import yaml

    root = tmp_path / "named"
    shutil.copytree(campaigns_root, root)
    sends = pl.read_parquet(root / "landing" / "campaign_sends" / "*.parquet")
    late = sends.filter(pl.col("group") == "treatment").with_columns(
        pl.lit("no-holdout").alias("campaign_id"), ("nh" + pl.col("send_id")).alias("send_id"))
    late.write_parquet(root / "landing" / "campaign_sends" / "no_holdout.parquet")
    actions = yaml.safe_load((root / "actions.yaml").read_text())
    first = next(iter(actions["actions"]))
    actions["actions"][first]["eligible_segments"] = [1, "Bargain  huntres"]
    actions["campaigns"] = {"Demo-Typo": {"holdout_share": 0.5}}
    (root / "actions.yaml").write_text(yaml.safe_dump(actions))
    outcome = run_refresh(root)
    assert outcome.success
    warnings = " ".join(p.message for p in outcome.problems if p.kind == "warning")
    assert "holdout share for campaign(s) no send names: 'Demo-Typo'" in warnings
    assert f"{first}'s eligible_segments name no current segment: 'Bargain  huntres'" in warnings
    named = re.search(r"campaign 'no-holdout' has ([\d,]+) treated sends and no control row \((\d+)% planned\): its lift "
                      "cannot be measured", warnings)
    users = late["user_id"].n_unique()  # a campaign counts a user once (the merged campaigns sent some users 2-4 times)
    assert named and 0.9 * users <= int(named[1].replace(",", "")) <= users, warnings
    assert int(named[2]) == round(100 * yaml.safe_load((root / "actions.yaml").read_text()).get("holdout_share", 0.5)), named[0]
    assert "check analytics/campaign_lift:sample_ratio" in {p.where for p in outcome.problems if p.kind == "warning"}


def test_an_action_added_to_the_catalogue_is_explored_not_trusted(campaigns_root, tmp_path):
    """A new action in actions.yaml: the policy in service keeps serving the others, the new one goes to about
    new_action_share of the users (no expected reward, flagged as exploring) and no policy is promoted unseen."""
    import shutil

    root = tmp_path / "new_action"
    shutil.copytree(campaigns_root, root)
    served = read_bi(root, "SELECT DISTINCT policy_version FROM analytics.next_best_action")["policy_version"].to_list()
    catalogue = root / "actions.yaml"
    catalogue.write_text(catalogue.read_text() + "  gift_wrap:\n    description: Free gift wrap\n    channel: email\n"
                         "    cost_per_send: 0.01\n")
    assert run_refresh(root).success
    nba = read_bi(root, "SELECT * FROM analytics.next_best_action")
    new = nba.filter(pl.col("action_id") == "gift_wrap")
    assert 0.07 < new.height / nba.height < 0.13, new.height / nba.height
    assert new["expected_reward"].is_null().all() and new["explore"].all()
    assert nba["policy_version"].unique().to_list() == served
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        promoted, reason = con.sql("SELECT promoted, reason FROM meta.policies ORDER BY fitted_at DESC LIMIT 1").fetchall()[0]
    finally:
        con.close()
    assert not promoted and "exploring new actions: gift_wrap (0 of 100 treated sends)" in reason, reason
    assert "none before each has the treated sends it needs: gift_wrap 100)" in reason, reason  # the hold, in figures
