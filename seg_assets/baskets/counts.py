"""Exact basket counts in DuckDB, kept up to date incrementally where the counts allow.

A **basket** is an order: the distinct product ids of its ``completed`` lines in ``raw.order_items``
(credit notes are ``returned`` orders and cancelled orders have no completed line, so neither is a
basket), and no order whose own row in ``raw.orders`` says ``cancelled`` (Shopify's export carries the
cancellation on the order's first line only, so its later lines are mapped ``completed``). An order row saying
``returned`` (a refund, maybe partial) keeps the basket: its products were bought together; its owner is the order's user
as ``staging.stg_orders`` has it: the user of its order row in ``raw.orders`` when there is one (a Shopify shop keys its
orders by the customer id its line rows do not carry: the baskets of every account customer belonged to an e-mail hash
that is no user, in no segment, and their recommendations ignored what they bought), else ``min(user_id)`` of its
completed lines (``stg_orders``: of all its lines; the two differ only for an order whose lines name two users, which
ingestion warns of). Baskets
with more than ``max_basket_size`` distinct products are left out of every scope (numerator and
denominator). A **scope** is the whole shop (``SHOP``) or a segment: the baskets whose owner is in that
segment *now* (``analytics.user_segments``), whenever the order was placed up to the segments' as-of (a refresh
as of a past date leaves later orders out, and counts every scope in full while it does).

Counts per scope, in ``meta``: baskets (``basket_scopes``), baskets per product (``basket_items``, every
product) and baskets per product pair (``basket_pairs``) for the pairs of *tracked* products only: those
with at least ``margin x threshold`` baskets when the scope was last counted in full. A pair can reach
the threshold only if both its products do (support is anti-monotone), so pruning to frequent products
is exact, and a million baskets of three lines cost a pair join over the few frequent products only.

Incremental: the **dirty users** are the owners with lines that arrived after the watermark (the ledger
file id the counts were made at, over order lines and cancelled order rows), the owners of orders whose
cancelled order row arrived since, and the owners whose segment changed since
(``basket_members`` holds the segment each owner was counted in). Their orders' old contribution (lines
up to the watermark, old segment) is subtracted and the new one (all lines, current segment) added, to
the items of every scope and to the pairs of tracked products (rows up to the watermark as they were counted:
after a replacement of order rows or lines, keep: latest, everything is counted again). That stays exact while
every product at or above a scope's threshold is tracked; a scope where one is not is counted again in full (the whole
shop: everything).

Without new order lines or cancellations nothing else is read and nothing is written: a buyer whose segment moved (with new
clicks) is counted in the new segment with the next delivery with order lines or the daily rebase. Comparing the
segments of every buyer and moving the movers' orders cost a clicks-only refresh 1.9 CPU s at 1M users, for counts
that move by a fraction of a percent. A newly promoted segment model moves many buyers at once (a tester's: a third
of a segment's baskets counted in the wrong one, a new segment without rules): its movers are counted at once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime

from seg_assets.ingest.contract import LEDGER_TABLE as LEDGER
from seg_assets.ingest.contract import without_email_sql
from seg_assets.segmentation.registry import in_service_version
from seg_assets.warehouse import table_exists

SHOP = -1  # the whole shop's scope id in the count tables (segment_id NULL in analytics.basket_rules)
SEGMENTS = "analytics.user_segments"
DEFERRED = ("no new order lines or cancellations: nothing counted; buyers whose segment moved since are counted in their new segment "
            "with the next delivery with order lines or the daily rebase")

DDL = (
    "CREATE TABLE IF NOT EXISTS meta.basket_state (watermark BIGINT, counts_key VARCHAR, mode VARCHAR, "
    "dirty_users BIGINT, rescoped VARCHAR, built_at TIMESTAMP)",
    "ALTER TABLE meta.basket_state ADD COLUMN IF NOT EXISTS until TIMESTAMP",  # the as-of of counts that left orders out
    "ALTER TABLE meta.basket_state ADD COLUMN IF NOT EXISTS segment_model VARCHAR",  # the model in service when counted
    "CREATE TABLE IF NOT EXISTS meta.basket_members (user_id VARCHAR, segment_id INTEGER)",
    "CREATE TABLE IF NOT EXISTS meta.basket_scopes (scope INTEGER, baskets BIGINT, tracked_from BIGINT)",
    "CREATE TABLE IF NOT EXISTS meta.basket_items (scope INTEGER, product_id VARCHAR, baskets BIGINT, tracked BOOLEAN)",
    "CREATE TABLE IF NOT EXISTS meta.basket_pairs (scope INTEGER, a VARCHAR, b VARCHAR, baskets BIGINT)",
)


# Orders whose own row says they were cancelled: their lines are no basket (their order row may arrive later)
CANCELLED_ORDERS = "SELECT order_id FROM raw.orders WHERE status = 'cancelled'"
# The user of each order row (the owner of its basket, as in staging.stg_orders; GROUP BY order_id follows)
ORDER_ROW_USERS = "SELECT order_id, min(user_id) AS user_id FROM raw.orders"


def moved_orders_sql(after: int) -> str:
    """(order_id, user_id, _file_id) of the order rows of files after ``after`` that name another user than a line of
    theirs: they (may) move a basket to another owner. A join from the few new order rows (14 ms at 9M lines and 3M
    orders), not the lines' owners (``min(user_id)`` per order: 1.2 s, the whole table aggregated)."""
    return (f"SELECT DISTINCT o.order_id, o.user_id, o._file_id FROM raw.orders o JOIN raw.order_items i "
            f"ON i.order_id = o.order_id AND i.user_id <> o.user_id WHERE o._file_id > {int(after)}")

