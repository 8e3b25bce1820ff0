"""What `seg-assets refresh` says: the summary's model and campaign lines, an input problem in one line and a bug
with its traceback, the closing line (the cause first, then the files not taken in), and names with brackets
printed as they are."""

import dagster as dg

from seg_assets.cli import app
from seg_assets_tests.cli_runner import runner


def test_the_summary_names_the_model_in_service_and_a_refused_refit():
    import duckdb

    from seg_assets.report import model_line
    from seg_assets.segmentation import registry

    con = duckdb.connect()
    con.sql("CREATE SCHEMA meta")
    registry.ensure_tables(con)
    con.sql("INSERT INTO meta.segment_models (version, k, fitted_at, data_as_of, promoted, in_service, reason, fit_reason) "
            "VALUES ('v0001', 5, '2026-11-01', '2026-10-31', true, true, 'the first model', 'no model in service'), "
            "('v0002', 6, '2026-11-15', '2026-11-14', false, false, 'worse than the model in service: stability', "
            "'a re-fit was asked for (fit=always)')")
    assert model_line(con) == ("Segment model v0001 in service (5 segments, fitted on data as of 2026-10-31); the latest "
                               "re-fit v0002, fitted because a re-fit was asked for (fit=always), was refused: worse than "
                               "the model in service: stability")
    con.sql("UPDATE meta.segment_models SET in_service = (version = 'v0002'), promoted = true, reason = 'not worse'")
    assert model_line(con) == ("Segment model v0002 in service (6 segments, fitted on data as of 2026-11-14): fitted "
                               "because a re-fit was asked for (fit=always); promoted: not worse")
    con.sql("DELETE FROM meta.segment_models WHERE version = 'v0002'")
    con.sql("UPDATE meta.segment_models SET in_service = true, reason = 'the first model'")
    assert model_line(con) == ("Segment model v0001 in service (5 segments, fitted on data as of 2026-10-31): fitted "
                               "because no model in service; promoted: the first model")


def test_the_summary_says_what_campaigns_measured_and_which_policy_serves():
    import duckdb

    from seg_assets.activation.policies import POLICIES_DDL
    from seg_assets.report import activation_lines

    con = duckdb.connect()
    con.sql("CREATE SCHEMA meta; CREATE SCHEMA analytics")
    assert activation_lines(con) == []  # no campaign sent: nothing to say
    con.sql("CREATE TABLE analytics.campaign_lift AS SELECT * FROM (VALUES ('c1', 5), ('c1', 0), ('c2', 9)) t(campaign_id, n_control)")
    con.sql(POLICIES_DDL)
    con.sql("INSERT INTO meta.policies (policy_version, fitted_at, promoted, reason) VALUES "
            "('p1', '2026-11-01', true, 'no policy in service'), ('p2', '2026-11-08', false, 'worse beyond noise')")
    assert activation_lines(con) == [
        "Campaign lift: 2 campaign(s), 3 campaign x action x segment cells (1 without control users: no interval)",
        "Next best action: policy p1 in service; the latest candidate p2 was refused: worse beyond noise"]
    con.sql("ALTER TABLE analytics.campaign_lift ADD COLUMN conversion_test VARCHAR DEFAULT 'exact'")
    assert activation_lines(con)[0] == ("Campaign lift: 2 campaign(s), 3 campaign x action x segment cells (1 without "
                                        "control users: no interval; 3 too small for the usual test: exact test, wide interval)")


