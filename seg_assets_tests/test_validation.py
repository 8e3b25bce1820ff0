"""GE validation in its own process (seg_assets.expectations): same outcomes as GE in-process, failures named,
a dead process reported clearly and replaced, and the caller's process never importing GE."""

import os
import signal
import subprocess
import sys

import pandas as pd
import polars as pl
import pytest

from seg_assets import expectations as E
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


def test_the_validation_process_reports_what_ge_reports_in_process():
    remote = E.validate_frame(ORDERS, "orders", SUITE)
    local = E.run_suite(ORDERS, "orders", SUITE)
    assert repr(remote) == repr(local)  # repr: a null example is NaN, which equals nothing
    assert not remote.success and remote.evaluated == 4 and remote.rows == 4
    failed = {(f.expectation, f.column): f for f in remote.failed}
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "order_id"),
        ("expect_column_values_to_not_be_null", "amount"),
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_be_in_set", "status"),
    }
    assert failed[("expect_column_values_to_be_in_set", "status")].examples == ["lost"]
    assert failed[("expect_column_values_to_be_between", "amount")].unexpected_count == 1


def test_a_polars_frame_is_validated_and_failing_rows_are_named():
    features = pl.DataFrame({"feature": ["recency", "frequency"], "max": [400.0, 12.0], "highest": [365.0, 100.0]})
    outcome = E.validate_frame(features, "ranges", [E.expect(
        "ExpectColumnPairValuesAToBeGreaterThanB", column_A="highest", column_B="max", or_equal=True)],
        index_columns=["feature"])
    assert not outcome.success
    (failure,) = outcome.failed
    assert [row["feature"] for row in failure.examples] == ["recency"]
    assert E.validate_frame(features.filter(pl.col("feature") == "frequency"), "ranges", [E.expect(
        "ExpectColumnPairValuesAToBeGreaterThanB", column_A="highest", column_B="max", or_equal=True)]).success


def test_a_killed_validation_process_is_a_clear_error_and_the_next_validation_gets_a_new_one():
    E.start()
    pid = E._pool().submit(os.getpid).result()
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="validation process died"):
        E.validate_frame(ORDERS, "orders", SUITE)
    assert E._pool().submit(os.getpid).result() != pid
    assert E.validate_frame(ORDERS[ORDERS.order_id == "o1"], "orders", SUITE).success


def test_the_callers_process_never_imports_great_expectations():
    code = ("import sys, pandas as pd\n"
            "from seg_assets import validation as V\n"
            "from seg_assets.expectations import expect\n"
            "if __name__ == '__main__':\n"
            "    o = V.validate_frame(pd.DataFrame({'a': [1, None]}), 't', [expect('ExpectColumnValuesToNotBeNull', column='a')])\n"
            "    print(o.success, o.failed[0].unexpected_count, 'great_expectations' in sys.modules)\n")
    assert python_stdout(code).split() == ["False", "1", "False"]


def test_the_validation_process_does_not_rerun_the_callers_script(tmp_path):
    """A spawned process re-runs the parent's main script unless told not to: a script without a main guard
    (this one appends a line each time its body runs) would otherwise run twice."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import pandas as pd\n"
        "from seg_assets.expectations import expect, validate_frame\n"
        f"with open({str(marker)!r}, 'a') as fh:\n"
        "    fh.write('ran\\n')\n"
        "print(validate_frame(pd.DataFrame({'a': [1]}), 't', [expect('ExpectColumnValuesToNotBeNull', column='a')]).success)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert marker.read_text() == "ran\n"


def test_several_validations_can_be_in_flight_and_each_gets_its_own_outcome():
    """The raw checks hand GE one table's frames while DuckDB prepares the next: outcomes must not mix."""
    failing = E.submit(ORDERS, "orders", SUITE)
    passing = E.submit(ORDERS[ORDERS.order_id == "o1"], "orders", SUITE)
    assert E.outcome(passing).success and E.outcome(passing).rows == 1
    assert not E.outcome(failing).success and len(E.outcome(failing).failed) == 4
