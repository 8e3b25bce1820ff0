"""``segment_model``: fit, match ids, gate, and register (``segment_classifier`` is in classifier_asset.py).

Thin wiring around the pure maths in this package: read ``features.user_features``, call
``fit_segment_model`` / ``decide_promotion``, store the artifact and the registry row (registry.py), and
show what happened in the UI.

``fit``: ``when_needed`` (the default: the runs automation launches carry no run config) fits only for one of
:func:`refit_reason`'s reasons: no model in service, features it left out for lack of data now have data, the
population drifted beyond the PSI threshold, or the latest fit (promoted or refused) is older than
``max_age_days``; never again on the data as-of of a refused fit. ``always`` (``seg-assets refresh --refit``)
fits now. Either way the promotion gate decides whether a new fit serves.
"""

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, model_validator

from seg_assets.artifacts import MAX_SEED
from seg_assets.automation.conditions import refit_segment_model
from seg_assets.automation.limits import CheckedConfig
from seg_assets.errors import input_failure
from seg_assets.features.assets import USER_FEATURES
from seg_assets.features.incremental import rebase_requested
from seg_assets.features.user_features import USER_FEATURES_TABLE
from seg_assets.ingest.ledger import why_no_rows
from seg_assets.markdown import frame as md_frame
from seg_assets.markdown import table as md_table
from seg_assets.plots import k_selection_plot, projection_plot
from seg_assets.publish.keys import HISTORY_TABLE
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation import registry
from seg_assets.segmentation.availability import (
    RECENCY_SIGNALS,
    FeatureAvailability,
    gained_data,
    source_columns,
    without_new_data,
)
from seg_assets.segmentation.classifier import KINDS as CLASSIFIER_KINDS
from seg_assets.segmentation.classifier import TRAINING_ROWS, train_classifier
from seg_assets.segmentation.drift import build_reference, population_stability
from seg_assets.segmentation.fit import fit_segment_model
from seg_assets.segmentation.gate import (
    BEHAVIOUR_CLUSTERS,
    CHURN_METRICS,
    DEFAULT_TOLERANCE,
    FITTED_USERS,
    GATE_METRICS,
    SEGMENTS_USED,
    decide_promotion,
)
from seg_assets.segmentation.membership import (
    DEFAULT_MAX_CHURN,
    DEFAULT_ODDS,
    NO_SEGMENT,
    previous_id_sql,
    refit_churn,
)
from seg_assets.segmentation.model import AGEING, DEFAULT_K, HIERARCHIES, ModelConfig, SegmentModel, aged
from seg_assets.segmentation.quality import behaviour_stage, evaluate_model, stability_on, stability_pair
from seg_assets.segmentation.selection import ALGORITHMS, SelectionConfig, sample_indices
from seg_assets.settings import MAX_DAYS
from seg_assets.validation import with_checks
from seg_assets.warehouse import latest_activity, registered, row_count, sql_ident, table_exists

SEGMENT_MODEL = dg.AssetKey("segment_model")
SEGMENT_CLASSIFIER = dg.AssetKey("segment_classifier")  # its asset: classifier_asset.py
GROUP = "segmentation"


# The maths' defaults, read here so each lives in one place (k_min..k_max: model.DEFAULT_K, the range a ModelConfig
# without one fits too, either hierarchy, so that the unit tests fit what the pipeline does)
MODEL_DEFAULTS = ModelConfig()


