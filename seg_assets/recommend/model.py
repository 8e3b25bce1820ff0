"""Top-N products per user: a logistic blend of counts over the baskets, fitted on the shop's own recent past.

Why this and not ALS: measured with a time split on generated shoppers and on the retail extract
(README, bench/RESULTS.md), `implicit`'s ALS and item-item cosine/BM25/TF-IDF all ranked *below* the
most-popular-in-segment baseline on hit rate@10: most buyers have a handful of orders, and what they buy
next is mostly what their kind of shopper buys most. What keeps the baseline's hit rate and adds recall (the
other products a buyer goes on to buy: README, Evaluation) is the baseline plus the user's own signal, weighted
by how much that signal predicted purchases in this shop. So each candidate
(user, product) gets these features, all counts in DuckDB over the baskets (baskets/counts.py: an
order's distinct products, credit notes and cancelled orders excluded) up to the cut-off:

* ``seg_pop``: share of the segment's baskets holding the product (the baseline itself);
* ``shop_pop``: the same over the whole shop;
* ``bought_before``: share of the user's own baskets holding it (replenishment);
* ``also_bought``: mean over the user's products j of P(a shopper bought the product | they bought j), over
  the shoppers' whole histories up to the cut-off ("who bought j also bought": item-item co-occurrence per
  shopper, each product's ``candidates`` strongest neighbours, counted exactly over up to ``max_pair_users``
  shoppers, a hash sample beyond, each with at most ``max_pair_products`` products). Per shopper, not per
  basket: it also finds what buyers of j buy *later* (a machine, then its refills), and on shops where pairs
  sit in one basket it ranked as the per-basket count did (README, Evaluation);
* ``category``: sum over the user's top 3 categories c of share(c | user) x P(product | c), where a
  user's category shares count purchased lines 1 and category clicks ``click_weight`` each;
* ``clicked``: share of the user's product clicks on it (``click_weight``; 0 without clicks);

and the score is ``sigmoid(b + sum_k [f_k > 0] (u_k + v_k ln f_k))``: a logistic regression (scikit-learn)
on "has it" and "log of it" per feature, fitted on the last ``horizon_days`` before the cut-off (features as
of ``cut-off - horizon`` for buyers in the horizon with earlier baskets, label: bought in the horizon).
Where a signal does not predict, its weights go to ~0; too little history to fit gives the baseline's
ranking (the score is ``seg_pop`` itself).
Products the user bought in the last ``exclude_days`` are not recommended, unless they are staples: bought again in
the next basket at least as often as the shop's baskets hold them at all, and at least ``min_staple_repeats`` times
(postage, refills; a sofa is not, nor a long-tail product bought again once). Every product
excluded outright cost hits where shoppers re-buy (README, Rules).

This module builds the candidates, their features and the ranked lists in DuckDB; the weights and the score are
blend.py's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from seg_assets.baskets.counts import MAX_BASKET_SIZE, CountSettings, baskets_sql
from seg_assets.recommend.blend import FEATURES, Weights, fit_weights, reason_sql, score_sql

ORDER = "score DESC, seg_pop DESC, shop_pop DESC, product_id"  # a list's order (ties: the more popular, then the id)
REC_COLUMNS = {"user_id": "VARCHAR", "rank": "INTEGER", "product_id": "VARCHAR", "score": "DOUBLE", "reason": "VARCHAR"}
# Sums of fractions in DECIMAL: exact, so a user's features (and the fitted weights) do not depend on the order in which
# threads add the terms up (in DOUBLE, near-ties swapped ranks between a whole build and one in chunks under load)
EXACT, WEIGHT = "DECIMAL(18, 17)", "DECIMAL(38, 12)"
# Temp tables of :func:`load`, the inputs every function below reads. Inside the model user and product ids are
# integer codes (numbered in the ids' own order, so a tie broken by product id breaks the same way): joins, sorts and
# windows over 10M+ (user, product) rows cost a third less on integers than on the delivered strings (46.7 -> 31 s for
# a full build at 1M users). :func:`decoded` turns them back into the delivered ids.
BASKETS = "_rb_all"  # every basket line with time, category and the owner's segment (-1: none)
USERS, PRODUCTS = "_rb_users", "_rb_products"  # the codes: (name, code) per user and per product
SEGMENTS = "_rb_segments"  # (user_id, segment_id) of the segments given to :func:`load`
# the clicks as the features see them: whose they are (a device's anonymous clicks are its user's once linked), products
# and categories cleaned (staging/stg_clicks.sql)
CLICKS = "staging.stg_clicks"


@dataclass(frozen=True)
class RecSettings:
    top_n: int = 10
    exclude_days: int = 1  # what was just bought; longer windows cost hits where shoppers re-buy (README, measured)
    horizon_days: int = 30
    candidates: int = 10
    click_weight: float = 0.1
    click_days: int = 30
    max_basket_size: int = MAX_BASKET_SIZE
    max_fit_users: int = 5_000
    min_fit_positives: int = 20
    max_pair_users: int = 100_000
    max_pair_products: int = 300  # a shopper with more distinct products (a reseller) counts in no pair (model_tables)
    # a staple on evidence: a long-tail product in 0.46 % of baskets was one on a single repeat (1 of 57 next baskets),
    # 142 of a tester's 220 staples; a rate's significance cannot be the test (postage in every basket never exceeds 1)
    min_staple_repeats: int = 5

    def key(self) -> str:
        """These settings and the code that applies them (this module, blend.py): a change of either rebuilds every
        list (an upgrade kept the old code's lists until new order lines or the rebase: a tester's)."""
        from seg_assets.recommend import blend

        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode())
        for module in (__file__, blend.__file__):
            digest.update(Path(module).read_bytes())
        return digest.hexdigest()[:12]


def load(con, s: RecSettings, segments: str) -> None:
    """The model's inputs, as temp tables with integer codes (see :data:`BASKETS`): the baskets (baskets/counts.py's
    definition: one row per basket and product) with time, category and the owner's segment, the codes of their
    users, of the users of ``segments`` (SQL of user_id, segment_id) and of every product bought or clicked, and the
    segments."""
    cfg = CountSettings(min_support=1.0, min_baskets=1, max_basket_size=s.max_basket_size)
    con.sql(f"CREATE OR REPLACE TEMP TABLE _rb_named AS {baskets_sql(cfg, detail=True)}")
    con.sql(f"CREATE OR REPLACE TEMP TABLE _rb_segments_named AS {segments}")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE {USERS} AS SELECT user_id AS name, row_number() OVER (ORDER BY user_id) AS code
                FROM (SELECT user_id FROM _rb_named UNION SELECT user_id FROM _rb_segments_named)""")
    clicked = f"UNION SELECT product_id FROM {CLICKS} WHERE product_id IS NOT NULL" if _clicks(con) else ""
    con.sql(f"""CREATE OR REPLACE TEMP TABLE {PRODUCTS} AS
                SELECT product_id AS name, row_number() OVER (ORDER BY product_id)::INTEGER AS code
                FROM (SELECT DISTINCT product_id FROM _rb_named {clicked})""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE {SEGMENTS} AS
                SELECT u.code AS user_id, g.segment_id FROM _rb_segments_named g JOIN {USERS} u ON u.name = g.user_id""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE {BASKETS} AS
                SELECT b.order_id, u.code AS user_id, p.code AS product_id, b.order_ts, b.category,
                       coalesce(g.segment_id, -1) AS segment_id FROM _rb_named b
                JOIN {USERS} u ON u.name = b.user_id JOIN {PRODUCTS} p ON p.name = b.product_id
                LEFT JOIN {SEGMENTS} g ON g.user_id = u.code""")
    con.sql("DROP TABLE _rb_named; DROP TABLE _rb_segments_named")


