"""The refit margin: a user keeps their segment unless another one fits clearly better (membership.py)."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from seg_assets.segmentation.fit import fit_segment_model
from seg_assets.segmentation.gate import decide_promotion
from seg_assets.segmentation.membership import (
    DEFAULT_ODDS,
    NO_SEGMENT,
    emerged_segments,
    membership_churn,
    model_proba,
    refit_churn,
    same_stage,
    sticky_assign,
    sticky_model_assign,
)
from seg_assets.segmentation.model import ModelConfig
from seg_assets.segmentation.quality import stability_on
from seg_assets.segmentation.selection import SelectionConfig

CLASSES = [3, 7, 9]


def test_the_previous_segment_stays_within_the_margin():
    proba = np.array([[0.6, 0.4, 0.0],   # prev 7: 0.6 <= 3 * 0.4, stays
                      [0.9, 0.1, 0.0],   # prev 7: 0.9 > 3 * 0.1, moves to 3
                      [0.75, 0.25, 0.0],  # prev 7: exactly 3:1, stays (the margin is inclusive)
                      [0.3, 0.2, 0.5],   # prev 3: 0.5 <= 0.9, stays
                      [0.6, 0.0, 0.4]])  # prev 7 with probability 0: moves, whatever the margin
    ids, conf = sticky_assign(proba, CLASSES, np.array([7, 7, 7, 3, 7]), odds=3.0)
    assert ids.tolist() == [7, 3, 7, 3, 3]
    assert conf.tolist() == [0.4, 0.9, 0.25, 0.3, 0.6]  # the confidence is that of the segment kept


def test_no_previous_segment_a_retired_one_or_margin_zero_is_plain_argmax():
    proba = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    best = [7, 3, 9]
    assert sticky_assign(proba, CLASSES, np.array([NO_SEGMENT, 4, 12]), 3.0)[0].tolist() == best  # unknown ids
    assert sticky_assign(proba, CLASSES, np.array([3, 7, 3]), 1.0)[0].tolist() == best
    assert sticky_assign(proba, CLASSES, np.array([3, 7, 3]), np.inf)[0].tolist() == [3, 7, 3]  # never moves
    assert sticky_assign(np.zeros((0, 3)), CLASSES, np.zeros(0), 3.0)[0].size == 0


def test_a_user_whose_lifecycle_stage_moved_goes_where_the_rules_put_them():
    proba = np.array([[0.4, 0.6, 0.0], [0.4, 0.6, 0.0]])
    ids, _ = sticky_assign(proba, CLASSES, np.array([3, 3]), 3.0, eligible=np.array([True, False]))
    assert ids.tolist() == [3, 7]


def test_classes_in_any_order():
    proba = np.array([[0.3, 0.7], [0.7, 0.3]])
    assert sticky_assign(proba, [9, 2], np.array([9, 9]), 2.0)[0].tolist() == [2, 9]


def test_membership_churn_counts_users_with_a_previous_segment():
    prev = np.array([1, 1, 2, 2, NO_SEGMENT])
    cand = np.array([1, 2, 2, 3, 4])
    stable = np.array([True, True, True, False, True])
    out = membership_churn(prev, cand, stable)
    assert out == {"membership_churn": 0.5, "membership_churn_stable": pytest.approx(1 / 3), "moved_to_new_kind": 0.0,
                   "emerged_segments": 0, "users_compared": 4, "stable_users": 3}
    new_kind = membership_churn(prev, cand, stable, emerged=[2])  # user 2's move 1 -> 2 is a move to a new kind
    assert new_kind["membership_churn_stable"] == 0.0 and new_kind["moved_to_new_kind"] == pytest.approx(1 / 3)
    assert new_kind["membership_churn"] == 0.5
    assert membership_churn(prev[:0], cand[:0], stable[:0])["membership_churn"] == 0.0


def _blobs(n: int, centres: list[tuple[float, float]], seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    pts = np.vstack([rng.normal(c, 0.6, size=(n, 2)) for c in centres])
    return pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(len(pts))],
                         "monetary": np.exp(pts[:, 0]), "frequency": np.exp(pts[:, 1])})


def _cfg(k: tuple[int, int]) -> ModelConfig:
    return ModelConfig(features=("monetary", "frequency"), hierarchy="flat", k_range=k, balance_groups=False,
                       selection=SelectionConfig(k_min=k[0], k_max=k[1], random_state=0))


def test_model_posterior_is_the_models_assignment_made_soft():
    frame = _blobs(300, [(0, 0), (3, 0), (0, 3)], 1)
    model = fit_segment_model(frame, _cfg((3, 3)))
    proba = model_proba(model, frame)
    assert proba.shape == (frame.height, 3) and np.allclose(proba.sum(axis=1), 1.0)
    ids, conf = model.predict(frame)
    assert (np.asarray(model.segment_ids)[proba.argmax(axis=1)] == ids).all()
    assert np.allclose(proba.max(axis=1), conf)
    assert same_stage(model, frame, ids).all() and not same_stage(model, frame, np.full(frame.height, 99)).any()


def test_a_refit_that_splits_a_segment_moves_only_the_users_who_clearly_belong_to_the_new_one():
    """Two blobs, then the same users fitted with three clusters: the new segment takes the users clearly
    inside it; the margin keeps the others where they were."""
    frame = _blobs(400, [(0, 0), (4, 0)], 2)
    old = fit_segment_model(frame, _cfg((2, 2)))
    prev, _ = old.predict(frame)
    new = fit_segment_model(frame, _cfg((3, 3)), previous=old)
    plain, _ = sticky_model_assign(new, frame, prev, odds=1.0)
    sticky, _ = sticky_model_assign(new, frame, prev, odds=DEFAULT_ODDS)  # the models' own
    moved = lambda ids: float((ids != prev).mean())  # noqa: E731
    assert 0 < moved(sticky) < moved(plain)
    proba = model_proba(new, frame)
    col = {s: i for i, s in enumerate(new.segment_ids)}
    p_prev = proba[np.arange(frame.height), [col.get(int(p), 0) for p in prev]]
    assert (proba.max(axis=1)[sticky != prev] > DEFAULT_ODDS * p_prev[sticky != prev]).all()  # clearly better off
    churn = refit_churn(old, new, frame, prev)
    assert churn["membership_churn"] == pytest.approx(moved(sticky)) and churn["stable_users"] > 0.9 * frame.height
    # a split of a segment is no new kind of shopper: its new segment held its share when the old model was fitted
    assert emerged_segments(old, new, frame) == [] and churn["membership_churn_stable"] > 0
    # refitting on the same data keeps everyone
    same = fit_segment_model(frame, _cfg((2, 2)), previous=old)
    assert (sticky_model_assign(same, frame, prev, DEFAULT_ODDS)[0] == prev).all()
    assert refit_churn(old, same, frame, prev)["membership_churn"] == 0.0


def test_a_new_kind_of_shopper_moving_to_its_own_segment_is_not_churn():
    """A tester's 800 bulk buyers signed up after the fit and were published in old segments; their move to the
    candidate's new segment counted as churn (0.122 > 0.02) and refused every re-fit. The new segment held none of
    the old fit's population: it is a new kind, reported apart; the old kinds' users stay put."""
    before = _blobs(400, [(0, 0), (4, 0)], 3)
    old = fit_segment_model(before, _cfg((2, 2)))
    grown = _blobs(400, [(0, 0), (4, 0), (2, 6)], 3)
    prev, _ = old.predict(grown)  # the newcomers were published in the old segments, for want of a better one
    new = fit_segment_model(grown, _cfg((3, 3)), previous=old)
    new_id = [s for s in new.segment_ids if s not in old.segment_ids]
    assert emerged_segments(old, new, grown) == new_id
    churn = refit_churn(old, new, grown, prev)
    assert churn["membership_churn_stable"] < 0.01 and churn["moved_to_new_kind"] > 0.3
    assert churn["emerged_segments"] == 1 and churn["membership_churn"] > 0.3
    decision = decide_promotion({**churn, "silhouette": 0.5}, {"silhouette": 0.5}, 0.05, max_membership_churn=0.02)
    assert decision.promote and "moved to 1 new kind(s) of shopper" in decision.reason


def test_the_gate_refuses_a_candidate_that_moves_too_many_stable_users():
    good = {"silhouette": 0.5, "membership_churn_stable": 0.02}
    bad = {"silhouette": 0.5, "membership_churn_stable": 0.12}
    served = {"silhouette": 0.5}
    assert decide_promotion(good, served, 0.05, max_membership_churn=0.05).promote
    refused = decide_promotion(bad, served, 0.05, max_membership_churn=0.05)
    assert not refused.promote and "membership_churn_stable" in refused.failed and "0.120 > 0.050" in refused.reason
    assert decide_promotion(bad, None, 0.05, max_membership_churn=0.05).promote  # nothing in service: nobody to move
    assert decide_promotion(bad, served, 0.05, max_membership_churn=None).promote


def test_the_gate_measures_both_models_stability_on_todays_users():
    """The stability the gate compares is measured on today's users for both models (the one recorded when the
    model in service was fitted described the population of then: every re-fit after a drift looked less stable)."""
    from seg_assets.segmentation.assets import gate_metrics

    before = _blobs(400, [(0, 0), (1.5, 0)], 3)
    old = fit_segment_model(before, _cfg((2, 2)))
    today = _blobs(400, [(0, 0), (1.0, 0)], 5)
    new = fit_segment_model(today, _cfg((2, 2)), previous=old)
    assert stability_on(new, today) == pytest.approx(new.metrics["stability"])  # the same measure as at fit time
    assert stability_on(old, before) == pytest.approx(old.metrics["stability"])
    assert gate_metrics(old, today, "logreg", 0)["stability"] == pytest.approx(stability_on(old, today))
    assert stability_on(old, today) != pytest.approx(old.metrics["stability"])


def test_a_model_in_service_with_one_segment_does_not_lock_out_later_fits():
    """Fitted on 12 users (or identical ones), the model in service has one segment: trivially stable, and every
    refit moves users; it would refuse every fit once the data is there."""
    one = {"silhouette": None, "stability": 1.0, "segments_used": 1}
    fit = {"silhouette": 0.4, "stability": 0.9, "segments_used": 5, "membership_churn_stable": 1.0}
    decision = decide_promotion(fit, one, 0.05, max_membership_churn=0.02)
    assert decision.promote and "one segment" in decision.reason
    assert not decide_promotion({**fit, "segments_used": 1}, one, 0.05, max_membership_churn=0.02).promote


def test_a_refused_fit_is_retried_a_day_later_not_every_hour():
    """Drift that persists while the gate refuses every candidate: 'when_needed' fits again once a day of data later."""
    from datetime import datetime, timedelta

    from seg_assets.segmentation.assets import SegmentModelConfig, refit_reason
    from seg_assets.segmentation.registry import Fit

    before, today = _blobs(200, [(0, 0), (3, 0)], 1), _blobs(200, [(1.5, 1.5), (4.5, 1.5)], 2)  # today drifted
    served = fit_segment_model(before, _cfg((2, 2)), version="v0001", as_of=datetime(2026, 11, 1))
    cfg, t = SegmentModelConfig(), datetime(2026, 11, 2)
    assert refit_reason(served, today, t, cfg, 0.25).startswith("population drift")
    refused = Fit("v0002", t)  # fitted at t and refused: v0001 still serves
    assert refit_reason(served, today, t + timedelta(hours=1), cfg, 0.25, latest=refused) is None
    assert refit_reason(served, today, t + timedelta(hours=25), cfg, 0.25, latest=refused).startswith("population drift")
    hourly = SegmentModelConfig(refit_retry_hours=0)
    assert refit_reason(served, today, t, hourly, 0.25, latest=refused) is None  # never again on the same data
    assert refit_reason(served, today, t + timedelta(hours=1), hourly, 0.25, latest=refused) is not None


def test_the_gate_measures_churn_from_the_segment_scoring_sticks_to_not_a_backfills_past():
    """After `refresh --as-of` in the past, analytics.user_segments holds that day's segments while the open spells
    of segment_history hold today's, which scoring's sticky rule keeps users in. The gate's churn must be measured
    from the same place: a candidate that keeps every user where they are now moves nobody."""
    import duckdb

    from seg_assets.segmentation.assets import churn_metrics
    from seg_assets.segmentation.availability import CONSTANT

    frame = _blobs(200, [(0, 0), (4, 0)], 3)
    served = fit_segment_model(frame, _cfg((2, 2)))
    now, _ = served.predict(frame)
    candidate = fit_segment_model(frame, _cfg((2, 2)), previous=served)  # same users, same data: moves nobody
    assert (sticky_model_assign(candidate, frame, now, 3.0)[0] == now).all()
    a, b = served.segment_ids
    past = np.where(now == a, b, a)  # what the backfill published: every user in the other segment
    users = frame["user_id"]
    con = duckdb.connect()
    con.sql("CREATE SCHEMA analytics")
    con.register("published", pl.DataFrame({"user_id": users, "segment_id": past}))
    con.sql("CREATE TABLE analytics.user_segments AS SELECT * FROM published")
    spells = pl.DataFrame({"user_id": pl.concat([users, users]), "segment_id": np.concatenate([past, now]),
                           "closed": [True] * len(users) + [False] * len(users)})
    con.register("spells", spells)
    con.sql("CREATE TABLE analytics.segment_history AS SELECT user_id, segment_id::INTEGER AS segment_id, "
            "TIMESTAMP '2026-10-01' AS valid_from, CASE WHEN closed THEN TIMESTAMP '2026-10-15' END AS valid_to "
            "FROM spells")
    churn = churn_metrics(con, served, candidate, frame, seed=0)
    assert churn["users_compared"] == frame.height
    assert churn["membership_churn"] == 0.0 and churn["membership_churn_stable"] == 0.0
    assert churn["stable_users"] == frame.height
    feature = served.features[0]  # a gained feature: only the users without its data count as barely changed
    gained = churn_metrics(con, served, candidate, frame, seed=0, gained=[(feature, CONSTANT)])
    assert gained["stable_users"] == int((frame[feature].fill_null(0) == 0).sum())


def test_each_model_keeps_users_with_its_own_margin_in_the_gate():
    """"Barely changed" is what the model in service's scoring would keep, with its own sticky_odds: a candidate
    fitted with another margin does not change who counts as stable."""
    from dataclasses import replace

    frame = _blobs(200, [(0, 0), (4, 0)], 3)
    served = fit_segment_model(frame, _cfg((2, 2)))
    served = replace(served, config=replace(served.config, sticky_odds=float("inf")))  # it never moves anyone
    candidate = fit_segment_model(frame, _cfg((2, 2)), previous=served)
    candidate = replace(candidate, config=replace(candidate.config, sticky_odds=1.0))  # plain argmax
    now, _ = served.predict(frame)
    a, b = served.segment_ids
    previous = np.where(now == a, b, a)  # everyone published in the other segment
    churn = refit_churn(served, candidate, frame, previous)
    assert churn["stable_users"] == frame.height  # the model in service keeps them all
    assert churn["membership_churn"] == 1.0  # and the candidate, by its own margin, moves them all


T0 = datetime(2026, 9, 1)
LIFECYCLE_FEATURES = ("monetary", "frequency", "tenure_days", "recency_days")


def _stage_population(seed: int) -> pl.DataFrame:
    """Every day's shop: 30 % new users (tenure <= 30) of two kinds (small / big first basket), 70 % engaged of two."""
    rng = np.random.default_rng(seed)
    n_new, n_eng = 600, 1400
    small = rng.random(n_new) < 0.5
    new = pl.DataFrame({"monetary": np.where(small, rng.normal(20, 4, n_new), rng.normal(200, 30, n_new)).clip(1),
                        "frequency": np.ones(n_new), "tenure_days": rng.uniform(1, 29, n_new),
                        "recency_days": rng.uniform(0, 20, n_new)})
    loyal = rng.random(n_eng) < 0.5
    eng = pl.DataFrame({"monetary": np.where(loyal, rng.normal(600, 80, n_eng), rng.normal(80, 15, n_eng)).clip(1),
                        "frequency": np.where(loyal, rng.normal(8, 1.5, n_eng), rng.normal(2, 0.5, n_eng)).clip(1),
                        "tenure_days": rng.uniform(60, 400, n_eng), "recency_days": rng.uniform(0, 60, n_eng)})
    out = pl.concat([new, eng])
    return out.with_columns(pl.Series("user_id", [f"u{seed}_{i:05d}" for i in range(out.height)]))


