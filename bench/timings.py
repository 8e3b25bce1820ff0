"""Per-asset timings of a refresh, read back from the Dagster instance the refresh recorded its runs on.

``seg-assets refresh`` is one Dagster run; every asset, multi-asset and asset check is a step with a
start and end time, labelled with its stage (asset group). Reading the run records afterwards (instead of parsing logs) means the
harness picks up whatever stages and assets the pipeline has today without knowing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StepTiming:
    step: str
    seconds: float | None
    status: str
    assets: list[str] = field(default_factory=list)  # asset keys the step materialized
    start: float | None = None  # epoch seconds
    end: float | None = None
    stage: str = ""  # the asset group of its assets (or of the asset a check is on)
    package: str = ""  # the pipeline package (definitions.STAGES) its assets come from: ingest, reviews, baskets...


@dataclass
class RunTiming:
    run_id: str
    stage: str
    status: str
    seconds: float | None
    steps: list[StepTiming]


def asset_groups(data_dir: Path) -> dict[str, str]:
    """Asset key (user string), or op name of a check step, -> group (= refresh stage), from the pipeline's own definitions."""
    try:
        from seg_assets.definitions import build_defs
        from seg_assets.refresh import step_groups

        defs = build_defs(data_dir)
        graph = defs.resolve_asset_graph()
        groups = {k.to_user_string(): graph.get(k).group_name for k in graph.materializable_asset_keys}
        return {**step_groups(defs), **groups}
    except Exception:  # the pipeline is edited in parallel: fall back to run numbers, never crash the bench
        return {}


def asset_packages() -> dict[str, str]:
    """Asset key (user string), op name of an asset or check -> the package of ``definitions.STAGES`` defining it.

    The asset groups are the refresh's stages; a package is where the code lives (``review_sentiment`` is in
    group features but in package reviews), which is what a stage's cost is asked of."""
    try:
        from seg_assets.definitions import STAGES
    except Exception:  # edited in parallel: the report then leaves the package column empty
        return {}
    out = {}
    for module in STAGES:
        package = module.__name__.split(".")[1]
        for a in module.assets:
            out[a.node_def.name] = package
            out.update({k.to_user_string(): package for k in a.keys})
        for c in module.asset_checks:
            out[c.node_def.name] = package
    return out


def step_stage(step_key: str, assets: list[str], groups: dict[str, str]) -> str:
    """The group of a step's assets; for a check, of the asset whose identifier starts its step key."""
    found = sorted({groups[a] for a in assets if a in groups})
    if found:
        return "+".join(found)
    if step_key in groups:  # an op name (a multi-asset check)
        return groups[step_key]
    ids = {a.replace("/", "__"): g for a, g in groups.items()}
    prefixes = [i for i in ids if step_key == i or step_key.startswith(i + "_")]
    return ids[max(prefixes, key=len)] if prefixes else ""


def _stage(run, groups: dict[str, str], index: int) -> str:
    keys = [k.to_user_string() for k in (run.asset_selection or ())]
    found = sorted({groups[k] for k in keys if k in groups})
    return "+".join(found) if found else f"run {index}"


def new_runs(dagster_home: Path, seen: set[str], groups: dict[str, str],
             packages: dict[str, str] | None = None) -> list[RunTiming]:
    """Runs recorded on ``dagster_home`` whose ids are not in ``seen`` (added to it), oldest first; ``packages``
    (:func:`asset_packages`) labels each step with its package as ``groups`` does with its stage."""
    import dagster as dg

    out = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
        for index, record in enumerate(records, 1):
            run = record.dagster_run
            if run.run_id in seen:
                continue
            seen.add(run.run_id)
            steps = []
            for s in sorted(instance.get_run_step_stats(run.run_id), key=lambda s: s.start_time or 0):
                secs = s.end_time - s.start_time if s.start_time and s.end_time else None
                mats = [e.asset_materialization for e in (s.materialization_events or [])]
                assets = [m.asset_key.to_user_string() for m in mats if m is not None]
                steps.append(StepTiming(s.step_key, secs, s.status.value if s.status else "?", assets,
                                        s.start_time, s.end_time, step_stage(s.step_key, assets, groups),
                                        step_stage(s.step_key, assets, packages or {})))
            run_secs = record.end_time - record.start_time if record.start_time and record.end_time else None
            out.append(RunTiming(run.run_id, _stage(run, groups, index), run.status.value, run_secs, steps))
    return out
