"""`taskseed run` end to end on the bundled demo sample against the simulator: every stage fills its
tables, publish leaves export shards with a manifest and a data card, MLflow holds one run with a
child run per stage and Delta-pinned datasets from which a client alone finds which curated version
a run produced from which seeds, model and prompts; a rerun sends no request, commits no Delta
version and logs a new MLflow run; `status` reports every stage; the API key appears nowhere.

The run is the session's `keyed_demo_run` world (tests/worlds.py), which
tests/reliability/test_secrets_and_idempotence.py reads too."""

from pathlib import Path

import pytest

from tests.worlds import KEY_ENV, KEYED_M, KEYED_SEEDS, KEYED_TASKS, SECRET, copy_home, table_counts

pytestmark = [pytest.mark.spark, pytest.mark.e2e]


def test_run_fills_every_stage_tracks_mlflow_and_reruns_as_a_no_op(keyed_demo_run):
    from jobs.pipeline import STAGES
    from jobs.tracking import safe_endpoint_url

    world = keyed_demo_run
    config, lakehouse, results = world["config"], world["lakehouse"], world["first"]
    assert set(results) == set(STAGES)
    counts = world["counts"]  # after the first run
    n_seeds, k, m = len(KEYED_TASKS) * KEYED_SEEDS, config.generate.items_per_seed, KEYED_M
    assert (len(KEYED_TASKS), k) == (3, 2)
    assert counts["seeds"] == 120 and counts["heldout"] == 70          # 40 train rows per task
    assert counts["generated"] + lakehouse.read("quarantine").where("stage = 'generate'").count() == n_seeds * k
    assert counts["enriched"] + lakehouse.read("quarantine").where("stage = 'enrich'").count() == counts["generated"] * m
    assert counts["llm_calls"] == n_seeds * k + counts["generated"] * m

    # MLflow: one parent run, one child per stage, params without the key, datasets pinned to versions
    client = world["mlflow"]
    experiment = client.get_experiment_by_name("taskseed")
    runs = client.search_runs([experiment.experiment_id])
    parents = world["parent_runs"]  # after the first run
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    params = parents[0].data.params
    # the endpoint's URL without credentials (the built-in simulator's label: tests/unit/test_tracking.py)
    assert params["model"] == config.endpoint.model and params["endpoint_url"] == safe_endpoint_url(config.endpoint.base_url)
    assert any(k.startswith("prompt_version.") for k in params)
    generate_run = next(r for r in children if r.info.run_name == "generate")
    assert generate_run.data.params["output.generated.delta_version"] == str(lakehouse.version("generated"))
    assert generate_run.data.metrics["rows_out.generated"] == counts["generated"]
    assert generate_run.data.metrics["rows_in.seeds"] == counts["seeds"]
    assert {d.dataset.name for d in generate_run.inputs.dataset_inputs} >= {"seeds", "generated", "llm_calls"}
    assert {r.data.tags["taskseed.outcome"] for r in children} == {"done"}
    assert parents[0].data.tags["taskseed.outcome"] == "done"

    # rerun (the world's second run): nothing sent, no table gets a new Delta version, and MLflow
    # gets a second run
    versions = world["versions"]
    assert world["second"]["generate"].result.accounting.sent == world["second"]["enrich"].result.accounting.sent == 0
    assert table_counts(lakehouse) == counts
    assert {name: lakehouse.version(name) for name in lakehouse.list_tables()} == versions
    parents_after = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents_after) == 2

    # the key is in no table and no MLflow file
    for name in lakehouse.list_tables():
        for row in lakehouse.read(name).toJSON().collect():
            assert SECRET not in row
    for path in Path(config.home).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_every_stage_reads_and_writes_exactly_the_tables_it_declares(keyed_demo_run, spark, tmp_path, monkeypatch,
                                                                     start_sim):
    """The DAG and the MLflow lineage come from each stage's declared tables: on the demo run,
    what each stage read and wrote through the lakehouse is what it declares; so is the enrich
    run that also answers the seeds (a read that depends on the config), on a copy of the world
    against a simulator of its own (the world's counts its requests)."""
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import PIPELINE, run_pipeline

    config, results = keyed_demo_run["config"], keyed_demo_run["first"]
    # a declared read of a table this lakehouse never had (llm_batch_requests: batch mode was never
    # used) cannot happen; every other declared table is read and written
    existing = set(keyed_demo_run["lakehouse"].list_tables())
    for stage in PIPELINE:
        outcome = results[stage.name]
        assert outcome.skipped is None, stage.name
        assert (outcome.reads, outcome.writes) == (set(stage.reads(config)) & existing,
                                                   set(stage.writes(config))), stage.name
    assert "llm_batch_requests" not in existing

    enrich = next(stage for stage in PIPELINE if stage.name == "enrich")
    seeded = config.model_copy(deep=True)
    seeded.enrich.enrich_seeds = True
    seeded.home = str(copy_home(config.home, tmp_path / "lakehouse"))
    seeded.schema_name = "pipeline_enrich_seeds"
    seeded.endpoint.base_url = start_sim(require_api_key=SECRET, latency_ms=1, latency_jitter_ms=0,
                                         model="taskseed-sim").base_url
    assert "seeds" in enrich.reads(seeded) and "seeds" not in enrich.reads(config)
    monkeypatch.setenv(KEY_ENV, SECRET)
    lakehouse = Lakehouse(spark, seeded)
    try:
        outcome = run_pipeline(lakehouse, seeded, ["enrich"], progress=lambda _: None, track=False)["enrich"]
    finally:
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
    # the 12 seeds, M=2 each: the run did real work
    assert outcome.result.accounting.sent == len(KEYED_TASKS) * KEYED_SEEDS * KEYED_M == 4 * 3 * 2
    assert (outcome.reads, outcome.writes) == (set(enrich.reads(seeded)) & existing, set(enrich.writes(seeded)))


