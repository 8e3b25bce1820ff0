"""Order lines for the demo's orders: product ids, descriptions, and co-purchases planted per shopper type.

Every order of ``orders`` gets ``items`` lines (quantity 1 each, so ``sum(quantity) = items``) with the
order's id, user, time and status, and unit prices that add up to the order's list price (amount plus
discount). The order ids are those of the orders files, so ``staging.stg_orders`` keeps taking each order
from ``raw.orders`` (an id delivered at both grains is taken from the orders): features are exactly what
they are without lines, and the lines carry the basket detail only.

Products are ``p<category * 10000 + k>`` with a skewed popularity of k (a few best sellers, a long tail);
the first line is in the order's category. Each shopper type has a planted pair (``PLANTED``): an order of
that type with two lines or more holds both products with probability ``PLANT_P``, so the pair has a high
lift in the segments those shoppers land in (``truth/planted_pairs.parquet`` lists them).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from seg_assets.demo.faults import STATUSES, id_num, label, to_datetime

PLANT_P = 0.45
PRODUCTS_PER_CATEGORY = 1500
# (category index, first product, second product) per shopper type, in SHOPPER_TYPES order; the products
# sit above the random range (k >= PRODUCTS_PER_CATEGORY) so nothing else sells them.
PLANTED = (
    (0, "espresso machine", "coffee beans"), (7, "multipack pasta", "tomato sauce"), (1, "phone case", "screen protector"),
    (5, "paperback novel", "reading light"), (4, "yoga mat", "water bottle"), (2, "starter kit", "gift wrap"),
)


def planted_products(shopper_type: int) -> tuple[str, str]:
    cat = PLANTED[shopper_type][0]
    base = cat * 10_000 + PRODUCTS_PER_CATEGORY + 2 * shopper_type
    return f"p{base:05d}", f"p{base + 1:05d}"


def planted_pairs(shopper_types: tuple[str, ...]) -> pl.DataFrame:
    """The truth: each shopper type's planted pair of products."""
    rows = [(name, *planted_products(t), *PLANTED[t][1:]) for t, name in enumerate(shopper_types)]
    return pl.DataFrame(rows, schema=["shopper_type", "product_a", "product_b", "description_a", "description_b"], orient="row")


def lines_frame(rng: np.random.Generator, orders: pl.DataFrame, shopper: np.ndarray, prefix: str,
                categories: tuple[str, ...]) -> tuple[pl.DataFrame, list[pl.Expr]]:
    """Lines of the sorted, numbered orders frame (``_orders_frame``'s, with ``_u``, ``_n``, ``_file``, ...)."""
    items = orders["items"].to_numpy().astype(np.int64)
    n = int(items.sum())
    order = np.repeat(np.arange(orders.height), items)
    first = np.cumsum(items) - items
    pos = np.arange(n) - first[order]
    ocat = orders["_cat"].to_numpy().astype(np.int64)
    cat = np.where((pos == 0) | (rng.random(n) < 0.5), ocat[order], rng.integers(0, len(categories), n))
    k = np.minimum((PRODUCTS_PER_CATEGORY * rng.random(n) ** 2.5).astype(np.int64), PRODUCTS_PER_CATEGORY - 1)
    product = cat * 10_000 + k
    otype = shopper[orders["_u"].to_numpy()].astype(np.int64)
    plant = (items >= 2) & (rng.random(orders.height) < PLANT_P)
    base = np.array([PLANTED[t][0] * 10_000 + PRODUCTS_PER_CATEGORY + 2 * t for t in range(len(PLANTED))])
    planted_line = plant[order] & (pos < 2)
    product = np.where(planted_line, base[otype[order]] + pos, product)
    total = np.round(orders["amount"].to_numpy() + np.nan_to_num(orders["discount"].to_numpy()), 2)
    share = np.floor(total * 100 / items) / 100
    last = pos == items[order] - 1
    price = np.where(last, np.round(total[order] - share[order] * (items[order] - 1), 2), share[order])
    describe = {int(b + j): PLANTED[t][1 + j] for t, b in enumerate(base) for j in (0, 1)}
    df = pl.DataFrame({"_o": order, "_pos": pos + 1, "_p": product, "_cat": cat.astype(np.int8), "unit_price": price}).with_columns(
        pl.col("_o").cast(pl.Int32))
    df = df.with_columns(orders.select("_n", "_u", "_ts", "_st", "_file")[df["_o"].to_numpy()])
    planted_desc = pl.col("_p").replace_strict(describe, default=None, return_dtype=pl.String)
    cols = [
        (id_num(pl.col("_n"), prefix, 9) + "-" + pl.col("_pos").cast(pl.String)).alias("line_id"),
        id_num(pl.col("_n"), prefix, 9).alias("order_id"), id_num(pl.col("_u") + 1, "u").alias("user_id"),
        to_datetime("_ts").alias("order_ts"), id_num(pl.col("_p"), "p", 5).alias("product_id"),
        pl.lit(1, dtype=pl.Int32).alias("quantity"), pl.col("unit_price"), label("_cat", categories).alias("category"),
        pl.coalesce(planted_desc, label("_cat", categories) + " item " + (pl.col("_p") % 10_000).cast(pl.String)).alias("description"),
        label("_st", STATUSES).alias("status"),
    ]
    return df, cols
