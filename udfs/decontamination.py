"""Decontamination against held-out data, the pure half: the texts of an item that are checked,
their word n-gram hashes, whole-text keys, one-changed-word keys, and the character-shingle MinHash
keys of short texts, and the in-memory matcher (`HeldoutIndex`). No Spark here;
`jobs/filters/contamination.py` wires tables to these functions.

Why three rules. The tools people use decontaminate long web documents with one rule: a shared
word n-gram. GPT-3 (Brown et al. 2020, appendix C) flags a document that shares any 13-gram with a
test item; lm-eval's `Janitor` (lm_eval/decontamination/janitor.py) implements that rule (13-grams
over lower-cased, punctuation-stripped, whitespace-split text); datatrove's `NGramsDecontFilter`
(pipeline/decont/n_grams.py) does the same with 12-grams over the gold answer and the
question/answer boundary. On Q&A items that rule has two holes, which the other two rules fill:

- **short items**: a text of fewer than n words has no n-gram at all, so it can never match (on the
  benchmark mirror, most held-out items are shorter than 13 words with their options and answer) →
  the **whole-text** rule compares the complete normalized stimulus (question + options);
- **edited copies**: changing one word of a text shorter than 2n words can break every one of its
  n-grams (a word at position p is inside every window when the text has at most 2n - 1 words) →
  the **near-duplicate** rule, for stimuli of at most 2n - 1 words, with two kinds of candidate
  keys: `edit_keys` (exact: the stimuli differ by one word substituted, inserted or deleted; the
  word deletion neighbourhood, SymSpell's symmetric delete at word level) and MinHash LSH bands of
  character 5-shingles (Broder 1997; the same shingles, datasketch signatures and exact-Jaccard
  confirmation as the near_dup filter, `udfs/minhash.py`) for edits of more than one word. A
  candidate is a copy only when the item keeps the held-out answer and, for a held-out item with a
  passage, the passage too: templated questions ("what is the capital of X") differ in one word and
  in their answer, and BoolQ asks several questions about one passage.

The texts of an item (`checked_texts`), all through `udfs.textnorm.normalize_text`, the one
normalization of both sides, so a copy that differs only in formatting is a copy:

    stimulus  question + identity options (sorted, so a copy with shuffled options is the same
              item; a boolean's yes/no and a label set are not identity: see `identity_options`)
    qa        stimulus + the answer when it is not one of the options: the text whose n-grams are
              checked on the item side
    context   the passage (BoolQ, SciQ support), when there is one
    query     held-out side only: lm-eval's `doc_to_decontamination_query` as ingest stores it in
              `heldout.decontamination_text` (BoolQ's passage, ARC's "Question: ... Answer:"),
              kept when it differs from the texts above

Which rule looks at which text: the held-out side indexes the distinct n-grams of qa, context and
query together; the item side's n-grams come from its qa (so a generated item that copies a BoolQ
passage into its question is caught by the passage's n-grams, but a shared passage alone, as a
context column, is not a copy). Whole-text and near-duplicate compare stimuli.

Hashes are stable 64-bit values, the same in every process and on every platform (no Python
`hash()`, which is salted per process): a word is the first 8 bytes of its BLAKE2b digest; an
n-gram folds its n word values with a polynomial in wrapping uint64 arithmetic and the MurmurHash3
finalizer (fmix64); a whole text is the first 8 bytes of BLAKE2b of its UTF-8 bytes. Shingles,
signatures and band hashes are `udfs.minhash`'s. Stored as signed int64/int32 (Spark has no
unsigned types); only equality is ever used on them. `INDEX_VERSION` names these rules: bump it
when any of them (or `normalize_text`) changes meaning, so a stored held-out index is rebuilt.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from udfs import minhash
from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, NUMERIC, SHORT_TEXT
from udfs.parsing import number_in_answer
from udfs.textnorm import normalize_array, normalize_text

INDEX_VERSION = 3  # 2: normalize_text of issue 25; answers through the answer algebra; 3: superscripts, Arabic separators, sign and fraction words

STIMULUS, QA, CONTEXT, QUERY = "stimulus", "qa", "context", "query"
VIEWS = (STIMULUS, QA, CONTEXT, QUERY)
OPEN_FORMATS = frozenset({NUMERIC, SHORT_TEXT, FREEFORM, CODE})

RULES = ("whole_text", "ngram", "near_dup")  # also the tie-break order of equal scores
MATCHED_MAX_CHARS = 200

_U64 = np.uint64
_FMIX_C1 = _U64(0xFF51AFD7ED558CCD)
_FMIX_C2 = _U64(0xC4CEB9FE1A85EC53)
_GOLDEN = _U64(0x9E3779B97F4A7C15)  # odd: the polynomial's multiplier
_S33 = _U64(33)


# ---- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecontaminationParams:
    """Everything that decides the held-out index; `tag` is recorded with the index, so changing
    any of these rebuilds it. Defaults and their reasons: `jobs.config.ContaminationConfig`."""

    ngram_n: int = 13
    boilerplate_min_items: int = 10
    shingle_size: int = 5
    near_dup_threshold: float = 0.5
    num_perm: int = 128
    seed: int = 1
    candidate_recall: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 < self.candidate_recall < 1.0:
            raise ValueError(f"candidate_recall must be in (0, 1), got {self.candidate_recall}")
        if self.ngram_n < 1:
            raise ValueError(f"ngram_n must be positive, got {self.ngram_n}")
        if self.boilerplate_min_items < 2:
            raise ValueError(f"boilerplate_min_items must be at least 2, got {self.boilerplate_min_items}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be positive, got {self.shingle_size}")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near_dup_threshold must be in (0, 1], got {self.near_dup_threshold}")

    @property
    def near_dup_max_words(self) -> int:
        """Texts of at most 2n - 1 words get near-duplicate keys: in those, one changed word can
        sit inside every n-gram window; a longer text keeps an intact n-gram after any one-word
        substitution, insertion or deletion, so the n-gram rule already catches the edit."""
        return 2 * self.ngram_n - 1

    @property
    def bands_rows(self) -> tuple[int, int]:
        """(bands, rows) of the LSH banding: `udfs.minhash.choose_bands` at the near-dup threshold."""
        return _bands_rows(self.near_dup_threshold, self.num_perm, self.candidate_recall)

    @property
    def minhash_params(self) -> minhash.MinHashParams:
        """The shingling and signature settings, in the near-dup filter's terms (`udfs.minhash`):
        the same character shingles, datasketch signatures and exact Jaccard as that filter."""
        bands, rows = self.bands_rows
        return minhash.MinHashParams(shingle="char", shingle_size=self.shingle_size, num_perm=self.num_perm,
                                     bands=bands, rows=rows, seed=self.seed)

    @property
    def tag(self) -> str:
        """e.g. 'v2/n13/bp10/j0.5/minhash-v2/char5/p128/b42r3/seed1/affine32'."""
        return (f"v{INDEX_VERSION}/n{self.ngram_n}/bp{self.boilerplate_min_items}/j{self.near_dup_threshold:g}/"
                f"minhash-{self.minhash_params.tag}")


@lru_cache(maxsize=64)
def _bands_rows(threshold: float, num_perm: int, candidate_recall: float) -> tuple[int, int]:
    return minhash.choose_bands(threshold, num_perm, candidate_recall)


# ---- the texts that are checked -----------------------------------------------------------------


def _is_missing(value: object) -> bool:
    """None or NaN (what pandas/Arrow give for a null cell); arrays and strings are never missing."""
    return value is None or (isinstance(value, float) and math.isnan(value))


_YES_NO = frozenset({"yes", "no", "true", "false"})


def identity_options(choices: Iterable | None, answer_format: str | None,
                     normalize: Callable[[object], str] = normalize_text) -> list[str]:
    """The options that make an item what it is: normalized, distinct, sorted (so a copy with
    shuffled options is the same item). Only multiple-choice options count: a boolean's yes/no and
    a label task's label set are the same for every item of the task, and an open format's choices
    are accepted answer aliases (nq_open, webqs). Without a format, choices count unless they are a
    yes/no pair."""
    if _is_missing(choices) or answer_format in (BOOLEAN, LABEL) or answer_format in OPEN_FORMATS:
        return []
    options = sorted({o for o in (normalize(c) for c in choices if not _is_missing(c)) if o})
    if answer_format is None and options and set(options) <= _YES_NO:
        return []
    return options


def answer_form(answer: object) -> str:
    """An answer as the held-out comparisons see it, the same on both sides: "#<number>" when it
    states one number under the answer algebra of the verification vote
    (`udfs.parsing.number_in_answer`: `\\frac{3}{4}`, `0.75`, `3/4` and `75%`... are one number;
    "seven", "−5" with any minus sign), else its `normalize_text`. "" when missing."""
    if _is_missing(answer):
        return ""
    try:
        number = number_in_answer(str(answer))
    except Exception:  # noqa: BLE001 - an odd answer is compared as text, never an error
        number = None
    return f"#{number}" if number is not None else normalize_text(answer)


class _AnswerMemo(dict):
    """`answer_form` remembered per string for one batch (answers such as "yes" and small numbers recur)."""

    def __missing__(self, text: str) -> str:
        value = self[text] = answer_form(text)
        return value

    def __call__(self, text: object) -> str:
        return self[text] if isinstance(text, str) else answer_form(text)


def accepted_answers(answer_text: object, choices: Iterable | None = None,
                     answer_format: str | None = None, normalize: Callable[[object], str] = answer_form) -> list[str]:
    """Gold answers in `answer_form`: the answer text, plus the accepted aliases an open-format
    held-out item lists as choices (nq_open, webqs). Near-duplicate matches (and whole-text matches
    over a passage) require the item's answer to be one of these."""
    answers = [] if _is_missing(answer_text) else [normalize(answer_text)]
    if answer_format in OPEN_FORMATS and not _is_missing(choices):
        answers += [normalize(c) for c in choices if not _is_missing(c)]
    return sorted({a for a in answers if a})


