"""A catalogue that changed under the policy in service: it keeps serving what it knows, new actions are explored.

An action added to actions.yaml has no sends, so no policy can know its value. Dropping the policy in service for a
candidate fitted without the action's data (what happened before) skipped the gate, and the per-segment fallback's
Beta(1, 1) prior gave the new action a made-up conversion of 0.5: a tester's new zero-effect action went to 81 % of
users, published with ``expected_reward`` 0.5 and not flagged as exploring (its choices worth 0.025 against 0.122).

Now the policy in service is wrapped (:class:`WithNewActions`): it chooses among the catalogue's actions it knows
(an action removed from the catalogue is no longer chosen: its share goes to the others in the policy's own
proportions), and a user eligible for a new action is sent one of them (uniformly) with probability
``new_action_share``, the only choice for a user eligible for nothing else. Those rows carry no ``expected_reward``
(nothing is known yet), ``explore`` true and their real propensity, so the next rounds judge a candidate policy that
knows the new action against this wrapped policy off-policy, with sends of every action to judge on. Until each new
action has ``min_sends_per_action`` treated sends, or half the treated sends one round of exploring it is expected to
give when fewer (:meth:`WithNewActions.sends_needed`), no candidate is promoted (policies.decide).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from seg_assets.activation.policy import NBA_COLUMNS, _seed_for

NEW_ACTION_SHARE = 0.10  # default of NextBestActionConfig.new_action_share
# of the treated sends one round is expected to give a new action: what one round gives nearly always (a binomial count
# reaches half its mean but rarely when the mean is a few sends); the whole mean was reached in 20-28 % of rounds
ONE_ROUND = 0.5


@dataclass(frozen=True)
class WithNewActions:
    base: object  # the policy in service (ThompsonPolicy | ContextualPolicy)
    arms: tuple[str, ...]  # the catalogue's actions now
    share: float = NEW_ACTION_SHARE
    expected_sends: Mapping[str, float] | None = None  # treated sends one round gives each new action (:meth:`expecting`)

    def expecting(self, eligible: Sequence[Sequence[str] | None], users: Sequence[int], holdout_share: float) -> WithNewActions:
        """This policy knowing the treated sends one round gives each new action in expectation: ``users[i]`` users
        (not in the global control) may get the actions ``eligible[i]``; each is sent a new action with the chance
        :meth:`new_share` gives, split evenly between the new actions open to them, and the campaign's holdout keeps
        ``holdout_share`` of the sends back (a reviewer's: two new actions open to the same users got half each)."""
        known, new_lists = self.split(eligible)
        expected = dict.fromkeys(self.new, 0.0)
        for kept, new, n in zip(known, new_lists, users, strict=True):
            for a in new:
                expected[a] += n * (self.share if kept else 1.0) / len(new) * (1 - holdout_share)
        return replace(self, expected_sends=expected)

    def sends_needed(self, min_sends: int) -> dict[str, int]:
        """Treated sends each new action needs before a candidate may be promoted: ``min_sends``, or :data:`ONE_ROUND`
        of what one round of exploring it is expected to give when that is less. An action open to nobody (its
        eligible_segments name no current segment) held every candidate for good, and one open to 1 % of 3,000 users
        for 34 weekly rounds (a reviewer's); a round of sends is what judging a candidate against this policy needs to
        see it at all."""
        if self.expected_sends is None:
            return dict.fromkeys(self.new, min_sends)
        return {a: min(min_sends, math.ceil(ONE_ROUND * self.expected_sends.get(a, 0.0))) for a in self.new}

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if a in self.base.arms)

    @property
    def new(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if a not in self.base.arms)

    @property
    def policy_version(self) -> str:
        return self.base.policy_version

    def split(self, eligible: Sequence[Sequence[str] | None]) -> tuple[list[list[str]], list[list[str]]]:
        """Each row's eligible actions (None: all) as (those the policy in service knows, the new ones)."""
        kept, new = set(self.kept), set(self.new)
        lists = [list(self.arms) if e is None else list(e) for e in eligible]
        return [[a for a in e if a in kept] for e in lists], [[a for a in e if a in new] for e in lists]

    def new_share(self, has_kept: np.ndarray, n_new: np.ndarray) -> np.ndarray:
        """Per row, the chance of a new action: ``share``, all of it without a known one, none without a new one."""
        return np.where(n_new > 0, np.where(has_kept, self.share, 1.0), 0.0)

    def mix(self, base_p: np.ndarray, eligible: Sequence[Sequence[str] | None]) -> np.ndarray:
        """(n, len(arms)) choice probabilities from the base policy's (n, len(base.arms)) ones, given for the rows'
        eligible actions it knows."""
        _, new_lists = self.split(eligible)
        out = np.zeros((len(base_p), len(self.arms)))
        for j, a in enumerate(self.arms):
            if a in self.base.arms:
                out[:, j] = base_p[:, list(self.base.arms).index(a)]
        total = out.sum(axis=1)
        out = np.divide(out, total[:, None], out=np.zeros_like(out), where=total[:, None] > 0)
        n_new = np.array([len(e) for e in new_lists])
        share = self.new_share(total > 0, n_new)
        out *= (1 - share)[:, None]
        for i, e in enumerate(new_lists):
            for a in e:
                out[i, self.arms.index(a)] = share[i] / n_new[i]
        return out

    def choose(self, users: pl.DataFrame, base_choose: Callable[[pl.DataFrame], pl.DataFrame],
               round_key: object = None) -> pl.DataFrame:
        """:data:`NBA_COLUMNS` rows: ``base_choose`` (the base policy's chooser, given ``users`` in the same row order
        with their eligible actions narrowed to those it knows), then the draw of a new action, fresh for each
        ``round_key`` (the as-of): seeded by the policy alone, every round sent it to the same users, and a round that
        fell short of the hold's sends fell short for good (a reviewer's: 13 of 200 layouts of 30 eligible users)."""
        if "global_control" in users.columns:
            users = users.filter(~pl.col("global_control").fill_null(False))
        elig = users["eligible_actions"].to_list() if "eligible_actions" in users.columns else [None] * users.height
        known, new_lists = self.split(elig)
        base = base_choose(users.with_columns(pl.Series("eligible_actions", known, dtype=pl.List(pl.Utf8))))
        users = users.select("user_id", "segment_id").with_columns(pl.Series("__new", new_lists, dtype=pl.List(pl.Utf8)))
        users = users.join(base.select("user_id", pl.lit(True).alias("__has")), on="user_id", how="left").sort("user_id")
        n_new = users["__new"].list.len().to_numpy()
        share = self.new_share(users["__has"].fill_null(False).to_numpy(), n_new)
        rng = np.random.default_rng(_seed_for(getattr(self.base, "seed", 0), ("new actions", self.policy_version, self.new, round_key)))
        draw, pick = rng.random(users.height), rng.random(users.height)
        sent_new = draw < share
        chosen = [lst[int(p * len(lst))] if s else None for lst, p, s in zip(users["__new"].to_list(), pick, sent_new)]
        explored = users.filter(pl.Series(sent_new)).select("user_id", "segment_id").with_columns(
            pl.Series("action_id", [c for c in chosen if c is not None], dtype=pl.Utf8),
            pl.lit(None, dtype=pl.Float64).alias("expected_reward"), pl.lit(True).alias("explore"),
            pl.Series("propensity", share[sent_new] / n_new[sent_new], dtype=pl.Float64),
            pl.lit(self.policy_version).alias("policy_version"))
        rest = users.filter(pl.Series(~sent_new)).select("user_id", pl.Series("__keep", 1 - share[~sent_new]))
        kept = base.join(rest, on="user_id", how="inner").with_columns(pl.col("propensity") * pl.col("__keep"))
        return pl.concat([kept.select(NBA_COLUMNS), explored.select(NBA_COLUMNS)]).sort("user_id")
