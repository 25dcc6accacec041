"""One text normalization for every comparison the curation filters make.

Exact dedup, near-duplicate MinHash, n-gram contamination and the short-item whole-text match all
compare texts after `normalize_text`, on both sides, so a copy that differs only in formatting
(case, punctuation, spacing, unicode forms, Latin accents, entities, invisible characters,
look-alike letters, digit scripts, LaTeX spellings, how a number is written) is still a copy, while
what carries meaning (marks of non-Latin scripts, operators and signs, decimal points) is kept.
docs/normalization.md tells the story with examples; the rules, in order:

1. HTML entities decoded (`AT&amp;T` → `AT&T`, `&lt;` → `<`, `&#39;` → `'`), one pass.
2. LaTeX spellings of one thing made one: `\\dfrac`/`\\tfrac`/`\\cfrac` → `\\frac`; sizing and
   style commands (`\\left`, `\\right`, `\\big`, `\\displaystyle`, ...) and font commands (`\\text`,
   `\\mathrm`, ...) dropped; `\\le(q)`, `\\ge(q)`, `\\ne(q)`, `\\lt`, `\\gt`, `\\times`, `\\cdot`,
   `\\div`, `\\pm` become the signs they print.
3. Invisible format characters deleted, not made spaces (unicode category Cf: soft hyphen, zero-width
   space/joiners, BOM, word joiner; and the variation selectors), so `photo\\u00ADsynthesis` is one word.
4. Superscript digits and signs become an exponent (`x²` → `x^2`, `m⁻¹` → `m^-1`), then NFKC
   (full-width forms, ligatures, other compatibility characters become plain ones).
5. Look-alike letters of Cyrillic and Greek in Latin text become the Latin letter (a compact table
   of Unicode TR39 confusables, `CONFUSABLES`): in a text whose only Cyrillic/Greek letters are
   look-alikes, all of them (`Whаt is thе` → `What is the`); in a text with real Cyrillic or Greek,
   only in words that mix Latin letters and look-alikes (`раураl` → `paypal`), so Russian and Greek
   text keep their letters in any case.
6. Casefold.
7. Accents of Latin letters dropped (NFKD, combining marks after a Latin letter removed, NFC):
   `café` = `cafe`; marks of other scripts are kept, because there they make the letter
   (Japanese `が` ≠ `か`, Thai tone and vowel marks, Devanagari matras, Hebrew points).
8. Digits of every script become ASCII digits (`٣`, `३`, `৩` → `3`), and the Arabic decimal and
   thousands separators (U+066B, U+066C) `.` and `,` (`٣٫٥` → `3.5`); every dash-like minus
   (`−` U+2212, `‐` U+2010, `‑`, `‒`, `–` en dash, `﹣`) becomes `-`; `⋅`/`∙` become `×`, `÷`,
   `∕`, `⁄` become `/`;
   `<=`, `>=`, `!=` become `≤`, `≥`, `≠`.
9. Numbers written one way: thousands separators removed when they group correctly ("1,000" and
   "1000"), trailing zeros of a decimal dropped ("2.50" → "2.5", "3.0" → "3"). Linear time.
10. Operators and comparison signs (`+ - = < > ≤ ≥ ≠ ± × / ^`; `÷` is `/`, and `*` between
    numbers is `×`) are kept as words of their own ("2+2=4" and "2 + 2 = 4" agree; "9 > 4" ≠
    "9 < 4"; "12 - 5" ≠ "12 + 5"; "6 / 3" ≠ "6 * 3"); a hyphen between two letters is a word break
    (`well-known` = `well known`); a decimal point between digits is kept (`3.5` ≠ `35` ≠ `3 5`);
    every other punctuation and symbol character (unicode P*, S*) becomes a space.
11. Scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) are split
    into one word per character (with its marks), so word n-grams, edit keys and shingles work on
    them as on spaced text.
12. Whitespace squeezed to single spaces, no leading or trailing space.

Pure and deterministic (no locale, no process-salted hashing); `normalize_text(normalize_text(x))`
equals `normalize_text(x)`; linear time in the length of the input.
"""

