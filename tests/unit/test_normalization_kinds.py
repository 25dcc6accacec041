"""Issue 25: the kinds of input that curation answered wrong, one rule each, several inputs each
(udfs/textnorm.py; docs/normalization.md). Every comparison (exact dedup, near-dup shingles,
contamination n-grams and whole-text keys) goes through `normalize_text`, so a rule proved here
holds for all of them; the filters' own tests check the wiring."""

from __future__ import annotations

import time

import pytest

from udfs.minhash import MinHashParams, jaccard, stimulus_text, text_shingles
from udfs.textnorm import normalize_array, normalize_text

# ---- kind 3: invisible format characters are deleted, not made spaces ------------------------------


@pytest.mark.parametrize("hidden, plain", [
    ("photo\u00adsyn\u00adthe\u00adsis", "photosynthesis"),
    ("mito\u200bchondria", "mitochondria"),
    ("\ufeffWhat is the capital of France?", "What is the capital of France?"),
    ("pre\u2060heat the oven", "preheat the oven"),
    ("co\u200doperate and co\u200cordinate", "cooperate and coordinate"),
    ("emoji\ufe0f text", "emoji text"),
    ("东\u200b京是日本的首都", "东京是日本的首都"),
])
def test_invisible_characters_do_not_split_words(hidden, plain):
    assert normalize_text(hidden) == normalize_text(plain)


# ---- kind 6: HTML entities are decoded ---------------------------------------------------------------


@pytest.mark.parametrize("escaped, plain", [
    ("AT&amp;T was founded in 1885", "AT&T was founded in 1885"),
    ("Is 3 &lt; 5?", "Is 3 < 5?"),
    ("Is 7 &gt; 2?", "Is 7 > 2?"),
    ("Don&#39;t stop", "Don't stop"),
    ("caf&eacute; au lait", "café au lait"),
    ("x&nbsp;=&nbsp;4", "x = 4"),
    ("&quot;quoted&quot; &#x41;BC", '"quoted" ABC'),
])
def test_html_entities_are_the_characters_they_name(escaped, plain):
    assert normalize_text(escaped) == normalize_text(plain)


def test_an_escaped_comparison_keeps_its_direction():
    assert normalize_text("Is 3 &lt; 5?") != normalize_text("Is 3 &gt; 5?")


# ---- kind 2: marks that make the letter are kept; Latin accents are folded ---------------------------


@pytest.mark.parametrize("a, b", [
    ("ばら", "はら"),            # rose / field (dakuten)
    ("ぱん", "はん"),            # handakuten
    ("ガス", "カス"),            # katakana
    ("ไก่", "ไก"),               # Thai tone mark
    ("ปู", "ปา"),                # Thai vowels
    ("किताब", "कताब"),         # Devanagari vowel sign
    ("कम", "कं"),
    ("שָׁלוֹם", "שלם"),           # Hebrew points
    ("Йод", "Иод"),             # Cyrillic short i
])
def test_marks_that_make_a_letter_keep_words_apart(a, b):
    assert normalize_text(a) != normalize_text(b)


@pytest.mark.parametrize("accented, plain", [
    ("café", "cafe"), ("naïve résumé", "naive resume"), ("Ångström", "angstrom"),
    ("São Paulo", "sao paulo"), ("Dvořák", "dvorak"), ("Việt Nam", "viet nam"), ("cafe\u0301", "cafe"),
])
def test_latin_accents_are_folded(accented, plain):
    assert normalize_text(accented) == normalize_text(plain)


@pytest.mark.parametrize("text", ["ば", "ปู่", "किताब", "Йод", "が\u3099", "ｶﾞｽ"])
def test_kept_marks_are_in_composed_form_and_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_half_width_katakana_with_voicing_is_the_full_width_letter():
    assert normalize_text("ｶﾞｽ") == normalize_text("ガス")


# ---- kind 4: look-alike letters of another script in Latin words -------------------------------------


@pytest.mark.parametrize("retyped, latin", [
    ("Whаt is the cаpitаl of Frаnce?", "What is the capital of France?"),       # Cyrillic а
    ("The sрeed of light in a vасuum", "The speed of light in a vacuum"),       # Cyrillic р, а, с
    ("Which gas do plants absοrb?", "Which gas do plants absorb?"),             # Greek ο
    ("ΤΗΕ ΚΙΝG ΟF ΡΟΡ", "THE KING OF POP"),                                    # Greek capitals
    ("НЕLLО WОRLD", "HELLO WORLD"),                                              # Cyrillic capitals
    ("jеllу beans", "jelly beans"),                                              # Cyrillic е, у
    ("сор", "cop"),                                                              # a word of look-alikes only
    ("Gооgle sеаrch", "Google search"),                                          # Cyrillic о, е, а
    ("hօuse", "house"),                                                          # Armenian օ
])
def test_look_alike_letters_read_as_latin(retyped, latin):
    assert normalize_text(retyped) == normalize_text(latin)


