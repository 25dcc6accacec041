"""Given/expect tests of every SQL model of the curate stage (jobs/sql/), on tiny inline tables.

Each test gives a model its inputs — lakehouse tables for staging models, the upstream views
(dbt-style mocked refs) for intermediate and curated models — runs that one model through the
real binder (`jobs.sqlmodels.run_model`) and checks its rows. The runner itself (contract checks, a
filter plugged in without changes, MERGE scope and idempotency) is tested at the end.
"""

from __future__ import annotations

import json

import pytest
from pyspark.sql.types import StructType

from jobs.curate import curate_params
from jobs.filters.base import CurateContractError, Filter
from jobs.filters.registry import FILTERS
from jobs.sqlmodels import CurateContext, Model, register_udfs, run_model, sql_literal
from schemas.tables import ENRICHED, GENERATED, LICENSE_POLICY, LLM_CALLS, SEEDS, TableSpec
from udfs.prompt_leak import prompt_sentences

pytestmark = pytest.mark.spark

# a fixed sentence of our own prompts (udfs/prompt_leak.py reads them from udfs/prompts/*.txt)
LEAKED = max(prompt_sentences(), key=len)

CANDIDATE_DDL = (
    "gen_id string, item_kind string, seed_id string, task string, task_family string, answer_format string, "
    "question string, context string, choices array<string>, answer_index int, answer_text string, "
    "license string, license_class string, generation_request_id string, generation_model string, "
    "generation_prompt_version string, answer_key string, dedup_key string")
SAMPLE_DDL = (
    "gen_id string, sample int, knowledge string, reasoning string, final_answer_raw string, final_answer string, "
    "final_answer_index int, enrichment_request_id string, enrichment_model string, "
    "enrichment_prompt_version string, sample_key string")
VOTES_DDL = (
    "gen_id string, answer_format string, answer_key string, votes_returned bigint, votes_null bigint, "
    "votes_expected int, votes_agree int, votes_top_other int, agreement double, "
    "vote_counts array<struct<answer:string,votes:bigint>>, family string")
DECISION_DDL = "gen_id string, filter string, passed boolean, reason string, score double, evidence string"
GATED_DDL = DECISION_DDL + ", gate string"
CURATED_EXISTING_DDL = ("gen_id string, item_kind string, task string, question string, context string, "
                        "choices array<string>, agreement double, dedup_key string")
LICENSES_DDL = ("gen_id string, dataset_path string, license string, license_class string, commercial_ok string, "
                "in_policy boolean, policy_license string, policy_source_url string")
NEAR_DDL = ("gen_id string, component_id string, component_size bigint, best_match_id string, "
            "best_match_jaccard double, seed_match_id string, seed_match_jaccard double")
CONTAM_DDL = ("item_id string, rule string, heldout_id string, heldout_task string, heldout_split string, "
              "matched string, score double")


# ---- helpers ---------------------------------------------------------------------------------

def frame(spark, ddl: str, rows: list[dict]):
    schema = StructType.fromDDL(ddl)
    unknown = {k for r in rows for k in r} - set(schema.fieldNames())
    assert not unknown, f"columns not in the DDL: {unknown}"
    return spark.createDataFrame([tuple(r.get(f) for f in schema.fieldNames()) for r in rows], schema)


def write(lakehouse, spec: TableSpec, rows: list[dict]) -> None:
    df = lakehouse.spark.createDataFrame([tuple(r.get(c) for c in spec.columns) for r in rows], spec.schema)
    lakehouse.merge(df, spec)


def run_one(lakehouse, path: str, views: dict | None = None, config=None, tasks=None, **params) -> list[dict]:
    """Run one model with the given upstream views; its rows as dicts."""
    config = config or lakehouse.config
    ctx = CurateContext(lakehouse, config, tasks, "run-test", params=curate_params(config, tasks, "run-test"))
    ctx.params.update(params)
    register_udfs(lakehouse.spark)
    try:
        for name, df in (views or {}).items():
            ctx.register(name, df)
        return [r.asDict(recursive=True) for r in run_model(ctx, Model(path)).collect()]
    finally:
        ctx.drop_views()


def by_id(rows: list[dict], key: str = "gen_id") -> dict[str, dict]:
    return {r[key]: r for r in rows}


def cand(gen_id: str, **kw) -> dict:
    row = dict(gen_id=gen_id, item_kind="generated", seed_id="s1", task="arc_easy", task_family="arc",
               answer_format="mcq", question="Which material conducts heat best?", context=None,
               choices=["copper", "wood", "glass"], answer_index=0, answer_text="copper",
               license="cc-by-sa-4.0", license_class="share-alike", generation_request_id=f"req-{gen_id}",
               generation_model="m", generation_prompt_version="generate-mcq-v1",
               answer_key="option:0", dedup_key=f"key-{gen_id}")
    row.update(kw)
    return row


def seed(seed_id: str, **kw) -> dict:
    row = dict(seed_id=seed_id, task="arc_easy", task_family="arc", dataset_path="allenai/ai2_arc",
               dataset_name="ARC-Easy", split="train", doc_index=int(seed_id[-1]) if seed_id[-1].isdigit() else 0,
               answer_format="mcq", question=f"Seed question {seed_id} about heat?", choices=["a", "b"],
               answer_index=0, answer_text="a", license="cc-by-sa-4.0", license_class="share-alike")
    row.update(kw)
    return row


def generated(gen_id: str, **kw) -> dict:
    row = dict(gen_id=gen_id, seed_id="s1", sample_index=0, task="arc_easy", task_family="arc",
               answer_format="mcq", question="Which material conducts heat best?", choices=["copper", "wood"],
               answer_index=0, answer_text="copper", license="cc-by-sa-4.0", license_class="share-alike",
               model="m", prompt_version="generate-mcq-v1", request_id=f"req-{gen_id}")
    row.update(kw)
    return row


# ---- binder ----------------------------------------------------------------------------------

def test_literals_round_trip_through_spark(spark):
    tricky = "quote ' backslash \\ regex \\[INST\\] newline \n unicode é"
    row = spark.sql(f"SELECT {sql_literal(tricky)} AS s, {sql_literal(0.1)} AS d, "
                    f"{sql_literal({'mcq': 5})}['mcq'] AS m").first()
    assert row.s == tricky and row.d == 0.1 and row.m == 5


# ---- staging ---------------------------------------------------------------------------------

