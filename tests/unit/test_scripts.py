"""udfs/scripts.py: the script of a text from Unicode character names, and the route to the
paraphrase filter's cross-lingual retrieval (issue 25, item 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.translations import translation_rows
from udfs.paraphrase import cross_lingual, embedding_text
from udfs.scripts import (char_script, dominant_script, mostly_non_latin, non_latin_script, non_latin_share,
                           script_counts)

ITEMS = json.loads((Path(__file__).resolve().parents[1] / "data" / "multilingual_items.json").read_text("utf-8"))
TRANSLATIONS = translation_rows()  # English quiz questions with their translations (simulator/data/translations.json)
# the dominant script of each language's items (Japanese: kanji or kana, whichever is more)
EXPECTED = {"zh": {"HAN"}, "ja": {"HAN", "HIRAGANA", "KATAKANA"}, "th": {"THAI"}, "ko": {"HANGUL"},
            "ar": {"ARABIC"}, "hi": {"DEVANAGARI"}}


@pytest.mark.parametrize("ch,script", [
    ("a", "LATIN"), ("Å", "LATIN"), ("ｆ", "LATIN"),            # fullwidth Latin is Latin
    ("中", "HAN"), ("𠀀", "HAN"), ("々", "HAN"),                 # ideographs, the iteration mark
    ("あ", "HIRAGANA"), ("ア", "KATAKANA"), ("ｱ", "KATAKANA"), ("ー", "KATAKANA"),
    ("한", "HANGUL"), ("ก", "THAI"), ("ิ", "THAI"),              # a Thai vowel sign is Thai
    ("أ", "ARABIC"), ("अ", "DEVANAGARI"), ("्", "DEVANAGARI"),  # the virama too
    ("ж", "CYRILLIC"), ("α", "GREEK"), ("א", "HEBREW"),
    ("3", None), ("٣", None), ("?", None), (" ", None), ("+", None), ("\u0301", None),  # no script
])
def test_char_script(ch, script):
    assert char_script(ch) == script


def test_char_script_takes_one_character():
    with pytest.raises(ValueError):
        char_script("ab")


@pytest.mark.parametrize("lang", sorted(EXPECTED))
def test_real_items_of_each_script_are_routed_to_the_multilingual_model(lang):
    texts = [q for q, _ in ITEMS[lang]["heldout"]] + ITEMS[lang]["clean"] + [t[lang] for t in TRANSLATIONS]
    assert texts
    covered = lang != "hi"  # Devanagari is not a script of USE multilingual v3's 16 languages
    for text in texts:
        assert dominant_script(text) in EXPECTED[lang], text
        assert mostly_non_latin(text), text
        assert cross_lingual(text) is covered, text
    for wrapped in (ITEMS[lang]["wrap"].format(q=q) for q, _ in ITEMS[lang]["heldout"]):
        assert cross_lingual(wrapped) is covered


@pytest.mark.parametrize("text", [t["en"] for t in TRANSLATIONS] + [
    "Which statement best explains why photosynthesis is the foundation of most food webs?",
    "If the angle α is 30 degrees, what is sin α?",          # a Greek letter in English text
    "Who founded the Tokugawa shogunate (徳川幕府) and in which year?",  # a quoted name
    "Ｆｕｌｌ-width letters are still Latin letters.",
    "Qu'est-ce que la photosynthèse ? Expliquez en une phrase.",  # another language, Latin script
])
def test_latin_script_text_stays_with_the_english_model(text):
    assert dominant_script(text) == "LATIN"
    assert not cross_lingual(text)


@pytest.mark.parametrize("text,script,routed", [
    ("Сколько будет 12 + 5?", "CYRILLIC", True),              # Russian: one of the model's languages
    ("一辆汽车每小时行驶60 km，3小时行驶多少km？", "HAN", True),    # Chinese with Latin units
    ("ما عاصمة فرنسا؟", "ARABIC", True),
    ("Πόσο κάνει 12 + 5;", "GREEK", False),                  # Greek, Hebrew, Devanagari: not its
    ("מהי בירת צרפת?", "HEBREW", False),                      # languages (Devanagari takes the e5
    ("फ्रांस की राजधानी क्या है?", "DEVANAGARI", False),           # route: tests/unit/test_paraphrase_e5.py)
])
def test_other_scripts_are_routed_when_the_model_knows_them(text, script, routed):
    assert mostly_non_latin(text) and non_latin_script(text) == script
    assert cross_lingual(text) is routed
    assert cross_lingual(text, scripts=frozenset({script}))  # the rule is the script set


@pytest.mark.parametrize("text", ["", None, 42, "12 + 5 = 17", "???", "\u200b"])
def test_text_without_letters_has_no_script(text):
    assert script_counts(text) == {} and dominant_script(text) is None and non_latin_script(text) is None
    assert non_latin_share(text) == 0.0 and not cross_lingual(text)


def test_embedding_text_with_options_is_routed_by_its_letters():
    # a Chinese question with Latin-letter options (A/B/C/D and units) stays Chinese
    text = embedding_text("下列哪一种气体是植物在光合作用中吸收的？", ["A. O2", "B. CO2", "C. N2", "D. H2"])
    assert cross_lingual(text)
    assert not cross_lingual(embedding_text("Which gas do plants take in?", ["氧气", "二氧化碳"]))  # 7 Han / 20 Latin