def _lifecycle_cfg(new_k):
    return ModelConfig(features=LIFECYCLE_FEATURES, hierarchy="lifecycle", k_range=(2, 2), new_k=new_k, balance_groups=False,
                       selection=SelectionConfig(k_min=2, k_max=2, random_state=0))


def test_a_split_of_new_customers_a_month_later_is_no_new_kind_of_shopper():
    """A reviewer's: grown 40 days older, every user of the fit's reference sample had left the "new" stage, so a split
    of New customers held no share of it and was taken for a new kind (its moves not counted as churn)."""
    before = _stage_population(1)
    old = fit_segment_model(before, _lifecycle_cfg((1, 1)), as_of=T0)
    today = _stage_population(2)  # the same kinds of shopper, 40 days later
    prev, _ = old.predict(today)
    new = fit_segment_model(today, _lifecycle_cfg((2, 2)), previous=old, as_of=T0 + timedelta(days=40))
    split = [s for s in new.segment_ids if s not in old.segment_ids]
    assert split, "the candidate split New customers"
    churn = refit_churn(old, new, today, prev)
    # the same split fitted only 5 days later is judged a split (churn counted): the 40-day one must be too
    assert emerged_segments(old, new, today) == [], "a split of 'new' customers taken for a new kind of shopper"
    assert churn["moved_to_new_kind"] == 0.0 and churn["membership_churn_stable"] > 0.02