def test_stg_candidates_scope_seed_items_and_keys(lakehouse):
    write(lakehouse, SEEDS, [seed("s1"), seed("s2", task="gsm8k", answer_format="numeric", choices=None,
                                                 answer_index=None, answer_text="1,000", question="How many?")])
    write(lakehouse, GENERATED, [
        generated("g1", context="The  Sun."),
        generated("g2", question="which MATERIAL conducts heat best", context="the sun"),  # formatting only
        generated("g3", question="Which material conducts heat best?", context="The Moon."),
        generated("g4", task="gsm8k", answer_format="numeric", question="What is 999 + 1?", choices=None,
                  answer_index=None, answer_text="1000"),
    ])
    write(lakehouse, ENRICHED, [dict(gen_id="s2", sample=0, item_kind="seed", task="gsm8k"),
                                dict(gen_id="g1", sample=0, item_kind="generated", task="arc_easy")])
    rows = by_id(run_one(lakehouse, "staging/stg_candidates.sql", enrich_seeds=True))
    assert set(rows) == {"g1", "g2", "g3", "g4", "s2"}  # s1 has no enrichment: not an item
    # without enrich.enrich_seeds an enriched seed is only the calibration sample: no candidate
    assert set(by_id(run_one(lakehouse, "staging/stg_candidates.sql", enrich_seeds=False))) == {"g1", "g2", "g3", "g4"}
    assert rows["s2"]["item_kind"] == "seed" and rows["s2"]["seed_id"] == "s2"
    assert rows["s2"]["generation_request_id"] is None and rows["s2"]["answer_key"] == "num:1000"
    assert rows["g4"]["answer_key"] == "num:1000" and rows["g1"]["answer_key"] == "option:0"
    assert rows["g1"]["generation_request_id"] == "req-g1"
    assert rows["g1"]["dedup_key"] == rows["g2"]["dedup_key"] != rows["g3"]["dedup_key"]
    scoped = by_id(run_one(lakehouse, "staging/stg_candidates.sql", tasks=["gsm8k"], enrich_seeds=True))
    assert set(scoped) == {"g4", "s2"}


def test_stg_enrichment_samples_keys_against_the_items_options(lakehouse):
    write(lakehouse, ENRICHED, [
        dict(gen_id="g1", sample=0, item_kind="generated", final_answer="copper", final_answer_index=0,
             request_id="e0"),
        dict(gen_id="g1", sample=1, item_kind="generated", final_answer="B", final_answer_index=None),
        dict(gen_id="g1", sample=2, item_kind="generated", final_answer=None, final_answer_index=None),
        dict(gen_id="s9", sample=0, item_kind="seed", final_answer="a"),
        dict(gen_id="g1", sample=0, item_kind="seed", final_answer="copper"),  # other kind: not g1's sample
    ])
    views = {"stg_candidates": frame(lakehouse.spark, CANDIDATE_DDL, [cand("g1")])}
    rows = {r["sample"]: r for r in run_one(lakehouse, "staging/stg_enrichment_samples.sql", views)}
    assert set(rows) == {0, 1, 2}
    assert [rows[i]["sample_key"] for i in (0, 1, 2)] == ["option:0", "option:1", None]
    assert rows[0]["enrichment_request_id"] == "e0"


def test_stg_seed_keys_share_the_candidates_recipe(lakehouse):
    write(lakehouse, SEEDS, [seed("s1", question="What is 2 + 2?", answer_text="4", context=None)])
    write(lakehouse, GENERATED, [generated("g1", question="what is 2+2", answer_text="4", answer_format="numeric",
                                           choices=None, answer_index=None)])
    keys = run_one(lakehouse, "staging/stg_seed_keys.sql")
    candidates = run_one(lakehouse, "staging/stg_candidates.sql")
    assert keys[0]["dedup_key"] == candidates[0]["dedup_key"]


def test_stg_curated_existing_keys(lakehouse):
    from schemas.tables import CURATED

    write(lakehouse, CURATED, [dict(gen_id="c1", item_kind="generated", seed_id="s1", task="arc_easy",
                                    question="Q?", answer_text="A", agreement=0.75)])
    rows = run_one(lakehouse, "staging/stg_curated_existing.sql")
    assert rows[0]["gen_id"] == "c1" and rows[0]["agreement"] == 0.75 and len(rows[0]["dedup_key"]) == 64


def test_stg_item_licenses_inherit_the_seed_and_the_policy_decides(lakehouse):
    write(lakehouse, SEEDS, [seed("s1"), seed("s2", dataset_path="someone/private_copy", license="unknown",
                                              license_class="unknown"),
                             seed("s3", dataset_path="allenai/sciq", license="cc-by-nc-3.0",
                                  license_class="non-commercial")])
    write(lakehouse, LICENSE_POLICY, [
        dict(dataset_path="allenai/ai2_arc", license="cc-by-sa-4.0", license_class="share-alike", commercial_ok="yes"),
        dict(dataset_path="allenai/sciq", license="cc-by-nc-3.0", license_class="non-commercial", commercial_ok="no"),
    ])
    views = {"stg_candidates": frame(lakehouse.spark, CANDIDATE_DDL, [
        cand("g1", seed_id="s1"), cand("g2", seed_id="s2"), cand("g3", seed_id="s3"),
        cand("g4", seed_id="gone", license=None, license_class=None)])}
    rows = by_id(run_one(lakehouse, "staging/stg_item_licenses.sql", views))
    assert (rows["g1"]["commercial_ok"], rows["g1"]["license_class"], rows["g1"]["in_policy"]) == \
           ("yes", "share-alike", True)
    assert (rows["g2"]["commercial_ok"], rows["g2"]["license_class"], rows["g2"]["in_policy"]) == \
           ("unknown", "unknown", False)
    assert (rows["g3"]["commercial_ok"], rows["g3"]["license_class"]) == ("no", "non-commercial")
    assert (rows["g4"]["commercial_ok"], rows["g4"]["license"], rows["g4"]["dataset_path"]) == \
           ("unknown", "unknown", None)


# ---- intermediate: votes and the chosen sample -----------------------------------------------

def samples(gen_id: str, keys: list[str | None], **kw) -> list[dict]:
    return [dict(gen_id=gen_id, sample=i, sample_key=k, reasoning=f"r{i}", knowledge=f"k{i}",
                 enrichment_request_id=f"{gen_id}-e{i}", **kw) for i, k in enumerate(keys)]


def test_int_votes_counts_nulls_and_missing_samples(lakehouse):
    spark = lakehouse.spark
    views = {
        "stg_candidates": frame(spark, CANDIDATE_DDL, [
            cand("all4", answer_key="option:0"), cand("two_of_four", answer_key="option:0"),
            cand("none", answer_key="option:0"), cand("free", answer_format="freeform", answer_key=None)]),
        "stg_enrichment_samples": frame(spark, SAMPLE_DDL, [
            *samples("all4", ["option:0"] * 4),
            *samples("two_of_four", ["option:0", "option:0", "option:1", None]),
            *samples("free", [None, None]),
        ]),
    }
    rows = by_id(run_one(lakehouse, "intermediate/int_votes.sql", views, samples_per_item=4))
    assert (rows["all4"]["votes_agree"], rows["all4"]["votes_expected"], rows["all4"]["agreement"]) == (4, 4, 1.0)
    r = rows["two_of_four"]
    assert (r["votes_agree"], r["votes_top_other"], r["votes_null"], r["votes_returned"]) == (2, 1, 1, 4)
    assert r["vote_counts"] == [{"answer": "option:0", "votes": 2}, {"answer": "option:1", "votes": 1}]
    assert (rows["none"]["votes_returned"], rows["none"]["votes_expected"], rows["none"]["agreement"]) == (0, 4, 0.0)
    assert rows["free"]["votes_null"] == 2 and rows["free"]["vote_counts"] == []
    # more samples came back than configured (config lowered later): the denominator is what came back
    more = by_id(run_one(lakehouse, "intermediate/int_votes.sql", views, samples_per_item=2))
    assert more["all4"]["votes_expected"] == 4


