"""PSI: zero for the same population, large for a shifted one, robust to zero-inflated counts."""

import numpy as np
import polars as pl

from seg_assets.segmentation.drift import build_reference, population_stability, psi, reference_bins


def test_psi_same_population_is_near_zero_and_shift_is_large():
    rng = np.random.default_rng(0)
    ref = rng.gamma(2.0, 10.0, 50_000)
    bins = reference_bins(ref)
    assert len(bins.edges) == 9 and abs(sum(bins.shares) - 1) < 1e-9
    assert psi(bins, rng.gamma(2.0, 10.0, 50_000)) < 0.01
    assert psi(bins, rng.gamma(2.0, 20.0, 50_000)) > 0.25


def test_zero_inflated_feature_has_fewer_bins_and_still_detects_shift():
    rng = np.random.default_rng(1)
    ref = np.where(rng.random(20_000) < 0.8, 0, rng.poisson(3, 20_000)).astype(float)
    bins = reference_bins(ref)
    assert len(bins.edges) < 9
    assert psi(bins, ref.copy()) < 1e-6
    shifted = np.where(rng.random(20_000) < 0.3, 0, rng.poisson(3, 20_000)).astype(float)
    assert psi(bins, shifted) > 0.25


def test_population_stability_ranks_features():
    rng = np.random.default_rng(2)
    base = pl.DataFrame({"a": rng.normal(0, 1, 10_000), "b": rng.normal(0, 1, 10_000)})
    ref = build_reference(base, ["a", "b"])
    now = pl.DataFrame({"a": rng.normal(0, 1, 10_000), "b": rng.normal(1.5, 1, 10_000)})
    out = population_stability(ref, now)
    assert out["feature"].to_list() == ["b", "a"] and out["psi"][0] > 0.25 > out["psi"][1]


def test_the_drift_panel_is_a_fixed_hash_slice_of_about_the_target_size(monkeypatch):
    import importlib

    import duckdb

    seg_assets_module = importlib.import_module("seg_assets.segmentation.assets")  # the package exports a list named assets

    con = duckdb.connect()
    con.sql("CREATE SCHEMA features")
    con.sql("CREATE TABLE features.user_features AS SELECT 'u' || i AS user_id, i::DOUBLE AS x FROM range(20000) t(i)")
    assert seg_assets_module.read_drift_panel(con, ["x"]).height == 20_000  # below the target: everyone
    monkeypatch.setattr(seg_assets_module, "DRIFT_SAMPLE_ROWS", 2_000)
    panel = seg_assets_module.read_drift_panel(con, ["x"])
    assert 1_700 < panel.height < 2_300
    con.sql("INSERT INTO features.user_features SELECT 'v' || i, i FROM range(200) t(i)")  # the population grows a little
    again = seg_assets_module.read_drift_panel(con, ["x"])
    assert len(set(panel["user_id"]) & set(again["user_id"])) > 0.95 * panel.height  # mostly the same users


def test_drift_ages_rows_an_incremental_refresh_kept_to_the_runs_as_of():
    """An incremental refresh recomputes only the users with new rows; the others keep their features as of the last
    rebase. PSI must compare everyone as of the run: a row kept from hours before reads a smaller recency, tenure and
    days since the last visit than the user has now (h3, session 34: the 10-20 23:59:59 refresh measured recency's PSI
    0.255 and re-fitted for drift, 0.212 with every row aged to the as-of; the rebase 2.5 hours later 0.207)."""
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from seg_assets.segmentation.assets import drift_table

    rng = np.random.default_rng(3)
    now = datetime(2026, 10, 20, 23, 59, 59)
    today = pl.DataFrame({"recency_days": rng.uniform(0, 60, 4000), "tenure_days": rng.uniform(60, 400, 4000)})
    model = SimpleNamespace(reference_sample=today, as_of=now, features=["recency_days", "tenure_days"])
    stale = np.arange(4000) % 4 != 0  # three users in four did nothing since the last rebase, 10 days before
    kept = today.with_columns(pl.when(pl.Series(stale)).then(pl.col(c) - 10).otherwise(pl.col(c)).alias(c)
                              for c in ("recency_days", "tenure_days"))
    kept = kept.with_columns(as_of=pl.Series([now - timedelta(days=10) if s else now for s in stale]))
    psi = dict(drift_table(model, kept, now).rows())
    assert psi["recency_days"] < 1e-9 and psi["tenure_days"] < 1e-9
    assert dict(drift_table(model, today, now).rows())["recency_days"] < 1e-9  # no as-of column: taken as it is