class SegmentModelConfig(CheckedConfig):
    # 'when_needed' by default: the runs automation launches have no run config, and with 'always' a drift that the gate
    # kept refusing re-fitted every 30 s (the check re-ran on the refused fit, failed again, asked for another)
    fit: Literal["always", "when_needed"] = Field(
        default="when_needed", description="'when_needed': only without a model in service, when left-out features gained "
        "data, on drift (not again within refit_retry_hours of a refused fit), or when it is too old; 'always': now.")
    hierarchy: Literal[HIERARCHIES] = Field(
        default="lifecycle", description="lifecycle: new / lapsed / engaged first, behaviour clusters inside 'engaged'.")
    k_min: int = Field(default=DEFAULT_K[0], ge=2, le=50, description="Fewest behaviour clusters (flat: fewest segments); "
                     "a small stage gets fewer, every cluster holding min_cluster_rows users.")
    k_max: int = Field(default=DEFAULT_K[1], ge=2, le=50,
                       description="Most behaviour clusters; with new and lapsed that is 4..10 segments.")
    min_cluster_rows: int = Field(default=MODEL_DEFAULTS.min_cluster_rows, ge=1, le=1_000_000, description="No behaviour "
                                  "cluster of fewer users (a stage gets at most its users // this): no segment of a handful.")
    algorithm: Literal[ALGORITHMS] = Field(
        default="auto", description="auto: KMeans, MiniBatchKMeans above 200k rows.")
    new_max_tenure_days: float = Field(default=MODEL_DEFAULTS.new_max_tenure_days, ge=0, le=MAX_DAYS,
                                       description="Lifecycle stage 'new': tenure up to this many days.")
    lapsed_after_days: float = Field(default=MODEL_DEFAULTS.lapsed_after_days, gt=0, le=MAX_DAYS,
                                     description="Lifecycle stage 'lapsed': no order and no visit for longer.")
    max_match_distance: float = Field(default=MODEL_DEFAULTS.max_distance, ge=0, le=1000, description="A re-fitted segment "
                                      "keeps an old id only within this centroid distance (standardized features; 0: every "
                                      "re-fitted segment gets a new id).")
    promotion_tolerance: float = Field(
        default=DEFAULT_TOLERANCE, ge=0, le=1, description="A candidate may be this much worse on a gate metric and still serve.")
    sticky_odds: float = Field(
        default=DEFAULT_ODDS, ge=1.0, le=1e6, description="The refit margin: a user leaves a segment that still exists only for one "
        "this many times as likely (1: plain nearest segment). Carried by the model, so scoring and the gate use the same.")
    max_membership_churn: float | None = Field(
        default=DEFAULT_MAX_CHURN, ge=0, le=1, description="Refuse a candidate that moves more than this share of the users "
        "whose features barely changed to another segment (None: report only).")
    gate_classifier: Literal[CLASSIFIER_KINDS] = Field(
        default="logreg", description="Classifier used for the gate's macro-F1.")
    max_age_days: float = Field(default=7.0, gt=0, le=MAX_DAYS, description="'when_needed' re-fits when the latest fit, promoted or "
                                "refused, is older than this (data time).")
    refit_retry_hours: float = Field(default=24.0, ge=0, le=MAX_DAYS * 24, description="After a refused fit, 'when_needed' fits again only "
                                     "this many hours of data later (drift that persists would re-fit every hourly refresh).")
    seed: int = Field(default=0, ge=0, le=MAX_SEED,
                      description="Random seed: the same data and settings give the same segments and ids.")

    @model_validator(mode="after")
    def _k_range(self):
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        return self

    def to_model_config(self) -> ModelConfig:
        selection = SelectionConfig(algorithm=self.algorithm, random_state=self.seed)  # the k range goes in once, as k_range
        return ModelConfig(hierarchy=self.hierarchy, new_max_tenure_days=self.new_max_tenure_days,
                           lapsed_after_days=self.lapsed_after_days, k_range=(self.k_min, self.k_max),
                           max_distance=self.max_match_distance, selection=selection, sticky_odds=self.sticky_odds,
                           min_cluster_rows=self.min_cluster_rows)


def stale_users(con) -> int:
    """Users whose features were computed more than a day before the newest rows': an incremental refresh scores
    again only users with new rows, the daily rebase everyone. (Rows all of one date are one population.)"""
    return con.sql(f"""SELECT count(*) FROM {USER_FEATURES_TABLE}
                       WHERE as_of < (SELECT max(as_of) FROM {USER_FEATURES_TABLE}) - INTERVAL 1 DAY""").fetchall()[0][0]


