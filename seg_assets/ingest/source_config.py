"""``sources.yaml``: the user's landing folders, mapped onto the contract tables by configuration, not code.

A source reads one folder under ``landing/`` and feeds one contract table; each contract column is a
column of the file or a DuckDB SQL expression over the file's own columns. Folders of the contract
tables that no declared source reads keep the contract's own column names (an implicit source per
folder), so a project without a sources file works as before.

The file is input like any landing file: it can rename, cast and compute, and it can never read other
files or tables. Every expression is parsed with sqlglot and refused at load, with nothing ingested,
when it holds a subquery, a table, a table function (``read_csv``, ...), an aggregate or window, a
parameter, or a function that reads state or is not deterministic (``getvariable``, ``random``, ...):
re-running an ingestion must give the same rows. Functions sqlglot does not know are checked against
DuckDB's own catalog: only scalar functions pass.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot import exp

from seg_assets.config_files import FILES, SAFE_NAME, SAFE_NAME_RULE, ConfigError, config_path, parse_model, read_text
from seg_assets.ingest import contract as C
from seg_assets.ingest.events import check_overrides

SOURCES_FILE = "sources.yaml"
SOURCES_ENV = FILES[SOURCES_FILE]

# Node types an expression may not contain, with the words a person reads.
_FORBIDDEN: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.Query, "a subquery"),
    (exp.Subquery, "a subquery"),
    (exp.Table, "a table"),
    (exp.From, "a FROM clause"),
    (exp.Join, "a join"),
    (exp.Star, "'*'"),
    (exp.Placeholder, "a parameter"),
    (exp.Parameter, "a parameter"),
    (exp.Window, "a window function"),
    (exp.AggFunc, "an aggregate function (a column maps one row to one value)"),
    (exp.UDTF, "a set-returning function"),
    (exp.Explode, "a set-returning function"),
    (exp.Command, "a command"),
    (exp.Rand, "a random function (ingestion must be repeatable)"),
    (exp.Uuid, "a random function (ingestion must be repeatable)"),
    (exp.CurrentTimestamp, "the current time (ingestion must be repeatable)"),
    (exp.CurrentDate, "the current time (ingestion must be repeatable)"),
    (exp.CurrentTime, "the current time (ingestion must be repeatable)"),
    (exp.Columns, "COLUMNS(...) (it picks the reader's columns by pattern: name the file's columns)"),
)
# Scalar functions in DuckDB's catalog that read session state, sequences or the clock. A function is checked by every
# name it goes by: as written, sqlglot's for its class (version() is CurrentVersion) and as sqlglot writes it back.
_DENIED_FUNCTIONS = frozenset({
    "getvariable", "current_setting", "getenv", "nextval", "currval", "setseed", "random", "uuid", "uuidv4",
    "uuidv7", "gen_random_uuid", "now", "get_current_time", "get_current_timestamp", "current_date", "current_time",
    "current_timestamp", "transaction_timestamp", "txid_current", "current_query", "current_schema", "current_schemas",
    "current_database", "current_catalog", "current_user", "session_user", "user", "version", "pg_typeof",
    "current_version", "current_role", "localtimestamp", "current_localtimestamp", "localtime", "today",
    # marked CONSISTENT by DuckDB, yet: the clock, and SQL text planned against the warehouse (a plan names the
    # columns of any table, the value of a variable, whether a file exists)
    "current_localtime", "json_serialize_plan", "json_serialize_sql", "json_deserialize_sql",
})


class SourceConfigError(ConfigError):
    """A sources file that cannot be used; the message is one line naming the source and what to fix."""


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
class Expr:
    """One mapped value: the text as written, and the file columns it reads (lower-cased names)."""

    text: str
    columns: frozenset[str]
    column_name: str | None = None  # set when the value is just a column of the file
    text_columns: frozenset[str] = frozenset()  # the columns it uses as text (text_columns())
    string_columns: frozenset[str] = frozenset()  # of those, the ones a string function or || reads (not a comparison)

    def sql(self, idents: dict[str, str]) -> str:
        """The expression with each column replaced by its identifier in the file's relation."""
        if self.column_name is not None:
            return idents[self.column_name.lower()]
        tree = struct_fields(sqlglot.parse_one(self.text, read="duckdb"))
        tree = tree.transform(
            lambda n: sqlglot.parse_one(idents[n.name.lower()], read="duckdb") if isinstance(n, exp.Column) else n)
        return tree.sql(dialect="duckdb")


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


