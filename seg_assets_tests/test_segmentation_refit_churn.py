"""Membership that does not churn (issue 13 item 4), end to end: a refit after 15 % of users changed
behaviour keeps the segment of the users who did not change; a refit on unchanged data keeps everyone."""

import json
from datetime import timedelta

import duckdb
import polars as pl
import pytest

from bench.membership import kept_share, published
from seg_assets.demo.generate import DEFAULT_END, generate_followup
from seg_assets.refresh import run_refresh
from seg_assets.segmentation.assets import candidate_promoted
from seg_assets.segmentation.membership import DEFAULT_MAX_CHURN
from seg_assets.settings import data_paths


@pytest.mark.slow
def test_a_refit_after_drift_keeps_the_users_who_did_not_change(refreshed):
    before = published(refreshed)
    generate_followup(refreshed, 3_000, 14, 5, start=DEFAULT_END + timedelta(seconds=1), changed_share=0.15,
                      new_users=30, tag="drift")
    changed = pl.read_parquet(refreshed / "truth" / "changed_users_drift.parquet")["user_id"]
    outcome = run_refresh(refreshed, refit=True)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    after = published(refreshed)
    drift = kept_share(before, after, changed)
    assert drift["kept_same_stage"] >= 0.95, drift
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:
        # --refit scores everyone as of now (users without new rows kept the features of 14 days before)
        assert con.sql("SELECT count(DISTINCT as_of) FROM features.user_features").fetchall() == [(1,)]
        (metrics,) = con.sql("SELECT metrics FROM meta.segment_models ORDER BY version DESC LIMIT 1").fetchall()[0]
        check = candidate_promoted(con)
    metrics = json.loads(metrics)
    assert 0 <= metrics["gate_membership_churn_stable"] <= 1 and 0 <= metrics["gate_membership_churn"] <= 1
    assert metrics["gate_stable_users"] > 0
    assert check.metadata["membership_churn_stable"].value == metrics["gate_membership_churn_stable"]
    if metrics["gate_membership_churn_stable"] > DEFAULT_MAX_CHURN:  # max_membership_churn: the model in service stays
        assert not check.passed and "membership_churn_stable" in check.description
    assert run_refresh(refreshed, refit=True).success  # nothing new: every segment id stays
    assert kept_share(after, published(refreshed))["kept"] == 1.0


def test_when_needed_dates_the_age_from_the_latest_fit_even_a_refused_one(refreshed):
    """A candidate refused for age must not be fitted again on every refresh: the hourly job would re-fit hourly."""
    import dagster as dg

    from seg_assets.resources import build_resources
    from seg_assets.segmentation.assets import segment_model


    def when_needed(days, fit="when_needed"):
        as_of = (DEFAULT_END + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:  # the features dated as a refresh then dates
            # them (the newest at the run's as-of): the drift check ages rows to the run, and everyone 8 days older
            # with nothing new is drift, which would hide the age this test is about
            con.execute("UPDATE features.user_features SET as_of = as_of + (?::TIMESTAMP - (SELECT max(as_of) "
                        "FROM features.user_features))", [DEFAULT_END + timedelta(days=days)])
        result = dg.materialize([segment_model], resources=build_resources(refreshed, as_of),
                                run_config={"ops": {"segment_model": {"config": {"fit": fit}}}})
        assert result.success
        with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:
            return [v for (v,) in con.sql("SELECT version FROM meta.segment_models ORDER BY version").fetchall()]

    assert when_needed(8) == ["v0001", "v0002"]  # older than max_age_days: a re-fit, whatever the gate says of it
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:  # why it fitted and the gate's verdict, apart
        (first, _), (fit_reason, reason) = con.sql("SELECT fit_reason, reason FROM meta.segment_models ORDER BY version").fetchall()
    assert first == "no model in service" and fit_reason.startswith("the latest fit v0001 is older than 7 days")
    assert "older than" not in reason and fit_reason not in reason
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:  # as if the gate had refused it
        con.sql("UPDATE meta.segment_models SET in_service = (version = 'v0001'), promoted = (version = 'v0001')")
    assert len(when_needed(8)) == 2  # refused on this very data: not fitted again
    assert len(when_needed(9)) == 2  # a day later: the latest fit is a day old, v0001 in service nine
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:  # half the users scored three days before
        con.sql("UPDATE features.user_features SET as_of = as_of - INTERVAL 3 DAY WHERE hash(user_id) % 2 = 0")
    assert len(when_needed(16)) == 2  # a fit on rows of two dates waits for the rebase (a tester's split of them)
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:
        con.sql("UPDATE features.user_features SET as_of = (SELECT max(as_of) FROM features.user_features)")
    assert len(when_needed(16)) == 3  # a week after the latest fit
    with duckdb.connect(str(data_paths(refreshed).warehouse)) as con:
        con.sql("UPDATE features.user_features SET as_of = as_of - INTERVAL 3 DAY WHERE hash(user_id) % 2 = 0")
    assert len(when_needed(17, fit="always")) == 4  # asked for (--set fit=always): fitted, not a TypeError (a reviewer's)
