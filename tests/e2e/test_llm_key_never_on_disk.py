"""The endpoint's API key is never written to disk, even by a run that is SIGKILLed mid-stage.

A separate driver process (its own JVM and Python workers) runs an LLM stage against the
simulator, which demands a distinctive key; once the key has demonstrably reached the workers
(the server answered requests, none with 401), the whole process session is SIGKILLed. Then every
file written since the test started under /tmp (Spark's local dirs, PySpark's broadcast files,
the workers' temp files) and every file of the lakehouse home (the Delta ledger, and the spool the
calling tasks write results to before the ledger commit: <home>/spool) is scanned for the key — plain, its
base64 forms, and the pickled SecretBox the broadcast carries. Without `spark.io.encryption.enabled`
the broadcast's pickle is left in /tmp/spark-*/pyspark-*/ and this test fails.
"""

from __future__ import annotations

import base64
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.cli_run import session_pids
from udfs.llm_udf import SecretBox

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent("""
    import sys, time
    from pyspark.sql import functions as F
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.llm_stage import run_llm_stage
    from jobs.runtime import get_spark
    from tests.fixtures_sim import make_request_rows
    from udfs.llm_client import EndpointSettings

    base_url, home = sys.argv[1], sys.argv[2]
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                    "llm.commit_rows=8"], home=home)
    lakehouse = Lakehouse(get_spark(config), config)
    requests = lakehouse.spark.createDataFrame(make_request_rows(200))
    endpoint = EndpointSettings(base_url=base_url, model="taskseed-sim", api_key_env="TASKSEED_KEY_UNDER_TEST",
                                require_key=True, max_concurrency=4, timeout_s=10.0)
    print("driver: calling", flush=True)
    run_llm_stage(lakehouse, config, requests, "enrich", None, endpoint=endpoint)
    print("driver: finished (should have been killed)", flush=True)
""")


def key_forms(key: str) -> list[bytes]:
    """The key as it could land in a file: raw, UTF-16, base64 at each byte alignment, and the
    pickle of the broadcast's value (what PySpark writes for an unencrypted broadcast)."""
    raw = key.encode()
    forms = [raw, key.encode("utf-16-le")]
    for shift in range(3):
        forms.append(base64.b64encode(b"x" * shift + raw)[4 if shift else 0:][:-4].rstrip(b"="))
    forms.append(pickle.dumps(SecretBox(key), protocol=pickle.HIGHEST_PROTOCOL))
    forms.append(base64.b64encode(pickle.dumps(SecretBox(key), protocol=pickle.HIGHEST_PROTOCOL)))
    return [f for f in forms if len(f) >= 12]


def files_to_scan(roots: list[Path], since: float) -> list[Path]:
    out = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root, onerror=lambda e: None):
            for name in names:
                path = Path(dirpath, name)
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                if root == Path("/tmp") and max(st.st_mtime, st.st_ctime) < since:
                    continue
                out.append(path)
    return out


def test_sigkilled_stage_leaves_the_key_nowhere_on_disk(tmp_path, start_sim):
    key = f"sk-taskseed-{uuid.uuid4().hex}"
    server = start_sim(latency_ms=150, latency_jitter_ms=0, require_api_key=key)
    home = tmp_path / "lakehouse"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    started = time.time() - 1
    env = {**os.environ, "TASKSEED_KEY_UNDER_TEST": key, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), server.base_url, str(home)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while server.stats()["requests"] < 12:  # the key is in the workers, some batches committed
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the stage never started sending"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
        proc.wait(timeout=60)
    stats = server.stats()
    assert "401" not in stats["outcomes"]  # the workers held the right key
    # PySpark's daemon runs in its own process group and exits when its JVM is gone
    deadline = time.monotonic() + 30
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = session_pids(proc.pid)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes of the killed run left behind: {leftovers}"

    forms = key_forms(key)
    scanned, hits = 0, []
    for path in files_to_scan([Path("/tmp"), home, tmp_path], started):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        scanned += 1
        if any(form in data for form in forms):
            hits.append(str(path))
    assert scanned > 20  # the run's files were there to scan (Delta log, Spark temp files)
    assert not hits, f"the API key was found on disk in: {hits}"
