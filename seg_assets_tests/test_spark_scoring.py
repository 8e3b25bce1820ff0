"""Scoring on Spark gives every user what the DuckDB engine gives them (segmentation/batch.py, churn/scoring.py).

One real DuckDB refresh of the small generated dataset (churn horizon shortened so a churn model serves);
its ``features.user_features`` written to the Spark engine's Parquet folder; then ``churn_scores`` and
``user_segments`` materialized with the ``spark`` engine on a copy of the warehouse without the scored
tables. Every user's columns must equal the DuckDB ones (floats within 1e-9 relative). Then the sticky
rule (a user keeps their published segment unless another is clearly better) and the kept-segment path
(new rule settings: rows rewritten, segments kept) run on both engines from the same published state.
"""

import shutil

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from seg_assets.churn.assets import churn_scores
from seg_assets.features.incremental import REBASE_TAG
from seg_assets.refresh import run_refresh
from seg_assets.resources import build_resources
from seg_assets.segmentation import registry
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.scoring import COLUMNS, user_segments
from seg_assets.settings import data_paths
from seg_assets.spark.scoring import features_dir

pytestmark = pytest.mark.slow
FLOATS = ("confidence", "churn_probability", "expected_value_next_h")
CHURN = {"ops": {"churn_model": {"config": {"horizon_days": 14, "min_auc": 0.0, "kind": "logreg"}}}}


def _table(root, table: str) -> pl.DataFrame:
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY user_id").pl()


def _materialize(root, assets, engine: str, tags=None, run_config=None):
    result = dg.materialize(assets, resources=build_resources(root, engine=engine), tags=tags or {},
                            run_config=run_config or {}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def assert_same_rows(duck: pl.DataFrame, spark: pl.DataFrame, columns) -> None:
    """Same users; every column equal, floats within 1e-9 relative (nulls where the other has nulls)."""
    assert duck["user_id"].to_list() == spark["user_id"].to_list()
    for col in columns:
        a, b = duck[col], spark[col]
        if col in FLOATS:
            assert a.is_null().to_list() == b.is_null().to_list(), col
            x, y = a.drop_nulls().to_numpy(), b.drop_nulls().to_numpy()
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=0, err_msg=col)
        else:
            assert a.cast(pl.String).to_list() == b.cast(pl.String).to_list(), col


@pytest.fixture(scope="module")
def refreshed(small_landing, tmp_path_factory):
    """A DuckDB refresh with a churn model in service, and the Spark engine's copy of its features."""
    root = tmp_path_factory.mktemp("spark_scoring") / "duck"
    shutil.copytree(small_landing, root)
    outcome = run_refresh(root, overrides=CHURN)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    folder = features_dir(root)
    folder.mkdir(parents=True)
    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        con.sql(f"COPY features.user_features TO '{folder / 'part-0.parquet'}' (FORMAT parquet)")
    return root


def _copy(root, name: str, drop: tuple[str, ...] = ()):
    copy = root.parent / name
    shutil.copytree(root, copy)
    with duckdb.connect(str(data_paths(copy).warehouse)) as con:
        for table in drop:
            con.sql(f"DROP TABLE {table}")
    return copy


@pytest.fixture(scope="module")
def on_spark(refreshed, spark):
    """The same warehouse with the scored tables dropped, scored again by the spark engine."""
    copy = _copy(refreshed, "spark", drop=("analytics.user_segments", "analytics.churn_scores"))
    result = _materialize(copy, [churn_scores, user_segments], "spark")
    meta = result.asset_materializations_for_node("analytics__user_segments")[0].metadata
    assert meta["engine"].value == "spark" and meta["scored"].value == "on spark"
    assert (features_dir(copy).parent.parent / "scoring" / "user_segments" / "scored").is_dir()
    return copy


def test_every_user_gets_the_same_segment_scores_and_churn_on_both_engines(refreshed, on_spark):
    churn_duck, churn_spark = _table(refreshed, "analytics.churn_scores"), _table(on_spark, "analytics.churn_scores")
    assert churn_duck["churn_probability"].null_count() == 0  # a churn model served: the scores are compared
    assert_same_rows(churn_duck, churn_spark, churn_duck.columns)
    duck, spark_rows = _table(refreshed, "analytics.user_segments"), _table(on_spark, "analytics.user_segments")
    assert duck.height == 3_000 and duck["segment_id"].n_unique() > 2
    assert_same_rows(duck, spark_rows, COLUMNS)
    assert dict(duck.schema) == dict(spark_rows.schema)  # same types (ENUMs included) for BI


def _perturb(root) -> pl.DataFrame:
    """Publish (and record) another segment of the same lifecycle stage for every other user whose stage has several."""
    with duckdb.connect(str(data_paths(root).warehouse)) as con:
        model = SegmentModel.load(registry.in_service_model(con).artifact)
        by_stage: dict[str, list[int]] = {}
        for sid, stage in zip(model.segment_ids, model.cluster_stage):
            by_stage.setdefault(stage, []).append(sid)
        other = {sid: ids[(ids.index(sid) + 1) % len(ids)] for ids in by_stage.values() for sid in ids if len(ids) > 1}
        rows = con.sql("SELECT user_id, segment_id FROM analytics.user_segments ORDER BY user_id").pl()
        moved = rows.with_row_index().filter((pl.col("index") % 2 == 0) & pl.col("segment_id").is_in(list(other))
                                             ).select("user_id", pl.col("segment_id").replace_strict(other).alias("published"))
        con.register("moved", moved)
        con.sql("UPDATE analytics.user_segments s SET segment_id = m.published FROM moved m WHERE s.user_id = m.user_id")
        # as published and recorded: the sticky rule reads the history's open spell
        con.sql("UPDATE analytics.segment_history h SET segment_id = m.published FROM moved m "
                "WHERE h.user_id = m.user_id AND h.valid_to IS NULL")
    return moved


def test_sticky_membership_and_kept_segments_behave_the_same_on_spark(refreshed, on_spark):
    duck = _copy(refreshed, "duck_sticky")
    first = _table(duck, "analytics.user_segments").select("user_id", pl.col("segment_id").alias("assigned"))
    for root, engine in ((duck, "duckdb"), (on_spark, "spark")):
        moved = _perturb(root)
        _materialize(root, [user_segments], engine, tags={REBASE_TAG: "true"})  # everyone re-assigned, sticky
    a, b = _table(duck, "analytics.user_segments"), _table(on_spark, "analytics.user_segments")
    assert_same_rows(a, b, COLUMNS)
    outcome = moved.join(first, on="user_id").join(a.select("user_id", "segment_id"), on="user_id")
    kept = (outcome["segment_id"] == outcome["published"]).sum()
    back = (outcome["segment_id"] == outcome["assigned"]).sum()
    assert kept > 0 and back > 0 and kept + back == outcome.height  # some stay where published, the others go back

    # New rule settings: every row rewritten, segments kept (not re-assigned), RFM scores from 4 bins.
    config = {"ops": {"analytics__user_segments": {"config": {"rfm_bins": 4}}}}
    for root, engine in ((duck, "duckdb"), (on_spark, "spark")):
        _materialize(root, [user_segments], engine, run_config=config)
    c, d = _table(duck, "analytics.user_segments"), _table(on_spark, "analytics.user_segments")
    assert_same_rows(c, d, COLUMNS)
    assert c["segment_id"].to_list() == a["segment_id"].to_list() and c["r_score"].max() == 4
