"""The shared normalization (udfs/textnorm.py): its rules, idempotence, and that the fast path (ASCII
shortcut, translate tables, number pre-scan) gives exactly what the plain rule-by-rule definition
gives, on every string of the benchmark mirror and on random unicode."""

from __future__ import annotations

import html
import json
import random
import re
import unicodedata

import pytest

from udfs import textnorm
from udfs.textnorm import normalize_text, normalized_words

_GROUPED = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,]*\d)")
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]*\d)")
_LATIN = re.compile(f"[{textnorm._LATIN_LETTERS}]")
_NO_SPACE_BASE = re.compile(f"[{textnorm._NS_BASE}]")
_NO_SPACE_MARK = re.compile(f"[{textnorm._NS_MARK}]")
_LATIN_MARK = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_DASHES = "\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d\u2796"


def reference(text) -> str:
    """The module docstring's rules, one after the other, character by character (the old,
    quadratic-on-long-runs number regexes included: they define rule 9)."""
    if text is None:
        return ""
    value = str(text)
    value = html.unescape(value) if "&" in value else value
    value = textnorm.fold_latex(value) if "\\" in value else value
    value = "".join(ch for ch in value if unicodedata.category(ch) != "Cf" and not 0xFE00 <= ord(ch) <= 0xFE0F
                    and not 0xE0100 <= ord(ch) <= 0xE01EF)
    value = re.sub("[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+", lambda m: "^" + "".join("0123456789+-"["⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻".index(c)] for c in m.group(0)),
                   value)  # superscripts are an exponent
    value = unicodedata.normalize("NFKC", value)
    value = textnorm.confusable_skeleton(value).casefold()
    decomposed, out = unicodedata.normalize("NFKD", value), []
    for ch in decomposed:  # a Latin accent: a combining mark after a Latin letter (or its marks)
        if _LATIN_MARK.match(ch) and out and _LATIN.match(out[-1]):
            continue  # (the marks already dropped leave the letter last)
        out.append(ch)
    value = unicodedata.normalize("NFC", "".join(out))
    value = "".join("-" if ch in _DASHES else "×" if ch in "\u22c5\u2219" else "/" if ch in "÷\u2215\u2044" else
                    "." if ch == "\u066b" else "," if ch == "\u066c" else
                    str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in value)
    value = value.replace("<=", "≤").replace(">=", "≥").replace("!=", "≠")
    value = _GROUPED.sub(lambda m: m.group(0).replace(",", ""), value)
    value = _DECIMAL.sub(lambda m: f"{m.group(1)}.{m.group(2).rstrip('0')}".rstrip("."), value)
    stars = []  # an asterisk with a digit on each side (one space between allowed) multiplies
    for i, ch in enumerate(value):
        left = value[i - 1] if i and value[i - 1] != " " else (value[i - 2] if i > 1 else "")
        right = value[i + 1] if i + 1 < len(value) and value[i + 1] != " " else (
            value[i + 2] if i + 2 < len(value) else "")
        stars.append("×" if ch == "*" and left.isdigit() and left.isascii() and right.isdigit() and right.isascii()
                     else ch)
    value = "".join(stars)
    letter = lambda c: bool(c) and (c.isalnum() and not c.isdecimal())  # noqa: E731  (a word character, no digit)
    pieces = []
    for i, ch in enumerate(value):
        before, after = value[i - 1] if i else "", value[i + 1] if i + 1 < len(value) else ""
        if ch in "+=<>≤≥≠±×/^":
            pieces.append(f" {ch} ")
        elif ch == "-":
            pieces.append(" " if letter(before) and letter(after) else " - ")
        elif ch == ".":
            pieces.append("." if before.isdigit() and after.isdigit() else " ")
        elif unicodedata.category(ch)[0] in "PSZC":
            pieces.append(" ")
        else:
            pieces.append(ch)
    value, out, i = "".join(pieces), [], 0
    while i < len(value):  # a no-space base character and the marks after it: one word
        j = i + 1
        if _NO_SPACE_BASE.match(value[i]):
            while j < len(value) and _NO_SPACE_MARK.match(value[j]):
                j += 1
            out.append(f" {value[i:j]} ")
        else:
            out.append(value[i])
        i = j
    return " ".join("".join(out).split())


@pytest.mark.parametrize("raw, expected", [
    ("Hello,   World!", "hello world"),
    ("Ｆｕｌｌ－ｗｉｄｔｈ", "full width"),
    ("Café au lait", "cafe au lait"),
    ("ﬁnal ①", "final 1"),
    ("$1,000.50 and 1,000", "1000.5 and 1000"),  # a decimal point between digits is kept
    ("3.0 vs 3.10 vs 2.50", "3 vs 3.1 vs 2.5"),
    ("12,34 is not grouped", "12 34 is not grouped"),
    ("2+2=4", "2 + 2 = 4"),  # operators are words of their own
    ("STRASSE straße", "strasse strasse"),
    ("tab\tnew\nline\u00a0nbsp", "tab new line nbsp"),
    ("", ""),
    (None, ""),
])
def test_rules(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_words():
    assert normalized_words("It's a (small) world.") == ["it", "s", "a", "small", "world"]


def _mirror_strings(mirror, per_file: int = 400) -> list[str]:
    """Every string of the first `per_file` records of every dataset and split of the mirror."""
    strings = []

    def walk(value):
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted(mirror.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                walk(json.loads(line))
    return strings


def test_equals_the_rule_by_rule_definition_on_the_mirror(mirror):
    strings = _mirror_strings(mirror)
    assert len(strings) > 20000
    mismatches = [s for s in strings if normalize_text(s) != reference(s)]
    assert not mismatches, mismatches[:3]


def test_equals_the_rule_by_rule_definition_on_random_unicode():
    rng = random.Random(11)
    pool = [chr(c) for c in range(0x20, 0x3000) if not 0xD800 <= c < 0xE000]
    pool += list("0123456789,.,. -+=<>&;#") * 40 + ["ﬁ", "①", "²", "Ⅻ", "１", "，", "\u0301", "\u200b", "\t", "ß", "İ",
                                                     "が", "か", "\u3099", "ส", "\u0e31", "\u0e48", "日", "а", "о", "Н",
                                                     "ο", "٣", "३", "\u2212", "\u2013", "\u00ad", "\ufeff", "amp", "lt"]
    for _ in range(30000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(0, 24)))
        assert normalize_text(s) == reference(s), repr(s)


def test_normalize_array_equals_normalize_text_on_the_mirror_and_random_text(mirror):
    import pyarrow as pa

    from udfs.textnorm import normalize_array

    rng = random.Random(5)
    ascii_pool = [chr(c) for c in range(0, 128)] + list("0123456789,.,. ") * 10
    unicode_pool = ascii_pool + ["é", "ﬁ", "①", "１", "，", "\u0301", "\u00a0", "ß", "İ", "日"]
    randoms = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
               for pool in (ascii_pool, unicode_pool) for _ in range(5000)]
    strings = [*_mirror_strings(mirror), *randoms, None, "", "   ", "1,000.50", "\x1c\x1f", "A\u00a0B"]
    expected = [normalize_text(s) for s in strings]
    assert normalize_array(strings) == expected
    chunked = pa.chunked_array([pa.array(strings[:100], pa.string()), pa.array(strings[100:], pa.string())])
    assert normalize_array(chunked) == expected
    assert normalize_array(pa.array([], pa.string())) == [] and normalize_array([None]) == [""]
