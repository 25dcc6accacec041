"""Generate and enrich on local Spark against the simulator over HTTP, on tiny inline seed tables.

Few Spark tests (each stage run is ~10-20 Spark actions): K rows per seed and M per item with
lineage, broken outputs quarantined with every request accounted for and no resend on rerun, and a
dry run / budget stop / continue cycle. The pure plan/parse rows are tested in
tests/unit/test_llm_rows.py.
"""

from __future__ import annotations

from argparse import Namespace

import pytest
from pyspark.sql import functions as F

from jobs.cli import cmd_generate
from jobs.enrich import run_enrich
from jobs.generate import run_generate
from schemas.tables import ENRICHED, GENERATED, LLM_CALLS, QUARANTINE, SEEDS
from tests.documents import pretraining_documents
from tests.unit.seed_records import broken_seed, seed_rows
from udfs.llm_client import EndpointSettings


def write_seeds(lakehouse, rows: list[dict]) -> None:
    lakehouse.merge(lakehouse.spark.createDataFrame(rows, SEEDS.schema), SEEDS)


def endpoint(url: str, **kw) -> EndpointSettings:
    values = dict(base_url=url, model="taskseed-sim", require_key=False, max_concurrency=16, timeout_s=5.0,
                  backoff_base_s=0.02, backoff_max_s=0.2)
    values.update(kw)
    return EndpointSettings(**values)


def quiet(_line: str) -> None:
    pass


# ---- Spark ----------------------------------------------------------------------------------

@pytest.mark.spark
@pytest.mark.heavy  # whole generate and enrich runs
def test_generate_k_per_seed_enrich_m_per_item_with_lineage_and_documents(lakehouse, make_config, sim):
    write_seeds(lakehouse, seed_rows(arc_easy=2, gsm8k=2, boolq=2, winogrande=2, webqs=2, nli_handwritten=1)
                + [broken_seed()])
    config = lakehouse.config.model_copy(deep=True)
    config.generate.items_per_seed, config.enrich.samples_per_item = 2, 2
    config.enrich.enrich_seeds = True
    ep = endpoint(sim.base_url)

    gen = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert (gen.planned, gen.items, gen.quarantined, gen.render_errors, gen.unsent) == (22, 22, 0, 1, 0)
    assert gen.items_by_family == {"arc": 4, "gsm8k": 4, "boolq": 4, "winogrande": 4, "webqs": 4, "nli": 2}
    generated = lakehouse.read(GENERATED.name)
    per_seed = {r.seed_id: (r.n, r.samples) for r in generated.groupBy("seed_id").agg(
        F.count("*").alias("n"), F.collect_set("sample_index").alias("samples")).collect()}
    assert len(per_seed) == 11 and all(n == 2 and sorted(s) == [0, 1] for n, s in per_seed.values())
    row = generated.where("task = 'arc_easy'").first()
    assert row.license == "CC-BY-4.0" and row.model == "taskseed-sim" and row.prompt_version.startswith("gen-")
    assert len(row.choices) == 4 and row.choices[row.answer_index] == row.answer_text
    quarantine = {(r.stage, r.source_key): r.reason for r in lakehouse.read(QUARANTINE.name).collect()}
    assert quarantine == {("generate", "broken-seed-0001"): "render_error"}

    enr = run_enrich(lakehouse, config, progress=quiet, endpoint=ep)
    # 22 generated items + 11 renderable seeds, M=2 each; the broken seed cannot be rendered here either
    assert (enr.planned, enr.items, enr.quarantined, enr.render_errors) == (66, 66, 0, 1)
    enriched = lakehouse.read(ENRICHED.name)
    counts = {(r.item_kind, r.n) for r in enriched.groupBy("gen_id", "item_kind").count()
              .toDF("gen_id", "item_kind", "n").collect()}
    assert counts == {("generated", 2), ("seed", 2)}
    assert enriched.where("final_answer IS NULL OR reasoning = '' OR knowledge = ''").count() == 0
    assert sim.stats()["requests"] == 22 + 66

    docs = pretraining_documents(lakehouse)
    texts = [r.text for r in docs.where("task = 'arc_easy' AND item_kind = 'generated'").collect()]
    assert len(texts) == 8
    assert all("Question:" in t and "Options:\n(A)" in t and "Reasoning:" in t and "\nAnswer: (" in t for t in texts)


