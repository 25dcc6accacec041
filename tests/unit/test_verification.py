"""Answer comparison keys (udfs/verification.py): equal keys = the same answer under the format's
equivalence; None = a vote for nothing. Parametrized over the ways models and datasets write answers."""

from __future__ import annotations

import pytest

from udfs.verification import answer_key, is_verifiable, number_key

CHOICES = ["copper wire", "wooden spoon", "glass rod", "plastic cup"]


@pytest.mark.parametrize("written", [
    "1000", "1,000", "1000.0", "$1000", "$1,000.00", "1e3", "1000.", " 1000 ", "+1000", "1000 dollars",
    "The answer is 1000", "1,000 apples", "\\boxed{1000}", "$1{,}000$", "**1000**", "x = 1000",
    "500 + 500 = 1000",
])
def test_numeric_spellings_of_one_thousand_agree(written):
    assert answer_key("numeric", written) == "num:1000"


@pytest.mark.parametrize("a, b", [("3/4", "0.75"), ("-2", "\u22122"), ("12.50", "12.5"), ("50%", "50"),
                                  ("0.5", ".5")])
def test_numeric_equivalent_values_agree(a, b):
    assert answer_key("numeric", a) == answer_key("numeric", b) is not None


@pytest.mark.parametrize("written", ["", None, "many", "between 3 and 5", "3 or 4", "sqrt(3)",
                                     "x = 2 or x = 3"])
def test_numeric_without_one_number_is_a_vote_for_nothing(written):
    assert answer_key("numeric", written) is None


def test_numeric_distinct_values_differ():
    assert answer_key("numeric", "1000") != answer_key("numeric", "100")
    assert answer_key("numeric", "1/3") != answer_key("numeric", "0.333")


@pytest.mark.parametrize("answer, index", [
    ("glass rod", None), ("Glass rod.", None), ("C", None), ("(C)", None), ("Option C", None), (None, 2),
    ("glass rod", 2), ("anything", 2),  # a valid index is the answer (parsers store index and text together)
])
def test_mcq_text_letter_and_index_name_the_same_option(answer, index):
    assert answer_key("mcq", answer, index, CHOICES) == "option:2"


@pytest.mark.parametrize("answer, index", [("a steel nail", None), ("E", None), (None, None), ("", 7), (None, -1)])
def test_mcq_answer_naming_no_option_has_no_key(answer, index):
    assert answer_key("mcq", answer, index, CHOICES) is None


def test_mcq_index_given_as_float_from_arrow_null_handling():
    assert answer_key("mcq", None, 1.0, CHOICES) == "option:1"
    assert answer_key("mcq", None, float("nan"), CHOICES) is None


@pytest.mark.parametrize("written, expected", [
    ("yes", "bool:yes"), ("Yes.", "bool:yes"), ("TRUE", "bool:yes"), ("true", "bool:yes"),
    ("No, because the passage says otherwise", "bool:no"), ("False", "bool:no"), ("no", "bool:no"),
    ("maybe", None), ("", None), (None, None),
])
def test_boolean_variants(written, expected):
    assert answer_key("boolean", written) == expected


def test_boolean_falls_back_to_the_option_index():
    assert answer_key("boolean", None, 1, ["no", "yes"]) == "bool:yes"
    assert answer_key("boolean", None, 0, ["False", "True"]) == "bool:no"


LABELS = ["entailment", "neutral", "contradiction"]


@pytest.mark.parametrize("written, expected", [
    ("entailment", "label:entailment"), ("Entailment", "label:entailment"), ("ENTAILMENT.", "label:entailment"),
    ("Contradiction, since the premise denies it", "label:contradiction"), ("neutral", "label:neutral"),
    ("unrelated", None), (None, None),
])
def test_label_matches_the_label_set(written, expected):
    assert answer_key("label", written, None, LABELS) == expected


def test_label_underscores_and_case_agree_and_not_entailment_stays_distinct():
    labels = ["entailment", "not_entailment"]
    assert answer_key("label", "not entailment", None, labels) == answer_key("label", "Not_Entailment", None, labels)
    assert answer_key("label", "not_entailment", None, labels) != answer_key("label", "entailment", None, labels)


@pytest.mark.parametrize("a, b", [("The Eiffel Tower", "eiffel tower"), ("Paris.", "paris"),
                                  ("  New   York ", "new york"), ("“Hamlet”", "hamlet")])
def test_short_text_normalized_match(a, b):
    assert answer_key("short_text", a) == answer_key("short_text", b) is not None


def test_short_text_different_answers_differ_and_empty_is_none():
    assert answer_key("short_text", "Paris") != answer_key("short_text", "Lyon")
    assert answer_key("short_text", "  the ") is None


@pytest.mark.parametrize("fmt", ["freeform", "code", None, "unknown-format"])
def test_formats_without_a_comparable_answer_have_no_key(fmt):
    assert answer_key(fmt, "def f(): return 1", 0, ["a", "b"]) is None
    assert not is_verifiable(fmt)


@pytest.mark.parametrize("fmt", ["mcq", "boolean", "label", "numeric", "short_text"])
def test_verifiable_formats(fmt):
    assert is_verifiable(fmt)


def test_number_key_one_distinct_number_in_text():
    assert number_key("I think 42, yes 42") == "42"
    assert number_key("from 3 to 4") is None


def test_keys_never_raise_on_odd_input():
    for fmt in ("mcq", "boolean", "label", "numeric", "short_text", "freeform"):
        for answer in (None, "", 12, 3.5, True, "\u0000", "x" * 10_000):
            answer_key(fmt, answer, "not-an-index", None)
            answer_key(fmt, answer, None, [None, "a"])


AGREEMENT_PAIRS = [
    ("numeric", "1,000", "1000.0"), ("numeric", "\\frac{1}{2}", "0.5"), ("numeric", "18 (after subtracting 6)", "18"),
    ("numeric", "18 (after subtracting 6)", "6"), ("numeric", "5 and 7", "5"), ("numeric", "12", "13"),
    ("numeric", "many", "many"), ("boolean", "**Yes**", "yes"), ("boolean", "No.", "yes"),
    ("boolean", "maybe", "maybe"), ("short_text", "\\text{Paris}", "paris"), ("short_text", "The Nile", "nile"),
    ("short_text", "Lyon", "Paris"), ("short_text", "", ""),
]


@pytest.mark.parametrize("fmt, a, b", AGREEMENT_PAIRS)
def test_keys_agree_exactly_when_the_parsers_answers_agree(fmt, a, b):
    """One notion of "the same answer" in the project: the vote (keys) and udfs.parsing.answers_agree."""
    from udfs.parsing import answers_agree

    ka, kb = answer_key(fmt, a), answer_key(fmt, b)
    assert (ka is not None and ka == kb) == answers_agree(a, b, fmt)
