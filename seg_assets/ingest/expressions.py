"""A mapped value of ``sources.yaml``: one DuckDB SQL expression over a landing file's own columns, checked at load.

The file is input like any landing file: an expression can rename, cast and compute, and it can never read other
files or tables, state or the clock. Each one is parsed with sqlglot and refused at load, with nothing ingested,
when it holds a subquery, a table, a table function (``read_csv``, ...), an aggregate or window, a parameter, or a
function that reads state or is not deterministic: re-running an ingestion must give the same rows. Which functions
those are is read from DuckDB's own catalog (:func:`_unrepeatable_functions`), plus the few it marks CONSISTENT
wrongly; functions sqlglot does not know must be scalar functions of that catalog. A dotted name is a STRUCT
column's field (:func:`struct_fields`). Which columns an expression uses as text (:func:`text_columns`) decides
how a CSV column is typed, and which Parquet columns are cast to text, so one mapping fits every file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlglot
from sqlglot import exp

from seg_assets.config_files import ConfigError

# sqlglot logs "contains unsupported syntax" for `Drop Status` (a column's name, read as one below): not the user's news
logging.getLogger("sqlglot").setLevel(logging.ERROR)

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


@dataclass(frozen=True)
class Expr:
    """One mapped value: the text as written, and the file columns it reads (lower-cased names)."""

    text: str
    columns: frozenset[str]
    column_name: str | None = None  # set when the value is just a column of the file
    text_columns: frozenset[str] = frozenset()  # the columns it uses as text (text_columns())
    string_columns: frozenset[str] = frozenset()  # of those, the ones a string function or || reads (not a comparison)
    spelled: tuple[tuple[str, str], ...] = ()  # (lower-cased name, as written) of each column it reads

    def spelling(self, column: str) -> str | None:
        """How the mapping writes ``column`` (`Kunde`), which errors name; None if it does not read it."""
        if self.column_name is not None:
            return self.column_name if self.column_name.lower() == column else None
        return dict(self.spelled).get(column)

    def sql(self, idents: dict[str, str]) -> str:
        """The expression with each column replaced by its identifier in the file's relation."""
        if self.column_name is not None:
            return idents[self.column_name.lower()]
        tree = struct_fields(sqlglot.parse_one(self.text, read="duckdb"))
        tree = tree.transform(
            lambda n: sqlglot.parse_one(idents[n.name.lower()], read="duckdb") if isinstance(n, exp.Column) else n)
        return tree.sql(dialect="duckdb")


@lru_cache(maxsize=1)
def _unrepeatable_functions() -> frozenset[str]:
    """DuckDB's functions a mapping may not call, from its own catalog rather than a list kept by hand: scalar functions
    not CONSISTENT (the clock, sequences, session and catalog state, ``sleep_ms``, ``error``, ``write_log``), and the
    macros whose definition holds a subquery (``pg_get_viewdef`` reads the warehouse's view definitions, ``get_block_size``
    its storage) or calls one of these (``ago`` reads the clock, ``pg_sleep`` sleeps), to any depth."""
    import duckdb

    rows = duckdb.sql("SELECT function_name, stability FROM duckdb_functions() WHERE function_type = 'scalar'").fetchall()
    return _and_macros_calling({n.lower() for n, stability in rows if stability != "CONSISTENT"} | _DENIED_FUNCTIONS,
                               also=("select",))


@lru_cache(maxsize=1)
def _set_returning_macros() -> frozenset[str]:
    """Macros that give several rows per row, as ``unnest`` does (``regexp_split_to_table``, ``generate_subscripts``):
    a mapped column is one value per row (a tester's got past the check as macros)."""
    return _and_macros_calling({"unnest"}) - {"unnest"}


def _and_macros_calling(functions: set[str], also: tuple[str, ...] = ()) -> frozenset[str]:
    """``functions`` and DuckDB's macros whose definition calls one of them or holds a word of ``also``, to any depth
    (every overload's definition: pg_get_constraintdef has one with a subquery)."""
    import duckdb

    macros: dict[str, str] = {}
    for n, d in duckdb.sql("SELECT function_name, macro_definition FROM duckdb_functions() "
                           "WHERE function_type = 'macro'").fetchall():
        macros[n.lower()] = macros.get(n.lower(), "") + " " + (d or "").lower()
    found = set(functions)
    while True:
        words = re.compile(r"\b(" + "|".join(map(re.escape, sorted({*also, *found}))) + r")\b")
        more = {n for n, definition in macros.items() if n not in found and words.search(definition)}
        if not more:
            return frozenset(found)
        found |= more


