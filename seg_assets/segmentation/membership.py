"""Membership that does not churn: a user keeps their segment unless another one fits clearly better.

A campaign is keyed on a segment id. Nearest-centroid (or most-probable-class) assignment moves every
user who sits near a boundary whenever the boundary shifts a little, on a refit or when a few days
of data nudge their features, although nothing about them changed. So every (re-)assignment is
*sticky*:

* **The margin rule** (:func:`sticky_assign`). For each user the assigner gives a probability per
  segment (the classifier's ``predict_proba``, or the segment model's own posterior:
  :func:`model_proba`). A user whose previous segment id still exists in the model, in the lifecycle
  stage the user is in now, keeps it unless another segment is more than ``odds`` times as likely:
  ``p_best > odds * p_previous``. Lifecycle stages (new / lapsed / engaged) are rules in time, not
  behaviour: a user whose stage moved goes where the rules put them, and that is not churn. Ids kept
  by matching (matching.py) are the same segment and new ids are never re-used, so "the previous id
  still exists" means "the same segment still exists".
* **Why an odds ratio** (``SegmentModelConfig.sticky_odds``, default 5): in the model's own space it
  is exactly a distance margin, ``d_prev^2 - d_best^2 > 2 sigma^2 ln(odds)`` (sigma^2: the stage's
  within-cluster variance), a band of fixed width around each boundary in units of the clusters'
  own spread, so it does not depend on k, the feature weights or today's population; for the
  classifier it is the same statement about its probabilities. A difference ``p_best - p_prev`` would
  keep a user in a segment of probability 0 whenever the mass is spread over many segments. Users
  clearly inside another segment (a split-off new segment, a real change of behaviour) still move.
  The default is measured on the demo generator (README, "Segments that keep their meaning").
* **Membership churn** (:func:`membership_churn`): on a refit, the share of users with a previous
  assignment whose id the candidate would change, overall and among the users whose features
  *barely changed*: the model in service, with the same margin rule, keeps them where they are (the
  model's own preprocessed space and posterior decide what "barely" means, so no feature snapshot is
  needed) and their lifecycle stage did not move. The gate (gate.py) refuses a candidate that moves
  more than ``max_membership_churn`` of them.
* **A new kind of shopper is no churn** (:func:`emerged_segments`). A new segment whose kind of shopper was
  (nearly) absent when the model in service was fitted, holding ``EMERGED_GROWTH`` times its share of that fit's
  population (the model's reference sample, grown as old as today's users) or more, takes users the old segments
  only held for want of a better one: moving them is what a re-fit is for. On a tester's shop 800 bulk buyers
  signed up after the fit; published in "Occasional buyers" and "High-value loyal", their move to the candidate's
  new segment (0.0 % of the fit's population, 8.8 % of today's) counted as churn and refused every re-fit. A split
  of an old segment holds about its old share (0.9-1.1x there), so its moves still count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from seg_assets.publish.keys import HISTORY_TABLE
from seg_assets.segmentation.gate import ALL_CHURN, CHURN_METRIC, EMERGED, NEW_KIND, STABLE_USERS, USERS_COMPARED

if TYPE_CHECKING:
    from seg_assets.segmentation.model import SegmentModel

DEFAULT_ODDS = 5.0  # the refit margin (module doc; README "Membership that does not churn": why 5)
DEFAULT_MAX_CHURN = 0.02  # the gate's max_membership_churn (gate.py), see README
EMERGED_GROWTH = 5.0  # a new segment this many times larger than its share of the old fit's population is a new kind
# (the demo's drifted follow-up grew two split-off segments 3.1x and 3.3x within their stage: a drift, not a new kind)
NO_SEGMENT = -1  # a user with no previous assignment


def previous_id_sql(history: bool, published: str | None, user: str, as_of: datetime | None = None) -> tuple[str, str]:
    """(JOIN clause, expression) of the segment a user's sticky rule starts from, for a query whose user column is
    ``user``: the spell of segment_history in force at ``as_of`` (``history``: the table exists; without an as-of,
    the open spell), else the published row (the alias ``published`` of analytics.user_segments in the query; None
    without one). History only moves forward, so after a backfill (``refresh --as-of`` in the past) the published
    rows hold that day's segments, not the ones a return to now sticks to; and a backfill itself starts from the
    spell of its own day, never from a later one (nor from today's published row): it reads nothing after its
    as-of. At or after the latest recorded as-of, the spell in force is the open one. Scoring and the gate's
    membership churn both read it."""
    fallback = f"{published}.segment_id" if published else "NULL"
    if not history:
        return "", f"{fallback}::BIGINT"
    if as_of is None:
        spells = "valid_to IS NULL"
    else:
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC).replace(tzinfo=None)
        ts = f"TIMESTAMP '{as_of:%Y-%m-%d %H:%M:%S.%f}'"
        spells = f"valid_from <= {ts} AND (valid_to IS NULL OR valid_to > {ts})"
        backfill = f"{ts} < (SELECT coalesce(max(valid_from), {ts}) FROM {HISTORY_TABLE})"
        fallback = f"CASE WHEN NOT ({backfill}) THEN {fallback} END"
    return (f"LEFT JOIN (SELECT user_id, segment_id FROM {HISTORY_TABLE} WHERE {spells}) h ON h.user_id = {user}",
            f"coalesce(h.segment_id, {fallback})::BIGINT")


def sticky_assign(proba: np.ndarray, classes: Sequence[int], previous: np.ndarray, odds: float,
                  eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(segment id, probability of that segment) per row: the best segment, or the previous one
    when it is still a column of ``proba``, the row is ``eligible`` and ``p_best <= odds * p_prev``.

    ``proba``: (n, k), columns follow ``classes``; ``previous``: (n,) ids, ``NO_SEGMENT`` for none.
    ``odds`` 1 is plain argmax (ties stay); ``inf`` never moves an eligible user with ``p_prev > 0``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    previous = np.asarray(previous, dtype=np.int64)
    n = len(proba)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    best = proba.argmax(axis=1)
    order = np.argsort(classes, kind="stable")
    pos = np.searchsorted(classes[order], previous)
    pos = np.minimum(pos, len(classes) - 1)
    col = order[pos]
    known = classes[col] == previous
    if eligible is not None:
        known &= np.asarray(eligible, dtype=bool)
    rows = np.arange(n)
    keep = known & (proba[rows, best] <= odds * proba[rows, col])
    chosen = np.where(keep, col, best)
    return classes[chosen], proba[rows, chosen]


def in_stage(proba: np.ndarray, classes: Sequence[int], model: SegmentModel, frame: pl.DataFrame) -> np.ndarray:
    """A classifier's probabilities kept to the segments of each user's lifecycle stage, renormalised.

    The classifier learned the segments from features; the stage is a rule (tenure, days since the last visit),
    and a segment belongs to one stage: a user 104 days old must not land in "New customers" because the
    classifier's boundary blurs there. Where it gives no weight to any segment of the stage, the model's own
    posterior decides; a stage without segments of its own keeps every segment (as the model does)."""
    from seg_assets.segmentation.model import stage_of

    proba = np.asarray(proba, dtype=np.float64)
    if model.hierarchy == "flat" or len(proba) == 0:
        return proba
    stage_by_id = dict(zip(model.segment_ids, model.cluster_stage))
    class_stage = np.array([stage_by_id.get(int(c)) for c in classes], dtype=object)
    allowed = class_stage[None, :] == stage_of(frame, model.config, model.features)[:, None]
    allowed[~allowed.any(axis=1)] = True
    out = np.where(allowed, proba, 0.0)
    total = out.sum(axis=1)
    lost = np.flatnonzero(total <= 0)
    if lost.size:
        own = model_proba(model, frame[lost])
        column = {int(s): i for i, s in enumerate(model.segment_ids)}
        for j, c in enumerate(classes):
            if int(c) in column:
                out[lost, j] = own[:, column[int(c)]] * allowed[lost, j]
        total = out.sum(axis=1)
    return np.divide(out, total[:, None], out=np.zeros_like(out), where=total[:, None] > 0)


def model_proba(model: SegmentModel, frame: pl.DataFrame) -> np.ndarray:
    """(n, k) posterior of each of ``model.segment_ids`` (columns in that order), the model's own
    assignment made soft: zero outside the user's lifecycle stage, the stage's mixture posterior
    (GMM) or the isotropic-Gaussian softmax of ``-d^2 / (2 sigma^2)`` (k-means) inside it."""
    from seg_assets.segmentation.model import is_mixture, stage_of

    n, k = frame.height, model.k
    out = np.zeros((n, k))
    if n == 0:
        return out
    Z = model.preprocessor.transform(frame)
    stage = (stage_of(frame, model.config, model.features) if model.hierarchy != "flat"
             else np.full(n, "all", dtype=object))
    done = np.zeros(n, dtype=bool)
    for name, st in model.stages.items():
        rows = np.flatnonzero(stage == name)
        if rows.size == 0:
            continue
        done[rows] = True
        if st.estimator is None:
            out[rows, st.clusters[0]] = 1.0
        elif is_mixture(st.estimator):
            out[np.ix_(rows, st.clusters)] = st.estimator.predict_proba(Z[rows])
        else:
            out[np.ix_(rows, st.clusters)] = _softmax(Z[rows], model.centroids[st.clusters], st.sigma2)
    orphan = np.flatnonzero(~done)  # a stage without segments of its own: every segment, as predict does
    if orphan.size:
        sigma2 = float(np.mean([s.sigma2 for s in model.stages.values()]))
        out[orphan] = _softmax(Z[orphan], model.centroids, sigma2)
    return out


def _softmax(Z: np.ndarray, centers: np.ndarray, sigma2: float) -> np.ndarray:
    d2 = np.maximum((Z ** 2).sum(axis=1)[:, None] - 2.0 * Z @ centers.T + (centers ** 2).sum(axis=1)[None, :], 0.0)
    w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2.0 * max(sigma2, 1e-12)))
    return w / w.sum(axis=1, keepdims=True)


def same_stage(model: SegmentModel, frame: pl.DataFrame, previous: np.ndarray) -> np.ndarray:
    """True where the previous segment is one of ``model``'s and in the lifecycle stage the user is in now."""
    from seg_assets.segmentation.model import stage_of

    previous = np.asarray(previous, dtype=np.int64)
    known = np.isin(previous, model.segment_ids)
    if model.hierarchy == "flat":
        return known
    ids = np.asarray(model.segment_ids, dtype=np.int64)
    order = np.argsort(ids)
    at = order[np.minimum(np.searchsorted(ids[order], previous), len(ids) - 1)]
    before = np.asarray(model.cluster_stage, dtype=object)[at]
    return known & (before == stage_of(frame, model.config, model.features))


def sticky_model_assign(model: SegmentModel, frame: pl.DataFrame, previous: np.ndarray,
                        odds: float) -> tuple[np.ndarray, np.ndarray]:
    """The margin rule on the model's own posterior (what the gate measures a candidate with)."""
    return sticky_assign(model_proba(model, frame), model.segment_ids, previous, odds,
                         same_stage(model, frame, previous))


def membership_churn(previous: np.ndarray, candidate: np.ndarray, barely_changed: np.ndarray,
                     emerged: Sequence[int] = ()) -> dict[str, float | int]:
    """Share of users with a previous id whose id ``candidate`` changes: overall and among ``barely_changed``, where a
    move into an ``emerged`` segment (a new kind of shopper) is reported apart, not as churn."""
    previous, candidate = np.asarray(previous), np.asarray(candidate)
    had = previous != NO_SEGMENT
    barely = had & np.asarray(barely_changed, dtype=bool)
    moved = previous != candidate
    to_new_kind = moved & np.isin(candidate, np.asarray(list(emerged), dtype=np.int64))
    share = lambda m, of: float(m[of].mean()) if of.any() else 0.0  # noqa: E731
    return {ALL_CHURN: share(moved, had), CHURN_METRIC: share(moved & ~to_new_kind, barely),
            NEW_KIND: share(to_new_kind, barely), EMERGED: len(emerged),
            USERS_COMPARED: int(had.sum()), STABLE_USERS: int(barely.sum())}


def emerged_segments(incumbent: SegmentModel, candidate: SegmentModel, frame: pl.DataFrame) -> list[int]:
    """The candidate's new segment ids whose share of today's users (``frame``) is ``EMERGED_GROWTH`` times their share
    of the incumbent's fit population or more (its reference sample, grown as old as the candidate's data but for
    its new users, assigned by the candidate), shares taken within the segment's lifecycle stage: a kind of shopper
    that was not there when the model in service was fitted."""
    from seg_assets.segmentation.model import aged, stage_of

    new = [s for s in candidate.segment_ids if s not in set(incumbent.segment_ids)]
    reference = incumbent.reference_sample
    if not new or reference is None or frame.height == 0 or not set(candidate.features) <= set(reference.columns):
        return []
    # The fit's new users stand for the new users of then (new ones keep arriving): grown 40 days older, all of them
    # had left the "new" stage and a split of New customers looked like a kind nobody had been (a reviewer's).
    fresh = pl.Series(stage_of(reference, candidate.config, candidate.features) == "new")
    reference = pl.concat([reference.filter(fresh), aged(reference.filter(~fresh), incumbent.as_of, candidate.as_of)])
    then, _ = candidate.predict(reference)
    now, _ = candidate.predict(frame)
    stage = dict(zip(candidate.segment_ids, candidate.cluster_stage))

    def share(ids: np.ndarray, s: int) -> float:  # among the users of the segment's lifecycle stage
        of_stage = np.isin(ids, [t for t in candidate.segment_ids if stage[t] == stage[s]])
        return float((ids == s).sum() / of_stage.sum()) if of_stage.any() else 0.0

    return [s for s in new if share(now, s) > 0 and share(now, s) >= EMERGED_GROWTH * share(then, s)]


def refit_churn(incumbent: SegmentModel, candidate: SegmentModel, frame: pl.DataFrame,
                previous: np.ndarray, unseen_data: np.ndarray | None = None) -> dict[str, float | int]:
    """Membership churn of ``candidate`` against the ids ``previous`` (aligned with ``frame``), each model with its
    own margin (``sticky_odds``), as scoring would assign with it.

    "Barely changed": the model in service, with its margin rule in its own space, keeps the user
    where they are (their lifecycle stage did not move and no other segment became clearly better), and the user has
    none of the data the candidate sees and the model in service does not (``unseen_data``: True where the user has
    some, availability.without_new_data; blind to it, the model in service kept everyone). Moves into a segment of a
    new kind of shopper (:func:`emerged_segments`) are ``moved_to_new_kind``, not churn.
    """
    previous = np.asarray(previous, dtype=np.int64)
    stays, _ = sticky_model_assign(incumbent, frame, previous, sticky_odds_of(incumbent))
    moved_to, _ = sticky_model_assign(candidate, frame, previous, sticky_odds_of(candidate))
    barely = (stays == previous) & (~np.asarray(unseen_data, dtype=bool) if unseen_data is not None else True)
    return membership_churn(previous, moved_to, barely, emerged_segments(incumbent, candidate, frame))


def sticky_odds_of(model: SegmentModel) -> float:
    return getattr(model.config, "sticky_odds", DEFAULT_ODDS)  # artifacts from before the setting
