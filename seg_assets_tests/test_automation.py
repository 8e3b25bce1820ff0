"""Declarative automation, evaluated without a daemon on a real instance and real materializations."""

import os
import shutil
import time
import warnings
from datetime import timedelta

import dagster as dg
import pytest

from seg_assets.automation.jobs import refresh_run_config
from seg_assets.definitions import all_assets, all_checks, build_defs
from seg_assets.demo.generate import DEFAULT_END, generate_followup
from seg_assets.resources import build_resources
from seg_assets.segmentation.assets import DRIFT_CHECK, SEGMENT_CLASSIFIER, SEGMENT_MODEL
from seg_assets.segmentation.scoring import USER_SEGMENTS

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def requested(defs, result) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(k)}


def check_requested(result, key: dg.AssetCheckKey) -> bool:
    """get_num_requested counts assets only; a check's own evaluation says whether it is requested."""
    return any(r.key == key and r.true_subset.size for r in result.results)


def materialize_groups(defs, instance, *groups):
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.materializable_asset_keys if graph.get(k).group_name in groups]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=keys, run_config=QUIET)
    assert result.success


@pytest.fixture(scope="module")
def refreshed_run_template(small_landing, tmp_path_factory):
    """A data root after one refresh, its run with every event (as `dagster debug export` keeps it) and the automation
    cursor from before it: built once per module, each test gets copies (`refreshed_instance`)."""
    from dagster._core.debug import DebugRunPayload

    root = tmp_path_factory.mktemp("automation") / "data"
    shutil.copytree(small_landing, root)
    _, instance, cursor = _refresh(root)
    return root, [DebugRunPayload.build(instance, run) for run in instance.get_runs()], cursor


def _refresh(root):
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    defs, instance = build_defs(root), dg.DagsterInstance.ephemeral()
    start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert defs.resolve_job_def("refresh").execute_in_process(instance=instance, run_config={**refresh_run_config(), **QUIET}).success
    return defs, instance, start.cursor