def checked_texts(question: object, context: object = None, choices: Iterable | None = None,
                  answer_text: object = None, answer_format: str | None = None,
                  decontamination_text: object = None,
                  normalize: Callable[[object], str] = normalize_text) -> dict[str, str]:
    """The normalized texts of one item, by view (see the module docstring), empty ones left out:
    `stimulus` (question + identity options), `qa` (stimulus + the answer, when the answer is not
    one of the options), `context`, and `query` (held-out side). A view equal to an earlier one is
    left out, except `qa`, which is present whenever the stimulus is. `normalize` is
    `normalize_text` or a memo of it (`featurize_batch` caches options and answers per batch)."""
    q = "" if _is_missing(question) else normalize(question)
    options = identity_options(choices, answer_format, normalize)
    stimulus = " ".join(t for t in (q, *options) if t)
    texts: dict[str, str] = {}
    if stimulus:
        texts[STIMULUS] = stimulus
        answer = "" if _is_missing(answer_text) else normalize(answer_text)
        texts[QA] = f"{stimulus} {answer}" if answer and answer not in options else stimulus
    for view, raw in ((CONTEXT, context), (QUERY, decontamination_text)):
        text = "" if _is_missing(raw) else normalize(raw)
        if text and text not in texts.values():
            texts[view] = text
    return texts


# ---- hashing (batched: one numpy pass per batch of texts, not per text) -----------------------------


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, elementwise on uint64 (a bijection with full avalanche)."""
    h = h ^ (h >> _S33)
    h = h * _FMIX_C1
    h = h ^ (h >> _S33)
    h = h * _FMIX_C2
    return h ^ (h >> _S33)


def _windows(flat: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash every window of k consecutive tokens that lies inside one text of a concatenation.

    flat: uint64 tokens of all texts back to back; lengths: tokens per text. Returns (doc, hash):
    the text each window belongs to (in order) and fmix64(Σ_j t[p+j]·G^(k-1-j) mod 2^64)."""
    counts = np.maximum(lengths - k + 1, 0)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=_U64)
    n = len(flat) - k + 1
    h = np.zeros(n, dtype=_U64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h *= _GOLDEN
            h += flat[j:j + n]
        h = _fmix64(h)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    docs = np.repeat(np.arange(len(lengths)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    positions = np.arange(total) - np.repeat(first, counts) + np.repeat(starts, counts)
    return docs, h[positions]


def _distinct_per_doc(doc: np.ndarray, values: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """(bounds, values): the sorted distinct values of each doc of (doc, value) pairs, in CSR form."""
    order = np.lexsort((values, doc))
    doc, values = doc[order], values[order]
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = (doc[1:] != doc[:-1]) | (values[1:] != values[:-1])
    doc, values = doc[keep], values[keep]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(doc, minlength=n_docs))]).astype(np.int64)
    return bounds, values


def _as_normalized(text: object) -> str:
    """The `normalize` of `checked_texts` for values `normalize_array` already normalized (a str is
    returned as it is: `normalize_text` is idempotent; None and other values are normalized)."""
    return text if isinstance(text, str) else normalize_text(text)


def _normalized_lists(column: pa.Array | pa.ChunkedArray) -> list[list[str] | None]:
    """A list<string> column with every element normalized (`normalize_array`; null elements
    become "", which every rule skips as it skips null), null lists kept as None."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.string()))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return [None if _is_missing(v) else [_as_normalized(x) for x in v] for v in column.to_pylist()]
    values = normalize_array(column.flatten())
    lengths = np.asarray(column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = column.is_valid().to_pylist()
    out, at = [], 0
    for ok, k in zip(valid, lengths.tolist()):
        out.append(values[at:at + k] if ok else None)
        at += k
    return out


class _NormalizeMemo(dict):
    """`normalize_text` remembered per string for one batch (options like "yes"/"no", numbers and
    shared passages recur); non-strings go straight through."""

    def __missing__(self, text: str) -> str:
        value = self[text] = normalize_text(text)
        return value

    def __call__(self, text: object) -> str:
        return self[text] if isinstance(text, str) else normalize_text(text)


class _WordValues(dict):
    """word → the first 8 bytes of its BLAKE2b digest as an int, filled on first sight (one per
    Python worker; cleared when it grows past `limit` words, so memory stays bounded)."""

    limit = 1 << 20

    def __missing__(self, word: str) -> int:
        if len(self) >= self.limit:
            self.clear()
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        self[word] = value
        return value


_WORD_VALUES = _WordValues()


def _word_value(word: str) -> int:
    return _WORD_VALUES[word]


def text_key(normalized: str) -> int:
    """The whole-text key: the first 8 bytes of BLAKE2b(normalized text) as a signed int64."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little",
                          signed=True)


EDIT_SUBSTITUTED, EDIT_DELETED, EDIT_WHOLE = 1, 2, 3  # low two bits of an edit key
_G_INVERSE = _U64(pow(int(_GOLDEN), -1, 1 << 64))  # G is odd, so it has an inverse modulo 2^64
_EDIT_SALT = _U64(0x5F3759DF)


