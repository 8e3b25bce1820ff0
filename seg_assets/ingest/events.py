"""The open click-event vocabulary: any event name is accepted and mapped to a funnel stage.

Stores name their events their own way (``product_view``, ``view_item``, ``cart``, ``order_completed``,
...). Ingestion keeps the delivered name in ``raw.clicks.event_type`` (trimmed, lower-cased) and adds
``funnel_stage``, one of :data:`FUNNEL_STAGES`. :func:`stage_of` decides, in this order: the source's own
``event_types`` (sources.yaml), the built-in names below, then the words of the name (``search``,
``cart``, ``checkout``, ``purchase``, ``view``, ``placed order``, ...), so names nobody listed still land in the
right stage. A name that matches nothing is stage ``other``: kept and counted, never rejected. Features count
stages, not names.
"""

from __future__ import annotations

import re

FUNNEL_STAGES = ("view", "search", "add_to_cart", "checkout", "purchase", "other")
OTHER = "other"

_DEFAULTS: dict[str, tuple[str, ...]] = {
    "view": (
        "view", "views", "page_view", "pageview", "page_viewed", "product_view", "product_viewed", "view_item",
        "item_view", "detail", "product_detail", "pdp_view", "product_page", "product", "catalog", "catalog_view",
        "category_view", "view_item_list", "product_list_view", "listing", "list_view", "home", "homepage",
        "screen_view", "browse",
    ),
    "search": ("search", "searches", "site_search", "search_query", "search_results", "view_search_results",
               "product_search", "searched"),
    "add_to_cart": ("add_to_cart", "addtocart", "cart", "cart_add", "add_cart", "added_to_cart", "basket_add",
                    "add_to_basket", "add_to_bag"),
    "checkout": ("checkout", "begin_checkout", "checkout_started", "start_checkout", "checkout_start",
                 "add_payment_info", "add_shipping_info", "payment", "shipping", "checkout_progress"),
    "purchase": ("purchase", "purchased", "order", "order_completed", "order_complete", "order_placed", "checkout_completed",
                 "transaction", "buy", "conversion", "payment_success", "sale"),
    "other": ("remove_from_cart", "view_cart", "add_to_wishlist", "wishlist", "wishlist_add", "session_start",
              "first_visit", "user_engagement", "scroll", "click", "login", "logout", "sign_up", "signup",
              "view_promotion", "select_promotion", "impression"),
}

# Segment's e-commerce spec ("Product Added", "Cart Viewed", ...), by name: the keywords read "product" as a view
# and "cart" as an add to cart, and both were wrong for these.
_SEGMENT_SPEC = {"product_viewed": "view", "product_clicked": "view", "product_list_viewed": "view",
                 "product_list_filtered": "view", "products_searched": "search", "product_added": "add_to_cart",
                 "product_removed": "other", "cart_viewed": "other", "checkout_started": "checkout",
                 "checkout_step_viewed": "checkout", "checkout_step_completed": "checkout",
                 "payment_info_entered": "checkout", "order_completed": "purchase", "product_added_to_wishlist": "other",
                 "viewed_checkout_step": "checkout", "completed_checkout_step": "checkout",  # the spec's v1 names
                 "promotion_viewed": "other", "promotion_clicked": "other"}

# Shopify's standard Web Pixel events, by name: their words gave the same stages, but as guesses the refresh warned
# about on every delivery of a Shopify shop (a reviewer's)
_SHOPIFY_PIXELS = {"page_viewed": "view", "collection_viewed": "view", "search_submitted": "search",
                   "product_added_to_cart": "add_to_cart", "product_removed_from_cart": "other", "cart_viewed": "other",
                   "checkout_started": "checkout", "checkout_contact_info_submitted": "checkout",
                   "checkout_address_info_submitted": "checkout", "checkout_shipping_info_submitted": "checkout",
                   "payment_info_submitted": "checkout", "checkout_completed": "purchase", "alert_displayed": "other",
                   "ui_extension_errored": "other"}

# Built-in name -> stage (names compared trimmed and lower-cased).
DEFAULT_EVENT_STAGES: dict[str, str] = ({name: stage for stage, names in _DEFAULTS.items() for name in names} | _SEGMENT_SPEC
                                        | _SHOPIFY_PIXELS)

# Word rules for names not listed: a name is split into words (``Placed Order`` -> placed, order), and the first rule
# whose words it holds wins. Words, not substrings: "review" holds "view" and "Subscribed to List" holds "list".
_WORDS = {
    "other": {"remove", "removed", "removes", "delete", "deleted", "wish", "wishlist", "wishlisted", "favorite",
              "favourite", "favorited", "promo", "promotion", "login", "logged", "logout", "signin", "signup", "register",
              "registered", "registration", "session", "review", "reviews", "reviewed", "rate", "rated", "rating",
              "subscribe", "subscribed", "subscription", "unsubscribe", "unsubscribed", "newsletter", "email", "share",
              "shared", "cancel", "cancelled", "canceled", "cancellation", "refund", "refunded", "return", "returned",
              "scroll", "engagement", "notification", "impression", "fail", "failed", "failure", "error", "declined",
              "abandon", "abandoned"},
    "search": {"search", "searched", "searches", "searching", "query", "queried"},
    "purchase": {"purchase", "purchased", "purchases", "transaction", "transactions", "buy", "bought", "ordered",
                 "thankyou", "conversion", "converted"},
    "checkout": {"checkout", "payment", "shipping", "billing", "coupon"},
    "add_to_cart": {"cart", "basket", "bag", "trolley", "add", "added", "adds"},
    "view": {"view", "viewed", "views", "pageview", "page", "screen", "product", "products", "catalog", "catalogue",
             "detail", "details", "listing", "list", "category", "item", "items", "home", "homepage", "browse",
             "browsed", "pdp", "plp", "visit", "visited"},
}
# Phrases of two words, checked first: a step of ordering or paying that completes it, a cart looked at (not added to),
# a checkout step, a "buy now" button.
_DONE = {"complete", "completed", "placed", "place", "confirm", "confirmed", "confirmation", "success", "successful",
         "succeeded", "submit", "submitted", "paid", "done", "finished"}
