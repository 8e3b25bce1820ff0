"""Population drift: the population stability index (PSI) of each model feature.

The model stores, per feature, bin edges taken from the deciles of the data it was fitted on and the
share of users in each bin. A refresh bins today's users on the same edges and compares:
``PSI = sum((cur - ref) * ln(cur / ref))``. The usual reading: < 0.1 stable, 0.1-0.25 moderate shift,
> 0.25 significant shift (the default re-fit threshold). Zero-inflated counts give repeated deciles;
edges are de-duplicated so such a feature simply has fewer bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

EPS = 1e-4


@dataclass(frozen=True)
class FeatureBins:
    edges: list[float]  # inner edges; bins are (-inf, e0], (e0, e1], ..., (e_last, inf)
    shares: list[float]


def reference_bins(values: np.ndarray, bins: int = 10) -> FeatureBins:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return FeatureBins([], [1.0])
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return FeatureBins(edges.tolist(), _shares(values, edges).tolist())


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(values.size, 1)


def psi(reference: FeatureBins, values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    ref = np.clip(np.asarray(reference.shares, dtype=float), EPS, None)
    cur = np.clip(_shares(values, np.asarray(reference.edges, dtype=float)), EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def build_reference(frame: pl.DataFrame, features: list[str], bins: int = 10) -> dict[str, FeatureBins]:
    return {f: reference_bins(frame[f].cast(pl.Float64).to_numpy(), bins) for f in features}


def population_stability(reference: dict[str, FeatureBins], frame: pl.DataFrame) -> pl.DataFrame:
    """PSI per feature of ``frame`` against the model's reference, largest first."""
    rows = [(f, psi(bins, frame[f].cast(pl.Float64).to_numpy())) for f, bins in reference.items() if f in frame.columns]
    return pl.DataFrame(rows, schema={"feature": pl.String, "psi": pl.Float64}, orient="row").sort("psi", descending=True)
