"""Next best action from the user's context: Thompson sampling on a per-action reward model, with exact propensities.

Why: segments mix shopper types that want different actions, so a per-segment policy is capped by the
segmentation (docs/activation.md, "How good is the policy"); the user's own history as of the send
(context.py) tells them apart. Fit (:func:`fit_contextual_policy`): contexts of the treated sends at their
``sent_ts``, standardized (mean and scale of the fitted sends) with a constant column, and per action either

* ``model="logistic"`` (the default): an L2-penalised logistic regression of the 0/1 conversion (penalty
  ``l2_lambda``, chosen by cross-validation unless given: :func:`choose_l2`), its
  posterior the Laplace approximation ``N(beta, A^-1)``, ``A`` the penalised log-likelihood's Hessian (Chapelle and
  Li, 2011); scores ``x . beta`` are log-odds, ``expected`` their logistic transform. Conversions are rare 0/1
  outcomes whose base rate differs several-fold between shoppers: the logistic model fits that with fewer wrong
  turns than a straight line (docs/activation.md: +0.00-0.06 of the gap). The pipeline gives each send its
  campaign's control log-odds as an offset, so actions sent when normal buying was lower are not judged worse for it
  (policies.control_baselines);
* ``model="linear"``: one ridge regression, fitted by mabwiser's ``LinTS`` (``A = l2_lambda I + X'X``,
  ``beta = A^-1 X'y``), the model before; states saved by it (no ``link``) load as such.

Choose: Thompson sampling scores an action for a context ``x`` as ``x . b`` with ``b ~ N(beta, alpha^2 A^-1)``, i.e. a normal
with mean ``x . beta`` and standard deviation ``alpha sqrt(x' A^-1 x)``, independently per action. The probability
that each eligible action wins that draw is computed per user by Gauss-Hermite quadrature
(``P(a) = E[prod_{b != a} Phi((S_a - mu_b) / sd_b)]``, S_a the normal score of a), the action is drawn from those
probabilities and the chosen one's probability is the logged ``propensity``: what LinTS does, with the exact
(not Monte Carlo) chance of each action, which off-policy evaluation of the next round needs. The draws are
independent across actions, as in LinTS with one model per action (Agrawal and Goyal, 2013); mabwiser's own
``predict`` draws every action's coefficients from copies of one random state (its ``_Linear.fit`` deep-copies the
model, generator included), so its arms share the same standard-normal draw: mabwiser is used to fit, not to choose. ``epsilon`` mixes in
a uniform share over the eligible actions (the pipeline's floor, NextBestActionConfig.explore_floor). ``expected_reward`` is the
chosen action's estimated conversion probability (:meth:`ContextualPolicy.expected`: ``sigmoid(x . beta + offset)``
for the logistic model, ``x . beta`` for the linear one); ``explore`` marks a chosen action whose estimate is below
the highest (one tied for the highest is no exploring).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from seg_assets.activation.context import CONTEXT_FEATURES
from seg_assets.activation.policy import NBA_COLUMNS, ThompsonPolicy, _seed_for, check_epsilon, mix_uniform, policy_from_state

KIND = "lints"
ALPHA_LINEAR = 0.1  # posterior scale of the linear model (mabwiser LinTS)
# The logistic model's L2 penalty is chosen per fit among L2_GRID by CV_FOLDS-fold cross-validation (choose_l2)
L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
CV_FOLDS = 5
CV_MAX_SENDS = 20_000
ALPHA_LOGISTIC = 0.1  # posterior scale of the logistic model (Laplace posterior): 3-7 % of users explored on the demo
# rates, 0.8 % on a tester's loop, hence the pipeline's exploration floor (docs/activation.md)


def _quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights: E[f(Z)], Z ~ N(0, 1) = sum(w f(node)). SciPy is imported here, by the step
    that scores, not when the code location loads."""
    from scipy.special import roots_hermitenorm

    nodes, weights = roots_hermitenorm(48)
    return nodes, weights / weights.sum()


