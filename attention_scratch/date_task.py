"""A synthetic translation task: human spellings of a date -> ISO ``YYYY-MM-DD``.

Everything is generated in code and deterministic given a seed, so the book can
train and evaluate without downloading anything::

    "Monday, March 3, 2014"  -> "2014-03-03"
    "the 3rd of march 1987"  -> "1987-03-03"
    "03.03.2014"             -> "2014-03-03"

The held-out dates are never seen in training in any spelling: the calendar is
split once, by a seeded permutation, into training dates and held-out dates.

With ``max_dates > 1`` (the *long* variant) one input lists up to that many dates
("march 3, 2014; 12.01.1999 and ...") and the target lists their ISO forms
separated by spaces. The information a fixed-size encoder summary must hold then
grows with the input, which is what chapter 2 uses to show the bottleneck.

Every example also records, for each target character, the span of source
characters it comes from (the year, month or day token), a ground truth against
which learned alignments can be compared.
"""
import dataclasses
import datetime

import numpy as np

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
FIRST, LAST = datetime.date(1950, 1, 1).toordinal(), datetime.date(2049, 12, 31).toordinal()
PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]
# Every character an input or a target can contain (lower and upper case letters,
# digits, punctuation).
ALPHABET = sorted(set(" ,.-/;'" + "0123456789" + "abcdefghijklmnopqrstuvwxyz"
                      + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _ordinal_suffix(d):
    return "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


def _case(word, rng):
    return [word, word.capitalize(), word.upper()][rng.integers(3)]


# Each format returns a list of (text, field) pieces; field is "y", "m", "d" or None.
def _formats(date, rng):
    y, m, d = date.year, date.month, date.day
    month = _case(MONTHS[m - 1], rng)
    mon = month[:3]
    wd = _case(WEEKDAYS[date.weekday()], rng)
    return [
        [(month, "m"), (" ", None), (str(d), "d"), (", ", None), (str(y), "y")],
        [(str(d), "d"), (" ", None), (month, "m"), (" ", None), (str(y), "y")],
        [(mon, "m"), (" ", None), (str(d), "d"), (" ", None), (str(y), "y")],
        [(f"{m:02d}", "m"), ("/", None), (f"{d:02d}", "d"), ("/", None), (str(y), "y")],
        [(f"{d:02d}", "d"), (".", None), (f"{m:02d}", "m"), (".", None), (str(y), "y")],
        [(str(y), "y"), ("-", None), (f"{m:02d}", "m"), ("-", None), (f"{d:02d}", "d")],
        [(wd, None), (", ", None), (month, "m"), (" ", None), (str(d), "d"), (", ", None),
         (str(y), "y")],
        [("the ", None), (f"{d}{_ordinal_suffix(d)}", "d"), (" of ", None), (month, "m"),
         (" ", None), (str(y), "y")],
        [(f"{d:02d}", "d"), ("-", None), (mon, "m"), ("-", None), (str(y), "y")],
        [(month, "m"), (" ", None), (f"{d}{_ordinal_suffix(d)}", "d"), (" ", None), (str(y), "y")],
    ]


NUM_FORMATS = 10


def spell_date(date, rng, fmt=None):
    """One human spelling of ``date``: returns ``(text, spans)``.

    ``spans`` maps ``"y"``, ``"m"``, ``"d"`` to the ``(start, end)`` character range
    (end exclusive) of that field in ``text``. ``fmt`` picks one of
    :data:`NUM_FORMATS` spellings; default: drawn from ``rng``.
    """
    pieces = _formats(date, rng)[rng.integers(NUM_FORMATS) if fmt is None else fmt]
    text, spans = "", {}
    for piece, field in pieces:
        if field is not None:
            spans[field] = (len(text), len(text) + len(piece))
        text += piece
    return text, spans


@dataclasses.dataclass(frozen=True)
class Example:
    """One input/target pair and, for each target character, its source span ((-1, -1): none)."""

    source: str
    target: str
    spans: tuple


def make_example(dates, rng, fmt=None):
    """The example for a list of ``datetime.date``: several dates are joined by ";
    ", " and ", ", "."""
    source, target, spans = "", "", []
    for k, date in enumerate(dates):
        if k:
            sep = ["; ", " and ", ", "][rng.integers(3)]
            source += sep
            target += " "
            spans.append((-1, -1))
        text, field = spell_date(date, rng, fmt)
        offset = len(source)
        source += text
        iso = date.isoformat()
        target += iso
        for i in range(len(iso)):
            f = "y" if i < 4 else "m" if 5 <= i < 7 else "d" if i >= 8 else None
            spans.append((-1, -1) if f is None else
                         (field[f][0] + offset, field[f][1] + offset))
    return Example(source, target, tuple(spans))


def split_dates(seed=0, heldout_fraction=0.1):
    """Split the calendar 1950-2049 into (train, held-out) arrays of date ordinals,
    by a seeded permutation."""
    ordinals = np.arange(FIRST, LAST + 1)
    perm = np.random.default_rng(seed).permutation(ordinals)
    n_held = round(heldout_fraction * ordinals.size)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def make_examples(n, ordinals, rng, max_dates=1):
    """``n`` examples whose dates are drawn from ``ordinals``; each lists 1 to ``max_dates``
    dates."""
    out = []
    for _ in range(n):
        k = 1 if max_dates == 1 else int(rng.integers(1, max_dates + 1))
        dates = [datetime.date.fromordinal(int(o)) for o in rng.choice(ordinals, size=k)]
        out.append(make_example(dates, rng))
    return out


class CharVocab:
    """Characters <-> integer ids; ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``."""

    def __init__(self, chars=ALPHABET):
        self.itos = SPECIALS + list(chars)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text):
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        """Ids -> text, stopping at the first ``<eos>`` and skipping ``<pad>``/``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i > EOS:
                out.append(self.itos[i])
        return "".join(out)


def encode_batch(examples, vocab):
    """Pad a list of examples into arrays.

    Returns
    -------
    dict with
        ``src`` (B, S) int: source ids, right-padded with 0;
        ``src_mask`` (B, S) bool: True at real characters;
        ``tgt_in`` (B, T) int: ``<bos>`` + target (teacher forcing input);
        ``tgt_out`` (B, T) int: target + ``<eos>``, padded with 0 (ignored by the loss).
    """
    B = len(examples)
    S = max(len(e.source) for e in examples)
    T = max(len(e.target) for e in examples) + 1
    src = np.zeros((B, S), dtype=np.int64)
    tgt_in = np.zeros((B, T), dtype=np.int64)
    tgt_out = np.zeros((B, T), dtype=np.int64)
    for b, e in enumerate(examples):
        s, t = vocab.encode(e.source), vocab.encode(e.target)
        src[b, :len(s)] = s
        tgt_in[b, 0] = BOS
        tgt_in[b, 1:len(t) + 1] = t
        tgt_out[b, :len(t)] = t
        tgt_out[b, len(t)] = EOS
    return {"src": src, "src_mask": src != PAD, "tgt_in": tgt_in, "tgt_out": tgt_out}


@dataclasses.dataclass
class DateTask:
    """Training and held-out examples of the date task, fixed by ``seed``.

    Parameters
    ----------
    seed : int
        Fixes the calendar split and every example.
    n_train, n_heldout : int
    max_dates : int
        1 for the standard task; more for the long-input variant.
    """

    seed: int = 0
    n_train: int = 20000
    n_heldout: int = 1000
    max_dates: int = 1

    def __post_init__(self):
        train_dates, held_dates = split_dates(self.seed)
        self.vocab = CharVocab()
        # separate streams: the held-out set does not depend on n_train
        rng_train = np.random.default_rng([self.seed, self.max_dates, 0])
        rng_held = np.random.default_rng([self.seed, self.max_dates, 1])
        self.train = make_examples(self.n_train, train_dates, rng_train, self.max_dates)
        self.heldout = make_examples(self.n_heldout, held_dates, rng_held, self.max_dates)
