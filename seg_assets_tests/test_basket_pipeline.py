"""Basket rules end to end: the public retail extract mapped with the example sources file, and demo data
whose planted co-purchases must come out in the segments of the shoppers they were planted in."""

import shutil
from pathlib import Path

import duckdb
import polars as pl

from seg_assets.demo.generate import generate
from seg_assets.refresh import run_refresh
from seg_assets_tests.bi_copy import read_bi

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO.parent / "shared" / "data" / "online_retail_germany.csv"



def test_retail_extract_whole_shop_rules_are_exact_and_published(tmp_path):
    landing = tmp_path / "landing" / "retail_lines"
    landing.mkdir(parents=True)
    shutil.copy(RETAIL, landing / "online_retail.csv")
    shutil.copy(REPO / "examples" / "online_retail" / "sources.yaml", tmp_path / "sources.yaml")
    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    rules = read_bi(tmp_path, "SELECT * FROM analytics.basket_rules WHERE segment_id IS NULL AND support >= 0.05")
    assert rules.height >= 5
    # the same figures straight from the CSV: baskets = non-credit invoices, items = distinct stock codes
    con = duckdb.connect()
    con.sql(f"CREATE TABLE b AS SELECT DISTINCT InvoiceNo AS o, StockCode AS p FROM read_csv('{RETAIL}', all_varchar=true) "
            "WHERE InvoiceNo NOT LIKE 'C%' AND CustomerID IS NOT NULL")
    n = con.sql("SELECT count(DISTINCT o) FROM b").fetchall()[0][0]
    items = dict(con.sql("SELECT p, count(*) FROM b GROUP BY p").fetchall())
    pairs = dict(((a, c), k) for a, c, k in con.sql(
        "SELECT x.p, y.p, count(*) FROM b x JOIN b y ON x.o = y.o AND x.p <> y.p GROUP BY ALL").fetchall())
    for r in rules.iter_rows(named=True):
        both = pairs[(r["antecedent"], r["consequent"])]
        assert r["support"] == both / n and r["baskets"] == both and r["scope_baskets"] == n
        assert abs(r["confidence"] - both / items[r["antecedent"]]) < 1e-12
        assert abs(r["lift"] - both * n / (items[r["antecedent"]] * items[r["consequent"]])) < 1e-12
    # every product of a rule has its description, a consequent that is never an antecedent (POST) too
    described = read_bi(tmp_path, "SELECT * FROM analytics.basket_rules")
    assert described.filter(pl.col("antecedent_description").is_null() | pl.col("consequent_description").is_null()).height == 0
    assert rules.filter(pl.col("consequent") == "POST").height > 0
    summary = read_bi(tmp_path, "SELECT * FROM analytics.segment_basket_rules")
    assert summary.filter(pl.col("segment_id").is_null())["baskets"][0] == n
    assert (tmp_path / "bi" / "analytics.basket_rules.parquet").exists()


def test_planted_co_purchases_are_found_in_their_shoppers_segments(tmp_path):
    generate(tmp_path, users=3_000, days=120, seed=21, with_customers=False, with_lines=True)
    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    truth = pl.read_parquet(tmp_path / "truth" / "shopper_types.parquet")
    planted = pl.read_parquet(tmp_path / "truth" / "planted_pairs.parquet")
    segments = read_bi(tmp_path, "SELECT user_id, segment_id FROM analytics.user_segments")
    rules = read_bi(tmp_path, "SELECT * FROM analytics.basket_rules")
    top = read_bi(tmp_path, "SELECT * FROM analytics.segment_basket_rules")
    home = (truth.join(segments, on="user_id").group_by("shopper_type", "segment_id").len()
            .sort("len", descending=True).unique("shopper_type", keep="first"))
    found = 0
    for shopper_type, a, b in planted.select("shopper_type", "product_a", "product_b").iter_rows():
        if shopper_type in ("window_shopper", "new_customer"):  # too few orders with two lines or more
            continue
        seg = home.filter(pl.col("shopper_type") == shopper_type)["segment_id"][0]
        hit = rules.filter((pl.col("segment_id") == seg) & (pl.col("antecedent") == a) & (pl.col("consequent") == b))
        assert hit.height == 1 and hit["lift"][0] > 2, (shopper_type, seg)
        assert a in top.filter(pl.col("segment_id") == seg)["top_rules"][0], (shopper_type, seg)
        found += 1
    assert found == 4
