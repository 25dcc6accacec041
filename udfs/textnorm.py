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
from functools import lru_cache

_GROUPED_NUMBER_RE = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,]*\d)")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]*\d)")


def _drop_thousands(match: re.Match) -> str:
    return match.group(0).replace(",", "")


def _trim_decimal(match: re.Match) -> str:
    fraction = match.group(2).rstrip("0")
    return f"{match.group(1)}.{fraction}" if fraction else match.group(1)


@lru_cache(maxsize=4096)
def _category_is_separator(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] in "PSZC"


# rule 4 for ASCII text as one str.translate (same result, no Python step per character)
_ASCII_SEPARATORS = {code: " " for code in range(128) if _category_is_separator(chr(code))}


def normalize_text(text: object) -> str:
    """The comparison form of `text` (see the module docstring); None → ""."""
    if text is None:
        return ""
    value = unicodedata.normalize("NFKC", str(text)).casefold()
    ascii_only = value.isascii()  # ASCII has no combining marks and NFKD leaves it unchanged
    if not ascii_only:
        value = "".join(ch for ch in unicodedata.normalize("NFKD", value) if unicodedata.category(ch) != "Mn")
    value = _GROUPED_NUMBER_RE.sub(_drop_thousands, value)
    value = _DECIMAL_RE.sub(_trim_decimal, value)
    if ascii_only:
        value = value.translate(_ASCII_SEPARATORS)
    else:
        value = "".join(" " if _category_is_separator(ch) else ch for ch in value)
    return " ".join(value.split())


def normalized_words(text: object) -> list[str]:
    """`normalize_text(text)` split into words."""
    return normalize_text(text).split()
