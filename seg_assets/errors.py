"""Input problems a person fixes, told apart from bugs.

A missing column, a bad mapping, an unknown format or a setting the job does not have is expected:
``seg-assets`` prints its message as one line (no traceback) and repeats it in the closing summary. Any
other exception is a bug and keeps its traceback. Messages name the file or source, say what is wrong
and how to fix it.
"""

from __future__ import annotations


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full, or the user's quota on it (DuckDB's write-ahead log, a Parquet copy): no
    file's fault, no retry's fix (resources.WarehouseDiskFull says it in one line; the BI publication, publish/assets.py,
    calls it the folder's). The one rule: it knew ENOSPC only, so a quota exceeded failed a good landing file."""
    import errno

    return ((isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
            or any(said in str(exc) for said in ("No space left on device", "Disk quota exceeded")))


class InputError(Exception):
    """Raised outside a run (settings, definitions): the CLI prints ``str(exc)`` and exits 2."""


def input_failure(message: str):
    """Raise this in an asset for an input problem: Dagster's Failure, never retried (retrying cannot fix input).

    The CLI shows a step's ``dg.Failure`` as its one-line description; anything else with its traceback.
    """
    import dagster as dg  # here, so that the CLI can import InputError without loading Dagster

    return dg.Failure(description=message, allow_retries=False)


# What Dagster raises in a step whose blocking asset check failed: no bug, the check's own result says what is wrong.
CHECK_BLOCKED = "DagsterAssetCheckFailedError"


def step_failure(data) -> tuple[str, bool]:
    """(message, expected) of a step's ``StepFailureData``: a ``dg.Failure``'s description (an input problem the asset
    told: expected), else the deepest cause of its error, past the retry policy's wrapper ("Exceeded max_retries of
    2" said nothing of the cause) and Dagster's own (a bug: unexpected). The CLI and the run-failure sensor both say it."""
    if data.user_failure_data is not None:
        return (data.user_failure_data.description or data.error.message).strip(), True
    if getattr(data.error, "cls_name", None) == CHECK_BLOCKED:  # a blocking check failed: its result says why
        return " ".join(data.error.message.split()), True
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip(), False
