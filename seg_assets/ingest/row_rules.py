"""A contract column's typing and rules as SQL (contract.py declares them): what the loader runs per row.

Each rule is a ``WHEN ... THEN 'rule:column|reason'`` of one CASE; the first failing rule wins and names the
column and the value it saw (shortened; e-mail-like values hashed).
"""

from __future__ import annotations

from datetime import datetime

from seg_assets.ingest.contract import DECIMAL, ENUM, ID, INTEGER, STRING, TIMESTAMP, USER_ID_COLUMNS, Column, has_at_sign_sql, user_id_sql

REASON_VALUE_CHARS = 60


def shown_sql(v: str) -> str:
    """A raw value inside a reason: quoted, shortened, e-mail-like values hashed."""
    return (
        f"'''' || CASE WHEN {has_at_sign_sql(v)} THEN 'sha256:' || left(sha256({v}), 16) "
        f"ELSE left({v}, {REASON_VALUE_CHARS}) END || ''''"
    )


# Parquet column types whose values already fit a kind, and the SQL typing them ({x}: the column) to what the
# text path gives. Other types (strings, floating point, ...) are typed from their text, like CSV. Floating
# point stays there on purpose: the double 0.145 casts to 0.14 but its text '0.145' to 0.15, and an `items`
# of 1.0000001 is rejected directly but 1 from its text (the text path costs ~0.05 s per 500k-row file).
_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
NAIVE_TIMES = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")  # a date is its midnight
TYPED_SOURCES: dict[str, dict[str, str]] = {
    TIMESTAMP: {"TIMESTAMP": "{x}", **{t: "CAST({x} AS TIMESTAMP)" for t in NAIVE_TIMES[1:]},
                "TIMESTAMP WITH TIME ZONE": "{x} AT TIME ZONE 'UTC'", "TIMESTAMPTZ_NS": "CAST({x} AS TIMESTAMPTZ) AT TIME ZONE 'UTC'"},
    DECIMAL: {t: "try_cast({x} AS {type})" for t in (*_INTEGERS, "DECIMAL")},
    INTEGER: {t: "try_cast({x} AS INTEGER)" for t in _INTEGERS},  # out of range: NULL, unparseable as from text
}


def typed_sql(col: Column, source: str, source_type: str, local_time: bool = False) -> str | None:
    """SQL typing the column ``source`` of DuckDB type ``source_type`` without a round trip through text, or None.

    ``local_time``: a naive TIMESTAMP is local time of the session's TimeZone (the source's ``timezone``).
    """
    base = source_type.split("(")[0]
    if local_time and col.kind == TIMESTAMP and base in NAIVE_TIMES:
        return f"CAST(CAST({source} AS TIMESTAMP) AS TIMESTAMPTZ) AT TIME ZONE 'UTC'"
    template = TYPED_SOURCES.get(col.kind, {}).get(base)
    return None if template is None else template.format(x=source, type=col.sql_type)


def outside_enum_sql(col: Column, value: str) -> str:
    """``value`` is not NULL and not one of the column's enum values (the loader's rule and the raw check's count).

    list_position, not ``NOT IN (...)``: DuckDB plans an IN list of 5+ values as a hash join, which costs a
    build per query and does not keep the file's row order that the streaming id tests rely on.
    """
    allowed = ", ".join(f"'{e}'" for e in col.enum)
    return f"{value} IS NOT NULL AND list_position([{allowed}], {value}) IS NULL"


def epoch_sql(v: str) -> str:
    """Text of a Unix time (9 to 19 digits: seconds, milliseconds, microseconds or nanoseconds, told apart by
    magnitude, as exports from trackers and databases write them) as naive UTC; NULL for anything else."""
    x = f"try_cast({v} AS DOUBLE)"
    scale = f"CASE WHEN {x} < 1e11 THEN 1e6 WHEN {x} < 1e14 THEN 1e3 WHEN {x} < 1e17 THEN 1 ELSE 1e-3 END"
    return (f"CASE WHEN regexp_full_match({v}, '[0-9]{{9,19}}([.][0-9]+)?') "
            f"THEN make_timestamp(CAST({x} * {scale} AS BIGINT)) END")


