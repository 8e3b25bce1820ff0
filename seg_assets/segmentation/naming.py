"""Human-readable segment names from where a segment sits in the population.

Input: per segment, the mean percentile rank of its users for each feature (0.5 = typical; see
profiles.feature_contrasts). Each archetype below is a weighted signature of features that should
sit high (+) or low (-); its score for a segment is the weighted mean of ``sign * (rank - 0.5)``.

Assignment is deterministic and keeps names unique:

1. segments that were KEPT by matching keep their old name (``fixed``);
2. the remaining (segment, archetype) pairs are taken greedily by descending score, each archetype
   once, and only if the archetype is close to the segment's best (so uniqueness never turns a
   bargain-hunting cluster into "Window shoppers");
3. a segment left without a free archetype takes its best one plus a qualifier from its most
   distinctive other trait ("Bargain hunters (high value)"); a numeric suffix is the last resort.

An archetype is only a candidate when the data it speaks about is there (``REQUIRES``: at least one of
its listed features among the model's, i.e. in ``ranks``; see availability.py). An orders-only population
is never "Window shoppers": that name is about browsing, and without clicks nobody is seen browsing.

Hierarchy stages restrict the archetypes: the ``new`` stage is "New customers", the ``lapsed``
stage is "Dormant" or "At risk", behaviour clusters in ``engaged`` use the others.
"""

from __future__ import annotations

from collections.abc import Mapping

# name -> {feature: weight * direction}
ARCHETYPES: dict[str, dict[str, float]] = {
    "High-value loyal": {"monetary": 2, "frequency": 2, "orders_90d": 1, "recency_days": -1},
    "Loyal buyers": {"frequency": 2, "orders_90d": 1, "recency_days": -1},  # High-value loyal where amounts say nothing
    "Bargain hunters": {"discount_share": 3, "avg_order_value": -1},
    "Window shoppers": {"sessions": 1, "views": 1, "session_to_order": -2, "frequency": -1},
    "Occasional buyers": {"sessions": -1, "views": -1, "frequency": -0.5, "orders_90d": -0.5,
                          "days_since_last_visit": 0.5},
    "At risk": {"recency_days": 1, "days_since_last_visit": 1, "monetary": 1, "frequency": 1},
    "Dormant": {"recency_days": 2, "days_since_last_visit": 2, "orders_90d": -1},
    "New customers": {"tenure_days": -3},
}

# name -> the features it speaks about: at least one must be a model feature for the name to be used
REQUIRES: dict[str, tuple[str, ...]] = {
    "High-value loyal": ("monetary",),  # the name claims value: not without amounts (every amount 0)
    "Loyal buyers": ("frequency",),
    "Bargain hunters": ("discount_share",),
    "Window shoppers": ("sessions", "views"),
    "Occasional buyers": ("frequency",),
    "At risk": ("recency_days", "days_since_last_visit"),
    "Dormant": ("recency_days", "days_since_last_visit"),
    "New customers": ("tenure_days",),
}

# Names whose words state a fact a person takes at its word: given only to a segment whose users lean that way on the
# feature the words are about (mean percentile rank above 0.5 for +1). On a retail extract of 57 customers a segment
# that "spends 0.6x the average" was "High-value loyal 2": the archetype scored best on its recent orders, and its
# qualifiers were taken; small shops had "Window shoppers" of 2-3 sessions (their sessions ranked 0.11-0.38).
# name -> the side its REQUIRES features must lean (the first of them the model has speaks)
# A tester's clickstream with every amount 0 had its most recent, most frequent buyers named "At risk" (13 days since
# their last order, churn 0.42 against 0.88 elsewhere): the lapse names claim a long recency, the newcomers' a short
# tenure, the loyal names many orders.
CLAIMS: dict[str, int] = {"High-value loyal": 1, "Loyal buyers": 1, "Bargain hunters": 1, "Window shoppers": 1,
                          "At risk": 1, "Dormant": 1, "New customers": -1}
# name -> the name it stands in for: used only where that one cannot be (none of its REQUIRES among the features)
STANDS_IN: dict[str, str] = {"Loyal buyers": "High-value loyal"}

# The names a lifecycle stage itself says are true of its users (its thresholds did): their CLAIMS are not checked
# again on the ranks (a lapsed segment of buyers ranks below the median on recency in a shop of long-standing browsers
# who never bought, whose recency is their tenure, and lost both its names)
STAGE_SAYS: dict[str, tuple[str, ...]] = {"new": ("New customers",), "lapsed": ("Dormant", "At risk")}
STAGE_ARCHETYPES: dict[str | None, tuple[str, ...]] = {
    None: tuple(ARCHETYPES),
    "all": tuple(ARCHETYPES),
    **STAGE_SAYS,
    "engaged": ("High-value loyal", "Loyal buyers", "Bargain hunters", "Window shoppers", "Occasional buyers", "At risk"),
}

# feature -> (qualifier when the segment ranks high, when it ranks low)
QUALIFIERS: dict[str, tuple[str, str]] = {
    "monetary": ("high value", "low value"),
    "frequency": ("frequent", "infrequent"),
    "discount_share": ("discount-driven", "full price"),
    "sessions": ("engaged", "low engagement"),
    "recency_days": ("lapsing", "recent"),
    "tenure_days": ("long-standing", "recently joined"),
    "avg_order_value": ("big baskets", "small baskets"),
    "views": ("browses a lot", "browses little"),
    "days_since_last_visit": ("not visiting lately", "visited recently"),
}

