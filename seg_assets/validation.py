"""Great Expectations 1.x, called directly from Dagster asset checks.

``dagster-ge`` needs GE < 1.0, so checks describe their expectations as data
(:func:`seg_assets.expectations.expect`), validate a frame with :func:`validate_frame` and turn the
outcome into an ``AssetCheckResult`` with :func:`check_result`, which names every failing expectation
in the check's metadata.

GE runs in a validation process (see :mod:`seg_assets.expectations`), started early by :func:`start`:
importing GE costs about 2.5 s of CPU, which a thread beside ingestion could not hide (imports hold the
GIL), while a process on the second core does. The run's own process never imports GE.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import dagster as dg

from seg_assets.expectations import ValidationOutcome, start, validate_frame

__all__ = ["check_result", "failures_markdown", "merge_outcomes", "start", "validate_frame", "with_checks"]


def merge_outcomes(a: ValidationOutcome, b: ValidationOutcome) -> ValidationOutcome:
    """One outcome for two validations of the same data (``rows`` of the first)."""
    return ValidationOutcome(
        success=a.success and b.success, evaluated=a.evaluated + b.evaluated, rows=a.rows, failed=[*a.failed, *b.failed]
    )


def failures_markdown(outcome: ValidationOutcome) -> str:
    if outcome.success:
        return f"All {outcome.evaluated} expectations passed on {outcome.rows} rows."
    lines = ["| expectation | column | unexpected | examples | details |", "|---|---|---|---|---|"]
    for f in outcome.failed:
        examples = ", ".join(map(str, f.examples)).replace("|", "/")
        lines.append(f"| {f.expectation} | {f.column or ''} | {f.unexpected_count if f.unexpected_count is not None else ''} | {examples} | {f.details} |")
    return "\n".join(lines)


def check_result(
    outcome: ValidationOutcome,
    *,
    asset_key: dg.AssetKey | None = None,
    check_name: str | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    metadata: dict | None = None,
) -> dg.AssetCheckResult:
    """Turn a GE outcome into a Dagster check result that names the failing expectations."""
    meta = {
        "expectations_evaluated": dg.MetadataValue.int(outcome.evaluated),
        "rows_validated": dg.MetadataValue.int(outcome.rows),
        "failed_expectations": dg.MetadataValue.json(
            [f"{f.expectation}({f.column})" if f.column else f.expectation for f in outcome.failed]
        ),
        "report": dg.MetadataValue.md(failures_markdown(outcome)),
        **(metadata or {}),
    }
    return dg.AssetCheckResult(
        passed=outcome.success, severity=severity, metadata=meta, asset_key=asset_key, check_name=check_name
    )


# A check of what an asset just decided (a gate, a holdout score): it reads one registry row.
InlineCheck = Callable[[Any], dg.AssetCheckResult]


def with_checks(context: dg.AssetExecutionContext, result: dg.MaterializeResult, duckdb,
                checks: Sequence[tuple[dg.AssetCheckSpec, InlineCheck]]) -> dg.MaterializeResult:
    """``result`` plus the results of the asset's own checks that this run selected, read on one connection.

    Checks of the model assets' decisions run in the asset's step (``check_specs`` on the asset): as separate
    steps they cost about 70 ms of Dagster work apiece for a one-row query. A blocking one still stops the
    downstream steps when it fails.
    """
    selected = [(spec, check) for spec, check in checks if spec.key in context.selected_asset_check_keys]
    if not selected:
        return result
    with duckdb.get_connection() as con:
        outcomes = [(spec, check(con)) for spec, check in selected]
    results = [dg.AssetCheckResult(passed=r.passed, severity=r.severity, description=r.description, metadata=r.metadata,
                                   asset_key=spec.asset_key, check_name=spec.name) for spec, r in outcomes]
    return dg.MaterializeResult(asset_key=result.asset_key, metadata=result.metadata, check_results=results,
                                data_version=result.data_version, tags=result.tags)
