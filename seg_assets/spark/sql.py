"""The SQL models of ``dbt_like_sql/`` as Spark SQL: one source of truth, transpiled by sqlglot.

A model's DuckDB SQL is parsed, its DuckDB-only variable ``getvariable('as_of')`` bound to a TIMESTAMP literal,
and written in Spark's dialect with ``unsupported_level=RAISE``. sqlglot passes a function it does not know
through unchanged (``GETVARIABLE``, ``list_aggregate``...), which Spark would reject at run time or, worse,
resolve to something else: such a function fails here instead, naming the model and the function.

A model that needs another form on Spark says so explicitly with a sibling file ``<name>.spark.sql`` (same
folder): that file is used on Spark instead of transpiling, must read the same tables, and is itself checked: read
as Spark SQL, bound and written by sqlglot; a function sqlglot does not know must be one pyspark lists.

Tables are read as ``<schema>__<name>`` temporary views (Spark's temp views are unqualified); ``spark/tables.py``
registers each one: raw Parquet, a view model's SQL, or a table model's Parquet.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, UnsupportedError

from seg_assets.errors import InputError

SPARK_SUFFIX = ".spark.sql"
PLACEHOLDER_AS_OF = datetime(2000, 1, 1)


class SparkSqlError(InputError, ValueError):
    """A model cannot run on Spark as written (unknown function, unsupported construct, bad Spark form): an input
    problem, said in one line (it was a 126-line traceback at load, a tester's)."""


# Functions sqlglot writes for Spark under a name that computes something else there: a tester's model ran on both
# engines without a word and differed for 320 of 1,052 users (Sunday orders) and for every user (log10 of spend).
_MEANS_OTHERWISE = {
    exp.DayOfWeek: "dayofweek (Sunday is 0 on DuckDB, 1 on Spark)",
    exp.DayOfWeekIso: "isodow (Sunday 7 on DuckDB, 2 as transpiled)",
    exp.DateDiff: "date_diff/datediff (DuckDB counts the boundaries crossed, Spark whole units elapsed)",
    exp.Mode: "mode (ties broken otherwise)",
    exp.Format: "format ('{}' is no Spark placeholder)",
    exp.Dayname: "dayname ('Sunday' on DuckDB, 'Sun' on Spark)",
    exp.Monthname: "monthname ('January' on DuckDB, 'Jan' on Spark)",
    exp.TimeToUnix: "epoch (seconds with their fraction on DuckDB, whole seconds as unix_timestamp on Spark)",
}


def _not_positive(value: exp.Expression | None) -> bool:
    """A literal position or length of 0 or less (``-2`` parses as a negation of 2)."""
    if isinstance(value, exp.Neg):
        return True
    return isinstance(value, exp.Literal) and value.is_number and float(value.name) <= 0


def _means_otherwise(node: exp.Expression) -> str | None:
    """Why ``node`` computes another value on Spark as transpiled (None: the same)."""
    if type(node) in _MEANS_OTHERWISE:
        return _MEANS_OTHERWISE[type(node)]
    if isinstance(node, exp.Log) and node.args.get("expression") is None:
        return "log(x) (base 10 on DuckDB, e on Spark: write log10 or ln)"
    if isinstance(node, exp.RegexpReplace) and (node.args.get("modifiers") or exp.Literal.string("")).name != "g":
        return "regexp_replace without 'g', or with other options (DuckDB replaces the first match, Spark every one; " \
               "Spark drops the options)"
    if isinstance(node, exp.RegexpLike) and node.args.get("flag") is not None:
        return "regexp_matches with options (Spark drops them)"
    if isinstance(node, (exp.Substring, exp.Left)) and _not_positive(node.args.get("start") or node.args.get("expression")):
        return "substring from 0 or left with a negative length (counted otherwise on Spark)"
    if isinstance(node, exp.TimeToStr) and isinstance(node.args.get("format"), exp.Literal):
        written = node.args["format"].name
        if "%" in exp.TimeToStr(this=exp.column("t"), format=node.args["format"].copy()).sql(dialect="spark"):
            return f"strftime format '{written}' (codes Spark has no pattern for; it fails when Spark runs the model)"
        if "%j" in written:  # written 'DD': 45, not DuckDB's 045 (a reviewer's)
            return f"strftime format '{written}' (%j, the day of the year, is not zero-padded on Spark)"
    if isinstance(node, exp.Extract) and node.this.name.lower() in ("dow", "isodow", "dayofweek", "weekday"):
        return f"extract({node.this.name}) (days of the week numbered otherwise)"
    return None


def _ordered_distinct_concat_beside_distinct(tree: exp.Expression) -> str | None:
    """``string_agg(DISTINCT c, ',' ORDER BY c)`` in a SELECT with another DISTINCT aggregate (``count(DISTINCT x)``,
    ``count(DISTINCT c)`` too): sqlglot writes ``LISTAGG(DISTINCT c) WITHIN GROUP (ORDER BY c)``, which Spark 4 runs alone
    but not beside that one (a helper's model; measured in test_spark_sql.py). The concatenation, written as DuckDB's."""
    for select in tree.find_all(exp.Select):
        distinct = [d for d in select.find_all(exp.Distinct) if d.parent_select is select and d.parent is not select]
        for node in select.find_all(exp.GroupConcat):
            order = node.this
            if node.parent_select is not select or not (isinstance(order, exp.Order) and isinstance(order.this, exp.Distinct)):
                continue
            if any(d is not order.this for d in distinct):  # of the same column too (measured)
                return f"string_agg({order.this.sql(dialect='duckdb')} ... ORDER BY ...)"
    return None


def _skip_null_args(tree: exp.Expression) -> exp.Expression:
    """DuckDB's ``arg_max``/``arg_min`` (``max_by``/``min_by``) skip the rows whose value is NULL; Spark's ``max_by`` and
    ``min_by`` return the NULL of the extreme row (a helper's probe: 'Garden' on DuckDB, NULL on Spark, without a word).
    Written for Spark with ``FILTER (WHERE <value> IS NOT NULL)``, added to a filter the call has; in a window (which
    takes no FILTER) with the ordering NULL where the value is, as Spark skips rows of a NULL ordering (``OVER (...)``
    read NULL on Spark for 'x' on DuckDB, h2 of session 35)."""
    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.ArgMax, exp.ArgMin)) and isinstance(node.parent, exp.Window):
            unset = exp.Is(this=node.this.copy(), expression=exp.Null())
            ordering = exp.If(this=unset, true=exp.Null(), false=node.expression.copy())
            fixed = node.copy()
            fixed.set("expression", ordering)
            return fixed
        if isinstance(node, exp.Filter) and isinstance(node.this, (exp.ArgMax, exp.ArgMin)):
            kept = exp.not_(exp.Is(this=node.this.this.copy(), expression=exp.Null()))
            return exp.Filter(this=node.this.copy(), expression=exp.Where(this=exp.and_(node.expression.this.copy(), kept)))
        if isinstance(node, (exp.ArgMax, exp.ArgMin)) and not isinstance(node.parent, (exp.Filter, exp.Window)):
            kept = exp.not_(exp.Is(this=node.this.copy(), expression=exp.Null()))
            return exp.Filter(this=node.copy(), expression=exp.Where(this=kept))
        return node

    return tree.transform(fix)


