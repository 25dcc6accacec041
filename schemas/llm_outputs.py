"""JSON schemas of what the model must answer (docs/prompt-contract.md), and the `response_format`.

Sent as OpenAI structured output (`json_schema`, strict), which vLLM and NIM enforce with guided
decoding. Strict mode only accepts schemas whose objects forbid extra properties and require every
property, so optional fields are required-but-nullable. Property order is the order the model
writes in: knowledge before reasoning before the final answer, so the answer is conditioned on both.

The parsers in udfs/parsing.py never assume the schema was enforced: endpoints that ignore
`response_format` (or truncate) are handled there.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from schemas.answer_formats import BOOLEAN, LABEL

GENERATION_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "context": {"type": ["string", "null"]},
        "choices": {"type": ["array", "null"], "items": {"type": "string"}},
        "answer": {"type": "string"},
    },
    "required": ["question", "context", "choices", "answer"],
    "additionalProperties": False,
}

ENRICHMENT_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "knowledge": {"type": "string"},
        "reasoning": {"type": "string"},
        "final_answer": {"type": "string"},
    },
    "required": ["knowledge", "reasoning", "final_answer"],
    "additionalProperties": False,
}

# The paraphrase judge (jobs/filters/paraphrase.py): is a candidate the same question as a held-out
# item, reworded or translated? The verdict first (a short answer is cheap to constrain), then why.
JUDGE_VERDICTS = ("same", "different")
JUDGE_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": list(JUDGE_VERDICTS)},
        "reason": {"type": "string"},
    },
    "required": ["verdict", "reason"],
    "additionalProperties": False,
}

_ANSWER_FIELD = {"generate": "answer", "enrich": "final_answer"}
_BASE_SCHEMA = {"generate": GENERATION_OUTPUT_SCHEMA, "enrich": ENRICHMENT_OUTPUT_SCHEMA}


def output_schema(stage: str, answer_format: str, label_set: Sequence[str] | None = None) -> dict[str, Any]:
    """The schema for one request: the base schema, with the answer restricted to the label set
    for boolean and label formats (an `enum`, which every strict-mode implementation supports)."""
    if stage not in _BASE_SCHEMA:
        raise ValueError(f"unknown stage {stage!r}")
    schema = copy.deepcopy(_BASE_SCHEMA[stage])
    labels = list(label_set) if label_set else (["no", "yes"] if answer_format == BOOLEAN else None)
    if answer_format in (BOOLEAN, LABEL) and labels:
        schema["properties"][_ANSWER_FIELD[stage]] = {"type": "string", "enum": [str(x) for x in labels]}
    return schema


def response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The OpenAI `response_format` dict for a strict JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def response_format_for(stage: str, answer_format: str, label_set: Sequence[str] | None = None) -> dict:
    """`response_format` for a stage and answer format, named e.g. `taskseed_generate_mcq`."""
    return response_format(output_schema(stage, answer_format, label_set), f"taskseed_{stage}_{answer_format}")
