"""A small demo pipeline with its home on object storage (issue 28): an S3-compatible server process
(`moto_server`, from moto on PyPI) on this machine, reached by Spark's s3a connector over the S3
wire protocol (hadoop-aws from Maven Central, added to the session only because the home is s3a://).
Same config, simulator and key as the small demo world (tests/worlds.py `small_demo_run`): the curated
gen_ids equal the local run's, the tables are objects in the bucket and the driver-local files (lock, log, MLflow)
are not. The server and every process the CLI starts are killed, also on failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_cluster import _kill_session, _run_cli
from tests.worlds import DEMO_CONFIG, KEY_ENV, SECRET, small_demo_sets

# an S3 server process and two drivers with s3a's jars (hadoop-aws + the AWS SDK bundle, from Maven
# Central on a fresh machine: docs/cluster.md says what that costs)
# Opt-in (`TASKSEED_CLUSTER_TESTS=1`) until it fits the suite's 25 minutes: a whole pipeline run
# plus the small reference world costs minutes on 2 cores (docs/cluster.md has the measured runs)
pytestmark = [pytest.mark.heavy, pytest.mark.skipif(
    not os.environ.get("TASKSEED_CLUSTER_TESTS"), reason="opt-in: set TASKSEED_CLUSTER_TESTS=1 (issue 28)")]

BUCKET = "lake"
# moto accepts any credentials; these are in the CLI's environment only, where s3a's chain finds them
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """`moto_server` on a free port of 127.0.0.1 with the bucket `lake`; yields its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/{BUCKET}", method="PUT"), timeout=5).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.5)
        yield url
    finally:
        _kill_session(proc)


def _objects(url: str) -> list[str]:
    """Keys in the bucket (moto's JSON API for a bucket listing is not S3's; boto3 speaks S3)."""
    import boto3

    client = boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in S3_ENV.items() if k != "AWS_REGION"},
                          region_name=S3_ENV["AWS_REGION"])
    keys, token = [], None
    while True:
        page = client.list_objects_v2(Bucket=BUCKET, **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def test_the_demo_with_its_home_on_s3_curates_what_a_local_run_curates(s3_server, small_demo_run, tmp_path):
    cache = tmp_path / "cache"  # the driver-local folder of the URI home lands under it
    env = {**os.environ, **S3_ENV, KEY_ENV: SECRET, "XDG_CACHE_HOME": str(cache)}
    # the remembered Delta jar paths live in the cache: share the user's, so only hadoop-aws resolves
    real_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskseed"
    if real_cache.is_dir():
        (cache / "taskseed").mkdir(parents=True)
        for remembered in real_cache.glob("classpath-*.txt"):
            (cache / "taskseed" / remembered.name).write_bytes(remembered.read_bytes())
    s3a = ("spark.conf={spark.hadoop.fs.s3a.endpoint: '" + s3_server + "', spark.hadoop.fs.s3a.path.style.access: "
           "'true', spark.hadoop.fs.s3a.connection.ssl.enabled: 'false', spark.hadoop.fs.s3a.endpoint.region: us-east-1}")
    home = f"s3a://{BUCKET}/taskseed"
    sets = ["spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=1g", s3a,
            *small_demo_sets(small_demo_run["base_url"])]
    argv = ["--config", str(DEMO_CONFIG), "--home", home, *[a for s in sets for a in ("--set", s)]]
    result = _run_cli([*argv, "run"], env, timeout=1800)
    assert result.returncode == 0, result.stderr[-5000:]
    # a new process (a new JVM) finds the tables in the bucket and reads them
    query = _run_cli([*argv, "sql", "--json", "SELECT gen_id FROM curated ORDER BY gen_id"], env, timeout=600)
    assert query.returncode == 0, query.stderr[-3000:]

    local = small_demo_run["curated"]
    assert local, "the local run curated nothing: the comparison would prove nothing"
    assert [json.loads(line)["gen_id"] for line in query.stdout.splitlines()] == local

    keys = _objects(s3_server)
    assert any(k.startswith("taskseed/tables/curated/_delta_log/") for k in keys)
    assert {k.split("/")[2] for k in keys if k.startswith("taskseed/tables/")} >= {"seeds", "generated", "curated"}
    assert not [k for k in keys if "/locks/" in k or "/logs/" in k or "mlflow" in k]
    driver = next((cache / "taskseed" / "homes").glob("s3a-*"))  # lock, log and MLflow stay on this machine
    assert (driver / "locks").is_dir() and list((driver / "logs").glob("spark-*.log"))
    assert (driver / "mlflow.db").is_file()
