"""The per-user feature maths, on a small hand-checked case."""

from datetime import datetime

import polars as pl
import pytest

from seg_assets.features.dictionary import FEATURE_NAMES, FEATURES, MODEL_FEATURES
from seg_assets.features.user_features import build_user_features, category_slug

AS_OF = datetime(2026, 3, 31)


@pytest.fixture()
def inputs():
    orders = pl.DataFrame({
        "user_id": ["a", "b"], "completed_orders": [2, 0], "all_orders": [3, 1], "cancelled_orders": [1, 1],
        "returned_orders": [0, 0], "monetary": [100.0, 0.0], "discount_total": [25.0, 0.0], "orders_30d": [1, 0],
        "orders_90d": [2, 0], "last_order_ts": [datetime(2026, 3, 21), None],
        "first_order_ts": [datetime(2026, 1, 1), datetime(2026, 2, 1)],
    })
    clicks = pl.DataFrame({
        "user_id": ["a", "c"], "sessions": [4, 2], "views": [10, 5], "searches": [2, 0], "add_to_carts": [4, 0],
        "checkouts": [2, 0], "first_click_ts": [datetime(2025, 12, 31), datetime(2026, 3, 30)],
        "last_click_ts": [datetime(2026, 3, 30), datetime(2026, 3, 30, 12)],
    })
    categories = pl.DataFrame({"user_id": ["a", "a", "c"], "category": ["Home & Garden", "books", "books"], "events": [3, 1, 2]})
    customers = pl.DataFrame({
        "user_id": ["d", "a", "late"], "signup_ts": [datetime(2026, 3, 1), datetime(2025, 12, 1), datetime(2026, 4, 2)],
        "country": ["DE", None, "FR"], "channel": [None, "ads", None],
    })
    return orders, clicks, categories, customers


def row(frame, user):
    return frame.filter(pl.col("user_id") == user).row(0, named=True)


def test_hand_checked_user(inputs):
    f = build_user_features(*inputs, as_of=AS_OF)
    a = row(f, "a")
    assert a["recency_days"] == 10.0 and a["frequency"] == 2 and a["monetary"] == 100.0
    assert a["avg_order_value"] == 50.0
    assert a["tenure_days"] == 120.0  # from signup, not first activity
    assert a["discount_share"] == pytest.approx(25 / 125)
    assert a["cancel_rate"] == pytest.approx(1 / 3) and a["return_rate"] == 0.0
    assert (a["view_to_cart"], a["cart_to_checkout"], a["checkout_to_order"], a["session_to_order"]) == (0.4, 0.5, 1.0, 0.5)
    assert a["days_since_last_visit"] == 1.0
    assert a["top_category"] == "Home & Garden" and a["top_category_share"] == 0.75 and a["category_count"] == 2
    assert a["cat_share_home_garden"] == 0.75 and a["cat_share_books"] == 0.25 and a["cat_share_other"] == 0.0
    assert a["channel"] == "ads" and a["country"] == ""


def test_users_without_activity_get_zeros_and_tenure_based_recency(inputs):
    f = build_user_features(*inputs, as_of=AS_OF)
    b, d = row(f, "b"), row(f, "d")
    assert b["frequency"] == 0 and b["sessions"] == 0 and b["recency_days"] == b["tenure_days"] == 58.0
    assert d["tenure_days"] == 30.0 and d["recency_days"] == 30.0 and d["country"] == "DE"
    assert "late" not in f["user_id"].to_list()  # signed up after as-of


def test_tenure_counts_from_the_first_activity_when_the_user_bought_before_signing_up(inputs):
    """A guest who bought in January and made an account in March was 'new' with a last order before their tenure
    began (a tester's: tenure 11 days, recency 16)."""
    orders, clicks, categories, customers = inputs
    customers = customers.with_columns(pl.when(pl.col("user_id") == "a").then(datetime(2026, 3, 25))
                                       .otherwise(pl.col("signup_ts")).alias("signup_ts"))
    a = row(build_user_features(orders, clicks, categories, customers, as_of=AS_OF), "a")
    assert a["tenure_days"] == 90.0 and a["recency_days"] == 10.0  # from the first click, 2025-12-31


