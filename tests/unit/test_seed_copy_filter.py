"""The Spark-side wrappers of issue 29's rules, without Spark: the `seed_copy` filter's per-task
pandas step (jobs/filters/seed_copy.py) and the `prompt_leak` SQL function validation calls
(jobs/sqlmodels.py), on real seeds and with rows shaped as Arrow hands them over (numpy arrays)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jobs.filters.seed_copy import decide_task
from jobs.sqlmodels import _prompt_leak_batch
from tests.unit.test_copies import arc_easy_seeds, boolq_seeds
from udfs.prompt_leak import prompt_sentences


def _frame(seeds, items) -> pd.DataFrame:
    rows = [dict(s, gen_id=None, _kind="seed") for s in seeds] + [dict(i, _kind="item") for i in items]
    for r in rows:  # Arrow hands arrays to pandas as numpy arrays
        r["choices"] = None if r.get("choices") is None else np.array(r["choices"], dtype=object)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("i", [0, 17, 4242])
def test_a_task_of_real_boolq_seeds_decides_every_item_once(i):
    seeds = boolq_seeds()[:5000]
    seed = seeds[i % len(seeds)]
    other = seeds[(i + 1) % len(seeds)]
    items = [
        dict(seed, gen_id="flipped", context=seed["context"][: len(seed["context"]) // 2 + 40],
             answer_text="no" if seed["answer_text"] == "yes" else "yes"),
        dict(seed, gen_id="other_seeds_question", seed_id=other["seed_id"], context="A new passage about tides."),
        dict(seed, gen_id="new", question="is the moon larger than the earth", context="The Moon is smaller."),
    ]
    out = decide_task(_frame(seeds, items)).set_index("gen_id")
    assert sorted(out.index) == ["flipped", "new", "other_seeds_question"]
    assert (out.loc["flipped", "passed"], out.loc["flipped", "reason"]) == (False, "seed_with_answer_changed")
    assert json.loads(out.loc["flipped", "evidence"])["seed_id"] == seed["seed_id"]
    assert (out.loc["other_seeds_question", "passed"], out.loc["other_seeds_question", "reason"]) == (
        False, "copies_seed_question")
    assert (out.loc["new", "passed"], out.loc["new", "reason"]) == (True, "new_question")


def test_a_frame_of_real_arc_seeds_asked_of_new_options_passes():
    seeds = arc_easy_seeds()
    frame = next(s for s in seeds if s["question"].lower().startswith("which is an example of a chemical reaction"))
    item = dict(frame, gen_id="g", choices=["bread rising in an oven", "ice melting", "salt dissolving", "a rock"],
                answer_text="bread rising in an oven")
    out = decide_task(_frame(seeds, [item]))
    assert (bool(out.passed[0]), out.reason[0]) == (True, "new_body_for_frame")


def test_a_task_without_items_decides_nothing():
    out = decide_task(_frame(boolq_seeds()[:50], []))
    assert out.empty and list(out.columns) == ["gen_id", "passed", "reason", "evidence"]


@pytest.mark.parametrize("field", ["question", "context", "choices", "answer_text"])
def test_the_prompt_leak_function_names_the_first_piece_found_in_any_field(field):
    sentence = max(prompt_sentences(), key=len)
    texts = {"question": "Is the sky blue?", "context": "The sky looks blue.", "choices": np.array(["yes", "no"]),
             "answer_text": "yes"}
    leaked = dict(texts)
    if field == "choices":
        leaked["choices"] = np.array(["yes", f"no. {sentence.capitalize()}."])
    else:
        leaked[field] = f"{texts[field]} {sentence.upper()}!"
    out = _prompt_leak_batch(*(pd.Series([row[k] for row in (texts, leaked)]) for k in
                               ("question", "context", "choices", "answer_text")))
    assert out[0] is None
    assert out[1] == f"sentence: {sentence}"[:200]
