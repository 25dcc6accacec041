"""Parsing and validation over messy model output, with real benchmark seeds as the frame."""

from __future__ import annotations

import json

import pytest

from tests.unit import seed_records
from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT
from udfs.parsing import (
    OutputRejected,
    ParseError,
    ValidationError,
    answers_agree,
    extract_json_object,
    latex_to_text,
    normalize_boolean,
    normalize_final_answer,
    normalize_number,
    normalize_short_text,
    numbers_in_text,
    option_problem,
    parse_enrichment,
    parse_generated_item,
    recover_final_answer,
    resolve_choice,
)

ARC = seed_records.arc_easy(1)[0]  # 4 options
WINOGRANDE = seed_records.winogrande(1)[0]  # 2 options
GSM8K = seed_records.gsm8k(1)[0]
BOOLQ = seed_records.boolq(1)[0]
WEBQS = seed_records.webqs(1)[0]
NLI = seed_records.nli_seed()
NLI_LABELS = ["entailment", "neutral", "contradiction"]

NEW_ARC = {
    "question": "Which process lets plants turn sunlight into chemical energy?",
    "context": None,
    "choices": ["respiration", "photosynthesis", "transpiration", "germination"],
    "answer": "photosynthesis",
}
NEW_ARC_JSON = json.dumps(NEW_ARC)


# --- extract_json_object ---------------------------------------------------------------------

GOOD = {"question": "Q?", "answer": "A"}


@pytest.mark.parametrize(
    "text",
    [
        '{"question": "Q?", "answer": "A"}',
        '```json\n{"question": "Q?", "answer": "A"}\n```',
        '```\n{"question": "Q?", "answer": "A"}\n```',
        'Sure! Here is a new item:\n\n{"question": "Q?", "answer": "A"}\n\nLet me know if you need more.',
        '{"question": "Q?", "answer": "A",}',
        '{"question": "Q?", "answer": "A", }\n',
        "{'question': 'Q?', 'answer': 'A'}",
        "{\u201cquestion\u201d: \u201cQ?\u201d, \u201canswer\u201d: \u201cA\u201d}",
        '<think>The user wants {a new item}. Let me think.</think>\n{"question": "Q?", "answer": "A"}',
        '[{"question": "Q?", "answer": "A"}]',
        '"{\\"question\\": \\"Q?\\", \\"answer\\": \\"A\\"}"',
        '\ufeff{"question": "Q?", "answer": "A"}',
        'Example: {"task": "arc_easy"}\nAnswer: {"question": "Q?", "answer": "A"}',
    ],
    ids=["plain", "json_fence", "bare_fence", "prose_around", "trailing_comma", "trailing_comma_space",
         "single_quotes", "smart_quotes", "think_block", "wrapped_in_list", "double_encoded", "bom",
         "echo_then_answer"],
)
def test_extract_json_object_tolerates_messy_wrapping(text):
    assert extract_json_object(text, expected_keys=("question", "answer")) == GOOD


def test_extract_keeps_quotes_and_apostrophes_inside_values():
    text = "{'question': \"Who's the author of \u201cDune\u201d?\", 'answer': 'Frank Herbert', 'ok': True, 'x': None}"
    assert extract_json_object(text) == {
        "question": "Who's the author of \u201cDune\u201d?", "answer": "Frank Herbert", "ok": True, "x": None,
    }


def test_extract_escapes_raw_newlines_inside_strings():
    assert extract_json_object('{"question": "line one\nline two", "answer": "B"}')["question"] == "line one\nline two"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("<think>hmm</think>", "empty"),
        ("I cannot help with that request.", "no_json"),
        ('{"question": "Which gas do plants absorb?", "choices": ["oxygen", "carbon', "truncated_json"),
        ('```json\n{"question": "Q?", "answer": "A"', "truncated_json"),
        ('Example: {"task": "x"} then {"question": "cut off', "truncated_json"),
        ('["a", "b"]', "not_an_object"),
        ("42", "not_an_object"),
        ('{"question": "Q?" "answer": "A"}', "invalid_json"),
        ("{question: Q?, answer: A}", "invalid_json"),
    ],
    ids=["empty", "whitespace", "none", "only_think", "refusal", "truncated", "truncated_fence",
         "echo_then_truncated", "array", "number", "missing_comma", "unquoted"],
)
def test_extract_json_object_reasons(text, reason):
    with pytest.raises(ParseError) as err:
        extract_json_object(text, expected_keys=("question", "answer"))
    assert err.value.reason == reason


# --- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$1,000.00", "1000"), ("1000.0", "1000"), ("1,000", "1000"), ("1000", "1000"), (" 1000. ", "1000"),
        ("-3.50", "-3.5"), ("\u22125", "-5"), (".5", "0.5"), ("1e3", "1000"), ("50%", "50"), ("3/4", "0.75"),
        ("2/6", "1/3"), ("£12", "12"), ("-$5", "-5"), ("0.0", "0"), (1000.0, "1000"), (72, "72"),
        ("72 clips", None), ("12,34", None), ("", None), ("one", None), ("1/0", None), (True, None), (None, None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_numbers_in_text():
    assert numbers_in_text("She paid $1,200 for 3 chairs, i.e. 400.50 each; -2 left") == ["1200", "3", "400.5", "-2"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"), ("  an   Apple ", "apple"), ("Padmé Amidala", "padmé amidala"),
        ("\u201cQuoted,\u201d she said.", "quoted she said"), ("", ""), (None, ""),
    ],
)
def test_normalize_short_text(text, expected):
    assert normalize_short_text(text) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("yes", "yes"), ("Yes.", "yes"), ("YES", "yes"), ("True", "yes"), (True, "yes"), ("yes, it is", "yes"),
        ("no", "no"), ("No.", "no"), ("false", "no"), (False, "no"), ("No, because the passage says otherwise", "no"),
        ("maybe", None), ("not sure", None), ("", None), (None, None),
    ],
)
def test_normalize_boolean(value, expected):
    assert normalize_boolean(value) == expected


