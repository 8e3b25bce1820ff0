"""The refresh job, its hourly schedule, the landing sensor and the run-failure sensor.

The hourly schedule, the landing sensor and ``seg-assets refresh`` run the same job: every asset,
with the model and classifier fitted only ``when_needed`` (no model in service, drift, age), and only
the users with new rows recomputed; the daily rebase (``seg-assets refresh --rebase``) recomputes all. The
declarative automation (conditions.py) adds re-fits on drift and on a weekly cron, and re-scoring
after a re-fit, through the automation-condition sensor.
"""

import time
from pathlib import Path

import dagster as dg

from seg_assets.automation.instance import fail_dead_runs
from seg_assets.automation.landing import dump_cursor, load_cursor, ready_files, retry_failed, run_key
from seg_assets.automation.run_config import refresh_run_config
from seg_assets.errors import step_failure
from seg_assets.features.incremental import REBASE_TAG
from seg_assets.ingest.assets import LEDGER_KEY
from seg_assets.ingest.source_config import SourceConfigError, load_sources
from seg_assets.ingest.sources import TAKEN_FILES, scan_landing
from seg_assets.resources import SegSettings

REFRESH_JOB = "refresh"
LEDGER_PAGE = 500


refresh_job = dg.define_asset_job(
    REFRESH_JOB,
    selection=dg.AssetSelection.all(),
    config=refresh_run_config(),
    # Retries: each step's own policy (retries.py), the same under the UI's and automation's implicit job.
    description="Ingest new landing files, validate, rebuild features, re-fit when needed, re-score, record history, publish for BI.",
)

@dg.schedule(name="hourly_refresh", job=refresh_job, cron_schedule="0 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="The hourly refresh (late files and late events included): users with new rows are re-scored. "
             "Skipped when the segments are current (the rule of `seg-assets refresh`), so a stalled feed shows as stale.")
def hourly_refresh(context: dg.ScheduleEvaluationContext, settings: SegSettings):
    """A run that would change nothing is not started: it re-materialized every asset each hour, so the freshness
    policies could never notice a feed that stopped (and re-ran the drift check for nothing)."""
    current = segments_current(settings)
    if current:
        return dg.SkipReason(f"segments are current: {current}")
    return dg.RunRequest()


def segments_current(settings: SegSettings) -> str | None:
    """The CLI's "segments are current" rule for the job's own settings (publish/state.py: nothing_new): the schedule's
    and the landing sensor's."""
    from seg_assets.publish.state import nothing_new, settings_fingerprint
    from seg_assets.spark.session import engine_from_env

    return nothing_new(settings.paths, settings_fingerprint(refresh_run_config()["ops"], settings.as_of, engine_from_env()))

daily_rebase = dg.ScheduleDefinition(
    name="daily_rebase", job=refresh_job, cron_schedule="30 2 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, tags={REBASE_TAG: "true"},
    description="Once a day, every user's features and scores are recomputed as of now: users without new "
    "activity age (recency, lifecycle, churn risk) and move segments even when they do nothing.",
)


LANDING_SENSOR = "landing_sensor"


@dg.sensor(name=LANDING_SENSOR, job=refresh_job, minimum_interval_seconds=20, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a refresh for each new set of settled landing files (the rule: ingest/sources.py, is_settled).")
def landing_sensor(context: dg.SensorEvaluationContext, settings: SegSettings):
    try:
        sources = load_sources(settings.paths.root)
    except SourceConfigError as exc:
        return dg.SkipReason(f"sources.yaml cannot be used: {exc}")
    not_read: dict[str, str] = {}
    files = scan_landing(settings.paths.landing, sources, not_read)
    cursor = load_cursor(context.cursor)
    taken, cursor.ledger_storage_id = taken_since(context.instance, cursor.ledger_storage_id)
    cursor.seen |= taken  # ingested by a run the sensor did not start (the CLI, the schedule, a person)
    cursor.requested = {k: n for k, n in cursor.requested.items() if k not in taken}
    failed = context.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],  # terminated: a person's call
                                                     tags={"dagster/sensor_name": LANDING_SENSOR}), limit=20)
    retry_failed(cursor, [(r.run_id, r.tags.get("dagster/run_key", "")) for r in failed])
    ready = ready_files(files, cursor, time.time(), settings.settle_seconds)
    if not ready:
        context.update_cursor(dump_cursor(cursor, files))
        return dg.SkipReason(f"no new settled files ({len(files)} known){not_read_note(not_read)}")
    keys = sorted(f.key for f in ready)
    cursor.seen |= set(keys)
    current = segments_current(settings)  # a file touched, not changed (same path and size as published): no run
    if current:
        context.update_cursor(dump_cursor(cursor, files))
        return dg.SkipReason(f"segments are current: {current}")
    retries = max(cursor.requested.get(k, 0) for k in keys)
    cursor.requested |= {k: cursor.requested.get(k, 0) for k in keys}
    context.update_cursor(dump_cursor(cursor, files))
    return dg.RunRequest(run_key=run_key(keys, retries), tags={"seg-assets/new_files": str(len(keys))})


