"""One landing file, seen through its source: the SQL giving each contract column, and what is missing.

A contract column comes from the source's mapping (sources.yaml: a file column or an expression), else
from a file column of the same name (the contract's own layout), else it is absent. Values the file
cannot deliver are derived here: an absent ``key_from`` id (``clicks.event_id``, ``order_items.line_id``)
and ``clicks.funnel_stage``.

CSV files are read as text (so that the loader can tell an empty field from a missing one and reject
single rows). Inside an *expression*, though, a CSV column is typed the way a reader of the file would
expect: BIGINT when every non-empty value in the file is a whole number written with digits only, DOUBLE when
every one is a number (neither with a leading zero, which marks an id or code), otherwise text with empty
fields as NULL. So ``abs(Quantity)`` or ``Quantity * UnitPrice`` work on CSV as on Parquet. Exceptions keep one
mapping working on every file of a source: a column the source's expressions use as text (``InvoiceNo LIKE
'C%'``, ``CustomerID <> ''``: expressions.text_columns) is text in every file, and so is every column an id's
expression reads (``coalesce(user_id, user_pseudo_id)``); a column without any value in the file (a header-only
file, a column left empty) is an untyped NULL, which fits any expression. A column mapped by name alone stays
text and is typed by the contract's rules, row by row.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import sqlglot

from seg_assets.ingest import contract as C
from seg_assets.ingest.events import stage_of
from seg_assets.ingest.expressions import Expr
from seg_assets.ingest.reading import Source
from seg_assets.ingest.source_config import SourceDef
from seg_assets.warehouse import sql_string

_KEY_SEPARATOR = "\x1f"


class MappingError(ValueError):
    """The source's mapping cannot be evaluated on this file (a type error in an expression, ...)."""


@dataclass
class Mapped:
    columns: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # contract column -> (SQL, DuckDB type)
    where: str | None = None  # keep a row when true
    extras: list[str] = field(default_factory=list)  # file columns nothing reads
    missing_inputs: dict[str, list[str]] = field(default_factory=dict)  # file column -> contract columns needing it
    pii_names: set[str] = field(default_factory=set)  # file columns holding personal data (lower-cased)
    notes: list[str] = field(default_factory=list)
    computed: set[str] = field(default_factory=set)  # contract columns a source computes with an expression

    def missing_required(self, spec: C.TableSpec) -> list[str]:
        return [c for c in spec.file_required_columns if c not in self.columns]


# A value with a leading zero ('007', a code) keeps its column text: a number would lose the zero.
LEADING_ZERO = "^[+-]?0[0-9]"


def _typed_inputs(con, src: Source, names: set[str], by_lower: dict[str, str], text: set[str],
                  strings: set[str]) -> dict[str, str]:
    """SQL for each file column an expression reads: as is (Parquet, an empty text NULL as in a CSV file: a guest's
    empty customer number passed a source's ``where: Kunde IS NOT NULL`` in Parquet only, a tester's; a number or time
    the expressions use as text, ``strings``, is cast to text: ``replace(Betrag, ',', '.')`` fits a file where Betrag
    is DOUBLE) or typed from its text (CSV, see above; ``text``: the columns the expressions use as text, or that an id
    is made of)."""
    if not src.is_csv:
        type_of = dict(zip(src.idents, src.types))
        return {n: f"CAST({by_lower[n]} AS VARCHAR)" if n in strings and _scalar(type_of[by_lower[n]])
                else f"nullif({by_lower[n]}, '')" if type_of[by_lower[n]] == "VARCHAR" else by_lower[n] for n in names}
    names = sorted(names)
    if not names:
        return {}
    probes = []
    for n in names:
        v = f"nullif(trim({by_lower[n]}), '')"
        plain = f"({v} IS NULL OR NOT regexp_matches({v}, '{LEADING_ZERO}'))"
        # digits only: DuckDB's try_cast('2.5' AS BIGINT) rounds to 3 (8.16 was stored as 8)
        whole = f"regexp_full_match({v}, '[+-]?[0-9]+') AND try_cast({v} AS BIGINT) IS NOT NULL"
        probes += [f"count({v}) > 0", f"bool_and({v} IS NULL OR ({whole} AND {plain}))",
                   f"bool_and({v} IS NULL OR (try_cast({v} AS DOUBLE) IS NOT NULL AND {plain}))"]
    flags = con.sql(f"SELECT {', '.join(probes)} FROM {src.relation}").fetchall()[0]
    out = {}
    for i, n in enumerate(names):
        v = f"nullif(trim({by_lower[n]}), '')"
        has_values, is_int, is_float = flags[3 * i: 3 * i + 3]
        out[n] = ("NULL" if not has_values else f"nullif({by_lower[n]}, '')" if n in text
                  else f"try_cast({v} AS BIGINT)" if is_int else f"try_cast({v} AS DOUBLE)" if is_float
                  else f"nullif({by_lower[n]}, '')")
    return out