def spark_form_path(model_path: Path) -> Path:
    """Where a model's explicit Spark form lives: ``<name>.spark.sql`` beside ``<name>.sql``."""
    return model_path.with_name(model_path.stem + SPARK_SUFFIX)


def explicit_form_advice(source: str | Path) -> str:
    """The end of every refusal of a model's SQL on Spark: where its explicit Spark form would go."""
    return f"give the model an explicit Spark form in {spark_form_path(Path(source)).name} beside it"


def view_name(schema: str, name: str) -> str:
    return f"{schema}__{name}"


def _bind(tree: exp.Expression, variables: dict[str, exp.Expression], source: str) -> exp.Expression:
    """Replace ``getvariable('x')`` by the literal bound to ``x`` (DuckDB's session variables do not exist on Spark)."""
    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "getvariable":
            arg = node.expressions[0] if node.expressions else None
            name = arg.name if isinstance(arg, exp.Literal) and arg.is_string else None
            if name not in variables:
                raise SparkSqlError(f"{source}: getvariable({arg.sql() if arg else ''}) has no value on Spark "
                                    f"(known: {', '.join(sorted(variables))})")
            return variables[name].copy()
        return node

    return tree.transform(replace)


def _rename_tables(tree: exp.Expression) -> exp.Expression:
    """``schema.name`` -> the temp view ``schema__name`` (aliased as ``name`` so qualified columns still resolve)."""
    for table in list(tree.find_all(exp.Table)):
        if not table.db:  # a CTE (models read only schema-qualified tables: sql_files.upstream_tables)
            continue
        alias = table.alias or table.name
        table.replace(exp.table_(view_name(table.db, table.name), alias=exp.to_identifier(alias)))
    return tree


