"""Named automation conditions, built from Dagster's combinators, each with a label for the UI.

* Re-scoring follows new features or a newly promoted model: ``rescore_on_new_inputs`` (eager).
* The segment model is asked for when no model exists, once a week, and when the population drifts (its
  PSI check fails on features newer than the model's last run): ``refit_segment_model``. The asset then fits
  when needed (``fit: when_needed``: not again within ``refit_retry_hours`` of a refused fit), and the promotion
  gate decides whether the new fit replaces the model in service.
* The classifier is retrained when a new model is fitted (not on every feature change):
  ``retrain_on_new_model``.
* The drift check itself runs whenever the features change: ``check_drift_on_new_features``.
"""

import dagster as dg

WEEKLY_REFIT_CRON = "0 4 * * 1"  # Mondays 04:00 UTC


def rescore_on_new_inputs() -> dg.AutomationCondition:
    return dg.AutomationCondition.eager().with_label("re-score when features or the model change")


def retrain_on_new_model(model_key: dg.AssetKey) -> dg.AutomationCondition:
    """Like eager, but only a new segment model counts: new features alone do not retrain the classifier."""
    return (
        dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(model_key)).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("retrain when a new model is fitted")


def refit_segment_model(drift_check: dg.AssetCheckKey, cron: str = WEEKLY_REFIT_CRON) -> dg.AutomationCondition:
    """Only ``drift_check`` counts among the model's checks: another one failing (the gate refusing a candidate)
    is no reason to fit the same data again. And only on features the model's step has not seen: the check runs
    again after every run of the model (a refused fit too) and fails again while the drift lasts, so "newly failed"
    asked for a fit of the same data every 30 s, without end (found under ``dagster dev``)."""
    no_model = dg.AutomationCondition.on_missing().with_label("no model yet")
    weekly = dg.AutomationCondition.on_cron(cron).with_label(f"weekly re-fit ({cron})")
    drifted = (
        dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed())
        .allow(dg.AssetSelection.checks(drift_check)).with_label(f"{drift_check.name} failed")
        & dg.AutomationCondition.any_deps_updated().since_last_handled().with_label("features newer than the model's last run")
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"population drift ({drift_check.name} failed on new features)")
    return (no_model | weekly | drifted).with_label("re-fit: missing, weekly, or on drift")


def check_drift_on_new_features() -> dg.AutomationCondition:
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
    ).with_label("measure drift when features change")
