"""The answer-format vocabulary: the shape of a correct answer, shared by catalog, prompts and parsers."""

from __future__ import annotations

MCQ = "mcq"                # pick one of several options (texts, or letters whose texts live in the prompt)
BOOLEAN = "boolean"        # yes / no
LABEL = "label"            # one of a fixed label set (NLI, sentiment, ...)
NUMERIC = "numeric"        # a number (math word problems)
SHORT_TEXT = "short_text"  # a short exact-match answer (entity, phrase)
FREEFORM = "freeform"      # open text scored by overlap (translation, summaries)
CODE = "code"              # a program

ALL_FORMATS = (MCQ, BOOLEAN, LABEL, NUMERIC, SHORT_TEXT, FREEFORM, CODE)
CHOICE_FORMATS = (MCQ, BOOLEAN, LABEL)


def default_label_set(answer_format: str, choices: list[str] | None = None) -> list[str] | None:
    """Labels a generated item must answer from: yes/no for boolean, the task's choices for label."""
    if answer_format == BOOLEAN:
        return ["no", "yes"]
    if answer_format == LABEL and choices:
        return list(choices)
    return None