@pytest.mark.spark
@pytest.mark.heavy  # whole generate runs, rerun
def test_dry_run_budget_stop_continue_quarantine_accounting_and_rerun_sends_none(lakehouse, start_sim, capsys):
    write_seeds(lakehouse, seed_rows(arc_easy=3, gsm8k=3, boolq=2))
    config = lakehouse.config.model_copy(deep=True)
    config.generate.items_per_seed = 2
    server = start_sim(seed=11, latency_ms=2, latency_jitter_ms=1,
                       fault_rates=(("malformed", 0.25), ("500", 0.15)))
    ep = endpoint(server.base_url, max_retries=0)

    # dry run: per family requests and token estimates, nothing sent, no ledger row
    assert cmd_generate(Namespace(dry_run=True, tasks=None), config) == 0
    table = _estimate_table(capsys.readouterr().out)
    assert table["arc"][:3] == [6, 0, 6] and table["gsm8k"][:3] == [6, 0, 6] and table["boolq"][:3] == [4, 0, 4]
    assert table["TOTAL"][3] > 16 * 100 and 0 < table["TOTAL"][4] <= table["TOTAL"][5] == 16 * 1024
    assert server.stats()["requests"] == 0 and lakehouse.read(LLM_CALLS.name).count() == 0

    # budget: stops cleanly after max_requests; what was sent is parsed and accounted for
    config.llm.max_requests, config.llm.micro_batch_rows = 5, 4
    stopped = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert stopped.accounting.sent == 5 and "max_requests" in stopped.accounting.stopped_reason
    assert stopped.items + stopped.quarantined == 5 and stopped.unsent == 11
    assert server.stats()["requests"] == 5

    # a stale quarantine row for a request that parses (as before a parser fix) must be healed
    some_ok = sorted(r.request_id for r in lakehouse.read(GENERATED.name).collect())[0]
    lakehouse.merge(lakehouse.spark.createDataFrame([("generate", some_ok, "old_parser_reason")],
                                                    "stage string, source_key string, reason string"), QUARANTINE)

    # the rerun continues where the budget stopped: only the 11 unsent requests go out
    config.llm.max_requests = None
    rest = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert (rest.accounting.already_done, rest.accounting.sent) == (5, 11) and rest.accounting.reconciles()
    assert rest.items + rest.quarantined == 16 and rest.unsent == 0
    reasons = rest.quarantined_by_reason
    assert reasons.get("truncated_json", 0) >= 1 and reasons.get("http_500", 0) >= 1, reasons
    assert server.stats()["requests"] == 16 and len(server.stats()["by_request_id"]) == 16
    ledger_ids = {r.request_id for r in lakehouse.read(LLM_CALLS.name).collect()}
    generated_ids = {r.request_id for r in lakehouse.read(GENERATED.name).collect()}
    quarantined = {r.source_key: r for r in lakehouse.read(QUARANTINE.name).collect()}
    # every request is in exactly one place
    assert generated_ids | set(quarantined) == ledger_ids and not generated_ids & set(quarantined)
    assert some_ok not in quarantined
    assert all(r.raw for r in quarantined.values() if r.reason == "truncated_json")  # raw text kept
    per_seed = [r["count"] for r in lakehouse.read(GENERATED.name).groupBy("seed_id").count().collect()]
    assert all(1 <= n <= 2 for n in per_seed)

    # a full rerun sends nothing (failed calls are terminal too) and changes nothing
    version = lakehouse.version(GENERATED.name)
    again = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert again.accounting.sent == 0 and server.stats()["requests"] == 16
    assert (again.items, again.quarantined_by_reason) == (rest.items, rest.quarantined_by_reason)
    assert lakehouse.version(GENERATED.name) == version


def _estimate_table(out: str) -> dict[str, list[int]]:
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 8 and cells[1].isdigit():
            rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


@pytest.mark.spark
@pytest.mark.heavy  # whole generate runs, rerun
def test_reasoning_server_without_json_schema_json_object_mode_items_from_the_reasoning_rerun_reparses(
        lakehouse, start_sim):
    """Issue 11 F/H, issue 12 §3 through a whole stage: a llama.cpp-like server that rejects
    json_schema and puts every answer in `reasoning_content` with `content` null. In json_object
    mode every request yields an item parsed from the reasoning text; the ledger keeps that text,
    the K samples were distinct bodies (distinct seeds, distinct items), and a rerun re-parses the
    ledger without a new call."""
    write_seeds(lakehouse, seed_rows(arc_easy=2, gsm8k=1))
    config = lakehouse.config.model_copy(deep=True)
    config.generate.items_per_seed = 3
    server = start_sim(latency_ms=1, latency_jitter_ms=0, reasoning="only", reject_json_schema=400)

    rejected = run_generate(lakehouse, config, progress=quiet, endpoint=endpoint(server.base_url))
    assert rejected.items == 0 and rejected.quarantined_by_reason == {"structured_output_unsupported": 9}
    assert server.stats()["outcomes"]["reject_json_schema"] == 9  # a 400 class: not retried

    ep = endpoint(server.base_url, structured_output="json_object")
    config.llm.retry_failed = True
    gen = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert (gen.accounting.sent, gen.items, gen.quarantined) == (9, 9, 0)
    calls = lakehouse.read(LLM_CALLS.name).where("status = 'ok'").collect()
    assert len(calls) == 9 and all(c.content is None and '"question"' in c.reasoning_content for c in calls)
    assert len({c.sampling_seed for c in calls}) == 9
    questions = [r.question for r in lakehouse.read(GENERATED.name).collect()]
    assert len(set(questions)) == 9  # K samples of one seed are distinct items, not one item K times

    again = run_generate(lakehouse, config, progress=quiet, endpoint=ep)
    assert again.accounting.sent == 0 and (again.items, again.quarantined) == (9, 0)
    assert server.stats()["outcomes"].get("ok", 0) == 9
