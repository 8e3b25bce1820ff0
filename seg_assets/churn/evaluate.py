"""``make eval-cdnow``: the churn model against BG/NBD on the paper's CDNOW split.

Fader, Hardie and Lee (2005) calibrate on weeks 1-39 (1997-01-01 .. 1997-09-30) of the 2,357 customers of
the CDNOW sample and predict weeks 40-78 (1997-10-01 .. 1998-06-30). The question scored here is "will this
customer buy at all in weeks 40-78?" (29 % do):

1. :func:`run_eval_cdnow` fetches the CDNOW files (``fetch_cdnow``), imports the sample up to 1997-09-30
   into a fresh data root (``import_cdnow``: orders only), runs the normal refresh with
   ``as_of = 1997-09-30T23:59:59Z`` (default settings: H = 90 days, kind auto), then calls
   :func:`evaluate_cdnow`;
2. :func:`evaluate_cdnow` builds the holdout label from the *full* sample file (never imported) and
   reports, in one table, the ROC-AUC of ``1 - churn_probability`` from ``analytics.churn_scores`` next to
   ``expected_value_next_h``, recency only (``-recency_days``) and frequency only (``frequency``) from the
   same run's ``features.user_features``, and BG/NBD (fitted here with scipy, bgnbd.py) expected purchases
   in weeks 40-78 and P(alive);
3. optionally (:func:`compare_kinds`) the same snapshots are trained with each model kind and scored, to
   show what ``gbm`` and ``logreg`` each reach (``auto`` picks one on the time-based holdout only; the
   CDNOW holdout label is never used to choose anything).

The training horizon is the product's default, 90 days, although the evaluation window is 273 days: a
273-day label cannot be trained inside 273 days of history (a cut-off needs H days after it and some
history before it), and the ranking by "no order in the next 90 days" carries over (see the README).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl

from seg_assets.churn.bgnbd import BGNBD, fit_bgnbd, summarize
from seg_assets.churn.cdnow import fetch_cdnow, import_cdnow, read_orders
from seg_assets.churn.metrics import roc_auc
from seg_assets.markdown import table as md_table

CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)
AS_OF = "1997-09-30T23:59:59Z"
DATASETS = {"sample": "CDNOW_sample.txt", "master": "CDNOW_master.txt"}


@dataclass
class CdnowEvaluation:
    users: int
    buyers: int  # customers with a purchase in the holdout window
    auc: dict[str, float]  # score name -> ROC-AUC for "buys in the holdout window"
    churn_model_version: str | None
    horizon_days: int | None
    kind: str | None
    bgnbd: BGNBD | None = None
    dataset: str = "sample"
    notes: list[str] = field(default_factory=list)

    @property
    def churn_auc(self) -> float | None:
        return self.auc.get("churn_probability")

    def table(self) -> str:
        return md_table(["score (higher = more likely to buy in weeks 40-78)", "ROC-AUC"],
                        sorted(self.auc.items(), key=lambda kv: -kv[1]), floatfmt=".4f")

    def report(self) -> str:
        head = (f"CDNOW {self.dataset}: {self.users:,} customers, {self.buyers:,} ({self.buyers / max(self.users, 1):.1%}) buy in "
                f"weeks 40-78; churn model {self.churn_model_version} ({self.kind}, H = {self.horizon_days} days)")
        lines = [head, "", self.table()]
        if self.bgnbd is not None:
            b = self.bgnbd
            paper = " (paper: 0.243, 4.414, 0.793, 2.426)" if self.dataset == "sample" else ""
            lines += ["", f"BG/NBD fit: r = {b.r:.3f}, alpha = {b.alpha:.3f}, a = {b.a:.3f}, b = {b.b:.3f}{paper}"]
        lines += self.notes
        return "\n".join(lines)


def holdout_labels(sample_file: Path, calibration_end: date = CALIBRATION_END, holdout_end: date = HOLDOUT_END) -> pl.DataFrame:
    """``user_id, buy``: 1 when the customer (first purchase by ``calibration_end``) bought in the holdout window."""
    orders, *_ = read_orders(Path(sample_file))
    day = pl.col("order_ts").dt.date()
    customers = orders.filter(day <= calibration_end).select("user_id").unique()
    buyers = orders.filter((day > calibration_end) & (day <= holdout_end)).select("user_id").unique().with_columns(buy=pl.lit(1, pl.Int8))
    return customers.join(buyers, on="user_id", how="left").with_columns(pl.col("buy").fill_null(0)).sort("user_id")


def bgnbd_scores(sample_file: Path, calibration_end: date = CALIBRATION_END,
                 holdout_end: date = HOLDOUT_END) -> tuple[BGNBD, pl.DataFrame]:
    """BG/NBD fitted on the calibration weeks; per customer E[purchases in the holdout] and P(alive)."""
    orders, *_ = read_orders(Path(sample_file))
    summary = summarize(orders, datetime.combine(calibration_end, datetime.max.time()))
    model = fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
    weeks = (holdout_end - calibration_end).days / 7.0
    x, t_x, big_t = (summary[c].to_numpy() for c in ("x", "t_x", "T"))
    return model, summary.with_columns(
        bg_expected=model.expected_purchases(weeks, x, t_x, big_t), bg_p_alive=model.p_alive(x, t_x, big_t))


def evaluate_cdnow(data_dir: Path, sample_file: Path, *, calibration_end: date = CALIBRATION_END,
                   holdout_end: date = HOLDOUT_END, with_bgnbd: bool = True) -> CdnowEvaluation:
    """AUCs on "buys in (calibration_end, holdout_end]" for the scores of a refreshed data root (read-only)."""
    from seg_assets.settings import data_paths

    labels = holdout_labels(sample_file, calibration_end, holdout_end)
    with duckdb.connect(str(data_paths(data_dir).warehouse), read_only=True) as con:
        scores = con.sql("SELECT s.user_id, s.churn_probability, s.expected_value_next_h, s.churn_model_version, "
                         "f.recency_days, f.frequency FROM analytics.churn_scores s JOIN features.user_features f USING (user_id)").pl()
        meta = con.sql("SELECT version, horizon_days, kind FROM meta.churn_models WHERE in_service").fetchall()
    frame = labels.join(scores, on="user_id", how="left")
    missing = frame["churn_probability"].null_count()
    if missing:
        raise RuntimeError(f"{missing} of {frame.height} customers have no churn_probability: is a churn model in service?")
    y = frame["buy"].to_numpy()
    auc = {
        "churn_probability": roc_auc(y, 1.0 - frame["churn_probability"].to_numpy()),
        "expected_value_next_h": roc_auc(y, frame["expected_value_next_h"].to_numpy()),
        "recency only": roc_auc(y, -frame["recency_days"].to_numpy()),
        "frequency only": roc_auc(y, frame["frequency"].to_numpy().astype(float)),
    }
    version, horizon, kind = meta[0] if meta else (None, None, None)
    result = CdnowEvaluation(users=frame.height, buyers=int(y.sum()), auc=auc, churn_model_version=version,
                             horizon_days=horizon, kind=kind)
    if with_bgnbd:
        model, bg = bgnbd_scores(sample_file, calibration_end, holdout_end)
        joined = labels.join(bg, on="user_id", how="inner")
        yb = joined["buy"].to_numpy()
        result.bgnbd = model
        result.auc["BG/NBD expected purchases"] = roc_auc(yb, joined["bg_expected"].to_numpy())
        result.auc["BG/NBD P(alive)"] = roc_auc(yb, joined["bg_p_alive"].to_numpy())
        result.auc["frequency only, repeat purchase days (BG/NBD x)"] = roc_auc(yb, joined["x"].to_numpy())
    return result


def compare_kinds(data_dir: Path, sample_file: Path, *, as_of: str = AS_OF, horizon_days: int = 90,
                  kinds: tuple[str, ...] = ("gbm", "logreg"), calibration_end: date = CALIBRATION_END,
                  holdout_end: date = HOLDOUT_END) -> dict[str, dict]:
    """Train each kind on the refreshed warehouse's snapshots (read-only) and score it like the eval does."""
    from seg_assets.churn.model import train_churn_model
    from seg_assets.churn.snapshots import build_snapshots, first_order_ts, plan_snapshots
    from seg_assets.settings import data_paths
    from seg_assets.warehouse import parse_utc

    t = parse_utc(as_of)
    labels = holdout_labels(sample_file, calibration_end, holdout_end)
    with duckdb.connect(str(data_paths(data_dir).warehouse), read_only=True) as con:
        con.sql("SET TimeZone = 'UTC'")
        plan = plan_snapshots(first_order_ts(con, t), t, horizon_days)
        snapshots = build_snapshots(con, plan)
        features = con.sql("SELECT * FROM features.user_features ORDER BY user_id").pl()
    out = {}
    for kind in kinds:
        model = train_churn_model(snapshots, horizon_days=horizon_days, kind=kind, as_of=t, cutoffs=plan.cutoffs)
        frame = labels.join(features.with_columns(p=pl.Series(model.churn_probability(features))), on="user_id", how="left")
        out[kind] = {"eval_auc": roc_auc(frame["buy"].to_numpy(), 1.0 - frame["p"].to_numpy()),
                     "holdout_auc": model.metrics["holdout"]["roc_auc"]}
    return out


