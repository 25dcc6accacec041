"""MinHash near-duplicate detection, the pure half: stimulus text, shingles, datasketch signatures,
LSH band hashes and Jaccard similarity. No Spark here; `jobs/filters/near_dup.py` wires tables to it.

The method (Broder, "On the resemblance and containment of documents", 1997; Leskovec, Rajaraman
and Ullman, *Mining of Massive Datasets*, ch. 3):

1. **Stimulus.** An item is compared on what it asks, `stimulus_text`: context + question +
   options, never the answer (see that function for why); and on its question and its passage
   each on their own (`stimulus_parts`, `near_duplicate_pair`): a passage many questions share, or
   a question (a frame) many passages share, must not by itself make two items one (issue 29).
2. **Shingles.** The stimulus goes through `udfs.textnorm.normalize_text` (the one normalization of
   every curation filter) and becomes the *set* of its character k-grams (default: 5 characters,
   spaces included, so word boundaries count) or word k-grams. Each shingle is hashed to 32 bits
   (`shingle_hashes`). Texts shorter than k give one shingle, the whole text; an empty text gives
   no shingle and no signature (it is never anyone's near-duplicate).
3. **Signature.** `datasketch.MinHash` with the "affine32" permutation scheme and a fixed seed turns
   the shingle set into `num_perm` minimum hash values; for two sets A and B, the share of equal
   positions estimates their Jaccard similarity |A ∩ B| / |A ∪ B|. Same text, same parameters →
   same signature in every process, on every machine (no process-salted hashing anywhere).
4. **Bands.** The signature is cut into b bands of r rows; each band is hashed to one 64-bit
   integer (`band_hashes`). Two items become a *candidate pair* when any band hash is equal, which
   for Jaccard s happens with probability

       P(candidate | s) = 1 - (1 - s^r)^b            (the S-curve; midpoint ≈ (1/b)^(1/r))

   `choose_bands` picks the most selective (b, r) whose S-curve still gives
   P(candidate | threshold) ≥ `candidate_recall` (default 0.99). For the defaults (threshold 0.8,
   64 permutations) that is b = 12, r = 5 (60 of the 64 values used): P = 0.992 at s = 0.8,
   0.9999 at 0.9, 0.32 at 0.5, 0.029 at 0.3, midpoint 0.61 (with 128 permutations: b = 21, r = 6,
   P = 0.998 / 0.28 / 0.015 at twice the signing cost). datasketch's own `MinHashLSH` optimum,
   which minimises the summed areas of false positives and false negatives, picks b = 9, r = 13
   for threshold 0.8 and 128 permutations, i.e. P = 0.40 at the threshold: right for an
   approximate query index, wrong for dedup, where a missed pair is a duplicate kept and a false
   candidate costs one exact check.
5. **Confirmation.** Candidates are kept when their *exact* Jaccard, from the stored shingle-hash
   sets (`jaccard`), reaches the threshold. The signature estimate (`estimated_jaccard`) has a
   standard error of sqrt(s(1-s)/num_perm) = 0.05 at s = 0.8 with 64 permutations (0.035 with
   128), so confirming on it would keep only about half of the pairs that sit right at the
   threshold and let through some below it; the exact check keeps every pair banding found at or
   above the threshold and none below. Since the signature only has to generate candidates, 64
   permutations are enough: the cost of signing is shingles × permutations.

Shingle hash: each token (a character's code point, or a word's 64-bit BLAKE2b digest) is folded
into a 64-bit state with the MurmurHash3 finalizer (fmix64), k tokens per shingle, and the state is
folded to 32 bits (high XOR low). Band hash: the same fold over the r uint32 values of a band,
reinterpreted as a signed int64. Everything is numpy uint64 arithmetic (wrapping modulo 2^64), so
it is the same on every platform. `MinHashParams.tag` names the version of all of these rules;
bump `SIGNATURE_VERSION` when shingling, hashing or `normalize_text` change meaning, so stored
signatures are re-signed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from datasketch import MinHash

from udfs.textnorm import normalize_text

SIGNATURE_VERSION = 4  # 3: the question and the passage are shingled on their own too (issue 29); 4: normalize_text reads superscripts and Arabic separators
# 2: normalize_text keeps operators, marks of non-Latin scripts, splits CJK/Thai (issue 25)
SCHEME = "affine32"  # datasketch's permutation scheme (bijective, collision-free; default since 2.0)

_U64 = np.uint64
_FMIX_C1 = _U64(0xFF51AFD7ED558CCD)
_FMIX_C2 = _U64(0xC4CEB9FE1A85EC53)
_GOLDEN = _U64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: the fold's multiplier
_S33 = _U64(33)
_S32 = _U64(32)
_ONE = _U64(1)

Shingle = Literal["char", "word"]


# ---- parameters ---------------------------------------------------------------------------------


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(two items with Jaccard `similarity` share at least one of `bands` bands of `rows` rows):
    1 - (1 - s^r)^b (Mining of Massive Datasets, §3.4.2)."""
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"similarity must be in [0, 1], got {similarity}")
    return 1.0 - (1.0 - similarity**rows) ** bands


