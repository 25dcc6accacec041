"""Batch mode's online path (issue 27, jobs/llm_stage/batch_online.py) on local Spark against the
simulator's Batch API (simulator/batch_api.py), over a tiny inline seeds table of real records.

- in process: a run where some batches expire and some lines fail answers every request exactly
  once in the ledger, resubmits what an expired batch did not run in the same run, and reports
  progress per poll;
- the kill test (heavy): `taskseed generate` with `endpoint.mode=batch` in a subprocess, killed
  at each of the five points (`TASKSEED_BATCH_CRASH_AT`: before upload, after upload, after submit,
  while polling, after completion before reconciliation) one after another on the same lakehouse,
  then run to the end; counted at the simulator: no request submitted in two batches, no batch
  created twice, none lost, one ledger row per request.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs.config import load_config
from jobs.generate import GENERATE_SPEC
from jobs.lakehouse import Lakehouse
from jobs.llm_stage.batch_online import CRASH_ENV, CRASH_EXIT, CRASH_POINTS
from jobs.llm_stage.plan import build_plan
from jobs.llm_stage.runner import run_stage
from schemas.tables import GENERATED, LLM_BATCH_REQUESTS, LLM_CALLS, QUARANTINE, SEEDS
from simulator import SimSettings, SimulatorServer
from tests.reliability.cli_run import TASKSEED
from tests.unit.seed_records import seed_rows

pytestmark = [pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]


def _plan_ids(lakehouse, config) -> set[str]:
    plan = build_plan(GENERATE_SPEC, lakehouse, config).where(F.col("render_error").isNull())
    return {r.request_id for r in plan.select("request_id").distinct().collect()}


def _assert_exactly_once(lakehouse, ids: set[str]) -> None:
    ledger = lakehouse.read(LLM_CALLS.name)
    rows = [(r.request_id, r.batch_id) for r in ledger.select("request_id", "batch_id").collect()]
    assert sorted(rid for rid, _ in rows) == sorted(ids)  # one ledger row per request, none lost
    assert all(bid for _, bid in rows)
    generated = lakehouse.read(GENERATED.name).count()
    quarantined = lakehouse.read(QUARANTINE.name).where("stage = 'generate'").count()
    assert generated + quarantined == len(ids)


def test_expired_batches_release_their_unrun_requests_and_every_request_is_answered_once(lakehouse):
    lakehouse.merge(lakehouse.spark.createDataFrame(seed_rows(arc_easy=2, gsm8k=2, boolq=2), SEEDS.schema), SEEDS)
    settings = SimSettings(seed=2, batch_seconds=0.5, batch_expire_rate=0.4, batch_error_rate=0.25)
    with SimulatorServer(settings) as sim:
        config = lakehouse.config.model_copy(deep=True)
        config.endpoint = config.endpoint.model_copy(update={"base_url": sim.base_url, "mode": "batch",
                                                             "api_key_env": None})
        config.generate.items_per_seed = 2
        config.llm.batch_rows = 4
        config.llm.batch_poll_seconds = 0.1
        config.llm.batch_poll_max_seconds = 0.2
        lines: list[str] = []
        result = run_stage(GENERATE_SPEC, lakehouse, config, progress=lines.append)
        stats = sim.stats()["batch_api"]
    ids = _plan_ids(lakehouse, config)
    assert len(ids) == 12 and result.planned == 12
    _assert_exactly_once(lakehouse, ids)
    statuses = set(stats["batches"].values())
    assert "expired" in statuses and "completed" in statuses, stats["batches"]
    # what an expired batch did not run went out again, in one more batch, in the same run
    twice = {cid for cid, n in stats["submitted"].items() if n > 1}
    assert twice and set(stats["submitted"]) == ids
    members = lakehouse.read(LLM_BATCH_REQUESTS.name)
    assert {r.batch_status for r in members.collect()} <= {"reconciled", "expired"}
    assert members.where(F.col("provider_batch_id").isNull()).count() == 0
    errors = {r.error_class for r in lakehouse.read(LLM_CALLS.name).where("status = 'failed'").collect()}
    assert errors and "missing_from_batch_output" not in errors
    assert any(line.startswith("[generate] batches: submitted=") for line in lines)
    assert any("batch mode:" in line and "expired=" in line for line in lines), lines
    # the stage's accounting is the ledger's: every request sent once, the usage of the rows recorded
    calls = lakehouse.read(LLM_CALLS.name)
    usage = calls.agg(F.sum("prompt_tokens"), F.sum("completion_tokens")).first()
    first = result.accounting
    assert (first.requested, first.already_done, first.sent, first.not_sent) == (12, 0, 12, 0)
    assert (first.prompt_tokens, first.completion_tokens) == (usage[0], usage[1]) and first.tokens > 0
    # a second run finds nothing pending and submits nothing, and says so
    with SimulatorServer(settings) as sim:
        config.endpoint = config.endpoint.model_copy(update={"base_url": sim.base_url})
        again = run_stage(GENERATE_SPEC, lakehouse, config, progress=lambda _l: None)
        assert sim.stats()["batch_api"]["submitted"] == {}
    assert (again.accounting.already_done, again.accounting.sent, again.unsent) == (12, 0, 0)


@pytest.mark.heavy
def test_a_driver_killed_at_each_point_resumes_and_submits_every_request_exactly_once(spark, tmp_path):
    home = tmp_path / "home"
    schema = "batch_kill"
    base = ["spark.master=local[2]", "spark.shuffle_partitions=2", f"schema={schema}", "endpoint.mode=batch",
            "generate.items_per_seed=2", "llm.batch_rows=3", "llm.batch_poll_seconds=0.2",
            "llm.batch_poll_max_seconds=0.4"]
    config = load_config(overrides=base, home=home)
    lakehouse = Lakehouse(spark, config)
    lakehouse.merge(spark.createDataFrame(seed_rows(arc_easy=2, gsm8k=1, boolq=1), SEEDS.schema), SEEDS)
    env = {**os.environ, "TASKSEED_API_KEY": "sk-batch-kill-test"}
    env.pop(CRASH_ENV, None)
    try:
        with SimulatorServer(SimSettings(seed=7, batch_seconds=1.0, require_api_key="sk-batch-kill-test")) as sim:
            argv = [TASKSEED, "--home", str(home), *[a for o in [*base, f"endpoint.base_url={sim.base_url}"]
                                                     for a in ("--set", o)], "generate"]
            for point in (*CRASH_POINTS, None):
                run_env = {**env, CRASH_ENV: point} if point else env
                proc = subprocess.run(argv, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300)
                expected = CRASH_EXIT if point else 0
                assert proc.returncode == expected, (point, proc.returncode, proc.stderr[-3000:])
            stats = sim.stats()["batch_api"]
        ids = _plan_ids(lakehouse, config)
        assert len(ids) == 8
        assert stats["submitted"] == dict.fromkeys(ids, 1)  # none lost, none submitted in two batches
        assert len(stats["batches"]) == 3 and set(stats["batches"].values()) == {"completed"}  # none created twice
        _assert_exactly_once(lakehouse, ids)
        members = lakehouse.read(LLM_BATCH_REQUESTS.name).collect()
        assert len(members) == 8 and {m.batch_status for m in members} == {"reconciled"}
        assert {m.provider_batch_id for m in members} == set(stats["batches"])
    finally:
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