MAX_BASKET_SIZE = 1000  # the default of basket rules and recommendations: larger orders are wholesale or data errors


@dataclass(frozen=True)
class CountSettings:
    """What the stored counts depend on (a change recounts everything)."""

    min_support: float
    min_baskets: int
    max_basket_size: int = MAX_BASKET_SIZE
    track_margin: float = 0.5

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:12]


def threshold(baskets: int, min_support: float, min_baskets: int) -> int:
    """Fewest baskets a product pair needs in a scope of ``baskets`` baskets (exact integer form of
    support >= min_support, floored at min_baskets)."""
    return max(math.ceil(baskets * min_support - 1e-9), min_baskets, 1)


def threshold_sql(n: str, cfg: CountSettings) -> str:
    """:func:`threshold` in SQL over the column ``n``."""
    return f"greatest(ceil({n} * {cfg.min_support!r} - 1e-9)::BIGINT, {int(cfg.min_baskets)}, 1)"


def baskets_sql(cfg: CountSettings, watermark: int | None = None, orders_of: str | None = None, detail: bool = False,
                until: datetime | None = None) -> str:
    """(order_id, user_id, product_id): one row per basket and distinct product; ``watermark`` keeps the
    lines of files up to it (the counts' past), ``orders_of`` (a table with ``user_id``) the orders with a
    line of those users, ``until`` the lines placed by then (an as-of in the past); ``detail`` adds the order's time
    (``order_ts``) and the line's ``category`` (recommendations read baskets in time)."""
    up_to = f" AND _file_id <= {int(watermark)}" if watermark is not None else ""
    where = ["status = 'completed'", f"order_id NOT IN ({CANCELLED_ORDERS}{up_to})"]
    if watermark is not None:
        where.append(f"_file_id <= {int(watermark)}")
    if until is not None:
        where.append(f"order_ts <= TIMESTAMP '{until:%Y-%m-%d %H:%M:%S.%f}'")
    if orders_of is not None:  # the orders of those users as owners of their lines or of their order rows
        users = f"(SELECT user_id FROM {orders_of})"
        where.append(f"order_id IN (SELECT order_id FROM raw.order_items WHERE user_id IN {users} "
                     f"UNION SELECT order_id FROM raw.orders WHERE user_id IN {users})")
    line_detail, order_detail, select_detail = ((f", min(order_ts) AS order_ts, any_value({without_email_sql('category')}) AS category",
                                                 ", min(l.order_ts) AS order_ts", ", o.order_ts, l.category")
                                                if detail else ("", "", ""))
    return f"""
        WITH l AS (SELECT order_id, product_id, min(user_id) AS user_id{line_detail} FROM raw.order_items
                   WHERE {' AND '.join(where)} GROUP BY order_id, product_id),
             r AS ({ORDER_ROW_USERS} WHERE order_id IN (SELECT order_id FROM l){up_to} GROUP BY order_id),
             o AS (SELECT l.order_id, coalesce(min(r.user_id), min(l.user_id)) AS user_id, count(*) AS size{order_detail}
                   FROM l LEFT JOIN r USING (order_id) GROUP BY l.order_id)
        SELECT l.order_id, o.user_id, l.product_id{select_detail} FROM l JOIN o USING (order_id)
        WHERE o.size <= {int(cfg.max_basket_size)}"""