def unload(con) -> None:
    for table in (BASKETS, USERS, PRODUCTS, SEGMENTS):
        con.sql(f"DROP TABLE IF EXISTS {table}")


def decoded(sql: str) -> str:
    """The rows of ``sql`` (with coded user_id and product_id) with the delivered ids."""
    return (f"SELECT r.* REPLACE (u.name AS user_id, p.name AS product_id) FROM ({sql}) r "
            f"LEFT JOIN {USERS} u ON u.code = r.user_id LEFT JOIN {PRODUCTS} p ON p.code = r.product_id")


def sample(rows: str, n: int) -> str:
    """SQL: up to ``n`` of the rows of ``rows`` (with a coded user_id), by a hash of the delivered id: the codes are
    numbered in the ids' order, so one new id sorting first moved every code, and a sample of codes (64 of 100 users)."""
    return (f"SELECT r.* FROM ({rows}) r JOIN {USERS} u ON u.code = r.user_id "
            f"ORDER BY hash(u.name), u.name LIMIT {int(n)}")


def _ts(t: datetime) -> str:
    return f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S.%f}'"


def model_tables(con, s: RecSettings, tables: dict[str, tuple[datetime, bool]]) -> None:
    """What every user's candidates read, from the baskets up to a cut-off, per ``prefix: (cut, temp)`` of
    ``tables`` (:data:`MODEL_TABLES`): popularity per segment (owners outside the segments count in segment -1) and
    in the shop, each product's strongest "also bought" products, and each category's products.

    The "also bought" counts of every cut-off come from one self-join of the shoppers' (product, first bought)
    rows: a pair counts up to a cut-off where one shopper had bought both by then, a ``FILTER`` of the same join (a
    full build needs two cut-offs, the fit's and as-of: a second join of the baskets cost 2.9 s at 1M users). The
    join's rows grow with the square of a shopper's products (five times a per-basket join's on generated shops),
    so beyond ``max_pair_users`` shoppers the counts are those of a hash sample of them (one sample for all cut-offs,
    the lowest hashes among the shoppers by the latest: an earlier cut-off counts the ones of them who had shopped by
    then, a random subset, so no later purchase enters its counts, but a shopper arriving later can take the slot of
    an earlier one; a sample per cut-off made the pair join 1.65x larger at 300,000 users, 5.0 -> 7.1 s), and a shopper with more than
    ``max_pair_products`` distinct products by a cut-off counts in no pair of that cut-off (one reseller of 4,000
    products took 20 s, a reviewer's; as ``max_basket_size`` leaves out wholesale orders; the Germany retail extract's
    largest customer has 261). A shopper's rows are kept up to the last cut-off they are under it at, so the join
    stays bounded."""
    m = int(s.candidates)
    cap = int(s.max_pair_products)
    cuts = {prefix: _ts(cut) for prefix, (cut, _) in tables.items()}
    held = {k: f"count(*) FILTER (WHERE first_ts <= {ts}) OVER (PARTITION BY user_id)" for k, ts in enumerate(cuts.values())}
    counts = ", ".join(f"count(*) FILTER (WHERE greatest(x.first_ts, y.first_ts) <= {ts} AND x.n{k} <= {cap}) AS c{k}"
                       for k, ts in enumerate(cuts.values()))
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _rb_first AS
        WITH f AS (SELECT user_id, product_id, min(order_ts) AS first_ts FROM {BASKETS}
                   WHERE order_ts <= {max(cuts.values())} GROUP BY user_id, product_id),
             n AS (SELECT *, {', '.join(f"{w} AS n{k}" for k, w in held.items())} FROM f)
        SELECT * FROM n SEMI JOIN ({sample("SELECT DISTINCT user_id FROM f", s.max_pair_users)}) USING (user_id)
        WHERE {' OR '.join(f"(n{k} <= {cap} AND first_ts <= {ts})" for k, ts in enumerate(cuts.values()))}""")
    # staples: products bought again in the next basket at least as often as any basket holds them (postage, refills,
    # a shopper's weekly coffee), kept recommendable after a recent purchase where a sofa is not (:func:`candidates`).
    # Per product, (baskets followed by another, of them followed by one holding it again) up to each cut-off: one
    # pass for every cut-off, as the pairs below
    again = ", ".join(f"count(*) FILTER (WHERE o.next_ts <= {ts}) AS n{k}, "
                      f"count(x.order_id) FILTER (WHERE o.next_ts <= {ts}) AS a{k}" for k, ts in enumerate(cuts.values()))
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _rb_again AS
        WITH o AS (SELECT order_id, lead(order_id) OVER w AS next_id, lead(min(order_ts)) OVER w AS next_ts
                   FROM {BASKETS} WHERE order_ts <= {max(cuts.values())} GROUP BY user_id, order_id
                   WINDOW w AS (PARTITION BY user_id ORDER BY min(order_ts), order_id))
        SELECT b.product_id, {again} FROM {BASKETS} b JOIN o USING (order_id)
        LEFT JOIN {BASKETS} x ON x.order_id = o.next_id AND x.product_id = b.product_id
        WHERE o.next_ts <= {max(cuts.values())} GROUP BY b.product_id""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _rb_pairs AS
        SELECT x.product_id AS j, y.product_id AS i, {counts} FROM _rb_first x
        JOIN _rb_first y ON x.user_id = y.user_id AND x.product_id <> y.product_id GROUP BY ALL""")
    for k, (prefix, (cut, temp)) in enumerate(tables.items()):
        kind = "TEMP TABLE" if temp else "TABLE"
        con.sql(f"CREATE OR REPLACE TEMP VIEW _rb AS SELECT * FROM {BASKETS} WHERE order_ts <= {_ts(cut)}")
        con.sql(f"""CREATE OR REPLACE {kind} {prefix}seg_pop AS
            WITH n AS (SELECT segment_id, count(DISTINCT order_id) AS n FROM _rb GROUP BY ALL)
            SELECT segment_id, product_id, count(*) / any_value(n.n) AS seg_pop,
                   row_number() OVER (PARTITION BY segment_id ORDER BY count(*) DESC, product_id) AS pop_rank
            FROM _rb JOIN n USING (segment_id) GROUP BY segment_id, product_id""")
        con.sql(f"""CREATE OR REPLACE {kind} {prefix}shop_pop AS
            SELECT product_id, count(*) / (SELECT count(DISTINCT order_id) FROM _rb) AS shop_pop,
                   row_number() OVER (ORDER BY count(*) DESC, product_id) AS pop_rank FROM _rb GROUP BY product_id""")
        # p in DECIMAL once here, not once per (user, product, neighbour) row where candidates() sums it
        con.sql(f"""CREATE OR REPLACE {kind} {prefix}also AS
            SELECT j, i, p::{EXACT} AS p FROM (
                SELECT x.j, x.i, x.c{k} / n.n AS p FROM _rb_pairs x
                JOIN (SELECT product_id, count(*) AS n FROM _rb_first WHERE first_ts <= {_ts(cut)} AND n{k} <= {cap}
                      GROUP BY ALL) n
                  ON n.product_id = x.j WHERE x.c{k} > 0
                QUALIFY row_number() OVER (PARTITION BY x.j ORDER BY p DESC, x.i) <= {m})""")
        con.sql(f"""CREATE OR REPLACE {kind} {prefix}staple AS SELECT product_id FROM _rb_again
            JOIN {prefix}shop_pop USING (product_id) WHERE a{k} >= {int(s.min_staple_repeats)} AND a{k} / n{k} >= shop_pop""")
        con.sql(f"""CREATE OR REPLACE {kind} {prefix}cat_pop AS
            SELECT * FROM (SELECT category, product_id, count(*) / sum(count(*)) OVER (PARTITION BY category) AS p FROM _rb
                           WHERE category IS NOT NULL GROUP BY category, product_id)
            QUALIFY row_number() OVER (PARTITION BY category ORDER BY p DESC, product_id) <= {m}""")
    con.sql("DROP VIEW _rb; DROP TABLE _rb_pairs; DROP TABLE _rb_first; DROP TABLE _rb_again")


