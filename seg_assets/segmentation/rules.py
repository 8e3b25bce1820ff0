"""Plain-text rules that explain segments, from a shallow surrogate decision tree.

A ``DecisionTreeClassifier`` (depth 3 by default, 4 when there are more than 8 segments, since a
depth-d tree has at most 2^d leaves) learns features -> segment in ORIGINAL feature units, so its
thresholds read as business rules ("recency_days <= 30.5 AND frequency > 4"). Each leaf is one rule
for the segment it predicts, with

* ``precision``: share of the users matching the rule that are in the segment,
* ``coverage``: share of the segment's users that match the rule,
* ``support``: users matching the rule (on the training sample).

``fidelity`` is the share of users (held-out part of the sample) for which the tree predicts the
model's segment: how far the rules can be trusted as a description of the clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from seg_assets.segmentation.preprocess import to_matrix
from seg_assets.segmentation.selection import sample_indices


@dataclass
class SegmentRules:
    fidelity: float
    rules: pl.DataFrame  # segment_id, rule, precision, coverage, support
    depth: int
    features: list[str]
    tree: DecisionTreeClassifier | None = field(default=None, repr=False)

    def text_for(self, segment_id: int) -> str:
        """All rules of one segment joined with OR (empty if the tree never predicts it)."""
        rows = self.rules.filter(pl.col("segment_id") == segment_id)["rule"].to_list()
        return " OR ".join(f"({r})" if len(rows) > 1 else r for r in rows)

    def summary(self) -> pl.DataFrame:
        """One row per segment: its rules as one text, and their combined precision/coverage."""
        return (self.rules.group_by("segment_id", maintain_order=True)
                .agg(pl.col("rule").str.join(" OR ").alias("rules"), pl.col("support").sum().alias("support"),
                     (pl.col("precision") * pl.col("support")).sum().alias("_hits"), pl.col("coverage").sum().alias("coverage"))
                .with_columns(precision=pl.col("_hits") / pl.col("support"), fidelity=pl.lit(self.fidelity))
                .drop("_hits").sort("segment_id"))


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def _condition(feature: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{_fmt(lo)} < {feature} <= {_fmt(hi)}"
    if hi is not None:
        return f"{feature} <= {_fmt(hi)}"
    return f"{feature} > {_fmt(lo)}"


def leaf_rules(tree: DecisionTreeClassifier, features: Sequence[str]) -> list[tuple[int, str]]:
    """(leaf node id, readable conjunction) for every leaf; bounds on one feature are merged."""
    t = tree.tree_
    out: list[tuple[int, str]] = []

    def walk(node: int, bounds: dict[int, tuple[float | None, float | None]]) -> None:
        if t.children_left[node] == -1:
            parts = [_condition(features[f], lo, hi) for f, (lo, hi) in sorted(bounds.items())]
            out.append((node, " AND ".join(parts) if parts else "everyone"))
            return
        f, thr = int(t.feature[node]), float(t.threshold[node])
        lo, hi = bounds.get(f, (None, None))
        walk(t.children_left[node], {**bounds, f: (lo, thr if hi is None else min(hi, thr))})
        walk(t.children_right[node], {**bounds, f: (thr if lo is None else max(lo, thr), hi)})

    walk(0, {})
    return out


def extract_rules(frame: pl.DataFrame, segment_ids: Sequence[int] | np.ndarray, features: Sequence[str], *,
                  max_depth: int | None = None, min_leaf_share: float = 0.005, max_rows: int = 100_000,
                  test_size: float = 0.25, seed: int = 0) -> SegmentRules:
    """Fit the surrogate tree on a sample of (features -> segment) and read its leaves as rules."""
    features = list(features)
    y_all = np.asarray(segment_ids)
    if len(y_all) != frame.height:
        raise ValueError(f"{len(y_all)} segment ids for {frame.height} rows")
    idx = sample_indices(frame.height, max_rows, seed)
    X, y = to_matrix(frame[idx], features), y_all[idx]
    X = np.where(np.isfinite(X), X, 0.0)
    n_seg = len(np.unique(y))
    depth = max_depth or (3 if n_seg <= 8 else 4)
    strat = y if n_seg > 1 and np.bincount(np.unique(y, return_inverse=True)[1]).min() >= 2 else None
    if len(y) >= 20 and test_size > 0:
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)
    else:
        X_tr, X_te, y_tr, y_te = X, X, y, y
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=max(1, int(min_leaf_share * len(y_tr))),
                                  random_state=seed).fit(X_tr, y_tr)
    fidelity = float((tree.predict(X_te) == y_te).mean())
    leaves = tree.apply(X_tr)
    pred = tree.predict(X_tr)
    seg_total = {s: int(c) for s, c in zip(*np.unique(y_tr, return_counts=True))}
    rows = []
    for node, text in leaf_rules(tree, features):
        in_leaf = leaves == node
        support = int(in_leaf.sum())
        if support == 0:
            continue
        seg = int(pred[in_leaf][0])
        hits = int((y_tr[in_leaf] == seg).sum())
        rows.append({"segment_id": seg, "rule": text, "precision": hits / support,
                     "coverage": hits / seg_total[seg], "support": support})
    rules = pl.DataFrame(rows, schema={"segment_id": pl.Int64, "rule": pl.Utf8, "precision": pl.Float64,
                                       "coverage": pl.Float64, "support": pl.Int64})
    rules = rules.sort(["segment_id", "coverage", "rule"], descending=[False, True, False])
    return SegmentRules(fidelity=fidelity, rules=rules, depth=depth, features=features, tree=tree)
