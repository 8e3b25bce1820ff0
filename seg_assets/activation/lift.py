"""Campaign lift per campaign x action x segment, with intervals, p-values, MDE and a sample-ratio check.

Input of :func:`campaign_lift`: one row per user sent (or held out) in a campaign, columns

=============== ======================================================================
campaign_id      the campaign
action_id        the action; for ``control`` rows the action the user would have received
segment_id       the user's segment at send time
user_id          the user
group            ``treatment`` or ``control``
converted        bool: completed an order within the attribution window
revenue          float: revenue within the attribution window (null = 0)
=============== ======================================================================

Output: one row per campaign x action x segment (:data:`LIFT_COLUMNS`):

* counts and rates: ``n_treated``, ``n_control``, ``conversions_treated``, ``conversions_control``,
  ``conv_rate_treated``, ``conv_rate_control``, ``revenue_per_user_treated``, ``revenue_per_user_control``;
* conversion lift: ``abs_lift`` = rate_t - rate_c with a 95 % Newcomb (hybrid Wilson score) interval
  ``abs_lift_ci_low/high``; ``rel_lift`` = rate_t / rate_c - 1 with the log-adjusted ratio interval (both
  ``statsmodels.stats.proportion.confint_proportions_2indep``; ``rel_lift`` null when the control has no conversion,
  its interval also when every user of a group converted); ``p_value`` of the pooled two-proportion score test (=
  Pearson chi-square without continuity correction, ``test_proportions_2indep(method="score", correction=False)``). A
  cell too small for that approximation (an expected count under ``SMALL_EXPECTED``) gets Fisher's exact test and the
  Agresti-Caffo interval instead, and ``conversion_test`` says which: on simulated cells without an effect, the score
  test called 11-13 % of 3-vs-1 cells and 7-9 % of 8-vs-2 cells significant at 5 % (a tester's 0/3 vs 1/1 cell: p
  0.046), Newcomb's interval excluded 0 in 13 % of 3-vs-1 cells; Fisher's test stays at or under 5 % (1.6-4 % in
  9-vs-1 cells, the default holdout's), Agresti-Caffo at or under 5 % in cells from 3-vs-1 to 40-vs-40 but up to 6-7 %
  in 9-vs-1 cells of 50-400 users (a reviewer's exact enumeration): read ``p_value`` there. (Boschloo's test, more
  powerful, took 18-90 s for one cell of 20,000 vs 2,000 users with 41 conversions: a reviewer's);
* revenue lift: ``revenue_abs_lift`` with a Welch t interval, ``revenue_p_value`` (Welch t test) and
  ``revenue_rel_lift`` with a delta-method interval on the log ratio of means; computed from per-cell
  sums and sums of squares, so the cost is one group-by (tests check it against statsmodels'
  ``CompareMeans`` on the raw values);
* ``mde_abs``: the minimum detectable absolute conversion lift at this sample size (two-sided
  ``alpha`` 0.05, power 0.8): Cohen's h from ``statsmodels.stats.power.NormalIndPower`` turned back into
  a rate difference at the control rate;
* ``srm_p_value``, ``srm_p_holm``, ``srm_warning``: chi-square of the observed treated/control counts against
  the planned split (:func:`sample_ratio_mismatch`), its Holm adjustment over all the cells of the table, and
  the warning (adjusted p below the threshold); a broken split makes every other figure of the cell suspect.
  The adjustment keeps the threshold's meaning for the table: 100 sound cells tested at p < 0.001 each would
  warn on one run in ten by chance alone; a real mismatch gives p-values far below the threshold and still warns.

Cells with no treated or no control user get null statistics (counts still shown).

:func:`campaign_sample_ratio` runs the same check once per campaign over all its cells: a campaign delivered without
its holdout (no control row at all) splits into cells too small to warn one by one, but not in total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

KEYS = ("campaign_id", "action_id", "segment_id")
TREATMENT, CONTROL = "treatment", "control"
SMALL_EXPECTED = 5  # the classic rule for the chi-square approximation of a 2x2 table
SRM_THRESHOLD = 0.001  # the common sample-ratio-mismatch threshold: p below this means the split is broken

LIFT_COLUMNS = (
    *KEYS, "n_treated", "n_control", "conversions_treated", "conversions_control",
    "conv_rate_treated", "conv_rate_control", "revenue_per_user_treated", "revenue_per_user_control",
    "abs_lift", "abs_lift_ci_low", "abs_lift_ci_high", "rel_lift", "rel_lift_ci_low", "rel_lift_ci_high", "p_value",
    "conversion_test",
    "revenue_abs_lift", "revenue_abs_lift_ci_low", "revenue_abs_lift_ci_high", "revenue_rel_lift",
    "revenue_rel_lift_ci_low", "revenue_rel_lift_ci_high", "revenue_p_value",
    "mde_abs", "planned_control_share", "srm_p_value", "srm_p_holm", "srm_warning",
)


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of treated/control counts against the planned control share."""

    n_treated: int
    n_control: int
    planned_control_share: float
    chi2: float
    p_value: float
    warning: bool  # p_value < threshold: the split is broken, do not trust the cell's lift


