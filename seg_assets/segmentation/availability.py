"""Which model features carry information in a population, and why the others are left out.

The one place this is decided. The segment model fits on :attr:`FeatureAvailability.used` and stores it as
its feature list; naming (archetypes), profiles (descriptions), the surrogate rules, the classifier and the
lifecycle stage all read the model's feature list, so a feature left out here is left out everywhere.
Why: a column with no data is not "zero" but "unknown". Without clicks, ``sessions`` is 0 for everyone and
``days_since_last_visit`` is the tenure; clustering on them, or naming a segment "Window shoppers" from
them, describes the absence of a data source, not the customers.

Rules, in order (the first that applies gives the reason):

* no click events at all (``sessions`` is 0 for every user): every click feature;
* no completed order at all (``frequency`` 0 for every user): every order and revenue feature;
* completed orders but no revenue (``monetary`` 0 for every user): the revenue features;
* no reviews at all (``reviews`` 0 for every user): the review features (used by churn, not by the segment model);
* any other column with one value for every user: that column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from seg_assets.features.dictionary import REVIEW_FEATURES, needing

# Which columns need which data: the feature dictionary says it of each column (Feature.needs)
CLICK_FEATURES, ORDER_FEATURES, REVENUE_FEATURES = needing("clicks"), needing("orders"), needing("revenue")

NO_CLICKS = "no click events"
NO_ORDERS = "no completed orders"
NO_REVENUE = "all order amounts are 0"
NO_REVIEWS = "no reviews"
CONSTANT = "the same value for every user"

# Per source of data: the column that is 0 for a user without any of it, the features that need it, and the reason
# they are left out when that column is 0 for every user. In order: a feature needing two sources is left out for the
# first it lacks (revenue needs orders: with no completed order at all, the revenue features' reason is the orders').
SOURCES = (("sessions", CLICK_FEATURES, NO_CLICKS), ("frequency", ORDER_FEATURES, NO_ORDERS),
           ("monetary", REVENUE_FEATURES, NO_REVENUE), ("reviews", REVIEW_FEATURES, NO_REVIEWS))


@dataclass(frozen=True)
class FeatureAvailability:
    used: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...] = ()  # (feature, reason), in candidate order

    @property
    def left_out_features(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.left_out)

    def by_reason(self) -> dict[str, list[str]]:
        """reason -> features, in the order the reasons first appear."""
        out: dict[str, list[str]] = {}
        for f, why in self.left_out:
            out.setdefault(why, []).append(f)
        return out

    def describe(self) -> str:
        """One line for the UI and the CLI ('' when nothing is left out)."""
        return "; ".join(f"{', '.join(fs)} ({why})" for why, fs in self.by_reason().items())


RECENCY_SIGNALS = ("recency_days", "days_since_last_visit")


def recency_signals(features) -> tuple[str, ...]:
    """The recency columns the lifecycle stage 'lapsed' reads: those the model uses (without clicks,
    days_since_last_visit is only the tenure), both when it uses neither or ``features`` is None."""
    present = tuple(c for c in RECENCY_SIGNALS if features is None or c in features)
    return present or RECENCY_SIGNALS


def _all_zero(frame: pl.DataFrame, column: str) -> bool:
    """No user has data of the source ``column`` stands for (SOURCES): 0 or NULL for every user, or no user. A frame
    without the column says nothing of its source."""
    if column not in frame.columns:
        return False
    if frame.height == 0:
        return True
    return bool(frame.select((pl.col(column).fill_null(0).cast(pl.Float64).abs().max() == 0).alias("z"))["z"][0])


def _constant(frame: pl.DataFrame, column: str) -> bool:
    return frame.select(pl.col(column).drop_nulls().n_unique() <= 1)[column][0]


def _reasons(frame: pl.DataFrame, candidates: Sequence[str]) -> dict[str, str]:
    """feature -> why it carries no information (features with data are absent)."""
    reasons: dict[str, str] = {}
    for column, features, why in SOURCES:
        if _all_zero(frame, column):
            reasons.update({f: why for f in features if f not in reasons})
    for f in candidates:
        if f not in reasons and f in frame.columns and frame.height and _constant(frame, f):
            reasons[f] = CONSTANT
    return reasons


def feature_availability(frame: pl.DataFrame, candidates: Sequence[str]) -> FeatureAvailability:
    """Split ``candidates`` (columns of ``frame``) into the features with data and those without (module doc).

    If no candidate has data (a handful of identical users), all are kept: there is nothing better to fit on.
    """
    candidates = [c for c in candidates if c in frame.columns]
    reasons = _reasons(frame, candidates)
    used = tuple(f for f in candidates if f not in reasons)
    if not used:
        return FeatureAvailability(tuple(candidates))
    return FeatureAvailability(used, tuple((f, reasons[f]) for f in candidates if f in reasons))


def without_data(frame: pl.DataFrame, candidates: Sequence[str]) -> dict[str, str]:
    """feature -> why it carries no information, for the ``candidates`` that have none (no fallback: a caller
    with other inputs, such as the churn model, simply leaves them out)."""
    present = [c for c in candidates if c in frame.columns]
    return {f: why for f, why in _reasons(frame, present).items() if f in present}


def source_columns(features: Sequence[str]) -> list[str]:
    """The SOURCES columns that tell whether ``features`` have data (what :func:`gained_data` reads beside them)."""
    return [column for column, needing_it, _ in SOURCES if any(f in needing_it for f in features)]


def without_new_data(frame: pl.DataFrame, gained: Sequence[tuple[str, str]]) -> pl.Series:
    """Per user of ``frame``: no data of what the ``gained`` features (feature, the reason a model left it out) lacked
    (no click for a model blind to clicks; for one left out as :data:`CONSTANT`, its own value is 0: a discount share
    no longer 0 for everyone is new data of the users it moved for, not of every buyer). Their features are what the
    model in service saw: the users a refit must not move (membership.refit_churn)."""
    column_of = {why: column for column, _, why in SOURCES}
    indicators = sorted({c for f, why in gained if (c := column_of.get(why, f)) in frame.columns})
    if not indicators:
        return pl.Series([True] * frame.height)
    return frame.select(pl.all_horizontal([pl.col(c).fill_null(0).cast(pl.Float64) == 0 for c in indicators]))[:, 0]


def gained_data(left_out: Sequence[str], frame: pl.DataFrame) -> list[str]:
    """Features a model left out that ``frame`` now has data for (a reason to re-fit). ``frame`` should hold
    every model feature: whether clicks or orders exist is read from ``sessions`` and ``frequency``."""
    present = [f for f in left_out if f in frame.columns]
    reasons = _reasons(frame, present) if frame.height else {f: "" for f in present}
    return [f for f in present if f not in reasons]
