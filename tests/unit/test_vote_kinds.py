"""Issue 25, the verification vote (kind 11) and pathological answers (kind 14): number words,
`^` units and every minus sign are read as the numbers they write; `answer_key` never raises and
runs in linear time."""

from __future__ import annotations

import pytest

from tests.unit.test_normalization_kinds import GROWTH, time_ratio
from udfs.parsing import answers_agree
from udfs.verification import answer_key


@pytest.mark.parametrize("words, digits", [
    ("seven", "7"), ("Seven.", "7"), ("twelve apples", "12"), ("twenty-five", "25"), ("forty two", "42"),
    ("one hundred and five", "105"), ("three thousand", "3000"), ("two million", "2000000"),
    ("minus five", "-5"), ("negative twelve", "-12"), ("zero", "0"), ("The answer is nine", "9"),
])
def test_number_words_vote_for_their_number(words, digits):
    assert answer_key("numeric", words) == answer_key("numeric", digits) == f"num:{digits}"
    assert answers_agree(words, digits, "numeric")


@pytest.mark.parametrize("text", ["No one knows", "someone", "anyone can", "every one of them and more"])
def test_words_that_are_not_numbers_are_no_vote(text):
    assert answer_key("numeric", text) is None


@pytest.mark.parametrize("with_units, number", [
    ("5 m^2", "5"), ("12 cm^3", "12"), ("3.5 km^2", "3.5"), ("9.8 m s^-2", "9.8"), ("7 ft^2", "7"),
    ("$5\\ \\text{m}^{2}$", "5"), ("40 m^(2)", "40"), ("2 s^{-1}", "2"),
])
def test_units_with_exponents_are_units(with_units, number):
    assert answer_key("numeric", with_units) == f"num:{number}"


@pytest.mark.parametrize("expression", ["2x^2", "x^2", "3^4", "2^10", "e^2"])
def test_powers_are_still_math_not_a_number(expression):
    assert answer_key("numeric", expression) is None


@pytest.mark.parametrize("dash", ["\u2212", "\u2013", "\u2010", "\u2011", "\u2012", "\ufe63", "\uff0d", "-"])
@pytest.mark.parametrize("body, value", [("5", "-5"), ("3.25", "-3.25"), ("$12", "-12"), ("7 degrees", "-7")])
def test_every_minus_sign_keeps_the_sign(dash, body, value):
    key = answer_key("numeric", dash + body)
    assert key == f"num:{value}"
    assert key != answer_key("numeric", body)  # never a false agreement with the positive number


@pytest.mark.parametrize("text", ["5\u20137", "5\u22127 apples and 3"])
def test_a_dash_between_numbers_is_not_a_sign(text):
    assert answer_key("numeric", text) != "num:-7"


@pytest.mark.parametrize("answer", [
    "1" * 5000, "-" + "9" * 5000, "1" * 4000 + "." + "5" * 2000, "1e" + "9" * 4500, "1/" + "3" * 5000,
    "\\frac{" + "1" * 5000 + "}{7}", "{" * 5000, "1," * 5000, "seven " * 2000, "\\boxed{" * 3000,
])
@pytest.mark.parametrize("fmt", ["numeric", "short_text", "mcq", "boolean", "label"])
def test_answer_key_never_raises_on_pathological_answers(answer, fmt):
    answer_key(fmt, answer, None, ["a", "b"])


@pytest.mark.parametrize("unit", ["1,11", "1 ", "- 1", "seven ", "5 m^2 ", "{", "\\frac{1}{2}", "a" * 7 + " ",
                                  "seven half ", "twenty-one and a quarter ", "negative 3 "])
def test_answer_key_time_is_linear(unit):
    small = unit * (1_000 // len(unit))
    big = small * GROWTH
    assert time_ratio(lambda a: answer_key("numeric", a), small, big) < 4 * GROWTH


# ---- a sign or a fraction written in words is that number, never a whole number without it -------------


@pytest.mark.parametrize("signed, value", [
    ("minus 4", "-4"), ("Negative 12.5", "-12.5"), ("The result is negative 8 degrees.", "-8"),
    ("It drops to minus 40", "-40"), ("so the answer is minus $3", "-3"),
])
def test_a_sign_word_before_digits_keeps_the_sign(signed, value):
    assert answer_key("numeric", signed) == f"num:{value}"


@pytest.mark.parametrize("difference", ["20 minus 4", "(a + b) minus 6", "y minus 2"])
def test_minus_between_operands_is_not_a_sign(difference):
    assert answer_key("numeric", difference) != "num:-" + difference.split()[-1]


@pytest.mark.parametrize("words, same_as", [
    ("nine and a half", "9.5"), ("12 and a half", "12.5"), ("two quarters", "0.5"), ("a quarter", "0.25"),
    ("one fifth", "0.2"), ("three tenths", "0.3"), ("five halves", "2.5"), ("4 and three quarters", "4.75"),
    ("minus one half", "-0.5"), ("one third", "1/3"), ("one hundred and twenty-five and a half", "125.5"),
])
def test_fractions_in_words_are_their_value(words, same_as):
    assert answer_key("numeric", words) is not None
    assert answer_key("numeric", words) == answer_key("numeric", same_as)


@pytest.mark.parametrize("words, whole", [("nine and a half", "9"), ("three quarters", "3"), ("one half", "1"),
                                          ("12 and a half", "12")])
def test_a_fraction_in_words_never_agrees_with_its_whole_number(words, whole):
    assert answer_key("numeric", words) != answer_key("numeric", whole)


@pytest.mark.parametrize("arabic, latin", [("٢٫٧٥", "2.75"), ("٤٬٢٠٠", "4200"), ("١٬٠٠٠٫٥", "1000.5")])
def test_arabic_decimal_and_thousands_separators(arabic, latin):
    assert answer_key("numeric", arabic) == answer_key("numeric", latin) is not None
