"""YAML configuration files under the data root (sources.yaml, actions.yaml): one way to read them.

A configuration file is input like a landing file: it is validated against a pydantic model that
refuses unknown keys (a typo is an error, not a silently ignored setting), and every problem is one
line naming the file, the key and what is wrong. Every YAML the project reads (these files, ``--config`` and
``--set`` values) goes through ``load_yaml``: safe tags only, and no anchors or aliases (a few lines of them
expand to gigabytes), no duplicate keys (the last would silently win), no infinite or NaN numbers.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import stat
import time
from pathlib import Path
from typing import TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from seg_assets.errors import InputError

M = TypeVar("M", bound=BaseModel)
# The data root's configuration files and the environment variable that can name another path for each. Only these
# are read (load_model), and a change to any of them makes the next refresh run (publish/state.py).
FILES = {"sources.yaml": "SEG_SOURCES_FILE", "actions.yaml": "SEG_ACTIONS_FILE"}
# A name from a configuration file that becomes part of a file or table name (a source, an action id).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SAFE_NAME_RULE = "letters, digits, '_', '-' and '.' (not first), at most 64 characters"


class ConfigError(InputError, ValueError):
    """A configuration file (or value) that cannot be used: one line naming it, what is wrong and how to fix it."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses anchors, aliases, duplicate keys and non-finite numbers (see the module)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.MarkedYAMLError(problem="anchors and aliases (&name, *name) are not allowed: write the values out",
                                       problem_mark=event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.MarkedYAMLError(problem=f"duplicate key {shown(key)}: keep one", problem_mark=key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping refuses it
                pass
        return super().construct_mapping(node, deep)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.MarkedYAMLError(problem=f"{node.value} is not a finite number", problem_mark=node.start_mark)
        return value

    def construct_yaml_str(self, node):
        value = super().construct_yaml_str(node)
        # NUL, C1 controls and the line separators (YAML's \0, \N, \L, \P): other C0 controls are told where they
        # mean something (a Hive file's \x01 delimiter: source_config.py)
        bad = next((ch for ch in value if ch == "\0" or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029"), None)
        if bad is not None:
            raise yaml.MarkedYAMLError(
                problem=f"the text holds the control character U+{ord(bad):04X}, which no setting or SQL expression means "
                        "(in double quotes YAML reads \\N as U+0085, \\L and \\P as line separators, \\0 as NUL): write "
                        "the backslash twice (\\\\N) or put the value in single quotes",
                problem_mark=node.start_mark)
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)


def load_yaml(text: str):
    """``text`` as YAML, by the rules above (yaml.YAMLError otherwise)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader


MAX_CONFIG_BYTES = 1 << 20  # a configuration file is kilobytes; /dev/zero named as one read until memory ran out


def read_text(path: Path, error: type[ValueError], max_bytes: int = MAX_CONFIG_BYTES, pipe: bool = False) -> str:
    """The UTF-8 text of the file at ``path``; ``error`` with one line if it is a folder, not a regular file (a device
    never ends; a pipe is read where ``pipe`` allows it, ``--config <(envsubst < x.yaml)``, and its writer has
    PIPE_SECONDS to finish), larger than ``max_bytes``, unreadable or not UTF-8."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a file: give a YAML file")
    try:  # opened without blocking: a pipe nobody writes to would wait for a writer forever
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if pipe and stat.S_ISFIFO(mode):
                data = _read_pipe(handle, max_bytes + 1, path, error)
                if not data:  # no writer (yet): running on the defaults instead would be silent
                    raise error(f"{path}: a pipe nothing was written to: give the file, or write the settings to it")
            elif not stat.S_ISREG(mode):
                raise error(f"{path}: not a regular file (a pipe, device or socket): give the file itself")
            else:
                data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes:,} bytes: not a configuration file of this project")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): save it as UTF-8") from None


PIPE_SECONDS = 30.0


