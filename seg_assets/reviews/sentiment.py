"""Review sentiment: a lexicon model per language, the star rating where no lexicon applies.

* **English**: VADER (vaderSentiment, MIT). Its lexicon and emoji lexicon ship inside the wheel; nothing is
  downloaded and ``requests`` is only imported by its command-line demo. VADER handles negation ("not
  good"), intensifiers ("very"), "but", capitals ("AWESOME") and emoji, which is what short shop reviews use.
* **Shop words**: ``lexicons/en_shop.txt`` (in the package) adds to VADER's English lexicon the words of shop
  reviews it lacks ("rubbish", "flimsy", "works", "as described"): without them "Not working." and "Total junk."
  scored 0 (neutral). A user's ``en.txt`` is read after it and wins.
* **Phrases**: a lexicon entry with spaces ("fell apart", "waste of money", "thumbs up") is a phrase: where the text
  has it, it is read as one token of that valence, so VADER's negation and "but" rules treat it as a word ("never
  fell apart" is praise). Complaints are mostly phrases of plain words ("fell apart", "sent it back") and emoji are
  read by VADER as their names ("thumbs down"), which carry no word it scores.
* **Ratings in the text**: "5 stars", "1/5", "10/10", "ten out of ten", "★★★★☆" read as a strong word: 80 % of the scale or more
  positive, 40 % or less negative (VADER reads the digits as nothing).
* **Language**: py3langid (langid.py's model, shipped in its wheel) names the language. Short reviews are
  hard to place ("Top", "ok", "Super!"), so a review counts as another language only when the identifier
  is at least ``CONFIDENT`` sure, or ``PROBABLE`` and ``BESIDE_ENGLISH`` likely beside English, or, for a language with
  a lexicon (below), when it is ``LIKELY`` among the languages with one (English included: "Ware kam kaputt an" is
  0.08 sure of any language, 0.98 German beside English); everything else is read as English.
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
  replied.") no longer dilute the ones that say something. VADER's "but" rule (what comes before weighs half,
  what follows one and a half) is kept across clauses: from the first clause that opens with "but" or "however",
  clauses weigh 1.5, those before it 0.5 ("Looks great, but it broke in a week." is a complaint). A "but" starts a
  clause too ("but also" and "anything but" do not turn a text). When nothing after the turn carries sentiment
  ("Pretty, but the soles split in a week."), it is read as the opposite of what came before: "but" says so
  (unless it holds a negation: "snug, but not tight" denies something, and which side that takes is unknown).
* **Markup** (HTML entities and tags of a shop's export) is read as its text; **refunds** denied stay complaints
  (``NEGATION_PROOF``).
* **Label**: VADER's documented cut-offs: compound >= 0.05 positive, <= -0.05 negative, neutral between.
  From stars: 1-2 negative, 3 neutral, 4-5 positive. A review without usable text, or whose text has no word
  that carries sentiment (compound exactly 0: "Arrived on Tuesday."), is labelled by its stars; without either it
  has no label (a text with sentiment words that cancel out stays neutral).
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import polars as pl
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from seg_assets.config_files import read_text, shown

THRESHOLD = 0.05  # VADER's cut-off between neutral and positive / negative
CONFIDENT = 0.9  # another language than English when the identifier is this sure
PROBABLE, BESIDE_ENGLISH = 0.5, 0.99  # ... or this sure and this likely beside English ("Los auriculares suenan genial,
# totalmente recomendables.": 0.64 Spanish, 0.994 beside English; no English review of four sets topped 0.3 elsewhere)
LIKELY = 0.7  # ... or when the shop has a lexicon for it and it is this likely among the lexicons' languages
LEXICON_SUFFIX = ".txt"
UNSUPPORTED = "language not supported"  # the note's opening for a language without a lexicon (the CLI summary counts them)
SHOP_LEXICON = Path(__file__).parent / "lexicons" / "en_shop.txt"
PARALLEL_FROM = 100_000  # distinct (text, rating) pairs from which a batch is scored in several processes (a worker
# imports the package, Dagster included: seconds; one core scores about 10,000 short texts a second)
# clauses end after . ! ? , ; : and before a "but" that turns the text ("but also" adds, "anything but" negates)
_CLAUSE_END = re.compile(r"(?<=[.!?,;:])\s+|(?<!\banything)\s+(?=but\b(?!\s+also\b))", re.IGNORECASE)
_CONTRAST = re.compile(r"(?:but|however)\b(?!\s+also\b)", re.IGNORECASE)  # a clause opening with it turns the text
_BEFORE, _AFTER = 0.5, 1.5  # VADER's own weights of the words before and after "but"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})  # "don\u2019t" is "don't" to VADER's negation
_NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_RATING = re.compile(r"(?<![\w/.,])(\d+(?:\.\d+)?|zero|one|two|three|four|five|six|seven|eight|nine|ten)"
                     r"(?:\s*(?:/|out\s+of)\s*(5|10|(?:five|ten)\b(?!\s*(?:hundred|thousand)))(?!\d|[\w/.,]\d)"  # not 100, 5/2026
                     r"|[\s-]*stars?\b|\s*\*(?!\w))", re.IGNORECASE)
_STARS = re.compile("([\u2605\u2b50]+)(\u2606*)")  # filled stars (black star, emoji star), then empty ones
RATING_WORDS = {"stars_high": 2.0, "stars_low": -2.0}  # a rating said in the text: >= 80 % / <= 40 % of its scale
# Words as bad denied as said: "they won't refund me", "never got my money back" (VADER's negation made them praise)
NEGATION_PROOF = frozenset({"refund", "refunds", "refunded", "money_back"})
# Markup of shops' exports: a tag glued to a word hid it ("Terrible<br/>"), an escaped apostrophe broke a negation
# ("Didn&#39;t work"). A block tag ends a clause; an inline one ("not <b>good</b>") is a space.
_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|hr|blockquote)\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?(?:a|b|i|u|s|em|strong|span|font|small|big|sup|sub|img|mark|strike|del|ins|code|q)\b[^<>]*>",
                  re.IGNORECASE)  # HTML's inline tags only: "Size <M> fits" keeps its <M>

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


MAX_LEXICON_BYTES = 50 << 20  # VADER's own is 0.4 MB


def lexicon_text(path: Path) -> str:
    """A lexicon file's text: a regular file (a pipe hung the run, /dev/zero filled the memory) of at most
    MAX_LEXICON_BYTES, and a link only within its folder (a Kubernetes ConfigMap's ``..data/``): one to a secret
    (``/etc/shadow``) had its first line quoted in the error and the run's log."""
    if path.is_symlink() and not os.path.realpath(path).startswith(os.path.realpath(path.parent) + os.sep):
        raise LexiconError(f"{path}: a link out of its folder, not read: put the lexicon file itself in the folder")
    return read_text(path, LexiconError, MAX_LEXICON_BYTES)


def read_lexicon(path: Path, text: str | None = None) -> dict[str, float]:
    """token -> valence from a VADER-format file (``text``: its text, read already); a bad line is a ``LexiconError``
    naming it."""
    out: dict[str, float] = {}
    for number, line in enumerate((lexicon_text(path) if text is None else text).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        try:
            token, valence = parts[0].strip().lower(), float(parts[1])
        except (IndexError, ValueError):
            raise LexiconError(f"{path}:{number}: expected 'token<TAB>valence' (valence -4..4), got {shown(line)}") from None
        if not token or not -4.0 <= valence <= 4.0:
            raise LexiconError(f"{path}:{number}: valence {valence} of {token!r} is outside -4..4")
        out[" ".join(token.split())] = valence
    return out


def lexicon_language(path: Path) -> str:
    """The language a lexicon file is for, from its name (``de.txt``): one the identifier names, or the file would
    never be used (``german.txt`` was read, checked and matched no review)."""
    code = path.stem.lower()
    if code not in _identifier().nb_classes:
        raise LexiconError(f"{path.name}: {shown(path.stem)} is no language code the identifier knows: name the file by "
                           "the language's ISO 639-1 code (de.txt for German, fr.txt for French)")
    return code


class ShopAnalyzer(SentimentIntensityAnalyzer):
    """VADER, but a word of ``NEGATION_PROOF`` keeps its valence after a negation."""

    def sentiment_valence(self, valence, sentitext, item, i, sentiments):
        word = item.lower()
        if word in NEGATION_PROOF and word in self.lexicon:
            sentiments.append(self.lexicon[word])
            return sentiments
        return super().sentiment_valence(valence, sentitext, item, i, sentiments)


@dataclass
class Scorer:
    """One VADER analyzer per supported language; ``version`` changes when any lexicon or rule does."""

    lexicon_dir: Path | None = None
    analyzers: dict = field(default_factory=dict)
    version: str = ""
    phrases: dict = field(default_factory=dict)  # language -> pattern of its lexicon's phrases (None: none)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.analyzers))


def load_scorer(lexicon_dir: Path | None = None) -> Scorer:
    """English (VADER's own lexicon, the shop words, then ``en.txt`` if present) and a language per ``<code>.txt`` file."""
    # this module's own text, not a version number to bump by hand (a rule changed without the bump left every review
    # scored by the old rules, --rebase too: a reviewer's); the constants above are in it
    digest = hashlib.sha256(Path(__file__).read_bytes() + f"|vader {version('vaderSentiment')}".encode())
    files = sorted(Path(lexicon_dir).glob(f"*{LEXICON_SUFFIX}")) if lexicon_dir and Path(lexicon_dir).is_dir() else []
    english = ShopAnalyzer()
    english.lexicon.update(RATING_WORDS)
    words = {"en": read_lexicon(SHOP_LEXICON)}
    digest.update(b"|shop:" + SHOP_LEXICON.read_bytes())
    analyzers = {"en": english}
    for path in files:
        code, text = lexicon_language(path), lexicon_text(path)  # read once: the bytes hashed are the bytes parsed
        digest.update(f"|{code}:".encode() + text.encode())
        words[code] = words.get(code, {}) | read_lexicon(path, text)
        if code not in analyzers:
            analyzers[code] = analyzer = SentimentIntensityAnalyzer()
            analyzer.lexicon = dict(RATING_WORDS)  # the emoji lexicon and the (English) rules stay
    for code, entries in words.items():
        analyzers[code].lexicon.update({"_".join(token.split()): valence for token, valence in entries.items()})
    phrases = {code: _phrase_pattern([t for t in entries if " " in t]) for code, entries in words.items()}
    return Scorer(Path(lexicon_dir) if lexicon_dir else None, analyzers, digest.hexdigest()[:12], phrases)


def _phrase_pattern(phrases: list[str]) -> re.Pattern | None:
    """One pattern for every phrase, longest first, any whitespace between its words, whole words only."""
    if not phrases:
        return None
    alternatives = (r"\s+".join(map(re.escape, p.split())) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w'])(?:{'|'.join(alternatives)})(?![\w'])", re.IGNORECASE)


def _rating_word(filled: float, scale: float) -> str | None:
    share = filled / scale
    return "stars_high" if share >= 0.8 else "stars_low" if share <= 0.4 else None


def _said_rating(m: re.Match) -> str:
    value = m.group(1).lower()
    scale = (m.group(2) or "5").lower()  # "out of ten" as "out of 10"
    word = _rating_word(float(_NUMBERS.get(value, value)), float(_NUMBERS.get(scale, scale)))
    return f" {word} " if word else m.group(0)


def _star_run(m: re.Match) -> str:
    filled, empty = len(m.group(1)), len(m.group(2))
    word = _rating_word(filled, filled + empty if empty else 5) if filled > 1 or empty else None  # a lone star decorates
    return f" {word} " if word else m.group(0)


def prepared(text: str, analyzer, phrases: re.Pattern | None) -> str:
    """The text as VADER should read it: markup removed, ratings as rating words, emoji as VADER's names for them,
    phrases as tokens."""
    if "<" in text or "&" in text:
        text = _TAG.sub(" ", _BLOCK_TAG.sub(". ", html.unescape(text)))
    text = _RATING.sub(_said_rating, _STARS.sub(_star_run, text.translate(_APOSTROPHES)))
    text = "".join(f" {analyzer.emojis[c]} " if c in analyzer.emojis else c for c in text)
    return phrases.sub(lambda m: "_".join(m.group(0).split()), text) if phrases else text


_IDENTIFIERS: dict[tuple[str, ...] | None, object] = {}


def _identifier(languages: tuple[str, ...] | None = None):
    """py3langid's identifier over all its languages (None) or only ``languages``; each read once per process
    (about 0.3 s)."""
    if languages not in _IDENTIFIERS:
        from py3langid.langid import _load_identifier

        _IDENTIFIERS[languages] = identifier = _load_identifier(norm_probs=True)
        if languages is not None:
            identifier.set_languages(list(languages))
    return _IDENTIFIERS[languages]


def language_of(text: str, lexicons: tuple[str, ...] = ("en",), has_words=None) -> str:
    """ISO 639-1 code: another language than English when the identifier is ``CONFIDENT`` of it, or ``PROBABLE`` and
    ``BESIDE_ENGLISH`` likely beside English, or when the shop has a lexicon for it (``lexicons``: the languages with
    one) and it is ``LIKELY`` among those languages. A short German review ("Ware kam kaputt an") is no language in
    particular among all (Javanese, 0.08) and clearly German beside English (0.98): a shop that wrote a German lexicon
    had such reviews read with the English one, which scored them 0."""
    ranked = _identifier().rank(text)
    code, probability = ranked[0]
    if code == NO_LANGUAGE:  # emoji, markup: read by the English lexicon, which knows emoji (a tester's "zxx" reviews
        return "en"         # were counted as in a language without a lexicon)
    if code != "en":
        english = next(p for c, p in ranked if c == "en")
        if probability >= CONFIDENT or len(lexicons) < 2 or code in lexicons:
            if probability >= CONFIDENT or (probability >= PROBABLE and probability / (probability + english) >= BESIDE_ENGLISH):
                return code
        elif probability >= PROBABLE and probability / (probability + english) >= BESIDE_ENGLISH:
            # probable only, in a language without a lexicon: a language with one may be as likely (a tester's German
            # "Schlechte Qualität. Schlechte Qualität, zurückgeschickt." was 54 % Luxembourgish, 46 % German: left unscored beside de.txt)
            near = _lexicon_language(text, lexicons, has_words)
            return near if near != "en" else code
    if probability >= CONFIDENT or len(lexicons) < 2:
        return "en"
    return _lexicon_language(text, lexicons, has_words)


def _lexicon_language(text: str, lexicons: tuple[str, ...], has_words) -> str:
    """The language among those with a lexicon (``lexicons``) that ``text`` is ``LIKELY`` in, else 'en'."""
    code, probability = _identifier(lexicons).classify(text)
    if code == "en" or probability < LIKELY:
        return "en"
    # and only with a word of that language's lexicon in it: short English texts ("bad quality", "Fantastic") are
    # often likely Italian or Spanish beside English, and the English words would be lost (scored 0)
    return code if has_words is None or has_words(code, text) else "en"


_WORD = re.compile(r"\w+(?:'\w+)?")
NO_LANGUAGE = "zxx"  # py3langid's (ISO 639-2) "no linguistic content"


def _has_lexicon_word(scorer: Scorer, code: str, text: str) -> bool:
    """Whether ``text`` holds a word or phrase of the shop's ``code`` lexicon (its own entries, not the rating words)."""
    analyzer = scorer.analyzers[code]
    prepared_text = prepared(text, analyzer, scorer.phrases.get(code)).lower()
    return any(w in analyzer.lexicon and w not in RATING_WORDS for w in _WORD.findall(prepared_text))


def _negated(clauses: list[str]) -> bool:
    """A negation among the words: "snug, but not tight" denies something the lexicon lacks; no side to take."""
    from vaderSentiment.vaderSentiment import NEGATE

    return any(w.strip(".,!?;:").lower() in NEGATE or "n't" in w.lower() for c in clauses for w in c.split())


def score_text(text: str | None, rating: int | None, scorer: Scorer) -> tuple[str | None, float | None, str | None, str | None, str | None]:
    """(language, compound or None, label, label_from, note) of one review."""
    if text is None or not text.strip():
        label = rating_label(rating)
        return None, None, label, "rating" if label else None, "no text"
    language = language_of(text, scorer.languages, lambda code, t: _has_lexicon_word(scorer, code, t))
    analyzer = scorer.analyzers.get(language)
    if analyzer is None:
        label = rating_label(rating)
        return language, None, label, "rating" if label else None, f"{UNSUPPORTED}: {language}"
    clauses = [c.strip() for c in _CLAUSE_END.split(prepared(text, analyzer, scorer.phrases.get(language)).strip())]
    turn = next((i for i, c in enumerate(clauses) if _CONTRAST.match(c)), None)
    scores = [float(analyzer.polarity_scores(c)["compound"]) if c else 0.0 for c in clauses]
    if turn is not None and any(scores[:turn]) and not any(scores[turn:]) and not _negated(clauses[turn:]):
        # "Pretty, but the soles split in a week": the turn says the rest is the opposite of what came before,
        # in words the lexicon lacks; weighed as VADER weighs the two sides of "but" (0.5 x before - 1.5 x before)
        scores[turn] = -sum(scores[:turn]) / sum(1 for x in scores[:turn] if x)
    said = [(x, 1.0 if turn is None else _BEFORE if i < turn else _AFTER) for i, x in enumerate(scores) if x != 0.0]
    if not said and rating_label(rating) is not None:  # nothing in the text carries sentiment: the stars say it
        return language, 0.0, rating_label(rating), "rating", "no sentiment words"
    # rounded as VADER rounds its compound: 4 decimals, which features add up exactly (DECIMAL(18, 4)) on either engine
    compound = round(sum(x * w for x, w in said) / sum(w for _, w in said), 4) if said else 0.0
    return language, compound, label_of(compound), "text", None


def _score_chunk(keys: list[tuple[str | None, int | None]], lexicon_dir: Path | None, version: str) -> list[tuple]:
    """A worker's share: the scorer is rebuilt in the worker (analyzers do not pickle) and must be the same one."""
    scorer = load_scorer(lexicon_dir)
    if scorer.version != version:
        raise LexiconError(f"the lexicons in {lexicon_dir} changed while reviews were scored: refresh again")
    return [score_text(text, rating, scorer) for text, rating in keys]


def _score_keys(keys: list[tuple[str | None, int | None]], scorer: Scorer, workers: int) -> list[tuple]:
    """``score_text`` of each (text, rating); in ``workers`` processes when there are at least ``PARALLEL_FROM``.

    VADER and the language identifier are pure Python: one core scores about 10,000 short texts a second. A worker
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
