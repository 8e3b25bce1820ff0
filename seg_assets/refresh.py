"""Run the refresh in-process, stage by stage, the way the hourly schedule would.

The CLI (``seg-assets refresh``), ``make demo`` and the benchmark use this. Each stage is one Dagster
run (so blocking checks stop the stages after a failure) recorded on the instance, which gives the
benchmark its per-asset timings. A failed stage stops the refresh; published segments stay as they were.
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
    seconds: float
    run_id: str | None
    failures: list[str] = field(default_factory=list)


@dataclass
class RefreshOutcome:
    success: bool
    stages: list[StageOutcome]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            out.append(f"step {event.step_key} failed: {err.message.strip() if err else 'unknown error'}")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            sev = evaluation.severity.value if evaluation.severity else "ERROR"
            out.append(f"check {evaluation.asset_key.to_user_string()}:{evaluation.check_name} failed ({sev})")
    return out


def run_refresh(
    data_dir: str | Path | None = None,
    *,
    as_of: str | None = None,
    refit: bool = False,
    rebase: bool = False,
    instance: dg.DagsterInstance | None = None,
    on_stage=None,
) -> RefreshOutcome:
    """Materialize every stage in order; ``on_stage(group, 'start'|'done', outcome)`` reports progress.

    ``rebase`` recomputes every user's features and scores instead of only the users with new rows.
    """
    paths = data_paths(data_dir).ensure()
    defs = build_defs(paths.root, as_of)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = instance or dg.DagsterInstance.ephemeral()
    graph = defs.resolve_asset_graph()
    stages = []
    for group in STAGE_GROUPS:
        keys = [key for key in graph.materializable_asset_keys if graph.get(key).group_name == group]
        if not keys:
            continue
        if on_stage:
            on_stage(group, "start", None)
        start = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            run_config=_stage_config(refresh_run_config(refit), graph, keys),
            raise_on_error=False,
            tags={REBASE_TAG: "true"} if rebase else None,
        )
        failures = _failures(result)
        blocking = [f for f in failures if not f.endswith("(WARN)")]
        outcome = StageOutcome(group, result.success and not any(f.startswith("step") for f in blocking),
                               time.perf_counter() - start, result.run_id, failures)
        stages.append(outcome)
        if on_stage:
            on_stage(group, "done", outcome)
        if not outcome.success:
            return RefreshOutcome(False, stages)
    return RefreshOutcome(True, stages)


def _stage_config(run_config: dict | None, graph, keys) -> dict:
    """Quiet console logs, plus op config only for the ops of this stage (Dagster rejects the rest)."""
    ops = {graph.get(k).assets_def.node_def.name for k in keys}
    stage_ops = {op: cfg for op, cfg in (run_config or {}).get("ops", {}).items() if op in ops}
    return {**QUIET, "ops": stage_ops} if stage_ops else dict(QUIET)
