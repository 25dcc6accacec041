"""Prompt rendering: every format renders, the contract markers are exact, few-shot exemplars come
only from what the caller passed (same task and split, never the seed), and request_id is stable
and changes with each of its inputs."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from schemas.llm_outputs import (
    ENRICHMENT_OUTPUT_SCHEMA,
    GENERATION_OUTPUT_SCHEMA,
    output_schema,
    response_format_for,
)
from tests.unit import seed_records
from schemas.answer_formats import ALL_FORMATS, BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT
from udfs.prompts import (
    ENRICH,
    GENERATE,
    STAGES,
    compute_request_id,
    extract_input_payload,
    load_template,
    parse_prompt_header,
    parse_template,
    prompt_versions,
    render_enrichment_messages,
    render_generation_messages,
)

FREEFORM_SEED = {
    "task": "summarize_handwritten", "split": "train", "answer_format": FREEFORM,
    "question": "Summarize in one sentence: The council voted to extend library hours on weekends.",
    "context": None, "choices": None, "answer_text": "The council extended weekend library hours.",
}
CODE_SEED = {
    "task": "code_handwritten", "split": "train", "answer_format": CODE,
    "question": 'def add(a, b):\n    """Return the sum of a and b."""\n', "context": None, "choices": None,
    "answer_text": "def add(a, b):\n    return a + b\n",
}


def seeds_by_format() -> dict[str, tuple[dict, list[dict], list[str] | None]]:
    """(seed, same-task examples, label_set) per answer format, real records where the mirror has them."""
    arc = seed_records.arc_easy(4)
    gsm = seed_records.gsm8k(3)
    boolq = seed_records.boolq(3)
    webqs = seed_records.webqs(3)
    nli = seed_records.nli_seed()
    return {
        MCQ: (arc[0], arc[1:], None),
        BOOLEAN: (boolq[0], boolq[1:], None),
        LABEL: (nli, [], ["entailment", "neutral", "contradiction"]),
        NUMERIC: (gsm[0], gsm[1:], None),
        SHORT_TEXT: (webqs[0], webqs[1:], None),
        FREEFORM: (FREEFORM_SEED, [], None),
        CODE: (CODE_SEED, [], None),
    }


@pytest.mark.parametrize("answer_format", ALL_FORMATS)
def test_generation_prompt_follows_the_contract(answer_format):
    seed, examples, labels = seeds_by_format()[answer_format]
    messages, version = render_generation_messages(seed, examples, answer_format, labels, seed["task"])

    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].split("\n", 1)[0] == f"taskseed-prompt: generate/{answer_format}/{version}"
    assert parse_prompt_header(messages[0]["content"]) == (GENERATE, answer_format, version)
    assert re.search(r"\n<input>\n\{.*\}\n</input>$", messages[-1]["content"], re.DOTALL)
    assert "$" not in messages[0]["content"].replace("$1", "")  # every placeholder substituted

    payload = extract_input_payload(messages)
    assert set(payload) == {"task", "answer_format", "seed", "n_choices", "label_set", "examples"}
    assert payload["task"] == seed["task"] and payload["answer_format"] == answer_format
    assert payload["seed"] == {
        "question": seed["question"], "context": seed["context"],
        "choices": seed["choices"], "answer_text": seed["answer_text"],
    }
    assert payload["n_choices"] == (len(seed["choices"]) if seed["choices"] else None)


@pytest.mark.parametrize("answer_format", ALL_FORMATS)
def test_enrichment_prompt_follows_the_contract_and_hides_the_answer(answer_format):
    item, _, labels = seeds_by_format()[answer_format]
    messages, version = render_enrichment_messages(item, answer_format, labels, item["task"])

    assert parse_prompt_header(messages[0]["content"]) == (ENRICH, answer_format, version)
    payload = extract_input_payload(messages)
    assert payload == {
        "task": item["task"],
        "answer_format": answer_format,
        "item": {"question": item["question"], "context": item["context"], "choices": item["choices"]},
        "label_set": payload["label_set"],
    }
    if answer_format not in (BOOLEAN, LABEL):
        assert payload["label_set"] is None
    assert "answer_text" not in json.dumps(payload)


def test_accepted_answers_kept_in_choices_of_open_formats_never_reach_a_prompt():
    webqs = dict(seed_records.webqs(1)[0], choices=["Padmé Amidala", "Queen Amidala"])  # as normalize keeps them
    messages, _ = render_enrichment_messages(webqs, SHORT_TEXT, None, "webqs")
    assert extract_input_payload(messages)["item"]["choices"] is None
    assert "Amidala" not in messages[-1]["content"]
    messages, _ = render_generation_messages(webqs, [webqs], SHORT_TEXT, None, "webqs")
    payload = extract_input_payload(messages)
    assert payload["seed"]["choices"] is None and payload["n_choices"] is None


def test_mcq_prompt_states_the_seed_option_count():
    winogrande = seed_records.winogrande(1)[0]
    messages, _ = render_generation_messages(winogrande, [], MCQ, None, "winogrande")
    assert "exactly 2 answer options" in messages[0]["content"]
    assert extract_input_payload(messages)["n_choices"] == 2


def test_label_and_boolean_prompts_carry_their_label_set():
    seed, _, labels = seeds_by_format()[LABEL]
    messages, _ = render_generation_messages(seed, [], LABEL, labels, seed["task"])
    assert '"entailment", "neutral", "contradiction"' in messages[0]["content"]
    assert extract_input_payload(messages)["label_set"] == labels

    boolq = seed_records.boolq(1)[0]
    messages, _ = render_generation_messages(boolq, [], BOOLEAN, None, "boolq")
    assert extract_input_payload(messages)["label_set"] == ["no", "yes"]


def test_label_format_without_labels_is_a_caller_error():
    seed = dict(seed_records.nli_seed(), choices=None)
    with pytest.raises(ValueError, match="label_set"):
        render_generation_messages(seed, [], LABEL, None, seed["task"])


def test_few_shot_examples_are_exactly_the_given_ones_minus_the_seed():
    arc = seed_records.arc_easy(4)
    seed, examples = arc[0], [arc[2], arc[0], arc[3]]
    messages, _ = render_generation_messages(seed, examples, MCQ, None, "arc_easy")
    shown = extract_input_payload(messages)["examples"]
    assert [e["question"] for e in shown] == [arc[2]["question"], arc[3]["question"]]
    assert arc[1]["question"] not in messages[-1]["content"]


def test_few_shot_examples_from_another_task_or_split_are_refused():
    arc = seed_records.arc_easy(2)
    other_task = seed_records.winogrande(1)[0]
    with pytest.raises(ValueError, match="task"):
        render_generation_messages(arc[0], [other_task], MCQ, None, "arc_easy")
    heldout_like = dict(arc[1], split="test")
    with pytest.raises(ValueError, match="split"):
        render_generation_messages(arc[0], [heldout_like], MCQ, None, "arc_easy")


def test_rendering_is_deterministic_and_unicode_survives():
    webqs = seed_records.webqs(1)[0]  # answer "Padmé Amidala"
    first = render_generation_messages(webqs, [], SHORT_TEXT, None, "webqs")
    assert first == render_generation_messages(webqs, [], SHORT_TEXT, None, "webqs")
    assert "Padmé Amidala" in first[0][-1]["content"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("answer_format", ALL_FORMATS)
def test_every_template_loads_with_a_matching_front_matter(stage, answer_format):
    template = load_template(stage, answer_format)
    prefix = "gen-" if stage == GENERATE else "enr-"
    assert template.prompt_version.startswith(prefix + answer_format.replace("_", "-"))
    assert "JSON" in template.system and "$task" in template.system + template.user


def test_prompt_versions_are_unique_per_template():
    versions = prompt_versions()
    assert len(versions) == len(STAGES) * len(ALL_FORMATS)
    assert len(set(versions.values())) == len(versions)


def test_a_template_whose_front_matter_names_another_format_is_refused():
    text = "---\nstage: generate\nanswer_format: boolean\nprompt_version: x-v1\n---\n[system]\nA\n[user]\nB\n"
    with pytest.raises(ValueError, match="front matter"):
        parse_template(text, GENERATE, MCQ)


# --- request_id --------------------------------------------------------------------------------

BASE = dict(
    model="meta/llama-3.1-70b-instruct",
    prompt_version="gen-mcq-v1",
    messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
    sampling_params={"temperature": 0.9, "max_tokens": 1024},
    sample_index=0,
)


def test_request_id_is_stable():
    assert compute_request_id(**BASE) == compute_request_id(**BASE)
    reordered = dict(BASE, sampling_params={"max_tokens": 1024, "temperature": 0.9})
    assert compute_request_id(**reordered) == compute_request_id(**BASE)
    assert re.fullmatch(r"[0-9a-f]{32}", compute_request_id(**BASE))


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other-model"},
        {"prompt_version": "gen-mcq-v2"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u "}]},
        {"sampling_params": {"temperature": 0.7, "max_tokens": 1024}},
        {"sampling_params": {"temperature": 0.9, "max_tokens": 1024, "top_p": 0.95}},
        {"sample_index": 1},
    ],
    ids=["model", "prompt_version", "messages", "temperature", "extra_param", "sample_index"],
)
def test_request_id_changes_with_each_input(change):
    assert compute_request_id(**dict(BASE, **change)) != compute_request_id(**BASE)


# --- output schemas ----------------------------------------------------------------------------


def _assert_strict(schema: dict) -> None:
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


def test_output_schemas_are_strict_mode_and_match_the_contract():
    _assert_strict(GENERATION_OUTPUT_SCHEMA)
    _assert_strict(ENRICHMENT_OUTPUT_SCHEMA)
    assert list(ENRICHMENT_OUTPUT_SCHEMA["properties"]) == ["knowledge", "reasoning", "final_answer"]
    jsonschema.validate({"question": "q", "context": None, "choices": None, "answer": "4"}, GENERATION_OUTPUT_SCHEMA)
    jsonschema.validate({"question": "q", "context": "c", "choices": ["a", "b"], "answer": "a"}, GENERATION_OUTPUT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"question": "q", "choices": None, "answer": "a"}, GENERATION_OUTPUT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"knowledge": "", "reasoning": "", "final_answer": "a", "x": 1}, ENRICHMENT_OUTPUT_SCHEMA)


def test_response_format_restricts_boolean_and_label_answers():
    fmt = response_format_for(GENERATE, BOOLEAN)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "taskseed_generate_boolean"
    assert fmt["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["no", "yes"]
    labels = ["entailment", "neutral", "contradiction"]
    schema = output_schema(ENRICH, LABEL, labels)
    _assert_strict(schema)
    assert schema["properties"]["final_answer"]["enum"] == labels
    assert "enum" not in output_schema(ENRICH, MCQ)["properties"]["final_answer"]
    assert "enum" not in GENERATION_OUTPUT_SCHEMA["properties"]["answer"]  # the base is not mutated
