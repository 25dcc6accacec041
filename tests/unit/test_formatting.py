"""The pretraining document: one item plus one enrichment sample, rendered deterministically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit import seed_records
from schemas.answer_formats import BOOLEAN, CODE, LABEL, NUMERIC, SHORT_TEXT
from udfs.formatting import format_pretraining_document, option_letter

REPO = Path(__file__).resolve().parents[2]

ENRICHMENT = {
    "knowledge": "A fever is the body's response to infection by pathogens such as bacteria.",
    "reasoning": "Bacteria in the bloodstream trigger the immune system, which raises body temperature.",
    "final_answer_raw": "B",
    "final_answer": "a bacterial population in the bloodstream",
    "final_answer_index": 1,
}


def test_mcq_document_from_a_real_arc_seed():
    item = seed_records.arc_easy(1)[0]
    assert format_pretraining_document(item, ENRICHMENT) == (
        "Question: Which factor will most likely cause a person to develop a fever?\n"
        "\n"
        "Options:\n"
        "(A) a leg muscle relaxing after exercise\n"
        "(B) a bacterial population in the bloodstream\n"
        "(C) several viral particles on the skin\n"
        "(D) carbohydrates being digested in the stomach\n"
        "\n"
        "Relevant knowledge: A fever is the body's response to infection by pathogens such as bacteria.\n"
        "\n"
        "Reasoning: Bacteria in the bloodstream trigger the immune system, which raises body temperature.\n"
        "\n"
        "Answer: (B) a bacterial population in the bloodstream\n"
    )


def test_passage_comes_first_and_boolean_answer_reads_naturally():
    item = seed_records.boolq(1)[0]
    document = format_pretraining_document(
        item, {"knowledge": "", "reasoning": "Two players won without being All-Stars.", "final_answer": "no"}
    )
    assert document.startswith("Passage: Home Run Derby -- ")
    assert document.index("Passage:") < document.index("Question:") < document.index("Reasoning:")
    assert "Relevant knowledge" not in document  # empty sections are left out
    assert "Options:" not in document
    assert document.endswith("\n\nAnswer: No\n")


@pytest.mark.parametrize(
    "item, answer_line",
    [
        (seed_records.gsm8k(1)[0], "Answer: 72"),
        (seed_records.webqs(1)[0], "Answer: Padmé Amidala"),
        (seed_records.nli_seed(), "Answer: entailment"),
        ({"question": "def inc(x):", "answer_format": CODE, "answer_text": "def inc(x):\n    return x + 1"},
         "Answer:\n```\ndef inc(x):\n    return x + 1\n```"),
    ],
    ids=[NUMERIC, SHORT_TEXT, LABEL, CODE],
)
def test_open_formats_show_the_items_answer(item, answer_line):
    document = format_pretraining_document(item, {"knowledge": "k", "reasoning": "r", "final_answer": "ignored"})
    assert document.endswith(answer_line + "\n")
    assert "Options:" not in document


def test_items_own_answer_wins_over_the_enrichment_sample():
    item = seed_records.winogrande(1)[0]  # answer: Dennis (index 1)
    document = format_pretraining_document(item, {"reasoning": "r", "final_answer": "Ian", "final_answer_index": 0})
    assert document.endswith("Answer: (B) Dennis\n")


def test_enrichment_answer_is_the_fallback_for_items_without_one():
    item = {"question": "Is water wet?", "answer_format": BOOLEAN, "answer_text": None}
    document = format_pretraining_document(item, {"reasoning": "r", "final_answer_raw": "Yes.", "final_answer": "yes"})
    assert document.endswith("Answer: Yes\n")


def test_mcq_answer_index_is_derived_from_the_text_when_missing():
    item = dict(seed_records.arc_easy(1)[0], answer_index=None)
    assert format_pretraining_document(item, ENRICHMENT).endswith(
        "Answer: (B) a bacterial population in the bloodstream\n")


def test_document_bytes_depend_on_the_record_not_on_the_process():
    """Same item and sample, same bytes: in interpreters with other hash seeds (no set or hash
    order leaks into the text) and with the record's keys in another order (rows come from Spark
    with the table's column order, from JSON or from tests with any order)."""
    item = seed_records.arc_easy(2)[1]
    expected = format_pretraining_document(item, ENRICHMENT)
    assert format_pretraining_document(dict(reversed(item.items())), dict(reversed(ENRICHMENT.items()))) == expected
    script = ("import json, sys\nfrom udfs.formatting import format_pretraining_document\n"
              "args = json.load(sys.stdin)\nsys.stdout.write(format_pretraining_document(*args))")
    for hash_seed in ("0", "1", "4242"):
        out = subprocess.run([sys.executable, "-c", script], input=json.dumps([item, ENRICHMENT]), text=True,
                             capture_output=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONHASHSEED=hash_seed))
        assert out.stdout == expected, hash_seed


@pytest.mark.parametrize("index, letters", [(0, "A"), (3, "D"), (25, "Z"), (26, "AA"), (27, "AB")])
def test_option_letter(index, letters):
    assert option_letter(index) == letters
