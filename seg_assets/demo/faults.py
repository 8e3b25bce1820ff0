"""Writing landing files: file layout, contract encodings, and optionally the contract's bad inputs.

Ingestion has to be tested against what upstream really sends: duplicates, re-deliveries, broken
rows and odd files. Each planted fault is recorded in ``truth/faults.parquet`` with its file and
1-based data row, and ``truth/valid_ids_<table>.parquet`` holds the exact id set a correct ingestion
ends with. Faults are planted so that every copy of an id is either valid or invalid, which makes
that set independent of the order the pipeline reads files in.

faults.parquet columns: table, file (name only), row_number (Int64; null for whole-file faults),
kind, id (the row's primary id; null when that id was blanked), column (the column at fault),
effect (``reject_row``, ``reject_file``, ``dedupe`` or ``none``), detail.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

DAY = 86_400
PERIOD_DAYS = 30  # orders and clicks are split into one file per 30-day period (by arrival)
STATUSES = ("completed", "cancelled", "returned")
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

EFFECT = {
    "duplicate_row": "dedupe", "redelivered_file": "dedupe", "null_id": "reject_row",
    "negative_amount": "reject_row", "unknown_enum": "reject_row", "missing_value": "reject_row",
    "bad_timestamp": "reject_row",
    "future_timestamp": "reject_row", "truncated_line": "reject_row", "missing_column": "reject_file",
    "extra_column": "none", "reordered_columns": "none",
}
KINDS = tuple(EFFECT)
K = {k: i for i, k in enumerate(KINDS)}
BAD_TIMESTAMPS = ("not-a-date", "2026-13-45T00:00:00Z", "2026-02-30T10:00:00Z", "31/12/2026 25:61")
BAD_ENUMS = {"orders": ("shipped", "pending", "refunded", "on_hold")}
# A required value left empty (``missing_value``), by variant: null, "", whitespace. Click names are an
# open vocabulary (any name is a funnel stage, "other" at worst), so an empty one is their contract fault.
EMPTY_VALUES = (None, "", None, "   ")
FUTURE = datetime(2099, 1, 1)
EXTRA_COLUMN = "coupon_code"
MISSING_COLUMN = "amount"
FAULT_SCHEMA = {"table": pl.String, "file": pl.String, "row_number": pl.Int64, "kind": pl.String,
                "id": pl.String, "column": pl.String, "effect": pl.String, "detail": pl.String}


def label(col: str, labels: tuple[str, ...]) -> pl.Expr:
    """Integer codes to their labels; -1 (or any unknown code) becomes null (empty)."""
    return pl.col(col).replace_strict(list(range(len(labels))), list(labels), default=None, return_dtype=pl.String)


def to_datetime(col: str) -> pl.Expr:
    """Epoch seconds to a naive UTC timestamp (written as ISO-8601 ``...Z`` in CSV)."""
    return (pl.col(col).cast(pl.Int64) * 1_000_000).cast(pl.Datetime("us"))


def id_num(expr: pl.Expr, prefix: str, width: int = 7) -> pl.Expr:
    """Zero-padded ids like ``u0000001``."""
    return pl.lit(prefix) + expr.cast(pl.String).str.zfill(width)


def day_str(s: int) -> str:
    return datetime.fromtimestamp(s, UTC).strftime("%Y%m%d")


def file_of(rng: np.random.Generator, ts: np.ndarray, start_s: int, nper: int) -> np.ndarray:
    """Period file of each row by arrival time: ~3% of rows arrive 1-5 days late (next file)."""
    lag = np.where(rng.random(len(ts)) < 0.03, rng.integers(DAY, 5 * DAY, len(ts)), 0)
    return np.clip((ts + lag - start_s) // (PERIOD_DAYS * DAY), 0, nper - 1).astype(np.int32)


def period_names(table: str, start_s: int, end_s: int, nper: int, tag: str = "") -> list[str]:
    """``<table>[_<tag>]_<first day>_<last day>`` for each 30-day period of the window."""
    starts = [start_s + p * PERIOD_DAYS * DAY for p in range(nper)]
    return [f"{table}_{tag + '_' if tag else ''}{day_str(d)}_{day_str(min(d + PERIOD_DAYS * DAY - 1, end_s))}"
            for d in starts]


@dataclass(frozen=True)
class TableSpec:
    """The columns faults are planted in, per landing table."""

    name: str
    id_col: str
    ts_col: str
    user_col: str | None = None  # a second required id
    enum_col: str | None = None  # a closed vocabulary (unknown_enum)
    amount_col: str | None = None
    required_col: str | None = None  # a required value that is neither id nor enum (missing_value)

    @property
    def row_kinds(self) -> tuple[str, ...]:
        kinds = ["duplicate_row", "null_id", "bad_timestamp", "future_timestamp"]
        kinds += ["unknown_enum"] if self.enum_col else []
        kinds += ["missing_value"] if self.required_col else []
        kinds += ["negative_amount"] if self.amount_col else []
        return tuple(kinds)


SPECS = {
    "orders": TableSpec("orders", "order_id", "order_ts", "user_id", "status", "amount"),
    "clicks": TableSpec("clicks", "event_id", "event_ts", "user_id", required_col="event_type"),
    "customers": TableSpec("customers", "user_id", "signup_ts"),
}


@dataclass
class FilePlan:
    """File names (index = the frame's ``_file``) and which file gets which file-level fault."""

    names: list[str]
    extra_column: int | None = None  # gets an unexpected `coupon_code` column
    reorder: int | None = None  # columns in another order
    truncate: int | None = None  # CSV only: last line cut mid-line
    redeliver: int | None = None  # copied whole under another name
    missing_column: str | None = None  # name of an extra small file without `amount`


@dataclass
class TableWrite:
    files: list[Path]
    rows: int
    faults: pl.DataFrame
    valid_ids: pl.Series | None = None


def plan_for(table: str, names: list[str], fmt: str, with_clicks: bool) -> FilePlan:
    """Where the file-level faults of a faulty delivery go (P > 0)."""
    n = len(names)
    truncate = n - 1 if fmt == "csv" and table in ("orders", "clicks") else None
    if table == "orders":
        return FilePlan(names, extra_column=1 % n, truncate=truncate, redeliver=0,
                        reorder=None if with_clicks else 0, missing_column="orders_adhoc_export")
    if table == "clicks":
        return FilePlan(names, reorder=0, truncate=truncate)
    return FilePlan(names)


def _write(df: pl.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        df.write_csv(path, datetime_format=TS_FORMAT, float_precision=2)
    else:
        df.write_parquet(path)


def _no_faults() -> pl.DataFrame:
    return pl.DataFrame(schema=FAULT_SCHEMA)


def write_table(df: pl.DataFrame, cols: list[pl.Expr], spec: TableSpec, plan: FilePlan, folder: Path, fmt: str,
                rng: np.random.Generator, fault_rate: float, want_ids: bool = False) -> TableWrite:
    """Split ``df`` by its ``_file`` column into files in ``folder``; plant faults when ``fault_rate`` > 0.

    ``df`` may hold compact helper columns; ``cols`` turn one file's rows into the contract columns,
    so only one file's worth of strings is in memory at a time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fault_rate > 0:
        return _write_faulty(df, cols, spec, plan, folder, fmt, rng, fault_rate)
    files, ids = [], []
    parts = df.partition_by("_file", as_dict=True, maintain_order=True)
    for i, name in enumerate(plan.names):
        path = folder / f"{name}.{fmt}"
        part = parts.pop((i,), df.clear()).select(cols)
        _write(part, path, fmt)
        files.append(path)
        ids += [part.get_column(spec.id_col)] if want_ids else []  # unique by construction
    return TableWrite(files, df.height, _no_faults(), pl.concat(ids) if want_ids else None)


def _write_faulty(df: pl.DataFrame, data: list[pl.Expr], spec: TableSpec, plan: FilePlan, folder: Path, fmt: str,
                  rng: np.random.Generator, rate: float) -> TableWrite:
    n, names = df.height, list(plan.names)
    nf = len(names)
    file = df.get_column("_file").to_numpy().copy()
    if plan.missing_column and n >= 8:  # a few rows move to a small extra file lacking `amount`
        m = int(np.clip(round(n * 0.002), 3, 50))
        file[rng.choice(n, m, replace=False)] = nf
        names.append(plan.missing_column)
    kinds = spec.row_kinds
    cand = np.flatnonzero(file < nf)
    k = min(len(cand), max(len(kinds), round(rate * n)))
    kind = np.full(n, -1, dtype=np.int8)
    # Unparseable timestamps only in every other file, so Parquet files with typed and with string
    # timestamp columns both occur.
    odd = cand[(file[cand] % 2 == 1) | (nf == 1)]
    k_bad = min(len(odd), k // len(kinds) + (k % len(kinds) > kinds.index("bad_timestamp")))
    bad = rng.choice(odd, k_bad, replace=False)
    kind[bad] = K["bad_timestamp"]
    rest = [K[x] for x in kinds if x != "bad_timestamp"]
    others = rng.choice(cand[kind[cand] < 0], k - k_bad, replace=False)
    kind[others] = np.array(rest, dtype=np.int8)[rng.permutation(np.resize(np.arange(len(rest)), k - k_bad))]
    picked = np.concatenate([bad, others])
    variant = np.zeros(n, dtype=np.int8)
    variant[picked] = rng.integers(0, 4, len(picked))
    df = df.with_columns(pl.Series("_file", file, dtype=pl.Int32), pl.Series("_k", kind), pl.Series("_v", variant))
    parts = df.partition_by("_file", as_dict=True, maintain_order=True)
    files: list[Path] = []
    faults: list[pl.DataFrame] = []
    valid: list[pl.Series] = []
    rows = 0
    for i, name in enumerate(names):
        part = _mutate(parts.pop((i,), df.clear()).select(*data, "_k", "_v"), spec)
        data_cols = part.columns[:len(data)]
        # Ids are unique before duplication, so valid ids need no dedupe: clean rows and the originals of
        # duplicated rows, minus the row whose CSV line gets cut (below).
        ok = part.filter(pl.col("_k").is_in([-1, K["duplicate_row"]])).get_column(spec.id_col) if i < nf else None
        part, whole = _plant_in_file(part, i, plan, fmt, rng), []
        if ok is not None and i == plan.truncate and fmt == "csv":
            ok = ok.filter(~ok.is_in(part.filter(pl.col("_k") == K["truncated_line"]).get_column(spec.id_col)))
        valid += [ok] if ok is not None else []
        cols = list(data_cols)
        if part.get_column("_badts").is_not_null().any():  # bad values need a string column in this file
            as_text = pl.col(spec.ts_col).dt.strftime(TS_FORMAT)
            part = part.with_columns(pl.coalesce("_badts", as_text).alias(spec.ts_col))
        if i == plan.extra_column:
            part = part.with_columns(pl.when(pl.col("_row") % 4 == 0).then(pl.lit("SAVE10")).alias(EXTRA_COLUMN))
            cols.append(EXTRA_COLUMN)
            whole.append(_whole(spec, name, fmt, "extra_column", EXTRA_COLUMN))
        if i == plan.reorder:
            cols = cols[::-1]
            whole.append(_whole(spec, name, fmt, "reordered_columns"))
        if i == nf:
            cols.remove(MISSING_COLUMN)
            whole.append(_whole(spec, name, fmt, "missing_column", MISSING_COLUMN))
        path = folder / f"{name}.{fmt}"
        _write(part.select(cols), path, fmt)
        if fmt == "csv" and i == plan.truncate:
            _truncate_last_line(path, spec.ts_col)
        files.append(path)
        rows += part.height
        faults += [_row_faults(part, spec, f"{name}.{fmt}"), pl.DataFrame(whole, schema=FAULT_SCHEMA)]
        if i == plan.redeliver:
            dst = path.with_name(f"{path.stem}_resent{path.suffix}")
            shutil.copyfile(path, dst)
            files.append(dst)
            rows += part.height
            faults += [f.with_columns(file=pl.lit(dst.name)) for f in faults[-2:]]
            faults.append(pl.DataFrame([_whole(spec, dst.name, "", "redelivered_file", detail=path.name)],
                                       schema=FAULT_SCHEMA))
    return TableWrite(files, rows, pl.concat(faults), pl.concat(valid))


def _plant_in_file(part: pl.DataFrame, i: int, plan: FilePlan, fmt: str,
                   rng: np.random.Generator) -> pl.DataFrame:
    """Insert each duplicate a few rows after its original and move the line to cut to the end."""
    m = part.height
    k = part.get_column("_k").to_numpy()
    dup = np.flatnonzero(k == K["duplicate_row"])
    key = np.concatenate([np.arange(m, dtype=np.float64), dup + rng.uniform(0.5, 40.0, len(dup))])
    src = np.concatenate([np.arange(m), dup])
    kind = np.concatenate([np.where(k == K["duplicate_row"], -1, k), np.full(len(dup), K["duplicate_row"])])
    kind = kind.astype(np.int8)
    if fmt == "csv" and i == plan.truncate:
        clean = (kind[:m] == -1)
        clean[dup] = False
        last = np.flatnonzero(clean)
        if len(last):
            key[last[-1]], kind[last[-1]] = np.inf, K["truncated_line"]
    order = np.argsort(key, kind="stable")
    return part[src[order]].with_columns(pl.Series("_k", kind[order]),
                                         pl.int_range(1, len(order) + 1, dtype=pl.Int64).alias("_row"))


def _mutate(df: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """Break the chosen rows in place, one fault per row."""
    is_ = lambda kind: pl.col("_k") == K[kind]  # noqa: E731
    on_user = (pl.col("_v") % 2 == 1) if spec.user_col else pl.lit(False)
    exprs = [
        pl.when(is_("null_id") & ~on_user).then(None).otherwise(pl.col(spec.id_col)).alias(spec.id_col),
        pl.when(is_("future_timestamp"))
        .then(pl.lit(FUTURE) + pl.duration(days=pl.col("_v").cast(pl.Int64) * 83, hours=pl.col("_v").cast(pl.Int64) * 7))
        .otherwise(pl.col(spec.ts_col)).alias(spec.ts_col),
        pl.when(is_("bad_timestamp")).then(_pick("_v", BAD_TIMESTAMPS)).alias("_badts"),
    ]
    if spec.user_col:
        exprs.append(pl.when(is_("null_id") & on_user).then(None).otherwise(pl.col(spec.user_col)).alias(spec.user_col))
    if spec.enum_col:
        exprs.append(pl.when(is_("unknown_enum")).then(_pick("_v", BAD_ENUMS[spec.name]))
                     .otherwise(pl.col(spec.enum_col)).alias(spec.enum_col))
    if spec.required_col:
        exprs.append(pl.when(is_("missing_value")).then(_pick("_v", EMPTY_VALUES))
                     .otherwise(pl.col(spec.required_col)).alias(spec.required_col))
    if spec.amount_col:
        exprs.append(pl.when(is_("negative_amount")).then(-pl.col(spec.amount_col).clip(lower_bound=1.0))
                     .otherwise(pl.col(spec.amount_col)).alias(spec.amount_col))
    return df.with_columns(exprs).with_columns(
        _col=pl.when(is_("null_id") & on_user).then(pl.lit(spec.user_col))
        .when(is_("null_id")).then(pl.lit(spec.id_col))
        .when(is_("negative_amount")).then(pl.lit(spec.amount_col))
        .when(is_("unknown_enum")).then(pl.lit(spec.enum_col))
        .when(is_("missing_value")).then(pl.lit(spec.required_col))
        .when(is_("bad_timestamp") | is_("future_timestamp")).then(pl.lit(spec.ts_col)))


def _pick(col: str, values: tuple[str | None, ...]) -> pl.Expr:
    return pl.col(col).replace_strict(list(range(len(values))), list(values), return_dtype=pl.String)


def _row_faults(df: pl.DataFrame, spec: TableSpec, file: str) -> pl.DataFrame:
    return df.filter(pl.col("_k") >= 0).select(
        pl.lit(spec.name).alias("table"), pl.lit(file).alias("file"),
        pl.col("_row").alias("row_number"), _pick("_k", KINDS).alias("kind"),
        pl.col(spec.id_col).alias("id"), pl.col("_col").alias("column"),
        _pick("_k", tuple(EFFECT.values())).alias("effect"), pl.col("_badts").alias("detail"),
    )


def _whole(spec: TableSpec, name: str, fmt: str, kind: str, column: str | None = None,
           detail: str | None = None) -> dict:
    return {"table": spec.name, "file": f"{name}.{fmt}" if fmt else name, "row_number": None, "kind": kind,
            "id": None, "column": column, "effect": EFFECT[kind], "detail": detail}


def _truncate_last_line(path: Path, ts_col: str) -> None:
    """Cut the file's last line inside its timestamp field, then end the line: an export that cut a row short. (A
    file that ends mid-line is an upload still being written: the landing rule does not read it yet, sources.py.)"""
    with path.open("rb+") as f:
        col = f.readline().decode().rstrip("\n").split(",").index(ts_col)
        size = f.seek(0, 2)
        tail_start = max(0, size - 65536)
        f.seek(tail_start)
        body = f.read().rstrip(b"\n")
        line_start = body.rfind(b"\n") + 1
        line = body[line_start:]
        pos = -1
        for _ in range(col):
            pos = line.index(b",", pos + 1)
        f.truncate(tail_start + line_start + pos + 1 + 5)
        f.seek(0, 2)
        f.write(b"\n")