@pytest.fixture()
def refreshed_instance(refreshed_run_template, data_dir):
    """`data_dir` and an instance as one refresh left them (a refresh is 7-12 s of each of these tests). A copied data
    root is not "current" (its files are other files, BI's views read the template's folder): tests of that use
    `refreshed_here`."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    root, runs, cursor = refreshed_run_template
    shutil.rmtree(data_dir)
    shutil.copytree(root, data_dir, symlinks=True)
    return build_defs(data_dir), dg.DagsterInstance.ephemeral(preload=runs), cursor


@pytest.fixture()
def refreshed_here(data_dir):
    """`data_dir` refreshed in place, with its instance and the automation cursor from before the refresh."""
    return _refresh(data_dir)


def test_a_refresh_leaves_nothing_for_automation_to_redo(refreshed_instance):
    defs, instance, cursor = refreshed_instance
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert requested(defs, after) == set()


def test_new_features_are_rescored_without_retraining(refreshed_instance):
    defs, instance, cursor = refreshed_instance
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    materialize_groups(defs, instance, "features")  # someone rebuilt features in the UI
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    wanted = requested(defs, after)
    assert USER_SEGMENTS.to_user_string() in wanted and "bi/segments" in wanted
    assert SEGMENT_CLASSIFIER.to_user_string() not in wanted and SEGMENT_MODEL.to_user_string() not in wanted


def test_population_drift_triggers_a_refit(refreshed_instance, data_dir):
    defs, instance, cursor = refreshed_instance
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    # A campaign doubles sign-ups and half of the users change behaviour: tenure and recency shift.
    generate_followup(data_dir, users=3_000, days=30, seed=5, start=DEFAULT_END + timedelta(seconds=1),
                      changed_share=0.5, new_users=3_000, tag="campaign")
    materialize_groups(defs, instance, "ingest", "features")
    step = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    drift_check = DRIFT_CHECK
    assert check_requested(step, drift_check)  # the drift check follows new features
    result = dg.materialize([*all_assets(), *all_checks()], selection=dg.AssetSelection.checks(drift_check),
                            instance=instance, resources=build_resources(data_dir))
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["max_psi"].value > 0.25
    refit = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=step.cursor)
    assert refit.get_num_requested(SEGMENT_MODEL) == 1


def test_the_drift_check_reuses_the_psi_segment_model_measured_in_its_run(refreshed_instance, data_dir):
    """A refresh that keeps the model measures PSI once (in segment_model); the check alone measures the same."""
    defs, instance, _ = refreshed_instance
    drift_check = DRIFT_CHECK
    kept = defs.resolve_job_def("refresh").execute_in_process(instance=instance, run_config={**refresh_run_config(), **QUIET})
    [mat] = kept.asset_materializations_for_node("segment_model")
    assert mat.metadata["decision"].value.startswith("kept")
    [in_run] = [e for e in kept.get_asset_check_evaluations() if e.asset_check_key == drift_check]
    alone = dg.materialize([*all_assets(), *all_checks()], selection=dg.AssetSelection.checks(drift_check),
                           instance=instance, resources=build_resources(data_dir))
    [measured] = alone.get_asset_check_evaluations()
    assert in_run.metadata["psi_measured_by"].value == "segment_model, in this run"
    assert measured.metadata["psi_measured_by"].value == "this check"
    assert in_run.metadata["max_psi"].value == pytest.approx(measured.metadata["max_psi"].value, abs=1e-12)
    assert in_run.metadata["psi_by_feature"].value == measured.metadata["psi_by_feature"].value


def test_the_landing_sensor_does_not_redo_what_a_run_ingested(refreshed_here, data_dir):
    """The refresh ran outside the sensor (as `seg-assets refresh` does): its files are not requested again."""
    defs, instance, _ = refreshed_here
    sensor = defs.resolve_sensor_def("landing_sensor")
    resources = build_resources(data_dir)
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
    assert not tick.run_requests and "no new settled files" in tick.skip_message
    orders = sorted((data_dir / "landing" / "orders").iterdir())[0]
    os.utime(orders, (time.time() - 60, time.time() - 60))  # touched (a sync tool, a person): the same file, no run
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=tick.cursor))
    assert not tick.run_requests and tick.skip_message.startswith("segments are current"), tick.skip_message
    late = shutil.copy(orders, orders.with_name("late_" + orders.name))
    os.utime(late, (time.time() - 60, time.time() - 60))  # settled
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=tick.cursor))
    [request] = tick.run_requests
    assert request.run_key.startswith(f"orders/late_{orders.name}:") and "|" not in request.run_key


def test_the_landing_sensor_names_the_files_no_run_will_read(tmp_path):
    """A Segment export dropped as NDJSON is no format ingestion reads: the CLI names it ("unknown format"), but the
    sensor's tick said only "no new settled files (0 known)", the one word a UI-only deployment gets between the
    hourly runs (a tester's, session 33). The tick names such files and why, as the CLI does."""
    from seg_assets.definitions import defs

    (tmp_path / "landing" / "clicks").mkdir(parents=True)
    (tmp_path / "landing" / "clicks" / "events.ndjson").write_text('{"type": "track"}\n')
    (tmp_path / "landing" / "clicks" / "next.csv.part").write_text("event_id\n")  # in progress: by design, unnamed
    sensor = defs.resolve_sensor_def("landing_sensor")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                                        resources=build_resources(tmp_path)))
    assert not tick.run_requests
    assert tick.skip_message == ("no new settled files (0 known); not read: clicks/events.ndjson: unknown format "
                                 "(.ndjson): land it as .csv, .csv.gz or .parquet"), tick.skip_message


def test_the_dead_cli_runs_sensor_fails_runs_whose_process_is_gone():
    """Under `make ui` the daemon frees the pool a killed `seg-assets refresh` held, without waiting for the next one."""
    import socket
    import subprocess
    import sys
    import uuid

    from seg_assets.automation.instance import HOST_TAG, PID_TAG
    from seg_assets.definitions import defs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    instance = dg.DagsterInstance.ephemeral()
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="refresh", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()}))
    sensor = defs.resolve_sensor_def("dead_cli_runs")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert tick.skip_message == f"marked failed: {run_id}"
    assert sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).skip_message == "no run of a dead process"