def test_days_keep_the_fraction_of_a_second(inputs):
    """Times to the microsecond (GA4's event_timestamp, an as-of taken from them) lost up to a second of recency."""
    orders, clicks, categories, customers = inputs
    as_of = datetime(2026, 3, 31, 0, 0, 0, 831161)
    orders = orders.with_columns(pl.when(pl.col("user_id") == "a").then(datetime(2026, 3, 21, 0, 0, 0, 500000))
                                 .otherwise(pl.col("last_order_ts")).alias("last_order_ts"))
    a = row(build_user_features(orders, clicks, categories, customers, as_of=as_of), "a")
    assert a["recency_days"] == pytest.approx(10 + 0.331161 / 86_400, abs=1e-12)
    assert a["days_since_last_visit"] == pytest.approx(1 + 0.831161 / 86_400, abs=1e-12)


def test_a_user_built_alone_has_the_values_of_a_build_of_everyone(inputs):
    """An incremental refresh recomputes a few users, often one: polars divided a one-row column by 86400 truly and a
    longer one as a product with the reciprocal, so recency and tenure differed in the last digit from a full build
    (an identity test of h2, session 35: 10.583333333333334 days live, ...332 cold)."""
    orders, clicks, categories, customers = inputs
    as_of = datetime(2026, 4, 1, 0, 0, 0)
    clicks = clicks.with_columns(pl.lit(datetime(2026, 3, 21, 10)).alias("last_click_ts"))  # 10 days 14 hours before
    everyone = build_user_features(orders, clicks, categories, customers, as_of=as_of)
    for user in ("a", "c"):
        alone = build_user_features(*(f.filter(pl.col("user_id") == user) for f in (orders, clicks, categories, customers)),
                                    as_of=as_of, categories=["Home & Garden", "books"])
        assert alone.height == 1
        assert alone.row(0, named=True) == row(everyone, user), user


def test_every_user_once_no_nulls_in_model_features(inputs):
    f = build_user_features(*inputs, as_of=AS_OF)
    assert sorted(f["user_id"].to_list()) == ["a", "b", "c", "d"]
    assert f.select(pl.col(list(MODEL_FEATURES)).null_count()).sum_horizontal().item() == 0
    assert f.columns[: len(FEATURE_NAMES)] == list(FEATURE_NAMES)
    for feat in FEATURES:
        if feat.dtype not in ("int", "float"):
            continue
        lo, hi = f[feat.name].min(), f[feat.name].max()
        if lo is None:  # a nullable feature without data (no review here): null, never out of range
            assert feat.name not in MODEL_FEATURES and f[feat.name].null_count() == f.height
            continue
        if feat.min_value is not None:
            assert lo >= feat.min_value
        if feat.max_value is not None:
            assert hi <= feat.max_value


def test_orders_only_data(inputs):
    orders = inputs[0]
    f = build_user_features(orders, None, None, None, as_of=AS_OF)
    assert f.height == 2 and f["sessions"].sum() == 0 and f["cat_share_other"].sum() == 0


def test_category_slug():
    assert category_slug("Home & Garden") == "home_garden" and category_slug("  ") == "unknown"


