"""The catalog job on real Delta tables: counts, idempotent reruns, SQL from a fresh process."""

import json
import os
import subprocess
import sys

import pytest

from jobs.catalog import CHANGE_COLUMNS, run_catalog
from schemas.tables import TASK_CATALOG

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def index(task_index):
    return task_index


@pytest.mark.heavy  # the new process starts a JVM of its own
def test_catalog_is_idempotent_and_queryable_from_a_new_process(lakehouse, index, tmp_path):
    config = lakehouse.config
    run_catalog(lakehouse, config, progress=lambda _: None, index=index)
    first = lakehouse.read("task_catalog")
    total = first.count()
    eligible = first.where("eligible").count()
    assert total == len(index.tasks)
    assert eligible >= 600
    assert first.where("eligible").select("family").distinct().count() >= 80
    assert lakehouse.read("license_policy").count() == 136

    version = lakehouse.version("task_catalog")
    run_catalog(lakehouse, config, progress=lambda _: None, index=index)
    assert lakehouse.version("task_catalog") == version  # nothing changed, nothing committed
    second = lakehouse.read("task_catalog")
    assert second.count() == total
    assert second.select("task").distinct().count() == total
    # a changed row (another lm-eval version, a new override) is rewritten, nothing else
    from pyspark.sql import functions as F

    changed = lakehouse.read("task_catalog").where("task = 'arc_easy'").withColumn("dataset_name", F.lit("ARC-X"))
    lakehouse.merge(changed.unionByName(lakehouse.read("task_catalog").where("task = 'gsm8k'")),
                    TASK_CATALOG, update_when_changed=CHANGE_COLUMNS)
    metrics = lakehouse.spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name('task_catalog')}").first()["operationMetrics"]
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"]) == ("1", "0")

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--home", str(config.home), "--set", f"schema={config.schema_name}",
         "--set", "spark.master=local[1]",
         "sql", "select count(*) as n from task_catalog where eligible", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"n": eligible}
