"""A run config's values against the limits of each op's Config class (``Field(ge=..., le=...)``).

Dagster's config schema checks names and types, not a Config class's limits: a value out of range passed the
launchpad, then failed its step with pydantic's traceback, retried twice, after every step before it ran. The
command line checks before a run (refresh.py), the refresh job's first step checks a run launched from the UI, and
every op's Config class (:class:`CheckedConfig`) refuses its own values in one line, not retried, when only some
assets are launched.
"""

from __future__ import annotations

import inspect

import dagster as dg
import pydantic
from pydantic import model_validator

from seg_assets.automation.run_config import SettingsError


class CheckedConfig(dg.Config):
    """An op's settings: a value outside a field's limits is a ``dg.Failure`` (one line, never retried) instead of
    pydantic's ValidationError, which Dagster reported with its traceback and retried."""

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, data, handler):
        try:
            return handler(data)
        except pydantic.ValidationError as exc:
            from seg_assets.errors import input_failure

            failure = input_failure("invalid setting: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or cls.__name__}: {e['msg']}" for e in exc.errors()))
            failure.setting_errors = exc.errors()
            raise failure from None


def config_classes(job: dg.JobDefinition) -> dict[str, type[dg.Config]]:
    """The Config class of each op of ``job`` that has one (the annotation of its ``config`` parameter)."""
    out = {}
    for name, node in job.graph.node_dict.items():
        fn = getattr(getattr(node.definition, "compute_fn", None), "decorated_fn", None)
        param = inspect.signature(fn, eval_str=True).parameters.get("config") if fn is not None else None
        if param is not None and isinstance(param.annotation, type) and issubclass(param.annotation, dg.Config):
            out[name] = param.annotation
    return out


# Fields that several ops have and that must mean one thing: the model's "new" stage and the rules' lifecycle_stage
ONE_MEANING = {"new_max_tenure_days": "when a customer is 'new'"}


def check_limits(job: dg.JobDefinition, run_config: dict) -> None:
    """Raise SettingsError (one line) for a value outside its field's limits, or a field of :data:`ONE_MEANING` set
    to different values in two ops."""
    classes = config_classes(job)
    for name, meaning in ONE_MEANING.items():
        values = {f"{op}.{name}": ((run_config or {}).get("ops", {}).get(op, {}).get("config") or {}).get(name,
                                   cls.model_fields[name].default)
                  for op, cls in classes.items() if name in cls.model_fields}
        if len(set(values.values())) > 1:
            raise SettingsError(f"{' and '.join(f'{k}={v}' for k, v in sorted(values.items()))}: both say {meaning}; set them "
                                "to one value")
    for op, entry in (run_config or {}).get("ops", {}).items():
        if op in classes and isinstance(entry, dict):
            try:
                classes[op](**(entry.get("config") or {}))
            except (pydantic.ValidationError, dg.Failure) as exc:
                errors = exc.errors() if isinstance(exc, pydantic.ValidationError) else getattr(exc, "setting_errors", None)
                if errors is None:
                    raise
                raise SettingsError("invalid setting: " + "; ".join(
                    f"{'.'.join(map(str, (op, *e['loc'])))}: {e['msg']}" for e in errors)) from None
