"""`taskseed status`: where every stage of the pipeline stands, from the tables and from MLflow.

Per stage (in DAG order): each table it writes with its rows and current Delta version (the shared
`quarantine` and `llm_calls` tables are shown as this stage's quarantined rows and requests), the
failed requests of an LLM stage, and its last run from the tracking store: time, run id, parent
(pipeline) run id, outcome (done, skipped: why, or the MLflow status FAILED/RUNNING/KILLED).

A stage run on its own without MLflow (`taskseed generate`, `--no-mlflow`) has no tracking run;
its last write is read from the tables instead (`last_writes`): an LLM stage's newest ledger row
(`llm_calls.completed_at` and its run_id), else the newest Delta commit (DESCRIBE HISTORY) of a
table the stage writes, with that table and version.

Then what the ledger's calls cost (`cost_lines`, jobs/costs.py; prices from the `costs` section).

Read-only: it creates no table and no tracking store (a home that never ran shows empty rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.config import Config

SHARED = ("quarantine", "llm_calls")


@dataclass
class StageStatus:
    stage: str
    tables: list[dict[str, Any]] = field(default_factory=list)  # {table, rows, delta_version}
    requests: int | None = None      # llm_calls rows of this stage (LLM stages)
    failed: int | None = None        # of which status = 'failed' (LLM stages)
    quarantined: int | None = None   # quarantine rows of this stage (stages that write quarantine)
    models: dict[str, str] = field(default_factory=dict)  # ledger stage -> model its endpoint names (config)
    last_run: dict[str, Any] | None = None
    last_write: dict[str, Any] | None = None  # from the tables when MLflow has no run (last_writes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts_by_stage(lakehouse, table: str, where: str | None = None) -> dict[str, int]:
    if not lakehouse.exists(table):
        return {}
    df = lakehouse.spark.table(lakehouse.table_name(table))
    if where:
        df = df.where(where)
    return {r["stage"]: r["count"] for r in df.groupBy("stage").count().collect()}


def stage_models(stage, config: Config) -> dict[str, str]:
    """{ledger stage: model} of the endpoints a pipeline stage calls with this config (generate,
    enrich; curate's judge when the paraphrase filter is on); empty for a stage that calls none."""
    if not stage.uses_endpoint(config):
        return {}
    return {name: config.stage_endpoint(name).model for name in stage.endpoint_stages or (stage.name,)}


def pipeline_status(lakehouse, config: Config) -> list[StageStatus]:
    """One StageStatus per pipeline stage, in DAG order."""
    from jobs.pipeline import select_stages
    from jobs.tracking import last_stage_runs

    stages = select_stages(None, config)
    quarantined = _counts_by_stage(lakehouse, "quarantine")
    requests = _counts_by_stage(lakehouse, "llm_calls")
    failed = _counts_by_stage(lakehouse, "llm_calls", "status = 'failed'")
    last = last_stage_runs(config, [s.name for s in stages])
    writes_seen = last_writes(lakehouse, config, [s for s in stages if s.name not in last])
    out = []
    for stage in stages:
        writes = list(stage.writes(config))
        status = StageStatus(stage.name, last_run=last.get(stage.name), models=stage_models(stage, config),
                             last_write=writes_seen.get(stage.name))
        for table in writes:
            if table in SHARED:
                continue
            exists = lakehouse.exists(table)
            status.tables.append({
                "table": table,
                "rows": lakehouse.spark.table(lakehouse.table_name(table)).count() if exists else None,
                "delta_version": lakehouse.version(table) if exists else None,
            })
        if "llm_calls" in writes:
            status.requests = requests.get(stage.name, 0)
            status.failed = failed.get(stage.name, 0)
        if "quarantine" in writes:
            status.quarantined = quarantined.get(stage.name, 0)
        out.append(status)
    return out


def last_writes(lakehouse, config: Config, stages) -> dict[str, dict[str, Any]]:
    """{stage: {at (UTC ISO time), source, run_id}} of the newest write each stage left in the
    tables: for a stage that writes `llm_calls`, its newest ledger row (source `llm_calls`, the row's
    run_id); otherwise the newest Delta commit of the tables it writes, shared tables left out
    (source `<table> v<version>`). Stages with nothing written are absent."""
    from pyspark.sql import functions as F

    out: dict[str, dict[str, Any]] = {}
    ledger = lakehouse.read("llm_calls") if lakehouse.exists("llm_calls") else None
    for stage in stages:
        writes = list(stage.writes(config))
        if "llm_calls" in writes and ledger is not None:
            row = (ledger.where(F.col("stage") == stage.name).orderBy(F.col("completed_at").desc_nulls_last())
                   .select("completed_at", "run_id").first())
            if row is not None and row["completed_at"] is not None:
                out[stage.name] = {"at": row["completed_at"].strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "llm_calls",
                                   "run_id": row["run_id"]}
                continue
        newest = None
        for table in writes:
            if table in SHARED or not lakehouse.exists(table):
                continue
            row = lakehouse.spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(table)} LIMIT 1").first()
            if row is not None and (newest is None or row["timestamp"] > newest[0]):
                newest = (row["timestamp"], f"{table} v{row['version']}")
        if newest is not None:
            out[stage.name] = {"at": newest[0].strftime("%Y-%m-%dT%H:%M:%SZ"), "source": newest[1], "run_id": None}
    return out


def cost_lines(lakehouse, config: Config) -> list[str]:
    """`taskseed status`'s cost lines (issue 26, jobs/costs.py): per stage, task family, curated item
    and kept token, and the share spent on rejected items by filter; [] when the ledger is empty."""
    from jobs.costs import cost_report

    report = cost_report(lakehouse, config)
    return report.summary_lines() if report.calls else []
