"""The prompt contract end to end, without HTTP: prompts rendered here, answered by the simulator's
pure answer function, parsed back by udfs.parsing. Catches drift between the three."""

from __future__ import annotations

import pytest

from tests.unit import seed_records
from schemas.answer_formats import BOOLEAN, LABEL, MCQ, NUMERIC, SHORT_TEXT
from udfs.parsing import answers_agree, parse_enrichment, parse_generated_item
from udfs.prompts import render_enrichment_messages, render_generation_messages
from simulator import SimSettings, sim_answer

CASES = [
    (seed_records.arc_easy, MCQ, None),
    (seed_records.winogrande, MCQ, None),
    (seed_records.gsm8k, NUMERIC, None),
    (seed_records.boolq, BOOLEAN, None),
    (seed_records.webqs, SHORT_TEXT, None),
    (lambda n: [seed_records.nli_seed()], LABEL, ["entailment", "neutral", "contradiction"]),
]


@pytest.mark.parametrize("load, answer_format, labels", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_generated_items_parse_and_simulated_votes_agree(load, answer_format, labels):
    settings = SimSettings()  # no injected wrong answers: every vote must agree
    seeds = load(5)
    for i, seed in enumerate(seeds):
        messages, _ = render_generation_messages(seed, seeds[:2], answer_format, labels, seed["task"])
        item = parse_generated_item(sim_answer({"messages": messages}, settings, f"g{i}", f"g{i}"),
                                    answer_format, seed, labels)
        item_row = dict(item.to_dict(), task=seed["task"])
        messages, _ = render_enrichment_messages(item_row, answer_format, labels)
        enrichment = parse_enrichment(sim_answer({"messages": messages}, settings, f"e{i}", f"e{i}"),
                                      answer_format, item_row, labels)
        assert answers_agree(enrichment.final_answer, item.answer_text, answer_format)
        if answer_format == MCQ:
            assert enrichment.final_answer_index == item.answer_index