@dataclass
class ContextualPolicy:
    """A fitted LinTS policy: per action ``beta`` (d + 1) and ``a_inv`` (d + 1 x d + 1) on standardized contexts."""

    arms: tuple[str, ...]
    features: tuple[str, ...]  # CONTEXT_FEATURES
    segments: tuple  # the segment ids seen in the fitted sends: one indicator column each
    mean: np.ndarray
    scale: np.ndarray
    beta: np.ndarray  # (k, d + 1), last coefficient the constant
    a_inv: np.ndarray  # (k, d + 1, d + 1)
    alpha: float = 0.25
    seed: int = 0
    epsilon: float = 0.0
    policy_version: str = ""
    link: str = "identity"  # "logit": beta are logistic-regression coefficients (scores on the log-odds scale)
    offset: float = 0.0  # logit: the latest campaign's control log-odds, the baseline the expected rewards are at
    l2_lambda: float | None = None  # logit: the penalty the fit chose (choose_l2); saved states before it have none

    def _design(self, x: np.ndarray, segment_ids: Sequence) -> np.ndarray:
        return _design(np.asarray(x, float).reshape(-1, len(self.features)), segment_ids, self.segments, self.mean, self.scale)

    def expected(self, x: np.ndarray, segment_ids: Sequence) -> np.ndarray:
        """(n, k) estimates of every action's conversion probability: ``x . beta`` (linear), or its logistic
        transform (``link`` "logit"). Either is increasing in ``x . beta``, the score the choice compares."""
        score = self._design(x, segment_ids) @ self.beta.T
        return 1.0 / (1.0 + np.exp(-(score + self.offset))) if self.link == "logit" else score

    def action_probabilities(self, x: np.ndarray, segment_ids: Sequence,
                             eligible: Sequence[Sequence[str] | None] | None = None, chunk: int = 20_000) -> np.ndarray:
        """(n, k) probability of each action being chosen for each row (context ``x``, segment; 0 for ineligible actions)."""
        from scipy.special import ndtr

        nodes, weights = _quadrature()
        z_all = self._design(x, segment_ids)
        mask = _mask(self.arms, len(z_all), eligible)
        out = np.zeros((len(z_all), len(self.arms)))
        for lo in range(0, len(z_all), chunk):
            z = z_all[lo:lo + chunk]
            mu = z @ self.beta.T
            sd = np.maximum(self.alpha * np.sqrt(np.einsum("ni,kij,nj->nk", z, self.a_inv, z)), 1e-9)
            m = mask[lo:lo + chunk]
            win = np.zeros_like(mu)
            for a in range(len(self.arms)):
                s = mu[:, a, None] + sd[:, a, None] * nodes[None, :]  # (n, q) quadrature points of S_a
                cdf = ndtr((s[:, None, :] - mu[:, :, None]) / sd[:, :, None])  # (n, k, q)
                cdf = np.where(m[:, :, None], cdf, 1.0)
                cdf[:, a, :] = 1.0
                win[:, a] = np.where(m[:, a], cdf.prod(axis=1) @ weights, 0.0)
            total = win.sum(axis=1, keepdims=True)
            p = np.where(total > 0, win / np.where(total > 0, total, 1), 0.0)
            out[lo:lo + chunk] = mix_uniform(p, m, self.epsilon)
        return out

    def state(self) -> dict:
        """JSON-able fitted state; :func:`load_policy` rebuilds the policy (same choices)."""
        return {"kind": KIND, "arms": list(self.arms), "features": list(self.features), "segments": list(self.segments),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "beta": self.beta.tolist(), "a_inv": self.a_inv.tolist(),
                "alpha": self.alpha, "seed": self.seed, "epsilon": self.epsilon, "policy_version": self.policy_version,
                "link": self.link, **({"offset": self.offset} if self.offset else {}),
                **({"l2_lambda": self.l2_lambda} if self.l2_lambda is not None else {})}


def _mask(arms: Sequence[str], n: int, eligible) -> np.ndarray:
    if eligible is None:
        return np.ones((n, len(arms)), bool)
    return np.array([[e is None or a in e for a in arms] for e in eligible], dtype=bool).reshape(n, len(arms))


def _design(x: np.ndarray, segment_ids: Sequence, segments: Sequence, mean, scale) -> np.ndarray:
    """Standardized context, one indicator per fitted segment (a segment the fit never saw: none set), a constant."""
    seg = np.asarray(list(segment_ids), dtype=object)
    onehot = (seg[:, None] == np.asarray(list(segments), dtype=object)[None, :]).astype(float) if len(segments) else \
        np.zeros((len(x), 0))
    return np.column_stack([(x - mean) / scale, onehot.reshape(len(x), len(segments)), np.ones(len(x))])


