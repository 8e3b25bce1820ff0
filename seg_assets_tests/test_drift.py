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