def test_a_refused_candidate_does_not_trigger_a_refit(refreshed_instance):
    """Only the drift check re-fits: candidate_promoted failing (the gate kept the model in service) is not drift,
    and re-fitting on it would fit the same data again."""
    defs, instance, cursor = refreshed_instance
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    refused = dg.AssetCheckKey(SEGMENT_MODEL, "candidate_promoted")
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=SEGMENT_MODEL, check_name=refused.name, passed=False, severity=dg.AssetCheckSeverity.WARN))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert after.get_num_requested(SEGMENT_MODEL) == 0
    drift_failed = dg.AssetCheckEvaluation(asset_key=SEGMENT_MODEL, check_name=DRIFT_CHECK.name, passed=False,
                                           severity=dg.AssetCheckSeverity.WARN)
    materialize_groups(defs, instance, "features")  # new features, on which the drift check fails
    instance.report_runless_asset_event(drift_failed)
    drifted = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert drifted.get_num_requested(SEGMENT_MODEL) == 1


def test_drift_that_lasts_asks_for_one_fit_per_delivery_not_one_per_tick(refreshed_instance):
    """Under dagster dev a drift the gate kept refusing re-fitted every 30 s without end: the check ran again after
    each fit, failed again and counted as "newly failed"; and automation's runs (no run config) fitted 'always'."""
    defs, instance, cursor = refreshed_instance
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    drift_failed = dg.AssetCheckEvaluation(asset_key=SEGMENT_MODEL, check_name=DRIFT_CHECK.name, passed=False,
                                           severity=dg.AssetCheckSeverity.WARN)
    materialize_groups(defs, instance, "features")
    instance.report_runless_asset_event(drift_failed)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert first.get_num_requested(SEGMENT_MODEL) == 1
    ran = defs.resolve_implicit_global_asset_job_def().execute_in_process(  # the requested run: no run config
        instance=instance, asset_selection=[SEGMENT_MODEL], run_config=QUIET)
    [mat] = ran.asset_materializations_for_node("segment_model")
    assert mat.metadata["decision"].value.startswith("kept")  # fit: when_needed by default (no drift in this data)
    instance.report_runless_asset_event(drift_failed)  # the check fails again after the model's run
    cursor = first.cursor
    for _ in range(3):
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert again.get_num_requested(SEGMENT_MODEL) == 0
        cursor = again.cursor


def test_the_hourly_schedule_skips_when_the_segments_are_current(refreshed_here, data_dir):
    """It re-materialized every asset each hour with nothing new, so the freshness policies never saw a stalled feed."""
    defs, instance, _ = refreshed_here
    schedule = defs.resolve_schedule_def("hourly_refresh")
    context = dg.build_schedule_context(instance=instance, resources=build_resources(data_dir))
    idle = schedule.evaluate_tick(context)
    assert not idle.run_requests and idle.skip_message.startswith("segments are current: nothing new in")
    orders = sorted((data_dir / "landing" / "orders").iterdir())[0]
    shutil.copy(orders, orders.with_name("late_" + orders.name))
    [request] = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, resources=build_resources(data_dir))).run_requests
    assert request.job_name in (None, "refresh")
    # published by a run that carries no op config (the sensor's, automation's): current too (it never was)
    assert defs.resolve_job_def("refresh").execute_in_process(instance=instance, run_config=QUIET).success
    again = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, resources=build_resources(data_dir)))
    assert not again.run_requests and again.skip_message.startswith("segments are current")


