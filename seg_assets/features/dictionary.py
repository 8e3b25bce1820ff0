"""The feature dictionary: every column of ``features.user_features``, what it means, and its range.

This is the single place a column is described; the README table (``make dictionary``), the asset's column schema
and the range check (features/checks.py) are all generated from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from seg_assets.markdown import table as md_table

USER_ID_HASHED = "an id holding an '@', as an e-mail address does: its sha256"  # what a user_id is when it was an address


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # polars / DuckDB type family: "int", "float", "str", "datetime"
    description: str
    min_value: float | None = None
    max_value: float | None = None
    model: bool = False  # used by the segment model by default
    # The data the column carries information from ("orders", "revenue", "clicks", "reviews"): without that data it is
    # left out of the models (segmentation/availability.py)
    needs: tuple[str, ...] = ()
    measures: str | None = None  # what it measures, when other columns measure it too (segmentation/preprocess.py)


FEATURES: tuple[Feature, ...] = (
    Feature("user_id", "str", f"User id from the landing files (orders, clicks or customers; {USER_ID_HASHED})."),
    Feature("recency_days", "float", "Days from the last completed order to as-of; users who never completed an order get their "
            "tenure.", 0, None, True, needs=("orders",), measures="recency"),
    Feature("frequency", "int", "Completed orders, lifetime.", 0, None, True, needs=("orders",), measures="value"),
    Feature("monetary", "float", "Sum of `amount` over completed orders (after discount).", 0, None, True,
            needs=("orders", "revenue"), measures="value"),
    Feature("avg_order_value", "float", "monetary / frequency; 0 without completed orders.", 0, None, True,
            needs=("orders", "revenue"), measures="value"),
    Feature("tenure_days", "float", "Days from the first of signup (customers file), first order and first click to "
            "as-of (a guest who bought before signing up is no new customer).", 0, None, True, measures="tenure"),
    Feature("orders_30d", "int", "Completed orders in the 30 days up to as-of.", 0, None, True, needs=("orders",), measures="value"),
    Feature("orders_90d", "int", "Completed orders in the 90 days up to as-of.", 0, None, True, needs=("orders",), measures="value"),
    Feature("discount_share", "float", "Discount / (amount + discount) over completed orders: how much of the list price was "
            "discounted.", 0, 1, True, needs=("orders", "revenue"), measures="discount"),
    Feature("cancel_rate", "float", "Cancelled orders / all orders.", 0, 1, True, measures="quality"),
    Feature("return_rate", "float", "Returned orders / all orders.", 0, 1, True, measures="quality"),
    Feature("sessions", "int", "Distinct click sessions.", 0, None, True, needs=("clicks",), measures="engagement"),
    Feature("views", "int", "Click events of funnel stage `view` (product, page, catalog views: ingest/events.py).", 0, None, True,
            needs=("clicks",), measures="engagement"),
    Feature("searches", "int", "Click events of funnel stage `search`.", 0, None, True, needs=("clicks",), measures="engagement"),
    Feature("add_to_carts", "int", "Click events of funnel stage `add_to_cart`.", 0, None, True, needs=("clicks",), measures="engagement"),
    Feature("checkouts", "int", "Click events of funnel stage `checkout`.", 0, None, True, needs=("clicks",), measures="engagement"),
    Feature("purchases", "int", "Click events of funnel stage `purchase` (the clickstream's own record of buying; orders "
            "come from the orders or order_items tables only).", 0, None, True, needs=("clicks",), measures="engagement"),
    Feature("view_to_cart", "float", "add_to_carts / views (0 without views), capped at 1.", 0, 1, True,
            needs=("clicks",), measures="funnel"),
    Feature("cart_to_checkout", "float", "checkouts / add_to_carts (0 without carts), capped at 1.", 0, 1, True,
            needs=("clicks",), measures="funnel"),
    Feature("checkout_to_order", "float", "Completed orders / checkouts (0 without checkouts), capped at 1.", 0, 1, True,
            needs=("clicks", "orders"), measures="funnel"),
    Feature("session_to_order", "float", "Completed orders / sessions (0 without sessions), capped at 1: overall conversion.", 0, 1, True,
            needs=("clicks", "orders"), measures="funnel"),
    Feature("days_since_last_visit", "float", "Days from the last click event to as-of; users without clicks get their tenure.",
            0, None, True, needs=("clicks",), measures="recency"),
    Feature("category_count", "int", "Distinct categories ordered or browsed.", 0, None, False, measures="preferences"),
    Feature("top_category", "str", "The category with the most orders and clicks ('' without any)."),
    Feature("top_category_share", "float", "Share of the user's orders and clicks in `top_category`.", 0, 1, False, measures="preferences"),
    Feature("first_seen_ts", "datetime", "First order, click or signup time (UTC)."),
    Feature("last_order_ts", "datetime", "Last completed order time (UTC); null without one."),
    Feature("reviews", "int", "Reviews written up to as-of (any language, with or without text).", 0, None, False, needs=("reviews",)),
    Feature("avg_rating", "float", "Mean stars (1-5) of the user's rated reviews; null without one.", 1, 5, False, needs=("reviews",)),
    Feature("avg_sentiment", "float", "Mean text sentiment (VADER compound, -1..1) of the user's reviews with a scored text; "
            "null without one (reviews/sentiment.py).", -1, 1, False, needs=("reviews",)),
    Feature("negative_reviews_90d", "int", "Negative reviews (by text, else by stars) in the 90 days up to as-of.", 0, None, False,
            needs=("reviews",)),
    Feature("negative_review_share", "float", "Negative reviews / reviews with a label (text or stars); null without one.",
            0, 1, False, needs=("reviews",)),
    Feature("country", "str", "Country from the customers file ('' when unknown)."),
    Feature("channel", "str", "Acquisition channel from the customers file ('' when unknown)."),
    Feature("as_of", "datetime", "The as-of time these features were computed for."),
    Feature("features_build", "str", "Which build computed the row (its ledger watermark and a digest of the code and "
            "settings): rows rebuilt at the same as-of (late rows) get a new one, and the scores made from them are redone."),
)

# Per-category preference shares are added as `cat_share_<category>` columns (see user_features.py):
# the categories come from the data, so they are not listed here one by one.
CATEGORY_SHARE_PREFIX = "cat_share_"

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
MODEL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.model)


def needing(source: str) -> tuple[str, ...]:
    """The columns that carry no information without ``source`` (``Feature.needs``), in dictionary order."""
    return tuple(f.name for f in FEATURES if source in f.needs)


def feature_groups() -> dict[str, tuple[str, ...]]:
    """What each group of columns measures -> its columns (``Feature.measures``), in dictionary order."""
    groups: dict[str, tuple[str, ...]] = {}
    for f in FEATURES:
        if f.measures:
            groups[f.measures] = (*groups.get(f.measures, ()), f.name)
    return groups


# Not in the segment model (module doc of reviews/sentiment.py and the README say why): churn and profiles only,
# and only when the population has reviews (segmentation/availability.py).
REVIEW_FEATURES: tuple[str, ...] = needing("reviews")
CHURN_FEATURES: tuple[str, ...] = MODEL_FEATURES + REVIEW_FEATURES
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def markdown_table() -> str:
    rows = []
    for f in FEATURES:
        lo = "" if f.min_value is None else f"{f.min_value:g}"
        hi = "" if f.max_value is None else f"{f.max_value:g}"
        rows.append((f"`{f.name}`", f.dtype, f"[{lo}, {hi or '∞'}]" if (lo or hi) else "", "yes" if f.model else "",
                     f.description))
    rows.append((f"`{CATEGORY_SHARE_PREFIX}<category>`", "float", "[0, 1]", "", "Share of the user's orders and clicks in "
                 "that category (the most common categories when the table was last built in full: first build, code or "
                 "settings change, daily rebase; the rest, and a category that became common since, in "
                 f"`{CATEGORY_SHARE_PREFIX}other`; a category whose column name is taken gets `_2`, `_3`, ...: `Home`, "
                 "`@home`)."))
    return md_table(["column", "type", "range", "model", "meaning"], rows)


# README's copy of the table, between these markers: rewritten by ``make dictionary``, compared by test_readme.py
README_BLOCK = re.compile(r"(<!-- feature-dictionary:start -->\n)(.*?)(\n<!-- feature-dictionary:end -->)", re.S)


def readme_with_table(text: str) -> str:
    """``text`` (README's) with its feature-dictionary block rewritten from :data:`FEATURES`."""
    return README_BLOCK.sub(lambda m: m[1] + markdown_table().strip() + m[3], text, count=1)


def write_readme(path: str | Path = "README.md") -> None:
    """``make dictionary``: README's copy of the table made current."""
    readme = Path(path)
    readme.write_text(readme_with_table(readme.read_text()))
