"""YAML configuration files under the data root (sources.yaml, actions.yaml): one way to read them.

A configuration file is input like a landing file: it is validated against a pydantic model that
refuses unknown keys (a typo is an error, not a silently ignored setting), and every problem is one
line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
# The data root's configuration files and the environment variable that can name another path for each. Only these
# are read (load_model), and a change to any of them makes the next refresh run (published_state).
FILES = {"sources.yaml": "SEG_SOURCES_FILE", "actions.yaml": "SEG_ACTIONS_FILE"}


def config_path(data_root: Path, file_name: str, env: str) -> Path:
    """``$<env>`` if set, else ``<data root>/<file_name>``."""
    return Path(os.environ.get(env) or Path(data_root) / file_name).expanduser()


def parse_model(text: str, path: Path, model: type[M], error: type[ValueError]) -> M:
    """The file's text validated as ``model``; ``error`` with one line on any problem. Empty text: defaults."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise error(f"{path}: {where}: {err['msg']}") from None


def load_model(data_root: Path, file_name: str, env: str, model: type[M], error: type[ValueError]) -> M:
    """Read and validate the data root's configuration file; a missing file means the defaults (unless
    ``$<env>`` names it: then it must exist)."""
    if FILES.get(file_name) != env:
        raise ValueError(f"{file_name} ({env}) is not in config_files.FILES")
    path = config_path(data_root, file_name, env)
    if not path.exists():
        if os.environ.get(env):
            raise error(f"{path}: {env} names a file that does not exist")
        return model()
    return parse_model(path.read_text(encoding="utf-8"), path, model, error)


def config_fingerprint(data_root: Path) -> str:
    """sha256 of every configuration file of ``FILES`` (its content, or that it is absent)."""
    digest = hashlib.sha256()
    for name, env in sorted(FILES.items()):
        path = config_path(data_root, name, env)
        digest.update(f"{name}\0".encode() + (path.read_bytes() if path.is_file() else b"\0absent"))
    return digest.hexdigest()[:16]


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What the YAML parser found wrong, and where (line and column, 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what