def sample_ratio_mismatch(n_treated: int, n_control: int, planned_control_share: float,
                          threshold: float = SRM_THRESHOLD) -> SampleRatioCheck:
    """Sample-ratio-mismatch check: chi-square (1 df) of the counts against the planned split.

    ``planned_control_share`` is the share of users the campaign meant to hold out (0 <= share < 1; 0: none, when
    any held-out user is a mismatch, p 0, and none is p 1).
    ``warning`` is True when the p-value is below ``threshold`` (0.001 by default, as is usual for SRM: the
    check runs on every cell, and a real mismatch gives p-values far below that).
    """
    if not 0.0 <= planned_control_share < 1.0:
        raise ValueError(f"planned_control_share must be in [0, 1), got {planned_control_share}")
    n = n_treated + n_control
    if n == 0:
        return SampleRatioCheck(0, 0, planned_control_share, math.nan, math.nan, False)
    if planned_control_share == 0.0:  # no chi-square with an expected count of 0: held-out users are off plan or not
        p = 0.0 if n_control else 1.0
        return SampleRatioCheck(int(n_treated), int(n_control), 0.0, math.nan, p, bool(p < threshold))
    expected = np.array([n * (1 - planned_control_share), n * planned_control_share])
    from scipy import stats  # here: loading the code location must not import SciPy

    chi2, p = stats.chisquare([n_treated, n_control], expected)
    return SampleRatioCheck(int(n_treated), int(n_control), float(planned_control_share), float(chi2), float(p),
                            bool(p < threshold))