def _short_type(duckdb_type: str, width: int = 60) -> str:
    """A DuckDB type for a message, cut to ``width`` but keeping what says it is a list (``STRUCT(...)[]``: cut to its
    first 60 characters, a GA4 ``items`` column read as a STRUCT, and ``items.item_id`` was what the message advised)."""
    lists = re.search(r"(\[\d*\])+$", duckdb_type)
    suffix = lists.group(0) if lists else ""
    body = duckdb_type[:len(duckdb_type) - len(suffix)]
    return (body if len(body) <= width else body[:width] + ("...)" if body.endswith(")") else "...")) + suffix


def _list_hint(expr: Expr | None, src: Source) -> str:
    """For a mapping that reads a LIST column: how to reach its items' fields (``items.item_id`` indexes the list by a
    text and reads no field)."""
    if expr is None:
        return ""
    lists = [(n.strip(), t) for n, t in zip(src.names, src.types) if n.strip().lower() in expr.columns and t.endswith("]")]
    if not lists:
        return ""
    name, typ = lists[0]
    part = ".field" if typ[:-2].startswith("STRUCT") else ""
    return (f"; {name} is a list ({_short_type(typ)}): {name}[1]{part} reads its first item"
            f"{' (' + name + '.field reads no field of a list)' if part else ''}; a mapping reads one row, so the "
            "other items of a row are not taken in")


NESTED = ("STRUCT", "MAP", "UNION")  # with a LIST ("...[]"): DuckDB types whose parts an expression reaches into


def _scalar(duckdb_type: str) -> bool:
    """A number, time or flag (not text, and not a STRUCT, MAP or LIST)."""
    return not duckdb_type.startswith(("VARCHAR", *NESTED)) and not duckdb_type.endswith("]")


def _describe(con, src: Source, exprs: dict[str, str], source: SourceDef) -> dict[str, str]:
    """DuckDB type of each mapped expression (binding errors become one readable line)."""
    if not exprs:
        return {}
    items = ", ".join(f"{sql} AS {name}" for name, sql in exprs.items())  # contract names are plain identifiers
    try:
        rows = con.sql(f"DESCRIBE SELECT {items} FROM {src.relation}").fetchall()
    except duckdb.Error as exc:
        raise MappingError(_misfit(con, src, exprs, source, exc)) from None
    return {r[0]: r[1] for r in rows}


