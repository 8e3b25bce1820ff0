"""Run the refresh in-process, as one run of the ``refresh`` job (the schedule's, with its retry policy).

The CLI (``seg-assets refresh``), ``make demo`` and the benchmark use this. The run is recorded on the
instance it is given (the CLI's is the one ``make ui`` shows); a blocking check that fails stops
everything downstream of it, so published segments stay as they were. One run, not one per stage: each
Dagster run costs about half a second to plan and record. The outcome is reported per stage (asset
group) from the run's step records, plus what a person should read: input problems as one line each,
unexpected errors with their traceback, warnings the steps logged, and files the ingestion rejected.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg

from seg_assets import interrupts
from seg_assets.automation.jobs import REFRESH_JOB, published_and_unfinished
from seg_assets.automation.limits import check_limits
from seg_assets.automation.run_config import SettingsError, merge, refresh_run_config
from seg_assets.definitions import build_defs, stage_groups
from seg_assets.errors import CHECK_BLOCKED, step_failure
from seg_assets.features.incremental import REBASE_TAG
from seg_assets.ingest import contract as C
from seg_assets.ingest.ledger import FIRST_PROBLEM, NOTHING_TAKEN
from seg_assets.ingest.loader import REWRITTEN, SAME_BYTES_AGAIN, same_bytes_as
from seg_assets.ingest.staging import NO_LINE_END
from seg_assets.ingest.writing import OTHER_VALUES
from seg_assets.resources import Warehouse, WarehouseDamaged, WarehouseLocked
from seg_assets.settings import data_paths
from seg_assets.warehouse import table_exists

# Dagster's console logger prints every error with its stack trace; the outcome carries what matters.
SILENT = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# What to do about a file the ingestion did not take in, by ledger status.
FILE_FIXES = {
    C.STATUS_REJECTED_FILE: "correct it to the data contract and land the corrected file under a new name, or map the "
                            "missing column in sources.yaml (the next run that ingests reads the file again)",
    C.STATUS_FAILED: "it could not be read: fix what the message names (the file, or its source's mapping in sources.yaml); "
                     "every run that ingests reads it again, and the CLI runs when it, sources.yaml or the code changes "
                     "(--rebase forces a run)",
}

# A rejected file's message that already says what to do (the loader's do): the generic fix would contradict it.
OWN_FIX = re.compile(r"under a new name|csv: \{")
TIME_HINT = " (times: ISO-8601, or the source's timestamp_format in sources.yaml)"


@dataclass
class StageOutcome:
    group: str
    success: bool
    seconds: float  # time of its steps
    run_id: str | None
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """One line for a person: ``where`` (step, check or file), what is wrong and, if known, how to fix it."""

    kind: str  # "error" (fails the refresh), "warning", or "file" (a landing file not taken in)
    where: str
    message: str
    traceback: str | None = None  # only for unexpected errors (a bug to report)

    def line(self) -> str:
        return f"{self.where}: {self.message.rstrip('.')}"


@dataclass
class RefreshOutcome:
    success: bool
    stages: list[StageOutcome]
    seconds: float = 0.0  # wall time of the run
    run_id: str | None = None
    problems: list[Problem] = field(default_factory=list)
    published: bool = False  # this run wrote a new BI publication

    @property
    def causes(self) -> list[Problem]:
        """What the closing summary repeats: errors (what failed the refresh, first), then files not taken in. An error
        that quotes a file's message (an empty warehouse's first problem) is cut there when the file is named anyway: a
        long mapping error read twice in one line."""
        files = [p for p in self.problems if p.kind == "file"]
        errors = [p for p in self.problems if p.kind == "error"]
        named = tuple(f"{FIRST_PROBLEM}{f.where}: " for f in files)
        return [replace(p, message=p.message.split(FIRST_PROBLEM)[0]) if any(n in p.message for n in named) else p
                for p in errors] + files


def step_groups(defs: dg.Definitions) -> dict[str, str]:
    """Op name or asset identifier -> asset group (a check's step key starts with its asset's identifier;
    a multi-asset check's op takes the group of its first asset)."""
    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        out[node.assets_def.node_def.name] = node.group_name
        out[key.to_python_identifier()] = node.group_name
    for assets_def in graph.assets_defs:
        checked = sorted(k.asset_key for k in assets_def.check_keys if k.asset_key in graph.materializable_asset_keys)
        if checked and not assets_def.keys:
            out.setdefault(assets_def.node_def.name, graph.get(checked[0]).group_name)
    return out


def _failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str, Problem]]:
    """(step key, stage failure text, problem) of failed steps and failed checks."""
    out = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if getattr(data.error, "cls_name", None) == CHECK_BLOCKED:
            continue  # a blocking check failed: its evaluation (below) is the one line ("unexpected", a traceback: a reviewer's)
        message, expected = step_failure(data)  # dg.Failure: the asset told what is wrong; else "ValueError: ..."
        if expected:
            problem = Problem("error", event.step_key, message)
        else:
            problem = Problem("error", event.step_key, f"{message} (unexpected: please report it with the traceback)",
                              traceback=data.error.to_string())
        out.append((event.step_key, f"step {event.step_key} failed: {message}", problem))
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            sev = evaluation.severity.value if evaluation.severity else "ERROR"
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            detail = f": {evaluation.description}" if evaluation.description else ""
            kind = "warning" if sev == "WARN" else "error"
            out.append((evaluation.asset_key.to_python_identifier(), f"check {name} failed ({sev}){detail}",
                        Problem(kind, f"check {name}", f"failed{detail}")))
    return out


