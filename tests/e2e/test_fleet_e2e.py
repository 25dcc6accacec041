"""Issue 24's Done-when: a `taskseed run` of the demo pipeline with a different model per stage and
two replicas for enrich, one of which is killed while enrich runs; the accounting at the servers
proves that nothing was lost and nothing paid twice.

The demo config's three tasks (arc_easy, gsm8k, boolq), from a copy of the keyed demo world's
catalogued and ingested home (`tests/worlds.copy_seeded`: seeds, held-out index and signatures;
generate → enrich → curate → publish run here), 3 seeds per task, K = 2, M = 3; generate on its own simulator serving `gen-large`, enrich on two simulator
replicas serving `reasoner` (a window of 3 each, 150 ms per answer so the stage runs a few seconds),
MLflow on. A watcher kills replica B once it has taken 6 enrichment requests (the connections of
its in-flight requests drop, the port refuses after). Checked: every stage ran, the ledger holds
each stage's model, every enrich request id of the ledger got exactly one paid-for (HTTP 200)
reply across the two replicas, and every reply paid for is in the ledger (none lost), B answered
some before it died, A took over the rest; MLflow params and `taskseed status` name each stage's
model; curated rows exist.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from pyspark.sql import functions as F

from schemas.tables import LLM_CALLS

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.heavy]

TASKS = ("arc_easy", "gsm8k", "boolq")


def paid(server) -> Counter:
    return Counter({rid: sum(kinds.values()) for rid, kinds in server.stats()["replies_200"].items()})


def test_a_run_with_a_model_per_stage_and_two_enrich_replicas_survives_a_killed_replica(
        spark, tmp_path, keyed_demo_run, start_sim):
    import mlflow

    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from jobs.status import pipeline_status
    from tests.worlds import DEMO_CONFIG, DEMO_MIRROR, KEYED_TASKS, LOCAL_SPARK, copy_seeded

    gen = start_sim(seed=3, model="gen-large", latency_ms=5, latency_jitter_ms=0, wrong_answer_rate=0.1)
    replica_a = start_sim(seed=3, model="reasoner", latency_ms=150, latency_jitter_ms=0, latency_dist="fixed")
    replica_b = start_sim(seed=3, model="reasoner", latency_ms=150, latency_jitter_ms=0, latency_dist="fixed")
    config = load_config(DEMO_CONFIG, [
        "schema=t_fleet_e2e", *LOCAL_SPARK, f"tasks.mirror={DEMO_MIRROR}", "generate.seeds_per_task=3",
        "enrich.samples_per_item=3", "llm.commit_rows=5", "endpoint.api_key_env=null",
        f"generate.endpoint={{base_url: '{gen.base_url}', model: gen-large}}",
        f"enrich.endpoint={{model: reasoner, replicas: [{{base_url: '{replica_a.base_url}', max_concurrency: 3}}, "
        f"{{base_url: '{replica_b.base_url}', max_concurrency: 3}}]}}",
    ], home=copy_seeded(keyed_demo_run, tmp_path / "lakehouse"))
    assert tuple(config.tasks.select) == KEYED_TASKS == TASKS
    lakehouse = Lakehouse(spark, config)  # registers the copied seed tables under its own schema
    lines: list[str] = []
    killed: dict[str, int] = {}

    def kill_b_mid_enrich() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "at" not in killed:
            if replica_b.stats()["requests"] >= 6:
                killed["at"] = replica_b.stats()["requests"]
                replica_b.kill()
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_b_mid_enrich, daemon=True)
    watcher.start()
    try:
        runs = run_pipeline(lakehouse, config, ("generate", "enrich", "curate", "publish"), progress=lines.append)
        killed.setdefault("never", 1)
        watcher.join(5)
        assert "at" in killed, "replica B was never killed: enrich did not reach it"
        assert all(runs[s].skipped is None for s in ("generate", "enrich", "curate", "publish"))
        assert any("endpoint [enrich]: model=reasoner on 2 replicas" in line for line in lines)

        calls = lakehouse.read(LLM_CALLS.name)
        models = {(r.stage, r.model) for r in calls.select("stage", "model").distinct().collect()}
        assert models == {("generate", "gen-large"), ("enrich", "reasoner")}
        enrich = calls.where(F.col("stage") == "enrich").select("request_id", "status").collect()
        ids = [r.request_id for r in enrich]
        assert len(ids) == len(set(ids)) and len(ids) >= 30 and {r.status for r in enrich} == {"ok"}
        # counted at the servers: every ledger row paid exactly once across A and B, nothing paid unrecorded
        both = paid(replica_a) + paid(replica_b)
        assert both == Counter({rid: 1 for rid in ids})
        assert 0 < sum(paid(replica_b).values()) < len(ids) and sum(paid(replica_a).values()) > len(ids) // 2
        assert paid(gen) == Counter({r.request_id: 1 for r in calls.where(F.col("stage") == "generate")
                                     .select("request_id").collect()})
        assert lakehouse.read("curated").count() > 0

        client = mlflow.MlflowClient(f"sqlite:///{(tmp_path / 'lakehouse').resolve() / 'mlflow.db'}")
        parent = next(r for r in client.search_runs([client.get_experiment_by_name("taskseed").experiment_id])
                      if "mlflow.parentRunId" not in r.data.tags)
        params = parent.data.params
        assert (params["model.generate"], params["model.enrich"]) == ("gen-large", "reasoner")
        assert params["endpoint_url.enrich"] == f"{replica_a.base_url},{replica_b.base_url}"
        assert params["max_concurrency.enrich"] == "6"
        status = {s.stage: s.models for s in pipeline_status(lakehouse, config)}
        assert status["generate"] == {"generate": "gen-large"} and status["enrich"] == {"enrich": "reasoner"}
    finally:
        killed.setdefault("done", 1)
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
