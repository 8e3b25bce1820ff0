"""A shop unlike ``seg-assets generate``'s, for the recommendation benchmark: every shopper has a taste of their own.

``seg-assets generate`` draws a shopper's products from their kind's popularity, so the segment's popular list is
most of what anyone can know about them. Here (as a tester built one) there are four kinds of shopper, each with
its own ranking of 400 products, and every order draws 1 + Poisson(1.2) products from a Zipf over that ranking; two
mid-ranked pairs per kind are bought in one basket (the second with probability 0.6), and ``follow`` is the
probability that buying one of four products brings its follow-up within 1-30 days in a later order (a machine,
then its refills). Order lines only (landing/order_items/lines.csv, the contract's columns), 180 days.

    python bench/taste_shop.py ROOT --users 5000 --seed 1 --follow 0.7
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

PRODUCTS, KINDS, DAYS = 400, 4, 180


def generate(root: Path, users: int, seed: int, follow: float) -> int:
    """Writes the lines; returns how many."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1)
    taste = [rng.permutation(PRODUCTS) for _ in range(KINDS)]  # each kind's ranking of the products
    zipf = 1 / np.arange(1, PRODUCTS + 1) ** 1.1
    zipf /= zipf.sum()
    same = {t: [(int(taste[t][i]), int(taste[t][i + 1])) for i in (20, 40)] for t in range(KINDS)}
    later = {t: [(int(taste[t][i]), int(taste[t][i + 30])) for i in (5, 10, 15, 60)] for t in range(KINDS)}
    rows, order = [], 0
    for u in range(users):
        kind, rate = rng.integers(KINDS), rng.gamma(2, 1 / 40)  # orders per day
        pending: list[tuple[float, int]] = []  # (day due, product)
        for day in np.sort(rng.uniform(0, DAYS, rng.poisson(rate * DAYS) + 1)):
            items = {int(x) for x in taste[kind][rng.choice(PRODUCTS, size=1 + rng.poisson(1.2), p=zipf)]}
            items |= {b for a, b in same[kind] if a in items and rng.random() < 0.6}
            items |= {p for due, p in pending if due <= day}
            pending = [(due, p) for due, p in pending if due > day]
            pending += [(day + rng.uniform(1, 30), b) for a, b in later[kind] if a in items and rng.random() < follow]
            order += 1
            ts = (start + timedelta(days=float(day))).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows += [(f"o{order}", f"u{u}", ts, f"p{p:04d}", 1, 5.0 + p % 50, f"c{p % 12}", f"product {p}", "completed")
                     for p in sorted(items)]
    frame = pl.DataFrame(rows, orient="row", schema=["order_id", "user_id", "order_ts", "product_id", "quantity",
                                                     "unit_price", "category", "description", "status"])
    (root / "landing" / "order_items").mkdir(parents=True, exist_ok=True)
    frame.write_csv(root / "landing" / "order_items" / "lines.csv")
    return frame.height


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--follow", type=float, default=0.7)
    args = ap.parse_args()
    print(f"{generate(args.root, args.users, args.seed, args.follow):,} lines")