def _rounded(value):
    """Floats to 9 decimals: two engines' contexts differ in the last bits (1e-16), their fits by 1e-13 (a relative
    rounding would split the near-zero entries of the posterior covariance)."""
    if isinstance(value, float):
        return round(value, 9) + 0.0  # + 0.0: -0.0 is 0.0
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _version(state: Mapping) -> str:
    """The policy's version, which also seeds its draws: the same on both engines for the same sends (the full
    floats made 9.5-16 % of users get another action on Spark than on DuckDB from the same data)."""
    payload = json.dumps(_rounded({k: v for k, v in state.items() if k != "policy_version"}), sort_keys=True)
    return "lints-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _logistic_arm(z: np.ndarray, y: np.ndarray, l2: float, offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One action's L2-penalised logistic regression (:func:`_penalised_logit`) and the Laplace approximation of its
    posterior: ``beta`` and ``A^-1`` = the inverse of the penalised log-likelihood's Hessian at ``beta`` (Chapelle and
    Li, 2011). ``offset``: each send's baseline log-odds (its campaign's control conversion), a term with coefficient
    1, so that ``beta`` measures the action against the control of its own campaign. An action whose sends all have
    one reward (or none) gets the constant only, at the smoothed rate (s + 0.5) / (n + 1)."""
    base = np.zeros(len(y)) if offset is None else np.asarray(offset, float)
    if len(np.unique(y)) == 2:
        beta = _penalised_logit(z, y, l2, base)
    else:
        rate = (y.sum() + 0.5) / (len(y) + 1)
        beta = np.zeros(z.shape[1])
        beta[-1] = np.log(rate / (1 - rate)) - (base.mean() if len(base) else 0.0)
    return beta, np.linalg.inv(_hessian(z, base, _penalty(z, l2), beta))


def _penalty(z: np.ndarray, l2: float) -> np.ndarray:
    return np.r_[np.full(z.shape[1] - 1, l2), 1e-6]  # the constant is not penalised: a tiny ridge keeps A invertible


def _hessian(z: np.ndarray, base: np.ndarray, penalty: np.ndarray, beta: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(z @ beta + base)))
    return (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)


def _penalised_logit(z: np.ndarray, y: np.ndarray, l2: float, base: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The coefficients minimising the logistic loss of ``y`` on ``z`` (offset ``base``) plus ``l2 / 2 |beta|^2`` (not
    on the constant, the last column), by Newton steps: SciPy's ``trust-exact`` on the exact gradient and Hessian,
    five or six iterations. scikit-learn's ``LogisticRegression`` takes no offset, and statsmodels' ``fit_regularized``
    (coordinate descent, used until 2026-12-06) took 3 s for six actions on 26k sends and stopped 1e-2 from the
    optimum: too slow for :func:`choose_l2`'s cross-validation."""
    from scipy.optimize import minimize

    penalty = _penalty(z, l2)

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        eta = z @ b + base
        return (float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * penalty @ (b * b)),
                z.T @ (1.0 / (1.0 + np.exp(-eta)) - y) + penalty * b)

    return minimize(loss, np.zeros(z.shape[1]) if start is None else start, jac=True,
                    hess=lambda b: _hessian(z, base, penalty, b), method="trust-exact", options={"gtol": 1e-8}).x