_PAIRS: tuple[tuple[str, set[str], set[str]], ...] = (
    ("other", {"sign", "log"}, {"up", "in", "out"}),
    ("other", {"cart", "basket", "bag", "sc"}, {"view", "viewed", "open", "opened"}),
    ("checkout", {"checkout", "payment"}, {"step", "steps"}),  # a step of checking out, completed or not
    ("other", {"page", "screen"}, {"ping", "heartbeat"}),  # time-on-page heartbeats (Snowplow's page_ping), no views
    ("purchase", {"order", "orders", "checkout", "payment", "purchase"}, _DONE),
    ("checkout", {"buy"}, {"now", "button"}),  # a button that starts a checkout ("one click buy" buys)
    ("purchase", {"thank"}, {"you"}),
    ("checkout", {"check", "checked"}, {"out"}),
)


# Names run together (``productview``, ``ordercomplete``) hold no known word: then the first of these patterns found
# inside the name decides.
_RUN_TOGETHER: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(pattern)) for stage, pattern in (
        ("other", r"remove|delete|wish|promo|login|logout|signup|session|review|subscri|cancel|refund|fail|error|declin"),
        ("search", r"search|query"),
        ("purchase", r"purchase|transaction|order_?(complete|placed|confirm|success)|checkout_?(complete|success|done)"
                     r"|payment_?(complete|success)|thank_?you"),
        ("checkout", r"checkout|payment|shipping|billing"),
        ("add_to_cart", r"cart|basket|bag"),
        ("view", r"view|page|product|catalog|detail|listing|category|item|home|browse|pdp|plp"),
    )
)


# A checkout form submitted (Shopify's pixels: checkout_contact_info_submitted, payment_info_submitted) was read as an
# order placed, one order counted as five purchases (a tester's): information about a checkout's contact, address,
# shipping or payment, completed, is a checkout step; a contact form or a profile's details are not (a reviewer's).
_FORM = {"info", "information", "details"}
_CHECKOUT_FORM = {"checkout", "payment", "shipping", "billing", "delivery", "address", "contact", "card"}


def _word_stage(key: str) -> str:
    words = set(re.split(r"[^a-z0-9]+", key))
    if words & _WORDS["other"]:
        return OTHER
    if words & _FORM and words & _CHECKOUT_FORM and words & _DONE:
        return "checkout"
    for stage, first, second in _PAIRS:
        if words & first and words & second:
            return stage
    for stage, vocabulary in _WORDS.items():
        if words & vocabulary:
            return stage
    return next((stage for stage, pattern in _RUN_TOGETHER if pattern.search(key)), OTHER)


def normalize_event_name(name: str) -> str:
    """Trimmed, lower-cased; camelCase, spaces and dashes become underscores (``addToCart`` -> ``add_to_cart``)."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[\s\-.]+", "_", name.lower())


def check_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """A source's ``event_types`` normalized; ValueError naming a value that is not a funnel stage."""
    out = {}
    for name, stage in overrides.items():
        if str(stage).strip().lower() not in FUNNEL_STAGES:
            raise ValueError(f"event type {name!r} maps to {stage!r}, not a funnel stage ({', '.join(FUNNEL_STAGES)})")
        out[normalize_event_name(str(name))] = str(stage).strip().lower()
    return out


DECLARED, BUILT_IN, WORDS = "declared", "built in", "words"  # where a name's stage comes from (stage_from)


def staged(name: str | None, overrides: dict[str, str] | None = None) -> tuple[str, str]:
    """(the funnel stage of one event name, the rule that gave it: the source's ``event_types``, the built-in names,
    or the words of the name), in the order of the module docstring. A stage from the words is a guess, said in the
    refresh when it is not 'other' (a tester's ``wc_thankyou_page`` was a second purchase per order, unsaid)."""
    if name is None:
        return OTHER, BUILT_IN
    key = normalize_event_name(name)
    if overrides and key in overrides:
        return overrides[key], DECLARED
    if key in DEFAULT_EVENT_STAGES:
        return DEFAULT_EVENT_STAGES[key], BUILT_IN
    return _word_stage(key), WORDS


def stage_of(name: str | None, overrides: dict[str, str] | None = None) -> str:
    """The funnel stage of one event name."""
    return staged(name, overrides)[0]


def stage_from(name: str | None, overrides: dict[str, str] | None = None) -> str:
    """Which rule gives the name its stage (:func:`staged`)."""
    return staged(name, overrides)[1]
