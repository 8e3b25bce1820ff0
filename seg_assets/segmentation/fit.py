"""Fitting a segment model version: preprocessing, k and clusters per hierarchy stage, ids matched to the
model in service, names (the design is in model.py's docstring)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import polars as pl

from seg_assets.features.dictionary import MODEL_FEATURES
from seg_assets.segmentation import matching, naming, profiles
from seg_assets.segmentation.availability import feature_availability
from seg_assets.segmentation.model import (
    STAGE_ORDER,
    ModelConfig,
    SegmentModel,
    StageFit,
    aged,
    is_mixture,
    soft_assign,
    stage_of,
)
from seg_assets.segmentation.preprocess import Preprocessor, balanced_weights
from seg_assets.segmentation.selection import (
    bootstrap_stability,
    centroids_of,
    cluster_metrics,
    fit_clusters,
    limit_threads,
    sample_indices,
    select_k,
)


def _fit_stage(name: str, Zs: np.ndarray, cfg: ModelConfig, offset: int) -> tuple[StageFit, np.ndarray, np.ndarray, str | None]:
    """Fit one stage; returns (stage, centroids, labels on Zs, resolved algorithm or None)."""
    k_min, k_max = cfg.stage_k(name)
    # Every cluster at least min_cluster_rows users (a retail extract of 57 customers was 8 segments, one of a single
    # customer: selection's min_cluster_share, 1 %, binds only from a few thousand users): room for them, a k whose
    # selection fit leaves a smaller cluster not eligible, and fewer clusters while the final fit still does
    k_max = min(k_max, max(1, len(Zs) // cfg.min_cluster_rows))
    est, algo, ksel, k = None, None, None, 1
    if k_max > 1:
        k_min, k_max = max(2, k_min), min(k_max, len(Zs) - 1)
        if k_min >= k_max:
            k = k_max
        else:
            floor = max(cfg.selection.min_cluster_share, cfg.min_cluster_rows / len(Zs))
            chosen = select_k(Zs, replace(cfg.selection, min_cluster_share=floor), (k_min, k_max))
            k, ksel = chosen.k, chosen.metrics.with_columns(stage=pl.lit(name))
    while k > 1:
        est, algo = fit_clusters(Zs, k, cfg.selection)
        centers = centroids_of(est)
        labels, _ = soft_assign(Zs, centers, 1.0)
        if is_mixture(est):
            labels = est.predict(Zs)
        if np.bincount(labels, minlength=k).min() >= cfg.min_cluster_rows:
            break
        k -= 1
    if ksel is not None:  # the k used, which the size rule may have lowered below the selection's choice
        ksel = ksel.with_columns(chosen=pl.col("k") == k)
    if k <= 1:
        centers = Zs.mean(axis=0, keepdims=True)
        labels = np.zeros(len(Zs), dtype=np.int64)
        est, algo = None, None
    sigma2 = float(((Zs - centers[labels]) ** 2).sum() / max(Zs.size, 1)) or 1.0
    stage = StageFit(name, list(range(offset, offset + len(centers))), est, sigma2, ksel)
    return stage, centers, labels, algo


def fit_segment_model(frame: pl.DataFrame, config: ModelConfig = ModelConfig(), *, previous: SegmentModel | None = None,
                      version: str | None = None, as_of: datetime | None = None,
                      fitted_at: datetime | None = None) -> SegmentModel:
    """Fit a new model version on ``frame`` (one row per user, original feature units).

    With ``previous`` (the model in service), segments are matched to it: kept ones keep id and name,
    new ones get fresh ids, vanished ones are retired. Sort ``frame`` by user id for reproducibility.
    """
    candidates = list(config.features or [f for f in MODEL_FEATURES if f in frame.columns])
    if not candidates:
        raise ValueError("no model features in the frame")
    availability = feature_availability(frame, candidates)  # features without data are left out everywhere
    features = list(availability.used)
    sel = config.selection
    fit_frame = frame[sample_indices(frame.height, sel.fit_sample, sel.random_state + 3)]
    pre = Preprocessor(scaler=config.scaler, clip_quantile=config.clip_quantile, skew_transform=config.skew_transform,
                       overrides=dict(config.transforms) or None,
                       weights=balanced_weights(features) if config.balance_groups else None).fit(fit_frame, features)
    Z = pre.transform(fit_frame)
    stage = stage_of(fit_frame, config, features)
    stages: dict[str, StageFit] = {}
    centers, cstage, labels = [], [], np.full(len(Z), -1, dtype=np.int64)
    algorithm, behaviour = "rules", None
    identical = len(Z) > 0 and not np.any(np.ptp(Z, axis=0) > 0)  # nothing tells users apart: no clusters to find
    for name in STAGE_ORDER:
        rows = np.flatnonzero(stage == name)
        if rows.size < config.min_stage_rows or identical:
            continue
        st, c, lab, algo = _fit_stage(name, Z[rows], config, len(centers))
        stages[name] = st
        labels[rows] = np.asarray(st.clusters)[lab]
        centers.extend(c)
        cstage.extend([name] * len(c))
        if algo is not None and behaviour is None:  # the behaviour stage: engaged (or all, flat)
            algorithm, behaviour = algo, (name, rows, lab, len(c))
    single = None
    if not stages:  # every stage under min_stage_rows (a shop's first few users): one segment of everyone
        st, c, labels, _ = _fit_stage("all", Z, replace(config, k_range=(1, 1)), 0)
        stages["all"] = st
        centers.extend(c)
        cstage.extend(["all"] * len(c))
        single = (f"one segment of all {frame.height} users: " if frame.height != 1 else "one segment of its one user: ") + (
            "every feature has one value for everyone" if identical else
            f"no lifecycle stage has the {config.min_stage_rows} users a segment of its own needs (min_stage_rows)")
    if single is None and len(centers) == 1:  # one stage big enough, and it is one segment by design (new, lapsed)
        single = (f"one segment of all {frame.height} users: only the '{cstage[0]}' lifecycle stage has the "
                  f"{config.min_stage_rows} users a segment of its own needs (min_stage_rows), and that stage is one "
                  "segment; the other stages' users join it")
    C = np.vstack(centers)
    C_orig = pre.inverse_transform(C)
    order = matching.canonical_order(C_orig, features, cstage, STAGE_ORDER)
    fixed: dict[int, str] = {}
    if previous is None:
        ids = matching.first_fit_ids(order)
        match = matching.MatchResult(ids, ["new"] * len(ids), [float("nan")] * len(ids), [None] * len(ids), [], max(ids))
        retired: list[int] = []
    else:
        common = [f for f in previous.features if f in features]
        typical = pl.DataFrame(previous.centroids_original[:, [previous.features.index(f) for f in common]], schema=common,
                               orient="row")
        old = pre.transform_array(aged(typical, previous.as_of, as_of).to_numpy(), common)  # its typical users, now
        new = C[:, [features.index(f) for f in common]]
        grouped = previous.hierarchy == config.hierarchy == "lifecycle"
        match = matching.match_segments(old, previous.segment_ids, new, max_distance=config.max_distance,
                                        old_groups=previous.cluster_stage if grouped else None,
                                        new_groups=cstage if grouped else None,
                                        max_issued_id=previous.max_issued_id, new_order=order)
        ids = match.segment_ids
        fixed = matching.carry_names(match, previous.name_of)
        retired = sorted(set(previous.retired_ids) | set(match.retired))
    # fit-sample rows that fell in a stage too small to get a segment: nearest centroid
    orphan = np.flatnonzero(labels < 0)
    if orphan.size:
        labels[orphan], _ = soft_assign(Z[orphan], C, 1.0)
    seg = np.asarray(ids, dtype=np.int64)[labels]
    contrasts = profiles.feature_contrasts(fit_frame, seg, features)
    stage_by_id = dict(zip(ids, cstage))
    buyers = (pl.DataFrame({"s": seg, "b": fit_frame["frequency"].to_numpy() > 0}).group_by("s").agg(pl.col("b").mean())
              if "frequency" in fit_frame.columns else pl.DataFrame({"s": ids, "b": [0.0] * len(ids)}))  # no orders: none
    named = naming.assign_names(profiles.rank_table(contrasts), stages=stage_by_id, fixed=fixed,
                                buyer_share=dict(zip(buyers["s"].to_list(), buyers["b"].to_list())))
    names = [named.get(i, f"Segment {i}") for i in ids]  # "Segment i": no user in the fit sample
    with limit_threads(sel.threads):
        metrics = cluster_metrics(Z, labels, sel.silhouette_sample, sel.random_state + 4)
    metrics.update(n_rows=frame.height, fit_rows=len(Z), k=len(ids), left_out_features=dict(availability.left_out),
                   **({"single_segment": single} if single else {}))
    if behaviour is not None:
        name, rows, lab, kb = behaviour
        with limit_threads(sel.threads):
            bm = cluster_metrics(Z[rows], lab, sel.silhouette_sample, sel.random_state + 5)
        metrics.update({f"behaviour_{m}": v for m, v in bm.items()}, k_behaviour=kb)
        metrics["stability"] = bootstrap_stability(Z[rows], kb, algorithm="gmm" if algorithm == "gmm" else "kmeans",
                                                   n_boot=config.stability_boot, sample_size=config.stability_sample,
                                                   seed=sel.random_state, n_init=sel.n_init,
                                                   threads=sel.threads)
    else:
        metrics["stability"] = 1.0
    for name in stages:
        metrics[f"share_{name}"] = 1.0 if name == "all" else float((stage == name).mean())
    ksel = [s.k_selection for s in stages.values() if s.k_selection is not None]
    fitted_at = fitted_at or datetime.now(UTC)
    ref = fit_frame.select(features)
    return SegmentModel(
        version=version or f"seg-{fitted_at:%Y%m%dT%H%M%S}", algorithm=algorithm, hierarchy=config.hierarchy,
        features=features, preprocessor=pre, stages=stages, centroids=C, centroids_original=C_orig,
        cluster_stage=cstage, segment_ids=[int(i) for i in ids], names=names, config=config, metrics=metrics,
        k_selection=pl.concat(ksel) if ksel else None, matching=match.to_frame(), fitted_at=fitted_at, as_of=as_of,
        parent_version=previous.version if previous else None, max_issued_id=match.max_issued_id, retired_ids=retired,
        reference_sample=ref[sample_indices(ref.height, config.reference_rows, sel.random_state + 6)],
        sizes={int(s): int(c) for s, c in zip(*np.unique(seg, return_counts=True))}, left_out=availability.left_out,
    )
