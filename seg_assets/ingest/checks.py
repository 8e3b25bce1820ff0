"""Checks on the ingest outputs, cheap at 25M rows.

* ``raw_<table>_contract`` (blocking, one per raw table): exact DuckDB counts over every row the run
  ingested (ids duplicated within them or with older rows, null ids, violations of each rule), each of
  which must be 0; plus Great Expectations' row-level expectations on a deterministic sample (at most
  ``sample_rows``) of those rows, whose report shows a person unexpected values. GE runs where its report
  adds to the counts: when a count is not 0 (the examples) and on the table's first load (a first look at
  the data as delivered). A routine delivery whose counts pass does not import GE (2.2 s of a 1M-user
  incremental refresh).
* ``reject_ratio`` (non-blocking, WARN) on raw/rejects: rejected / delivered rows of this run's files.

All four are one ``multi_asset_check`` (one step, subsettable: a check can still run alone).

"This run" = ledger rows with the check's run id. In a run that ingested (a refresh), a table that got no new
file has nothing new to check: the check passes at once, saying so (re-counting the last delivery's 8M order
lines cost 2.0 s of every clicks-only refresh at 1M users). A rebase (the daily one, or ``--rebase``) and a
check run on its own validate the files of the latest run that ingested into the table: the last delivery is
re-counted once a day, and a row slipped in behind the loader's back among them is caught.
"""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from seg_assets.automation.limits import CheckedConfig
from seg_assets.expectations import expect, validate_frame
from seg_assets.features.incremental import rebase_requested
from seg_assets.ingest import contract as C
from seg_assets.ingest.assets import RAW_KEYS, REJECTS_KEY
from seg_assets.ingest.row_rules import outside_enum_sql
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.validation import describe_counts, ge_metadata, nonzero


class RawCheckConfig(CheckedConfig):
    # Every rule is also counted exactly over all the run's rows in DuckDB (``_aggregates``); GE's sample is the
    # second opinion that shows examples. 20k rows catch a fault in 1 row of 2,000 with probability 1 - e^-10.
    sample_rows: int = Field(default=20_000, ge=1, description="At most this many of the run's new rows go through GE.")
    ge_every_delivery: bool = Field(
        default=False, description="Run GE on a sample of every delivery, not only on a table's first load and when an "
        "exact count fails (then its report shows the bad values). Costs GE's import (about 2 s) per refresh.")
    max_reject_ratio: float = Field(
        default=0.05, ge=0, le=1, description="Warn when rejected / delivered rows of this run's files exceed this."
    )


def run_file_ids(con, table: str, run_id: str, latest: bool = True) -> tuple[str | None, list[int]]:
    """(run id, file ids) of the files that run ingested into ``table``; none: those of the latest such run
    (``latest``), else no files."""
    params = [table, C.STATUS_INGESTED]
    ids = [r[0] for r in con.sql(
        f"SELECT file_id FROM {C.LEDGER_TABLE} WHERE table_name = ? AND status = ? AND run_id = ? ORDER BY 1",
        params=params + [run_id]).fetchall()]
    if ids or not latest:
        return run_id, ids
    last = con.sql(
        f"SELECT run_id FROM {C.LEDGER_TABLE} WHERE table_name = ? AND status = ? ORDER BY file_id DESC LIMIT 1",
        params=params).fetchall()
    if not last:
        return None, []
    return run_file_ids(con, table, last[0][0])


SYSTEM_SAMPLE_MIN = 8 * 2_048  # below this sample size (16 vectors kept), vectors are too coarse a unit: a reservoir


def _sample_sql(spec: C.TableSpec, file_ids: list[int], limit: int, rows: int, table_rows: int) -> str:
    """At most ``limit`` of the run's ``rows`` (of ``table_rows`` in the table), for GE."""
    cols = [f"CAST({c.name} AS DOUBLE) AS {c.name}" if c.kind == C.DECIMAL else c.name for c in spec.columns]
    ids = ", ".join(map(str, file_ids)) or "NULL"
    run_rows = f"SELECT * FROM {spec.qualified} WHERE _file_id IN ({ids})"
    if rows <= limit:
        return f"SELECT {', '.join(cols)} FROM ({run_rows})"
    if rows > 4 * limit and 2 * rows >= table_rows and limit >= SYSTEM_SAMPLE_MIN:
        # A load that is most of the table (27M rows on a cold load): system sampling of the table skips
        # whole vectors of 2,048 rows without decoding them (2.2 s -> 0.1 s against a reservoir); vectors
        # are kept at random, so about twice ``limit`` of the run's rows (16+ vectors) pass the filter.
        percent = min(100.0, 200.0 * limit / rows)
        return (f"SELECT {', '.join(cols)} FROM (SELECT * FROM {spec.qualified} USING SAMPLE {percent:.4f} PERCENT "
                f"(system, 42)) WHERE _file_id IN ({ids}) LIMIT {int(limit)}")
    # A reservoir over the run's rows only (USING SAMPLE applies before the WHERE of its own SELECT).
    return f"SELECT {', '.join(cols)} FROM ({run_rows}) USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (42)"


