"""Incremental builds: re-aggregate only the users with new rows, and remember what each build saw.

A per-user table is *incremental* when a user's row depends on that user's input rows only (sums,
counts, min/max up to as-of). Such a table is updated by recomputing the rows of the **changed keys**:
the users with a row that arrived since the last build (``_file_id`` above the build's watermark: a raw row
is never changed in place, a replaced one (keep: latest) comes back with its file's id and leaves the keys it
no longer names in ``meta.replaced_keys``) or whose event time has just come inside the window
(``last as-of < event_time <= as-of``), and for a table that counts in sliding windows ending at as-of
("orders in the last 30 days"), the users with a row that has just left one (``last as-of - 30 days <=
event_time <= as-of - 30 days``). Everything else in the table is still exact. The windows are read from
the SQL (:func:`sliding_windows`), so a new windowed column needs nothing else.

``meta.model_builds`` keeps one row per incremental table: the code version, as-of and ledger watermark
of its last build, and how it was built. A build falls back to a full rebuild when that state cannot be
trusted (no state, other code, the as-of moved back, a rebase was asked for) or when so many keys changed
that a full rebuild is cheaper.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import sqlglot
from sqlglot import exp

from seg_assets.warehouse import has_column, sql_string, table_exists, upsert

STATE_TABLE = "meta.model_builds"
CHANGED = "_seg_changed_keys"  # temp table holding the changed keys of the build in progress
DELTA = "_seg_delta_rows"  # temp table holding the recomputed rows of those keys
REBASE_TAG = "seg-assets/rebase"  # run tag: "true" rebuilds every incremental table in full
FULL_WHEN_CHANGED_SHARE = 0.5  # more changed keys than this share of the table: a full rebuild is cheaper
MOVED_BACK = "as-of moved back"  # a build's reason when its as-of is before the last build's (a backfill)

_DDL = f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
  model VARCHAR PRIMARY KEY,
  code_version VARCHAR NOT NULL,
  as_of TIMESTAMP NOT NULL,
  max_file_id BIGINT NOT NULL,
  mode VARCHAR NOT NULL,
  changed_keys BIGINT,
  reason VARCHAR,
  params JSON,
  built_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
)"""


@dataclass(frozen=True)
class Source:
    """An input relation of an incremental table: its name and the column that dates its rows."""

    table: str
    event_time: str


@dataclass(frozen=True)
class BuildState:
    code_version: str
    as_of: datetime
    max_file_id: int
    params: dict = field(default_factory=dict)
    reason: str = ""  # why the last build ran as it did
    mode: str = ""  # full, incremental, or RESET (reset_state: the next build is full, for the reason it gives)

    @property
    def backfill(self) -> bool:
        """The last build went back in time (an ``--as-of`` in the past): its rows describe that past."""
        return self.reason.startswith(MOVED_BACK)


@dataclass(frozen=True)
class Plan:
    """How this build runs: ``full`` (with the reason) or ``incremental`` over ``changed`` keys."""

    mode: str
    reason: str
    max_file_id: int
    changed: int | None = None
    since_file_id: int | None = None  # incremental: the last build's watermark and as-of
    since_as_of: datetime | None = None

    @property
    def incremental(self) -> bool:
        return self.mode == "incremental"


def rebase_requested(tags: dict | None) -> bool:
    return str((tags or {}).get(REBASE_TAG, "")).lower() in ("1", "true", "yes")


def ensure_state_table(con) -> None:
    con.sql(f"CREATE SCHEMA IF NOT EXISTS {STATE_TABLE.split('.')[0]}")
    con.sql(_DDL)


def read_state(con, model: str) -> BuildState | None:
    ensure_state_table(con)
    row = con.sql(f"SELECT code_version, as_of, max_file_id, params, reason, mode FROM {STATE_TABLE} WHERE model = ?",
                  params=[model]).fetchall()
    if not row:
        return None
    code, as_of, max_file_id, params, reason, mode = row[0]
    return BuildState(code, as_of, int(max_file_id), json.loads(params) if params else {}, reason or "", mode or "")