@pytest.mark.parametrize("a, b", [
    ("привет", "npubet"),        # Russian words with other Cyrillic letters stay Cyrillic
    ("Αθήνα", "Aθhna"),
    ("5 μm", "5 mm"),           # Greek letters used as symbols are not look-alikes
    ("α + β", "a + b"),
    ("ν = 3", "v = 3"),
])
def test_words_of_other_scripts_and_symbols_are_not_mapped(a, b):
    assert normalize_text(a) != normalize_text(b)


@pytest.mark.parametrize("a, b", [
    ("Москва — столица России", "москва — СТОЛИЦА россии"),
    ("ВСЕ ТАКИЕ ВОПРОСЫ", "все такие вопросы"),        # words of look-alike capitals only (ВСЕ)
    ("СОР И МУСОР", "сор и мусор"),
    ("ΚΑΙ ΤΟ ΘΕΜΑ", "και το θεμα"),                      # Greek capitals that look Latin
    ("ՍՈՒՐԲ ՕՐ", "սուրբ օր"),                           # Armenian
])
def test_russian_and_greek_text_is_consistent_in_case(a, b):
    assert normalize_text(a) == normalize_text(b)


def test_a_mixed_word_in_russian_text_is_mapped():
    assert normalize_text("Сайт раураl.com и привет") == normalize_text("сайт paypal.com и привет")


# ---- kind 5: digits of other scripts -------------------------------------------------------------------


@pytest.mark.parametrize("digits, ascii_digits", [
    ("٣ + ٤ = ٧", "3 + 4 = 7"),            # Arabic-Indic
    ("۱۲۳", "123"),                         # Extended Arabic-Indic (Persian)
    ("३४५ रुपये", "345 रुपये"),            # Devanagari
    ("৩ টি আম", "3 টি আম"),                # Bengali
    ("๑๒ นาฬิกา", "12 นาฬิกา"),            # Thai
    ("１２３", "123"),                       # full width
    ("٢٫٥", "2٫5"),                         # Arabic decimal separator stays a separator
])
def test_digits_of_every_script_are_ascii_digits(digits, ascii_digits):
    assert normalize_text(digits) == normalize_text(ascii_digits)


@pytest.mark.parametrize("arabic, latin, not_latin", [
    ("٧٫٢٥ كغ", "7.25 كغ", "725 كغ"), ("٣٬٥٠٠ ريال", "3500 ريال", "3 500 ريال"), ("٠٫٥", "0.5", "0 5"),
])
def test_arabic_decimal_and_thousands_separators_are_the_number(arabic, latin, not_latin):
    assert normalize_text(arabic) == normalize_text(latin) != normalize_text(not_latin)


@pytest.mark.parametrize("superscript, caret, not_same", [
    ("y³ + 1", "y^3 + 1", "y3 + 1"), ("area 9 cm²", "area 9 cm^2", "area 9 cm2"), ("2⁵", "2^5", "25"),
    ("s⁻²", "s^-2", "s-2"), ("10¹⁰", "10^10", "1010"),
])
def test_superscripts_are_exponents(superscript, caret, not_same):
    assert normalize_text(superscript) == normalize_text(caret) != normalize_text(not_same)


# ---- kind 7: LaTeX spellings of one thing --------------------------------------------------------------


@pytest.mark.parametrize("a, b", [
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r"\tfrac{1}{2} + \cfrac{1}{3}", r"\frac{1}{2} + \frac{1}{3}"),
    (r"\left( x + 1 \right)", "(x + 1)"),
    (r"\Bigl[ a \Bigr]", "[a]"),
    (r"\displaystyle \sum_{i=1}^n i", r"\sum_{i=1}^n i"),
    (r"x \leq 5", "x ≤ 5"),
    (r"x \le 5", "x <= 5"),
    (r"x \neq y", "x ≠ y"),
    (r"3 \times 4", "3 × 4"),
    (r"3 \cdot 4", "3 ⋅ 4"),
    (r"\text{5 cm}", "5 cm"),
    (r"\mathrm{kg}", "kg"),
    (r"\left. x \right|", "x |"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\lbrace 1, 2 \rbrace", r"\{1, 2\}"),
    (r"1, \ldots, n", "1, ..., n"),
    (r"3 \div 4", "3 / 4"),
])
def test_latex_spellings_of_one_thing_agree(a, b):
    assert normalize_text(a) == normalize_text(b)


@pytest.mark.parametrize("a, b", [
    (r"x \leq 5", r"x \geq 5"), (r"\frac{3}{4}", r"\frac{4}{3}"), (r"3 \times 4", r"3 \div 4"),
    (r"\left( x \right)", r"\left[ y \right]"),
])
def test_different_latex_stays_different(a, b):
    assert normalize_text(a) != normalize_text(b)


# ---- kind 8: operators, comparison signs and decimals carry meaning -----------------------------------


