"""The churn model on synthetic buy-till-you-die data: honest holdout, calibration, persistence; BG/NBD maths."""

from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from seg_assets.churn.bgnbd import BGNBD, fit_bgnbd, log_likelihood, summarize
from seg_assets.churn.model import OUT_OF_TIME, UNSEEN_USERS, Calibrator, ChurnModel, holdout_split, risk_levels, train_churn_model
from seg_assets.churn.snapshots import build_snapshots, first_order_ts, plan_snapshots

START = datetime(2024, 1, 1)


def simulate_orders(customers: int, days: int, seed: int = 0, acquisition_days: int = 60) -> pl.DataFrame:
    """BG/NBD-like purchases: a gamma-distributed daily rate, a beta-distributed drop-out chance after each purchase."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        rate = rng.gamma(0.9, 1 / 25)  # mean about one purchase per 28 days
        drop = rng.beta(1.0, 4.0)
        t = rng.uniform(0, acquisition_days)
        n = 0
        while t < days:
            rows.append((f"o{c}-{n}", f"c{c:05d}", START + timedelta(days=float(t)), round(float(rng.gamma(2, 10)), 2)))
            n += 1
            if rng.random() < drop:
                break
            t += rng.exponential(1 / rate)
    return pl.DataFrame(rows, schema=["order_id", "user_id", "order_ts", "amount"], orient="row")


def warehouse(orders: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql("CREATE SCHEMA staging")
    frame = orders.with_columns(items=pl.lit(1), category=pl.lit(None, dtype=pl.String), discount=pl.lit(0.0),
                                status=pl.lit("completed"))
    con.register("orders_frame", frame)
    con.sql("CREATE TABLE staging.stg_orders AS SELECT * FROM orders_frame")
    con.unregister("orders_frame")
    return con


@pytest.fixture(scope="module")
def snapshots():
    con = warehouse(simulate_orders(1_500, 300, seed=3))
    as_of = START + timedelta(days=300)
    plan = plan_snapshots(first_order_ts(con, as_of), as_of, 60, step_days=20)
    frame = build_snapshots(con, plan)
    con.close()
    return frame, plan


def test_time_based_holdout_never_trains_on_an_overlapping_window(snapshots):
    frame, plan = snapshots
    split = holdout_split(frame, 60)
    assert split.scheme == OUT_OF_TIME
    c0 = plan.cutoffs[0]
    assert (frame.filter(pl.Series(split.train))["snapshot_ts"] + timedelta(days=60)).max() <= c0
    assert set(frame.filter(pl.Series(split.test))["snapshot"]) == {0}
    # Too little history for that: hold out unseen users instead (their snapshot 0 only).
    short = frame.filter(pl.col("snapshot") <= 1)
    split = holdout_split(short, 60)
    assert split.scheme == UNSEEN_USERS
    train_users = set(short.filter(pl.Series(split.train))["user_id"])
    test_users = set(short.filter(pl.Series(split.test))["user_id"])
    assert train_users and test_users and not train_users & test_users
    assert set(short.filter(pl.Series(split.test))["snapshot"]) == {0}


@pytest.mark.parametrize("kind", ["auto", "gbm", "logreg"])
def test_train_evaluate_calibrate(snapshots, kind, tmp_path):
    frame, plan = snapshots
    model = train_churn_model(frame, horizon_days=60, kind=kind, as_of=plan.as_of, cutoffs=plan.cutoffs)
    h = model.metrics["holdout"]
    assert model.kind in ("gbm", "logreg") and (kind == "auto" or model.kind == kind)
    assert set(model.metrics["candidates"]) == ({"gbm", "logreg"} if kind == "auto" else {kind})
    assert h["roc_auc"] > 0.7 and h["roc_auc"] > h["roc_auc_recency_only"] - 0.02
    assert h["brier"] < h["brier_base_rate"]  # better than always predicting the base rate
    assert abs(h["mean_churn_probability"] - h["churn_rate"]) < 0.05  # calibrated in the large
    assert 0 < h["pr_auc"] <= 1 and h["rows"] == frame.filter(pl.col("snapshot") == 0).height
    assert model.metrics["value_holdout"]["mae"] < model.metrics["value_holdout"]["mae_mean_baseline"] * 1.2
    today = frame.filter(pl.col("snapshot") == 0)
    p = model.churn_probability(today)
    assert p.min() >= 0 and p.max() <= 1 and len(np.unique(p)) > 10
    assert model.expected_value(today).min() >= 0
    both = model.scores(today)  # scoring's one matrix for both columns: the same figures as the two calls
    assert np.array_equal(both[0], p) and np.array_equal(both[1], model.expected_value(today))
    path = model.save(tmp_path / "m.joblib")
    assert np.array_equal(ChurnModel.load(path).churn_probability(today), p)


def test_sigmoid_calibration_keeps_the_ranking():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 2_000)
    y = (rng.uniform(0, 1, 2_000) < scores ** 2).astype(int)
    cal = Calibrator("sigmoid").fit(scores, y).transform(scores)
    assert np.array_equal(np.argsort(cal, kind="stable"), np.argsort(scores, kind="stable"))
    iso = Calibrator("isotonic").fit(scores, y).transform(scores)
    assert abs(iso.mean() - y.mean()) < 1e-9 and iso.min() >= 0 and iso.max() <= 1
    assert np.allclose(Calibrator("sigmoid").fit(scores, np.ones(2_000, int)).transform(scores), scores)


def test_risk_levels():
    assert risk_levels(np.array([0.0, 0.39, 0.4, 0.69, 0.7, 1.0]), 0.7, 0.4).tolist() == \
        ["low", "low", "medium", "medium", "high", "high"]


def test_bgnbd_likelihood_and_predictions():
    params = (0.25, 4.0, 0.8, 2.5)
    r, alpha, a, b = params
    # One customer with x = 0: L = (alpha / (alpha + T))^r.
    assert log_likelihood(params, np.array([0.0]), np.array([0.0]), np.array([10.0]))[0] == pytest.approx(r * np.log(alpha / (alpha + 10)))
    from scipy.special import beta, gamma

    x, tx, big_t = 2.0, 5.0, 10.0
    hand = (beta(a, b + x) / beta(a, b) * gamma(r + x) * alpha ** r / (gamma(r) * (alpha + big_t) ** (r + x))
            + beta(a + 1, b + x - 1) / beta(a, b) * gamma(r + x) * alpha ** r / (gamma(r) * (alpha + tx) ** (r + x)))
    assert log_likelihood(params, np.array([x]), np.array([tx]), np.array([big_t]))[0] == pytest.approx(np.log(hand))
    model = BGNBD(r, alpha, a, b, 0.0)
    assert model.p_alive([0], [0], [10])[0] == 1.0
    assert model.p_alive([3], [9], [10])[0] > model.p_alive([3], [2], [10])[0]  # recent buyers are more likely alive
    assert model.expected_purchases(5, [3], [9], [10])[0] > model.expected_purchases(5, [0], [0], [10])[0]


def test_bgnbd_fit_on_simulated_data():
    orders = simulate_orders(1_500, 300, seed=11)
    s = summarize(orders, START + timedelta(days=200))
    model = fit_bgnbd(s["x"], s["t_x"], s["T"])
    assert model.a > 0 and model.b > 0 and model.r > 0 and np.isfinite(model.log_likelihood)
    assert s["x"].min() == 0 and (s["t_x"] <= s["T"]).all()


def test_convergence_warnings_become_notes_and_other_warnings_pass_through():
    """A 120-user shop's value model stopped at its iteration limit and the refresh printed scikit-learn's six lines."""
    import warnings

    from sklearn.linear_model import PoissonRegressor

    from seg_assets.churn.model import convergence_notes

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)) * 100, rng.poisson(50, size=200)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with convergence_notes() as notes:
            PoissonRegressor(max_iter=1).fit(x, y)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert len(notes) == 1 and "failed to converge" in notes[0] and "\n" not in notes[0]
    assert [str(w.message) for w in shown] == ["something else"]


@pytest.mark.parametrize("kind", ["gbm", "logreg"])
def test_permutation_importance_in_one_call_is_scikit_learns(snapshots, kind):
    """model._importances scores every shuffled copy in one call of the model: the same figures as scikit-learn's
    permutation_importance (one call per feature and repeat) on the same rows, seed and shuffles."""
    from sklearn.inspection import permutation_importance

    from seg_assets.churn.model import IMPORTANCE_REPEATS, IMPORTANCE_ROWS, _importances, _matrix, make_classifier
    from seg_assets.segmentation.selection import sample_indices

    frame, _ = snapshots
    features = ("recency_days", "frequency", "monetary", "tenure_days", "orders_per_30d", "mean_gap_days")
    x, y = _matrix(frame, features), frame["churned"].to_numpy().astype(np.int64)
    clf = make_classifier(kind, seed=0).fit(x, y)
    for seed in (0, 5):
        ours = _importances(clf, x, y, features, seed)
        idx = sample_indices(len(y), IMPORTANCE_ROWS, seed + 17)
        theirs = permutation_importance(clf, x[idx], y[idx], scoring="roc_auc", n_repeats=IMPORTANCE_REPEATS,
                                        random_state=seed).importances_mean
        expected = pl.DataFrame({"feature": list(features), "auc_drop": theirs}).sort("auc_drop", descending=True)
        assert ours["feature"].to_list() == expected["feature"].to_list()
        assert np.allclose(ours["auc_drop"].to_numpy(), expected["auc_drop"].to_numpy(), rtol=0, atol=1e-12)
        assert ours["auc_drop"].abs().max() > 0.001  # the shuffles do move the AUC (not a vacuous comparison)


def test_a_user_scored_alone_has_the_inputs_of_a_batch_of_many():
    """A refresh re-scores the users with new rows, often one: polars divided a one-row column by a constant truly and
    a longer one by its reciprocal, so a user's churn inputs differed in the last digit with the batch (h2, session 35)."""
    from seg_assets.churn.model import churn_inputs

    frame = pl.DataFrame({"user_id": ["a", "b", "c"], "frequency": [3, 1, 0], "monetary": [70.0, 10.0, 0.0],
                          "recency_days": [10.583333333333334, 3.0, 7.0], "tenure_days": [3.3, 40.0, 7.0],
                          "first_seen_ts": [datetime(2026, 10, 20, 9)] * 3,  # a's span 25 hours
                          "last_order_ts": [datetime(2026, 10, 21, 10), datetime(2026, 10, 1), None]})
    batch = churn_inputs(frame)
    for i in range(frame.height):
        assert churn_inputs(frame[i:i + 1]).row(0) == batch.row(i), i
