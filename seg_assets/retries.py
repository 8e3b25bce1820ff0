"""The one retry policy of every step, whichever job runs it.

Declared on each asset and check (not only on the ``refresh`` job): a run started from the UI's Materialize button or
by the automation sensor goes through Dagster's implicit asset job, which had no retry policy, so a transient error
(a file still syncing, a database hiccup) failed those runs at the first try. Each step is idempotent, so a retry is
always safe; an input problem (errors.input_failure) and a held or damaged warehouse (resources.WarehouseLocked,
WarehouseDamaged) are not retried.
"""

import dagster as dg

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
