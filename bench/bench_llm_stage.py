"""Benchmark of an LLM stage's call step end to end (issue 12): the stage through Spark into the
`llm_calls` Delta ledger against a bare async openai client, same endpoint, same concurrency.

The simulator runs in its own process (`simulator.SimulatorProcess`), restarted with identical
settings for every measurement, so both sides see the same latency per request (the simulator's
latency is a hash of the request body) and the server's capacity equals the client's concurrency
C (no queue on the server). Cases (one line each, ratio = stage req/s ÷ bare req/s):

1. heavy-tailed: lognormal latency, median 0.5 s, σ = 1 (jitter = median), C = 64, 2,000
   requests, `llm.commit_rows` 200 (≥ 10 commit units), target ≥ 0.9×;
2. the fixed-latency cases of bench_llm_engine.py that fit a stage run: C=16 L=50 ms and
   C=64 L=500 ms (same request count).

The bare client runs twice per case: in input order, and again in the order the stage sent the
requests (its ledger's sent_at). The ratio with a target is the second. Under heavy-tailed latency
a run's length depends on where the slow requests fall in the send order (one 15 s request sent
last adds up to 15 s to either client), which no client controls, since a request's latency is
unknown before it is sent; with the same order both face the same tail, and the ratio measures the
stage's own cost (Spark, spool, ledger commits, start-up). The input-order ratio is printed too.
The line also gives the mean number of requests in flight between the stage's first and last send
(from the ledger's per-request times): C means the window never had a free slot.

The stage's time is `run_llm_stage` from call to return: recovery check, pinning the ledger
version, the calling job (which plans as it starts: dedupe + anti-join against the ledger), the
counts (one aggregation, run alongside the calling job before the first commit), every ledger commit, the accounting. Spark is
started and warmed (a 32-request stage run) before the first measurement. The bare client is
`openai.AsyncOpenAI` (aiohttp transport, max_retries=0) posting the identical request bodies
(`udfs.llm_client.build_body`) under an `asyncio.Semaphore(C)`. The plan step at 1M requests is
bench_llm_plan.py.

    .venv/bin/python bench/bench_llm_stage.py                    # all cases (~5 min idle)
    .venv/bin/python bench/bench_llm_stage.py --only lognormal   # the heavy-tailed case
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import SimSettings, SimulatorProcess  # noqa: E402
from tests.fixtures_sim import make_request_rows  # noqa: E402
from udfs.llm_client import EndpointSettings, build_body  # noqa: E402

CASES = {
    "lognormal": dict(latency_ms=500.0, latency_jitter_ms=500.0, latency_dist="lognormal", max_concurrency=64),
    "fixed_c16_l50": dict(latency_ms=50.0, latency_jitter_ms=0.0, latency_dist="fixed", max_concurrency=16),
    "fixed_c64_l500": dict(latency_ms=500.0, latency_jitter_ms=0.0, latency_dist="fixed", max_concurrency=64),
}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def bare_client(url: str, rows: list[dict], concurrency: int) -> tuple[float, int]:
    """Wall seconds and ok count for a bare AsyncOpenAI client, `concurrency` in flight."""
    import httpx2
    import openai

    async def main() -> tuple[float, int]:
        client = openai.AsyncOpenAI(base_url=url, api_key="no-key", max_retries=0, timeout=120,
                                    http_client=openai.DefaultAioHttpClient(timeout=120))
        gate = asyncio.Semaphore(concurrency)
        bodies = [build_body(r, "taskseed-sim") for r in rows]

        async def one(body: dict) -> bool:
            async with gate:
                try:
                    response = await client.post("/chat/completions", body=body, cast_to=httpx2.Response)
                    return response.status_code == 200
                except openai.APIError:
                    return False

        t0 = time.perf_counter()
        oks = await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - t0
        await client.close()
        return wall, sum(oks)

    return asyncio.run(main())


def in_flight_while_sending(sent) -> float:
    """Mean requests in flight between the first and the last send, from the ledger's per-request
    sent_at/completed_at (a pandas frame): the window the stage kept full while it had requests
    left to send (C means never a free slot)."""
    import numpy as np

    start = sent["sent_at"].astype("int64").to_numpy() / 1e9
    end = sent["completed_at"].astype("int64").to_numpy() / 1e9
    t0, t1 = start.min(), start.max()
    if t1 <= t0:
        return float(len(start))
    busy = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0, None).sum()
    return float(busy / (t1 - t0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--commit-rows", type=int, default=200)
    parser.add_argument("--commit-seconds", type=float, default=2.0)
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    args = parser.parse_args()

    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.llm_stage import run_llm_stage
    from jobs.runtime import get_spark
    from pyspark.sql import functions as F

    home = tempfile.mkdtemp(prefix="taskseed-bench-stage-")
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                    f"llm.commit_rows={args.commit_rows}",
                                    f"llm.commit_seconds={args.commit_seconds}"], home=home)
    lakehouse = Lakehouse(get_spark(config), config)
    spark = lakehouse.spark
    print(f"# {args.requests} requests per case, commit_rows={args.commit_rows}, "
          f"commit_seconds={args.commit_seconds}, local[2], {load()}", flush=True)
    with SimulatorProcess(SimSettings(latency_ms=5, latency_jitter_ms=0, max_concurrency=64)) as sim:
        warm = EndpointSettings(base_url=sim.base_url, model="taskseed-sim", require_key=False, max_concurrency=64)
        run_llm_stage(lakehouse, config, spark.createDataFrame(make_request_rows(32, offset=10**6)), "warmup", None,
                      endpoint=warm)
    ratios = {}
    for name in args.only or list(CASES):
        settings = SimSettings(seed=1, **CASES[name])
        c = settings.max_concurrency
        rows = make_request_rows(args.requests, stage=f"bench_{name}", offset=10**7 * (len(ratios) + 1))
        with SimulatorProcess(settings) as sim:
            bare_s, bare_ok = bare_client(sim.base_url, rows, c)
        requests = spark.createDataFrame(rows).cache()
        requests.count()
        with SimulatorProcess(settings) as sim:
            endpoint = EndpointSettings(base_url=sim.base_url, model="taskseed-sim", require_key=False,
                                        max_concurrency=c, timeout_s=120.0)
            t0 = time.perf_counter()
            acc = run_llm_stage(lakehouse, config, requests, f"bench_{name}", None, endpoint=endpoint)
            stage_s = time.perf_counter() - t0
            served = sim.stats()["requests"]
        requests.unpersist()
        assert acc.reconciles() and acc.sent == args.requests == served, (acc.problems(), acc.sent, served)
        sent = (lakehouse.read("llm_calls").where(F.col("stage") == f"bench_{name}")
                .select("request_id", "sent_at", "completed_at").toPandas().sort_values("sent_at"))
        window = in_flight_while_sending(sent)
        by_id = {r["request_id"]: r for r in rows}
        with SimulatorProcess(settings) as sim:  # the bare client again, in the order the stage sent
            same_s, same_ok = bare_client(sim.base_url, [by_id[i] for i in sent["request_id"]], c)
        bare_rate, same_rate, stage_rate = args.requests / bare_s, args.requests / same_s, args.requests / stage_s
        ratios[name] = stage_rate / same_rate
        target = " (target >= 0.9) " + ("PASS" if ratios[name] >= 0.9 else "FAIL") if name == "lognormal" else ""
        print(f"case {name} C={c}: bare async client {same_rate:.1f} req/s in the stage's order ({same_ok} ok, "
              f"{same_s:.1f} s), {bare_rate:.1f} req/s in input order ({bare_ok} ok, {bare_s:.1f} s); "
              f"stage through Spark into the ledger {stage_rate:.1f} req/s ({acc.ok} ok, {stage_s:.1f} s, "
              f"{acc.call_tasks} calling task(s), {acc.spool_files} spool files, {acc.commits} ledger commits; "
              f"plan {acc.plan_s:.1f} s, first request at {acc.first_sent_s:.1f} s, "
              f"calling job {acc.calling_s:.1f} s (counts alongside it {acc.count_s:.1f} s), "
              f"rest {stage_s - acc.plan_s - acc.calling_s:.1f} s; {window:.1f} of {c} in flight on average "
              f"from the first send to the last); ratio {ratios[name]:.2f}x{target} "
              f"(same order; {stage_rate / bare_rate:.2f}x against the input order); {load()}", flush=True)
    return 0 if ratios.get("lognormal", 1.0) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
