"""A run config's values against the limits of each op's Config class (``Field(ge=..., le=...)``).

Dagster's config schema checks names and types, not a Config class's limits: a value out of range passed the
launchpad, then failed its step with pydantic's traceback, retried twice, after every step before it ran. The
command line checks before a run (refresh.py), and the refresh job's first step checks a run launched from the UI.
"""

from __future__ import annotations

import inspect

import dagster as dg
import pydantic

from seg_assets.automation.run_config import SettingsError


def config_classes(job: dg.JobDefinition) -> dict[str, type[dg.Config]]:
    """The Config class of each op of ``job`` that has one (the annotation of its ``config`` parameter)."""
    out = {}
    for name, node in job.graph.node_dict.items():
        fn = getattr(getattr(node.definition, "compute_fn", None), "decorated_fn", None)
        param = inspect.signature(fn, eval_str=True).parameters.get("config") if fn is not None else None
        if param is not None and isinstance(param.annotation, type) and issubclass(param.annotation, dg.Config):
            out[name] = param.annotation
    return out


def check_limits(job: dg.JobDefinition, run_config: dict) -> None:
    """Raise SettingsError (one line) for a value outside its field's limits."""
    classes = config_classes(job)
    for op, entry in (run_config or {}).get("ops", {}).items():
        if op in classes and isinstance(entry, dict):
            try:
                classes[op](**(entry.get("config") or {}))
            except pydantic.ValidationError as exc:
                raise SettingsError("invalid setting: " + "; ".join(
                    f"{'.'.join(map(str, (op, *e['loc'])))}: {e['msg']}" for e in exc.errors())) from None
