"""Surrogate rules, the segment classifier and the promotion gate, on real sklearn fits."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seg_assets.segmentation.classifier import SegmentClassifier, train_classifier
from seg_assets.segmentation.fit import fit_segment_model
from seg_assets.segmentation.gate import decide_promotion
from seg_assets.segmentation.model import ModelConfig
from seg_assets.segmentation.quality import evaluate_model
from seg_assets.segmentation.rules import auto_depth, explain_model, extract_rules
from seg_assets.segmentation.selection import SelectionConfig
from seg_assets_tests.test_segmentation_profiles_naming import FEATS, caricatures
from seg_assets_tests.test_segmentation_synth import make_shoppers

FIXED = ModelConfig(k_range=(4, 4), stability_boot=3, stability_sample=1000)
def rule_mask(frame: pl.DataFrame, rule: str) -> np.ndarray:
    """Evaluate a rule text of extract_rules on a frame as a BI user would: pasted into a DuckDB WHERE clause."""
    import duckdb

    return duckdb.sql(f"SELECT coalesce({rule}, false) AS m FROM frame").pl()["m"].to_numpy()


@pytest.fixture(scope="module")
def shoppers():
    frame, truth = make_shoppers(2000, seed=21)
    return frame, fit_segment_model(frame, FIXED)


def test_rules_reproduce_separable_segments_and_read_right():
    frame, seg = caricatures()
    r = extract_rules(frame, seg, FEATS, max_depth=3)
    assert r.fidelity > 0.95 and r.depth == 3
    assert set(r.rules["segment_id"]) == {1, 2, 3, 4, 5}
    for row in r.rules.iter_rows(named=True):
        mask = rule_mask(frame, row["rule"])
        # the text is the tree's own leaf: evaluating it gives the stated precision (on the whole frame)
        assert abs((seg[mask] == row["segment_id"]).mean() - row["precision"]) < 0.05
        assert 0 < row["coverage"] <= 1 and row["support"] > 0
    assert r.summary()["segment_id"].to_list() == [1, 2, 3, 4, 5] and r.summary()["rules"][1]


def test_a_rule_with_two_bounds_runs_pasted_into_sql():
    """`0.14 < x <= 0.17` read well, but DuckDB refuses chained comparisons: a BI user pasting a rule got an error."""
    from seg_assets.segmentation.rules import _condition

    frame = pl.DataFrame({"discount_share": [0.1, 0.15, 0.2], "recency_days": [5.0, 50.0, 500.0]})
    assert rule_mask(frame, _condition("discount_share", 0.14, 0.17)).tolist() == [False, True, False]
    assert rule_mask(frame, _condition("recency_days", None, 40) + " OR " + _condition("recency_days", 400, None)).tolist() \
        == [True, False, True]


def test_pasted_rules_select_the_users_the_tree_splits_and_one_segment_of_everyone_is_sql():
    """Thresholds were printed to 4 significant digits: a split at 1234.55 read `monetary <= 1235`, which pasted into
    SQL selected both segments for one and none for the other, each published with precision 1.00 (a reviewer's)."""
    import duckdb

    frame = pl.DataFrame({"monetary": np.r_[np.full(50, 1234.4), np.full(50, 1234.7)], "frequency": np.ones(100)})
    seg = np.r_[np.ones(50, int), np.full(50, 2)]
    rules = extract_rules(frame, seg, ["monetary", "frequency"], test_size=0, min_leaf_share=0.0).summary()
    con = duckdb.connect()
    con.register("frame", frame.with_columns(seg=pl.Series(seg)))
    for sid, rule in rules.select("segment_id", "rules").iter_rows():
        assert con.sql(f"SELECT count(*), count(*) FILTER (WHERE seg = {sid}) FROM frame WHERE {rule}").fetchall() == [(50, 50)]
    one = extract_rules(frame, np.ones(100, int), ["monetary"]).summary()["rules"][0]
    assert con.sql(f"SELECT count(*) FROM frame WHERE {one}").fetchall() == [(100,)]


def test_model_rules_use_exact_stage_thresholds(shoppers):
    frame, model = shoppers
    r = explain_model(model, frame)
    assert r.fidelity > 0.8
    ids, _ = model.predict(frame)
    new_id = [s for s, st in zip(model.segment_ids, model.cluster_stage) if st == "new"][0]
    new_rules = r.rules.filter(pl.col("segment_id") == new_id)
    assert new_rules["rule"].to_list() == ["tenure_days <= 30"] and new_rules["precision"].item() == 1.0
    assert all(rule.startswith("tenure_days > 30 AND") for rule in r.rules.filter(pl.col("segment_id") != new_id)["rule"])
    assert auto_depth(4) == 3 and auto_depth(7) == 4 and auto_depth(12) == 5


@pytest.mark.parametrize("kind", ["logreg", "tree", "gbm", "mlp"])
def test_classifier_learns_segments(shoppers, kind, tmp_path):
    frame, model = shoppers
    ids, _ = model.predict(frame)
    clf = train_classifier(frame, ids, kind, features=model.features, max_rows=1500, perm_rows=300)
    m = clf.metrics
    assert m["macro_f1"] > 0.85 and m["accuracy"] > 0.85 and m["train_rows"] + m["test_rows"] == 1500
    assert set(m["recall_by_segment"]) == set(model.segment_ids) and min(m["recall_by_segment"].values()) > 0.5
    imp = clf.importances
    assert imp.height == len(model.features) and imp["importance"].is_sorted(descending=True)
    clf.save(tmp_path / "clf.joblib")
    again = SegmentClassifier.load(tmp_path / "clf.joblib")
    assert (again.predict(frame) == ids).mean() > 0.85


def test_classifier_rejects_single_segment():
    frame, _ = caricatures()
    with pytest.raises(ValueError):
        train_classifier(frame, np.ones(frame.height, dtype=int), "tree", features=FEATS)


def test_gate_rules():
    base = {"silhouette": 0.40, "stability": 0.90, "classifier_macro_f1": 0.95}
    assert decide_promotion(base, None).promote and decide_promotion(base, None).reason == "the first model"
    same = decide_promotion(dict(base), base, 0.05)
    assert same.promote and same.deltas == {"silhouette": 0.0, "stability": 0.0, "classifier_macro_f1": 0.0}
    slightly = decide_promotion({**base, "silhouette": 0.36}, base, 0.05)
    assert slightly.promote
    worse = decide_promotion({**base, "silhouette": 0.30, "stability": 0.70}, base, 0.05)
    assert not worse.promote and worse.failed == ("silhouette", "stability")
    assert "silhouette" in worse.reason and "stability" in worse.reason and "classifier" not in worse.reason
    assert not decide_promotion({**base, "classifier_macro_f1": 0.80}, base, 0.05).promote
    assert decide_promotion({**base, "classifier_macro_f1": 0.80}, base, {"classifier_macro_f1": 0.2}).promote
    # lower-is-better metrics compare the other way round
    db = decide_promotion({"davies_bouldin": 1.5}, {"davies_bouldin": 1.0}, 0.05, metrics=("davies_bouldin",))
    assert not db.promote and db.deltas["davies_bouldin"] == pytest.approx(-0.5)
    assert decide_promotion({"silhouette": float("nan")}, base).promote  # nothing comparable
    # a model fitted on a small shop is no yardstick once the shop has doubled (40 users -> 373 kept the first model)
    small, grown = {**base, "fitted_users": 40, "segments_used": 2}, {**base, "stability": 0.4, "fitted_users": 100,
                                                                       "segments_used": 3, "membership_churn_stable": 1.0}
    outgrown = decide_promotion(grown, small, 0.05, max_membership_churn=0.02)
    assert outgrown.promote and "grown 2.5-fold" in outgrown.reason and "membership_churn_stable" in outgrown.reason
    assert not decide_promotion({**grown, "fitted_users": 79}, small, 0.05).promote
    assert not decide_promotion({**grown, "segments_used": 1}, small, 0.05).promote
    # a larger shop keeps the whole gate, membership churn included
    big = decide_promotion({**grown, "fitted_users": 250_000}, {**small, "fitted_users": 100_000}, 0.05, max_membership_churn=0.02)
    assert not big.promote and "membership_churn_stable" in big.failed


def _gate_metrics(model, frame):
    ids, _ = model.predict(frame)
    return {"silhouette": evaluate_model(model, frame, sample_size=1500)["silhouette"],
            "stability": model.metrics["stability"],
            "classifier_macro_f1": train_classifier(frame, ids, "logreg", features=model.features).metrics["macro_f1"]}


def test_gate_refuses_clearly_worse_models_and_promotes_an_equal_one(shoppers):
    frame, model = shoppers
    in_service = _gate_metrics(model, frame)
    equal = fit_segment_model(frame, FIXED)
    assert decide_promotion(_gate_metrics(equal, frame), in_service).promote
    wrong_k = fit_segment_model(frame, ModelConfig(hierarchy="flat", selection=SelectionConfig(k_min=2, k_max=2),
                                                   stability_boot=3, stability_sample=1000))
    d = decide_promotion(_gate_metrics(wrong_k, frame), in_service)
    assert not d.promote and d.failed and all(m in d.reason for m in d.failed)
    rng = np.random.default_rng(0)
    noise = frame.select([pl.Series(c, rng.permutation(frame[c].to_numpy())) for c in model.features])
    on_noise = fit_segment_model(noise, ModelConfig(stability_boot=3, stability_sample=1000))
    d = decide_promotion(_gate_metrics(on_noise, frame), in_service)
    assert not d.promote and "stability" in d.failed


def test_the_classifier_assigns_within_the_users_lifecycle_stage(shoppers):
    """A classifier's boundary blurs where stages meet (tenure 30 days): it must never put a 104-day-old customer
    in "New customers". Its probabilities are kept to the stage's segments (membership.in_stage)."""
    from seg_assets.segmentation.batch import assign
    from seg_assets.segmentation.membership import in_stage
    from seg_assets.segmentation.model import stage_of

    frame, model = shoppers
    ids, _ = model.predict(frame)
    clf = train_classifier(frame, ids, "logreg", features=model.features, max_rows=1500, perm_rows=300)
    stage_by_id = dict(zip(model.segment_ids, model.cluster_stage))
    stages = stage_of(frame, model.config, model.features)
    raw = np.asarray(clf.classes)[clf.predict_proba(frame).argmax(axis=1)]
    assert (np.array([stage_by_id[int(s)] for s in raw]) != stages).sum() > 0  # the blur this guards against
    proba = in_stage(clf.predict_proba(frame), clf.classes, model, frame)
    assert np.allclose(proba.sum(axis=1), 1.0)
    given, confidence = assign(frame, model, clf)
    assert (np.array([stage_by_id[int(s)] for s in given]) == stages).all()
    assert (confidence > 0).all()


def test_a_model_blind_to_new_data_is_replaced_only_within_the_membership_churn_limit():
    """A model that left out features which have data now is replaced without comparing quality (fewer dimensions
    score better), but not past the membership churn limit: a tester's two days of a new website's clicks beside a
    year of orders moved 27 % of the users whose features barely changed, and kept segments' names no longer fitted."""
    moved = {"silhouette": 0.1, "membership_churn_stable": 0.274, "stable_users": 672, "users_compared": 836}
    refused = decide_promotion(moved, {"silhouette": 0.5}, max_membership_churn=0.02, gained=("sessions", "views"), in_service="v0001")
    assert not refused.promote and refused.failed == ("membership_churn_stable",)
    assert refused.reason.startswith("v0001 leaves out features that have data now (sessions, views), but this fit moves "
                                     "22.0% of the users although they have none of that data (27.4% of those"), refused.reason
    settled = decide_promotion({**moved, "membership_churn_stable": 0.01}, {"silhouette": 0.5}, max_membership_churn=0.02,
                               gained=("sessions",), in_service="v0001")
    assert settled.promote and settled.reason == "v0001 leaves out features that have data now (sessions)"
    assert decide_promotion(moved, {"silhouette": 0.5}, max_membership_churn=None, gained=("sessions",), in_service="v0001").promote
    few = {**moved, "membership_churn_stable": 0.714, "stable_users": 7, "users_compared": 488}  # nearly all have clicks
    assert decide_promotion(few, {"silhouette": 0.5}, max_membership_churn=0.02, gained=("sessions",), in_service="v0001").promote


def test_a_feature_gained_after_being_the_same_for_everyone_counts_the_users_whose_value_is_new():
    """A feature left out as the same value for every user (no discount delivered yet: discount_share 0 for all) that
    varies now: the users with new data are those whose value moved, not every user of its source. By its source
    (spend), every buyer had 'new data', so no user counted for the membership churn limit and any refit passed."""
    from seg_assets.segmentation.availability import (
        CONSTANT,
        NO_CLICKS,
        feature_availability,
        gained_data,
        without_new_data,
    )

    then = pl.DataFrame({"monetary": [10.0, 20, 30, 40], "frequency": [1, 2, 3, 4], "discount_share": [0.0, 0, 0, 0]})
    left_out = dict(feature_availability(then, ["monetary", "frequency", "discount_share"]).left_out)
    assert left_out == {"discount_share": CONSTANT}
    now = then.with_columns(discount_share=pl.Series([0.0, 0, 0, 0.3]))
    assert gained_data(list(left_out), now) == ["discount_share"]
    assert without_new_data(now, list(left_out.items())).to_list() == [True, True, True, False]
    no_clicks = now.with_columns(sessions=pl.Series([0, 0, 2, 0]))  # a source that had no data at all: by its indicator
    assert without_new_data(no_clicks, [("sessions", NO_CLICKS)]).to_list() == [True, True, False, True]
