"""Click devices for the demo: customers browse before they log in (``generate(..., with_devices=True)``).

Every click carries the device it was made on (``anonymous_id``). A session with a checkout is logged in (its clicks
carry the customer's id); one without is anonymous with probability ``ANONYMOUS_SHARE``: its clicks' ``user_id`` is
the device id, as a tracker's events before a login are (Segment's ``anonymousId``, Snowplow's ``domain_userid``).
Every ``SECOND_DEVICE``-th customer (by number) browses on two devices, each session on either at random. A device
whose sessions are all anonymous stays a user of its own after ingestion (``staging.identities``, docs/identity.md);
``truth/devices[_tag].parquet`` says whose each device is and whether this delivery logs in on it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from seg_assets.demo.event_names import EVENT_NAMES
from seg_assets.demo.faults import id_num

ANONYMOUS_SHARE = 0.4  # of the sessions without a checkout
SECOND_DEVICE = 4  # every 4th customer has a second device
_LOGGED_IN_STAGES = ("checkout", "purchase")


def device_id(col: str = "_d") -> pl.Expr:
    return id_num(pl.col(col) + 1, "d", 8)


def add_devices(df: pl.DataFrame, rng: np.random.Generator, names: tuple[str, ...]) -> pl.DataFrame:
    """``df`` (click frame: ``_u`` user, ``_s`` session, ``_et`` index into ``names``) with ``_d`` (the device
    number) and ``_anon`` (the click is made before a login). Draws two numbers per session from ``rng`` only."""
    user, session, name = (df.get_column(c).to_numpy() for c in ("_u", "_s", "_et"))
    sessions = int(session.max()) + 1 if len(session) else 0
    checkout = np.array([EVENT_NAMES.get(n, n) in _LOGGED_IN_STAGES for n in names])
    logged_in = np.zeros(sessions, dtype=bool)
    logged_in[session[checkout[name]]] = True
    anonymous, other = rng.random((2, sessions))
    anon = (~logged_in & (anonymous < ANONYMOUS_SHARE))[session]
    second = (user % SECOND_DEVICE == SECOND_DEVICE - 1) & (other < 0.5)[session]
    return df.with_columns(pl.Series("_d", 2 * user.astype(np.int64) + second), pl.Series("_anon", anon))


def devices_truth(df: pl.DataFrame, user_offset: int = 1) -> pl.DataFrame:
    """One row per device of ``add_devices``' frame: its id, its customer's, and whether a session logs in on it."""
    return (df.group_by("_d").agg(pl.col("_u").first(), (~pl.col("_anon")).any().alias("logs_in")).sort("_d")
            .select(device_id().alias("anonymous_id"), id_num(pl.col("_u") + user_offset, "u").alias("user_id"),
                    "logs_in"))