def id_source(source: str | None, source_type: str | None) -> str | None:
    """An id delivered as a number, as the id's text: a whole number without its fraction. pandas writes an integer
    id column with a gap as floats, so one customer arrived as '12680.0' from Parquet and '12680' from CSV: two users;
    its CSV export writes '12680.0' as text, which is the same number (other text with a '.' is kept as it is)."""
    base = (source_type or "").split("(")[0]
    if source is not None and base == "VARCHAR":
        return (f"CASE WHEN contains({source}, '.') THEN regexp_replace({source}, '^\\s*(-?[0-9]+)[.]0+\\s*$', '\\1') "
                f"ELSE {source} END")
    if source is None or base not in ("DOUBLE", "FLOAT", "REAL", "DECIMAL"):
        return source
    # a decimal is exact at any size; a whole double is an integer too (past 2^53 the writer may have rounded the id,
    # but its digits are then what the file holds, as a CSV export of it would write them)
    exact = "" if base == "DECIMAL" else f" AND abs({source}) < 1e38"  # HUGEINT's range
    return (f"CASE WHEN {source} = trunc({source}){exact} THEN CAST(CAST({source} AS HUGEINT) AS VARCHAR) "
            f"ELSE CAST({source} AS VARCHAR) END")


RAW_VALUES = "its values: raw.rejects.raw_values"  # where a reason that cannot show the values sends a person
MAPPING_FAILED = "mapping_failed:"  # the rule of a row a source's expression failed on (staging.py: its where too)
# a staged row the source's where left out, kept (for contract.WITHHELD_FROM only) for its id: counted as filtered,
# never a reject nor a row taken in (staging.py, writing.py)
LEFT_OUT = "left_out:where"


def text_sql(source: str | None) -> str:
    """A delivered column as trimmed text, NULL when empty or missing (no such column)."""
    return "CAST(NULL AS VARCHAR)" if source is None else f"nullif(trim(CAST({source} AS VARCHAR)), '')"


