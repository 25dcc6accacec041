"""Parse and validate model output: pure functions from raw response text to typed records.

Real endpoints do not always honour `response_format`: they wrap JSON in prose or code fences,
leave trailing commas, use Python-style quotes, get cut off at max_tokens, answer with a letter
instead of the option text, or write "$1,000.00" for 1000. Everything here is tolerant where the
intent is unambiguous and strict where guessing could change the meaning. What cannot be used
raises `ParseError` or `ValidationError` with a short machine `reason` (the quarantine reason) and a
human `detail`; the caller keeps the raw text, so it can be re-parsed later without a new call.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT, default_label_set

# Length bounds (characters). Generous: they catch runaway or degenerate output, not style.
MAX_QUESTION_CHARS = 4_000
MAX_CONTEXT_CHARS = 20_000
MAX_CHOICE_CHARS = 1_000
MAX_ANSWER_CHARS = {SHORT_TEXT: 300, NUMERIC: 100, FREEFORM: 8_000, CODE: 20_000}
DEFAULT_MAX_ANSWER_CHARS = 1_000
MIN_QUESTION_CHARS = 3


class OutputRejected(ValueError):
    """Base of both failure kinds: `reason` is the machine reason stored in quarantine."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ParseError(OutputRejected):
    """No usable JSON object in the text (reasons: empty, truncated (cut off inside a reasoning
    block), no_json, truncated_json, invalid_json, not_an_object, no_final_answer)."""


class ValidationError(OutputRejected):
    """A JSON object that does not make a valid item (reasons: missing_field, wrong_type,
    empty_question, too_long, same_as_seed, wrong_choice_count, duplicate_choices,
    answer_not_in_choices, not_boolean, label_not_in_set, not_a_number, empty_answer)."""


@dataclass(frozen=True)
class GeneratedItem:
    question: str
    context: str | None
    choices: list[str] | None
    answer_index: int | None
    answer_text: str
    answer_format: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Enrichment:
    knowledge: str
    reasoning: str
    final_answer_raw: str
    final_answer: str | None  # normalized per format; None when the raw answer does not fit the format
    final_answer_index: int | None  # mcq (and boolean/label with choices): index into the item's choices

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reasoning blocks ------------------------------------------------------------------------