# Names that say the segment buys: not for a segment most of whose users never ordered (its profile would read
# "Occasional buyers | 100% never ordered"); such a segment without another fitting name is NOT_YET_BUYERS
BUYER_ARCHETYPES = ("High-value loyal", "Loyal buyers", "Bargain hunters", "Occasional buyers", "At risk")
NOT_YET_BUYERS = "Not yet buyers"


def buying(buyer_share: float | None) -> bool:
    """Whether a segment is one of buyers: most of its users ordered (unknown: yes). Names and descriptions use it."""
    return buyer_share is None or buyer_share >= 0.5
EVERYONE = "All customers"  # the one segment of everyone: names are contrasts, and there is nothing to contrast it with
CLOSE_TO_BEST = 0.08  # an archetype may be used for uniqueness if within this score of the best


def archetype_scores(ranks: Mapping[str, float], allowed: tuple[str, ...] = tuple(ARCHETYPES),
                     stage: str | None = None) -> dict[str, float]:
    """Score of each allowed archetype for one segment (features missing from ``ranks`` are skipped; an
    archetype none of whose ``REQUIRES`` features is in ``ranks``, or whose words the segment contradicts
    (:data:`CLAIMS`, unless the segment's ``stage`` says them: :data:`STAGE_SAYS`), is not scored at all)."""
    out = {}
    for name in allowed:
        if not any(f in ranks for f in REQUIRES.get(name, ())):
            continue
        if name in STANDS_IN and any(f in ranks for f in REQUIRES[STANDS_IN[name]]):
            continue
        side = 0 if name in STAGE_SAYS.get(stage or "", ()) else CLAIMS.get(name, 0)
        feature = next((f for f in REQUIRES.get(name, ()) if f in ranks), None)
        if side and feature is not None and side * (ranks[feature] - 0.5) <= 0:
            continue
        sig = {f: w for f, w in ARCHETYPES[name].items() if f in ranks}
        total = sum(abs(w) for w in sig.values())
        out[name] = sum(w * (ranks[f] - 0.5) for f, w in sig.items()) / total if total else 0.0
    return out


def _qualified(base: str, ranks: Mapping[str, float], taken: set[str]) -> str:
    avoid = set(ARCHETYPES.get(base, {}))
    options = sorted(((abs(r - 0.5), f) for f, r in ranks.items() if f in QUALIFIERS and f not in avoid),
                     key=lambda t: (-t[0], t[1]))
    for _, f in options:
        name = f"{base} ({QUALIFIERS[f][0] if ranks[f] >= 0.5 else QUALIFIERS[f][1]})"
        if name not in taken:
            return name
    i = 2
    while f"{base} {i}" in taken:
        i += 1
    return f"{base} {i}"


def assign_names(ranks: Mapping[int, Mapping[str, float]], *, stages: Mapping[int, str] | None = None,
                 fixed: Mapping[int, str] | None = None, buyer_share: Mapping[int, float] | None = None) -> dict[int, str]:
    """segment id -> unique name. ``fixed`` (kept segments' old names) always wins and is reserved,
    also for a segment without ranks (no user in the sample). ``buyer_share``: per segment, the share of its users with
    an order; under half, no name of :data:`BUYER_ARCHETYPES`."""
    fixed = {int(k): v for k, v in (fixed or {}).items()}
    if len(set(fixed.values())) != len(fixed):
        raise ValueError(f"fixed names are not unique: {fixed}")
    names: dict[int, str] = dict(fixed)
    if not fixed and len(ranks) == 1:  # ranks against no other segment: "At risk" for users who ordered today
        return {int(next(iter(ranks))): EVERYONE}
    taken = set(fixed.values())
    todo = sorted(s for s in ranks if s not in names)
    def allowed(s: int) -> tuple[str, ...]:
        names_ = STAGE_ARCHETYPES.get((stages or {}).get(s), tuple(ARCHETYPES))
        return names_ if buying((buyer_share or {}).get(s)) else tuple(a for a in names_ if a not in BUYER_ARCHETYPES)

    scores = {s: archetype_scores(ranks[s], allowed(s), (stages or {}).get(s)) for s in todo}
    best = {s: max(sc.items(), key=lambda t: (t[1], -list(ARCHETYPES).index(t[0]))) for s, sc in scores.items() if sc}
    pairs = sorted(((sc, s, a) for s in todo for a, sc in scores[s].items() if sc >= best[s][1] - CLOSE_TO_BEST),
                   key=lambda t: (-t[0], t[1], t[2]))
    for _score, s, a in pairs:
        if s in names or a in taken:
            continue
        names[s] = a
        taken.add(a)
    for s in todo:  # segments whose good archetypes were all taken
        if s not in names:  # "Segment (...)": no archetype has the data it needs
            buys = buying((buyer_share or {}).get(s))
            if s not in best and not buys and NOT_YET_BUYERS not in taken:
                names[s] = NOT_YET_BUYERS
            else:
                names[s] = _qualified(best[s][0] if s in best else "Segment" if buys else NOT_YET_BUYERS, ranks[s], taken)
            taken.add(names[s])
    return {s: names[s] for s in sorted(names)}