def watermark(con) -> int:
    """The newest ledger file id of the rows baskets read: order lines and cancelled order rows (an order row that
    cancels nothing changes no basket, and so re-ranks no recommendation), and files that replaced rows of either
    (a source with ``keep: latest``: an order cancelled, then restored)."""
    lines = int(con.sql("SELECT coalesce(max(_file_id), 0) FROM raw.order_items").fetchall()[0][0])
    # an order row naming another user than its lines moves the basket: only rows after the newest lines can do so
    # unseen (a count at the newest lines' file reads every order row before it), so only those are joined
    moved = f"SELECT coalesce(max(_file_id), 0) FROM ({moved_orders_sql(lines)})"
    return max(int(con.sql(f"SELECT greatest({lines}, (SELECT coalesce(max(_file_id), 0) FROM raw.orders WHERE status = 'cancelled'), "
                           f"({moved}))").fetchall()[0][0]), _last_replacing_file(con))


def _last_replacing_file(con, after: int = 0) -> int:
    """The newest file that replaced stored rows of order lines or orders after the file id ``after`` (0: none)."""
    if not table_exists(con, LEDGER):
        return 0
    return int(con.sql(f"SELECT coalesce(max(file_id), 0) FROM {LEDGER} WHERE table_name IN ('orders', 'order_items') "
                       f"AND updated > 0 AND file_id > {int(after)}").fetchall()[0][0])


def ensure_tables(con) -> None:
    for ddl in DDL:
        con.sql(ddl)


def _scoped(con, name: str, baskets: str, segments: str) -> None:
    """Temp table ``name``: basket rows with the owner's segment in ``segments`` (NULL: none)."""
    con.sql(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT b.order_id, b.product_id, b.user_id, s.segment_id "
            f"FROM ({baskets}) b LEFT JOIN {segments} s USING (user_id)")


def _expand(source: str, shop: bool, segments: str | None, extra: str = "") -> str:
    """Rows of ``source`` once per scope: the whole shop (``shop``) and the owner's segment when it is in
    ``segments`` (SQL list, or 'all')."""
    parts = [f"SELECT order_id, product_id, {SHOP} AS scope{extra} FROM {source}"] if shop else []
    if segments is not None:
        cond = "segment_id IS NOT NULL" + ("" if segments == "all" else f" AND segment_id IN ({segments})")
        parts.append(f"SELECT order_id, product_id, segment_id AS scope{extra} FROM {source} WHERE {cond}")
    return " UNION ALL ".join(parts)