MODEL_TABLES = ("seg_pop", "shop_pop", "also", "cat_pop", "staple")  # what model_tables() writes under its prefixes


def drop_model_tables(con, prefix: str) -> None:
    for name in MODEL_TABLES:
        con.sql(f"DROP TABLE IF EXISTS {prefix}{name}")


def _clicks(con) -> bool:
    from seg_assets.warehouse import table_exists

    return table_exists(con, CLICKS)


def click_counts_sql(cut: datetime, s: RecSettings, users: str | None = None) -> str:
    """(user_id, product_id, category, n): the clicks of the ``click_days`` up to ``cut`` counted per user, product
    and category, coded (of the users of the table ``users``; None: all). One scan of the clicks for both click
    signals of :func:`candidates`. Recent browsing is the intent a list can serve; months-old clicks are most of the
    rows (30 of 180 days are a sixth of them) and say little about what a user buys next."""
    semi = f"SEMI JOIN {users} x ON x.user_id = u.code " if users else ""
    since = f"AND c.event_ts > {_ts(cut - timedelta(days=s.click_days))} " if s.click_days > 0 else ""
    return (f"SELECT u.code AS user_id, p.code AS product_id, c.category, count(*) AS n FROM {CLICKS} c "
            f"JOIN {USERS} u ON u.name = c.user_id {semi}LEFT JOIN {PRODUCTS} p ON p.name = c.product_id "
            f"WHERE c.event_ts <= {_ts(cut)} {since}AND (c.product_id IS NOT NULL OR c.category IS NOT NULL) "
            "GROUP BY ALL")


