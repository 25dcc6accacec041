"""Session-scoped worlds: what is expensive to build is built once per `pytest` session and read by
every test that needs it.

- `task_index`: lm-eval's whole task index (a scan of ~13k task YAMLs, ~10 s), built once.
- `demo_index(tasks)`: that index narrowed to `tasks`, no groups or tags, so a catalog stage lists
  only these.
- `keyed_demo_run`: `taskseed run` on the demo sample with MLflow on, against a simulator that
  demands a distinctive API key, watched for the key while it runs, then run again: the world of
  tests/e2e/test_pipeline_run.py and tests/reliability/test_secrets_and_idempotence.py, and the
  uninterrupted reference of tests/reliability/test_crash_resume.py.
- `small_demo_run`: a small run (2 tasks, 12 items) of the demo config in this session's Spark: the
  local reference of tests/e2e/test_cluster.py and tests/e2e/test_object_storage.py.

A world is read-only for its readers; a test that writes gets its own copy (`copy_home`), so tests
stay independent of their order. Tests that read a pipeline world are marked `heavy` (conftest).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "demo" / "taskseed.demo.yaml"
DEMO_MIRROR = REPO / "demo" / "data" / "hf"
# the session's Spark settings: two cores, two shuffle partitions (small tables)
LOCAL_SPARK = ("spark.master=local[2]", "spark.shuffle_partitions=2")


@pytest.fixture(scope="session")
def task_index():
    """lm-eval's whole task index (jobs.catalog.TaskIndex), built once per session."""
    from jobs.catalog import build_task_index

    return build_task_index()


@pytest.fixture(scope="session")
def demo_index(task_index):
    """`demo_index(tasks)`: the task index restricted to `tasks`, no groups or tags."""
    from jobs.catalog import TaskIndex

    def narrow(tasks) -> TaskIndex:
        return TaskIndex(tasks={t: task_index.tasks[t] for t in tasks}, group_members={}, tag_members={},
                         roots=task_index.roots)

    return narrow


# The demo config's calibration sample and the simulator's known answers (issue 26) off: the worlds and
# the tests that load the demo config count requests and votes as they did before (a test that wants
# calibration turns it on for itself, tests/e2e/test_calibration_cost_budget.py)
DEMO_WITHOUT_CALIBRATION = ("enrich.calibration_per_family=0", "simulator.known_answers_file=null")


# what catalog + ingest write, and the held-out index the first curate builds from `heldout`
# (jobs/filters/contamination.py; its commits name the heldout version, which the copy keeps): a copy
# of these from the keyed demo run is a lakehouse ready to generate whose curate finds its index built
SEEDED_TABLES = ("task_catalog", "license_policy", "seeds", "heldout", "heldout_keys", "heldout_shingles")
# and the MinHash signatures near_dup keeps of every seed and held-out item (~26k for the demo's
# three tasks, the bulk of a first curate's signing); the generated items' are left to the run
SIGNED_KINDS = ("seed", "heldout")


def copy_seeded(world: dict, dest: Path) -> Path:
    """Copy what the keyed demo run's catalog + ingest (and its first curate's held-out index and
    seed/held-out signatures) wrote to `dest` (a new home) and return `dest`: the start of a run
    that generates from the same seeds (the demo config's three tasks, every training record a seed)
    without cataloguing, ingesting, indexing or signing them again. Tables: `SEEDED_TABLES` and
    `minhash_signatures` (the rows of `SIGNED_KINDS`)."""
    from pyspark.sql import functions as F

    lakehouse = world["lakehouse"]
    for table in SEEDED_TABLES:
        shutil.copytree(lakehouse.table_path(table), dest / "tables" / table)
    (lakehouse.read("minhash_signatures").where(F.col("doc_kind").isin(*SIGNED_KINDS))
     .write.format("delta").save(str(dest / "tables" / "minhash_signatures")))
    return dest


def copy_home(home: Path, dest: Path) -> Path:
    """Copy a world's tables to `dest` (a new home) and return `dest`: a `Lakehouse` opened on it
    under a schema of its own registers the copies, and the world is never written."""
    shutil.copytree(Path(home) / "tables", dest / "tables")
    return dest


# ---- the keyed demo run ---------------------------------------------------------------------------