def test_int_chosen_sample_agrees_has_reasoning_lowest_index(lakehouse):
    spark = lakehouse.spark
    rows = samples("g1", ["option:1", "option:0", "option:0", "option:0"])
    rows[1]["reasoning"] = "  "  # agrees but no reasoning
    views = {
        "stg_candidates": frame(spark, CANDIDATE_DDL, [cand("g1", answer_key="option:0"),
                                                       cand("f1", answer_format="freeform", answer_key=None)]),
        "stg_enrichment_samples": frame(spark, SAMPLE_DDL, rows + samples("f1", [None, None])),
    }
    chosen = by_id(run_one(lakehouse, "intermediate/int_chosen_sample.sql", views))
    assert chosen["g1"]["sample"] == 2 and chosen["g1"]["agrees"] is True
    assert chosen["f1"]["sample"] == 0 and chosen["f1"]["agrees"] is False


# ---- filter_validation -----------------------------------------------------------------------

def _validation(lakehouse, candidate_rows, **params):
    write(lakehouse, SEEDS, [seed("s1")])
    write(lakehouse, LLM_CALLS, [dict(request_id=f"req-{r['gen_id']}", stage="generate", status="ok")
                                 for r in candidate_rows if r["gen_id"] != "no_request"])
    views = {"stg_candidates": frame(lakehouse.spark, CANDIDATE_DDL, candidate_rows)}
    return by_id(run_one(lakehouse, "intermediate/filter_validation.sql", views, **params))


def test_filter_validation_each_problem_kind(lakehouse):
    rows = _validation(lakehouse, [
        cand("ok"),
        cand("fmt", answer_format="essay", answer_key=None),
        cand("noq", question="   "),
        cand("noa", answer_text=" ", answer_key=None),
        cand("orphan", seed_id="missing"),
        cand("no_request"),
        cand("shortq", question="Why?"),
        cand("few", choices=["copper"], answer_index=0),
        cand("many", choices=[f"o{i}" for i in range(11)], answer_index=0, answer_text="o0"),
        cand("empty_opt", choices=["copper", " ", "glass"]),
        cand("dup_opt", choices=["copper", "Glass ", "glass"]),
        cand("not_in", answer_index=5),
        cand("idx_text", answer_index=1),  # index points at "wood", answer says copper
        cand("bool_bad", answer_format="boolean", choices=["no", "yes"], answer_index=None, answer_text="maybe",
             answer_key=None),
        cand("num_bad", answer_format="numeric", choices=None, answer_index=None, answer_text="several",
             answer_key=None),
        cand("long_ans", answer_format="numeric", choices=None, answer_index=None, answer_text="1" * 101,
             answer_key="num:1"),
        cand("marker", question="Question: Which material conducts heat best?"),
        cand("inst", question="[INST] Which material conducts heat best? [/INST]"),
        cand("chatter", question="Sure! Here is a new question: which material conducts heat best?"),
        cand("role", answer_text="copper", context="assistant: here you go"),
        cand("seed_item", item_kind="seed", seed_id="s1", generation_request_id=None),
        cand("leak", context=f"Heat moves. {LEAKED.capitalize()}."),
        cand("seed_leak", item_kind="seed", seed_id="s1", generation_request_id=None,
             context=f"Heat moves. {LEAKED.capitalize()}."),
        cand("self_ref", question="Which option is listed first?"),
        cand("self_ref_passage", context="This paragraph is the paragraph of this item."),
        cand("seed_self_ref", item_kind="seed", seed_id="s1", generation_request_id=None,
             question="Which option is listed first?"),
    ])
    expected = {"ok": "valid", "fmt": "unknown_format", "noq": "missing_question", "noa": "missing_answer",
                "orphan": "missing_seed", "no_request": "missing_request", "shortq": "question_too_short",
                "few": "too_few_choices", "many": "too_many_choices", "empty_opt": "empty_choice",
                "dup_opt": "duplicate_choices", "not_in": "answer_not_in_choices",
                "idx_text": "answer_not_in_choices", "bool_bad": "answer_not_in_choices",
                "num_bad": "answer_not_a_number", "long_ans": "answer_too_long", "marker": "template_marker",
                "inst": "template_marker", "chatter": "template_marker", "role": "template_marker",
                "seed_item": "valid", "leak": "prompt_leak", "seed_leak": "valid",
                "self_ref": "self_reference", "self_ref_passage": "self_reference", "seed_self_ref": "valid"}
    assert {k: r["reason"] for k, r in rows.items()} == expected
    assert {k for k, r in rows.items() if r["passed"]} == {"ok", "seed_item", "seed_leak", "seed_self_ref"}
    assert json.loads(rows["self_ref"]["evidence"])["self_reference"] == "question"
    assert json.loads(rows["self_ref_passage"]["evidence"])["self_reference"] == "passage"
    assert json.loads(rows["leak"]["evidence"])["prompt"] == f"sentence: {LEAKED}"[:200]  # cut at 200
    assert all(r["filter"] == "validation" for r in rows.values())
    assert json.loads(rows["inst"]["evidence"])["marker"] == "[INST]"
    assert json.loads(rows["noa"]["evidence"])["problems"][:1] == ["missing_answer"]
    assert json.loads(rows["ok"]["evidence"]) == {"problems": []}


def test_filter_seed_copy_reads_every_seed_of_the_items_tasks(lakehouse):
    """The prepare step (jobs/filters/seed_copy.py) indexes every seed of each candidate's task and
    decides each generated item; the model gives every candidate one row. Rules: udfs/copies.py
    (tests/unit/test_copies.py)."""
    from jobs.filters.seed_copy import FILTER

    passage = ("The Italian alphabet has twenty-one letters. The letters j, k, w, x and y are not part of "
               "it but appear in loanwords. Accented vowels are written with grave accents.")
    write(lakehouse, SEEDS, [
        seed("s1", task="boolq", answer_format="boolean", question="is there a j in the italian alphabet",
             context=passage, choices=["no", "yes"], answer_index=0, answer_text="no"),
        seed("s2", task="boolq", answer_format="boolean", question="do italians use the letter k",
             context="Another passage.", choices=["no", "yes"], answer_index=0, answer_text="no"),
        seed("s3", task="arc_easy", question="is there a j in the italian alphabet"),  # another task's seed
    ])
    boolean = dict(task="boolq", answer_format="boolean", choices=["no", "yes"], answer_index=None)
    candidates = [
        cand("flip", seed_id="s1", question="Is there a J in the Italian alphabet?",
             context=passage.split(". ")[0] + ".", answer_text="yes", **boolean),
        cand("other", seed_id="s1", question="do Italians use the letter K?", context="New text.",
             answer_text="no", **boolean),
        cand("new", seed_id="s1", question="is the italian alphabet shorter than the english one",
             context=passage, answer_text="yes", **boolean),
        cand("seed_row", item_kind="seed", seed_id="s2", question="do italians use the letter k",
             context="Another passage.", answer_text="no", **boolean),
        cand("arc", seed_id="s9", question="Which material conducts heat best?"),
    ]
    config = lakehouse.config
    ctx = CurateContext(lakehouse, config, None, "r", params=curate_params(config, None, "r"))
    register_udfs(lakehouse.spark)
    ctx.register("stg_candidates", frame(lakehouse.spark, CANDIDATE_DDL, candidates))
    try:
        FILTER.prepare(ctx, None)
        rows = by_id([r.asDict() for r in run_model(ctx, FILTER.model).collect()])
    finally:
        ctx.drop_views()
    assert {k: (r["passed"], r["reason"]) for k, r in rows.items()} == {
        "flip": (False, "seed_with_answer_changed"), "other": (False, "copies_seed_question"),
        "new": (True, "new_question"), "seed_row": (True, "seed_item"), "arc": (True, "new_question")}
    assert json.loads(rows["other"]["evidence"])["seed_id"] == "s2"
    assert all(r["filter"] == "seed_copy" for r in rows.values())


