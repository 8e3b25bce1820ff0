"""Demo campaign sends and the orders they cause, with planted per shopper type x action response rates.

Weekly campaigns over the last weeks of the window (sent at 10:00 UTC, 8, 15, 22 and 29 days before the
end, so every 7-day attribution window closes before the data ends). Each campaign picks about
``SEND_SHARE`` (all) of the users who have signed up and are not in the global control group (the salted hash of
``actions.yaml``, the same rule as ``activation/groups.py``: a real sender honours it). The logging policy is
uniform random over ``ACTIONS`` (propensity 1/k), and ``HOLDOUT_SHARE`` of the picked users are held out as
``control`` (the row still names the action they would have received). A treated user places one extra
completed order within 7 days after the send with probability ``RESPONSE_RATES[type, action]`` (on top of
their ordinary orders): that is the planted effect, written to ``truth/planted_action_rates.parquet``.

Everything comes from one random stream of its own (``[seed, _CAMPAIGNS]``), and the files are new ones
(``landing/campaign_sends/``, ``landing/orders/orders_campaign_responses_*``): the other files of the
delivery are byte-identical with or without campaigns. ``actions.yaml`` is written at the data root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from seg_assets.activation.groups import control_cutoff
from seg_assets.demo import faults as F
from seg_assets.demo.faults import DAY, day_str, id_num, label, to_datetime

ACTIONS = ("discount_10", "free_shipping", "new_arrivals", "loyalty_points")
# Planted chance of an extra completed order within 7 days of a treated send; rows follow SHOPPER_TYPES
# (loyal_high_value, bargain_hunter, window_shopper, occasional, lapsed, new_customer), columns ACTIONS.
RESPONSE_RATES = np.array([
    [0.03, 0.06, 0.12, 0.33],
    [0.36, 0.12, 0.04, 0.15],
    [0.06, 0.27, 0.06, 0.15],
    [0.09, 0.07, 0.12, 0.09],
    [0.14, 0.06, 0.04, 0.09],
    [0.06, 0.27, 0.09, 0.04],
])
CONTROL_SHARE, CONTROL_SALT = 0.05, "demo"  # the global control group of the demo's actions.yaml
HOLDOUT_SHARE = 0.15  # per-campaign control share (actions.yaml holdout_share: the SRM check's planned split)
SEND_SHARE = 1.0  # share of the reachable users each campaign picks (all: more sends per segment x action)
WEEKS = 4
ATTRIBUTION_DAYS = 7

ACTIONS_YAML = f"""# Written by the demo generator (seg_assets/demo/campaigns.py).
control:
  share: {CONTROL_SHARE}
  salt: "{CONTROL_SALT}"
holdout_share: {HOLDOUT_SHARE}
attribution_days: {ATTRIBUTION_DAYS}
actions:
  discount_10:
    description: 10 % off the next order
    channel: email
    cost_per_send: 0.02
  free_shipping:
    description: Free shipping on the next order
    channel: email
    cost_per_send: 0.02
  new_arrivals:
    description: New arrivals in the favourite category
    channel: push
    cost_per_send: 0.01
  loyalty_points:
    description: Double loyalty points for a week
    channel: email
    cost_per_send: 0.02