def not_read_note(not_read: dict[str, str], shown: int = 3) -> str:
    """The files no run will read, as the CLI names them: a UI-only deployment heard of an .ndjson export only from
    the next scheduled run's warning, the sensor's tick said "no new settled files" (a tester's, session 33)."""
    if not not_read:
        return ""
    listed = "; ".join(f"{rel}: {why}" for rel, why in sorted(not_read.items())[:shown])
    more = f"; and {len(not_read) - shown} more" if len(not_read) > shown else ""
    return f"; not read: {listed}{more}"


def taken_since(instance: dg.DagsterInstance, after: int | None) -> tuple[set[str], int | None]:
    """Keys of the landing files taken in by ledger materializations after storage id ``after``, and the last id."""
    taken: set[str] = set()
    while True:
        page = instance.fetch_materializations(dg.AssetRecordsFilter(LEDGER_KEY, after_storage_id=after),
                                               limit=LEDGER_PAGE, ascending=True).records
        for record in page:
            entry = record.asset_materialization.metadata.get(TAKEN_FILES) if record.asset_materialization else None
            taken |= set(entry.value) if entry else set()
            after = record.storage_id
        if len(page) < LEDGER_PAGE:
            return taken, after


@dg.run_failure_sensor(name="refresh_failure_log", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Logs which asset failed and why, and whether the run had published BI tables.")
def refresh_failure_log(context: dg.RunFailureSensorContext):
    from seg_assets.settings import data_paths

    published, unfinished = published_and_unfinished(context.instance, context.dagster_run.run_id, data_paths().bi)
    failed = [e for e in context.get_step_failure_events()]
    details = "; ".join(f"{e.step_key}: {_cause(e.step_failure_data)}" for e in failed) or (
        f"{', '.join(unfinished)} did not finish (its process stopped: killed or out of memory?)" if unfinished
        else context.failure_event.message.rstrip("."))
    from seg_assets.publish.state import mark_not_current

    mark_not_current(data_paths())  # it may have written tables newer than the publication: the next refresh runs
    context.log.error(f"run {context.dagster_run.run_id} ({context.dagster_run.job_name}) failed: {details}. " + (
        "It had published its BI tables before it failed." if published else "Published BI tables were not touched."))


def published_and_unfinished(instance: dg.DagsterInstance, run_id: str, bi_dir: Path | None = None) -> tuple[bool, list[str]]:
    """Whether BI shows the run's publication (it materialized bi/segments, or ``bi_dir``'s current version is the
    run's: a run killed after its switch has no materialization), and the steps it started and never ended."""
    from seg_assets.publish.bi import publishing_run
    from seg_assets.publish.keys import BI_SEGMENTS

    kinds = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_START,
             dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    events = [e.dagster_event for e in instance.all_logs(run_id, of_type=kinds) if e.dagster_event]
    published = any(e.is_step_materialization and e.asset_key == BI_SEGMENTS for e in events) or (
        bi_dir is not None and publishing_run(bi_dir) == run_id)
    ended = {e.step_key for e in events if e.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)}
    started = [e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_START]
    return published, [k for k in dict.fromkeys(started) if k not in ended]


def _cause(data) -> str:
    """A step's failure as the person should read it (errors.step_failure, as the CLI says it)."""
    return "unknown" if data is None else step_failure(data)[0]


@dg.sensor(name="dead_cli_runs", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the `seg-assets refresh` runs whose process on this machine died (SIGKILL): "
           "left STARTED, they would hold the 'duckdb' pool and every queued run behind it.")
def dead_cli_runs(context: dg.SensorEvaluationContext):
    dead = fail_dead_runs(context.instance)
    return dg.SkipReason(f"marked failed: {', '.join(r.run_id for r in dead)}" if dead else "no run of a dead process")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "segment_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30, description="Re-fits on drift / weekly / when missing; re-scores after a re-fit.",
)

jobs = [refresh_job]
schedules = [hourly_refresh, daily_rebase]
sensors = [landing_sensor, refresh_failure_log, dead_cli_runs, automation_sensor]
