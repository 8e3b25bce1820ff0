"""Synthetic shoppers for the segmentation tests: planted types -> per-user features.

The generator simulates orders and sessions per user (Poisson processes over each user's active
window) and derives the same columns as ``features.user_features``, so the tests exercise the
segmentation maths on data shaped like the real feature table (skewed counts, zero-inflated
rates, recency equal to tenure without orders) rather than on Gaussian blobs.
The tests at the bottom only guard the generator itself.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from seg_assets.features.dictionary import MODEL_FEATURES

# type -> parameters. Rates are per day; ``lapse`` is how long ago activity stopped (None: active).
SHOPPER_TYPES: dict[str, dict] = {
    "loyal_high_value": dict(share=0.12, tenure=(180, 900), order_rate=1 / 12, aov=140.0, disc=0.05,
                             session_rate=1 / 4, views=6, searches=1.0, cart=0.25, checkout=0.8,
                             cancel=0.02, ret=0.04, lapse=None),
    "bargain_hunter": dict(share=0.18, tenure=(90, 900), order_rate=1 / 25, aov=35.0, disc=0.35,
                           session_rate=1 / 3, views=10, searches=4.0, cart=0.15, checkout=0.6,
                           cancel=0.05, ret=0.10, lapse=None),
    "window_shopper": dict(share=0.20, tenure=(60, 900), order_rate=1 / 400, aov=50.0, disc=0.10,
                           session_rate=1 / 2, views=12, searches=2.0, cart=0.04, checkout=0.2,
                           cancel=0.10, ret=0.05, lapse=None),
    "occasional": dict(share=0.25, tenure=(120, 900), order_rate=1 / 90, aov=70.0, disc=0.10,
                       session_rate=1 / 20, views=5, searches=1.0, cart=0.2, checkout=0.6,
                       cancel=0.05, ret=0.05, lapse=None),
    "lapsed": dict(share=0.15, tenure=(300, 900), order_rate=1 / 40, aov=60.0, disc=0.12,
                   session_rate=1 / 10, views=6, searches=1.0, cart=0.2, checkout=0.6,
                   cancel=0.05, ret=0.08, lapse=(150, 280)),
    "new_customer": dict(share=0.10, tenure=(1, 30), order_rate=1 / 15, aov=60.0, disc=0.10,
                         session_rate=1 / 3, views=7, searches=1.5, cart=0.2, checkout=0.6,
                         cancel=0.05, ret=0.05, lapse=None),
}


def _events(rng, n_users, start, end, rate):
    """Poisson event times in [end, start] days-ago per user -> (counts, owner index, times)."""
    length = np.clip(start - end, 0, None)
    counts = rng.poisson(rate * length)
    owner = np.repeat(np.arange(n_users), counts)
    times = end[owner] + rng.random(owner.size) * length[owner]
    return counts, owner, times


def _min_by(owner, values, n, default):
    out = np.full(n, np.inf)
    np.minimum.at(out, owner, values)
    return np.where(np.isinf(out), default, out)


# A type that does not exist in the default population: for "a genuinely new cluster appears".
VIP = dict(share=0.1, tenure=(300, 900), order_rate=1 / 4, aov=600.0, disc=0.0, session_rate=1 / 3, views=3,
           searches=0.2, cart=0.5, checkout=0.9, cancel=0.01, ret=0.01, lapse=None)


def make_shoppers(n: int, seed: int = 0, shares: dict[str, float] | None = None,
                  types: dict[str, dict] | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """``n`` users with MODEL_FEATURES columns plus ``user_id``; returns (frame, planted type names).

    ``shares`` overrides type shares (0 removes a type); ``types`` replaces the type table.
    """
    rng = np.random.default_rng(seed)
    table = types or SHOPPER_TYPES
    names = list(table)
    p = np.array([(shares or {}).get(t, table[t]["share"]) for t in names], dtype=float)
    kind = rng.choice(len(names), size=n, p=p / p.sum())

    def col(key):
        return np.array([table[t][key] for t in names], dtype=float)[kind]

    lo = np.array([table[t]["tenure"][0] for t in names], dtype=float)[kind]
    hi = np.array([table[t]["tenure"][1] for t in names], dtype=float)[kind]
    tenure = lo + rng.random(n) * (hi - lo)
    lapse_lo = np.array([(table[t]["lapse"] or (0, 0))[0] for t in names], dtype=float)[kind]
    lapse_hi = np.array([(table[t]["lapse"] or (0, 0))[1] for t in names], dtype=float)[kind]
    active_end = np.minimum(lapse_lo + rng.random(n) * (lapse_hi - lapse_lo), tenure)
    # per-user heterogeneity around the type's parameters
    het = lambda: rng.lognormal(0.0, 0.35, n)  # noqa: E731
    order_rate = col("order_rate") * het()
    session_rate = col("session_rate") * het()
    aov = col("aov") * het()

    cnt, own, t_ord = _events(rng, n, tenure, active_end, order_rate)
    status = rng.random(own.size)
    cancel_p, ret_p = col("cancel")[own], col("ret")[own]
    cancelled = status < cancel_p
    returned = (~cancelled) & (status < cancel_p + ret_p)
    done = ~(cancelled | returned)
    amount_list = rng.lognormal(np.log(aov[own]), 0.4)
    disc_frac = np.clip(rng.beta(2, 2, own.size) * 2 * col("disc")[own], 0, 0.9)
    paid = amount_list * (1 - disc_frac)
    freq = np.bincount(own[done], minlength=n)
    monetary = np.bincount(own[done], weights=paid[done], minlength=n)
    disc_amt = np.bincount(own[done], weights=(amount_list * disc_frac)[done], minlength=n)
    recency = _min_by(own[done], t_ord[done], n, tenure)
    orders_30 = np.bincount(own[done & (t_ord <= 30)], minlength=n)
    orders_90 = np.bincount(own[done & (t_ord <= 90)], minlength=n)

    s_cnt, s_own, t_ses = _events(rng, n, tenure, active_end, session_rate)
    sessions = s_cnt
    views = rng.poisson(col("views") * sessions)
    searches = rng.poisson(col("searches") * sessions)
    carts = rng.binomial(views, np.clip(col("cart"), 0, 1))
    checkouts = np.maximum(rng.binomial(carts, col("checkout")), np.minimum(freq, carts))
    last_visit = _min_by(s_own, t_ses, n, tenure)

    def ratio(a, b):
        return np.where(b > 0, np.minimum(a / np.maximum(b, 1e-12), 1.0), 0.0)

    all_orders = cnt
    frame = pl.DataFrame({
        "user_id": [f"u{i:07d}" for i in range(n)],
        "recency_days": recency,
        "frequency": freq.astype(np.int64),
        "monetary": np.round(monetary, 2),
        "avg_order_value": np.where(freq > 0, monetary / np.maximum(freq, 1), 0.0),
        "tenure_days": tenure,
        "orders_30d": orders_30.astype(np.int64),
        "orders_90d": orders_90.astype(np.int64),
        "discount_share": np.where(monetary + disc_amt > 0, disc_amt / np.maximum(monetary + disc_amt, 1e-12), 0.0),
        "cancel_rate": ratio(np.bincount(own[cancelled], minlength=n), all_orders),
        "return_rate": ratio(np.bincount(own[returned], minlength=n), all_orders),
        "sessions": sessions.astype(np.int64),
        "views": views.astype(np.int64),
        "searches": searches.astype(np.int64),
        "add_to_carts": carts.astype(np.int64),
        "checkouts": checkouts.astype(np.int64),
        "purchases": freq.astype(np.int64),  # the clickstream's purchase event of each order
        "view_to_cart": ratio(carts, views),
        "cart_to_checkout": ratio(checkouts, carts),
        "checkout_to_order": ratio(freq, checkouts),
        "session_to_order": ratio(freq, sessions),
        "days_since_last_visit": last_visit,
    })
    assert tuple(c for c in frame.columns if c != "user_id") == MODEL_FEATURES
    return frame, np.array(names)[kind]


def test_generator_covers_model_features_and_types():
    frame, truth = make_shoppers(3000, seed=1)
    assert frame.height == 3000 and set(truth) == set(SHOPPER_TYPES)
    assert frame.select(MODEL_FEATURES).null_count().sum_horizontal().item() == 0
    by = frame.with_columns(t=pl.Series(truth)).group_by("t").agg(pl.col("monetary").mean(), pl.col("tenure_days").max())
    means = dict(zip(by["t"], by["monetary"]))
    assert means["loyal_high_value"] > 3 * means["occasional"]
    assert dict(zip(by["t"], by["tenure_days"]))["new_customer"] <= 30