def test_categories_whose_names_read_alike_keep_their_own_share_columns(inputs):
    """'@home' and 'Home', or a delivered category called 'Other', must not add up in one column (a tester's find)."""
    activity = pl.DataFrame({"user_id": ["a", "a", "a", "a"], "category": ["Home", "@home", "Other", "toys"],
                             "events": [4, 3, 2, 1]})
    f = build_user_features(inputs[0], None, activity, None, as_of=AS_OF, top_categories=3)
    shares = {c: v for c, v in row(f, "a").items() if c.startswith("cat_share_")}
    assert sorted(shares.values()) == [0.1, 0.2, 0.3, 0.4]  # four columns, nothing merged
    assert shares["cat_share_home"] == 0.4 and shares["cat_share_other"] == 0.1  # the first name keeps the plain slug
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_column_named_in_the_dictionary_passes_through_as_a_feature(inputs, monkeypatch):
    """A new feature is a line of SQL and a dictionary entry: ``orders_7d`` in the order stats reaches the rows (0 for
    a user without orders, and for everyone when no orders were delivered), and is no longer an unread column."""
    from seg_assets.features import dictionary
    from seg_assets.features.user_features import unread_columns

    feature = dictionary.Feature("orders_7d", "int", "Completed orders in the 7 days up to as-of.", 0)
    monkeypatch.setattr(dictionary, "BY_NAME", dictionary.BY_NAME | {"orders_7d": feature})
    monkeypatch.setattr(dictionary, "FEATURE_NAMES", (*dictionary.FEATURE_NAMES, "orders_7d"))
    orders, clicks, categories, customers = inputs
    orders = orders.with_columns(orders_7d=pl.Series([1, 0], dtype=pl.Int32), max_amount=pl.Series([9.0, 0.0]))
    f = build_user_features(orders, clicks, categories, customers, as_of=AS_OF)
    assert f.schema["orders_7d"] == pl.Int64
    assert dict(f.select("user_id", "orders_7d").iter_rows()) == {"a": 1, "b": 0, "c": 0, "d": 0}
    assert "max_amount" not in f.columns
    assert unread_columns({"order_stats": orders, "click_stats": None}) == {"features.user_order_stats": ["max_amount"]}
    without_orders = build_user_features(None, clicks, categories, customers, as_of=AS_OF)
    assert without_orders["orders_7d"].to_list() == [0] * without_orders.height


def test_the_derived_list_names_every_feature_build_user_features_computes(inputs):
    """A computed feature left out of DERIVED would let a model's column of its name pass through (and replace it or
    be replaced, unsaid): every output column is an input's declared column, a derived one or a share column."""
    from seg_assets.features.user_features import _DECLARED, DERIVED

    f = build_user_features(*inputs, as_of=AS_OF)
    made = {c for c in f.columns if not c.startswith("cat_share_")} - _DECLARED
    assert made == set(DERIVED), made ^ set(DERIVED)


def test_a_model_column_named_like_a_computed_feature_or_another_inputs_is_warned_not_passed(inputs):
    """A reviewer's avg_order_value in the order stats silently replaced the computed one, and a shipping `country`
    there replaced the customer record's: such names do not pass through; they are unread, and the advice says to
    rename them."""
    from seg_assets.features.user_features import unread_advice, unread_columns

    orders, clicks, categories, customers = inputs
    mixed = orders.with_columns(avg_order_value=pl.lit(1.0), country=pl.lit("FR"))
    f = build_user_features(mixed, clicks, categories, customers, as_of=AS_OF)
    expected = build_user_features(orders, clicks, categories, customers, as_of=AS_OF)
    assert f.equals(expected)
    unread = unread_columns({"order_stats": mixed})
    assert unread == {"features.user_order_stats": ["avg_order_value", "country"]}, unread
    advice = unread_advice("features.user_order_stats", unread["features.user_order_stats"])
    assert advice.startswith("avg_order_value, country: the name of a feature user_features computes") and "rename" in advice
    assert "per-user model" in unread_advice("features.user_category_activity", ["orders_7d"])


def test_a_passed_column_of_a_type_its_entry_cannot_be_is_one_line(inputs, monkeypatch):
    """Text declared "int" in the dictionary failed the step with polars' traceback, retried twice (a reviewer's): it
    is a FeatureError naming the table, the column and both types, before any value is cast."""
    from seg_assets.features import dictionary
    from seg_assets.features.user_features import FeatureError

    feature = dictionary.Feature("last_status", "int", "The last order's status.", 0)
    monkeypatch.setattr(dictionary, "BY_NAME", dictionary.BY_NAME | {"last_status": feature})
    monkeypatch.setattr(dictionary, "FEATURE_NAMES", (*dictionary.FEATURE_NAMES, "last_status"))
    orders, clicks, categories, customers = inputs
    with pytest.raises(FeatureError, match=r"features.user_order_stats.last_status is String, but its entry .* says 'int'"):
        build_user_features(orders.with_columns(last_status=pl.lit("completed")), clicks, categories, customers, as_of=AS_OF)
    empty = pl.DataFrame(schema={"user_id": pl.String, "last_status": pl.String})  # Spark's check on the driver: no rows
    with pytest.raises(FeatureError, match="last_status is String"):
        build_user_features(empty, None, None, None, as_of=AS_OF)