def _logged_warnings(instance: dg.DagsterInstance, run_id: str, files: list[Problem]) -> list[Problem]:
    """Warnings the steps logged, except those about a file already reported (one line per file).

    Errors are not taken from the log: a step's error is its failure (reported from the result), and
    Dagster logs its "dependencies failed, not executing" lines at that level.
    """
    out = []
    for entry in instance.all_logs(run_id):
        if entry.is_dagster_event or not logging.WARNING <= entry.level < logging.ERROR:
            continue
        message = entry.user_message.strip()
        if not any(f"{f.where}:" in message for f in files):
            out.append(Problem("warning", entry.step_key or "run", message))
    return out


def _retried(instance: dg.DagsterInstance, run_id: str) -> list[Problem]:
    """Steps that failed and were retried (``retries.TRANSIENT_RETRY``): the run may have succeeded, and the CLI said
    nothing of a failure that may come back (a tester's)."""
    out = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records:
        event = record.event_log_entry.dagster_event
        error = event.event_specific_data.error
        while error is not None and error.cause is not None and "RetryRequested" in (error.cls_name or ""):
            error = error.cause  # the policy's wrapper: say what the step raised
        why = (error.message.strip().splitlines() or [error.cls_name or "an error"])[0] if error else "an error"
        out.append(Problem("warning", event.step_key, f"failed and was retried: {why}"))
    return out


def _files_left(result: dg.ExecuteInProcessResult) -> list[Problem]:
    """Files ingestion left to the next run (still being written, or changed while read): not taken in, so named in
    the closing line and counted by --strict (a file that never settles never failed a strict cron job)."""
    from seg_assets.ingest.assets import LEDGER_KEY

    out = []
    for event in result.asset_materializations_for_node("ingest_landing"):
        if event.asset_key == LEDGER_KEY and "files_still_settling" in event.metadata:
            for name, why in (event.metadata["files_still_settling"].value or {}).items():
                out.append(Problem("file", name, f"left to the next run: {why}"))
    return out


def _files_not_taken(database: Path, run_id: str) -> list[Problem]:
    """Files this run rejected whole or could not read, and those it took in with rejected rows (a warning each),
    from the ingestion ledger."""
    if not database.exists() or interrupts.STOP.is_set():  # stopped: the CLI says only that
        return []
    try:
        with Warehouse(database=str(database), other_process_wait_seconds=0).get_connection() as con:
            return _ledger_problems(con, run_id)
    except (WarehouseLocked, WarehouseDamaged):  # the run failed on it, and says so
        return []