def just_bought(ts: str, product: str, cut: datetime, s: RecSettings, prefix: str) -> str:
    """SQL true where a purchase at ``ts`` keeps ``product`` off the user's lists (and the baselines'): in the
    ``exclude_days`` before ``cut``, and no staple of ``prefix``'s model tables."""
    if s.exclude_days <= 0:
        return "false"
    return (f"({ts} > {_ts(cut - timedelta(days=s.exclude_days))} "
            f"AND {product} NOT IN (SELECT product_id FROM {prefix}staple))")


def candidates(con, cut: datetime, users: str, s: RecSettings, prefix: str, clicks: str | None = None) -> None:
    """The candidates of the users of the table ``users`` (user_id, segment_id), in two tables.

    ``_cand`` (user_id, segment_id, product_id, <FEATURES>, excluded): the **personal** candidates, what the user
    bought and per user the ``candidates`` strongest of: the neighbours of what they bought, the products of their
    categories, the products they clicked. Each source bounded per user keeps the rows per user, and so the cost of
    scoring and ranking every user, bounded.
    ``_pop`` (segment_id, product_id, seg_pop, shop_pop): the **popular** candidates of each segment, its
    ``candidates`` most popular products and the shop's ``top_n``. A popular product on which a user has no personal
    signal has the same features, and so the same score, for everyone in the segment: it is scored once per
    segment (:func:`rank`), not once per user (20 of 28 rows per user when it was).
    ``clicks``: SQL of :func:`click_counts_sql`'s rows for these users (a full build counts every user's clicks once
    for all its chunks); None counts them here."""
    m, cut_sql, w = int(s.candidates), _ts(cut), float(s.click_weight)
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _ub AS SELECT b.user_id, b.order_id, b.product_id, b.order_ts, b.category
                FROM {BASKETS} b SEMI JOIN {users} u USING (user_id) WHERE b.order_ts <= {cut_sql}""")
    con.sql("""CREATE OR REPLACE TEMP TABLE _hist AS
        SELECT user_id, product_id, count(*) / any_value(n) AS bought_before, max(order_ts) AS last_ts, any_value(h) AS h
        FROM (SELECT *, count(DISTINCT order_id) OVER (PARTITION BY user_id) AS n FROM _ub)
        JOIN (SELECT user_id, count(DISTINCT product_id) AS h FROM _ub GROUP BY ALL) USING (user_id) GROUP BY ALL""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _also AS SELECT * FROM (
                  SELECT h.user_id, t.i AS product_id, sum(t.p)::DOUBLE / any_value(h.h) AS also_bought
                  FROM _hist h JOIN {prefix}also t ON t.j = h.product_id GROUP BY ALL)
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY also_bought DESC, product_id) <= {m}""")
    use_clicks = w > 0 and _clicks(con)
    if use_clicks:
        con.sql(f"CREATE OR REPLACE TEMP TABLE _uclk AS {clicks or click_counts_sql(cut, s, users)}")
    click_cats = (f"UNION ALL SELECT user_id, category, ({w!r} * n)::{WEIGHT} FROM _uclk WHERE category IS NOT NULL"
                  if use_clicks else "")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _cat AS
        WITH e AS (SELECT user_id, category, 1::{WEIGHT} AS w FROM _ub WHERE category IS NOT NULL {click_cats}),
             a AS (SELECT user_id, category, sum(w) / sum(sum(w)) OVER v AS share, row_number() OVER v AS r FROM e
                   GROUP BY user_id, category
                   WINDOW v AS (PARTITION BY user_id ORDER BY sum(w) DESC, category
                                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
             sh AS (SELECT user_id, category, share FROM a WHERE r <= 3)
        SELECT * FROM (SELECT sh.user_id, c.product_id, sum((sh.share * c.p)::{EXACT})::DOUBLE AS category
                       FROM sh JOIN {prefix}cat_pop c USING (category)
                       GROUP BY ALL)
        QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY category DESC, product_id) <= {m}""")
    if use_clicks:
        # one window (the share's total over the same sorted partition) instead of two: one sort of the (user, product) rows
        con.sql(f"""CREATE OR REPLACE TEMP TABLE _clk AS
            SELECT user_id, product_id, clicked FROM (
                SELECT user_id, product_id, sum(n) / sum(sum(n)) OVER w AS clicked, row_number() OVER w AS r
                FROM _uclk WHERE product_id IS NOT NULL GROUP BY user_id, product_id
                WINDOW w AS (PARTITION BY user_id ORDER BY sum(n) DESC, product_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING))
            WHERE r <= {m}""")
        con.sql("DROP TABLE _uclk")
    else:
        con.sql("CREATE OR REPLACE TEMP TABLE _clk AS SELECT user_id, product_id, 0.0::DOUBLE AS clicked FROM _hist WHERE false")
    excluded = just_bought("c.last_ts", "c.product_id", cut, s, prefix)
    # One row per (user, product) from every source, then one aggregation: each source holds a (user, product) once,
    # so max() is its value (0 where it has none); cheaper than a DISTINCT union joined back to every source.
    z = "0.0::DOUBLE"
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _cand AS
        WITH f AS (SELECT user_id, product_id, bought_before AS bb, {z} AS bt, {z} AS ca, {z} AS cl, last_ts FROM _hist
                   UNION ALL SELECT user_id, product_id, {z}, also_bought, {z}, {z}, NULL FROM _also
                   UNION ALL SELECT user_id, product_id, {z}, {z}, category, {z}, NULL FROM _cat
                   UNION ALL SELECT user_id, product_id, {z}, {z}, {z}, clicked, NULL FROM _clk),
             c AS (SELECT user_id, product_id, max(bb) AS bought_before, max(bt) AS also_bought, max(ca) AS category,
                          max(cl) AS clicked, max(last_ts) AS last_ts FROM f GROUP BY user_id, product_id)
        SELECT c.user_id, u.segment_id, c.product_id, coalesce(sp.seg_pop, 0) AS seg_pop, coalesce(p.shop_pop, 0) AS shop_pop,
               c.bought_before, c.also_bought, c.category, c.clicked, coalesce({excluded}, false) AS excluded
        FROM c JOIN {users} u USING (user_id)
        LEFT JOIN {prefix}seg_pop sp ON sp.segment_id = u.segment_id AND sp.product_id = c.product_id
        LEFT JOIN {prefix}shop_pop p ON p.product_id = c.product_id""")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _pop AS
        WITH q AS (SELECT segment_id, product_id FROM {prefix}seg_pop WHERE pop_rank <= {m}
                     AND segment_id IN (SELECT segment_id FROM {users})
                   UNION SELECT g.segment_id, p.product_id FROM (SELECT DISTINCT segment_id FROM {users}) g, {prefix}shop_pop p
                     WHERE p.pop_rank <= {int(s.top_n)})
        SELECT q.segment_id, q.product_id, coalesce(sp.seg_pop, 0) AS seg_pop, coalesce(p.shop_pop, 0) AS shop_pop FROM q
        LEFT JOIN {prefix}seg_pop sp ON sp.segment_id = q.segment_id AND sp.product_id = q.product_id
        LEFT JOIN {prefix}shop_pop p ON p.product_id = q.product_id""")
    con.sql("DROP TABLE _ub; DROP TABLE _hist; DROP TABLE _also; DROP TABLE _cat; DROP TABLE _clk")


