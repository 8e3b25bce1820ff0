"""Ctrl-C and SIGTERM stop a refresh, instead of being retried.

Dagster turns a signal that arrives inside a step into DagsterExecutionInterruptedError and, since each step has
a retry policy (retries.py), retries the step as if it were a transient failure: the run went on and
ended "Refresh done". So the CLI runs the job in a worker thread (Dagster installs its signal handlers only in
the main thread) and owns the signals itself: the first one sets :data:`STOP` and interrupts the DuckDB
queries running now; the warehouse connection (resources.py) then fails the current step and every later one
with :func:`interrupted`, a ``dg.Failure`` that is never retried. The run ends failed, nothing after the signal
is written, and the CLI says so. A second signal ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import duckdb

T = TypeVar("T")
STOP = threading.Event()  # set by a signal: no step starts or goes on writing the warehouse
_OPEN: set[duckdb.DuckDBPyConnection] = set()  # warehouse connections open now, interrupted on a signal
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
received: list[int] = []  # the signals received, in order


def interrupted():
    """The failure of a step stopped by Ctrl-C or SIGTERM: Dagster's Failure, never retried."""
    import dagster as dg  # here: the loader and the BI publication import this module without Dagster

    return dg.Failure(description="interrupted (Ctrl-C or SIGTERM): the step was stopped", allow_retries=False)


def check() -> None:
    if STOP.is_set():
        raise interrupted()


@contextmanager
def interruptible(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """While open, a signal interrupts ``con``'s query; an error then (or any error after it) is :func:`interrupted`."""
    _OPEN.add(con)
    try:
        yield
    except Exception as exc:
        if STOP.is_set():
            raise interrupted() from exc
        raise
    finally:
        _OPEN.discard(con)


def exit_code() -> int:
    """The shell's code for the first signal received: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + received[0] if received else 1


def _on_signal(signum: int, _frame) -> None:
    received.append(signum)
    if STOP.is_set():  # the second one: stop now (the next refresh marks this run failed)
        sys.stderr.write("interrupted again: stopping now\n")
        sys.stderr.flush()
        os._exit(exit_code())
    STOP.set()
    for con in list(_OPEN):
        try:
            con.interrupt()
        except duckdb.Error:  # closed meanwhile
            pass


def run_until_signal(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread, the main thread handling SIGINT and SIGTERM (see the module docstring)."""
    STOP.clear()
    received.clear()
    previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    out: dict[str, object] = {}

    def work() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            out["error"] = exc

    worker = threading.Thread(target=work, name="seg-assets-refresh", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)  # short waits: the main thread runs the signal handler in between
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if "error" in out:
        raise out["error"]
    return out["value"]