def _misfit(con, src: Source, exprs: dict[str, str], source: SourceDef, exc: Exception) -> str:
    """One line for a mapping that does not bind on this file: which expression, the columns it reads as this file
    gives them (type, a value) and DuckDB's reason. The same mapping may work on a file whose values read as numbers
    (``10.50``) and not on one where they are text (``"10,50"``)."""
    first = str(exc).splitlines()[0].rstrip(".")
    name = next((n for n, sql in exprs.items() if _binds(con, src, sql) is False), None)
    if name is None:
        return (f"source {source.name!r}: a mapping does not fit this file: {first}. Fix the expression "
                "in sources.yaml (CAST or TRY_CAST where a text column meets a number)")
    expr = source.columns[name]
    columns = {n.strip().lower(): (i, t) for n, i, t in zip(src.names, src.idents, src.types)}
    absent = _absent_field(con, src, name, expr, columns, first)
    if absent is not None:
        return f"source {source.name!r}: {absent}"
    seen = []
    for col in sorted(expr.columns & set(columns)):
        ident, typ = columns[col]
        value = []
        if typ.startswith("VARCHAR"):  # show the value that made the column text, not any value (h5's '6' beside 'abc')
            value = con.sql(f"SELECT {ident}::VARCHAR FROM {src.relation} WHERE nullif(trim({ident}::VARCHAR), '') IS NOT NULL "
                            f"AND (try_cast(trim({ident}::VARCHAR) AS DOUBLE) IS NULL "
                            f"OR regexp_matches(trim({ident}::VARCHAR), '{LEADING_ZERO}')) LIMIT 1").fetchall()
        value = value or con.sql(f"SELECT {ident}::VARCHAR FROM {src.relation} WHERE {ident} IS NOT NULL LIMIT 1").fetchall()
        seen.append(f"{col} is {typ}" + (f" (e.g. {str(value[0][0])[:30]!r})" if value else ""))
    return (f"source {source.name!r}: {name}: {expr.text} does not fit this file ({'; '.join(seen)}): {first}. "
            "Make it fit every file in sources.yaml (CAST(col AS VARCHAR) where a number or time meets text; "
            "CAST(col AS DOUBLE) where text meets a number: a row it fails on is rejected as mapping_failed)")


_NO_KEY = re.compile(r'Could not find key "([^"]+)" in struct')
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a name needing no quotes, in SQL and in a JSON path


def _absent_field(con, src: Source, name: str, expr: Expr, columns: dict[str, tuple[str, str]], error: str) -> str | None:
    """The line for a dotted name whose last field this file's STRUCT lacks (``properties.product_id`` in a file
    converted from JSON by read_json, whose STRUCT has only the keys its rows carry: a drop of page calls has no
    product_id): the field, the fields the file has, and a mapping that reads the key through JSON, NULL where a file
    lacks it. DuckDB's own words with advice to CAST could not help (a tester's, session 33). None for other errors."""
    match = _NO_KEY.search(error)
    if match is None:
        return None
    key = match.group(1)
    for node in sqlglot.parse_one(expr.text, read="duckdb").find_all(sqlglot.exp.Column):
        parts = [node.args[k].name for k in ("catalog", "db", "table") if node.args.get(k)] + [node.name]
        if len(parts) < 2 or parts[-1].lower() != key.lower() or parts[0].lower() not in columns:
            continue
        sql = columns[parts[0].lower()][0] + "".join(f"[{sql_string(p)}]" for p in parts[1:-1])
        try:
            if not con.sql(f"DESCRIBE SELECT {sql} AS v FROM {src.relation}").fetchall()[0][1].startswith("STRUCT("):
                continue
            # its fields as DuckDB names them (the type's text was split by hand: a name holding a comma, "a,b", failed)
            names = [row[0] for row in con.sql(f"DESCRIBE SELECT unnest({sql}) FROM {src.relation}").fetchall()]
        except duckdb.Error:
            continue
        if key.lower() in (n.lower() for n in names):  # another struct of the expression lacks it
            continue
        struct = ".".join(p if _PLAIN.fullmatch(p) else '"' + p.replace('"', '""') + '"' for p in parts[:-1])
        # a key that is no plain name as a JSON Pointer: '$.a.b' reads a, then b (NULL for key "a.b"), '/a.b' the key
        path = "$." + key if _PLAIN.fullmatch(key) else "/" + key.replace("~", "~0").replace("/", "~1")
        mapping = f"json_extract_string(to_json({struct}), {sql_string(path)})"
        mapping = '"' + mapping.replace("\\", "\\\\").replace('"', '\\"') + '"'  # as a YAML double-quoted value
        return (f"{name}: {expr.text}: {struct} has no field {key!r} in this file (its fields: {', '.join(names)}): "
                f"check its spelling; if the field is only missing from this file (a STRUCT converted from JSON holds "
                f"only the keys its rows carry), map it through JSON, {name}: "
                f"{mapping}, NULL where a file lacks it, "
                f"or convert the file with the field in its schema (read_json's columns=)")
    return None


def _binds(con, src: Source, sql: str) -> bool:
    try:
        con.sql(f"DESCRIBE SELECT {sql} FROM {src.relation}").fetchall()
        return True
    except duckdb.Error:
        return False


