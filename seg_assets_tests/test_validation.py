"""Validation that costs what it checks: plain check results for counts and thresholds (named in the
description, numbers in the metadata), Great Expectations for row-level expectations on samples."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pandas as pd
import polars as pl
import pytest

from seg_assets import expectations as E
from seg_assets.features.checks import range_violations
from seg_assets.ingest import checks
from seg_assets.ingest import contract as C
from seg_assets.ingest.checks import RawCheckConfig, _reject_ratio, raw_contract
from seg_assets.ingest.loader import ensure_tables
from seg_assets_tests.fresh_python import python_stdout

ORDERS = pd.DataFrame({
    "order_id": ["o1", "o2", "o2", "o4"],
    "amount": [10.0, -1.0, 5.0, None],
    "status": ["completed", "completed", "lost", "refunded"],
})
SUITE = [
    E.expect("ExpectColumnValuesToBeUnique", column="order_id"),
    E.expect("ExpectColumnValuesToNotBeNull", column="amount"),
    E.expect("ExpectColumnValuesToBeBetween", column="amount", min_value=0),
    E.expect("ExpectColumnValuesToBeInSet", column="status", value_set=["completed", "refunded"]),
]
NOW = datetime.now(UTC).replace(tzinfo=None)
BOUNDS = (NOW - timedelta(days=3650), NOW + timedelta(hours=1))


def test_ge_names_every_failing_expectation_with_examples():
    outcome = E.validate_frame(ORDERS, "orders", SUITE)
    assert not outcome.success and outcome.evaluated == 4 and outcome.rows == 4
    failed = {(f.expectation, f.column): f for f in outcome.failed}
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "order_id"),
        ("expect_column_values_to_not_be_null", "amount"),
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_be_in_set", "status"),
    }
    assert failed[("expect_column_values_to_be_in_set", "status")].examples == ["lost"]
    assert failed[("expect_column_values_to_be_between", "amount")].unexpected_count == 1
    assert E.validate_frame(pl.from_pandas(ORDERS[ORDERS.order_id == "o1"]), "orders", SUITE).success  # polars too


def test_great_expectations_is_imported_by_the_first_validation_only():
    code = ("import sys, pandas as pd\n"
            "import seg_assets.definitions as d; d.defs\n"
            "from seg_assets.expectations import expect, validate_frame\n"
            "before = 'great_expectations' in sys.modules\n"
            "o = validate_frame(pd.DataFrame({'a': [1, None]}), 't', [expect('ExpectColumnValuesToNotBeNull', column='a')])\n"
            "print(before, o.success, o.failed[0].unexpected_count, 'great_expectations' in sys.modules)\n")
    assert python_stdout(code).split() == ["False", "False", "1", "True"]


@pytest.fixture
def warehouse():
    con = duckdb.connect()
    ensure_tables(con)
    yield con
    con.close()


def _ledger(con, file_id: int, table: str, run_id: str, delivered: int, rejected: int) -> None:
    con.execute(f"INSERT INTO {C.LEDGER_TABLE} VALUES (?, 'src', ?, ?, 'csv', ?, 1, ?, ?, ?, 0, ?, 0, [], NULL, ?, ?, NULL, 0)",
                [file_id, table, f"{table}/f{file_id}.csv", f"sha{file_id}", C.STATUS_INGESTED, delivered,
                 delivered - rejected, rejected, run_id, NOW])


def _orders(con, file_id: int, rows: list[tuple]) -> None:
    """rows: (order_id, amount, status); the other contract columns get valid values."""
    columns = [c[0] for c in con.sql(f"DESCRIBE {C.ORDERS.qualified}").fetchall()]
    for i, (order_id, amount, status) in enumerate(rows):
        values = {"order_id": order_id, "user_id": "u1", "order_ts": NOW - timedelta(days=1), "amount": amount,
                  "items": 1, "discount": 0, "status": status, "_file_id": file_id, "_row": i}
        con.execute(f"INSERT INTO {C.ORDERS.qualified} BY NAME SELECT " +
                    ", ".join(f"${k} AS {k}" for k in values if k in columns), values)


def test_a_raw_contract_count_fails_the_blocking_check_and_the_description_names_the_rule(warehouse):
    _ledger(warehouse, 1, "orders", "run1", delivered=3, rejected=0)
    _orders(warehouse, 1, [("o1", 5, "completed"), ("o2", -1, "completed"), ("o2", 7, "returned")])
    result = raw_contract(warehouse, C.ORDERS, "run1", RawCheckConfig(), BOUNDS)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.description.startswith("raw.orders (3 rows of this run): duplicate_ids 1, invalid_amount 1")
    assert result.metadata["failed_rules"].value == ["duplicate_ids", "invalid_amount"]
    assert result.metadata["rows_validated"].value == 3  # GE's sample of the new rows, with examples
    assert "expect_column_values_to_be_unique(order_id)" in result.metadata["failed_expectations"].value


@pytest.mark.parametrize("per_statement", [64, 2])
def test_ids_repeated_within_and_across_the_runs_files_are_counted_exactly(warehouse, monkeypatch, per_statement):
    """Each file's ids are checked in stored order (ascending: unique within it); only files out of order and
    overlapping ranges are hashed. A file whose rows all went elsewhere (rejected, duplicates) has none here."""
    monkeypatch.setattr(checks, "FILES_PER_STATEMENT", per_statement)
    for fid in (1, 2, 3, 4):
        _ledger(warehouse, fid, "orders", "run1", delivered=3, rejected=0)
    _orders(warehouse, 1, [("o1", 5, "completed"), ("o2", 5, "completed"), ("o5", 5, "completed")])  # ascending
    _orders(warehouse, 2, [("o4", 5, "completed"), ("o3", 5, "completed"), ("o4", 5, "completed")])  # o4 twice
    _orders(warehouse, 4, [("o5", 5, "completed"), ("o6", 5, "completed")])  # o5 again (file 1's range)
    counts, rows = checks._aggregates(warehouse, C.ORDERS, [1, 2, 3, 4], *BOUNDS)
    assert rows == 8 and counts["duplicate_ids"] == 2 and counts["null_ids"] == 0


def test_older_rows_are_recounted_without_ge_while_they_hold(warehouse):
    """A run that ingested nothing into the table re-checks the latest ingesting run's rows by exact counts;
    GE's sample (a report for a person) runs only when a count is not 0."""
    _ledger(warehouse, 1, "orders", "run1", delivered=2, rejected=0)
    _orders(warehouse, 1, [("o1", 5, "completed"), ("o2", 6, "completed")])
    result = raw_contract(warehouse, C.ORDERS, "run2", RawCheckConfig(), BOUNDS)
    assert result.passed and result.description == "raw.orders (2 rows of run run1): every rule holds"
    assert "rows_validated" not in result.metadata and result.metadata["rows_checked"].value == 2