def _violation_sql(col: C.Column, lo: datetime, hi: datetime) -> str | None:
    if col.kind == C.ENUM:
        return outside_enum_sql(col, col.name)
    if col.min_value is not None or col.max_value is not None:
        bounds = [f"{col.name} < {col.min_value}" if col.min_value is not None else None,
                  f"{col.name} > {col.max_value}" if col.max_value is not None else None]
        return " OR ".join(b for b in bounds if b)
    if col.kind == C.TIMESTAMP:
        return f"{col.name} < TIMESTAMP '{lo.isoformat(sep=' ')}' OR {col.name} > TIMESTAMP '{hi.isoformat(sep=' ')}'"
    return None


FILES_PER_STATEMENT = 64


def _duplicates_within(con, spec: C.TableSpec, file_ids: list[int]) -> tuple[int, int, int, object, object]:
    """(ids repeated within the run's rows, rows, null ids, min id, max id), counting only where a repeat can be.

    One streaming pass per file in stored order (the files side by side in one statement, up to
    ``FILES_PER_STATEMENT``) finds its id range and whether its ids are strictly ascending (then unique within
    it: cheaper than hashing them). An id can then repeat only inside a file
    that is not ascending, or where two files' ranges overlap: only those rows are hashed and counted
    (on a cold load of 30M clicks, a sliver at each file boundary instead of every id). Exact either way.
    """
    ident = spec.id_column
    ids = ", ".join(map(str, file_ids)) or "NULL"
    # One pass per file, the files side by side in one statement: a window over all of them runs on one thread
    # (cold load of 30M clicks in 6 files: 2.0 s as one window, 1.0 s as six).
    files = []
    for start in range(0, len(file_ids), FILES_PER_STATEMENT):
        files += con.sql(" UNION ALL ".join(
            f"""SELECT {int(fid)}, count(*), count(k), min(k), max(k), coalesce(bool_and(k > prev), true)
            FROM (SELECT {ident} AS k, lag({ident}) OVER () AS prev FROM {spec.qualified} WHERE _file_id = {int(fid)})"""
            for fid in file_ids[start:start + FILES_PER_STATEMENT])).fetchall()
    files = [f for f in files if f[1]]  # a file whose rows were all rejected or duplicates left none here
    rows, nulls = sum(f[1] for f in files), sum(f[1] - f[2] for f in files)
    ranged = [f for f in files if f[3] is not None]
    first_id = min((f[3] for f in ranged), default=None)
    last_id = max((f[4] for f in ranged), default=None)
    where, params = [], []
    for fid, n, present, lo, hi, ascending in files:
        if not ascending or present < n:  # (a null id breaks the ascending test: hash that file)
            where.append(f"_file_id = {int(fid)}")
            continue
        for other, _, _, olo, ohi, _ in ranged:  # this file's rows inside another file's range
            if other != fid and olo <= hi and lo <= ohi:
                where.append(f"(_file_id = {int(fid)} AND {ident} BETWEEN ? AND ?)")
                params += [max(lo, olo), min(hi, ohi)]
    if not where:
        return 0, rows, nulls, first_id, last_id
    (within,) = con.sql(f"SELECT count({ident}) - count(DISTINCT {ident}) FROM {spec.qualified} "
                        f"WHERE _file_id IN ({ids}) AND ({' OR '.join(where)})", params=params).fetchall()[0]
    return int(within), rows, nulls, first_id, last_id


