"""Plan step of an LLM stage: the stage's items → request rows (executors), and the dry-run
estimate of what a run would send.

The plan is lazy and deterministic: the same items and config give the same request ids, so
it is recomputed rather than stored (the call step and the parse step each evaluate it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from jobs.llm_stage.call import terminal_statuses
from jobs.llm_stage.spec import LLMStageSpec
from schemas.tables import LLM_CALLS
from udfs.frames import pandas_frame, python_row


def build_plan(spec: LLMStageSpec, lakehouse: Lakehouse, config: Config,
               tasks: Sequence[str] | None = None) -> DataFrame:
    """Plan rows (`spec.plan_schema`) of the selected items, rendered on executors with
    `mapInPandas`: each item row (as plain Python) goes through the spec's request builder."""
    build = spec.request_builder(lakehouse, config, tasks)
    schema = spec.plan_schema

    def render(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows: list[dict] = []
            for record in batch.to_dict("records"):
                rows.extend(build(python_row(record)))
            yield pandas_frame(rows, schema)

    return spec.items(lakehouse, config, tasks).mapInPandas(render, schema)


@dataclass
class EstimateRow:
    """Dry-run numbers of one task family (token counts are estimates, see udfs.llm_rows)."""

    task_family: str
    requests: int
    already_done: int
    to_send: int
    est_prompt_tokens: int
    est_completion_tokens: int
    max_completion_tokens: int
    render_errors: int


ESTIMATE_COLUMNS = ("task_family", "requests", "already_done", "to_send", "est_prompt_tokens",
                    "est_completion_tokens", "max_completion_tokens", "render_errors")


def plan_estimate(lakehouse: Lakehouse, plan: DataFrame, retry_failed: bool = False) -> list[EstimateRow]:
    """Per task family: requests in the plan, how many have a terminal ledger row, how many would
    be sent, and the token estimate of those. One Spark action; nothing is sent."""
    done = (lakehouse.read(LLM_CALLS.name).where(F.col("status").isin(*terminal_statuses(retry_failed)))
            .select("request_id").distinct().withColumn("_done", F.lit(1)))
    flagged = plan.join(done, "request_id", "left")
    pending = F.col("request_id").isNotNull() & F.col("_done").isNull()
    rows = (flagged.groupBy(F.coalesce("task_family", "task").alias("family"))
            .agg(F.count("request_id").alias("requests"),
                 F.count(F.when(F.col("_done").isNotNull(), 1)).alias("already_done"),
                 F.count(F.when(pending, 1)).alias("to_send"),
                 F.sum(F.when(pending, F.col("est_prompt_tokens"))).alias("p"),
                 F.sum(F.when(pending, F.col("est_completion_tokens"))).alias("c"),
                 F.sum(F.when(pending, F.col("max_tokens"))).alias("m"),
                 F.count(F.when(F.col("render_error").isNotNull(), 1)).alias("render_errors"))
            .orderBy("family").collect())
    return [EstimateRow(r.family or "(unknown)", int(r.requests), int(r.already_done), int(r.to_send),
                        int(r.p or 0), int(r.c or 0), int(r.m or 0), int(r.render_errors)) for r in rows]