def _ledger_problems(con, run_id: str) -> list[Problem]:
    """The ledger's lines for a person about the files of run ``run_id``."""
    statuses = list(FILE_FIXES)
    if not table_exists(con, C.LEDGER_TABLE):
        return []
    rows = con.sql(f"SELECT file_name, status, message FROM {C.LEDGER_TABLE} WHERE run_id = ? "
                   f"AND status IN ({', '.join('?' * len(statuses))}) ORDER BY file_id",
                   params=[run_id, *statuses]).fetchall()
    rejected = con.sql(f"""
        SELECT l.file_name, any_value(l.delivered), any_value(l.rejected), bool_and({NOTHING_TAKEN}),
               string_agg(r.rule || ' (' || r.n || ')', ', ' ORDER BY r.n DESC, r.rule), arg_min(r.example, r.first)
        FROM {C.LEDGER_TABLE} l
        JOIN (SELECT file_id, rule, count(*) AS n, arg_min(reason, row_number) AS example, min(row_number) AS first
              FROM {C.REJECTS_TABLE} GROUP BY ALL) r USING (file_id)
        WHERE l.run_id = ? AND l.status = '{C.STATUS_INGESTED}' AND l.rejected > 0
        GROUP BY l.file_id, l.file_name ORDER BY l.file_id""", params=[run_id]).fetchall()
    out = []
    for (name,) in con.sql(f"SELECT file_name FROM {C.LEDGER_TABLE} WHERE run_id = ? AND message LIKE ? ORDER BY file_id",
                           params=[run_id, f"%{REWRITTEN}%"]).fetchall():
        out.append(Problem("warning", name, "was taken in before with other content (landed files must not change): read "
                           "again, rows with known ids kept as first taken in; land changes under a new name, or declare "
                           "keep: latest for its source"))
    for name, message, n in con.sql(f"SELECT file_name, message, updated FROM {C.LEDGER_TABLE} WHERE run_id = ? "
                                    "AND message LIKE ? AND updated > 0 ORDER BY file_id",
                                    params=[run_id, f"%{SAME_BYTES_AGAIN}%"]).fetchall():
        first = same_bytes_as(message)  # a file name may hold ')' and '; ' ("export (1).csv", a reviewer's)
        out.append(Problem("warning", name, f"holds the same bytes as {first}, taken in before: with keep: latest its "
                           f"{n:,} row(s) replaced newer values stored since (changes delivered in between are undone); "
                           "if it is a stale re-delivery, land the newer exports again after it, or remove it and "
                           "rebuild from landing/"))
    for said in (OTHER_VALUES, NO_LINE_END):  # parts of an ingested file's message that are warnings
        for name, message in con.sql(f"SELECT file_name, message FROM {C.LEDGER_TABLE} WHERE run_id = ? AND status = ? "
                                     "AND message LIKE ? ORDER BY file_id",
                                     params=[run_id, C.STATUS_INGESTED, f"%{said}%"]).fetchall():
            out.append(Problem("warning", name, next(p for p in message.split("; ") if said in p)))
    for name, status, message in rows:
        what = (message or status).removeprefix(f"{name}: ")
        fix = "" if status == C.STATUS_REJECTED_FILE and OWN_FIX.search(what) else f"; {FILE_FIXES[status]}"
        out.append(Problem("file", name, f"{status.replace('_', ' ')}: {what}{fix}"))
    for name, delivered, n, none_taken, rules, example in rejected:  # the file was taken in, some of its rows were not
        hint = TIME_HINT if "unparseable:" in rules and "_ts" in rules else ""
        if none_taken:  # read again once its source changes (ledger.NOTHING_TAKEN); named like a file not taken in
            out.append(Problem("file", name, f"{n} of {delivered} rows rejected, none taken in: {rules}; first: {example}; "
                               "fix its source in sources.yaml (the file is then read again) or land it corrected under "
                               f"a new name{hint}"))
            continue
        out.append(Problem("warning", name, f"{n} of {delivered} rows rejected: {rules}; first: {example}; the rows are in "
                           f"raw.rejects: correct them and land them in a new file{hint}"))
    return out


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    return {s.step_key: (s.end_time - s.start_time) for s in instance.get_run_step_stats(run_id)
            if s.start_time and s.end_time}


