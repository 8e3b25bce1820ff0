"""Who the demo's users are and what they do: six shopper types and their orders and click sessions.

The behaviour the segmentation must find (generate.py writes it to files): every user is drawn from one of
``SHOPPER_TYPES``, whose rates, prices, discounts, statuses and category tastes (one row per type in the arrays
below) differ clearly in the features of ``features/dictionary.py``. Vectorized numpy: no Python loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from seg_assets.demo.event_names import name_events
from seg_assets.demo.faults import DAY

SHOPPER_TYPES = ("loyal_high_value", "bargain_hunter", "window_shopper", "occasional", "lapsed", "new_customer")
LOYAL, BARGAIN, WINDOW, OCCASIONAL, LAPSED, NEW = range(6)
TYPE_SHARES = np.array([0.12, 0.18, 0.18, 0.27, 0.15, 0.10])
CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery")
COUNTRIES = ("DE", "FR", "GB", "NL", "ES", "IT", "US", "PL", "SE", "AT")
COUNTRY_P = np.array([0.22, 0.16, 0.14, 0.09, 0.09, 0.09, 0.08, 0.05, 0.04, 0.04])
CHANNELS = ("organic", "paid_search", "social", "email", "referral", "affiliate")
CHANNEL_P = np.array([0.35, 0.25, 0.15, 0.10, 0.10, 0.05])

# Behaviour per shopper type; rows follow SHOPPER_TYPES.
ORDERS_30D = np.array([1.2, 0.75, 0.04, 0.2, 0.9, 1.0])  # orders per active 30 days (new: followups only)
BROWSE_30D = np.array([0.4, 0.5, 1.4, 0.35, 0.8, 2.0])  # sessions without an order per 30 days
BROWSE_EVENTS = np.array([3.0, 4.0, 5.0, 2.0, 3.0, 3.0])  # extra events per browse session (Poisson)
EVENT_MIX = np.array([  # view, search, add_to_cart, checkout in sessions without an order
    [0.72, 0.12, 0.14, 0.02], [0.45, 0.40, 0.13, 0.02], [0.64, 0.10, 0.22, 0.04],
    [0.76, 0.15, 0.08, 0.01], [0.70, 0.15, 0.13, 0.02], [0.65, 0.20, 0.13, 0.02]])
LIST_PRICE = np.array([120.0, 38.0, 60.0, 65.0, 60.0, 55.0])  # median list price of an order
ITEMS_EXTRA = np.array([1.2, 1.8, 0.5, 0.6, 0.8, 0.6])  # items = 1 + Poisson(this)
DISCOUNT_P = np.array([0.08, 0.85, 0.25, 0.20, 0.25, 0.50])  # share of orders with a discount
DISCOUNT_FRAC = np.array([[0.05, 0.12], [0.15, 0.45], [0.05, 0.25], [0.05, 0.25], [0.05, 0.25], [0.10, 0.20]])
STATUS_P = np.array([  # completed, cancelled, returned
    [0.95, 0.03, 0.02], [0.78, 0.06, 0.16], [0.78, 0.16, 0.06],
    [0.90, 0.05, 0.05], [0.85, 0.07, 0.08], [0.90, 0.06, 0.04]])
CATEGORY_PREF = np.array([  # CATEGORIES, per type
    [0.30, 0.12, 0.20, 0.08, 0.12, 0.08, 0.04, 0.06], [0.06, 0.26, 0.08, 0.20, 0.06, 0.04, 0.08, 0.22],
    [0.26, 0.30, 0.12, 0.12, 0.08, 0.04, 0.04, 0.04], [0.12, 0.12, 0.14, 0.10, 0.12, 0.18, 0.14, 0.08],
    [0.14, 0.16, 0.14, 0.12, 0.12, 0.12, 0.10, 0.10], [0.14, 0.18, 0.14, 0.14, 0.10, 0.10, 0.10, 0.10]])
SIGNUP_AGE_DAYS = np.array([700.0, 400.0, 300.0, 400.0, 500.0, 0.0])  # mean account age at window start
FAV_P = 0.55  # chance an order or session is in the user's favourite category
TRACKED_P = 0.90  # share of orders preceded by a click session (the rest: app/phone, untracked)


@dataclass
class Users:
    shopper: np.ndarray  # int8 code into SHOPPER_TYPES
    act: np.ndarray  # order-rate multiplier (user-level noise)
    browse: np.ndarray  # browse-rate multiplier
    value: np.ndarray  # list-price multiplier
    disc_p: np.ndarray  # probability an order carries a discount
    fav: np.ndarray  # favourite category code
    u_signup: np.ndarray  # uniforms placing signup / lapse inside a concrete window
    u_lapse: np.ndarray
    late_join: np.ndarray  # signed up during the window
    country: np.ndarray  # code into COUNTRIES, -1 = empty
    channel: np.ndarray  # code into CHANNELS, -1 = empty


def pick(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per row from the distribution ``probs[rows[i]]`` (loops over types only)."""
    u = rng.random(len(rows))
    out = np.zeros(len(rows), dtype=np.int8)
    cum = np.cumsum(probs, axis=1)
    for t in range(probs.shape[0]):
        m = rows == t
        if m.any():
            out[m] = np.minimum(np.searchsorted(cum[t], u[m], side="right"), probs.shape[1] - 1)
    return out


