"""`taskseed run` end to end on the bundled demo sample against the simulator: every stage fills its
tables, MLflow holds one run with a child run per stage and Delta-pinned datasets, a rerun sends no
request and adds no row, and the API key appears nowhere."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-PIPELINE-SECRET-4242"


@pytest.fixture(scope="module")
def demo_index():
    from jobs.catalog import TaskIndex, build_task_index

    full = build_task_index()
    keep = {"arc_easy", "gsm8k", "boolq"}
    return TaskIndex(tasks={k: v for k, v in full.tasks.items() if k in keep},
                     group_members={}, tag_members={}, roots=full.roots)


def _table_counts(lakehouse):
    return {name: lakehouse.read(name).count() for name in lakehouse.list_tables()}


@pytest.fixture(scope="module")
def demo_run(spark, tmp_path_factory, demo_index):
    """The demo config's pipeline run once (key in the environment throughout): (config, lakehouse,
    {stage: StageRun})."""
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TASKSEED_TEST_KEY", SECRET)
        config = load_config(
            REPO / "demo" / "taskseed.demo.yaml",
            ["schema=pipeline_e2e", "spark.master=local[2]", "generate.seeds_per_task=4",
             "enrich.samples_per_item=2", "endpoint.api_key_env=TASKSEED_TEST_KEY",
             f"tasks.mirror={REPO / 'demo' / 'data' / 'hf'}"],
            home=tmp_path_factory.mktemp("pipeline") / "lakehouse",
        )
        lakehouse = Lakehouse(spark, config)
        try:
            yield config, lakehouse, run_pipeline(lakehouse, config, progress=lambda _: None, task_index=demo_index)
        finally:
            spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


def test_run_fills_every_stage_tracks_mlflow_and_reruns_as_a_no_op(demo_run, demo_index):
    import mlflow

    from jobs.pipeline import STAGES, run_pipeline

    config, lakehouse, results = demo_run
    assert set(results) == set(STAGES)
    counts = _table_counts(lakehouse)
    assert counts["seeds"] == 120 and counts["heldout"] == 70          # 40 train rows per task
    assert counts["generated"] + lakehouse.read("quarantine").where("stage = 'generate'").count() == 3 * 4 * 2
    assert counts["enriched"] + lakehouse.read("quarantine").where("stage = 'enrich'").count() == counts["generated"] * 2
    assert counts["llm_calls"] == 3 * 4 * 2 + counts["generated"] * 2

    # MLflow: one parent run, one child per stage, params without the key, datasets pinned to versions
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("taskseed")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    params = parents[0].data.params
    assert params["model"] == config.endpoint.model and params["endpoint_url"] == "simulator"
    assert any(k.startswith("prompt_version.") for k in params)
    generate_run = next(r for r in children if r.info.run_name == "generate")
    assert generate_run.data.params["output.generated.delta_version"] == str(lakehouse.version("generated"))
    assert generate_run.data.metrics["rows.generated"] == counts["generated"]
    assert {d.dataset.name for d in generate_run.inputs.dataset_inputs} >= {"seeds", "generated", "llm_calls"}

    # rerun: nothing sent, nothing added
    calls_version = lakehouse.version("llm_calls")
    run_pipeline(lakehouse, config, progress=lambda _: None, task_index=demo_index)
    assert _table_counts(lakehouse) == counts
    assert lakehouse.version("llm_calls") == calls_version

    # the key is in no table and no MLflow file
    for name in lakehouse.list_tables():
        for row in lakehouse.read(name).toJSON().collect():
            assert SECRET not in row
    for path in Path(config.home).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_every_stage_reads_and_writes_exactly_the_tables_it_declares(demo_run, demo_index):
    """The DAG and the MLflow lineage come from each stage's declared tables: on the demo run,
    what each stage read and wrote through the lakehouse is what it declares; so is the enrich
    run that also answers the seeds (a read that depends on the config)."""
    from jobs.pipeline import PIPELINE, run_pipeline

    config, lakehouse, results = demo_run
    for stage in PIPELINE:
        outcome = results[stage.name]
        assert outcome.skipped is None, stage.name
        assert (outcome.reads, outcome.writes) == (set(stage.reads(config)), set(stage.writes(config))), stage.name

    enrich = next(stage for stage in PIPELINE if stage.name == "enrich")
    seeded = config.model_copy(deep=True)
    seeded.enrich.enrich_seeds = True
    assert "seeds" in enrich.reads(seeded) and "seeds" not in enrich.reads(config)
    outcome = run_pipeline(lakehouse, seeded, ["enrich"], progress=lambda _: None, track=False,
                           task_index=demo_index)["enrich"]
    assert outcome.result.accounting.sent == 4 * 3 * 2  # the 12 seeds, M=2 each: the run did real work
    assert (outcome.reads, outcome.writes) == (set(enrich.reads(seeded)), set(enrich.writes(seeded)))