"""

SENDS_SPEC = F.TableSpec("campaign_sends", "send_id", "sent_ts", "user_id")


def _buckets(user_ids: list[str], salt: str) -> np.ndarray:
    from seg_assets.activation.groups import bucket

    return np.fromiter((bucket(u, salt) for u in user_ids), dtype=np.int64, count=len(user_ids))


def write_campaigns(root: Path, landing_for, rng: np.random.Generator, shopper: np.ndarray, signup: np.ndarray,
                    end_s: int, start_s: int, fmt: str, shopper_types: tuple[str, ...],
                    categories: tuple[str, ...]) -> tuple[dict[str, int], list[Path], dict[str, pl.DataFrame], pl.Series]:
    """Write campaign sends, response orders and actions.yaml; return (rows, files, truth frames, the response orders'
    ids: valid orders, for the truth of a delivery with faults)."""
    n = len(shopper)
    user_ids = [f"u{i:07d}" for i in range(1, n + 1)]  # demo.generate's ids (u + 7 digits)
    reachable = _buckets(user_ids, CONTROL_SALT) >= control_cutoff(CONTROL_SHARE)
    send_days = [end_s - (8 + 7 * k) * DAY for k in reversed(range(WEEKS))]
    send_times = [(s // DAY) * DAY + 10 * 3600 for s in send_days if s - 3 * DAY >= start_s]
    parts = []
    for w, ts in enumerate(send_times):
        picked = np.flatnonzero(reachable & (signup < ts) & (rng.random(n) < SEND_SHARE))
        action = rng.integers(0, len(ACTIONS), len(picked))
        control = rng.random(len(picked)) < HOLDOUT_SHARE
        respond = ~control & (rng.random(len(picked)) < RESPONSE_RATES[shopper[picked], action])
        delay = rng.integers(3600, int(6.5 * DAY), len(picked))
        parts.append(pl.DataFrame({"_w": np.full(len(picked), w, np.int32), "_sent": np.full(len(picked), ts, np.int64),
                                   "_u": picked.astype(np.int64), "_a": action.astype(np.int8),
                                   "_c": control, "_r": respond, "_delay": delay}))
    sends = pl.concat(parts) if parts else pl.DataFrame(schema={"_w": pl.Int32, "_sent": pl.Int64, "_u": pl.Int64,
                                                                "_a": pl.Int8, "_c": pl.Boolean, "_r": pl.Boolean,
                                                                "_delay": pl.Int64})
    campaign_ids = [f"demo-{day_str(ts)}" for ts in send_times]
    sends = sends.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_n"), pl.lit(0, pl.Int32).alias("_file"))
    cols = [id_num(pl.col("_n"), "cs", 8).alias("send_id"),
            pl.col("_w").replace_strict(list(range(len(campaign_ids))), campaign_ids, return_dtype=pl.String).alias("campaign_id"),
            id_num(pl.col("_u") + 1, "u").alias("user_id"), label("_a", ACTIONS).alias("action_id"),
            to_datetime("_sent").alias("sent_ts"),
            pl.when(pl.col("_c")).then(pl.lit("control")).otherwise(pl.lit("treatment")).alias("group"),
            pl.lit(1.0 / len(ACTIONS)).alias("propensity")]
    span = f"{day_str(send_times[0])}_{day_str(send_times[-1])}" if send_times else day_str(end_s)
    written = F.write_table(sends, cols, SENDS_SPEC, F.FilePlan([f"campaign_sends_{span}"]), landing_for("campaign_sends"),
                            fmt, rng, 0.0)
    responses = sends.filter(pl.col("_r"))
    m = responses.height
    amount = np.round(np.maximum(30.0 * rng.lognormal(0.0, 0.5, m), 1.0), 2)
    orders = responses.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_n"), "_u",
        (pl.col("_sent") + pl.col("_delay")).clip(upper_bound=end_s).alias("_ts"), pl.lit(0, pl.Int32).alias("_file"),
    ).with_columns(pl.Series("amount", amount), pl.Series("items", 1 + rng.poisson(0.5, m)).cast(pl.Int32),
                   pl.Series("_cat", rng.integers(0, len(categories), m).astype(np.int8)))
    order_cols = [id_num(pl.col("_n"), "o-cr-", 7).alias("order_id"), id_num(pl.col("_u") + 1, "u").alias("user_id"),
                  to_datetime("_ts").alias("order_ts"), pl.col("amount"), pl.col("items"),
                  label("_cat", categories).alias("category"), pl.lit(0.0).alias("discount"),
                  pl.lit("completed").alias("status")]
    o = F.write_table(orders, order_cols, F.SPECS["orders"], F.FilePlan([f"orders_campaign_responses_{span}"]),
                      landing_for("orders"), fmt, rng, 0.0, want_ids=True)
    (Path(root) / "actions.yaml").write_text(ACTIONS_YAML)
    rates = pl.DataFrame([{"shopper_type": t, "action_id": a, "rate": float(RESPONSE_RATES[i, j])}
                          for i, t in enumerate(shopper_types) for j, a in enumerate(ACTIONS)])
    truth_sends = sends.select(id_num(pl.col("_n"), "cs", 8).alias("send_id"), pl.col("_r").alias("planted_response"))
    return ({"campaign_sends": written.rows, "campaign_response_orders": o.rows},
            [*written.files, *o.files, Path(root) / "actions.yaml"],
            {"planted_action_rates.parquet": rates, "campaign_responses.parquet": truth_sends}, o.valid_ids)


def before_first_send(root: Path) -> str | None:
    """One second before the earliest ``sent_ts`` under ``landing/campaign_sends/`` (ISO-8601 UTC), or None.

    ``make demo`` refreshes as of this time before the normal refresh, as a shop scores its segments before it
    sends a campaign: the lift of each segment then counts each send in the segment it was sent to.
    """
    from datetime import timedelta

    folder = Path(root) / "landing" / "campaign_sends"
    times = [pl.read_parquet(p)["sent_ts"].min() for p in folder.glob("*.parquet")]
    times += [pl.read_csv(p, try_parse_dates=True)["sent_ts"].min() for p in folder.glob("*.csv*")]
    times = [t for t in times if t is not None]
    return (min(times) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ") if times else None


if __name__ == "__main__":  # python -m seg_assets.demo.campaigns DIR: the as-of of make demo's first refresh
    import sys

    print(before_first_send(Path(sys.argv[1])) or "")
