"""The refresh's run config, and the settings a person lays over it (``--set op.field=value``, ``--config FILE``).

No Dagster import here: ``seg-assets refresh`` compares the settings with what was published before it
loads Dagster (a refresh with nothing new stops in well under a second). Checking the settings against
the job's op config schemas needs the job, so it lives in refresh.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from seg_assets.config_files import load_yaml, read_text, shown, yaml_problem
from seg_assets.errors import InputError


class SettingsError(InputError):
    """A --set or --config value the refresh job cannot take (unknown op or field, wrong type)."""


def refresh_run_config(refit: bool = False) -> dict:
    """What the schedule, the sensor and the CLI run: model and classifier fitted only when needed."""
    return {"ops": {
        "segment_model": {"config": {FIT: "always" if refit else "when_needed"}},
        "segment_classifier": {"config": {FIT: "when_needed"}},
    }}


FIT = "fit"  # an op's fit mode (segment_model, segment_classifier, churn_model): "always" or "when_needed"


def without_fit_modes(ops: dict) -> dict:
    """``ops`` (``{op: {"config": {...}}}``) without the fit modes: what a publication reflects does not depend on
    whether its model was fitted because it was due or because it was asked for (publish/state.settings_fingerprint)."""
    out = {}
    for op, entry in ops.items():
        if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
            entry = {**entry, "config": {k: v for k, v in entry["config"].items() if k != FIT}}
            if entry == {"config": {}}:  # only a fit mode was set (--set churn_model.fit=always): as if none
                continue
        out[op] = entry
    return out


def forces_a_fit(overrides: dict) -> bool:
    """Whether settings laid over the refresh ask an op to fit whatever is due (``--set segment_model.fit=always``):
    such a refresh runs even when the segments are current, as ``--refit`` does."""
    return any(isinstance(entry, dict) and isinstance(entry.get("config"), dict) and entry["config"].get(FIT) == "always"
               for entry in (overrides or {}).get("ops", {}).values())


def merge(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``, nested dicts merged key by key (neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(text: str) -> dict:
    """``churn_model.min_auc=0.6`` -> ``{"ops": {"churn_model": {"config": {"min_auc": 0.6}}}}``.

    The value is read as a YAML scalar (``0.6`` a float, ``true`` a bool, ``[a, b]`` a list, ``x`` a string),
    as it would be in a config file.
    """
    name, sep, raw = text.partition("=")
    op, dot, field = name.strip().partition(".")
    if not (sep and dot and op and field) or "." in field:
        raise SettingsError(f"--set {text!r}: write op.field=value, e.g. --set churn_model.min_auc=0.6")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SettingsError(f"--set {text!r}: the value is not a YAML scalar ({exc.problem})") from None
    return {"ops": {op: {"config": {field: value}}}}


def load_config_file(path: Path) -> dict:
    """A YAML file in Dagster's run config shape, ``ops:`` only (resources and loggers are the project's)."""
    try:
        data = load_yaml(read_text(Path(path), SettingsError, pipe=True)) or {}  # --config <(...) is a pipe
    except SettingsError as exc:
        raise SettingsError(f"--config {exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"--config {path}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(data, dict) or set(data) - {"ops"}:
        found = ", ".join(sorted(map(shown, data))) if isinstance(data, dict) else type(data).__name__
        raise SettingsError(f"--config {path}: expected only 'ops:' (op -> config -> field: value), found {found}")
    if not isinstance(data.get("ops") or {}, dict):
        raise SettingsError(f"--config {path}: ops must hold op names (op -> config -> field: value), found "
                            f"{type(data['ops']).__name__}")
    for op, entry in (data.get("ops") or {}).items():
        if not isinstance(entry, dict) or set(entry) != {"config"} or not isinstance(entry["config"], dict):
            raise SettingsError(f"--config {path}: ops.{op} must hold 'config:' with field: value lines")
    return {"ops": data.get("ops") or {}}


def settings_overrides(config_file: Path | None, assignments: list[str]) -> dict:
    """The file's settings, then each ``--set`` over them (the command line wins)."""
    out: dict = load_config_file(config_file) if config_file else {"ops": {}}
    for text in assignments:
        out = merge(out, parse_assignment(text))
    return out