def choose_bands(threshold: float, num_perm: int, candidate_recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) for LSH: the largest r (fewest false candidates) such that with b = num_perm // r
    bands, P(candidate | threshold) ≥ candidate_recall. Falls back to r = 1, b = num_perm (every
    shared minimum is a candidate) when no r reaches the target.

    Raises ValueError for a threshold outside (0, 1], num_perm < 1 or candidate_recall outside (0, 1).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    if not 0.0 < candidate_recall < 1.0:
        raise ValueError(f"candidate_recall must be in (0, 1), got {candidate_recall}")
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= candidate_recall:
            best = (bands, rows)
    return best


@dataclass(frozen=True)
class MinHashParams:
    """Everything that decides a signature and its bands; `tag` is stored next to each signature so
    that a change of any of them re-signs the row."""

    shingle: Shingle = "char"
    shingle_size: int = 5
    num_perm: int = 64
    bands: int = 12
    rows: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shingle not in ("char", "word"):
            raise ValueError(f"shingle must be 'char' or 'word', got {self.shingle!r}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be positive, got {self.shingle_size}")
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands × rows must be at most num_perm: {self.bands} × {self.rows} > {self.num_perm}")

    @classmethod
    def for_threshold(cls, threshold: float, shingle: Shingle = "char", shingle_size: int = 5,
                      num_perm: int = 64, seed: int = 1, candidate_recall: float = 0.99,
                      bands: int | None = None, rows: int | None = None) -> "MinHashParams":
        """Parameters for a Jaccard threshold; bands/rows from `choose_bands` unless both are given."""
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        if bands is None:
            bands, rows = choose_bands(threshold, num_perm, candidate_recall)
        return cls(shingle=shingle, shingle_size=shingle_size, num_perm=num_perm, bands=bands, rows=rows,
                   seed=seed)

    @property
    def tag(self) -> str:
        """e.g. 'v2/char5/p64/b12r5/seed1/affine32'."""
        return (f"v{SIGNATURE_VERSION}/{self.shingle}{self.shingle_size}/p{self.num_perm}/"
                f"b{self.bands}r{self.rows}/seed{self.seed}/{SCHEME}")

    def s_curve(self, similarity: float) -> float:
        return candidate_probability(similarity, self.bands, self.rows)

    @property
    def midpoint(self) -> float:
        """Similarity at which the S-curve is steepest, ≈ (1/b)^(1/r)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)


# ---- text → shingles ----------------------------------------------------------------------------


def stimulus_text(question: str | None, context: str | None = None,
                  choices: Sequence[str] | None = None) -> str:
    """The text an item is compared on: context, question and options, one per line (empty parts
    skipped).

    Not the answer: a copy of a seed with a wrong answer attached is still a copy (the issue's
    llama.cpp example), and two different questions whose answers are both "4" or "yes" are not
    duplicates; answers are also short next to the stimulus, so including them would mostly add
    noise to the similarity. Options are included because an MCQ is defined by them as much as by
    its question ("Which is a mammal?" with different options is a different item), in the order
    of their normalized text: a copy with shuffled options is the same item (issue 25; the
    contamination filter's `identity_options` sorts them the same way).
    """
    options = [str(c) for c in (choices if choices is not None else ()) if c is not None and str(c).strip()]
    options.sort(key=lambda c: (normalize_text(c), c))
    parts = [context, question, *options]
    return "\n".join(str(p) for p in parts if p is not None and str(p).strip())


def stimulus_parts(question: str | None, context: str | None = None,
                   choices: Sequence[str] | None = None) -> tuple[str, str, str]:
    """(stimulus, question, passage): `stimulus_text`, the question alone and the passage alone
    ("" when the item has none), each through `normalize_text` — the three texts an item is
    shingled on."""
    return (normalize_text(stimulus_text(question, context, choices)), normalize_text(question),
            normalize_text(context))


def containment(shingles_a: np.ndarray, shingles_b: np.ndarray) -> float:
    """|A ∩ B| / min(|A|, |B|) of two distinct shingle-hash arrays: 1.0 when one set is inside the
    other (a passage cut short or padded), 0.0 when either is empty."""
    if not len(shingles_a) or not len(shingles_b):
        return 0.0
    inter = len(np.intersect1d(shingles_a, shingles_b, assume_unique=True))
    return inter / min(len(shingles_a), len(shingles_b))


def near_duplicate_pair(stimulus_jaccard: float, question_jaccard: float, passage_containment: float | None,
                        threshold: float) -> tuple[bool, float]:
    """Whether two items are near-duplicates, and the similarity that decided (issue 29).

    `passage_containment` is None unless both items have a passage. Then the question and the
    passage are compared each on their own: the questions must be near-duplicates (Jaccard ≥
    threshold) AND the passages must be one taken from the other (containment ≥ threshold: kept,
    cut short or lightly edited) or the whole stimuli near-duplicates — so a frame question many
    passages share ("What will Others want to do next?") does not make two items with different
    passages one, and a passage many questions share (BoolQ: 880 train passages carry 2-8 different
    questions) does not make two different questions one. The similarity is then the smaller of
    the question's Jaccard and the passage's best (containment or stimulus Jaccard). Otherwise (at
    most one passage: question and options are the item) the whole stimulus decides, as before:
    Jaccard ≥ threshold."""
    if passage_containment is None:
        return stimulus_jaccard >= threshold, stimulus_jaccard
    similarity = min(question_jaccard, max(passage_containment, stimulus_jaccard))
    return similarity >= threshold, similarity


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, elementwise on uint64 (a bijection with full avalanche)."""
    h = h ^ (h >> _S33)
    h = h * _FMIX_C1
    h = h ^ (h >> _S33)
    h = h * _FMIX_C2
    return h ^ (h >> _S33)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer on uint32: datasketch's affine32 pre-mix of every input hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _window_hashes(tokens: np.ndarray, k: int) -> np.ndarray:
    """32-bit hash of every window of k consecutive uint64 tokens (len(tokens) - k + 1 values):
    the polynomial Σ t[p+j]·G^(k-1-j) mod 2^64, then fmix64, then high XOR low 32 bits."""
    n = len(tokens) - k + 1
    h = np.zeros(n, dtype=_U64)
    for j in range(k):
        h *= _GOLDEN
        h += tokens[j:j + n]
    h = _fmix64(h)
    return ((h >> _S32) ^ h).astype(np.uint32)


@lru_cache(maxsize=1 << 16)
def _word_id(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def _word_tokens(normalized: str) -> np.ndarray:
    return np.fromiter((_word_id(w) for w in normalized.split()), dtype=_U64)


def shingle_batch(normalized_texts: Sequence[str], shingle: Shingle = "char",
                  size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Shingle-hash sets of many already normalized texts at once, in CSR form.

    Returns (offsets, hashes): `hashes[offsets[i]:offsets[i + 1]]` are the sorted, distinct uint32
    hashes of text i's shingles; offsets has len(texts) + 1 int64 entries. char shingles are k
    consecutive characters (code points, spaces included); word shingles are k consecutive
    space-separated words. A text with fewer than k tokens is one shingle, itself; "" has none.
    """
    if size < 1:
        raise ValueError(f"shingle size must be positive, got {size}")
    n_texts = len(normalized_texts)
    if shingle == "char":
        # one encode for the whole batch: UTF-32 has one unit per code point, so len() splits it;
        # +1 so that no token is 0 (a leading run of zeros would not move the polynomial)
        flat = np.frombuffer("".join(normalized_texts).encode("utf-32-le"), dtype=np.uint32).astype(_U64)
        flat += _ONE
        lengths = np.fromiter((len(t) for t in normalized_texts), dtype=np.int64, count=n_texts)
    elif shingle == "word":
        words = [_word_tokens(t) for t in normalized_texts]
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=n_texts)
        flat = np.concatenate(words) if n_texts else np.empty(0, dtype=_U64)
    else:
        raise ValueError(f"shingle must be 'char' or 'word', got {shingle!r}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    doc_ids: list[np.ndarray] = []
    values: list[np.ndarray] = []
    long_docs = np.flatnonzero(lengths >= size)
    if len(long_docs) and len(flat) >= size:
        # one pass over the concatenation, then keep the windows that stay inside one text
        hashed = _window_hashes(flat, size)
        windows = lengths[long_docs] - size + 1
        shift = np.repeat(starts[long_docs] - (np.cumsum(windows) - windows), windows)
        doc_ids.append(np.repeat(long_docs, windows))
        values.append(hashed[np.arange(int(windows.sum())) + shift])
    for i in np.flatnonzero((lengths > 0) & (lengths < size)):
        doc_ids.append(np.array([i]))
        values.append(_window_hashes(flat[starts[i]:starts[i] + lengths[i]], int(lengths[i])))
    if not values:
        return np.zeros(n_texts + 1, dtype=np.int64), np.empty(0, dtype=np.uint32)
    keys = (np.concatenate(doc_ids).astype(_U64) << _S32) | np.concatenate(values).astype(_U64)
    keys.sort()
    keep = np.empty(len(keys), dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    keys = keys[keep]
    counts = np.bincount((keys >> _S32).astype(np.int64), minlength=n_texts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, (keys & _U64(0xFFFFFFFF)).astype(np.uint32)


def shingle_hashes(normalized: str, shingle: Shingle = "char", size: int = 5) -> np.ndarray:
    """Sorted, distinct uint32 shingle hashes of one already normalized text (see `shingle_batch`)."""
    return shingle_batch([normalized], shingle, size)[1]


def text_shingles(text: str | None, params: MinHashParams) -> np.ndarray:
    """`shingle_hashes` of `normalize_text(text)` with the shingle settings of `params`."""
    return shingle_hashes(normalize_text(text), params.shingle, params.shingle_size)


# ---- signatures, bands, similarity --------------------------------------------------------------


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) permutation parameters for (num_perm, seed) in the affine32 scheme, two
    uint32 arrays: built once per process (once per Python worker in Spark)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a, b


def to_datasketch(sig: np.ndarray, params: MinHashParams) -> MinHash:
    """A stored signature (uint32 or its int32 storage form) as a `datasketch.MinHash`, e.g. to query
    it against a `datasketch.MinHashLSH` in a notebook."""
    return MinHash(seed=params.seed, hashvalues=np.asarray(sig).view(np.uint32), scheme=SCHEME,
                   permutations=np.array(permutations(params.num_perm, params.seed)))


def signature_batch(offsets: np.ndarray, hashes: np.ndarray, params: MinHashParams,
                    chunk_values: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of the sets of a `shingle_batch`: (signatures, has_signature).

    signatures is a (n_texts, num_perm) uint32 matrix, bit for bit what
    `datasketch.MinHash(num_perm, seed, scheme="affine32")` holds after `update_batch` with the same
    hashes (fmix32 pre-mix, then a·h + b mod 2^32, minimum per permutation); it is computed for a
    whole batch with one numpy pass per chunk of about `chunk_values` shingles, because datasketch's
    own bulk API loops in Python per text (measured: bench/bench_near_dup.py). has_signature is
    False for an empty set, whose row holds datasketch's empty value (all 2^32 - 1) and must not be
    used.
    """
    a, b = permutations(params.num_perm, params.seed)
    n = len(offsets) - 1
    sigs = np.full((n, params.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    present = offsets[1:] > offsets[:-1]
    docs = np.flatnonzero(present)
    if not len(docs):
        return sigs, present
    mixed = _fmix32(hashes.astype(np.uint32, copy=False))
    a_col, b_col = a[:, None], b[:, None]
    starts = offsets[docs]
    ends = offsets[docs + 1]
    i = 0
    while i < len(docs):
        # docs i..j-1 hold at most chunk_values shingles; a text with more is done in slices, so
        # memory stays at chunk_values × num_perm values whatever one text's length
        j = int(np.searchsorted(ends, starts[i] + chunk_values, side="right"))
        if j <= i:
            lo, hi = starts[i], ends[i]
            for piece in range(lo, hi, chunk_values):
                permuted = np.multiply(a_col, mixed[None, piece:min(piece + chunk_values, hi)])
                permuted += b_col
                np.minimum(sigs[docs[i]], permuted.min(axis=1), out=sigs[docs[i]])
            i += 1
            continue
        lo, hi = starts[i], ends[j - 1]
        # (num_perm, shingles): each permutation's values of the chunk are contiguous, so the
        # per-text minimum runs along rows (measured 5x faster than (shingles, num_perm) with
        # reduceat down the columns)
        permuted = np.multiply(a_col, mixed[None, lo:hi])
        permuted += b_col
        sigs[docs[i:j]] = np.minimum.reduceat(permuted, starts[i:j] - lo, axis=1).T
        i = j
    return sigs, present


def signature(shingles: np.ndarray, params: MinHashParams) -> np.ndarray | None:
    """MinHash signature of one shingle-hash set (num_perm uint32 values), None for an empty set (an
    empty set has no minimum; it must not look like every other empty text)."""
    offsets = np.array([0, len(shingles)], dtype=np.int64)
    sigs, present = signature_batch(offsets, np.asarray(shingles, dtype=np.uint32), params)
    return sigs[0] if present[0] else None


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Band hashes of one signature (→ `bands` int64 values) or of a (n, num_perm) matrix
    (→ (n, bands)): the polynomial fold of a band's `rows` consecutive values, fmix64, as int64.
    Signature values past bands × rows are unused."""
    sigs = np.asarray(sigs)
    if sigs.shape[-1] < bands * rows:
        raise ValueError(f"signature has {sigs.shape[-1]} values, {bands} bands × {rows} rows need {bands * rows}")
    table = sigs[..., : bands * rows].view(np.uint32).astype(_U64).reshape(*sigs.shape[:-1], bands, rows)
    h = np.zeros(table.shape[:-1], dtype=_U64)
    for j in range(rows):
        h *= _GOLDEN
        h += table[..., j]
    return _fmix64(h).view(np.int64)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal positions of two signatures of the same parameters (an unbiased estimate of
    Jaccard, standard error sqrt(s(1-s)/num_perm))."""
    if len(sig_a) != len(sig_b):
        raise ValueError(f"signatures differ in length: {len(sig_a)} vs {len(sig_b)}")
    return float(np.count_nonzero(np.asarray(sig_a) == np.asarray(sig_b))) / len(sig_a)


def jaccard(shingles_a: np.ndarray, shingles_b: np.ndarray) -> float:
    """Exact Jaccard |A ∩ B| / |A ∪ B| of two distinct shingle-hash arrays; 0.0 when both are empty
    (an empty text is nobody's duplicate)."""
    inter = len(np.intersect1d(shingles_a, shingles_b, assume_unique=True))
    union = len(shingles_a) + len(shingles_b) - inter
    return inter / union if union else 0.0


def item_similarity(a: Sequence, b: Sequence, params: MinHashParams, threshold: float) -> tuple[bool, float]:
    """`near_duplicate_pair` of two items given as (question, context, choices), computed exactly
    from their shingles (what `jobs.filters.near_dup.confirmed_pairs` computes in Spark from the
    stored sets)."""
    parts = [stimulus_parts(*x) for x in (a, b)]
    sets = [[shingle_hashes(p[i], params.shingle, params.shingle_size) for i in range(3)] for p in parts]
    passages = None
    if len(sets[0][2]) and len(sets[1][2]):
        passages = containment(sets[0][2], sets[1][2])
    return near_duplicate_pair(jaccard(sets[0][0], sets[1][0]), jaccard(sets[0][1], sets[1][1]), passages, threshold)


# ---- a batch of rows (what one mapInPandas call sees) -------------------------------------------

SIGN_INPUT_COLUMNS = ("doc_kind", "doc_id", "question", "context", "choices", "source_hash")
SIGN_OUTPUT_COLUMNS = ("doc_kind", "doc_id", "source_hash", "params", "num_shingles", "shingles",
                       "signature", "band_hashes", "question_shingles", "question_band_hashes", "passage_shingles")


def sign_frame(frame: pd.DataFrame, params: MinHashParams) -> pd.DataFrame:
    """Sign a batch of items (the body of one mapInPandas call).

    Input columns: doc_kind, doc_id, question, context, choices (sequence of str or None),
    source_hash. Output: one row per input row with doc_kind, doc_id, source_hash, params
    (= params.tag), num_shingles (int32), shingles (the sorted shingle hashes of the whole stimulus
    as int32), signature (num_perm values as int32) and band_hashes (`bands` int64 values) of the
    stimulus; question_shingles and question_band_hashes, the same for the question alone, and
    passage_shingles, the shingles of the passage alone — all three None when the item has no
    passage (they only serve pairs of two items with one).
    Signature and band hashes are None for a text without shingles (an empty text). Storage as
    int32 reinterprets the uint32 hashes bit for bit; equality, the only operation used on them,
    is unchanged.
    """
    # the question and the passage on their own serve only pairs of two items with a passage
    # (`near_duplicate_pair`): an item without one is normalized, signed and banded as before
    parts = [stimulus_parts(q, c, None if _missing(ch) else list(ch)) if _has_text(c)
             else (normalize_text(stimulus_text(q, c, None if _missing(ch) else list(ch))), "", "")
             for q, c, ch in zip(frame["question"], frame["context"], frame["choices"])]
    n = len(parts)
    out = {"doc_kind": frame["doc_kind"].to_numpy(), "doc_id": frame["doc_id"].to_numpy(),
           "source_hash": frame["source_hash"].to_numpy(), "params": params.tag}
    has_passage = [bool(p[2]) for p in parts]
    for column, index in (("", 0), ("question_", 1), ("passage_", 2)):
        texts = [p[index] if (index == 0 or has_passage[i]) else "" for i, p in enumerate(parts)]
        offsets, hashes = shingle_batch(texts, params.shingle, params.shingle_size)
        stored = hashes.view(np.int32)
        sets = [stored[offsets[i]:offsets[i + 1]] for i in range(n)]
        if column == "passage_":
            out["passage_shingles"] = [s if len(s) else None for s in sets]
            continue
        sigs, present = signature_batch(offsets, hashes, params)
        bands = band_hashes(sigs, params.bands, params.rows)
        out[f"{column}band_hashes"] = [bands[i] if present[i] else None for i in range(n)]
        if column:
            out["question_shingles"] = [sets[i] if has_passage[i] else None for i in range(n)]
        else:
            out["shingles"] = sets
            out["num_shingles"] = np.diff(offsets).astype(np.int32)
            out["signature"] = [sigs.view(np.int32)[i] if present[i] else None for i in range(n)]
    return pd.DataFrame({c: out[c] for c in SIGN_OUTPUT_COLUMNS})


def _has_text(value: object) -> bool:
    return not _missing(value) and bool(str(value).strip())


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
