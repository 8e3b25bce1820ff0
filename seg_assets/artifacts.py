"""Model artifacts on disk: joblib files written atomically (a reader never sees half an artifact)."""

from __future__ import annotations

from pathlib import Path

import joblib


def save_artifact(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    joblib.dump(obj, tmp, compress=3)
    tmp.replace(path)
    return path