def _count_full(con, cfg: CountSettings, shop: bool, segments: str | None) -> None:
    """Replace the counts of the scopes chosen (see :func:`_expand`) with a full count of ``_b``."""
    rows = _expand("_b", shop, segments)
    con.sql(f"CREATE OR REPLACE TEMP TABLE _x AS {rows}")
    con.sql("CREATE OR REPLACE TEMP TABLE _sc AS SELECT scope, count(DISTINCT order_id) AS baskets FROM _x GROUP BY scope")
    con.sql("CREATE OR REPLACE TEMP TABLE _it AS SELECT scope, product_id, count(*) AS baskets FROM _x GROUP BY ALL")
    track = f"floor({threshold_sql('s.baskets', cfg)} * {cfg.track_margin!r})::BIGINT"
    con.sql(f"CREATE OR REPLACE TEMP TABLE _sc AS SELECT scope, baskets, {track} AS tracked_from FROM _sc s")
    con.sql("CREATE OR REPLACE TEMP TABLE _it AS SELECT i.scope, i.product_id, i.baskets, i.baskets >= s.tracked_from AS tracked "
            "FROM _it i JOIN _sc s USING (scope)")
    con.sql("CREATE OR REPLACE TEMP TABLE _t AS SELECT x.* FROM _x x SEMI JOIN _it i "
            "ON i.scope = x.scope AND i.product_id = x.product_id AND i.tracked")
    con.sql("CREATE OR REPLACE TEMP TABLE _pr AS SELECT x.scope, x.product_id AS a, y.product_id AS b, count(*) AS baskets "
            "FROM _t x JOIN _t y ON x.scope = y.scope AND x.order_id = y.order_id AND x.product_id < y.product_id GROUP BY ALL")
    scopes = "SELECT scope FROM _sc"
    if shop and segments == "all":  # everything: the tables are replaced
        con.sql("DELETE FROM meta.basket_scopes; DELETE FROM meta.basket_items; DELETE FROM meta.basket_pairs")
    else:
        stale = ("scope = -1 OR " if shop else "") + (f"scope IN ({segments}) OR " if segments not in (None, "all") else "")
        for table in ("basket_scopes", "basket_items", "basket_pairs"):
            con.sql(f"DELETE FROM meta.{table} WHERE {stale}scope IN ({scopes})")
    con.sql("INSERT INTO meta.basket_scopes SELECT * FROM _sc")
    con.sql("INSERT INTO meta.basket_items SELECT * FROM _it")
    con.sql("INSERT INTO meta.basket_pairs SELECT * FROM _pr")
    for t in ("_x", "_sc", "_it", "_t", "_pr"):
        con.sql(f"DROP TABLE {t}")


def rebuild(con, cfg: CountSettings, until: datetime | None = None) -> None:
    """Count every scope from scratch (the orders placed by ``until``; None: all)."""
    _scoped(con, "_b", baskets_sql(cfg, until=until), SEGMENTS)
    _count_full(con, cfg, shop=True, segments="all")
    con.sql("CREATE OR REPLACE TABLE meta.basket_members AS SELECT DISTINCT user_id, segment_id FROM _b")
    con.sql("DROP TABLE _b")


def _dirty_users(con, wm_old: int) -> int:
    con.sql(f"""CREATE OR REPLACE TEMP TABLE _dirty AS
        SELECT DISTINCT user_id FROM raw.order_items WHERE _file_id > {int(wm_old)} AND status = 'completed'
        UNION
        SELECT DISTINCT user_id FROM raw.order_items WHERE order_id IN ({CANCELLED_ORDERS} AND _file_id > {int(wm_old)})
        UNION
        -- an order row that moved a basket: its user (the new owner) and its lines' (the owner counted before)
        SELECT user_id FROM ({moved_orders_sql(wm_old)})
        UNION
        SELECT DISTINCT i.user_id FROM raw.order_items i JOIN ({moved_orders_sql(wm_old)}) m ON m.order_id = i.order_id
        UNION
        SELECT m.user_id FROM meta.basket_members m LEFT JOIN {SEGMENTS} s USING (user_id)
        WHERE s.segment_id IS DISTINCT FROM m.segment_id""")
    return int(con.sql("SELECT count(*) FROM _dirty").fetchall()[0][0])


