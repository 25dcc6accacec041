"""`prompt_leak`: generated text that carries our own prompt — its fixed sentences or its markers.

Issue 29: a small model wrote a passage that repeats the generation prompt's instructions, and
validation passed it: `udfs/validation.py` knows other models' chat templates, not ours. Text that
repeats the prompt is also what injected or looping output looks like. Nothing here is a hand-written
list: both lists are derived, on first use, from the prompt templates and from how `udfs/prompts.py`
renders them, so a sentence added to a template is detected from then on.

- Fixed sentences (`prompt_sentences`): every template file `udfs/prompts/*.txt` (generation,
  enrichment, judge), parsed by `udfs.prompts.parse_template`; each part (system, user) is cut at
  its `$placeholders` (what varies per request is not fixed text), at line breaks and after `.`,
  `!`, `?`, `;`, `:`; list bullets ("- ", "1. ") are dropped; each piece goes through
  `udfs.textnorm.normalize_text` (case, spacing, punctuation, unicode: the comparison form every
  curation filter uses) and is kept when it has at least `MIN_SENTENCE_WORDS` words. A piece is
  found in a text when it is a whole-word substring of the text's normalized form.
  `MIN_SENTENCE_WORDS` = 5, measured on every string of every record of the benchmark mirror
  (/work/shared/data/hf: BoolQ, ARC, GSM8K, WinoGrande, WebQuestions, MMLU, SciQ, NQ-open, PIQA;
  69,893 records, 322,803 strings): pieces of 3+ words hit 12 texts ("yes or no", "exactly one
  of"), of 4+ words none, of 5+ words none (one word of margin); no marker hits any text either.
- Markers (`prompt_markers`), regexes in the subset Python and Java read alike (as
  `udfs/validation.py`), matched on the raw text:
  - the contract header prefix (`udfs.prompts.HEADER_PREFIX`, "taskseed-prompt:");
  - the template section headers on a line of their own ("[system]", "[user]": read from the files);
  - the tags the renderer puts around the input JSON ("<input>", "</input>": read from a rendered
    probe prompt);
  - the JSON field labels the prompts use, quoted and followed by ":" ('"answer_text":',
    '"label_set":', '"final_answer":' ...): the keys of the rendered probe inputs and of the reply
    shapes the templates ask for.

`find_prompt_leaks(texts)` returns the evidence (what was found), `prompt_leak_decision(item)` the
verdict on an item's question, passage, options and answer. Pure; safe in executors.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Iterable, Mapping, Sequence

import yaml

from schemas.answer_formats import ALL_FORMATS, BOOLEAN, CHOICE_FORMATS, LABEL, MCQ
from udfs.prompts import HEADER_PREFIX, parse_template, render_enrichment_messages, render_generation_messages
from udfs.textnorm import normalize_text

MIN_SENTENCE_WORDS = 5
PROMPT_LEAK = "prompt_leak"
NO_LEAK = "no_prompt_text"

_PIECE_END = re.compile(r"(?<=[.!?;:])\s+|\n")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SECTION_LINE = re.compile(r"^\[([A-Za-z_]+)\]\s*$", re.MULTILINE)
_QUOTED_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')
_TAG_LINE = re.compile(r"^(</?[A-Za-z_]+>)$", re.MULTILINE)


def _template_texts(template_dir: str | Path | None = None) -> list[str]:
    """The raw text of every template file (the packaged `udfs/prompts/`, or `template_dir`)."""
    if template_dir is None:
        files = [f for f in (resources.files("udfs") / "prompts").iterdir() if f.name.endswith(".txt")]
    else:
        files = list(Path(template_dir).glob("*.txt"))
    return [f.read_text("utf-8") for f in sorted(files, key=lambda f: f.name)]


def _parts(text: str) -> tuple[str, str]:
    """(system, user) of one template file, through `udfs.prompts.parse_template` (it validates the
    front matter against the stage and format it names)."""
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    meta = yaml.safe_load(match.group(1)) if match else {}
    template = parse_template(text, str((meta or {}).get("stage")), str((meta or {}).get("answer_format")))
    return template.system, template.user


def fixed_sentences(part: str, min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """The normalized fixed pieces of one template part (see the module docstring), in order,
    each once: cut at placeholders, line breaks and sentence/clause ends, bullets dropped."""
    pieces = Template.pattern.sub("\n", part)
    out: list[str] = []
    for piece in _PIECE_END.split(pieces):
        key = normalize_text(_BULLET.sub("", piece))
        if len(key.split()) >= min_words and key not in out:
            out.append(key)
    return out


@lru_cache(maxsize=None)
def _sentences(template_dir: str | None, min_words: int) -> tuple[str, ...]:
    found: list[str] = []
    for text in _template_texts(template_dir):
        for part in _parts(text):
            found.extend(s for s in fixed_sentences(part, min_words) if s not in found)
    return tuple(found)


def prompt_sentences(template_dir: str | Path | None = None, min_words: int = MIN_SENTENCE_WORDS) -> tuple[str, ...]:
    """Every fixed sentence of every template, normalized (computed once per directory)."""
    return _sentences(None if template_dir is None else str(template_dir), min_words)


def _probe_payload_keys() -> set[str]:
    """The JSON keys of the input blocks `udfs.prompts` renders, for a probe seed of every format."""
    keys: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                keys.add(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for fmt in ALL_FORMATS:
        choices = ["no", "yes"] if fmt == BOOLEAN else ["alpha", "beta"] if fmt in CHOICE_FORMATS else None
        probe = {"question": "probe?", "context": "probe", "choices": choices, "answer_text": "alpha",
                 "seed_id": "probe", "task": "probe"}
        example = dict(probe, seed_id="probe-2", question="probe 2?")
        labels = ["alpha", "beta"] if fmt == LABEL else None
        for messages, _ in (render_generation_messages(probe, [example], fmt, labels),
                            render_enrichment_messages(probe, fmt, labels)):
            content = messages[-1]["content"]
            start, end = content.rfind("<input>\n"), content.rfind("\n</input>")
            walk(json.loads(content[start + len("<input>\n"):end].replace("<\\/input", "</input")))
    return keys


def _probe_tags() -> list[str]:
    """The tags on lines of their own in a rendered prompt's user message ("<input>", "</input>")."""
    messages, _ = render_generation_messages({"question": "probe?", "task": "probe", "answer_text": "x"}, [],
                                             "short_text")
    return sorted(set(_TAG_LINE.findall(messages[-1]["content"])))


