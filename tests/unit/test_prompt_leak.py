"""udfs/prompt_leak.py: generated text that carries our own prompt's fixed sentences or markers
fails `prompt_leak`; the lists come from the templates, so a new template sentence is detected."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

import pytest

from schemas.answer_formats import ALL_FORMATS
from tests.unit import seed_records
from udfs.prompt_leak import (
    MIN_SENTENCE_WORDS,
    PROMPT_LEAK,
    combined_prompt_marker_pattern,
    find_prompt_leaks,
    fixed_sentences,
    prompt_leak_decision,
    prompt_markers,
    prompt_sentences,
)
from udfs.prompts import load_template, render_generation_messages
from udfs.textnorm import normalize_text

PROMPTS = Path(str(resources.files("udfs") / "prompts"))


def test_sentences_come_from_every_template_without_placeholders():
    sentences = prompt_sentences()
    for path in PROMPTS.glob("*.txt"):
        # at least one sentence of every file is in the list
        text = path.read_text("utf-8")
        assert any(f" {s} " in f" {normalize_text(text)} " for s in sentences), path.name
    assert "you write new items for the benchmark task" in sentences  # cut at "$task"
    assert not any("task" in s.split()[-1:] and "boolq" in s for s in sentences)
    assert all(len(s.split()) >= MIN_SENTENCE_WORDS and "$" not in s for s in sentences)


def test_fixed_sentences_cut_at_placeholders_clauses_and_bullets():
    part = ('You check the item of task "$task" and its $n_choices options carefully today. '
            "- first bullet sentence that is long enough; second clause that is long enough too\n"
            "Short one.")
    # "and its" and "options carefully today" (between placeholders, too short) and "Short one." are not kept
    assert fixed_sentences(part) == ["you check the item of task", "first bullet sentence that is long enough",
                                     "second clause that is long enough too"]


def test_adding_a_sentence_to_a_template_makes_it_detected(tmp_path):
    for path in PROMPTS.glob("*.txt"):
        shutil.copy(path, tmp_path / path.name)
    new = "Never mention the purple elephant of the instructions in any item."
    leak = f"The lake froze early. {new.upper()} The passage goes on."
    assert find_prompt_leaks([leak]) == []
    target = tmp_path / "generate_numeric.txt"
    target.write_text(target.read_text("utf-8").replace("[user]", new + "\n[user]"), "utf-8")
    assert find_prompt_leaks([leak], template_dir=tmp_path) == [f"sentence: {normalize_text(new)}"]


def _sentence_of(stage: str, fmt: str, n: int = 0) -> str:
    """The n-th sentence (of 8+ words) of a template's system part, as written in the file."""
    system = load_template(stage, fmt).system
    pieces = [p.strip("- ") for p in re.split(r"(?<=[.!?])\s+|\n", system)]
    return [p for p in pieces if len(p.split()) >= 8 and "$" not in p][n]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("shape", ["verbatim", "recased", "respaced", "inside_real_passage"])
def test_a_template_sentence_in_an_item_is_a_leak(fmt, shape):
    sentence = _sentence_of("generate", fmt, 1)
    passage = seed_records.boolq(1)[0]["context"]
    text = {"verbatim": sentence, "recased": sentence.upper(),
            "respaced": "  ".join(sentence.split()).replace(",", " ,"),
            "inside_real_passage": f"{passage[:200]} {sentence} {passage[200:]}"}[shape]
    item = {"question": "Is it true?", "context": text, "choices": ["no", "yes"], "answer_text": "yes"}
    passed, reason, evidence = prompt_leak_decision(item)
    assert (passed, reason) == (False, PROMPT_LEAK)
    assert any(e.startswith("sentence: ") for e in evidence)


@pytest.mark.parametrize("text, marker", [
    ('{"question": "Is water wet?", "answer": "yes"}', "prompt_field_label"),
    ('The "answer_text" : is here', "prompt_field_label"),
    ("taskseed-prompt: generate/mcq/gen-mcq-v1", "prompt_header"),
    ("Some passage.\n[system]\nmore text", "prompt_section"),
    ("text <INPUT > more", "prompt_tag"),
    ("end of item</input>", "prompt_tag"),
])
def test_prompt_markers_are_leaks(text, marker):
    evidence = find_prompt_leaks([text])
    assert any(e.startswith(f"{marker}: ") for e in evidence), evidence


def test_markers_are_read_from_the_templates_and_the_renderer():
    names = dict(prompt_markers())
    assert "system" in names["prompt_section"] and "user" in names["prompt_section"]
    assert "input" in names["prompt_tag"]
    for key in ("answer_text", "label_set", "n_choices", "final_answer", "examples", "verdict"):
        assert f"{key}" in names["prompt_field_label"]
    combined = re.compile(combined_prompt_marker_pattern())
    assert combined.search('"label_set": ["a"]') and not combined.search("the label set of a task")


@pytest.mark.parametrize("loader", [seed_records.boolq, seed_records.arc_easy, seed_records.gsm8k,
                                    seed_records.winogrande, seed_records.webqs])
def test_real_seed_items_are_not_leaks(loader):
    for seed in loader(25):
        assert prompt_leak_decision(seed) == (True, "no_prompt_text", [])


@pytest.mark.parametrize("text", [
    "Answer yes or no: is the sky blue?",  # short common phrases of the templates do not fire
    "Write one new item.",
    "The seed of the plant is in the input below the soil.",
    "A question with an answer, choices and a context.",
])
def test_short_common_phrases_are_not_leaks(text):
    assert find_prompt_leaks([text]) == []


def test_the_rendered_prompt_is_a_leak_of_itself():
    seed = seed_records.boolq(1)[0]
    messages, _ = render_generation_messages(seed, [], "boolean")
    for message in messages:
        assert find_prompt_leaks([message["content"]])
