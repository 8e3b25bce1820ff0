"""The honest baseline: the script a data scientist would write instead of the pipeline.

Read every landing file with pandas, drop re-delivered orders, RFM + click counts per funnel stage per
user, StandardScaler, KMeans(6), a LogisticRegression that predicts the segment, write one parquet table.
No sampling, no incremental tricks, no validation, no history: what the tutorials do, written as lean as
a competent data scientist would (issue 13 asks for that): only the columns used are read (a third less
time reading the clicks), event names are mapped to stages once per distinct name with a dict, and the
groupbys are vectorized on pandas 3's pyarrow-backed strings. Clicks are not de-duplicated: a tutorial
script does not, and the benchmark data holds no repeated event id, so the figures are the same (at 1M
users ``drop_duplicates("event_id")`` over 30M clicks was 13 s of a 74 s script: a baseline that does work
nobody would write flatters the pipeline). Orders are (1 s): a repeated order would count its money twice.
Tried and not faster on 5M clicks: counting per event name first and summing per stage (2.97 s + pivot vs
0.96 + 2.30 s), sessions from distinct (user, session) pairs (1.36 s vs ``nunique`` 1.27 s). The
LogisticRegression converges (145 of its 1000 iterations at 1M users, 26 s): the default 100 stops early.

    python bench/naive.py LANDING_DIR OUT.parquet
"""

from __future__ import annotations

import argparse
import glob
import os

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from seg_assets.ingest.events import stage_of

FEATURES = ["recency_days", "frequency", "monetary", "avg_order_value", "sessions", "view", "search",
            "add_to_cart", "checkout"]


def read_folder(folder: str, columns: list[str]) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(os.path.join(folder, "*"))):
        if path.endswith(".parquet"):
            frames.append(pd.read_parquet(path, columns=columns))
        elif path.endswith((".csv", ".csv.gz")):
            frames.append(pd.read_csv(path, usecols=columns))
    return pd.concat(frames, ignore_index=True)


def build_features(landing: str) -> pd.DataFrame:
    orders = read_folder(os.path.join(landing, "orders"), ["order_id", "user_id", "order_ts", "amount", "status"])
    orders = orders.drop_duplicates("order_id")
    orders["order_ts"] = pd.to_datetime(orders["order_ts"], utc=True)
    clicks = read_folder(os.path.join(landing, "clicks"), ["user_id", "session_id", "event_ts", "event_type"])
    clicks["event_ts"] = pd.to_datetime(clicks["event_ts"], utc=True)
    now = max(orders["order_ts"].max(), clicks["event_ts"].max())

    completed = orders[orders["status"] == "completed"]
    rfm = completed.groupby("user_id").agg(
        last_order=("order_ts", "max"), frequency=("order_id", "count"), monetary=("amount", "sum"))
    rfm["recency_days"] = (now - rfm["last_order"]).dt.days
    rfm["avg_order_value"] = rfm["monetary"] / rfm["frequency"]

    stages = {name: stage_of(name) for name in clicks["event_type"].dropna().unique()}
    clicks["stage"] = clicks["event_type"].map(stages)
    events = clicks.groupby(["user_id", "stage"]).size().unstack(fill_value=0)
    events["sessions"] = clicks.groupby("user_id")["session_id"].nunique()

    users = rfm.drop(columns="last_order").join(events, how="outer")
    for col in FEATURES:
        if col not in users:
            users[col] = 0
    users["recency_days"] = users["recency_days"].fillna((now - orders["order_ts"].min()).days)
    return users.fillna(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing")
    parser.add_argument("out")
    parser.add_argument("--clusters", type=int, default=6)
    args = parser.parse_args()

    users = build_features(args.landing)
    X = StandardScaler().fit_transform(users[FEATURES])
    kmeans = KMeans(n_clusters=args.clusters, n_init="auto", random_state=0).fit(X)
    users["segment"] = kmeans.labels_
    classifier = LogisticRegression(max_iter=1000).fit(X, users["segment"])
    users["predicted_segment"] = classifier.predict(X)
    users.reset_index(names="user_id").to_parquet(args.out, index=False)
    print(f"{len(users):,} users, {args.clusters} segments, classifier accuracy "
          f"{(users['segment'] == users['predicted_segment']).mean():.3f} -> {args.out}")


if __name__ == "__main__":
    main()
