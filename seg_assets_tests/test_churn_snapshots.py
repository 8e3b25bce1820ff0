"""Training snapshots: exact on a hand-checked case, and no label or feature ever reads the future.

The warehouse here is an in-memory DuckDB holding only ``staging.stg_orders`` (orders-only store: the
click and customer models have no input, as in production).
"""

from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest

from seg_assets.churn.snapshots import build_snapshot, build_snapshots, features_as_of, first_order_ts, labels_after, plan_snapshots
from seg_assets.features.sql_models import set_as_of

T = datetime(2024, 4, 30)  # the run's as-of
H = 10
ORDERS = [
    # order_id, user, ts, amount, status
    ("o1", "u1", datetime(2024, 3, 1, 10), 10.0, "completed"),
    ("o2", "u1", datetime(2024, 4, 10), 20.0, "completed"),  # exactly at cut-off c1: a feature of snapshot 1
    ("o3", "u1", datetime(2024, 4, 10, 0, 0, 1), 5.0, "completed"),  # one second after c1: label of snapshot 1
    ("o4", "u2", datetime(2024, 3, 15, 12), 30.0, "completed"),
    ("o5", "u2", datetime(2024, 4, 25), 40.0, "completed"),  # inside snapshot 0's window (c0, T]
    ("o6", "u2", datetime(2024, 4, 30, 0, 0, 1), 1000.0, "completed"),  # one second after T: never read
    ("o7", "u3", datetime(2024, 3, 20), 7.0, "cancelled"),  # known user, never a completed order
    ("o8", "u4", datetime(2024, 4, 21), 8.0, "completed"),  # first seen after c0: not in snapshot 0
]


def _warehouse(rows) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql("CREATE SCHEMA staging")
    frame = pl.DataFrame(rows, schema=["order_id", "user_id", "order_ts", "amount", "status"], orient="row").with_columns(
        items=pl.lit(1), category=pl.lit(None, dtype=pl.String), discount=pl.lit(0.0))
    con.register("orders_frame", frame)
    con.sql("CREATE TABLE staging.stg_orders AS "
            "SELECT order_id, user_id, order_ts, amount, items, category, discount, status FROM orders_frame")
    con.unregister("orders_frame")
    return con


@pytest.fixture
def con():
    connection = _warehouse(ORDERS)
    yield connection
    connection.close()


def test_plan_has_the_hand_computed_cutoffs(con):
    plan = plan_snapshots(first_order_ts(con, T), T, H, step_days=10, min_history_days=5, max_snapshots=6)
    # c_k = T - 10 - 10k while at least 5 days after the first order (2024-03-01 10:00): k = 0..4.
    assert plan.cutoffs == (datetime(2024, 4, 20), datetime(2024, 4, 10), datetime(2024, 3, 31),
                            datetime(2024, 3, 21), datetime(2024, 3, 11))
    assert plan.enough
    short = plan_snapshots(datetime(2024, 4, 1), T, H, step_days=10, min_history_days=5)
    assert short.cutoffs == (datetime(2024, 4, 20), datetime(2024, 4, 10)) and short.enough
    one = plan_snapshots(datetime(2024, 4, 12), T, H, step_days=10, min_history_days=5)
    assert not one.enough and one.reason.endswith("a model needs two cut-offs: 25 days")  # 5 before + 10 after + a step
    assert "two cut-offs" not in short.reason
    assert plan_snapshots(None, T, H).cutoffs == ()
    assert plan_snapshots(datetime(2024, 1, 1), T, 90).step_days == 30  # default step: H // 3


