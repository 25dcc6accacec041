"""What an LLM stage run pays before its first request (issue 12): the plan materialized first vs.
folded into the calling job, alternating in one process.

Both go through `jobs.llm_stage.run_llm_stage` on the same Spark session and simulator (fixed
20 ms latency, capacity 64, so the calls themselves take well under a second and the run's fixed
costs dominate); each run is a fresh stage of N requests on one lakehouse:

- materialized: `llm.max_requests` set above N, which takes the capped path — the deduplicated,
  ledger-flagged requests are local-checkpointed and counted before the calling job starts;
- overlapped: `llm.max_requests` unset — the calling job's first stages dedupe and anti-join
  against the pinned ledger version, and the counts run alongside it.

Prints per run the total, when the first request went out (earliest `sent_at`), the time before
the calling job started, the calling job, and the load average. The first pair includes JVM
warm-up; compare the second.

    .venv/bin/python bench/bench_llm_run_start.py          # 500 requests per run
    .venv/bin/python bench/bench_llm_run_start.py 2000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_config  # noqa: E402
from jobs.lakehouse import Lakehouse  # noqa: E402
from jobs.llm_stage.call import run_llm_stage  # noqa: E402
from jobs.runtime import get_spark  # noqa: E402
from simulator import SimSettings, SimulatorProcess  # noqa: E402
from tests.fixtures_sim import make_request_rows  # noqa: E402
from udfs.llm_client import EndpointSettings  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    home = tempfile.mkdtemp(prefix="taskseed-bench-start-")
    base = ["spark.master=local[2]", "spark.shuffle_partitions=2", "llm.commit_rows=200", "llm.commit_seconds=2"]
    configs = {"materialized": load_config(overrides=[*base, "llm.max_requests=1000000000"], home=home),
               "overlapped": load_config(overrides=base, home=home)}
    lakehouse = Lakehouse(get_spark(configs["overlapped"]), configs["overlapped"])
    spark = lakehouse.spark
    print(f"# {n} requests per run, local[2], load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    totals: dict[str, float] = {}
    with SimulatorProcess(SimSettings(latency_ms=20, latency_jitter_ms=0, max_concurrency=64)) as sim:
        endpoint = EndpointSettings(base_url=sim.base_url, model="taskseed-sim", require_key=False, max_concurrency=64)
        run_llm_stage(lakehouse, configs["overlapped"], spark.createDataFrame(make_request_rows(32, offset=10**6)),
                      "warmup", None, endpoint=endpoint)
        for i, name in enumerate(["materialized", "overlapped"] * 2):
            requests = spark.createDataFrame(make_request_rows(n, stage=f"start{i}", offset=10**7 * (i + 1))).cache()
            requests.count()
            t0 = time.perf_counter()
            acc = run_llm_stage(lakehouse, configs[name], requests, f"start{i}", None, endpoint=endpoint)
            total = time.perf_counter() - t0
            assert acc.reconciles() and acc.sent == n, acc.problems()
            totals[name] = total  # the second of each pair wins
            print(f"{name:12s} total {total:6.1f} s  first request at {acc.first_sent_s:5.1f} s  "
                  f"before the calling job {acc.plan_s:5.1f} s  calling job {acc.calling_s:5.1f} s  "
                  f"commits {acc.commits}  load {os.getloadavg()[0]:.1f}", flush=True)
            requests.unpersist()
    print(f"second pair: overlapped / materialized total = {totals['overlapped'] / totals['materialized']:.2f}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
