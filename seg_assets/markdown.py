"""Markdown tables for the Dagster UI's metadata (and the README's feature dictionary): one way to write them; and
one way to round a share to a whole percent in any text a person reads (:func:`percent`).

``tabulate`` writes them; cells come from data (reject reasons, product descriptions, rules, file names), and a
``|`` or a line break in one split its row, so every text cell is escaped here first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import polars as pl
from tabulate import tabulate


def percent(share: float, sep: str = "") -> str:
    """A share as a whole percent, halves up as a person rounds (Python's format rounds 22.5 to even: 22, a tester's
    recount); to 9 decimals first, so a float's last bit does not decide (29/200 is 14.499999999999998 in floats).
    One rule for every text: a profile said 12% in its description and 13 % in its review note (a reviewer's)."""
    return f"{math.floor(round(100 * share, 9) + 0.5)}{sep}%"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value, floatfmt: str, missing: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    if isinstance(value, float):
        return format(value, floatfmt)
    return " ".join(str(value).replace("\\", "\\\\").replace("|", "\\|").splitlines())


def table(columns: Sequence[str], rows: Iterable[Sequence], right: Iterable[str] = (), floatfmt: str = "g",
          missing: str = "") -> str:
    """A markdown table of ``rows`` under ``columns``: number columns (and the ``right`` ones) right-aligned.

    Cells are formatted here, not parsed by tabulate: a product id "00123" stays text."""
    rows = [list(row) for row in rows]
    right = set(right) | {c for i, c in enumerate(columns)
                          if rows and all(_is_number(r[i]) or r[i] is None for r in rows) and any(_is_number(r[i]) for r in rows)}
    return tabulate([[_cell(v, floatfmt, missing) for v in row] for row in rows],
                    headers=[_cell(c, floatfmt, missing) for c in columns], tablefmt="pipe",
                    colalign=["right" if c in right else "left" for c in columns], disable_numparse=True)


def frame(data: pl.DataFrame, floatfmt: str = "g", missing: str = "") -> str:
    """A polars frame as a markdown table (no index column)."""
    return table(data.columns, data.iter_rows(), floatfmt=floatfmt, missing=missing)
