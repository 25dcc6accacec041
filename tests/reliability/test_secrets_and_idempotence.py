"""Issue 14, secrets and idempotence, on one pipeline run (catalog → ingest → generate → enrich →
curate → publish, MLflow on) against a simulator that answers 401 unless the distinctive key is sent.

- the key (plain, base64, repr/JSON-escaped) is in no table (every column of every row), no log
  line (progress + Python logging), no file under the lakehouse home (Delta logs and data,
  the MLflow store and its artifacts), and — watched while the stages run — in no process's
  command line (`ps -eo args`: driver, JVM, Python workers) and no file under this Spark
  application's temp dirs. Breakage caught: the key put in a config param, a ledger error
  detail, an MLflow param/artifact, a Spark conf or worker env shown in `ps`, a plaintext
  broadcast file.
- what publish hands to users holds no key either: every export shard (JSONL, and Parquet read back
  as values, since its pages are compressed), each manifest, the data card (HTML, Markdown, plots),
  and every MLflow param, tag, metric name and artifact of every run (read through MlflowClient, so
  an artifact store outside the home would be scanned too). Breakage caught: the endpoint's config
  (with a resolved key) in the manifest or the data card's provenance, a key-bearing param.
- a second `run_pipeline` commits no Delta version to any table and curated keeps the same
  gen_ids with no duplicates. Breakage caught: a MERGE that rewrites unchanged rows, an append
  on rerun, a non-deterministic key.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.e2e, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-reliab-SECRET-7f3a9c51e2d4"
FORMS = {"plain": SECRET.encode(), "base64": base64.b64encode(SECRET.encode()),
         "base64_bearer": base64.b64encode(f"Bearer {SECRET}".encode()),
         "repr": repr(SECRET).encode(), "json": json.dumps(SECRET).encode(),
         "utf16": SECRET.encode("utf-16-le")}


def _hits(data: bytes) -> list[str]:
    return [name for name, form in FORMS.items() if form in data]


class Watcher(threading.Thread):
    """Polls `ps -eo args` and the files under `dirs` while the pipeline runs."""

    def __init__(self, dirs: list[Path]):
        super().__init__(daemon=True)
        self.dirs, self.stop, self.ps_hits, self.file_hits, self.polls = dirs, threading.Event(), set(), set(), 0

    def run(self):
        while not self.stop.is_set():
            self.polls += 1
            args = subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout
            for line in args.splitlines():
                if _hits(line):
                    self.ps_hits.add(line.decode(errors="replace")[:300])
            for root in self.dirs:
                for path in list(root.rglob("*")) if root.exists() else []:
                    try:
                        if path.is_file() and path.stat().st_size < 50_000_000 and _hits(path.read_bytes()):
                            self.file_hits.add(str(path))
                    except OSError:
                        pass  # a file deleted while we looked
            self.stop.wait(0.2)


@pytest.fixture(scope="module")
def keyed_run(spark, tmp_path_factory, demo_index):
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from simulator import SimSettings, SimulatorServer

    index = demo_index(["arc_easy"])
    root = tmp_path_factory.mktemp("reliab-secrets")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    logging.getLogger().addHandler(handler)
    server = SimulatorServer(SimSettings(require_api_key=SECRET, latency_ms=1, latency_jitter_ms=0,
                                         model="taskseed-sim")).start()
    spark_tmp = Path(spark.sparkContext._temp_dir).parent  # this application's spark-<uuid> folder
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TASKSEED_RELIAB_KEY", SECRET)
        config = load_config(
            REPO / "demo" / "taskseed.demo.yaml",
            ["schema=reliab_secrets", "spark.master=local[2]", "spark.shuffle_partitions=2",
             "tasks.select=[arc_easy]", f"tasks.mirror={REPO / 'demo' / 'data' / 'hf'}",
             "generate.seeds_per_task=3", "generate.items_per_seed=2", "enrich.samples_per_item=2",
             f"endpoint.base_url={server.base_url}", "endpoint.model=taskseed-sim",
             "endpoint.api_key_env=TASKSEED_RELIAB_KEY", "llm.micro_batch_rows=4"],
            home=root / "lakehouse")
        lakehouse = Lakehouse(spark, config)
        watcher = Watcher([Path(config.home), spark_tmp])
        watcher.start()
        try:
            first = run_pipeline(lakehouse, config, progress=lines.append, task_index=index)
            watcher.stop.set()
            watcher.join()
            versions = {name: lakehouse.version(name) for name in lakehouse.list_tables()}
            curated = sorted(r.gen_id for r in lakehouse.read("curated").select("gen_id").collect())
            requests_after_first = server.stats()["requests"]
            second = run_pipeline(lakehouse, config, progress=lines.append, task_index=index)
            yield {"config": config, "lakehouse": lakehouse, "first": first, "second": second, "lines": lines,
                   "watcher": watcher, "versions": versions, "curated": curated, "server": server,
                   "requests_after_first": requests_after_first}
        finally:
            watcher.stop.set()
            logging.getLogger().removeHandler(handler)
            server.stop()
            spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


def test_the_run_did_real_keyed_work(keyed_run):
    """Guards the scans below against passing vacuously: every stage ran, the simulator counted
    requests that carried the key (a missing key would be 401s and no curated rows)."""
    lakehouse = keyed_run["lakehouse"]
    assert lakehouse.read("generated").count() > 0 and lakehouse.read("enriched").count() > 0
    assert lakehouse.read("curated").count() > 0
    assert keyed_run["server"].stats()["outcomes"].get("401", 0) == 0
    assert keyed_run["watcher"].polls >= 2


def test_the_key_is_in_no_table_log_or_file(keyed_run):
    lakehouse, config = keyed_run["lakehouse"], keyed_run["config"]
    for name in lakehouse.list_tables():
        for row in lakehouse.read(name).toJSON().collect():
            assert not _hits(row.encode()), name
    assert not _hits("\n".join(keyed_run["lines"]).encode())
    files = [p for p in Path(config.home).rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("_delta_log" in p.parts for p in files)
    assert [str(p) for p in files if p.stat().st_size < 50_000_000 and _hits(p.read_bytes())] == []


def test_the_key_is_in_no_process_args_or_spark_temp_file_during_the_run(keyed_run):
    watcher = keyed_run["watcher"]
    assert watcher.ps_hits == set()
    assert watcher.file_hits == set()


def test_a_second_run_commits_nothing_and_sends_nothing(keyed_run):
    lakehouse = keyed_run["lakehouse"]
    assert {name: lakehouse.version(name) for name in lakehouse.list_tables()} == keyed_run["versions"]
    gen_ids = [r.gen_id for r in lakehouse.read("curated").select("gen_id").collect()]
    assert sorted(gen_ids) == keyed_run["curated"] and len(set(gen_ids)) == len(gen_ids)
    assert keyed_run["server"].stats()["requests"] == keyed_run["requests_after_first"]


def test_the_key_is_in_no_export_manifest_data_card_or_mlflow_record(keyed_run, tmp_path):
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    home = Path(keyed_run["config"].home)
    versions = sorted(home.glob("exports/*/v*"))
    assert "curated" in {p.parent.name for p in versions}
    for folder in versions:
        files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        assert {"manifest.json", "datacard.html", "datacard.md"} <= set(files), sorted(files)
        shards = [f for f in files if f.startswith(("jsonl/", "parquet/"))]
        assert any(f.endswith(".jsonl") for f in shards) and any(f.endswith(".parquet") for f in shards)
        for name, path in files.items():
            assert not _hits(path.read_bytes()), f"{folder}/{name}"
            if name.endswith(".parquet"):
                assert not _hits(json.dumps(pq.read_table(path).to_pylist(), default=str).encode()), name

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]
    assert len(runs) >= 2 * 7  # two pipeline runs, each a parent and six stages
    downloaded = 0
    for run in runs:
        record = json.dumps({"params": run.data.params, "tags": run.data.tags,
                             "metrics": sorted(run.data.metrics)}).encode()
        assert not _hits(record), run.info.run_id
        pending = [None]
        while pending:
            for info in client.list_artifacts(run.info.run_id, pending.pop()):
                if info.is_dir:
                    pending.append(info.path)
                    continue
                local = Path(client.download_artifacts(run.info.run_id, info.path, str(tmp_path)))
                downloaded += 1
                assert not _hits(local.read_bytes()), (run.info.run_id, info.path)
    assert downloaded >= 4  # publish's manifests and data cards at least
