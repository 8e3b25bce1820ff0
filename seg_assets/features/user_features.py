"""``features.user_features``: one row per user, built in polars from the SQL aggregates.

Pure functions only (frames in, frame out) so the maths is unit-tested without a warehouse; the asset in
``assets.py`` reads the aggregates from DuckDB and writes the result back. Every column is described in
``dictionary.py``; a column of a per-user input named there and not declared below passes through as a feature (0
for a user without a row in the order, click or review stats when it is a number; a customer attribute stays empty),
so a new feature is a line of SQL and a dictionary entry.
Users are everyone with an order, a click or a customer record up to as-of; a table
that is absent (orders-only stores have no clicks) simply means zero activity.
"""

from __future__ import annotations

import re
from datetime import datetime

import polars as pl

from seg_assets.errors import InputError
from seg_assets.features import dictionary
from seg_assets.features.dictionary import CATEGORY_SHARE_PREFIX

TOP_CATEGORIES = 10
USER_FEATURES_TABLE = "features.user_features"  # where the rows of build_user_features are kept
# days = seconds * (1 / 86400): polars divides a column of several rows by a number as a product with its reciprocal
# and a one-row column truly, so a refresh that recomputed one user stored other last digits than a full build
# (10.583333333333334 against 10.583333333333332 days); a product is the same for any number of rows
_DAYS_PER_SECOND = 1.0 / 86_400.0

ORDER_STATS_SCHEMA = {
    "user_id": pl.String, "completed_orders": pl.Int64, "all_orders": pl.Int64, "cancelled_orders": pl.Int64,
    "returned_orders": pl.Int64, "monetary": pl.Float64, "discount_total": pl.Float64, "orders_30d": pl.Int64,
    "orders_90d": pl.Int64, "last_order_ts": pl.Datetime("us"), "first_order_ts": pl.Datetime("us"),
}
CLICK_STATS_SCHEMA = {
    "user_id": pl.String, "sessions": pl.Int64, "views": pl.Int64, "searches": pl.Int64, "add_to_carts": pl.Int64,
    "checkouts": pl.Int64, "purchases": pl.Int64, "first_click_ts": pl.Datetime("us"), "last_click_ts": pl.Datetime("us"),
}
CATEGORY_SCHEMA = {"user_id": pl.String, "category": pl.String, "events": pl.Int64}
REVIEW_STATS_SCHEMA = {
    "user_id": pl.String, "reviews": pl.Int64, "avg_rating": pl.Float64, "avg_sentiment": pl.Float64,
    "negative_reviews": pl.Int64, "labelled_reviews": pl.Int64, "negative_reviews_90d": pl.Int64,
}
CUSTOMER_SCHEMA = {"user_id": pl.String, "signup_ts": pl.Datetime("us"), "country": pl.String, "channel": pl.String}
# build_user_features argument -> (the table it is read from, its schema): the one list both engines read
# (features/assets.py on DuckDB, spark/features.py on Spark). Per-user tables, one row per user ...
USER_INPUTS = {
    "order_stats": ("features.user_order_stats", ORDER_STATS_SCHEMA),
    "click_stats": ("features.user_click_stats", CLICK_STATS_SCHEMA),
    "customers": ("staging.stg_customers", CUSTOMER_SCHEMA),
    "review_stats": ("features.user_review_stats", REVIEW_STATS_SCHEMA),
}
# ... and the long per-user, per-category table.
CATEGORY_INPUT = ("category_activity", "features.user_category_activity")


# The columns build_user_features computes itself (from the inputs above): a dictionary name among them, or among the
# inputs' declared columns, is taken; a model's column of that name would replace or be replaced by it, unsaid (a
# reviewer's avg_order_value and country). test_user_features checks that this list is complete.
DERIVED = frozenset({
    "top_category", "top_category_share", "category_count", "first_seen_ts", "tenure_days", "recency_days",
    "days_since_last_visit", "frequency", "avg_order_value", "discount_share", "cancel_rate", "return_rate",
    "view_to_cart", "cart_to_checkout", "checkout_to_order", "session_to_order", "negative_review_share", "as_of",
    "features_build",
})
_DECLARED = frozenset(c for _, schema in USER_INPUTS.values() for c in schema) | frozenset(CATEGORY_SCHEMA)