def _edit_mix(poly: np.ndarray, length: np.ndarray, position: np.ndarray, kind: int) -> np.ndarray:
    salt = _fmix64((length.astype(_U64) << _U64(8)) ^ (position.astype(_U64) << _U64(40)) ^ _EDIT_SALT)
    return (_fmix64(poly ^ salt) & ~_U64(3)) | _U64(kind)


def edit_key_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`edit_keys` of many normalized texts in CSR form: (offsets, keys), 2L + 1 int64 keys for a
    text of L ≥ 2 words, none below. All texts at once: the polynomial of the words with word j
    removed is G⁻¹·(Σ_{i<j} t_i G^(L-1-i)) + Σ_{i>j} t_i G^(L-1-i) (mod 2^64), from one cumulative
    sum over the batch."""
    return _edit_keys_of(*word_values(texts))


def _edit_keys_of(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = lengths >= 2
    if not keep.all():  # texts of fewer than two words get no keys: drop their words
        flat = flat[np.repeat(keep, lengths)]
        lengths = np.where(keep, lengths, 0)
    total = int(lengths.sum())
    counts = np.where(lengths > 0, 2 * lengths + 1, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if total == 0:
        return offsets, np.empty(0, dtype=np.int64)
    docs = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(total) - starts[docs]                      # j within its text
    length = lengths[docs]
    powers = np.ones(int(lengths.max()) + 1, dtype=_U64)
    with np.errstate(over="ignore"):
        for k in range(1, len(powers)):
            powers[k] = powers[k - 1] * _GOLDEN
        terms = flat * powers[length - 1 - position]                # t_j · G^(L-1-j)
        running = np.cumsum(terms, dtype=_U64)
        has = np.flatnonzero(lengths > 0)
        before = np.zeros(len(lengths), dtype=_U64)                 # Σ of earlier texts' terms
        before[has] = running[starts[has]] - terms[starts[has]]
        whole = np.zeros(len(lengths), dtype=_U64)                  # P(text), per text
        whole[has] = running[starts[has] + lengths[has] - 1] - before[has]
        prefix = running - terms - before[docs]                     # Σ_{i<j}
        suffix = whole[docs] - prefix - terms                       # Σ_{i>j}
        rest = _G_INVERSE * prefix + suffix                         # P(text without word j)
        substituted = _edit_mix(rest, length - 1, position + 1, EDIT_SUBSTITUTED)
        deleted = _edit_mix(rest, length - 1, np.zeros_like(position), EDIT_DELETED)
        whole_keys = _edit_mix(whole, lengths, np.zeros_like(lengths), EDIT_WHOLE)
    keys = np.empty(int(offsets[-1]), dtype=_U64)
    keys[offsets[has]] = whole_keys[has]
    slot = offsets[docs] + 1 + 2 * position
    keys[slot] = substituted
    keys[slot + 1] = deleted
    return offsets, keys.view(np.int64)


def edit_keys(normalized: str) -> np.ndarray:
    """Keys whose equality between two texts means they differ by at most one word (int64 array).

    The word deletion neighbourhood (the idea of SymSpell's symmetric delete, at word level): for
    each position i the text with word i removed, keyed with i (kind SUBSTITUTED: equal keys on
    both sides at the same i = word i replaced) and without i (kind DELETED), plus the whole text
    (kind WHOLE). A word inserted into one text makes its DELETED key at that position equal to the
    other text's WHOLE key; a substitution makes the SUBSTITUTED keys at its position equal. The
    kind sits in the low two bits: a match joins on `key >> 2` and accepts the kind pairs
    (SUBSTITUTED, SUBSTITUTED), (DELETED, WHOLE) and (WHOLE, DELETED). A text of one word or none
    gets no keys (replacing its only word leaves nothing in common), so it never matches this way.

    Exact, unlike character similarity: a one-word change is found whatever the word's length
    and however short the text. Hash: the polynomial (mod 2^64) of the remaining words' 64-bit
    values, mixed by fmix64 with the length and, for SUBSTITUTED, the position.
    """
    return edit_key_batch([normalized])[1]


def within_one_word(a: str, b: str) -> bool:
    """Whether two normalized texts differ by at most one word substituted, inserted or deleted
    (what matching `edit_keys` means: both texts need two words or more; a plain reference for
    tests and notebooks)."""
    x, y = a.split(), b.split()
    if abs(len(x) - len(y)) > 1 or min(len(x), len(y)) < 2:
        return False
    if len(x) == len(y):
        return sum(p != q for p, q in zip(x, y)) <= 1
    short, long_ = (x, y) if len(x) < len(y) else (y, x)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def word_values(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(flat, lengths): the 64-bit values of the words of many normalized texts, back to back.

    Words are what `normalize_text` separates by spaces (its output has no other whitespace; runs
    of spaces and leading/trailing ones are skipped, as `str.split()` would). Arrow splits the
    batch and hashes its distinct words (`pc.unique`, `pc.index_in`, in C); Python looks each
    distinct word up once per batch (its BLAKE2b value is cached per worker) instead of once per
    occurrence."""
    if len(texts) == 0:
        return np.empty(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    words = pc.split_pattern(pa.array(texts, pa.string()), " ")
    lengths = np.asarray(pc.list_value_length(words).to_numpy(zero_copy_only=False), dtype=np.int64)
    flat_words = pc.list_flatten(words)
    nonempty = np.asarray(pc.greater(pc.binary_length(flat_words), 0).to_numpy(zero_copy_only=False), dtype=bool)
    if not nonempty.all():  # "" and extra spaces split into empty words, which are not words
        parents = np.asarray(pc.list_parent_indices(words).to_numpy(zero_copy_only=False), dtype=np.int64)
        lengths = np.bincount(parents[nonempty], minlength=len(texts)).astype(np.int64)
        flat_words = flat_words.filter(pa.array(nonempty))
    distinct = pc.unique(flat_words)
    lookup = _WORD_VALUES.__getitem__
    values = np.fromiter((lookup(w) for w in distinct.to_pylist()), dtype=_U64, count=len(distinct))
    positions = np.asarray(pc.index_in(flat_words, value_set=distinct).to_numpy(zero_copy_only=False), dtype=np.int64)
    return values[positions], lengths


def _ngrams_of(flat: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    docs, hashes = _windows(flat, lengths, n)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=len(lengths)))]).astype(np.int64)
    return offsets, hashes.view(np.int64)