def test_a_backfill_sticks_to_the_segment_recorded_for_its_day_not_a_later_one():
    """`refresh --as-of` in the past (a backfill) must not read the future: its sticky rule starts from the spell of
    segment_history in force at its as-of, not from the open spell a later refresh recorded (h3, session 34: a
    backfill to 10-15 run on 11-02 published 37 users in their 11-02 segment whose features were those of the
    10-15 publication, where they had been in another). Refreshes at or after the latest recorded as-of are
    unchanged: the open spell, else the published row."""
    import duckdb

    from seg_assets.segmentation.membership import previous_id_sql

    con = duckdb.connect()
    con.sql("CREATE SCHEMA analytics")
    con.sql("CREATE TABLE analytics.segment_history (user_id VARCHAR, segment_id INTEGER, valid_from TIMESTAMP, "
            "valid_to TIMESTAMP)")
    con.sql("""INSERT INTO analytics.segment_history VALUES
        ('a', 1, '2026-10-01', '2026-10-20'), ('a', 2, '2026-10-20', NULL),   -- moved 1 -> 2 on 10-20
        ('b', 3, '2026-10-20', NULL)                                          -- first scored on 10-20""")
    con.sql("CREATE TABLE analytics.user_segments AS SELECT * FROM (VALUES ('a', 2), ('b', 3), ('c', 4)) t(user_id, segment_id)")

    def previous(as_of):
        join, expr = previous_id_sql(True, "s", "u.user_id", as_of)
        return dict(con.sql(f"SELECT u.user_id, {expr} FROM (VALUES ('a'), ('b'), ('c')) u(user_id) "
                            f"LEFT JOIN analytics.user_segments s ON s.user_id = u.user_id {join}").fetchall())

    assert previous(None) == {"a": 2, "b": 3, "c": 4}  # the open spells, else the published row (as before)
    assert previous(datetime(2026, 10, 20)) == {"a": 2, "b": 3, "c": 4}  # a re-run at the latest as-of
    assert previous(datetime(2026, 11, 2, 2, 30)) == {"a": 2, "b": 3, "c": 4}  # a later refresh
    # a backfill: the spell in force on its day; no spell then is no previous segment (not today's published row)
    assert previous(datetime(2026, 10, 15)) == {"a": 1, "b": None, "c": None}