def passes_through(column: str) -> bool:
    """Whether a per-user model's column becomes a feature as it is: named in dictionary.py, and neither an input's
    declared column nor one build_user_features computes (the one rule both engines read)."""
    return column in dictionary.BY_NAME and column not in _DECLARED and column not in DERIVED


def unread_columns(frames: dict[str, pl.DataFrame | None]) -> dict[str, list[str]]:
    """Per input table, the columns its model has that build_user_features does not read (``_`` ones are
    bookkeeping): neither declared above nor, in a per-user input, passed through, such a column was dropped
    without a word (a reviewer's)."""
    schemas = {name: schema for name, (_, schema) in USER_INPUTS.items()} | {CATEGORY_INPUT[0]: CATEGORY_SCHEMA}
    tables = {name: table for name, (table, _) in USER_INPUTS.items()} | dict([CATEGORY_INPUT])
    out = {}
    for name, frame in frames.items():
        extra = [c for c in frame.columns if c not in schemas[name] and not c.startswith("_")
                 and not (name in USER_INPUTS and passes_through(c))] if frame is not None else []
        if extra:
            out[tables[name]] = extra
    return out


def check_input_columns(frames: dict[str, pl.DataFrame | None]) -> None:
    """A FeatureError naming the first input table that lacks a column declared above (an absent input, None, lacks
    none: it means no such data). Filled with nulls by :func:`_conform`, such a column was 0 for every user, unsaid,
    as a dictionary entry no input delivers was before that became an error (a model of your own in SEG_SQL_DIR
    replaces the shipped one whole: one without ``views`` made view_to_cart 0 for everyone); on Spark the same model
    failed with an AnalysisException. Both engines' assets call it with the frames they read."""
    schemas = {name: schema for name, (_, schema) in USER_INPUTS.items()} | {CATEGORY_INPUT[0]: CATEGORY_SCHEMA}
    tables = {name: table for name, (table, _) in USER_INPUTS.items()} | dict([CATEGORY_INPUT])
    for name, frame in frames.items():
        if frame is not None and (absent := [c for c in schemas[name] if c not in frame.columns]):
            raise FeatureError(f"{tables[name]} has no column(s) {', '.join(absent)}, which user_features reads (the "
                               "input schemas in features/user_features.py): add them to the model's SQL")


def unread_advice(table: str, columns: list[str]) -> str:
    """What to do about a table's unread columns (:func:`unread_columns`), for its warning."""
    if table == CATEGORY_INPUT[1]:
        return "the per-category table gives the top categories and their shares; a per-user column belongs in a per-user model"
    taken = [c for c in columns if c in dictionary.BY_NAME]
    return "; ".join(filter(None, [
        f"{', '.join(taken)}: the name of a feature user_features computes or another input's column: rename it in the "
        "model's SQL (and add the new name to features/dictionary.py)" if taken else "",
        "a column becomes a feature through its entry in features/dictionary.py" if len(taken) < len(columns) else ""]))


class FeatureError(InputError, ValueError):
    """A dictionary column no input delivers (an entry whose SQL line was never written was 0 for every user, unsaid:
    a reviewer's): one line, no retry."""


_DTYPES = {"int": pl.Int64, "float": pl.Float64, "str": pl.String, "datetime": pl.Datetime("us")}  # Feature.dtype


def _fits(dtype: pl.DataType, entry: str) -> bool:
    """Whether a column of ``dtype`` can be the dictionary's type ``entry`` (Feature.dtype) without a value failing."""
    if entry == "int":
        return dtype.is_integer() or dtype == pl.Boolean
    if entry == "float":
        return dtype.is_numeric() or dtype == pl.Boolean
    return entry == "str" or dtype.is_temporal() and dtype != pl.Time and dtype != pl.Duration


def _conform(frame: pl.DataFrame | None, schema: dict, table: str = "") -> pl.DataFrame:
    """Cast to the expected schema, plus the columns that pass through (cast to their dictionary type); a missing
    input becomes an empty frame of that schema, a missing column nulls. A passed column whose type cannot be its
    entry's is a FeatureError (text cast to int failed the step with polars' traceback: a reviewer's)."""
    if frame is None:
        return pl.DataFrame(schema=schema)
    passed = [c for c in frame.columns if c not in schema and passes_through(c)]
    if wrong := [c for c in passed if not _fits(frame.schema[c], dictionary.BY_NAME[c].dtype)]:
        c = wrong[0]
        raise FeatureError(f"{table}.{c} is {frame.schema[c]}, but its entry in features/dictionary.py says "
                           f"{dictionary.BY_NAME[c].dtype!r}: cast it in the model's SQL, or change the entry's dtype")
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c)
                         for c, t in schema.items()] + [pl.col(c).cast(_DTYPES[dictionary.BY_NAME[c].dtype]) for c in passed])


