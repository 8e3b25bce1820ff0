"""How good a segment model is on today's users: what the promotion gate compares (gate.py), for the candidate
and for the model in service alike, so both are measured on the same population."""

from __future__ import annotations

import polars as pl

from seg_assets.segmentation.model import STAGE_ORDER, SegmentModel, stage_of
from seg_assets.segmentation.selection import bootstrap_stability, cluster_metrics, limit_threads, sample_indices


def evaluate_model(model: SegmentModel, frame: pl.DataFrame, sample_size: int = 10_000, seed: int = 0,
                   space: SegmentModel | None = None) -> dict[str, float]:
    """Silhouette / DB / CH of ``model``'s segments on ``frame`` (e.g. the in-service model on today's data),
    measured in ``space``'s features (default: the model's own). The gate measures the model in service in the
    candidate's: each in its own, the two numbers were on two scales (a preprocessor fitted on another population),
    and a candidate better on every measure in either space was refused as 0.065 worse (a tester's)."""
    sub = frame[sample_indices(frame.height, sample_size, seed)]
    cl, _ = model.predict_clusters(sub)
    with limit_threads(model.config.selection.threads):
        return cluster_metrics((space or model).preprocessor.transform(sub), cl, sample_size, seed)


def stability_on(model: SegmentModel, frame: pl.DataFrame, seed: int = 0) -> float:
    """Bootstrap stability of the model's behaviour clustering (its first stage with an estimator, at its k)
    re-fitted on ``frame``: the gate compares a candidate with the model in service on the same users (the one
    measured when the model in service was fitted described another population: 0.98 then against a candidate's
    0.71 today refused every re-fit after drift, also candidates that kept the same segments)."""
    name = next((n for n in STAGE_ORDER if n in model.stages and model.stages[n].estimator is not None), None)
    if name is None:
        return 1.0  # rules or one segment: nothing a sample can change (as fit_segment_model says)
    cfg, sel = model.config, model.config.selection
    sub = frame[sample_indices(frame.height, max(4 * cfg.stability_sample, 20_000), seed)]
    Z = model.preprocessor.transform(sub)
    if model.hierarchy != "flat":
        Z = Z[stage_of(sub, cfg, model.features) == name]
    k = len(model.stages[name].clusters)
    if len(Z) <= 2 * k:
        return 1.0
    return bootstrap_stability(Z, k, algorithm="gmm" if model.algorithm == "gmm" else "kmeans", n_boot=cfg.stability_boot,
                               sample_size=cfg.stability_sample, seed=sel.random_state, threads=sel.threads)
