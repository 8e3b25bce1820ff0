"""Preprocessing (log/clip/scale, serialisation) and k-selection / stability on planted data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import make_blobs

from seg_assets.segmentation.preprocess import Preprocessor, balanced_weights
from seg_assets.segmentation.selection import (
    SelectionConfig,
    bootstrap_stability,
    cluster_metrics,
    fit_clusters,
    sample_distances,
    sample_indices,
    select_k,
)


@pytest.fixture(scope="module")
def skewed() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = 2000
    return pl.DataFrame({
        "frequency": rng.poisson(2.0, n),  # count in the dictionary: sqrt
        "monetary": rng.lognormal(4, 1.2, n),  # money: sqrt
        "discount_share": rng.beta(2, 5, n),  # rate in [0, 1]: left as is
        "mystery": rng.normal(0, 1, n),  # unknown, can be negative: left as is
        "mystery_skewed": rng.pareto(1.5, n) * 10,  # unknown, skewed, non-negative: log1p
    })


def test_transform_decisions_follow_dictionary_and_skew(skewed):
    df = skewed.with_columns(recency_days=pl.col("monetary") / 10)
    p = Preprocessor().fit(df)
    assert dict(zip(p.features, p.transforms)) == {
        "frequency": "sqrt", "monetary": "sqrt", "discount_share": "none", "mystery": "none",
        "mystery_skewed": "log1p", "recency_days": "log1p"}
    forced = Preprocessor(skew_transform="log1p", overrides={"discount_share": "sqrt"}).fit(df)
    assert forced.transforms == ["log1p", "log1p", "sqrt", "none", "log1p", "log1p"]
    with pytest.raises(ValueError):
        Preprocessor(overrides={"mystery": "log1p"}).fit(df)  # negative values cannot be logged
    with pytest.raises(ValueError):
        Preprocessor(skew_transform="cuberoot")


def test_clip_scale_and_roundtrip(skewed, tmp_path):
    p = Preprocessor(clip_quantile=0.99).fit(skewed)
    Z = p.transform(skewed)
    assert np.allclose(Z.mean(axis=0), 0, atol=1e-9) and np.allclose(Z.std(axis=0), 1, atol=1e-9)
    j = p.features.index("monetary")
    assert p.clip_high[j] == pytest.approx(np.quantile(skewed["monetary"].to_numpy(), 0.99))
    # a whale far beyond the fit data is clipped, not extrapolated
    whale = skewed.head(1).with_columns(monetary=pl.lit(1e9))
    assert p.transform(whale)[0, j] == pytest.approx(Z[:, j].max())
    # stored as the models are (a joblib artifact): identical transform after loading
    import joblib

    from seg_assets.artifacts import save_artifact

    q = joblib.load(save_artifact(p, tmp_path / "p.joblib"))
    assert np.array_equal(q.transform(skewed), Z)
    # inverse transform of transformed (un-clipped) rows gives the original units back
    inside = skewed.filter(pl.all_horizontal(pl.col(f) <= float(h) for f, h in zip(p.features, p.clip_high)))
    assert np.allclose(p.inverse_transform(p.transform(inside)), inside.to_numpy(), rtol=1e-9, atol=1e-9)


def test_robust_scaler_falls_back_when_iqr_is_zero():
    zeros = pl.DataFrame({"orders_30d": [0] * 90 + [1, 2, 3, 5, 8, 1, 1, 2, 4, 9], "views": list(range(100))})
    p = Preprocessor(scaler="robust").fit(zeros)
    Z = p.transform(zeros)
    assert np.all(np.isfinite(Z)) and Z[:, 0].std() > 0.5  # not divided by a zero IQR


def test_nulls_are_filled_with_the_fit_median():
    df = pl.DataFrame({"frequency": [1.0, 2.0, 3.0, None]})
    p = Preprocessor().fit(df)
    Z = p.transform(df)
    assert np.isfinite(Z).all() and Z[3, 0] == pytest.approx(Z[1, 0])


def test_balanced_weights_give_each_group_unit_weight():
    w = balanced_weights(["frequency", "monetary", "avg_order_value", "orders_30d", "orders_90d", "discount_share",
                          "cat_share_books", "cat_share_toys", "something_else"])
    assert sum(w[f] ** 2 for f in ["frequency", "monetary", "avg_order_value", "orders_30d", "orders_90d"]) == pytest.approx(1)
    assert w["discount_share"] == 1.0 and w["something_else"] == 1.0
    assert w["cat_share_books"] == pytest.approx(2 ** -0.5)


def test_sample_indices_deterministic_and_bounded():
    a, b = sample_indices(100_000, 1000, 3), sample_indices(100_000, 1000, 3)
    assert np.array_equal(a, b) and len(a) == 1000 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_indices(100_000, 1000, 4))
    assert np.array_equal(sample_indices(10, 1000, 3), np.arange(10))


@pytest.mark.parametrize("planted", [4, 6])
def test_select_k_finds_the_planted_k(planted):
    X, _ = make_blobs(n_samples=3000, centers=planted, n_features=6, cluster_std=1.0, center_box=(-12, 12), random_state=planted)
    cfg = SelectionConfig(k_min=3, k_max=8, selection_sample=2000, silhouette_sample=1500)
    chosen = select_k(X, cfg)
    assert chosen.k == planted
    m = chosen.metrics
    assert m["k"].to_list() == list(range(3, 9)) and m.filter(pl.col("chosen"))["k"].to_list() == [planted]
    assert {"silhouette", "davies_bouldin", "calinski_harabasz"} <= set(m.columns)
    best = m.filter(pl.col("k") == planted).row(0, named=True)
    assert best["davies_bouldin"] == m["davies_bouldin"].min()


def test_silhouette_from_shared_distances_equals_the_direct_one():
    """select_k scores every k on one distance matrix of the silhouette sample: the metrics must not move."""
    X, _ = make_blobs(n_samples=4000, centers=5, n_features=6, random_state=1)
    distances = sample_distances(X, 1500, 7)
    for k in (2, 3, 5):
        labels = np.arange(len(X)) % k
        assert cluster_metrics(X, labels, 1500, 7, distances) == pytest.approx(cluster_metrics(X, labels, 1500, 7), abs=1e-12)
    assert sample_distances(X, 1500, 7).shape == (1500, 1500)
    assert sample_distances(np.zeros((9_000, 2)), 9_000, 7) is None  # too large to hold: scored per k in chunks


def test_gmm_and_minibatch_paths():
    X, _ = make_blobs(n_samples=1500, centers=4, n_features=4, random_state=1)
    assert select_k(X, SelectionConfig(algorithm="gmm", k_min=3, k_max=6, silhouette_sample=1000)).k == 4
    est, algo = fit_clusters(X, 4, SelectionConfig(algorithm="auto", minibatch_above=1000))
    assert algo == "minibatch" and est.cluster_centers_.shape == (4, 4)
    est, algo = fit_clusters(X, 4, SelectionConfig(algorithm="auto"))
    assert algo == "kmeans"


def test_bootstrap_stability_separates_structure_from_noise():
    X, _ = make_blobs(n_samples=3000, centers=4, n_features=5, random_state=2)
    noise = np.random.default_rng(2).uniform(size=(3000, 5))
    clean = bootstrap_stability(X, 4, n_boot=4, sample_size=1500, seed=0)
    assert clean > 0.95
    assert bootstrap_stability(noise, 7, n_boot=4, sample_size=1500, seed=0) < clean - 0.1
    assert bootstrap_stability(X, 4, n_boot=4, sample_size=1500, seed=0) == clean  # deterministic
