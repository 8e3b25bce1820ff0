"""What a SQL model file is: ``dbt_like_sql/<schema>/<name>.sql``, its leading comment block (the keys of
:data:`HEADER_KEYS`) and the tables its one query reads (sqlglot). sql_models.py builds and materializes them."""

import difflib
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import sqlglot
from sqlglot import exp

from seg_assets.errors import InputError
from seg_assets.warehouse import sql_model_files

_HEADER = re.compile(r"^\s*--\s*(\w+)\s*:\s*(.*?)\s*$")
STRATEGIES = ("recompute", "delete+insert", "additive")
# What a model's leading comment block may set: a line "-- <key>: <value>" with another key is refused (a misspelt key
# was silently ignored: an incremental model without its event time, a model without its description)
HEADER_KEYS = ("materialized", "description", "unique_key", "incremental_strategy", "event_time")


class SqlModelError(InputError, ValueError):
    """A SQL model file that cannot be a model (one line naming the file; the command line exits 2 before a run)."""


OWNER = "user_id"  # the key of the per-user models


@dataclass(frozen=True)
class SqlModel:
    schema: str
    name: str
    sql: str
    materialized: str
    description: str
    upstream: tuple[tuple[str, str], ...]
    path: Path
    unique_key: str | None = None
    event_time: str | None = None
    strategy: str = "recompute"

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in (self.unique_key or "").split(",") if k.strip()]

    @property
    def owner_key(self) -> str | None:
        """The key by which this table's rows name a user (an order's table: features/delta.py records the users an
        order left, on either engine), or None: an additive model merges rows instead of rebuilding a key's, and a key
        of several columns, or the user id itself, names no order."""
        keys = self.keys
        return keys[0] if self.strategy != "additive" and len(keys) == 1 and keys[0] != OWNER else None

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def inputs(self) -> list[str]:
        return [".".join(u) for u in self.upstream]

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([self.schema, self.name])

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:12]


def read_header(sql: str) -> dict[str, str]:
    header = {}
    for line in sql.splitlines():
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if not match:
            break
        header[match.group(1).lower()] = match.group(2)
    return header


def upstream_tables(sql: str, *, source: str = "<sql>", dialect: str = "duckdb") -> tuple[tuple[str, str], ...]:
    """The qualified tables a query reads, from its syntax tree (CTE names are not tables). A model is one query: a
    second statement after a ``;`` would run too (``COPY ... TO`` a file), unseen by this reading. ``dialect``:
    ``spark`` for a model's explicit Spark form (spark/sql.py)."""
    try:
        statements = [t for t in sqlglot.parse(sql, dialect=dialect) if t is not None]
    except sqlglot.errors.ParseError as exc:
        first = next((str(e.get("description")) for e in exc.errors), str(exc).splitlines()[0])
        engine = "Spark" if dialect == "spark" else "DuckDB"
        raise SqlModelError(f"{source}: not SQL {engine} reads ({first}): fix the model") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlModelError(f"{source}: a model is one SELECT (or WITH ... SELECT) query; found "
                         f"{', '.join(type(t).__name__.upper() for t in statements) or 'nothing'}")
    tree = statements[0]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    found = set()
    for table in tree.find_all(exp.Table):
        if not table.db and table.name in ctes:
            continue
        if not table.db:
            raise SqlModelError(f"{source}: table '{table.name}' must be schema-qualified (e.g. raw.{table.name})")
        found.add((table.db, table.name))
    return tuple(sorted(found))


MACROS = ("holds_email", "without_order_row", "exact_money")  # the Jinja macros a model file may call: ingest/contract.py's <name>_sql


def render_sql(text: str, source: str) -> str:
    """A model file's SQL with its Jinja macros expanded (dbt's way, with Jinja itself): ``{{ holds_email('category') }}``
    is the contract's one test for a value holding an e-mail address (ingest/contract.py), which five staging
    columns wrote out and a test kept equal. A file without ``{{`` or ``{%`` is its own SQL. Only calls of
    :data:`MACROS` with literal arguments are expanded; any other Jinja is refused, naming its line: DuckDB writes a
    literal brace in ``format()`` as ``{{``, which Jinja would otherwise take as its own and change without a word
    (a reviewer's: ``format('{{{}}}', x)`` gave ``x`` instead of ``{x}``)."""
    if "{{" not in text and "{%" not in text:
        return text
    import jinja2
    from jinja2 import nodes

    from seg_assets.ingest import contract

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    hint = (f"(macros: {', '.join(MACROS)}; DuckDB's literal '{{{{', '{{%' or '{{#' is written inside {{% raw %}}...{{% endraw %}}, "
            "as in dbt)")
    try:
        for line, token, _ in env.lex(text):  # a {# comment #} never reaches the tree: Jinja drops it in silence
            if token == "comment_begin":
                raise SqlModelError(f"{source}: line {line}: a Jinja comment, which Jinja would drop {hint}")
        tree = env.parse(text)
        for node in tree.body:
            parts = node.nodes if isinstance(node, nodes.Output) else [node]
            for part in parts:
                if isinstance(part, nodes.TemplateData):
                    continue
                if not (isinstance(part, nodes.Call) and isinstance(part.node, nodes.Name) and part.node.name in MACROS
                        and all(isinstance(a, nodes.Const) for a in part.args) and not part.kwargs):
                    raise SqlModelError(f"{source}: line {part.lineno}: Jinja other than a call of a macro with literal "
                                        f"arguments {hint}")
        return env.from_string(text).render({name: getattr(contract, f"{name}_sql") for name in MACROS})
    except (jinja2.TemplateError, TypeError) as exc:  # TypeError: a macro called with the wrong arguments
        line = f"line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
        raise SqlModelError(f"{source}: {line}{exc.__class__.__name__}: {str(exc).splitlines()[0]} {hint}") from None


SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a folder (schema) or file (table) name, written unquoted in SQL


@functools.cache
def reserved_words() -> frozenset[str]:
    """DuckDB's keywords that cannot name a schema or table unquoted: ``CREATE SCHEMA IF NOT EXISTS order`` is a syntax
    error (a reviewer's traceback), and so are most of the type/function keywords (``left``, ``join``, ``asof``)."""
    import duckdb

    return frozenset(w for (w,) in duckdb.sql("SELECT keyword_name FROM duckdb_keywords() "
                                              "WHERE keyword_category IN ('reserved', 'type_function')").fetchall())


def load_model(path: Path) -> SqlModel:
    from seg_assets.warehouse import CATALOG_NAMES, OWN_SCHEMAS

    for part, what in ((path.parent.name, "folder (the schema)"), (path.stem, "file name (the table)")):
        if not SQL_NAME.fullmatch(part):  # data-marts/ failed the refresh with a traceback (a tester's)
            raise SqlModelError(f"{path}: the {what} {part!r} must be a plain SQL name (letters, digits and '_', not "
                                "starting with a digit): rename it")
        if part.lower() in reserved_words():
            raise SqlModelError(f"{path}: the {what} {part!r} is a reserved word of SQL: rename it")
    if path.parent.name.lower() in OWN_SCHEMAS:  # meta/segment_models.sql replaced the model registry (a reviewer's)
        raise SqlModelError(f"{path}: the schema {path.parent.name!r} is the project's own ({', '.join(OWN_SCHEMAS)}: "
                            "ingested rows and bookkeeping): put the model in another folder")
    if path.parent.name.lower() in CATALOG_NAMES:  # temp/: a 170-line traceback at the second connection (a reviewer's)
        raise SqlModelError(f"{path}: the folder {path.parent.name!r} is also the name of one of DuckDB's catalogs "
                            f"({', '.join(CATALOG_NAMES)}), which SQL cannot tell from a schema: put the model in "
                            "another folder")
    sql = render_sql(path.read_text(), str(path))
    header = read_header(sql)
    materialized = header.get("materialized", "table").lower()
    if materialized not in ("table", "view", "incremental"):
        raise SqlModelError(f"{path}: materialized must be 'table', 'view' or 'incremental', not '{materialized}'")
    if materialized == "incremental" and not header.get("unique_key"):
        raise SqlModelError(f"{path}: an incremental model needs a '-- unique_key:' header")
    strategy = header.get("incremental_strategy", "recompute").lower()
    if strategy not in STRATEGIES:
        raise SqlModelError(f"{path}: incremental_strategy must be {' or '.join(STRATEGIES)}, not '{strategy}'")
    if materialized == "incremental" and strategy != "additive" and "," in header["unique_key"]:
        raise SqlModelError(f"{path}: a {strategy} model rebuilds the rows of one key column (e.g. user_id; "
                         "delete+insert: several rows per key)")
    if "windows" in header:
        raise SqlModelError(f"{path}: windows are derived from the SQL; remove the '-- windows:' header")
    for key in header:
        if key not in HEADER_KEYS:
            close = difflib.get_close_matches(key, HEADER_KEYS, n=1)
            hint = f"did you mean '-- {close[0]}:'? " if close else ""
            raise SqlModelError(f"{path}: unknown header '-- {key}:' ({hint}the header sets {', '.join(HEADER_KEYS)}; a "
                                "comment in it must not start with a word and a colon)")
    return SqlModel(
        schema=path.parent.name,
        name=path.stem,
        sql=sql,
        materialized=materialized,
        description=header.get("description", f"SQL model {path.parent.name}.{path.stem}"),
        upstream=upstream_tables(sql, source=str(path)),
        path=path,
        unique_key=header.get("unique_key"),
        event_time=header.get("event_time"),
        strategy=strategy,
    )


def discover_models(root: Path | None = None) -> list[SqlModel]:
    return [load_model(p) for p in sql_model_files(root)]
