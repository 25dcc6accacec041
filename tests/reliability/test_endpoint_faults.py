"""Issue 14, endpoint faults through curate: generate → enrich → curate on the demo data against a
simulator that injects a fault into 20% of HTTP requests, spread evenly over every kind it has
(429 + Retry-After, 500, 503, a hang past the client timeout, a dropped connection, an unparsable
200 body, malformed JSON content, truncation with finish_reason=length, an HTML 502 page, an error
object in a 200 body, a 200 without `usage`).

One module-scoped run serves every check (it starts from a copy of the seeds the keyed demo run's
catalog + ingest wrote, tests/worlds.py); the simulator counts, per request id, every HTTP hit and
the kind of every 200 reply it sent (`SimulatorState.replies_200`), which is the server's side of
the bill.

Breakage caught: a request left without a ledger row or given two; a run whose accounting does not
reconcile; a curated item (or the enrichment it shows) taken from a failed, quarantined or
deliberately broken response; a client that re-asks after a well-formed completion (double pay),
or retries without the ledger's `attempts` counting it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.worlds import DEMO_WITHOUT_CALIBRATION, copy_seeded

pytestmark = [pytest.mark.spark, pytest.mark.e2e, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
TASKS = ["arc_easy", "gsm8k", "boolq"]
# 200 replies that carry a well-formed chat completion (paid, and never to be paid again) ...
WELL_FORMED_200 = {"ok", "no_usage", "malformed", "truncate"}
# ... and those whose content is deliberately broken (what must never reach curated)
BROKEN_CONTENT = {"malformed", "truncate"}


@pytest.fixture(scope="module")
def faulty_run(spark, tmp_path_factory, keyed_demo_run):
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from simulator import SimSettings, SimulatorServer
    from simulator.settings import FAULT_KINDS

    assert tuple(keyed_demo_run["config"].tasks.select) == tuple(TASKS)
    root = copy_seeded(keyed_demo_run, tmp_path_factory.mktemp("reliab-faults") / "lakehouse")
    server = SimulatorServer(SimSettings(
        seed=3, latency_ms=2, latency_jitter_ms=1, fault_rate=0.2, fault_kinds=FAULT_KINDS,
        retry_after_s=0.2, hang_s=8.0, wrong_answer_rate=0.05, model="taskseed-sim")).start()
    config = load_config(
        REPO / "demo" / "taskseed.demo.yaml",
        ["schema=reliab_faults", "spark.master=local[2]", "spark.shuffle_partitions=2",
         f"tasks.select=[{','.join(TASKS)}]", f"tasks.mirror={REPO / 'demo' / 'data' / 'hf'}",
         "generate.seeds_per_task=6", "generate.items_per_seed=3", "enrich.samples_per_item=2",
         f"endpoint.base_url={server.base_url}", "endpoint.model=taskseed-sim", "endpoint.api_key_env=null",
         "endpoint.timeout_s=2", "endpoint.backoff_base_s=0.05", "endpoint.backoff_max_s=0.5",
         "llm.micro_batch_rows=64", *DEMO_WITHOUT_CALIBRATION],
        home=root)
    lakehouse = Lakehouse(spark, config)  # registers the copied seed tables under its own schema
    try:
        runs = run_pipeline(lakehouse, config, ("generate", "enrich", "curate"), progress=lambda _line: None,
                            track=False)
        print("stage seconds:", {name: round(run.seconds, 1) for name, run in runs.items()})
        yield {"lakehouse": lakehouse, "runs": runs, "stats": server.stats(), "kinds": FAULT_KINDS}
    finally:
        server.stop()
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


def test_every_fault_kind_was_injected_and_the_run_completed(faulty_run):
    """Guards the checks below against passing vacuously."""
    stats = faulty_run["stats"]
    outcomes = stats["outcomes"]
    assert set(faulty_run["kinds"]) <= set(outcomes), outcomes
    faults = sum(n for kind, n in outcomes.items() if kind in faulty_run["kinds"])
    assert 0.12 < faults / stats["requests"] < 0.3, outcomes
    lh = faulty_run["lakehouse"]
    assert lh.read("curated").count() > 0
    assert lh.read("quarantine").where("stage IN ('generate', 'enrich')").count() > 0
    assert lh.read("llm_calls").where("status = 'failed'").count() > 0


def test_every_request_has_exactly_one_terminal_ledger_row(faulty_run):
    from udfs.llm_client import STATUS_FAILED, STATUS_OK

    lh, stats = faulty_run["lakehouse"], faulty_run["stats"]
    calls = lh.read("llm_calls")
    per_id = calls.groupBy("request_id").count()
    assert per_id.where("count <> 1").count() == 0
    assert calls.where(~F.col("status").isin(STATUS_OK, STATUS_FAILED)).count() == 0
    # the server saw exactly the requests the ledger holds: none sent and lost, none recorded unsent
    ledger_ids = {r.request_id for r in calls.select("request_id").collect()}
    assert ledger_ids == set(stats["by_request_id"])
    for name in ("generate", "enrich"):
        result = faulty_run["runs"][name].result
        assert result.accounting.reconciles(), result.accounting.problems()
        assert result.accounting.not_sent == 0 and result.unsent == 0
        assert result.planned == result.items + result.quarantined


def test_every_request_ends_in_its_output_table_or_quarantine_once(faulty_run):
    lh = faulty_run["lakehouse"]
    quarantine = lh.read("quarantine")
    for stage, table in (("generate", "generated"), ("enrich", "enriched")):
        ids = lh.read("llm_calls").where(F.col("stage") == stage).select("request_id")
        used = lh.read(table).select("request_id").distinct()
        bad = quarantine.where(F.col("stage") == stage).select(F.col("source_key").alias("request_id"))
        assert used.join(bad, "request_id").count() == 0, stage
        assert ids.join(used.unionByName(bad), "request_id", "left_anti").count() == 0, stage
        failed = lh.read("llm_calls").where((F.col("stage") == stage) & (F.col("status") == "failed"))
        assert failed.select("request_id").join(used, "request_id").count() == 0, stage


def test_nothing_in_curated_came_from_a_failed_unparsable_or_broken_response(faulty_run):
    """The item of every curated row came from a clean generation response (the server sent it
    unbroken, the ledger says ok, it was not quarantined); the enrichment it shows, and every vote
    it counted, came from an ok, unquarantined response. An enrichment whose JSON the server broke
    (`malformed`: an unterminated extra field after a complete object body) is used only through
    the parser's documented salvage of a complete `final_answer` (udfs.parsing.parse_enrichment),
    and then its answer is whole: it agrees with the item's answer it voted for."""
    from udfs.verification import answer_key

    lh, replies = faulty_run["lakehouse"], faulty_run["stats"]["replies_200"]
    curated = lh.read("curated").collect()
    assert curated
    calls = {r.request_id: r for r in lh.read("llm_calls").collect()}
    quarantined = {r.source_key for r in lh.read("quarantine").select("source_key").collect()}
    broken = {rid for rid, kinds in replies.items() if not BROKEN_CONTENT.isdisjoint(kinds)}
    assert broken  # the simulator did break some contents
    samples = {(r.gen_id, r.request_id): r for r in lh.read("enriched").collect()}
    salvaged = 0
    for row in curated:
        assert row.item_kind == "generated" and row.generation_request_id, row.gen_id
        gen = calls[row.generation_request_id]
        assert gen.status == "ok" and gen.error_class is None, (gen.status, gen.error_class)
        assert row.generation_request_id not in quarantined | broken, row.gen_id
        enr = calls[row.enrichment_request_id]
        assert enr.status == "ok" and row.enrichment_request_id not in quarantined, row.gen_id
        if row.enrichment_request_id in broken:
            salvaged += 1
            assert set(replies[row.enrichment_request_id]) & BROKEN_CONTENT == {"malformed"}
            sample = samples[(row.gen_id, row.enrichment_request_id)]
            choices = list(row.choices or [])
            assert sample.final_answer and row.knowledge and row.reasoning
            assert (answer_key(row.answer_format, sample.final_answer, sample.final_answer_index, choices)
                    == answer_key(row.answer_format, row.answer_text, row.answer_index, choices))
    # every vote counted for a curated item came from an ok, unquarantined enrichment response
    votes = (lh.read("enriched").join(lh.read("curated").select("gen_id"), "gen_id", "left_semi")
             .select("request_id").collect())
    assert votes and not {v.request_id for v in votes} & quarantined
    assert all(calls[v.request_id].status == "ok" for v in votes)
    print(f"curated rows: {len(curated)}; shown enrichments salvaged from broken JSON: {salvaged}")


def test_no_well_formed_200_is_paid_twice_and_the_ledger_counts_every_retry(faulty_run):
    """A request id gets at most one well-formed completion. The only 200s the client re-asks after
    are bodies it could not read as a completion (`bad_body`: cut off mid-JSON), and every HTTP
    attempt of a request — those retries included — is in the ledger's `attempts`."""
    lh, stats = faulty_run["lakehouse"], faulty_run["stats"]
    retried_200 = 0
    for rid, kinds in stats["replies_200"].items():
        kinds = Counter(kinds)
        assert sum(kinds[k] for k in WELL_FORMED_200) <= 1, (rid, dict(kinds))
        assert kinds["error_200"] <= 1, (rid, dict(kinds))  # an error object (HTTP 400 inside) is final
        retried_200 += kinds["bad_body"]
    assert retried_200 > 0
    attempts = {r.request_id: r.attempts for r in lh.read("llm_calls").select("request_id", "attempts").collect()}
    assert attempts == stats["by_request_id"]
    assert sum(attempts.values()) == stats["requests"]
