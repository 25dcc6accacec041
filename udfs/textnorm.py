"""One text normalization for every comparison the curation filters make.

Exact dedup, near-duplicate MinHash, n-gram contamination and the short-item whole-text match all
compare texts after `normalize_text`, on both sides, so a copy that differs only in formatting
(case, punctuation, spacing, unicode forms, accents, how a number is written) is still a copy.

Rules, in order:
1. NFKC (full-width forms, ligatures, superscripts become plain characters), then casefold.
2. Accents dropped: NFKD, combining marks removed ("café" matches "cafe").
3. Numbers written one way: thousands separators removed when they group correctly ("1,000" and
   "1000"), trailing zeros of a decimal dropped ("2.50" → "2.5", "3.0" → "3").
4. Punctuation and symbols (unicode categories P* and S*: "$", "%", "+", quotes, dashes) become
   spaces, so "2+2=4" and "2 + 2 = 4" agree; letters, digits and marks of other scripts are kept.
5. Whitespace squeezed to single spaces, no leading or trailing space.

Pure and deterministic (no locale, no process-salted hashing); `normalize_text(normalize_text(x))`
equals `normalize_text(x)`.
"""

from __future__ import annotations

import re
import unicodedata

_GROUPED_NUMBER_RE = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,]*\d)")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]*\d)")
# a cheap scan that skips the number rules when they cannot apply (their lookarounds are slow)
_NUMBER_PUNCT_RE = re.compile(r"\d[,.]\d")


def _drop_thousands(match: re.Match) -> str:
    return match.group(0).replace(",", "")


def _trim_decimal(match: re.Match) -> str:
    fraction = match.group(2).rstrip("0")
    return f"{match.group(1)}.{fraction}" if fraction else match.group(1)


class _CodePointMap(dict):
    """A `str.translate` table filled on first sight of each code point by `rule(char)`, so the
    per-character work runs in C after the first time a character is seen (a few thousand distinct
    characters in practice). `rule` returns the replacement code point, or None to delete."""

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, code_point: int):
        value = self._rule(chr(code_point))
        self[code_point] = value
        return value


def _drop_mark(ch: str) -> int | None:
    return None if unicodedata.category(ch) == "Mn" else ord(ch)


def _separator_to_space(ch: str) -> int:
    return 32 if unicodedata.category(ch)[0] in "PSZC" else ord(ch)


_DROP_MARKS = _CodePointMap(_drop_mark)
_SEPARATORS = _CodePointMap(_separator_to_space)


def _ascii_table(rule) -> bytes:
    """A 256-byte `bytes.translate` table: rule(byte) for the 128 ASCII bytes (others unchanged)."""
    return bytes(rule(chr(b)) for b in range(128)) + bytes(range(128, 256))


# ASCII text in one bytes.translate: lower-cased, and P/S/Z/C characters made spaces (the rules
# above, composed: lower() never turns an ASCII character into one of another category)
_ASCII_FOLD = _ascii_table(lambda ch: _separator_to_space(ch.lower()))
# digits → "0", "," and "." → ",", the rest → " ": `b"0,0" in raw.translate(_ASCII_NUMBER_CLASS)`
# is `_NUMBER_PUNCT_RE.search` on ASCII text, as a substring search
_ASCII_NUMBER_CLASS = _ascii_table(lambda ch: 48 if ch.isdigit() else 44 if ch in ",." else 32)


def _number_rules(value: str) -> str:
    if "," in value:
        value = _GROUPED_NUMBER_RE.sub(_drop_thousands, value)
    if "." in value:
        value = _DECIMAL_RE.sub(_trim_decimal, value)
    return value


def normalize_text(text: object) -> str:
    """The comparison form of `text` (see the module docstring); None → "".

    ASCII input (97% of the benchmark mirror's texts) skips the unicode steps, which leave ASCII
    unchanged (NFKC and NFKD are the identity on it, casefold is lower, it has no combining marks),
    and runs as bytes: one `bytes.translate` both lower-cases and maps separators to spaces, and
    the number rules' regexes run only when a digit-[,.]-digit run is there (a substring search
    over a class-mapped copy). Output identical to the unicode path on ASCII (unit-tested against
    the rule-by-rule reference on the mirror's records).
    """
    if text is None:
        return ""
    value = str(text)
    if value.isascii():
        raw = value.encode("ascii")
        if b"0,0" in raw.translate(_ASCII_NUMBER_CLASS):
            raw = _number_rules(value).encode("ascii")
        return b" ".join(raw.translate(_ASCII_FOLD).split()).decode("ascii")
    value = unicodedata.normalize("NFKC", value).casefold()
    value = unicodedata.normalize("NFKD", value).translate(_DROP_MARKS)
    if _NUMBER_PUNCT_RE.search(value):
        value = _number_rules(value)
    return " ".join(value.translate(_SEPARATORS).split())


def normalize_array(values) -> list[str]:
    """`normalize_text` of every value of a string array (pyarrow Array/ChunkedArray, or a sequence
    of str/None), as a list of str ("" for None): the same output, most of it computed by Arrow's
    compute kernels in C for the whole array instead of per value in Python.

    Arrow takes the ASCII values without a digit-[,.]-digit run (the number rules' trigger): lower
    case, every run of characters other than a-z and 0-9 made one space, trimmed — exactly the
    ASCII path of `normalize_text`, since an ASCII character is a letter, a digit, or of a category
    that becomes a space (P, S, Z, C). The rest (non-ASCII, numbers with separators) go through
    `normalize_text` one by one. Unit-tested against it on the benchmark mirror's strings.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], pa.string())
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return [normalize_text(v) for v in array.to_pylist()]
    fast = pc.and_kleene(pc.string_is_ascii(array), pc.invert(pc.match_substring_regex(array, r"\d[,.]\d")))
    folded = pc.utf8_trim(pc.replace_substring_regex(pc.ascii_lower(array), r"[^a-z0-9]+", " "), " ")
    out = folded.to_pylist()
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(fast, True))).to_pylist():
        out[i] = normalize_text(array[i].as_py())
    return [v if v is not None else "" for v in out]


def normalized_words(text: object) -> list[str]:
    """`normalize_text(text)` split into words."""
    return normalize_text(text).split()