def _lineage(tracking_uri: str, run_id: str) -> dict:
    """The "Lineage in MLflow" snippet of docs/publishing.md: from a pipeline run id, with the MLflow client only."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    curate = client.search_runs([run.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{run_id}' and attributes.run_name = 'curate'")[0]
    return {
        "curated_version": int(curate.data.params["output.curated.delta_version"]),
        "seeds_version": int(curate.data.params["input.seeds.delta_version"]),
        "model": run.data.params["model"],
        "prompt_versions": {k.split(".", 1)[1]: v for k, v in run.data.params.items() if k.startswith("prompt_version.")},
        "curated_dataset": [d.dataset for d in curate.inputs.dataset_inputs
                            if d.dataset.name == "curated" and any(t.value == "output" for t in d.tags)],
    }


def test_mlflow_alone_says_which_curated_version_a_run_produced_from_which_seeds_model_and_prompts(keyed_demo_run):
    import json

    import mlflow

    from udfs.prompts import prompt_versions

    config, lakehouse = keyed_demo_run["config"], keyed_demo_run["lakehouse"]
    uri = f"sqlite:///{Path(config.home).resolve() / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("taskseed")
    first = client.search_runs([experiment.experiment_id], "attributes.run_name = 'taskseed-run'",
                               order_by=["attributes.start_time ASC"])[0]
    found = _lineage(uri, first.info.run_id)
    assert found["curated_version"] == lakehouse.version("curated")
    assert found["seeds_version"] == lakehouse.version("seeds")
    assert found["model"] == config.endpoint.model
    assert found["prompt_versions"] == prompt_versions()
    # the output dataset is pinned to that version (the source names the Delta version)
    assert [json.loads(d.source).get("delta_table_version") for d in found["curated_dataset"]] == \
        [found["curated_version"]]

    # the publish child run holds the manifest and the data card of that version
    publish = client.search_runs([experiment.experiment_id],
                                 f"tags.mlflow.parentRunId = '{first.info.run_id}' and attributes.run_name = 'publish'")[0]
    local = client.download_artifacts(publish.info.run_id, "curated/manifest.json", str(Path(config.home) / "dl"))
    manifest = json.loads(Path(local).read_text())
    assert manifest["delta_version"] == found["curated_version"]
    assert manifest["input_versions"]["seeds"] == found["seeds_version"]
    names = {a.path for a in client.list_artifacts(publish.info.run_id, "curated")}
    assert names == {"curated/manifest.json", "curated/datacard.html", "curated/datacard.md"}


def test_publish_leaves_shards_a_manifest_and_a_data_card_per_curated_dataset(keyed_demo_run):
    import json

    import pyarrow.parquet as pq

    from jobs.tracking import safe_endpoint_url

    config, lakehouse = keyed_demo_run["config"], keyed_demo_run["lakehouse"]
    for dataset in ("curated", "curated_commercial"):
        version = lakehouse.version(dataset)
        folder = Path(config.home).resolve() / "exports" / dataset / f"v{version}"
        manifest = json.loads((folder / "manifest.json").read_text())
        rows = lakehouse.read(dataset, version=version).count()
        assert manifest["rows"] == rows and manifest["delta_version"] == version
        parquet = [f for f in manifest["files"] if f["format"] == "parquet"]
        assert sum(pq.read_metadata(folder / f["path"]).num_rows for f in parquet) == rows
        assert sum(manifest["counts"]["task_family"].values()) == rows
        assert set(manifest["input_versions"]) >= {"seeds", "generated", "enriched", "llm_calls", "filter_decisions",
                                                   "heldout", "heldout_keys", "heldout_shingles"}
        # the versions publish read (the world is read-only: they are the tables' versions now)
        assert manifest["input_versions"] == {t: lakehouse.version(t) for t in manifest["input_versions"]}
        assert manifest["simulated"] is True and manifest["endpoint"] == safe_endpoint_url(config.endpoint.base_url)
        card = (folder / "datacard.html").read_text()
        assert "Simulator output" in card and f"version {version}" in card
        assert (folder / "datacard.md").is_file()
    published = {r["dataset"]: r for r in lakehouse.read("publications").collect()}
    assert set(published) == {"curated", "curated_commercial"}


def test_status_reports_every_stage_with_its_last_run(keyed_demo_run):
    from jobs.pipeline import STAGES
    from jobs.status import pipeline_status

    config, lakehouse = keyed_demo_run["config"], keyed_demo_run["lakehouse"]
    statuses = {s.stage: s for s in pipeline_status(lakehouse, config)}
    assert list(statuses) == list(STAGES)
    for s in statuses.values():
        assert s.last_run is not None and s.last_run["status"] == "FINISHED", s.stage
        for t in s.tables:
            assert t["delta_version"] == lakehouse.version(t["table"]), t
    assert statuses["generate"].requests == lakehouse.read("llm_calls").where("stage = 'generate'").count()
    assert statuses["enrich"].quarantined == lakehouse.read("quarantine").where("stage = 'enrich'").count()
    assert statuses["catalog"].requests is None
