"""Next best action: a per-segment Thompson-sampling policy (mabwiser) with logged propensities.

Fit (:func:`fit_policy`) from logged campaign outcomes, one row per treated send:
``segment_id``, ``action_id``, ``reward`` (0/1, or any value with a ``binarize(action_id, reward) -> bool``
such as "revenue above 20"). One mabwiser ``MAB(arms, LearningPolicy.ThompsonSampling())`` is fitted per
segment (Beta(1 + successes, 1 + failures) posteriors, mabwiser's prior), plus a pooled one over all
segments that serves segments unseen in the logs.

Choose (:func:`next_best_action`): for each user (``user_id``, ``segment_id``, optional ``global_control``
bool and ``eligible_actions`` list), the probability that each eligible action wins a Thompson draw is
estimated once per (segment, eligible set) from ``n_draws`` posterior samples drawn by mabwiser; the
action is then drawn from those probabilities (``epsilon`` mixes in a uniform share). Drawing from the
estimated probabilities is Thompson sampling up to the Monte Carlo error of the estimate, and it makes the
logged ``propensity`` exactly the probability the action was chosen with, which is what off-policy
evaluation of the next round needs (the Open Bandit Dataset's propensities are computed the same way).

Output columns (:data:`NBA_COLUMNS`): ``user_id``, ``action_id``, ``expected_reward`` (posterior mean of
the chosen action), ``explore`` (the chosen action's posterior mean is below the highest among the
eligible), ``propensity``, ``policy_version`` (a hash of the fitted state and the settings), plus
``segment_id``. One row per eligible user: global-control users and users with no eligible action get
no row. Deterministic for a given seed and user set.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

NBA_SCHEMA = {"user_id": pl.Utf8, "segment_id": pl.Int64, "action_id": pl.Utf8, "expected_reward": pl.Float64,
              "explore": pl.Boolean, "propensity": pl.Float64, "policy_version": pl.Utf8}  # analytics.next_best_action
NBA_COLUMNS = tuple(NBA_SCHEMA)
POOLED = "__pooled__"


def _seed_for(seed: int, key: object) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(repr(key).encode())) % (2**32)


def check_epsilon(epsilon: float) -> None:
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")


def mix_uniform(p: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
    """Choice probabilities ``p`` (rows or one row) with ``epsilon`` of uniform choice over each row's eligible
    actions (``mask``) mixed in; a row with none stays 0."""
    k = mask.sum(axis=-1, keepdims=True)
    return np.where(k > 0, (1 - epsilon) * p + epsilon * mask / np.maximum(k, 1), 0.0)


@dataclass
class ThompsonPolicy:
    """A fitted per-segment Thompson-sampling policy.

    ``counts[segment][arm] = (alpha, beta)``: the Beta posterior of the arm's success rate in that segment
    (mabwiser's counters: 1 + successes, 1 + failures); ``counts[POOLED]`` pools every segment.
    ``probabilities(segment, eligible)`` gives the chance that each eligible arm wins a posterior draw.
    """

    arms: tuple[str, ...]
    counts: dict[object, dict[str, tuple[float, float]]]
    seed: int = 0
    n_draws: int = 2000
    epsilon: float = 0.0
    policy_version: str = ""
    _mabs: dict[object, object] = field(default_factory=dict, repr=False)
    _draws: dict[object, np.ndarray] = field(default_factory=dict, repr=False)
    _probs: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)

    def _key(self, segment) -> object:
        return segment if segment in self.counts else POOLED

    def posterior_mean(self, segment) -> np.ndarray:
        """Posterior mean success rate of every arm (in ``arms`` order) for the segment."""
        c = self.counts[self._key(segment)]
        return np.array([c[a][0] / (c[a][0] + c[a][1]) for a in self.arms])

    def _posterior_draws(self, key) -> np.ndarray:
        """``n_draws`` x n_arms samples of the segment's posteriors, drawn by the segment's mabwiser model."""
        if key not in self._draws:
            if key not in self._mabs:
                self._mabs[key] = _make_mab(self.arms, self.counts[key], _seed_for(self.seed, key))
            mab = self._mabs[key]
            if mab is None:
                rng = np.random.default_rng(_seed_for(self.seed, ("prior", key)))
                self._draws[key] = rng.beta(1.0, 1.0, size=(self.n_draws, len(self.arms)))
            else:
                exp = mab.predict_expectations(np.zeros((self.n_draws, 1)))
                self._draws[key] = np.array([[e[a] for a in self.arms] for e in exp], dtype=float)
        return self._draws[key]

    def probabilities(self, segment, eligible: Sequence[str] | None = None) -> np.ndarray:
        """Probability of each arm (``arms`` order; 0 for ineligible arms) being chosen for a user of ``segment``."""
        key = self._key(segment)
        mask = np.ones(len(self.arms), bool) if eligible is None else np.isin(np.array(self.arms), list(eligible))
        cache_key = (key, mask.tobytes())
        if cache_key not in self._probs:
            if not mask.any():
                p = np.zeros(len(self.arms))
            else:
                draws = np.where(mask, self._posterior_draws(key), -np.inf)
                wins = np.bincount(np.argmax(draws, axis=1), minlength=len(self.arms)).astype(float)
                p = mix_uniform(wins / wins.sum(), mask, self.epsilon)
            self._probs[cache_key] = p
        return self._probs[cache_key]

    def action_probabilities(self, segment_ids: Sequence, eligible: Sequence[Sequence[str] | None] | None = None) -> np.ndarray:
        """(n, n_arms) matrix of choice probabilities for each row's segment (and eligible set): the policy's
        ``target_dist`` for off-policy evaluation (see ``offpolicy.evaluate_candidates``)."""
        elig = [None] * len(segment_ids) if eligible is None else eligible
        return np.vstack([self.probabilities(s, e) for s, e in zip(segment_ids, elig)]) if len(segment_ids) else \
            np.zeros((0, len(self.arms)))

    def state(self) -> dict:
        """JSON-able fitted state (for an artifact); :func:`policy_from_state` rebuilds the policy."""
        return {"arms": list(self.arms), "seed": self.seed, "n_draws": self.n_draws, "epsilon": self.epsilon,
                "counts": [[k, {a: list(v) for a, v in c.items()}] for k, c in self.counts.items()],
                "policy_version": self.policy_version}


def _version(arms, counts, seed, n_draws, epsilon) -> str:
    payload = json.dumps({"arms": list(arms), "seed": seed, "n_draws": n_draws, "epsilon": epsilon,
                          "counts": sorted([[repr(k), sorted([a, float(x), float(y)] for a, (x, y) in c.items())]
                                            for k, c in counts.items()])}, sort_keys=True)
    return "ts-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _make_mab(arms: Sequence[str], counts: Mapping[str, tuple[float, float]], seed: int):
    """A mabwiser Thompson-sampling bandit whose Beta counters are ``counts`` (fitted on the 0/1 outcomes they
    stand for: Thompson sampling depends on the counts only, so fit and rebuild give the same draws)."""
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(list(arms), LearningPolicy.ThompsonSampling(), seed=seed)
    decisions = np.concatenate([np.repeat(np.array([a], dtype=object), int(round(counts[a][0] + counts[a][1] - 2))) for a in arms])
    rewards = np.concatenate([np.r_[np.ones(int(round(counts[a][0] - 1))), np.zeros(int(round(counts[a][1] - 1)))] for a in arms])
    if not len(decisions):
        return None  # nothing logged (mabwiser cannot predict unfitted): the Beta(1, 1) priors are sampled with numpy
    mab.fit(decisions, rewards)
    return mab


def policy_from_state(state: Mapping) -> ThompsonPolicy:
    """Rebuild a policy from :meth:`ThompsonPolicy.state`: same counts, same seeds, hence the same choices."""
    counts = {k: {a: (float(v[0]), float(v[1])) for a, v in c.items()} for k, c in state["counts"]}
    return ThompsonPolicy(tuple(state["arms"]), counts, int(state["seed"]), int(state["n_draws"]),
                          float(state["epsilon"]), state["policy_version"])


def fit_policy(logs, arms: Sequence[str] | None = None, *, binarize: Callable[[str, float], bool] | None = None,
               segment_col: str = "segment_id", action_col: str = "action_id", reward_col: str = "reward",
               seed: int = 0, n_draws: int = 2000, epsilon: float = 0.0) -> ThompsonPolicy:
    """Fit one Thompson-sampling bandit per segment (mabwiser) from logged sends.

    ``logs``: a polars frame, one row per treated send, with ``segment_col``, ``action_col`` and
    ``reward_col``. Rewards must be 0/1 unless ``binarize(action_id, reward) -> bool`` is given (for
    revenue, e.g. ``lambda a, r: r > 0``). ``arms``: the actions the policy may choose (default: those in
    the logs); an arm never logged keeps the Beta(1, 1) prior, so Thompson sampling tries it.
    ``epsilon``: share of uniform exploration mixed into every choice (0 = pure Thompson sampling; a small
    value keeps every eligible action's propensity above epsilon / k for later off-policy evaluation).
    """
    logs = logs.select(pl.col(segment_col).alias("segment"), pl.col(action_col).cast(pl.Utf8).alias("action"),
                   pl.col(reward_col).cast(pl.Float64).alias("reward")).drop_nulls()
    arm_list = tuple(sorted(set(logs["action"].to_list()))) if arms is None else tuple(str(a) for a in arms)
    if not arm_list:
        raise ValueError("fit_policy: no arms (empty logs and no arms given)")
    logs = logs.filter(pl.col("action").is_in(list(arm_list)))
    rewards = logs["reward"].to_numpy()
    if binarize is not None:
        rewards = np.fromiter((bool(binarize(a, r)) for a, r in zip(logs["action"].to_list(), rewards)), float, len(rewards))
    elif not np.isin(rewards, (0.0, 1.0)).all():
        raise ValueError("fit_policy: rewards must be 0/1; pass binarize=(action, reward) -> bool for other rewards")
    logs = logs.with_columns(pl.Series("reward", rewards))
    check_epsilon(epsilon)
    groups = {POOLED: logs} | {k[0]: g for k, g in logs.group_by("segment", maintain_order=True)}
    counts: dict[object, dict[str, tuple[float, float]]] = {}
    for key in sorted(groups, key=repr):
        per_arm = groups[key].group_by("action").agg(s=pl.col("reward").sum(), n=pl.len())
        succ = dict(zip(per_arm["action"].to_list(), per_arm["s"].to_list()))
        tried = dict(zip(per_arm["action"].to_list(), per_arm["n"].to_list()))
        counts[key] = {a: (1.0 + succ.get(a, 0.0), 1.0 + tried.get(a, 0) - succ.get(a, 0.0)) for a in arm_list}
    return ThompsonPolicy(arm_list, counts, seed, n_draws, epsilon, _version(arm_list, counts, seed, n_draws, epsilon))


def next_best_action(policy: ThompsonPolicy, users, *, seed: int | None = None) -> pl.DataFrame:
    """One row per eligible user: the action drawn by the policy and its logged propensity.

    ``users``: a polars frame with ``user_id``, ``segment_id`` and optionally ``global_control``
    (bool: those users never get an action) and ``eligible_actions`` (list of action ids; null or missing =
    every arm of the policy). Users are sorted by ``user_id`` before drawing, so the result depends on the
    user set and the seed (default: the policy's seed), not on row order.
    """
    if "global_control" in users.columns:
        users = users.filter(~pl.col("global_control").fill_null(False).cast(pl.Boolean))
    if "eligible_actions" not in users.columns:
        users = users.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("eligible_actions"))
    users = users.sort("user_id").with_columns(
        pl.col("eligible_actions").cast(pl.List(pl.Utf8)).list.sort().list.join("\x1f").alias("__elig_key"))
    rng = np.random.default_rng(_seed_for(policy.seed if seed is None else seed, ("choose", policy.policy_version)))
    u = rng.random(users.height)
    arms = np.array(policy.arms)
    chosen = np.full(users.height, -1, dtype=np.int64)
    expected = np.full(users.height, np.nan)
    explore = np.zeros(users.height, dtype=bool)
    propensity = np.zeros(users.height)
    groups = users.with_row_index("__i").group_by("segment_id", "__elig_key", maintain_order=True).agg(
        pl.col("__i"), pl.col("eligible_actions").first())
    for seg, _key, idx, elig in groups.iter_rows():  # one (segment, eligible set) at a time: probabilities are shared
        p = policy.probabilities(seg, elig)
        if p.sum() <= 0:
            continue  # no eligible action: no row
        idx = np.asarray(idx, dtype=np.int64)
        cum = np.cumsum(p)
        j = np.minimum(np.searchsorted(cum, u[idx] * cum[-1], side="right"), len(p) - 1)
        j = np.where(p[j] > 0, j, np.flatnonzero(p > 0)[-1])  # float edge at the top of the cumulative sum
        mean = policy.posterior_mean(seg)
        mask = np.ones(len(arms), bool) if elig is None else np.isin(arms, list(elig))
        best = np.max(np.where(mask, mean, -np.inf))
        chosen[idx], expected[idx], explore[idx], propensity[idx] = j, mean[j], mean[j] < best, p[j]
    keep = chosen >= 0
    out = users.filter(pl.Series(keep)).select("user_id", "segment_id")
    return out.with_columns(pl.Series("action_id", arms[chosen[keep]].tolist(), dtype=pl.Utf8),
                            pl.Series("expected_reward", expected[keep], dtype=pl.Float64),
                            pl.Series("explore", explore[keep], dtype=pl.Boolean),
                            pl.Series("propensity", propensity[keep], dtype=pl.Float64),
                            pl.lit(policy.policy_version).alias("policy_version")).select(NBA_COLUMNS)


def _rate_lookup(planted_rates) -> Callable[[object, str], float]:
    if isinstance(planted_rates, Mapping):
        return lambda s, a: float(planted_rates[(s, a)])
    table = {(s, str(a)): float(r) for s, a, r in planted_rates.select("segment_id", "action_id", "rate").iter_rows()}
    return lambda s, a: table[(s, a)]


def true_value(choices, planted_rates) -> float:
    """Mean planted reward of realised choices (a :func:`next_best_action` frame, ``segment_id`` and ``action_id``).

    ``planted_rates``: mapping ``(segment_id, action_id) -> rate`` or a frame with ``segment_id``,
    ``action_id``, ``rate``. For simulations and tests, where the true response is known.
    """
    rate = _rate_lookup(planted_rates)
    vals = [rate(s, a) for s, a in choices.select("segment_id", "action_id").iter_rows()]
    return float(np.mean(vals)) if vals else float("nan")


def policy_true_value(policy: ThompsonPolicy, segment_ids: Sequence, planted_rates,
                      eligible: Sequence[Sequence[str] | None] | None = None) -> float:
    """Expected planted reward of the policy over users with these segments: sum_a pi(a | user) * rate(segment, a)."""
    rate = _rate_lookup(planted_rates)
    probs = policy.action_probabilities(segment_ids, eligible)
    table = np.array([[rate(s, a) if p > 0 else 0.0 for a, p in zip(policy.arms, row)] for s, row in zip(segment_ids, probs)])
    return float((probs * table).sum(axis=1).mean()) if len(segment_ids) else float("nan")