def test_filter_validation_bounds_come_from_config(lakehouse, make_config):
    config = make_config(f"schema={lakehouse.config.schema_name}", "curate.validation.min_question_chars=50")
    write(lakehouse, SEEDS, [seed("s1")])
    write(lakehouse, LLM_CALLS, [dict(request_id="req-g1", stage="generate", status="ok")])
    views = {"stg_candidates": frame(lakehouse.spark, CANDIDATE_DDL, [cand("g1")])}
    rows = run_one(lakehouse, "intermediate/filter_validation.sql", views, config=config)
    assert rows[0]["reason"] == "question_too_short"


# ---- filter_verification ---------------------------------------------------------------------

VOTE_CASES = [
    # id, format, answer_key, returned, null, expected, agree, top_other, (passed, reason) strict majority
    ("all", "mcq", "option:0", 4, 0, 4, 4, 0, (True, "majority_agrees")),
    ("three", "numeric", "num:5", 4, 0, 4, 3, 1, (True, "majority_agrees")),
    ("half", "mcq", "option:0", 4, 1, 4, 2, 1, (False, "below_min_agreement")),
    ("tie", "mcq", "option:0", 4, 0, 4, 2, 2, (False, "tie")),
    ("lost", "mcq", "option:0", 4, 2, 4, 1, 1, (False, "tie")),
    ("disagree", "boolean", "bool:yes", 4, 0, 4, 1, 3, (False, "majority_disagrees")),
    ("missing", "mcq", "option:0", 2, 0, 4, 2, 0, (False, "missing_votes")),
    ("nulls", "label", "label:neutral", 4, 4, 4, 0, 0, (False, "no_valid_votes")),
    ("nothing", "mcq", "option:0", 0, 0, 4, 0, 0, (False, "no_samples")),
    ("unreadable", "numeric", None, 4, 0, 4, 0, 4, (False, "unreadable_answer")),
    ("free", "freeform", None, 3, 3, 4, 0, 0, (True, "not_verifiable")),
    ("code0", "code", None, 0, 0, 4, 0, 0, (False, "no_samples")),
]


def _votes_view(spark, cases):
    return frame(spark, VOTES_DDL, [
        dict(gen_id=c[0], answer_format=c[1], answer_key=c[2], votes_returned=c[3], votes_null=c[4],
             votes_expected=c[5], votes_agree=c[6], votes_top_other=c[7], agreement=c[6] / c[5],
             vote_counts=[{"answer": c[2], "votes": c[6]}] if c[6] else [], family=c[9] if len(c) > 9 else "fam")
        for c in cases])


def test_filter_verification_strict_majority(lakehouse):
    rows = by_id(run_one(lakehouse, "intermediate/filter_verification.sql",
                         {"int_votes": _votes_view(lakehouse.spark, VOTE_CASES)}, min_agreement=None))
    assert {k: (r["passed"], r["reason"]) for k, r in rows.items()} == {c[0]: c[8] for c in VOTE_CASES}
    evidence = json.loads(rows["half"]["evidence"])
    assert (evidence["agree"], evidence["expected"], evidence["null_votes"], evidence["top_other"]) == (2, 4, 1, 1)
    assert rows["three"]["score"] == 0.75 and rows["free"]["score"] is None


def test_filter_verification_min_agreement(lakehouse):
    cases = [c for c in VOTE_CASES if c[0] in ("half", "tie", "three", "missing")]
    rows = by_id(run_one(lakehouse, "intermediate/filter_verification.sql",
                         {"int_votes": _votes_view(lakehouse.spark, cases)}, min_agreement=0.5))
    # 2 of 4 clears 0.5; a tie fails at any bar; 2 of 4 expected (2 lost) also clears 0.5
    assert {k: r["reason"] for k, r in rows.items()} == {
        "half": "majority_agrees", "tie": "tie", "three": "majority_agrees", "missing": "majority_agrees"}
    strict = by_id(run_one(lakehouse, "intermediate/filter_verification.sql",
                           {"int_votes": _votes_view(lakehouse.spark, cases)}, min_agreement=0.8,
                           min_agreement_default_source="config"))  # as jobs.calibration.verification_params says
    assert strict["three"]["reason"] == "below_min_agreement"
    assert json.loads(strict["three"]["evidence"])["min_agreement"] == 0.8
    assert json.loads(strict["three"]["evidence"])["min_agreement_source"] == "config"


def test_filter_verification_per_family_thresholds_from_calibration(lakehouse):
    """min_agreement {auto: target}: each family's calibrated threshold; a family without calibration
    falls back to the strict majority and says so in the evidence."""
    three = [c for c in VOTE_CASES if c[0] == "three"][0]
    cases = [("arc3", *three[1:9], "arc"), ("gsm3", *three[1:9], "gsm8k"), ("new3", *three[1:9], "newfam")]
    rows = by_id(run_one(lakehouse, "intermediate/filter_verification.sql",
                         {"int_votes": _votes_view(lakehouse.spark, cases)}, min_agreement=None,
                         min_agreement_by_family=json.dumps({"arc": 0.75, "gsm8k": 1.0}),
                         min_agreement_source_by_family=json.dumps({"arc": "auto", "gsm8k": "auto_target_missed"}),
                         min_agreement_default_source="no_calibration", target_precision=0.95))
    assert {k: r["reason"] for k, r in rows.items()} == {
        "arc3": "majority_agrees", "gsm3": "below_min_agreement", "new3": "majority_agrees"}
    evidence = {k: json.loads(r["evidence"]) for k, r in rows.items()}
    assert [(evidence[k].get("min_agreement"), evidence[k]["min_agreement_source"]) for k in ("arc3", "gsm3", "new3")] == [
        (0.75, "auto"), (1.0, "auto_target_missed"), (None, "no_calibration")]
    assert evidence["arc3"]["target_precision"] == 0.95


# ---- the dedup filters -----------------------------------------------------------------------

