"""Choosing k and fitting the clustering, in a way that scales to millions of users.

* k is chosen in a configured range by the **silhouette on a deterministic sample** (at most
  ``silhouette_sample`` rows, default 5k: the exact silhouette is O(n^2)), among the k whose smallest
  cluster holds at least ``min_cluster_share`` (1%) of the users: a segment of a handful of users
  is not actionable, however well separated. Davies-Bouldin and
  Calinski-Harabasz are reported per k on the same sample for the k-selection plot, not used to
  decide (one criterion keeps the choice explainable).
* The candidate fits for k-selection run on a sample (``selection_sample`` rows); the final fit on
  up to ``fit_sample`` rows; every user is then *predicted*, never fitted.
* Algorithms: ``kmeans`` (n_init restarts, fixed random_state), ``minibatch`` (MiniBatchKMeans,
  picked by ``auto`` when the final fit has more than ``minibatch_above`` rows) and ``gmm``
  (GaussianMixture; soft assignments, elliptic clusters, slower).
* Samples are drawn from a seeded generator over row positions, so the same frame in the same order
  gives the same sample, the same clusters and (see matching.py) the same ids. Callers sort users by
  id first.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

ALGORITHMS = ("auto", "kmeans", "minibatch", "gmm")


@dataclass(frozen=True)
class SelectionConfig:
    """How clusters are searched for and fitted (all sizes are row counts)."""

    algorithm: str = "auto"
    k_min: int = 2  # the range of clusters searched when no k_range is given: the pipeline's default too
    k_max: int = 8  # (model.DEFAULT_K, read by segment_model's config)
    selection_sample: int = 20_000
    silhouette_sample: int = 5_000
    fit_sample: int = 300_000
    minibatch_above: int = 200_000
    n_init: int = 4
    min_cluster_share: float = 0.01  # a k whose smallest cluster is smaller is not eligible
    gmm_covariance: str = "full"
    random_state: int = 0
    threads: int | None = 1  # OpenMP/BLAS threads for fitting; None = library default (see limit_threads)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")


@dataclass
class KSelection:
    k: int
    metrics: pl.DataFrame  # k, silhouette, davies_bouldin, calinski_harabasz, inertia_or_bic, chosen


def limit_threads(threads: int | None):
    """Cap OpenMP/BLAS threads while fitting.

    Default 1: under Dagster's multi-process executor, or on shared cores, OpenMP's spin-waiting
    threads contend (measured: KMeans 6x and HistGradientBoosting 9x slower with 2 threads on 2
    busy cores than with 1). The samples are bounded, so one thread stays fast; pass None on a
    dedicated machine to use them all.
    """
    return threadpool_limits(limits=threads) if threads else nullcontext()


def sample_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a deterministic sample without replacement (all rows when n <= size)."""
    if size is None or n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def resolve_algorithm(algorithm: str, n_rows: int, cfg: SelectionConfig) -> str:
    if algorithm == "auto":
        return "minibatch" if n_rows > cfg.minibatch_above else "kmeans"
    return algorithm


def make_estimator(algorithm: str, k: int, cfg: SelectionConfig, n_rows: int = 0, seed: int | None = None) -> Any:
    """A fresh, seeded estimator; ``auto`` resolves on ``n_rows``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.mixture import GaussianMixture

    algo = resolve_algorithm(algorithm, n_rows, cfg)
    rs = cfg.random_state if seed is None else seed
    if algo == "kmeans":
        return KMeans(n_clusters=k, n_init=cfg.n_init, random_state=rs)
    if algo == "minibatch":
        return MiniBatchKMeans(n_clusters=k, n_init=cfg.n_init, random_state=rs, batch_size=4096)
    if algo == "gmm":
        return GaussianMixture(n_components=k, covariance_type=cfg.gmm_covariance, n_init=1,
                               random_state=rs, reg_covar=1e-4)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def centroids_of(estimator: Any) -> np.ndarray:
    return np.asarray(estimator.means_ if hasattr(estimator, "means_") else estimator.cluster_centers_)  # mixture or k-means


def cluster_metrics(Z: np.ndarray, labels: np.ndarray, sample_size: int, seed: int,
                    distances: np.ndarray | None = None) -> dict[str, float]:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz on a deterministic sample (NaN if < 2 labels).
    ``distances``: :func:`sample_distances` of the same ``Z``, sample size and seed (labels vary, rows do not)."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    idx = sample_indices(len(Z), sample_size, seed)
    Zs, ls = Z[idx], labels[idx]
    n_labels = len(np.unique(ls))
    if n_labels < 2 or n_labels >= len(Zs):
        return {"silhouette": float("nan"), "davies_bouldin": float("nan"), "calinski_harabasz": float("nan")}
    silhouette = silhouette_score(Zs, ls) if distances is None else silhouette_score(distances, ls, metric="precomputed")
    return {
        "silhouette": float(silhouette),
        "davies_bouldin": float(davies_bouldin_score(Zs, ls)),
        "calinski_harabasz": float(calinski_harabasz_score(Zs, ls)),
    }


SHARED_DISTANCES_MAX_ROWS = 8_000  # a matrix of n^2 doubles: 512 MB at 8k rows (the default sample, 5k: 200 MB)


def sample_distances(Z: np.ndarray, sample_size: int, seed: int) -> np.ndarray | None:
    """Euclidean distances between the rows of ``cluster_metrics``' sample. Every k of a selection is scored on
    the same rows, so they are computed once, not once per k (sklearn's silhouette spends most of its time on
    them: 6 candidates at 5k rows, 1.8 s -> 0.7 s, same values). None above SHARED_DISTANCES_MAX_ROWS rows:
    a larger configured sample is scored per k in sklearn's bounded chunks instead of held as one matrix."""
    from sklearn.metrics import pairwise_distances

    idx = sample_indices(len(Z), sample_size, seed)
    return pairwise_distances(Z[idx]) if len(idx) <= SHARED_DISTANCES_MAX_ROWS else None


