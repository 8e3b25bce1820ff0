"""Great Expectations suites as plain data, and the validation process that runs them.

Checks describe what they expect with :func:`expect` (a GE expectation class name and its arguments),
not with GE objects, and :func:`validate_frame` sends the frame and the suite to one spawned validation
process, where :func:`run_suite` runs GE. Importing GE takes 2.5 s of CPU (GE, SciPy, altair); started
early by :func:`start`, the process does it on the other core while the run starts and loads files, and
the run's own process never imports GE. This module imports neither GE nor Dagster at the top, so the
validation process stays lean and the caller can start it before importing Dagster.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Iterator, Sequence


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


def run_suite(frame, suite_name: str, expectations: Sequence[Expectation],
              index_columns: Sequence[str] = ()) -> ValidationOutcome:
    """Validate a pandas frame (or an Arrow table) with GE; every failing expectation is reported."""
    if hasattr(frame, "to_pandas"):  # Arrow (or polars) -> pandas, the frame type GE validates
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
    result = batch.validate(suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": list(index_columns)}) if index_columns \
        else batch.validate(suite)
    try:
        return ValidationOutcome(success=bool(result.success), evaluated=len(result.results), rows=len(frame),
                                 failed=[_failure(r, bool(index_columns)) for r in result.results if not r.success])
    finally:  # one suite and data source per call: drop them, a long-lived process validates many frames
        ctx.suites.delete(suite.name)
        ctx.data_sources.delete(f"pandas_{n}")


def _failure(r, indexed: bool) -> FailedExpectation:
    cfg = r.expectation_config
    res = r.result or {}
    exc = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
    examples = (res.get("unexpected_index_list") if indexed else res.get("partial_unexpected_list")) or []
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


# The validation process ------------------------------------------------------------------------

IN_PROCESS_ENV = "SEG_GE_IN_PROCESS"  # "1": run GE in the caller's process (debugging), not the validation process

_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _init_validation_process() -> None:
    """Load GE, and make the process's exit skip Python's teardown of GE's modules.

    The caller waits for this process to end when it exits itself; tearing down GE, SciPy and pandas
    takes 0.6 s of garbage collection for memory the OS frees anyway. The process only exits when its
    pool shuts down, after its last result was sent, so there is nothing left to flush but stdio.
    """
    atexit.register(_exit_now)
    load_ge()


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start processes without the caller's main script.

    A spawned process re-runs the parent's ``__main__`` script (``__main__.__file__``) to find functions
    pickled from it. The validation process only runs this module, and re-running the caller's script
    there would redo whatever it does at import time: a script without an ``if __name__ ==
    "__main__":`` guard would start a second refresh, or delete its folders again. Hiding the path while
    the process starts makes the spawned process skip that step.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _pool() -> ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # spawn, not fork: the caller may hold DuckDB and Dagster threads, which a fork would copy mid-flight.
            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_validation_process)
            with _main_script_hidden():
                _POOL.submit(int)  # the executor starts its process on the first task: start it (and GE's import) now
        return _POOL


def start() -> None:
    """Start the validation process now, so that its GE import overlaps whatever the caller does next.

    ``seg-assets refresh`` calls this first thing, and ingestion calls it too (a run started from the UI):
    by the time the raw checks validate, GE is loaded on the other core. Idempotent; one process per
    Python process, reused by every later validation.
    """
    if os.environ.get(IN_PROCESS_ENV) != "1":
        _pool()


def submit(frame, suite_name: str, expectations: Sequence[Expectation], index_columns: Sequence[str] = ()) -> Future:
    """Start validating ``frame`` against ``expectations`` in the validation process; :func:`outcome` waits.

    ``frame`` is pandas, polars or Arrow (polars travels as Arrow; the validation process makes the
    pandas frame GE needs). ``index_columns`` name the rows in failures. Callers pass small frames (new
    rows, samples, or one-row aggregates), never a copy of a big table. A caller with more to validate
    can prepare its next frame in DuckDB while GE works on this one.
    """
    if hasattr(frame, "to_arrow"):  # polars
        frame = frame.to_arrow()
    if os.environ.get(IN_PROCESS_ENV) == "1":
        done: Future = Future()
        done.set_result(run_suite(frame, suite_name, list(expectations), index_columns))
        return done
    try:
        return _pool().submit(run_suite, frame, suite_name, list(expectations), tuple(index_columns))
    except BrokenProcessPool as exc:
        raise _died(exc) from exc


def outcome(future: Future) -> ValidationOutcome:
    """The :class:`ValidationOutcome` of a :func:`submit`; a clear error if the validation process died."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise _died(exc) from exc


def validate_frame(frame, suite_name: str, expectations: Sequence[Expectation],
                   index_columns: Sequence[str] = ()) -> ValidationOutcome:
    """Validate ``frame`` against ``expectations`` in the validation process and wait for the outcome."""
    return outcome(submit(frame, suite_name, expectations, index_columns))


def _died(exc: BaseException) -> RuntimeError:
    global _POOL
    with _POOL_LOCK:
        _POOL = None  # the next validation starts a new process
    return RuntimeError("the Great Expectations validation process died (killed or out of memory); "
                        "this validation did not run")