def build_stamp(plan: Plan, code_version: str, params: dict) -> str:
    """What a build stamps its rows with (``features_build``): the ledger watermark it read and a digest of its code
    and settings. Scores compare it with the one they were made from, as they compare ``as_of``: a row recomputed at
    an unchanged as-of (rows that arrived late, a code change) is scored again."""
    digest = hashlib.sha1(json.dumps([code_version, params], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{plan.max_file_id}-{digest}"


def write_state(con, model: str, code_version: str, as_of: datetime, plan: Plan, params: dict | None = None) -> None:
    ensure_state_table(con)
    con.execute(
        f"INSERT OR REPLACE INTO {STATE_TABLE} (model, code_version, as_of, max_file_id, mode, changed_keys, reason, params, "
        "built_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, now() AT TIME ZONE 'UTC')",  # a replaced row kept its first built_at
        [model, code_version, as_of, plan.max_file_id, plan.mode, plan.changed, plan.reason, json.dumps(params or {})],
    )


RESET = "reset"  # a build state's mode once reset_state has made its next build a full one


def reset_state(con, models: list[str], why: str) -> None:
    """Make the next build of ``models`` a full one that says ``why`` (reviews re-scored with a new scorer: deleting
    the state made it say "first build", a session-34 tester's). Until then the state counts as missing for the
    builds that read these tables (:func:`built_watermark`)."""
    if not models:
        return
    ensure_state_table(con)
    con.execute(f"UPDATE {STATE_TABLE} SET mode = ?, reason = ? WHERE model IN ({', '.join('?' * len(models))})",
                [RESET, f"build state reset: {why}", *models])


def forget_state(con, model: str) -> None:
    """Drop a table's build state: its next build is a full one (the table was rebuilt elsewhere, e.g. on Spark)."""
    ensure_state_table(con)
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE model = ?", [model])


def ledger_watermark(con) -> int:
    """The newest ledger file id: every raw row with ``_file_id`` up to it is visible to this build."""
    if not table_exists(con, "meta.ingest_ledger"):
        return 0
    return int(con.sql("SELECT coalesce(max(file_id), 0) FROM meta.ingest_ledger").fetchall()[0][0])


def built_watermark(con, ledger: int, built: tuple[str, ...]) -> tuple[int, str | None]:
    """(watermark, reason for a full build or None) of a build that reads the tables ``built``: tables that their
    own builds rewrite (SQL table and incremental models), which hold the raw rows only up to their last build's
    watermark. Recording the ledger's instead would skip for good the rows they take in later (a subset run that
    builds this table before them)."""
    marks = [ledger]
    for table in built:
        state = read_state(con, table)
        if state is None or state.mode == RESET:
            return ledger, f"input {table} has no build state"
        marks.append(state.max_file_id)
    return min(marks), None


def plan_build(con, *, model: str, target: str, key: str | None, sources: list[Source], code_version: str, as_of: datetime,
               rebase: bool = False, params: dict | None = None, windows: tuple[str, ...] = (),
               built: tuple[str, ...] = (), dated: bool = True) -> Plan:
    """Decide full or incremental; for incremental, fill the temp table of changed keys (``key=None``: an
    additive model, which reads the new rows themselves and needs no changed keys). ``built``: the rewritten
    tables the build reads, directly or through views (:func:`built_watermark`). ``dated=False``: the build
    does not read as-of (:func:`reads_as_of`), so only new files change keys and a move of as-of is nothing.

    A full rebuild is chosen when the changed keys already in the table are more than half of it: keys not in it
    yet (new users, or orders the model will not hold) add rows, not rewrites."""
    watermark, unbuilt = built_watermark(con, ledger_watermark(con), built)
    state = read_state(con, model)
    reason = None
    if rebase:
        reason = "rebase requested"
    elif unbuilt:
        reason = unbuilt
    elif state is None or not table_exists(con, target):
        reason = "first build"
    elif state.mode == RESET:
        reason = state.reason
    elif state.code_version != code_version:
        reason = "code changed"
    elif params is not None and any(state.params.get(k) != v for k, v in params.items()):
        reason = "settings changed"
    elif dated and as_of < state.as_of:
        reason = f"{MOVED_BACK} ({as_of} < {state.as_of})"
    elif dated and as_of > state.as_of and state.backfill:
        # rows of the users who did nothing since would keep the backfill's past as-of: a return to "now" after a
        # backfill followed by a plain refresh published the past for most users and lost the history it had
        reason = f"the last build was a backfill (as of {state.as_of}): every key is rebuilt at the new as-of"
    elif watermark < state.max_file_id:
        reason = "the ledger is behind the last build"
    present = [s for s in sources if table_exists(con, s.table)]  # an absent input (no clicks yet) adds no rows
    if reason is None and not present:
        reason = "no inputs yet"
    elif reason is None and (missing := [s.table for s in present if not has_column(con, s.table, '_file_id')]):
        reason = f"inputs without _file_id: {', '.join(missing)}"
    if reason:
        return Plan("full", reason, watermark)
    if key is None:
        return Plan("incremental", "rows since the last build", watermark, None, state.max_file_id, state.as_of)
    union = " UNION ALL ".join(
        f"SELECT {key} FROM {s.table} WHERE "
        + (new_rows_sql(s.event_time, state.max_file_id, watermark, state.as_of, as_of, windows) if dated
           else f"_file_id > {state.max_file_id} AND _file_id <= {watermark}")
        for s in present
    )
    from seg_assets.ingest.contract import REPLACED_KEYS_TABLE  # (here: the ingest package imports this module)

    if "," not in key and table_exists(con, REPLACED_KEYS_TABLE):  # keys a replaced row named and its new one does not
        union += (f" UNION ALL SELECT value AS {key} FROM {REPLACED_KEYS_TABLE} WHERE key_column = '{key}' "
                  f"AND file_id > {state.max_file_id} AND file_id <= {watermark}")
    con.sql(f"CREATE OR REPLACE TEMP TABLE {CHANGED} AS SELECT DISTINCT {key} FROM ({union})")
    changed = int(con.sql(f"SELECT count(*) FROM {CHANGED}").fetchall()[0][0])
    size, held = con.sql(f"SELECT (SELECT count(*) FROM {target}), "
                         f"(SELECT count(*) FROM {target} WHERE {key} IN (SELECT {key} FROM temp.{CHANGED}))").fetchall()[0]
    if size and held > FULL_WHEN_CHANGED_SHARE * size:
        return Plan("full", f"{held:,} of {size:,} keys changed: a full rebuild is cheaper", watermark, changed)
    return Plan("incremental", f"{changed:,} changed keys", watermark, changed, state.max_file_id, state.as_of)


def new_rows_sql(event_time: str, since_file_id: int, until_file_id: int, since_as_of: datetime, until_as_of: datetime,
                 windows: tuple[str, ...] = ()) -> str:
    """The condition on an input's rows that a build since the last one has not seen counted: rows of files
    ingested since, and rows whose event time has just come inside as-of (or, per window, just left it: a
    closed slice, which catches both ``>`` and ``>=`` windows at their edge)."""
    since = f"TIMESTAMP '{since_as_of.isoformat(sep=' ')}'"
    until = f"TIMESTAMP '{until_as_of.isoformat(sep=' ')}'"
    return (f"(_file_id > {since_file_id} AND _file_id <= {until_file_id}) "
            f"OR ({event_time} > {since} AND {event_time} <= {until}) "
            + "".join(f"OR ({event_time} BETWEEN {since} - INTERVAL '{w}' AND {until} - INTERVAL '{w}') " for w in windows))


def restrict_inputs(sql: str, conditions: dict[tuple[str, str], str]) -> str:
    """The query with each input table ``(schema, name)`` in ``conditions`` replaced by its rows that meet
    the condition (sqlglot): how both incremental strategies point a model's SQL at a part of its inputs."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    for table in list(tree.find_all(exp.Table)):
        condition = conditions.get((table.db, table.name))
        if condition is None:
            continue
        only = sqlglot.parse_one(f"SELECT * FROM {table.db}.{table.name} WHERE {condition}", dialect="duckdb")
        table.replace(only.subquery(table.alias_or_name))
    return tree.sql(dialect="duckdb")


def restrict_to_changed(sql: str, tables: set[tuple[str, str]], key: str, keys_table: str = CHANGED) -> str:
    """The query with each input table in ``tables`` replaced by its rows of the keys in temp.``keys_table``."""
    return restrict_inputs(sql, dict.fromkeys(tables, f"{key} IN (SELECT {key} FROM temp.{keys_table})"))


def replace_keys(con, target: str, key: str, source: str, columns: list[str]) -> None:
    """Make the changed keys' rows of ``target`` those of ``source`` (a table or registered frame): rows of
    keys still present are updated in place (see :func:`upsert`), new keys inserted, changed keys that
    ``source`` no longer has deleted. Call inside a transaction."""
    con.sql(f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM temp.{CHANGED}) "
            f"AND {key} NOT IN (SELECT {key} FROM {source})")
    upsert(con, target, key, source, columns)


def pending_rows_sql(con, target: str, versions: dict[str, str | None], *, everyone: bool = False) -> str:
    """``features.user_features`` rows that ``target`` has not scored yet at their as-of with these models.

    Scores are stamped with the features' ``as_of`` and the versions that made them (``versions``: column ->
    version in service): a user whose features were recomputed, a new user, or every user after a model
    change is pending; the others keep their score. That is what makes a refresh cost what is new.
    """
    if everyone or not table_exists(con, target):
        return "SELECT * FROM features.user_features"
    return (f"SELECT f.* FROM features.user_features f LEFT JOIN {target} s USING (user_id) "
            f"WHERE {stale_row_sql(versions)}")


def stale_row_sql(versions: dict[str, str | None]) -> str:
    """The condition, on ``s`` (the scored row, left-joined) and ``f`` (its features), that the score must be redone."""
    lit = lambda v: "NULL" if v is None else sql_string(v)  # noqa: E731
    stale = "".join(f" OR s.{col} IS DISTINCT FROM {lit(v)}" for col, v in versions.items())
    return f"(s.user_id IS NULL OR s.as_of IS DISTINCT FROM f.as_of OR s.features_build IS DISTINCT FROM f.features_build{stale})"


# Sliding windows, read from the SQL: where a row's part in an incremental model can change as as-of moves.
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
                 "year": 365 * 86400}  # only to sort the windows
_INTERVAL = re.compile(rf"(\d+)\s*({'|'.join(_UNIT_SECONDS)})s?")
_FLIPPED = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE}  # as-of on the left: mirror


def sliding_windows(sql: str, event_times: set[str], source: str = "<sql>") -> tuple[str, ...]:
    """The sliding windows ending at as-of that ``sql`` counts in, e.g. ``('30 days',)`` for ``order_ts >
    getvariable('as_of') - INTERVAL 30 DAY``: each use of as-of must compare an input's event time with as-of
    or as-of minus a constant interval, the only uses whose rows :func:`new_rows_sql` can find when as-of
    moves. Any other use (``date_diff``, a derived column, as-of in the output) is a ``ValueError`` naming it.
    ``'0 days'`` stands for a strict ``event_time < as-of`` bound, which the ``<= as-of`` slice would miss."""
    windows = set()
    for call in _as_of_calls(sql):
        windows |= _window(call, event_times, source)
    return tuple(sorted(windows, key=lambda w: int(w.split()[0]) * _UNIT_SECONDS[w.split()[1].rstrip("s")]))


def _as_of_calls(sql: str) -> list[exp.Expression]:
    return [call for call in sqlglot.parse_one(sql, dialect="duckdb").find_all(exp.Anonymous)
            if call.name.lower() == "getvariable" and [a.name for a in call.expressions] == ["as_of"]]


def reads_as_of(sql: str) -> bool:
    """Whether ``sql`` uses the run's as-of: one that does not holds every delivered row, whatever the as-of."""
    return bool(_as_of_calls(sql))


def _outer(node: exp.Expression) -> exp.Expression:
    while isinstance(node.parent, exp.Paren):
        node = node.parent
    return node


_TIMESTAMPS = tuple(t for t in exp.DataType.Type if t.name.startswith(("TIMESTAMP", "DATETIME")))  # not DATE


def _window(as_of: exp.Expression, event_times: set[str], source: str) -> set[str]:
    """The window of one use of as-of (none for ``<= as-of``); ``ValueError`` when the use has no such bound."""
    bound = _outer(as_of)
    if isinstance(bound.parent, exp.Cast) and bound.parent.to.is_type(*_TIMESTAMPS):  # getvariable('as_of')::TIMESTAMP
        bound = _outer(bound.parent)  # (::DATE moves the window's edge to midnight: rows leave it unseen, a tester's)
    window = None
    if isinstance(bound.parent, exp.Sub) and bound.parent.this is bound:
        window, bound = _interval(bound.parent.expression), _outer(bound.parent)
    test, column = bound.parent, None
    if type(test) in _FLIPPED and window != "":
        column, op = (test.expression, _FLIPPED[type(test)]) if test.this is bound else (test.this, type(test))
    elif isinstance(test, exp.Between) and any(bound is test.args[k] for k in ("low", "high")) and window != "":
        column, op = test.this, exp.GTE if bound is test.args["low"] else exp.LTE
    while isinstance(column, exp.Paren):
        column = column.this
    if not (isinstance(column, exp.Column) and column.name in event_times):
        shown = bound.find_ancestor(exp.Predicate) or bound.parent or bound
        raise ValueError(
            f"{source}: cannot tell which rows `{shown.sql(dialect='duckdb')}` changes as as-of moves: an incremental "
            f"model uses as-of only to compare an input's event time ({', '.join(sorted(event_times)) or 'none'}) with "
            "getvariable('as_of'), or with getvariable('as_of') - INTERVAL <n> <unit> (INTERVAL 30 DAY, "
            "INTERVAL '30 days', to_days(30)) for a sliding window")
    if window:
        return {window}
    # the column on the left: "<= as-of" and "> as-of" flip where the as-of slice looks, "< as-of" and ">= as-of" at its edge
    return {"0 days"} if op in (exp.LT, exp.GTE) else set()


def _interval(node: exp.Expression) -> str:
    """``'30 days'`` for INTERVAL 30 DAY, INTERVAL '30 days', CAST('30 days' AS INTERVAL), to_days(30); ``''``
    for anything else (not a constant interval this module can name)."""
    node = node.unnest()
    text = ""
    if isinstance(node, exp.Interval) and isinstance(node.this.unnest(), exp.Literal):
        text = f"{node.this.unnest().name} {node.unit.name if node.unit else ''}"
    elif isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.INTERVAL) and node.this.is_string:
        text = node.this.name
    elif isinstance(node, (exp.ToDays, exp.Anonymous)):
        name = node.name.lower() if isinstance(node, exp.Anonymous) else "to_days"
        args = node.expressions if isinstance(node, exp.Anonymous) else [node.this]
        if name.startswith("to_") and len(args) == 1 and isinstance(args[0], exp.Literal) and args[0].is_int:
            text = f"{args[0].name} {name[3:]}"
    match = _INTERVAL.fullmatch(text.strip().lower())
    if not match:
        return ""
    n, unit = int(match.group(1)), match.group(2)
    return f"{n} {unit}{'' if n == 1 else 's'}"
