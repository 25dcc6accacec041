"""Parse step of an LLM stage: the plan joined with the ledger → usable rows and quarantine rows,
MERGEd into the stage's output table and `quarantine`, and counted.

Parsing reads the ledger, never the live response: the best ledger row per request_id of this
stage (`latest_calls`) is re-parsed from its stored raw text on every run, so a parser fix only
needs a rerun. Only the current plan's requests are parsed, so each output row has exactly one
source request, and every request of the plan ends in exactly one place: the output table,
`quarantine`, or not sent yet. A quarantine row whose request now parses is deleted in the same
MERGE that writes the others (`Lakehouse.merge(delete_when=...)`).

Quarantine rows: stage = the spec's name, source_key = request_id (or, for a record that could
not be rendered, the record's own id with reason `render_error`), reason = the typed parser
reason or the ledger's error_class, raw = the response text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.lakehouse import Lakehouse
from jobs.llm_stage.call import RunAccounting, latest_calls
from jobs.llm_stage.spec import QUARANTINE_CHANGE_COLUMNS, LLMStageSpec
from schemas.tables import QUARANTINE
from udfs.frames import pandas_frame, python_row
from udfs.llm_rows import QUARANTINE_KIND


@dataclass
class StageResult:
    """What one run of an LLM stage produced: the call step's accounting and, from the parse
    step, usable rows per task family and quarantine rows per reason (render errors apart)."""

    stage: str
    accounting: RunAccounting | None
    planned: int = 0  # distinct request ids in the plan
    items_by_family: dict[str, int] = field(default_factory=dict)
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    render_errors: int = 0
    noun: str = "items"

    @property
    def items(self) -> int:
        return sum(self.items_by_family.values())

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    @property
    def unsent(self) -> int:
        """Requests of the plan with no ledger row yet (budget stop)."""
        return self.planned - self.items - self.quarantined

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow (`<stage>.items`, `<stage>.quarantined.<reason>`, ...)."""
        prefix = f"{self.stage}."
        values = dict(self.accounting.metrics()) if self.accounting is not None else {}
        values.update({prefix + "planned": float(self.planned), prefix + "items": float(self.items),
                       prefix + "quarantined": float(self.quarantined), prefix + "unsent": float(self.unsent),
                       prefix + "render_errors": float(self.render_errors)})
        for family, n in self.items_by_family.items():
            values[f"{prefix}items.{family}"] = float(n)
        for reason, n in self.quarantined_by_reason.items():
            values[f"{prefix}quarantined.{reason}"] = float(n)
        return values

    def summary_lines(self) -> list[str]:
        lines = []
        if self.accounting is not None:
            lines.append(self.accounting.summary())
        per_family = ", ".join(f"{k}={v}" for k, v in sorted(self.items_by_family.items())) or "none"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined_by_reason.items())) or "none"
        lines.append(f"[{self.stage}] planned requests={self.planned}: {self.noun}={self.items}, "
                     f"quarantined={self.quarantined}, not sent yet={self.unsent}"
                     + (f"; unrenderable records={self.render_errors}" if self.render_errors else ""))
        lines.append(f"[{self.stage}] {self.noun} per task family: {per_family}")
        lines.append(f"[{self.stage}] quarantined by reason: {reasons}")
        if self.accounting is not None and self.accounting.stopped_reason:
            lines.append(f"[{self.stage}] stopped cleanly: {self.accounting.stopped_reason}; rerun to continue")
        return lines


def ledger_outcomes(lakehouse: Lakehouse, plan: DataFrame, stage: str) -> DataFrame:
    """Plan rows that have a ledger row, with that row's status, raw text (content and reasoning) and error."""
    calls = latest_calls(lakehouse, stage).select(
        "request_id", "status", "content", "reasoning_content", "error_class", "error_detail", "finish_reason",
        "run_id")
    return plan.where(F.col("render_error").isNull()).join(calls, "request_id", "inner")


