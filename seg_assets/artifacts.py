"""Model artifacts on disk: joblib files written atomically (a reader never sees half an artifact)."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import joblib

# What the model artifacts unpickle into (segment model, classifier, churn model and its calibrator).
MODEL_LIBRARIES = ("sklearn.preprocessing", "sklearn.cluster", "sklearn.linear_model", "sklearn.ensemble",
                   "sklearn.isotonic")
_preload_started = threading.Event()


def preload_model_libraries() -> None:
    """Import scikit-learn (and the SciPy it imports) in a background thread, once per process.

    Every refresh unpickles model artifacts, and the first one imports scikit-learn: about 0.8 s of CPU
    inside ``segment_model``. Ingestion starts this first: it spends its time in DuckDB, which releases
    the GIL, so the import runs beside it (1M users: ingestion +0.35 s, ``segment_model`` -0.83 s). A
    step that needs a module the thread is still importing waits for it (Python's import lock).
    """
    if not _preload_started.is_set():
        _preload_started.set()
        threading.Thread(target=lambda: [importlib.import_module(m) for m in MODEL_LIBRARIES],
                         name="preload-scikit-learn", daemon=True).start()


def save_artifact(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    joblib.dump(obj, tmp, compress=3)
    tmp.replace(path)
    return path