def _absent(name: str) -> pl.Expr:
    """A dictionary column no input delivered (its input is absent): none of what it counts, or unknown."""
    dtype = _DTYPES[dictionary.BY_NAME[name].dtype]
    return pl.lit(0 if dtype in (pl.Int64, pl.Float64) else None, dtype=dtype).alias(name)


def category_slug(category: str) -> str:
    slug = re.sub(r"[^0-9a-z]+", "_", category.strip().lower()).strip("_")
    return slug or "unknown"


OTHER_SHARE = CATEGORY_SHARE_PREFIX + "other"  # the categories without a column of their own


def share_columns(top: list[str]) -> dict[str, str]:
    """Each of the ``top`` categories' share column: its slug, made unique in the order given, so names that read
    alike keep their own columns (``Home`` -> ``cat_share_home``, then ``@home`` -> ``cat_share_home_2``; a category
    called ``Other`` -> ``cat_share_other_2``, as :data:`OTHER_SHARE` is the rest's)."""
    taken, columns = {OTHER_SHARE}, {}
    for category in top:
        base = column = CATEGORY_SHARE_PREFIX + category_slug(category)
        n = 1
        while column in taken:
            n += 1
            column = f"{base}_{n}"
        taken.add(column)
        columns[category] = column
    return columns


def _days_between(as_of: datetime, column: str) -> pl.Expr:
    # fractional: whole seconds dropped up to a second of every difference (GA4's microsecond times: a tester's
    # recency 2.5418287 days where as-of minus the last order is 2.5418383)
    return ((pl.lit(as_of) - pl.col(column)).dt.total_seconds(fractional=True) * _DAYS_PER_SECOND).clip(lower_bound=0.0)


def _ratio(num: str, den: str, cap: float | None = 1.0) -> pl.Expr:
    value = pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(0.0)
    return value.clip(upper_bound=cap) if cap is not None else value


def top_category_list(activity: pl.DataFrame, top_n: int = TOP_CATEGORIES) -> list[str]:
    """The ``top_n`` categories with the most events (ties by name): they get their own share column."""
    activity = activity.filter(pl.col("category").is_not_null() & (pl.col("category") != ""))
    totals = activity.group_by("category").agg(pl.col("events").sum()).sort(["events", "category"], descending=[True, False])
    return totals.head(top_n)["category"].to_list()


