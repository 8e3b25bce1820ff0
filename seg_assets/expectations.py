"""Great Expectations 1.x on samples of rows, in the caller's process.

``dagster-ge`` needs GE < 1.0, so checks describe their expectations as data (:func:`expect`: a GE
expectation class name and its arguments) and :func:`validate_frame` runs them. GE is imported on the
first validation, not at load: the import costs about 2.5 s of CPU, paid only by a run whose raw checks
have new rows to sample (or a count that failed). Scalar thresholds and counts are plain asset checks
(:mod:`seg_assets.validation`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any


@dataclass(frozen=True)
class Expectation:
    """One expectation: a class of ``great_expectations.expectations`` and its keyword arguments."""

    name: str
    kwargs: dict[str, Any]


def expect(name: str, **kwargs: Any) -> Expectation:
    """``expect("ExpectColumnValuesToNotBeNull", column="user_id")``."""
    return Expectation(name, kwargs)


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


_GE: tuple | None = None
_names = count()


def load_ge() -> tuple:
    """GE and an ephemeral data context, made once per process."""
    global _GE
    if _GE is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in run logs
        _GE = (gx, gxe, ctx)
    return _GE


def validate_frame(frame, suite_name: str, expectations: Sequence[Expectation]) -> ValidationOutcome:
    """Validate a pandas, polars or Arrow frame with GE; every failing expectation is reported with examples.

    Callers pass small frames (samples of new rows), never a pandas copy of a big table.
    """
    if hasattr(frame, "to_pandas"):  # Arrow or polars -> pandas, the frame type GE validates
        frame = frame.to_pandas()
    gx, gxe, ctx = load_ge()
    n = next(_names)
    suite = ctx.suites.add(gx.ExpectationSuite(
        name=f"{suite_name}_{n}", expectations=[getattr(gxe, e.name)(**e.kwargs) for e in expectations]))
    batch = (
        ctx.data_sources.add_pandas(f"pandas_{n}")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(suite)
    try:
        return ValidationOutcome(success=bool(result.success), evaluated=len(result.results), rows=len(frame),
                                 failed=[_failure(r) for r in result.results if not r.success])
    finally:  # one suite and data source per call: drop them, a long-lived process (dagster dev) validates many frames
        ctx.suites.delete(suite.name)
        ctx.data_sources.delete(f"pandas_{n}")


def _failure(r) -> FailedExpectation:
    cfg = r.expectation_config
    res = r.result or {}
    exc = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
    examples = res.get("partial_unexpected_list") or []
    return FailedExpectation(
        expectation=cfg.type,
        column=cfg.kwargs.get("column"),
        unexpected_count=res.get("unexpected_count"),
        examples=[plain(e) for e in list(examples)[:5]],
        details=exc or ", ".join(f"{k}={v}" for k, v in kwargs.items()) or f"observed {res.get('observed_value')}",
    )


def plain(value):
    """numpy scalars (and dicts or tuples of them) as plain Python values, for readable reports and JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value.item() if hasattr(value, "item") else value