def draw_users(rng: np.random.Generator, n: int, shopper: np.ndarray | None = None) -> Users:
    """Latent per-user traits; independent of the time window so followups can re-create them."""
    if shopper is None:
        shopper = rng.choice(len(SHOPPER_TYPES), size=n, p=TYPE_SHARES).astype(np.int8)
    act = rng.lognormal(0.0, 0.4, n)
    browse = np.sqrt(act) * rng.lognormal(0.0, 0.3, n)
    value = rng.lognormal(0.0, 0.25, n)
    disc_p = np.clip(DISCOUNT_P[shopper] + rng.normal(0.0, 0.08, n), 0.0, 1.0)
    fav = pick(rng, CATEGORY_PREF, shopper)
    u_signup, u_lapse = rng.random(n), rng.random(n)
    late_join = (rng.random(n) < 0.10) & (shopper <= OCCASIONAL)
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P).astype(np.int8)
    country[rng.random(n) < 0.03] = -1
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_P).astype(np.int8)
    channel[rng.random(n) < 0.06] = -1
    return Users(shopper, act, browse, value, disc_p, fav, u_signup, u_lapse, late_join, country, channel)


def epoch(ts: datetime) -> int:
    """Seconds since epoch; naive datetimes are UTC."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return int(ts.timestamp())


def place(u: Users, start_s: int, end_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signup time and active span [a0, a1] of every user inside the window (seconds)."""
    span = end_s - start_s
    sh = u.shopper
    signup = start_s - (1.0 + 2.0 * u.u_signup * SIGNUP_AGE_DAYS[sh]) * DAY
    late = u.late_join
    signup[late] = start_s + u.u_signup[late] * 0.5 * span
    new = sh == NEW
    recent = min(30 * DAY, span) - 7200
    signup[new] = end_s - 7200 - u.u_signup[new] * recent
    signup = signup.astype(np.int64)
    a0 = np.maximum(signup + 3600, start_s)
    a1 = np.full(len(sh), end_s, dtype=np.int64)
    lapsed = sh == LAPSED
    stop = end_s - (60.0 + 60.0 * u.u_lapse[lapsed]) * DAY
    a1[lapsed] = np.maximum(stop, start_s + 0.3 * span).astype(np.int64)
    return signup, a0, np.maximum(a1, a0 + 60)


def draw_orders(rng: np.random.Generator, u: Users, counts: np.ndarray, a0: np.ndarray, a1: np.ndarray,
            lines_per_order: float | None = None) -> dict:
    """Order rows for ``counts[i]`` orders of user i, placed uniformly in the user's active span; ``lines_per_order``:
    the items per order scaled (each type's extra items alike) so that the mean is about this (None: ITEMS_EXTRA)."""
    user = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    n, sh = len(user), u.shopper[user]
    lo = a0[user] + 600
    ts = lo + (rng.random(n) * np.maximum(a1[user] - lo, 0)).astype(np.int64)
    cat = np.where(rng.random(n) < FAV_P, u.fav[user], pick(rng, CATEGORY_PREF, sh)).astype(np.int8)
    extra = ITEMS_EXTRA[sh]
    if lines_per_order is not None and n:
        extra = extra * (lines_per_order - 1) / extra.mean()
    items = (1 + rng.poisson(extra)).astype(np.int32)
    price = LIST_PRICE[sh] * u.value[user] * rng.lognormal(0.0, 0.4, n) * (0.7 + 0.3 * items)
    price = np.maximum(np.round(price, 2), 1.0)
    has_disc = rng.random(n) < u.disc_p[user]
    lo_f, hi_f = DISCOUNT_FRAC[sh, 0], DISCOUNT_FRAC[sh, 1]
    discount = np.where(has_disc, np.round(price * (lo_f + rng.random(n) * (hi_f - lo_f)), 2), 0.0)
    amount = np.round(price - discount, 2)
    discount[~has_disc & (rng.random(n) < 0.5)] = np.nan  # "may be empty (means 0)"
    status = pick(rng, STATUS_P, sh)
    return {"user": user, "ts": ts, "cat": cat, "items": items, "amount": amount, "discount": discount,
            "status": status}


