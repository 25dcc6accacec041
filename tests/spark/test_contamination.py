"""The contamination filter's Spark half on tiny inline tables: the held-out index in Delta (built
once per heldout version, rebuilt when heldout or the settings change, boilerplate marked), and the
three rules as joins (which rule, which held-out item, what matched, tie-breaks)."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.filters.contamination import (
    INDEX_TABLES,
    MATCH_COLUMNS,
    contamination_matches,
    ensure_heldout_index,
    index_marker,
)
from schemas.tables import HELDOUT, HELDOUT_KEYS, HELDOUT_SHINGLES

pytestmark = pytest.mark.spark

ITEM_SCHEMA = ("item_id string, question string, context string, choices array<string>, answer_text string, "
               "answer_format string")

PASSAGE = ("A rooster, also known as a gamecock, cockerel or cock, is an adult male gallinaceous bird, usually a "
           "male chicken (Gallus gallus domesticus). Roosters are almost always polygamous.")
STEM = "Which of the following statements about the process described in the passage above is most accurate"

HELDOUT_ROWS = [
    dict(heldout_id="h_arc", task="arc_easy", split="test", answer_format="mcq",
         question="Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
         choices=["safety goggles", "breathing mask", "rubber gloves", "lead apron"], answer_text="breathing mask",
         decontamination_text="Question: Which piece of safety equipment is used to keep mold spores from entering "
                              "the respiratory system?\nAnswer:"),
    dict(heldout_id="h_nq", task="nq_open", split="validation", answer_format="short_text",
         question="who wrote he ain't heavy he's my brother lyrics", choices=["Bobby Scott", "Bob Russell"],
         answer_text="Bobby Scott", decontamination_text="Q: who wrote he ain't heavy he's my brother lyrics?\nA:"),
    dict(heldout_id="h_boolq", task="boolq", split="validation", answer_format="boolean",
         question="is a chicken and rooster the same thing", context=PASSAGE, choices=["no", "yes"],
         answer_text="yes", decontamination_text=PASSAGE),
    dict(heldout_id="h_gsm", task="gsm8k", split="test", answer_format="numeric",
         question="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                  "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
                  "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
         answer_text="18"),
    *[dict(heldout_id=f"h_mmlu{i}", task="mmlu_anatomy", split="test", answer_format="mcq",
           question=f"{STEM} in case {i}?", choices=[f"option {i} {c}" for c in "abcd"], answer_text=f"option {i} a")
      for i in range(3)],
]


def write_heldout(lakehouse, rows) -> None:
    spark = lakehouse.spark
    full = [{**{f.name: None for f in HELDOUT.schema.fields}, "doc_index": i, "ingested_at": dt.datetime(2026, 1, 1),
             **row} for i, row in enumerate(rows)]
    lakehouse.merge(spark.createDataFrame(full, HELDOUT.schema), HELDOUT)


def items(lakehouse, rows):
    return lakehouse.spark.createDataFrame(
        [(r["item_id"], r["question"], r.get("context"), r.get("choices"), r["answer_text"], r.get("answer_format"))
         for r in rows], ITEM_SCHEMA)


def versions(lakehouse) -> dict[str, int]:
    return {spec.name: lakehouse.version(spec.name) for spec in INDEX_TABLES}


def test_index_is_built_once_per_heldout_version_and_settings(lakehouse, make_config):
    write_heldout(lakehouse, HELDOUT_ROWS)
    first = ensure_heldout_index(lakehouse, lakehouse.config)
    assert first.built and first.heldout_items == len(HELDOUT_ROWS)
    built = versions(lakehouse)
    assert all(index_marker(lakehouse, name) and f'"heldout_version": {first.heldout_version}' in index_marker(lakehouse, name)
               for name in built)

    again = ensure_heldout_index(lakehouse, lakehouse.config)
    assert not again.built and versions(lakehouse) == built  # no work, no commit

    write_heldout(lakehouse, [dict(heldout_id="h_new", task="webqs", split="test", answer_format="short_text",
                                   question="what does jamaican people speak?", answer_text="Jamaican English")])
    rebuilt = ensure_heldout_index(lakehouse, lakehouse.config)
    assert rebuilt.built and rebuilt.heldout_version == first.heldout_version + 1
    assert lakehouse.read(HELDOUT_SHINGLES.name).count() == len(HELDOUT_ROWS) + 1

    other = make_config(f"schema={lakehouse.config.schema_name}", "curate.contamination.ngram_n=10",
                        home=lakehouse.config.home)
    assert ensure_heldout_index(lakehouse, other).built  # new settings, new index
    assert not ensure_heldout_index(lakehouse, other).built


def test_boilerplate_ngrams_and_stimuli_are_marked(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    ensure_heldout_index(lakehouse, lakehouse.config)
    keys = lakehouse.read(HELDOUT_KEYS.name)
    stem_rows = keys.where("kind = 'ngram' AND heldout_id = 'h_mmlu0' AND heldout_items = 3").count()
    assert stem_rows > 0  # the stem's n-grams are in all three items...
    assert keys.where("kind = 'ngram' AND heldout_items = 3 AND boilerplate").count() == 0  # ...below the cutoff of 10
    assert keys.where("kind = 'ngram' AND heldout_items = 1 AND boilerplate").count() == 0


def test_the_three_rules(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    arc, nq, boolq = HELDOUT_ROWS[0], HELDOUT_ROWS[1], HELDOUT_ROWS[2]
    rows = [
        dict(item_id="verbatim", **{k: arc[k] for k in ("question", "choices", "answer_text", "answer_format")}),
        dict(item_id="formatting", question=arc["question"].upper().replace(" ", "  ").rstrip("?"),
             choices=["Lead apron.", "Rubber gloves.", "Breathing mask.", "Safety goggles."],
             answer_text="Breathing mask.", answer_format="mcq"),
        dict(item_id="embedded", question="In a lab, " + arc["question"].lower() + " Pick the best answer.",
             choices=["a fan", "a mask", "a hat"], answer_text="a mask", answer_format="mcq"),
        dict(item_id="short_edit", question="who wrote he ain't heavy he's my sister lyrics", answer_text="Bobby Scott",
             answer_format="short_text"),
        dict(item_id="short_edit_other_answer", question="who wrote he ain't heavy he's my sister lyrics",
             answer_text="Elton John", answer_format="short_text"),
        dict(item_id="short_verbatim_no_answer_check", question=nq["question"], answer_text="someone else",
             answer_format="short_text"),
        dict(item_id="boolq_edit", question="is a hen and rooster the same thing", context=PASSAGE,
             choices=["yes", "no"], answer_text="yes", answer_format="boolean"),
        dict(item_id="boolq_edit_other_passage", question="is a hen and rooster the same thing",
             context="A hen is an adult female chicken kept for its eggs on farms around the world.",
             choices=["yes", "no"], answer_text="yes", answer_format="boolean"),
        dict(item_id="boolq_edit_no_passage", question="is a hen and rooster the same thing", answer_text="yes",
             answer_format="boolean"),
        dict(item_id="gsm_edit", question=HELDOUT_ROWS[3]["question"].replace("Janet", "Maria"), answer_text="18",
             answer_format="numeric"),
        dict(item_id="clean", question="What is the boiling point of water at sea level in degrees Celsius?",
             answer_text="100", answer_format="numeric"),
    ]
    result = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, rows))
    assert tuple(result.columns) == MATCH_COLUMNS
    got = {r["item_id"]: r.asDict() for r in result.collect()}
    result.unpersist()

    assert got["verbatim"]["rule"] == "whole_text" and got["verbatim"]["score"] == 1.0
    assert (got["verbatim"]["heldout_id"], got["verbatim"]["heldout_task"], got["verbatim"]["heldout_split"]) == (
        "h_arc", "arc_easy", "test")
    assert got["formatting"]["rule"] == "whole_text" and got["formatting"]["heldout_id"] == "h_arc"
    assert got["embedded"]["rule"] == "ngram" and got["embedded"]["heldout_id"] == "h_arc"
    assert len(got["embedded"]["matched"].split()) == 13 and got["embedded"]["matched"] in got["verbatim"]["matched"]
    assert 0 < got["embedded"]["score"] < 1
    assert got["short_edit"]["rule"] == "near_dup" and got["short_edit"]["heldout_id"] == "h_nq"
    assert got["short_edit"]["matched"] == "who wrote he ain t heavy he s my brother lyrics"
    assert "short_edit_other_answer" not in got  # a near copy keeps the answer
    assert got["short_verbatim_no_answer_check"]["rule"] == "whole_text"  # a verbatim question is a copy regardless
    assert got["boolq_edit"]["rule"] == "near_dup" and got["boolq_edit"]["heldout_id"] == "h_boolq"
    assert "boolq_edit_other_passage" not in got and "boolq_edit_no_passage" not in got
    assert got["gsm_edit"]["rule"] == "ngram" and got["gsm_edit"]["heldout_id"] == "h_gsm"  # long: n-grams survive
    assert "clean" not in got
    assert all(len(r["matched"]) <= 200 for r in got.values())


def test_boilerplate_is_skipped(lakehouse, make_config):
    write_heldout(lakehouse, HELDOUT_ROWS)
    probe = [dict(item_id="stem_only", question=f"{STEM} for a new case?", choices=["w", "x", "y", "z"],
                  answer_text="w", answer_format="mcq")]
    strict = make_config(f"schema={lakehouse.config.schema_name}", "curate.contamination.boilerplate_min_items=3",
                         home=lakehouse.config.home)
    skipped = contamination_matches(lakehouse, strict, items(lakehouse, probe))
    assert skipped.count() == 0  # the stem is in 3 held-out items: boilerplate at a cutoff of 3
    found = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, probe))  # cutoff 10
    assert [r["rule"] for r in found.collect()] == ["ngram"]


def test_ties_break_on_rule_then_heldout_id(lakehouse):
    twin = dict(HELDOUT_ROWS[1], heldout_id="h_nq_a", task="webqs", split="test")
    write_heldout(lakehouse, [dict(HELDOUT_ROWS[1], heldout_id="h_nq_b"), twin])
    result = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, [
        dict(item_id="copy", question=HELDOUT_ROWS[1]["question"], answer_text="Bobby Scott",
             answer_format="short_text")]))
    (row,) = result.collect()
    assert (row["rule"], row["heldout_id"], row["heldout_task"]) == ("whole_text", "h_nq_a", "webqs")


def test_items_without_answer_format_and_bad_input(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    spark = lakehouse.spark
    arc = HELDOUT_ROWS[0]
    df = spark.createDataFrame([("x1", arc["question"], None, arc["choices"], arc["answer_text"]),
                                ("x2", "", None, None, "nothing")],
                               "item_id string, question string, context string, choices array<string>, answer_text string")
    assert [r["item_id"] for r in contamination_matches(lakehouse, lakehouse.config, df).collect()] == ["x1"]
    with pytest.raises(ValueError, match="answer_text"):
        contamination_matches(lakehouse, lakehouse.config, df.drop("answer_text"))
    assert contamination_matches(lakehouse, lakehouse.config, df.limit(0)).count() == 0
