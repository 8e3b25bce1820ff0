"""Great Expectations 1.x, called directly from Dagster asset checks.

``dagster-ge`` needs GE < 1.0, so checks build expectations with :func:`validate_frame` and turn the
outcome into an ``AssetCheckResult`` with :func:`check_result`, which names every failing expectation
in the check's metadata. GE is imported lazily (its import costs seconds) and validates pandas frames:
callers pass small frames (new rows, samples, or one-row aggregates), never a copy of a big table.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Callable, Sequence

import dagster as dg

# A function that receives ``great_expectations.expectations`` and returns the expectations to run.
ExpectationBuilder = Callable[[Any], Sequence[Any]]

_names = count()


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str | None
    unexpected_count: int | None
    examples: list
    details: str


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    evaluated: int
    rows: int
    failed: list[FailedExpectation] = field(default_factory=list)


_CONTEXT: tuple | None = None
_CONTEXT_LOCK = threading.Lock()


def _context():
    """GE and an ephemeral data context, made once per process (importing GE takes about 2.5 s)."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in run logs
            _CONTEXT = (gx, ctx)
    return _CONTEXT


def warm_up() -> None:
    """Import GE in a background thread while the caller works in DuckDB (which releases the GIL).

    Ingestion calls this first: the raw checks that follow find GE ready instead of waiting seconds for
    its import. Harmless if GE is already loaded or the thread is still running when a check needs it.
    """
    if _CONTEXT is None:
        threading.Thread(target=_context, name="great-expectations-warm-up", daemon=True).start()


def validate_frame(frame, suite_name: str, build: ExpectationBuilder, index_columns: Sequence[str] = ()) -> ValidationOutcome:
    """Validate a pandas (or polars) frame against the expectations ``build`` returns.

    ``index_columns`` name the rows in failures (a failing row's examples carry those columns' values).
    """
    if hasattr(frame, "to_pandas"):  # polars
        frame = frame.to_pandas()
    gx, ctx = _context()
    import great_expectations.expectations as gxe

    n = next(_names)
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{suite_name}_{n}", expectations=list(build(gxe))))
    batch_def = (
        ctx.data_sources.add_pandas(f"pandas_{n}")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("all")
    )
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": list(index_columns)}
                            ) if index_columns else batch.validate(suite)
    failed = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        res = r.result or {}
        exc = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
        failed.append(
            FailedExpectation(
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                unexpected_count=res.get("unexpected_count"),
                examples=[_plain(e) for e in list((res.get("unexpected_index_list") if index_columns
                                                    else res.get("partial_unexpected_list")) or [])[:5]],
                details=exc or ", ".join(f"{k}={v}" for k, v in kwargs.items()) or (f"observed {res.get('observed_value')}"),
            )
        )
    return ValidationOutcome(
        success=bool(result.success), evaluated=len(result.results), rows=len(frame), failed=failed
    )


def _plain(value):
    """numpy scalars (and dicts or tuples of them) as plain Python values, for readable reports and JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value.item() if hasattr(value, "item") else value


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
