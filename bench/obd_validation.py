"""Public check of the off-policy estimators on the Open Bandit Dataset sample (Saito et al., 2020; ZOZOTOWN).

The dataset's own protocol for evaluating an estimator: estimate the value (click rate) of the
uniform-random policy from the logs of the Bernoulli Thompson Sampling policy (IPS and SNIPS, with the
logged BTS propensities), and compare it with the click rate observed on the random policy's own logs
(the on-policy "ground truth"). The random policy picks each of the campaign's ``n_actions`` items with
probability ``1 / n_actions`` at every one of the three positions, so each BTS row gets the importance
weight ``(1 / n_actions) / propensity_score``.

The sample ships inside the ``obp`` 0.5.7 source archive on PyPI (``obp/dataset/obd/{random,bts}/{all,men,
women}/``); obp itself does not install on this Python, so the archive is fetched with pip into
``bench/.cache/obd`` (git-ignored) and only its CSVs are read. Each file holds 10,000 impressions and a
few dozen clicks: the intervals are wide, and that is the finding to report (see docs/activation.md).

    python bench/obd_validation.py [--campaign all men women] [--n-boot 2000] [--seed 0] [--out FILE.md]

The tests run :func:`validate` on a small synthetic file in the OBD column format (no download at test time).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seg_assets.activation.offpolicy import Estimate, estimate  # noqa: E402

OBP_VERSION = "0.5.7"
CACHE = Path(__file__).resolve().parent / ".cache" / "obd"
CAMPAIGNS = ("all", "men", "women")
COLUMNS = ("item_id", "position", "click", "propensity_score")


def fetch_obp_sdist(cache_dir: Path = CACHE) -> Path:
    """Download (once) and unpack the obp source archive; return the folder holding ``random/`` and ``bts/``."""
    root = cache_dir / f"obp-{OBP_VERSION}" / "obp" / "dataset" / "obd"
    if root.is_dir():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / f"obp-{OBP_VERSION}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--ignore-requires-python",
                        f"obp=={OBP_VERSION}", "-d", str(cache_dir)], check=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/obp/dataset/obd/" in m.name and m.isfile() and m.name.endswith(".csv")]
        tar.extractall(cache_dir, members=members, filter="data")
    return root


def read_obd(path: Path) -> pl.DataFrame:
    """One OBD log file (``{behavior}/{campaign}/{campaign}.csv``): the columns the estimators need."""
    df = pl.read_csv(path, columns=list(COLUMNS), schema_overrides={"click": pl.Int64, "propensity_score": pl.Float64})
    return df.select(COLUMNS)


def n_actions_of(*frames: pl.DataFrame) -> int:
    """Number of items of a campaign: the item ids run 0..n-1 in OBD (the random logs' propensity is 1/n)."""
    return int(max(int(f["item_id"].max()) for f in frames)) + 1


@dataclass(frozen=True)
class ObdCheck:
    campaign: str
    n_actions: int
    on_policy: Estimate  # click rate of the random logs (ground truth), bootstrap interval
    ips: Estimate  # uniform random's click rate estimated from the BTS logs
    snips: Estimate
    bts_on_policy: Estimate  # click rate of the BTS logs themselves (context: what the estimate starts from)
    mean_weight: float  # mean importance weight over the BTS rows: 1 in expectation, far from 1 when a few tiny propensities dominate
    max_weight: float

    def relative_error(self, e: Estimate) -> float:
        return abs(e.value - self.on_policy.value) / self.on_policy.value if self.on_policy.value else float("nan")

    def covers(self, e: Estimate) -> bool:
        """The estimator's 95 % interval contains the observed random click rate."""
        return e.ci_low <= self.on_policy.value <= e.ci_high

    def overlaps(self, e: Estimate) -> bool:
        """The two 95 % intervals overlap."""
        return e.ci_low <= self.on_policy.ci_high and self.on_policy.ci_low <= e.ci_high


def validate(random_logs: pl.DataFrame, bts_logs: pl.DataFrame, campaign: str = "", n_actions: int | None = None,
             n_boot: int = 2000, seed: int = 0) -> ObdCheck:
    """Estimate the uniform-random policy's click rate from the BTS logs and set it against the random logs."""
    k = n_actions or n_actions_of(random_logs, bts_logs)
    r_click = random_logs["click"].to_numpy().astype(float)
    b_click = bts_logs["click"].to_numpy().astype(float)
    b_p = bts_logs["propensity_score"].to_numpy().astype(float)
    target = np.full(len(b_click), 1.0 / k)
    ones = np.ones(len(r_click))
    on = estimate(r_click, ones, ones, estimator="ips", policy="random (on-policy)", n_boot=n_boot, seed=seed)
    bts_on = estimate(b_click, np.ones(len(b_click)), np.ones(len(b_click)), estimator="ips", policy="bts (on-policy)",
                      n_boot=n_boot, seed=seed)
    ips = estimate(b_click, b_p, target, estimator="ips", policy="random from bts logs", n_boot=n_boot, seed=seed + 1)
    sn = estimate(b_click, b_p, target, estimator="snips", policy="random from bts logs", n_boot=n_boot, seed=seed + 1)
    w = target / b_p
    return ObdCheck(campaign, k, on, ips, sn, bts_on, float(w.mean()), float(w.max()))


def _fmt(e: Estimate, scale: float = 100.0) -> str:
    return f"{e.value * scale:.3f} [{e.ci_low * scale:.3f}, {e.ci_high * scale:.3f}]"


def markdown(checks: list[ObdCheck], n_boot: int, seed: int) -> str:
    lines = [
        f"Click rates in % with percentile-bootstrap 95 % intervals ({n_boot} resamples, seed {seed}); obp {OBP_VERSION} sample, "
        "10,000 impressions per file.",
        "",
        "| campaign | items | random logs: observed CTR (truth) | BTS logs: observed CTR | IPS of random from BTS "
        "| SNIPS of random from BTS | rel. error IPS / SNIPS | truth in IPS / SNIPS interval | mean / max weight | ESS of weights |",
        "|---|---:|---|---|---|---|---|---|---:|---:|",
    ]
    for c in checks:
        lines.append(f"| {c.campaign} | {c.n_actions} | {_fmt(c.on_policy)} | {_fmt(c.bts_on_policy)} | {_fmt(c.ips)} | {_fmt(c.snips)} "
                     f"| {c.relative_error(c.ips):.2f} / {c.relative_error(c.snips):.2f} "
                     f"| {'yes' if c.covers(c.ips) else 'no'} / {'yes' if c.covers(c.snips) else 'no'} "
                     f"| {c.mean_weight:.2f} / {c.max_weight:,.0f} | {c.ips.ess:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", nargs="+", default=list(CAMPAIGNS), choices=CAMPAIGNS)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    root = fetch_obp_sdist()
    checks = []
    for c in args.campaign:
        rnd, bts = read_obd(root / "random" / c / f"{c}.csv"), read_obd(root / "bts" / c / f"{c}.csv")
        checks.append(validate(rnd, bts, c, n_boot=args.n_boot, seed=args.seed))
    text = markdown(checks, args.n_boot, args.seed)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
