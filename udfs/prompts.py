"""Prompt rendering for generation and enrichment: pure functions from records to chat messages.

The instruction text lives in versioned template files under `udfs/prompts/` (one per stage and
answer format) so a prompt change is a reviewed data change with its own `prompt_version`, and the
version enters every request_id: a new prompt never reuses ledger rows of the old one.

What code adds around a template is the machine-readable contract of docs/prompt-contract.md, kept
here so no template can get it wrong: the `taskseed-prompt:` header as the system message's first
line, and the `<input>` JSON block that ends the last user message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any, Mapping, Sequence

import yaml

from schemas.answer_formats import ALL_FORMATS, CHOICE_FORMATS, LABEL, MCQ, default_label_set
from udfs.hashing import stable_hash

GENERATE = "generate"
ENRICH = "enrich"
STAGES = (GENERATE, ENRICH)

HEADER_PREFIX = "taskseed-prompt: "
_HEADER_RE = re.compile(r"^taskseed-prompt: (generate|enrich|judge)/([a-z_]+)/(\S+)$")
_INPUT_RE = re.compile(r"<input>\n(.*)\n</input>\s*$", re.DOTALL)
_SECTION_RE = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned template file: a system and a user part with `$placeholders`."""

    stage: str
    answer_format: str
    prompt_version: str
    system: str
    user: str

    @property
    def header(self) -> str:
        return f"{HEADER_PREFIX}{self.stage}/{self.answer_format}/{self.prompt_version}"


def template_filename(stage: str, answer_format: str) -> str:
    return f"{stage}_{answer_format}.txt"


