"""What each segment looks like, in original feature units, for BI and for naming.

:func:`segment_profiles` gives one row per segment (size, share, revenue share, mean and median of
every feature, the most distinguishing features and a one-line description) for
``analytics.segment_profiles``. :func:`feature_contrasts` gives the long form (segment x feature)
with the standardized mean difference vs the rest of the population and the segment's mean
percentile rank, which naming.py uses: ranks are unitless and robust to the heavy tails and
zero-inflation of counts, where z-scores of raw means are dominated by a few whales.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from seg_assets.markdown import percent
from seg_assets.markdown import table as md_table
from seg_assets.segmentation import naming

SEG = "segment_id"
ORDER_RATE_WINDOW_DAYS = 90  # the window of the feature below (features/dictionary.py)
ORDERS_IN_WINDOW = f"orders_{ORDER_RATE_WINDOW_DAYS}d"
MAX_STATED_INTERVAL_DAYS = 365  # rarer than once a year is not a rhythm worth a clause ("last ordered" says it)


def _with_segments(frame: pl.DataFrame, segment_ids: Sequence[int] | np.ndarray, features: Sequence[str]) -> pl.DataFrame:
    if len(segment_ids) != frame.height:
        raise ValueError(f"{len(segment_ids)} segment ids for {frame.height} rows")
    return frame.select([pl.col(f).cast(pl.Float64) for f in features]).with_columns(
        pl.Series(SEG, np.asarray(segment_ids), dtype=pl.Int64))


def feature_contrasts(frame: pl.DataFrame, segment_ids: Sequence[int] | np.ndarray, features: Sequence[str],
                      ranks: bool = True, medians: bool = True) -> pl.DataFrame:
    """Long frame: segment_id, feature, mean, median, population_mean, smd, mean_rank.

    ``smd`` = (segment mean - mean of the rest) / population sd; ``mean_rank`` = average percentile
    rank (0..1, ties averaged) of the segment's users in the whole population (0.5 = typical).
    Ranking a million users costs a second: ``ranks=False`` leaves ``mean_rank`` null, ``medians=False`` the
    median (profiles need only smd, and have their own medians).
    """
    df = _with_segments(frame, segment_ids, features)
    n = df.height
    ranked = df.with_columns([((pl.col(f).rank("average") - 0.5) / n if ranks else pl.lit(None, dtype=pl.Float64))
                              .alias(f"__rank_{f}") for f in features])
    agg = ranked.group_by(SEG).agg(
        pl.len().alias("__n"),
        *[pl.col(f).sum().alias(f"__sum_{f}") for f in features],
        *[(pl.col(f).median() if medians else pl.lit(None, dtype=pl.Float64)).alias(f"__median_{f}") for f in features],
        *[pl.col(f"__rank_{f}").mean().alias(f"__mrank_{f}") for f in features],
    ).sort(SEG)
    tot = df.select([pl.col(f).sum().alias(f) for f in features]).row(0, named=True)
    sd = df.select([pl.col(f).std(ddof=0).alias(f) for f in features]).row(0, named=True)
    parts = []
    for f in features:
        mean = pl.col(f"__sum_{f}") / pl.col("__n")
        n_rest = n - pl.col("__n")
        rest = pl.when(n_rest > 0).then((tot[f] - pl.col(f"__sum_{f}")) / n_rest).otherwise(mean)
        scale = sd[f] if sd[f] and sd[f] > 0 else 1.0
        parts.append(agg.select(
            pl.col(SEG), pl.lit(f).alias("feature"), mean.alias("mean"), pl.col(f"__median_{f}").alias("median"),
            pl.lit(tot[f] / n if n else 0.0).alias("population_mean"), ((mean - rest) / scale).alias("smd"),
            pl.col(f"__mrank_{f}").alias("mean_rank")))
    return pl.concat(parts).sort(SEG, "feature")


def rank_table(contrasts: pl.DataFrame) -> dict[int, dict[str, float]]:
    """segment id -> {feature: mean percentile rank}, the input of naming.py."""
    out: dict[int, dict[str, float]] = {}
    for sid, f, r in contrasts.select(SEG, "feature", "mean_rank").iter_rows():
        out.setdefault(int(sid), {})[f] = float(r)
    return out


def _fmt_days(d: float) -> str:
    return f"{d:.0f} day" + ("" if round(d) == 1 else "s")


def describe_segment(stats: Mapping[str, float], population: Mapping[str, float], max_clauses: int = 4) -> str:
    """One line in plain words from a segment's statistics (keys as produced in segment_profiles).

    Clauses in priority order, the first ``max_clauses`` kept: never ordered, joined recently, spend vs
    average, order interval, discounting (when notable), last order, visits.
    """
    parts: list[str] = []
    buyers = stats.get("buyer_share")
    buying = naming.buying(buyers)
    if not buying:
        parts.append(f"{percent(1 - buyers)} never ordered")
    pop_tenure = population.get("tenure_days")
    if stats.get("median_tenure_days") is not None and pop_tenure and stats["median_tenure_days"] < 0.25 * pop_tenure:
        parts.append(f"joined {_fmt_days(stats['median_tenure_days'])} ago")
    pop_m = population.get("monetary")
    if stats.get("mean_monetary") is not None and pop_m:
        ratio = stats["mean_monetary"] / pop_m
        parts.append("spends almost nothing" if ratio < 0.05 else f"spends {ratio:.1f}x the average")
    gap = stats.get("order_interval_days")
    observed = (stats.get("median_tenure_days") or 0) >= ORDER_RATE_WINDOW_DAYS  # a rate over a window they were there for
    if buying and observed and gap is not None and np.isfinite(gap) and gap <= MAX_STATED_INTERVAL_DAYS:
        parts.append(f"orders every {_fmt_days(gap)}")
    disc = stats.get("buyer_discount_share")
    if disc is not None and np.isfinite(disc) and disc >= 0.15:
        parts.append(f"{percent(disc)} of spend discounted")
    recency = stats.get("buyer_recency_days", stats.get("median_recency_days"))
    if buying and recency is not None and np.isfinite(recency):
        parts.append(f"last ordered {_fmt_days(recency)} ago")
    if stats.get("median_sessions") is not None and round(stats["median_sessions"]) == 0:
        parts.append("no sessions")  # (days since the last visit is the tenure of users who never visited)
    elif stats.get("median_sessions") is not None and stats.get("median_days_since_last_visit") is not None:
        sessions = round(stats["median_sessions"])
        parts.append(f"{sessions} session{'' if sessions == 1 else 's'}, last visit "
                     f"{_fmt_days(stats['median_days_since_last_visit'])} ago")
    return ", ".join(parts[:max_clauses])


def segment_profiles(frame: pl.DataFrame, segment_ids: Sequence[int] | np.ndarray, features: Sequence[str],
                     names: Mapping[int, str] | None = None, top_n: int = 3,
                     order_history_days: float | None = None) -> pl.DataFrame:
    """One row per segment: sizes, shares, mean_/median_ per feature, top features, description.
    ``order_history_days``: how far back the shop's orders go (None: at least the 90-day window)."""
    features = list(features)
    df = _with_segments(frame, segment_ids, features)
    n = df.height
    extra = []
    if "frequency" in features:
        extra.append((pl.col("frequency") > 0).mean().alias("buyer_share"))
        if {"tenure_days", ORDERS_IN_WINDOW} <= set(features):
            # Days per completed order of the segment's buyers over the last 90 days (each buyer counted for the part
            # of the window since they signed up, and that the order history covers). Not tenure / orders: a signup
            # years before the data starts made loyal buyers who order every ~45 days read "every 183 days".
            buyer = pl.col("frequency") > 0
            window = min(float(ORDER_RATE_WINDOW_DAYS), order_history_days if order_history_days is not None else np.inf)
            exposure = pl.min_horizontal(pl.col("tenure_days"), pl.lit(max(window, 0.0)))
            orders = pl.col(ORDERS_IN_WINDOW).filter(buyer).sum()
            extra.append(pl.when(orders > 0).then(exposure.filter(buyer).sum() / orders).otherwise(None)
                         .alias("order_interval_days"))
    if "discount_share" in features and "frequency" in features:
        extra.append(pl.col("discount_share").filter(pl.col("frequency") > 0).mean().alias("buyer_discount_share"))
    if "recency_days" in features and "frequency" in features:  # a non-buyer's recency is their tenure, no last order
        extra.append(pl.col("recency_days").filter(pl.col("frequency") > 0).median().alias("buyer_recency_days"))
    prof = df.group_by(SEG).agg(
        pl.len().alias("size"),
        *[pl.col(f).mean().alias(f"mean_{f}") for f in features],
        *[pl.col(f).median().alias(f"median_{f}") for f in features],
        *extra,
    ).sort(SEG)
    revenue = df["monetary"].sum() if "monetary" in features else 0.0
    prof = prof.with_columns(
        share=pl.col("size") / n,
        revenue_share=(pl.col("mean_monetary") * pl.col("size") / revenue) if revenue else pl.lit(None, dtype=pl.Float64),
    )
    contrasts = feature_contrasts(frame, segment_ids, features, ranks=False, medians=False)
    tops = (contrasts.with_columns(abs_smd=pl.col("smd").abs())
            .sort([SEG, "abs_smd", "feature"], descending=[False, True, False])
            .group_by(SEG, maintain_order=True).head(top_n)
            .group_by(SEG, maintain_order=True)
            .agg(pl.format("{} ({} sd)", "feature", pl.col("smd").round(1)).str.join(", ").alias("top_features")))
    prof = prof.join(tops, on=SEG, how="left")
    population = {f: df[f].mean() for f in features}
    desc = [describe_segment(row, population) for row in prof.iter_rows(named=True)]
    prof = prof.with_columns(pl.Series("description", desc, dtype=pl.Utf8))
    if names is not None:
        prof = prof.with_columns(pl.col(SEG).replace_strict(dict(names), default=None, return_dtype=pl.Utf8).alias("segment_name"))
    lead = [SEG] + (["segment_name"] if names is not None else []) + ["size", "share", "revenue_share", "description", "top_features"]
    return prof.select(lead + [c for c in prof.columns if c not in lead])