def read_features(con, columns: list[str] | None = None) -> pl.DataFrame:
    """All users, sorted by id (the maths samples by row position: sorted input, reproducible output); ``columns``: only
    these (and user_id), those of them the table has (a missing one fails where it is used, as with every column)."""
    if columns is None:
        return con.sql(f"SELECT * FROM {USER_FEATURES_TABLE} ORDER BY user_id").pl()
    have = set(con.table(USER_FEATURES_TABLE).columns)
    wanted = [c for c in dict.fromkeys(["user_id", *columns]) if c in have]
    return con.sql(f"SELECT {', '.join(sql_ident(c) for c in wanted)} FROM {USER_FEATURES_TABLE} ORDER BY user_id").pl()


PSI_METADATA = "psi_by_feature"  # the kept model's PSI table, which the population_stable check reuses in the same run
DRIFT_SAMPLE_ROWS = 200_000  # PSI over 10 bins is estimated to about +-0.001 from this many users


def read_drift_panel(con, features) -> pl.DataFrame:
    """A fixed panel of about ``DRIFT_SAMPLE_ROWS`` users for PSI: those whose hash of user_id falls in the
    lowest ``DRIFT_SAMPLE_ROWS / users`` of the hash range (everyone in a smaller population). A filter, not
    a top-N sort of a million hashes (0.05 s instead of 0.2-0.4 s), and the same users from one refresh to
    the next: the cut moves only as the population grows."""
    as_of = ["as_of"] if "as_of" in con.table("features.user_features").columns else []  # each row aged: rows_as_of
    cols = ", ".join(dict.fromkeys(["user_id", *features, *as_of]))
    return con.sql(f"""
        SELECT {cols} FROM features.user_features
        WHERE hash(user_id)::DOUBLE < (SELECT least(1.0, {DRIFT_SAMPLE_ROWS} / greatest(count(*), 1)) FROM features.user_features)
                                      * 18446744073709551616.0""").pl()


def panel_columns(model: SegmentModel) -> list[str]:
    """What deciding to keep ``model`` reads: its features, plus what tells whether a feature it left out
    has data now (availability.py)."""
    extra = [f for f, _ in model.left_out] + source_columns([f for f, _ in model.left_out])
    return list(dict.fromkeys([*model.features, *extra]))


def left_out_metadata(model: SegmentModel) -> dict:
    """The features a model leaves out for lack of data, and why (shown on segment_model)."""
    if not model.left_out:
        return {"features_left_out": "none"}
    table = pl.DataFrame({"feature": [f for f, _ in model.left_out], "reason": [r for _, r in model.left_out]})
    return {"features_left_out": dg.MetadataValue.md(md_frame(table)),
            "features_left_out_summary": FeatureAvailability(tuple(model.features), model.left_out).describe()}