def parse_template(text: str, stage: str, answer_format: str) -> PromptTemplate:
    """Split a template file into front matter, system and user parts.

    The front matter must name the stage and format the file is loaded for, so a copied file whose
    header was not updated fails loudly instead of mislabelling every request.
    """
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)
    if not match:
        raise ValueError(f"{template_filename(stage, answer_format)}: missing '---' front matter")
    meta = yaml.safe_load(match.group(1)) or {}
    if (meta.get("stage"), meta.get("answer_format")) != (stage, answer_format):
        raise ValueError(
            f"{template_filename(stage, answer_format)}: front matter says "
            f"{meta.get('stage')}/{meta.get('answer_format')}"
        )
    version = str(meta.get("prompt_version") or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", version):
        raise ValueError(f"{template_filename(stage, answer_format)}: bad prompt_version {version!r}")
    parts = _SECTION_RE.split(match.group(2))
    # parts = [preamble, "system", text, "user", text]
    if len(parts) != 5 or parts[1] != "system" or parts[3] != "user" or parts[0].strip():
        raise ValueError(f"{template_filename(stage, answer_format)}: needs [system] then [user] sections")
    return PromptTemplate(stage, answer_format, version, parts[2].strip(), parts[4].strip())


@lru_cache(maxsize=None)
def load_template(stage: str, answer_format: str) -> PromptTemplate:
    """Read a packaged template once per process (executors render millions of prompts)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if answer_format not in ALL_FORMATS:
        raise ValueError(f"unknown answer_format {answer_format!r}; expected one of {ALL_FORMATS}")
    text = (resources.files("udfs") / "prompts" / template_filename(stage, answer_format)).read_text("utf-8")
    return parse_template(text, stage, answer_format)


def prompt_versions() -> dict[str, str]:
    """`stage/answer_format` -> prompt_version for every template, e.g. for MLflow params."""
    return {
        f"{stage}/{fmt}": load_template(stage, fmt).prompt_version for stage in STAGES for fmt in ALL_FORMATS
    }


# --- rendering -------------------------------------------------------------------------------


def _choices_or_none(record: Mapping[str, Any], answer_format: str) -> list[str] | None:
    """Options only where they are part of the frame: for open formats the normalized record may
    keep the accepted answers in `choices` (WebQuestions), which must never reach a prompt."""
    choices = record.get("choices")
    if answer_format not in CHOICE_FORMATS or choices is None or len(choices) == 0:
        return None
    return [str(c) for c in choices]


def _none_if_blank(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _item_view(record: Mapping[str, Any], answer_format: str, with_answer: bool) -> dict[str, Any]:
    """The fields a prompt shows of a record: never ids, splits or the source record."""
    view: dict[str, Any] = {
        "question": record.get("question") or "",
        "context": _none_if_blank(record.get("context")),
        "choices": _choices_or_none(record, answer_format),
    }
    if with_answer:
        view["answer_text"] = record.get("answer_text")
    return view


def _resolve_label_set(answer_format: str, label_set: Sequence[str] | None, choices: list[str] | None):
    if label_set:
        return [str(label) for label in label_set]
    labels = default_label_set(answer_format, choices)
    if answer_format == LABEL and not labels:
        raise ValueError("answer_format 'label' needs a label_set (or a seed with choices)")
    return labels


def _same_record(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("seed_id") and a.get("seed_id") == b.get("seed_id"):
        return True
    return (a.get("question"), a.get("context")) == (b.get("question"), b.get("context"))


def select_examples(
    seed: Mapping[str, Any], examples: Sequence[Mapping[str, Any]], task: str, answer_format: str
) -> list[dict]:
    """Few-shot exemplars, checked: same task and split as the seed, and never the seed itself.

    A mismatched task or split is a caller bug that would leak another task (or held-out data) into
    the prompt, so it raises; the seed itself is dropped because sampling exemplars from the seed's
    own split naturally draws it sometimes, and showing it twice adds nothing.
    """
    chosen = []
    for example in examples:
        if example.get("task") not in (None, task):
            raise ValueError(f"few-shot example from task {example.get('task')!r}, expected {task!r}")
        if example.get("split") is not None and seed.get("split") is not None and example["split"] != seed["split"]:
            raise ValueError(f"few-shot example from split {example['split']!r}, seed is from {seed['split']!r}")
        if not _same_record(example, seed):
            chosen.append(_item_view(example, answer_format, with_answer=True))
    return chosen


def _input_block(payload: Mapping[str, Any]) -> str:
    """The payload as one JSON line between `<input>` tags. A `</input` inside a value (a seed
    that carries the delimiter, issue 14) is written `<\\/input` — the same string to any JSON
    reader — so the block has exactly one closing tag; other text renders unchanged (request ids
    of ordinary seeds do not move)."""
    return "<input>\n" + json.dumps(payload, ensure_ascii=False).replace("</input", "<\\/input") + "\n</input>"


def _placeholders(task: str, answer_format: str, n_choices: int | None, labels: list[str] | None) -> dict:
    return {
        "task": task,
        "answer_format": answer_format,
        "n_choices": n_choices if n_choices is not None else "",
        "label_list": ", ".join(json.dumps(label, ensure_ascii=False) for label in labels or []),
    }


def _messages(template: PromptTemplate, values: Mapping[str, Any], payload: Mapping[str, Any]) -> list[dict]:
    system = template.header + "\n" + Template(template.system).substitute(values)
    user = Template(template.user).substitute(values) + "\n\n" + _input_block(payload)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_generation_messages(
    seed: Mapping[str, Any],
    examples: Sequence[Mapping[str, Any]],
    answer_format: str,
    label_set: Sequence[str] | None = None,
    task: str | None = None,
) -> tuple[list[dict], str]:
    """Messages asking for one new item in the seed's task frame, and the template's prompt_version.

    The seed's answer is shown (as semantic text) so the model sees the full frame; the option
    count and label set are stated both in the instructions and in the input.
    """
    task = task or seed.get("task")
    if not task:
        raise ValueError("task is required (argument or seed['task'])")
    template = load_template(GENERATE, answer_format)
    choices = _choices_or_none(seed, answer_format)
    if answer_format == MCQ and not choices:
        raise ValueError("an mcq seed needs choices")
    labels = _resolve_label_set(answer_format, label_set, choices)
    n_choices = len(choices) if choices else None
    payload = {
        "task": task,
        "answer_format": answer_format,
        "seed": _item_view(seed, answer_format, with_answer=True),
        "n_choices": n_choices,
        "label_set": labels,
        "examples": select_examples(seed, examples, task, answer_format),
    }
    values = _placeholders(task, answer_format, n_choices, labels)
    return _messages(template, values, payload), template.prompt_version


def render_enrichment_messages(
    item: Mapping[str, Any],
    answer_format: str,
    label_set: Sequence[str] | None = None,
    task: str | None = None,
) -> tuple[list[dict], str]:
    """Messages asking the model to solve an item: knowledge, reasoning, final answer.

    The item's answer is never shown: enrichment samples are independent votes on it.
    """
    task = task or item.get("task")
    if not task:
        raise ValueError("task is required (argument or item['task'])")
    template = load_template(ENRICH, answer_format)
    choices = _choices_or_none(item, answer_format)
    if answer_format == MCQ and not choices:
        raise ValueError("an mcq item needs choices")
    labels = _resolve_label_set(answer_format, label_set, choices)
    payload = {
        "task": task,
        "answer_format": answer_format,
        "item": _item_view(item, answer_format, with_answer=False),
        "label_set": labels,
    }
    values = _placeholders(task, answer_format, len(choices) if choices else None, labels)
    return _messages(template, values, payload), template.prompt_version


# --- request identity and the inverse of rendering -------------------------------------------


def compute_request_id(
    model: str,
    prompt_version: str,
    messages: Sequence[Mapping[str, Any]],
    sampling_params: Mapping[str, Any],
    sample_index: int,
) -> str:
    """The ledger key of one endpoint call (DESIGN §4).

    Everything that changes what the endpoint is asked goes in, so a changed prompt, model or
    temperature is a new call, while a rerun of the same call finds its terminal ledger row. The
    sample index separates the K (or M) samples of one prompt at non-zero temperature.
    """
    return stable_hash(
        "llm_request/v1",
        model,
        prompt_version,
        [dict(m) for m in messages],
        dict(sampling_params),
        int(sample_index),
    )


def parse_prompt_header(system_content: str) -> tuple[str, str, str]:
    """(stage, answer_format, prompt_version) from a system message's first line."""
    first_line = system_content.split("\n", 1)[0].strip()
    match = _HEADER_RE.match(first_line)
    if not match:
        raise ValueError(f"not a taskseed prompt header: {first_line[:80]!r}")
    return match.group(1), match.group(2), match.group(3)


def extract_input_payload(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `<input>` JSON object that ends the last user message (what the simulator reads)."""
    user_messages = [m for m in messages if m.get("role") == "user"]
    if not user_messages:
        raise ValueError("no user message")
    match = _INPUT_RE.search(user_messages[-1].get("content") or "")
    if not match:
        raise ValueError("last user message does not end with an <input> block")
    return json.loads(match.group(1))