# Tags reasoning models wrap their drafts in: DeepSeek-R1 / QwQ / Qwen3 (`think`), Claude-style
# prompts (`thinking`), and prompts asking for `<reasoning>` or `<thought>` sections.
_REASONING_TAGS = r"think|thinking|thought|reasoning"
# An opening tag starts the output or a line (a tag named inside a JSON string is not a block).
_OPEN_REASONING_RE = re.compile(rf"(?:^|\n)[ \t\ufeff]*<({_REASONING_TAGS})(?:\s[^<>]*)?>", re.IGNORECASE)
_CLOSE_REASONING_RE = re.compile(rf"</({_REASONING_TAGS})\s*>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """The answer part of a reasoning model's output: everything after the last closing
    `</think>` (or `</thinking>`, `</thought>`, `</reasoning>`).

    Chat templates of R1-style models open the block themselves, so the output may hold only the
    closing tag: what precedes it is a draft either way. An opening tag left without its closing
    tag means the output was cut off inside the block (max_tokens while thinking): drafts in it
    are not answers, so that raises `ParseError("truncated")` instead of parsing a draft.
    """
    closes = list(_CLOSE_REASONING_RE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _OPEN_REASONING_RE.search(text)
    if opened:
        raise ParseError("truncated", f"output ends inside an unclosed <{opened.group(1)}> block")
    return text


# --- plain text of an answer: LaTeX and markdown -----------------------------------------------

# Commands whose (last) argument is the text: \boxed{..}, \text{..}, \mathbf{..}, ...
_UNWRAP_COMMANDS = frozenset({
    "boxed", "fbox", "framebox", "text", "textbf", "textit", "textrm", "textsf", "texttt", "textnormal",
    "textup", "emph", "mbox", "hbox", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mathnormal",
    "mathbb", "mathcal", "operatorname", "boldsymbol", "bm", "pmb", "underline", "displaylines",
})
_FRAC_COMMANDS = frozenset({"frac", "dfrac", "tfrac", "cfrac", "nicefrac"})
_THIN = "\u2009"  # \, \: \; \  ~ : a space, or nothing between digit groups (9\,500)
_NEG = "\u200b"  # \! : nothing
_SPACE_COMMANDS = {",": _THIN, ":": _THIN, ";": _THIN, " ": _THIN, "thinspace": _THIN, "enspace": " ",
                   "quad": " ", "qquad": " ", "!": _NEG, "negthinspace": _NEG, "\\": " ", "newline": " "}
_DROP_COMMANDS = frozenset({
    "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr",
    "displaystyle", "textstyle", "scriptstyle", "limits", "nolimits", "(", ")", "[", "]", "middle",
})
_SYMBOL_COMMANDS = {
    "$": "$", "%": "%", "&": "&", "#": "#", "_": "_", "{": "{", "}": "}", "lbrace": "{", "rbrace": "}",
    "times": "×", "cdot": "·", "div": "÷", "pm": "±", "mp": "∓", "pi": "π", "infty": "∞",
    "circ": "°", "degree": "°", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠",
    "approx": "≈", "sim": "~", "dots": "...", "ldots": "...", "cdots": "...", "colon": ":",
    "to": "→", "rightarrow": "→", "Rightarrow": "⇒", "implies": "⇒", "lt": "<", "gt": ">",
    "langle": "⟨", "rangle": "⟩", "vert": "|", "mid": "|", "cdotp": "·", "ast": "*", "prime": "'",
}
_COMMAND_RE = re.compile(r"\\([A-Za-z]+)\*?|\\(.)", re.DOTALL)
_SIMPLE_NUMBER_RE = re.compile(r"[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)")


def _group(text: str, i: int) -> tuple[str, int]:
    """The argument starting at text[i] (after spaces): a braced group with nested braces, a
    command, or one character. Returns (argument text, index after it); ("", i) at the end."""
    n = len(text)
    while i < n and text[i] in " \t\n":
        i += 1
    if i >= n:
        return "", i
    if text[i] == "{":
        depth = 0
        j = i
        while j < n:
            c = text[j]
            if c == "\\":
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j], j + 1
            j += 1
        return text[i + 1:], n  # never closes: the rest
    if text[i] == "\\":
        match = _COMMAND_RE.match(text, i)
        return (match.group(0), match.end()) if match else ("", i + 1)  # a lone final backslash
    return text[i], i + 1


def _fraction(num: str, den: str) -> str:
    num, den = num.strip(), den.strip()
    if _SIMPLE_NUMBER_RE.fullmatch(num) and _SIMPLE_NUMBER_RE.fullmatch(den):
        return f"{num}/{den}"
    return f"({num})/({den})"


_MAX_LATEX_DEPTH = 32  # nesting deeper than any real answer is left as it is


def _latex(text: str, depth: int = 0) -> str:
    if depth > _MAX_LATEX_DEPTH:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            match = _COMMAND_RE.match(text, i)
            if match is None:  # a lone trailing backslash
                i += 1
                continue
            name = match.group(1) or match.group(2)
            i = match.end()
            if name in _UNWRAP_COMMANDS:
                arg, i = _group(text, i)
                out.append(_latex(arg, depth + 1))
            elif name in ("textcolor", "colorbox"):
                _, i = _group(text, i)
                arg, i = _group(text, i)
                out.append(_latex(arg, depth + 1))
            elif name == "color":
                _, i = _group(text, i)
            elif name in _FRAC_COMMANDS:
                num, i = _group(text, i)
                den, i = _group(text, i)
                fraction = _fraction(_latex(num, depth + 1), _latex(den, depth + 1))
                if out and out[-1][-1:].isdigit() and "(" not in fraction:
                    out.append(" ")  # 2\frac{1}{2}: a mixed number
                out.append(fraction)
            elif name == "sqrt":
                index = ""
                if text[i:i + 1] == "[":
                    close = text.find("]", i)
                    index, i = (text[i + 1:close], close + 1) if close != -1 else ("", i)
                arg, i = _group(text, i)
                out.append(f"sqrt[{_latex(index, depth + 1)}]({_latex(arg, depth + 1)})" if index else f"sqrt({_latex(arg, depth + 1)})")
            elif name in _SPACE_COMMANDS:
                out.append(_SPACE_COMMANDS[name])
            elif name in _DROP_COMMANDS:
                if name in ("left", "right", "middle") and text[i:i + 1] == ".":
                    i += 1  # \left. : an invisible delimiter
            elif name in _SYMBOL_COMMANDS:
                out.append(_SYMBOL_COMMANDS[name])
            else:
                out.append("\\" + name)  # unknown command: kept, so the result is not "a number"
        elif c == "{":
            arg, i = _group(text, i)
            out.append(_latex(arg, depth + 1))
        elif c == "}":
            i += 1
        elif c == "^":
            arg, i = _group(text, i + 1)
            power = _latex(arg, depth + 1).strip()
            out.append("°" if power in ("°", "o") else "^" + (power if len(power) <= 1 else f"({power})"))
        elif c == "~":
            out.append(_THIN)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_DIGIT_GROUP_GAP_RE = re.compile(rf"(?<=\d)[{_THIN}{_NEG}](?=\d{{3}}(?!\d))")
_TIMES_TEN_RE = re.compile(r"(\d(?:[\d.]*\d)?)\s*[×·*]\s*10\s*\^\s*\(?\s*([-+\u2212]?\d+)\s*\)?")
_POWER_OF_TEN_RE = re.compile(r"(?<![\d.^])10\s*\^\s*\(?\s*([-+\u2212]?\d+)\s*\)?")
_LATEX_CHARS = frozenset("\\${}^~")


def latex_to_text(text: str | None) -> str:
    """LaTeX in a model's answer turned into plain text, so it can be matched as a number, an
    option, a label or yes/no.

    `\\boxed{}`/`\\fbox{}` (nested braces included), `\\text{}`/`\\textbf{}`/`\\mathrm{}` and other
    font commands give their content; `\\frac{a}{b}`/`\\dfrac`/`\\tfrac` (and the `\\frac12`
    shorthand) give `a/b`, or `(a)/(b)` when a part is not a plain number, and `2\\frac{1}{2}` the
    mixed number `2 1/2`; `{,}`, `\\,`, `\\!`, `\\ `, `~` between digit groups are thousands
    separators (`9{,}500`, `9\\,500` → 9,500 / 9500); `3\\times 10^{5}` → `3e5`; math delimiters
    `$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]` and `\\left`/`\\right` are dropped; `\\%`, `\\$` give `%`, `$`;
    `^\\circ` gives `°`, then a space. Other commands (`\\sqrt`, `\\pi`, ...) stay visible (as
    `sqrt(..)`, `π`, `\\name`), so what is not one number never reads as a number. Text without
    any of `\\ $ { } ^ ~` is returned unchanged. The rules follow what MATH-style graders
    normalize (Hendrycks et al. 2021; lm-eval's `minerva_math` answer normalization).
    """
    text = "" if text is None else str(text)
    if not _LATEX_CHARS.intersection(text):
        return text
    if len(_UNESCAPED_DOLLAR_RE.findall(text)) >= 2:  # $…$ / $$…$$ delimiters; a lone $ is currency
        text = _UNESCAPED_DOLLAR_RE.sub("", text)
    plain = _latex(text)
    plain = _DIGIT_GROUP_GAP_RE.sub("", plain).replace(_NEG, "").replace(_THIN, " ")
    plain = _TIMES_TEN_RE.sub(r"\1e\2", plain)
    plain = _POWER_OF_TEN_RE.sub(r"1e\1", plain)
    plain = plain.replace("°", " ")
    return " ".join(plain.split())


# Spans stay within one line and 200 characters: linear time on any input.
_EMPHASIS_RES = (
    re.compile(r"(\*\*|__)(?=\S)([^\n]{1,200}?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])(\*)(?=[^\s*])([^\n]{1,200}?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<![\w_])(_)(?=[^\s_])([^\n]{1,200}?)(?<=[^\s_])_(?![\w_])"),
    re.compile(r"(`+)([^\n]{1,200}?)\1"),
)


def strip_markdown(text: str | None) -> str:
    """Markdown emphasis and code spans removed: `**B**`, `__B__`, `*B*`, `_B_`, `` `B` `` → `B`.
    Underscores inside words (`not_entailment`) are kept; unbalanced `**`/`__` runs are dropped."""
    text = "" if text is None else str(text)
    if not any(ch in text for ch in "*_`"):
        return text
    for pattern in _EMPHASIS_RES:
        text = pattern.sub(r"\2", text)
    return re.sub(r"\*{2,}|(?<!\w)_{2,}|_{2,}(?!\w)", "", text)


def plain_answer(text: str | None) -> str:
    """An answer as plain text: LaTeX (`latex_to_text`) and markdown (`strip_markdown`) removed,
    spaces squeezed, wrapping quotes and a final period dropped. `**$\\boxed{\\text{B}}$**` → `B`."""
    plain = " ".join(strip_markdown(latex_to_text(text)).split())
    plain = plain.strip().strip("\"'\u201c\u201d\u2018\u2019").strip()
    return plain[:-1].rstrip() if plain.endswith(".") and not plain.endswith("..") else plain


# --- finding the JSON object -----------------------------------------------------------------

_FENCE_RE = re.compile(r"```[a-zA-Z0-9_+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_OPEN_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d", "\u2018": "\u2019"}
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _scan_object(text: str, start: int) -> tuple[str | None, int]:
    """Rewrite the object starting at text[start] == '{' into strict JSON.

    A small string-aware scanner: it converts single- and smart-quoted strings to JSON strings,
    drops trailing commas, maps Python literals and escapes raw newlines inside strings. Inside a
    string, a quote character only ends the string when what follows it (after spaces) is `,` `:`
    `}` `]` or the end of the text; otherwise it is text: the apostrophe of a Python-style
    `{'a': 'the UK's capital'}` (what `str(dict)` never writes but models do) or the inner quotes
    of `"she said "hi" twice"`. Returns (json_text, end_index), or (None, -1) if the text ends
    before the object does.
    """
    out: list[str] = []
    depth = 0
    close_quote: str | None = None
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if close_quote is not None:  # inside a string
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                out.append("'" if nxt == "'" and close_quote != '"' else c + nxt)
                i += 2
                continue
            if c == close_quote and _ends_string(text, i + 1):
                out.append('"')
                close_quote = None
            elif c == '"':
                out.append('\\"')
            elif c == "\n":
                out.append("\\n")
            elif c in "\r\t":
                out.append("\\r" if c == "\r" else "\\t")
            else:
                out.append(c)
            i += 1
            continue
        if c in _OPEN_QUOTES:
            close_quote = _OPEN_QUOTES[c]
            out.append('"')
        elif c in "{[":
            depth += 1
            out.append(c)
        elif c in "}]":
            depth -= 1
            out.append(c)
            if depth == 0:
                return "".join(out), i + 1
        elif c == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] in "}]":
                i += 1  # trailing comma
                continue
            out.append(c)
        elif c.isalpha():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_PY_LITERALS.get(word, word))
            i = j
            continue
        else:
            out.append(c)
        i += 1
    return None, -1


_NEXT_VALUE_RE = re.compile(r"""["'\u201c\u2018{\[}\]\d-]|(?:true|false|null|True|False|None)(?!\w)""")


def _ends_string(text: str, j: int) -> bool:
    """Whether a quote just before text[j] closes its string: the text ends, or `:` `}` `]`
    follows, or `,` followed by what can start the next key or value (so `'said 'no', then'`
    keeps its inner quotes)."""
    n = len(text)
    while j < n and text[j] in " \t\r\n":
        j += 1
    if j >= n or text[j] in ":}]":
        return True
    if text[j] != ",":
        return False
    j += 1
    while j < n and text[j] in " \t\r\n":
        j += 1
    return j >= n or _NEXT_VALUE_RE.match(text, j) is not None


def _brace_end(text: str, start: int) -> int | None:
    """Index after the brace that balances text[start] == '{', counting every brace and ignoring
    quotes (so a misplaced quote cannot make a closed object look cut off); None if none does."""
    depth = 0
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def _candidate_texts(text: str) -> list[str]:
    """Where a JSON object may be: fenced blocks first (the model's own marking), then the text."""
    fenced = [m.group(1) for m in _FENCE_RE.finditer(text)]
    return [*fenced, text]


def _objects_in(text: str) -> Iterable[Any]:
    """Yield each top-level `{...}` in the text that parses (strictly, then repaired)."""
    i = text.find("{")
    while i != -1:
        end = _strict_end(text, i)
        if end is not None:
            yield json.loads(text[i:end])
            i = text.find("{", end)
            continue
        repaired, end = _scan_object(text, i)
        if repaired is None:
            end = _brace_end(text, i)
            if end is None:  # the text really ends before the object closes
                raise ParseError("truncated_json", f"object starting at char {i} never closes")
            yield _Invalid(text[i:end])  # it closes, but the repair could not make sense of it
            i = text.find("{", end)
            continue
        try:
            yield json.loads(repaired)
        except json.JSONDecodeError:
            yield _Invalid(text[i:end])
        i = text.find("{", end)


class _Invalid:
    def __init__(self, fragment: str):
        self.fragment = fragment


def _strict_end(text: str, start: int) -> int | None:
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return end


def extract_json_object(text: str | None, expected_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON object a model meant to return, from whatever text surrounds it.

    Tolerates prose around the object, ```json fences, reasoning blocks (`strip_reasoning`:
    only what follows the last `</think>` counts; output cut off inside an open block raises
    `truncated`), trailing commas, single or smart quotes used as string delimiters (apostrophes
    inside them included) and Python literals. With `expected_keys`, the first object that has
    any of them wins (models sometimes echo an example before answering); otherwise the first
    object. A bare JSON array holding exactly one object is unwrapped. `truncated_json` only when
    the text ends before the object's braces balance; an object that closes but cannot be
    repaired is `invalid_json`.
    """
    if text is None or not text.strip():
        raise ParseError("empty", "no content")
    text = strip_reasoning(text.lstrip("\ufeff")).strip()
    if not text:
        raise ParseError("empty", "only a reasoning block")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    else:
        if isinstance(whole, list) and len(whole) == 1 and isinstance(whole[0], dict):
            whole = whole[0]
        if isinstance(whole, str) and whole.strip().startswith("{"):  # JSON encoded twice
            return extract_json_object(whole, expected_keys)
        if not isinstance(whole, dict):
            raise ParseError("not_an_object", f"top-level JSON {type(whole).__name__}")
        return whole
    if "{" not in text:
        raise ParseError("no_json", "no '{' in the text")
    expected = {k.lower() for k in expected_keys}
    objects: list[dict] = []
    first_error: ParseError | None = None
    for candidate in _candidate_texts(text):
        try:
            for obj in _objects_in(candidate):
                if isinstance(obj, dict):
                    if not expected or expected & {str(k).lower() for k in obj}:
                        return obj
                    objects.append(obj)
                elif first_error is None:
                    first_error = ParseError("invalid_json", _fragment(obj))
        except ParseError as err:
            first_error = first_error or err
    # An object without the expected keys only wins when nothing else was attempted: a cut-off
    # answer after a complete echo of the input is a truncation, not the echo.
    if objects and not (expected and first_error):
        return objects[0]
    raise first_error or ParseError("no_json", "no JSON object found")


def _fragment(obj: Any) -> str:
    text = obj.fragment if isinstance(obj, _Invalid) else str(obj)
    return text[:120]


# --- normalization ---------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_short_text(text: str | None) -> str:
    """SQuAD-style answer normalization: lowercase, drop punctuation and articles, squeeze spaces.

    Unicode-aware (NFKC, every punctuation category) so "Padmé" keeps its accent but “quotes” go.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


_STRICT_NUMBER_RE = re.compile(
    r"^\s*(?P<sign>[-+\u2212])?\s*[$€£¥₹]?\s*(?:(?P<whole>\d+)\s+(?=\d+\s*/\s*\d))?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)"
    r"(?:[eE](?P<exp>[-+]?\d+))?(?:\s*/\s*(?P<den>\d+))?\s*%?\s*\.?\s*$"
)
_NUMBER_IN_TEXT_RE = re.compile(r"(?<![\w.])[-+\u2212]?[$€£¥₹]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")


def _canonical_decimal(value: Fraction) -> str:
    """Integers without a decimal point, terminating decimals without trailing zeros, other
    fractions as `p/q`: one spelling per value, so string equality is numeric equality."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def normalize_number(text: Any) -> str | None:
    """Canonical string of a number written alone: "$1,000.00", "1000.0", "1,000", "1e3" -> "1000".

    Accepts a sign, one currency symbol, thousands commas, a percent sign, a fraction `3/4`
    (also `½`, `1⁄2`), a mixed number `2 1/2` and a trailing period; anything else (words, units,
    LaTeX, two numbers) is not "a number" and gives None: see `number_in_answer` for answers.
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        text = repr(text)
    text = str(text)
    if len(text) > MAX_NUMBER_CHARS:  # not an answer; and Python refuses str() of a 4,300-digit int
        return None
    if not text.isascii():
        text = text.translate(_ARABIC_SEPARATORS)  # ٣٫٥ = 3.5, ١٢٬٥٠٠ = 12500
        text = re.sub(r"(?<=\d)(?=[\u00bc-\u00be\u2150-\u215e])", " ", text)  # 2½: a mixed number
        text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    match = _STRICT_NUMBER_RE.match(text)
    if not match:
        return None
    try:
        value = Fraction(Decimal(match.group("num").replace(",", "")))
    except (InvalidOperation, ValueError):
        return None
    if match.group("whole") and not match.group("den"):
        return None
    if match.group("exp"):
        exp = int(match.group("exp"))
        if abs(exp) > 30:
            return None
        value *= Fraction(10) ** exp
    if match.group("den"):
        if int(match.group("den")) == 0:
            return None
        value /= int(match.group("den"))
    if match.group("whole"):
        value += int(match.group("whole"))
    if match.group("sign") in ("-", "\u2212"):
        value = -value
    return _canonical_decimal(value)


def numbers_in_text(text: str) -> list[str]:
    """Every number in running text, canonicalized, in order ("costs $1,200 for 3" -> ["1200", "3"])."""
    found = []
    for match in _NUMBER_IN_TEXT_RE.finditer(text or ""):
        number = normalize_number(match.group(0).replace(" ", ""))
        if number is not None:
            found.append(number)
    return found


# A conclusion: what follows it is the answer ("2x = 10, so x = 5", "..., therefore 72").
_CONCLUSION_RE = re.compile(r"(?:[,;.]\s*|\s+)(?:so|thus|therefore|hence)\b,?\s*", re.IGNORECASE)
# Where a justification of the answer begins: "18 (after subtracting 6)", "x = 5 because ...".
_JUSTIFICATION_RE = re.compile(
    r"\s*(?:[(\[]|\s[\u2013\u2014]\s|,?\s+(?=(?:because|since|as|after|given|using|by|from|via|"
    r"i\.e|e\.g)\b))",
    re.IGNORECASE,
)
# Where a sentence or clause ends: "18. Then ...", "18, after ...", "18 - the rest ...".
_CLAUSE_END_RE = re.compile(r"\s*(?:[.;:,]\s+|\s[-\u2013\u2014]\s+)(?=[^\W\d_])")
_NUMBER = r"[-+\u2212]?[$€£¥₹]?\s?(?:\d+\s+\d+\s*/\s*\d+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?|\.\d+)"
_APPROX = r"(?:(?:about|approximately|approx\.?|around|roughly|nearly|almost|exactly|only|just|~|≈)\s*)?"
_LINK_WORDS = r"(?:and|or|to|vs|versus|plus|minus|times|than|of)\b"
# A number stated alone, with at most four unit words after it ("72 clips", "5 m/s", "$10.00 total").
_LEAD_RE = re.compile(
    rf"{_APPROX}(?P<num>{_NUMBER})\s*(?:%|[$€£¥₹])?(?:\s*(?!\d|{_LINK_WORDS})[^\W\d_][\w'./-]*){{0,4}}",
    re.IGNORECASE,
)
# After an answer marker: the number it points at, then words ("1200 for the 3 chairs"), but not
# a second number joined to the first ("5 or 7", "5 to 7", "5, 7", "5-7").
_POINTED_RE = re.compile(
    rf"{_APPROX}(?P<num>{_NUMBER})(?=\s*(?:%|[$€£¥₹])?(?:\s+(?!{_LINK_WORDS})[^\W\d_]|\s*$))",
    re.IGNORECASE,
)
# Left of "=" in an answer: an arithmetic expression, or a variable ("x", "2x + 1").
_EXPRESSION_RE = re.compile(r"(?:[\d\s.,+\-\u2212*/×÷·()^$€£%]|(?<![A-Za-z])[A-Za-z](?![A-Za-z]))+")
# Math that is not a plain number: a lone number found in it is a fragment, not the answer.
_MATH_RESIDUE_RE = re.compile(
    r"[\\^_√π∞±∓×·÷≤≥≠<>|]|\b(?:sqrt|pi|infty|inf|log|ln|sin|cos|tan|exp|mod|lim|sum)\b|\d[xyzni]\b"
)
# An operator next to a variable or a bracket: "(x)/(2)", "x/2", "2*y" are expressions.
_EXPRESSION_OPERATOR_RE = re.compile(
    r"[/*]\s*\(|\)\s*[/*]|(?<![A-Za-z])[A-Za-z]\s*[/*+]\s*[\d(]|[\d)]\s*[/*+\-]\s*[A-Za-z](?![A-Za-z])"
)
# "... and 6 oranges", "..., 7": a second number joined to the first one.
_SECOND_NUMBER_RE = re.compile(
    r"(?:[,;]|\b(?:and|or|to|vs|versus)\b)\s*(?:[^\W\d_]+\s+){0,2}[-+\u2212$€£¥₹]?\d", re.IGNORECASE
)
_CONJUNCTION_RE = re.compile(r"\s*(?:,\s+|;\s*|\s(?:and|or|and/or|vs\.?|versus)\s+)", re.IGNORECASE)


def _lead_number(text: str) -> str | None:
    """The number of a text that is only a number with unit words ("72 clips", "about $5")."""
    text = text.strip()
    match = _LEAD_RE.fullmatch(text)
    if not match or _MATH_RESIDUE_RE.search(text):
        return None
    return normalize_number(match.group("num"))


def _equation_result(text: str) -> str | None | bool:
    """The result of "x = 5" / "5 + 2 = 7" / "48/2 = 24 clips": the number right of the last "=";
    False when the text is not such an equation (anything but an expression left of "=")."""
    members = re.split(r"\s*(?:=+|≈)\s*", text.strip())
    if len(members) < 2 or not all(m and _EXPRESSION_RE.fullmatch(m) for m in members[:-1]):
        return False
    return _lead_number(members[-1])


MAX_NUMBER_CHARS = 200

# Every dash that is written as a minus sign before a number: hyphen U+2010, non-breaking hyphen,
# figure dash, en dash, minus sign U+2212, small and full-width hyphen-minus. A dash right after a
# word or number character is a range or a hyphen ("5–7"), not a sign.
_MINUS_RE = re.compile(r"(?<![\w.])[\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d](?=\s?[$€£¥₹]?\d)")
# A unit with an exponent written with ^ ("5 m^2", "9.8 m s^-2", "3 cm^{3}" after LaTeX): the
# exponent joins the unit word ("m2"), so the unit is a unit and not math left around a number.
_UNITS = (r"(?:[kcmdnµμ]?m|in|ft|yd|mi|[kmµμ]?s|sec|h|hr|[km]?g|[mµμ]?[lL]|cc|[kM]?Pa|[kM]?N|[kM]?J|[kM]?W|"
          r"meters?|metres?|feet|foot|inch(?:es)?|units?|seconds?)")
_UNIT_POWER_RE = re.compile(rf"(?<![A-Za-z^])({_UNITS})\s*\^\s*\(?\s*([-+\u2212]?\d{{1,2}})\s*\)?(?![\w^])")
_NUMBER_WORD_VALUES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_NUMBER_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_WORD = "(?:" + "|".join(sorted([*_NUMBER_WORD_VALUES, *_NUMBER_SCALES], key=len, reverse=True)) + ")"
_NUMBER_WORDS_RE = re.compile(
    rf"(?<!no )(?<!any )(?<!some )(?<!every )\b(?:(minus|negative)\s+)?{_NUMBER_WORD}(?:(?:[\s-]+|\s+and\s+){_NUMBER_WORD})*\b", re.IGNORECASE)


def _number_words_value(phrase: str) -> int | None:
    """"seven" → 7, "twenty-five" → 25, "one hundred and five" → 105, "two thousand twenty" → 2020."""
    total, current, seen = 0, 0, False
    for word in re.findall(r"[a-z]+", phrase.lower()):
        if word in ("and", "minus", "negative"):
            continue
        if word in _NUMBER_WORD_VALUES:
            current += _NUMBER_WORD_VALUES[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _NUMBER_SCALES[word]
            current = 0
        seen = True
    if not seen:
        return None
    return total + current


def _number_words_to_digits(text: str) -> str:
    """Number words written out as digits, in a text that has no digit ("seven apples" → "7 apples";
    "minus five" → "-5")."""
    def repl(match: re.Match) -> str:
        value = _number_words_value(match.group(0))
        if value is None:
            return match.group(0)
        return f"-{value}" if match.group(1) else str(value)

    return _NUMBER_WORDS_RE.sub(repl, text)


# The Arabic decimal separator U+066B and thousands separator U+066C (`٣٫٥` = 3.5, `١٢٬٥٠٠` = 12500).
_ARABIC_SEPARATORS = str.maketrans({"\u066b": ".", "\u066c": ","})
# A fraction in words ("three quarters", "a half", "seven and a half", "2 and three quarters"): the
# numerator (a number word, "a"/"an", or digits) and the denominator word, with an optional whole part.
_DENOMINATORS = {"half": 2, "halve": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6,
                 "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10}
_FRACTION_WORDS_RE = re.compile(
    rf"\b(?:(?P<whole>\d+|{_NUMBER_WORD}(?:(?:[\s-]+|\s+and\s+){_NUMBER_WORD}){{0,5}})\s+and\s+)?"  # bounded: linear time
    rf"(?P<num>\d+|an?|{_NUMBER_WORD})[\s-]+(?P<den>halves|half|(?:third|quarter|fourth|fifth|sixth|seventh|eighth|ninth|tenth)s?)\b",
    re.IGNORECASE)
# "minus 3", "negative 3": a sign written as a word before digits (not the binary "10 minus 3").
_SIGN_WORD_RE = re.compile(r"\b(?:minus|negative)\s+(?=[$€£¥₹]?\d)", re.IGNORECASE)


def _words_number(phrase: str) -> int | None:
    """Digits or number words ("7", "seven", "a") as an int; None when neither."""
    phrase = phrase.strip()
    if phrase.isdigit():
        return int(phrase) if len(phrase) <= 12 else None
    if phrase.lower() in ("a", "an"):
        return 1
    return _number_words_value(phrase)


def _fraction_words(match: re.Match) -> str:
    """"three quarters" → "3/4", "seven and a half" → "7 1/2" (a mixed number `normalize_number` reads)."""
    num = _words_number(match.group("num"))
    den_word = match.group("den").lower()
    den = _DENOMINATORS.get(den_word.rstrip("s"))  # "quarters" → quarter, "halves" → halve
    whole = _words_number(match.group("whole")) if match.group("whole") else None
    if num is None or den is None or (match.group("whole") and whole is None):
        return match.group(0)
    fraction = f"{num}/{den}"
    return f"{whole} {fraction}" if whole is not None else fraction


def _sign_word(match: re.Match) -> str:
    """A sign word becomes "-" unless an operand ends the text right before it: a number, a bracket
    or a lone letter ("10 minus 3", "x minus 3" are differences). Looks back a bounded window: linear
    time on any input."""
    before = match.string[max(0, match.start() - 16):match.start()].rstrip()
    operand = before and (before[-1].isdigit() or before[-1] in ")]}" or _LONE_LETTER_END_RE.search(before))
    return match.group(0) if operand else "-"


_LONE_LETTER_END_RE = re.compile(r"(?:^|[^\w])[^\W\d_]$")


def _answer_numbers_text(plain: str) -> str:
    """The number-reading spellings of issue 25: every minus sign (and "minus"/"negative" before
    digits), Arabic decimal and thousands separators, `^` unit exponents, fractions in words
    ("three quarters" = 3/4, "seven and a half" = 7 1/2: never the whole number alone), number words."""
    if not plain.isascii():
        plain = _MINUS_RE.sub("-", plain).translate(_ARABIC_SEPARATORS)
    if "^" in plain:
        plain = _UNIT_POWER_RE.sub(r"\1\2", plain)
    lowered = plain.lower()
    if any(word in lowered for word in ("half", "halves", "third", "quarter", "fourth", "fifth", "sixth",
                                         "seventh", "eighth", "ninth", "tenth")):
        plain = _FRACTION_WORDS_RE.sub(_fraction_words, plain)
    if "minus" in lowered or "negative" in lowered:
        plain = _SIGN_WORD_RE.sub(_sign_word, plain)
    if not re.search(r"\d", plain):
        plain = _number_words_to_digits(plain)
    return plain


def number_in_answer(text: Any, equations: bool = True, after_marker: bool = False) -> str | None:
    """The canonical number a final answer states, or None when it does not state exactly one.

    After `plain_answer` (LaTeX, markdown): the whole text as a number ("$1,000.00", "1/2");
    else what follows a conclusion word ("2x = 10, so x = 5" → 5); else the number stated first
    when a comment follows it ("18 (after subtracting 6)", "72 clips, since 48 + 24 = 72"), or,
    in the text after an answer marker (`after_marker`), when words follow it ("1200 for the 3
    chairs", lm-eval's "The answer is (number)" rule); else, with `equations`, the result of an
    equation ("x = 5", "48 + 24 = 72"); parts joined by "and"/"or"/commas must agree
    ("x = 2 or x = 3" and "5 and 7" state two numbers: None); else the only distinct number of
    the text, unless math is left around it (`sqrt(3)`, `3π`, `2^10`, `(x)/(2)`: a fragment is
    never an answer).
    Mirrors how lm-eval's GSM8K/MATH filters read answers, without their "last number wins"
    fallback, which turns "18 (after subtracting 6)" into 6.
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return normalize_number(text)
    plain = _answer_numbers_text(plain_answer(text))
    if not plain:
        return None
    number = normalize_number(plain)
    if number is not None:
        return number
    conclusion = _CONCLUSION_RE.split(plain)[-1]
    if conclusion and conclusion != plain and re.search(r"\d", conclusion):
        return number_in_answer(conclusion, equations, after_marker=True)
    head = _JUSTIFICATION_RE.split(plain, maxsplit=1)[0]
    lead = _lead_number(_CLAUSE_END_RE.split(head, maxsplit=1)[0])
    if lead is not None:
        return lead
    pointed = _POINTED_RE.match(head) if after_marker else None
    if (pointed and not _MATH_RESIDUE_RE.search(head[:pointed.end() + 2])
            and not _SECOND_NUMBER_RE.search(head, pointed.end())):
        return normalize_number(pointed.group("num"))
    values: set[str] = set()
    for part in _CONJUNCTION_RE.split(head):
        if not part or not re.search(r"\d", part):
            continue
        value = _lead_number(part)
        if value is None and equations:
            result = _equation_result(part)
            value = None if result is False else result
        if value is None:
            values.clear()
            break
        values.add(value)
    if len(values) == 1:
        return values.pop()
    if values or _MATH_RESIDUE_RE.search(plain) or _EXPRESSION_OPERATOR_RE.search(plain):
        return None
    if not equations and "=" in plain:
        return None
    found = set(numbers_in_text(plain))
    return found.pop() if len(found) == 1 else None


_YES = {"yes", "y", "true", "t", "correct", "right", "1"}
_NO = {"no", "n", "false", "f", "incorrect", "wrong", "0"}


def normalize_boolean(value: Any) -> str | None:
    """"yes"/"no" from yes/no/true/false variants ("Yes.", "TRUE", "No, because ..."), else None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    words = normalize_short_text(str(value)).split() if value is not None else []
    if not words:
        return None
    if " ".join(words) in _YES or words[0] in ("yes", "true"):
        return "yes"
    if " ".join(words) in _NO or words[0] in ("no", "false"):
        return "no"
    return None


def _label_key(text: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", str(text)).casefold().strip(" .!\"'`*").split())


def match_label(value: Any, label_set: Sequence[str]) -> str | None:
    """The label of `label_set` that `value` names, ignoring case, spacing, `_`/`-` and end
    punctuation; a value that starts with a label ("Entailment, since ...") matches the longest
    such label, so "not_entailment" never reads as "entailment"."""
    if value is None:
        return None
    key = _label_key(value)
    by_key = {_label_key(label): label for label in label_set}
    if key in by_key:
        return by_key[key]
    for label_key in sorted(by_key, key=len, reverse=True):
        if label_key and re.match(re.escape(label_key) + r"\b", key):
            return by_key[label_key]
    return None


def strip_code_fence(text: str) -> str:
    """The code inside one enclosing ```lang ... ``` fence, or the text unchanged."""
    match = re.fullmatch(r"\s*```[a-zA-Z0-9_+-]*[ \t]*\n(.*?)\n?```\s*", text, re.DOTALL)
    return match.group(1) if match else text.strip()


def answers_agree(a: Any, b: Any, answer_format: str) -> bool:
    """Whether two answers say the same thing under the format's equivalence (majority vote).
    Both sides are read the same way, LaTeX and markdown included (`\\frac{1}{2}` = 0.5,
    `\\text{Paris}` = Paris); freeform and code compare their text."""
    if a is None or b is None:
        return False
    if answer_format == NUMERIC:
        na = number_in_answer(a)
        return na is not None and na == number_in_answer(b)
    if answer_format == BOOLEAN:
        na = normalize_boolean(plain_answer(a))
        return na is not None and na == normalize_boolean(plain_answer(b))
    if answer_format == LABEL:
        return _label_key(plain_answer(a)) == _label_key(plain_answer(b))
    if answer_format == CODE:
        return " ".join(strip_code_fence(str(a)).split()) == " ".join(strip_code_fence(str(b)).split())
    if answer_format == FREEFORM:
        na = normalize_short_text(a)
        return bool(na) and na == normalize_short_text(b)
    na = normalize_short_text(plain_answer(a))
    return bool(na) and na == normalize_short_text(plain_answer(b))


# --- choices ---------------------------------------------------------------------------------

_LETTER_RE = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*)?"
    r"[\(\[]?([A-Za-z])[\)\]]?[.:]?$",
    re.IGNORECASE,
)
_NUMBER_LABEL_RE = re.compile(
    r"^(?:(?:answer|option|choice)\s*(?:is|:)?\s*)?[\(\[]?(\d{1,2})[\)\]]?[.:]?$", re.IGNORECASE
)
_LABEL_PREFIX_RE = re.compile(r"^\s*[\(\[]?([A-Za-z]|\d{1,2})[\)\].:]\s+(.*\S)\s*$", re.DOTALL)


def option_key(text: Any) -> str:
    """What makes two options the same option: equal after NFKC, squeezed whitespace and a
    dropped final period. Case and signs count: "Rr"/"rr" (genotypes), "II"/"ii", "Co"/"CO" and
    "-1"/"1" are different options in real benchmarks (ARC, MMLU), so SQuAD-style normalization,
    which folds case and drops punctuation, would call them duplicates."""
    text = " ".join(unicodedata.normalize("NFKC", str(text)).split())
    return text[:-1].rstrip() if text.endswith(".") and not text.endswith("..") else text


def option_problem(choices: Sequence[Any]) -> tuple[str, str] | None:
    """(reason, detail) when a list of options cannot make a fair item, else None: an empty
    option (`empty_choice`) or two options that are the same (`duplicate_choices`, `option_key`).
    The one check for options, used for generated items and for seeds alike."""
    keys = [option_key(c) for c in choices]
    for i, key in enumerate(keys):
        if not key:
            return "empty_choice", f"option {i} of {len(keys)} is empty"
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            return "duplicate_choices", f"options {seen[key]} and {i} are both {key[:80]!r}"
        seen[key] = i
    return None


def _choices_are_labels(choices: Sequence[str], pattern: str) -> bool:
    return any(re.fullmatch(pattern, c.strip().strip("().[]:")) for c in choices)


def resolve_choice(answer: Any, choices: Sequence[str]) -> int | None:
    """Index of the option an answer names: its text (exact, then normalized), a letter
    ("B", "(B)", "B.", "Option B"), a 1-based number when the options are not themselves letters or
    numbers, or "B) text" where letter and text agree. None when it names no option unambiguously."""
    if answer is None or isinstance(answer, bool):
        return None
    text = str(answer).strip()
    if not text:
        return None
    for i, choice in enumerate(choices):
        if text == choice.strip():
            return i
    normalized = [normalize_short_text(c) for c in choices]
    key = normalize_short_text(text)
    if key and normalized.count(key) == 1:
        return normalized.index(key)
    letters_are_options = _choices_are_labels(choices, r"[A-Za-z]")
    numbers_are_options = any(ch.isdigit() for c in choices for ch in c)
    # "3" means the third option only when no option mentions a number ("3 apples", "1.5 m")
    letter = _LETTER_RE.match(text)
    if letter and not letters_are_options:
        index = ord(letter.group(1).upper()) - ord("A")
        return index if 0 <= index < len(choices) else None
    number = _NUMBER_LABEL_RE.match(text)
    if number and not numbers_are_options and not letters_are_options:
        index = int(number.group(1)) - 1
        return index if 0 <= index < len(choices) else None
    prefixed = _LABEL_PREFIX_RE.match(text)
    if prefixed:
        rest = normalize_short_text(prefixed.group(2))
        if rest and normalized.count(rest) == 1:
            index = normalized.index(rest)
            label = prefixed.group(1)
            label_index = int(label) - 1 if label.isdigit() else ord(label.upper()) - ord("A")
            return index if label_index == index else None
    return None


def strip_option_labels(choices: list[str]) -> list[str]:
    """Drop "A) " / "(B) " / "1. " prefixes when every option carries them in sequence; options
    that merely start with a letter or number are left alone."""
    stripped = []
    for i, choice in enumerate(choices):
        match = _LABEL_PREFIX_RE.match(choice)
        expected = {chr(ord("A") + i), chr(ord("a") + i), str(i + 1)}
        if not match or match.group(1) not in expected:
            return choices
        stripped.append(match.group(2).strip())
    return stripped


# --- generated items -------------------------------------------------------------------------

_FIELD_ALIASES = {
    "question": ("question", "new_question", "prompt", "sentence"),
    "context": ("context", "passage", "premise"),
    "choices": ("choices", "options"),
    "answer": ("answer", "answer_text", "correct_answer", "final_answer", "label"),
}
_NULL_STRINGS = {"", "null", "none", "n/a", "na"}


def _field(obj: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for alias in _FIELD_ALIASES[name]:
        if alias in lowered:
            return True, lowered[alias]
    return False, None


def _as_object(text_or_obj: Any, expected_keys: Iterable[str]) -> Mapping[str, Any]:
    if isinstance(text_or_obj, Mapping):
        return text_or_obj
    return extract_json_object(text_or_obj, expected_keys=expected_keys)


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValidationError("too_long", f"{field} has {len(value)} chars (max {limit})")


def _scalar_text(field: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return normalize_number(value) or str(value)
    if not isinstance(value, str):
        raise ValidationError("wrong_type", f"{field} is {type(value).__name__}")
    return value.strip()


def _parse_context(obj: Mapping[str, Any]) -> str | None:
    _, value = _field(obj, "context")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("wrong_type", f"context is {type(value).__name__}")
    value = value.strip()
    if value.lower() in _NULL_STRINGS:
        return None
    _check_length("context", value, MAX_CONTEXT_CHARS)
    return value


def _parse_choices(obj: Mapping[str, Any], seed_choices: Sequence[str] | None) -> list[str]:
    present, value = _field(obj, "choices")
    if not present or value is None:
        raise ValidationError("missing_field", "choices")
    if isinstance(value, Mapping):  # {"A": "...", "B": "..."}
        value = [value[k] for k in sorted(value, key=str)]
    if not isinstance(value, list) or not all(isinstance(c, (str, int, float)) for c in value):
        raise ValidationError("wrong_type", "choices must be a list of strings")
    choices = strip_option_labels([str(c).strip() for c in value])
    if any(not option_key(c) for c in choices):
        raise ValidationError("empty_choice", "an option is empty")
    for choice in choices:
        _check_length("choice", choice, MAX_CHOICE_CHARS)
    expected = len(seed_choices) if seed_choices else None
    if (expected is not None and len(choices) != expected) or len(choices) < 2:
        raise ValidationError("wrong_choice_count", f"expected {expected or '>=2'}, got {len(choices)}")
    problem = option_problem(choices)
    if problem:
        raise ValidationError(*problem)
    return choices


def _index_in(choices: Sequence[str] | None, predicate) -> int | None:
    for i, choice in enumerate(choices or []):
        if predicate(choice):
            return i
    return None


def parse_generated_item(
    text_or_obj: Any,
    answer_format: str,
    seed: Mapping[str, Any],
    label_set: Sequence[str] | None = None,
) -> GeneratedItem:
    """A validated new item from a generation response, in the seed's response structure.

    The answer is always stored as semantic text (the option's text, "yes"/"no", the canonical
    label, the canonical number), with `answer_index` into `choices` for choice-based formats.
    """
    obj = _as_object(text_or_obj, expected_keys=("question", "answer", "choices"))
    present, question = _field(obj, "question")
    if not present or question is None:
        raise ValidationError("missing_field", "question")
    question = _scalar_text("question", question)
    if len(question) < MIN_QUESTION_CHARS:
        raise ValidationError("empty_question", repr(question))
    _check_length("question", question, MAX_QUESTION_CHARS)
    context = _parse_context(obj)
    if _is_copy_of_seed(question, context, seed):
        raise ValidationError("same_as_seed", "the question repeats the seed")
    present, answer = _field(obj, "answer")
    if not present or answer is None:
        raise ValidationError("missing_field", "answer")
    answer = _scalar_text("answer", answer)
    if not answer:
        raise ValidationError("empty_answer", "answer is empty")
    _check_length("answer", answer, MAX_ANSWER_CHARS.get(answer_format, DEFAULT_MAX_ANSWER_CHARS))

    seed_choices = seed.get("choices") or None
    choices: list[str] | None = None
    answer_index: int | None = None
    if answer_format == MCQ:
        choices = _parse_choices(obj, seed_choices)
        answer_index = _choice_index(answer, choices)
        if answer_index is None:
            raise ValidationError("answer_not_in_choices", f"{answer[:80]!r} is not one of the options")
        answer_text = choices[answer_index]
    elif answer_format == BOOLEAN:
        answer_text = normalize_boolean(plain_answer(answer))
        if answer_text is None:
            raise ValidationError("not_boolean", repr(answer[:80]))
        choices = list(seed_choices) if seed_choices else ["no", "yes"]
        answer_index = _index_in(choices, lambda c: normalize_boolean(c) == answer_text)
    elif answer_format == LABEL:
        labels = list(label_set or default_label_set(LABEL, seed_choices) or [])
        if not labels:
            raise ValueError("answer_format 'label' needs a label_set (or a seed with choices)")
        answer_text = match_label(answer, labels) or match_label(plain_answer(answer), labels)
        if answer_text is None:
            raise ValidationError("label_not_in_set", f"{answer[:80]!r} not in {labels}")
        choices = list(seed_choices) if seed_choices else labels
        answer_index = _index_in(choices, lambda c: _label_key(c) == _label_key(answer_text))
    elif answer_format == NUMERIC:
        number = number_in_answer(answer, equations=False)  # the answer field is the number itself
        if number is None and (recovered := recover_final_answer(answer)):
            number = number_in_answer(recovered, equations=False, after_marker=True)
        if number is None:
            raise ValidationError("not_a_number", repr(answer[:80]))
        answer_text = number
    elif answer_format == CODE:
        answer_text = strip_code_fence(answer)
    elif answer_format in (SHORT_TEXT, FREEFORM):
        answer_text = answer
    else:
        raise ValueError(f"unknown answer_format {answer_format!r}")
    return GeneratedItem(question, context, choices, answer_index, answer_text, answer_format)


def _is_copy_of_seed(question: str, context: str | None, seed: Mapping[str, Any]) -> bool:
    """Same normalized question (and same context, when the seed has one): a copy, not a new item.
    Paraphrases and near-copies are the near-duplicate filter's job, with MinHash over all items."""
    if normalize_short_text(question) != normalize_short_text(seed.get("question")):
        return False
    seed_context = seed.get("context")
    return not seed_context or normalize_short_text(context) == normalize_short_text(seed_context)


# --- enrichment ------------------------------------------------------------------------------

_BOXED = "boxed"  # stands for the brace-aware \boxed{...} search in the list below
_PROSE_ANSWER_RES = (
    re.compile(r"####(?!#)\s*(?!(?:final\s+)?answer\b)([^\n]+)", re.IGNORECASE),
    _BOXED,
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE),
    # a heading or a label alone on its line ("## Final Answer", "**Answer:**"), the answer below
    re.compile(r"^[ \t#>]*(?:final\s+)?answer[ \t]*:?[ \t]*\n\s*([^\n]+)", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE),
    re.compile(r"\b(?:correct|right)\s+(?:option|choice)\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE),
    # "Option B is correct", "(C) is the right answer": the letter before the verdict
    re.compile(r"(?:\b(?:[Oo]ption|[Cc]hoice)\s*)?\(?\b([A-Z])\b\)?\s+is\s+(?:the\s+)?(?:correct|right|best)\b"),
)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_STRING_FIELD_RE = (
    r"""["']{key}["']\s*:\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.|'(?!\s*[,}}\]]))*'|-?[\d.,]+|true|false)"""
)


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces kept) or `\\boxed 5`."""
    content = None
    for match in _BOXED_RE.finditer(text):
        if text[match.end():match.end() + 1] == "{":
            arg, _ = _group(text, match.end())
        else:
            arg = re.match(r"[^\s$]*", text[match.end():]).group(0)
        if arg.strip():
            content = arg.strip()
    return content


def recover_final_answer(text: str) -> str | None:
    """The final answer stated in prose: "#### 42", "\\boxed{\\frac{1}{2}}", "Final answer: yes",
    "The answer is (C)", "**Answer:** B" (markdown emphasis ignored). The last statement of the
    strongest pattern wins, since models revise. The text after the marker is returned as written
    (LaTeX and all): `normalize_final_answer` reads it per format."""
    plain = strip_markdown(text or "")
    for pattern in _PROSE_ANSWER_RES:
        if pattern is _BOXED:
            answer = _last_boxed(plain)
        else:
            match = _last_match(pattern, plain)
            answer = match.group(1) if match else None
        if answer:
            answer = answer.strip().strip("*`").strip()
            answer = re.sub(r"[.!]+$", "", answer).strip()
            if answer:
                return answer
    return None


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The match starting last, even when an earlier match's capture runs over it."""
    last, pos = None, 0
    while (match := pattern.search(text, pos)) is not None:
        last, pos = match, match.start() + 1
    return last


def _salvage_field(text: str, key: str) -> str | None:
    """A complete value of `key` from JSON that does not parse as a whole (cut off, bad escapes)."""
    matches = re.findall(_STRING_FIELD_RE.format(key=re.escape(key)), text)
    if not matches:
        return None
    raw = matches[-1]
    if raw.startswith("'"):
        return raw[1:-1]
    try:
        return str(json.loads(raw)) if raw.startswith('"') else raw
    except json.JSONDecodeError:
        return raw.strip('"')


def _choice_index(answer: Any, choices: Sequence[str] | None) -> int | None:
    """`resolve_choice` on the answer as written, then on its plain text (`**B**`, `$B$`,
    `\\boxed{\\text{B}}` → `B`), then against the options' plain text too (options in LaTeX)."""
    if not choices or answer is None:
        return None
    index = resolve_choice(answer, choices)
    if index is not None:
        return index
    plain = plain_answer(answer)
    if not plain:
        return None
    if plain != str(answer).strip():
        index = resolve_choice(plain, choices)
        if index is not None:
            return index
    plain_choices = [plain_answer(c) for c in choices]
    if plain_choices != [c.strip() for c in choices] and option_problem(plain_choices) is None:
        return resolve_choice(plain, plain_choices)
    return None


def normalize_final_answer(
    raw: str, answer_format: str, choices: Sequence[str] | None, label_set: Sequence[str] | None
) -> tuple[str | None, int | None]:
    """(normalized answer, index into choices) of a final answer; (None, None) when it does not fit
    the format, e.g. an option that does not exist: such a sample is a vote for nothing.

    Every format reads the answer's plain text (`plain_answer`: LaTeX and markdown removed), and
    the statement an answer marker points at ("The answer is (B)", "Final answer: no",
    `\\boxed{}`, "####", see `recover_final_answer`) before the text as a whole; numbers go
    through `number_in_answer`, so two candidates without a marker are no answer.
    """
    raw = (raw or "").strip()
    if not raw:
        return None, None
    recovered = recover_final_answer(raw)
    if answer_format == MCQ:
        index = _choice_index(raw, choices)
        if index is None and recovered:
            index = _choice_index(recovered, choices)
        return (choices[index], index) if index is not None and choices else (None, None)
    if answer_format == BOOLEAN:
        answer = next((a for a in (normalize_boolean(plain_answer(c)) for c in (recovered, raw) if c) if a), None)
        index = _index_in(choices, lambda c: normalize_boolean(c) == answer) if answer else None
        return answer, index
    if answer_format == LABEL:
        labels = list(label_set or default_label_set(LABEL, choices) or [])
        answer = next((a for a in (match_label(plain_answer(c), labels) for c in (recovered, raw) if c) if a), None)
        index = _index_in(choices, lambda c: _label_key(c) == _label_key(answer)) if answer else None
        return answer, index
    if answer_format == NUMERIC:
        number = normalize_number(plain_answer(raw))
        if number is None and recovered:
            number = number_in_answer(recovered, after_marker=True)
        if number is None and not (recovered and re.search(r"\d", recovered)):
            number = number_in_answer(raw)  # a marker pointing at no number leaves the text as is
        return number, None
    if answer_format == CODE:
        return strip_code_fence(raw), None
    if answer_format == SHORT_TEXT:
        return normalize_short_text(plain_answer(recovered or raw)) or None, None
    return normalize_short_text(raw) or None, None


def parse_enrichment(
    text_or_obj: Any,
    answer_format: str,
    item: Mapping[str, Any],
    label_set: Sequence[str] | None = None,
) -> Enrichment:
    """Knowledge, reasoning and the normalized final answer of one enrichment sample.

    JSON is preferred; when the response is not usable JSON, a complete `"final_answer"` value is
    salvaged from broken or cut-off JSON, and an answer stated in prose ("The answer is (C)",
    "#### 42", or a reply that is only the answer) is recovered, but never from cut-off text:
    reasoning cut off mid-way may say "the answer is" about a step, not the result. Drafts
    before the last `</think>` never count, and output cut off inside a reasoning block is
    `truncated` (see `strip_reasoning`).
    Raises ParseError when no final answer can be found at all.
    """
    choices = item.get("choices") or None
    knowledge = reasoning = ""
    raw_answer: str | None
    try:
        obj = _as_object(text_or_obj, expected_keys=("final_answer", "reasoning", "knowledge", "answer"))
    except ParseError as err:
        if err.reason in ("empty", "truncated"):
            raise  # nothing, or only drafts inside an unclosed reasoning block
        text = strip_reasoning(str(text_or_obj or ""))
        raw_answer = _salvage_field(text, "final_answer")
        if raw_answer is not None:
            knowledge = _salvage_field(text, "knowledge") or ""
            reasoning = _salvage_field(text, "reasoning") or ""
        elif err.reason in ("no_json", "not_an_object", "invalid_json"):
            prose = text.strip()
            raw_answer = recover_final_answer(prose)
            reasoning = prose
            if raw_answer is None and err.reason != "invalid_json":
                raw_answer, reasoning = _bare_answer(prose), ""
        if not raw_answer:
            raise
    else:
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        knowledge = _text_or_empty(lowered.get("knowledge"))
        reasoning = _text_or_empty(lowered.get("reasoning"))
        raw_answer = _text_or_empty(lowered.get("final_answer", lowered.get("answer")))
        if not raw_answer.strip():
            raw_answer = recover_final_answer(reasoning) or ""
        if not raw_answer.strip():
            raise ParseError("no_final_answer", "the JSON has no final_answer")
    final_answer, index = normalize_final_answer(raw_answer, answer_format, choices, label_set)
    return Enrichment(knowledge.strip(), reasoning.strip(), raw_answer.strip(), final_answer, index)


def _bare_answer(text: str) -> str | None:
    """A reply that is only the answer ("Yes.", "42", "\"B\""): one short line."""
    text = text.strip().strip('"').strip()
    return text if text and "\n" not in text and len(text) <= 200 else None


def _text_or_empty(value: Any) -> str:
    """JSON values as text: booleans as yes/no, numbers as written, lists joined by lines."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)