def _apply_delta(con, cfg: CountSettings, wm_old: int) -> list[int]:
    """Subtract the dirty users' orders as counted, add them as they are now; return the scopes that must
    be counted again in full (a product at or above the threshold that is not tracked)."""
    _scoped(con, "_old", baskets_sql(cfg, watermark=wm_old, orders_of="_dirty"), "meta.basket_members")
    _scoped(con, "_b", baskets_sql(cfg, orders_of="_dirty"), SEGMENTS)
    con.sql("CREATE OR REPLACE TEMP TABLE _d AS SELECT *, -1 AS sign FROM _old UNION ALL SELECT *, 1 AS sign FROM _b")
    con.sql(f"CREATE OR REPLACE TEMP TABLE _xd AS {_expand('_d', True, 'all', ', sign')}")
    con.sql("""CREATE OR REPLACE TEMP TABLE _dsc AS SELECT scope, sum(sign) AS delta
               FROM (SELECT DISTINCT order_id, scope, sign FROM _xd) GROUP BY scope""")
    con.sql("CREATE OR REPLACE TEMP TABLE _dit AS SELECT scope, product_id, sum(sign) AS delta FROM _xd GROUP BY ALL")
    con.sql("""CREATE OR REPLACE TEMP TABLE _t AS SELECT x.* FROM _xd x SEMI JOIN meta.basket_items i
               ON i.scope = x.scope AND i.product_id = x.product_id AND i.tracked""")
    con.sql("""CREATE OR REPLACE TEMP TABLE _dpr AS SELECT x.scope, x.product_id AS a, y.product_id AS b, sum(x.sign) AS delta
               FROM _t x JOIN _t y ON x.scope = y.scope AND x.order_id = y.order_id AND x.sign = y.sign
                AND x.product_id < y.product_id GROUP BY ALL""")
    con.sql("""CREATE OR REPLACE TABLE meta.basket_scopes AS
               SELECT scope, (coalesce(s.baskets, 0) + coalesce(d.delta, 0))::BIGINT AS baskets, coalesce(s.tracked_from, 0) AS tracked_from
               FROM meta.basket_scopes s FULL JOIN _dsc d USING (scope) WHERE coalesce(s.baskets, 0) + coalesce(d.delta, 0) > 0""")
    con.sql("""CREATE OR REPLACE TABLE meta.basket_items AS
               SELECT scope, product_id, (coalesce(i.baskets, 0) + coalesce(d.delta, 0))::BIGINT AS baskets,
                      coalesce(i.tracked, false) AS tracked
               FROM meta.basket_items i FULL JOIN _dit d USING (scope, product_id)
               WHERE coalesce(i.baskets, 0) + coalesce(d.delta, 0) > 0 AND scope IN (SELECT scope FROM meta.basket_scopes)""")
    con.sql("""CREATE OR REPLACE TABLE meta.basket_pairs AS
               SELECT scope, a, b, (coalesce(p.baskets, 0) + coalesce(d.delta, 0))::BIGINT AS baskets  -- sum() gave HUGEINT
               FROM meta.basket_pairs p FULL JOIN _dpr d USING (scope, a, b)
               WHERE coalesce(p.baskets, 0) + coalesce(d.delta, 0) > 0 AND scope IN (SELECT scope FROM meta.basket_scopes)""")
    con.sql("DELETE FROM meta.basket_members WHERE user_id IN (SELECT user_id FROM _dirty) OR user_id IN (SELECT user_id FROM _b)")
    con.sql("INSERT INTO meta.basket_members SELECT DISTINCT user_id, segment_id FROM _b")
    stale = con.sql(f"""SELECT DISTINCT i.scope FROM meta.basket_items i JOIN meta.basket_scopes s USING (scope)
                        WHERE NOT i.tracked AND i.baskets >= {threshold_sql('s.baskets', cfg)} ORDER BY 1""").fetchall()
    for t in ("_old", "_b", "_d", "_xd", "_dsc", "_dit", "_t", "_dpr"):
        con.sql(f"DROP TABLE {t}")
    return [s for (s,) in stale]