def _read_pipe(handle, limit: int, path: Path, error: type[ValueError]) -> bytes:
    """Up to ``limit`` bytes of a pipe, until its writer closes it (no writer: nothing), within PIPE_SECONDS."""
    import select

    chunks, size, deadline, waited = [], 0, time.monotonic() + PIPE_SECONDS, False
    while size < limit:
        try:
            chunk = os.read(handle.fileno(), min(1 << 16, limit - size))  # non-blocking: b"" is the end (or no writer)
        except BlockingIOError:  # a writer that has not written yet
            if not select.select([handle], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise error(f"{path}: the pipe's writer did not finish within {PIPE_SECONDS:.0f} s") from None
            continue
        if not chunk and not chunks and not waited:  # maybe read before a waiting writer's open completed
            waited = True
            if select.select([handle], [], [], 0.5)[0]:
                continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def plain(value) -> bool:
    """Whether a key may be quoted in a message: not what the content of some other file looks like (long, or with
    ':' as in /etc/passwd, or unprintable)."""
    text = str(value)
    return len(text) <= 40 and ":" not in text and text.isprintable()


def shown(value) -> str:
    return repr(str(value)) if plain(value) else "(not shown: long or with ':')"


def config_path(data_root: Path, file_name: str, env: str) -> Path:
    """``$<env>`` if set, else ``<data root>/<file_name>``."""
    return Path(os.environ.get(env) or Path(data_root) / file_name).expanduser()


def parse_model(text: str, path: Path, model: type[M], error: type[ValueError]) -> M:
    """The file's text validated as ``model``; ``error`` with one line on any problem. Empty text: defaults."""
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    expected = ", ".join(model.model_fields)
    if not isinstance(raw, dict):
        raise error(f"{path}: not a mapping of the expected keys ({expected}): is it the right file?")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()  # a misspelt key first: `tabel:` also makes `table` missing (a reviewer's "Field required")
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        if not all(map(plain, err["loc"])):
            raise error(f"{path}: not a mapping of the expected keys ({expected}): is it the right file?") from None
        if err["loc"][-1:] == ("[key]",) or err["type"] == "invalid_key":  # a key YAML read as a boolean or a number
            where = ".".join(str(p) for p in err["loc"][:-2 if err["loc"][-1:] == ("[key]",) else -1]) or "(top level)"
            raise error(f"{path}: {where}: a key must be text, and YAML read one as {type(err['input']).__name__} "
                        f"{shown(str(err['input']))} (yes/no/on/off and numbers are not text): quote the key") from None
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and (keys := keys_at(model, err["loc"][:-1])):  # a misspelt key (a tester's
            # `timestamp_fromat` got pydantic's "Extra inputs are not permitted"): the keys of that level, the likeliest
            close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1)
            raise error(f"{path}: {where}: unknown key; {f'did you mean {close[0]!r}? ' if close else ''}the keys here "
                        f"are {', '.join(keys)}") from None
        raise error(f"{path}: {where}: {err['msg']}") from None


def keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys of the (sub)model at ``loc`` in a file read as ``model`` (the name of a mapping's entry, a source's,
    is passed over); [] when that is no model."""
    current: object = model
    parts = list(loc)
    while parts:
        field = current.model_fields.get(str(parts.pop(0))) if _is_model(current) else None
        if field is None:
            return []
        current, entries = field.annotation, False
        while get_origin(current) is not None:  # X | None, dict[str, X], list[X]: the model inside
            entries = entries or get_origin(current) is dict
            current = next((a for a in get_args(current)[::-1] if a is not type(None)), None)
        if entries and parts:
            parts.pop(0)
    return list(current.model_fields) if _is_model(current) else []


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


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
    return parse_model(read_text(path, error), path, model, error)


def check_files(data_root: Path) -> None:
    """Read each file of ``FILES`` and the review lexicons as their stages will: a bad one is refused (ConfigError) before
    a run starts."""
    from seg_assets.activation.catalogue import load_catalogue
    from seg_assets.ingest.source_config import load_sources
    from seg_assets.reviews.sentiment import LexiconError, lexicon_language, read_lexicon
    from seg_assets.settings import data_paths

    load_sources(data_root)
    load_catalogue(data_root)
    folder = data_paths(data_root).sentiment_lexicons  # checked before the run, not when the review step reaches them
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        try:
            lexicon_language(path)
            read_lexicon(path)
        except LexiconError as exc:
            raise ConfigError(f"review sentiment: {exc} (fix or remove the file)") from None


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
    # the parser quotes the tag it does not know: `token: !sk_live_...` would print a secret (any quoted text longer
    # than a tag name is cut)
    what = re.sub(r"'(![^']{8})[^']+'", r"'\1...'", what)
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what
