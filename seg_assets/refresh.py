"""Run the refresh in-process, as one Dagster run, the way the hourly schedule would.

The CLI (``seg-assets refresh``), ``make demo`` and the benchmark use this. The run is recorded on the
instance (which gives the benchmark its per-asset timings) and materializes every asset in data-flow
order; a blocking check that fails stops everything downstream of it, so published segments stay as
they were. One run, not one per stage: each Dagster run costs about half a second to plan and record.
The outcome is reported per stage (asset group) from the run's step records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from seg_assets.automation.jobs import refresh_run_config
from seg_assets.definitions import build_defs
from seg_assets.features.incremental import REBASE_TAG
from seg_assets.settings import data_paths

# Asset groups in data-flow order.
STAGE_GROUPS = ("ingest", "features", "segmentation", "publish")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StageOutcome:
    group: str
    success: bool
    seconds: float  # time of its steps
    run_id: str | None
    failures: list[str] = field(default_factory=list)


@dataclass
class RefreshOutcome:
    success: bool
    stages: list[StageOutcome]
    seconds: float = 0.0  # wall time of the run


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


def _failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(step key, message) of failed steps and failed checks."""
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            out.append((event.step_key, f"step {event.step_key} failed: {err.message.strip() if err else 'unknown error'}"))
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            sev = evaluation.severity.value if evaluation.severity else "ERROR"
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            out.append((evaluation.asset_key.to_python_identifier(), f"check {name} failed ({sev})"))
    return out


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    return {s.step_key: (s.end_time - s.start_time) for s in instance.get_run_step_stats(run_id)
            if s.start_time and s.end_time}


def _group_of(step_key: str, groups: dict[str, str]) -> str:
    if step_key in groups:
        return groups[step_key]
    prefixes = [node for node in groups if step_key.startswith(node + "_")]
    return groups[max(prefixes, key=len)] if prefixes else "other"


def run_refresh(
    data_dir: str | Path | None = None,
    *,
    as_of: str | None = None,
    refit: bool = False,
    rebase: bool = False,
    instance: dg.DagsterInstance | None = None,
    on_stage=None,
) -> RefreshOutcome:
    """Materialize every asset in one run; ``on_stage(group, 'done', outcome)`` reports each stage after it.

    ``rebase`` recomputes every user's features and scores instead of only the users with new rows.
    """
    paths = data_paths(data_dir).ensure()
    defs = build_defs(paths.root, as_of)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = instance or dg.DagsterInstance.ephemeral()
    graph = defs.resolve_asset_graph()
    keys = list(graph.materializable_asset_keys)
    start = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        run_config=_run_config(refresh_run_config(refit), graph, keys),
        raise_on_error=False,
        tags={REBASE_TAG: "true"} if rebase else None,
    )
    wall = time.perf_counter() - start
    groups = step_groups(defs)
    seconds = _step_seconds(instance, result.run_id)
    failures = _failures(result)
    stages = []
    for group in STAGE_GROUPS:
        steps = [k for k in seconds if _group_of(k, groups) == group]
        mine = [msg for key, msg in failures if _group_of(key, groups) == group]
        failed = any(m.startswith("step") or (m.startswith("check") and not m.endswith("(WARN)")) for m in mine)
        if not steps and not mine:
            continue  # nothing of this stage ran (skipped after an upstream failure)
        outcome = StageOutcome(group, not failed, sum(seconds[k] for k in steps), result.run_id, mine)
        stages.append(outcome)
        if on_stage:
            on_stage(group, "done", outcome)
    return RefreshOutcome(result.success and not any(not s.success for s in stages), stages, wall)


def _run_config(run_config: dict | None, graph, keys) -> dict:
    """Quiet console logs, plus op config only for the selected ops (Dagster rejects the rest)."""
    ops = {graph.get(k).assets_def.node_def.name for k in keys}
    stage_ops = {op: cfg for op, cfg in (run_config or {}).get("ops", {}).items() if op in ops}
    return {**QUIET, "ops": stage_ops} if stage_ops else dict(QUIET)