@dataclass(frozen=True)
class CountUpdate:
    mode: str  # "full", "incremental", "unchanged"
    reason: str
    dirty_users: int = 0
    recounted: tuple[int, ...] = ()  # scopes counted again in full during an incremental update


def _incremental(con, cfg: CountSettings, wm_old: int) -> CountUpdate:
    """The dirty users' orders moved from their counted state to the current one (module doc)."""
    dirty = _dirty_users(con, wm_old)
    stale = _apply_delta(con, cfg, wm_old)
    con.sql("DROP TABLE _dirty")
    if SHOP in stale:
        rebuild(con, cfg)
        return CountUpdate("full", "a product became frequent in the whole shop", dirty)
    if stale:
        _scoped(con, "_b", baskets_sql(cfg), SEGMENTS)
        _count_full(con, cfg, shop=False, segments=", ".join(str(int(s)) for s in stale))
        con.sql("DROP TABLE _b")
    return CountUpdate("incremental", f"{dirty} users with new orders or a new segment", dirty, tuple(stale))


def lines_after(con, as_of: datetime | None) -> datetime | None:
    """``as_of`` if order lines were placed after it (a refresh as of a date in the past), else None: then every
    line counts, and the counts can be kept up to date incrementally."""
    if as_of is None:
        return None
    latest = con.sql("SELECT max(order_ts) FROM raw.order_items").fetchall()[0][0]
    return as_of if latest is not None and latest > as_of else None


def as_of_moved(until: datetime | None, counted_until: datetime | None) -> str:
    """Why what was counted as of ``counted_until`` (None: every order) must be counted again for ``until``
    (:func:`lines_after`), or '': a refresh as of another past date, or the first one back after one. The basket
    counts' rule, and the recommendations'."""
    if until is not None and until != counted_until:
        return f"as of {until:%Y-%m-%d %H:%M}: orders placed after it left out"
    if until is None and counted_until is not None:
        return "no longer as of a past date: every order counted"
    return ""


def update_counts(con, cfg: CountSettings, full: bool = False, as_of: datetime | None = None) -> CountUpdate:
    """Bring the counts up to date with the order lines, cancelled order rows and current segments (module doc),
    counting the orders placed by ``as_of`` (the segments' as-of): all of them, unless the refresh is as of a date in
    the past; then (and on the first refresh after one) every scope is counted in full."""
    ensure_tables(con)
    wm = watermark(con)
    until = lines_after(con, as_of)
    state = con.sql("SELECT watermark, counts_key, until, segment_model FROM meta.basket_state").fetchall()
    model = in_service_version(con)
    reason = ("requested (rebase)" if full else "first count" if not state
              else "count settings changed" if state[0][1] != cfg.key() else as_of_moved(until, state[0][2]))
    if reason:
        rebuild(con, cfg, until)
        cut = f"; as of {until:%Y-%m-%d %H:%M}: orders placed after it left out" if until and "as of" not in reason else ""
        update = CountUpdate("full", reason + cut)
    else:
        wm_old = int(state[0][0])
        if wm == wm_old and state[0][3] in (None, model):  # (None: counted before the model was recorded)
            return CountUpdate("unchanged", DEFERRED)
        if until is not None or _last_replacing_file(con, after=wm_old):  # the rows as counted are gone, or cut by time
            rebuild(con, cfg, until)
            update = CountUpdate("full", "rows of orders or order lines replaced since the last count (keep: latest)"
                                 if until is None else f"new order lines, counted as of {until:%Y-%m-%d %H:%M}")
        else:
            update = _incremental(con, cfg, wm_old)
    con.sql("DELETE FROM meta.basket_state")
    con.execute("INSERT INTO meta.basket_state VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?)",
                [wm, cfg.key(), update.mode, update.dirty_users, ",".join(map(str, update.recounted)), until, model])
    return update