def choose_l2(z: np.ndarray, y: np.ndarray, actions: np.ndarray, arms: Sequence[str], offset: np.ndarray | None = None,
              *, grid: Sequence[float] = L2_GRID, folds: int = CV_FOLDS, max_sends: int = CV_MAX_SENDS,
              seed: int = 0) -> tuple[float, dict[float, float]]:
    """The penalty of :func:`_logistic_arm` with the smallest held-out log-loss, summed over the actions, in
    ``folds``-fold cross-validation on at most ``max_sends`` sends (a seeded sample); (penalty, loss per penalty).

    Why: how far to trust each action's coefficients depends on how many sends and conversions it has and how
    noisy they are. A fixed penalty of 1 closed 0.45-0.48 of the gap on a tester's six actions at 8,000 users,
    where 10-30 closes 0.51-0.58; on the demo rates 100 already costs 0.03-0.09 (docs/activation.md)."""
    rows = np.random.default_rng(seed).permutation(len(y))[:max_sends]
    fold = np.arange(len(rows)) % folds
    base = np.zeros(len(y)) if offset is None else np.asarray(offset, float)
    action = np.asarray(actions, dtype=object)[rows]
    losses = dict.fromkeys(map(float, grid), 0.0)
    for a in arms:
        mine = action == a
        for f in range(folds):
            train, test = rows[mine & (fold != f)], rows[mine & (fold == f)]
            if len(test) == 0:
                continue
            beta = None
            for l2 in losses:  # each penalty starts from the previous one's coefficients
                if len(np.unique(y[train])) == 2:
                    beta = _penalised_logit(z[train], y[train], l2, base[train], start=beta)
                else:
                    beta, _ = _logistic_arm(z[train], y[train], l2, base[train])
                eta = z[test] @ beta + base[test]
                losses[l2] += float(np.sum(np.logaddexp(0.0, eta) - y[test] * eta))
    return min(losses, key=losses.get), losses


def fit_contextual_policy(x: np.ndarray, segment_ids: Sequence, actions: Sequence[str], rewards: Sequence[float], arms: Sequence[str], *,
                          alpha: float | None = None, l2_lambda: float | None = None, seed: int = 0, epsilon: float = 0.0,
                          features: Sequence[str] = CONTEXT_FEATURES, model: str = "logistic",
                          offsets: Sequence[float] | None = None, offset_now: float = 0.0) -> ContextualPolicy:
    """Fit one reward model per action (``model``: "logistic", a penalised logistic regression with its Laplace
    posterior, ``l2_lambda`` None: chosen by :func:`choose_l2`, or "linear",
    mabwiser's LinTS ridge) on send-time contexts ``x`` and the segment at send time (rows = treated sends; the
    segments sharpen the context: docs/activation.md).

    ``rewards`` 0/1. ``offsets`` (logistic only): each send's baseline log-odds, its campaign's control conversion,
    so an action is judged against the control of its own campaign, not against sends made when normal buying was
    higher or lower; ``offset_now`` the baseline the expected rewards are stated at. ``alpha`` scales the posterior
    spread of the coefficients: the exploration (default ALPHA_LOGISTIC or ALPHA_LINEAR). Logistic, 0.1 explored on
    3-7 % of users of the demo runs (0.8 % on a tester's loop: the pipeline adds ``epsilon``); 0.2 on 7-11 % at a
    cost of 0.00-0.01 of the gap; linear, 0.1 explored on 9-16 % (docs/activation.md).
    """
    x = np.asarray(x, float)
    arms = tuple(str(a) for a in arms)
    if x.ndim != 2 or x.shape[1] != len(features) or len(x) != len(actions) or len(x) == 0:
        raise ValueError(f"fit_contextual_policy: need an (n > 0, {len(features)}) context per send, got {x.shape}")
    check_epsilon(epsilon)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    segments = tuple(sorted({s for s in segment_ids if s is not None}, key=repr))
    z = _design(x, segment_ids, segments, mean, scale)
    acts = np.asarray(actions, dtype=object)
    y = np.asarray(rewards, float)
    if model == "logistic":
        alpha = ALPHA_LOGISTIC if alpha is None else alpha
        base = np.zeros(len(y)) if offsets is None else np.asarray(offsets, float)
        known = np.isfinite(base)  # a send without a campaign's baseline (no campaign id): the other sends' mean
        base = np.where(known, base, base[known].mean() if known.any() else 0.0)
        if l2_lambda is None:
            l2_lambda, _ = choose_l2(z, y, acts, arms, base, seed=seed)
        fitted = [_logistic_arm(z[acts == a], y[acts == a], l2_lambda, base[acts == a]) for a in arms]
        beta, a_inv = [b.tolist() for b, _ in fitted], [v.tolist() for _, v in fitted]
    elif model == "linear":
        from mabwiser.mab import MAB, LearningPolicy

        alpha = ALPHA_LINEAR if alpha is None else alpha
        l2_lambda = 1.0 if l2_lambda is None else l2_lambda
        mab = MAB(list(arms), LearningPolicy.LinTS(alpha=alpha, l2_lambda=l2_lambda), seed=seed)
        mab.fit(acts, y, contexts=z)
        models = mab._imp.arm_to_model  # mabwiser's fitted ridge per arm (an arm with no send keeps the prior: beta 0)
        beta, a_inv = [models[a].beta.tolist() for a in arms], [models[a].A_inv.tolist() for a in arms]
    else:
        raise ValueError(f"model must be 'logistic' or 'linear', got {model!r}")
    state = {"kind": KIND, "arms": list(arms), "features": list(features), "segments": list(segments), "mean": mean.tolist(),
             "scale": scale.tolist(), "beta": beta, "a_inv": a_inv, "alpha": float(alpha), "seed": int(seed),
             "epsilon": float(epsilon)}
    if model == "logistic":
        state["link"] = "logit"
        state["l2_lambda"] = float(l2_lambda)
    if model == "logistic" and offsets is not None and offset_now:
        state["offset"] = float(offset_now)
    return load_policy(state | {"policy_version": _version(state)})