def all_candidates(users: str) -> str:
    """SQL of every (user, candidate) row of :func:`candidates`' tables, as the fit reads them: the personal ones and
    each popular product of the user's segment the user has no personal row for (personal features 0)."""
    z = "0.0::DOUBLE"
    return f"""SELECT * FROM _cand UNION ALL
        SELECT u.user_id, u.segment_id, p.product_id, p.seg_pop, p.shop_pop, {z}, {z}, {z}, {z}, false
        FROM {users} u JOIN _pop p ON p.segment_id IS NOT DISTINCT FROM u.segment_id
        ANTI JOIN _cand c ON c.user_id = u.user_id AND c.product_id = p.product_id"""


def drop_candidates(con) -> None:
    con.sql("DROP TABLE _cand; DROP TABLE _pop")


def fit(con, cut: datetime, s: RecSettings, serve: tuple[str, bool] | None = None) -> Weights:
    """Weights from the ``horizon_days`` before ``cut``: features as of ``cut - horizon`` for (a hash sample of
    up to ``max_fit_users`` of) the users who bought in the horizon and before it, labelled by what they bought
    in the horizon (buyers without earlier baskets carry no personal purchase signal to weigh).
    ``serve`` (prefix, temp): also build the model tables as of ``cut`` under that prefix, in the same pass."""
    start = cut - timedelta(days=s.horizon_days)
    buyers = f"""SELECT DISTINCT b.user_id, b.segment_id FROM {BASKETS} b
        WHERE b.order_ts > {_ts(start)} AND b.order_ts <= {_ts(cut)}
        AND b.user_id IN (SELECT user_id FROM {BASKETS} WHERE order_ts <= {_ts(start)})"""
    con.sql(f"CREATE OR REPLACE TEMP TABLE _fit_users AS {sample(buyers, s.max_fit_users)}")
    model_tables(con, s, {"_fit_": (start, True)} | ({serve[0]: (cut, serve[1])} if serve else {}))
    candidates(con, start, "_fit_users", s, "_fit_")
    frame = con.sql(f"""SELECT {', '.join(FEATURES)}, (l.user_id IS NOT NULL)::INTEGER AS y FROM ({all_candidates("_fit_users")}) c
        LEFT JOIN (SELECT DISTINCT user_id, product_id FROM {BASKETS} WHERE order_ts > {_ts(start)} AND order_ts <= {_ts(cut)}) l
        USING (user_id, product_id) WHERE NOT c.excluded ORDER BY c.user_id, c.product_id""").fetchnumpy()  # same rows, same weights
    drop_candidates(con)
    con.sql("DROP TABLE _fit_users")
    drop_model_tables(con, "_fit_")
    x = np.column_stack([frame[f] for f in FEATURES]) if len(frame["y"]) else np.zeros((0, len(FEATURES)))
    return fit_weights(x, np.asarray(frame["y"]), s.min_fit_positives)


