"""Which writing system a text is written in, from Unicode character names (pure, no Spark).

Python's `unicodedata` has no Script property (UAX #24), but every letter's name begins with its
script (`LATIN SMALL LETTER A`, `CJK UNIFIED IDEOGRAPH-4E2D`, `HIRAGANA LETTER A`, `THAI CHARACTER
KO KAI`, `DEVANAGARI LETTER A`, `HANGUL SYLLABLE HAN`): `char_script` reads that first word, with
a few names that do not start with the script (`FULLWIDTH LATIN …`, `HALFWIDTH KATAKANA …`,
`KATAKANA-HIRAGANA PROLONGED SOUND MARK`, CJK compatibility ideographs) mapped by `_ALIASES`. Only
letters (category L) and the marks of a script (category M whose name names a script, e.g. Thai
vowel signs, Devanagari matras) count; digits, punctuation, symbols, spaces and the combining marks
shared by every script (`COMBINING ACUTE ACCENT`) have no script (None): a text's script is that of
its letters, whatever digits or signs it states.

Used by the paraphrase filter (issue 25, item 15) to route an item to the multilingual embedding
model: `mostly_non_latin(text)` is True when at least half of the text's letters are of a script
other than Latin (Chinese, Japanese, Korean, Thai, Arabic, Hindi, Russian, Greek, Hebrew …), and
`non_latin_script(text)` names that script (udfs.paraphrase.retrieval_route sends the scripts USE
multilingual v3 was trained on to it, Devanagari to multilingual-e5-small, the rest to the English
model).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache

LATIN = "LATIN"
# names whose first word is not the script: first word (or whole prefix) -> script
_ALIASES = {
    "CJK": "HAN",                     # CJK UNIFIED IDEOGRAPH-…, CJK COMPATIBILITY IDEOGRAPH-…
    "IDEOGRAPHIC": "HAN",             # IDEOGRAPHIC ITERATION MARK 々 (Lm)
    "KATAKANA-HIRAGANA": "KATAKANA",  # ー, shared by both kana; counted with the kana
    "SQUARED": None,                  # symbols, not text
    "MODIFIER": None,                 # MODIFIER LETTER … (phonetic and tone letters of several scripts)
    "COMBINING": None,                # marks every script shares (inherited script)
}
_WIDTH_PREFIXES = ("FULLWIDTH", "HALFWIDTH")  # FULLWIDTH LATIN SMALL LETTER F, HALFWIDTH KATAKANA LETTER A


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """The script of one character, upper case as Unicode names it ('LATIN', 'HAN', 'HIRAGANA',
    'KATAKANA', 'HANGUL', 'THAI', 'ARABIC', 'DEVANAGARI', 'CYRILLIC', 'GREEK', 'HEBREW', …), or None
    for a character that is not a letter or a script's own mark (digits, punctuation, spaces,
    symbols, unnamed code points). ValueError when `ch` is not one character."""
    if len(ch) != 1:
        raise ValueError(f"char_script takes one character, got {len(ch)}")
    if unicodedata.category(ch)[0] not in "LM":
        return None
    words = unicodedata.name(ch, "").split()
    if not words:
        return None
    if words[0] in _WIDTH_PREFIXES and len(words) > 1:
        words = words[1:]
    first = words[0]
    if first in _ALIASES:
        return _ALIASES[first]
    return first


def script_counts(text: object) -> Counter:
    """How many characters of each script `text` has (`char_script`; characters without a script
    are not counted). An empty Counter for a non-string or a text without letters."""
    if not isinstance(text, str):
        return Counter()
    counts: Counter = Counter()
    for ch in text:
        script = char_script(ch)
        if script is not None:
            counts[script] += 1
    return counts


def dominant_script(text: object) -> str | None:
    """The script with the most characters in `text` (ties: alphabetical), None without letters.
    Japanese is counted by its parts: a sentence of kanji and kana is 'HAN', 'HIRAGANA' or
    'KATAKANA', whichever has the most characters."""
    counts = script_counts(text)
    if not counts:
        return None
    return min(counts, key=lambda s: (-counts[s], s))


def non_latin_share(text: object) -> float:
    """The share of `text`'s script characters that are not Latin, 0.0 for a text without letters."""
    counts = script_counts(text)
    total = sum(counts.values())
    return 0.0 if not total else (total - counts.get(LATIN, 0)) / total


def non_latin_script(text: object) -> str | None:
    """The most frequent script of `text` other than Latin (ties: alphabetical), None when it has
    only Latin letters or none. Japanese kanji and kana are each their own script here."""
    counts = script_counts(text)
    counts.pop(LATIN, None)
    return min(counts, key=lambda s: (-counts[s], s)) if counts else None


MOSTLY = 0.5  # share of non-Latin letters from which a text counts as written in another script


def mostly_non_latin(text: object, share: float = MOSTLY) -> bool:
    """True when at least `share` of the letters of `text` are of a script other than Latin: the
    paraphrase filter's route to the multilingual model (an English question quoting one Greek
    letter or a Chinese name stays English; a Chinese question with an English unit is Chinese)."""
    return non_latin_share(text) >= share and bool(script_counts(text))


__all__ = ["LATIN", "MOSTLY", "char_script", "dominant_script", "mostly_non_latin", "non_latin_script", "non_latin_share",
           "script_counts"]
