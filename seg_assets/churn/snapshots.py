"""Training snapshots for churn and future value: features as of a cut-off, labels from the horizon after it.

With order history ``[t0, T]`` (``T`` = the run's as-of) and horizon ``H`` days, the cut-offs are

    c_k = T - H - k * step      for k = 0 .. K-1, while c_k - t0 >= min_history_days (and k < max_snapshots)

and snapshot ``k`` holds one row per user known at ``c_k`` (an order, click or signup at or before it):

* **features as of c_k**, computed by the production code itself: the SQL models of
  ``dbt_like_sql/features/`` run as queries with ``getvariable('as_of')`` set to ``c_k`` (so they read
  nothing after it), and their output goes through :func:`build_user_features`, exactly as the
  ``features/user_features`` asset does at ``T``;
* **labels from (c_k, c_k + H]**: ``orders_next_h`` (completed orders), ``spend_next_h`` (their amount)
  and ``churned`` (1 when there is no completed order in the window). ``c_0 + H = T``: nothing after the
  run's as-of is ever read, whatever the warehouse holds beyond it.

Users are sampled per snapshot (at most ``max_users_per_snapshot``, deterministic positions over the
users sorted by id), so training cost is bounded whatever the number of users. The aggregation itself
is set-based SQL in DuckDB plus vectorised polars: one pass over the orders per snapshot.

``step_days`` defaults to ``max(7, H // 3)`` (30 days for H = 90). The latest snapshot (``k = 0``) is the
time-based holdout of model.py; at least two snapshots are needed (one to train, one to test), that is
``H + step + min_history_days`` days of history (150 for the defaults). With less history no model is
trained (the asset says so) rather than a model with a shorter, different label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from seg_assets.features.incremental import restrict_to_changed
from seg_assets.features.sql_files import discover_models
from seg_assets.features.sql_models import set_as_of
from seg_assets.features.user_features import CATEGORY_INPUT, USER_INPUTS, build_user_features
from seg_assets.ingest.contract import exact_money_sql
from seg_assets.segmentation.selection import sample_indices
from seg_assets.warehouse import create_table_from, table_exists

# build_user_features argument -> the table that feeds it, as the asset reads them (user_features.py): the feature SQL
# models among them are run as queries at each cut-off, the others (the customers) are read as they are.
INPUTS = {arg: table for arg, (table, _) in USER_INPUTS.items()} | {CATEGORY_INPUT[0]: CATEGORY_INPUT[1]}
CUSTOMERS_TABLE = INPUTS["customers"]
ORDERS_TABLE = "staging.stg_orders"
# Where users come from, with the column that says when: known at c if a row is at or before c.
USER_SOURCES = ((ORDERS_TABLE, "order_ts"), ("staging.stg_clicks", "event_ts"), (CUSTOMERS_TABLE, "signup_ts"))
SAMPLED = "_seg_snapshot_users"
# Defaults of the churn asset's config (churn/assets.py ChurnConfig reads them) and of the functions below
MAX_SNAPSHOTS, MIN_HISTORY_DAYS, MAX_USERS_PER_SNAPSHOT = 6, 30, 50_000


@dataclass(frozen=True)
class SnapshotPlan:
    as_of: datetime
    horizon_days: int
    step_days: int
    cutoffs: tuple[datetime, ...]  # newest first; cutoffs[0] = as_of - horizon
    reason: str  # why there are this many snapshots

    @property
    def enough(self) -> bool:
        """At least one snapshot to train on and one (the latest) to test on."""
        return len(self.cutoffs) >= 2

    def describe(self) -> str:
        cuts = ", ".join(f"{c:%Y-%m-%d}" for c in self.cutoffs) or "none"
        return f"horizon {self.horizon_days} d, step {self.step_days} d, cut-offs {cuts} ({self.reason})"


def default_step(horizon_days: int) -> int:
    return max(7, horizon_days // 3)


def plan_snapshots(first_ts: datetime | None, as_of: datetime, horizon_days: int, *, step_days: int | None = None,
                   max_snapshots: int = MAX_SNAPSHOTS, min_history_days: int = MIN_HISTORY_DAYS) -> SnapshotPlan:
    """The cut-offs ``c_k = as_of - H - k * step`` with at least ``min_history_days`` of data before each."""
    if horizon_days < 1:
        raise ValueError("horizon_days must be >= 1")
    step = step_days or default_step(horizon_days)
    cutoffs: list[datetime] = []
    if first_ts is None:
        return SnapshotPlan(as_of, horizon_days, step, (), "no orders")
    for k in range(max_snapshots):
        cut = as_of - timedelta(days=horizon_days + k * step)
        if cut - first_ts < timedelta(days=min_history_days):
            break
        cutoffs.append(cut)
    history = (as_of - first_ts).total_seconds() / 86_400
    if len(cutoffs) == max_snapshots:
        reason = f"max_snapshots={max_snapshots}"
    else:
        reason = (f"{history:.0f} days of history; each cut-off needs {min_history_days} days before it and "
                  f"{horizon_days} after it")
        if len(cutoffs) < 2:  # one to train on, the latest to test on (SnapshotPlan.enough)
            reason += f", and a model needs two cut-offs: {min_history_days + horizon_days + step} days"
    return SnapshotPlan(as_of, horizon_days, step, tuple(cutoffs), reason)


def first_order_ts(con, as_of: datetime) -> datetime | None:
    """Earliest order time at or before as-of (the start of the usable history)."""
    if not table_exists(con, ORDERS_TABLE):
        return None
    return con.sql(f"SELECT min(order_ts) FROM {ORDERS_TABLE} WHERE order_ts <= ?", params=[as_of]).fetchall()[0][0]


def _feature_sql() -> dict[str, object]:
    """build_user_features argument -> the SQL model of its table, for the inputs in the features schema."""
    models = {m.table: m for m in discover_models()}
    wanted = {arg: table for arg, table in INPUTS.items() if table.startswith("features.")}
    missing = [table for table in wanted.values() if table not in models]
    if missing:
        raise RuntimeError(f"feature SQL models not found: {missing}")
    return {arg: models[table] for arg, table in wanted.items()}


def _current_as_of(con):
    try:
        return con.sql("SELECT getvariable('as_of')").fetchall()[0][0]
    except Exception:  # noqa: BLE001 - variable never set on this connection
        return None


def first_seen(con, until: datetime) -> pl.DataFrame:
    """(user_id, first_seen) of users with an order, a click or a signup at or before ``until``, sorted by id.
    One scan serves every snapshot: the users known at a cut-off are those first seen at or before it."""
    parts = [f"SELECT user_id, min({column}) AS first_seen FROM {table} WHERE {column} <= $until GROUP BY user_id"
             for table, column in USER_SOURCES if table_exists(con, table)]
    if not parts:
        return pl.DataFrame(schema={"user_id": pl.String, "first_seen": pl.Datetime("us")})
    # naive UTC (the session is in UTC), so polars compares it with the naive cut-offs whatever the sources' types
    return con.sql(f"SELECT user_id, min(first_seen)::TIMESTAMP AS first_seen FROM ({' UNION ALL '.join(parts)}) "
                   "GROUP BY user_id ORDER BY user_id", params={"until": until}).pl()


def known_users(seen: pl.DataFrame, cutoff: datetime) -> pl.Series:
    """Users of :func:`first_seen` known at ``cutoff``, sorted: the rows of features as of it."""
    return seen.filter(pl.col("first_seen") <= cutoff)["user_id"]


def features_as_of(con, cutoff: datetime, *, users: pl.Series | None = None) -> pl.DataFrame:
    """``features.user_features`` as the production asset would have built it at ``cutoff`` (the category share
    columns, which no model reads, over the default top categories of these rows).

    Runs the feature SQL models as plain queries (nothing is written) with ``as_of`` set to ``cutoff`` and
    restores the connection's previous ``as_of`` afterwards. A model whose inputs do not exist (no clicks
    in an orders-only store) contributes nothing, as in the asset. With ``users``, only their rows are
    aggregated (the SQL reads the inputs restricted to them: a sample costs a fraction of everyone).
    """
    previous = _current_as_of(con)
    set_as_of(con, cutoff)
    keys = None
    if users is not None:
        create_table_from(con, SAMPLED, pl.DataFrame({"user_id": users}), temp=True)
        keys = SAMPLED
    try:
        frames = {}
        for arg, model in _feature_sql().items():
            ready = all(table_exists(con, f"{schema}.{name}") for schema, name in model.upstream)
            sql = model.sql.strip().rstrip(";")
            if keys:
                sql = restrict_to_changed(sql, set(model.upstream), "user_id", keys)
            frames[arg] = con.sql(sql).pl() if ready else None
        where = f" WHERE user_id IN (SELECT user_id FROM temp.{keys})" if keys else ""
        customers = con.sql(f"SELECT * FROM {CUSTOMERS_TABLE}{where}").pl() if table_exists(con, CUSTOMERS_TABLE) else None
    finally:
        if previous is not None:
            set_as_of(con, previous)
    return build_user_features(**frames, customers=customers, as_of=cutoff)


def labels_after(con, cutoff: datetime, horizon_days: int, as_of: datetime) -> pl.DataFrame:
    """Per user with a completed order in ``(cutoff, min(cutoff + H, as_of)]``: orders and spend."""
    end = min(cutoff + timedelta(days=horizon_days), as_of)
    return con.sql(
        f"""SELECT user_id, count(*) AS orders_next_h, sum({exact_money_sql('amount')})::DOUBLE AS spend_next_h
            FROM {ORDERS_TABLE}
            WHERE status = 'completed' AND order_ts > ? AND order_ts <= ? AND order_ts <= ?
            GROUP BY user_id""",
        params=[cutoff, end, as_of],
    ).pl()


def build_snapshot(con, cutoff: datetime, horizon_days: int, as_of: datetime, *, index: int = 0,
                   max_users: int | None = MAX_USERS_PER_SNAPSHOT, seed: int = 0,
                   seen: pl.DataFrame | None = None) -> pl.DataFrame:
    """One snapshot: the feature columns as of ``cutoff`` plus the labels (snapshot, snapshot_ts, churned,
    orders_next_h, spend_next_h). ``seen``: :func:`first_seen` up to at least ``cutoff``, shared by the snapshots of
    one build."""
    if cutoff + timedelta(days=horizon_days) > as_of:
        raise ValueError(f"cut-off {cutoff} + {horizon_days} days is after the as-of time {as_of}: the label would "
                         "need data from the future")
    users = known_users(first_seen(con, cutoff) if seen is None else seen, cutoff)  # sampled before aggregating
    sampled = max_users is not None and users.len() > max_users
    features = features_as_of(con, cutoff,
                              users=users[sample_indices(users.len(), max_users, seed + 101 * index)] if sampled else None)
    labels = labels_after(con, cutoff, horizon_days, as_of)
    return features.join(labels, on="user_id", how="left").with_columns(
        snapshot=pl.lit(index, dtype=pl.Int32),
        snapshot_ts=pl.lit(cutoff).cast(pl.Datetime("us")),
        orders_next_h=pl.col("orders_next_h").fill_null(0).cast(pl.Int64),
        spend_next_h=pl.col("spend_next_h").fill_null(0.0),
    ).with_columns(churned=(pl.col("orders_next_h") == 0).cast(pl.Int8))


def build_snapshots(con, plan: SnapshotPlan, *, max_users_per_snapshot: int | None = MAX_USERS_PER_SNAPSHOT,
                    seed: int = 0) -> pl.DataFrame:
    """All snapshots of ``plan`` stacked (``snapshot`` = k, 0 the latest), restricted to the columns they share."""
    seen = first_seen(con, max(plan.cutoffs)) if plan.cutoffs else None
    parts = [build_snapshot(con, cut, plan.horizon_days, plan.as_of, index=k, max_users=max_users_per_snapshot,
                            seed=seed, seen=seen)
             for k, cut in enumerate(plan.cutoffs)]
    if not parts:
        return pl.DataFrame()
    common = [c for c in parts[0].columns if all(c in p.columns for p in parts[1:])]
    return pl.concat([p.select(common) for p in parts], how="vertical_relaxed")
