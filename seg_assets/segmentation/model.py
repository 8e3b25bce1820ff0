"""The fitted segment model (one joblib artifact per version) and its design; fit.py builds it.

Design decision: **hierarchical segments, lifecycle first** (``hierarchy="lifecycle"``, default).
Every user is first put in a coarse lifecycle stage by two visible thresholds on raw features:

* ``new``: ``tenure_days <= new_max_tenure_days`` (30), whatever else they did;
* ``lapsed``: no order and no visit for more than ``lapsed_after_days`` (90), i.e.
  ``min(recency_days, days_since_last_visit) > 90``;
* ``engaged``: everyone else.

Behaviour clusters (k chosen by silhouette in ``k_range``; the pipeline passes SegmentModelConfig's k_min..k_max,
2..8 by default, so 4..10 segments in all) are fitted inside ``engaged``; ``new`` and ``lapsed`` are one segment
each by default (configurable k ranges). Why:

* "new" and "lapsed" are *states in time*, not behaviours. In a flat k-means they are one or two
  coordinates among twenty and blur into the behaviour clusters (a lapsed occasional buyer sits next
  to an active one). Here they are exact, explainable rules whose meaning cannot drift.
* Ids stay stable. On the demo generator (seg_assets/demo/generate.py, 60k-200k users), three fits
  on independent samples of the same population kept every id with the lifecycle model (stability
  0.98, identical assignments); the flat model changed k between samples (7 -> 8, a new id) with
  stability 0.89. Matching runs once over all segments and never pairs segments across stages.
* Recovery of planted types (ARI; StandardScaler + KMeans(6) on RFM: 0.10-0.19): lifecycle 0.44-0.45
  at 180 days of history (flat 0.48-0.49), 0.61 at 365 days (flat 0.56), 0.30-0.36 at 90-120 days
  (flat 0.35-0.43); on the simulator of the tests, where types separate cleanly, 0.84-0.95 vs
  0.74-0.83. The two are close on recovery; the lifecycle model wins on stability and explainability.
  ``lapsed_after_days=75`` scores ~+0.03 on the demo data (its lapsed users stop 60-120 days before
  the end); 90 is kept because it is the "at risk" boundary of the lifecycle column.

``hierarchy="flat"`` (one stage ``all``) remains available; the lifecycle stage of
rule_based.py stays a separate column either way.

``predict`` returns ``(segment_id, confidence)``. Confidence for a k-means cluster is the posterior
of an isotropic Gaussian mixture with equal weights centred on the stage's centroids and variance
estimated from the fit (softmax of ``-d^2 / (2 sigma^2)``); for GMM the model's own posterior; 1.0
for a stage that is a single segment (the thresholds decide with certainty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seg_assets.artifacts import load_artifact, save_artifact
from seg_assets.segmentation import matching
from seg_assets.segmentation.availability import recency_signals
from seg_assets.segmentation.membership import DEFAULT_ODDS
from seg_assets.segmentation.preprocess import Preprocessor
from seg_assets.segmentation.rule_based import LifecycleThresholds
from seg_assets.segmentation.selection import SelectionConfig

ARTIFACT_FORMAT = 1
STAGE_ORDER = ("engaged", "new", "lapsed", "all")
HIERARCHIES = ("lifecycle", "flat")
DEFAULT_K = (SelectionConfig.k_min, SelectionConfig.k_max)  # behaviour clusters when ModelConfig.k_range is None


@dataclass(frozen=True)
class ModelConfig:
    features: tuple[str, ...] | None = None  # default: MODEL_FEATURES present in the frame
    hierarchy: str = "lifecycle"
    new_max_tenure_days: float = LifecycleThresholds.new_max_tenure_days  # 'new' means what it means in the rules
    lapsed_after_days: float = LifecycleThresholds.at_risk_max_recency_days  # past "at risk" in the rules
    k_range: tuple[int, int] | None = None  # behaviour clusters; None: selection's k_min..k_max (DEFAULT_K)
    new_k: tuple[int, int] = (1, 1)
    lapsed_k: tuple[int, int] = (1, 1)
    min_stage_rows: int = 20  # a smaller stage gets no segment of its own (nearest centroid instead)
    min_cluster_rows: int = 10  # no behaviour cluster of fewer users (a stage gets at most rows // this clusters)
    scaler: str = "standard"
    clip_quantile: float | None = 0.995
    skew_transform: str = "auto"  # heavy tails: sqrt for counts/money, log1p for days (preprocess.py)
    transforms: tuple[tuple[str, str], ...] = ()  # per-feature overrides, e.g. (("monetary", "sqrt"),)
    balance_groups: bool = True
    selection: SelectionConfig = SelectionConfig()
    max_distance: float = matching.DEFAULT_MAX_DISTANCE
    sticky_odds: float = DEFAULT_ODDS  # the refit margin (membership.py); artifacts without it load with the default
    stability_boot: int = 4
    stability_sample: int = 4_000
    reference_rows: int = 20_000  # raw feature sample kept in the artifact (drift reference, plots)

    def __post_init__(self) -> None:
        if self.hierarchy not in HIERARCHIES:
            raise ValueError(f"hierarchy must be one of {HIERARCHIES}, not {self.hierarchy!r}")

    def stage_k(self, stage: str) -> tuple[int, int]:
        if stage == "new":
            return self.new_k
        if stage == "lapsed":
            return self.lapsed_k
        return self.k_range or (self.selection.k_min, self.selection.k_max)


@dataclass
class StageFit:
    name: str
    clusters: list[int]  # global cluster indices of this stage, in the estimator's label order
    estimator: Any = None  # None: the stage is a single segment
    sigma2: float = 1.0  # per-dimension within-cluster variance, the temperature of the confidence
    k_selection: pl.DataFrame | None = None



AGEING = ("tenure_days",)  # features every user gains a day of per day of data time, whatever they do


def aged(frame: pl.DataFrame, since: datetime | None, until: datetime | None) -> pl.DataFrame:
    """Values measured as of ``since`` as they are at ``until``: a population that only grew older is the same
    population. Compared in absolute tenure, 60 days on every segment of a tester's shop was new (the gate then
    refused every re-fit) and the tenure's PSI asked for a re-fit every day."""
    if since is None or until is None:
        return frame
    days = (until.replace(tzinfo=None) - since.replace(tzinfo=None)).total_seconds() / 86_400
    columns = [c for c in AGEING if c in frame.columns]
    return frame.with_columns(pl.col(c) + days for c in columns) if days > 0 and columns else frame


