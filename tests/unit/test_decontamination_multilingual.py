"""Issue 25, contamination: held-out items in scripts without spaces (kind 1), whole-text matches
over a passage (kind 9), answers compared through the answer algebra (kind 10), and retyped
items (kinds 3-8 reaching the matcher). Held-out items: tests/data/multilingual_items.json (written
for taskseed) and the benchmark mirror."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_decontamination import _index_of, _jsonl, _match
from udfs.decontamination import answer_form

ITEMS = json.loads((Path(__file__).parents[1] / "data" / "multilingual_items.json").read_text(encoding="utf-8"))
SCRIPTS = [k for k, v in ITEMS.items() if isinstance(v, dict) and "heldout" in v]
NO_SPACE = ("zh", "ja", "th")


def _heldout_frame(scripts=SCRIPTS) -> pd.DataFrame:
    rows = []
    for script in scripts:
        for i, (q, a) in enumerate(ITEMS[script]["heldout"]):
            rows.append({"heldout_id": f"{script}:{i}", "task": f"quiz_{script}", "split": "test", "question": q,
                         "context": None, "choices": None, "answer_format": "short_text", "answer_text": a,
                         "decontamination_text": None})
    return pd.DataFrame(rows)


def _items(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"item_id": i, "question": q, "context": None, "choices": None, "answer_text": a,
                          "answer_format": "short_text"} for i, q, a in rows])


@pytest.fixture(scope="module")
def multilingual_index():
    return _index_of(_heldout_frame())


# ---- kind 1: a held-out item embedded verbatim in a longer item, in a script without spaces --------


@pytest.mark.parametrize("script", NO_SPACE)
def test_a_wrapped_held_out_item_is_caught_in_scripts_without_spaces(multilingual_index, script):
    wrap = ITEMS[script]["wrap"]
    items = _items([(f"{script}{i}", wrap.format(q=q), "x") for i, (q, _) in enumerate(ITEMS[script]["heldout"])])
    found = _match(multilingual_index, items)
    assert {m["rule"] for m in found.values()} == {"ngram"}
    assert {k: m["heldout_id"] for k, m in found.items()} == {f"{script}{i}": f"{script}:{i}"
                                                              for i in range(len(ITEMS[script]["heldout"]))}


@pytest.mark.parametrize("script", SCRIPTS)
def test_clean_items_of_every_script_match_nothing(multilingual_index, script):
    wrap = ITEMS[script]["wrap"]
    rows = [(f"{script}c{i}", q, "x") for i, q in enumerate(ITEMS[script]["clean"])]
    rows += [(f"{script}w{i}", wrap.format(q=q), "x") for i, q in enumerate(ITEMS[script]["clean"])]
    assert _match(multilingual_index, _items(rows)) == {}


@pytest.mark.parametrize("script", SCRIPTS)
def test_verbatim_copies_are_whole_text_matches_in_every_script(multilingual_index, script):
    rows = [(f"{script}{i}", q, a) for i, (q, a) in enumerate(ITEMS[script]["heldout"])]
    found = _match(multilingual_index, _items(rows))
    assert len(found) == len(rows) and {m["rule"] for m in found.values()} == {"whole_text"}


@pytest.mark.parametrize("script", ["ko", "ar", "hi"])
def test_long_wrapped_items_are_caught_in_spaced_scripts(multilingual_index, script):
    """Scripts with spaces keep word n-grams: a wrapped item of 13 words or more is caught."""
    from udfs.textnorm import normalize_text

    wrap = ITEMS[script]["wrap"]
    rows = [(f"{script}{i}", wrap.format(q=q), "x") for i, (q, _) in enumerate(ITEMS[script]["heldout"])
            if len(normalize_text(q).split()) >= 13]
    assert rows
    assert set(_match(multilingual_index, _items(rows))) == {r[0] for r in rows}


@pytest.mark.parametrize("script", NO_SPACE)
def test_a_one_character_edit_of_a_short_no_space_item_is_a_near_duplicate(script):
    """A short held-out item (fewer than 13 characters) edited by one character keeps its answer."""
    short = {"zh": ("光合作用需要什么气体？", "光合作用要什么气体？", "二氧化碳"),
             "ja": ("日本の首都はどこですか。", "日本の首都はどこでしょう。", "東京"),
             "th": ("ช้างกินอะไร", "ช้างกินอไร", "หญ้า")}[script]
    index = _index_of(pd.DataFrame([{"heldout_id": "h", "task": "t", "split": "test", "question": short[0],
                                     "context": None, "choices": None, "answer_format": "short_text",
                                     "answer_text": short[2], "decontamination_text": None}]))
    found = _match(index, _items([("edit", short[1], short[2]), ("other", short[1], "大阪")]))
    assert set(found) == {"edit"} and found["edit"]["rule"] == "near_dup"


# ---- kinds 3-8 at the matcher: a retyped copy is a copy, a changed operator is not -------------------


def _gsm_heldout(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame([{"heldout_id": f"gsm:{i:03d}", "task": "gsm8k", "split": "test", "question": r["question"],
                          "context": None, "choices": None, "answer_format": "numeric",
                          "answer_text": r["answer"].split("####")[-1].strip(), "decontamination_text": None}
                         for i, r in enumerate(_jsonl("openai/gsm8k/main/test.jsonl", n))])


@pytest.mark.parametrize("retype", [
    lambda q: q.replace("a", "\u0430"),                       # Cyrillic а
    lambda q: q.replace("o", "\u03bf"),                       # Greek omicron
    lambda q: q.replace("tion", "\u00adtion"),                # soft hyphen
    lambda q: q.replace(" the ", " the\u200b "),              # zero-width space
    lambda q: q.replace("'", "&#39;").replace("&", "&amp;"),  # entities
    lambda q: "\ufeff" + q.upper(),                          # BOM, case
])
def test_retyped_real_held_out_items_are_still_copies(retype):
    heldout = _gsm_heldout()
    index = _index_of(heldout)
    items = _items([(f"i{k}", retype(q), a) for k, (q, a) in enumerate(zip(heldout["question"], heldout["answer_text"]))])
    found = _match(index, items)
    assert {k: m["heldout_id"] for k, m in found.items()} == {f"i{k}": h for k, h in enumerate(heldout["heldout_id"])}


@pytest.mark.parametrize("held, other", [
    ("Is 9 > 4?", "Is 9 < 4?"),
    ("What is 12 - 5?", "What is 12 + 5?"),
    ("Is 3.5 greater than 3?", "Is 35 greater than 3?"),
    ("Which is larger: x ≥ 2 or x ≤ 2?", "Which is larger: x ≤ 2 or x ≥ 2?"),
])
def test_a_held_out_item_with_the_other_sign_is_not_a_copy(held, other):
    index = _index_of(pd.DataFrame([{"heldout_id": "h", "task": "t", "split": "test", "question": held, "context": None,
                                     "choices": None, "answer_format": "short_text", "answer_text": "yes",
                                     "decontamination_text": None}]))
    found = _match(index, _items([("same", held, "yes"), ("other", other, "no")]))
    assert set(found) == {"same"}


# ---- kind 9: a generic short question over another passage -------------------------------------------


PASSAGES = [
    ("The Eiffel Tower was built for the 1889 World's Fair in Paris and opened to visitors in March 1889.", "1889"),
    ("The Golden Gate Bridge connects San Francisco to Marin County and opened to traffic in May 1937.", "1937"),
    ("The Sydney Opera House, designed by Jorn Utzon, was formally opened by Queen Elizabeth II in 1973.", "1973"),
    ("Tower Bridge crosses the River Thames in London; its construction ended and it opened in 1894.", "1894"),
]


@pytest.mark.parametrize("question", ["What year did it open?", "When did it open?", "Who designed it?"])
def test_a_generic_question_over_another_passage_is_not_a_copy(question):
    heldout = pd.DataFrame([{"heldout_id": "h", "task": "squad", "split": "validation", "question": question,
                             "context": PASSAGES[0][0], "choices": None, "answer_format": "short_text",
                             "answer_text": PASSAGES[0][1], "decontamination_text": None}])
    index = _index_of(heldout)
    rows = [{"item_id": f"other{i}", "question": question, "context": p, "choices": None, "answer_text": a,
             "answer_format": "short_text"} for i, (p, a) in enumerate(PASSAGES[1:])]
    rows += [{"item_id": "same_passage", "question": question, "context": PASSAGES[0][0], "choices": None,
              "answer_text": "a wrong answer", "answer_format": "short_text"},
             {"item_id": "same_answer", "question": question, "context": PASSAGES[1][0], "choices": None,
              "answer_text": PASSAGES[0][1], "answer_format": "short_text"}]
    found = _match(index, pd.DataFrame(rows))
    assert set(found) == {"same_passage", "same_answer"}
    assert {m["rule"] for m in found.values()} == {"whole_text"}


def test_deferred_passages_decide_the_whole_text_rule_the_same_way():
    import pyarrow as pa

    from udfs.decontamination import featurize_batch

    heldout = pd.DataFrame([{"heldout_id": "h", "task": "squad", "split": "validation", "question": "When did it open?",
                             "context": PASSAGES[0][0], "choices": None, "answer_format": "short_text",
                             "answer_text": PASSAGES[0][1], "decontamination_text": None}])
    index = _index_of(heldout)
    items = pd.DataFrame([{"id": f"i{i}", "question": "When did it open?", "context": p, "choices": None,
                           "answer_text": "a wrong answer", "answer_format": "short_text"}
                          for i, (p, _) in enumerate(PASSAGES)])
    batch = pa.RecordBatch.from_pandas(items, preserve_index=False)
    for kwargs in ({"defer_passages": True, "near_dup_answers": index.near_dup_answers}, {}):
        got = index.match_batch(featurize_batch(batch, index.params, heldout=False, **kwargs)).to_pylist()
        assert [m["item_id"] for m in got] == ["i0"]


# ---- kind 10: answers through the answer algebra of the vote ------------------------------------------


@pytest.mark.parametrize("a, b", [
    ("\\frac{3}{4}", "0.75"), ("3/4", "0.75"), ("$1,000", "1000"), ("\\boxed{12}", "12"),
    ("2.50", "2.5"), ("\u22125", "-5"), ("seven", "7"), ("72 clips", "72"),
])
def test_answer_forms_agree_under_the_answer_algebra(a, b):
    assert answer_form(a) == answer_form(b)


@pytest.mark.parametrize("a, b", [("0.75", "0.57"), ("-5", "5"), ("\u20135", "5"), ("Paris", "London"), ("3/4", "4/3")])
def test_answer_forms_of_different_answers_differ(a, b):
    assert answer_form(a) != answer_form(b)


@pytest.mark.parametrize("held, generated", [("\\frac{3}{4}", "0.75"), ("0.5", "1/2"), ("1,250", "1250"),
                                             ("\\dfrac{1}{4}", "0.25")])
def test_a_near_copy_with_the_same_answer_written_otherwise_is_a_copy(held, generated):
    question = "Which fraction of the pizza did Maria eat if she ate one slice of four equal slices?"
    index = _index_of(pd.DataFrame([{"heldout_id": "h", "task": "t", "split": "test", "question": question,
                                     "context": None, "choices": None, "answer_format": "numeric",
                                     "answer_text": held, "decontamination_text": None}]))
    edited = question.replace("Maria", "Julia")
    found = _match(index, _items([("copy", edited, generated), ("other", edited, "0.2")]))
    assert set(found) == {"copy"}