@pytest.mark.parametrize(
    "a, b, answer_format, agree",
    [
        ("$1,000", "1000.0", NUMERIC, True),
        ("1000", "1001", NUMERIC, False),
        ("72", "seventy-two", NUMERIC, True),  # number words are numbers (issue 25)
        ("Yes.", "true", BOOLEAN, True),
        ("yes", "no", BOOLEAN, False),
        ("Not_Entailment", "not entailment", LABEL, True),
        ("entailment", "not entailment", LABEL, False),
        ("The Padmé Amidala", "padmé amidala.", SHORT_TEXT, True),
        ("food", "Food", MCQ, True),
        ("food", "water", MCQ, False),
        ("```python\nx = 1\n```", "x  =  1", CODE, True),
        (None, "x", SHORT_TEXT, False),
        (r"\frac{1}{2}", "0.5", NUMERIC, True),
        (r"\boxed{\$9{,}500}", "9500", NUMERIC, True),
        ("5 and 7", "7", NUMERIC, False),
        (r"\text{Paris}", "paris", SHORT_TEXT, True),
        ("**Yes**", "yes", BOOLEAN, True),
        (r"$\text{neutral}$", "Neutral", LABEL, True),
        ("", "", SHORT_TEXT, False),
    ],
)
def test_answers_agree(a, b, answer_format, agree):
    assert answers_agree(a, b, answer_format) is agree


# --- choices ---------------------------------------------------------------------------------

OPTIONS = ["carbon dioxide", "food", "protection", "water"]


@pytest.mark.parametrize(
    "answer, index",
    [
        ("food", 1), ("Food.", 1), (" water ", 3), ("B", 1), ("(B)", 1), ("B.", 1), ("b", 1), ("[D]", 3),
        ("Option C", 2), ("Answer: B", 1), ("2", 1), ("(4)", 3), ("B) food", 1), ("(B) Food", 1),
        ("E", None), ("5", None), ("0", None), ("C) food", None), ("sunlight", None), ("", None), (None, None),
    ],
)
def test_resolve_choice(answer, index):
    assert resolve_choice(answer, OPTIONS) == index


def test_letters_are_text_when_the_options_are_letters():
    assert resolve_choice("B", ["A", "B", "C", "D"]) == 1
    assert resolve_choice("E", ["A", "B", "C", "D"]) is None


def test_numbers_are_text_when_the_options_mention_numbers():
    assert resolve_choice("3", ["2 apples", "3 apples", "4 apples"]) is None
    assert resolve_choice("3", ["1", "2", "3", "4"]) == 2
    assert resolve_choice("B", ["2 apples", "3 apples", "4 apples"]) == 1


# --- generated items: mcq --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        NEW_ARC_JSON,
        f"```json\n{NEW_ARC_JSON}\n```",
        f"Here is a new question in the same style:\n{NEW_ARC_JSON}\nI hope this helps!",
        NEW_ARC_JSON.replace('"germination"]', '"germination",]'),
        json.dumps(dict(NEW_ARC, answer="B")),
        json.dumps(dict(NEW_ARC, answer="(B)")),
        json.dumps(dict(NEW_ARC, answer="B. photosynthesis")),
        json.dumps(dict(NEW_ARC, answer="2")),
        json.dumps(dict(NEW_ARC, answer="Photosynthesis.")),
        json.dumps(dict(NEW_ARC, choices=["A) respiration", "B) photosynthesis", "C) transpiration", "D) germination"])),
        json.dumps({"Question": NEW_ARC["question"], "options": NEW_ARC["choices"], "correct_answer": "B"}),
    ],
    ids=["plain", "fence", "prose", "trailing_comma", "letter", "paren_letter", "letter_and_text", "number",
         "case_and_punct", "lettered_options", "aliases"],
)
def test_mcq_item_resolves_to_option_text_and_index(text):
    item = parse_generated_item(text, MCQ, ARC, None)
    assert item.choices == NEW_ARC["choices"]
    assert (item.answer_index, item.answer_text) == (1, "photosynthesis")
    assert item.answer_format == MCQ and item.context is None


def test_mcq_item_with_the_seeds_two_options():
    text = json.dumps({
        "question": "Maria lent her umbrella to Jen because _ was going out into the rain.",
        "context": None, "choices": ["Maria", "Jen"], "answer": "Jen",
    })
    item = parse_generated_item(text, MCQ, WINOGRANDE, None)
    assert (item.answer_index, item.answer_text) == (1, "Jen")