def test_a_reject_ratio_over_its_threshold_warns_with_the_numbers(warehouse):
    _ledger(warehouse, 1, "orders", "run1", delivered=10, rejected=3)
    for row, rule in enumerate(["negative:amount", "negative:amount", "unknown:status"]):
        warehouse.execute(f"INSERT INTO {C.REJECTS_TABLE} VALUES ('orders', 1, 'orders/f1.csv', ?, ?, 'x', NULL, 'run1', ?)",
                          [row, rule, NOW])
    result = _reject_ratio(warehouse, "run1", max_ratio=0.05)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.description == "3 of 10 rows rejected (30.00%) > max 5.00%; most: negative:amount 2, unknown:status 1"
    assert result.metadata["reject_ratio"].value == pytest.approx(0.3)
    assert result.metadata["rejects_by_rule"].value == {"negative:amount": 2, "unknown:status": 1}
    assert _reject_ratio(warehouse, "run1", max_ratio=0.5).passed


def test_feature_ranges_name_the_feature_and_the_bound():
    ids = pl.DataFrame([{"rows": 3, "duplicate_user_ids": 1, "user_id__nulls": 0}])
    features = pl.DataFrame({"feature": ["recency_days", "cancel_rate", "country_code"], "nulls": [0, 2, 5],
                             "min": [-3.0, 0.0, 1.0], "max": [10.0, 1.5, 2.0], "nulls_allowed": [0, 0, None],
                             "lowest": [0.0, 0.0, None], "highest": [None, 1.0, None]})
    assert range_violations(ids, features) == [
        "duplicate_user_ids 1", "recency_days: min -3 < lowest 0", "cancel_rate: 2 nulls (allowed 0)",
        "cancel_rate: max 1.5 > highest 1"]


def test_a_run_that_ingested_other_tables_has_nothing_new_to_check_here(warehouse):
    """In a refresh whose ingestion brought no file for this table, the check passes without re-counting the last
    delivery (run alone, it re-checks the latest ingesting run's rows: the test above)."""
    _ledger(warehouse, 1, "orders", "run1", delivered=3, rejected=0)
    _orders(warehouse, 1, [("o1", 5, "completed"), ("o2", -1, "completed"), ("o2", 7, "returned")])  # bad, but old
    result = raw_contract(warehouse, C.ORDERS, "run2", RawCheckConfig(), BOUNDS, ingested_here=True)
    assert result.passed and result.description == "raw.orders: no new file in this run, nothing new to check"
    assert result.metadata["rows_checked"].value == 0
    assert not raw_contract(warehouse, C.ORDERS, "run1", RawCheckConfig(), BOUNDS, ingested_here=True).passed
