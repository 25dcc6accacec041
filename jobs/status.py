"""`taskseed status`: where every stage of the pipeline stands, from the tables and from MLflow.

Per stage (in DAG order): each table it writes with its rows and current Delta version (the shared
`quarantine` and `llm_calls` tables are shown as this stage's quarantined rows and requests), the
failed requests of an LLM stage, and its last run from the tracking store: time, run id, parent
(pipeline) run id, outcome (done, skipped: why, or the MLflow status FAILED/RUNNING/KILLED).

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
    last_run: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts_by_stage(lakehouse, table: str, where: str | None = None) -> dict[str, int]:
    if not lakehouse.exists(table):
        return {}
    df = lakehouse.spark.table(lakehouse.table_name(table))
    if where:
        df = df.where(where)
    return {r["stage"]: r["count"] for r in df.groupBy("stage").count().collect()}


def pipeline_status(lakehouse, config: Config) -> list[StageStatus]:
    """One StageStatus per pipeline stage, in DAG order."""
    from jobs.pipeline import select_stages
    from jobs.tracking import last_stage_runs

    stages = select_stages(None, config)
    quarantined = _counts_by_stage(lakehouse, "quarantine")
    requests = _counts_by_stage(lakehouse, "llm_calls")
    failed = _counts_by_stage(lakehouse, "llm_calls", "status = 'failed'")
    last = last_stage_runs(config, [s.name for s in stages])
    out = []
    for stage in stages:
        writes = list(stage.writes(config))
        status = StageStatus(stage.name, last_run=last.get(stage.name))
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


def cost_lines(lakehouse, config: Config) -> list[str]:
    """`taskseed status`'s cost lines (issue 26, jobs/costs.py): per stage, task family, curated item
    and kept token, and the share spent on rejected items by filter; [] when the ledger is empty."""
    from jobs.costs import cost_report

    report = cost_report(lakehouse, config)
    return report.summary_lines() if report.calls else []
