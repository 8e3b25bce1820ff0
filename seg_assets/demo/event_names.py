"""Click event names for the demo: the names real shops' trackers send, each meaning one funnel stage.

The generator plants behaviour in stage codes (``STAGES``); with the rich vocabulary (the default)
:func:`name_events` then names every event by its context (a session's first view is a landing or list
page, a checkout right before an order is often the payment step), adds the ``purchase`` event of each
tracked order and a little ``other`` noise, drawing only from a random stream of its own: for the same
seed both vocabularies hold the same view, search, cart and checkout events per user and session.
"""

from __future__ import annotations

import numpy as np

# Click events. Behaviour is planted in stage codes (STAGES); the rich vocabulary then names each event.
STAGES = ("view", "search", "add_to_cart", "checkout", "purchase", "other")  # ingest.events.FUNNEL_STAGES
CONTRACT_EVENT_TYPES = STAGES[:4]  # event_vocabulary="contract": the stage is the name
EVENT_NAMES: dict[str, str] = {  # event_vocabulary="rich": name -> the funnel stage it stands for
    "page_view": "view", "home": "view", "view_item_list": "view", "catalog": "view", "product_view": "view",
    "view_item": "view",
    "search": "search", "view_search_results": "search",
    "add_to_cart": "add_to_cart", "cart": "add_to_cart",
    "begin_checkout": "checkout", "add_shipping_info": "checkout", "add_payment_info": "checkout",
    "purchase": "purchase", "order_completed": "purchase",
    "session_start": "other", "user_engagement": "other", "scroll": "other", "remove_from_cart": "other",
    "add_to_wishlist": "other",
}
_NAME = {name: i for i, name in enumerate(EVENT_NAMES)}
# Which name an event of a stage gets, by context (probabilities in whole per mille): a session's first
# view is a landing or list page, later views are mostly product pages; the checkout step right before an
# order is often the payment step, an abandoned one more often the first.
_NAME_CONTEXTS = (
    {"home": 0.35, "page_view": 0.35, "view_item_list": 0.15, "catalog": 0.15},  # 0: first view of a session
    {"product_view": 0.35, "view_item": 0.30, "view_item_list": 0.15, "catalog": 0.10, "page_view": 0.10},  # 1
    {"search": 0.60, "view_search_results": 0.40},  # 2: search
    {"add_to_cart": 0.80, "cart": 0.20},  # 3: add_to_cart
    {"begin_checkout": 0.50, "add_shipping_info": 0.20, "add_payment_info": 0.30},  # 4: checkout before an order
    {"begin_checkout": 0.70, "add_shipping_info": 0.20, "add_payment_info": 0.10},  # 5: abandoned checkout
    {"purchase": 0.80, "order_completed": 0.20},  # 6: the order's confirmation (_PURCHASE)
)
_PURCHASE = 6
# Names that carry no product (list and landing pages, searches, tracker noise).
NO_PRODUCT = ("home", "view_item_list", "catalog", "search", "view_search_results", "session_start",
              "user_engagement", "scroll")
# ``other`` noise, per mille of the events it follows (about 4 % of all events; see name_events for the times).
SESSION_START_PM = 80  # of sessions: session_start at their first event (same second, ordered before it)
WISHLIST_PM, REMOVE_PM = 20, 80  # of product views / of add_to_carts in sessions without an order
ENGAGEMENT_PM, SCROLL_PM = 8, 6  # of any event


def _name_table(contexts: tuple[dict[str, float], ...]) -> np.ndarray:
    """Per context, 1000 name codes in proportion to its probabilities (per mille, exact)."""
    rows = []
    for probs in contexts:
        counts = [round(p * 1000) for p in probs.values()]
        if sum(counts) != 1000 or any(abs(p * 1000 - k) > 1e-9 for p, k in zip(probs.values(), counts)):
            raise ValueError(f"name probabilities must be whole per mille and sum to 1: {probs}")
        rows.append(np.repeat(np.array([_NAME[n] for n in probs], dtype=np.int8), counts))
    return np.concatenate(rows)