def test_a_failure_is_one_line_and_a_bug_keeps_its_traceback():
    """dg.Failure (an input problem the asset explains) vs any other exception (a bug to report)."""
    from seg_assets.errors import input_failure
    from seg_assets.refresh import _failures

    @dg.op
    def bad_input():
        raise input_failure("orders/x.csv: no 'order_id' column; rename the id column to order_id")

    @dg.op
    def bug():
        raise ZeroDivisionError("division by zero")

    @dg.job(op_retry_policy=dg.RetryPolicy(max_retries=1))
    def both():
        bad_input()
        bug()

    result = both.execute_in_process(raise_on_error=False, run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    problems = {problem.where: problem for _, _, problem in _failures(result)}
    assert problems["bad_input"].message == "orders/x.csv: no 'order_id' column; rename the id column to order_id"
    assert problems["bad_input"].traceback is None
    assert problems["bug"].message.startswith("ZeroDivisionError: division by zero (unexpected")
    assert "Traceback" in problems["bug"].traceback or "File " in problems["bug"].traceback


def test_a_rejected_file_is_one_line_and_the_cause_in_the_closing_line(tmp_path, monkeypatch):
    """An unconverted file in landing/orders: exit 1, no traceback, the file and what to do, nothing published yet."""
    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "export.csv").write_text("customer,date,qty,amount\n1,19970101,1,29.33\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Stack Trace" not in result.output
    [closing] = [line for line in result.output.splitlines() if line.startswith("Refresh failed")]
    assert "orders/export.csv: rejected file: missing required column" in closing
    assert "land the file with the column under a new name" in closing
    assert "correct it to the data contract" not in closing  # the advice once (the generic one repeated it)
    assert closing.count("missing required column") == 1, closing  # the empty warehouse's first problem is that file
    assert closing.endswith("Nothing has been published yet.") and "left as they were" not in closing


def test_the_closing_line_names_what_failed_the_refresh_before_files_not_taken_in(tmp_path):
    """A file held back from an earlier delivery was named first and the failed step (the real cause) after it."""
    from seg_assets.cli import _closing_line
    from seg_assets.refresh import Problem, RefreshOutcome
    from seg_assets.settings import data_paths

    outcome = RefreshOutcome(False, [], problems=[Problem("file", "orders/old.parquet", "failed: cut short"),
                                                  Problem("warning", "bi__segments", "slow"),
                                                  Problem("error", "bi__segments", "PermissionError: bi/ is read-only")])
    line = _closing_line(outcome, data_paths(tmp_path).ensure())
    assert line.index("bi__segments: PermissionError") < line.index("orders/old.parquet") and "slow" not in line


def test_names_and_values_with_brackets_are_printed_as_they_are(tmp_path, monkeypatch):
    """rich reads ``[...]`` as markup: a data root ``shop[eu]`` was printed without ``[eu]``, and a column named like a
    closing tag (``[/b]``) in a message would have stopped the CLI with a MarkupError."""
    root = tmp_path / "shop[eu]"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "[b]a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                         "o1,u1,2026-10-01T10:00:00Z,5,1,completed\n"
                                                         "o2,u1,2026-10-01T11:00:00Z,[/b],1,completed\n")
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert "MarkupError" not in result.output and "Traceback" not in result.output, result.output
    flat = " ".join(result.output.split())
    assert "shop[eu]/dagster_home" in flat and "orders/[b]a.csv: 1 of 2 rows rejected" in flat
    assert "unparseable amount: '[/b]'" in flat


def test_a_failed_blocking_check_is_its_one_line_not_an_unexpected_error(tmp_path, monkeypatch):
    """A blocking check that fails raises Dagster's DagsterAssetCheckFailedError in its step: it was shown as
    "unexpected: please report it with the traceback", a stack trace, beside the check's own line (a reviewer's)."""
    from seg_assets.features import checks

    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "a.csv").write_text(
        "order_id,user_id,order_ts,amount,items,status\n"
        + "".join(f"o{i},u{i % 7},2026-10-0{1 + i % 9}T10:00:00Z,{5 + i},1,completed\n" for i in range(40)))
    monkeypatch.setattr(checks, "range_violations", lambda ids, features: ["monetary: 3 nulls (allowed 0)"])
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh", "--no-summary"])
    assert result.exit_code == 1, result.output
    assert "unexpected" not in result.output and "Stack Trace" not in result.output, result.output
    [closing] = [line for line in result.output.splitlines() if line.startswith("Refresh failed")]
    assert "user_features_valid: failed: features.user_features" in closing and "monetary: 3 nulls" in closing, closing