from __future__ import annotations

import html
import re
import unicodedata

# ---- tables -------------------------------------------------------------------------------------

# Unicode TR39 confusables (confusables.txt, "MA" prototypes) restricted to the Cyrillic and Greek
# letters whose prototype is one Latin letter and that are not used alone as symbols in science
# (Greek α, β, γ, μ, ν, ρ, τ, χ are variables and units: `μm` is not `mm`, so they are not here;
# omicron, which is never a symbol, is). Capital letters map to capital Latin letters before
# casefolding (Cyrillic `Н` looks like `H`, its small letter `н` like nothing Latin).
CONFUSABLES = {
    # Cyrillic small
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i",
    "ј": "j", "ԁ": "d", "ӏ": "l", "ԛ": "q", "ԝ": "w", "һ": "h", "ү": "y",
    # Cyrillic capital
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Һ": "H",
    "Ӏ": "I",
    # Greek
    "ο": "o", "Ο": "O", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K",
    "Μ": "M", "Ν": "N", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "զ": "q", "Օ": "O", "Ս": "U",
}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLES)
_CONFUSABLE_RE = re.compile("[" + "".join(sorted(CONFUSABLES)) + "]")
_WORD_RE = re.compile(r"[^\W\d_]+")

OPERATORS = "+-=<>≤≥≠±×/^"
_DASHES = "\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d\u2796"  # all read as the minus sign "-"
_TIMES = "\u22c5\u2219"  # dot operator, bullet operator → ×
_DIVIDES = "÷\u2215\u2044"  # division sign, division slash, fraction slash → /
_ARABIC_SEPARATORS = {"\u066b": ".", "\u066c": ","}  # Arabic decimal and thousands separators (٣٫٥ = 3.5)
# Superscript digits and signs: an exponent, written `^` before NFKC would make `x²` the word `x2`
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
_SUPERSCRIPT_RE = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")

# Latin letters (after casefold), for rule 7; the marks that decorate them in NFKD text
_LATIN_LETTERS = ("a-z\u00aa\u00ba\u00df-\u00f6\u00f8-\u00ff\u0100-\u024f\u0250-\u02af\u1d00-\u1dbf"
                  "\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f")
_LATIN_MARKS_RE = re.compile(
    f"(?<=[{_LATIN_LETTERS}])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def _char_class(code_points) -> str:
    """A regex character class body for a sorted iterable of code points (ranges compressed)."""
    parts, start, prev = [], None, None
    for cp in code_points:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            parts.append((start, prev))
            start = prev = cp
    if start is not None:
        parts.append((start, prev))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in parts)


# Scripts written without spaces between words (rule 11): blocks, split into bases and marks
_NO_SPACE_BLOCKS = ((0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF),
                    (0x3041, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
                    (0x20000, 0x3134F))


def _no_space_classes() -> tuple[str, str]:
    bases, marks = [], []
    for lo, hi in _NO_SPACE_BLOCKS:
        for cp in range(lo, hi + 1):
            cat = unicodedata.category(chr(cp))
            if cat[0] == "M":
                marks.append(cp)
            elif cat[0] == "L":
                bases.append(cp)
    return _char_class(bases), _char_class(marks)


_NS_BASE, _NS_MARK = _no_space_classes()
_NO_SPACE_RE = re.compile(f"[{_NS_BASE}][{_NS_MARK}]*")
_NO_SPACE_ANY_RE = re.compile(f"[{_NS_BASE}]")

# LaTeX spellings (rule 2)
_LATEX_RULES = (
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\(?:left|right|middle)\s*\.(?!\d)"), " "),
    (re.compile(r"\\(?:left|right|middle|[bB]ig{1,2}[lrm]?|displaystyle|textstyle|scriptstyle|limits|nolimits|"
                r"text(?:rm|bf|it|sf|tt|normal|up)?|math(?:rm|bf|it|sf|tt|bb|cal|normal)|operatorname|"
                r"boldsymbol|mbox|hbox|bm|emph)(?![A-Za-z])\s*"), ""),
    (re.compile(r"\\(?:leqslant|leq|le)(?![A-Za-z])"), "≤"),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![A-Za-z])"), "≥"),
    (re.compile(r"\\(?:neq|ne)(?![A-Za-z])"), "≠"),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\(?:times|cdot)(?![A-Za-z])"), "×"),
    (re.compile(r"\\div(?![A-Za-z])"), "÷"),
    (re.compile(r"\\frac\s*([0-9])\s*([0-9])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\(?:lbrace|\{)"), "{"),
    (re.compile(r"\\(?:rbrace|\})"), "}"),
    (re.compile(r"\\(?:[lr]?vert|mid)(?![A-Za-z])"), "|"),
    (re.compile(r"\\(?:ldots|cdots|dots)(?![A-Za-z])"), "..."),
    (re.compile(r"\\(?:to|rightarrow)(?![A-Za-z])"), "→"),
    (re.compile(r"\\pm(?![A-Za-z])"), "±"),
    (re.compile(r"\\[,;:! ]"), " "),
)


