"""Off-policy evaluation: a new policy's value from logged sends, before it is promoted.

Logs: one row per send with the logged action (an index into the action list), the reward and the
logging propensity (the probability with which the policy in service chose that action, as
``next_best_action`` logs it). A target policy is given as its probability of each action for each
logged row (an (n, k) matrix: ``ThompsonPolicy.action_probabilities`` or ``ContextualPolicy.action_probabilities``).

Estimators (per-row terms, so that the bootstrap and paired differences are cheap):

* IPS: mean of ``w * r`` with ``w = pi(a_i | x_i) / p_i``; unbiased when every action the target
  policy can take had a positive logging propensity;
* SNIPS (self-normalized IPS): ``sum(w * r) / sum(w)``: a little biased, much less variance;
* DR (doubly robust): mean of ``sum_a pi(a | x_i) q(x_i, a) + w * (r - q(x_i, a_i))`` with a reward model
  ``q``; :func:`cell_reward_model` gives a cross-fitted per-(key, action) mean (shrunk to the action's mean).

Each estimate has a seeded percentile-bootstrap 95 % interval over rows (``n_boot`` resamples). The
candidate and the policy in service are compared on the same resamples, so the interval of their
difference is paired. :func:`promote` applies the segment model's gate rule (segmentation/gate.py): the
candidate replaces the policy in service unless it is worse by more than a tolerance.

Evaluate a candidate on sends it was not fitted on (a later period, or a held-out share of the sends):
evaluated on its own training data a learned policy looks better than it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from seg_assets.markdown import percent

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its bootstrap interval."""

    policy: str
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float  # effective sample size of the importance weights, (sum w)^2 / sum w^2: small = unreliable


def _check(reward, propensity, target_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, p, t = (np.asarray(x, dtype=float) for x in (reward, propensity, target_prob))
    if not (r.shape == p.shape == t.shape and r.ndim == 1):
        raise ValueError(f"reward, propensity and target probability must be 1-d of one length, got {r.shape}, {p.shape}, {t.shape}")
    if len(p) and (not np.all(p > 0) or not np.all(p <= 1)):
        raise ValueError("logging propensities must be in (0, 1]")
    if len(t) and (np.any(t < 0) or np.any(t > 1)):
        raise ValueError("target probabilities must be in [0, 1]")
    return r, p, t


def _ess(w: np.ndarray) -> float:
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0


def _boot_indices(n: int, n_boot: int, seed: int, chunk: int = 200):
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(m, n))
        done += m