@pytest.mark.parametrize(
    "obj, seed, reason",
    [
        (dict(NEW_ARC, choices=NEW_ARC["choices"][:3]), ARC, "wrong_choice_count"),
        (dict(NEW_ARC, choices=NEW_ARC["choices"] + ["osmosis"]), ARC, "wrong_choice_count"),
        (dict(NEW_ARC, choices=["Maria", "Jen", "Tom"], answer="Jen"), WINOGRANDE, "wrong_choice_count"),
        (dict(NEW_ARC, answer="chlorophyll"), ARC, "answer_not_in_choices"),
        (dict(NEW_ARC, answer="E"), ARC, "answer_not_in_choices"),
        (dict(NEW_ARC, answer="C) photosynthesis"), ARC, "answer_not_in_choices"),
        (dict(NEW_ARC, choices=["food", " food.", "water", "air"], answer="water"), ARC, "duplicate_choices"),
        (dict(NEW_ARC, choices=None), ARC, "missing_field"),
        (dict(NEW_ARC, choices="respiration, photosynthesis"), ARC, "wrong_type"),
        ({k: v for k, v in NEW_ARC.items() if k != "answer"}, ARC, "missing_field"),
        ({k: v for k, v in NEW_ARC.items() if k != "question"}, ARC, "missing_field"),
        (dict(NEW_ARC, question="  "), ARC, "empty_question"),
        (dict(NEW_ARC, question="x" * 5000), ARC, "too_long"),
        (dict(NEW_ARC, question=ARC["question"]), ARC, "same_as_seed"),
        (dict(NEW_ARC, question=ARC["question"].upper() + "  "), ARC, "same_as_seed"),
        (dict(NEW_ARC, answer=""), ARC, "empty_answer"),
        (dict(NEW_ARC, question=["not", "a", "string"]), ARC, "wrong_type"),
    ],
    ids=["three_of_four", "five_of_four", "three_of_two", "answer_elsewhere", "letter_out_of_range",
         "letter_text_disagree", "duplicate_options", "null_choices", "choices_string", "no_answer", "no_question",
         "blank_question", "too_long", "copy_of_seed", "copy_of_seed_case", "empty_answer", "question_list"],
)
def test_invalid_mcq_items_are_rejected_with_a_reason(obj, seed, reason):
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), MCQ, seed, None)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "text, reason",
    [("", "empty"), ("Sorry, I can't do that.", "no_json"), (NEW_ARC_JSON[:80], "truncated_json")],
)
def test_unparsable_generation_raises_parse_error(text, reason):
    with pytest.raises(ParseError) as err:
        parse_generated_item(text, MCQ, ARC, None)
    assert err.value.reason == reason


def test_parse_generated_item_accepts_an_already_parsed_object():
    assert parse_generated_item(NEW_ARC, MCQ, ARC, None) == parse_generated_item(NEW_ARC_JSON, MCQ, ARC, None)


# --- generated items: other formats ----------------------------------------------------------

PASSAGE = "Mount Fuji -- Mount Fuji is the highest mountain in Japan, at 3,776 metres, and an active volcano."


@pytest.mark.parametrize(
    "answer, expected",
    [("yes", "yes"), ("Yes.", "yes"), ("TRUE", "yes"), (True, "yes"), ("no", "no"), ("False", "no"), (False, "no")],
)
def test_boolean_items_normalize_to_yes_no(answer, expected):
    obj = {"question": "is mount fuji the highest mountain in japan", "context": PASSAGE, "choices": None,
           "answer": answer}
    item = parse_generated_item(json.dumps(obj), BOOLEAN, BOOLQ, None)
    assert item.answer_text == expected
    assert item.choices == ["no", "yes"] and item.answer_index == ["no", "yes"].index(expected)
    assert item.context == PASSAGE


@pytest.mark.parametrize("answer", ["maybe", "It depends", "unknown"])
def test_boolean_items_reject_other_answers(answer):
    obj = {"question": "is mount fuji in japan", "context": PASSAGE, "choices": None, "answer": answer}
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), BOOLEAN, BOOLQ, None)
    assert err.value.reason == "not_boolean"


@pytest.mark.parametrize(
    "answer, expected",
    [("neutral", "neutral"), ("Neutral", "neutral"), (" CONTRADICTION ", "contradiction"), ("entailment.", "entailment")],
)
def test_label_items_match_the_label_set(answer, expected):
    obj = {"question": "The concert was cancelled.", "context": "The band played to a full hall last night.",
           "choices": None, "answer": answer}
    item = parse_generated_item(json.dumps(obj), LABEL, NLI, NLI_LABELS)
    assert item.answer_text == expected
    assert item.choices == NLI_LABELS and item.answer_index == NLI_LABELS.index(expected)


def test_label_items_reject_labels_outside_the_set():
    obj = {"question": "The hall was empty.", "context": "Nobody came.", "choices": None, "answer": "not_entailment"}
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), LABEL, NLI, NLI_LABELS)
    assert err.value.reason == "label_not_in_set"


def test_label_set_matching_prefers_the_longest_label():
    obj = {"question": "The hall was empty.", "context": "Nobody came.", "choices": None, "answer": "Not entailment"}
    item = parse_generated_item(json.dumps(obj), LABEL, NLI, ["entailment", "not_entailment"])
    assert item.answer_text == "not_entailment"


GSM_NEW = "A baker sells 36 muffins in the morning and twice as many in the afternoon. How many muffins does he sell?"


