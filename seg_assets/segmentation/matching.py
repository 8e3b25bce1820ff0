"""Stable segment ids across re-fits.

scikit-learn's cluster labels are arbitrary: two fits on the same data may number the same clusters
differently. The product promises that a segment keeps its id (and name) across re-fits, so ids are
assigned here, never taken from the estimator.

* **First fit**: clusters are put in a canonical order (:func:`canonical_order`: stage, then monetary
  descending, recency ascending, frequency descending, then the whole centroid) and numbered 1..k, so
  ids do not depend on the estimator's label order.
* **Re-fit**: old and new centroids are compared in ONE space: the NEW model's preprocessed space.
  The old centroids are stored in original feature units (the inverse transform of the old model's
  centroid, i.e. its "typical user"), and the new preprocessor maps them into its space. Distances are
  then in units of today's population spread and stay meaningful when the preprocessor was re-fit
  (new clip bounds, means, scales). The Hungarian algorithm (``linear_sum_assignment``) pairs old and
  new clusters minimising total distance; pairs across hierarchy stages are forbidden.
* A pair keeps the old id only when its distance is ``<= max_distance``, except the one segment of a group (a
  lifecycle stage) that is its group's only cluster in both fits: new customers and dormant by design, the engaged
  stage when the size rule left it one cluster both times. Its members are the stage's, by rule, whatever its
  centroid did, and it keeps its name with its id (a tester's: "New customers" turn over in
  two weeks, their centroid moved 1.0-1.6, and every 14-day refit renumbered them, which the membership gate then
  counted as 5.8-14.9 % of users moving). Unmatched (or too distant)
  new clusters get fresh ids: ``max_issued_id + 1, + 2 ...`` in canonical order, where
  ``max_issued_id`` is the highest id EVER issued (carried by the model), so retired ids are never
  reused. Unmatched old segments are retired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

# Default threshold, in the preprocessed space (group-balanced standard units): a distance of 1.0
# is one population standard deviation of shift in one feature group, or ~0.4 sd in all seven.
DEFAULT_MAX_DISTANCE = 1.0
_FORBIDDEN = 1e9


@dataclass
class MatchResult:
    segment_ids: list[int]  # per NEW cluster index
    status: list[str]  # per new cluster: "kept" | "new"
    distance: list[float]  # distance to the matched old centroid (NaN when none was paired)
    matched_old: list[int | None]  # old segment id paired by Hungarian (even when too far), else None
    retired: list[int]  # old ids not carried over
    max_issued_id: int

    @property
    def mapping(self) -> dict[int, int]:
        """new cluster index -> segment id."""
        return dict(enumerate(self.segment_ids))

    def to_frame(self) -> pl.DataFrame:
        rows = pl.DataFrame({
            "cluster": list(range(len(self.segment_ids))), "segment_id": self.segment_ids,
            "status": self.status, "distance": self.distance,
            "matched_old_id": pl.Series(self.matched_old, dtype=pl.Int64),
        })
        retired = pl.DataFrame({
            "cluster": pl.Series([None] * len(self.retired), dtype=pl.Int64), "segment_id": self.retired,
            "status": ["retired"] * len(self.retired), "distance": [float("nan")] * len(self.retired),
            "matched_old_id": self.retired,
        }, schema=rows.schema)
        return pl.concat([rows, retired])


def canonical_order(centroids_original: np.ndarray, features: Sequence[str],
                    stages: Sequence[str] | None = None, stage_order: Sequence[str] = ()) -> list[int]:
    """Cluster indices sorted by a profile key, so numbering never depends on estimator labels."""
    C = np.asarray(centroids_original, dtype=np.float64)
    pos = {f: i for i, f in enumerate(features)}
    rank = {s: i for i, s in enumerate(stage_order)}

    def key(i: int):
        stage = rank.get(stages[i], len(rank)) if stages is not None else 0
        prof = (-C[i, pos["monetary"]] if "monetary" in pos else 0.0,
                C[i, pos["recency_days"]] if "recency_days" in pos else 0.0,
                -C[i, pos["frequency"]] if "frequency" in pos else 0.0)
        return (stage, *np.round(prof, 9), *np.round(C[i], 9))

    return sorted(range(len(C)), key=key)


def distance_matrix(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    return np.sqrt(((old[:, None, :] - new[None, :, :]) ** 2).sum(axis=2))


def match_segments(old_centroids: np.ndarray, old_ids: Sequence[int], new_centroids: np.ndarray, *,
                   max_distance: float = DEFAULT_MAX_DISTANCE, old_groups: Sequence[str] | None = None,
                   new_groups: Sequence[str] | None = None, max_issued_id: int | None = None,
                   new_order: Sequence[int] | None = None) -> MatchResult:
    """Give every new cluster a segment id; both centroid arrays must be in the same space.

    ``old_groups``/``new_groups`` (e.g. hierarchy stages) forbid matches across groups; a group's only cluster in
    both keeps its id at any distance (the module docstring).
    ``new_order`` is the canonical order in which fresh ids are handed out (default: index order).
    """
    old_ids = [int(i) for i in old_ids]
    new = np.asarray(new_centroids, dtype=np.float64)
    old = np.asarray(old_centroids, dtype=np.float64).reshape(len(old_ids), new.shape[1] if new.size else 0)
    if len(set(old_ids)) != len(old_ids):
        raise ValueError(f"old ids must be unique: {old_ids}")
    top = max([max_issued_id or 0, *old_ids, 0])
    n_new = len(new)
    ids: list[int | None] = [None] * n_new
    status = ["new"] * n_new
    dist = [float("nan")] * n_new
    paired: list[int | None] = [None] * n_new
    if len(old_ids) and n_new:
        D = distance_matrix(old, new)
        cost = D.copy()
        if old_groups is not None and new_groups is not None:
            cross = np.asarray(old_groups, dtype=object)[:, None] != np.asarray(new_groups, dtype=object)[None, :]
            cost[cross] = _FORBIDDEN
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        grouped = old_groups is not None and new_groups is not None
        alone = {g for g in set(new_groups) if list(old_groups).count(g) == list(new_groups).count(g) == 1} if grouped else set()
        for r, c in zip(rows, cols):
            if cost[r, c] >= _FORBIDDEN:
                continue
            paired[c], dist[c] = old_ids[r], float(D[r, c])
            if D[r, c] <= max_distance or (grouped and new_groups[c] in alone):
                ids[c], status[c] = old_ids[r], "kept"
    for c in (new_order if new_order is not None else range(n_new)):
        if ids[c] is None:
            top += 1
            ids[c] = top
    kept = {i for i, s in zip(ids, status) if s == "kept"}
    retired = sorted(i for i in old_ids if i not in kept)
    return MatchResult([int(i) for i in ids], status, dist, paired, retired, top)


def first_fit_ids(order: Sequence[int], start: int = 1) -> list[int]:
    """Ids for a first fit: the cluster at canonical position p gets ``start + p``."""
    ids = [0] * len(order)
    for p, c in enumerate(order):
        ids[c] = start + p
    return ids


def carry_names(result: MatchResult, old_names: Mapping[int, str]) -> dict[int, str]:
    """The names kept segments inherit (segment id -> name); new segments are named by naming.py."""
    return {sid: old_names[sid] for sid, st in zip(result.segment_ids, result.status) if st == "kept" and sid in old_names}
