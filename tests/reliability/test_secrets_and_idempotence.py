"""Issue 14, secrets and idempotence, on one pipeline run (catalog → ingest → generate → enrich →
curate → publish, MLflow on) against a simulator that answers 401 unless the distinctive key is sent:
the session's `keyed_demo_run` world (tests/worlds.py), which tests/e2e/test_pipeline_run.py reads too.

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

import json
from pathlib import Path

import pytest

from tests.worlds import secret_hits as _hits

pytestmark = [pytest.mark.spark, pytest.mark.e2e, pytest.mark.heavy]


def test_the_run_did_real_keyed_work(keyed_demo_run):
    """Guards the scans below against passing vacuously: every stage ran, the simulator counted
    requests that carried the key (a missing key would be 401s and no curated rows)."""
    lakehouse = keyed_demo_run["lakehouse"]
    assert lakehouse.read("generated").count() > 0 and lakehouse.read("enriched").count() > 0
    assert lakehouse.read("curated").count() > 0
    assert keyed_demo_run["server"].stats()["outcomes"].get("401", 0) == 0
    assert keyed_demo_run["watcher"].polls >= 2


def test_the_key_is_in_no_table_log_or_file(keyed_demo_run):
    lakehouse, config = keyed_demo_run["lakehouse"], keyed_demo_run["config"]
    for name in lakehouse.list_tables():
        for row in lakehouse.read(name).toJSON().collect():
            assert not _hits(row.encode()), name
    assert not _hits("\n".join(keyed_demo_run["lines"]).encode())
    files = [p for p in Path(config.home).rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("_delta_log" in p.parts for p in files)
    assert [str(p) for p in files if p.stat().st_size < 50_000_000 and _hits(p.read_bytes())] == []


def test_the_key_is_in_no_process_args_or_spark_temp_file_during_the_run(keyed_demo_run):
    watcher = keyed_demo_run["watcher"]
    assert watcher.ps_hits == set()
    assert watcher.file_hits == set()


def test_a_second_run_commits_nothing_and_sends_nothing(keyed_demo_run):
    lakehouse = keyed_demo_run["lakehouse"]
    assert {name: lakehouse.version(name) for name in lakehouse.list_tables()} == keyed_demo_run["versions"]
    gen_ids = [r.gen_id for r in lakehouse.read("curated").select("gen_id").collect()]
    assert sorted(gen_ids) == keyed_demo_run["curated"] and len(set(gen_ids)) == len(gen_ids)
    assert keyed_demo_run["server"].stats()["requests"] == keyed_demo_run["requests_after_first"]


def test_the_key_is_in_no_export_manifest_data_card_or_mlflow_record(keyed_demo_run, tmp_path):
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    home = Path(keyed_demo_run["config"].home)
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