@pytest.mark.parametrize(
    "answer, expected",
    [("108", "108"), (108, "108"), ("108.0", "108"), ("$1,080.00", "1080"), ("108 muffins", "108"), ("1,080", "1080"),
     ("one hundred and eight", "108")],
)
def test_numeric_items_get_a_canonical_number(answer, expected):
    obj = {"question": GSM_NEW, "context": None, "choices": None, "answer": answer}
    assert parse_generated_item(json.dumps(obj), NUMERIC, GSM8K, None).answer_text == expected


@pytest.mark.parametrize("answer", ["36 + 72 = 108", "N/A", "a lot of muffins"])
def test_numeric_items_reject_non_numbers(answer):
    obj = {"question": GSM_NEW, "context": None, "choices": None, "answer": answer}
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), NUMERIC, GSM8K, None)
    assert err.value.reason == "not_a_number"


def test_numeric_item_copying_the_seed_is_rejected():
    obj = {"question": GSM8K["question"], "context": None, "choices": None, "answer": "72"}
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), NUMERIC, GSM8K, None)
    assert err.value.reason == "same_as_seed"


def test_short_text_item_and_null_like_context():
    obj = {"question": "what country is the eiffel tower in?", "context": "N/A", "choices": ["x"], "answer": " France "}
    item = parse_generated_item(json.dumps(obj), SHORT_TEXT, WEBQS, None)
    assert (item.answer_text, item.context, item.choices, item.answer_index) == ("France", None, None, None)


def test_short_text_answer_length_is_bounded():
    obj = {"question": "what country is the eiffel tower in?", "context": None, "choices": None, "answer": "x" * 400}
    with pytest.raises(ValidationError) as err:
        parse_generated_item(json.dumps(obj), SHORT_TEXT, WEBQS, None)
    assert err.value.reason == "too_long"


def test_code_item_answer_loses_its_fence():
    seed = {"task": "code_handwritten", "question": "def add(a, b): ...", "choices": None}
    obj = {"question": "def mul(a, b):\n    \"\"\"Return a times b.\"\"\"", "context": None, "choices": None,
           "answer": "```python\ndef mul(a, b):\n    return a * b\n```"}
    item = parse_generated_item(json.dumps(obj), CODE, seed, None)
    assert item.answer_text == "def mul(a, b):\n    return a * b"


def test_freeform_item_keeps_its_text():
    seed = {"task": "t", "question": "Summarize: the vote passed.", "choices": None}
    obj = {"question": "Summarize: the bridge reopened after repairs.", "context": None, "choices": None,
           "answer": "The bridge is open again."}
    assert parse_generated_item(obj, FREEFORM, seed, None).answer_text == "The bridge is open again."


# --- enrichment ------------------------------------------------------------------------------

ARC_ITEM = {"question": NEW_ARC["question"], "context": None, "choices": NEW_ARC["choices"]}


def _enrichment_json(final_answer, knowledge="Plants contain chlorophyll.", reasoning="Light energy is stored."):
    return json.dumps({"knowledge": knowledge, "reasoning": reasoning, "final_answer": final_answer})


@pytest.mark.parametrize(
    "text",
    [
        _enrichment_json("photosynthesis"),
        _enrichment_json("B"),
        _enrichment_json("(B) photosynthesis"),
        _enrichment_json("The answer is B."),
        "```json\n" + _enrichment_json("Photosynthesis") + "\n```",
        _enrichment_json("photosynthesis").replace('"}', '",}'),
        _enrichment_json("")[:-1].replace('"final_answer": ""', '"final_answer": "photosynthesis"') + "}",
    ],
    ids=["text", "letter", "letter_text", "sentence", "fence", "trailing_comma", "rebuilt"],
)
def test_mcq_enrichment_resolves_option(text):
    enrichment = parse_enrichment(text, MCQ, ARC_ITEM, None)
    assert (enrichment.final_answer, enrichment.final_answer_index) == ("photosynthesis", 1)
    assert enrichment.knowledge == "Plants contain chlorophyll."
    assert enrichment.reasoning == "Light energy is stored."


@pytest.mark.parametrize(
    "text, raw",
    [
        ("Plants absorb light in chloroplasts.\nSo the answer is (B).", "(B)"),
        ("Reasoning...\n**Final answer:** B) photosynthesis", "B) photosynthesis"),
        ("B", "B"),
    ],
)
def test_mcq_answer_recovered_from_prose(text, raw):
    enrichment = parse_enrichment(text, MCQ, ARC_ITEM, None)
    assert (enrichment.final_answer_raw, enrichment.final_answer_index) == (raw, 1)