def fold_latex(text: str) -> str:
    """Rule 2: one spelling for LaTeX commands that print the same thing."""
    for pattern, replacement in _LATEX_RULES:
        text = pattern.sub(replacement, text)
    return text


class _CodePointMap(dict):
    """A `str.translate` table filled on first sight of each code point by `rule(char)`, so the
    per-character work runs in C after the first time a character is seen (a few thousand distinct
    characters in practice). `rule` returns the replacement (code point or string), or None to delete."""

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, code_point: int):
        value = self._rule(chr(code_point))
        self[code_point] = value
        return value


def _invisible(ch: str) -> int | None:
    """Rule 3: format characters (Cf) and variation selectors are deleted."""
    cp = ord(ch)
    if unicodedata.category(ch) == "Cf" or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
        return None
    return cp


def _fold_char(ch: str) -> int | str:
    """Rule 8: digits of every script → ASCII; minus-like dashes → "-"; dot operators → ×."""
    if ch in _DASHES:
        return "-"
    if ch in _TIMES:
        return "×"
    if ch in _DIVIDES:
        return "/"
    if ch in _ARABIC_SEPARATORS:
        return _ARABIC_SEPARATORS[ch]
    if unicodedata.category(ch) == "Nd":
        return str(unicodedata.digit(ch))
    return ord(ch)


def _separator(ch: str) -> int | str:
    """Rule 10: operators become words of their own, "-" and "." wait for their context rule, every
    other P/S/Z/C character becomes a space."""
    if ch in OPERATORS and ch != "-":
        return f" {ch} "
    if ch in "-.":
        return ch
    return 32 if unicodedata.category(ch)[0] in "PSZC" else ord(ch)


_INVISIBLE = _CodePointMap(_invisible)
_FOLD = _CodePointMap(_fold_char)
_SEPARATORS = _CodePointMap(_separator)


def _ascii_table(rule) -> bytes:
    """A 256-byte `bytes.translate` table: rule(byte) for the 128 ASCII bytes (others unchanged)."""
    return bytes(rule(chr(b)) for b in range(128)) + bytes(range(128, 256))


# ASCII text without any character that a context rule decides (below): one bytes.translate
# lower-cases and maps P/S/Z/C characters to spaces
_ASCII_FOLD = _ascii_table(lambda ch: 32 if unicodedata.category(ch)[0] in "PSZC" else ord(ch.lower()))
# the ASCII characters that send a text to the full path: entities, LaTeX, operators, and a
# digit-[,.]-digit run (the number rules and the kept decimal point), found by a class-mapped copy
_ASCII_CLASS = _ascii_table(lambda ch: 48 if ch.isdigit() else 44 if ch in ",." else 33 if ch in "&\\+-=<>/^*" else 32)

# ---- numbers (rule 9), linear: each maximal run is looked at once -------------------------------