def _quality_views(spark, ids, failing=()):
    validation = [dict(gen_id=i, filter="validation", passed=i not in failing, reason="x") for i in ids]
    verification = [dict(gen_id=i, filter="verification", passed=True, reason="x") for i in ids]
    return {"filter_validation": frame(spark, DECISION_DDL, validation),
            "filter_verification": frame(spark, DECISION_DDL, verification)}


def test_filter_exact_dup_survivor_rules_seeds_and_curated(lakehouse):
    spark = lakehouse.spark
    candidates = [
        cand("a1", dedup_key="K1"), cand("a2", dedup_key="K1"), cand("a3", dedup_key="K1"),  # agreement decides
        cand("b1", dedup_key="K2"), cand("b2", dedup_key="K2"),  # b1 fails validation: b2 survives
        cand("c2", dedup_key="K3"),                               # c1 is already curated (other run)
        cand("d1", dedup_key="K4"), cand("d0", dedup_key="K4"),   # tie on everything: lowest gen_id
        cand("e1", dedup_key="SEEDKEY"),                           # copy of a seed
        cand("s5", item_kind="seed", seed_id="s5", dedup_key="SEEDKEY5"),  # a seed item is not its own copy
        cand("u1", dedup_key="K5"),
    ]
    agreement = {"a1": 0.75, "a2": 1.0, "a3": 1.0, "b1": 1.0, "b2": 0.5}
    views = {
        "stg_candidates": frame(spark, CANDIDATE_DDL, candidates),
        "int_votes": frame(spark, VOTES_DDL, [dict(gen_id=c["gen_id"], agreement=agreement.get(c["gen_id"], 1.0))
                                              for c in candidates]),
        "stg_curated_existing": frame(spark, CURATED_EXISTING_DDL, [
            dict(gen_id="c1", item_kind="generated", task="gsm8k", agreement=0.5, dedup_key="K3")]),
        "stg_seed_keys": frame(spark, "seed_id string, task string, dedup_key string",
                               [dict(seed_id="s9", task="arc_easy", dedup_key="SEEDKEY"),
                                dict(seed_id="s5", task="arc_easy", dedup_key="SEEDKEY5")]),
        **_quality_views(spark, [c["gen_id"] for c in candidates], failing={"b1"}),
    }
    # c1 is a gsm8k row: outside this run's scope, so it stays curated and keeps winning
    rows = by_id(run_one(lakehouse, "intermediate/filter_exact_dup.sql", views, tasks=["arc_easy"]))
    got = {k: (r["passed"], r["reason"]) for k, r in rows.items()}
    assert got == {
        "a1": (False, "duplicate"), "a2": (True, "survivor"), "a3": (False, "duplicate"),
        "b1": (False, "duplicate"), "b2": (True, "survivor"),
        "c2": (False, "duplicate"),
        "d0": (True, "survivor"), "d1": (False, "duplicate"),
        "e1": (False, "duplicate_of_seed"), "s5": (True, "unique"), "u1": (True, "unique")}
    assert json.loads(rows["c2"]["evidence"])["survivor"] == "c1"
    assert json.loads(rows["e1"]["evidence"])["seed_id"] == "s9"
    assert rows["a1"]["score"] == 3.0
    # with every task in scope, c1 is a curated row that is no longer a candidate: it is about to be
    # deleted, so it knocks nothing out
    everything = by_id(run_one(lakehouse, "intermediate/filter_exact_dup.sql", views))
    assert (everything["c2"]["passed"], everything["c2"]["reason"]) == (True, "unique")


def _near_views(spark, candidates, matches, curated=()):
    return {
        "stg_candidates": frame(spark, CANDIDATE_DDL, candidates),
        "int_votes": frame(spark, VOTES_DDL, [dict(gen_id=c["gen_id"], agreement=1.0) for c in candidates]),
        "stg_curated_existing": frame(spark, CURATED_EXISTING_DDL, list(curated)),
        "near_dup_matches": frame(spark, NEAR_DDL, matches),
        **_quality_views(spark, [c["gen_id"] for c in candidates]),
    }


def test_filter_near_dup_components_seeds_and_not_signed(lakehouse):
    spark = lakehouse.spark
    candidates = [cand(i) for i in ("a", "b", "c", "s", "u", "x")] + [cand("seedy", item_kind="seed")]
    matches = [
        dict(gen_id="a", component_id="a", component_size=3, best_match_id="b", best_match_jaccard=0.9),
        dict(gen_id="b", component_id="a", component_size=3, best_match_id="a", best_match_jaccard=0.9),
        dict(gen_id="c", component_id="a", component_size=3, best_match_id="b", best_match_jaccard=0.85),
        dict(gen_id="s", component_id="s", component_size=1, seed_match_id="s1", seed_match_jaccard=0.92),
        dict(gen_id="u", component_id="u", component_size=1),
        # "x" has no row: the engine did not sign it
    ]
    rows = by_id(run_one(lakehouse, "intermediate/filter_near_dup.sql", _near_views(spark, candidates, matches)))
    assert {k: (r["passed"], r["reason"]) for k, r in rows.items()} == {
        "a": (True, "survivor"), "b": (False, "near_duplicate"), "c": (False, "near_duplicate"),
        "s": (False, "near_dup_of_seed"), "u": (True, "unique"), "x": (False, "not_signed"),
        "seedy": (True, "seed_item")}
    assert json.loads(rows["b"]["evidence"])["survivor"] == "a"
    assert json.loads(rows["s"]["evidence"])["seed_match_id"] == "s1" and rows["s"]["score"] == 0.92


def test_filter_near_dup_prefers_an_already_curated_member(lakehouse):
    spark = lakehouse.spark
    matches = [dict(gen_id="a", component_id="a", component_size=2, best_match_id="z", best_match_jaccard=0.9),
               dict(gen_id="z", component_id="a", component_size=2, best_match_id="a", best_match_jaccard=0.9)]
    curated = [dict(gen_id="z", item_kind="generated", task="gsm8k", agreement=0.5, dedup_key="Z")]
    rows = run_one(lakehouse, "intermediate/filter_near_dup.sql",
                   _near_views(spark, [cand("a")], matches, curated))
    assert (rows[0]["passed"], rows[0]["reason"]) == (False, "near_duplicate")


# ---- filter_contamination --------------------------------------------------------------------

def test_filter_contamination_item_seed_and_clean(lakehouse):
    spark = lakehouse.spark
    views = {
        "stg_candidates": frame(spark, CANDIDATE_DDL, [
            cand("hit", seed_id="s1"), cand("child", seed_id="leaky"), cand("clean", seed_id="s1"),
            cand("leaky", item_kind="seed", seed_id="leaky")]),
        "contamination_matches": frame(spark, CONTAM_DDL, [
            dict(item_id="hit", rule="whole_text", heldout_id="h1", heldout_task="arc_easy",
                 heldout_split="test", matched="which material", score=1.0),
            dict(item_id="hit", rule="ngram", heldout_id="h2", heldout_task="arc_easy", heldout_split="test",
                 matched="x", score=0.4),
            dict(item_id="leaky", rule="ngram", heldout_id="h7", heldout_task="gsm8k", heldout_split="test",
                 matched="natalia sold clips", score=0.8),
        ]),
    }
    rows = by_id(run_one(lakehouse, "intermediate/filter_contamination.sql", views))
    assert {k: (r["passed"], r["reason"]) for k, r in rows.items()} == {
        "hit": (False, "heldout_whole_text"), "child": (False, "seed_contaminated"), "clean": (True, "clean"),
        "leaky": (False, "heldout_ngram")}
    assert json.loads(rows["hit"]["evidence"])["heldout_id"] == "h1"
    child = json.loads(rows["child"]["evidence"])
    assert (child["matched_item"], child["heldout_task"], child["heldout_split"]) == ("leaky", "gsm8k", "test")