def column_sql(
    col: Column, source: str | None, source_type: str | None, future_limit: datetime, min_ts: datetime,
    timestamp_format: str | None = None, local_time: bool = False, mapped_from: str | None = None,
    failed: str | None = None,
    read_something: str | None = None,
    values_read: str | None = None,
) -> tuple[list[str], list[str], str, list[str]]:
    """(text select items, typed select items, final typed expression, rule CASEs) for one contract column.

    ``source`` is the delivered column (None: absent), ``source_type`` its DuckDB type. Rules test its
    trimmed text ``v`` (NULL when empty or missing) and yield 'rule|reason'. A column whose type already
    fits the kind (:func:`typed_sql`, parquet) is typed as is: ``v`` is then no column but an expression
    inside reasons only, built for the rows a rule rejects (a CASE branch runs for its own rows only). ``mapped_from``:
    the file column or expression a source maps the column from, named in reasons; ``failed``: SQL true where that
    expression failed on the row (a CAST of 'n/a', a division by zero), its first rule; ``read_something``: SQL true
    where the expression mapping the column had a non-empty value to read (staging._read_something): its NULL there
    is a value it does not know, not an empty one; ``values_read``: SQL text of the values that expression read, for
    the reasons of both.
    Timestamps as text are parsed with ``timestamp_format`` (strptime codes) when given, else as ISO-8601 (an offset
    may follow a space); text without an offset is local time of the session's TimeZone (UTC unless the source names
    one).
    """
    n, p = col.name, f"p__{col.name}"
    # how a person finds the value: the contract column, and the file's column or expression a source maps it from
    cut = mapped_from if mapped_from is None or len(mapped_from) <= 80 else mapped_from[:77] + "..."
    shown = (col.file_name if cut is None else f"{col.file_name} (from {cut})").replace("'", "''")
    read = values_read or f"'{RAW_VALUES}'"
    typed = typed_sql(col, source, source_type, local_time) if source and source_type else None
    v = text_sql(source) if typed else f"v__{n}"
    texts = [] if typed else [f"{text_sql(id_source(source, source_type) if col.kind == ID else source)} AS {v}"]
    x = source if typed else v  # NULL exactly when the value is missing (a typed value's text is never blank)
    rules = [f"WHEN {failed} THEN '{MAPPING_FAILED}{n}|{shown} fails on this row (' || {read} || ')'"] if failed else []
    if col.kind == ENUM and read_something:  # a NULL from a value the expression read is a value it does not know, not
        # an empty field: a tester's 60 pending lines were taken for paid ones (an empty line status keeps its default),
        # and an order's was "missing status" without its value (a tester's)
        rules.append(f"WHEN {v} IS NULL AND ({read_something}) THEN 'unknown:{n}|{shown} gives no value for ' || {read} || "
                     f"': map each value it may read (a WHEN per value; an ELSE only if every other value means the same)'")
    if col.required:
        rules.append(f"WHEN {x} IS NULL THEN 'missing:{n}|missing {shown}'")
    inner: list[str] = []
    if col.kind in (ID, STRING):
        final = user_id_sql(v) if n in USER_ID_COLUMNS else v
    elif col.kind == ENUM:
        final = f"lower({v})" if col.empty_default is None else f"coalesce(lower({v}), {col.empty_default})"
        rules.append(f"WHEN {outside_enum_sql(col, f'lower({v})')} THEN 'unknown:{n}|unknown {shown} ' || {shown_sql(v)}")
    else:
        if typed:
            inner.append(f"{typed} AS {p}")
        elif col.kind == TIMESTAMP:
            if timestamp_format:
                fmt = timestamp_format.replace("'", "''")
                parsed = f"CAST(try_strptime({v}, '{fmt}') AS TIMESTAMPTZ) AT TIME ZONE 'UTC'"
            else:  # an offset after a space ('2026-02-05 23:14:00 +0100': Shopify's exports) joined to the time, and
                # RFC 3339's lower-case 't' and 'z' read as upper case, only where the plain cast fails (coalesce
                # evaluates it for those rows: a regex on every value cost 3x)
                spaced = f"regexp_replace(upper({v}), '\\s+([+-]\\d{{2}}(:?\\d{{2}})?|Z)$', '\\1')"
                parsed = f"coalesce(try_cast({v} AS TIMESTAMPTZ), try_cast({spaced} AS TIMESTAMPTZ)) AT TIME ZONE 'UTC'"
            inner.append(f"coalesce({parsed}, {epoch_sql(v)}) AS {p}")
        elif col.kind == DECIMAL:
            inner.append(f"try_cast({v} AS {col.sql_type}) AS {p}")
        else:  # INTEGER: reject non-integral values instead of rounding them
            inner.append(
                f"CASE WHEN try_cast({v} AS DECIMAL(18,3)) = trunc(try_cast({v} AS DECIMAL(18,3))) "
                f"THEN try_cast(try_cast({v} AS DECIMAL(18,3)) AS INTEGER) END AS {p}"
            )
        rules.append(f"WHEN {x} IS NOT NULL AND {p} IS NULL THEN 'unparseable:{n}|unparseable {shown}: ' || {shown_sql(v)}")
        if col.sql_type == "DOUBLE":  # 'NaN' is a DOUBLE (sorted above every number: it read "propensity > 1")
            rules.append(f"WHEN isnan({p}) THEN 'unparseable:{n}|{shown} is not a number: ' || {shown_sql(v)}")
        if col.min_value is not None:
            label = f"negative {shown}" if col.min_value == 0 else f"{shown} < {col.min_value:g}"
            rule = "negative" if col.min_value == 0 else "below_min"
            rules.append(f"WHEN {p} < {col.min_value} THEN '{rule}:{n}|{label}: ' || {shown_sql(v)}")
        if col.max_value is not None:
            rules.append(f"WHEN {p} > {col.max_value} THEN 'above_max:{n}|{shown} > {col.max_value:g}: ' || {shown_sql(v)}")
        if col.kind == TIMESTAMP:
            hi, lo = f"TIMESTAMP '{future_limit.isoformat(sep=' ')}'", f"TIMESTAMP '{min_ts.isoformat(sep=' ')}'"
            rules.append(f"WHEN {p} > {hi} THEN 'future:{n}|{shown} in the future: ' || {shown_sql(v)}")
            rules.append(f"WHEN {p} < {lo} THEN 'too_old:{n}|{shown} before {min_ts:%Y-%m-%d %H:%M:%S}: ' || {shown_sql(v)}")
        final = f"coalesce({p}, {col.empty_default})" if col.empty_default is not None else p
    return texts, inner, final, rules