def test_mcq_enrichment_answer_outside_the_options_is_kept_as_a_non_vote():
    enrichment = parse_enrichment(_enrichment_json("chlorophyll"), MCQ, ARC_ITEM, None)
    assert (enrichment.final_answer_raw, enrichment.final_answer, enrichment.final_answer_index) == (
        "chlorophyll", None, None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48/2 = 24 clips in May.\n48 + 24 = 72.\n#### 72", "72"),
        ("She earned $10 in total.\nFinal answer: $10.00", "10"),
        ("The total is \\boxed{1,000}.", "1000"),
        (_enrichment_json("$1,000"), "1000"),
        (_enrichment_json("72 clips"), "72"),
        (_enrichment_json("48 + 24 = 72"), "72"),
        (_enrichment_json("", reasoning="48 + 24 = 72. The answer is 72."), "72"),
        (json.dumps({"knowledge": "k", "reasoning": "r", "final_answer": 72}), "72"),
        ('{"knowledge": "k", "reasoning": "she said "hi" twice", "final_answer": "72"}', "72"),
        ('{"knowledge": "k", "final_answer": "1,000", "reasoning": "cut off mid-sent', "1000"),
    ],
    ids=["gsm_hashes", "final_answer_dollars", "boxed", "json_dollars", "json_units", "json_equation",
         "json_empty_answer_recovered", "json_number", "broken_quotes_salvaged", "truncated_after_answer"],
)
def test_numeric_enrichment(text, expected):
    assert parse_enrichment(text, NUMERIC, GSM8K, None).final_answer == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (_enrichment_json("yes"), "yes"), (_enrichment_json("No."), "no"), (_enrichment_json("TRUE"), "yes"),
        (_enrichment_json("No, the passage says otherwise"), "no"), ("The passage says so.\nFinal answer: yes", "yes"),
        ("Yes.", "yes"), (json.dumps({"knowledge": "", "reasoning": "", "final_answer": False}), "no"),
        (_enrichment_json("perhaps"), None),
    ],
)
def test_boolean_enrichment(text, expected):
    enrichment = parse_enrichment(text, BOOLEAN, BOOLQ, None)
    assert enrichment.final_answer == expected
    assert enrichment.final_answer_index == (None if expected is None else ["no", "yes"].index(expected))


@pytest.mark.parametrize(
    "final, expected",
    [("Neutral", "neutral"), ("contradiction.", "contradiction"), ("Entailment, because the premise says so", "entailment"),
     ("The answer is: contradiction", "contradiction"), ("unrelated", None)],
)
def test_label_enrichment(final, expected):
    assert parse_enrichment(_enrichment_json(final), LABEL, NLI, NLI_LABELS).final_answer == expected


def test_short_text_enrichment_is_normalized_and_keeps_raw():
    enrichment = parse_enrichment(_enrichment_json("The Padmé Amidala."), SHORT_TEXT, WEBQS, None)
    assert (enrichment.final_answer_raw, enrichment.final_answer) == ("The Padmé Amidala.", "padmé amidala")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("I am not able to answer this.\nIt is unclear\nwhat is being asked.", "no_json"),
        ('{"knowledge": "Plants use light", "reasoning": "so the answer is B because', "truncated_json"),
        (json.dumps({"knowledge": "k", "reasoning": "r", "final_answer": ""}), "no_final_answer"),
        ('{"knowledge": "k" "reasoning": "r"}', "invalid_json"),
    ],
    ids=["empty", "prose_without_answer", "truncated_before_answer", "json_without_answer", "broken_no_answer"],
)
def test_enrichment_without_a_final_answer_raises(text, reason):
    with pytest.raises(ParseError) as err:
        parse_enrichment(text, MCQ, ARC_ITEM, None)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so 48 + 24 = 72\n#### 72", "72"),
        ("The answer is (C).", "(C)"),
        ("Therefore, the correct answer is: **B**", "B"),
        ("Final Answer: yes", "yes"),
        ("The answer is 3. Wait, recomputing... The answer is 4.", "4"),
        ("No conclusion here", None),
    ],
)
def test_recover_final_answer(text, expected):
    assert recover_final_answer(text) == expected


# --- issue 11: real model output that was answered wrong -------------------------------------
# Each kind is a rule; the issue's own examples come first in each list, then more of the kind.

# A. LaTeX is turned into plain text before matching; what is not one number is no number.
@pytest.mark.parametrize(
    "raw, expected",
    [
        (r"\boxed{\frac{1}{2}}", "0.5"),
        (r"\boxed{\$9{,}500}", "9500"),
        (r"\boxed{\dfrac{3}{4}}", "0.75"),
        (r"\tfrac{1}{4}", "0.25"),
        (r"$\frac12$", "0.5"),
        (r"\frac1{8}", "0.125"),
        (r"\frac{1}{3}", "1/3"),
        (r"-\frac{1}{2}", "-0.5"),
        (r"\frac{-7}{4}", "-1.75"),
        (r"\boxed{-\dfrac{3}{4}}", "-0.75"),
        (r"2\frac{1}{2}", "2.5"),
        (r"\boxed{\text{18 apples}}", "18"),
        (r"\textbf{42}", "42"),
        (r"\mathrm{42}", "42"),
        (r"12\text{ cm}", "12"),
        (r"5\ \text{m/s}", "5"),
        (r"9{,}500", "9500"),
        (r"9\,500", "9500"),
        (r"1\,000\,000", "1000000"),
        (r"1\!000", "1000"),
        (r"\$1{,}234.50", "1234.5"),
        (r"3 \times 10^{5}", "300000"),
        (r"1.5\times10^{-3}", "0.0015"),
        (r"10^{3}", "1000"),
        (r"$42$", "42"),
        (r"$$42$$", "42"),
        (r"\(42\)", "42"),
        (r"\[ 42 \]", "42"),
        (r"$\boxed{7}$", "7"),
        (r"50\%", "50"),
        (r"\$18.90", "18.9"),
        (r"30^\circ", "30"),
        (r"45^{\circ}\text{C}", "45"),
        (r"\left( 5 \right)", "5"),
        (r"\boxed{{12}}", "12"),
        (r"\boxed 5", "5"),
        (r"The final answer is $\boxed{\dfrac{7}{8}}$.", "0.875"),
        (r"So the total is \boxed{1{,}000} dollars.", "1000"),
        (r"\text{The answer is } 12", "12"),
        # not one number: None, never a fragment of the expression
        (r"\boxed{\frac{\sqrt{3}}{2}}", None),
        (r"\sqrt{2}", None),
        (r"3\pi", None),
        (r"2^{10}", None),
        (r"\frac{x}{2}", None),
        (r"0.\overline{3}", None),
        (r"\boxed{3, 5}", None),
        (r"(-\infty, 2]", None),
        (r"3{,}14", None),
    ],
)
def test_numeric_final_answer_reads_latex(raw, expected):
    assert normalize_final_answer(raw, NUMERIC, None, None) == (expected, None)