def test_spark_reads_the_same_passed_through_columns(inputs, monkeypatch):
    """Spark's wide row per user carries a dictionary column of an input's view, and its batches give it the value
    the DuckDB path gives (test_spark_engine compares every feature of both engines)."""
    from seg_assets.features import dictionary
    from seg_assets.spark.features import _read_columns, _wide_sql, features_of_batch

    feature = dictionary.Feature("orders_7d", "int", "Completed orders in the 7 days up to as-of.", 0)
    monkeypatch.setattr(dictionary, "BY_NAME", dictionary.BY_NAME | {"orders_7d": feature})
    monkeypatch.setattr(dictionary, "FEATURE_NAMES", (*dictionary.FEATURE_NAMES, "orders_7d"))
    assert _read_columns("order_stats", ["user_id", "orders_7d", "max_amount"])[-1] == "orders_7d"
    views = {"order_stats": "o", "click_stats": "c", "customers": "u", "review_stats": "r"}
    present = {name: ["user_id", "orders_7d"] if name == "order_stats" else ["user_id"] for name in views}
    assert "order_stats.orders_7d AS order_stats__orders_7d" in _wide_sql(views, "a", present)
    wide = pl.DataFrame({"user_id": ["a", "b"], "order_stats__user_id": ["a", None], "order_stats__orders_7d": [3, None],
                         "click_stats__user_id": [None, "b"], "customers__user_id": [None, None],
                         "review_stats__user_id": [None, None], "activity": [None, None]},
                        schema_overrides={"activity": pl.List(pl.Struct({"category": pl.String, "events": pl.Int64}))})
    out = features_of_batch(wide, AS_OF, 10, [])
    assert dict(out.select("user_id", "orders_7d").iter_rows()) == {"a": 3, "b": 0}


def test_a_dictionary_column_no_input_delivers_is_one_line_not_zeros(inputs, monkeypatch):
    """A dictionary entry whose SQL line was never written was 0 for every user, unsaid (a reviewer's): with every
    input there, it is an error naming the column; an absent input (a shop without clicks) still means none of it.
    A customer attribute passed through stays empty for a user without a customer record (no count to fill)."""
    from seg_assets.features import dictionary
    from seg_assets.features.user_features import FeatureError, unread_columns

    entries = {"orders_7d": dictionary.Feature("orders_7d", "int", "Completed orders in 7 days.", 0),
               "age": dictionary.Feature("age", "int", "Age from the customer record.", 0)}
    monkeypatch.setattr(dictionary, "BY_NAME", dictionary.BY_NAME | entries)
    monkeypatch.setattr(dictionary, "FEATURE_NAMES", (*dictionary.FEATURE_NAMES, *entries))
    orders, clicks, categories, customers = inputs
    reviews = pl.DataFrame({"user_id": ["a"], "reviews": [1]})
    customers = customers.with_columns(age=pl.Series([30, 40, 50]))
    with pytest.raises(FeatureError, match="orders_7d: in the feature dictionary"):
        build_user_features(orders, clicks, categories, customers, as_of=AS_OF, review_stats=reviews)
    f = build_user_features(orders.with_columns(orders_7d=pl.lit(1)), clicks, categories, customers, as_of=AS_OF,
                            review_stats=reviews)
    assert dict(f.select("user_id", "age").iter_rows()) == {"a": 40, "b": None, "c": None, "d": 30}
    without_clicks = build_user_features(orders, None, categories, customers, as_of=AS_OF)
    assert without_clicks["orders_7d"].to_list() == [0] * without_clicks.height
    # a column of the long per-category table is not passed through: it stays a warning
    assert unread_columns({"category_activity": categories.with_columns(orders_7d=pl.lit(1))}) == {
        "features.user_category_activity": ["orders_7d"]}