def _spark_has(function: str) -> bool:
    """Whether Spark has a function of this name: pyspark.sql.functions wraps Spark's SQL functions."""
    from pyspark.sql import functions

    return not function.startswith("_") and callable(getattr(functions, function.lower(), None))


def to_spark(sql: str, *, source: str, as_of: datetime, read: str = "duckdb", explicit: bool = False) -> str:
    """The query in Spark SQL, as-of bound, tables renamed to their temp views; SparkSqlError if it cannot be, or if
    a function would compute another value there (not in an ``explicit`` Spark form, whose author meant Spark's).
    ``read``: the dialect the query is written in (an explicit form is Spark SQL: read as DuckDB, its backquoted
    names did not parse and a Spark function DuckDB also has was taken in DuckDB's meaning)."""
    try:
        tree = sqlglot.parse_one(sql, dialect=read)
    except ParseError as exc:
        raise SparkSqlError(f"{source}: not valid {read} SQL: {str(exc).splitlines()[0]}") from None
    literal = exp.cast(exp.Literal.string(as_of.isoformat(sep=" ")), exp.DataType.build("TIMESTAMPNTZ"))
    tree = _bind(tree, {"as_of": literal}, source)
    unknown = sorted({node.name for node in tree.find_all(exp.Anonymous)})
    if explicit:  # sqlglot does not know every Spark function (bround, make_date, xxhash64...)
        unknown = [name for name in unknown if not _spark_has(name)]
        if unknown:
            raise SparkSqlError(f"{source}: function(s) {', '.join(unknown)} are not Spark SQL: fix this Spark form")
    if unknown:
        raise SparkSqlError(f"{source}: function(s) {', '.join(unknown)} have no known Spark form: rewrite them, or "
                            + explicit_form_advice(source))
    differ = [] if explicit else sorted({why for node in tree.walk() if (why := _means_otherwise(node))})
    if not explicit and (crash := _ordered_distinct_concat_beside_distinct(tree)):
        raise SparkSqlError(f"{source}: {crash} beside another DISTINCT aggregate fails on Spark (a ClassCastException in "
                            "its rewrite of several DISTINCT aggregates): drop its ORDER BY, aggregate in two steps, or "
                            + explicit_form_advice(source))
    if differ:
        raise SparkSqlError(f"{source}: {'; '.join(differ)}: the same SQL gives other values on Spark: rewrite it, or "
                            + explicit_form_advice(source))
    if not explicit:
        tree = _skip_null_args(tree)
    tree = _rename_tables(tree)
    try:
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise SparkSqlError(f"{source}: not expressible in Spark SQL: {str(exc).splitlines()[0]}") from None


def model_spark_sql(model, as_of: datetime) -> str:
    """The Spark SQL of a SqlModel (features/sql_files.py): its ``.spark.sql`` form if it has one, else transpiled."""
    from seg_assets.features.sql_files import render_sql, upstream_tables

    explicit = spark_form_path(model.path)
    if explicit.exists():
        text = render_sql(explicit.read_text(), str(explicit))
        reads = upstream_tables(text, source=str(explicit), dialect="spark")
        if _case_blind(reads) != _case_blind(model.upstream):  # RAW.ORDERS is raw.orders to both engines
            raise SparkSqlError(f"{explicit}: reads {_names(reads)} but {model.path.name} reads {_names(model.upstream)}: "
                                "the Spark form must read the same tables")
        return to_spark(text, source=str(explicit), as_of=as_of, read="spark", explicit=True)
    return to_spark(model.sql, source=str(model.path), as_of=as_of)


def check_models(models) -> None:
    """Fail at load (``--engine spark``), naming the model and the function, if any model cannot run on Spark."""
    for model in models:
        model_spark_sql(model, PLACEHOLDER_AS_OF)


def _case_blind(tables) -> set[tuple[str, ...]]:
    return {tuple(part.lower() for part in table) for table in tables}


def _names(tables) -> str:
    return ", ".join(".".join(t) for t in tables) or "nothing"
