"""Answer comparison keys for the verification filter: two answers agree iff their keys are equal.

The `verification` filter (jobs/sql/intermediate/filter_verification.sql) counts enrichment
samples whose key equals the key of the item's own answer (the generated answer, or the seed's
gold answer for answer-enriched seeds). SQL does the vote counting; this module does only what
SQL cannot: deciding when two answers written differently say the same thing. The key is a
plain string so that agreement is string equality, a GROUP BY counts the votes per answer, and
the key can be stored as evidence.

Keys per answer format (the equivalences lm-eval's own metrics use for each output type):

- `mcq`: `option:<i>`, the index of the chosen option (the answer's own index when it is valid,
  else the option its text names: exact text, normalized text, or a letter "B"/"(B)"), so the
  option text, its letter and its index all agree. lm-eval scores multiple choice by option index.
- `boolean`: `bool:yes` / `bool:no` from yes/no/true/false variants ("Yes.", "TRUE", "No, because").
- `label`: `label:<label>` with the label of the item's label set the answer names (case,
  spacing, `_`/`-` insensitive: "not_entailment" = "Not entailment"); an answer that names no
  label has no key.
- `numeric`: `num:<canonical number>`, so "1,000", "1000.0", "$1000", "1e3" and "\\boxed{1000}"
  agree and "3/4" equals "0.75" (`udfs.parsing.number_in_answer`, the reading the parsers use);
  "1000 dollars" reads as 1000; several different numbers, or none, have no key. GSM8K is scored
  by exact match of the extracted number after removing "," and "$".
- `short_text`: `text:<SQuAD-normalized text>` (lowercase, no punctuation, no articles,
  single spaces), the normalization of SQuAD/TriviaQA/NQ exact-match scoring.
- `freeform`, `code`: no key (`None`): there is no comparable answer (overlap metrics and
  execution are not a vote), so such items pass verification as `not_verifiable`.

Every format reads the answer's plain text first (`udfs.parsing.plain_answer`: LaTeX and markdown
removed), so `answer_key(f, a) == answer_key(f, b) is not None` exactly when
`udfs.parsing.answers_agree(a, b, f)` for numeric, boolean and short-text answers (a unit test holds
the two to that). A None key means "a vote for nothing": it never agrees with anything, including
another None. Pure functions; safe in executors.
"""

from __future__ import annotations

from typing import Any, Sequence

from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT
from udfs.parsing import (
    match_label,
    normalize_boolean,
    normalize_short_text,
    number_in_answer,
    plain_answer,
    resolve_choice,
)

NOT_VERIFIABLE_FORMATS = (FREEFORM, CODE)
VERIFIABLE_FORMATS = (MCQ, BOOLEAN, LABEL, NUMERIC, SHORT_TEXT)


def is_verifiable(answer_format: str | None) -> bool:
    """Whether answers of this format can be compared by a vote (see the module docstring)."""
    return answer_format in VERIFIABLE_FORMATS


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _valid_index(index: Any, choices: Sequence[str]) -> int | None:
    if index is None or isinstance(index, bool):
        return None
    try:
        i = int(index)
    except (TypeError, ValueError):
        return None
    return i if 0 <= i < len(choices) else None


def number_key(answer: Any) -> str | None:
    """The canonical number an answer states (`udfs.parsing.number_in_answer`: LaTeX and markdown
    removed, the whole text as one number, the number a conclusion or an equation states, else the
    one distinct number written in it); None for no number or for several different ones."""
    text = _text(answer)
    return number_in_answer(text) if text is not None else None


def answer_key(
    answer_format: str | None,
    answer: Any,
    answer_index: Any = None,
    choices: Sequence[str] | None = None,
) -> str | None:
    """The comparison key of one answer (see the module docstring), or None when it is not a
    usable answer of that format or the format has no comparable answer.

    answer_format: one of `schemas.answer_formats.ALL_FORMATS`; answer: the answer text (a generated
    item's `answer_text`, a sample's `final_answer`, or its raw text); answer_index: the option
    index when the record has one (generated `answer_index`, enrichment `final_answer_index`);
    choices: the item's options (mcq) or label set (label). Never raises on odd input (a reading
    that fails on pathological input, e.g. a 5,000-digit number, is no key).
    """
    try:
        return _answer_key(answer_format, answer, answer_index, choices)
    except (ValueError, ArithmeticError, RecursionError, TypeError, OverflowError, MemoryError):
        return None


def _answer_key(answer_format: str | None, answer: Any, answer_index: Any,
                choices: Sequence[str] | None) -> str | None:
    choices = [str(c) for c in (choices or []) if c is not None]
    if answer_format == MCQ:
        index = _valid_index(answer_index, choices)
        text = _text(answer)
        if index is None and text is not None and choices:
            index = resolve_choice(text, choices)
            if index is None and plain_answer(text) != text:
                index = resolve_choice(plain_answer(text), choices)
        return f"option:{index}" if index is not None else None
    if answer_format == BOOLEAN:
        value = normalize_boolean(plain_answer(_text(answer)))
        if value is None and choices:
            index = _valid_index(answer_index, choices)
            value = normalize_boolean(choices[index]) if index is not None else None
        return f"bool:{value}" if value is not None else None
    if answer_format == LABEL:
        text = _text(answer)
        text = plain_answer(text) if text is not None else None
        if choices:
            index = _valid_index(answer_index, choices)
            label = match_label(text, choices) if text is not None else None
            if label is None and index is not None:
                label = choices[index]
            if label is None:
                return None
            text = label
        key = normalize_short_text(text.replace("_", " ").replace("-", " ")) if text else ""
        return f"label:{key}" if key else None
    if answer_format == NUMERIC:
        number = number_key(answer)
        return f"num:{number}" if number is not None else None
    if answer_format == SHORT_TEXT:
        key = normalize_short_text(plain_answer(_text(answer)))
        return f"text:{key}" if key else None
    return None