def _broad(n: int, seed: int) -> pl.DataFrame:
    """One broad cloud: at k=5 the clusters are cut by the sample and the restarts, the noisiest case of stability."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(0, 1.0, size=(n, 2))
    return pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(n)], "monetary": np.exp(pts[:, 0]),
                         "frequency": np.exp(pts[:, 1])})


def _seeded(k: tuple[int, int], seed: int) -> ModelConfig:
    return ModelConfig(features=("monetary", "frequency"), hierarchy="flat", k_range=k, balance_groups=False,
                       stability_sample=1_000, selection=SelectionConfig(k_min=k[0], k_max=k[1], random_state=seed))


def test_a_candidate_like_the_model_in_service_is_never_refused_for_stability():
    """Re-fitted on the same users with another seed, a candidate of the same k is the same model as far as
    stability goes: paired (the same rows, bootstrap samples and seeds, gate.py) its figure is the model in service's,
    whatever the seed. Measured apart (each its own seeds and restarts), these five candidates scored 0.651-0.783
    against the model in service's 0.807: three of five were refused."""
    from seg_assets.segmentation.assets import gate_pair
    from seg_assets.segmentation.quality import stability_pair

    frame = _broad(1_500, 0)
    served = fit_segment_model(frame, _seeded((5, 5), 0), version="v1")
    for seed in range(1, 6):
        candidate = fit_segment_model(frame, _seeded((5, 5), seed), previous=served, version="v2")
        ours, theirs = stability_pair(candidate, served, frame, seed)
        assert ours == theirs == stability_on(served, frame, seed, space=candidate)
        c, s = gate_pair(candidate, served, frame, "logreg", seed)
        decision = decide_promotion(c, s, 0.05)
        assert decision.deltas["stability"] == 0.0 and "stability" not in decision.failed
        assert c["behaviour_clusters"] == s["behaviour_clusters"] == 5