@pytest.mark.parametrize(
    "text, plain",
    [
        (r"\boxed{\frac{1}{2}}", "1/2"),
        (r"\boxed{\$9{,}500}", "$9,500"),
        (r"\frac{\frac{1}{2}}{3}", "(1/2)/(3)"),
        (r"\text{Paris}", "Paris"),
        (r"\textbf{(B)}", "(B)"),
        (r"$\text{yes}$", "yes"),
        (r"\left[ 1, 2 \right]", "[ 1, 2 ]"),
        (r"\sqrt[3]{8}", "sqrt[3](8)"),
        ("costs $5 and more", "costs $5 and more"),
        ("x^y and x^{10}", "x^y and x^(10)"),
        ("", ""),
        (None, ""),
    ],
)
def test_latex_to_text(text, plain):
    assert latex_to_text(text) == plain


# B. The number the answer marker points at; two candidates without a marker are no answer.
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The answer is 18 (after subtracting 6)", "18"),
        ("5 and 7", None),
        ("x = 5", "5"),
        ("5 + 2 = 7", "7"),
        ("48/2 = 24", "24"),
        ("24 - 6 = 18 apples", "18"),
        ("$18 (she spent $6 of $24)", "18"),
        ("18, because 24 - 6 = 18", "18"),
        ("18. Then she bought 6 more the next day", "18"),
        ("x = 5 (since 2x = 10)", "5"),
        ("2x = 10, so x = 5", "5"),
        ("The answer is: $1,200 for the 3 chairs", "1200"),
        ("The answer is 18 apples and 6 oranges", None),
        ("The answer is 5 to 7 days", None),
        ("Final answer: 72 clips (48 in April and 24 in May)", "72"),
        ("She has 18 apples left.", "18"),
        ("72 clips", "72"),
        ("about 5.5 hours", "5.5"),
        ("3 1/2 cups", "3.5"),
        ("18 dollars", "18"),
        ("€15", "15"),
        ("The answer is 3. Wait, recomputing... The answer is 4.", "4"),
        # several distinct candidates, no marker pointing at one
        ("5 or 7", None),
        ("x = 2 or x = 3", None),
        ("1, 2, 3", None),
        ("between 5 and 7", None),
        ("5-7", None),
        ("3:30", None),
        ("She paid $1,200 for 3 chairs", None),
        ("The answer is 5 or 7", None),
        ("12 apples and 6 oranges", None),
    ],
)
def test_numeric_final_answer_takes_the_number_the_marker_points_at(raw, expected):
    assert normalize_final_answer(raw, NUMERIC, None, None) == (expected, None)
    assert parse_enrichment(_enrichment_json(raw), NUMERIC, GSM8K, None).final_answer == expected


@pytest.mark.parametrize(
    "prose, expected",
    [
        ("24 - 6 = 18, so she has 18 apples.\nThe answer is 18 (after subtracting 6)", "18"),
        ("Step 1: 48/2 = 24.\nStep 2: 48 + 24 = 72.\n\n#### 72", "72"),
        ("We get $x = \\frac{1}{2}$.\n\nThe final answer is $\\boxed{\\frac{1}{2}}$.", "0.5"),
        ("So she has 5 apples and 7 pears.\n**Final Answer:** 5 and 7", None),
    ],
)
def test_numeric_answer_recovered_from_prose(prose, expected):
    assert parse_enrichment(prose, NUMERIC, GSM8K, None).final_answer == expected


# C. Markdown emphasis, math delimiters and \text{} are stripped before letters, labels, yes/no.
@pytest.mark.parametrize(
    "raw",
    ["**B**", "$B$", r"\boxed{B}", r"\boxed{\text{B}}", r"\textbf{B}", r"$\mathrm{B}$", "`B`", "*B*", "__B__",
     "_B_", "**(B)**", "**B.**", r"\(\text{B}\)", r"\[\boxed{B}\]", "**food**", r"\text{food}", "'B'",
     r"The answer is $\boxed{B}$.", "**Answer:** B", "Answer: **B**", "**Final Answer:** (B) food",
     "The correct option is B.", "## Final Answer\nB", r"\boxed{\textbf{(B)}}", "Option B is correct.",
     "After checking each option, (B) is the best answer."],
)
def test_mcq_final_answer_unwraps_markup(raw):
    assert normalize_final_answer(raw, MCQ, OPTIONS, None) == ("food", 1)


