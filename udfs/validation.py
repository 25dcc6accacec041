"""Leftover template markers and instruction-following artifacts: text that must never reach
`curated`, as regular expressions the `validation` filter runs in Spark SQL.

A generated item is model output; when the model echoes the prompt's format, leaks its chat
template, or talks to the user instead of writing an item, the text is not pretraining data.
Each marker is (name, flags, pattern). Patterns use only the regex subset that Python's `re` and
Java's `java.util.regex` read the same way (classes, alternation, `\\b`, `^` with multiline,
scoped flags `(?im:...)`), so the unit tests here (Python) and the SQL filter (Java, through
Spark's `regexp_extract`) agree. The SQL filter reads all markers combined into one alternation
(`combined_marker_pattern`), so the regex is compiled once per task, not once per row.

Kinds, and where they come from:
- chat-template and special tokens: `{{`/`}}` (unrendered Jinja/Mustache placeholders), `<|`
  (ChatML, Llama-3, Phi: `<|im_start|>`, `<|eot_id|>`), `[INST]`/`[/INST]`/`<<SYS>>`
  (Llama-2/Mistral), `<s>`/`</s>`, `### Instruction:`/`### Response:` (Alpaca), `<think>`
  tags left in a field (reasoning models);
- echoes of the prompt's or the pretraining document's own field labels at the start of a line
  ("Question:", "Answer:", "Options:", "Passage:", "Reasoning:", "Relevant knowledge:"): the model
  wrote the frame into a field (lm-eval prompts read "Question: ...\\nAnswer:");
- role labels at the start of a line ("assistant:", "User:", "Human:", "System:");
- prompt-injection payloads carried over from a seed into a generated item (issue 14): "new
  instructions:", "reveal your system prompt"; taskseed's own `</input>` prompt delimiter (HTML's
  `<input>` element has no closing tag, so a real question never contains it); a chat message
  written as JSON (`"role": "system"`); a code fence opened as a role (```` ```system ````);
- assistant chatter: "ignore (all) previous instructions" (prompt-injection text), "as an AI
  (language model)", a reply that opens with "Sure! Here is ...", "here's a similar question".
"""

from __future__ import annotations

import re
from functools import lru_cache

TEMPLATE_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("template_placeholder", "", r"\{\{|\}\}"),
    ("special_token", "", r"<\|"),
    ("inst_tag", "i", r"\[/?INST\]|<</?SYS>>"),
    ("sentence_tag", "", r"</?s>"),
    ("alpaca_header", "im", r"^\s*#{2,}\s*(?:instruction|response|input)\b"),
    ("think_tag", "i", r"</?think>"),
    ("field_label_echo", "im",
     r"^\s*(?:question|answer|final answer|options|choices|passage|reasoning|relevant knowledge)\s*:"),
    ("role_label", "im", r"^\s*(?:assistant|user|system|human)\s*:"),
    ("prompt_injection", "i",
     r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier)\s+"
     r"(?:instructions|prompts?|messages)"),
    ("prompt_injection", "i",
     r"\b(?:new|updated|revised|override)\s+(?:system\s+)?instructions\s*:"
     r"|\b(?:reveal|print|show|repeat|output)\s+(?:your|the)\s+(?:system\s+)?(?:prompt|instructions)\b"),
    ("prompt_delimiter", "i", r"</input\s*>"),
    ("chat_message_json", "i", r"[\"']role[\"']\s*:\s*[\"'](?:system|user|assistant|developer|tool)[\"']"),
    ("fenced_role", "im", r"^\s*```\s*(?:system|assistant|user|developer)\b"),
    ("assistant_chatter", "i", r"\bas an ai\b"),
    ("assistant_chatter", "im", r"^\s*(?:sure|certainly|of course|okay)\b[ ,.!]*(?:here|below)\b"),
    ("assistant_chatter", "i",
     r"\bhere(?:\s+is|\s+are|'s)\s+(?:a|an|the|your|some)\s+(?:new|similar|rewritten|generated|different)\s+"
     r"(?:question|item|example|problem)s?\b"),
)


def _scoped(flags: str, pattern: str) -> str:
    return f"(?{flags}:{pattern})" if flags else f"(?:{pattern})"


def combined_marker_pattern() -> str:
    """Every marker in one alternation, each group with its own scoped flags."""
    return "|".join(_scoped(flags, pattern) for _, flags, pattern in TEMPLATE_MARKERS)


@lru_cache(maxsize=None)
def _compiled() -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((name, re.compile(_scoped(flags, pattern))) for name, flags, pattern in TEMPLATE_MARKERS)


def find_template_markers(text: str | None) -> list[str]:
    """Names of the markers found in `text`, in declaration order, each once (empty when clean)."""
    if not text:
        return []
    found: list[str] = []
    for name, regex in _compiled():
        if name not in found and regex.search(text):
            found.append(name)
    return found