def load_policy(state: Mapping) -> ThompsonPolicy | ContextualPolicy:
    """Rebuild either kind of policy from its ``state()`` (meta.policies keeps it as JSON)."""
    if state.get("kind") != KIND:
        return policy_from_state(state)
    return ContextualPolicy(tuple(state["arms"]), tuple(state["features"]), tuple(state["segments"]), np.array(state["mean"], float),
                            np.array(state["scale"], float), np.array(state["beta"], float), np.array(state["a_inv"], float),
                            float(state["alpha"]), int(state["seed"]), float(state["epsilon"]), state["policy_version"],
                            state.get("link", "identity"), float(state.get("offset", 0.0)), state.get("l2_lambda"))


def choose_contextual(policy: ContextualPolicy, users: pl.DataFrame, x: np.ndarray, *, seed: int | None = None) -> pl.DataFrame:
    """One row per eligible user (:data:`NBA_COLUMNS`): the action drawn from its LinTS probabilities.

    ``users``: ``user_id``, ``segment_id``, ``global_control`` and ``eligible_actions`` (null = every action), row
    ``i`` with context ``x[i]``. Global-control users and users with no eligible action get no row. Draws follow
    ``user_id`` order, so the result depends on the user set and the seed, not on row order.
    """
    keep = ~users["global_control"].fill_null(False).to_numpy() if "global_control" in users.columns else \
        np.ones(users.height, bool)
    df = users.with_columns(pl.Series("__x", np.arange(users.height))).filter(pl.Series(keep)).sort("user_id")
    rows = df["__x"].to_numpy()
    elig = df["eligible_actions"].to_list() if "eligible_actions" in df.columns else None
    xs = np.asarray(x, float)[rows]
    segs = df["segment_id"].to_list()
    p = policy.action_probabilities(xs, segs, elig)
    mean = policy.expected(xs, segs)
    rng = np.random.default_rng(_seed_for(policy.seed if seed is None else seed, ("choose", policy.policy_version)))
    u = rng.random(len(rows))
    cum = np.cumsum(p, axis=1)
    has = cum[:, -1] > 0 if len(rows) else np.zeros(0, bool)
    j = np.minimum((cum < (u * cum[:, -1])[:, None]).sum(axis=1), len(policy.arms) - 1)
    j = np.where(p[np.arange(len(j)), j] > 0, j, np.argmax(p > 0, axis=1) if len(j) else j)  # float edge at the top
    best = np.max(np.where(_mask(policy.arms, len(rows), elig), mean, -np.inf), axis=1) if len(rows) else mean[:, 0]
    arms = np.array(policy.arms)
    idx = np.arange(len(rows))[has]
    return df.filter(pl.Series(has)).select("user_id", "segment_id").with_columns(
        pl.Series("action_id", arms[j[idx]].tolist(), dtype=pl.Utf8),
        pl.Series("expected_reward", mean[idx, j[idx]], dtype=pl.Float64),
        pl.Series("explore", mean[idx, j[idx]] < best[idx], dtype=pl.Boolean),  # a tie for the best is no exploring
        pl.Series("propensity", p[idx, j[idx]], dtype=pl.Float64),
        pl.lit(policy.policy_version).alias("policy_version")).select(NBA_COLUMNS)