def test_the_files_of_a_sensor_run_that_failed_before_ingesting_are_requested_again(refreshed_instance, data_dir):
    """They were marked seen when requested: a run that failed on a warehouse held by another process left them to
    the hourly schedule. Now they are requested again, twice at most (a run that keeps failing is not repeated)."""
    defs, instance, _ = refreshed_instance
    sensor = defs.resolve_sensor_def("landing_sensor")
    resources = build_resources(data_dir)

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor,
                                                            sensor_name="landing_sensor"))

    first = tick(None)
    orders = sorted((data_dir / "landing" / "orders").iterdir())[0]
    late = shutil.copy(orders, orders.with_name("late_" + orders.name))
    os.utime(late, (time.time() - 60, time.time() - 60))
    result, cursor, keys = tick(first.cursor), None, []
    for attempt in range(3):
        [request] = result.run_requests
        keys.append(request.run_key)
        instance.add_run(dg.DagsterRun(job_name="refresh", run_id=f"failed-{attempt}", status=dg.DagsterRunStatus.FAILURE,
                                       tags={"dagster/sensor_name": "landing_sensor", "dagster/run_key": request.run_key}))
        cursor = result.cursor
        result = tick(cursor)
    assert keys == [keys[0], f"{keys[0]}#retry1", f"{keys[0]}#retry2"] and keys[0].startswith(f"orders/late_{orders.name}:")
    assert not result.run_requests and "no new settled files" in result.skip_message  # not a fourth time


def test_tables_written_by_a_run_that_did_not_finish_are_not_published_by_another(refreshed_here, data_dir):
    """A run killed after user_segments (other settings) left its table; automation's next run published it to BI,
    settings no finished run had. BI now keeps its last publication until a run rewrites the table and finishes.
    Refreshed in place: a copied root is never "current", so the "not current" below would hold whatever the code."""
    from seg_assets.publish.state import nothing_new, settings_fingerprint
    from seg_assets.settings import data_paths

    defs, instance, _ = refreshed_here
    assert nothing_new(data_paths(data_dir), settings_fingerprint({}, None))  # current before the killed run
    job = defs.resolve_implicit_global_asset_job_def()
    killed = job.execute_in_process(instance=instance, asset_selection=[USER_SEGMENTS], run_config=QUIET)
    instance.report_run_failed(instance.get_run_by_id(killed.run_id), message="killed (test)")
    bi_before = sorted(p.name for p in (data_dir / "bi").iterdir())
    publish = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["bi", "segments"])], run_config=QUIET,
                                     raise_on_error=False)
    [failure] = [e for e in publish.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert f"analytics/user_segments was last written by run {killed.run_id}, which did not finish" in \
        failure.step_failure_data.user_failure_data.description
    assert sorted(p.name for p in (data_dir / "bi").iterdir()) == bi_before
    # nor do the campaign audiences (a CRM imports them): written after the BI publication, from finished runs only
    audiences = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["bi", "audiences"])],
                                       run_config=QUIET, raise_on_error=False)
    [failure] = [e for e in audiences.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "which did not finish" in failure.step_failure_data.user_failure_data.description
    assert sorted(p.name for p in (data_dir / "bi").iterdir()) == bi_before
    assert nothing_new(data_paths(data_dir), settings_fingerprint({}, None)) is None  # the next refresh runs: not "current"
    redone = job.execute_in_process(instance=instance, asset_selection=[USER_SEGMENTS, dg.AssetKey(["bi", "segments"])],
                                    run_config=QUIET)
    assert redone.success
    # its audiences are not written yet: not "current" (a tester's run killed between the two said so, and the stale
    # audience files stayed for good)
    assert nothing_new(data_paths(data_dir), settings_fingerprint({}, None)) is None
    # A run that published BI, then failed (at the audiences, say): BI shows its tables, which are not refused.
    instance.report_run_failed(instance.get_run_by_id(redone.run_id), message="failed after publishing (test)")
    audiences = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["bi", "audiences"])],
                                       run_config=QUIET, raise_on_error=False)
    assert audiences.success, [e.step_failure_data.user_failure_data.description for e in audiences.all_events
                               if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert nothing_new(data_paths(data_dir), settings_fingerprint({}, None))  # the publication is whole now
    # A run killed after ingestion: the next run that published (automation's, re-scoring other inputs) recorded the
    # new file as reflected, though no features held its rows, and every refresh then said "Segments are current"
    # (a tester's, under `dagster dev`). A publication names only the files the features were built from.
    orders = sorted((data_dir / "landing" / "orders").iterdir())[0]
    shutil.copy(orders, orders.with_name("late_" + orders.name))
    graph = defs.resolve_asset_graph()
    ingest = [k for k in graph.materializable_asset_keys if graph.get(k).group_name == "ingest"]
    killed = job.execute_in_process(instance=instance, asset_selection=ingest, run_config=QUIET)
    instance.report_run_failed(instance.get_run_by_id(killed.run_id), message="killed after ingestion (test)")
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["bi", "segments"])],
                                  run_config=QUIET).success
    assert nothing_new(data_paths(data_dir), settings_fingerprint({}, None)) is None
    # An instance shared by two data roots: another root's failed run refused this root's publication (an operations
    # tester's). Runs carry their data root; another root's are not this one's.
    from seg_assets.automation.instance import ROOT_TAG

    other = job.execute_in_process(instance=instance, asset_selection=[USER_SEGMENTS], run_config=QUIET)
    assert instance.get_run_by_id(other.run_id).tags[ROOT_TAG] == str(data_dir.resolve())
    instance.add_run_tags(other.run_id, {ROOT_TAG: "/another/root"})
    instance.report_run_failed(instance.get_run_by_id(other.run_id), message="another root's run failed (test)")
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["bi", "segments"])],
                                  run_config=QUIET).success


