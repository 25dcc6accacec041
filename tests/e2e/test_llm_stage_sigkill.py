"""A SIGKILLed LLM stage loses at most one bounded unit of paid calls, and its rerun completes the
ledger exactly.

A separate driver process (its own JVM and Python workers) runs the call step against the
simulator (which counts every request per request_id); once the ledger has at least two commits
of the run, the whole process session is SIGKILLed. Nothing may be left running. The same driver
is run again to the end: it commits the spool the killed run left first, then sends only what has
no ledger row. Answered requests sent twice (counted at the simulator) must be at most the
requests in flight plus one commit unit (`llm.commit_rows`) per calling task (the unit stated in
jobs/llm_stage/call.py), and the final ledger must be what an uninterrupted run leaves: every
request_id once, each with one terminal row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.test_llm_key_never_on_disk import session_pids
from tests.fixtures_sim import make_request_rows

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
N, WINDOW, COMMIT_ROWS = 400, 4, 10

DRIVER = textwrap.dedent(f"""
    import json, sys
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.llm_stage import run_llm_stage
    from jobs.runtime import get_spark
    from tests.fixtures_sim import make_request_rows
    from udfs.llm_client import EndpointSettings

    base_url, home = sys.argv[1], sys.argv[2]
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                    "llm.commit_rows={COMMIT_ROWS}", "llm.commit_seconds=0.5"], home=home)
    lakehouse = Lakehouse(get_spark(config), config)
    requests = lakehouse.spark.createDataFrame(make_request_rows({N}))
    endpoint = EndpointSettings(base_url=base_url, model="taskseed-sim", require_key=False,
                                max_concurrency={WINDOW}, timeout_s=30.0)
    acc = run_llm_stage(lakehouse, config, requests, "enrich", None, endpoint=endpoint)
    print("RESULT " + json.dumps(dict(problems=acc.problems(), recovered=acc.recovered, sent=acc.sent,
                                      already_done=acc.already_done, call_tasks=acc.call_tasks)), flush=True)
""")


def _ledger_commits(home: Path) -> int:
    return len(list((home / "tables" / "llm_calls" / "_delta_log").glob("*.json")))


def _wait_gone(sid: int) -> list[int]:
    deadline = time.monotonic() + 30
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = session_pids(sid)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    return leftovers


def test_sigkilled_stage_resends_at_most_one_unit_and_the_rerun_completes_the_ledger(spark, tmp_path, start_sim):
    server = start_sim(seed=3, latency_ms=200, latency_jitter_ms=50)
    home = tmp_path / "lakehouse"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(script), server.base_url, str(home)]

    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while _ledger_commits(home) < 3:  # the table's creation + two commits of the run
            assert proc.poll() is None, "the run ended before it was killed: " + proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the stage never committed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
        proc.wait(timeout=60)
    assert not _wait_gone(proc.pid), "processes of the killed run were left behind"
    first = dict(server.stats()["by_request_id"])
    assert 0 < len(first) < N

    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                           start_new_session=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    result = json.loads(next(line for line in rerun.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["problems"] == [] and result["call_tasks"] == 1
    assert result["already_done"] + result["sent"] == N

    counts = server.stats()["by_request_id"]
    resent = {rid for rid, n in counts.items() if n > 1}
    assert resent <= set(first)
    assert len(resent) <= WINDOW + COMMIT_ROWS * result["call_tasks"], (len(resent), result)
    ledger = spark.read.format("delta").load(str(home / "tables" / "llm_calls"))
    rows = ledger.select("request_id", "status").collect()
    assert sorted(r.request_id for r in rows) == sorted(r["request_id"] for r in make_request_rows(N))
    assert {r.status for r in rows} == {"ok"}
    assert not list((home / "spool" / "enrich").glob("*/*"))  # nothing left to recover