def _bootstrap(num: np.ndarray, den: np.ndarray | None, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of sum(num) / sum(den) (den None: the mean of num)."""
    reps = []
    for idx in _boot_indices(len(num), n_boot, seed):
        top = num[idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # a replicate without weight is NaN, dropped by _interval
            reps.append(top / (den[idx].sum(axis=1) if den is not None else len(num)))
    return np.concatenate(reps)


def _interval(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _terms(estimator: str, r: np.ndarray, p: np.ndarray, t: np.ndarray, direct: np.ndarray | None,
           q_logged: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row numerator (and denominator for SNIPS) of an estimator."""
    w = t / p
    if estimator == "ips":
        return w * r, None
    if estimator == "snips":
        return w * r, w
    if estimator == "dr":
        if direct is None or q_logged is None:
            raise ValueError("dr needs a reward model (target_dist, action_index and q_hat)")
        return direct + w * (r - q_logged), None
    raise ValueError(f"unknown estimator {estimator!r}; one of {ESTIMATORS}")


def estimate(reward, propensity, target_prob, *, estimator: str = "snips", policy: str = "target",
             target_dist: np.ndarray | None = None, action_index=None, q_hat: np.ndarray | None = None,
             n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """Value of a target policy from logs, with a bootstrap (1 - alpha) interval.

    ``reward``, ``propensity`` (logging policy's probability of the logged action) and ``target_prob``
    (the target policy's probability of the logged action) are 1-d arrays of one length. DR also needs
    ``target_dist`` (n, k), ``action_index`` (n,) and ``q_hat`` (n, k) predicted rewards.
    """
    r, p, t = _check(reward, propensity, target_prob)
    n = len(r)
    if n == 0:
        return Estimate(policy, estimator, math.nan, math.nan, math.nan, 0, 0.0)
    direct = q_logged = None
    if estimator == "dr":
        if target_dist is None or action_index is None or q_hat is None:
            raise ValueError("dr needs target_dist, action_index and q_hat")
        a = np.asarray(action_index, dtype=np.int64)
        direct = (np.asarray(target_dist, float) * np.asarray(q_hat, float)).sum(axis=1)
        q_logged = np.asarray(q_hat, float)[np.arange(n), a]
    num, den = _terms(estimator, r, p, t, direct, q_logged)
    value = float(num.sum() / den.sum()) if den is not None else float(num.mean())
    if den is not None and den.sum() == 0:
        value = math.nan
    lo, hi = _interval(_bootstrap(num, den, n_boot, seed), alpha)
    return Estimate(policy, estimator, value, lo, hi, n, _ess(t / p))


def ips(reward, propensity, target_prob, **kw) -> Estimate:
    """Inverse propensity scoring (see :func:`estimate`)."""
    return estimate(reward, propensity, target_prob, estimator="ips", **kw)


def snips(reward, propensity, target_prob, **kw) -> Estimate:
    """Self-normalized inverse propensity scoring (see :func:`estimate`)."""
    return estimate(reward, propensity, target_prob, estimator="snips", **kw)


def dr(reward, propensity, target_dist, action_index, q_hat, **kw) -> Estimate:
    """Doubly robust estimate (see :func:`estimate`); ``target_dist`` (n, k), ``q_hat`` (n, k)."""
    a = np.asarray(action_index, dtype=np.int64)
    t = np.asarray(target_dist, float)[np.arange(len(a)), a]
    return estimate(reward, propensity, t, estimator="dr", target_dist=target_dist, action_index=a, q_hat=q_hat, **kw)


def cell_reward_model(keys: Sequence, action_index, reward, n_actions: int, *, folds: int = 2, prior_strength: float = 20.0,
                      seed: int = 0) -> np.ndarray:
    """Cross-fitted (n, k) reward predictions: the mean reward of each (key, action) cell on the other folds,
    shrunk towards that action's mean with ``prior_strength`` pseudo-sends (an empty cell gets the action's
    mean, an action never logged the overall mean). ``keys``: e.g. the segment of each logged row."""
    a = np.asarray(action_index, dtype=np.int64)
    r = np.asarray(reward, dtype=float)
    n = len(a)
    codes = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)[1] if n else np.zeros(0, np.int64)
    n_keys = int(codes.max()) + 1 if n else 0
    fold = np.random.default_rng(seed).integers(0, max(folds, 1), n) if folds > 1 else np.zeros(n, np.int64)
    q = np.zeros((n, n_actions))
    for f in range(max(folds, 1)):
        train = fold != f if folds > 1 else np.ones(n, bool)
        test = fold == f
        overall = r[train].mean() if train.any() else 0.0
        sa = np.bincount(a[train], weights=r[train], minlength=n_actions)
        na = np.bincount(a[train], minlength=n_actions)
        action_mean = np.where(na > 0, sa / np.maximum(na, 1), overall)
        cell = codes[train] * n_actions + a[train]
        sc = np.bincount(cell, weights=r[train], minlength=n_keys * n_actions).reshape(n_keys, n_actions)
        nc = np.bincount(cell, minlength=n_keys * n_actions).reshape(n_keys, n_actions)
        shrunk = (sc + prior_strength * action_mean) / (nc + prior_strength)
        q[test] = shrunk[codes[test]]
    return q


@dataclass(frozen=True)
class Evaluation:
    """:func:`evaluate_candidates`' result: every policy's estimates, and the paired difference that the gate reads."""

    table: pl.DataFrame  # policy, estimator, value, ci_low, ci_high, n, ess
    candidate: Estimate  # with the primary estimator
    in_service: Estimate
    uniform: Estimate
    best_single_action: Estimate  # the best fixed action (its index in ``best_action``); chosen on these logs, so optimistic
    best_action: int
    difference: Estimate  # candidate - in service on the same bootstrap resamples (primary estimator)
    primary: str = "snips"
    notes: tuple[str, ...] = field(default_factory=tuple)


def _logs_arrays(logs, n_actions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("action", "reward", "propensity") if c not in logs.columns]
    if missing:
        raise ValueError(f"logs need columns action (index 0..n_actions-1), reward, propensity; missing {missing}")
    a = logs["action"].cast(pl.Int64).to_numpy()
    if len(a) and (a.min() < 0 or a.max() >= n_actions):
        raise ValueError(f"logged action indices must be in 0..{n_actions - 1}")
    return a, logs["reward"].cast(pl.Float64).to_numpy(), logs["propensity"].cast(pl.Float64).to_numpy()


def evaluate_candidates(logs, candidate: np.ndarray, in_service: np.ndarray | None, n_actions: int, *,
                        eligible: np.ndarray | None = None, q_hat: np.ndarray | None = None, primary: str = "snips",
                        n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Evaluation:
    """Estimate the candidate's value against the policy in service, uniform random and the best single action.

    ``logs``: frame with ``action`` (index 0..n_actions-1 into the action list the policies use), ``reward``
    and ``propensity`` (logging policy). ``candidate`` / ``in_service``: (n, n_actions) action probabilities
    of each policy for each logged row; ``in_service=None`` means the policy that logged the sends (its value
    is then the observed mean reward, on-policy). ``eligible``: optional (n, n_actions) bool mask; uniform
    random then picks among the eligible actions. ``q_hat``: (n, n_actions) reward predictions; when given,
    DR estimates are added (and ``primary="dr"`` may be used). Every estimate uses the same bootstrap
    resamples (``seed``), so the candidate - in-service interval is paired.
    """
    a, r, p = _logs_arrays(logs, n_actions)
    n = len(a)
    rows = np.arange(n)
    mask = np.ones((n, n_actions), bool) if eligible is None else np.asarray(eligible, bool)
    uniform = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    policies: dict[str, np.ndarray] = {"candidate": np.asarray(candidate, float), "uniform_random": uniform}
    if in_service is not None:
        policies["in_service"] = np.asarray(in_service, float)
    for k in range(n_actions):
        single = np.zeros((n, n_actions))
        single[:, k] = 1.0
        policies[f"action_{k}"] = single
    for name, dist in policies.items():
        if dist.shape != (n, n_actions):
            raise ValueError(f"{name}: expected an ({n}, {n_actions}) probability matrix, got {dist.shape}")
    estimators = ["ips", "snips"] + (["dr"] if q_hat is not None else [])
    if primary not in estimators:
        raise ValueError(f"primary estimator {primary!r} not available (have {estimators})")
    q_logged = np.asarray(q_hat, float)[rows, a] if q_hat is not None else None

    def terms(dist: np.ndarray, est: str):
        t = dist[rows, a]
        direct = (dist * q_hat).sum(axis=1) if q_hat is not None else None
        return _terms(est, r, p, t, direct, q_logged), t

    estimates: dict[tuple[str, str], Estimate] = {}
    for name, dist in policies.items():
        for est in estimators:
            (num, den), t = terms(dist, est)
            value = float(num.sum() / den.sum()) if den is not None and den.sum() > 0 else (
                math.nan if den is not None else float(num.mean()) if n else math.nan)
            lo, hi = _interval(_bootstrap(num, den, n_boot, seed), alpha) if n else (math.nan, math.nan)
            estimates[(name, est)] = Estimate(name, est, value, lo, hi, n, _ess(t / p))
    if in_service is None:  # on-policy: the observed mean reward of the logs
        lo, hi = _interval(_bootstrap(r, None, n_boot, seed), alpha) if n else (math.nan, math.nan)
        for est in estimators:
            estimates[("in_service", est)] = Estimate("in_service", "on_policy", float(r.mean()) if n else math.nan, lo, hi, n, float(n))
    best = max(range(n_actions), key=lambda k: -math.inf if math.isnan(estimates[(f"action_{k}", primary)].value)
               else estimates[(f"action_{k}", primary)].value)
    # paired difference candidate - in service, primary estimator, same resamples
    (c_num, c_den), _ = terms(policies["candidate"], primary)
    if in_service is None:
        s_num, s_den = r, None
    else:
        (s_num, s_den), _ = terms(policies["in_service"], primary)
    diffs = []
    for idx in _boot_indices(n, n_boot, seed) if n else []:
        c = c_num[idx].sum(1) / (c_den[idx].sum(1) if c_den is not None else n)
        s = s_num[idx].sum(1) / (s_den[idx].sum(1) if s_den is not None else n)
        diffs.append(c - s)
    cand, serv = estimates[("candidate", primary)], estimates[("in_service", primary)]
    lo, hi = _interval(np.concatenate(diffs), alpha) if diffs else (math.nan, math.nan)
    difference = Estimate("candidate - in_service", primary, cand.value - serv.value, lo, hi, n, cand.ess)
    notes = []
    if n and cand.ess < 0.05 * n:
        notes.append(f"candidate's effective sample size {cand.ess:.0f} of {n} sends: its estimate rests on few sends")
    # a campaign that sent one action to everyone logs propensity 1: no support for any other action, so IPS counts
    # every policy that would choose otherwise there as earning nothing (a tester's: uniform random 0.077 against 0.133)
    if forced := int(np.sum((p >= 0.999) & (mask.sum(axis=1) > 1))):
        notes.append(f"{forced} of {n} held-out sends were logged with propensity 1 although other actions were "
                     f"eligible (a campaign of one action): IPS counts them as lost to any policy choosing otherwise; "
                     f"the gate's {primary.upper()} is less affected; send campaigns through the policy to judge it well")
    table = pl.DataFrame([{"policy": e.policy, "estimator": e.estimator, "value": e.value, "ci_low": e.ci_low,
                           "ci_high": e.ci_high, "n": e.n, "ess": e.ess} for (name, _), e in estimates.items()],
                         schema={"policy": pl.Utf8, "estimator": pl.Utf8, "value": pl.Float64, "ci_low": pl.Float64,
                                 "ci_high": pl.Float64, "n": pl.Int64, "ess": pl.Float64}).unique(maintain_order=True)
    return Evaluation(table, cand, serv, estimates[("uniform_random", primary)], estimates[(f"action_{best}", primary)], best,
                      difference, primary, tuple(notes))


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    delta: float | None = None  # candidate - in service (better > 0)


PROMOTION_TOLERANCE = 0.05  # a candidate worse than the policy in service by more than this share of its value: refused


def promote(candidate_estimate: Estimate, in_service_estimate: Estimate | None, tolerance: float = PROMOTION_TOLERANCE,
            difference: Estimate | None = None, fit_conversions: int | None = None,
            holdout_conversions: int | None = None) -> PromotionDecision:
    """The segment model's gate rule applied to policy value: promote unless the candidate is worse.

    Promote when nothing is in service; refuse when the candidate's value is below the in-service value by
    more than ``tolerance`` x the in-service value (relative, default 5 %: reward rates are small numbers,
    an absolute tolerance would mean nothing across campaigns), or when the paired ``difference`` interval
    (``Evaluation.difference``) lies wholly below zero (worse beyond noise). An estimate that is not a
    finite number is refused. While a policy is in service, so is a candidate fitted on sends without one conversion
    (``fit_conversions`` 0: it learned nothing) or judged on held-out sends without one (``holdout_conversions`` 0:
    they cannot tell the two apart); "0.0000 vs 0.0000" swapped policies on a tester's thin shop.
    """
    c = candidate_estimate.value
    if fit_conversions == 0 and in_service_estimate is not None:
        return PromotionDecision(False, "the candidate was fitted on sends without a conversion: it learned nothing")
    if holdout_conversions == 0 and in_service_estimate is not None:
        return PromotionDecision(False, "the held-out sends have no conversion: they cannot tell the candidate from the "
                                        "policy in service")
    if not math.isfinite(c):
        return PromotionDecision(False, f"candidate value is not a number ({c}): nothing to compare")
    if in_service_estimate is None:
        return PromotionDecision(True, "no policy in service")
    s = in_service_estimate.value
    if not math.isfinite(s):
        return PromotionDecision(True, "in-service value is not a number; promoting", None)
    delta = c - s
    allowed = tolerance * abs(s)
    if delta < -allowed:
        return PromotionDecision(False, f"worse than the policy in service: {c:.4f} vs {s:.4f} "
                                        f"(worse by {-delta:.4f} > tolerance {allowed:.4f})", delta)
    if difference is not None and math.isfinite(difference.ci_high) and difference.ci_high < 0:
        return PromotionDecision(False, f"worse than the policy in service beyond noise: difference {delta:.4f}, "
                                        f"95 % interval [{difference.ci_low:.4f}, {difference.ci_high:.4f}] below 0", delta)
    return PromotionDecision(True, f"not worse than the policy in service (tolerance {percent(tolerance)}): "
                                   f"{c:.4f} vs {s:.4f} ({'+' if delta >= 0 else ''}{delta:.4f})", delta)