# ---- filter_license --------------------------------------------------------------------------

def test_filter_license_only_commercial_ok_yes_passes(lakehouse):
    spark = lakehouse.spark
    cases = {
        "yes": ("permissive", "yes", True, "commercial_ok"),
        "nc_but_policy_yes": ("non-commercial", "yes", True, "commercial_ok"),
        "nc": ("non-commercial", "no", True, "non_commercial"),
        "nd": ("no-derivatives", "no", True, "no_derivatives"),
        "other": ("other", "unknown", True, "other_license"),
        "unknown": ("unknown", "unknown", True, "unknown_license"),
        "not_in_policy": ("permissive", "unknown", False, "unknown_license"),
        "sa_unknown": ("share-alike", "unknown", True, "commercial_use_unknown"),
        "sa_no": ("share-alike", "no", True, "not_commercial"),
        "null": (None, None, False, "unknown_license"),
    }
    views = {"stg_item_licenses": frame(spark, LICENSES_DDL, [
        dict(gen_id=k, license_class=v[0], commercial_ok=v[1], in_policy=v[2], dataset_path="d", license="l")
        for k, v in cases.items()])}
    rows = by_id(run_one(lakehouse, "intermediate/filter_license.sql", views))
    assert {k: r["reason"] for k, r in rows.items()} == {k: v[3] for k, v in cases.items()}
    assert {k for k, r in rows.items() if r["passed"]} == {"yes", "nc_but_policy_yes"}
    assert all(r["passed"] is not None for r in rows.values())


# ---- curated layer ---------------------------------------------------------------------------

def _decisions(rows):
    return [dict(gen_id=g, filter=f, passed=p, reason="r", gate="commercial" if f == "license" else "curated")
            for g, f, p in rows]


def test_curated_models_gate_render_and_carry_lineage(lakehouse):
    spark = lakehouse.spark
    candidates = [cand("good", context="A passage."), cand("bad"), cand("nc"), cand("nosample")]
    decisions = []
    for g in ("good", "bad", "nc", "nosample"):
        for f in ("validation", "verification", "exact_dup", "near_dup", "contamination"):
            decisions.append((g, f, not (g == "bad" and f == "exact_dup")))
        decisions.append((g, "license", g != "nc"))
    views = {
        "stg_candidates": frame(spark, CANDIDATE_DDL, candidates),
        "int_votes": frame(spark, VOTES_DDL, [dict(gen_id=c["gen_id"], votes_agree=3, votes_expected=4,
                                                   votes_returned=4, votes_null=0, agreement=0.75)
                                              for c in candidates]),
        "int_chosen_sample": frame(spark, SAMPLE_DDL + ", agrees boolean", [
            dict(gen_id=g, sample=1, knowledge="Metals conduct heat.", reasoning="Copper is a metal.",
                 final_answer="copper", final_answer_index=0, enrichment_request_id=f"{g}-e1",
                 enrichment_model="m", enrichment_prompt_version="enrich-mcq-v1", agrees=True)
            for g in ("good", "bad", "nc")]),
        "stg_item_licenses": frame(spark, LICENSES_DDL, [
            dict(gen_id=c["gen_id"], dataset_path="allenai/ai2_arc", license="cc-by-sa-4.0",
                 license_class="share-alike", commercial_ok="no" if c["gen_id"] == "nc" else "yes",
                 in_policy=True) for c in candidates]),
        "int_filter_decisions": frame(spark, GATED_DDL, _decisions(decisions)),
    }
    fd = run_one(lakehouse, "curated/filter_decisions.sql", views)
    assert len(fd) == 24 and {r["run_id"] for r in fd} == {"run-test"}
    assert all(r["task_family"] == "arc" and r["decided_at"] is not None for r in fd)

    curated = by_id(run_one(lakehouse, "curated/curated.sql", views))
    assert set(curated) == {"good", "nc", "nosample"}  # bad failed exact_dup; license only gates commercial
    good = curated["good"]
    assert good["document"] == ("Passage: A passage.\n\nQuestion: Which material conducts heat best?\n\n"
                                "Options:\n(A) copper\n(B) wood\n(C) glass\n\n"
                                "Relevant knowledge: Metals conduct heat.\n\nReasoning: Copper is a metal.\n\n"
                                "Answer: (A) copper\n")
    assert (good["enrichment_request_id"], good["generation_request_id"], good["seed_id"]) == \
           ("good-e1", "req-good", "s1")
    assert (good["votes_agree"], good["votes_expected"], good["verification"]) == (3, 4, "r")
    assert curated["nosample"]["knowledge"] is None and "Answer: (A) copper" in curated["nosample"]["document"]

    views["curated"] = frame(spark, ", ".join(f"{k} {v}" for k, v in (
        ("gen_id", "string"), ("task", "string"))), [dict(gen_id=g, task="arc_easy") for g in curated])
    commercial = run_one(lakehouse, "curated/curated_commercial.sql", views)
    assert {r["gen_id"] for r in commercial} == {"good", "nosample"}


# ---- the runner ------------------------------------------------------------------------------

def test_filter_contract_is_checked_and_names_the_filter(lakehouse, tmp_path):
    from jobs.curate import run_filters

    spark = lakehouse.spark
    missing_rows = tmp_path / "filter_lazy.sql"
    missing_rows.write_text("SELECT gen_id, 'lazy' AS filter, true AS passed, 'ok' AS reason, "
                            "CAST(NULL AS DOUBLE) AS score, CAST(NULL AS STRING) AS evidence "
                            "FROM stg_candidates WHERE gen_id <> 'b'")
    wrong_type = tmp_path / "filter_typo.sql"
    wrong_type.write_text("SELECT gen_id, 'typo' AS filter, 'yes' AS passed, 'ok' AS reason, "
                          "CAST(NULL AS DOUBLE) AS score, CAST(NULL AS STRING) AS evidence FROM stg_candidates")
    ctx = CurateContext(lakehouse, lakehouse.config, None, "r", params=curate_params(lakehouse.config, None, "r"))
    ctx.register("stg_candidates", frame(spark, CANDIDATE_DDL, [cand("a"), cand("b")]))
    try:
        with pytest.raises(CurateContractError, match=r"filter 'lazy' \(.*filter_lazy.sql\): 1 rows for 1"):
            run_filters(ctx, [Filter("lazy", Model(str(missing_rows)))])
        with pytest.raises(CurateContractError, match=r"filter 'typo'.*passed string"):
            run_filters(ctx, [Filter("typo", Model(str(wrong_type)))])
    finally:
        ctx.drop_views()


