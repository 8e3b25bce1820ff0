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


def behaviour_stage(model: SegmentModel) -> tuple[str, int, str] | None:
    """(stage, k, algorithm) of the model's behaviour clustering, its first stage with an estimator: what its
    stability re-fits. None: rules or one segment, nothing a sample can change."""
    name = next((n for n in STAGE_ORDER if n in model.stages and model.stages[n].estimator is not None), None)
    if name is None:
        return None
    return name, len(model.stages[name].clusters), "gmm" if model.algorithm == "gmm" else "kmeans"


def stability_on(model: SegmentModel, frame: pl.DataFrame, seed: int = 0, space: SegmentModel | None = None) -> float:
    """Bootstrap stability of the model's behaviour clustering (its first stage with an estimator, at its k)
    re-fitted on ``frame``: the gate compares a candidate with the model in service on the same users (the one
    measured when the model in service was fitted described another population: 0.98 then against a candidate's
    0.71 today refused every re-fit after drift, also candidates that kept the same segments).

    ``space`` (default: the model itself) gives the rows and the re-fits: its preprocessing, its behaviour stage's
    users, its bootstrap samples, seeds and restarts (``stability_pair``). The re-fits restart as often as a fit does
    (``selection.n_init``): with fewer, the figure measured bad restarts more than the sample (gate.py)."""
    own = behaviour_stage(model)
    if own is None:
        return 1.0  # rules or one segment: nothing a sample can change (as fit_segment_model says)
    space = space or model
    name, k, algorithm = own
    if space is not model:
        theirs = behaviour_stage(space)
        if theirs is None or theirs[0] != name:  # another hierarchy: nothing to pair with, each in its own
            return stability_on(model, frame, seed)
    cfg, sel = space.config, space.config.selection
    sub = frame[sample_indices(frame.height, max(4 * cfg.stability_sample, 20_000), seed)]
    Z = space.preprocessor.transform(sub)
    if space.hierarchy != "flat":
        Z = Z[stage_of(sub, cfg, space.features) == name]
    if len(Z) <= 2 * k:
        return 1.0
    return bootstrap_stability(Z, k, algorithm=algorithm, n_boot=cfg.stability_boot, sample_size=cfg.stability_sample,
                               seed=sel.random_state, n_init=sel.n_init, threads=sel.threads)


def stability_pair(candidate: SegmentModel, in_service: SegmentModel, frame: pl.DataFrame,
                   seed: int = 0) -> tuple[float, float]:
    """The stability of the candidate and of the model in service, paired (gate.py): both re-fitted on the same
    rows of ``frame`` in the candidate's features, from the same bootstrap samples with the same seeds, so the two
    figures differ only by what the models differ in here (behaviour clusters, algorithm). Measured once when
    those are the same: the same figure, a difference of exactly 0."""
    ours = stability_on(candidate, frame, seed)
    if behaviour_stage(in_service) == behaviour_stage(candidate):
        return ours, ours
    return ours, stability_on(in_service, frame, seed, space=candidate)
