"""`taskseed batch export` / `batch import` on local Spark over a tiny inline seeds table: the
stage's pending requests out as OpenAI batch-format files, answered by the simulator playing
`vllm run-batch` (simulator/batch_files.py), back into `llm_calls` and `generated` / `quarantine`
exactly once. One test, several steps (each step is a few Spark actions)."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from jobs.generate import GENERATE_SPEC
from jobs.llm_stage.batch import export_batches, import_batches
from jobs.llm_stage.runner import run_stage
from schemas.tables import GENERATED, LLM_BATCH_REQUESTS, LLM_CALLS, QUARANTINE, SEEDS
from simulator.batch_files import run_batch_file
from tests.unit.seed_records import seed_rows

pytestmark = [pytest.mark.spark, pytest.mark.heavy]  # a whole export → import → retry cycle: ~2 min


def test_export_import_round_trip_is_exactly_once(lakehouse, tmp_path):
    lakehouse.merge(lakehouse.spark.createDataFrame(seed_rows(arc_easy=2, gsm8k=2, boolq=2), SEEDS.schema), SEEDS)
    config = lakehouse.config.model_copy(deep=True)
    config.generate.items_per_seed = 2
    config.llm.batch_rows = 5
    specs = {"generate": GENERATE_SPEC}

    # export: 12 requests in batches of at most 5, recorded before the files; export again = same files
    out = tmp_path / "batches"
    first = export_batches(GENERATE_SPEC, lakehouse, config, out)
    assert first.requests == 12 and sorted(first.files.values()) == [2, 5, 5]
    files = {p.name: p.read_text() for p in out.glob("*.jsonl")}
    assert set(files) == set(first.files)
    lines = [json.loads(t) for text in files.values() for t in text.splitlines()]
    assert {ln["url"] for ln in lines} == {"/v1/chat/completions"} and len({ln["custom_id"] for ln in lines}) == 12
    again = export_batches(GENERATE_SPEC, lakehouse, config, out)
    assert again.files == first.files and {p.name: p.read_text() for p in out.glob("*.jsonl")} == files
    members = lakehouse.read(LLM_BATCH_REQUESTS.name)
    assert members.count() == 12 and {r.batch_status for r in members.collect()} == {"exported"}

    # an online run sends nothing a batch holds
    sent = run_stage(GENERATE_SPEC, lakehouse, config, progress=lambda _l: None)
    assert sent.accounting.sent == 0 and lakehouse.read(LLM_CALLS.name).count() == 0

    # vllm run-batch over each file; one line dropped, some lines errors
    results = tmp_path / "results"
    results.mkdir()
    counts = {}
    for name in files:
        c = run_batch_file(out / name, results / name, results / f"errors-{name}", error_rate=0.15, drop_rate=0.1)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
    (results / "junk.jsonl").write_text('{"custom_id": "not-a-request", "response": {"status_code": 200, "body": {}}}\n'
                                        "{cut off\n")
    imported = import_batches(lakehouse, config, results, specs)
    assert imported.unknown == 1 and len(imported.unreadable) == 1 and imported.batches == 3
    assert imported.unknown_ids == ["not-a-request"]
    assert "[batch import] custom_id 'not-a-request' names no exported request (line left out)" in imported.summary_lines()
    assert imported.missing == counts.get("dropped", 0) and imported.recorded.get("ok") == counts["ok"]
    ledger = lakehouse.read(LLM_CALLS.name)
    assert ledger.count() == 12 == ledger.select("request_id").distinct().count()
    assert ledger.where(F.col("batch_id").isNull() | F.col("task").isNull()).count() == 0
    failed = {r.error_class for r in ledger.where("status = 'failed'").collect()}
    assert failed <= {"http_500", "missing_from_batch_output"} and failed
    assert lakehouse.read(GENERATED.name).count() == counts["ok"]
    quarantined = lakehouse.read(QUARANTINE.name).where("stage = 'generate'").count()
    assert quarantined == 12 - counts["ok"]
    assert {r.batch_status for r in lakehouse.read(LLM_BATCH_REQUESTS.name).collect()} == {"reconciled"}

    # importing the same files again records nothing and commits nothing
    versions = {t: lakehouse.version(t) for t in (LLM_CALLS.name, LLM_BATCH_REQUESTS.name, GENERATED.name,
                                                  QUARANTINE.name)}
    twice = import_batches(lakehouse, config, results, specs)
    assert twice.recorded == {} and twice.missing == 0
    assert {t: lakehouse.version(t) for t in versions} == versions

    # the failed ones go out again only with --retry-failed, in a new batch, and are answered once
    assert export_batches(GENERATE_SPEC, lakehouse, config, tmp_path / "none").requests == 0
    retry = export_batches(GENERATE_SPEC, lakehouse, config, tmp_path / "retry", retry_failed=True)
    assert retry.requests == 12 - counts["ok"]
    retry_out = tmp_path / "retry-out"
    retry_out.mkdir()
    for name in retry.files:
        run_batch_file(tmp_path / "retry" / name, retry_out / name)
    import_batches(lakehouse, config, retry_out, specs)
    ok = lakehouse.read(LLM_CALLS.name).where("status = 'ok'")
    assert ok.count() == 12 == ok.select("request_id").distinct().count()
    assert lakehouse.read(GENERATED.name).count() == 12
    assert lakehouse.read(QUARANTINE.name).where("stage = 'generate'").count() == 0
