"""``segment_classifier``: a classifier trained on the segment labels of the model in service, which assigns
users between re-fits (classifier.py trains it, registry.py records it).

``fit``: ``when_needed`` (the default) trains only if the model in service has no classifier yet; ``always``
trains now.
"""

import json
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from seg_assets.artifacts import MAX_SEED
from seg_assets.automation.conditions import retrain_on_new_model
from seg_assets.automation.limits import CheckedConfig
from seg_assets.errors import input_failure
from seg_assets.features.assets import USER_FEATURES
from seg_assets.markdown import frame as md_frame
from seg_assets.resources import SegSettings, Warehouse
from seg_assets.retries import TRANSIENT_RETRY
from seg_assets.segmentation import registry
from seg_assets.segmentation.assets import GROUP, SEGMENT_CLASSIFIER, SEGMENT_MODEL, read_features
from seg_assets.segmentation.classifier import KINDS, TRAINING_ROWS, train_classifier
from seg_assets.segmentation.model import SegmentModel
from seg_assets.segmentation.selection import sample_indices
from seg_assets.validation import with_checks


class ClassifierConfig(CheckedConfig):
    fit: Literal["always", "when_needed"] = Field(
        default="when_needed", description="'when_needed': only if the model in service has no classifier yet; 'always': now.")
    kind: Literal[KINDS] = Field(default="logreg", description="Classifier family.")
    min_macro_f1: float = Field(default=0.80, ge=0, le=1, description="A classifier below this held-out macro-F1 stays out of service.")
    max_rows: int = Field(default=TRAINING_ROWS, ge=1_000, description="Training sample size (bounded so cost does not grow "
                          "with users), the promotion gate classifier's: it learns the model's own labels, a partition with "
                          "about 100 parameters; at 1M users 200k rows gave 0.25 % of them another segment (macro-F1 0.988 vs "
                          "0.985) for 4x the training.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the training sample and of the classifier.")


CLASSIFIER_QUALITY = dg.AssetCheckSpec(
    "classifier_quality", asset=SEGMENT_CLASSIFIER, blocking=False,
    description="The latest classifier reached its macro-F1 threshold and is in service (otherwise it stays out of "
    "service and the segment model itself assigns users: slower, never wrong, so nothing is blocked).")


def classifier_quality(con) -> dg.AssetCheckResult:
    registry.ensure_tables(con)
    current = registry.in_service_model(con)
    rows = con.sql("SELECT version, model_version, in_service, reason, metrics FROM meta.segment_classifiers "
                   "WHERE model_version = ? ORDER BY trained_at DESC LIMIT 1",
                   params=[current.version if current else None]).fetchall()
    if not rows:
        what = f"for the model in service ({current.version}): it assigns users itself" if current else "trained"
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description=f"no classifier {what}")
    version, model_version, serving, reason, metrics = rows[0]
    m = json.loads(metrics)
    if not serving:
        kept = con.sql("SELECT version FROM meta.segment_classifiers WHERE in_service AND model_version = ?",
                       params=[model_version]).fetchall()
        reason += (f": not in service, {kept[0][0]} keeps serving" if kept else
                   ": not in service, users are assigned by the segment model itself")
    return dg.AssetCheckResult(passed=bool(serving), severity=dg.AssetCheckSeverity.WARN, description=reason, metadata={
        "version": version, "model_version": model_version, "macro_f1": float(m["macro_f1"]), "accuracy": float(m["accuracy"])})


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    key=SEGMENT_CLASSIFIER, deps=[SEGMENT_MODEL, USER_FEATURES], group_name=GROUP, pool="duckdb", kinds={"scikitlearn"},
    automation_condition=retrain_on_new_model(SEGMENT_MODEL), check_specs=[CLASSIFIER_QUALITY],
    description="Classifier trained on the segment labels of the model in service; assigns users between re-fits. "
    "Held-out accuracy, macro-F1 and per-segment recall; below the threshold it stays out of service.",
)
def segment_classifier(context: dg.AssetExecutionContext, config: ClassifierConfig, duckdb: Warehouse, settings: SegSettings):
    return with_checks(context, _segment_classifier(context, config, duckdb, settings), duckdb,
                       [(CLASSIFIER_QUALITY, classifier_quality)])


def _segment_classifier(context: dg.AssetExecutionContext, config: ClassifierConfig, duckdb: Warehouse,
                        settings: SegSettings) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        current = registry.in_service_model(con)
        if current is None:
            raise input_failure("No segment model in service: materialize segment_model first.")
        existing = registry.in_service_classifier(con, current.version)
        if config.fit == "when_needed" and existing is not None:
            return dg.MaterializeResult(metadata={"decision": f"kept {existing[0]} for model {current.version}"})
        model = SegmentModel.load(current.artifact)
        frame = read_features(con, model.input_columns())  # what labelling and training read: half the columns
        version = registry.next_version(con, "meta.segment_classifiers", prefix="c")
    sample = frame[sample_indices(frame.height, config.max_rows, config.seed)]  # the rows train_classifier would keep:
    labels, _ = model.predict(sample)  # labelled alone (at 1M users, 200k predictions instead of 1M)
    if len(np.unique(labels)) < 2:  # a model of one segment (a shop's first few users): nothing to tell apart
        why = "one segment: users are assigned by the segment model itself"
        context.log.info(f"no classifier trained for {model.version}: {why}")
        return dg.MaterializeResult(metadata={"decision": f"no classifier for {model.version}: {why}"})
    clf = train_classifier(sample, labels, config.kind, features=model.features, max_rows=config.max_rows,
                           seed=config.seed, model_version=model.version)
    f1 = clf.metrics["macro_f1"]
    serve = f1 >= config.min_macro_f1
    reason = f"macro-F1 {f1:.3f} {'>=' if serve else '<'} {config.min_macro_f1}"
    artifact = registry.save_artifact(clf, registry.classifier_path(settings.paths.models, version))
    with duckdb.get_connection() as con:
        registry.record_classifier(con, version=version, model_version=model.version, kind=config.kind, metrics=clf.metrics,
                                   artifact=artifact, in_service=serve, reason=reason, run_id=context.run_id,
                                   trained_at=datetime.now(UTC))
    recall = pl.DataFrame({"segment_id": list(clf.metrics["recall_by_segment"]),
                           "segment_name": [model.name_of.get(s, "") for s in clf.metrics["recall_by_segment"]],
                           "recall": list(clf.metrics["recall_by_segment"].values())})
    return dg.MaterializeResult(metadata={
        "version": version, "model_version": model.version, "kind": config.kind, "in_service": serve, "reason": reason,
        "accuracy": float(clf.metrics["accuracy"]), "macro_f1": float(f1),
        "recall_by_segment": dg.MetadataValue.md(md_frame(recall)),
        "feature_importance": dg.MetadataValue.md(md_frame(clf.importances.head(15)))
        if clf.importances is not None else "",
    })
