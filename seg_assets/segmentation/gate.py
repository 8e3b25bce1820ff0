"""Promotion gate: a re-fit replaces the model in service only if it is not worse.

Metrics compared (all "higher is better" unless listed in ``LOWER_IS_BETTER``):

* ``silhouette``: cluster separation on a sample (evaluate both models on TODAY's data, see
  ``quality.evaluate_model``, so the comparison is on the same users);
* ``stability``: mean ARI between bootstrap re-fits (``selection.bootstrap_stability``): clusters
  that change with the sample are not segments; re-fitted on today's users for both models too
  (``quality.stability_on``), and **paired** (``quality.stability_pair``, below);
* ``classifier_macro_f1``: how well the segments can be learned back from features.

Rule: promote when nothing is in service, or when NO shared metric is worse than the in-service one
by more than ``tolerance`` (absolute, default 0.05). The reason names every metric that failed, or
the deltas when it passes. A model in service that puts today's users in one segment (``segments_used``,
fitted on a handful of users or on identical ones) is no yardstick: one segment is trivially stable and
every refit "moves" users, so it would refuse every later fit; any candidate that separates users replaces it. Nor
is a model of a small shop (fitted on under ``SMALL_SHOP`` users) once the shop has grown ``GROWTH``-fold
(``fitted_users``): a shop of 40 users grew to 373 and kept its first 2-segment model through every refit (its 8-row
classifier test scored 1.0, and the grown population's segments "moved" everyone); the candidate replaces it, and the
reason names the checks it would have failed. A larger shop keeps the whole gate, membership churn included.

Stability, paired. The figure depends on nothing a model learned (no centroid enters it): only on the users, the
features they are measured in, the number of behaviour clusters re-fitted (``behaviour_clusters``, shown beside it in
the UI) and the algorithm. Measured apart (each model's own preprocessing, bootstrap samples and seeds, 2 restarts per
re-fit), each model drew its own noise: on a 50,000-user shop one model with 6 behaviour clusters scored 0.75-0.96
over ten seeds, and of six candidates re-fitted on its very users at its k, four were refused for stability (the
differences spanned -0.17..+0.14 with the seed). So both are re-fitted on the same rows of today's users, in the
candidate's features (as the silhouette is), from the same bootstrap samples with the same seeds: a candidate of the
same k and algorithm has exactly the figure of the model in service (measured once: a difference of 0, never refused
for stability), and one of another k is compared on identical samples, so the difference is what its k changes, up to
the re-fits' own spread (6 behaviour clusters against 3 on that shop: -0.18..0.00 over ten seeds; such candidates also
moved 15-22 % of the unchanged users, refused on membership churn too). The re-fits restart as often as a fit does
(``selection.n_init``, 4; were 2): a re-fit stuck in a poor local optimum counted as instability (at 4 behaviour
clusters one model scored 0.73-0.98 over ten seeds with 2 restarts, 0.97-0.99 with 4). "Worse" keeps its meaning:
the candidate's segments are less reproducible on today's users than the model in service's would be.

Membership churn (membership.py): with ``max_membership_churn``, a candidate whose
``membership_churn_stable`` (the share of users whose features barely changed that it would move to
another segment) is above it is refused too: a campaign keyed on a segment cannot live with a refit
that reshuffles users who did nothing. Moves into a segment of a new kind of shopper are not counted (they are
``moved_to_new_kind``, named in the reason). With nothing in service there is nobody to move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

GATE_METRICS = ("silhouette", "stability", "classifier_macro_f1")
# The names of membership.membership_churn's figures (written there, read here and by segmentation/assets.py)
ALL_CHURN, CHURN_METRIC = "membership_churn", "membership_churn_stable"  # moved among all users / the barely changed
CHURN_METRICS = (ALL_CHURN, CHURN_METRIC)
NEW_KIND, EMERGED = "moved_to_new_kind", "emerged_segments"  # moves to segments of a new kind of shopper (membership.py)
USERS_COMPARED, STABLE_USERS = "users_compared", "stable_users"  # users with a segment / of them, barely changed
SEGMENTS_USED = "segments_used"  # segments today's users fall in (a sample of them)
BEHAVIOUR_CLUSTERS = "behaviour_clusters"  # the k the stability re-fits (quality.behaviour_stage); shown, not gated
FITTED_USERS = "fitted_users"  # users the model was fitted on (its population then)
GROWTH, SMALL_SHOP = 2.0, 1_000  # a small shop's model is no yardstick once the shop has doubled
LOWER_IS_BETTER = frozenset({"davies_bouldin"})
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    deltas: dict[str, float] = field(default_factory=dict)  # candidate - in service (sign: better > 0)
    failed: tuple[str, ...] = ()


def _ok(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def decide_promotion(candidate_metrics: Mapping[str, float], in_service_metrics: Mapping[str, float] | None,
                     tolerance: float | Mapping[str, float] = DEFAULT_TOLERANCE, metrics: tuple[str, ...] = GATE_METRICS,
                     max_membership_churn: float | None = None, gained: tuple[str, ...] = (), in_service: str = "") -> Decision:
    """Decide whether the candidate model replaces the one in service. ``gained``: features the model in service
    (``in_service``, its version) left out for lack of data that have data now: it describes a population that no
    longer exists and its quality figures are no fair comparison (fewer dimensions), so only the membership churn
    limit applies, over the users without the new data (segmentation/assets.churn_metrics): a new source's first days
    (a tester's two days of clicks beside a year of orders) moved 27 % of the users without a click, and kept
    segments' names no longer fitted them."""
    tol = (lambda m: float(tolerance.get(m, DEFAULT_TOLERANCE))) if isinstance(tolerance, Mapping) else (lambda m: float(tolerance))
    churn = candidate_metrics.get(CHURN_METRIC)
    if in_service_metrics is None:
        return Decision(True, "the first model")
    if in_service_metrics.get(SEGMENTS_USED, 2) < 2 <= candidate_metrics.get(SEGMENTS_USED, 0):
        return Decision(True, f"the model in service puts every user in one segment; this fit separates them into "
                              f"{candidate_metrics[SEGMENTS_USED]:g}")
    then, now = in_service_metrics.get(FITTED_USERS), candidate_metrics.get(FITTED_USERS)
    outgrown = (_ok(then) and _ok(now) and 0 < then < SMALL_SHOP and now >= GROWTH * then
                and candidate_metrics.get(SEGMENTS_USED, 0) >= 2)
    if gained and not outgrown:  # the users without the new data who moved, as a share of all: a few left behind by a source that
        # now covers nearly everyone move with the rest (a test's 5 of 488 users without a click)
        why = f"{in_service} leaves out features that have data now ({', '.join(gained)})"
        without, compared = candidate_metrics.get(STABLE_USERS), candidate_metrics.get(USERS_COMPARED)
        moved = churn * without / compared if _ok(churn) and _ok(without) and _ok(compared) and compared else 0.0
        if max_membership_churn is not None and moved > max_membership_churn:
            return Decision(False, f"{why}, but this fit moves {moved:.1%} of the users although they have none of that "
                                   f"data ({churn:.1%} of those; {CHURN_METRIC} > {max_membership_churn:.3f}): too "
                                   "little of it yet to settle the segments", failed=(CHURN_METRIC,))
        return Decision(True, why)
    deltas: dict[str, float] = {}
    failed: list[str] = []
    notes: list[str] = []
    for m in metrics:
        c, s = candidate_metrics.get(m), in_service_metrics.get(m)
        if not (_ok(c) and _ok(s)):
            continue
        d = (s - c) if m in LOWER_IS_BETTER else (c - s)
        deltas[m] = float(d)
        if d < -tol(m):
            failed.append(m)
            notes.append(f"{m} {c:.3f} vs {s:.3f} in service (worse by {-d:.3f} > {tol(m):.3f})")
    if max_membership_churn is not None and _ok(churn) and churn > max_membership_churn:
        failed.append(CHURN_METRIC)
        notes.append(f"{CHURN_METRIC} {churn:.3f} > {max_membership_churn:.3f} (moves users whose features barely changed)")
    if outgrown:
        return Decision(True, f"the model in service was fitted on {then:,.0f} users, this fit on {now:,.0f}: the shop "
                              f"has grown {now / then:.1f}-fold" + (f" (promoted over: {'; '.join(notes)})" if notes else ""),
                        deltas)
    if failed:
        return Decision(False, "worse than the model in service: " + "; ".join(notes), deltas, tuple(failed))
    if not deltas:
        return Decision(True, "no comparable metrics; promoting", deltas)
    detail = ", ".join(f"{m} {'+' if d >= 0 else ''}{d:.3f}" for m, d in deltas.items())
    if _ok(churn):
        detail += f"; {CHURN_METRIC} {churn:.3f}" + (f" <= {max_membership_churn:.3f}" if max_membership_churn is not None else "")
    if candidate_metrics.get(NEW_KIND, 0) > 0:
        detail += (f"; {candidate_metrics[NEW_KIND]:.3f} of stable users moved to {candidate_metrics.get(EMERGED, 0):g} "
                   "new kind(s) of shopper (not churn)")
    return Decision(True, f"not worse than the model in service (tolerance {tolerance}): {detail}", deltas)
