"""Plain-text rules that explain segments, from a shallow surrogate decision tree.

A ``DecisionTreeClassifier`` (depth 3 for up to 4 segments, 4 up to 8, 5 beyond: a depth-d tree
has at most 2^d leaves) learns features -> segment in ORIGINAL feature units, so its thresholds read
as business rules ("recency_days <= 30.5 AND frequency > 4"). For the lifecycle-first model
(:func:`explain_model`) the stage thresholds are exact rules already: one tree per stage explains
the behaviour clusters inside it, prefixed with the stage rule. Each leaf is one rule for the
segment it predicts, with

* ``precision``: share of the users matching the rule that are in the segment,
* ``coverage``: share of the segment's users that match the rule,
* ``support``: users matching the rule (estimated for the whole frame from the sample).

``fidelity`` is the share of users (held-out part of the sample) for which the tree predicts the
model's segment: how far the rules can be trusted as a description of the clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from seg_assets.segmentation.preprocess import to_matrix
from seg_assets.segmentation.selection import sample_indices

MAX_RULE_ROWS = 100_000  # users the surrogate trees are fitted on (a bounded sample: rules describe, they do not score)

if TYPE_CHECKING:  # scikit-learn is imported where a tree is fitted (the code location loads faster)
    from sklearn.tree import DecisionTreeClassifier


@dataclass
class SegmentRules:
    fidelity: float
    rules: pl.DataFrame  # segment_id, rule, precision, coverage, support
    depth: int
    features: list[str]
    tree: DecisionTreeClassifier | None = field(default=None, repr=False)

    def summary(self) -> pl.DataFrame:
        """One row per segment: its rules as one text, and their combined precision/coverage."""
        return (self.rules.group_by("segment_id", maintain_order=True)
                .agg(pl.col("rule").str.join(" OR ").alias("rules"), pl.col("support").sum().alias("support"),
                     (pl.col("precision") * pl.col("support")).sum().alias("_hits"), pl.col("coverage").sum().alias("coverage"))
                .with_columns(precision=pl.col("_hits") / pl.col("support"), fidelity=pl.lit(self.fidelity))
                .drop("_hits").sort("segment_id"))


EVERYONE = "TRUE"  # the rule of a segment that is everyone (of its stage): SQL too


def shortest_between(threshold: float, values: np.ndarray | None = None) -> str:
    """The threshold as the shortest decimal that splits ``values`` (the column the tree split) as the threshold
    does: ``x <= it`` for the values at or below it, not for the next one above. A tree's threshold is the midpoint of
    two neighbouring values, so a rounded one (4 significant digits: 1234.55 printed as 1235) put users on the other
    side of a rule a BI user pastes (a reviewer's). Without ``values``, the shortest repr of the float."""
    if values is not None and values.size:
        below, above = values[values <= threshold], values[values > threshold]
        lo = float(below.max()) if below.size else -np.inf
        hi = float(above.min()) if above.size else np.inf
        for digits in range(1, 18):
            text = f"{threshold:.{digits}g}"
            if "e" not in text and lo <= float(text) < hi:
                return text
    return repr(float(threshold))


def _condition(feature: str, lo: str | None, hi: str | None) -> str:
    """SQL a BI user can paste into a WHERE clause (``0.14 < x <= 0.17`` read well but DuckDB refuses chained
    comparisons, a tester's)."""
    if lo is not None and hi is not None:
        return f"{feature} > {lo} AND {feature} <= {hi}"
    if hi is not None:
        return f"{feature} <= {hi}"
    return f"{feature} > {lo}"


def leaf_rules(tree: DecisionTreeClassifier, features: Sequence[str], X: np.ndarray | None = None) -> list[tuple[int, str]]:
    """(leaf node id, readable conjunction) for every leaf; bounds on one feature are merged. ``X``: the rows the
    tree was fitted on, to print each threshold as the shortest number that splits them the same (:func:`shortest_between`)."""
    t = tree.tree_
    out: list[tuple[int, str]] = []

    def text(f: int, thr: float | None) -> str | None:
        return None if thr is None else shortest_between(thr, None if X is None else X[:, f])

    def walk(node: int, bounds: dict[int, tuple[float | None, float | None]]) -> None:
        if t.children_left[node] == -1:
            parts = [_condition(features[f], text(f, lo), text(f, hi)) for f, (lo, hi) in sorted(bounds.items())]
            out.append((node, " AND ".join(parts) if parts else EVERYONE))
            return
        f, thr = int(t.feature[node]), float(t.threshold[node])
        lo, hi = bounds.get(f, (None, None))
        walk(t.children_left[node], {**bounds, f: (lo, thr if hi is None else min(hi, thr))})
        walk(t.children_right[node], {**bounds, f: (thr if lo is None else max(lo, thr), hi)})

    walk(0, {})
    return out


def auto_depth(n_segments: int) -> int:
    """3 for up to 4 segments, 4 for up to 8, 5 beyond: a depth-d tree has at most 2^d leaves."""
    return min(5, max(3, int(np.ceil(np.log2(max(n_segments, 2)))) + 1))


def _tree_rules(X: np.ndarray, y: np.ndarray, features: list[str], depth: int | None, min_leaf_share: float,
                test_size: float, seed: int, prefix: str = "") -> tuple[list[dict], float, DecisionTreeClassifier | None]:
    """Rules of one surrogate tree: (rows with hits/support, held-out accuracy, tree)."""
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 1:  # the prefix alone decides (e.g. a lifecycle stage that is one segment)
        return [{"segment_id": int(classes[0]), "rule": prefix or EVERYONE, "hits": len(y), "support": len(y)}], 1.0, None
    depth = depth or auto_depth(len(classes))
    strat = y if counts.min() >= 2 else None
    if len(y) >= 20 and test_size > 0:
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)
    else:
        X_tr, X_te, y_tr, y_te = X, X, y, y
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=max(1, int(min_leaf_share * len(y_tr))),
                                  random_state=seed).fit(X_tr, y_tr)
    accuracy = float((tree.predict(X_te) == y_te).mean())
    leaves, pred = tree.apply(X_tr), tree.predict(X_tr)
    rows = []
    for node, text in leaf_rules(tree, features, X_tr):
        in_leaf = leaves == node
        support = int(in_leaf.sum())
        if support:
            seg = int(pred[in_leaf][0])
            rule = f"{prefix} AND {text}" if prefix and text != EVERYONE else (prefix or text)
            rows.append({"segment_id": seg, "rule": rule, "hits": int((y_tr[in_leaf] == seg).sum()), "support": support,
                         "_scale": len(y) / len(y_tr)})
    return rows, accuracy, tree