KEY_ENV = "TASKSEED_WORLD_KEY"
SECRET = "sk-reliab-SECRET-7f3a9c51e2d4"
# the key as it could land in a table, file, log line or process argument
SECRET_FORMS = {"plain": SECRET.encode(), "base64": base64.b64encode(SECRET.encode()),
                "base64_bearer": base64.b64encode(f"Bearer {SECRET}".encode()),
                "repr": repr(SECRET).encode(), "json": json.dumps(SECRET).encode(),
                "utf16": SECRET.encode("utf-16-le")}
KEYED_TASKS = ("arc_easy", "gsm8k", "boolq")  # the demo config's three tasks
KEYED_SEEDS, KEYED_M = 4, 2  # seeds per task, enrichment samples per item (K = 2 from the demo config)
# the simulator's behaviour (what it answers to each request): tests/reliability/test_crash_resume.py
# runs the same pipeline against a simulator with these settings and compares its tables with this run's
KEYED_SIM = dict(seed=4, wrong_answer_rate=0.1, duplicate_rate=0.1, model="taskseed-sim")


def secret_hits(data: bytes) -> list[str]:
    """The names of the forms of the world's key found in `data`."""
    return [name for name, form in SECRET_FORMS.items() if form in data]


class KeyWatcher(threading.Thread):
    """Polls `ps -eo args` and the files under `dirs` for the key while a pipeline runs."""

    def __init__(self, dirs: list[Path]):
        super().__init__(daemon=True)
        self.dirs, self.stop, self.ps_hits, self.file_hits, self.polls = dirs, threading.Event(), set(), set(), 0

    def run(self):
        while not self.stop.is_set():
            self.polls += 1
            args = subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout
            for line in args.splitlines():
                if secret_hits(line):
                    self.ps_hits.add(line.decode(errors="replace")[:300])
            for root in self.dirs:
                for path in list(root.rglob("*")) if root.exists() else []:
                    try:
                        if path.is_file() and path.stat().st_size < 50_000_000 and secret_hits(path.read_bytes()):
                            self.file_hits.add(str(path))
                    except OSError:
                        pass  # a file deleted while we looked
            self.stop.wait(0.2)


def table_counts(lakehouse) -> dict[str, int]:
    return {name: lakehouse.read(name).count() for name in lakehouse.list_tables()}


@pytest.fixture(scope="session")
def keyed_demo_run(spark, tmp_path_factory, demo_index):
    """catalog → ingest → generate → enrich → curate → publish with MLflow on, on the demo sample
    (KEYED_TASKS, KEYED_SEEDS seeds per task, K = 2, M = KEYED_M, 12 results per spool file:
    several commits while the watcher looks), against a simulator that answers 401 unless SECRET is sent; the key is in the
    environment (KEY_ENV) for the whole world. A `KeyWatcher` polls `ps` and the files under the
    home and this Spark application's temp dirs during the first run; every log record and progress
    line of both runs is kept. Then the same run again.

    Yields a dict: config, lakehouse, server (its counters span both runs), first / second
    ({stage: StageRun}), lines, watcher, and what the first run left: versions ({table: Delta
    version}), counts ({table: rows}), curated (sorted gen_ids), requests_after_first, parent_runs
    (MLflow pipeline runs after the first), mlflow (a client of the home's store). Read-only: a test that writes uses `copy_home`."""
    import mlflow

    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from simulator import SimSettings, SimulatorServer

    index = demo_index(KEYED_TASKS)
    root = tmp_path_factory.mktemp("keyed-demo")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    logging.getLogger().addHandler(handler)
    server = SimulatorServer(SimSettings(**KEYED_SIM, require_api_key=SECRET, latency_ms=1,
                                         latency_jitter_ms=0)).start()
    spark_tmp = Path(spark.sparkContext._temp_dir).parent  # this application's spark-<uuid> folder
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(KEY_ENV, SECRET)
        config = load_config(
            DEMO_CONFIG,
            ["schema=keyed_demo", *LOCAL_SPARK, f"tasks.select=[{','.join(KEYED_TASKS)}]",
             f"tasks.mirror={DEMO_MIRROR}", f"generate.seeds_per_task={KEYED_SEEDS}",
             f"enrich.samples_per_item={KEYED_M}", f"endpoint.base_url={server.base_url}",
             "endpoint.model=taskseed-sim", f"endpoint.api_key_env={KEY_ENV}", "llm.commit_rows=12",
             *DEMO_WITHOUT_CALIBRATION],
            home=root / "lakehouse")
        lakehouse = Lakehouse(spark, config)
        watcher = KeyWatcher([Path(config.home), spark_tmp])
        watcher.start()
        try:
            first = run_pipeline(lakehouse, config, progress=lines.append, task_index=index)
            watcher.stop.set()
            watcher.join()
            client = mlflow.MlflowClient(f"sqlite:///{Path(config.home).resolve() / 'mlflow.db'}")
            experiment = client.get_experiment_by_name("taskseed")
            world = {
                "config": config, "lakehouse": lakehouse, "server": server, "first": first, "lines": lines,
                "watcher": watcher, "versions": {name: lakehouse.version(name) for name in lakehouse.list_tables()},
                "counts": table_counts(lakehouse),
                "curated": sorted(r.gen_id for r in lakehouse.read("curated").select("gen_id").collect()),
                "requests_after_first": server.stats()["requests"],
                "mlflow": client,
                "parent_runs": [r for r in client.search_runs([experiment.experiment_id])
                                if "mlflow.parentRunId" not in r.data.tags],
            }
            world["second"] = run_pipeline(lakehouse, config, progress=lines.append, task_index=index)
            yield world
        finally:
            watcher.stop.set()
            logging.getLogger().removeHandler(handler)
            server.stop()
            spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