@lru_cache(maxsize=1)
def _unrepeatable_functions() -> frozenset[str]:
    """DuckDB's functions a mapping may not call, from its own catalog rather than a list kept by hand: scalar functions
    not CONSISTENT (the clock, sequences, session and catalog state, ``sleep_ms``, ``error``, ``write_log``), and the
    macros whose definition holds a subquery (``pg_get_viewdef`` reads the warehouse's view definitions, ``get_block_size``
    its storage) or calls one of these (``ago`` reads the clock, ``pg_sleep`` sleeps), to any depth."""
    import duckdb

    rows = duckdb.sql("SELECT function_name, function_type, stability, macro_definition FROM duckdb_functions() "
                      "WHERE function_type IN ('scalar', 'macro')").fetchall()
    bad = {n.lower() for n, kind, stability, _ in rows if kind == "scalar" and stability != "CONSISTENT"}
    bad |= _DENIED_FUNCTIONS
    macros: dict[str, str] = {}  # every overload's definition (pg_get_constraintdef has one with a subquery)
    for n, kind, _, d in rows:
        if kind == "macro":
            macros[n.lower()] = macros.get(n.lower(), "") + " " + (d or "").lower()
    while True:
        words = re.compile(r"\b(select|" + "|".join(map(re.escape, sorted(bad))) + r")\b")
        more = {n for n, definition in macros.items() if n not in bad and words.search(definition)}
        if not more:
            return frozenset(bad)
        bad |= more


@lru_cache(maxsize=1)
def _duckdb_functions() -> dict[str, set[str]]:
    import duckdb

    out: dict[str, set[str]] = {}
    for name, kind in duckdb.sql("SELECT function_name, function_type FROM duckdb_functions()").fetchall():
        out.setdefault(name.lower(), set()).add(kind)
    return out


@lru_cache(maxsize=1)
def _warehouse_names() -> frozenset[str]:
    """Names a dotted name may not start with: the warehouse's schemas (one per SQL model folder too) and DuckDB's own."""
    from seg_assets.warehouse import schemas

    return frozenset({*schemas(), "main", "temp", "system", "information_schema", "pg_catalog", "memory"})


def struct_fields(tree: exp.Expression) -> exp.Expression:
    """``device.category`` (a GA4 export's STRUCT column ``device``) as ``device['category']``: a mapping reads one
    file, so a name before a dot is a column of it, never another table (sqlglot reads it as a table)."""
    def field_access(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Column) or not node.table or not isinstance(node.this, exp.Identifier):
            return node
        parts = [node.args[k] for k in ("catalog", "db", "table") if node.args.get(k)] + [node.this]
        out: exp.Expression = exp.Column(this=parts[0].copy())
        for part in parts[1:]:
            out = exp.Bracket(this=out, expressions=[exp.Literal.string(part.name)])
        return out
    return tree.transform(field_access)


MAX_EXPRESSION_CHARS = 10_000  # sqlglot's parse and checks grow faster than the text