@lru_cache(maxsize=None)
def _markers(template_dir: str | None) -> tuple[tuple[str, str], ...]:
    texts = _template_texts(template_dir)
    sections = sorted({name for text in texts for name in _SECTION_LINE.findall(text)})
    keys = _probe_payload_keys() | {k for text in texts for part in _parts(text) for k in _QUOTED_KEY.findall(part)}
    markers = [
        ("prompt_header", r"(?i:" + re.escape(HEADER_PREFIX.strip()) + ")"),
        ("prompt_section", r"(?im:^\s*\[(?:" + "|".join(map(re.escape, sections)) + r")\]\s*$)"),
        ("prompt_tag", "(?i:" + "|".join(re.escape(t[:-1]) + r"\s*>" for t in _probe_tags()) + ")"),
        ("prompt_field_label", r'(?:"(?:' + "|".join(map(re.escape, sorted(keys))) + r')"\s*:)'),
    ]
    return tuple(markers)


def prompt_markers(template_dir: str | Path | None = None) -> tuple[tuple[str, str], ...]:
    """(name, regex) of the prompt's markers (see the module docstring), derived once."""
    return _markers(None if template_dir is None else str(template_dir))


def combined_prompt_marker_pattern(template_dir: str | Path | None = None) -> str:
    """Every prompt marker in one alternation (for Spark SQL `regexp_extract`, as validation's)."""
    return "|".join(pattern for _, pattern in prompt_markers(template_dir))


@lru_cache(maxsize=None)
def _compiled(template_dir: str | None) -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((name, re.compile(p)) for name, p in _markers(template_dir))


def find_prompt_leaks(texts: Iterable[Any], template_dir: str | Path | None = None,
                      min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """What of the prompt the texts carry, as evidence strings: "sentence: <normalized sentence>"
    for each fixed sentence found, "<marker name>: <matched text>" for each marker; [] when clean."""
    key_dir = None if template_dir is None else str(template_dir)
    found: list[str] = []
    raw = [str(t) for t in texts if t is not None and str(t).strip()]
    normalized = [f" {normalize_text(t)} " for t in raw]
    for sentence in prompt_sentences(template_dir, min_words):
        if any(f" {sentence} " in text for text in normalized):
            found.append(f"sentence: {sentence}")
    for name, regex in _compiled(key_dir):
        for text in raw:
            match = regex.search(text)
            if match:
                found.append(f"{name}: {match.group(0)}")
                break
    return found


def item_texts(item: Mapping[str, Any]) -> list[Any]:
    """The generated text of an item the check reads: question, passage, each option, answer."""
    choices: Sequence[Any] = item.get("choices") or []
    return [item.get("question"), item.get("context"), *choices, item.get("answer_text")]


def prompt_leak_decision(item: Mapping[str, Any], template_dir: str | Path | None = None) -> tuple[bool, str, list[str]]:
    """(passed, reason, evidence) for one item: reason `prompt_leak` with what was found, else
    `no_prompt_text` and []."""
    found = find_prompt_leaks(item_texts(item), template_dir)
    return (False, PROMPT_LEAK, found) if found else (True, NO_LEAK, [])