def _group_of(step_key: str, groups: dict[str, str]) -> str:
    if step_key in groups:
        return groups[step_key]
    prefixes = [node for node in groups if step_key.startswith(node + "_")]
    return groups[max(prefixes, key=len)] if prefixes else "other"


def check_settings(job: dg.JobDefinition, run_config: dict, overrides: dict) -> None:
    """Raise SettingsError (one line) for an op or field the job does not have, or a value of the wrong type."""
    fields = {}
    for name, node in job.graph.node_dict.items():
        schema = node.definition.config_schema
        names = getattr(schema.config_type, "fields", None) if schema else None
        if names:
            fields[name] = sorted(names)
    for op, entry in overrides.get("ops", {}).items():
        for name in entry["config"]:
            if op not in fields:
                raise SettingsError(f"unknown setting {op}.{name}: {op} is not an op with settings; "
                                    f"those are {', '.join(sorted(fields))}")
            if name not in fields[op]:
                raise SettingsError(f"unknown setting {op}.{name}: {op} has fields {', '.join(fields[op])}")
    try:
        dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as exc:
        raise SettingsError("invalid setting: " + "; ".join(e.message for e in exc.errors)) from None
    check_limits(job, run_config)  # before the run starts (automation/limits.py)


def run_refresh(
    data_dir: str | Path | None = None,
    *,
    as_of: str | None = None,
    refit: bool = False,
    rebase: bool = False,
    overrides: dict | None = None,
    instance: dg.DagsterInstance | None = None,
    tags: dict[str, str] | None = None,
    on_stage=None,
    engine: str | None = None,
    before_run=None,
) -> RefreshOutcome:
    """Run the refresh job once; ``on_stage(group, 'done', outcome)`` reports each stage after it.

    ``rebase`` recomputes every user's features and scores instead of only the users with new rows (``refit``
    too: a model fitted on rows of two dates splits them apart);
    ``overrides`` (``{"ops": {op: {"config": {...}}}}``) are laid over the job's settings; ``engine``: duckdb
    or spark (default ``$SEG_ENGINE``, else duckdb). Without an
    ``instance`` the run is recorded in a temporary one. ``before_run()`` is called once the settings are checked,
    just before the run starts (the command line takes its turn there).
    """
    paths = data_paths(data_dir).ensure()
    defs = build_defs(paths.root, as_of, engine)
    job = defs.resolve_job_def(REFRESH_JOB)
    overrides = overrides or {"ops": {}}
    run_config = merge(refresh_run_config(refit), overrides)
    check_settings(job, run_config, overrides)
    instance = instance or dg.DagsterInstance.ephemeral()
    if before_run is not None:
        before_run()
    start = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={**SILENT, **run_config},
        raise_on_error=False,
        tags={**(tags or {}), **({REBASE_TAG: "true"} if rebase or refit else {})},  # a fit reads everyone as of now
    )
    wall = time.perf_counter() - start
    groups = step_groups(defs)
    seconds = _step_seconds(instance, result.run_id)
    failures = _failures(result)
    stages = []
    for group in stage_groups():
        steps = [k for k in seconds if _group_of(k, groups) == group]
        mine = [(msg, problem) for key, msg, problem in failures if _group_of(key, groups) == group]
        failed = any(problem.kind == "error" for _, problem in mine)
        if not steps and not mine:
            continue  # nothing of this stage ran (skipped after an upstream failure)
        outcome = StageOutcome(group, not failed, sum(seconds[k] for k in steps), result.run_id, [m for m, _ in mine])
        stages.append(outcome)
        if on_stage:
            on_stage(group, "done", outcome)
    files = _files_not_taken(paths.warehouse, result.run_id) + _files_left(result)
    problems = (files + _logged_warnings(instance, result.run_id, files) + _retried(instance, result.run_id)
                + [problem for _, _, problem in failures])
    published, _ = published_and_unfinished(instance, result.run_id, paths.bi)
    return RefreshOutcome(result.success and all(s.success for s in stages), stages, wall, result.run_id, problems,
                          published)