def render_error_rows(plan: DataFrame, schema: StructType) -> DataFrame:
    """Unrenderable records as parsed rows (kind 'quarantine', source_key = the record's id)."""
    present = set(plan.columns)
    values = {"kind": F.lit(QUARANTINE_KIND), "source_key": F.col("source_key"),
              "reason": F.col("render_error"), "detail": F.col("render_detail")}
    return plan.where(F.col("render_error").isNotNull()).select(*[
        values.get(f.name, F.col(f.name) if f.name in present and f.name not in ("request_id", "sample_index")
                   else F.lit(None)).cast(f.dataType).alias(f.name)
        for f in schema.fields])


def parse_ledger(spec: LLMStageSpec, lakehouse: Lakehouse, plan: DataFrame) -> DataFrame:
    """Parsed rows (`spec.parsed_schema`) of every ledger row of the plan plus the plan's render
    errors, checkpointed once: the merges and the tally read the checkpoint."""
    parse_row, schema = spec.row_parser, spec.parsed_schema

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pandas_frame([parse_row(python_row(rec)) for rec in batch.to_dict("records")], schema)

    parsed = ledger_outcomes(lakehouse, plan, spec.name).mapInPandas(parse, schema)
    return parsed.unionByName(render_error_rows(plan, schema)).localCheckpoint(eager=True)


def tally(stage: str, parsed: DataFrame, accounting: RunAccounting | None, noun: str = "items") -> StageResult:
    """Usable rows per family and quarantine rows per reason (one small aggregation)."""
    result = StageResult(stage=stage, accounting=accounting, noun=noun)
    for r in (parsed.groupBy("kind", F.coalesce("task_family", "task").alias("family"), "reason")
              .count().collect()):
        if r.kind != QUARANTINE_KIND:
            result.items_by_family[r.family] = result.items_by_family.get(r.family, 0) + r["count"]
        elif r.reason == "render_error":
            result.render_errors += r["count"]
        else:
            result.quarantined_by_reason[r.reason] = result.quarantined_by_reason.get(r.reason, 0) + r["count"]
    result.planned = accounting.requested if accounting is not None else 0
    return result


def write_parsed(spec: LLMStageSpec, lakehouse: Lakehouse, parsed: DataFrame) -> None:
    """MERGE usable rows into the spec's output (rewriting rows whose change columns differ) and
    bring `quarantine` in line for this stage: insert new bad rows, update changed ones, delete
    those whose request now parses. Rows already right are left alone, so a rerun that changes
    nothing commits nothing."""
    usable = parsed.where(F.col("kind") != QUARANTINE_KIND)
    lakehouse.merge(usable.withColumn(spec.timestamp_column, F.current_timestamp()), spec.output,
                    update_when_changed=list(spec.change_columns))
    lakehouse.merge(parsed.withColumn("stage", F.lit(spec.name)).withColumn("quarantined_at", F.current_timestamp()),
                    QUARANTINE, update_when_changed=list(QUARANTINE_CHANGE_COLUMNS),
                    delete_when=F.col("kind") != QUARANTINE_KIND)


def parse_plan(spec: LLMStageSpec, lakehouse: Lakehouse, plan: DataFrame,
               accounting: RunAccounting | None = None) -> StageResult:
    """Parse every ledger row of the plan into the output table and `quarantine`, and count (no
    endpoint calls). `accounting`: the call step's, whose `requested` is the plan's size; without
    one (a batch import) the plan's distinct renderable request ids are counted."""
    parsed = parse_ledger(spec, lakehouse, plan)
    result = tally(spec.name, parsed, accounting, spec.noun)
    if accounting is None:  # parsed without a call step (batch import): the plan's renderable requests
        result.planned = plan.where(F.col("render_error").isNull()).select("request_id").distinct().count()
    write_parsed(spec, lakehouse, parsed)
    return result
