"""Render a curated item with one enrichment sample as a pretraining document.

The document reads like a worked example in a textbook: the passage (if any), the question, the
options as a lettered list, the relevant knowledge, the step-by-step reasoning, and the answer in a
natural form. The passage comes before the question because that is how the benchmarks present it
(BoolQ's lm-eval prompt is "{passage}\\nQuestion: {question}?"). The answer shown is the item's own
answer (which verification checked the enrichment votes agree with); the enrichment's extracted
answer is only a fallback for items that have none. Pure and deterministic: same input, same bytes.
"""

from __future__ import annotations

from typing import Any, Mapping

from schemas.answer_formats import BOOLEAN, CODE, MCQ
from udfs.parsing import normalize_boolean, strip_code_fence


def option_letter(index: int) -> str:
    """A, B, ... Z, then AA, AB, ... (no benchmark has that many options, but never crash)."""
    letters = ""
    index += 1
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _clean(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _answer_line(item: Mapping[str, Any], enrichment: Mapping[str, Any]) -> str:
    answer_format = item.get("answer_format")
    choices = list(item.get("choices") or [])
    index = item.get("answer_index")
    if index is None and item.get("answer_text") is None:
        index = enrichment.get("final_answer_index")
    answer = _clean(item.get("answer_text")) or _clean(enrichment.get("final_answer_raw"))
    if index is None and answer in [_clean(c) for c in choices]:
        index = [_clean(c) for c in choices].index(answer)

    if answer_format == MCQ and index is not None and 0 <= index < len(choices):
        return f"Answer: ({option_letter(index)}) {choices[index].strip()}"
    if answer_format == BOOLEAN:
        yes_no = normalize_boolean(answer)
        return f"Answer: {yes_no.capitalize()}" if yes_no else f"Answer: {answer}"
    if answer_format == CODE:
        return "Answer:\n```\n" + strip_code_fence(answer) + "\n```"
    return f"Answer: {answer}"


def format_pretraining_document(item: Mapping[str, Any], enrichment: Mapping[str, Any]) -> str:
    """One training text for `item` (a generated or seed record) and one `enrichment` sample."""
    sections: list[str] = []
    context = _clean(item.get("context"))
    if context:
        sections.append(f"Passage: {context}")
    sections.append(f"Question: {_clean(item.get('question'))}")
    choices = item.get("choices") or []
    if item.get("answer_format") == MCQ and choices:
        sections.append(
            "Options:\n" + "\n".join(f"({option_letter(i)}) {_clean(c)}" for i, c in enumerate(choices))
        )
    knowledge = _clean(enrichment.get("knowledge"))
    if knowledge:
        sections.append(f"Relevant knowledge: {knowledge}")
    reasoning = _clean(enrichment.get("reasoning"))
    if reasoning:
        sections.append(f"Reasoning: {reasoning}")
    sections.append(_answer_line(item, enrichment))
    return "\n\n".join(sections) + "\n"
