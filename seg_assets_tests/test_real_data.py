"""The user's own data, mapped with a sources file only, end to end: the public UCI retail extract
(../shared/data) with the shipped example, and a clickstream in a third-party shape (GA4-like event names,
no event ids) whose purchase events are also read as orders."""

import csv
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from seg_assets.refresh import run_refresh

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "online_retail" / "sources.yaml"


@pytest.fixture(scope="module")
def retail_csv() -> Path:
    path = REPO.parent / "shared" / "data" / "online_retail_germany.csv"
    assert path.exists(), f"{path} is missing: the public test data lives in ../shared/data beside the repository"
    return path


def query(root: Path, sql: str):
    con = duckdb.connect(str(root / "bi" / "segments.duckdb"), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def expected_frequency(rows: list[dict]) -> dict[str, int]:
    invoices: dict[str, set] = {}
    for r in rows:
        if r["CustomerID"] and not r["InvoiceNo"].startswith("C"):
            invoices.setdefault(r["CustomerID"], set()).add(r["InvoiceNo"])
    return {k: len(v) for k, v in invoices.items()}


def test_online_retail_lines_with_the_example_sources_file(tmp_path, retail_csv):
    """Every line accounted for, frequency = distinct non-credit invoices, segments published. Some customer
    ids are blanked (other extracts of the data have such lines): the example's `where` counts them."""
    with open(retail_csv, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(3)
    for r in rng.sample(rows, 300):
        r["CustomerID"] = ""
    landing = tmp_path / "landing" / "retail_lines"
    landing.mkdir(parents=True)
    with open(landing / "online_retail.csv", "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(EXAMPLE, tmp_path / "sources.yaml")

    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    delivered, accepted, duplicate, rejected, filtered = con.sql(
        "SELECT sum(delivered), sum(accepted), sum(duplicate), sum(rejected), sum(filtered) FROM meta.ingest_ledger"
    ).fetchall()[0]
    frequency = dict(con.sql("SELECT user_id, frequency FROM features.user_features").fetchall())
    con.close()
    assert delivered == len(rows) == accepted + duplicate + rejected + filtered
    assert filtered == 300 and rejected == 0
    want = expected_frequency(rows)
    assert {u: f for u, f in frequency.items() if f} == want
    assert query(tmp_path, "SELECT count(*) FROM analytics.user_segments")[0][0] == len(frequency)


GA4_NAMES = {  # name -> share of events; stages by the built-in vocabulary
    "page_view": 20, "view_item": 14, "view_item_list": 10, "user_engagement": 8, "scroll": 6, "session_start": 4,
    "first_visit": 1, "view_search_results": 5, "select_item": 4, "view_promotion": 3, "select_promotion": 1,
    "add_to_cart": 5, "remove_from_cart": 1, "add_to_wishlist": 1, "view_cart": 2, "begin_checkout": 2,
    "add_shipping_info": 1, "add_payment_info": 1, "purchase": 1, "click": 2,
}


def write_clickstream(path: Path, users: int = 400, seed: int = 5) -> int:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    names, weights = zip(*GA4_NAMES.items())
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_pseudo_id", "ga_session_id", "event_timestamp", "event_name", "item_id", "item_category"])
        for u in range(users):
            for s in range(rng.randint(1, 6)):
                t = start + timedelta(days=rng.uniform(0, 120))
                for _ in range(rng.randint(2, 15)):
                    t += timedelta(seconds=rng.randint(5, 300))
                    name = rng.choices(names, weights)[0]
                    writer.writerow([f"ga{u}", f"{u}-{s}", t.strftime("%Y-%m-%d %H:%M:%S UTC"), name,
                                     f"sku{rng.randint(1, 50)}", rng.choice(["Apparel", "Bags", "Drinkware", ""])])
                    count += 1
    return count


CLICKSTREAM_SOURCES = """
sources:
  web:
    table: clicks
    columns: {user_id: user_pseudo_id, session_id: ga_session_id, event_ts: event_timestamp, event_type: event_name,
              product_id: item_id, category: item_category}
  web_purchases:                      # the same files: purchase events read as orders (no revenue in this export)
    table: orders
    folder: web
    where: "event_name = 'purchase'"
    columns:
      order_id: "md5(user_pseudo_id || ga_session_id || event_timestamp)"
      user_id: user_pseudo_id
      order_ts: event_timestamp
      amount: 0
      items: 1
      category: item_category
      status: "'completed'"
"""


def test_a_third_party_clickstream_mapped_by_renames_only(tmp_path):
    (tmp_path / "landing" / "web").mkdir(parents=True)
    events = write_clickstream(tmp_path / "landing" / "web" / "export.csv")
    (tmp_path / "sources.yaml").write_text(CLICKSTREAM_SOURCES)

    outcome = run_refresh(tmp_path)
    assert outcome.success, [m for s in outcome.stages for m in s.failures]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    ledger = con.sql("SELECT source, delivered, accepted, duplicate, rejected, filtered FROM meta.ingest_ledger "
                     "ORDER BY source").fetchall()
    stages = dict(con.sql("SELECT funnel_stage::VARCHAR, count(*) FROM raw.clicks GROUP BY 1").fetchall())
    names = con.sql("SELECT count(DISTINCT event_type) FROM raw.clicks").fetchall()[0][0]
    event_rejects = con.sql("SELECT count(*) FROM raw.rejects WHERE rule LIKE '%event_type%'").fetchall()[0][0]
    orders = con.sql("SELECT count(*), sum(amount) FROM raw.orders").fetchall()[0]
    con.close()
    (web, delivered, accepted, duplicate, rejected, filtered), purchases = ledger[0], ledger[1]
    assert web == "web" and delivered == events and rejected == 0 and event_rejects == 0 and filtered == 0
    assert accepted + duplicate == events and names == len(GA4_NAMES)
    for stage in ("view", "search", "add_to_cart", "checkout", "purchase", "other"):
        assert stages.get(stage, 0) > 0, stages
    assert purchases[0] == "web_purchases" and purchases[2] == stages["purchase"] == orders[0] and orders[1] == 0
    assert purchases[1] == purchases[2] + purchases[3] + purchases[4] + purchases[5]
    published = query(tmp_path, "SELECT count(*), count(DISTINCT segment_id) FROM analytics.user_segments")[0]
    assert published[0] == 400 and published[1] >= 2