def _aggregates(con, spec: C.TableSpec, file_ids: list[int], lo: datetime, hi: datetime) -> tuple[dict[str, int], int]:
    """(exact counts, rows): counts over the run's new rows: ids duplicated within them or with older rows,
    null ids, and per-rule violations. Older rows were checked when they were new, so the cost follows
    the delivery, not the table (a hash of the new ids probed by one scan of the id column)."""
    ident = spec.id_column
    ids = ", ".join(map(str, file_ids)) or "NULL"
    new = f"SELECT {ident} FROM {spec.qualified} WHERE _file_id IN ({ids})"
    within, rows, nulls, first_id, last_id = _duplicates_within(con, spec, file_ids)
    # Only older ids between the new ones' min and max can collide: DuckDB skips the other row groups by their
    # min/max (ids that grow over time, as most do, leave one or two row groups to probe). The new ids are
    # hashed only when such older rows exist (none on a cold load, where hashing 30M ids cost seconds).
    older = f"FROM {spec.qualified} WHERE {ident} BETWEEN $lo AND $hi AND _file_id NOT IN ({ids})"
    bounds = {"lo": first_id, "hi": last_id}
    (with_older,) = con.sql(f"SELECT count(*) {older}", params=bounds).fetchall()[0]
    if with_older:
        (with_older,) = con.sql(f"SELECT count(*) {older} AND {ident} IN ({new})", params=bounds).fetchall()[0]
    row = {"duplicate_ids": int(within) + int(with_older), "null_ids": int(nulls)}
    rules = {f"invalid_{c.name}": _violation_sql(c, lo, hi) for c in spec.columns}
    rules.update({f"null_{c}": f"{c} IS NULL" for c in spec.required_columns if c != ident})
    rules = {k: v for k, v in rules.items() if v}
    exprs = ", ".join(f"count(*) FILTER (WHERE ({v}))" for v in rules.values())
    values = con.sql(f"SELECT {exprs} FROM {spec.qualified} WHERE _file_id IN ({ids})").fetchall()[0]
    row.update({k: int(v) for k, v in zip(rules, values)})
    return row, int(rows)


def _sample_expectations(spec: C.TableSpec, lo: datetime, hi: datetime):
    out = [expect("ExpectColumnValuesToBeUnique", column=spec.id_column)]
    out += [expect("ExpectColumnValuesToNotBeNull", column=c) for c in spec.required_columns]
    for c in spec.columns:
        if c.kind == C.ENUM:
            out.append(expect("ExpectColumnValuesToBeInSet", column=c.name, value_set=list(c.enum)))
        elif c.min_value is not None or c.max_value is not None:
            out.append(expect("ExpectColumnValuesToBeBetween", column=c.name, min_value=c.min_value, max_value=c.max_value))
        elif c.kind == C.TIMESTAMP:
            out.append(expect("ExpectColumnValuesToBeBetween", column=c.name, min_value=lo, max_value=hi))
    return out


def raw_contract(con, spec: C.TableSpec, run_id: str, config: RawCheckConfig,
                 bounds: tuple[datetime, datetime], ingested_here: bool = False) -> dg.AssetCheckResult:
    """Exact counts decide; GE on a sample adds a report with examples (see the module docstring).
    ``ingested_here``: the run ingested, so only its own files are new (none: nothing to check)."""
    lo, hi = bounds
    key = _contract_key(spec.name)
    if ingested_here and not run_file_ids(con, spec.name, run_id, latest=False)[1]:
        return dg.AssetCheckResult(
            passed=True, asset_key=key.asset_key, check_name=key.name,
            description=f"{spec.qualified}: no new file in this run, nothing new to check",
            metadata={"validated_run_id": dg.MetadataValue.text(""), "rows_checked": dg.MetadataValue.int(0)})
    used_run, file_ids = run_file_ids(con, spec.name, run_id)
    counts, rows = _aggregates(con, spec, file_ids, lo, hi)
    broken = nonzero(counts)
    whose = "this run" if used_run == run_id else f"run {used_run}" if used_run else "no run yet"
    scope = f"{spec.qualified} ({rows:,} rows of {whose})"
    description = describe_counts(scope, broken)
    metadata = {
        "validated_run_id": dg.MetadataValue.text(used_run or ""),
        "validated_file_ids": dg.MetadataValue.json(file_ids),
        "rows_checked": dg.MetadataValue.int(rows),
        "aggregates": dg.MetadataValue.json(counts),
        "failed_rules": dg.MetadataValue.json(sorted(broken)),
    }
    passed = not broken
    (table_rows,) = con.sql(f"SELECT count(*) FROM {spec.qualified}").fetchall()[0] if rows else (0,)
    first_load = rows == table_rows  # the table's first rows: a person's first look at the data as delivered
    if rows and (broken or ((first_load or config.ge_every_delivery) and used_run == run_id)):
        sample = con.sql(_sample_sql(spec, file_ids, config.sample_rows, rows, table_rows)).pl()
        outcome = validate_frame(sample, f"raw_{spec.name}_sample", _sample_expectations(spec, lo, hi))
        metadata |= {"sample_rows": dg.MetadataValue.int(len(sample)), **ge_metadata(outcome)}
        passed = passed and outcome.success
        if not outcome.success:
            description += f"; GE on a sample of {len(sample):,}: " + ", ".join(
                f"{f.expectation}({f.column})" for f in outcome.failed)
    elif rows:
        metadata["sample_rows"] = dg.MetadataValue.int(0)
        metadata["report"] = dg.MetadataValue.md(
            "GE not run: the exact counts over every new row pass, so a sample report would repeat them. GE "
            "validates a sample when a count fails (its report shows the bad values) and on a table's first load.")
    return dg.AssetCheckResult(passed=passed, description=description, metadata=metadata,
                               asset_key=key.asset_key, check_name=key.name)