def run_eval_cdnow(work_dir: Path, *, cdnow_dir: Path | None = None, dataset: str = "sample", compare: bool = True,
                   echo=print) -> CdnowEvaluation:
    """Fetch, import weeks 1-39, refresh as of 1997-09-30T23:59:59Z, evaluate; prints and returns the figures.

    ``work_dir/data`` (the data root of the run) is deleted and rebuilt; the CDNOW files are kept in
    ``cdnow_dir`` (default ``work_dir/cdnow``) and downloaded only when missing. ``dataset``: ``sample``
    (2,357 customers, the paper's) or ``master`` (all 23,570).
    """
    from seg_assets.refresh import run_refresh

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, not {dataset!r}")
    work_dir = Path(work_dir).resolve()
    source = fetch_cdnow(Path(cdnow_dir) if cdnow_dir else work_dir / "cdnow")
    sample = source / DATASETS[dataset]
    data_dir = work_dir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    imported = import_cdnow(sample, data_dir, until=CALIBRATION_END)
    echo(f"imported {imported}")
    outcome = run_refresh(data_dir, as_of=AS_OF, on_stage=lambda g, phase, o: echo(
        f"  {g}: {'...' if phase == 'start' else ('ok' if o.success else 'FAILED')}" + (f" ({o.seconds:.1f}s)" if o else "")))
    if not outcome.success:
        raise RuntimeError("refresh failed: " + "; ".join(f for s in outcome.stages for f in s.failures))
    result = evaluate_cdnow(data_dir, sample)
    result.dataset = dataset
    if compare:
        for kind, figures in compare_kinds(data_dir, sample).items():
            result.notes.append(f"kind={kind}: AUC {figures['eval_auc']:.4f} on weeks 40-78 "
                                f"(time-based holdout AUC of the 90-day label {figures['holdout_auc']:.4f})")
    echo(result.report())
    return result

