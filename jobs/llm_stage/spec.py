"""An LLM stage, declared: what it reads, how its requests are built, how a response is parsed,
where the results go. `jobs.llm_stage.run_stage` runs plan → call → parse for any spec.

The same shape as distilabel's `format_input` / `format_output` pair or a NeMo Curator stage
with declared inputs and outputs: the stage module supplies two pure row functions (from
`udfs.llm_rows`) and a function that selects its items; the package owns the ledger, budgets,
streaming calls, the spool, quarantine and the MERGEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from schemas.tables import LLM_BATCH_REQUESTS, LLM_CALLS, QUARANTINE, TableSpec

# The request columns of a plan row: what the call step sends and records in the ledger.
REQUEST_COLUMNS = ("request_id", "stage", "source_key", "task", "task_family", "sample_index", "model",
                   "prompt_version", "messages_json", "response_format_json", "temperature", "max_tokens")

# Every plan row: the request, its token estimate, and why a record could not be rendered.
PLAN_FIELDS = (
    StructField("request_id", StringType()),
    StructField("stage", StringType()),
    StructField("source_key", StringType()),
    StructField("task", StringType()),
    StructField("task_family", StringType()),
    StructField("sample_index", IntegerType()),
    StructField("model", StringType()),
    StructField("prompt_version", StringType()),
    StructField("messages_json", StringType()),
    StructField("response_format_json", StringType()),
    StructField("temperature", DoubleType()),
    StructField("max_tokens", IntegerType()),
    StructField("est_prompt_tokens", IntegerType()),
    StructField("est_completion_tokens", IntegerType()),
    StructField("render_error", StringType()),
    StructField("render_detail", StringType()),
)

# A parsed row is either usable (the output table's columns) or a quarantine entry (kind
# QUARANTINE_KIND, with reason, detail and the raw response); these decide a changed quarantine row.
QUARANTINE_CHANGE_COLUMNS = ("reason", "detail", "raw")

ItemSelector = Callable[[Lakehouse, Config, "Sequence[str] | None"], DataFrame]
RequestBuilder = Callable[[Lakehouse, Config, "Sequence[str] | None"], Callable[[dict], list[dict]]]


def typed_fields(names: Sequence[str], *tables: TableSpec) -> tuple[StructField, ...]:
    """StructFields (nullable) for `names`, typed as the first of `tables` that has the column:
    a plan row carries record fields with the types their tables declare (schemas/tables.py)."""
    fields = []
    for name in names:
        field = next((f for t in tables for f in t.schema.fields if f.name == name), None)
        if field is None:
            raise ValueError(f"column {name!r} is in none of {[t.name for t in tables]}")
        fields.append(StructField(name, field.dataType, True))
    return tuple(fields)


@dataclass(frozen=True)
class LLMStageSpec:
    """One LLM stage.

    name            the ledger's and quarantine's `stage` value (and the CLI command)
    inputs          tables the items come from, given the config (the ledger is added: every LLM
                    stage reads `llm_calls` to skip what was answered and to parse what was)
    output          the table usable parsed rows are MERGEd into (on its keys)
    items           (lakehouse, config, tasks) → lazy DataFrame of the items to send, one row each
    request_builder (lakehouse, config, tasks) → item dict → plan rows; built on the driver once
                    per run (it may collect and broadcast what every item needs, e.g. exemplars),
                    then called in executors per item. The row logic itself is pure (udfs.llm_rows).
    row_parser      plan row + ledger row → parsed row (pure, udfs.llm_rows)
    record_fields   item fields carried on every plan row for the parser
    change_columns  output columns whose change (a re-parse after a parser fix, a new sample
                    request) rewrites an existing output row in place
    timestamp_column  the output's write-time column
    noun            what a usable row is called in summaries ('items', 'samples')
    """

    name: str
    inputs: Callable[[Config], Sequence[str]]
    output: TableSpec
    items: ItemSelector
    request_builder: RequestBuilder
    row_parser: Callable[[dict], dict]
    record_fields: tuple[StructField, ...]
    change_columns: tuple[str, ...]
    timestamp_column: str
    noun: str = "items"

    @property
    def plan_schema(self) -> StructType:
        return StructType([*PLAN_FIELDS, *self.record_fields])

    @property
    def parsed_schema(self) -> StructType:
        """kind, source_key, the output's columns (without its timestamp) plus `split` (for
        quarantine rows), then reason, detail, raw."""
        columns = [f for f in self.output.schema.fields if f.name != self.timestamp_column]
        if "split" not in {f.name for f in columns}:
            columns.append(StructField("split", StringType()))
        return StructType([StructField("kind", StringType()), StructField("source_key", StringType()),
                           *[StructField(f.name, f.dataType, True) for f in columns],
                           StructField("reason", StringType()), StructField("detail", StringType()),
                           StructField("raw", StringType())])

    def reads(self, config: Config) -> tuple[str, ...]:
        """The plan's inputs, the ledger and the batch memberships (requests a batch holds are left to it)."""
        return (*self.inputs(config), LLM_CALLS.name, LLM_BATCH_REQUESTS.name)

    def writes(self, config: Config) -> tuple[str, ...]:
        """The ledger, the output, quarantine and, in `endpoint.mode: batch`, the batch memberships."""
        batch = (LLM_BATCH_REQUESTS.name,) if config.stage_endpoint(self.name).mode == "batch" else ()
        return (LLM_CALLS.name, self.output.name, QUARANTINE.name, *batch)
