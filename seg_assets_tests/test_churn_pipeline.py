"""The churn stage inside the real refresh, on real files and a real DuckDB warehouse.

* Orders-only data (a CDNOW-format file, imported with ``import_cdnow``) runs end to end: a model in
  service, every user scored, snapshots computed by the very code that built ``features.user_features``.
* A second refresh keeps the model (``fit=when_needed``); a fit below ``min_auc`` does not serve and blocks
  nothing: the check warns with the reason, the scores run with the model still in service (unchanged).
* With less history than the horizon needs, there is no model: the check warns, the scores are null and the
  refresh still succeeds.
"""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

import seg_assets.churn as churn
from seg_assets import definitions
from seg_assets.churn.cdnow import import_cdnow
from seg_assets.churn.snapshots import features_as_of
from seg_assets.refresh import run_refresh
from seg_assets.report import not_computed
from seg_assets.resources import build_resources
from seg_assets.settings import data_paths
from seg_assets_tests.test_churn_model import START, simulate_orders

DAYS = 240
AS_OF_TS = START + timedelta(days=DAYS) - timedelta(seconds=1)  # the end of the last imported day
AS_OF = AS_OF_TS.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def with_churn_stage():
    """The stage as the integrator wires it (a no-op once ``seg_assets.churn`` is in ``definitions.STAGES``)."""
    with pytest.MonkeyPatch.context() as mp:
        if churn not in definitions.STAGES:
            mp.setattr(definitions, "STAGES", (*definitions.STAGES, churn))
        yield


def write_cdnow(path, orders: pl.DataFrame) -> None:
    """CDNOW sample layout: master id, sample id, YYYYMMDD, CDs, dollars (CRLF)."""
    lines = []
    for i, (user, ts, amount) in enumerate(orders.sort("user_id", "order_ts").select("user_id", "order_ts", "amount").iter_rows()):
        num = int(user[1:])
        lines.append(f" {num:05d} {num % 10_000:04d} {ts:%Y%m%d} {1 + i % 3:2d} {amount:8.2f}")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, with_churn_stage):
    root = tmp_path_factory.mktemp("churn_pipeline")
    src = root / "CDNOW_sample.txt"
    write_cdnow(src, simulate_orders(700, 300, seed=21))
    summary = import_cdnow(src, root / "data", until=(START + timedelta(days=DAYS - 1)).date())
    assert summary.rows > 0 and summary.cut_rows > 0  # there is data after the as-of time in the source
    outcome = run_refresh(root / "data", as_of=AS_OF)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    return root / "data", outcome


def _con(root):
    return duckdb.connect(str(data_paths(root).warehouse), read_only=True)


def test_orders_only_data_runs_end_to_end(refreshed):
    root, outcome = refreshed
    assert not [f for s in outcome.stages for f in s.failures if "churn" in f]
    with _con(root) as con:
        models = con.sql("SELECT version, in_service, horizon_days, roc_auc, artifact FROM meta.churn_models").fetchall()
        scores = con.sql("SELECT * FROM analytics.churn_scores ORDER BY user_id").pl()
        users = con.sql("SELECT user_id FROM features.user_features ORDER BY user_id").pl()
        stored = con.sql("SELECT * FROM features.user_features ORDER BY user_id").pl()
        recomputed = features_as_of(con, stored["as_of"][0])
    assert len(models) == 1 and models[0][1] and models[0][2] == 90 and models[0][3] >= 0.65
    artifact = Path(models[0][4])  # recorded relative to the data root's models folder
    assert artifact.parent == Path("churn") and (data_paths(root).models / artifact).is_file()
    assert scores["user_id"].to_list() == users["user_id"].to_list()
    assert scores.columns == ["user_id", "churn_probability", "churn_risk", "expected_value_next_h", "churn_model_version", "as_of",
                              "features_build"]
    assert scores["churn_probability"].null_count() == 0
    assert scores["churn_probability"].min() >= 0 and scores["churn_probability"].max() <= 1
    assert set(scores["churn_risk"]) <= {"high", "medium", "low"} and scores["expected_value_next_h"].min() >= 0
    assert set(scores["churn_model_version"]) == {models[0][0]}
    assert set(scores["as_of"]) == {AS_OF_TS}
    # Training snapshots use the production feature code: at the as-of time they reproduce the feature table.
    features = [c for c in stored.columns if c != "features_build"]  # which build made the row: not a feature
    assert recomputed.select(features).equals(stored.select(features))


def test_second_refresh_keeps_the_model_and_a_weak_fit_does_not_serve_nor_block(refreshed):
    root, _ = refreshed
    assert run_refresh(root, as_of=AS_OF).success
    with _con(root) as con:
        assert con.sql("SELECT count(*) FROM meta.churn_models").fetchall() == [(1,)]
        before = con.sql("SELECT * FROM analytics.churn_scores ORDER BY user_id").pl()
    result = dg.materialize(
        [*churn.assets, *churn.asset_checks], resources=build_resources(root, AS_OF), raise_on_error=False,
        run_config={"ops": {"churn_model": {"config": {"fit": "always", "min_auc": 0.99}}}},
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "churn-0002 not in service" in check.description and "churn-0001 keeps serving" in check.description
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert churn.assets[1].key in materialized  # nothing blocked: scored with the model still in service
    with _con(root) as con:
        rows = con.sql("SELECT version, in_service, passed FROM meta.churn_models ORDER BY version").fetchall()
        after = con.sql("SELECT * FROM analytics.churn_scores ORDER BY user_id").pl()
        note = con.sql("SELECT in_service_version, note, outcome FROM meta.churn_runs ORDER BY recorded_at DESC LIMIT 1").fetchall()
        summary = not_computed(con)
    assert rows == [("churn-0001", True, True), ("churn-0002", False, False)]
    assert note[0][0] == "churn-0001" and "< min_auc 0.99" in note[0][1] and note[0][2] == "below_floor"
    assert [line for line in summary if line.startswith("churn:")] == [f"churn: {note[0][1]}"]  # the CLI says it
    assert after.equals(before)


def test_too_little_history_means_no_model_and_null_scores(data_dir, with_churn_stage):
    outcome = run_refresh(data_dir)  # 60 days of history: a 90-day horizon cannot be trained
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    assert any("churn_auc failed (WARN)" in f for s in outcome.stages for f in s.failures)
    with _con(data_dir) as con:
        assert con.sql("SELECT count(*) FROM meta.churn_models").fetchall() == [(0,)]
        nulls, total = con.sql("SELECT count(*) FILTER (WHERE churn_probability IS NULL AND churn_risk IS NULL "
                               "AND churn_model_version IS NULL), count(*) FROM analytics.churn_scores").fetchall()[0]
        assert nulls == total == con.sql("SELECT count(*) FROM features.user_features").fetchall()[0][0]


def test_cut_date_is_the_paper_calibration_end():
    assert date(1997, 1, 1) + timedelta(weeks=39) == date(1997, 10, 1)  # weeks 1-39 end on 1997-09-30