# a maximal run of digits and separators that starts a number and has a "," (resp. a "." after its
# first digits); the lookbehind lets a match start only where a run starts: linear time
_NUM_RUN_RE = re.compile(r"[0-9](?<![0-9,.][0-9])[0-9.]*+,[0-9,.]*+")
_DEC_RUN_RE = re.compile(r"[0-9](?<![0-9.][0-9])[0-9]*+\.[0-9.]*+")
_NUMBER_PUNCT_RE = re.compile(r"[0-9][,.][0-9]")


def _thousands(match: re.Match) -> str:
    run = match.group(0)
    head, dot, rest = run.partition(".")
    core = head.rstrip(",")
    # grouped by three: k commas, each 4 characters from the next one or the end, 1-3 digits first
    # (core holds only digits and commas); C-level slicing, no backtracking regex
    k = core.count(",")
    if k and 1 <= len(core) - 4 * k <= 3 and core[-4::-4][:k] == "," * k:
        head = core.replace(",", "") + head[len(core):]
    return head + dot + rest


def _decimal(match: re.Match) -> str:
    run = match.group(0)
    core = run.rstrip(".")
    whole, dot, fraction = core.partition(".")
    if not dot or not fraction or "." in fraction:  # not digits.digits
        return run
    fraction = fraction.rstrip("0")
    return (f"{whole}.{fraction}" if fraction else whole) + run[len(core):]


def number_rules(value: str) -> str:
    """Rule 9 on ASCII digits: "1,000" → "1000" (groups of three only), "2.50" → "2.5", "3.0" → "3"."""
    if not _NUMBER_PUNCT_RE.search(value):
        return value
    if "," in value:
        value = _NUM_RUN_RE.sub(_thousands, value)
    if "." in value:
        value = _DEC_RUN_RE.sub(_decimal, value)
    return value


# ---- the context rules of rule 10 ---------------------------------------------------------------

_TIMES_STAR_RE = re.compile(r"(?:(?<=[0-9])|(?<=[0-9] ))\*(?= ?[0-9])")
_WORD_HYPHEN_RE = re.compile(r"-(?<=[^\W\d_]-)(?=[^\W\d_])")
_DIGIT_DOT_RE = re.compile(r"[0-9]\.[0-9]")
_LONE_DOT_RE = re.compile(r"\.(?:(?<![0-9]\.)|(?![0-9]))")


_LATIN_CHAR_RE = re.compile(f"[{_LATIN_LETTERS}A-Z\u00c0-\u00d6\u00d8-\u00de]")


def _distinct_letters() -> str:
    """Cyrillic, Greek and Armenian letters that look like no Latin letter (not in CONFUSABLES)."""
    ranges = ((0x0370, 0x03FF), (0x1F00, 0x1FFF), (0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF),
              (0xA640, 0xA69F), (0x0530, 0x058F))
    return _char_class(cp for lo, hi in ranges for cp in range(lo, hi + 1)
                       if unicodedata.category(chr(cp))[0] == "L" and chr(cp) not in CONFUSABLES)


_DISTINCT_RE = re.compile(f"[{_distinct_letters()}]")


def _skeleton_word(match: re.Match) -> str:
    word = match.group(0)
    if not _CONFUSABLE_RE.search(word) or not _LATIN_CHAR_RE.search(word):
        return word
    mapped = word.translate(_CONFUSABLE_TABLE)
    # a Latin word with look-alikes typed into it: every letter Latin once they are mapped
    return mapped if all(ch.isascii() or _LATIN_CHAR_RE.match(ch) for ch in mapped) else word


def confusable_skeleton(value: str) -> str:
    """Rule 5 (on NFKC text, before casefolding). A text whose only Cyrillic/Greek letters are
    look-alikes is Latin text retyped: every look-alike becomes its Latin letter. A text with real
    Cyrillic or Greek (a letter that looks like no Latin letter) is left as it is, except its
    words that mix Latin letters and look-alikes. Both decisions are the same before and after
    the mapping, so the rule is idempotent, and Russian or Greek text is never mapped, whatever
    its case."""
    if not _CONFUSABLE_RE.search(value):
        return value
    if not _DISTINCT_RE.search(value):
        return value.translate(_CONFUSABLE_TABLE)
    return _WORD_RE.sub(_skeleton_word, value)


