"""Demo and test data: landing files with planted shopper types, optional faults, and ground truth.

Segmentation is only testable if there is something real to find, so every user is drawn from one of
six shopper types (``SHOPPER_TYPES``, shoppers.py: their behaviour and the draws of their orders and
click sessions) whose behaviour differs clearly in the features of ``features/dictionary.py``; the type
of each user is written to ``truth/`` (never read by the pipeline) so tests and benchmarks can score the
segments. Everything is vectorized numpy/polars
(no Python loop over rows or users) and deterministic: the same arguments give byte-identical files.

Click events use an open vocabulary (``event_vocabulary="rich"``, the default): the names real shops'
trackers send (``page_view``, ``view_item``, ``cart``, ``begin_checkout``, ...; event_names.py). The
planted behaviour is drawn at the stage level first, exactly as with the contract's four names
(``"contract"``), and named afterwards from a stream of its own. Order lines, reviews and campaigns are
in lines.py, reviews.py and campaigns.py; faults and file writing in faults.py.

Random streams: ``default_rng([seed, stream])``. The user stream depends on ``(seed, users)`` only,
so ``generate_followup`` re-creates exactly the same users without reading the first delivery.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from seg_assets.demo import devices as D
from seg_assets.demo import faults as F
from seg_assets.demo import lines as L
from seg_assets.demo import reviews as R
from seg_assets.demo.event_names import CONTRACT_EVENT_TYPES, EVENT_NAMES
from seg_assets.demo.faults import DAY, PERIOD_DAYS, day_str, file_of, id_num, label, period_names, to_datetime
from seg_assets.demo.shoppers import (
    BROWSE_30D,
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    LAPSED,
    NEW,
    ORDERS_30D,
    SHOPPER_TYPES,
    Users,
    draw_clicks,
    draw_orders,
    draw_users,
    epoch,
    place,
)
from seg_assets.settings import DataPaths

Format = Literal["csv", "parquet"]
Vocabulary = Literal["rich", "contract"]
DEFAULT_END = datetime(2026, 10, 31, 23, 59, 59)  # naive UTC; deterministic, never the wall clock


_USERS, _EVENTS, _FAULTS, _FOLLOWUP, _NAMES, _LINES, _CAMPAIGNS, _REVIEWS, _DEVICES = 1, 2, 3, 4, 5, 6, 7, 8, 9



@dataclass
class GenerateSummary:
    """What a generator call wrote, for the CLI to print and benchmarks to record."""

    root: Path
    users: int
    rows: dict[str, int]  # data rows written per landing table (duplicates and bad rows included)
    files: list[str] = field(default_factory=list)  # written paths, relative to root
    seconds: float = 0.0
    faults: int = 0  # rows in truth/faults.parquet

    def __str__(self) -> str:
        rows = ", ".join(f"{n:,} {table}" for table, n in self.rows.items())
        faults = f", {self.faults:,} faulty rows (truth/faults.parquet)" if self.faults else ""
        return (f"{self.users:,} users into {self.root}/landing: {rows} in {len(self.files)} files{faults} "
                f"({self.seconds:.1f}s)")


def _user_id(col: str = "_u", offset: int = 1) -> pl.Expr:
    return id_num(pl.col(col) + offset, "u")


# Frames stay numeric (compact) until written: ``Cols`` turns one file's rows into contract columns,
# so only one file's strings are in memory at a time.
Cols = list[pl.Expr]


def _numbered(df: pl.DataFrame, rng: np.random.Generator, start_s: int, nper: int) -> pl.DataFrame:
    files = file_of(rng, df["_ts"].to_numpy(), start_s, nper)
    return df.with_columns(pl.Series("_file", files), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_n"))


def _orders_frame(rng: np.random.Generator, o: dict, start_s: int, nper: int, prefix: str) -> tuple[pl.DataFrame, Cols]:
    df = pl.DataFrame({"_u": o["user"], "_ts": o["ts"], "amount": o["amount"], "items": o["items"],
                       "_cat": o["cat"], "discount": o["discount"], "_st": o["status"]})
    df = _numbered(df.sort("_ts", maintain_order=True), rng, start_s, nper)
    return df, [id_num(pl.col("_n"), prefix, 9).alias("order_id"), _user_id().alias("user_id"),
                to_datetime("_ts").alias("order_ts"), pl.col("amount"), pl.col("items"),
                label("_cat", CATEGORIES).alias("category"), pl.col("discount").fill_nan(None),
                label("_st", F.STATUSES).alias("status")]


def _order_key(parts: list[dict]) -> list[np.ndarray | None]:
    """Per part, one int64 that orders events by (ts, session, pos) when the three fit in 62 bits, else None.

    Sorting on one key column is about twice as fast as on three, with exactly the same order.
    """
    lo, lo_pos = (min((int(p[col].min()) for p in parts if len(p[col])), default=0) for col in ("ts", "pos"))
    top = [max((int(p[col].max()) - m for p in parts if len(p[col])), default=0) + 1
           for col, m in (("ts", lo), ("session", 0), ("pos", lo_pos))]
    b_ts, b_s, b_pos = (t.bit_length() for t in top)
    if b_ts + b_s + b_pos > 62:
        return [None] * len(parts)
    return [((p["ts"] - lo) << (b_s + b_pos)) | (p["session"].astype(np.int64) << b_pos) | (p["pos"] - lo_pos)
            for p in parts]


def _ids(col: str, n: int, prefix: str, width: int) -> pl.Expr:
    """``id_num(col + 1, prefix, width)`` for ``col`` in [0, n), made once per number and gathered per row.

    Users and sessions have many events each: formatting their ids once costs a tenth of once per event.
    """
    table = pl.select(id_num(pl.int_range(1, n + 1, dtype=pl.Int64), prefix, width)).to_series()
    return pl.lit(table).gather(pl.col(col))


def _clicks_frame(rng: np.random.Generator, c: list[dict], start_s: int, nper: int, prefix: str,
                  sprefix: str, names: tuple[str, ...],
                  devices: np.random.Generator | None = None) -> tuple[pl.DataFrame, Cols]:
    """``devices``: also the device of each click, anonymous before a login (devices.py), drawn from this stream."""
    key = _order_key(c)
    df = pl.concat([pl.DataFrame({"_u": p["user"], "_s": p["session"], "_ts": p["ts"], "_et": p["etype"],
                                  "_cat": p["cat"], "_p": p["product"],
                                  **({"_pos": p["pos"]} if k is None else {"_k": k})})
                    for p, k in zip(c, key)], rechunk=False)  # parts stay separate chunks until the sort
    by = ["_ts", "_s", "_pos"] if key[0] is None else ["_k"]
    df = _numbered(df.sort(by).drop(by[-1]), rng, start_s, nper)
    n_u, n_s = (int(df.get_column(col).max() or 0) + 1 for col in ("_u", "_s"))
    user, device = _ids("_u", n_u, "u", 7), []
    if devices is not None:
        df = D.add_devices(df, devices, names)
        user, device = pl.when(pl.col("_anon")).then(D.device_id()).otherwise(user), [D.device_id().alias("anonymous_id")]
    return df, [id_num(pl.col("_n"), prefix, 9).alias("event_id"), user.alias("user_id"),
                _ids("_s", n_s, sprefix, 8).alias("session_id"), to_datetime("_ts").alias("event_ts"),
                label("_et", names).alias("event_type"),
                pl.when(pl.col("_p") >= 0).then(id_num(pl.col("_p"), "p", 5)).alias("product_id"),
                label("_cat", CATEGORIES).alias("category"), *device]


def _customers_frame(u: Users, idx: np.ndarray, signup: np.ndarray, file: np.ndarray,
                     offset: int = 1) -> tuple[pl.DataFrame, Cols]:
    df = pl.DataFrame({"_u": idx, "_ts": signup, "_c": u.country[idx], "_ch": u.channel[idx],
                       "_file": file.astype(np.int32)})
    return df, [_user_id(offset=offset).alias("user_id"), to_datetime("_ts").alias("signup_ts"),
                label("_c", COUNTRIES).alias("country"), label("_ch", CHANNELS).alias("channel"),
                (id_num(pl.col("_u") + offset, "user") + pl.lit("@example.com")).alias("email")]


def _firstdraw_orders(rng: np.random.Generator, n: int) -> np.ndarray:
    """New customers: a first order or two (some none yet)."""
    return rng.choice(3, size=n, p=[0.12, 0.60, 0.28])


def _vocabulary(vocabulary: str, rng: np.random.Generator) -> tuple[np.random.Generator | None, tuple[str, ...]]:
    """(the names stream or None, the event names the codes index) of an ``event_vocabulary``."""
    if vocabulary not in ("rich", "contract"):
        raise ValueError(f"event_vocabulary must be 'rich' or 'contract', got {vocabulary!r}")
    return (rng, tuple(EVENT_NAMES)) if vocabulary == "rich" else (None, CONTRACT_EVENT_TYPES)


def _check(users: int, days: int, fmt: str, share: float = 0.0) -> None:
    if users < 1 or days < 1:
        raise ValueError(f"users and days must be >= 1 (got users={users}, days={days})")
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")
    if not 0.0 <= share < 1.0:
        raise ValueError(f"rates and shares must be in [0, 1), got {share}")


def _types_frame(shopper: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"_u": np.arange(len(shopper)), "_t": shopper}).select(
        _user_id().alias("user_id"), label("_t", SHOPPER_TYPES).alias("shopper_type"))


def _write_frames(paths: DataPaths, frames: dict, fmt: Format, rng: np.random.Generator, fault_rate: float,
                  summary: GenerateSummary, plan=None, want_ids: bool = False) -> dict[str, F.TableWrite]:
    """Write each table's files (faults planted by ``plan`` when fault_rate > 0); record them in ``summary``."""
    written = {}
    for table in list(frames):
        df, cols, names = frames.pop(table)
        w = F.write_table(df, cols, F.SPECS[table], plan(table, names) if plan else F.FilePlan(names),
                          paths.landing_for(table), fmt, rng, fault_rate, want_ids=want_ids)
        summary.rows[table] = w.rows
        summary.files += [str(p.relative_to(paths.root)) for p in w.files]
        written[table] = w
    return written


