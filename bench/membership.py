"""Membership churn on a refit after behaviour drift (issue 13 item 4), measured end to end.

A base delivery is refreshed, a follow-up delivery (``--days`` later, ``--changed`` of the users switch
shopper type) lands, and ``refresh --refit`` runs. Reported: the share of users whose behaviour did not
change (truth) and whose lifecycle stage (``segment_stage``) did not move who kept their segment id,
and the same after a second refit on unchanged data. The refreshed base is cached under ``--root``.

    python -m bench.membership --users 50000 --days 180 --root /tmp/membership
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl


def published(root: Path) -> pl.DataFrame:
    from seg_assets.settings import data_paths

    with duckdb.connect(str(data_paths(root).warehouse), read_only=True) as con:
        return con.sql("SELECT user_id, segment_id, segment_name, segment_stage, as_of FROM analytics.user_segments").pl()


def kept_share(before: pl.DataFrame, after: pl.DataFrame, changed: pl.Series | None = None) -> dict:
    """Share of users in both snapshots (minus ``changed``) who kept their segment id, overall and among
    those whose lifecycle stage did not move."""
    both = before.join(after, on="user_id", suffix="_after")
    if changed is not None:
        both = both.filter(~pl.col("user_id").is_in(changed.implode()))
    same_stage = both.filter(pl.col("segment_stage") == pl.col("segment_stage_after"))
    kept = lambda f: float((f["segment_id"] == f["segment_id_after"]).mean()) if f.height else float("nan")  # noqa: E731
    moves = (same_stage.filter(pl.col("segment_id") != pl.col("segment_id_after"))
             .group_by("segment_name", "segment_name_after").len().sort("len", descending=True).head(8))
    return {"users": both.height, "kept": kept(both), "same_stage_users": same_stage.height,
            "kept_same_stage": kept(same_stage), "top_moves": moves.rows()}


def base_state(root: Path, users: int, days: int, seed: int) -> Path:
    """The data dir after the first refresh of the base delivery (built once)."""
    from seg_assets.demo.generate import generate
    from seg_assets.refresh import run_refresh

    base = root / f"base-{users}-{days}-{seed}"
    if (base / ".done").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    generate(base, users=users, days=days, seed=seed)
    outcome = run_refresh(base)
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    (base / ".done").write_text("ok")
    return base


def main(argv=None) -> dict:
    from seg_assets.demo.generate import DEFAULT_END, generate_followup
    from seg_assets.refresh import run_refresh

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--followup-days", type=int, default=14)
    p.add_argument("--changed", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--root", type=Path, default=Path("/tmp/membership"))
    p.add_argument("--set", action="append", default=[], help="OP.FIELD=VALUE for the refit (e.g. segment_model.x=1)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    base = base_state(a.root, a.users, a.days, a.seed)
    run = a.root / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run)
    before = published(run)
    generate_followup(run, a.users, a.followup_days, a.seed, start=DEFAULT_END + timedelta(seconds=1),
                      changed_share=a.changed, new_users=a.users // 100, tag="drift")
    changed = pl.read_parquet(run / "truth" / "changed_users_drift.parquet")["user_id"]
    ops: dict = {}
    for item in a.set:
        key, value = item.split("=", 1)
        op, field = key.split(".", 1)
        ops.setdefault(op, {"config": {}})["config"][field] = json.loads(value)
    outcome = run_refresh(run, refit=True, overrides={"ops": ops})
    assert outcome.success, [f for s in outcome.stages for f in s.failures]
    after = published(run)
    drift = kept_share(before, after, changed)
    again = run_refresh(run, refit=True, overrides={"ops": ops})
    assert again.success
    same = kept_share(after, published(run))
    with duckdb.connect(str(run / "warehouse.duckdb"), read_only=True) as con:
        fits = con.sql("SELECT version, promoted, reason, metrics->>'gate_membership_churn', "
                       "metrics->>'gate_membership_churn_stable' FROM meta.segment_models ORDER BY version").fetchall()
    report = {"users": a.users, "days": a.days, "changed_share": a.changed, "seconds": round(time.perf_counter() - t0, 1),
              "after_drift_refit": drift, "refit_unchanged_kept": same["kept"], "fits": fits}
    print(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
