"""Additive incremental models: add the aggregates of the rows that arrived since the last build.

The default incremental strategy (``recompute``, incremental.py) rebuilds the changed keys from all
their input rows: for a user with a new click, every click of that user is read again. A model whose
aggregates are counts, sums, minima and maxima per key (``-- incremental_strategy: additive``, e.g.
events per user and category) does not need that: the stored row plus the aggregates of the new rows
*is* the new row. A build then reads only the new input rows and merges them into the table
(``MERGE``: ``count``/``sum`` add up, ``min``/``max`` take the smaller/larger): at 1M users, 0.6 s instead
of 1.4 s for clicks per user and category. Its inputs must be raw rows, never rewritten: over
``staging.stg_orders`` (which reads the rewritten ``staging.line_orders``) an order that got another line
would be added up twice, so ``features.user_category_activity`` uses ``delete+insert`` (sql_models.py).

Which rows are new: rows of files ingested since the last build, plus older rows whose event time has
just come inside ``<= as-of`` (delivered early, dated after the last build's as-of). That is exact only
if the model counts a row once it has arrived and its event time is at or before as-of, so
:func:`additive_merge` checks the SQL says exactly that: one aggregate query grouped by the unique key,
and every input filtered with ``<event_time> <= getvariable('as_of')``. A full rebuild (first build, code
or settings change, as-of moved back, rebase) is the same as for any incremental model.
"""

from __future__ import annotations

from datetime import datetime

import sqlglot
from sqlglot import exp

from seg_assets.features.incremental import new_rows_sql, restrict_inputs

MERGERS = {  # aggregate -> how the stored value (t) and the new rows' value (d) combine
    exp.Count: "t.{c} + d.{c}",
    exp.Sum: "CASE WHEN t.{c} IS NULL THEN d.{c} WHEN d.{c} IS NULL THEN t.{c} ELSE t.{c} + d.{c} END",
    exp.Min: "least(t.{c}, d.{c})",
    exp.Max: "greatest(t.{c}, d.{c})",
}


def additive_merge(sql: str, keys: list[str], event_times: dict[tuple[str, str], str], source: str = "<sql>") -> dict[str, str]:
    """column -> merge expression for an additive model; ``ValueError`` naming what breaks additivity."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    if not isinstance(tree, exp.Select):
        raise ValueError(f"{source}: an additive model is one SELECT ... GROUP BY (CTEs allowed)")
    group = tree.args.get("group")
    grouped = sorted(e.name for e in group.expressions) if group else []
    if grouped != sorted(keys) or not all(isinstance(e, exp.Column) for e in group.expressions):
        raise ValueError(f"{source}: an additive model groups by exactly its unique key ({', '.join(keys)}), "
                         f"not by {', '.join(grouped) or 'nothing'}")
    merges = {}
    for column in tree.expressions:
        name = column.alias_or_name
        if name in keys:
            continue
        agg = column.this if isinstance(column, exp.Alias) else column
        merge = next((m for kind, m in MERGERS.items() if type(agg) is kind), None)
        if merge is None or agg.find(exp.Distinct) is not None:
            raise ValueError(f"{source}: column '{name}' of an additive model must be count(...), sum(...), min(...) "
                             f"or max(...) without DISTINCT, not {column.sql(dialect='duckdb')}")
        merges[name] = merge.format(c=name)
    for table in tree.find_all(exp.Table):
        ref = (table.db, table.name)
        if ref not in event_times:
            continue
        select = table.find_ancestor(exp.Select)
        where = select.args.get("where") if select else None
        if not where or not any(_is_as_of_bound(lte, event_times[ref]) for lte in where.find_all(exp.LTE)):
            raise ValueError(f"{source}: an additive model counts a row once its event time is at or before as-of: "
                             f"read {'.'.join(ref)} with WHERE {event_times[ref]} <= getvariable('as_of')")
    return merges


def _is_as_of_bound(lte: exp.LTE, event_time: str) -> bool:
    return (isinstance(lte.this, exp.Column) and lte.this.name == event_time
            and lte.expression.sql(dialect="duckdb").lower().replace('"', "'") == "getvariable('as_of')")


def restrict_to_new_rows(sql: str, event_times: dict[tuple[str, str], str], *, since_file_id: int, until_file_id: int,
                         since_as_of: datetime, until_as_of: datetime) -> str:
    """The query with each input replaced by its rows not counted by the last build."""
    return restrict_inputs(sql, {ref: new_rows_sql(et, since_file_id, until_file_id, since_as_of, until_as_of)
                                 for ref, et in event_times.items()})


def merge_new_rows(con, target: str, keys: list[str], merges: dict[str, str], delta_sql: str) -> int:
    """Merge the new rows' aggregates into ``target`` (call inside a transaction); rows touched."""
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM d.{k}" for k in keys)
    sets = ", ".join(f"{c} = {m}" for c, m in merges.items())
    return int(con.sql(f"MERGE INTO {target} t USING ({delta_sql}) d ON {on} "
                       f"WHEN MATCHED THEN UPDATE SET {sets} WHEN NOT MATCHED THEN INSERT BY NAME").fetchall()[0][0])