def try_alias(column: str) -> str:
    """Staging's name for a computed column's TRY(struct_pack(v := expr)): NULL where the expression failed on the row."""
    return f"_try__{column}"


@contextmanager
def no_shared_subexpressions(con):
    """DuckDB's common-subexpression pass off while expressions run under TRY: it computes a part its bound plan
    repeats once, outside the TRYs, and a row's error failed the file. Its binder makes repeats of its own (NULLIF,
    a simple CASE, BETWEEN and IN repeat their operand), so no reading of the text can tell which need it. Costs 14 %
    of staging a 5M-row mapped file (bench/RESULTS.md, session 21)."""
    con.execute("SET disabled_optimizers = 'common_subexpressions'")
    try:
        yield
    finally:
        con.execute("RESET disabled_optimizers")


DERIVED_KEY = "<derived from the row's typed values>"  # Mapped.columns' SQL of an id that derived_key_sql computes


def derived_key_sql(col: C.Column, present: set[str]) -> str:
    """md5 of the row's **typed** contract values plus its occurrence among identical rows of the file (needs ``_row``
    and the typed columns). Typed, not as delivered: the same line re-delivered as CSV (``8.5``, ``12/2/2010 10:37``)
    after Parquet (``8.500``, a timestamp) is the same key, a duplicate, not a second line."""
    texts = [f"coalesce(CAST({c} AS VARCHAR), '')" if c in present else "''" for c in col.key_from]
    values = f"concat_ws('{_KEY_SEPARATOR}', {', '.join(texts)})"
    occurrence = f"row_number() OVER (PARTITION BY {values} ORDER BY _row)"
    return f"md5({values} || '{_KEY_SEPARATOR}' || {occurrence})"


def _funnel_stage(con, src: Source, event_sql: str, computed: bool, source: SourceDef) -> str:
    """A CASE giving each event name of this file its stage (names decided in Python by events.stage_of). A computed
    event_type is read under TRY here and from its staged TRY value in the CASE: a row it fails on is a reject."""
    listed = f"trim(CAST(try({event_sql}) AS VARCHAR))" if computed else f"trim(CAST({event_sql} AS VARCHAR))"
    with no_shared_subexpressions(con):
        names = [r[0] for r in con.sql(f"SELECT DISTINCT {listed} AS n FROM {src.relation} WHERE n <> ''").fetchall()]
    whens = [f"WHEN {sql_string(n)} THEN '{stage_of(n, source.event_types)}'" for n in sorted(names)]
    whens = [w for w in whens if not w.endswith("THEN 'other'")]
    name = f"trim(CAST({try_alias('event_type')}.v AS VARCHAR))" if computed else f"trim(CAST({event_sql} AS VARCHAR))"
    return f"CASE {name} {' '.join(whens)} ELSE 'other' END" if whens else "'other'"


def _as_column(expr: Expr, by_lower: dict[str, str]) -> Expr:
    """A value written as exactly a column name of this file is that column, even where it also parses as an
    expression: ``Kunden-ID`` is the column, not ``Kunden - ID`` (German exports: ``E-Mail``, ``Artikel-Nr.``)."""
    name = expr.text.strip()
    if expr.column_name is None and name.lower() in by_lower:
        return Expr(expr.text, frozenset({name.lower()}), column_name=name)
    if expr.column_name is None and HYPHENATED.fullmatch(name) and expr.columns and not expr.columns & set(by_lower):
        # the same name in a file that lacks it: the missing column is the name as written, not its parts (a
        # tester's: `Kunden-Nr` over an export saying `KundenNr` named `Kunden` and `Nr`)
        return Expr(expr.text, frozenset({name.lower()}), column_name=name)
    return expr


HYPHENATED = re.compile(r"[\w.]+(-[\w.]+)+")  # Kunden-Nr, E-Mail, Artikel-Nr.: read as one column's name


