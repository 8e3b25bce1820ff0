"""Review sentiment: a lexicon model per language, the star rating where no lexicon applies.

* **English**: VADER (vaderSentiment, MIT). Its lexicon and emoji lexicon ship inside the wheel; nothing is
  downloaded and ``requests`` is only imported by its command-line demo. VADER handles negation ("not
  good"), intensifiers ("very"), "but", capitals ("AWESOME") and emoji, which is what short shop reviews use.
* **Shop words**: ``lexicons/en_shop.txt`` (in the package) adds to VADER's English lexicon the words of shop
  reviews it lacks ("rubbish", "flimsy", "works", "as described"): without them "Not working." and "Total junk."
  scored 0 (neutral). A user's ``en.txt`` is read after it and wins.
* **Language**: py3langid (langid.py's model, shipped in its wheel) names the language. Short reviews are
  hard to place ("Top", "ok", "Super!"), so a review counts as another language only when the identifier
  is at least ``CONFIDENT`` sure; everything else is read as English.
* **Other languages**: with a lexicon file ``<code>.txt`` (ISO 639-1, e.g. ``de.txt``) in the lexicon folder
  (``$SEG_DATA_DIR/sentiment/``), reviews in that language are scored by VADER with that lexicon (VADER's
  format: ``token<TAB>valence`` from -4 to +4, further columns ignored). VADER's negation, intensifier and
  "but" rules stay English, so expect less accuracy than in English. An ``en.txt`` adds words to (or
  overrides words of) the English lexicon. Without a lexicon the review gets no score (``sentiment`` NULL,
  ``note`` "language not supported: de") and its label comes from its stars (``label_from = 'rating'``).
* **Clauses**: a text is scored clause by clause (split after ``.``, ``!``, ``?``, ``,``, ``;``, ``:``) and gets the
  mean compound of its clauses that carry sentiment (0 when none does), as VADER's authors advise averaging the
  sentences of longer texts. VADER's negation looks three words back across any punctuation: "DO NOT BUY, total
  rubbish." read the NOT as negating "rubbish" and scored positive; neutral clauses ("Customer service never
  replied.") no longer dilute the ones that say something.
* **Label**: VADER's documented cut-offs: compound >= 0.05 positive, <= -0.05 negative, neutral between.
  From stars: 1-2 negative, 3 neutral, 4-5 positive. A review without usable text is labelled by its
  stars too; without either it has no label.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import polars as pl

THRESHOLD = 0.05  # VADER's cut-off between neutral and positive / negative
CONFIDENT = 0.9  # another language than English only when the identifier is this sure
LABELS = ("positive", "neutral", "negative")
LEXICON_SUFFIX = ".txt"
SHOP_LEXICON = Path(__file__).parent / "lexicons" / "en_shop.txt"
PARALLEL_FROM = 100_000  # distinct (text, rating) pairs from which a batch is scored in several processes (a worker
# imports the package, Dagster included: seconds; one core scores about 14,000 texts a second)
_CODE_VERSION = "3"  # bump when the rules above change: every review is scored again
_CLAUSE_END = re.compile(r"(?<=[.!?,;:])\s+")

SCORE_SCHEMA = {"review_id": pl.String, "language": pl.String, "sentiment": pl.Float64, "label": pl.String,
                "label_from": pl.String, "note": pl.String}


class LexiconError(ValueError):
    """A lexicon file that cannot be read (the message names the file and the line)."""


def label_of(compound: float) -> str:
    return "positive" if compound >= THRESHOLD else "negative" if compound <= -THRESHOLD else "neutral"


def rating_label(rating: int | None) -> str | None:
    if rating is None:
        return None
    return "negative" if rating <= 2 else "neutral" if rating == 3 else "positive"


def read_lexicon(path: Path) -> dict[str, float]:
    """token -> valence from a VADER-format file; a bad line is a ``LexiconError`` naming it."""
    out: dict[str, float] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        try:
            token, valence = parts[0].strip().lower(), float(parts[1])
        except (IndexError, ValueError):
            raise LexiconError(f"{path}:{number}: expected 'token<TAB>valence' (valence -4..4), got {line!r}") from None
        if not token or not -4.0 <= valence <= 4.0:
            raise LexiconError(f"{path}:{number}: valence {valence} of {token!r} is outside -4..4")
        out[token] = valence
    return out


@dataclass
class Scorer:
    """One VADER analyzer per supported language; ``version`` changes when any lexicon or rule does."""

    lexicon_dir: Path | None = None
    analyzers: dict = field(default_factory=dict)
    version: str = ""

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.analyzers))


def load_scorer(lexicon_dir: Path | None = None) -> Scorer:
    """English (VADER's own lexicon, the shop words, then ``en.txt`` if present) and a language per ``<code>.txt`` file."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    digest = hashlib.sha256(f"{_CODE_VERSION}|vader {version('vaderSentiment')}|{THRESHOLD}|{CONFIDENT}".encode())
    files = sorted(Path(lexicon_dir).glob(f"*{LEXICON_SUFFIX}")) if lexicon_dir and Path(lexicon_dir).is_dir() else []
    english = SentimentIntensityAnalyzer()
    english.lexicon.update(read_lexicon(SHOP_LEXICON))
    digest.update(b"|shop:" + SHOP_LEXICON.read_bytes())
    analyzers = {"en": english}
    for path in files:
        code = path.stem.lower()
        words = read_lexicon(path)
        digest.update(f"|{code}:".encode() + path.read_bytes())
        if code == "en":
            english.lexicon.update(words)
        else:
            analyzer = SentimentIntensityAnalyzer()
            analyzer.lexicon = words  # the emoji lexicon and the (English) rules stay
            analyzers[code] = analyzer
    return Scorer(Path(lexicon_dir) if lexicon_dir else None, analyzers, digest.hexdigest()[:12])


_IDENTIFIER = None


def _identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import _load_identifier

        _IDENTIFIER = _load_identifier(norm_probs=True)  # the model is read once per process (about 0.3 s)
    return _IDENTIFIER


def language_of(text: str) -> str:
    """ISO 639-1 code: another language than English only when the identifier is ``CONFIDENT``."""
    code, probability = _identifier().classify(text)
    return code if code != "en" and probability >= CONFIDENT else "en"


def score_text(text: str | None, rating: int | None, scorer: Scorer) -> tuple[str | None, float | None, str | None, str | None, str | None]:
    """(language, compound or None, label, label_from, note) of one review."""
    if text is None or not text.strip():
        label = rating_label(rating)
        return None, None, label, "rating" if label else None, "no text"
    language = language_of(text)
    analyzer = scorer.analyzers.get(language)
    if analyzer is None:
        label = rating_label(rating)
        return language, None, label, "rating" if label else None, f"language not supported: {language}"
    scores = [float(analyzer.polarity_scores(c)["compound"]) for c in _CLAUSE_END.split(text.strip()) if c.strip()]
    said = [x for x in scores if x != 0.0] or [0.0]
    # rounded as VADER rounds its compound: 4 decimals, which features add up exactly (DECIMAL(18, 4)) on either engine
    compound = round(sum(said) / len(said), 4)
    return language, compound, label_of(compound), "text", None


def _score_chunk(keys: list[tuple[str | None, int | None]], lexicon_dir: Path | None, version: str) -> list[tuple]:
    """A worker's share: the scorer is rebuilt in the worker (analyzers do not pickle) and must be the same one."""
    scorer = load_scorer(lexicon_dir)
    if scorer.version != version:
        raise LexiconError(f"the lexicons in {lexicon_dir} changed while reviews were scored: refresh again")
    return [score_text(text, rating, scorer) for text, rating in keys]


def _score_keys(keys: list[tuple[str | None, int | None]], scorer: Scorer, workers: int) -> list[tuple]:
    """``score_text`` of each (text, rating); in ``workers`` processes when there are at least ``PARALLEL_FROM``.

    VADER and the language identifier are pure Python: one core scores about 14,000 texts a second. A worker
    takes seconds to start (it imports this package, Dagster included), so smaller batches stay in this process."""
    if workers <= 1 or len(keys) < PARALLEL_FROM:
        return [score_text(text, rating, scorer) for text, rating in keys]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(keys) // (4 * workers))  # a few chunks per worker: an uneven chunk does not leave a core idle
    chunks = [keys[i:i + size] for i in range(0, len(keys), size)]
    # spawn, not fork: the caller holds DuckDB's threads and Dagster's, which a forked child must not inherit
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(_score_chunk, chunks, [scorer.lexicon_dir] * len(chunks), [scorer.version] * len(chunks))
        return [row for part in parts for row in part]


def score_reviews(reviews: pl.DataFrame, scorer: Scorer, workers: int | None = None) -> pl.DataFrame:
    """``review_id, text, rating`` -> ``SCORE_SCHEMA`` (one row per review, same order).

    A review's scores depend on its text and stars only, so each distinct (text, rating) is scored once: shop
    reviews repeat ("Great product!", "ok", stars only), and the demo's, built from phrases, repeat a lot.
    ``workers``: processes for many distinct texts (default: the cores; 1: this process only)."""
    frame = reviews.select("review_id", "text", "rating")
    keys = frame.select("text", "rating").unique(maintain_order=True)
    scored = _score_keys(list(keys.iter_rows()), scorer, (os.cpu_count() or 1) if workers is None else workers)
    lookup = dict(zip(keys.iter_rows(), scored))
    rows = [(rid, *lookup[(text, rating)]) for rid, text, rating in frame.iter_rows()]
    return pl.DataFrame(rows, schema=SCORE_SCHEMA, orient="row")