RECS = "_recs"  # the temp table rank() writes, the lists its callers read


def rank(con, w: Weights, s: RecSettings, users: str, prefix: str) -> None:
    """``RECS``: each user's ``top_n`` best candidates (excluded ones never), with score and reason.

    The popular candidates (``_pop``) are scored once per segment; a user gets the best of their segment's list less
    the products they have a personal row for (``_cand``: scored with their own features, or excluded), merged with
    their personal rows. The same list as scoring every popular product per user, for a tenth of the rows. A user
    left with fewer than ``top_n`` (their recent purchases took most of a small popular list) is topped up from
    every product of the shop (``prefix``'s popularity tables), as the popularity baselines are."""
    n = int(s.top_n)
    con.sql(f"CREATE OR REPLACE TEMP TABLE _popr AS {_ranked_per_segment(w, '_pop')}")
    # a user's personal rows among their segment's popular products: each pushes the fill one place further down
    con.sql("""CREATE OR REPLACE TEMP TABLE _mine AS SELECT c.user_id, c.product_id FROM _cand c
               SEMI JOIN _pop p ON p.segment_id IS NOT DISTINCT FROM c.segment_id AND p.product_id = c.product_id""")
    columns = (f"user_id, row_number() OVER (PARTITION BY user_id ORDER BY {ORDER})::INTEGER AS rank, product_id, score, "
               "reason, seg_pop, shop_pop")
    con.sql(f"""CREATE OR REPLACE TEMP TABLE {RECS} AS
        WITH k AS (SELECT user_id, count(*) AS k FROM _mine GROUP BY user_id),
             fill AS (SELECT u.user_id, p.product_id, p.seg_pop, p.shop_pop, p.score, p.reason
                      FROM {users} u JOIN _popr p ON p.segment_id IS NOT DISTINCT FROM u.segment_id LEFT JOIN k USING (user_id)
                      ANTI JOIN _mine m ON m.user_id = u.user_id AND m.product_id = p.product_id
                      WHERE p.fill_rank <= {n} + coalesce(k.k, 0)),
             own AS (SELECT user_id, product_id, seg_pop, shop_pop, {score_sql(w)} AS score, {reason_sql(w)} AS reason
                     FROM _cand WHERE NOT excluded)
        SELECT {columns} FROM (SELECT * FROM own UNION ALL SELECT * FROM fill)
        QUALIFY rank <= {n}""")
    con.sql("DROP TABLE _popr; DROP TABLE _mine")
    _top_up(con, w, s, users, prefix)