def test_an_absent_engine_records_not_checked_and_a_disabled_filter_disabled(lakehouse, make_config):
    """The generic unchecked paths of the runner: a filter whose engine module is not installed
    passes every item with reason 'not_checked' and evidence naming the engine (its prepare step and
    model never run), a filter listed in curate.disabled_filters passes them with 'disabled'; the
    license filter cannot be disabled and an unknown name is an error."""
    from jobs.config import ConfigError
    from jobs.curate import run_filters
    from jobs.filters.base import Engine

    def no_such_engine():
        from jobs.filters.no_such_engine import matches

        return matches

    spark = lakehouse.spark
    never = []
    ghost = Filter("ghost", Model("intermediate/filter_near_dup.sql"),
                   prepare=lambda ctx, engine: never.append(engine),
                   engine=Engine("jobs.filters.no_such_engine", "matches", no_such_engine, reads=("heldout",)))
    exact = next(f for f in FILTERS if f.name == "exact_dup")
    config = make_config("curate.disabled_filters=[exact_dup]")
    ctx = CurateContext(lakehouse, config, None, "r", params=curate_params(config, None, "r"))
    ctx.register("stg_candidates", frame(spark, CANDIDATE_DDL, [cand("a"), cand("b")]))
    try:
        decisions = run_filters(ctx, [ghost, exact])
        rows = {(r.filter, r.gen_id): r for r in decisions.collect()}
        assert {(k, r.passed, r.reason) for k, r in rows.items()} == {
            (("ghost", "a"), True, "not_checked"), (("ghost", "b"), True, "not_checked"),
            (("exact_dup", "a"), True, "disabled"), (("exact_dup", "b"), True, "disabled")}
        assert json.loads(rows[("ghost", "a")].evidence)["engine"] == "jobs.filters.no_such_engine.matches"
        assert never == [] and ctx.not_checked == {"ghost": "jobs.filters.no_such_engine is not installed"}
        for bad, message in (("[license]", "license cannot be disabled"), ("[exact_dupe]", "unknown filter")):
            ctx.config = make_config(f"curate.disabled_filters={bad}")
            with pytest.raises(ConfigError, match=message):
                run_filters(ctx)
    finally:
        ctx.drop_views()


@pytest.fixture(scope="module")
def small_curated(spark, tmp_path_factory):
    """`_small_world` curated once by `run_curate` with one more filter plugged in, declared the way a
    later filter would be (questions mentioning 'heat' fail): (lakehouse, CurateResult). Read-only."""
    import jobs.curate as curate
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse

    root = tmp_path_factory.mktemp("curate-sql-small")
    model = root / "filter_no_heat.sql"
    model.write_text("SELECT gen_id, 'no_heat' AS filter, NOT (lower(question) LIKE '%heat%') AS passed, "
                     "CASE WHEN lower(question) LIKE '%heat%' THEN 'mentions_heat' ELSE 'ok' END AS reason, "
                     "CAST(NULL AS DOUBLE) AS score, CAST(NULL AS STRING) AS evidence FROM stg_candidates")
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                    "schema=t_curate_sql_small"], home=root / "lakehouse")
    lakehouse = Lakehouse(spark, config)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(curate, "FILTERS", (*curate.FILTERS, Filter("no_heat", Model(str(model)))))
            _small_world(lakehouse)
            result = curate.run_curate(lakehouse, config)
        yield lakehouse, result
    finally:
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


@pytest.mark.heavy  # reads a whole curate run (small_curated)
def test_a_new_filter_plugs_in_with_one_declaration_and_one_model(small_curated):
    """A later filter (here: questions mentioning 'heat' fail) needs a Filter declaration and its SQL,
    nothing else: its decisions reach filter_decisions and it gates curated like the built-in ones."""
    lakehouse, result = small_curated
    decisions = lakehouse.read("filter_decisions")
    assert decisions.where("filter = 'no_heat'").count() == result.candidates == 3
    assert {r.gen_id for r in decisions.where("filter = 'no_heat' AND NOT passed").collect()} == {"g1", "g2"}
    assert {r.gen_id for r in lakehouse.read("curated").collect()} == {"g3"}
    assert result.failed("no_heat") == 2


def _small_world(lakehouse, extra_generated=()):
    """Three generated arc items with 4 agreeing samples each (g2 a formatting copy of g1), one gsm8k
    item with a wrong answer; ledger rows, seeds and a policy saying ARC is commercial-ok."""
    write(lakehouse, SEEDS, [seed("s1"), seed("s2", task="gsm8k", task_family="gsm8k", dataset_path="openai/gsm8k",
                                              answer_format="numeric", choices=None, answer_index=None,
                                              answer_text="72", question="Natalia sold clips?")])
    write(lakehouse, LICENSE_POLICY, [
        dict(dataset_path="allenai/ai2_arc", license="cc-by-sa-4.0", license_class="share-alike",
             commercial_ok="yes")])
    items = [generated("g1"), generated("g2", question="which material CONDUCTS heat best"),
             generated("g3", question="Which planet is closest to the Sun?", choices=["Mercury", "Venus"],
                       answer_text="Mercury"),
             *extra_generated]
    write(lakehouse, GENERATED, items)
    write(lakehouse, LLM_CALLS, [dict(request_id=g["request_id"], stage="generate", status="ok") for g in items])
    write(lakehouse, ENRICHED, [dict(gen_id=g["gen_id"], sample=i, item_kind="generated", task=g["task"],
                                     final_answer=g["answer_text"], final_answer_index=g.get("answer_index"),
                                     knowledge="k", reasoning="r", request_id=f"{g['gen_id']}-e{i}")
                                for g in items for i in range(4)])