def parse_expression(text: str, where: str, condition: bool = False) -> Expr:
    """Validate one mapped value (see the module docstring); ``where`` names it in errors. A ``condition`` (the
    source's ``where``) is never a bare column name: ``Customer ID IS NOT NULL`` is a column to quote."""
    text = str(text).strip()
    if not text:
        raise SourceConfigError(f"{where}: empty value (name a column of the file or write an expression)")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise SourceConfigError(f"{where}: {len(text):,} characters, more than the {MAX_EXPRESSION_CHARS:,} a mapping may "
                                "have: filter with a shorter condition (IN (...), a LIKE pattern)")
    try:
        trees = sqlglot.parse(text, read="duckdb")
    except RecursionError:
        raise SourceConfigError(f"{where}: nested too deeply to read (parentheses or operators); write it flatter") from None
    except sqlglot.errors.ParseError as exc:
        if not condition and re.fullmatch(r"[^()'\";]+", text):  # a column name with spaces or symbols, written bare
            return Expr(text, frozenset({text.lower()}), column_name=text)
        hint = ('; a column name with spaces or symbols is written in double quotes: "Customer ID" IS NOT NULL'
                if condition else "")
        what = "a SQL condition" if condition else "a column name or a SQL expression"
        raise SourceConfigError(f"{where}: not {what} ({str(exc).splitlines()[0]}){hint}") from None
    if len(trees) != 1 or trees[0] is None:
        raise SourceConfigError(f"{where}: one expression expected, found {len(trees)} statements")
    for node in trees[0].find_all(exp.Column):
        root = next((node.args[k].name for k in ("catalog", "db", "table") if node.args.get(k)), "")
        if root.lower() in _warehouse_names():  # not a STRUCT column's field: a table of the warehouse
            raise SourceConfigError(f"{where}: {node.sql()} reads another table; name the file's column only (a STRUCT "
                                    f"column named {root!r}: write {root}['{node.name}'])")
    tree = struct_fields(trees[0])
    if not condition and isinstance(tree, exp.Alias) and re.fullmatch(r"[^()'\";]+", text):  # `Invoice Date`: bare
        return Expr(text, frozenset({text.lower()}), column_name=text)
    for node in tree.walk():
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):  # x.upper(): its x is no column to sqlglot
            raise SourceConfigError(f"{where}: method-call syntax is not allowed ({node.sql(dialect='duckdb')[:80]}): "
                                    f"write {node.expression.sql(dialect='duckdb').split('(')[0].lower()}(...) with the "
                                    "column as its first argument")
        for kind, words in _FORBIDDEN:
            if isinstance(node, kind):
                raise SourceConfigError(f"{where}: {words} is not allowed in a mapping: {node.sql(dialect='duckdb')[:80]}")
        if isinstance(node, exp.Alias):
            raise SourceConfigError(f"{where}: aliases are not allowed ({node.sql()}); the contract column is the name")
        if isinstance(node, exp.Func) and not isinstance(node, exp.Binary):  # AND / OR are operators, not calls
            name = (node.name if isinstance(node, exp.Anonymous) else type(node).__name__).lower()
            if "read" in type(node).__name__.lower() and not isinstance(node, exp.Anonymous):
                raise SourceConfigError(f"{where}: {node.sql(dialect='duckdb')[:80]} reads files; a mapping may read "
                                        "the file's own columns only")
            since_now = name == "age" and len(node.expressions) == 1  # age(ts) reads the clock (DuckDB: CONSISTENT)
            if _function_names(node) & _unrepeatable_functions() or since_now:
                raise SourceConfigError(f"{where}: function {node.sql(dialect='duckdb')[:80]} reads state or is not "
                                        "repeatable")
            if isinstance(node, exp.Anonymous):
                kinds = _duckdb_functions().get(name, set())
                if not kinds & {"scalar", "macro"}:
                    what = "a table function" if kinds & {"table", "table_macro"} else (
                        "an aggregate function" if "aggregate" in kinds else "not a DuckDB scalar function")
                    raise SourceConfigError(f"{where}: function {node.name}() is {what}; only scalar functions are allowed")
    columns = frozenset(c.name.lower() for c in tree.find_all(exp.Column))
    if isinstance(tree, exp.Column):
        return Expr(text, columns, column_name=tree.name)
    return Expr(text, columns, text_columns=text_columns(tree), string_columns=text_columns(tree, comparisons=False))


def _function_names(node: exp.Func) -> set[str]:
    """The names a function node goes by, lower-cased (see _DENIED_FUNCTIONS)."""
    written = re.match(r"([A-Za-z_]\w*)(?:\(|$)", node.sql(dialect="duckdb"))  # NAME(...) or a bare NAME
    return {n.lower() for n in (node.name if isinstance(node, exp.Anonymous) else "", node.sql_name(),
                                written.group(1) if written else "") if n}