def draw_clicks(rng: np.random.Generator, u: Users, orders: dict, browse: np.ndarray,
            a0: np.ndarray, a1: np.ndarray, end_s: int, names_rng: np.random.Generator | None = None) -> list[dict]:
    """Click events: a session ending in add_to_cart + checkout before most orders, plus browse sessions.

    Parts of the events (one frame each): ``etype`` codes into CONTRACT_EVENT_TYPES, or with ``names_rng``
    into EVENT_NAMES (see :func:`event_names.name_events`); ``rng`` draws the same numbers either way.
    """
    tracked = rng.random(len(orders["user"])) < TRACKED_P
    p_user = orders["user"][tracked]
    p_end = orders["ts"][tracked] - rng.integers(20, 180, len(p_user))
    p_n = 3 + rng.poisson(1.0, len(p_user))
    b_user = np.repeat(np.arange(len(browse), dtype=np.int32), browse)
    b_sh = u.shopper[b_user]
    b_n = 1 + rng.poisson(BROWSE_EVENTS[b_sh])
    b_cat = np.where(rng.random(len(b_user)) < FAV_P, u.fav[b_user], pick(rng, CATEGORY_PREF, b_sh))
    s_user = np.concatenate([p_user, b_user])
    s_n = np.concatenate([p_n, b_n]).astype(np.int64)
    s_cat = np.concatenate([orders["cat"][tracked], b_cat]).astype(np.int8)
    n_p, n_s = len(p_user), len(s_user)
    first = np.cumsum(s_n) - s_n
    sess = np.repeat(np.arange(n_s, dtype=np.int32), s_n)
    e = len(sess)
    gaps = rng.exponential(45.0, e)
    gaps[first] = 0.0
    cs = np.cumsum(gaps)
    off = cs - np.repeat(cs[first], s_n)
    dur = cs[first + s_n - 1] - cs[first]
    b_lo = a0[b_user]
    b_hi = np.maximum(a1[b_user] - dur[n_p:], b_lo)
    s_start = np.concatenate([p_end - dur[:n_p], b_lo + rng.random(len(b_user)) * (b_hi - b_lo)])
    user = s_user[sess]
    ts = np.clip((np.repeat(s_start, s_n) + off).astype(np.int64), a0[user], end_s)
    from_end = np.repeat(first + s_n - 1, s_n) - np.arange(e)
    purchase = sess < n_p
    etype = pick(rng, EVENT_MIX, u.shopper[user])
    prefix = np.where(rng.random(e) < 0.8, 0, 1).astype(np.int8)
    etype = np.where(purchase, np.where(from_end == 0, 3, np.where(from_end == 1, 2, prefix)), etype)
    cat = np.where(rng.random(e) < 0.85, s_cat[sess], rng.integers(0, len(CATEGORIES), e)).astype(np.int8)
    cat[((etype == 1) & (rng.random(e) < 0.5)) | (rng.random(e) < 0.02)] = -1
    product = np.maximum(cat, 0).astype(np.int64) * 10_000 + rng.integers(0, 1500, e)
    product[etype == 1] = -1
    rank = np.empty(n_s, dtype=np.int64)  # sessions numbered by start time
    rank[np.argsort(s_start, kind="stable")] = np.arange(n_s)
    c = {"user": user, "session": rank[sess], "pos": np.arange(e) - np.repeat(first, s_n), "ts": ts,
         "etype": etype.astype(np.int8), "cat": cat, "product": product}
    if names_rng is None:
        return [c]
    n_pe = int(first[n_p]) if n_p < n_s else e  # events of the sessions ending in an order come first
    return name_events(names_rng, c, first, n_pe, first[:n_p] + s_n[:n_p] - 1, orders["ts"][tracked], end_s)


