"""The ingest multi_asset and its checks through dg.materialize, on real files and a real DuckDB file."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from seg_assets.features.incremental import REBASE_TAG
from seg_assets.ingest import asset_checks, assets
from seg_assets.ingest.assets import LEDGER_KEY, RAW_KEYS, REJECTS_KEY
from seg_assets.ingest.checks import SYSTEM_SAMPLE_MIN
from seg_assets.resources import build_resources

ORDERS = "order_id,user_id,order_ts,amount,items,category,discount,status"
CLICKS = "event_id,user_id,session_id,event_ts,event_type,product_id,category"
CUSTOMERS = "user_id,signup_ts,country,channel,email"
TS = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the future rule uses the wall clock


def write(root: Path, table: str, name: str, header: str, lines: list[str]) -> None:
    folder = root / "landing" / table
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([header, *lines]) + "\n")


def good_landing(root: Path) -> None:
    write(root, "orders", "o1.csv", ORDERS,
          [f"o{i},u{i % 7},{TS},{10 + i}.50,{1 + i % 3},books,,completed" for i in range(40)] + [f"o0,u0,{TS},1,1,,,completed"])
    write(root, "clicks", "c1.csv", CLICKS, [f"e{i},u{i % 7},s{i // 4},{TS},view,p{i},books" for i in range(60)])
    write(root, "customers", "k1.csv", CUSTOMERS, [f"u{i},2025-01-0{1 + i}T00:00:00Z,DE,ads,user{i}@example.com" for i in range(7)])


def materialize(root: Path, extra=(), tags: dict | None = None):
    return dg.materialize([*assets, *asset_checks, *extra], resources=build_resources(root / "data"), raise_on_error=False,
                          tags=tags)


def meta(result, key: dg.AssetKey) -> dict:
    [mat] = [m for m in result.asset_materializations_for_node("ingest_landing") if m.asset_key == key]
    return {k: v.value for k, v in mat.metadata.items()}


def evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def orders_checks_alone(root: Path):
    """The raw.orders checks run on their own (no ingestion): they validate the latest ingesting run's rows."""
    return dg.materialize([*assets, *asset_checks], resources=build_resources(root), raise_on_error=False,
                          selection=dg.AssetSelection.checks_for_assets(RAW_KEYS["orders"]))


