"""Model artifacts on disk: joblib files written atomically (a reader never sees half an artifact), recorded in the
warehouse relative to its data root's ``models/`` folder, so a data root that is moved, restored elsewhere or mounted
at another path (a container) still finds its models."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import joblib

from seg_assets.settings import data_paths

# What the model artifacts unpickle into (segment model, classifier, churn model and its calibrator).
MODEL_LIBRARIES = ("sklearn.preprocessing", "sklearn.cluster", "sklearn.linear_model", "sklearn.ensemble",
                   "sklearn.isotonic")
_preload_started = threading.Event()
# The largest seed a model setting takes: numpy's and scikit-learn's random_state is below 2**32, and steps derive
# seeds from it (seed + 21).
MAX_SEED = 2**31 - 1


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


def load_artifact(path: str | Path):
    """A saved model. A file that cannot be unpickled (overwritten, cut short by a restore, a disk fault) is one line
    naming it and what to do, never retried: pickle raised a bare ``KeyError: 216``, retried twice, with a traceback
    (a tester's)."""
    from seg_assets.errors import input_failure

    try:
        return joblib.load(path)
    except Exception as exc:  # pickle raises anything on bad bytes: KeyError, EOFError, UnpicklingError, ValueError
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else 'unreadable'}"
        raise input_failure(f"the model file {path} cannot be read ({why}): restore it from a backup of models/ (the "
                            "warehouse's registry names it), or move warehouse.duckdb and models/ aside and refresh to "
                            "rebuild from landing/ (the registry, segment history and campaign groups start again)") from None


def _models_dir(con) -> Path | None:
    """The ``models/`` folder of the data root whose warehouse ``con`` is on (None: an in-memory database)."""
    rows = con.sql("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return data_paths(Path(rows[0][0]).parent).models if rows and rows[0][0] else None


def recorded_path(con, path: Path) -> str:
    """How an artifact's path is stored in the registry: relative to the data root's models folder."""
    models = _models_dir(con)
    try:
        return Path(path).resolve().relative_to(models.resolve()).as_posix() if models else str(path)
    except ValueError:  # outside the models folder: kept as given
        return str(path)


def located_path(con, recorded: str) -> Path:
    """Where a registered artifact is now. An absolute path stored by an earlier version, under a data root since
    moved, is found again by its part below ``models/``."""
    path, models = Path(recorded), _models_dir(con)
    if models is None:
        return path
    if not path.is_absolute():
        return models / path
    if path.exists() or "models" not in path.parts:
        return path
    below = path.parts[len(path.parts) - path.parts[::-1].index("models"):]
    return models.joinpath(*below)