@pytest.mark.parametrize(
    "raw, expected",
    [(r"\boxed{\text{No}}", "no"), ("**Yes**", "yes"), (r"$\text{yes}$", "yes"), ("`no`", "no"),
     (r"\textbf{No}.", "no"), ("The answer is **No**", "no"), (r"\boxed{Yes}", "yes"),
     (r"Final answer: $\text{No}$", "no"), ("*No*", "no"), ("Yes, but the final answer is: no", "no")],
)
def test_boolean_final_answer_unwraps_markup(raw, expected):
    assert normalize_final_answer(raw, BOOLEAN, ["no", "yes"], None) == (expected, ["no", "yes"].index(expected))


@pytest.mark.parametrize(
    "raw, expected",
    [(r"\boxed{\text{entailment}}", "entailment"), ("**neutral**", "neutral"), ("`contradiction`", "contradiction"),
     (r"$\text{contradiction}$", "contradiction"), ("_neutral_", "neutral"), (r"\textbf{Neutral}.", "neutral"),
     ("The answer is **contradiction**", "contradiction")],
)
def test_label_final_answer_unwraps_markup(raw, expected):
    assert normalize_final_answer(raw, LABEL, None, NLI_LABELS)[0] == expected


def test_label_with_underscores_is_not_read_as_emphasis():
    labels = ["entailment", "not_entailment"]
    assert normalize_final_answer("`not_entailment`", LABEL, None, labels)[0] == "not_entailment"
    assert normalize_final_answer("**not_entailment**", LABEL, None, labels)[0] == "not_entailment"


@pytest.mark.parametrize(
    "answer, answer_format, expected",
    [("**B**", MCQ, "photosynthesis"), (r"$\text{B}$", MCQ, "photosynthesis"), (r"\boxed{\text{Yes}}", BOOLEAN, "yes"),
     ("**no**", BOOLEAN, "no"), (r"\boxed{108}", NUMERIC, "108"), (r"\$1{,}080", NUMERIC, "1080"),
     (r"\frac{1}{4}", NUMERIC, "0.25"), ("The answer is 108 (36 + 72)", NUMERIC, "108")],
)
def test_generated_item_answers_unwrap_markup(answer, answer_format, expected):
    obj = dict(NEW_ARC, answer=answer)
    seed = {MCQ: ARC, BOOLEAN: BOOLQ, NUMERIC: GSM8K}[answer_format]
    if answer_format != MCQ:
        obj = {"question": "is mount fuji in japan" if answer_format == BOOLEAN else GSM_NEW,
               "context": PASSAGE if answer_format == BOOLEAN else None, "choices": None, "answer": answer}
    assert parse_generated_item(json.dumps(obj), answer_format, seed, None).answer_text == expected


def test_mcq_options_in_latex_match_a_plain_answer():
    options = [r"$\frac{1}{2}$", r"$\frac{1}{3}$", r"$\frac{2}{3}$", r"$\frac{3}{4}$"]
    assert normalize_final_answer("1/3", MCQ, options, None) == (options[1], 1)
    assert normalize_final_answer(r"\boxed{\frac{2}{3}}", MCQ, options, None) == (options[2], 2)


# D. Never an answer from inside a reasoning block; drop everything before the last closing tag.
@pytest.mark.parametrize(
    "text",
    [
        '<think>The options... a draft: {"final_answer": "A"}. Let me check again whether',
        '<think>\nOkay, the answer is A. Hmm, but',
        '<thinking>{"knowledge": "k", "reasoning": "r", "final_answer": "A"} wait',
        '<reasoning>The answer is (A)',
        '<think>first pass</think>\n<think>second pass: {"final_answer": "A"}',
        '<Think>\n{"final_answer": "A"}',
    ],
)
def test_output_cut_off_inside_a_reasoning_block_is_truncated(text):
    with pytest.raises(ParseError) as err:
        parse_enrichment(text, MCQ, ARC_ITEM, None)
    assert err.value.reason == "truncated"
    with pytest.raises(ParseError) as err:
        extract_json_object(text, expected_keys=("final_answer",))
    assert err.value.reason == "truncated"


@pytest.mark.parametrize(
    "text",
    [
        'A draft: {"final_answer": "A"}. No, wait.\n</think>\n\n' + _enrichment_json("B"),
        '<think>draft {"final_answer": "A"}</think>' + _enrichment_json("B"),
        "Okay, so the answer is A. Hmm, no.\n</think>\nThe answer is B.",
        "<thinking>The answer is A</thinking>\nFinal answer: B",
        '<reasoning>so A</reasoning>\n```json\n' + _enrichment_json("B") + "\n```",
        "<THINK>A?</THINK> B",
        "<think>a</think> <think>The answer is A</think>\n\nThe answer is (B)",
    ],
)
def test_only_what_follows_the_last_closing_tag_counts(text):
    assert parse_enrichment(text, MCQ, ARC_ITEM, None).final_answer_index == 1


@pytest.mark.parametrize("text", ["<think>only thoughts</think>", "drafts\n</think>\n  "])
def test_nothing_after_the_reasoning_block_is_empty(text):
    with pytest.raises(ParseError) as err:
        parse_enrichment(text, MCQ, ARC_ITEM, None)
    assert err.value.reason == "empty"


def test_generated_item_after_a_template_opened_think_block():
    text = 'Draft: {"question": "draft?", "answer": "x"}\n</think>\n' + NEW_ARC_JSON
    assert parse_generated_item(text, MCQ, ARC, None).answer_text == "photosynthesis"
    with pytest.raises(ParseError) as err:
        parse_generated_item("<think>\n" + NEW_ARC_JSON, MCQ, ARC, None)
    assert err.value.reason == "truncated"