def query(root: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb")) as con:
        return con.sql(sql).fetchall()


def test_materialize_reports_and_checks_pass(tmp_path):
    good_landing(tmp_path / "data")
    result = materialize(tmp_path)
    assert result.success
    orders = meta(result, RAW_KEYS["orders"])
    assert orders["dagster/row_count"] == 40 and orders["rows_accepted"] == 40 and orders["rows_duplicate"] == 1
    assert orders["rows_rejected"] == 0 and orders["files_ingested"] == 1
    assert [r.data["file_name"] for r in orders["files"].records] == ["orders/o1.csv"]
    assert meta(result, RAW_KEYS["clicks"])["dagster/row_count"] == 60
    assert meta(result, RAW_KEYS["customers"])["dagster/row_count"] == 7
    assert meta(result, REJECTS_KEY)["dagster/row_count"] == 0
    assert meta(result, LEDGER_KEY)["files_this_run"] == 3
    assert query(tmp_path, "SELECT file_name, status, delivered, accepted, duplicate, rejected FROM meta.ingest_ledger ORDER BY 1") == [
        ("clicks/c1.csv", "ingested", 60, 60, 0, 0), ("customers/k1.csv", "ingested", 7, 7, 0, 0),
        ("orders/o1.csv", "ingested", 41, 40, 1, 0)]
    checks = evaluations(result)
    assert set(checks) == {"raw_orders_contract", "raw_order_items_contract", "raw_clicks_contract",
                           "raw_customers_contract", "raw_reviews_contract", "raw_campaign_sends_contract", "reject_ratio"}
    assert all(e.passed for e in checks.values())
    assert checks["raw_orders_contract"].metadata["rows_validated"].value == 40


def test_top_reasons_count_rows_per_rule_not_per_refused_value(tmp_path):
    """A reason quotes the value it refused: three future times of one rule were three "top reasons" of 1 row each."""
    root = tmp_path / "data"
    future = [(datetime.now(UTC) + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ") for d in (3, 4, 5)]
    write(root, "orders", "o1.csv", ORDERS, [f"o{i},u1,{ts},5,1,,,completed" for i, ts in enumerate(future)]
          + [f"o9,u1,{TS},5,1,,,shipped"])
    result = materialize(tmp_path)
    assert result.success
    top = meta(result, REJECTS_KEY)["top_reasons"]
    lines = [line for line in top.splitlines() if "future:order_ts" in line]
    assert len(lines) == 1 and [c.strip() for c in lines[0].split("|")][1:4] == ["orders", "future:order_ts", "3"], top
    assert future[0] in lines[0] and "unknown status 'shipped'" in top, top


def test_rejects_are_reported_and_ratio_only_warns(tmp_path):
    root = tmp_path / "data"
    write(root, "orders", "o1.csv", ORDERS,
          [f"o1,u1,{TS},5,1,,,completed", f"o2,u1,{TS},-5,1,,,completed", "o3,u1,not-a-date,5,1,,,completed",
           f"o4,u1,{TS},5,1,,,shipped"])
    write(root, "orders", "o2_bad.csv", "order_id,user_id,order_ts,items,status", [f"o9,u1,{TS},1,completed"])
    (root / "landing" / "orders" / "readme.md").write_text("ignored")
    result = materialize(tmp_path)
    assert result.success  # rejects never fail the run
    orders = meta(result, RAW_KEYS["orders"])
    assert (orders["rows_accepted"], orders["rows_rejected"], orders["files_rejected"]) == (1, 4, 1)
    assert orders["rejects_by_rule"] == {"missing_column:amount": 1, "negative:amount": 1, "unknown:status": 1,
                                         "unparseable:order_ts": 1}
    rejects = meta(result, REJECTS_KEY)
    assert rejects["dagster/row_count"] == 4 and rejects["reject_ratio_this_run"] == 0.8
    assert "unknown status 'shipped'" in rejects["top_reasons"]
    assert meta(result, LEDGER_KEY)["ignored_files"] == {
        "orders/readme.md": "unknown format (.md): land it as .csv, .csv.gz or .parquet"}
    ratio = evaluations(result)["reject_ratio"]
    assert not ratio.passed and ratio.severity == dg.AssetCheckSeverity.WARN
    assert ratio.metadata["rejects_by_rule"].value["negative:amount"] == 1
    assert ratio.metadata["reject_ratio"].value == 0.8 and ratio.metadata["max_reject_ratio"].value == 0.05
    assert ratio.description.startswith("4 of 5 rows rejected (80.00%) > max 5.00%")
    assert evaluations(result)["raw_orders_contract"].passed


def test_blocking_check_fails_on_a_corrupted_raw_table(tmp_path):
    root = tmp_path / "data"
    good_landing(root)
    assert materialize(tmp_path).success
    # Corrupt raw.orders behind the loader's back: a second o1 with a negative amount, in the ingested file.
    query(tmp_path, "INSERT INTO raw.orders SELECT * REPLACE (-1 AS amount, 99 AS _row) FROM raw.orders WHERE order_id = 'o1'")

    # Run on their own, the checks validate the latest ingesting run: its sample holds the bad row.
    alone = orders_checks_alone(root)
    assert not alone.success
    check = evaluations(alone)["raw_orders_contract"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["failed_rules"].value == ["duplicate_ids", "invalid_amount"]  # exact counts decide
    assert "duplicate_ids 1, invalid_amount 1" in check.description
    assert {"expect_column_values_to_be_unique(order_id)", "expect_column_values_to_be_between(amount)",
            } == set(check.metadata["failed_expectations"].value)  # GE's sample report shows the examples

    @dg.asset(deps=[RAW_KEYS["orders"]])
    def downstream() -> None:
        return None

    # A refresh that ingests no new orders file has nothing new to check in raw.orders: the check passes, saying so.
    ordinary = materialize(tmp_path, extra=[downstream])
    assert ordinary.success
    assert evaluations(ordinary)["raw_orders_contract"].description.endswith("nothing new to check")
    # A rebase re-validates the latest ingesting run's rows: it fails, and the downstream asset is not materialized.
    result = materialize(tmp_path, extra=[downstream], tags={REBASE_TAG: "true"})
    assert not result.success
    check = evaluations(result)["raw_orders_contract"]
    assert not check.passed
    assert "duplicate_ids" in check.metadata["failed_rules"].value
    assert check.metadata["aggregates"].value["duplicate_ids"] == 1
    assert evaluations(result)["raw_clicks_contract"].passed
    assert not result.asset_materializations_for_node("downstream")  # blocked


def test_check_counts_new_rows_that_duplicate_older_ones(tmp_path):
    root = tmp_path / "data"
    good_landing(root)
    assert materialize(tmp_path).success
    write(root, "orders", "o2.csv", ORDERS, [f"o100,u1,{TS},5,1,,,completed"])
    assert materialize(tmp_path).success
    # Behind the loader's back, an older file gets a row with the new file's id: the new row is now a duplicate.
    query(tmp_path, "INSERT INTO raw.orders SELECT * REPLACE (1 AS _file_id, 77 AS _row) FROM raw.orders WHERE order_id = 'o100'")
    alone = orders_checks_alone(root)
    check = evaluations(alone)["raw_orders_contract"]
    assert not check.passed and check.metadata["aggregates"].value["duplicate_ids"] == 1


def test_big_deliveries_are_sampled_by_vectors_and_still_validated(tmp_path):
    """More than 4x the sample size on a first load: a system sample (whole vectors) feeds GE; aggregates stay exact."""
    root = tmp_path / "data"
    limit = SYSTEM_SAMPLE_MIN
    config = {"ops": {"raw_contracts": {"config": {"sample_rows": limit}}}}
    write(root, "clicks", "c1.csv", CLICKS,
          [f"e{i:06d},u{i % 70},s{i // 4},{TS},view,p{i},books" for i in range(5 * limit)] + [f"e000007,u1,s1,{TS},view,p1,books"])
    result = dg.materialize([*assets, *asset_checks], resources=build_resources(root), raise_on_error=False, run_config=config)
    check = evaluations(result)["raw_clicks_contract"]
    assert check.passed, check.metadata["report"].value
    assert limit // 2 < check.metadata["sample_rows"].value <= limit
    assert check.metadata["aggregates"].value["duplicate_ids"] == 0  # the repeated id was never inserted
    query(tmp_path, f"INSERT INTO raw.clicks SELECT * REPLACE (7 AS _row) FROM raw.clicks WHERE event_id = 'e{5 * limit - 1:06d}'")
    again = dg.materialize(asset_checks, resources=build_resources(root), raise_on_error=False,
                           selection=dg.AssetSelection.checks(dg.AssetCheckKey(RAW_KEYS["clicks"], "raw_clicks_contract")),
                           run_config=config)
    check = evaluations(again)["raw_clicks_contract"]
    assert not check.passed and check.metadata["aggregates"].value["duplicate_ids"] == 1


def test_a_later_delivery_is_sampled_from_its_own_rows(tmp_path):
    """GE sees the run's rows: all of them when they fit the sample, else exactly ``sample_rows`` of them
    (a sample of the whole table, filtered afterwards, would hold only a sliver of a small delivery)."""
    root = tmp_path / "data"
    config = {"ops": {"raw_contracts": {"config": {"sample_rows": 1_000, "ge_every_delivery": True}}}}

    def deliver(name: str, first: int, n: int):
        write(root, "clicks", name, CLICKS, [f"e{i:06d},u{i % 70},s{i // 4},{TS},view,p{i},books" for i in range(first, first + n)])
        result = dg.materialize([*assets, *asset_checks], resources=build_resources(root), raise_on_error=False, run_config=config)
        check = evaluations(result)["raw_clicks_contract"]
        assert check.passed, check.metadata["report"].value
        return check.metadata["sample_rows"].value

    assert deliver("c1.csv", 0, 6_000) == 1_000  # the first load: a reservoir (too small for vectors)
    assert deliver("c2.csv", 6_000, 300) == 300  # fits: every new row
    assert deliver("c3.csv", 6_300, 2_500) == 1_000  # a reservoir of the new rows


def test_check_finds_an_id_repeated_across_files_of_one_run(tmp_path):
    """Ids ascending within each file are unique there; a repeat across files is found where their ranges overlap."""
    root = tmp_path / "data"
    good_landing(root)
    write(root, "orders", "o2.csv", ORDERS, [f"x{i:03d},u1,{TS},5,1,,,completed" for i in range(50, 60)])
    write(root, "orders", "o3.csv", ORDERS, [f"x{i:03d},u2,{TS},5,1,,,completed" for i in range(55, 70, 2)])
    result = materialize(tmp_path)
    check = evaluations(result)["raw_orders_contract"]
    assert check.passed and check.metadata["aggregates"].value["duplicate_ids"] == 0  # the loader kept the first x055..
    # Behind the loader's back: o3.csv gets x052 (inside o2.csv's range, outside o1.csv's), still ascending in its file.
    query(tmp_path, "UPDATE raw.orders SET order_id = 'x052' WHERE order_id = 'x061'")
    alone = orders_checks_alone(root)
    check = evaluations(alone)["raw_orders_contract"]
    assert not check.passed and check.metadata["aggregates"].value["duplicate_ids"] == 1


def test_a_routine_delivery_whose_counts_pass_does_not_run_ge(tmp_path):
    """GE runs on the first load and when a count fails; a later clean delivery is decided by the counts alone."""
    root = tmp_path / "data"
    good_landing(root)
    first = evaluations(materialize(tmp_path))["raw_orders_contract"]
    assert first.passed and first.metadata["sample_rows"].value == 40 and "failed_expectations" in first.metadata
    write(root, "orders", "o2.csv", ORDERS, [f"x{i:03d},u1,{TS},5,1,,,completed" for i in range(10)])
    later = evaluations(materialize(tmp_path))["raw_orders_contract"]
    assert later.passed and later.metadata["rows_checked"].value == 10
    assert later.metadata["sample_rows"].value == 0 and "GE not run" in later.metadata["report"].value