def ngram_batch(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes of many normalized texts, in CSR form: (offsets, hashes) with
    hashes[offsets[i]:offsets[i+1]] the int64 hash of each n-gram of text i in order (element p =
    the n-gram starting at word p; none when the text has fewer than n words)."""
    return _ngrams_of(*word_values(texts), n)


def word_ngram_hashes(normalized: str, n: int) -> np.ndarray:
    """int64 hash of every word n-gram of one normalized text, in order (see `ngram_batch`)."""
    return ngram_batch([normalized], n)[1]


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """LSH band keys of a (n, num_perm) signature matrix → (n, bands) int64, or of one signature →
    (bands,): `udfs.minhash.band_hashes` mixed with the band's number (fmix64), so band i of one
    text can only equal band i of another and the index joins on one key column, no band column."""
    hashes = minhash.band_hashes(np.asarray(signatures), bands, rows).view(_U64)
    number = np.arange(1, bands + 1, dtype=_U64) * _GOLDEN
    with np.errstate(over="ignore"):
        return _fmix64(hashes ^ number).view(np.int64)


# ---- a batch of items → their keys (what one mapInArrow call computes) ---------------------------

KEY_DOC = """Columns of a featurized batch (one row per item that has a stimulus):

    id                the item's id (item_id, or heldout_id on the held-out side)
    stimulus          normalized question + identity options (the whole-text and near-dup text)
    stimulus_key      `text_key(stimulus)`: the whole-text rule's join key
    n_words           words in the stimulus (near-dup keys only when ≤ `near_dup_max_words`)
    qa                stimulus + answer: the text whose n-grams are checked on the item side
    ngrams            item side: int64 per word position of `qa` (position p = the n-gram at word p,
                      so a match can show its words); held-out side: the distinct n-grams of qa,
                      context and query together
    n_ngrams          distinct values in `ngrams` (the denominator of the n-gram score)
    shingles          sorted distinct char-shingle hashes of the stimulus (int32), near-dup only
    bands             LSH band keys of `shingles` (int64, one per band), near-dup only
    edit_keys         `edit_keys(stimulus)`: the one-changed-word keys, near-dup only
    context_shingles  char-shingle hashes of the passage, when there is one and near-dup applies
                      (item side with `defer_passages`: null, the raw passage in a `context` column)
    answers           `accepted_answers` (item side: its own normalized answer)
"""
KEY_COLUMNS = ("id", "stimulus", "stimulus_key", "n_words", "qa", "ngrams", "n_ngrams", "shingles", "bands",
               "edit_keys", "context_shingles", "answers")


def key_schema(keep: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of `featurize_batch`'s output; columns named in `keep` (strings) follow id."""
    return pa.schema([
        pa.field("id", pa.string(), False),
        *(pa.field(c, pa.string()) for c in keep),
        pa.field("stimulus", pa.string(), False),
        pa.field("stimulus_key", pa.int64(), False),
        pa.field("n_words", pa.int32(), False),
        pa.field("qa", pa.string(), False),
        pa.field("ngrams", pa.list_(pa.int64()), False),
        pa.field("n_ngrams", pa.int32(), False),
        pa.field("shingles", pa.list_(pa.int32())),
        pa.field("bands", pa.list_(pa.int64())),
        pa.field("edit_keys", pa.list_(pa.int64())),
        pa.field("context_shingles", pa.list_(pa.int32())),
        pa.field("answers", pa.list_(pa.string()), False),
    ])


def _list_array(n_rows: int, rows: np.ndarray, offsets: np.ndarray, values: np.ndarray,
                 value_type: pa.DataType) -> pa.Array:
    """A list array of n_rows from CSR data given for `rows` only (the other rows are null)."""
    lengths = np.zeros(n_rows, dtype=np.int64)
    lengths[rows] = np.diff(offsets)
    full = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = np.ones(n_rows, dtype=bool)
    mask[rows] = False
    return pa.ListArray.from_arrays(pa.array(full), pa.array(values, type=value_type),
                                    mask=pa.array(mask) if mask.any() else None)


def featurize_batch(batch: pa.RecordBatch, params: DecontaminationParams, heldout: bool,
                    keep: Sequence[str] = (), near_dup_answers: Container[str] | None = None,
                    defer_passages: bool = False) -> pa.RecordBatch:
    """The body of one mapInArrow call, for either side (see KEY_DOC for the output columns).

    Input columns: id, question, context, choices (list<string>), answer_text, and optionally
    answer_format and (held-out side) decontamination_text. Output: one row per item that has a
    stimulus, in `key_schema(keep)`; shingles, bands, edit_keys and context_shingles are null where
    near-dup does not apply. An item with an empty question and no options yields no row: there is
    nothing it could be a copy of. Columns named in `keep` are copied through after `id`. All
    hashing runs on the whole batch at once (numpy); only normalization is per text.

    near_dup_answers (item side): the accepted answers of the held-out items a near-duplicate can
    match (`HeldoutIndex.near_dup_answers`: those short enough to have shingles). The rule requires
    the item's answer to be one of its held-out match's accepted answers, so an item whose answer
    is none of them gets no near-dup keys (shingles, MinHash bands, edit keys, passage shingles:
    null) — the same matches, without the MinHash work for items that cannot match that way (on
    the benchmark, GSM8K's numeric answers mostly belong to long held-out items). Leave it None to
    featurize for storage.

    defer_passages (item side): leave `context_shingles` null and carry the raw passage as a
    `context` column (added to `keep`); `HeldoutIndex.match_batch` then normalizes and shingles the
    passage only of the items that reach a near-duplicate candidate with a passage — a few percent
    of them — instead of every short item's (on the benchmark, BoolQ's passages were most of its
    featurization time). The matches are the same.
    """
    if defer_passages:
        if heldout:
            raise ValueError("defer_passages is for the item side: the held-out index stores its passages' shingles")
        keep = (*keep, "context") if "context" not in keep else tuple(keep)
    names = set(batch.schema.names)
    size = batch.num_rows
    column = lambda name: batch.column(name).to_pylist() if name in names else [None] * size  # noqa: E731
    kept = {c: column(c) for c in keep}
    # every text normalized for the whole batch at once (`normalize_array`), then handed to the
    # per-item rules as already normalized; the item side normalizes its passage only where
    # near-dup needs it (below)
    normalized = lambda name: normalize_array(batch.column(name)) if name in names else [None] * size  # noqa: E731
    choices = _normalized_lists(batch.column("choices")) if "choices" in names else [None] * size
    nothing = [None] * size
    rows, texts, answers = [], [], []
    raw_answers = column("answer_text")
    raw_choices = batch.column("choices").to_pylist() if "choices" in names else nothing
    forms = _AnswerMemo()
    for r, (q, c, ch, a, fmt, d) in enumerate(zip(normalized("question"),
                                                   normalized("context") if heldout else nothing, choices,
                                                   normalized("answer_text"), column("answer_format"),
                                                   normalized("decontamination_text") if heldout else nothing)):
        t = checked_texts(q, c, ch, a, fmt, d, _as_normalized)
        if STIMULUS not in t:
            continue
        rows.append(r)
        texts.append(t)
        answers.append(accepted_answers(raw_answers[r], raw_choices[r], fmt, forms) if heldout
                       else accepted_answers(raw_answers[r], normalize=forms))
    m = len(rows)
    ids = column("id")
    stimuli = [t[STIMULUS] for t in texts]
    qas = [t[QA] for t in texts]
    qa_flat, qa_lengths = word_values(qas)
    # the stimulus is the first words of qa: its word count is qa's minus the answer's
    n_words = qa_lengths - np.fromiter((len(q) > len(s) and len(q[len(s):].split()) for q, s in zip(qas, stimuli)),
                                       dtype=np.int64, count=m)
    short = short_any = np.flatnonzero(n_words <= params.near_dup_max_words)
    if near_dup_answers is not None:  # near-dup needs the answer to be a held-out accepted answer
        short = short[np.fromiter((any(a in near_dup_answers for a in answers[i]) for i in short),
                                  dtype=bool, count=len(short))]
    contexts = {}
    if heldout:
        contexts = {i: t[CONTEXT] for i, t in enumerate(texts) if CONTEXT in t}
    elif not defer_passages:  # the item side's passages (deferred: match_batch takes them where needed)
        contexts_raw = column("context")
        normalize = _NormalizeMemo()  # passages repeat within a batch
        # every short item's passage (not only the near-dup ones): a whole-text match over a
        # held-out passage needs the item's passage when the answers differ
        for i in short_any:
            text = item_passage(contexts_raw[rows[i]], texts[i].values(), normalize)
            if text:
                contexts[int(i)] = text

    # n-grams
    if heldout:  # the distinct n-grams of qa, passage and query together
        owners, extra = [], []
        for i, t in enumerate(texts):
            for view in (CONTEXT, QUERY):
                if view in t:
                    owners.append(i)
                    extra.append(t[view])
        offsets_a, hashes_a = _ngrams_of(qa_flat, qa_lengths, params.ngram_n)
        offsets_b, hashes_b = _ngrams_of(*word_values(extra), params.ngram_n)
        doc = np.concatenate([np.repeat(np.arange(m, dtype=np.int64), np.diff(offsets_a)),
                              np.repeat(np.asarray(owners, dtype=np.int64), np.diff(offsets_b))])
        ngram_offsets, ngram_values = _distinct_per_doc(doc, np.concatenate([hashes_a, hashes_b]), m)
        n_ngrams = np.diff(ngram_offsets)
    else:  # positional over qa
        ngram_offsets, ngram_values = _ngrams_of(qa_flat, qa_lengths, params.ngram_n)
        doc = np.repeat(np.arange(m, dtype=np.int64), np.diff(ngram_offsets))
        n_ngrams = np.diff(_distinct_per_doc(doc, ngram_values, m)[0])

    # near-duplicate keys of short stimuli: shingles, LSH bands, edit keys, and the passage's shingles
    mh = params.minhash_params
    sh_offsets, sh_values = minhash.shingle_batch([stimuli[i] for i in short], "char", mh.shingle_size)
    band_values = band_keys(minhash.signature_batch(sh_offsets, sh_values, mh)[0], mh.bands, mh.rows).reshape(-1)
    qa_starts = np.concatenate([[0], np.cumsum(qa_lengths)[:-1]]).astype(np.int64)
    stim_lengths = n_words[short]  # the stimulus is the first n_words words of qa
    take = np.repeat(qa_starts[short], stim_lengths) + (
        np.arange(int(stim_lengths.sum())) - np.repeat(np.cumsum(stim_lengths) - stim_lengths, stim_lengths))
    edit_offsets, edit_values = _edit_keys_of(qa_flat[take], stim_lengths)
    with_context = np.array([i for i in short_any if i in contexts], dtype=np.int64)
    ctx_offsets, ctx_values = minhash.shingle_batch([contexts[i] for i in with_context], "char", mh.shingle_size)

    columns = {
        "id": pa.array([ids[r] for r in rows], pa.string()),
        **{c: pa.array([kept[c][r] for r in rows], pa.string()) for c in keep},
        "stimulus": pa.array(stimuli, pa.string()),
        "stimulus_key": pa.array([text_key(x) for x in stimuli], pa.int64()),
        "n_words": pa.array(n_words.astype(np.int32)),
        "qa": pa.array(qas, pa.string()),
        "ngrams": _list_array(m, np.arange(m), ngram_offsets, ngram_values, pa.int64()),
        "n_ngrams": pa.array(n_ngrams.astype(np.int32)),
        "shingles": _list_array(m, short, sh_offsets, sh_values.view(np.int32), pa.int32()),
        "bands": _list_array(m, short, np.arange(len(short) + 1) * mh.bands, band_values, pa.int64()),
        "edit_keys": _list_array(m, short, edit_offsets, edit_values, pa.int64()),
        "context_shingles": _list_array(m, with_context, ctx_offsets, ctx_values.view(np.int32), pa.int32()),
        "answers": pa.array(answers, pa.list_(pa.string())),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=key_schema(keep))


def item_passage(raw: object, texts: Iterable[str], normalize: Callable[[object], str] = normalize_text) -> str:
    """The normalized passage of an item as the near-duplicate rule compares it: "" when missing,
    empty, or equal to one of the item's other checked texts (`checked_texts` leaves such a view
    out: a passage that is the question itself is no passage)."""
    text = "" if _is_missing(raw) else normalize(raw)
    return "" if not text or any(text == other for other in texts) else text


def featurize_frame(frame: pd.DataFrame, params: DecontaminationParams, heldout: bool,
                    keep: Sequence[str] = ()) -> pd.DataFrame:
    """`featurize_batch` on a pandas frame (tests, notebooks): list columns come back as numpy
    arrays, null lists as None."""
    frame = frame.copy()
    if "choices" in frame.columns:
        frame["choices"] = [None if _is_missing(c) else [str(x) for x in c] for c in frame["choices"]]
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    return featurize_batch(batch, params, heldout, keep).to_pandas()


def truncate(text: str | None, limit: int = MATCHED_MAX_CHARS) -> str | None:
    """`text` cut to `limit` characters, ending in an ellipsis when cut (evidence stays short)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


# ---- matching: a batch of featurized items against the held-out index, in memory ------------------

# the `kind` values of heldout_keys: one per key family (the Spark side imports these names)
KIND_NGRAM, KIND_STIMULUS, KIND_BAND = "ngram", "stimulus", "band"
EDIT_KIND_NAMES = {EDIT_SUBSTITUTED: "edit_substituted", EDIT_DELETED: "edit_deleted", EDIT_WHOLE: "edit_whole"}
INDEX_KINDS = (KIND_NGRAM, KIND_STIMULUS, KIND_BAND, *EDIT_KIND_NAMES.values())
# an item's edit key of one kind matches held-out keys of the kind below: a substitution matches at
# the same position; a word inserted into the item makes its DELETED key the held-out WHOLE key
ITEM_EDIT_KINDS = {EDIT_SUBSTITUTED: EDIT_KIND_NAMES[EDIT_SUBSTITUTED], EDIT_DELETED: EDIT_KIND_NAMES[EDIT_WHOLE],
                   EDIT_WHOLE: EDIT_KIND_NAMES[EDIT_DELETED]}
_NGRAM, _STIMULUS, _BAND = 0, 1, 2  # codes of INDEX_KINDS

MATCH_DOC = """One row per matched item (items that match nothing have no row):

    item_id        the item's id
    rule           'whole_text' | 'ngram' | 'near_dup'
    heldout_id     the held-out item it matched (ties: the smallest heldout_id)
    heldout_task, heldout_split
    matched        what matched, ≤ 200 characters: the first shared n-gram's words, the stimulus,
                   or the held-out stimulus (near_dup)
    score          shared distinct n-grams / the item's distinct n-grams; 1.0; the stimulus Jaccard
"""
MATCH_ARROW_SCHEMA = pa.schema([
    pa.field("item_id", pa.string(), False),
    pa.field("rule", pa.string(), False),
    pa.field("heldout_id", pa.string(), False),
    pa.field("heldout_task", pa.string()),
    pa.field("heldout_split", pa.string()),
    pa.field("matched", pa.string()),
    pa.field("score", pa.float64(), False),
])


def _csr(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, values, valid) of a list<int> Arrow column; a null list is an empty, invalid row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if pa.types.is_null(column.type):  # every row null (pandas gives no list type then)
        return np.zeros(n + 1, dtype=np.int64), np.empty(0, dtype=np.int64), np.zeros(n, dtype=bool)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.asarray(column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
    return offsets, values, valid


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + l) for each (s, l): gather indices of CSR slices."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _pair_jaccard(a: tuple[np.ndarray, np.ndarray], a_rows: np.ndarray,
                  b: tuple[np.ndarray, np.ndarray], b_rows: np.ndarray) -> np.ndarray:
    """Jaccard of set a[a_rows[p]] and set b[b_rows[p]] for every pair p, all pairs at once.

    a, b: (offsets, values) CSR of sorted distinct 32-bit values per row (shingle hashes). Each
    pair's values are tagged with the pair's number in the high 32 bits, both sides sorted
    together, and a value present on both sides is an adjacent equal pair: one sort for the batch
    instead of one set intersection per pair (measured faster than a binary search of one side's
    tagged values in the other's, which needs no sort). Equal to |A ∩ B| / |A ∪ B| (NaN when both
    are empty).
    """
    (a_off, a_val), (b_off, b_val) = a, b
    la = a_off[a_rows + 1] - a_off[a_rows]
    lb = b_off[b_rows + 1] - b_off[b_rows]
    pairs = np.arange(len(a_rows), dtype=_U64)
    tagged = np.concatenate([
        (np.repeat(pairs, la) << _U64(32)) | a_val[_ranges(a_off[a_rows], la)].astype(np.uint32).astype(_U64),
        (np.repeat(pairs, lb) << _U64(32)) | b_val[_ranges(b_off[b_rows], lb)].astype(np.uint32).astype(_U64),
    ])
    tagged.sort()
    shared = tagged[1:][tagged[1:] == tagged[:-1]] >> _U64(32)
    inter = np.bincount(shared.astype(np.int64), minlength=len(a_rows))
    union = la + lb - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _first_of_groups(sorted_codes: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in a sorted array."""
    starts = np.ones(len(sorted_codes), dtype=bool)
    starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.flatnonzero(starts)


_SAME_STIMULUS_KEY, _NEAR_CANDIDATE, _BY_EDIT = 1, 2, 4  # flags of an (item, held-out row) pair
_PRIORITY = {"whole_text": 0, "ngram": -1, "near_dup": -2}  # the RULES tie-break, as a number


class HeldoutIndex:
    """The held-out index in memory: one sorted int64 array per key kind with the held-out row
    of each key, and per held-out row its id, task, split, stimulus, accepted answers and
    shingles. Built once per held-out version from the two Delta tables (`from_arrow`) and shipped
    to each Python worker once (a Spark broadcast); `match_batch` then decides every rule for a
    batch of items with numpy lookups, no join. Size: about 12 bytes per key (3.3M keys ≈ 40 MB for
    the ≈ 35.6k held-out items of the benchmark mirror) plus the short items' shingles.

    The rules are those of the module docstring; per item the best match wins: highest score,
    then rule in the order whole_text, ngram, near_dup, then the smallest heldout_id.
    """

    def __init__(self, keys: dict[int, tuple[np.ndarray, np.ndarray]], ids: list[str], tasks: list[str],
                 splits: list[str], stimuli: list[str], answers: list[frozenset[str]],
                 shingles: tuple[np.ndarray, np.ndarray, np.ndarray],
                 context_shingles: tuple[np.ndarray, np.ndarray, np.ndarray], params: DecontaminationParams):
        self.keys = keys
        self.ids, self.tasks, self.splits, self.stimuli, self.answers = ids, tasks, splits, stimuli, answers
        self.shingles, self.context_shingles = shingles, context_shingles
        self.params = params
        self._derive()

    _DERIVED = ("id_rank", "answer_numbers", "answer_codes", "near_dup_answers")

    def _derive(self) -> None:
        """Fields derived from the others once per index (and again after unpickling, so they are
        never shipped): the rank of each row's heldout_id (ties go to the smallest id), the
        accepted answers as numbers and sorted (row × n_answers + answer number) codes, so that
        match_batch checks answers with one `np.isin`, and `near_dup_answers`."""
        ids = self.ids
        self.id_rank = np.empty(len(ids), dtype=np.int64)
        self.id_rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        self.answer_numbers: dict[str, int] = {}
        rows_of, numbers = [], []
        for row, accepted in enumerate(self.answers):
            for answer in accepted:
                rows_of.append(row)
                numbers.append(self.answer_numbers.setdefault(answer, len(self.answer_numbers)))
        self.answer_codes = np.unique(np.asarray(rows_of, dtype=np.int64) * max(len(self.answer_numbers), 1)
                                      + np.asarray(numbers, dtype=np.int64))
        # what `featurize_batch(near_dup_answers=...)` needs: the answers of the held-out rows a
        # near-duplicate can match at all (short ones, which have shingles)
        short = self.shingles[2]
        self.near_dup_answers = frozenset(a for row, accepted in enumerate(self.answers) if short[row]
                                          for a in accepted)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._derive()

    @classmethod
    def from_arrow(cls, keys: pa.Table, items: pa.Table, params: DecontaminationParams) -> "HeldoutIndex":
        """keys: kind (string, one of INDEX_KINDS), key (int64), row (int32: the row of `items`),
        boilerplate rows already left out. items: heldout_id, task, split, stimulus, answers,
        shingles, context_shingles (the `heldout_shingles` table, in row order)."""
        kind_codes = pc.index_in(keys.column("kind"), value_set=pa.array(INDEX_KINDS))
        if kind_codes.null_count:
            raise ValueError(f"heldout_keys holds a kind outside {INDEX_KINDS}")
        kind = np.asarray(kind_codes.to_numpy(), dtype=np.int8)
        key = np.asarray(keys.column("key").to_numpy(), dtype=np.int64)
        row = np.asarray(keys.column("row").to_numpy(), dtype=np.int32)
        by_kind = {}
        for code in range(len(INDEX_KINDS)):
            mask = kind == code
            k, r = key[mask], row[mask]
            order = np.argsort(k, kind="stable")
            by_kind[code] = (k[order], r[order])
        answers = [frozenset(a or ()) for a in items.column("answers").to_pylist()]
        return cls(by_kind, items.column("heldout_id").to_pylist(), items.column("task").to_pylist(),
                   items.column("split").to_pylist(), items.column("stimulus").to_pylist(), answers,
                   _csr(items.column("shingles")), _csr(items.column("context_shingles")), params)

    @property
    def n_keys(self) -> int:
        return sum(len(k) for k, _ in self.keys.values())

    def _lookup(self, code: int, item: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item, heldout row, position in `query`) for every index key equal to a query key.

        The distinct query keys are looked up in sorted order (np.unique): a binary search over
        millions of keys is then cache-friendly, and a key repeated in the batch is searched once."""
        keys, rows = self.keys[code]
        empty = np.empty(0, dtype=np.int64)
        if len(query) == 0 or len(keys) == 0:
            return empty, empty, empty
        distinct, inverse = np.unique(query, return_inverse=True)
        lo = np.searchsorted(keys, distinct, "left")
        hi = np.searchsorted(keys, distinct, "right")
        counts = (hi - lo)[inverse]
        hit = np.flatnonzero(counts)
        if len(hit) == 0:
            return empty, empty, empty
        counts = counts[hit]
        at = _ranges(lo[inverse[hit]], counts)
        return np.repeat(item[hit], counts), rows[at].astype(np.int64), np.repeat(hit, counts)

    def _answer_ok(self, items: np.ndarray, rows: np.ndarray, answers: pa.Array) -> np.ndarray:
        """Per (item, held-out row) pair: whether one of the item's answers is an accepted answer
        of the held-out row (exact string equality, through the answer numbers of this index)."""
        if isinstance(answers, pa.ChunkedArray):
            answers = answers.combine_chunks()
        a_off = np.zeros(len(answers) + 1, dtype=np.int64)
        np.cumsum(np.asarray(answers.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)), out=a_off[1:])
        flat = answers.flatten().to_pylist()
        number = np.fromiter((self.answer_numbers.get(a, -1) for a in flat), dtype=np.int64, count=len(flat))
        per_pair = a_off[items + 1] - a_off[items]
        at = _ranges(a_off[items], per_pair)
        pair = np.repeat(np.arange(len(items)), per_pair)
        known = number[at] >= 0
        codes = rows[pair[known]] * max(len(self.answer_numbers), 1) + number[at][known]
        found = np.isin(codes, self.answer_codes)
        return np.bincount(pair[known][found], minlength=len(items)) > 0

    def _passage_shingles(self, features: pa.RecordBatch, items: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, values, valid) like `_csr(features["context_shingles"])`, computed from the raw
        `context` column for `items` only (the others: no passage)."""
        n = features.num_rows
        raw, stimuli, qas = (features.column(c) for c in ("context", "stimulus", "qa"))
        texts = {}
        for i in items.tolist():
            text = item_passage(raw[i].as_py(), (stimuli[i].as_py(), qas[i].as_py()))
            if text:
                texts[i] = text
        have = np.fromiter(texts, dtype=np.int64, count=len(texts))
        offsets, values = minhash.shingle_batch(list(texts.values()), "char", self.params.shingle_size)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[have] = np.diff(offsets)
        full = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=full[1:])
        valid = np.zeros(n, dtype=bool)
        valid[have] = True
        return full, values.view(np.int32), valid

    def _passages_agree(self, item_passages: tuple[np.ndarray, np.ndarray, np.ndarray], items: np.ndarray,
                        rows: np.ndarray) -> np.ndarray:
        """Per (item, held-out row) pair whose held-out row has a passage: whether the item has a
        passage and its shingle Jaccard with the held-out passage reaches the near-dup threshold."""
        c_off, c_val, c_ok = item_passages
        hc_off, hc_val, _ = self.context_shingles
        t = self.params.near_dup_threshold
        ok = np.zeros(len(items), dtype=bool)
        check = np.flatnonzero(c_ok[items]) if len(items) else np.empty(0, dtype=np.int64)
        # |A ∩ B| / |A ∪ B| ≤ min(|A|, |B|) / max(|A|, |B|): passages of too different lengths fail
        # without their sets compared (exact; a fifth of BoolQ's passage pairs on the benchmark)
        la = c_off[items[check] + 1] - c_off[items[check]]
        lb = hc_off[rows[check] + 1] - hc_off[rows[check]]
        check = check[np.minimum(la, lb) >= t * np.maximum(la, lb)]
        if len(check):
            ok[check] = _pair_jaccard((c_off, c_val), items[check], (hc_off, hc_val), rows[check]) >= t
        return ok

    def match_batch(self, features: pa.RecordBatch) -> pa.RecordBatch:
        """The best match of each item of a `featurize_batch(..., heldout=False)` batch, as
        MATCH_ARROW_SCHEMA rows (see MATCH_DOC).

        Array work over the whole batch: every key kind is looked up once; the (item, held-out
        row) pairs that share a key are grouped by one sort; each rule is decided for all pairs
        at once (exact stimulus equality, n-gram share, answer, passage and stimulus Jaccard);
        the best pair per item by one lexsort. Python runs per matched item only (its evidence),
        and, for a batch featurized with `defer_passages`, per item whose near-duplicate candidate
        has a passage (its passage's shingles)."""
        p = self.params
        n = features.num_rows
        if n == 0 or not self.ids:
            return pa.RecordBatch.from_pylist([], schema=MATCH_ARROW_SCHEMA)
        col = features.column
        n_rows = np.int64(len(self.ids))
        items = np.arange(n, dtype=np.int64)

        # n-gram hits → per (item, row): shared distinct n-grams and the first shared word position
        ng_off, ng_val, _ = _csr(col("ngrams"))
        ng_len = np.diff(ng_off)
        ng_pos = np.arange(len(ng_val)) - np.repeat(ng_off[:-1], ng_len)
        it, rw, at = self._lookup(_NGRAM, np.repeat(items, ng_len), ng_val.astype(np.int64))
        ng_pair = it * n_rows + rw
        val = ng_val[at].astype(np.int64)
        order = np.lexsort((val, ng_pair))
        ng_pair, val, first_pos = ng_pair[order], val[order], ng_pos[at][order]
        starts = _first_of_groups(ng_pair)
        distinct = np.ones(len(val), dtype=bool)
        distinct[1:] = (ng_pair[1:] != ng_pair[:-1]) | (val[1:] != val[:-1])
        ng_shared = np.add.reduceat(distinct.astype(np.int64), starts) if len(starts) else np.empty(0, np.int64)
        ng_first = np.minimum.reduceat(first_pos, starts) if len(starts) else np.empty(0, np.int64)
        ng_pair = ng_pair[starts]

        # whole-text, band and edit hits → per (item, row): flags
        pair_parts, flag_parts = [], []
        stim = np.asarray(col("stimulus_key").to_numpy(zero_copy_only=False), dtype=np.int64)
        it, rw, _ = self._lookup(_STIMULUS, items, stim)
        pair_parts.append(it * n_rows + rw)
        flag_parts.append(np.full(len(it), _SAME_STIMULUS_KEY))
        b_off, b_val, _ = _csr(col("bands"))
        it, rw, _ = self._lookup(_BAND, np.repeat(items, np.diff(b_off)), b_val.astype(np.int64))
        pair_parts.append(it * n_rows + rw)
        flag_parts.append(np.full(len(it), _NEAR_CANDIDATE))
        e_off, e_val, _ = _csr(col("edit_keys"))
        e_item = np.repeat(items, np.diff(e_off))
        e_val = e_val.astype(np.int64)
        for raw_kind, index_kind in ITEM_EDIT_KINDS.items():
            mask = (e_val & 3) == raw_kind
            it, rw, _ = self._lookup(INDEX_KINDS.index(index_kind), e_item[mask], e_val[mask] >> 2)
            pair_parts.append(it * n_rows + rw)
            flag_parts.append(np.full(len(it), _NEAR_CANDIDATE | _BY_EDIT))

        # every pair once: n-gram share, first position, flags
        all_pairs = np.concatenate([ng_pair, *pair_parts])
        if len(all_pairs) == 0:
            return pa.RecordBatch.from_pylist([], schema=MATCH_ARROW_SCHEMA)
        pairs, inverse = np.unique(all_pairs, return_inverse=True)
        m = len(pairs)
        shared = np.zeros(m, dtype=np.int64)
        first = np.zeros(m, dtype=np.int64)
        shared[inverse[:len(ng_pair)]] = ng_shared
        first[inverse[:len(ng_pair)]] = ng_first
        flags = np.zeros(m, dtype=np.int64)
        np.bitwise_or.at(flags, inverse[len(ng_pair):], np.concatenate(flag_parts))
        pi, pr = pairs // n_rows, pairs % n_rows

        # candidate matches: (pair, score, priority), one list per rule
        cand_pair, cand_score, cand_priority = [], [], []
        stimuli = col("stimulus").to_pylist()
        answers = col("answers")
        same = np.flatnonzero(flags & _SAME_STIMULUS_KEY)
        same = same[np.fromiter((stimuli[i] == self.stimuli[r] for i, r in zip(pi[same].tolist(), pr[same].tolist())),
                                dtype=bool, count=len(same))]
        by_ngram = np.flatnonzero(shared)
        n_ngrams = np.asarray(col("n_ngrams").to_numpy(zero_copy_only=False), dtype=np.int64)
        cand_pair.append(by_ngram)
        cand_score.append(shared[by_ngram] / n_ngrams[pi[by_ngram]])
        cand_priority.append(np.full(len(by_ngram), _PRIORITY["ngram"]))

        s_off, s_val, s_ok = _csr(col("shingles"))
        c_off, c_val, c_ok = _csr(col("context_shingles"))
        deferred = "context" in features.schema.names  # featurize_batch(defer_passages=True)
        hs_off, hs_val, hs_ok = self.shingles
        hc_off, hc_val, hc_ok = self.context_shingles
        t = p.near_dup_threshold
        # whole text over a passage (a held-out item with a passage: BoolQ, SQuAD-like "What year did
        # it open?"): the same question is a copy only with the held-out answer or the same passage
        same_needs = hc_ok[pr[same]]
        if same_needs.any():
            same_needs[same_needs] = ~self._answer_ok(pi[same[same_needs]], pr[same[same_needs]], answers)
        near = np.flatnonzero(flags & _NEAR_CANDIDATE)
        near = near[s_ok[pi[near]] & hs_ok[pr[near]]]
        near = near[self._answer_ok(pi[near], pr[near], answers)]
        # the stimulus Jaccard (short sets) before the passage Jaccard (long ones): both must hold
        score = _pair_jaccard((s_off, s_val), pi[near], (hs_off, hs_val), pr[near])
        keep = ((flags[near] & _BY_EDIT) > 0) | (score >= t)
        near, score = near[keep], score[keep]
        needs_context = hc_ok[pr[near]]
        if deferred:  # the passages of only the items that need one compared, shingled now
            c_off, c_val, c_ok = self._passage_shingles(
                features, np.unique(np.concatenate([pi[near[needs_context]], pi[same[same_needs]]])))
        same_ok = ~same_needs
        same_ok[same_needs] = self._passages_agree((c_off, c_val, c_ok), pi[same[same_needs]], pr[same[same_needs]])
        same = same[same_ok]
        cand_pair.append(same)
        cand_score.append(np.ones(len(same)))
        cand_priority.append(np.full(len(same), _PRIORITY["whole_text"]))
        context_ok = ~needs_context
        context_ok[needs_context] = self._passages_agree((c_off, c_val, c_ok), pi[near[needs_context]],
                                                         pr[near[needs_context]])
        cand_pair.append(near[context_ok])
        cand_score.append(score[context_ok])
        cand_priority.append(np.full(int(context_ok.sum()), _PRIORITY["near_dup"]))

        # the best candidate per item: highest score, then rule priority, then smallest heldout_id
        cp = np.concatenate(cand_pair)
        if len(cp) == 0:
            return pa.RecordBatch.from_pylist([], schema=MATCH_ARROW_SCHEMA)
        cs = np.concatenate(cand_score)
        cpr = np.concatenate(cand_priority)
        ci, cr = pi[cp], pr[cp]
        order = np.lexsort((self.id_rank[cr], -cpr, -cs, ci))
        best = order[_first_of_groups(ci[order])]

        ids = col("id").to_pylist()
        qas = col("qa")
        rules = {v: k for k, v in _PRIORITY.items()}
        out_rule, out_id, out_task, out_split, out_matched = [], [], [], [], []
        for b in best.tolist():
            i, r, rule = int(ci[b]), int(cr[b]), rules[int(cpr[b])]
            if rule == "whole_text":
                matched = stimuli[i]
            elif rule == "ngram":
                words = qas[i].as_py().split(" ")
                start = int(first[cp[b]])
                matched = " ".join(words[start:start + p.ngram_n])
            else:
                matched = self.stimuli[r]
            out_rule.append(rule)
            out_id.append(self.ids[r])
            out_task.append(self.tasks[r])
            out_split.append(self.splits[r])
            out_matched.append(truncate(matched))
        return pa.RecordBatch.from_pydict({
            "item_id": [ids[i] for i in ci[best].tolist()],
            "rule": out_rule,
            "heldout_id": out_id,
            "heldout_task": out_task,
            "heldout_split": out_split,
            "matched": out_matched,
            "score": cs[best].astype(np.float64),
        }, schema=MATCH_ARROW_SCHEMA)