def drift_table(model: SegmentModel, frame: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """PSI per model feature of today's users (a fixed sample of them, as of ``as_of``) against the model's reference,
    grown as old as they are (model.aged: growing older is no drift)."""
    if model.reference_sample is None:
        return pl.DataFrame(schema={"feature": pl.String, "psi": pl.Float64})
    if frame.height > DRIFT_SAMPLE_ROWS:
        frame = frame[sample_indices(frame.height, DRIFT_SAMPLE_ROWS, 31)]
    reference = aged(model.reference_sample, model.as_of, as_of)
    return population_stability(build_reference(reference, list(model.features)), rows_as_of(frame, as_of))


GROWING = (*AGEING, *RECENCY_SIGNALS)  # a day more per day of data time for a user without new rows


def rows_as_of(frame: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Every row as it is at ``as_of``: an incremental refresh recomputes only the users with new rows, the others keep
    the features of the last rebase, hours older; having done nothing since, their tenure, recency and days since the
    last visit have grown by the time between (windowed counts are left as they are). Compared as kept, three users in
    four read younger than they are: recency's PSI was 0.07-0.08 higher in every incremental refresh than in the rebase
    after it, and a refresh re-fitted for drift at 0.255 that was 0.212 (h3, session 34). A frame without ``as_of``
    is taken as it is."""
    if "as_of" not in frame.columns:
        return frame
    days = ((pl.lit(as_of.replace(tzinfo=None)).cast(pl.Datetime("us")) - pl.col("as_of").cast(pl.Datetime("us")))
            .dt.total_microseconds() / 86_400e6).clip(lower_bound=0).fill_null(0)
    return frame.with_columns(pl.col(c) + days for c in GROWING if c in frame.columns)


def refit_reason(model: SegmentModel | None, frame: pl.DataFrame, as_of: datetime, cfg: SegmentModelConfig,
                 psi_threshold: float, psi: pl.DataFrame | None = None, latest: registry.Fit | None = None) -> str | None:
    """Why a 'when_needed' run should fit (None: keep the model in service).

    Age counts from the latest fit, promoted or refused (``latest``), and after a refused fit the next waits
    ``refit_retry_hours`` of data time (never on the same as-of): a candidate refused for drift that persists would
    otherwise be re-fitted on every hourly refresh."""
    if model is None:
        return "no model in service"
    gained = gained_data([f for f, _ in model.left_out], frame)
    if gained:  # the candidate then serves whatever the gate says (a blind model in service is no yardstick)
        return f"features left out of {model.version} now have data: {', '.join(gained)}"
    latest = latest or registry.Fit(model.version, model.as_of)
    fitted_on = latest.data_as_of.replace(tzinfo=None) if latest.data_as_of is not None else None
    if latest.version != model.version and fitted_on is not None and (
            fitted_on == as_of or as_of - fitted_on < timedelta(hours=cfg.refit_retry_hours)):
        return None
    psi = drift_table(model, frame, as_of) if psi is None else psi
    if psi.height and psi["psi"][0] > psi_threshold:
        return f"population drift: PSI of {psi['feature'][0]} is {psi['psi'][0]:.2f} > {psi_threshold}"
    if fitted_on is not None and as_of - fitted_on > timedelta(days=cfg.max_age_days):
        return f"the latest fit {latest.version} is older than {cfg.max_age_days:g} days (data as of {fitted_on:%Y-%m-%d})"
    return None


# The gate's samples of today's users: the silhouette is O(n^2) in memory (10k rows cost ~950 MiB, 5k ~370 MiB,
# bench/RESULTS.md); the classifier's macro-F1 is trained and scored on its own sample; the UI's projection plots a few
# thousand points.
SILHOUETTE_SAMPLE_ROWS = 5_000
CLASSIFIER_SAMPLE_ROWS = TRAINING_ROWS  # the classifier in service trains on as many
PROJECTION_POINTS = 3_000


def gate_metrics(model: SegmentModel, frame: pl.DataFrame, kind: str, seed: int, space: SegmentModel | None = None,
                 stability: float | None = None) -> dict:
    """The gate's metrics for a model, measured on TODAY's users (the cluster metrics in ``space``'s features: the
    candidate's, for both) so candidate and incumbent compare fairly. ``stability``: measured already (the pair's,
    quality.stability_pair); None: on its own (quality.stability_on)."""
    metrics = evaluate_model(model, frame, sample_size=SILHOUETTE_SAMPLE_ROWS, seed=seed, space=space)
    sample = frame[sample_indices(frame.height, CLASSIFIER_SAMPLE_ROWS, seed + 11)]
    labels, _ = model.predict(sample)
    metrics[SEGMENTS_USED] = len(np.unique(labels))
    metrics[FITTED_USERS] = model.metrics.get("n_rows")
    if len(np.unique(labels)) > 1:
        metrics["classifier_macro_f1"] = train_classifier(sample, labels, kind, features=model.features, seed=seed).metrics["macro_f1"]
    metrics["stability"] = stability_on(model, frame, seed) if stability is None else stability
    behaviour = behaviour_stage(model)
    metrics[BEHAVIOUR_CLUSTERS] = behaviour[1] if behaviour else 1  # what the stability re-fits (the UI's table)
    return metrics


def gate_pair(candidate: SegmentModel, previous: SegmentModel | None, frame: pl.DataFrame, kind: str,
              seed: int) -> tuple[dict, dict | None]:
    """The gate's metrics of the candidate and of the model in service (None: none to compare), both on today's users
    and both in the candidate's features: each in its own space, a candidate better on every measure was refused as
    0.065 worse (a tester's). Their stability is paired (quality.stability_pair, gate.py): the same rows, bootstrap
    samples and seeds for both; measured apart, one model's figure spanned 0.75-0.96 over ten seeds."""
    if previous is None:
        return gate_metrics(candidate, frame, kind, seed), None
    ours, theirs = stability_pair(candidate, previous, frame, seed)
    return (gate_metrics(candidate, frame, kind, seed, stability=ours),
            gate_metrics(previous, frame, kind, seed, space=candidate, stability=theirs))


CHURN_SAMPLE_ROWS = 200_000  # a share estimated to about +-0.001


def churn_metrics(con, previous: SegmentModel, candidate: SegmentModel, frame: pl.DataFrame, seed: int,
                  gained: Sequence[tuple[str, str]] = (), as_of: datetime | None = None) -> dict:
    """Membership churn of ``candidate`` (membership.py) on a sample of the users with a published segment, from where
    scoring's sticky rule starts (membership.previous_id_sql); ``gained``: the features ``previous`` left out that
    have data now, with the reason it left them out (only the users without such data count as barely changed)."""
    if not table_exists(con, "analytics.user_segments"):
        return {}
    sample = frame[sample_indices(frame.height, CHURN_SAMPLE_ROWS, seed + 13)]
    join, previous_id = previous_id_sql(table_exists(con, HISTORY_TABLE), "s", "u.user_id", as_of)
    with registered(con, churn_sample=sample.select("user_id")):
        published = con.sql(f"SELECT u.user_id, {previous_id} AS segment_id FROM churn_sample u "
                            f"LEFT JOIN analytics.user_segments s USING (user_id) {join}").pl()
    prev = sample.select("user_id").join(published, on="user_id", how="left",
                                         maintain_order="left")["segment_id"].fill_null(NO_SEGMENT)
    unseen = ~without_new_data(sample, gained).to_numpy() if gained else None
    return refit_churn(previous, candidate, sample, prev.to_numpy(), unseen)


def _metrics_table(candidate: dict, incumbent: dict | None) -> dg.MetadataValue:
    keys = (*GATE_METRICS, BEHAVIOUR_CLUSTERS, *CHURN_METRICS, "davies_bouldin", "calinski_harabasz")
    rows = [(k, candidate.get(k), (incumbent or {}).get(k)) for k in keys]
    return dg.MetadataValue.md(md_table(["metric", "candidate", "in service"], rows, floatfmt=".3f"))


def _projection(model: SegmentModel, frame: pl.DataFrame, seed: int) -> str:
    from sklearn.decomposition import PCA

    sample = frame[sample_indices(frame.height, PROJECTION_POINTS, seed + 21)]
    ids, _ = model.predict(sample)
    x = model.preprocessor.transform(sample)
    if min(x.shape) < 2:  # one feature left (a shop with customers only), or one user (a shop's first order): plotted
        # against zero, not PCA, which needs two of each (the first order's refresh failed the step once, then retried)
        points = np.column_stack([x[:, 0], np.zeros(len(x))])
    else:
        points = PCA(n_components=2, random_state=seed).fit_transform(x)
    return projection_plot(points, ids, model.name_of)


DRIFT_CHECK = dg.AssetCheckKey(SEGMENT_MODEL, "population_stable")  # checks.py; the one check that re-fits
CANDIDATE_PROMOTED = dg.AssetCheckSpec(
    "candidate_promoted", asset=SEGMENT_MODEL, blocking=False,
    description="The latest fit passed the promotion gate (otherwise the model in service stays; this says why).")


def candidate_promoted(con) -> dg.AssetCheckResult:
    registry.ensure_tables(con)
    rows = con.sql("SELECT version, promoted, reason, fit_reason, metrics FROM meta.segment_models "
                   "ORDER BY version DESC LIMIT 1").fetchall()
    if not rows:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no model fitted yet"})
    version, promoted, reason, fit_reason, metrics = rows[0]
    metrics = json.loads(metrics)
    churn = {k: float(metrics[f"gate_{k}"]) for k in CHURN_METRICS if f"gate_{k}" in metrics}
    return dg.AssetCheckResult(passed=bool(promoted), severity=dg.AssetCheckSeverity.WARN, description=reason,
                               metadata={"version": version, "reason": reason, "fitted_because": fit_reason or "", **churn,
                                         "metrics": dg.MetadataValue.json(metrics)})


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=SEGMENT_MODEL, deps=[USER_FEATURES], group_name=GROUP, pool="duckdb", kinds={"scikitlearn"},
    automation_condition=refit_segment_model(DRIFT_CHECK), check_specs=[CANDIDATE_PROMOTED],
    description="Segment model: preprocessing, k by silhouette, clusters with stable ids and names, promotion gate. "
    "Artifacts under models/, one row per fit in meta.segment_models.",
)
def segment_model(context: dg.AssetExecutionContext, config: SegmentModelConfig, duckdb: Warehouse, settings: SegSettings):
    return with_checks(context, _segment_model(context, config, duckdb, settings), duckdb,
                       [(CANDIDATE_PROMOTED, candidate_promoted)])


def _segment_model(context: dg.AssetExecutionContext, config: SegmentModelConfig, duckdb: Warehouse,
                   settings: SegSettings) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        registry.ensure_tables(con)
        as_of = settings.resolve_as_of(con)
        current = registry.in_service_model(con)
        version = registry.next_version(con)
        previous = SegmentModel.load(current.artifact) if current else None
        keep_possible = previous is not None and config.fit != "always"
        panel = read_drift_panel(con, panel_columns(previous)) if keep_possible else None  # deciding to keep needs no more than this
        psi = drift_table(previous, panel, as_of) if keep_possible else None
        reason = ("a re-fit was asked for (fit=always)" if config.fit == "always"
                  else refit_reason(previous, panel, as_of, config, settings.psi_threshold, psi, registry.latest_fit(con)))
        stale = stale_users(con) if reason and previous is not None and not rebase_requested(context.run.tags) else 0
        if stale and not keep_possible:  # fit=always without the rebase --refit adds (--set, a config file, the UI)
            context.log.warning(f"segment_model: fitting as asked (fit=always) on features of several dates: {stale:,} "
                                "users' are more than a day older than the newest; seg-assets refresh --refit rebases first")
            stale = 0
        if stale:  # a fit on rows of two dates splits them apart (a tester's "High-value loyal 2": last quarter's rows)
            reason, why = None, (f"a fit was due ({reason}) but waits: {stale:,} users' features are more than a day "
                                 "older than the newest (users without new rows are scored again by the daily rebase or "
                                 "--rebase; seg-assets refresh --refit does both)")
            context.log.warning(f"segment_model: {why}")
        if reason is None:
            users = row_count(con, USER_FEATURES_TABLE)
            context.log.info(f"keeping {previous.version} in service: no refit needed")
            return dg.MaterializeResult(metadata={
                "decision": f"kept {previous.version} in service ({why if stale else 'no refit needed'})",
                "in_service_version": previous.version,
                "max_psi": float(psi["psi"].max() or 0.0), "users": users, "features_used": len(previous.features),
                **left_out_metadata(previous),
                PSI_METADATA: dg.MetadataValue.json({"model_version": previous.version, "psi": psi.to_dicts()})})
        frame = read_features(con)
    if frame.height == 0:
        with duckdb.get_connection() as con:
            first = latest_activity(con, "min")
            if first is not None and as_of < first:  # rows were taken in, none by the as-of
                raise input_failure(f"nothing happened by the as-of {as_of:%Y-%m-%d %H:%M}: the earliest order or click "
                                    f"is {first:%Y-%m-%d %H:%M}; refresh with a later --as-of (or none: the latest data)")
            raise input_failure("features.user_features is empty: nothing to segment yet; " + why_no_rows(con))

    context.log.info(f"fitting {version}: {reason}")
    candidate = fit_segment_model(frame, config.to_model_config(), previous=previous, version=version, as_of=as_of)
    if candidate.left_out:
        context.log.warning(f"{version}: features without data left out: "
                            f"{FeatureAvailability(tuple(candidate.features), candidate.left_out).describe()}")
    # A model in service that leaves out features which have data now is not a fair comparison (fewer
    # dimensions score a better silhouette): it describes a population that no longer exists (gate.decide_promotion).
    blind = gained_data([f for f, _ in previous.left_out], frame) if previous else []
    cand_metrics, prev_metrics = gate_pair(candidate, previous, frame, config.gate_classifier, config.seed)
    if previous is not None:
        with duckdb.get_connection() as con:
            cand_metrics.update(churn_metrics(con, previous, candidate, frame, config.seed,
                                              [(f, why) for f, why in previous.left_out if f in blind], as_of))
    decision = decide_promotion(cand_metrics, prev_metrics, config.promotion_tolerance,
                                max_membership_churn=config.max_membership_churn, gained=tuple(blind),
                                in_service=previous.version if previous else "")
    artifact = candidate.save(registry.model_path(settings.paths.models, version))
    candidate.metrics.update({f"gate_{k}": v for k, v in cand_metrics.items() if v is not None})
    with duckdb.get_connection() as con:
        registry.record_model(con, candidate, artifact=artifact, promoted=decision.promote,
                              reason=decision.reason, fit_reason=reason, run_id=context.run_id)
    serving = candidate if decision.promote else previous
    context.log.info(f"{version}: {'promoted' if decision.promote else 'NOT promoted'} ({decision.reason})")
    ksel = candidate.k_selection
    metadata = {
        "version": version, "promoted": decision.promote, "gate": decision.reason, "trigger": reason,
        "in_service_version": serving.version, "k": candidate.k, "hierarchy": candidate.hierarchy,
        "algorithm": candidate.algorithm, "users": frame.height, "features_used": len(candidate.features),
        **left_out_metadata(candidate), "artifact": dg.MetadataValue.path(str(artifact)),
        "metrics": _metrics_table(cand_metrics, prev_metrics),
        **{k: float(cand_metrics[k]) for k in CHURN_METRICS if k in cand_metrics},
        "segments": dg.MetadataValue.md(md_frame(candidate.segments_frame())),
        "projection": dg.MetadataValue.md(_projection(candidate, frame, config.seed)),
    }
    if ksel is not None and ksel.height:
        engaged = ksel.filter(pl.col("stage") == ksel["stage"][0]).sort("k")
        metadata["k_selection"] = dg.MetadataValue.md(k_selection_plot(
            engaged["k"].to_list(), engaged["silhouette"].to_list(), engaged["davies_bouldin"].to_list(),
            candidate.metrics.get("k_behaviour")))
    return dg.MaterializeResult(metadata=metadata)