def is_mixture(estimator) -> bool:
    """A GaussianMixture (soft assignments of its own); sklearn is imported when a model is used, not loaded."""
    from sklearn.mixture import GaussianMixture

    return isinstance(estimator, GaussianMixture)

def stage_of(frame: pl.DataFrame, cfg: ModelConfig, features=None) -> np.ndarray:
    """The hierarchy stage of every row (vectorised; see the module docstring); ``features``: the model's."""
    if cfg.hierarchy == "flat":
        return np.full(frame.height, "all", dtype=object)
    signals = recency_signals(features)
    need = ["tenure_days", *signals]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise KeyError(f"hierarchy='lifecycle' needs columns {missing}; use hierarchy='flat'")
    expr = (pl.when(pl.col("tenure_days") <= cfg.new_max_tenure_days).then(pl.lit("new"))
            .when(pl.min_horizontal(*signals) > cfg.lapsed_after_days).then(pl.lit("lapsed"))
            .otherwise(pl.lit("engaged")))
    return frame.select(expr.alias("s"))["s"].to_numpy().astype(object)


def soft_assign(Z: np.ndarray, centers: np.ndarray, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    # |z - c|^2 = |z|^2 - 2 z.c + |c|^2: no (n, k, d) temporary for millions of rows
    d2 = np.maximum((Z ** 2).sum(axis=1)[:, None] - 2.0 * Z @ centers.T + (centers ** 2).sum(axis=1)[None, :], 0.0)
    label = d2.argmin(axis=1)
    rel = d2 - d2[np.arange(len(d2)), label][:, None]
    conf = 1.0 / np.exp(-rel / (2.0 * max(sigma2, 1e-12))).sum(axis=1)
    return label, conf


@dataclass
class SegmentModel:
    version: str
    algorithm: str
    hierarchy: str
    features: list[str]
    preprocessor: Preprocessor
    stages: dict[str, StageFit]
    centroids: np.ndarray  # (k, d) in the preprocessed space, global cluster order
    centroids_original: np.ndarray  # (k, d) inverse-transformed: each cluster's typical user
    cluster_stage: list[str]
    segment_ids: list[int]  # stable id per global cluster index
    names: list[str]
    config: ModelConfig
    metrics: dict[str, float] = field(default_factory=dict)
    k_selection: pl.DataFrame | None = None
    matching: pl.DataFrame | None = None
    fitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    as_of: datetime | None = None
    parent_version: str | None = None
    max_issued_id: int = 0
    retired_ids: list[int] = field(default_factory=list)  # cumulative over the lineage
    reference_sample: pl.DataFrame | None = None
    sizes: dict[int, int] = field(default_factory=dict)  # at fit time, on the fit sample
    # (feature, reason) of the candidates without data (availability.py); a class default, so artifacts
    # pickled before this field load as "nothing left out"
    left_out: tuple[tuple[str, str], ...] = ()
    artifact_format: int = ARTIFACT_FORMAT

    @property
    def k(self) -> int:
        return len(self.segment_ids)

    @property
    def estimator(self) -> Any:
        """The behaviour-cluster estimator (the ``engaged`` stage, or ``all`` when flat)."""
        st = self.stages.get("engaged") or self.stages.get("all")
        return st.estimator if st else None

    @property
    def name_of(self) -> dict[int, str]:
        return dict(zip(self.segment_ids, self.names))

    def stage_rules(self) -> dict[str, str]:
        """Each hierarchy stage as a plain-text rule (exact: these thresholds decide the stage)."""
        c = self.config
        t, lapse = f"{c.new_max_tenure_days:g}", f"{c.lapsed_after_days:g}"
        if self.hierarchy == "flat":
            return {"all": ""}
        signals = recency_signals(self.features)
        quiet = " AND ".join(f"{c} > {lapse}" for c in signals)
        active = " OR ".join(f"{c} <= {lapse}" for c in signals)
        return {"new": f"tenure_days <= {t}", "lapsed": f"tenure_days > {t} AND {quiet}",
                "engaged": f"tenure_days > {t} AND " + (f"({active})" if len(signals) > 1 else active)}

    def input_columns(self) -> list[str]:
        """The columns :meth:`predict` reads: the features, and what the lifecycle stage is decided from."""
        stage = [] if self.hierarchy == "flat" else ["tenure_days", *recency_signals(self.features)]
        return list(dict.fromkeys([*self.features, *stage]))

    def predict_clusters(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Global cluster index and confidence per row (stable ids: see ``predict``)."""
        Z = self.preprocessor.transform(frame)
        stage = stage_of(frame, self.config, self.features) if self.hierarchy != "flat" else np.full(frame.height, "all", dtype=object)
        cluster = np.full(frame.height, -1, dtype=np.int64)
        conf = np.ones(frame.height, dtype=np.float64)
        for name, st in self.stages.items():
            rows = np.flatnonzero(stage == name)
            if rows.size == 0:
                continue
            if st.estimator is None:
                cluster[rows] = st.clusters[0]
            elif is_mixture(st.estimator):
                proba = st.estimator.predict_proba(Z[rows])
                cluster[rows] = np.asarray(st.clusters)[proba.argmax(axis=1)]
                conf[rows] = proba.max(axis=1)
            else:
                local, c = soft_assign(Z[rows], self.centroids[st.clusters], st.sigma2)
                cluster[rows], conf[rows] = np.asarray(st.clusters)[local], c
        orphan = np.flatnonzero(cluster < 0)  # a stage too small at fit time: nearest segment
        if orphan.size:
            sig = float(np.mean([s.sigma2 for s in self.stages.values()]))
            local, c = soft_assign(Z[orphan], self.centroids, sig)
            cluster[orphan], conf[orphan] = local, c
        return cluster, conf

    def predict(self, frame: pl.DataFrame, chunk_rows: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
        """(segment_id int64 array, confidence float64 array in (0, 1]) for every row, in order."""
        ids = np.asarray(self.segment_ids, dtype=np.int64)
        out_id, out_conf = [], []
        for start in range(0, max(frame.height, 1), chunk_rows):
            cl, cf = self.predict_clusters(frame.slice(start, chunk_rows))
            out_id.append(ids[cl] if cl.size else np.empty(0, np.int64))
            out_conf.append(cf)
        return np.concatenate(out_id), np.concatenate(out_conf)

    def segments_frame(self) -> pl.DataFrame:
        """One row per segment of this version (for meta tables and the UI)."""
        status = {}
        dist = {}
        if self.matching is not None:
            for sid, st, d in self.matching.select("segment_id", "status", "distance").iter_rows():
                status[sid], dist[sid] = st, d
        return pl.DataFrame({
            "segment_id": self.segment_ids, "segment_name": self.names, "stage": self.cluster_stage,
            "status": [status.get(s, "new") for s in self.segment_ids],
            "match_distance": [dist.get(s) for s in self.segment_ids],
            "fit_size": [self.sizes.get(s, 0) for s in self.segment_ids],
        }, schema_overrides={"match_distance": pl.Float64}).sort("segment_id")

    def to_record(self) -> dict:
        """A JSON-able summary, one row of ``meta.segment_models``."""
        return {
            "version": self.version, "parent_version": self.parent_version, "algorithm": self.algorithm,
            "hierarchy": self.hierarchy, "k": self.k, "features": list(self.features),
            "metrics": {k: (None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v) for k, v in self.metrics.items()},
            "segments": self.segments_frame().to_dicts(), "retired_ids": list(self.retired_ids),
            "max_issued_id": self.max_issued_id, "fitted_at": self.fitted_at.isoformat(),
            "as_of": self.as_of.isoformat() if self.as_of else None,
        }

    def save(self, path: str | Path) -> Path:
        return save_artifact(self, path)

    @staticmethod
    def load(path: str | Path) -> SegmentModel:
        obj = load_artifact(path)
        if not isinstance(obj, SegmentModel):
            raise TypeError(f"{path} does not hold a SegmentModel")
        if obj.artifact_format != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: artifact format {obj.artifact_format}, expected {ARTIFACT_FORMAT}")
        return obj