@pytest.mark.heavy  # three whole curate runs
def test_run_curate_end_to_end_rerun_commits_nothing_and_scope_deletes(lakehouse):
    from jobs.curate import run_curate

    _small_world(lakehouse, extra_generated=[
        generated("n1", seed_id="s2", task="gsm8k", task_family="gsm8k", answer_format="numeric",
                  question="Natalia sold 48 clips in April and half as many in May. How many in all?",
                  choices=None, answer_index=None, answer_text="72")])
    lines: list[str] = []
    first = run_curate(lakehouse, lakehouse.config, progress=lines.append)
    assert first.candidates == 4
    steps = [line for line in lines if " steps (" in line]  # jobs.progress lines: count, rate, ETA
    assert steps[0].startswith("[curate] 1/") and steps[-1].endswith("done: merge curated_commercial")
    total = steps[-1].split("/")[1].split()[0]
    assert steps[-1].startswith(f"[curate] {total}/{total} steps (100%)") and "done in" in steps[-1]
    decisions = lakehouse.read("filter_decisions")
    assert decisions.count() == 4 * len(FILTERS)
    assert decisions.groupBy("gen_id").count().where("count <> %d" % len(FILTERS)).count() == 0
    curated = {r.gen_id: r for r in lakehouse.read("curated").collect()}
    assert set(curated) == {"g1", "g3", "n1"}  # g2 is g1's exact duplicate (g1: same agreement, lower id)
    assert {r.gen_id for r in lakehouse.read("curated_commercial").collect()} == {"g1", "g3"}  # gsm8k: no policy
    assert first.not_checked.keys() >= set() and first.committed("curated")

    # n1's enrichments now disagree (e.g. a parser fix re-read them): n1 leaves curated, in scope only
    lakehouse.merge(lakehouse.spark.createDataFrame(
        [tuple(dict(gen_id="n1", sample=i, item_kind="generated", task="gsm8k", final_answer="70",
                    request_id=f"n1-e{i}").get(c) for c in ENRICHED.columns) for i in range(4)], ENRICHED.schema),
        ENRICHED, update_when_changed=["final_answer"])
    versions = {t: lakehouse.version(t) for t in ("filter_decisions", "curated", "curated_commercial")}
    # out of scope: n1 stays; nothing changed in scope, so nothing is committed (a rerun with nothing
    # new; tests/e2e/test_curate_e2e.py reruns a whole unscoped curate)
    again = run_curate(lakehouse, lakehouse.config, tasks=["arc_easy"])
    assert "n1" in {r.gen_id for r in lakehouse.read("curated").collect()}
    assert {t: lakehouse.version(t) for t in versions} == versions
    assert not any(again.committed(t) for t in versions)
    run_curate(lakehouse, lakehouse.config, tasks=["gsm8k"])
    assert {r.gen_id for r in lakehouse.read("curated").collect()} == {"g1", "g3"}
    n1 = lakehouse.read("filter_decisions").where("gen_id = 'n1' AND filter = 'verification'").first()
    assert (n1.passed, n1.reason) == (False, "majority_disagrees")


class _Evaluating(Exception):
    """Raised by a progress callback at the line that says why every item is evaluated."""


def _why_evaluated(lakehouse, config, **kwargs) -> list[str]:
    """What `run_curate` says it evaluates every item for, stopping the run right there (nothing
    is written)."""
    from jobs.curate import run_curate

    def progress(line: str) -> None:
        if line.startswith("[curate] evaluating every item: "):
            raise _Evaluating(line.split(": ", 1)[1])

    with pytest.raises(_Evaluating) as stopped:
        run_curate(lakehouse, config, progress=progress, **kwargs)
    return str(stopped.value).split("; ")


@pytest.mark.heavy  # a whole curate run
def test_a_rerun_with_nothing_new_evaluates_nothing_and_a_change_says_what_changed(lakehouse, monkeypatch):
    """Issue 28: the second curate of the same inputs, settings and filter code evaluates nothing,
    writes nothing and reports the first run's decisions; a changed heldout table, setting, filter
    declaration or scope, or --force, evaluates again and names why."""
    import jobs.curate as curate
    from schemas.tables import HELDOUT

    _small_world(lakehouse)
    config = lakehouse.config
    first = curate.run_curate(lakehouse, config)
    assert first.evaluated_because == ["no earlier curate run of this scope"] and first.committed("curated")
    assert set(first.seconds) >= {"fingerprint", "filter near_dup", "merge filter_decisions", "record run"}
    versions = {t: lakehouse.version(t) for t in lakehouse.list_tables()}
    recorded = lakehouse.read("curate_runs").collect()
    assert [(r.run_id, r.scope, r.candidates, r.curated) for r in recorded] == [(first.run_id, "*", 3, first.curated)]
    # the lookup reads the last append from the Delta log without a query, and declines another scope
    appended = curate._last_appended_run(lakehouse, "*")
    assert {c: appended[c] for c in ("run_id", "inputs", "tally")} == {c: recorded[0][c] for c in ("run_id", "inputs",
                                                                                                 "tally")}
    assert curate._last_appended_run(lakehouse, "arc_easy") is None

    lines: list[str] = []
    again = curate.run_curate(lakehouse, config, progress=lines.append)
    assert again.unchanged_since == first.run_id and not again.evaluated_because
    assert {t: lakehouse.version(t) for t in lakehouse.list_tables()} == versions  # nothing written
    assert (again.by_filter, again.rejected_by_family) == (first.by_filter, first.rejected_by_family)
    assert (again.candidates, again.curated, again.curated_commercial) == (
        first.candidates, first.curated, first.curated_commercial)
    assert not any(again.committed(t) for t in again.versions) and again.metrics()["curate.items_evaluated"] == 0
    assert lines == [again.summary_lines()[0].removesuffix("; its decisions:")]
    assert lines[0].startswith(f"[curate] nothing new since run {first.run_id} (inputs at versions ")
    assert "0 items evaluated" in lines[0] and f"generated v{versions['generated']}" in lines[0]

    # what changed is named; each check stops before anything is evaluated
    fewer = config.model_copy(update={"enrich": config.enrich.model_copy(update={"samples_per_item": 3})})
    assert _why_evaluated(lakehouse, fewer) == ["curate settings"]
    assert _why_evaluated(lakehouse, config, force=True) == ["--force"]
    assert _why_evaluated(lakehouse, config, tasks=["arc_easy"]) == ["no earlier curate run of this scope"]
    monkeypatch.setattr(curate, "FILTERS", (*curate.FILTERS, Filter("extra", Model("intermediate/extra.sql"))))
    assert _why_evaluated(lakehouse, config) == ["filter code"]
    monkeypatch.undo()
    heldout_before = lakehouse.version("heldout")
    write(lakehouse, HELDOUT, [dict(heldout_id="h1", task="arc_easy", split="test", doc_index=0, question="What is 2+2?",
                                    answer_text="4")])
    assert _why_evaluated(lakehouse, config) == [f"heldout v{heldout_before} → v{lakehouse.version('heldout')}"]


@pytest.mark.heavy  # reads a whole curate run (small_curated)
def test_readme_curation_queries_run_and_count_rejections_from_filter_decisions_alone(small_curated):
    """The `taskseed sql` queries of docs/curation.md's "Querying curation" block run on a curated lakehouse;
    the first ("how many items did each filter reject, per task family") reads `filter_decisions`
    alone and agrees with the run's own tally (every filter's, the plugged-in one's too)."""
    import re
    from pathlib import Path

    from schemas.tables import ALL_TABLES

    readme = (Path(__file__).resolve().parents[2] / "docs" / "curation.md").read_text(encoding="utf-8")
    block = readme.split("## Querying curation", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    queries = re.findall(r'^taskseed sql "(.+)"$', block, flags=re.M)
    assert len(queries) >= 3
    first = queries[0]
    assert {t for t in ALL_TABLES if re.search(rf"\b{t}\b", first)} == {"filter_decisions"}

    lakehouse, result = small_curated
    lakehouse.spark.sql(f"USE {lakehouse.namespace}")
    try:
        outputs = [lakehouse.spark.sql(q).collect() for q in queries]
    finally:
        lakehouse.spark.sql("USE default")
    rejected = {(r["filter"], r["task_family"]): r["rejected"] for r in outputs[0]}
    assert {name: sum(n for (f, _), n in rejected.items() if f == name) for name in result.by_filter} == {
        name: result.failed(name) for name in result.by_filter}
    assert rejected[("exact_dup", "arc")] == 1  # g2 repeats g1
