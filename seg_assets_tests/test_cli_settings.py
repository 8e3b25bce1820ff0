"""`seg-assets refresh`'s settings checked before the run, through typer's runner on real files: unknown or
out-of-range settings, configuration files, environment settings (DuckDB's memory limit too), sentiment lexicons and
an as-of in the future are one line and exit 2, and nothing runs."""

import pytest

from seg_assets.automation.run_config import merge, parse_assignment, refresh_run_config
from seg_assets.cli import app
from seg_assets_tests.cli_runner import runner


def test_unknown_settings_are_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    typo = runner.invoke(app, ["refresh", "--set", "churn_model.min_aucc=0.7"])
    assert typo.exit_code == 2 and "Traceback" not in typo.output
    assert "unknown setting churn_model.min_aucc: churn_model has fields " in typo.output and "min_auc," in typo.output
    wrong_type = runner.invoke(app, ["refresh", "--set", "churn_model.min_auc=high"])
    assert wrong_type.exit_code == 2 and "invalid setting" in wrong_type.output and "min_auc" in wrong_type.output
    # a value outside a Config field's limits is refused before the run (its step refused it after ingestion ran)
    limit = runner.invoke(app, ["refresh", "--set", "basket_rules.min_support=0"])
    assert limit.exit_code == 2 and "Traceback" not in limit.output
    assert "invalid setting: basket_rules.min_support: Input should be greater than 0" in limit.output
    floor = runner.invoke(app, ["refresh", "--set", "analytics__next_best_action.explore_floor=1.5"])
    assert floor.exit_code == 2 and "invalid setting: analytics__next_best_action.explore_floor: Input should be less than " \
        "or equal to 1" in floor.output, floor.output
    # settings that only make sense together (thresholds in order) are checked together, before the run too
    order = runner.invoke(app, ["refresh", "--set", "analytics__user_segments.at_risk_max_recency_days=10"])
    assert order.exit_code == 2 and "Traceback" not in order.output
    assert "invalid setting: analytics__user_segments: Value error, recency thresholds must not decrease" in order.output
    # one meaning in two ops: the model's "new" stage and the rules' lifecycle_stage drifted apart when one was set
    new = runner.invoke(app, ["refresh", "--set", "segment_model.new_max_tenure_days=14"])
    said = " ".join(new.output.split())
    assert new.exit_code == 2 and "segment_model.new_max_tenure_days=14" in said and "set them to one value" in said, said
    from seg_assets.automation.limits import check_limits
    from seg_assets.definitions import defs

    both = {"ops": {op: {"config": {"new_max_tenure_days": 14.0}} for op in ("segment_model", "analytics__user_segments")}}
    check_limits(defs.resolve_job_def("refresh"), both)  # set together: accepted
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()
    config = tmp_path / "settings.yaml"
    config.write_text("ops:\n  no_such_op:\n    config:\n      x: 1\n")
    unknown_op = runner.invoke(app, ["refresh", "--config", str(config)])
    assert unknown_op.exit_code == 2
    assert "unknown setting no_such_op.x: no_such_op is not an op with settings" in unknown_op.output
    config.write_text("resources:\n  settings: {}\n")
    assert "expected only 'ops:'" in runner.invoke(app, ["refresh", "--config", str(config)]).output
    config.write_text("ops: [1, 2]\n")  # was an AttributeError traceback
    listed = runner.invoke(app, ["refresh", "--config", str(config)])
    assert listed.exit_code == 2 and "ops must hold op names" in listed.output and "Traceback" not in listed.output
    # environment settings: one line, exit 2, before anything runs (tracebacks, or a failure mid-run)
    (tmp_path / "data" / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "data" / "landing" / "orders" / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n")
    for env, value, words in (("SEG_SETTLE_SECONDS", "abc", "not a number of seconds"), ("SEG_SETTLE_SECONDS", "nan", "from 0"),
                              ("SEG_DUCKDB_MEMORY_LIMIT", "0KB", "not a size from 64MB"),
                              ("DAGSTER_HOME", str(config), "is a file, not a folder"),
                              ("SEG_SQL_DIR", str(tmp_path / "no_models"), "no such folder of SQL models")):
        monkeypatch.setenv(env, value)
        bad = runner.invoke(app, ["refresh"])
        assert bad.exit_code == 2 and words in bad.output and "Traceback" not in bad.output, (env, value, bad.output)
        monkeypatch.delenv(env)


@pytest.mark.parametrize("setting, words", [
    ("segment_model.k_max=1000000000000000000000", "segment_model.k_max: Input should be less than or equal to 50"),
    ("segment_model.seed=100000000000000000000000", "segment_model.seed: Input should be less than or equal to"),
    ("churn_model.seed=-1", "churn_model.seed: Input should be greater than or equal to 0"),
    ("basket_rules.top_rules=1000000", "basket_rules.top_rules: Input should be less than or equal to 100"),
    # day counts past a century overflowed Python's dates mid-run ("unexpected: please report it")
    ("churn_model.horizon_days=1000000000", "churn_model.horizon_days: Input should be less than or equal to 36500"),
    ("analytics__user_recommendations.exclude_days=3000000", "exclude_days: Input should be less than or equal to 36500"),
    ("churn_model.threads=100000", "churn_model.threads: Input should be less than or equal to 1024"),
])
def test_settings_that_size_something_have_a_sane_bound(tmp_path, monkeypatch, setting, words):
    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = runner.invoke(app, ["refresh", "--set", setting])
    assert result.exit_code == 2 and "Traceback" not in result.output and words in result.output, result.output


@pytest.mark.parametrize("name, content, words", [
    ("sources.yaml", "sources:\n  s:\n    table: orders\n    columns: {user_id: current_database()}\n", "reads state"),
    ("sources.yaml", "sources: {}\nsources: {}\n", "duplicate key 'sources'"),
    ("actions.yaml", "actions:\n  a/b: {}\n", "action id 'a/b' must use letters"),
    ("actions.yaml", "actions:\n  w:\n    cost_per_send: .inf\n", "not a finite number"),
    ("actions.yaml", None, "is a folder, not a file"),
])
def test_a_bad_configuration_file_is_one_line_and_exit_2_before_the_run(tmp_path, monkeypatch, name, content, words):
    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                       "o1,u1,2026-03-01T00:00:00Z,1,1,completed\n")
    (root / name).mkdir() if content is None else (root / name).write_text(content)
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("SEG_SOURCES_FILE", raising=False)
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)
    result = runner.invoke(app, ["refresh"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error ") and words in result.output and name in result.output, result.output
    assert not (root / "warehouse.duckdb").exists() and not (root / "dagster_home").exists()


def test_settings_are_yaml_scalars_laid_over_the_refresh_config():
    laid = merge(refresh_run_config(), parse_assignment("segment_model.k_max=6"))
    assert laid["ops"]["segment_model"]["config"] == {"fit": "when_needed", "k_max": 6}
    assert parse_assignment("churn_model.kind=logreg")["ops"]["churn_model"]["config"] == {"kind": "logreg"}
    assert parse_assignment("x.flag=true")["ops"]["x"]["config"]["flag"] is True


def test_duckdb_memory_limit_is_applied_and_a_bad_one_is_one_line(tmp_path, monkeypatch):
    from seg_assets.resources import build_resources

    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("SEG_DUCKDB_MEMORY_LIMIT", "1500MB")
    with build_resources(tmp_path / "data")["duckdb"].get_connection() as con:
        limit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.replace(" ", "") in ("1.3GiB", "1.4GiB", "1.5GB")  # DuckDB shows it in its own units
    monkeypatch.setenv("SEG_DUCKDB_MEMORY_LIMIT", "lots")
    bad = runner.invoke(app, ["refresh"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "SEG_DUCKDB_MEMORY_LIMIT='lots' is not a size" in bad.output


def test_a_bad_lexicon_is_one_line_before_the_run_and_a_pipe_there_does_not_hang(tmp_path, monkeypatch):
    """A lexicon was checked only when the review step reached it (after ingestion and features), and the "segments
    are current" check read a pipe in sentiment/ until its writer came (forever) or /dev/zero until memory ran out."""
    import os

    root = tmp_path / "data"
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n")
    (root / "sentiment").mkdir()
    (root / "sentiment" / "de.txt").write_text("gut 2.0\n")  # a space, not a tab
    monkeypatch.setenv("SEG_DATA_DIR", str(root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    bad = runner.invoke(app, ["refresh"])
    assert bad.exit_code == 2 and "de.txt:1: expected 'token<TAB>valence'" in bad.output and "Traceback" not in bad.output
    assert not (root / "warehouse.duckdb").exists()
    (root / "sentiment" / "de.txt").unlink()
    os.mkfifo(root / "sentiment" / "de.txt")
    from seg_assets.publish.state import lexicon_fingerprint
    from seg_assets.settings import data_paths

    assert lexicon_fingerprint(data_paths(root))  # returns (a pipe is not read), the run then refuses it in one line
    piped = runner.invoke(app, ["refresh"])
    assert piped.exit_code == 2 and "not a regular file" in piped.output
    (root / "sentiment" / "de.txt").unlink()
    (root / "sentiment" / "german.txt").write_text("gut\t2.0\n")  # would never be used
    named = runner.invoke(app, ["refresh"])
    assert named.exit_code == 2 and "'german' is no language code the identifier knows" in named.output
    assert not (root / "warehouse.duckdb").exists()


def test_an_as_of_in_the_future_is_refused(tmp_path, monkeypatch):
    """--as-of 2030-01-01 closed attribution windows no order could fill yet, fed the policy zero conversions and dated
    audiences in 2030. Refused on the command line and as the resource's setting (a run launched from the UI)."""
    from seg_assets.resources import SegSettings

    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["refresh", "--as-of", "2030-01-01T00:00:00Z"])
    assert result.exit_code == 2 and "is in the future" in " ".join(result.output.split())
    with pytest.raises(ValueError, match="is in the future"):
        SegSettings(data_dir=str(tmp_path), as_of="2030-01-01T00:00:00Z")
    assert SegSettings(data_dir=str(tmp_path), as_of="2026-10-31T23:59:59Z").as_of


@pytest.mark.parametrize("resources, words", [
    ({"settings": {"config": {"data_dir": "EVIL"}}}, "resources.settings.config.data_dir"),
    ({"settings": {"config": {"data_dir": {"env": "OTHER_ROOT"}}}}, "resources.settings.config.data_dir"),
    ({"duckdb": {"config": {"database": "EVIL/w.duckdb"}}}, "resources.duckdb.config.database"),
    ({"duckdb": {"config": {"database": "DATA/warehouse.duckdb", "connection_config": {"temp_directory": "EVIL"}}}},
     "resources.duckdb.config.connection_config"),
    ({"engine": {"config": {"conf": {"spark.driver.extraJavaOptions": "-Dx=1"}}}}, "resources.engine.config.conf"),
    ({"engine": {"config": {"kind": "spark", "master": "MASTER"}}}, "resources.engine.config.kind"),
    # a block given whole: a field left out is the class default, not the deployment's (SEG_* below)
    ({"duckdb": {"config": {"database": "DATA/warehouse.duckdb"}}}, "resources.duckdb.config without connection_config"),
    ({"engine": {"config": {"kind": "duckdb"}}}, "resources.engine.config without master"),
    ({"settings": {"config": {"data_dir": "DATA", "as_of": "2026-10-01T00:00:00"}}},
     "resources.settings.config without settle_seconds (Dagster then takes '5.0')"),
])
def test_a_run_config_from_the_launchpad_cannot_move_the_data_root(tmp_path, monkeypatch, resources, words):
    """The CLI refuses `resources:` in --config; the Dagster launchpad takes any resource field. A tester's run with
    `settings.data_dir` set to another folder read that folder's landing/ into this warehouse and published there."""
    import dagster as dg

    from seg_assets.definitions import build_defs

    evil = tmp_path / "evil"
    (evil / "landing" / "orders").mkdir(parents=True)
    (evil / "landing" / "orders" / "a.csv").write_text("order_id,user_id,order_ts,amount,items,status\n"
                                                         "o1,u1,2026-10-01T10:00:00Z,10,1,completed\n")
    (tmp_path / "data" / "landing").mkdir(parents=True)
    monkeypatch.setenv("OTHER_ROOT", str(evil))
    monkeypatch.setenv("SEG_DUCKDB_MEMORY_LIMIT", "1GB")
    monkeypatch.setenv("SEG_SPARK_MASTER", "spark://cluster:7077")
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "600")
    def place(value):
        return value.replace("EVIL", str(evil)).replace("DATA", str(tmp_path / "data")).replace(
            "MASTER", "spark://cluster:7077") if isinstance(value, str) else (
            {k: place(v) for k, v in value.items()} if isinstance(value, dict) else value)
    resources = place(resources)
    job = build_defs(tmp_path / "data").resolve_job_def("refresh")
    result = job.execute_in_process(run_config={**refresh_run_config(), "resources": resources},
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    said = [ev.event_specific_data.error.message for ev in result.all_events
            if ev.event_type_value == "RESOURCE_INIT_FAILURE" and ev.event_specific_data.error]
    assert said and words in said[0] and "deployment's" in said[0] and "\n" not in said[0].strip(), said
    assert not (tmp_path / "data" / "warehouse.duckdb").exists() and sorted(p.name for p in evil.iterdir()) == ["landing"]


def test_a_run_config_may_still_set_the_runs_own_settings(tmp_path, monkeypatch):
    """The launchpad asks for data_dir beside as_of (a resource's config is given whole): the deployment's own is fine,
    written as another path to the same folder or read from the deployment's own variable."""
    import dagster as dg

    from seg_assets.resources import build_resources

    monkeypatch.setenv("SEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SEG_SETTLE_SECONDS", "600")  # a run may set its own settle time, not lose the deployment's
    got = []

    @dg.asset
    def probe(settings: dg.ResourceParam[dg.ConfigurableResource], duckdb: dg.ResourceParam[dg.ConfigurableResource],
              engine: dg.ResourceParam[dg.ConfigurableResource]):
        got.append((settings.as_of, duckdb.other_process_wait_seconds))

    job = dg.Definitions(assets=[probe], resources=build_resources(tmp_path / "data")).get_implicit_global_asset_job_def()
    for data_dir in (str(tmp_path / "data" / ".." / "data"), {"env": "SEG_DATA_DIR"}):
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config={
            "resources": {
                "settings": {"config": {"data_dir": data_dir, "as_of": "2026-10-01T00:00:00", "settle_seconds": 1}},
                "duckdb": {"config": {"database": str(tmp_path / "data" / "warehouse.duckdb"),
                                      "other_process_wait_seconds": 5}},
                "engine": {"config": {"kind": "duckdb"}}}})
        assert result.success, [ev.message for ev in result.all_events if ev.is_failure]
    assert got == [("2026-10-01T00:00:00", 5.0)] * 2