def test_stability_of_a_candidate_of_another_k_is_measured_on_the_same_rows_and_samples():
    """Paired, not equalised: a candidate of another k gets its own figure, re-fitted on the rows and bootstrap samples
    the model in service's is (the candidate's features and seeds), and a clearly less stable k is still refused."""
    from seg_assets.segmentation.assets import gate_pair
    from seg_assets.segmentation.quality import stability_pair

    frame = _blobs(400, [(0, 0), (3, 0), (0, 3)], 1)
    served = fit_segment_model(frame, _seeded((3, 3), 0), version="v1")
    candidate = fit_segment_model(frame, _seeded((6, 6), 2), previous=served, version="v2")  # 0.81 vs 0.96
    ours, theirs = stability_pair(candidate, served, frame, 4)
    assert ours == stability_on(candidate, frame, 4) and theirs == stability_on(served, frame, 4, space=candidate)
    assert theirs != stability_on(served, frame, 4)  # its own space and seeds: unpaired
    c, s = gate_pair(candidate, served, frame, "logreg", 4)
    assert (c["stability"], s["stability"]) == (ours, theirs) and ours < theirs - 0.05
    assert "stability" in decide_promotion(c, s, 0.05).failed


def test_stability_re_fits_restart_as_often_as_a_fit_so_a_poor_restart_is_not_instability():
    """Six clear groups in eight features: a fit (4 restarts) finds them every time. Re-fitted with 2 restarts, half
    the seeds scored ~0.86 instead of ~0.96: the figure measured unlucky restarts, not the sample."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(6, 8))
    X = np.vstack([rng.normal(c, 0.5, size=(300, 8)) for c in centres])
    features = tuple(f"f{i}" for i in range(8))
    frame = pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(len(X))], **{f: X[:, j] for j, f in enumerate(features)}})
    figures = []
    for seed in range(8):
        cfg = ModelConfig(features=features, hierarchy="flat", k_range=(6, 6), balance_groups=False, skew_transform="none",
                          clip_quantile=None, stability_sample=1_000,
                          selection=SelectionConfig(k_min=6, k_max=6, random_state=seed))
        model = fit_segment_model(frame, cfg)
        assert stability_on(model, frame, seed) == model.metrics["stability"]  # the gate's measure is the fit's
        figures.append(model.metrics["stability"])
    assert np.median(figures) > 0.94, figures  # with 2 restarts: 0.912 (four of eight seeds at 0.86)