def _starts_a_statement(text: str) -> bool:
    """Its first word opens a statement in sqlglot's DuckDB parser (its own list, not one kept here)."""
    from sqlglot.dialects.duckdb import DuckDB
    from sqlglot.tokens import TokenType

    tokens = DuckDB().tokenize(text)
    return bool(tokens) and tokens[0].token_type in set(DuckDB.parser_class.STATEMENT_PARSERS) - {TokenType.SEMICOLON}


@lru_cache(maxsize=1)
def _duckdb_functions() -> dict[str, set[str]]:
    import duckdb

    out: dict[str, set[str]] = {}
    for name, kind in duckdb.sql("SELECT function_name, function_type FROM duckdb_functions()").fetchall():
        out.setdefault(name.lower(), set()).add(kind)
    return out


@lru_cache(maxsize=1)
def _warehouse_names() -> frozenset[str]:
    """Names a dotted name may not start with: the warehouse's schemas (one per SQL model folder too), its catalog
    (``warehouse.raw.orders.category``: the file's stem) and DuckDB's own."""
    from seg_assets.settings import WAREHOUSE_FILE
    from seg_assets.warehouse import schemas

    return frozenset({*schemas(), Path(WAREHOUSE_FILE).stem, "main", "temp", "system", "information_schema", "pg_catalog",
                      "memory"})


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
    except sqlglot.errors.SqlglotError as exc:  # ParseError, and TokenError (an unterminated quote)
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
    # `Invoice Date` (an alias to sqlglot), `Comment Text`, `Drop Status` (commands), `Set`, `Begin` (one-word
    # statements): a column's name written bare; `ts AT TIME ZONE tz`, `INTERVAL 1 DAY`, `*` stay expressions
    statement = isinstance(tree, (exp.Alias, exp.Command)) or (
        not isinstance(tree, exp.Condition) and re.fullmatch(r"[A-Za-z_]\w*", text))
    if not condition and statement and re.fullmatch(r"[^()'\";]+", text):
        return Expr(text, frozenset({text.lower()}), column_name=text)
    if _starts_a_statement(text):  # ATTACH 'x.db', SET x = 1, INSTALL httpfs, PRAGMA ...: not one value per row
        word = re.split(r"[\s(]", text, maxsplit=1)[0]
        quote = _quoted_hint(text, text[:len(word)], "one named like a keyword")
        raise SourceConfigError(f"{where}: {word.upper()} starts a SQL statement, not an expression: map a column of the "
                                f"file{quote} or compute one value from its columns")
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
            if isinstance(node, exp.Anonymous) and name in _set_returning_macros():
                raise SourceConfigError(f"{where}: function {node.name}() is a set-returning function (several rows per "
                                        "row); a mapped column is one value per row")
            if isinstance(node, exp.Anonymous):
                kinds = _duckdb_functions().get(name, set())
                if not kinds & {"scalar", "macro"}:
                    what = "a table function" if kinds & {"table", "table_macro"} else (
                        "an aggregate function" if "aggregate" in kinds else "not a DuckDB scalar function")
                    call = re.search(rf"{re.escape(node.name)}\s*\([^()'\";]*\)", text)
                    quote = "" if kinds or not call else _quoted_hint(text, call.group(0),
                                                                      "a column name with spaces or brackets")
                    raise SourceConfigError(f"{where}: function {node.name}() is {what}; only scalar functions are "
                                            f"allowed{quote}")
    spelled = {c.name.lower(): c.name for c in tree.find_all(exp.Column)}
    if isinstance(tree, exp.Column):
        return Expr(text, frozenset(spelled), column_name=tree.name)
    return Expr(text, frozenset(spelled), text_columns=text_columns(tree), string_columns=text_columns(tree, comparisons=False),
                spelled=tuple(spelled.items()))