def test_snapshots_are_exact(con):
    plan = plan_snapshots(first_order_ts(con, T), T, H, step_days=10, min_history_days=5)
    snaps = build_snapshots(con, plan).sort("snapshot", "user_id")
    got = {(r["snapshot"], r["user_id"]): r for r in snaps.iter_rows(named=True)}
    expected = {
        # (k, user): (frequency, monetary, recency_days, churned, orders_next_h, spend_next_h)
        (0, "u1"): (3, 35.0, 10.0 - 1 / 86_400, 1, 0, 0.0),  # last order at c1 + 1 s
        (0, "u2"): (1, 30.0, 35.5, 0, 1, 40.0),  # o6 (after T) is not in the label
        (0, "u3"): (0, 0.0, 31.0, 1, 0, 0.0),  # no completed order: recency = tenure
        (1, "u1"): (2, 30.0, 0.0, 0, 1, 5.0),  # o3 (c1 + 1 s) is a label, not a feature
        (1, "u2"): (1, 30.0, 25.5, 1, 0, 0.0),
        (1, "u3"): (0, 0.0, 21.0, 1, 0, 0.0),
        (2, "u1"): (1, 10.0, 29 + 14 / 24, 0, 1, 20.0),  # o2 sits exactly on c1 = c2 + 10 days: inside (c2, c2 + H]
        (2, "u2"): (1, 30.0, 15.5, 1, 0, 0.0),
        (2, "u3"): (0, 0.0, 11.0, 1, 0, 0.0),
        (3, "u1"): (1, 10.0, 19 + 14 / 24, 1, 0, 0.0),
        (3, "u2"): (1, 30.0, 5.5, 1, 0, 0.0),
        (3, "u3"): (0, 0.0, 1.0, 1, 0, 0.0),
        (4, "u1"): (1, 10.0, 9 + 14 / 24, 1, 0, 0.0),  # u2 and u3 appear only later
    }
    assert set(got) == set(expected)
    for key, (freq, monetary, recency, churned, orders, spend) in expected.items():
        row = got[key]
        assert (row["frequency"], row["monetary"], row["churned"], row["orders_next_h"], row["spend_next_h"]) == \
            (freq, monetary, churned, orders, spend), key
        assert row["recency_days"] == pytest.approx(recency), key
        assert row["snapshot_ts"] == plan.cutoffs[key[0]] and row["as_of"] == plan.cutoffs[key[0]]
    assert got[(1, "u1")]["last_order_ts"] == datetime(2024, 4, 10)
    assert got[(1, "u1")]["orders_30d"] == 1  # 2024-03-01 10:00 is more than 30 days before 2024-04-10


def test_nothing_after_the_as_of_time_is_read(con):
    plan = plan_snapshots(first_order_ts(con, T), T, H, step_days=10, min_history_days=5)
    before = build_snapshots(con, plan)
    # A burst of purchases just after T (and much later) changes no feature and no label.
    con.sql("INSERT INTO staging.stg_orders SELECT 'late' || i, 'u' || (i % 4 + 1), TIMESTAMP '2024-04-30 00:00:01' "
            "+ i * INTERVAL 1 HOUR, 99.0, 1, NULL, 0.0, 'completed' FROM range(500) t(i)")
    after = build_snapshots(con, plan)
    assert after.equals(before)
    labels = labels_after(con, datetime(2024, 4, 20), H, T).sort("user_id")
    assert labels.rows() == [("u2", 1, 40.0), ("u4", 1, 8.0)]
    # A label window may not end after the as-of time.
    with pytest.raises(ValueError, match="future"):
        build_snapshot(con, datetime(2024, 4, 21), H, T)


def test_features_as_of_leaves_the_connection_as_of_alone(con):
    set_as_of(con, T)
    frame = features_as_of(con, datetime(2024, 3, 31))
    assert con.sql("SELECT getvariable('as_of')").fetchall()[0][0] == T
    assert sorted(frame["user_id"]) == ["u1", "u2", "u3"]
    assert frame.filter(pl.col("user_id") == "u3")["cancel_rate"].item() == 1.0


def test_users_per_snapshot_are_bounded_and_reproducible():
    rows = [(f"o{i}", f"u{i:04d}", datetime(2024, 1, 1) + timedelta(hours=i), 1.0, "completed") for i in range(2_000)]
    con = _warehouse(rows)
    plan = plan_snapshots(first_order_ts(con, T), T, H, step_days=10)
    a = build_snapshots(con, plan, max_users_per_snapshot=300, seed=1)
    b = build_snapshots(con, plan, max_users_per_snapshot=300, seed=1)
    assert a.group_by("snapshot").len()["len"].max() == 300 and a.equals(b)


def test_a_sampled_snapshot_equals_the_same_users_of_the_full_one():
    """Only the sampled users are aggregated, and their rows are exactly those of the full computation."""
    rows = [(f"o{i}", f"u{i % 700:04d}", datetime(2024, 1, 1) + timedelta(hours=5 * i), 1.0 + i % 7,
             "completed" if i % 5 else "cancelled") for i in range(2_000)]
    con = _warehouse(rows)
    cutoff = datetime(2024, 4, 15)  # about 500 users known by then
    sampled = build_snapshot(con, cutoff, H, T, max_users=300, seed=4)
    full = build_snapshot(con, cutoff, H, T, max_users=None, seed=4)
    assert sampled.height == 300 and full.height > 300
    assert sampled.equals(full.filter(pl.col("user_id").is_in(sampled["user_id"].implode())))