def extract_rules(frame: pl.DataFrame, segment_ids: Sequence[int] | np.ndarray, features: Sequence[str], *,
                  stages: Sequence[str] | np.ndarray | None = None, stage_rules: dict[str, str] | None = None,
                  max_depth: int | None = None, min_leaf_share: float = 0.005, max_rows: int = MAX_RULE_ROWS,
                  test_size: float = 0.25, seed: int = 0, population: int | None = None) -> SegmentRules:
    """Fit surrogate tree(s) on a sample of (features -> segment) and read the leaves as rules.

    ``population``: the rows ``frame`` stands for when it is already a sample (supports are scaled to it).

    With ``stages`` (the hierarchy stage of each row) and ``stage_rules`` (stage -> its exact rule
    text), one tree is fitted per stage and its rules are prefixed with the stage rule: a stage that
    is a single segment is explained exactly by its thresholds, and the tree depth is spent on
    behaviour only.
    """
    features = list(features)
    y_all = np.asarray(segment_ids)
    if len(y_all) != frame.height:
        raise ValueError(f"{len(y_all)} segment ids for {frame.height} rows")
    idx = sample_indices(frame.height, max_rows, seed)
    X, y = to_matrix(frame[idx], features), y_all[idx]
    X = np.where(np.isfinite(X), X, 0.0)
    groups = np.asarray(stages, dtype=object)[idx] if stages is not None else np.full(len(y), "", dtype=object)
    rows, fidelity, tree, depths = [], 0.0, None, []
    for g in sorted(set(groups.tolist())):
        m = groups == g
        r, acc, tr = _tree_rules(X[m], y[m], features, max_depth, min_leaf_share, test_size, seed,
                                 prefix=(stage_rules or {}).get(g, ""))
        rows += r
        fidelity += acc * m.sum() / len(y)  # weighted by the stage's share of users
        if tr is not None:
            tree = tr if stages is None else tree
            depths.append(tr.get_depth())
    seg_total = {s: int(n) for s, n in zip(*np.unique(y, return_counts=True))}
    to_frame = (population or frame.height) / len(y)  # rules are read on a sample: support is scaled to all rows
    out = [{"segment_id": r["segment_id"], "rule": r["rule"], "precision": r["hits"] / r["support"],
            "coverage": min(1.0, r["hits"] * r.get("_scale", 1.0) / seg_total[r["segment_id"]]),
            "support": int(round(r["support"] * r.get("_scale", 1.0) * to_frame))} for r in rows]
    rules = pl.DataFrame(out, schema={"segment_id": pl.Int64, "rule": pl.Utf8, "precision": pl.Float64,
                                      "coverage": pl.Float64, "support": pl.Int64})
    rules = rules.sort(["segment_id", "coverage", "rule"], descending=[False, True, False])
    return SegmentRules(fidelity=float(fidelity), rules=rules, depth=max(depths, default=0),
                        features=features, tree=tree)


def explain_model(model, frame: pl.DataFrame, **kwargs) -> SegmentRules:
    """Rules for a fitted ``SegmentModel`` on ``frame``: per hierarchy stage, prefixed by the stage rule.

    The model labels only the rows the rules are read on (``extract_rules``' sample, the same rows in the
    same order), not the whole frame: at 1M users that is 100k predictions instead of a million."""
    from seg_assets.segmentation.model import stage_of  # local: model.py does not depend on rules.py

    sample = frame[sample_indices(frame.height, kwargs.get("max_rows", MAX_RULE_ROWS), kwargs.get("seed", 0))]
    ids, _ = model.predict(sample)
    if model.hierarchy == "flat":
        return extract_rules(sample, ids, model.features, population=frame.height, **kwargs)
    return extract_rules(sample, ids, model.features, stages=stage_of(sample, model.config, model.features),
                         stage_rules=model.stage_rules(), population=frame.height, **kwargs)
