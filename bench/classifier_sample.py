"""How many rows ``segment_classifier`` needs: classifiers of the in-service model's labels trained on 200k, 100k and
50k users, their held-out macro-F1, and how many of all users each assigns another segment than the 200k one
(``batch.assign``, as ``user_segments`` makes a first assignment).

    python bench/classifier_sample.py DATA_DIR [SEED]    # DATA_DIR: a COPY of a data folder (the registry is opened
                                                         # for writing, as the assets do)
"""

import sys
import time

import duckdb
import numpy as np

from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import read_features
from seg_assets.segmentation.batch import assign
from seg_assets.segmentation.classifier import train_classifier
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.selection import sample_indices

SIZES = (200_000, 100_000, 50_000)


def main(root: str, seed: int) -> None:
    con = duckdb.connect(f"{root}/warehouse.duckdb")
    model = SegmentModel.load(registry.in_service_model(con).artifact)
    frame = read_features(con, model.input_columns())
    con.close()
    truth, _ = model.predict(frame)
    assigned = {}
    for rows in SIZES:
        sample = frame[sample_indices(frame.height, rows, seed)]
        labels, _ = model.predict(sample)
        wall, cpu = time.perf_counter(), time.process_time()
        clf = train_classifier(sample, labels, "logreg", features=model.features, max_rows=rows, seed=seed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assigned[rows], _ = assign(frame, model, clf)
        print(f"{rows:>7,} rows: training {wall:.2f} s wall, {cpu:.2f} s CPU; held-out macro-F1 {clf.metrics['macro_f1']:.4f}, "
              f"accuracy {clf.metrics['accuracy']:.4f}; same segment as the model itself for "
              f"{np.mean(assigned[rows] == truth):.4%} of {frame.height:,} users", flush=True)
    for rows in SIZES[1:]:
        moved = assigned[rows] != assigned[SIZES[0]]
        print(f"{rows:,} vs {SIZES[0]:,} rows: {moved.sum():,} users ({moved.mean():.3%}) assigned another segment")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
