"""Audience files: per campaign, the users to target and the users held out, as a CRM or ESP imports them.

One campaign per action of a next-best-action run: ``campaign_id = f"{action_id}-{as_of:%Y%m%d}"``. Its
users are those whose next best action is that action; a user is held out (``group = control``) when
``bucket(user_id, salt=campaign_id) < holdout_share * 10,000`` (groups.py: a per-campaign salted hash, so
re-running the day's publication holds out the same users), else ``group = treatment``. Global-control
users never appear: they get no next best action, and are dropped here once more.

Files: ``bi/audiences/<campaign_id>.parquet`` and ``.csv`` with ``campaign_id, user_id, action_id, group,
propensity, policy_version`` (the columns of ``landing/campaign_sends/`` less the send id and time, so
the sender's log can come back as campaign sends) and ``recommended_products``: the user's top 3 recommended
product ids, comma-separated, best first (recommend stage; '' when the user has none). Each is written under a
temporary name and moved into place with ``os.replace``, like the BI copy (publish/bi.py): a reader sees the old
file or the new one. Once every current file is in place, the files of campaigns that are no longer current (an
earlier day's, or an action nobody gets any more) are removed, so the folder holds exactly the current campaigns:
a CRM that imports every file of the folder never re-sends an old audience. Files are removed only after the new
ones are in place, so the folder is never empty in between; a failed write or move leaves the folder as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl

from seg_assets.activation.groups import bucket, control_cutoff
from seg_assets.config_files import SAFE_NAME_RULE

AUDIENCE_COLUMNS = ("campaign_id", "user_id", "action_id", "group", "propensity", "policy_version", "recommended_products")
RECOMMENDED_IN_AUDIENCE = 3  # product ids per audience row, best first (analytics.user_recommendations)


def campaign_id(action_id: str, as_of: datetime) -> str:
    return f"{action_id}-{as_of:%Y%m%d}"


def audiences(nba: pl.DataFrame, as_of: datetime, holdout_share: float | Callable[[str], float],
              global_control: set[str] | frozenset = frozenset(), recommended: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per user of ``nba`` (user_id, action_id, propensity, policy_version) not in ``global_control``;
    ``holdout_share``: one for every campaign, or the share of each campaign id (``Catalogue.holdout_of``);
    ``recommended`` (user_id, recommended_products: comma-separated product ids) fills that column ('' without)."""
    df = nba.filter(~pl.col("user_id").is_in(list(global_control))) if global_control else nba
    rec = recommended if recommended is not None else pl.DataFrame(schema={"user_id": pl.Utf8, "recommended_products": pl.Utf8})
    df = df.join(rec.select("user_id", "recommended_products"), on="user_id", how="left").with_columns(
        pl.col("recommended_products").fill_null(""))
    df = df.with_columns(pl.col("action_id").map_elements(lambda a: campaign_id(a, as_of), return_dtype=pl.Utf8).alias("campaign_id"))
    share_of = holdout_share if callable(holdout_share) else lambda _: holdout_share
    cutoff = {c: control_cutoff(share_of(c)) for c in df["campaign_id"].unique().to_list()}
    held = [bucket(u, c) < cutoff[c] for u, c in zip(df["user_id"].to_list(), df["campaign_id"].to_list())]
    return df.with_columns(pl.Series("group", held, dtype=pl.Boolean)).with_columns(
        pl.when(pl.col("group")).then(pl.lit("control")).otherwise(pl.lit("treatment")).alias("group")
    ).select(AUDIENCE_COLUMNS).sort("campaign_id", "user_id")


AUDIENCE_FORMATS = ("parquet", "csv")


def audience_files(folder: Path) -> list[Path]:
    """The published audience files in ``folder`` (temporary files, which start with a dot, excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for ext in AUDIENCE_FORMATS for p in folder.glob(f"*.{ext}") if not p.name.startswith("."))


def write_audiences(frame: pl.DataFrame, folder: Path) -> dict[str, dict[str, int]]:
    """Write one Parquet and one CSV file per campaign, each atomically, then remove the files of campaigns no
    longer current, all or nothing (:func:`_replace_all`); returns counts per campaign and group."""
    folder.mkdir(parents=True, exist_ok=True)
    inside = folder.resolve()
    for cid in frame["campaign_id"].unique().to_list():  # actions.yaml checks action ids; whatever the id, stay inside
        if (inside / f"{cid}.csv").resolve().parent != inside:
            raise ValueError(f"campaign id {cid[:80]!r} would write outside {folder}: an action id uses {SAFE_NAME_RULE}")
    token = uuid.uuid4().hex[:12]
    counts: dict[str, dict[str, int]] = {}
    staged: list[tuple[Path, Path]] = []
    try:
        for (cid,), part in frame.partition_by("campaign_id", as_dict=True, maintain_order=True).items():
            for ext, write in zip(AUDIENCE_FORMATS, (part.write_parquet, part.write_csv), strict=True):
                tmp = folder / f".{cid}.{token}.{ext}.tmp"
                write(tmp)
                staged.append((tmp, folder / f"{cid}.{ext}"))
            counts[cid] = {g: int(n) for g, n in part.group_by("group").len().iter_rows()}
        current = {target for _, target in staged}
        _replace_all(staged, [p for p in audience_files(folder) if p not in current], token)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return counts


def _replace_all(staged: list[tuple[Path, Path]], stale: list[Path], token: str) -> None:
    """Move each written file into place (each replace atomic: a reader sees the old file or the new one), then take
    the ``stale`` files (campaigns no longer current) out of view; if any step fails, undo every one before it and
    raise its error, so a CRM never imports two days' campaigns, or half of today's, side by side. A replaced or
    stale file keeps a second, hidden name until every step is done."""
    undo: list = []  # how to put back each step done, last first
    try:
        for tmp, target in staged:
            aside = target.with_name(f".{target.name}.{token}.old")
            if target.exists():
                try:
                    os.link(target, aside)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, aside)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    aside.unlink(missing_ok=True)  # the target is as it was
                    raise
                undo.append(lambda t=target, a=aside: os.replace(a, t))
            else:
                os.replace(tmp, target)
                undo.append(lambda t=target: t.unlink(missing_ok=True))
        for path in stale:
            aside = path.with_name(f".{path.name}.{token}.old")
            os.replace(path, aside)
            undo.append(lambda t=path, a=aside: os.replace(a, t))
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except OSError:  # keep undoing the others; the error that stopped the write is the one raised
                pass
        raise
    for old in {*[t for _, t in staged], *stale}:
        old.with_name(f".{old.name}.{token}.old").unlink(missing_ok=True)