def select_k(Z: np.ndarray, cfg: SelectionConfig = SelectionConfig(), k_range: tuple[int, int] | None = None) -> KSelection:
    """Fit every k of the range on a sample and keep the best silhouette (ties: the smaller k)."""
    k_min, k_max = k_range or (cfg.k_min, cfg.k_max)
    sel = Z[sample_indices(len(Z), cfg.selection_sample, cfg.random_state)]
    k_max = min(k_max, len(sel) - 1)
    if k_max < k_min:
        raise ValueError(f"{len(sel)} rows are too few to choose k in {k_min}..{k_max}")
    algo = cfg.algorithm if cfg.algorithm == "gmm" else "kmeans"  # the sample is small: full KMeans
    with limit_threads(cfg.threads):
        distances = sample_distances(sel, cfg.silhouette_sample, cfg.random_state + 1)
        rows = [_try_k(sel, k, algo, cfg, distances) for k in range(k_min, k_max + 1)]
    metrics = pl.DataFrame(rows)
    scores = np.nan_to_num(metrics["silhouette"].to_numpy(), nan=-np.inf)
    if metrics["eligible"].any():  # a segment of a handful of users is not actionable
        scores = np.where(metrics["eligible"].to_numpy(), scores, -np.inf)
    best = int(metrics["k"][int(np.argmax(scores))])  # argmax keeps the first, i.e. the smallest k
    return KSelection(k=best, metrics=metrics.with_columns(chosen=pl.col("k") == best))


def _try_k(sel: np.ndarray, k: int, algo: str, cfg: SelectionConfig, distances: np.ndarray | None) -> dict:
    """One row of the k-selection table: fit k on the sample, score it on the silhouette sample."""
    est = make_estimator(algo, k, cfg).fit(sel)
    labels = est.predict(sel)
    m = cluster_metrics(sel, labels, cfg.silhouette_sample, cfg.random_state + 1, distances)
    extra = float(est.bic(sel)) if algo == "gmm" else float(est.inertia_)
    smallest = float(np.bincount(labels, minlength=k).min() / len(sel))
    return {"k": k, **m, "inertia_or_bic": extra, "min_cluster_share": smallest,
            "eligible": smallest >= cfg.min_cluster_share}


def fit_clusters(Z: np.ndarray, k: int, cfg: SelectionConfig = SelectionConfig()) -> tuple[Any, str]:
    """The final fit on at most ``fit_sample`` rows; returns (estimator, resolved algorithm)."""
    idx = sample_indices(len(Z), cfg.fit_sample, cfg.random_state + 2)
    algo = resolve_algorithm(cfg.algorithm, len(idx), cfg)
    with limit_threads(cfg.threads):
        est = make_estimator(algo, k, cfg, n_rows=len(idx)).fit(Z[idx])
    return est, algo


def bootstrap_stability(X: np.ndarray, k: int, algorithm: str = "kmeans", n_boot: int = 5,
                        sample_size: int = 5_000, seed: int = 0, n_init: int = 2, threads: int | None = 1) -> float:
    """Mean pairwise ARI of ``n_boot`` re-fits on bootstrap samples, compared on one common sample.

    1.0 means every re-fit partitions the users the same way; values under ~0.6 mean the clusters are
    an artefact of the sample. Cost: n_boot fits on ``sample_size`` rows.
    """
    from sklearn.metrics import adjusted_rand_score

    if n_boot < 2:
        raise ValueError("need at least 2 bootstrap fits")
    X = np.asarray(X, dtype=np.float64)
    cfg = SelectionConfig(algorithm="kmeans" if algorithm in ("auto", "minibatch") else algorithm,
                          n_init=n_init, random_state=seed)
    rng = np.random.default_rng(seed)
    common = X[sample_indices(len(X), sample_size, seed)]
    labelings = []
    with limit_threads(threads):
        for b in range(n_boot):
            boot = X[rng.integers(0, len(X), size=min(sample_size, len(X)))]
            est = make_estimator(cfg.algorithm, k, cfg, seed=seed + 1 + b).fit(boot)
            labelings.append(est.predict(common))
    scores = [adjusted_rand_score(labelings[i], labelings[j])
              for i in range(n_boot) for j in range(i + 1, n_boot)]
    return float(np.mean(scores))
