"""Real purchase data: the CDNOW files converted into landing files of the orders contract.

CDNOW (Fader, Hardie and Lee 2005) is the classical benchmark of buy-till-you-die models: the full
cohort of 23,570 customers who made their first purchase at CDNOW in 1997-Q1, with every purchase up to
1998-06-30, and a 1/10 sample of 2,357 of them. Both files ship in the ``datasets`` folder of the
``lifetimes`` package on PyPI (MIT licence); :func:`fetch_cdnow` downloads that wheel with pip and
extracts only the two text files. ``lifetimes`` is never imported: it is not a dependency.

File format (whitespace separated, CRLF line ends, one line per purchase):

* ``CDNOW_master.txt``: an optional header line, then ``customer_id date number_of_cds dollar_value``;
* ``CDNOW_sample.txt``: no header, ``master_customer_id sample_customer_id date number_of_cds dollar_value``.

Decisions (documented, tested in ``test_churn_cdnow.py``):

* **user_id** is the master customer id as written (zero padded, e.g. ``"00004"``) for both files, so a
  customer has the same id in the sample and in the master file.
* **One line, one order.** A customer may have several lines on the same day (223 in the sample, 2,068
  in the master file); each stays an order, so row counts and totals are exactly the file's.
  ``order_id = "<user_id>-<YYYYMMDD>-<n>"`` with ``n`` the line's index among that customer's lines of
  that day, in file order: deterministic, unique, and unchanged by ``until`` (a cut keeps whole days).
* **order_ts** is midnight UTC of the day (the files carry dates only).
* **amount** is the dollar value (2 decimals, as in the file). ``$0.00`` lines (8 in the sample, 80 in the
  master file) are kept: the contract allows ``amount >= 0``.
* **items** is the number of CDs. Neither file has a line with fewer than 1 CD, but the contract requires
  ``items >= 1``: such a line would be *dropped by the import and counted* (``rejected_rows`` of the
  summary) rather than clamped to 1, so nothing is invented; the same goes for a negative dollar value and
  for a malformed line (wrong field count, unparseable date or number).
* **category** and **discount** are empty, **status** is ``completed``: CDNOW records purchases only.
* **until** (a date, inclusive) keeps purchases dated on or before it: ``--until 1997-09-30`` is the
  paper's calibration period (weeks 1-39).
* The landing file is CSV (header, comma, UTF-8, ISO-8601 ``Z`` timestamps, as the contract describes)
  or Parquet; it is written under a temporary name and renamed into place (the landing rule), with a
  name derived from the source file and the cut, so re-running the import rewrites the same file.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

LIFETIMES_WHEEL = "lifetimes==0.11.3"
CDNOW_FILES = ("CDNOW_sample.txt", "CDNOW_master.txt")
ORDER_COLUMNS = ("order_id", "user_id", "order_ts", "amount", "items", "category", "discount", "status")


@dataclass(frozen=True)
class CdnowImport:
    """What :func:`import_cdnow` wrote."""

    source: Path
    path: Path  # the landing file
    lines: int  # purchase lines read from the source (header and blank lines excluded)
    rows: int  # orders written
    rejected_rows: int  # malformed lines or lines breaking the contract (dropped, counted)
    cut_rows: int  # valid lines after ``until``
    users: int
    amount_total: float
    items_total: int
    first_date: date | None
    last_date: date | None

    def __str__(self) -> str:
        return (f"{self.rows:,} orders of {self.users:,} customers ({self.first_date} .. {self.last_date}), "
                f"${self.amount_total:,.2f}, {self.items_total:,} CDs -> {self.path} "
                f"({self.cut_rows:,} lines after the cut, {self.rejected_rows:,} rejected)")


def _parse_date(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def parse_cdnow(text: str) -> tuple[pl.DataFrame, int]:
    """Parse CDNOW text (either layout) into (lines frame, rejected line count).

    The frame has one row per valid purchase line, in file order: ``user_id`` (str), ``day`` (date),
    ``items`` (int), ``amount`` (str with 2 decimals, exact) and ``amount_value`` (float).
    """
    users, days, items, amounts = [], [], [], []
    rejected = 0
    for raw in text.splitlines():
        fields = raw.split()
        if not fields:
            continue
        if not fields[0].isdigit():  # the master file's header line
            if not users and not rejected and fields[0].lower().startswith("customer"):
                continue
            rejected += 1
            continue
        if len(fields) == 5:  # sample layout: master id, sample id, date, cds, dollars
            fields = [fields[0], *fields[2:]]
        if len(fields) != 4:
            rejected += 1
            continue
        user, day_text, cds_text, usd_text = fields
        try:
            day = _parse_date(day_text)
            cds = int(cds_text)
            usd = float(usd_text)
        except ValueError:
            rejected += 1
            continue
        if cds < 1 or usd < 0 or usd != usd:
            rejected += 1
            continue
        users.append(user)
        days.append(day)
        items.append(cds)
        amounts.append(f"{usd:.2f}")
    frame = pl.DataFrame(
        {"user_id": users, "day": days, "items": items, "amount": amounts},
        schema={"user_id": pl.String, "day": pl.Date, "items": pl.Int64, "amount": pl.String},
    ).with_columns(amount_value=pl.col("amount").cast(pl.Float64))
    return frame, rejected


def to_orders(lines: pl.DataFrame) -> pl.DataFrame:
    """Parsed CDNOW lines -> orders of the contract (order_ts as naive UTC datetime, amount as str)."""
    return (
        lines.with_columns(n=pl.int_range(pl.len()).over("user_id", "day"))
        .select(
            order_id=pl.format("{}-{}-{}", "user_id", pl.col("day").dt.strftime("%Y%m%d"), "n"),
            user_id="user_id",
            order_ts=pl.col("day").cast(pl.Datetime("us")),
            amount="amount",
            items="items",
            category=pl.lit(None, dtype=pl.String),
            discount=pl.lit(None, dtype=pl.String),
            status=pl.lit("completed"),
        )
    )


def read_orders(source: Path, until: date | None = None) -> tuple[pl.DataFrame, int, int, int]:
    """(orders, lines read, rejected lines, lines cut by ``until``) from a CDNOW file."""
    text = Path(source).read_text(encoding="ascii", errors="replace")
    lines, rejected = parse_cdnow(text)
    read = lines.height + rejected
    kept = lines if until is None else lines.filter(pl.col("day") <= until)
    return to_orders(kept), read, rejected, lines.height - kept.height


def _landing_name(source: Path, until: date | None, fmt: str) -> str:
    suffix = f"_until_{until:%Y%m%d}" if until else ""
    ext = "parquet" if fmt == "parquet" else "csv"
    stem = Path(source).stem.lower()
    return f"{stem if stem.startswith('cdnow') else 'cdnow_' + stem}{suffix}.{ext}"


def _write_csv(orders: pl.DataFrame, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ORDER_COLUMNS)
    for order_id, user, ts, amount, items, _cat, _disc, status in orders.iter_rows():
        writer.writerow([order_id, user, ts.strftime("%Y-%m-%dT%H:%M:%SZ"), amount, items, "", "", status])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def import_cdnow(src: Path, directory: Path, *, until: date | str | None = None, fmt: str = "csv") -> CdnowImport:
    """Convert a CDNOW file (master or sample) into ``directory/landing/orders/cdnow_<name>[_until_<YYYYMMDD>].<fmt>``.

    ``until``: keep purchases dated on or before this day (``date`` or ``"YYYY-MM-DD"``); ``fmt``: ``csv`` or
    ``parquet``. Only orders are written (no clicks, no customers). Returns the accounting.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    src = Path(src)
    if isinstance(until, str):
        until = date.fromisoformat(until[:10])
    elif isinstance(until, datetime):
        until = until.date()
    orders, read, rejected, cut = read_orders(src, until)
    folder = Path(directory) / "landing" / "orders"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _landing_name(src, until, fmt)
    tmp = folder / f".{target.name}.tmp"  # never read by the sensor or the ingest (landing rule)
    if fmt == "parquet":
        orders.with_columns(pl.col("order_ts").dt.replace_time_zone("UTC"),
                            pl.col("amount").cast(pl.Decimal(12, 2)),
                            pl.col("discount").cast(pl.Decimal(12, 2))).write_parquet(tmp)
    else:
        _write_csv(orders, tmp)
    tmp.replace(target)
    amounts = orders["amount"].cast(pl.Decimal(18, 2)).sum() if orders.height else 0
    return CdnowImport(
        source=src, path=target, lines=read, rows=orders.height, rejected_rows=rejected, cut_rows=cut,
        users=orders["user_id"].n_unique(), amount_total=float(amounts), items_total=int(orders["items"].sum() or 0),
        first_date=orders["order_ts"].min().date() if orders.height else None,
        last_date=orders["order_ts"].max().date() if orders.height else None,
    )


def fetch_cdnow(dest: Path) -> Path:
    """Download the ``lifetimes`` wheel with pip and extract only the CDNOW files into ``dest``; returns ``dest``.

    Files already present are not downloaded again. Needs PyPI (used by ``make eval-cdnow``, never by the
    pipeline or the default tests).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / name).is_file() for name in CDNOW_FILES):
        return dest
    with tempfile.TemporaryDirectory(prefix="cdnow_") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", LIFETIMES_WHEEL, "--no-deps", "-d", tmp,
                        "--disable-pip-version-check", "-q"], check=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {LIFETIMES_WHEEL} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in CDNOW_FILES:
                member = f"lifetimes/datasets/{name}"
                out = dest / f".{name}.tmp"
                out.write_bytes(wheel.read(member))
                out.replace(dest / name)
    return dest