def map_columns(con, source: SourceDef, src: Source) -> Mapped:
    """How each contract column of ``source.table`` is read from one file (see the module docstring)."""
    spec = source.spec
    by_lower: dict[str, str] = {}
    for name, ident in zip(src.names, src.idents):
        by_lower.setdefault(name.strip().lower(), ident)
    out = Mapped()
    kinds = {col.name: col.kind for col in spec.columns}
    used: set[str] = set()
    expr_inputs: set[str] = set()
    text_inputs: set[str] = set()
    string_inputs: set[str] = set()  # read by a string function or || of an expression (Parquet casts them to text)
    mapping = {name: _as_column(expr, by_lower) for name, expr in source.columns.items()}
    for contract_name, expr in mapping.items():
        for name in expr.columns:
            if name not in by_lower:
                out.missing_inputs.setdefault(name, []).append(contract_name)
        used |= expr.columns
        if expr.column_name is None:
            expr_inputs |= expr.columns
            # an id is text: the columns it is made of stay text (a GA4 id 1234567890.1700000123 typed as a number
            # lost its digits, 200 users became one)
            text_inputs |= expr.columns if kinds.get(contract_name) == C.ID else expr.text_columns
            string_inputs |= expr.string_columns
    if source.where is not None:
        for name in source.where.columns:
            if name not in by_lower:
                out.missing_inputs.setdefault(name, []).append("where")
        used |= source.where.columns
        expr_inputs |= source.where.columns
        text_inputs |= source.where.text_columns
        string_inputs |= source.where.string_columns
    for col in spec.columns:  # known before the file is read: a file rejected whole hashes them in its rejects too
        if col.pii and col.name in mapping:
            out.pii_names |= mapping[col.name].columns
        if col.name not in mapping and not col.derived:  # read under its contract name (or a name the contract allows)
            used.update(name for name in (col.name, *col.file_names) if name in by_lower)
    out.extras = [n for n in src.names if n.strip().lower() not in used]  # what nothing reads
    seen = Counter(n.strip().lower() for n in src.names)
    repeated = sorted(n for n in used if seen[n] > 1)
    if repeated:  # two 'amount' columns (an export joined twice): the first is read, and the person is told
        out.notes.append(f"column(s) {', '.join(repeated)} appear more than once in the header: the first of each is read")
    if out.missing_inputs:
        return out
    typed = _typed_inputs(con, src, expr_inputs, by_lower, text_inputs, string_inputs)
    exprs: dict[str, str] = {}
    for col in spec.columns:
        if col.derived:
            continue
        expr = mapping.get(col.name)
        if expr is not None and expr.column_name is not None:
            ident = by_lower[expr.column_name.lower()]
            out.columns[col.name] = (ident, src.types[src.idents.index(ident)])
        elif expr is not None:
            exprs[col.name] = expr.sql(typed)
        elif any(name in by_lower for name in (col.name, *col.file_names)):
            name = next(name for name in (col.name, *col.file_names) if name in by_lower)
            ident = by_lower[name]
            out.columns[col.name] = (ident, src.types[src.idents.index(ident)])
    types = _describe(con, src, exprs, source)
    out.columns.update({name: (sql, types.get(name)) for name, sql in exprs.items()})
    out.computed = set(exprs)
    out.columns = {c.name: out.columns[c.name] for c in spec.columns if c.name in out.columns}  # contract order
    nested = next(((n, t) for n, (_, t) in out.columns.items() if t and (t.endswith("]") or t.startswith(NESTED))), None)
    if nested is not None:  # a LIST id was stored as the text '[a]', a STRUCT category as '{...}'
        raise MappingError(f"source {source.name!r}: {nested[0]} is read from a nested value ({_short_type(nested[1])}), "
                           "not one value: map one of its parts in sources.yaml (column.field for a STRUCT, column[1] "
                           "for a list's first item)" + _list_hint(mapping.get(nested[0]), src))
    if source.where is not None:
        out.where = f"coalesce(CAST(({source.where.sql(typed)}) AS BOOLEAN), false)"
    for col in spec.columns:
        if col.key_from and col.name not in out.columns and all(c in out.columns for c in spec.file_required_columns):
            out.columns[col.name] = (DERIVED_KEY, "VARCHAR")
            out.notes.append(f"{col.name} derived from each row's values")
        if col.derived and col.name == "funnel_stage" and "event_type" in out.columns:
            out.columns[col.name] = (_funnel_stage(con, src, out.columns["event_type"][0], "event_type" in out.computed, source),
                                     "VARCHAR")
    return out
