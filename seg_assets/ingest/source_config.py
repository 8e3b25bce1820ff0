"""``sources.yaml``: the user's landing folders, mapped onto the contract tables by configuration, not code.

A source reads one folder under ``landing/`` and feeds one contract table; each contract column is a
column of the file or a DuckDB SQL expression over the file's own columns. Folders of the contract
tables that no declared source reads keep the contract's own column names (an implicit source per
folder), so a project without a sources file works as before.

The file is input like any landing file: its expressions can rename, cast and compute, and never read other
files or tables (expressions.py checks each at load); its settings (time zone, timestamp format, CSV dialect)
are checked here against what DuckDB and Python can read, before any file is.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from seg_assets.config_files import FILES, SAFE_NAME, SAFE_NAME_RULE, config_path, parse_model, read_text
from seg_assets.ingest import contract as C
from seg_assets.ingest.events import check_overrides
from seg_assets.ingest.expressions import Expr, SourceConfigError, parse_expression

SOURCES_FILE = "sources.yaml"
SOURCES_ENV = FILES[SOURCES_FILE]





class _CsvModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delimiter: str = ","
    encoding: str = "utf-8"


KEEP_FIRST, KEEP_LATEST = "first", "latest"  # of the rows delivered with one id, the one kept


class _SourceModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str
    folder: str | None = None
    csv: _CsvModel = _CsvModel()
    timestamp_format: str | None = None
    timezone: str = "UTC"
    where: str | None = None
    columns: dict[str, str | bool | int | float] = {}  # `amount: 0` is a literal: YAML gives a number (a bool: refused)
    event_types: dict[str, str] = {}
    keep: str = KEEP_FIRST


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[str, _SourceModel] = {}




@dataclass(frozen=True)
class CsvDialect:
    """How a source's CSV files are written, where they differ from the contract (',' and UTF-8): exports of
    spreadsheets and European ERPs use ';' and a Windows code page, and the people landing them cannot always
    change the exporter. Parquet files carry their own types and ignore this."""

    delimiter: str = ","
    encoding: str = "utf-8"  # Python's codec name (codecs.lookup), normalised

    @property
    def utf8(self) -> bool:
        return self.encoding == "utf-8"

    def yaml(self, **change: str) -> str:
        """This dialect with ``change`` as the ``csv:`` value of a sources file: a line a person can paste (JSON
        strings are YAML strings: a tab is written "\\t")."""
        values = {"delimiter": self.delimiter, "encoding": self.encoding} | change
        shown = {k: v for k, v in values.items() if v != getattr(CONTRACT_CSV, k)}
        return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in shown.items()) + "}"


CONTRACT_CSV = CsvDialect()


def csv_dialect(delimiter: str, encoding: str, where: str) -> CsvDialect:
    """A checked dialect: one delimiter character that is not a letter, digit, quote, line end or control character
    (a tab excepted; the CSV reader's null marker is one), and an encoding Python knows that reads ASCII text as itself
    (the header, delimiters, quotes and line ends are ASCII; the landing rule reads a CSV's last bytes for its line end):
    UTF-16 files have to be converted first."""
    control = not delimiter.isprintable() and delimiter != "\t"
    if len(delimiter) != 1 or delimiter in "\"\r\n" or delimiter.isalnum() or control:
        raise SourceConfigError(f"{where}: csv delimiter {delimiter!r} must be one character, not a letter, digit, "
                                "quote, line end or control character (e.g. ';', '|' or a tab written \"\\t\")")
    ascii_text = bytes(range(32, 127)) + b"\t\r\n\\n\\x41\\u0041"  # escapes too: unicode_escape decodes them
    try:
        info = codecs.lookup(encoding)
        if not getattr(info, "_is_text_encoding", True):  # rot13, base64: not a text encoding
            raise LookupError(encoding)
        name = "utf-8" if info.name == "utf-8-sig" else info.name  # a byte-order mark is read past either way
        decoder = codecs.getincrementaldecoder(name)()
    except LookupError:
        raise SourceConfigError(f"{where}: unknown csv encoding {encoding!r} (a Python codec name: utf-8, cp1252, "
                                "latin-1, ...)") from None
    try:  # both ways the files are read: decoded in full, and a header decoded with errors="replace" (idna has no such)
        reads_ascii = decoder.decode(ascii_text, final=True) == ascii_text.decode() == codecs.decode(ascii_text, name, "replace")
    except (UnicodeError, TypeError):
        reads_ascii = False
    if not reads_ascii:
        raise SourceConfigError(f"{where}: csv encoding {encoding!r} does not read ASCII text as itself (UTF-16, UTF-32, "
                                "UTF-7, EBCDIC?): convert the files to UTF-8 first")
    return CsvDialect(delimiter, name)


@dataclass(frozen=True)
class SourceDef:
    name: str
    table: str  # contract table it feeds
    folder: str  # under landing/
    columns: dict[str, Expr] = field(default_factory=dict)  # contract column -> value
    timestamp_format: str | None = None
    timezone: str = "UTC"
    where: Expr | None = None
    event_types: dict[str, str] = field(default_factory=dict)
    declared: bool = True  # False: the implicit source of a contract folder
    csv: CsvDialect = CONTRACT_CSV
    keep: str = KEEP_FIRST  # KEEP_LATEST: a later delivery of an id with other values replaces the stored row
    note: str | None = None  # said on each file it reads (parse_sources: a contract folder it takes from its table)

    @property
    def spec(self) -> C.TableSpec:
        return C.TABLES[self.table]

    @property
    def key(self) -> str:
        """How this source reads a file, as a fingerprint: a file rejected as a whole (a column missing, which a
        mapping can supply) is read again once the source reads files differently (meta.ingest_ledger.source_key)."""
        what = [self.table, self.folder, {c: e.text for c, e in self.columns.items()}, self.timestamp_format,
                self.timezone, self.where.text if self.where else None, self.event_types]
        if self.csv != CONTRACT_CSV:  # only then: the keys of sources written before this option stay the same
            what.append([self.csv.delimiter, self.csv.encoding])
        if self.keep != KEEP_FIRST:  # the same
            what.append(self.keep)
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def timezone_known(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


@lru_cache(maxsize=256)
def _duckdb_accepts(sql: str, precondition: bool, *params: str) -> bool:
    """Whether DuckDB runs ``sql`` (a setting files are read with: Python's tz database knows ``posixrules`` and
    ``right/UTC``, DuckDB's does not; ``%Q`` is no code of DuckDB's strptime): checked at load, not file by file."""
    import duckdb

    if not precondition:
        return False
    try:
        duckdb.connect().execute(sql, list(params) or None).fetchall()
        return True
    except duckdb.Error:
        return False






















def sources_path(data_root: Path) -> Path:
    return config_path(data_root, SOURCES_FILE, SOURCES_ENV)


def _folder(name: str, value: str | None, where: str) -> str:
    raw = (value or name).strip()
    folder = raw.rstrip("/")
    parts = Path(folder).parts
    if not parts or raw.startswith(("/", "~")) or any(p in ("..", ".") for p in parts) or "\\" in folder:  # "." too
        raise SourceConfigError(f"{where}: folder {value!r} must be a folder name under landing/ (no '..', not absolute)")
    return folder


def _source(name: str, model: _SourceModel, path: Path) -> SourceDef:
    where = f"{path.name}: source {name!r}"
    if not SAFE_NAME.fullmatch(name):
        raise SourceConfigError(f"{where}: a source name uses {SAFE_NAME_RULE}")
    if model.table not in C.TABLES:
        raise SourceConfigError(f"{where}: table {model.table!r} is not a contract table ({', '.join(C.TABLES)})")
    spec = C.TABLES[model.table]
    columns = {}
    aliases = {alias: c.name for c in spec.columns for alias in c.file_names}
    for column, value in model.columns.items():
        column = aliases.get(column, column)
        if column not in spec.column_names or spec.column(column).derived:
            raise SourceConfigError(f"{where}: {column!r} is not a column of {model.table} "
                                    f"({', '.join(c.name for c in spec.columns if not c.derived)})")
        if isinstance(value, bool):  # YAML reads `yes`, `no`, `true`, `on` as booleans: `amount: true` became 1
            raise SourceConfigError(f"{where}, column {column}: YAML reads this value (yes, no, true, false, on, off) as "
                                    "a boolean: quote it to name a column of that name, or write the number or text you mean")
        columns[column] = parse_expression(value, f"{where}, column {column}")
    if not _duckdb_accepts(f"SET TimeZone = '{model.timezone.replace(chr(39), '')}'", timezone_known(model.timezone)):
        raise SourceConfigError(f"{where}: unknown timezone {model.timezone!r} (an IANA name like Europe/London)")
    if model.timestamp_format is not None and ("%" not in model.timestamp_format or not _duckdb_accepts(
            "SELECT try_strptime('', ?)", True, model.timestamp_format)):
        raise SourceConfigError(f"{where}: timestamp_format {model.timestamp_format!r} is not strptime %-codes that "
                                "DuckDB reads (e.g. '%m/%d/%Y %H:%M')")
    if model.event_types and model.table != "clicks":
        raise SourceConfigError(f"{where}: event_types applies to clicks sources only")
    try:
        event_types = check_overrides(model.event_types)
    except ValueError as exc:
        raise SourceConfigError(f"{where}: {exc}") from None
    where_expr = parse_expression(model.where, f"{where}, where", condition=True) if model.where else None
    if model.keep not in (KEEP_FIRST, KEEP_LATEST):
        raise SourceConfigError(f"{where}: keep must be {KEEP_FIRST!r} (the first delivery of an id wins) or {KEEP_LATEST!r} "
                                f"(a later delivery with other values replaces it), not {model.keep!r}")
    if model.keep == KEEP_LATEST and not spec.updatable:
        updatable = ", ".join(t for t, s in C.TABLES.items() if s.updatable)
        raise SourceConfigError(f"{where}: keep: latest is for rows that change after delivery ({updatable}); "
                                f"{model.table} rows are events, delivered once")
    return SourceDef(name, model.table, _folder(name, model.folder, where), columns, model.timestamp_format,
                     model.timezone, where_expr, event_types,
                     csv=csv_dialect(model.csv.delimiter, model.csv.encoding, where), keep=model.keep)


def parse_sources(text: str, path: Path) -> list[SourceDef]:
    """The declared sources of one file's text, plus an implicit source per unclaimed contract folder. A declared
    source claims its folder: when only sources of other tables read a contract folder (orders from the purchases in
    ``clicks/``), each file's line says its rows go to no ``clicks`` (they were lost without a word, a tester's).
    Not an implicit source beside them: a declared ``order_items`` source over ``orders/`` (one row per line item)
    would have every file rejected whole by it (a reviewer's)."""
    model = parse_model(text, path, _FileModel, SourceConfigError)
    declared = [_source(name, m, path) for name, m in model.sources.items()]
    claimed = {s.folder for s in declared}
    own = {s.folder for s in declared if s.folder == s.table}
    declared = [replace(s, note=f"landing/{s.folder}/ is the {s.folder} contract folder, read here as {s.table} only: "
                        f"its rows are not taken in as {s.folder} (declare a source of table {s.folder} with folder: "
                        f"{s.folder} for that)") if s.folder in C.TABLES and s.folder not in own else s
                for s in declared]
    implicit = [SourceDef(t, t, t, declared=False) for t in C.TABLES if t not in claimed and t not in model.sources]
    return declared + implicit


def load_sources(data_root: Path) -> list[SourceDef]:
    """The sources of a data root (``$SEG_SOURCES_FILE`` or ``<root>/sources.yaml``; none: one per contract folder)."""
    path = sources_path(data_root)
    text = read_text(path, SourceConfigError) if path.exists() else ""
    if not path.exists() and os.environ.get(SOURCES_ENV):
        raise SourceConfigError(f"{path}: {SOURCES_ENV} names a file that does not exist")
    return parse_sources(text, path)


def check_engine(sources: list[SourceDef], spark: bool) -> None:
    """What the Spark engine cannot do yet, refused before a run (the CLI) and in ingestion's step (the UI)."""
    import shutil

    java_home = os.environ.get("JAVA_HOME")
    if spark and not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) and shutil.which("java") is None:
        raise SourceConfigError("the Spark engine needs Java 17 or later: no `java` on PATH and no JAVA_HOME; install a "
                                "JDK (or set JAVA_HOME), or use --engine duckdb")
    latest = [s.name for s in sources if s.keep == KEEP_LATEST]
    if spark and latest:  # its raw tables are append-only Parquet: a replaced row would be a rewrite
        raise SourceConfigError(f"source(s) {', '.join(latest)} keep the latest delivery of an id (keep: latest), which "
                                "the Spark engine does not do yet: use --engine duckdb (in a new data root), or keep: first")
