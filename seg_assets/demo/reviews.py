"""Reviews for the demo's orders: English text whose tone depends on the shopper type and the order's outcome.

A share of each type's orders is reviewed (``REVIEW_P``; returned and cancelled orders more often), one to
fourteen days after the order. The tone is drawn from the outcome first (a return or a cancellation is
mostly negative: ``NEGATIVE_RETURNED``, ``NEGATIVE_CANCELLED``), else from the type (``NEGATIVE_P``: loyal
buyers are rarely unhappy, lapsed ones often, which is why they left). The text is assembled from phrases of
that tone and outcome (negations, capitals and emoji included), the stars follow the tone. A few reviews
have stars only, and ``GERMAN_P`` are in German, which the pipeline cannot score without a German lexicon
(the stars label them). ``truth/review_tones.parquet`` holds each review's planted tone.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from seg_assets.demo import faults as F
from seg_assets.demo.faults import DAY, STATUSES, file_of, id_num, period_names, to_datetime

# Rows follow SHOPPER_TYPES: loyal_high_value, bargain_hunter, window_shopper, occasional, lapsed, new_customer.
REVIEW_P = np.array([0.30, 0.30, 0.35, 0.15, 0.30, 0.25])  # chance a completed order is reviewed
NEGATIVE_P = np.array([0.04, 0.22, 0.15, 0.08, 0.45, 0.10])  # chance a completed order's review is negative
REVIEW_P_PROBLEM = 0.55  # chance a returned or cancelled order is reviewed
NEGATIVE_RETURNED, NEGATIVE_CANCELLED = 0.80, 0.70
NEUTRAL_P = 0.10  # of the reviews that are not negative
NO_TEXT_P = 0.08  # stars only
GERMAN_P = 0.03
TONES = ("positive", "neutral", "negative")
POSITIVE, NEUTRAL, NEGATIVE = range(3)
COMPLETED, CANCELLED, RETURNED = (STATUSES.index(s) for s in ("completed", "cancelled", "returned"))

OPENERS = {
    POSITIVE: ("Love it!", "Great purchase.", "Really happy with this.", "Excellent!", "Five stars from me.",
               "Very satisfied.", "AMAZING.", "Fantastic quality.", "Not bad at all, better than expected.", "Perfect."),
    NEUTRAL: ("It is okay.", "Average.", "Does what it says.", "As described, nothing special.", "Fine for the price."),
    NEGATIVE: ("Very disappointed.", "Terrible.", "Not happy at all.", "Awful experience.", "Would not recommend.",
               "Poor quality.", "DO NOT BUY, total rubbish.", "Not worth the money.", "Never again.", "Waste of money."),
}
DETAILS = {
    (POSITIVE, COMPLETED): ("Fast delivery and well packed.", "Works perfectly.", "Great value for money.",
                            "The quality is excellent.", "My family loves it.", "Exactly what I wanted.",
                            "Fits perfectly.", "Easy to set up."),
    (NEUTRAL, COMPLETED): ("Delivery took a week.", "The colour is a bit different from the photo.",
                           "Packaging was plain.", "Average quality for the price."),
    (NEGATIVE, COMPLETED): ("It broke after two days.", "Arrived late and the box was damaged.",
                            "Cheap plastic, feels fragile.", "Nothing like the pictures.", "Customer service never replied.",
                            "Stopped working after a week.", "The size is wrong and the seams are bad."),
    (NEGATIVE, RETURNED): ("I sent it back, the quality is awful.", "Returned it: damaged on arrival.",
                           "Had to return it, wrong size and poor stitching.", "Returned, and still waiting for my refund.",
                           "Sent back. Useless product."),
    (NEGATIVE, CANCELLED): ("My order was cancelled without any explanation.", "Cancelled after waiting two weeks, frustrating.",
                            "They cancelled my order and nobody answers emails.", "Order cancelled, payment still not refunded."),
    (POSITIVE, RETURNED): ("Returned for a different size, the refund was quick.", "Easy return, great service."),
    (POSITIVE, CANCELLED): ("Cancelled by mistake, support sorted it out quickly. Great service.",),
    (NEUTRAL, RETURNED): ("Returned it, the size did not fit.",),
    (NEUTRAL, CANCELLED): ("Cancelled the order, changed my mind.",),
}
ENDINGS = {POSITIVE: ("", "", " 😍", " 👍", " :)", " Would buy again!", " Highly recommend."),
           NEUTRAL: ("", "", " Okay.", ""),
           NEGATIVE: ("", "", " 😡", " 👎", " :(", " Avoid!", " I want my money back.")}
GERMAN = {POSITIVE: ("Sehr gutes Produkt, schnelle Lieferung, ich bin zufrieden.", "Tolle Qualität, gerne wieder."),
          NEUTRAL: ("Das Produkt ist in Ordnung, nichts Besonderes.",),
          NEGATIVE: ("Schlechte Qualität, ich bin sehr enttäuscht.", "Die Lieferung war zu spät und die Verpackung kaputt.")}
RATINGS = {POSITIVE: ((4, 5), (0.35, 0.65)), NEUTRAL: ((3,), (1.0,)), NEGATIVE: ((1, 2), (0.6, 0.4))}


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


def draw_reviews(rng: np.random.Generator, orders: pl.DataFrame, shopper: np.ndarray, end_s: int) -> pl.DataFrame:
    """One row per reviewed order of the numbered orders frame (``_n``, ``_u``, ``_ts``, ``_st``): ``_o`` (the
    order's ``_n``), ``_u``, ``_ts``, ``tone``, ``rating``, ``text`` (null: stars only), sorted by time."""
    otype = shopper[orders["_u"].to_numpy()].astype(np.int64)
    status = orders["_st"].to_numpy().astype(np.int64)
    problem = status != COMPLETED
    reviewed = rng.random(orders.height) < np.where(problem, REVIEW_P_PROBLEM, REVIEW_P[otype])
    ts = orders["_ts"].to_numpy() + rng.integers(DAY, 14 * DAY, orders.height)
    keep = reviewed & (ts <= end_s)
    otype, status, ts = otype[keep], status[keep], ts[keep]
    n = int(keep.sum())
    p_negative = np.select([status == RETURNED, status == CANCELLED], [NEGATIVE_RETURNED, NEGATIVE_CANCELLED], NEGATIVE_P[otype])
    u = rng.random(n)
    tone = np.where(u < p_negative, NEGATIVE, np.where(u < p_negative + (1 - p_negative) * NEUTRAL_P, NEUTRAL, POSITIVE))
    text = np.empty(n, dtype=object)
    rating = np.zeros(n, dtype=np.int32)
    german = rng.random(n) < GERMAN_P
    for t in (POSITIVE, NEUTRAL, NEGATIVE):
        stars, p = RATINGS[t]
        rows = np.flatnonzero(tone == t)
        rating[rows] = rng.choice(stars, size=len(rows), p=p)
        text[rows] = _pick(rng, OPENERS[t], len(rows))
        for s in (COMPLETED, CANCELLED, RETURNED):
            sub = rows[status[rows] == s]
            text[sub] = text[sub] + " " + _pick(rng, DETAILS[(t, s)], len(sub))
        text[rows] = text[rows] + _pick(rng, ENDINGS[t], len(rows))
        de = rows[german[rows]]
        text[de] = _pick(rng, GERMAN[t], len(de))
    text[rng.random(n) < NO_TEXT_P] = None
    frame = pl.DataFrame({"_o": orders["_n"].to_numpy()[keep], "_u": orders["_u"].to_numpy()[keep], "_ts": ts,
                          "tone": tone.astype(np.int8), "rating": rating,
                          "text": pl.Series(text.tolist(), dtype=pl.String)})
    return frame.sort("_ts", "_o", maintain_order=True)


def reviews_frame(rng: np.random.Generator, orders: pl.DataFrame, shopper: np.ndarray, prefix: str, start_s: int,
                  end_s: int, nper: int, review_prefix: str = "r") -> tuple[pl.DataFrame, list[pl.Expr], pl.DataFrame]:
    """(rows with ``_file``, the contract columns, the truth: review_id and planted tone)."""
    df = draw_reviews(rng, orders, shopper, end_s)
    df = df.with_columns(pl.Series("_file", file_of(rng, df["_ts"].to_numpy(), start_s, nper)),
                         pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_n"))
    review_id = id_num(pl.col("_n"), review_prefix, 9)
    cols = [review_id.alias("review_id"), id_num(pl.col("_u") + 1, "u").alias("user_id"),
            id_num(pl.col("_o"), prefix, 9).alias("order_id"), to_datetime("_ts").alias("review_ts"),
            pl.col("rating"), pl.col("text")]
    truth = df.select(review_id.alias("review_id"), pl.col("tone").replace_strict(list(range(3)), list(TONES),
                                                                                   return_dtype=pl.String))
    return df, cols, truth


SPEC = F.TableSpec("reviews", "review_id", "review_ts", "user_id")


def write_reviews(paths, orders: pl.DataFrame, shopper: np.ndarray, prefix: str, start_s: int, end_s: int, nper: int,
                  fmt: str, rng: np.random.Generator, summary, tag: str = "") -> pl.DataFrame:
    """Write landing/reviews/ for the orders just drawn, without faults, from a random stream of their own (the
    other files are the same with or without reviews); record the files in ``summary``; return the planted tones."""
    df, cols, tones = reviews_frame(rng, orders, shopper, prefix, start_s, end_s, nper, f"r-{tag}-" if tag else "r")
    w = F.write_table(df, cols, SPEC, F.FilePlan(period_names("reviews", start_s, end_s, nper, tag)),
                      paths.landing_for("reviews"), fmt, rng, 0.0)
    summary.rows["reviews"] = w.rows
    summary.files += [str(p.relative_to(paths.root)) for p in w.files]
    return tones