# ---- the small demo run: the local reference of the cluster tests ----------------------------------

SMALL_TASKS = ("arc_easy", "boolq")  # two of the demo config's tasks: multiple choice and yes/no
SMALL_SEEDS, SMALL_K, SMALL_M = 3, 2, 2  # seeds per task, items per seed, enrichment samples per item


def small_demo_sets(base_url: str) -> list[str]:
    """The `--set` overrides (on DEMO_CONFIG) of the small demo run against the simulator at
    `base_url`: SMALL_TASKS from the demo mirror, SMALL_SEEDS seeds per task, K = SMALL_K,
    M = SMALL_M, no calibration sample, the key from KEY_ENV. Spark settings are the caller's."""
    return [f"tasks.select=[{','.join(SMALL_TASKS)}]", f"tasks.mirror={DEMO_MIRROR}",
            f"generate.seeds_per_task={SMALL_SEEDS}", f"generate.items_per_seed={SMALL_K}",
            f"enrich.samples_per_item={SMALL_M}", *DEMO_WITHOUT_CALIBRATION, f"endpoint.base_url={base_url}",
            "endpoint.model=taskseed-sim", f"endpoint.api_key_env={KEY_ENV}"]


@pytest.fixture(scope="session")
def small_demo_run(spark, tmp_path_factory, demo_index):
    """`run_pipeline` (no MLflow) of the small demo config (`small_demo_sets`: 2 tasks x 3 seeds x
    K = 2, M = 2; 12 items) in this session's local Spark, against a simulator with KEYED_SIM's
    behaviour that demands SECRET: the local reference that tests/e2e/test_cluster.py and
    test_object_storage.py compare a cluster's and an object-storage home's curated gen_ids with.

    Yields {"curated": sorted gen_ids, "base_url": the simulator's URL (it serves until the session
    ends, for the runs that are compared with this one)}. Read-only."""
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from simulator import SimSettings, SimulatorServer

    server = SimulatorServer(SimSettings(**KEYED_SIM, require_api_key=SECRET, latency_ms=1,
                                         latency_jitter_ms=0)).start()
    lakehouse = None
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv(KEY_ENV, SECRET)
            config = load_config(DEMO_CONFIG, ["schema=small_demo", *LOCAL_SPARK, *small_demo_sets(server.base_url)],
                                 home=tmp_path_factory.mktemp("small-demo") / "lakehouse")
            lakehouse = Lakehouse(spark, config)
            run_pipeline(lakehouse, config, track=False, task_index=demo_index(SMALL_TASKS))
        curated = sorted(r.gen_id for r in lakehouse.read("curated").select("gen_id").collect())
        yield {"curated": curated, "base_url": server.base_url}
    finally:
        server.stop()
        if lakehouse is not None:
            spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