@pytest.mark.parametrize("a, b", [
    ("Is 9 > 4?", "Is 9 < 4?"),
    ("Is 9 ≥ 4?", "Is 9 ≤ 4?"),
    ("What is 12 - 5?", "What is 12 + 5?"),
    ("What is 12 × 5?", "What is 12 ÷ 5?"),
    ("x = 3", "x ≠ 3"),
    ("Solve 2x + 3 = 7", "Solve 2x - 3 = 7"),
    ("It costs 3.5 dollars", "It costs 35 dollars"),
    ("It costs 3.5 dollars", "It costs 3 5 dollars"),
    ("The temperature was -5 degrees", "The temperature was 5 degrees"),
    ("What is 6 / 3?", "What is 6 * 3?"),
    ("What is 2^3?", "What is 2 * 3?"),
    ("What is 8 ÷ 2?", "What is 8 × 2?"),
])
def test_operators_signs_and_decimal_points_keep_items_apart(a, b):
    assert normalize_text(a) != normalize_text(b)


@pytest.mark.parametrize("a, b", [
    ("2+2=4", "2 + 2 = 4"),
    ("x<=y", "x ≤ y"),
    ("a!=b", "a ≠ b"),
    ("12 \u2212 5", "12 - 5"),      # minus sign
    ("12 \u2013 5", "12 - 5"),      # en dash
    ("\u20105 degrees", "-5 degrees"),
    ("well-known", "well known"),   # a hyphen between letters is a word break
    ("2.50", "2.5"),
    ("1,000,000", "1000000"),
    ("6*3", "6 × 3"),
    ("8 ÷ 2", "8 / 2"),
    ("x^{2}", "x^2"),
    ("**Bold question?**", "Bold question?"),   # markdown asterisks are not an operator
])
def test_spellings_of_one_operator_or_number_agree(a, b):
    assert normalize_text(a) == normalize_text(b)


# ---- kind 12: option order is not what makes a near-duplicate -------------------------------------------


@pytest.mark.parametrize("question, edited, options", [
    ("Which gas do green plants absorb from the air?", "Which gas do green plants take from the air?",
     ["oxygen", "carbon dioxide", "nitrogen", "helium"]),
    ("What is the boiling point of water at sea level?", "What is the boiling point of pure water at sea level?",
     ["90 degrees", "100 degrees", "110 degrees", "120 degrees"]),
    ("Which planet is known as the red planet?", "Which planet is called the red planet?",
     ["Venus", "Mars", "Jupiter", "Saturn"]),
])
def test_shuffled_options_keep_a_one_word_edit_a_near_duplicate(question, edited, options):
    params = MinHashParams.for_threshold(0.8)
    a = text_shingles(stimulus_text(question, None, options), params)
    b = text_shingles(stimulus_text(edited, None, list(reversed(options))), params)
    assert jaccard(a, b) >= 0.8 * jaccard(a, text_shingles(stimulus_text(edited, None, options), params))
    assert stimulus_text(question, None, options) == stimulus_text(question, None, options[1:] + options[:1])


# ---- kind 14: linear time on any input -----------------------------------------------------------------


def _best_time(fn, arg, repeat: int = 3) -> float:
    """The smallest CPU time of this thread over `repeat` calls (CPU time, not wall time: on a
    shared machine a long call is preempted more often than a short one)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        fn(arg)
        best = min(best, time.thread_time() - start)
    return best


GROWTH = 32  # the big input is 32 times the small one: linear time grows ~32x, quadratic ~1024x


def time_ratio(fn, small, big, attempts: int = 3) -> float:
    """The smallest of a few measured time(big) / time(small) ratios. The machine is shared and its
    caches favour small inputs, so a linear function can measure a few times GROWTH; a quadratic
    one measures about GROWTH² every time. Tests assert < 4 × GROWTH."""
    ratios = []
    for _ in range(attempts):
        ratios.append(_best_time(fn, big) / max(_best_time(fn, small), 2e-4))
        if ratios[-1] < 4 * GROWTH:
            break
    return min(ratios)


@pytest.mark.parametrize("unit", ["1,11", "1,1", "12.5,", "1.1.", "9" * 7 + ",", "a-", "&amp;", "\\left(",
                                  "ก่", "日", "а", "\u00ad1", "- 1", "1,000.", ". 1"])
def test_normalize_text_time_is_linear(unit):
    small = unit * (12_500 // len(unit))
    big = small * GROWTH
    assert time_ratio(normalize_text, small, big) < 4 * GROWTH
    assert normalize_text(normalize_text(big)) == normalize_text(big)


def test_normalize_array_agrees_on_the_new_kinds():
    texts = ["AT&amp;T", "photo\u00adsynthesis", "Is 9 > 4?", "ばら", "раураl", "٣", r"\dfrac{1}{2}", "12 - 5",
             "well-known", "3.50", "plain text", None]
    assert normalize_array(texts) == [normalize_text(t) for t in texts]
