"""Asset check results: plain ones for counts and thresholds, and the report of a GE sample validation.

A scalar comparison (a count that must be 0, a ratio under a threshold) is a plain ``AssetCheckResult``
whose description names what broke and whose metadata holds the numbers: it costs microseconds and
reads clearly in the UI. Great Expectations (:mod:`seg_assets.expectations`) is kept for row-level
expectations on samples, where its per-expectation report with unexpected examples helps a person.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from seg_assets.expectations import ValidationOutcome
from seg_assets.markdown import table as md_table


def nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    """The counts that are not 0: each is a rule broken that many times."""
    return {k: int(v) for k, v in counts.items() if v}


def describe_counts(subject: str, broken: Mapping[str, int]) -> str:
    """``"raw.orders (40 rows): duplicate_ids 1, invalid_amount 2"``, or ``"...: every rule holds"``."""
    if not broken:
        return f"{subject}: every rule holds"
    return f"{subject}: " + ", ".join(f"{k} {v:,}" for k, v in broken.items())


def ge_metadata(outcome: ValidationOutcome) -> dict[str, Any]:
    """GE's report on a sample: what was evaluated and, per failing expectation, counts and examples."""
    return {
        "expectations_evaluated": dg.MetadataValue.int(outcome.evaluated),
        "rows_validated": dg.MetadataValue.int(outcome.rows),
        "failed_expectations": dg.MetadataValue.json(
            [f"{f.expectation}({f.column})" if f.column else f.expectation for f in outcome.failed]),
        "report": dg.MetadataValue.md(failures_markdown(outcome)),
    }


def failures_markdown(outcome: ValidationOutcome) -> str:
    if outcome.success:
        return f"All {outcome.evaluated} expectations passed on {outcome.rows} rows."
    return md_table(["expectation", "column", "unexpected", "examples", "details"],
                    [(f.expectation, f.column, f.unexpected_count, ", ".join(map(str, f.examples)), f.details)
                     for f in outcome.failed])


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