_NAME_TABLE = _name_table(_NAME_CONTEXTS)
_NO_PRODUCT = np.isin(np.arange(len(EVENT_NAMES)), [_NAME[n] for n in NO_PRODUCT])


def name_events(rng: np.random.Generator, c: dict, first: np.ndarray, n_pe: int, checkout_before_order: np.ndarray,
          order_ts: np.ndarray, end_s: int) -> list[dict]:
    """Name the stage-coded events of ``c`` and add ``purchase`` and ``other`` events (codes into EVENT_NAMES).

    ``first``: each session's first event; events ``[0, n_pe)`` are the sessions ending in an order, whose
    last events (the checkouts) are ``checkout_before_order``, placed ``order_ts``. The stage events stay
    as they are (same rows, times, categories); each such session gets a ``purchase`` event at the order
    time, and a small share of events get tracker noise next to them. Only ``rng`` is drawn from; the
    work is per session or per drawn anchor wherever it can be (this runs on tens of millions of events).
    """
    et, pos, e = c["etype"], c["pos"], len(c["etype"])
    ctx = (et + 1).astype(np.int16)  # 1 view (not first), 2 search, 3 add_to_cart, 4 checkout before an order
    ctx[first[et[first] == 0]] = 0
    tail = ctx[n_pe:]
    tail[tail == 4] = 5  # checkouts of sessions without an order
    ctx *= 1000
    ctx += rng.integers(0, 1000, e, dtype=np.int16)
    name = _NAME_TABLE[ctx]
    del ctx
    q = rng.integers(0, 1000, e, dtype=np.int16)  # per mille, for the noise
    views = np.flatnonzero(q < WISHLIST_PM)
    carts = np.flatnonzero(q[n_pe:] < REMOVE_PM) + n_pe
    high = np.flatnonzero(q >= 1000 - ENGAGEMENT_PM - SCROLL_PM)
    engaged = q[high] >= 1000 - ENGAGEMENT_PM
    kinds = (  # (anchor events, name, seconds after the anchor [lo, hi))
        (checkout_before_order, -1, (0, 0)),
        (first[q[first] < SESSION_START_PM], _NAME["session_start"], (0, 0)),
        (views[(name[views] == _NAME["product_view"]) | (name[views] == _NAME["view_item"])],
         _NAME["add_to_wishlist"], (2, 30)),
        (carts[et[carts] == 2], _NAME["remove_from_cart"], (10, 300)),
        (high[engaged], _NAME["user_engagement"], (5, 60)),
        (high[~engaged], _NAME["scroll"], (1, 20)),
    )
    del q
    a = np.concatenate([x for x, _, _ in kinds])
    k = np.repeat(np.arange(len(kinds), dtype=np.int8), [len(x) for x, _, _ in kinds])
    x_name = np.array([n for _, n, _ in kinds], dtype=np.int8)[k]
    n_o = len(checkout_before_order)
    x_name[:n_o] = _NAME_TABLE[_PURCHASE * 1000 + rng.integers(0, 1000, n_o)]
    lo, hi = (np.array([w[i] for _, _, w in kinds], dtype=np.int64)[k] for i in (0, 1))
    x_ts = np.minimum(c["ts"][a] + lo + (rng.random(len(a)) * (hi - lo)).astype(np.int64), end_s)
    x_ts[:n_o] = order_ts
    no_product = _NO_PRODUCT[x_name]
    x = {"user": c["user"][a], "session": c["session"][a],
         "pos": 8 * pos[a] + np.where(k == 1, -1, 1 + k),  # session_start just before its anchor, the rest after
         "ts": x_ts, "etype": x_name, "cat": np.where(no_product, -1, c["cat"][a]).astype(np.int8),
         "product": np.where(no_product, -1, c["product"][a])}
    c["product"][_NO_PRODUCT[name]] = -1
    c["etype"], c["pos"] = name, pos * 8
    return [c, x]