def _contract_key(name: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(RAW_KEYS[name], f"raw_{name}_contract")


REJECT_RATIO = dg.AssetCheckKey(REJECTS_KEY, "reject_ratio")


@dg.multi_asset_check(
    retry_policy=TRANSIENT_RETRY,
    specs=[
        *(dg.AssetCheckSpec(
            f"raw_{name}_contract", asset=RAW_KEYS[name], blocking=True,
            description=f"{spec.qualified}: ids present and unique (whole table), enums, amounts and time window on the "
            "rows of this run (exact counts; GE on a sample for examples). Blocks downstream assets on failure.")
          for name, spec in C.TABLES.items()),
        dg.AssetCheckSpec(
            "reject_ratio", asset=REJECTS_KEY, blocking=False,
            description="Rejected / delivered rows of the files this run read, under a threshold (WARN only: rejected "
            "rows never flow on; a high ratio is a signal about the upstream)."),
    ],
    name="raw_contracts", can_subset=True, pool="duckdb",
    description="The ingest checks, in one step (each check is its own step otherwise: ~70 ms of Dagster work apiece).",
)
def raw_contracts(context: dg.AssetCheckExecutionContext, config: RawCheckConfig, duckdb: Warehouse, settings: SegSettings):
    selected = context.selected_asset_check_keys
    bounds = settings.timestamp_bounds(datetime.now(UTC))
    recount = rebase_requested(context.run.tags)  # a rebase re-counts the latest delivery of every table
    with duckdb.get_connection() as con:
        for name, spec in C.TABLES.items():
            if _contract_key(name) in selected:
                yield raw_contract(con, spec, context.run.run_id, config, bounds,
                                   ingested_here=not recount and _materialized_in(context, RAW_KEYS[name]))
        if REJECT_RATIO in selected:
            yield _reject_ratio(con, context.run.run_id, config.max_reject_ratio)


def _materialized_in(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> bool:
    """Whether ``key``'s latest materialization is this run's: the run ingested (ingestion materializes every raw
    table, new files or not)."""
    event = context.instance.get_latest_materialization_event(key)
    return event is not None and event.run_id == context.run.run_id


def _reject_ratio(con, run_id: str, max_ratio: float) -> dg.AssetCheckResult:
    delivered, rejected, files, failed = con.sql(
        f"""SELECT coalesce(sum(delivered), 0), coalesce(sum(rejected), 0), count(*), count(*) FILTER (WHERE status = ?)
        FROM {C.LEDGER_TABLE} WHERE run_id = ? AND status <> ?""",
        params=[C.STATUS_FAILED, run_id, C.STATUS_DUPLICATE_FILE],
    ).fetchall()[0]
    by_rule = dict(con.sql(
        f"SELECT rule, count(*) FROM {C.REJECTS_TABLE} WHERE run_id = ? GROUP BY 1 ORDER BY 2 DESC, 1",
        params=[run_id]).fetchall())
    ratio = rejected / delivered if delivered else 0.0
    top = ", ".join(f"{rule} {n:,}" for rule, n in list(by_rule.items())[:3])
    return dg.AssetCheckResult(
        passed=ratio <= max_ratio, severity=dg.AssetCheckSeverity.WARN,
        asset_key=REJECT_RATIO.asset_key, check_name=REJECT_RATIO.name,
        description=f"{rejected:,} of {delivered:,} rows rejected ({ratio:.2%}) "
        f"{'<=' if ratio <= max_ratio else '>'} max {max_ratio:.2%}" + (f"; most: {top}" if top else ""),
        metadata={
            "reject_ratio": dg.MetadataValue.float(float(ratio)),
            "max_reject_ratio": dg.MetadataValue.float(max_ratio),
            "rows_delivered": dg.MetadataValue.int(int(delivered)),
            "rows_rejected": dg.MetadataValue.int(int(rejected)),
            "files_read": dg.MetadataValue.int(int(files)),
            "files_failed": dg.MetadataValue.int(int(failed)),
            "rejects_by_rule": dg.MetadataValue.json({k: int(v) for k, v in by_rule.items()}),
        },
    )

asset_checks = [raw_contracts]