# E. Python-style dicts with apostrophes inside single-quoted strings are repaired.
@pytest.mark.parametrize(
    "text, field, value",
    [
        ("{'knowledge': 'the UK's capital', 'reasoning': 'London', 'final_answer': 'B'}", "knowledge", "the UK's capital"),
        ("{'knowledge': 'It's a plant's way of making food.', 'final_answer': 'B'}", "knowledge",
         "It's a plant's way of making food."),
        ("{'knowledge': 'the students' books', 'final_answer': 'B'}", "knowledge", "the students' books"),
        ("{'reasoning': 'rock 'n' roll', 'final_answer': 'B'}", "reasoning", "rock 'n' roll"),
        ("{'reasoning': 'He said 'no', then left', 'final_answer': 'B'}", "reasoning", "He said 'no', then left"),
        ("{\u2018knowledge\u2019: \u2018the UK\u2019s capital\u2019, \u2018final_answer\u2019: \u2018B\u2019}", "knowledge",
         "the UK\u2019s capital"),
        ("Sure:\n{'knowledge': \"Don't panic\", 'reasoning': 'it's fine', 'final_answer': 'B',}", "reasoning", "it's fine"),
        ('{"knowledge": "k", "reasoning": "she said "hi" twice", "final_answer": "B"}', "reasoning", 'she said "hi" twice'),
    ],
)
def test_python_style_dicts_with_apostrophes_are_repaired(text, field, value):
    obj = extract_json_object(text, expected_keys=("final_answer",))
    assert obj[field] == value and obj["final_answer"] == "B"
    assert parse_enrichment(text, MCQ, ARC_ITEM, None).final_answer_index == 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{'knowledge': 'the UK's capital', 'reasoning': 'it's cut", "truncated_json"),
        ("{'knowledge': 'the UK's capital', 'final_answer': 'Lon", "truncated_json"),
        ("{'knowledge': 'x', 'b': 'it's, 'c': 1}", "invalid_json"),
        ("{'knowledge': 'k' 'reasoning': 'r'}", "invalid_json"),
        ("{'knowledge': 'k', reasoning: it's r}", "invalid_json"),
    ],
)
def test_failed_repairs_are_invalid_and_only_real_cuts_are_truncated(text, reason):
    with pytest.raises(ParseError) as err:
        extract_json_object(text, expected_keys=("final_answer", "knowledge"))
    assert err.value.reason == reason


# J (the shared option check): empty or duplicate options; case and sign make options differ.
@pytest.mark.parametrize(
    "choices, problem",
    [
        (["#15", "#16", "#17", ""], "empty_choice"),
        (["humerus", "", "femur", "tibia"], "empty_choice"),
        (["a", "  ", "b"], "empty_choice"),
        (["Employee rights", "Employee rights", "Employer duties", "Employee duties"], "duplicate_choices"),
        (["0.015 joule.", "0.15 joule.", "0.015 joule", "1.15 joule."], "duplicate_choices"),
        (["Increase \xa0\xa0 Increase", "No change", "Increase Increase", "x"], "duplicate_choices"),
        (["WW or ww", "WW or Ww", "WW only", "Ww only"], None),
        (["1", "-1", "i", "-i"], None),
        (["2", "II", "I", "ii"], None),
        (["-$1,000", "$0", "$1,000", "2000"], None),
    ],
)
def test_option_problem(choices, problem):
    found = option_problem(choices)
    assert (found[0] if found else None) == problem


def test_generated_items_keep_options_that_differ_only_in_case_or_sign():
    obj = {"question": "Which genotype is heterozygous?", "context": None, "choices": ["RR", "Rr", "rr", "R"],
           "answer": "Rr"}
    assert parse_generated_item(obj, MCQ, ARC, None).answer_index == 1
    obj = {"question": "What is the product of the two roots?", "context": None, "choices": ["1", "-1", "2", "-2"],
           "answer": "-1"}
    assert parse_generated_item(obj, MCQ, ARC, None).answer_index == 1


def test_a_tag_named_inside_an_answer_is_not_a_reasoning_block():
    text = _enrichment_json("B", reasoning="Models wrap drafts in <think> tags; plants use light.")
    assert parse_enrichment(text, MCQ, ARC_ITEM, None).final_answer_index == 1


@pytest.mark.parametrize(
    "text",
    ["\\frac{" * 500 + "1" + "}" * 500, "_a " * 3000, "**a " * 3000, "\\", "\\boxed{", "{'a': '" + "it's " * 2000,
     "<think>" * 500, " = ".join(["x + 1"] * 500), "$" * 1001],
    ids=["deep_latex", "underscores", "stars", "lone_backslash", "open_boxed", "long_python_dict", "think_tags",
         "equation_chain", "dollars"],
)
def test_pathological_output_is_answered_quickly_without_errors(text):
    for answer_format in (NUMERIC, MCQ, BOOLEAN, LABEL, SHORT_TEXT):
        normalize_final_answer(text, answer_format, OPTIONS, NLI_LABELS)
    try:
        assert parse_enrichment(text, NUMERIC, GSM8K, None).final_answer is None
    except OutputRejected as err:
        assert err.reason