LINES_SPEC = F.TableSpec("order_items", "line_id", "order_ts", "user_id", "status")


def _write_lines(paths: DataPaths, orders: pl.DataFrame, shopper: np.ndarray, prefix: str, names: list[str],
                 fmt: Format, rng: np.random.Generator, summary: GenerateSummary) -> None:
    """Order lines of the orders just drawn (demo/lines.py), without faults, from a random stream of their own
    (the other files are the same with or without lines)."""
    df, cols = L.lines_frame(rng, orders, shopper, prefix, CATEGORIES)
    w = F.write_table(df, cols, LINES_SPEC, F.FilePlan(names), paths.landing_for("order_items"), fmt, rng, 0.0)
    summary.rows["order_items"] = w.rows
    summary.files += [str(p.relative_to(paths.root)) for p in w.files]


def generate(root: Path, users: int, days: int, seed: int, fmt: Format = "parquet", end: datetime = DEFAULT_END,
             fault_rate: float = 0.0, with_clicks: bool = True, with_customers: bool = True,
             event_vocabulary: Vocabulary = "rich", with_lines: bool = False,
             with_campaigns: bool = False, with_reviews: bool = False,
             lines_per_order: float | None = None, with_devices: bool = False) -> GenerateSummary:
    """Write a first delivery of ``days`` days ending at ``end`` for ``users`` users, plus ground truth.

    ``event_vocabulary``: ``rich`` (EVENT_NAMES, with purchase and other events) or ``contract`` (the
    four stage names only); see the module docstring. ``with_lines``: also order lines of the same orders
    (landing/order_items/: product ids, planted co-purchases per shopper type; demo/lines.py).
    ``with_campaigns``: also weekly campaign sends (uniform-random actions, logged propensities, a held-out
    control share), the extra orders they cause at planted per shopper type x action rates, and
    ``actions.yaml`` (demo/campaigns.py); opt-in, and the other files are the same with or without them.
    ``with_reviews``: also English reviews of the orders, their tone by shopper type and order outcome
    (landing/reviews/, truth/review_tones.parquet; demo/reviews.py); opt-in like lines and campaigns.

    ``lines_per_order``: items per order about this on average (None: each type's own, 2.2 over the mix); the
    benchmark's order-lines variant asks for 3, the shape issue 15 measures at.
    ``with_devices``: clicks also carry their device (``anonymous_id``), anonymous before a login (devices.py;
    truth/devices.parquet); opt-in, not with faults.

    ``fault_rate`` P > 0 turns about a share P of each table's rows into the bad inputs of the data
    contract and adds the file-level faults; truth/faults.parquet and truth/valid_ids_*.parquet say
    exactly what a correct ingestion must reject and keep (see faults.py).
    """
    t0 = time.perf_counter()
    _check(users, days, fmt, fault_rate)
    names_rng, names = _vocabulary(event_vocabulary, np.random.default_rng([seed, _NAMES]))
    paths = DataPaths(Path(root))
    end_s = epoch(end)
    start_s = end_s - days * DAY + 1
    nper = math.ceil(days / PERIOD_DAYS)
    u = draw_users(np.random.default_rng([seed, _USERS]), users)
    rng = np.random.default_rng([seed, _EVENTS])
    signup, a0, a1 = place(u, start_s, end_s)
    months = (a1 - a0) / (PERIOD_DAYS * DAY)
    counts = rng.poisson(ORDERS_30D[u.shopper] * u.act * months)
    new = u.shopper == NEW
    counts[new] = _firstdraw_orders(rng, int(new.sum()))
    o = draw_orders(rng, u, counts, a0, a1, lines_per_order)
    frames = {"orders": (*_orders_frame(rng, o, start_s, nper, "o"), period_names("orders", start_s, end_s, nper))}
    # A faulty delivery has no lines: an order rejected at order grain would come back from its lines.
    line_orders = frames["orders"][0] if with_lines and fault_rate == 0 else None
    review_orders = frames["orders"][0] if with_reviews and fault_rate == 0 else None
    device_truth = None
    if with_clicks:
        browse = rng.poisson(BROWSE_30D[u.shopper] * u.browse * months)
        c = draw_clicks(rng, u, o, browse, a0, a1, end_s, names_rng)
        del o
        devices = np.random.default_rng([seed, _DEVICES]) if with_devices and fault_rate == 0 else None
        frames["clicks"] = (*_clicks_frame(rng, c, start_s, nper, "e", "s", names, devices),
                            period_names("clicks", start_s, end_s, nper))
        device_truth = D.devices_truth(frames["clicks"][0]) if devices else None
        del c
    if with_customers:
        idx = np.arange(users, dtype=np.int32)
        file = (signup >= start_s).astype(np.int32)
        names = [f"customers_until_{day_str(start_s - 1)}", f"customers_{day_str(start_s)}_{day_str(end_s)}"]
        frames["customers"] = (*_customers_frame(u, idx, signup, file), names)
    truth = paths.truth
    truth.mkdir(parents=True, exist_ok=True)
    for old in ("faults.parquet", *(f"valid_ids_{t}.parquet" for t in F.SPECS)):
        (truth / old).unlink(missing_ok=True)  # truth always describes the latest delivery
    summary = GenerateSummary(root=Path(root), users=users, rows={})
    plan = (lambda t, names: F.plan_for(t, names, fmt, with_clicks)) if fault_rate > 0 else None
    written = _write_frames(paths, frames, fmt, np.random.default_rng([seed, _FAULTS]), fault_rate, summary, plan)
    truth_files = {"shopper_types.parquet": _types_frame(u.shopper)}
    (truth / "devices.parquet").unlink(missing_ok=True)
    if device_truth is not None:
        truth_files["devices.parquet"] = device_truth
    if line_orders is not None:
        _write_lines(paths, line_orders, u.shopper, "o", period_names("order_items", start_s, end_s, nper), fmt,
                     np.random.default_rng([seed, _LINES]), summary)
        truth_files["planted_pairs.parquet"] = L.planted_pairs(SHOPPER_TYPES)
    (truth / "review_tones.parquet").unlink(missing_ok=True)
    if review_orders is not None:
        truth_files["review_tones.parquet"] = R.write_reviews(paths, review_orders, u.shopper, "o", start_s, end_s, nper,
                                                              fmt, np.random.default_rng([seed, _REVIEWS]), summary)
    if fault_rate > 0:
        truth_files["faults.parquet"] = pl.concat([w.faults for w in written.values()])
        summary.faults = truth_files["faults.parquet"].height
        truth_files |= {f"valid_ids_{t}.parquet": w.valid_ids.to_frame() for t, w in written.items()}
    for old in ("planted_action_rates.parquet", "campaign_responses.parquet"):
        (truth / old).unlink(missing_ok=True)
    if with_campaigns:
        from seg_assets.demo.campaigns import write_campaigns

        rows, files, campaign_truth, response_orders = write_campaigns(
            paths.root, paths.landing_for, np.random.default_rng([seed, _CAMPAIGNS]), u.shopper, signup, end_s, start_s,
            fmt, SHOPPER_TYPES, CATEGORIES)
        summary.rows |= rows
        summary.files += [str(p.relative_to(paths.root)) for p in files]
        truth_files |= campaign_truth
        if fault_rate > 0:  # the response orders are valid orders too (they were missing from the id set: a tester's)
            known = truth_files["valid_ids_orders.parquet"]
            truth_files["valid_ids_orders.parquet"] = pl.concat([known, response_orders.to_frame()])
    for name, df in truth_files.items():
        df.write_parquet(truth / name)
        summary.files.append(f"truth/{name}")
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def generate_followup(root: Path, users: int, days: int, seed: int, *, start: datetime, changed_share: float = 0.0,
                      new_users: int = 0, fmt: Format = "parquet", tag: str = "followup",
                      with_clicks: bool = True, event_vocabulary: Vocabulary = "rich",
                      with_lines: bool = False, with_reviews: bool = False,
                      lines_per_order: float | None = None, with_devices: bool = False) -> GenerateSummary:
    """Write a new delivery of ``days`` more days from ``start`` for the users of ``generate(users, seed)``.

    Exactly ``round(changed_share * users)`` users (chosen by seed and tag) switch to another shopper
    type for the new period (never to new_customer; a user switching to lapsed goes quiet), and
    ``new_users`` users sign up during it. Used for incremental-refresh benchmarks and drift tests.
    ``with_devices``: as in :func:`generate` (a customer's devices are the same; truth/devices_<tag>.parquet).
    """
    t0 = time.perf_counter()
    _check(users, days, fmt, changed_share)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", tag):
        raise ValueError(f"tag must be letters, digits, '_' or '-', got {tag!r}")
    names_rng, names = _vocabulary(event_vocabulary, np.random.default_rng([seed, _NAMES, zlib.crc32(tag.encode())]))
    paths = DataPaths(Path(root))
    start_s = epoch(start)
    end_s = start_s + days * DAY - 1
    nper = math.ceil(days / PERIOD_DAYS)
    u = draw_users(np.random.default_rng([seed, _USERS]), users)
    rng = np.random.default_rng([seed, _FOLLOWUP, zlib.crc32(tag.encode())])
    old = u.shopper.copy()
    changed = np.sort(rng.choice(users, size=round(changed_share * users), replace=False))
    r = rng.integers(0, LAPSED, len(changed))  # 5 targets: LOYAL..LAPSED
    was = old[changed]
    u.shopper[changed] = np.where(was == NEW, rng.integers(0, LAPSED + 1, len(changed)), r + (r >= was))
    nu = draw_users(rng, new_users, np.full(new_users, NEW, dtype=np.int8))
    nu_signup = (start_s + nu.u_signup * max(days * DAY - 7200, 1)).astype(np.int64)
    allu = Users(*(np.concatenate([a, b]) for a, b in zip(vars(u).values(), vars(nu).values())))
    a0 = np.concatenate([np.full(users, start_s, dtype=np.int64), nu_signup + 3600])
    a1 = np.maximum(np.full(users + new_users, end_s, dtype=np.int64), a0 + 60)
    months = (a1 - a0) / (PERIOD_DAYS * DAY)
    rate = np.where(allu.shopper == LAPSED, 0.0, ORDERS_30D[allu.shopper] * allu.act)
    counts = rng.poisson(rate * months)
    counts[users:] = _firstdraw_orders(rng, new_users)
    o = draw_orders(rng, allu, counts, a0, a1, lines_per_order)
    frames = {"orders": (*_orders_frame(rng, o, start_s, nper, f"o-{tag}-"),
                         period_names("orders", start_s, end_s, nper, tag))}
    line_orders = frames["orders"][0] if with_lines else None
    review_orders = frames["orders"][0] if with_reviews else None
    device_truth = None
    if with_clicks:
        brate = np.where(allu.shopper == LAPSED, 0.0, BROWSE_30D[allu.shopper] * allu.browse)
        c = draw_clicks(rng, allu, o, rng.poisson(brate * months), a0, a1, end_s, names_rng)
        devices = np.random.default_rng([seed, _DEVICES, zlib.crc32(tag.encode())]) if with_devices else None
        frames["clicks"] = (*_clicks_frame(rng, c, start_s, nper, f"e-{tag}-", f"s-{tag}-", names, devices),
                            period_names("clicks", start_s, end_s, nper, tag))
        device_truth = D.devices_truth(frames["clicks"][0]) if devices else None
    if new_users:
        frames["customers"] = (*_customers_frame(nu, np.arange(new_users, dtype=np.int32), nu_signup,
                                                 np.zeros(new_users, dtype=np.int32), offset=users + 1),
                               [f"customers_{tag}_{day_str(start_s)}_{day_str(end_s)}"])
    summary = GenerateSummary(root=Path(root), users=users + new_users, rows={})
    truth = paths.truth
    truth.mkdir(parents=True, exist_ok=True)
    if device_truth is not None:
        device_truth.write_parquet(truth / f"devices_{tag}.parquet")
        summary.files.append(f"truth/devices_{tag}.parquet")
    want = (truth / "valid_ids_orders.parquet").exists()
    for table, w in _write_frames(paths, frames, fmt, rng, 0.0, summary, want_ids=want).items():
        known = truth / f"valid_ids_{table}.parquet"
        if known.exists():  # keep the "exact set of ids after ingestion" true after this delivery
            ids = pl.read_parquet(known).to_series()  # new ids carry the tag: only a rerun can repeat them
            pl.concat([ids.filter(~ids.is_in(w.valid_ids)), w.valid_ids]).to_frame().write_parquet(known)
    if line_orders is not None:
        _write_lines(paths, line_orders, allu.shopper, f"o-{tag}-", period_names("order_items", start_s, end_s, nper, tag),
                     fmt, np.random.default_rng([seed, _LINES, zlib.crc32(tag.encode())]), summary)
    if review_orders is not None:
        tones = R.write_reviews(paths, review_orders, allu.shopper, f"o-{tag}-", start_s, end_s, nper, fmt,
                               np.random.default_rng([seed, _REVIEWS, zlib.crc32(tag.encode())]), summary, tag)
        tones.write_parquet(truth / f"review_tones_{tag}.parquet")
        summary.files.append(f"truth/review_tones_{tag}.parquet")
    _types_frame(allu.shopper).write_parquet(truth / f"shopper_types_{tag}.parquet")
    pl.DataFrame({"_u": changed, "_o": old[changed], "_t": u.shopper[changed]}).select(
        _user_id().alias("user_id"), label("_o", SHOPPER_TYPES).alias("old_type"),
        label("_t", SHOPPER_TYPES).alias("new_type")).write_parquet(truth / f"changed_users_{tag}.parquet")
    summary.files += [f"truth/shopper_types_{tag}.parquet", f"truth/changed_users_{tag}.parquet"]
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def window_start(days: int, end: datetime = DEFAULT_END) -> datetime:
    """First second of a ``generate(days=..., end=...)`` window (naive UTC); followups start after ``end``."""
    return end.replace(tzinfo=None) - timedelta(days=days) + timedelta(seconds=1)
