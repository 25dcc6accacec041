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

from udfs.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT, default_label_set

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
    """No usable JSON object in the text (reasons: empty, no_json, truncated_json, invalid_json,
    not_an_object)."""


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


# --- finding the JSON object -----------------------------------------------------------------

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_OPEN_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d", "\u2018": "\u2019"}
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _scan_object(text: str, start: int) -> tuple[str | None, int]:
    """Rewrite the object starting at text[start] == '{' into strict JSON.

    A small string-aware scanner: it converts single- and smart-quoted strings to JSON strings,
    drops trailing commas, maps Python literals and escapes raw newlines inside strings. It never
    touches characters inside a properly quoted string, so smart quotes or apostrophes in values
    survive. Returns (json_text, end_index), or (None, -1) if the text ends before the object does.
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
            if c == close_quote:
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
            raise ParseError("truncated_json", f"object starting at char {i} never closes")
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

    Tolerates prose around the object, ```json fences, `<think>` blocks, trailing commas, single or
    smart quotes used as string delimiters and Python literals. With `expected_keys`, the first
    object that has any of them wins (models sometimes echo an example before answering);
    otherwise the first object. A bare JSON array holding exactly one object is unwrapped.
    """
    if text is None or not text.strip():
        raise ParseError("empty", "no content")
    text = _THINK_RE.sub("", text.lstrip("\ufeff")).strip()
    if not text:
        raise ParseError("empty", "only a <think> block")
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
    r"^\s*(?P<sign>[-+\u2212])?\s*[$€£¥₹]?\s*(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)"
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

    Accepts a sign, one currency symbol, thousands commas, a percent sign, a fraction `3/4` and a
    trailing period; anything else (words, units, two numbers) is not "a number" and gives None.
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        text = repr(text)
    match = _STRICT_NUMBER_RE.match(str(text))
    if not match:
        return None
    try:
        value = Fraction(Decimal(match.group("num").replace(",", "")))
    except (InvalidOperation, ValueError):
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
    """Whether two answers say the same thing under the format's equivalence (majority vote)."""
    if a is None or b is None:
        return False
    if answer_format == NUMERIC:
        na, nb = normalize_number(a), normalize_number(b)
        if na is None or nb is None:
            return False
        return na == nb
    if answer_format == BOOLEAN:
        na = normalize_boolean(a)
        return na is not None and na == normalize_boolean(b)
    if answer_format == LABEL:
        return _label_key(a) == _label_key(b)
    if answer_format == CODE:
        return " ".join(strip_code_fence(str(a)).split()) == " ".join(strip_code_fence(str(b)).split())
    na = normalize_short_text(a)
    return bool(na) and na == normalize_short_text(b)


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
    if any(not c for c in choices):
        raise ValidationError("empty_choice", "an option is empty")
    for choice in choices:
        _check_length("choice", choice, MAX_CHOICE_CHARS)
    expected = len(seed_choices) if seed_choices else None
    if (expected is not None and len(choices) != expected) or len(choices) < 2:
        raise ValidationError("wrong_choice_count", f"expected {expected or '>=2'}, got {len(choices)}")
    normalized = [normalize_short_text(c) for c in choices]
    if len(set(normalized)) != len(normalized):
        raise ValidationError("duplicate_choices", "two options are the same")
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
        answer_index = resolve_choice(answer, choices)
        if answer_index is None:
            raise ValidationError("answer_not_in_choices", f"{answer[:80]!r} is not one of the options")
        answer_text = choices[answer_index]
    elif answer_format == BOOLEAN:
        answer_text = normalize_boolean(answer)
        if answer_text is None:
            raise ValidationError("not_boolean", repr(answer[:80]))
        choices = list(seed_choices) if seed_choices else ["no", "yes"]
        answer_index = _index_in(choices, lambda c: normalize_boolean(c) == answer_text)
    elif answer_format == LABEL:
        labels = list(label_set or default_label_set(LABEL, seed_choices) or [])
        if not labels:
            raise ValueError("answer_format 'label' needs a label_set (or a seed with choices)")
        answer_text = match_label(answer, labels)
        if answer_text is None:
            raise ValidationError("label_not_in_set", f"{answer[:80]!r} not in {labels}")
        choices = list(seed_choices) if seed_choices else labels
        answer_index = _index_in(choices, lambda c: _label_key(c) == _label_key(answer_text))
    elif answer_format == NUMERIC:
        number = normalize_number(answer)
        if number is None:
            candidates = numbers_in_text(answer)
            number = candidates[0] if len(set(candidates)) == 1 else None
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