def _full(value: str) -> str:
    """Rules 1-12 (the path for text that is not plain ASCII prose)."""
    if "&" in value:
        value = html.unescape(value)
    if "\\" in value:
        value = fold_latex(value)
    if value.isascii():  # rules 3-8 are the identity on ASCII but for case
        value = value.lower()
    else:
        value = value.translate(_INVISIBLE)
        if _SUPERSCRIPT_RE.search(value):
            value = _SUPERSCRIPT_RE.sub(lambda m: "^" + m.group(0).translate(_SUPERSCRIPTS), value)
        value = unicodedata.normalize("NFKC", value)
        value = confusable_skeleton(value)
        value = value.casefold()
        value = unicodedata.normalize("NFKD", value)
        value = _LATIN_MARKS_RE.sub("", value)
        value = unicodedata.normalize("NFC", value)
        value = value.translate(_FOLD)
    if "=" in value:
        value = value.replace("<=", "≤").replace(">=", "≥").replace("!=", "≠")
    value = number_rules(value)
    if "*" in value:  # an asterisk between numbers multiplies; elsewhere it is markdown or a footnote
        value = _TIMES_STAR_RE.sub("×", value)
    value = value.translate(_SEPARATORS)
    if "-" in value:
        value = _WORD_HYPHEN_RE.sub(" ", value).replace("-", " - ")
    if "." in value:
        value = _LONE_DOT_RE.sub(" ", value) if _DIGIT_DOT_RE.search(value) else value.replace(".", " ")
    if not value.isascii() and _NO_SPACE_ANY_RE.search(value):
        value = _NO_SPACE_RE.sub(r" \g<0> ", value)
    return " ".join(value.split())


def normalize_text(text: object) -> str:
    """The comparison form of `text` (see the module docstring); None → "".

    ASCII input without `& \\ + - = < >` and without a digit-[,.]-digit run (most of the benchmark
    mirror's texts) skips every rule that needs context: one `bytes.translate` lower-cases and maps
    separators to spaces. Output identical to the full path on such text (unit-tested against a
    rule-by-rule reference on the mirror's records and on random text).
    """
    if text is None:
        return ""
    value = str(text)
    if value.isascii():
        raw = value.encode("ascii")
        classes = raw.translate(_ASCII_CLASS)
        if b"!" not in classes and b"0,0" not in classes:
            return b" ".join(raw.translate(_ASCII_FOLD).split()).decode("ascii")
    return _full(value)


# what sends an ASCII string past the Arrow fast path of `normalize_array` (the rules of the fast
# path of `normalize_text`, as one regex)
_ARROW_SLOW_RE = r"\d[,.]\d|[-+=<>&\\/^*]"


def normalize_array(values) -> list[str]:
    """`normalize_text` of every value of a string array (pyarrow Array/ChunkedArray, or a sequence
    of str/None), as a list of str ("" for None): the same output, most of it computed by Arrow's
    compute kernels in C for the whole array instead of per value in Python.

    Arrow takes the ASCII values that `normalize_text`'s fast path takes (no `& \\ + - = < >`, no
    digit-[,.]-digit run): lower case, every run of characters other than a-z and 0-9 made one
    space, trimmed — exactly that fast path, since an ASCII character is a letter, a digit, or of a
    category that becomes a space (P, S, Z, C). The rest go through `normalize_text` one by one.
    Unit-tested against it on the benchmark mirror's strings.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], pa.string())
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return [normalize_text(v) for v in array.to_pylist()]
    fast = pc.and_kleene(pc.string_is_ascii(array), pc.invert(pc.match_substring_regex(array, _ARROW_SLOW_RE)))
    folded = pc.utf8_trim(pc.replace_substring_regex(pc.ascii_lower(array), r"[^a-z0-9]+", " "), " ")
    out = folded.to_pylist()
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(fast, True))).to_pylist():
        out[i] = normalize_text(array[i].as_py())
    return [v if v is not None else "" for v in out]


def normalized_words(text: object) -> list[str]:
    """`normalize_text(text)` split into words."""
    return normalize_text(text).split()
