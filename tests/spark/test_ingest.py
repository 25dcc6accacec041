"""The ingest job on the real benchmark mirror: the issue's Done-when scenario end to end.

`--tasks arc_easy,arc_challenge,gsm8k,boolq,winogrande,webqs` (winogrande pointed at the
winogrande_l files by a config override) plus `--heldout mmlu,sciq,piqa,nq_open`, and two names
that cannot be ingested (a catalogued task absent from the mirror, an unknown name). One ingest,
one rerun; every check below reads the resulting tables. This covers every dataset in the mirror.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.heavy]  # a whole ingest of real mirror tasks, run twice

SEEDED = ["arc_easy", "arc_challenge", "gsm8k", "boolq", "winogrande", "webqs"]
HELDOUT_ONLY = ["mmlu", "sciq", "piqa", "nq_open"]
UNAVAILABLE = "hellaswag"  # catalogued and eligible, but not in the mirror
UNKNOWN = "no_such_task_xyz"
TASK_FOLDERS = ["arc", "gsm8k", "super_glue/boolq", "winogrande", "webqs", "mmlu/default", "sciq", "piqa",
                "nq_open", "hellaswag"]



def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


@pytest.fixture(scope="module")
def run(spark, mirror, tmp_path_factory):
    """Catalog (lm-eval's index reduced to the tasks at hand) → ingest → rerun, once."""
    from jobs.catalog import (TaskIndex, build_task_index, lm_eval_tasks_root, resolve_selection,
                              run_catalog)
    from jobs.config import load_config
    from jobs.ingest import run_ingest
    from jobs.lakehouse import Lakehouse

    config = load_config(
        overrides=["spark.master=local[2]", "spark.shuffle_partitions=2", "schema=t_ingest_doneWhen",
                   f"tasks.mirror={mirror}", "tasks.overrides={winogrande: {dataset_name: winogrande_l}}"],
        home=tmp_path_factory.mktemp("ingest"),
    )
    # lm-eval's index over just the task folders at hand (the full one takes ~10 s to build)
    root = lm_eval_tasks_root()
    folders = [root / d for d in TASK_FOLDERS]
    part = build_task_index(folders, include_defaults=False)
    wanted, missing = resolve_selection(part, [*SEEDED, *HELDOUT_ONLY, UNAVAILABLE])
    assert not missing
    index = TaskIndex(tasks={t: part.tasks[t] for t in wanted}, group_members=part.group_members,
                      tag_members=part.tag_members, roots=(root,))
    lakehouse = Lakehouse(spark, config)
    run_catalog(lakehouse, config, progress=lambda _: None, index=index)
    messages: list[str] = []
    first = run_ingest(lakehouse, config, tasks=[*SEEDED, UNAVAILABLE, UNKNOWN],
                       heldout_tasks=HELDOUT_ONLY, progress=messages.append, index=index)
    counts = {name: lakehouse.read(name).count() for name in ("seeds", "heldout", "quarantine")}
    second = run_ingest(lakehouse, config, tasks=[*SEEDED, UNAVAILABLE, UNKNOWN],
                        heldout_tasks=HELDOUT_ONLY, progress=messages.append, index=index)
    yield {"lakehouse": lakehouse, "first": first, "second": second, "counts": counts,
           "messages": messages, "catalog": {r["task"]: r.asDict() for r in lakehouse.read("task_catalog").collect()}}
    spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


def _per_split(lakehouse, table: str) -> Counter:
    return Counter({(r["task"], r["split"]): r["n"] for r in lakehouse.spark.sql(
        f"SELECT task, split, count(*) AS n FROM {lakehouse.table_name(table)} GROUP BY task, split").collect()})


def test_counts_equal_source_rows_minus_quarantined(run, mirror):
    lakehouse, catalog = run["lakehouse"], run["catalog"]
    seeds, heldout = _per_split(lakehouse, "seeds"), _per_split(lakehouse, "heldout")
    quarantined = _per_split(lakehouse, "quarantine")
    expected_splits = set()
    for task, row in catalog.items():
        if task == UNAVAILABLE:
            continue
        name = "winogrande_l" if task == "winogrande" else (row["dataset_name"] or "default")
        base = mirror / row["dataset_path"] / name
        for split_file in sorted(base.glob("*.jsonl")):
            split = split_file.stem
            is_train = split == row["training_split"]
            is_held = not is_train and split in (
                row["validation_split"], row["test_split"], row["fewshot_split"], "validation", "test")
            table = seeds if is_train and task in SEEDED else heldout if is_held else None
            assert table is not None, (task, split)  # every split of the mirror lands somewhere
            expected_splits.add((task, split))
            assert table[(task, split)] + quarantined[(task, split)] == _lines(split_file), (task, split)
    assert set(seeds) | set(heldout) == expected_splits
    # exact numbers for the seeded tasks (README of the mirror); winogrande_l train repeats 2 lines
    assert {t: n for (t, s), n in seeds.items()} == {
        "arc_easy": 2251, "arc_challenge": 1119, "gsm8k": 7473, "boolq": 9427,
        "winogrande": 10232, "webqs": 3778}
    assert quarantined[("winogrande", "train")] == 2
    reasons = {r["reason"] for r in lakehouse.read("quarantine").select("reason").distinct().collect()}
    assert reasons == {"duplicate_record"}  # real data renders cleanly; repeats are accounted for
    summary = run["first"]
    assert summary.tasks["gsm8k"].rows_in == 7473 + 1319
    assert summary.total("rows_in") == summary.total("seeds") + summary.total("heldout") + summary.total("quarantined")


def test_answer_text_is_the_gold_option_text_for_every_choice_seed(run):
    lakehouse = run["lakehouse"]
    inconsistent = lakehouse.spark.sql(f"""
        SELECT count(*) AS n FROM (
          SELECT answer_format, choices, answer_index, answer_text FROM {lakehouse.table_name('seeds')}
          UNION ALL
          SELECT answer_format, choices, answer_index, answer_text FROM {lakehouse.table_name('heldout')})
        WHERE answer_format IN ('mcq', 'boolean', 'label')
          AND (answer_index IS NULL OR answer_text IS NULL
               OR answer_text != element_at(choices, answer_index + 1))""").first()["n"]
    assert inconsistent == 0
    rows = lakehouse.read("seeds").where("answer_format IN ('mcq', 'boolean', 'label')") \
        .select("task", "answer_text", "source_record").collect()
    assert Counter(r["task"] for r in rows) == {"arc_easy": 2251, "arc_challenge": 1119, "boolq": 9427,
                                                 "winogrande": 10232}
    for r in rows:
        raw = json.loads(r["source_record"])
        if r["task"].startswith("arc_"):
            gold = raw["choices"]["text"][raw["choices"]["label"].index(raw["answerKey"])]
        elif r["task"] == "boolq":
            gold = ["no", "yes"][raw["label"]]
        else:
            gold = raw["option" + raw["answer"]]
        assert r["answer_text"] == gold.strip(), (r["task"], raw)
    mmlu = lakehouse.spark.sql(f"""
        SELECT count(*) AS n FROM {lakehouse.table_name('heldout')}
        WHERE task LIKE 'mmlu_%' AND answer_text !=
              trim(get_json_object(source_record, concat('$.choices[', get_json_object(source_record, '$.answer'), ']')))
        """).first()["n"]
    assert mmlu == 0


def test_open_formats_have_semantic_answers(run):
    lakehouse = run["lakehouse"]
    gsm = lakehouse.read("seeds").where("task = 'gsm8k'")
    assert gsm.where("rationale IS NULL OR answer_text RLIKE '[^0-9.\\\\-]'").count() == 0
    webqs = lakehouse.read("seeds").where("task = 'webqs'").select("answer_text", "source_record").limit(200).collect()
    assert all(r["answer_text"] in json.loads(r["source_record"])["answers"] for r in webqs)


def test_no_training_split_in_heldout_and_no_heldout_split_in_seeds(run):
    lakehouse, catalog = run["lakehouse"], run["catalog"]
    seeds, heldout = _per_split(lakehouse, "seeds"), _per_split(lakehouse, "heldout")
    for task, split in seeds:
        assert split == catalog[task]["training_split"], (task, split)
        assert split not in (catalog[task]["validation_split"], catalog[task]["test_split"])
    for task, split in heldout:
        assert split != catalog[task]["training_split"], (task, split)
    assert not {t for t, _ in seeds} & {t for name in HELDOUT_ONLY for t in catalog if t == name or t.startswith(name + "_")}
    # every dataset of the mirror took part
    assert {catalog[t]["dataset_path"] for t, _ in [*seeds, *heldout]} == {
        "allenai/ai2_arc", "openai/gsm8k", "aps/super_glue", "allenai/winogrande", "stanfordnlp/web_questions",
        "cais/mmlu", "allenai/sciq", "baber/piqa", "google-research-datasets/nq_open"}
    decontam = lakehouse.read("heldout").where("decontamination_text IS NULL OR decontamination_text = ''").count()
    assert decontam == 0


def test_rerun_adds_nothing(run):
    lakehouse, second = run["lakehouse"], run["second"]
    assert second.inserted == {"seeds": 0, "heldout": 0, "quarantine": 0}
    assert {name: lakehouse.read(name).count() for name in run["counts"]} == run["counts"]
    assert lakehouse.read("seeds").select("seed_id").distinct().count() == run["counts"]["seeds"]
    assert second.total("seeds") == run["first"].total("seeds")


def test_unavailable_and_unknown_tasks_are_skipped_while_others_go_on(run):
    summary = run["first"]
    assert summary.tasks[UNAVAILABLE].skipped.startswith("data unavailable")
    assert summary.tasks[UNKNOWN].skipped == "unknown task, group or tag"
    assert set(summary.skipped) == {UNAVAILABLE, UNKNOWN}
    assert summary.tasks["arc_easy"].seeds == 2251
    assert summary.tasks["mmlu_anatomy"].role == "heldout" and summary.tasks["mmlu_anatomy"].heldout == 5 + 14 + 135
    text = summary.format()
    assert "hellaswag" in text and "data unavailable" in text and "TOTAL" in text