_PROSE_ANSWER_RES = (
    re.compile(r"####\s*([^\n]+)"),
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE),
    re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE),
)
_STRING_FIELD_RE = r'"{key}"\s*:\s*("(?:[^"\\]|\\.)*"|-?[\d.,]+|true|false)'


def recover_final_answer(text: str) -> str | None:
    """The final answer stated in prose: "#### 42", "\\boxed{42}", "Final answer: yes",
    "The answer is (C)". The last statement of the strongest pattern wins, since models revise."""
    plain = (text or "").replace("**", "").replace("__", "")
    for pattern in _PROSE_ANSWER_RES:
        match = _last_match(pattern, plain)
        if match:
            answer = match.group(1).strip().strip("*`").strip()
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
    try:
        return str(json.loads(raw)) if raw.startswith('"') else raw
    except json.JSONDecodeError:
        return raw.strip('"')


def normalize_final_answer(
    raw: str, answer_format: str, choices: Sequence[str] | None, label_set: Sequence[str] | None
) -> tuple[str | None, int | None]:
    """(normalized answer, index into choices) of a final answer; (None, None) when it does not fit
    the format, e.g. an option that does not exist: such a sample is a vote for nothing."""
    raw = (raw or "").strip()
    if not raw:
        return None, None
    if answer_format == MCQ:
        index = resolve_choice(raw, choices or [])
        if index is None:
            recovered = recover_final_answer(raw)
            index = resolve_choice(recovered, choices or []) if recovered else None
        return (choices[index], index) if index is not None and choices else (None, None)
    if answer_format == BOOLEAN:
        answer = normalize_boolean(raw) or normalize_boolean(recover_final_answer(raw))
        index = _index_in(choices, lambda c: normalize_boolean(c) == answer) if answer else None
        return answer, index
    if answer_format == LABEL:
        labels = list(label_set or default_label_set(LABEL, choices) or [])
        answer = match_label(raw, labels) or match_label(recover_final_answer(raw), labels)
        index = _index_in(choices, lambda c: _label_key(c) == _label_key(answer)) if answer else None
        return answer, index
    if answer_format == NUMERIC:
        number = normalize_number(raw)
        if number is None:
            recovered = recover_final_answer(raw)
            number = normalize_number(recovered) if recovered else None
            if number is None:
                found = numbers_in_text(recovered or raw)
                number = found[-1] if found else None
        return number, None
    if answer_format == CODE:
        return strip_code_fence(raw), None
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
    reasoning cut off mid-way may say "the answer is" about a step, not the result.
    Raises ParseError when no final answer can be found at all.
    """
    choices = item.get("choices") or None
    knowledge = reasoning = ""
    raw_answer: str | None
    try:
        obj = _as_object(text_or_obj, expected_keys=("final_answer", "reasoning", "knowledge", "answer"))
    except ParseError as err:
        text = str(text_or_obj or "")
        raw_answer = _salvage_field(text, "final_answer")
        if raw_answer is not None:
            knowledge = _salvage_field(text, "knowledge") or ""
            reasoning = _salvage_field(text, "reasoning") or ""
        elif err.reason in ("no_json", "not_an_object", "invalid_json"):
            prose = _THINK_RE.sub("", text).strip()
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
