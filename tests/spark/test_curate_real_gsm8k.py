"""The issue's real-model case on real GSM8K data: a generation came back as the task's few-shot
exemplar (a GSM8K training question) with its first word changed and a wrong answer attached, and
the enrichment samples disagreed. It must be stopped twice: by near_dup (against seeds) and by
verification. A distinct real GSM8K question with its gold answer, solved consistently, is the
control that passes both."""

from __future__ import annotations

import json
from itertools import islice

import pytest
from pyspark.sql import functions as F

from schemas.tables import ENRICHED, GENERATED, LICENSE_POLICY, LLM_CALLS, SEEDS
from udfs.hashing import stable_hash
from udfs.parsing import normalize_number

pytestmark = [pytest.mark.spark, pytest.mark.heavy]  # a whole curate run on real GSM8K rows


def _gsm8k(mirror, n: int) -> list[dict]:
    with (mirror / "openai/gsm8k/main/train.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in islice(handle, n)]
    return [{"question": r["question"], "answer": normalize_number(r["answer"].split("####")[-1].strip())}
            for r in rows]


def _rows(spec, rows: list[dict]):
    return [tuple(r.get(c) for c in spec.columns) for r in rows]


def test_echoed_exemplar_with_first_word_changed_and_wrong_answer_is_stopped_twice(lakehouse, mirror):
    from jobs.curate import run_curate

    spark = lakehouse.spark
    records = _gsm8k(mirror, 31)
    seeds = [dict(seed_id=stable_hash("seed", "gsm8k", "train", i), task="gsm8k", task_family="gsm8k",
                  dataset_path="openai/gsm8k", dataset_name="main", split="train", doc_index=i,
                  answer_format="numeric", question=r["question"], answer_text=r["answer"], license="mit",
                  license_class="permissive") for i, r in enumerate(records[:12])]
    exemplar, host = seeds[0], seeds[5]
    words = exemplar["question"].split(" ")
    words[0] = "Maria" if words[0] != "Maria" else "Nora"
    wrong = str(int(exemplar["answer_text"]) + 1)
    control = records[30]  # a real GSM8K question that is not a seed here
    items = [
        dict(gen_id="echo", seed_id=host["seed_id"], question=" ".join(words), answer_text=wrong),
        dict(gen_id="control", seed_id=seeds[6]["seed_id"], question=control["question"],
             answer_text=control["answer"]),
    ]
    for item in items:
        item.update(task="gsm8k", task_family="gsm8k", answer_format="numeric", license="mit",
                    license_class="permissive", model="llama-3.2-1b", prompt_version="generate-numeric-v1",
                    request_id=f"req-{item['gen_id']}", sample_index=0)
    # the samples solve the question they were given: the echo's original answer, not the wrong one
    votes = {"echo": [exemplar["answer_text"], exemplar["answer_text"], str(int(exemplar["answer_text"]) + 5)],
             "control": [control["answer"]] * 3}
    enriched = [dict(gen_id=g, sample=i, item_kind="generated", task="gsm8k", task_family="gsm8k",
                     answer_format="numeric", knowledge="k", reasoning=f"... so the answer is {a}.",
                     final_answer_raw=a, final_answer=a, request_id=f"{g}-e{i}")
                for g, answers in votes.items() for i, a in enumerate(answers)]
    lakehouse.merge(spark.createDataFrame(_rows(SEEDS, seeds), SEEDS.schema), SEEDS)
    lakehouse.merge(spark.createDataFrame(_rows(GENERATED, items), GENERATED.schema), GENERATED)
    lakehouse.merge(spark.createDataFrame(_rows(ENRICHED, enriched), ENRICHED.schema), ENRICHED)
    lakehouse.merge(spark.createDataFrame(_rows(LLM_CALLS, [dict(request_id=f"req-{i['gen_id']}", stage="generate",
                                                                 status="ok") for i in items]), LLM_CALLS.schema),
                    LLM_CALLS)
    lakehouse.merge(spark.createDataFrame(_rows(LICENSE_POLICY, [dict(
        dataset_path="openai/gsm8k", license="mit", license_class="permissive", commercial_ok="yes")]),
        LICENSE_POLICY.schema), LICENSE_POLICY)

    config = lakehouse.config.model_copy(update={"enrich": lakehouse.config.enrich.model_copy(
        update={"samples_per_item": 3})})
    result = run_curate(lakehouse, config)
    assert "near_dup" not in result.not_checked
    decisions = {(r.gen_id, r.filter): r for r in lakehouse.read("filter_decisions").collect()}

    near = decisions[("echo", "near_dup")]
    assert (near.passed, near.reason) == (False, "near_dup_of_seed")
    assert json.loads(near.evidence)["seed_match_id"] == exemplar["seed_id"]
    verification = decisions[("echo", "verification")]
    assert (verification.passed, verification.reason) == (False, "majority_disagrees")
    evidence = json.loads(verification.evidence)
    assert (evidence["agree"], evidence["top_other"], evidence["expected"]) == (0, 2, 3)
    assert decisions[("echo", "exact_dup")].passed  # not an exact copy: only the two filters above catch it

    assert all(decisions[("control", f)].passed for f in ("validation", "verification", "exact_dup", "near_dup"))
    curated = {r.gen_id for r in lakehouse.read("curated").select("gen_id").collect()}
    assert curated == {"control"}
    assert lakehouse.read("curated_commercial").where(F.col("gen_id") == "echo").count() == 0