def minimum_detectable_effect(n_treated: int, n_control: int, control_rate: float, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest absolute conversion lift (rate_t - rate_c > 0) detectable with this sample size.

    Two-sided test at ``alpha`` with ``power``: Cohen's h solved by ``NormalIndPower`` for ``nobs1 =
    n_treated`` and ``ratio = n_control / n_treated``, then mapped back to rates through the arcsine
    transform at the control rate: ``rate_t = sin(asin(sqrt(rate_c)) + h / 2) ** 2`` (capped at 1).
    """
    from statsmodels.stats.power import NormalIndPower

    if n_treated <= 0 or n_control <= 0 or not math.isfinite(control_rate) or control_rate >= 1.0:
        return math.nan  # every held-out user converted: no higher rate to detect
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n_treated, alpha=alpha, power=power,
                                     ratio=n_control / n_treated, alternative="two-sided")
    phi = math.asin(math.sqrt(min(max(control_rate, 0.0), 1.0))) + float(h) / 2
    return (1.0 if phi >= math.pi / 2 else math.sin(phi) ** 2) - control_rate


def is_small(x_t: int, n_t: int, x_c: int, n_c: int) -> bool:
    """An expected count of the 2x2 table under ``SMALL_EXPECTED``: the chi-square approximation does not hold. A cell
    where nobody (or everybody) converted is none: there is nothing to test (p 1)."""
    n, x = n_t + n_c, x_t + x_c
    return 0 < x < n and min(n_t * x, n_t * (n - x), n_c * x, n_c * (n - x)) < SMALL_EXPECTED * n


def _conversion_stats(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float) -> dict[str, float | str | None]:
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    out: dict[str, float | str | None] = dict.fromkeys(("abs_lift", "abs_lift_ci_low", "abs_lift_ci_high", "rel_lift",
                                                        "rel_lift_ci_low", "rel_lift_ci_high", "p_value", "conversion_test"))
    if n_t == 0 or n_c == 0:
        return out
    p_t, p_c = x_t / n_t, x_c / n_c
    small = is_small(x_t, n_t, x_c, n_c)
    out["conversion_test"] = "exact" if small else "score"
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="agresti-caffo" if small else "newcomb",
                                           compare="diff", alpha=alpha)
    low, high = max(float(low), -1.0), min(float(high), 1.0)  # Agresti-Caffo's added counts can step past a rate's range
    out.update(abs_lift=p_t - p_c, abs_lift_ci_low=float(low), abs_lift_ci_high=float(high))
    if x_c > 0:
        out["rel_lift"] = p_t / p_c - 1
    if 0 < x_c < n_c and x_t < n_t:  # a group where everyone converted adds no variance to the log ratio: the interval
        # of 50/100 vs 5/5 read "-39 % to -59 %" beside p 0.058, of 19,999/20,000 vs 2/2 +-0.0001 (a reviewer's)
        low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="log-adjusted", compare="ratio", alpha=alpha)
        # nobody treated converted: the method's added half count lifts the bound off -1, which rel_lift then is
        out.update(rel_lift_ci_low=-1.0 if x_t == 0 else float(low) - 1, rel_lift_ci_high=float(high) - 1)
    if small:
        from scipy.stats import fisher_exact

        out["p_value"] = float(fisher_exact([[x_t, n_t - x_t], [x_c, n_c - x_c]]).pvalue)
    elif 0 < x_t + x_c < n_t + n_c:  # the test is undefined when every user (or none) converted
        out["p_value"] = float(test_proportions_2indep(x_t, n_t, x_c, n_c, method="score", compare="diff",
                                                       correction=False).pvalue)
    else:
        out["p_value"] = 1.0
    return out


def _revenue_stats(m_t: float, v_t: float, n_t: int, m_c: float, v_c: float, n_c: int, alpha: float) -> dict[str, float | None]:
    """Welch interval and test for the difference of means, delta-method interval for the ratio."""
    from scipy import stats

    out: dict[str, float | None] = dict.fromkeys(("revenue_abs_lift", "revenue_abs_lift_ci_low", "revenue_abs_lift_ci_high",
                                                  "revenue_rel_lift", "revenue_rel_lift_ci_low", "revenue_rel_lift_ci_high",
                                                  "revenue_p_value"))
    if n_t == 0 or n_c == 0:
        return out
    diff = m_t - m_c
    out["revenue_abs_lift"] = diff
    if n_t < 2 or n_c < 2:
        return out
    a, b = v_t / n_t, v_c / n_c
    se = math.sqrt(a + b)
    if se > 0:  # no spread in either group (no revenue at all, say): no interval, not a certain [0, 0] from 4 users
        welch = stats.ttest_ind_from_stats(m_t, math.sqrt(v_t), n_t, m_c, math.sqrt(v_c), n_c, equal_var=False)
        dof = (a + b) ** 2 / (a * a / (n_t - 1) + b * b / (n_c - 1))  # Welch's, for the interval: scipy does not return it
        q = stats.t.ppf(1 - alpha / 2, dof)
        out.update(revenue_abs_lift_ci_low=diff - q * se, revenue_abs_lift_ci_high=diff + q * se,
                   revenue_p_value=float(welch.pvalue))
    if m_t > 0 and m_c > 0:
        out["revenue_rel_lift"] = m_t / m_c - 1
        se_log = math.sqrt(v_t / (n_t * m_t * m_t) + v_c / (n_c * m_c * m_c))
        if se_log > 0:  # as above: no spread, no interval
            z = stats.norm.ppf(1 - alpha / 2)
            log_ratio = math.log(m_t / m_c)
            out.update(revenue_rel_lift_ci_low=math.exp(log_ratio - z * se_log) - 1,
                       revenue_rel_lift_ci_high=math.exp(log_ratio + z * se_log) - 1)
    return out


def campaign_lift(frame, planned_control_share: float | Mapping[str, float] = 0.5, alpha: float = 0.05,
                  power: float = 0.8, srm_threshold: float = SRM_THRESHOLD) -> pl.DataFrame:
    """One row per campaign x action x segment: lift of treatment over control (see the module doc).

    ``frame``: a polars frame with the columns of the module doc (one row per user and campaign).
    ``planned_control_share``: the control share each campaign planned (one float for all campaigns, or a
    mapping campaign_id -> share; a campaign missing from the mapping gets 0.5). Rows whose ``group`` is
    neither ``treatment`` nor ``control`` are an error, as is a user counted twice in one cell.
    """
    missing = [c for c in (*KEYS, "user_id", "group", "converted", "revenue") if c not in frame.columns]
    if missing:
        raise ValueError(f"campaign_lift: missing column(s) {missing}")
    bad = frame.filter(~pl.col("group").is_in([TREATMENT, CONTROL]))
    if bad.height:
        raise ValueError(f"campaign_lift: group must be 'treatment' or 'control', found {bad['group'].unique().to_list()[:5]}")
    dup = frame.group_by([*KEYS, "user_id"]).len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"campaign_lift: {dup.height} user(s) appear more than once in a campaign x action x segment cell")
    frame = frame.with_columns(pl.col("converted").cast(pl.Boolean).fill_null(False).cast(pl.Int64),
                         pl.col("revenue").cast(pl.Float64).fill_null(0.0))
    agg = (frame.group_by([*KEYS, "group"])
           .agg(n=pl.len(), x=pl.col("converted").sum(), rev_mean=pl.col("revenue").mean(),
                rev_var=pl.col("revenue").var(ddof=1))
           .sort([*KEYS, "group"]))
    cells: dict[tuple, dict[str, dict]] = {}
    for row in agg.iter_rows(named=True):
        cells.setdefault(tuple(row[k] for k in KEYS), {})[row["group"]] = row
    empty = {"n": 0, "x": 0, "rev_mean": None, "rev_var": None}
    out: list[dict] = []
    for key, groups in cells.items():
        t, c = groups.get(TREATMENT, empty), groups.get(CONTROL, empty)
        n_t, n_c, x_t, x_c = int(t["n"]), int(c["n"]), int(t["x"]), int(c["x"])
        share = (planned_control_share.get(key[0], 0.5) if isinstance(planned_control_share, Mapping)
                 else planned_control_share)
        rate_c = x_c / n_c if n_c else None
        row = dict(zip(KEYS, key))
        row.update(n_treated=n_t, n_control=n_c, conversions_treated=x_t, conversions_control=x_c,
                   conv_rate_treated=x_t / n_t if n_t else None, conv_rate_control=rate_c,
                   revenue_per_user_treated=t["rev_mean"], revenue_per_user_control=c["rev_mean"])
        with np.errstate(divide="ignore", invalid="ignore"):  # statsmodels computes a ratio even when it is not asked for
            row.update(_conversion_stats(x_t, n_t, x_c, n_c, alpha))
        row.update(_revenue_stats(t["rev_mean"] or 0.0, t["rev_var"] or 0.0, n_t, c["rev_mean"] or 0.0,
                                  c["rev_var"] or 0.0, n_c, alpha))
        mde = minimum_detectable_effect(n_t, n_c, rate_c, alpha, power) if rate_c is not None else math.nan
        row["mde_abs"] = None if math.isnan(mde) else mde
        srm = sample_ratio_mismatch(n_t, n_c, share, srm_threshold)
        row.update(planned_control_share=float(share), srm_p_value=None if math.isnan(srm.p_value) else srm.p_value,
                   srm_warning=srm.warning)
        out.append(row)
    schema = {k: pl.Utf8 for k in KEYS} | {c: pl.Float64 for c in LIFT_COLUMNS if c not in KEYS}
    schema |= {c: pl.Int64 for c in ("n_treated", "n_control", "conversions_treated", "conversions_control")}
    schema |= {"srm_warning": pl.Boolean, "conversion_test": pl.Utf8}
    _holm(out, srm_threshold)  # over the table's cells: the family-wise chance of a false warning stays below the threshold
    for k in KEYS:  # keep the caller's key types (segment ids are integers elsewhere in the project)
        schema[k] = frame.schema[k]
    return pl.DataFrame(out, schema=schema).select(LIFT_COLUMNS).sort(list(KEYS))


CAMPAIGN_SRM_COLUMNS = ("campaign_id", "n_treated", "n_control", "planned_control_share", "srm_p_value", "srm_p_holm",
                        "srm_warning")


def campaign_sample_ratio(lift: pl.DataFrame, srm_threshold: float = SRM_THRESHOLD) -> pl.DataFrame:
    """One row per campaign of a :func:`campaign_lift` table: its treated and control counts summed over its cells,
    tested against its planned share as one split (Holm over the campaigns). Why per campaign too: the cells of a
    campaign sent with no control row are each tested on a few hundred users and Holm-adjusted over the whole table,
    so small cells pass; the campaign's total cannot."""
    totals = (lift.group_by("campaign_id", maintain_order=True)
              .agg(pl.col("n_treated").sum(), pl.col("n_control").sum(), pl.col("planned_control_share").first())
              .sort("campaign_id"))
    rows = []
    for campaign, n_t, n_c, share in totals.select("campaign_id", "n_treated", "n_control", "planned_control_share").rows():
        srm = sample_ratio_mismatch(int(n_t), int(n_c), float(share), srm_threshold)
        rows.append({"campaign_id": campaign, "n_treated": int(n_t), "n_control": int(n_c),
                     "planned_control_share": float(share),
                     "srm_p_value": None if math.isnan(srm.p_value) else srm.p_value, "srm_warning": srm.warning})
    _holm(rows, srm_threshold)
    schema = {"campaign_id": lift.schema["campaign_id"], "n_treated": pl.Int64, "n_control": pl.Int64,
              "planned_control_share": pl.Float64, "srm_p_value": pl.Float64, "srm_p_holm": pl.Float64,
              "srm_warning": pl.Boolean}
    return pl.DataFrame(rows, schema=schema).select(CAMPAIGN_SRM_COLUMNS)


def _holm(rows: list[dict], threshold: float) -> None:
    """Sets ``srm_p_holm`` and ``srm_warning`` of each row from the Holm adjustment of the rows' ``srm_p_value``
    (rows without one keep their warning, p null)."""
    tested = [r for r in rows if r["srm_p_value"] is not None]
    if tested:
        from statsmodels.stats.multitest import multipletests

        reject, adjusted, _, _ = multipletests([r["srm_p_value"] for r in tested], alpha=threshold, method="holm")
        for r, rej, adj in zip(tested, reject, adjusted, strict=True):
            r.update(srm_p_holm=float(adj), srm_warning=bool(rej))
    for r in rows:
        r.setdefault("srm_p_holm", None)
