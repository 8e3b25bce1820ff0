"""Basket rules: the SQL pair rules equal mlxtend's on the public retail extract, and the incremental
counts equal a full count after new lines and segment moves."""

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest

from seg_assets.baskets import counts as C
from seg_assets.baskets import rules as R
from seg_assets.ingest import contract as CONTRACT

RETAIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_germany.csv"
CFG = R.RuleSettings(C.CountSettings(min_support=0.02, min_baskets=5, max_basket_size=1000), 0.0, 0.0)


def _warehouse(lines: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    """A warehouse with raw.order_items (as the example sources file maps the CSV) and user_segments."""
    con = duckdb.connect()
    for schema in ("raw", "meta", "analytics"):
        con.sql(f"CREATE SCHEMA {schema}")
    con.sql("CREATE TABLE raw.order_items AS SELECT * FROM lines")
    con.sql(CONTRACT.TABLES["orders"].ddl())  # empty: every order delivered as lines only
    con.sql("CREATE TABLE analytics.user_segments AS SELECT DISTINCT user_id, (hash(user_id) % 3)::INTEGER AS segment_id, "
            "'seg ' || (hash(user_id) % 3) AS segment_name FROM raw.order_items")
    return con


@pytest.fixture(scope="module")
def retail() -> pl.DataFrame:
    assert RETAIL.exists(), f"{RETAIL} is missing: the public test data lives in ../shared/data beside the repository"
    raw = pl.read_csv(RETAIL, infer_schema=False, encoding="utf8-lossy")
    raw = raw.rename({raw.columns[0]: "InvoiceNo"})  # the export starts with a byte-order mark
    return raw.filter(pl.col("CustomerID").is_not_null()).with_row_index("_row").select(
        order_id=pl.col("InvoiceNo"), user_id=pl.col("CustomerID"), product_id=pl.col("StockCode"),
        description=pl.col("Description"), order_ts=pl.col("InvoiceDate"),
        status=pl.when(pl.col("InvoiceNo").str.starts_with("C")).then(pl.lit("returned")).otherwise(pl.lit("completed")),
        _file_id=(pl.col("_row") // 3000 + 1).cast(pl.Int64))  # four "files", for the incremental test


def _rules(con) -> pl.DataFrame:
    R.derive_rules(con, CFG, "SELECT segment_id, any_value(segment_name) AS segment_name FROM analytics.user_segments GROUP BY 1")
    return con.sql("SELECT * FROM _rules").pl()


def mlxtend_pair_rules(baskets: list[set[str]], min_support: float) -> pd.DataFrame:
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    itemsets = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=2)
    rules = association_rules(itemsets, num_itemsets=len(baskets), metric="confidence", min_threshold=0.0)
    return pd.DataFrame({"antecedent": [next(iter(a)) for a in rules["antecedents"]],
                         "consequent": [next(iter(c)) for c in rules["consequents"]],
                         "support": rules["support"], "confidence": rules["confidence"], "lift": rules["lift"]})


def test_pair_rules_equal_mlxtend_on_the_retail_extract(retail):
    con = _warehouse(retail)
    C.update_counts(con, CFG.counts)
    mine = _rules(con).filter(pl.col("segment_id").is_null())
    completed = retail.filter(pl.col("status") == "completed")
    baskets = [set(g) for g in completed.group_by("order_id").agg(pl.col("product_id").unique())["product_id"].to_list()]
    # support >= 0.02 on 457 baskets is >= 9.14 baskets, so >= 10; mlxtend's threshold is the same fraction
    theirs = mlxtend_pair_rules(baskets, CFG.counts.min_support)
    assert len(baskets) == 457 and len(theirs) > 50
    joined = pl.from_pandas(theirs).join(mine, on=["antecedent", "consequent"], how="full", suffix="_sql")
    assert joined.height == len(theirs) == mine.height, "the same rules"
    for col in ("support", "confidence", "lift"):
        assert (joined[col] - joined[f"{col}_sql"]).abs().max() < 1e-12, col
    assert (mine["baskets"] == (mine["support"] * 457).round()).all()
    assert mine.filter(pl.col("support") >= 0.05).height >= 5


def test_segment_rules_equal_mlxtend_on_the_segments_baskets(retail):
    con = _warehouse(retail)
    C.update_counts(con, CFG.counts)
    mine = _rules(con)
    owners = con.sql("SELECT user_id, segment_id FROM analytics.user_segments").pl()
    completed = retail.filter(pl.col("status") == "completed").join(owners, on="user_id")
    for sid in (0, 1, 2):
        part = completed.filter(pl.col("segment_id") == sid)
        baskets = [set(g) for g in part.group_by("order_id").agg(pl.col("product_id").unique())["product_id"].to_list()]
        threshold = C.threshold(len(baskets), CFG.counts.min_support, CFG.counts.min_baskets)
        theirs = mlxtend_pair_rules(baskets, (threshold - 0.5) / len(baskets))
        seg = mine.filter(pl.col("segment_id") == sid)
        joined = pl.from_pandas(theirs).join(seg, on=["antecedent", "consequent"], how="full", suffix="_sql")
        assert joined.height == len(theirs) == seg.height > 0, sid
        assert (joined["lift"] - joined["lift_sql"]).abs().max() < 1e-12


def _full_rules(con) -> pl.DataFrame:
    """The rules of a full count of the same lines, order rows and segments, in a warehouse of their own."""
    lines = con.sql("SELECT * FROM raw.order_items").pl()
    fresh = _warehouse(lines)
    fresh.register("orders_frame", con.sql("SELECT * FROM raw.orders").pl())
    fresh.sql("INSERT INTO raw.orders SELECT * FROM orders_frame")
    segments = con.sql("SELECT * FROM analytics.user_segments").pl()
    fresh.register("segments_frame", segments)
    fresh.sql("CREATE OR REPLACE TABLE analytics.user_segments AS SELECT * FROM segments_frame")
    assert C.update_counts(fresh, CFG.counts).mode == "full"
    return _rules(fresh).sort(pl.all())


def test_incremental_counts_equal_a_full_count(retail):
    """New files arrive, then users move between segments (counted with the next new lines, not before): the rules
    equal those of a full count each time."""
    con = _warehouse(retail)
    con.sql("CREATE TABLE _all AS SELECT * FROM raw.order_items; DELETE FROM raw.order_items WHERE _file_id > 3")
    assert C.update_counts(con, CFG.counts).mode == "full"
    assert C.update_counts(con, CFG.counts).mode == "unchanged"
    later = "_file_id > 3 AND hash(order_id) % 2 = 1"  # the last file's other half arrives after the moves
    con.sql(f"INSERT INTO raw.order_items SELECT * FROM _all WHERE _file_id > 3 AND NOT ({later})")
    step = C.update_counts(con, CFG.counts)
    assert step.mode == "incremental" and step.dirty_users > 0, step
    assert _rules(con).sort(pl.all()).equals(_full_rules(con))
    # the counts keep their type (sum() of the deltas is HUGEINT: the BI copy's counts turned into decimals)
    types = con.sql("SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = 'meta' "
                    "AND table_name LIKE 'basket_%' AND column_name = 'baskets'").fetchall()
    assert types == [("BIGINT",)], types
    counted = _rules(con).sort(pl.all())
    con.sql("UPDATE analytics.user_segments SET segment_id = (segment_id + 1) % 3 WHERE hash(user_id) % 5 = 0")
    step = C.update_counts(con, CFG.counts)  # moves without new order lines wait for the next ones
    assert step.mode == "unchanged" and step.reason == C.DEFERRED and _rules(con).sort(pl.all()).equals(counted), step
    assert not _rules(con).sort(pl.all()).equals(_full_rules(con))
    con.sql(f"INSERT INTO raw.order_items SELECT * REPLACE (5 AS _file_id) FROM _all WHERE {later}")
    step = C.update_counts(con, CFG.counts)
    moved = con.sql("SELECT count(*) FROM analytics.user_segments WHERE hash(user_id) % 5 = 0 AND user_id IN "
                    "(SELECT user_id FROM raw.order_items)").fetchall()[0][0]
    assert step.mode == "incremental" and step.dirty_users >= moved > 0, step
    assert _rules(con).sort(pl.all()).equals(_full_rules(con))
    assert C.update_counts(con, CFG.counts).mode == "unchanged"


def test_a_cancelled_order_row_is_no_basket_and_counts_follow_it(retail):
    """Shopify's export carries a cancellation on the order's first line only, so the lines are mapped 'completed' and
    the order row says 'cancelled'. Arriving in a later file than its lines, it takes the basket out of the counts
    (incrementally, equal to a full count). A refund ('returned' order row) keeps the basket, and order rows that
    cancel nothing change no count."""
    con = _warehouse(retail)
    assert C.update_counts(con, CFG.counts).mode == "full"
    before = con.sql("SELECT baskets FROM meta.basket_scopes WHERE scope = -1").fetchall()[0][0]
    top = con.sql("""SELECT order_id, min(user_id) FROM raw.order_items WHERE status = 'completed' GROUP BY 1
                     ORDER BY count(*) DESC, 1 LIMIT 40""").fetchall()  # orders that hold frequent pairs
    for n, (order_id, user_id) in enumerate(top[20:]):
        con.execute("INSERT INTO raw.orders (order_id, user_id, order_ts, amount, items, discount, status, _file_id, _row) "
                    "VALUES (?, ?, TIMESTAMP '2011-01-01', 1, 1, 0, ?, 8, ?)", [order_id, user_id, ("completed", "returned")[n % 2], n])
    assert C.update_counts(con, CFG.counts).mode == "unchanged"
    for n, (order_id, user_id) in enumerate(top[:20]):
        status = "cancelled"
        con.execute("INSERT INTO raw.orders (order_id, user_id, order_ts, amount, items, discount, status, _file_id, _row) "
                    "VALUES (?, ?, TIMESTAMP '2011-01-01', 1, 1, 0, ?, 9, ?)", [order_id, user_id, status, n])
    step = C.update_counts(con, CFG.counts)
    assert step.mode == "incremental" and step.dirty_users > 0, step
    assert con.sql("SELECT baskets FROM meta.basket_scopes WHERE scope = -1").fetchall()[0][0] == before - 20
    assert _rules(con).sort(pl.all()).equals(_full_rules(con))
    baskets = {r[0] for r in con.sql(f"SELECT DISTINCT order_id FROM ({C.baskets_sql(CFG.counts)})").fetchall()}
    assert {o for o, _ in top[:20]}.isdisjoint(baskets) and {o for o, _ in top[20:]} <= baskets


def test_counts_as_of_a_past_date_leave_later_orders_out(retail):
    """A refresh as of a past date (a backfill, a time split) counted every order delivered, also those placed after
    it: the profiles' rules read the future. Orders after the as-of are left out, and counted again when it moves on."""
    from datetime import datetime

    lines = retail.with_columns(pl.col("order_ts").str.strptime(pl.Datetime, "%m/%d/%Y %H:%M"))
    cut = datetime(2011, 9, 1)
    con = _warehouse(lines)
    step = C.update_counts(con, CFG.counts, as_of=cut)
    assert step.mode == "full" and "as of 2011-09-01" in step.reason, step
    early = _warehouse(lines.filter(pl.col("order_ts") <= cut))
    early.register("segments_frame", con.sql("SELECT * FROM analytics.user_segments").pl())
    early.sql("CREATE OR REPLACE TABLE analytics.user_segments AS SELECT * FROM segments_frame")
    C.update_counts(early, CFG.counts)
    counts = pl.exclude("antecedent_description", "consequent_description")  # labels: from every line of the product
    assert _rules(con).select(counts).sort(pl.all()).equals(_rules(early).select(counts).sort(pl.all()))
    assert con.sql("SELECT baskets FROM meta.basket_scopes WHERE scope = -1").fetchall() == early.sql(
        "SELECT baskets FROM meta.basket_scopes WHERE scope = -1").fetchall()
    assert C.update_counts(con, CFG.counts, as_of=cut).mode == "unchanged"
    latest = con.sql("SELECT max(order_ts) FROM raw.order_items").fetchall()[0][0]
    step = C.update_counts(con, CFG.counts, as_of=latest)  # the as-of moved on: every order counts again
    assert step.mode == "full" and "every order counted" in step.reason, step
    assert _rules(con).sort(pl.all()).equals(_full_rules(con))


def test_a_basket_belongs_to_its_order_rows_user(retail):
    """Shopify's line rows carry no customer id: a shop keys its orders by it (the README advises the shop's id) and its
    lines by the e-mail. The basket is the order's, and the order is its order row's user's (as in staging.stg_orders):
    the baskets of every account customer had belonged to an e-mail hash in no segment (a tester's shop: 4,733 of 7,916
    owners; 4,782 customers' recommendations ignored what they bought). Counted in full, and incrementally when the
    order rows arrive after their lines, equal to a full count."""
    con = _warehouse(retail)
    assert C.update_counts(con, CFG.counts).mode == "full"
    # every order of a third of the users arrives as an order row keyed by another id ('acct-' + the lines' user)
    con.sql("""INSERT INTO raw.orders (order_id, user_id, order_ts, amount, items, discount, status, _file_id, _row)
               SELECT order_id, 'acct-' || min(user_id), TIMESTAMP '2011-01-01', 1, 1, 0, 'completed', 9, row_number() OVER ()
               FROM raw.order_items GROUP BY order_id HAVING hash(min(user_id)) % 3 = 0""")
    con.sql("""CREATE OR REPLACE TABLE analytics.user_segments AS
               SELECT DISTINCT coalesce(o.user_id, i.user_id) AS user_id, (hash(i.user_id) % 3)::INTEGER AS segment_id,
                      'seg ' || (hash(i.user_id) % 3) AS segment_name
               FROM raw.order_items i LEFT JOIN raw.orders o USING (order_id)""")
    step = C.update_counts(con, CFG.counts)  # no new lines: the order rows alone move the baskets
    assert step.mode == "incremental" and step.dirty_users > 0, step
    owners = con.sql("SELECT DISTINCT user_id FROM meta.basket_members EXCEPT SELECT user_id FROM analytics.user_segments")
    assert owners.fetchall() == []
    moved = con.sql("SELECT count(*) FROM meta.basket_members WHERE user_id LIKE 'acct-%' AND segment_id IS NOT NULL")
    assert moved.fetchall()[0][0] > 0
    assert _rules(con).sort(pl.all()).equals(_full_rules(con))
    owner = con.sql(f"SELECT DISTINCT b.order_id, b.user_id FROM ({C.baskets_sql(CFG.counts)}) b JOIN raw.orders o "
                    "USING (order_id) WHERE b.user_id <> o.user_id")
    assert owner.fetchall() == []
    assert C.update_counts(con, CFG.counts).mode == "unchanged"