# Where an expression uses a column as text: the operand of a pattern match or of a string function, the parts of
# a concatenation, a side of a comparison with a text literal. A CSV column used so stays text in every file
# (mapping.py), also in a file where all its values look like numbers: invoice numbers are digits except credit
# notes ('C536379'), and a day without credit notes made `InvoiceNo LIKE 'C%'` fail on a BIGINT.
_TEXT_OPERAND = (exp.Like, exp.ILike, exp.Glob, exp.SimilarTo, exp.RegexpLike, exp.RegexpILike, exp.StartsWith,
                 exp.Upper, exp.Lower, exp.Substring, exp.Trim, exp.Left, exp.Right, exp.RegexpExtract,
                 exp.RegexpReplace, exp.RegexpSplit, exp.StrPosition, exp.StrToTime, exp.StrToDate, exp.Contains,
                 exp.SplitPart, exp.Split, exp.Pad, exp.Length, exp.Reverse, exp.Initcap, exp.Levenshtein, exp.Bracket,
                 exp.Replace)
_COMPARISON = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.In)


def text_columns(tree: exp.Expression, comparisons: bool = True) -> frozenset[str]:
    """The file columns ``tree`` uses as text (see above); functions sqlglot does not know count when every
    DuckDB overload takes text as their first argument. ``comparisons=False``: only what a string function or a
    concatenation reads (a typed column compared with a text literal is compared as its type: ``amount < '100'``)."""
    def column(node) -> str | None:
        node = node.unnest() if isinstance(node, exp.Expression) else None
        return node.name.lower() if isinstance(node, exp.Column) else None

    out: set[str] = set()
    for node in tree.walk():
        operands = [node.this, node.args.get("expression"), *(node.args.get("expressions") or [])]
        if isinstance(node, (exp.DPipe, exp.Concat)):
            picked = operands
        elif isinstance(node, _TEXT_OPERAND):
            picked = [node.this]
        elif isinstance(node, exp.Anonymous):
            picked = operands[2:3] if node.name.lower() in _text_first_functions() else []
        elif isinstance(node, _COMPARISON) and comparisons:
            text = any(isinstance(o, exp.Literal) and o.is_string for o in operands)
            picked = [o.this if isinstance(o, exp.Bracket) else o for o in operands] if text else []
        else:
            picked = []
        out |= {c for c in map(column, picked) if c}
    return frozenset(out)


@lru_cache(maxsize=1)
def _text_first_functions() -> frozenset[str]:
    import duckdb

    firsts: dict[str, set[str]] = {}
    for name, params in duckdb.sql("SELECT function_name, parameter_types FROM duckdb_functions() "
                                   "WHERE function_type = 'scalar' AND len(parameter_types) > 0").fetchall():
        firsts.setdefault(name.lower(), set()).add(params[0])
    return frozenset(n for n, types in firsts.items() if types == {"VARCHAR"})


def sources_path(data_root: Path) -> Path:
    return config_path(data_root, SOURCES_FILE, SOURCES_ENV)


def _folder(name: str, value: str | None, where: str) -> str:
    raw = (value or name).strip()
    folder = raw.rstrip("/")
    parts = Path(folder).parts
    if not folder or raw.startswith(("/", "~")) or any(p in ("..", ".") for p in parts) or "\\" in folder:
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
    """The declared sources of one file's text, plus an implicit source per unclaimed contract folder."""
    model = parse_model(text, path, _FileModel, SourceConfigError)
    declared = [_source(name, m, path) for name, m in model.sources.items()]
    claimed = {s.folder for s in declared}
    implicit = [SourceDef(t, t, t, declared=False) for t in C.TABLES if t not in claimed and t not in model.sources]
    return declared + implicit


def load_sources(data_root: Path) -> list[SourceDef]:
    """The sources of a data root (``$SEG_SOURCES_FILE`` or ``<root>/sources.yaml``; none: one per contract folder)."""
    path = sources_path(data_root)
    text = read_text(path, SourceConfigError) if path.exists() else ""
    if not path.exists() and os.environ.get(SOURCES_ENV):
        raise SourceConfigError(f"{path}: {SOURCES_ENV} names a file that does not exist")
    return parse_sources(text, path)