def test_a_run_that_writes_the_warehouse_carries_its_process(tmp_path):
    """A daemon's run worker killed with `dagster dev` stayed STARTED and made `seg-assets refresh` wait an hour: runs
    had the pid/host tags only when the CLI started them. The warehouse resource now tags any run it serves, so a dead
    one is marked failed like a dead CLI run."""
    import socket

    from seg_assets.automation.instance import HOST_TAG, PID_TAG
    from seg_assets.resources import Warehouse

    @dg.asset
    def touches(duckdb: Warehouse) -> None:
        with duckdb.get_connection() as con:
            con.sql("SELECT 1")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([touches], resources={"duckdb": Warehouse(database=str(tmp_path / "w.duckdb"))}, instance=instance)
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == socket.gethostname()


def test_every_step_is_retried_whichever_job_runs_it(tmp_path):
    """Only the refresh job had a retry policy: runs from the UI's Materialize button and the automation sensor go
    through Dagster's implicit asset job, where 26 of 27 steps failed at the first transient error. Each asset and
    check now carries the policy, as Dagster resolves it in both jobs."""
    from dagster._core.definitions.dependency import NodeHandle

    from seg_assets.retries import TRANSIENT_RETRY

    defs = build_defs(tmp_path)
    for job in (defs.resolve_implicit_global_asset_job_def(), defs.resolve_job_def("refresh")):
        policies = {n.name: job.get_retry_policy_for_handle(NodeHandle(n.name, None)) for n in job.graph.nodes}
        assert len(policies) >= len(all_assets()) - 1
        assert {name for name, policy in policies.items() if policy != TRANSIENT_RETRY} == set(), job.name


def test_a_step_that_failed_and_was_retried_is_said(tmp_path):
    """A step that failed once and succeeded on its retry left no trace in the CLI's output (a tester's): the
    refresh's problems now carry one warning per retry, naming the step and the error."""
    from seg_assets.refresh import _retried

    tries = []

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky():
        tries.append(1)
        if len(tries) == 1:
            raise OSError("the file system hiccuped\nsecond line")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.GraphDefinition(name="flaky_job", node_defs=[flaky]).to_job().execute_in_process(instance=instance)
    assert result.success and len(tries) == 2
    [said] = _retried(instance, result.run_id)
    assert (said.kind, said.where) == ("warning", "flaky")
    assert said.message == "failed and was retried: OSError: the file system hiccuped", said.message


def test_what_bi_reads_has_the_freshness_policy_too():
    """The policies sat on features and segments only, which a failed run's writes keep fresh: with the publication
    failing every hour BI went stale while every policy stayed green (a tester's). bi/segments has one."""
    from seg_assets.definitions import build_defs
    from seg_assets.features.assets import FRESHNESS
    from seg_assets.publish.keys import BI_SEGMENTS

    assert build_defs().resolve_asset_graph().get(BI_SEGMENTS).freshness_policy == FRESHNESS