def category_features(activity: pl.DataFrame, top_n: int = TOP_CATEGORIES,
                      categories: list[str] | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Top category, its share, the number of categories, and shares of the most common categories.

    ``categories`` fixes the share columns (an incremental build keeps the columns of the table it updates).
    """
    activity = activity.filter(pl.col("category").is_not_null() & (pl.col("category") != ""))
    top = list(categories) if categories is not None else top_category_list(activity, top_n)
    column_of = share_columns(top)
    share_cols = [*column_of.values(), OTHER_SHARE]
    # One group_by over the long table (a sort of it and a pivot took 2x the time and 1.6x the memory at 1M users).
    summary = (
        activity.with_columns(_share_col=pl.col("category").replace_strict(column_of, default=OTHER_SHARE,
                                                                             return_dtype=pl.String))
        .group_by("user_id")
        .agg(
            top_category=pl.col("category").sort_by(["events", "category"], descending=[True, False]).first(),
            top_category_share=pl.col("events").max() / pl.col("events").sum(),
            category_count=pl.col("category").n_unique().cast(pl.Int64),
            **{c: pl.col("events").filter(pl.col("_share_col") == c).sum() / pl.col("events").sum() for c in share_cols},
        )
    )
    return summary, share_cols


def build_user_features(
    order_stats: pl.DataFrame | None,
    click_stats: pl.DataFrame | None,
    category_activity: pl.DataFrame | None,
    customers: pl.DataFrame | None,
    as_of: datetime,
    top_categories: int = TOP_CATEGORIES,
    categories: list[str] | None = None,
    review_stats: pl.DataFrame | None = None,
    build: str | None = None,
) -> pl.DataFrame:
    """One row per user with the columns of the feature dictionary (plus ``cat_share_*``); ``build``: the
    ``features_build`` stamp of the rows (incremental.build_stamp).

    Reviews add to a user's row but never make a user: a reviewer is a user through an order, a click or a
    customer record. Without reviews the review averages and share are null (unknown, not 0)."""
    orders = _conform(order_stats, ORDER_STATS_SCHEMA, USER_INPUTS["order_stats"][0])
    clicks = _conform(click_stats, CLICK_STATS_SCHEMA, USER_INPUTS["click_stats"][0])
    activity = _conform(category_activity, CATEGORY_SCHEMA)
    reviews = _conform(review_stats, REVIEW_STATS_SCHEMA, USER_INPUTS["review_stats"][0])
    custs = _conform(customers, CUSTOMER_SCHEMA, USER_INPUTS["customers"][0])
    custs = custs.filter(pl.col("signup_ts").is_null() | (pl.col("signup_ts") <= as_of))
    custs = custs.unique("user_id", keep="first", maintain_order=True)

    users = pl.concat([orders.select("user_id"), clicks.select("user_id"), custs.select("user_id")]).unique().sort("user_id")
    cat_summary, share_cols = category_features(activity, top_categories, categories)
    frame = (
        users.join(orders, on="user_id", how="left")
        .join(clicks, on="user_id", how="left")
        .join(custs, on="user_id", how="left")
        .join(cat_summary, on="user_id", how="left")
        .join(reviews, on="user_id", how="left")
    )
    # a user with no row in a per-user table has none of what it counts (nor of a number passed through)
    counts = [c for schema in (ORDER_STATS_SCHEMA, CLICK_STATS_SCHEMA, REVIEW_STATS_SCHEMA) for c, t in schema.items()
              if t == pl.Int64] + ["category_count"]
    passed = [c for part in (orders, clicks, reviews) for c in part.columns if passes_through(c)]
    frame = frame.with_columns(
        [pl.col(c).fill_null(0) for c in counts]
        + [pl.col(c).fill_null(0) for c in passed if frame.schema[c] in (pl.Int64, pl.Float64)]
        + [pl.col(c).fill_null(0.0) for c in ("monetary", "discount_total", "top_category_share", *share_cols)]
        + [pl.min_horizontal("first_order_ts", "first_click_ts", "signup_ts").alias("first_seen_ts")]
    ).with_columns(
        # from the first of signup, order and click: a guest who bought before signing up is no new customer
        tenure_days=_days_between(as_of, "first_seen_ts").fill_null(0.0),
    ).with_columns(
        recency_days=_days_between(as_of, "last_order_ts").fill_null(pl.col("tenure_days")),
        days_since_last_visit=_days_between(as_of, "last_click_ts").fill_null(pl.col("tenure_days")),
        frequency=pl.col("completed_orders"),
        avg_order_value=_ratio("monetary", "completed_orders", cap=None),
        discount_share=pl.when((pl.col("monetary") + pl.col("discount_total")) > 0)
        .then(pl.col("discount_total") / (pl.col("monetary") + pl.col("discount_total")))
        .otherwise(0.0),
        cancel_rate=_ratio("cancelled_orders", "all_orders"),
        return_rate=_ratio("returned_orders", "all_orders"),
        view_to_cart=_ratio("add_to_carts", "views"),
        cart_to_checkout=_ratio("checkouts", "add_to_carts"),
        checkout_to_order=_ratio("completed_orders", "checkouts"),
        session_to_order=_ratio("completed_orders", "sessions"),
        negative_review_share=pl.when(pl.col("labelled_reviews") > 0)
        .then(pl.col("negative_reviews") / pl.col("labelled_reviews")),
        top_category=pl.col("top_category").fill_null(""),
        country=pl.col("country").fill_null(""),
        channel=pl.col("channel").fill_null(""),
        as_of=pl.lit(as_of).cast(pl.Datetime("us")),
        features_build=pl.lit(build, dtype=pl.String),
    )
    if missing := [c for c in dictionary.FEATURE_NAMES if c not in frame.columns]:
        if all(f is not None for f in (order_stats, click_stats, customers, review_stats)):  # not an absent input's
            raise FeatureError(f"{', '.join(missing)}: in the feature dictionary (features/dictionary.py) but in no input "
                               "of user_features: add the column to a feature model's SQL, or remove the entry")
        frame = frame.with_columns([_absent(c) for c in missing])
    return frame.select([*dictionary.FEATURE_NAMES, *share_cols])