def build_heldout_index(heldout: pd.DataFrame, params: DecontaminationParams) -> HeldoutIndex:
    """The held-out index built in memory, with the keys `jobs.filters.contamination.
    ensure_heldout_index` stores and `load_heldout_index` loads (benchmarks, notebooks, tests; the
    job builds it with Spark): n-gram and whole-text keys found in `boilerplate_min_items` or more
    held-out items are left out, and so are the band and edit keys of a stimulus that many items
    share. heldout: heldout_id, task, split, question, context, choices, answer_text, answer_format,
    decontamination_text."""
    f = featurize_frame(heldout.rename(columns={"heldout_id": "id"}), params, heldout=True,
                        keep=("task", "split")).sort_values("id", kind="stable").reset_index(drop=True)
    bp = params.boilerplate_min_items
    stimulus_items = f.groupby("stimulus_key")["id"].transform("count").to_numpy()
    kinds, keys, rows = [], [], []

    def add(kind: str, values, row: int) -> None:
        values = np.asarray(values, dtype=np.int64)
        kinds.append(np.full(len(values), INDEX_KINDS.index(kind), dtype=np.int8))
        keys.append(values)
        rows.append(np.full(len(values), row, dtype=np.int32))

    for row, r in enumerate(f.itertuples()):
        add(KIND_NGRAM, r.ngrams, row)
        add(KIND_STIMULUS, [r.stimulus_key], row)
        if stimulus_items[row] >= bp:
            continue
        if r.bands is not None:
            add(KIND_BAND, r.bands, row)
        if r.edit_keys is not None:
            raw = np.asarray(r.edit_keys, dtype=np.int64)
            for edit_kind, name in EDIT_KIND_NAMES.items():
                add(name, raw[(raw & 3) == edit_kind] >> 2, row)
    kind = np.concatenate(kinds) if kinds else np.empty(0, np.int8)
    key = np.concatenate(keys) if keys else np.empty(0, np.int64)
    row = np.concatenate(rows) if rows else np.empty(0, np.int32)
    # boilerplate n-grams and whole texts: keys of `bp` or more items (each item's keys are distinct)
    frequent = np.zeros(len(key), dtype=bool)
    for code in (INDEX_KINDS.index(KIND_NGRAM), INDEX_KINDS.index(KIND_STIMULUS)):
        at = np.flatnonzero(kind == code)
        _, inverse, counts = np.unique(key[at], return_inverse=True, return_counts=True)
        frequent[at] = counts[inverse] >= bp
    keep = ~frequent
    key_table = pa.table({"kind": pa.array(np.asarray(INDEX_KINDS, dtype=object)[kind[keep]].tolist(), pa.string()),
                          "key": pa.array(key[keep], pa.int64()), "row": pa.array(row[keep], pa.int32())})
    items = pa.Table.from_pandas(f.rename(columns={"id": "heldout_id"})[
        ["heldout_id", "task", "split", "stimulus", "answers", "shingles", "context_shingles"]], preserve_index=False)
    return HeldoutIndex.from_arrow(key_table, items, params)