def _ranked_per_segment(w: Weights, rows: str) -> str:
    """SQL of ``rows`` (segment_id, product_id, seg_pop, shop_pop) scored without any personal signal (the same for
    every user of the segment) and ranked per segment (``fill_rank``)."""
    z = "0.0::DOUBLE"
    return f"""SELECT segment_id, product_id, seg_pop, shop_pop, score, reason,
                      row_number() OVER (PARTITION BY segment_id ORDER BY {ORDER}) AS fill_rank
               FROM (SELECT segment_id, product_id, seg_pop, shop_pop, {score_sql(w)} AS score, {reason_sql(w)} AS reason
                     FROM (SELECT *, {z} AS bought_before, {z} AS also_bought, {z} AS category, {z} AS clicked
                           FROM ({rows})))"""


def _top_up(con, w: Weights, s: RecSettings, users: str, prefix: str) -> None:
    """Users of ``RECS`` with fewer than ``top_n`` rows get the next products of their segment's ranking over the
    whole shop (``prefix``'s popularity tables), below the rows they have, never one of their personal rows
    (``_cand``: listed, or excluded). The products are scored once per segment (few segments, few short users)."""
    n = int(s.top_n)
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _short AS SELECT u.user_id, u.segment_id, count(r.user_id) AS have
                FROM {users} u LEFT JOIN {RECS} r USING (user_id) GROUP BY ALL HAVING count(r.user_id) < {n}""")
    if con.sql("SELECT count(*) FROM _short").fetchall()[0][0]:
        con.sql(f"""CREATE OR REPLACE TEMP TABLE _skip AS SELECT user_id, count(*) AS k FROM (
                        SELECT user_id, product_id FROM _cand SEMI JOIN _short USING (user_id)
                        UNION SELECT user_id, product_id FROM {RECS} SEMI JOIN _short USING (user_id)) GROUP BY ALL""")
        most = con.sql(f"SELECT {n} + coalesce(max(k), 0) FROM _skip").fetchall()[0][0]  # the longest ranking a user needs
        shop = (f"SELECT g.segment_id, p.product_id, coalesce(sp.seg_pop, 0) AS seg_pop, p.shop_pop "
                f"FROM (SELECT DISTINCT segment_id FROM _short) g CROSS JOIN {prefix}shop_pop p LEFT JOIN {prefix}seg_pop sp "
                "ON sp.segment_id IS NOT DISTINCT FROM g.segment_id AND sp.product_id = p.product_id")
        con.sql(f"""CREATE OR REPLACE TEMP TABLE _shopr AS SELECT * FROM ({_ranked_per_segment(w, shop)})
            WHERE fill_rank <= {int(most)}""")
        con.sql(f"""INSERT INTO {RECS}
            SELECT x.user_id, (x.have + row_number() OVER (PARTITION BY x.user_id ORDER BY p.fill_rank))::INTEGER AS rank,
                   p.product_id, p.score, p.reason, p.seg_pop, p.shop_pop
            FROM _short x LEFT JOIN _skip k USING (user_id)
            JOIN _shopr p ON p.segment_id IS NOT DISTINCT FROM x.segment_id AND p.fill_rank <= {n} - x.have + coalesce(k.k, 0)
            ANTI JOIN _cand c ON c.user_id = x.user_id AND c.product_id = p.product_id
            ANTI JOIN {RECS} r ON r.user_id = x.user_id AND r.product_id = p.product_id
            QUALIFY rank <= {n}""")
        con.sql("DROP TABLE _skip; DROP TABLE _shopr")
    con.sql("DROP TABLE _short")