def _quoted_hint(text: str, name: str, what: str) -> str:
    """' (<what> is written in double quotes: <text with its first ``name`` quoted>)' when that reads as one expression,
    else '': quote the column's name, not the whole expression (a reviewer's: "comment IS NOT NULL" is one column)."""
    fixed = text.replace(name, f'"{name}"', 1)
    try:
        tree = sqlglot.parse_one(fixed, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return ""
    return "" if isinstance(tree, (exp.Alias, exp.Command)) or _starts_a_statement(fixed) else \
        f" ({what} is written in double quotes: {fixed})"


def _function_names(node: exp.Func) -> set[str]:
    """The names a function node goes by, lower-cased (see _DENIED_FUNCTIONS)."""
    written = re.match(r"([A-Za-z_]\w*)(?:\(|$)", node.sql(dialect="duckdb"))  # NAME(...) or a bare NAME
    return {n.lower() for n in (node.name if isinstance(node, exp.Anonymous) else "", node.sql_name(),
                                written.group(1) if written else "") if n}


# Where an expression uses a column as text: the operand of a pattern match or of a string function, the parts of
# a concatenation, a side of a comparison with a text literal (``NULLIF``, ``BETWEEN``, a simple ``CASE x WHEN 'a'``
# compare too; ``coalesce`` types its literal as the column). A CSV column used so stays text in every file
# (mapping.py), also in a file where all its values look like numbers: invoice numbers are digits except credit notes
# ('C536379'), and a day without credit notes made `InvoiceNo LIKE 'C%'` fail on a BIGINT.
_TEXT_OPERAND = (exp.Like, exp.ILike, exp.Glob, exp.SimilarTo, exp.RegexpLike, exp.RegexpILike, exp.StartsWith,
                 exp.Upper, exp.Lower, exp.Substring, exp.Trim, exp.Left, exp.Right, exp.RegexpExtract,
                 exp.RegexpReplace, exp.RegexpSplit, exp.StrPosition, exp.StrToTime, exp.StrToDate, exp.Contains,
                 exp.SplitPart, exp.Split, exp.Pad, exp.Length, exp.Reverse, exp.Initcap, exp.Levenshtein, exp.Bracket,
                 exp.Replace)


_COMPARISON = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.In,
               exp.Nullif,  # NULLIF(Stars, '') compares too: a tester's all-digit star column failed on ''
               exp.Between, exp.Coalesce)  # and BETWEEN 'a' AND 'z'; coalesce(Dept, 'unknown') types the literal as Dept


def text_columns(tree: exp.Expression, comparisons: bool = True) -> frozenset[str]:
    """The file columns ``tree`` uses as text (see above); functions sqlglot does not know count when every
    DuckDB overload takes text as their first argument. ``comparisons=False``: only what a string function or a
    concatenation reads (a typed column compared with a text literal is compared as its type: ``amount < '100'``)."""
    def column(node) -> str | None:
        node = node.unnest() if isinstance(node, exp.Expression) else None
        return node.name.lower() if isinstance(node, exp.Column) else None

    out: set[str] = set()
    for node in tree.walk():
        operands = [node.this, node.args.get("expression"), *(node.args.get("expressions") or []),
                    node.args.get("low"), node.args.get("high")]  # (BETWEEN's bounds)
        if isinstance(node, (exp.DPipe, exp.Concat)):
            picked = operands
        elif isinstance(node, _TEXT_OPERAND):
            picked = [node.this]
        elif isinstance(node, exp.Anonymous):
            picked = operands[2:3] if node.name.lower() in _text_first_functions() else []
        elif isinstance(node, _COMPARISON) and comparisons:
            text = any(isinstance(o, exp.Literal) and o.is_string for o in operands)
            picked = [o.this if isinstance(o, exp.Bracket) else o for o in operands] if text else []
        elif isinstance(node, exp.Case) and node.this is not None and comparisons:  # CASE x WHEN 'a': x = 'a'
            text = any(isinstance(i.this, exp.Literal) and i.this.is_string for i in node.args.get("ifs") or [])
            picked = [node.this.this if isinstance(node.this, exp.Bracket) else node.this] if text else []
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