REVIEWS_NOT_AVAILABLE = "reviews not available (none delivered)"
REVIEW_COLUMNS = {"reviews": pl.Int64, "negative_review_share": pl.Float64, "avg_sentiment": pl.Float64,
                  "avg_rating": pl.Float64, "reviews_note": pl.String}


def review_profile(per_segment: pl.DataFrame, segment_ids: Sequence[int]) -> pl.DataFrame:
    """What each segment's reviews say, next to the whole shop's.

    ``per_segment``: ``segment_id, reviews, labelled_reviews, negative_reviews, sentiment_sum, scored_reviews,
    rating_sum, rated_reviews`` (sums, so the shop's figures are exact). One row per id of ``segment_ids``:
    ``REVIEW_COLUMNS``, with a line such as "22 % of 340 reviews negative (shop: 9 %)". Without any review in
    the shop every note says so and the figures are null.
    """
    ids = pl.DataFrame({SEG: list(segment_ids)}, schema={SEG: pl.Int64})
    sums = ("reviews", "labelled_reviews", "negative_reviews", "sentiment_sum", "scored_reviews", "rating_sum", "rated_reviews")
    if per_segment.height == 0:
        per_segment = pl.DataFrame(schema={SEG: pl.Int64, **dict.fromkeys(sums, pl.Float64)})
    seg = ids.join(per_segment.with_columns(pl.col(SEG).cast(pl.Int64)), on=SEG, how="left").with_columns(
        [pl.col(c).fill_null(0) for c in sums])
    shop = per_segment.select([pl.col(c).sum() for c in sums]).row(0, named=True)

    def ratio(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den))

    seg = seg.with_columns(negative_review_share=ratio("negative_reviews", "labelled_reviews"),
                           avg_sentiment=ratio("sentiment_sum", "scored_reviews"), avg_rating=ratio("rating_sum", "rated_reviews"))
    if not shop["reviews"]:
        notes = [REVIEWS_NOT_AVAILABLE] * seg.height
    else:
        shop_share = shop["negative_reviews"] / shop["labelled_reviews"] if shop["labelled_reviews"] else None
        notes = []
        for n, labelled, share in seg.select("reviews", "labelled_reviews", "negative_review_share").iter_rows():
            if not n:
                notes.append("no reviews from this segment")
            elif share is None or shop_share is None:
                notes.append(f"{n:,} reviews, none with a usable text or rating")
            else:  # the share is of the labelled reviews: say so where some have neither text nor stars
                more = f"; {n - labelled:,.0f} more without a label (no usable text or stars)" if labelled < n else ""
                notes.append(f"{percent(share, ' ')} of {labelled:,.0f} review{'' if labelled == 1 else 's'} negative "
                             f"(shop: {percent(shop_share, ' ')}){more}")
    return seg.with_columns(pl.Series("reviews_note", notes, dtype=pl.String)).select(
        SEG, *[pl.col(c).cast(t) for c, t in REVIEW_COLUMNS.items()])


def rules_markdown(best: pl.DataFrame, names: Mapping[int, str]) -> str:
    """The UI's table of each segment's strongest basket rules (``best``: segment_id, rank, rule, as
    baskets/rules.top_rules gives them), one table per segment."""
    if best.height == 0:
        return "no basket rules (no order lines, or no rule above the thresholds)"
    parts = []
    for (sid,), rows in best.sort(SEG, "rank", nulls_last=False).group_by(SEG, maintain_order=True):
        title = "Whole shop" if sid is None else f"Segment {sid}: {names.get(sid) or ''}"
        parts.append(f"**{title}**\n\n" + md_table(["#", "rule (lift, support)"], rows.select("rank", "rule").iter_rows()))
    return "\n\n".join(parts)
