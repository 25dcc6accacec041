"""`taskseed generate`: seeds → generation requests → the LLM engine → `generated` + `quarantine`.

The stage has three steps, each a thin Spark wrapper around pure functions of `udfs`:

1. **Plan** (executors, `mapInPandas` over `seeds`): for every seed, render the generation prompt
   (`udfs.prompts.render_generation_messages`) once and emit K = `generate.items_per_seed` request
   rows, one per sample index; `request_id` = `udfs.prompts.compute_request_id(model,
   prompt_version, messages, {temperature, max_tokens}, sample_index)`. A seed that cannot be
   rendered (mcq without options, unknown format, ...) becomes one `render_error` row instead.
   `generate.seeds_per_task` keeps the seeds with the lowest `seed_id` per task: seed ids are
   content hashes, so that is a deterministic pseudo-random sample that does not move on reruns.
2. **Call** through `jobs.llm_stage.run_llm_stage` (ledger anti-join, micro-batches, budget stop).
3. **Parse from the ledger**: the plan joined with the best ledger row per request_id of this stage.
   The raw `content` is always re-parsed with `udfs.parsing` whatever status the client gave it
   (`ok` or `parse_error`: the parsers here are more tolerant than the client's schema check), so
   a parser fix only needs a rerun, never a new call. Results are MERGEd:
   - items into `generated`, `gen_id = stable_hash("generated", request_id)`: one item is the
     answer to one request. The request_id already covers model, prompt version, rendered prompt,
     sampling parameters and sample index, so the id is stable across reruns and re-parses, and a
     re-parse that changes an item updates that row in place (`update_when_changed`);
   - unusable outputs into `quarantine` (stage='generate', source_key=request_id, reason = the
     typed parser reason, raw = the response text); `failed` ledger rows too, reason = error_class;
     seeds that could not be rendered with source_key = seed_id and reason `render_error`;
   - a quarantine row whose request now parses (parser fix) is deleted, so every request of the
     plan is in exactly one place: `generated`, `quarantine`, or not sent yet.

Few-shot exemplars come only from the same task's training split (the `seeds` table holds nothing
else): per task the first `EXEMPLAR_POOL` seeds by `doc_index` (stable when more of the split is
ingested later, so earlier prompts and their ledger rows stay valid), collected once per run and
broadcast; each seed takes `generate.fewshot` of them, rotated by its seed_id and never itself.
The plan is not shuffled by task: the broadcast pool makes every seed renderable wherever it is,
so the scan of `seeds` streams partition by partition.

`--dry-run` renders the plan, anti-joins the ledger and prints per task family how many requests
would be sent and an estimate of prompt tokens (rendered characters / 4) and completion tokens
(the size of the item the model is asked to write, capped at max_tokens); it sends nothing.

Shared by `jobs.enrich`: `plan_estimate`, `print_estimate`, `StageResult`, the quarantine and
merge helpers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from jobs.llm_stage import RunAccounting, latest_calls, run_llm_stage, terminal_statuses
from schemas.llm_outputs import response_format_for
from schemas.tables import GENERATED, LLM_CALLS, QUARANTINE, SEEDS
from udfs.hashing import stable_hash
from udfs.llm_client import STATUS_FAILED
from udfs.parsing import OutputRejected, parse_generated_item
from udfs.prompts import GENERATE, compute_request_id, render_generation_messages

EXEMPLAR_POOL = 8  # exemplar candidates collected per task (plus one, so a pool seed still gets `fewshot`)
CHARS_PER_TOKEN = 4

REQUEST_COLUMNS = ("request_id", "stage", "source_key", "task", "task_family", "sample_index", "model",
                   "prompt_version", "messages_json", "response_format_json", "temperature", "max_tokens")

# Columns of a plan row: the request, the estimate, render errors, and the record fields the parser
# needs (so parsing joins the plan with the ledger, nothing else).
_RECORD_FIELDS = (
    StructField("split", StringType()),
    StructField("answer_format", StringType()),
    StructField("question", StringType()),
    StructField("context", StringType()),
    StructField("choices", ArrayType(StringType())),
    StructField("answer_text", StringType()),
    StructField("license", StringType()),
    StructField("license_class", StringType()),
)
PLAN_SCHEMA = StructType([
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
    *_RECORD_FIELDS,
])

# Output of the parse step: one row per ledger row, either an item or a quarantine entry.
PARSED_SCHEMA = StructType([
    StructField("kind", StringType()),  # item | quarantine
    StructField("source_key", StringType()),  # quarantine key: request_id, or the record id of a render error
    StructField("gen_id", StringType()),
    StructField("seed_id", StringType()),
    StructField("sample_index", IntegerType()),
    StructField("task", StringType()),
    StructField("task_family", StringType()),
    StructField("split", StringType()),
    StructField("answer_format", StringType()),
    StructField("question", StringType()),
    StructField("context", StringType()),
    StructField("choices", ArrayType(StringType())),
    StructField("answer_index", IntegerType()),
    StructField("answer_text", StringType()),
    StructField("license", StringType()),
    StructField("license_class", StringType()),
    StructField("model", StringType()),
    StructField("prompt_version", StringType()),
    StructField("request_id", StringType()),
    StructField("run_id", StringType()),
    StructField("reason", StringType()),
    StructField("detail", StringType()),
    StructField("raw", StringType()),
])

ITEM_CHANGE_COLUMNS = ["question", "context", "choices", "answer_index", "answer_text", "answer_format"]
QUARANTINE_CHANGE_COLUMNS = ["reason", "detail", "raw"]


# ---------------------------------------------------------------------------------------------
# Pure helpers (executor side)
# ---------------------------------------------------------------------------------------------
def _py(value: Any) -> Any:
    """pandas/arrow cell → plain Python (arrays → lists, NaN → None)."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def record_from(row: dict, fields: Iterable[str]) -> dict:
    return {name: _py(row.get(name)) for name in fields}


def pandas_frame(rows: list[dict], schema: StructType) -> pd.DataFrame:
    """Rows → a pandas frame whose dtypes Arrow converts to `schema` (nullable ints stay ints)."""
    data = {}
    for f in schema.fields:
        values = [r.get(f.name) for r in rows]
        if isinstance(f.dataType, IntegerType):
            data[f.name] = pd.array(values, dtype="Int32")
        elif isinstance(f.dataType, DoubleType):
            data[f.name] = pd.array(values, dtype="Float64")
        else:
            data[f.name] = pd.Series(values, dtype="object")
    return pd.DataFrame(data, index=range(len(rows)))


def approx_prompt_tokens(messages: Sequence[dict]) -> int:
    return sum(len(str(m.get("content") or "")) for m in messages) // CHARS_PER_TOKEN + 1


def estimate_generation_completion(seed: dict, max_tokens: int) -> int:
    """The model writes one item shaped like the seed: its JSON size in tokens, plus the keys."""
    view = {k: seed.get(k) for k in ("question", "context", "choices", "answer_text")}
    return min(int(max_tokens), len(json.dumps(view, ensure_ascii=False)) // CHARS_PER_TOKEN + 16)


def choose_exemplars(seed_id: str | None, pool: Sequence[dict], n: int) -> list[dict]:
    """`n` exemplars from the task's pool, never the seed itself, rotated by the seed's id so
    different seeds see different exemplars (deterministic: same seed, same exemplars)."""
    if n <= 0:
        return []
    candidates = [e for e in pool if e.get("seed_id") != seed_id]
    if not candidates:
        return []
    start = int(stable_hash("fewshot", seed_id)[:8], 16) % len(candidates)
    rotated = candidates[start:] + candidates[:start]
    return rotated[: min(n, len(candidates))]


def generation_requests(seed: dict, exemplars: Sequence[dict], *, model: str, k: int,
                        temperature: float, max_tokens: int) -> list[dict]:
    """K plan rows for one seed (pure), or one row with `render_error` when it cannot be rendered."""
    base = {
        "stage": GENERATE, "source_key": seed.get("seed_id"), "task": seed.get("task"),
        "task_family": seed.get("task_family"), "model": model,
        **{f.name: seed.get(f.name) for f in _RECORD_FIELDS},
    }
    try:
        fmt = seed.get("answer_format")
        messages, version = render_generation_messages(seed, exemplars, fmt, None, seed.get("task"))
        response_format = response_format_for(GENERATE, fmt, _label_set(seed, fmt))
    except (ValueError, KeyError, TypeError) as exc:
        return [dict(base, render_error="render_error", render_detail=f"{type(exc).__name__}: {exc}"[:500])]
    params = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
    messages_json = json.dumps(messages, ensure_ascii=False)
    response_format_json = json.dumps(response_format, ensure_ascii=False)
    est_prompt = approx_prompt_tokens(messages)
    est_completion = estimate_generation_completion(seed, max_tokens)
    return [
        dict(base, request_id=compute_request_id(model, version, messages, params, i), sample_index=i,
             prompt_version=version, messages_json=messages_json, response_format_json=response_format_json,
             temperature=params["temperature"], max_tokens=params["max_tokens"],
             est_prompt_tokens=est_prompt, est_completion_tokens=est_completion)
        for i in range(int(k))
    ]


def _label_set(record: dict, answer_format: str) -> list[str] | None:
    from schemas.answer_formats import CHOICE_FORMATS, default_label_set

    choices = record.get("choices") if answer_format in CHOICE_FORMATS else None
    return default_label_set(answer_format, list(choices) if choices else None)


def quarantine_row(rec: dict, reason: str, detail: str | None, raw: str | None) -> dict:
    return {"kind": "quarantine", "source_key": rec.get("request_id"), "request_id": rec.get("request_id"),
            "task": rec.get("task"),
            "task_family": rec.get("task_family"), "split": rec.get("split"), "run_id": rec.get("run_id"),
            "answer_format": rec.get("answer_format"), "reason": reason or "unknown",
            "detail": (detail or "")[:1000] or None, "raw": raw}


def parse_generation_row(rec: dict) -> dict:
    """One plan row joined with its ledger row → a `generated` item or a quarantine entry (pure)."""
    if rec.get("status") == STATUS_FAILED:
        return quarantine_row(rec, rec.get("error_class") or "failed", rec.get("error_detail"), rec.get("content"))
    seed = {k: rec.get(k) for k in ("seed_id", "task", "question", "context", "choices", "answer_text")}
    seed["seed_id"] = rec.get("source_key")
    fmt = rec.get("answer_format")
    try:
        item = parse_generated_item(rec.get("content"), fmt, seed)
    except OutputRejected as err:
        return quarantine_row(rec, err.reason, err.detail, rec.get("content"))
    except Exception as exc:  # a parser bug must not fail the partition: keep the row, say why
        return quarantine_row(rec, "parser_exception", f"{type(exc).__name__}: {exc}", rec.get("content"))
    return {
        "kind": "item", "source_key": rec.get("request_id"), "gen_id": stable_hash("generated", rec["request_id"]), "seed_id": rec.get("source_key"),
        "sample_index": rec.get("sample_index"), "task": rec.get("task"), "task_family": rec.get("task_family"),
        "split": rec.get("split"), "answer_format": item.answer_format, "question": item.question,
        "context": item.context, "choices": item.choices, "answer_index": item.answer_index,
        "answer_text": item.answer_text, "license": rec.get("license"), "license_class": rec.get("license_class"),
        "model": rec.get("model"), "prompt_version": rec.get("prompt_version"),
        "request_id": rec.get("request_id"), "run_id": rec.get("run_id"),
    }


# ---------------------------------------------------------------------------------------------
# Spark: the plan
# ---------------------------------------------------------------------------------------------
_SEED_COLUMNS = ("seed_id", "task", "task_family", "split", "doc_index", "answer_format", "question",
                 "context", "choices", "answer_text", "license", "license_class")


def select_seeds(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> DataFrame:
    """The seeds a run works on: optionally some tasks, optionally the `seeds_per_task` lowest ids."""
    seeds = lakehouse.read(SEEDS.name).select(*_SEED_COLUMNS)
    if tasks:
        seeds = seeds.where(F.col("task").isin(list(tasks)))
    cap = config.generate.seeds_per_task
    if cap is not None:
        window = Window.partitionBy("task").orderBy("seed_id")
        seeds = seeds.withColumn("_r", F.row_number().over(window)).where(F.col("_r") <= cap).drop("_r")
    return seeds


def exemplar_pool(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """task → up to EXEMPLAR_POOL (+1) training seeds, the first by doc_index: one Spark action."""
    n = config.generate.fewshot
    if n == 0:
        return {}
    seeds = lakehouse.read(SEEDS.name)
    if tasks:
        seeds = seeds.where(F.col("task").isin(list(tasks)))
    size = max(EXEMPLAR_POOL, n + 1)
    window = Window.partitionBy("task").orderBy("doc_index", "seed_id")
    rows = (seeds.withColumn("_r", F.row_number().over(window)).where(F.col("_r") <= size)
            .select("seed_id", "task", "split", "doc_index", "question", "context", "choices", "answer_text")
            .collect())
    pool: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r.task, r.doc_index, r.seed_id)):
        record = row.asDict(recursive=True)
        record.pop("doc_index")
        pool.setdefault(row.task, []).append(record)
    return pool


def generation_plan(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> DataFrame:
    """Plan rows (PLAN_SCHEMA) for the selected seeds, rendered on executors. Lazy, deterministic."""
    pool = exemplar_pool(lakehouse, config, tasks)
    broadcast = lakehouse.spark.sparkContext.broadcast(pool)
    fewshot, k = config.generate.fewshot, config.generate.items_per_seed
    model = config.endpoint.model
    temperature, max_tokens = config.generate.temperature, config.generate.max_tokens

    def render(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        exemplars_by_task = broadcast.value
        for batch in batches:
            rows: list[dict] = []
            for raw in batch.to_dict("records"):
                seed = record_from(raw, _SEED_COLUMNS)
                exemplars = choose_exemplars(seed["seed_id"], exemplars_by_task.get(seed["task"], []), fewshot)
                rows.extend(generation_requests(seed, exemplars, model=model, k=k,
                                                temperature=temperature, max_tokens=max_tokens))
            yield pandas_frame(rows, PLAN_SCHEMA)

    return select_seeds(lakehouse, config, tasks).mapInPandas(render, PLAN_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Spark: dry run
# ---------------------------------------------------------------------------------------------
@dataclass
class EstimateRow:
    task_family: str
    requests: int
    already_done: int
    to_send: int
    est_prompt_tokens: int
    est_completion_tokens: int
    max_completion_tokens: int
    render_errors: int


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


def print_estimate(stage: str, rows: list[EstimateRow], config: Config, out: Callable[[str], None] = print) -> None:
    from jobs.cli import format_table

    columns = ["task_family", "requests", "already_done", "to_send", "est_prompt_tokens",
               "est_completion_tokens", "max_completion_tokens", "render_errors"]
    total = EstimateRow("TOTAL", *[sum(getattr(r, c) for r in rows) for c in columns[1:]])
    table = [[getattr(r, c) for c in columns] for r in [*rows, total]]
    out(f"[{stage}] dry run: nothing was sent. Estimates: prompt = rendered characters / {CHARS_PER_TOKEN}; "
        "completion = expected output size capped at max_tokens (max_completion_tokens is the hard cap).")
    out(format_table(columns, table))
    limits = []
    if config.llm.max_requests is not None:
        limits.append(f"llm.max_requests={config.llm.max_requests}")
    if config.llm.max_tokens_budget is not None:
        limits.append(f"llm.max_tokens_budget={config.llm.max_tokens_budget}")
    if limits:
        out(f"[{stage}] a run would stop cleanly at {' / '.join(limits)}; a rerun continues from there.")


# ---------------------------------------------------------------------------------------------
# Spark: parse from the ledger, write tables
# ---------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    stage: str
    accounting: RunAccounting | None
    planned: int = 0  # distinct request ids in the plan
    items_by_family: dict[str, int] = field(default_factory=dict)
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    render_errors: int = 0

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
        word = "items" if self.stage == GENERATE else "samples"
        per_family = ", ".join(f"{k}={v}" for k, v in sorted(self.items_by_family.items())) or "none"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined_by_reason.items())) or "none"
        lines.append(f"[{self.stage}] planned requests={self.planned}: {word}={self.items}, "
                     f"quarantined={self.quarantined}, not sent yet={self.unsent}"
                     + (f"; unrenderable records={self.render_errors}" if self.render_errors else ""))
        lines.append(f"[{self.stage}] {word} per task family: {per_family}")
        lines.append(f"[{self.stage}] quarantined by reason: {reasons}")
        return lines


def ledger_outcomes(lakehouse: Lakehouse, plan: DataFrame, stage: str) -> DataFrame:
    """Plan rows that have a ledger row, with that row's status, raw content and error."""
    calls = latest_calls(lakehouse, stage).select(
        "request_id", "status", "content", "error_class", "error_detail", "finish_reason", "run_id")
    return plan.where(F.col("render_error").isNull()).join(calls, "request_id", "inner")


def render_error_rows(plan: DataFrame, schema: StructType) -> DataFrame:
    """Unrenderable records as parsed rows (kind 'quarantine', source_key = the record's id)."""
    present = set(plan.columns)
    values = {"kind": F.lit("quarantine"), "source_key": F.col("source_key"),
              "reason": F.col("render_error"), "detail": F.col("render_detail")}
    return plan.where(F.col("render_error").isNotNull()).select(*[
        values.get(f.name, F.col(f.name) if f.name in present and f.name not in ("request_id", "sample_index")
                   else F.lit(None)).cast(f.dataType).alias(f.name)
        for f in schema.fields])


def parse_ledger(lakehouse: Lakehouse, plan: DataFrame, stage: str, parse_row: Callable[[dict], dict],
                 schema: StructType) -> DataFrame:
    """Parsed rows (`schema`, with kind/source_key/reason) of every ledger row of the plan plus
    the plan's render errors, checkpointed once: the merges and the tally read the checkpoint."""
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [parse_row({k: _py(v) for k, v in rec.items()}) for rec in batch.to_dict("records")]
            yield pandas_frame(rows, schema)

    parsed = ledger_outcomes(lakehouse, plan, stage).mapInPandas(parse, schema)
    return parsed.unionByName(render_error_rows(plan, schema)).localCheckpoint(eager=True)


def write_quarantine(lakehouse: Lakehouse, parsed: DataFrame, stage: str) -> None:
    """Bring `quarantine` in line with the parsed rows of a stage in at most one MERGE: insert new
    bad rows, update changed ones, and delete rows whose key now parses into a usable row (after a
    parser fix), so every request is in exactly one place. Rows already right are filtered out
    first, so a rerun that changes nothing commits nothing."""
    from delta.tables import DeltaTable

    lakehouse.ensure(QUARANTINE)
    src = parsed.withColumn("stage", F.lit(stage)).withColumn("quarantined_at", F.current_timestamp())
    present = set(src.columns)
    source = src.select(
        *[(F.col(f.name) if f.name in present else F.lit(None)).cast(f.dataType).alias(f.name)
          for f in QUARANTINE.schema.fields],
        (F.col("kind") != "quarantine").alias("_usable"),
    ).dropDuplicates(["source_key"])
    compared = ["source_key", *QUARANTINE_CHANGE_COLUMNS]
    existing = (lakehouse.read(QUARANTINE.name).where(F.col("stage") == stage)
                .select(*[F.col(c).alias(f"_t_{c}") for c in compared]))
    new_or_changed_bad = source.where(~F.col("_usable")).join(
        existing, [F.col(c).eqNullSafe(F.col(f"_t_{c}")) for c in compared], "left_anti")
    healed = source.where(F.col("_usable")).join(
        existing, F.col("source_key") == F.col("_t_source_key"), "left_semi")
    todo = new_or_changed_bad.unionByName(healed)
    if not todo.count():
        return
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in QUARANTINE_CHANGE_COLUMNS)
    (DeltaTable.forName(lakehouse.spark, lakehouse.table_name(QUARANTINE.name)).alias("t")
     .merge(todo.alias("s"), "t.stage = s.stage AND t.source_key = s.source_key")
     .whenMatchedDelete(condition="s._usable")
     .whenMatchedUpdate(condition=f"NOT s._usable AND ({changed})",
                        set={c: f"s.`{c}`" for c in QUARANTINE.columns})
     .whenNotMatchedInsert(condition="NOT s._usable", values={c: f"s.`{c}`" for c in QUARANTINE.columns})
     .execute())


def tally(stage: str, parsed: DataFrame, accounting: RunAccounting | None) -> StageResult:
    """Usable rows per family and quarantine rows per reason (one small aggregation)."""
    result = StageResult(stage=stage, accounting=accounting)
    for r in (parsed.groupBy("kind", F.coalesce("task_family", "task").alias("family"), "reason")
              .count().collect()):
        if r.kind != "quarantine":
            result.items_by_family[r.family] = result.items_by_family.get(r.family, 0) + r["count"]
        elif r.reason == "render_error":
            result.render_errors += r["count"]
        else:
            result.quarantined_by_reason[r.reason] = result.quarantined_by_reason.get(r.reason, 0) + r["count"]
    result.planned = accounting.requested if accounting is not None else 0
    return result


def finish_stage(lakehouse: Lakehouse, plan: DataFrame, stage: str, parse_row, schema: StructType, spec,
                 change_columns: list[str], accounting: RunAccounting | None, timestamp_column: str,
                 usable_kind: str) -> StageResult:
    """Parse the ledger, MERGE usable rows into `spec` and the rest into quarantine, count."""
    parsed = parse_ledger(lakehouse, plan, stage, parse_row, schema)
    result = tally(stage, parsed, accounting)
    if result.items:
        usable = parsed.where(F.col("kind") == usable_kind)
        # merge() keeps only new or changed rows: a rerun that changes nothing commits nothing
        lakehouse.merge(usable.withColumn(timestamp_column, F.current_timestamp()), spec,
                        update_when_changed=change_columns)
    if result.items or result.quarantined or result.render_errors:
        write_quarantine(lakehouse, parsed, stage)
    return result


def parse_generation(lakehouse: Lakehouse, plan: DataFrame, accounting: RunAccounting | None = None) -> StageResult:
    """Parse every ledger row of the plan into `generated` / `quarantine` (no endpoint calls)."""
    return finish_stage(lakehouse, plan, GENERATE, parse_generation_row, PARSED_SCHEMA, GENERATED,
                        ITEM_CHANGE_COLUMNS, accounting, "generated_at", "item")


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def _progress_adapter(progress: Callable[[str], None] | None):
    return None if progress is None else (lambda p: progress(p.line()))


def call_and_parse(lakehouse: Lakehouse, config: Config, plan: DataFrame, stage: str, parse,
                   progress: Callable[[str], None] | None, endpoint, run_id: str | None,
                   retry_failed: bool | None) -> StageResult:
    """The shape of both LLM stages: send what the ledger lacks (within budget), parse the ledger."""
    requests = plan.where(F.col("render_error").isNull()).select(*REQUEST_COLUMNS)
    accounting = run_llm_stage(lakehouse, config, requests, stage, _progress_adapter(progress),
                               endpoint=endpoint, run_id=run_id, retry_failed=retry_failed)
    return parse(lakehouse, plan, accounting)


def run_generate(
    lakehouse: Lakehouse,
    config: Config,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    endpoint=None,
    run_id: str | None = None,
    retry_failed: bool | None = None,
) -> StageResult:
    """Plan, call (only what the ledger lacks, within budget), parse the ledger into tables."""
    return call_and_parse(lakehouse, config, generation_plan(lakehouse, config, tasks), GENERATE,
                          parse_generation, progress, endpoint, run_id, retry_failed)


def estimate_generate(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                  retry_failed: bool = False) -> list[EstimateRow]:
    return plan_estimate(lakehouse, generation_plan(lakehouse, config, tasks),
                         retry_failed)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def parse_tasks(value: str | None) -> list[str] | None:
    if not value:
        return None
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks needs at least one task name")
    return tasks


def _require_seeds(lakehouse: Lakehouse, tasks: Sequence[str] | None) -> None:
    seeds = lakehouse.read(SEEDS.name)
    if not tasks and not seeds.limit(1).count():
        raise ConfigError("the seeds table is empty: run `taskseed ingest` first")
    if tasks:
        found = {r.task for r in seeds.where(F.col("task").isin(list(tasks))).select("task").distinct().collect()}
        missing = [t for t in tasks if t not in found]
        if missing:
            raise ConfigError(f"no seeds for task(s) {', '.join(missing)}: run `taskseed ingest` first")


def llm_stage_command(args, config: Config, stage: str, estimate, run, require_seeds: bool) -> int:
    """`taskseed generate|enrich [--dry-run] [--tasks] [--retry-failed]`: one body for both."""
    from jobs.cli import _open_lakehouse, progress

    tasks = parse_tasks(getattr(args, "tasks", None))
    retry_failed = bool(getattr(args, "retry_failed", False)) or config.llm.retry_failed
    lakehouse = _open_lakehouse(config)
    if require_seeds:
        _require_seeds(lakehouse, tasks)
    if args.dry_run:
        print_estimate(stage, estimate(lakehouse, config, tasks, retry_failed), config)
        return 0
    result = run(lakehouse, config, tasks, progress=progress, retry_failed=retry_failed)
    for line in result.summary_lines():
        print(line)
    if result.accounting is not None and result.accounting.stopped_reason:
        progress(f"[{stage}] stopped cleanly: {result.accounting.stopped_reason}; rerun to continue")
    return 0


def add_llm_stage_parser(subparsers, stage: str, help_text: str, tasks_help: str, handler) -> None:
    parser = subparsers.add_parser(stage, help=help_text)
    parser.add_argument("--dry-run", action="store_true",
                        help="print per task family the requests and token estimate; send nothing")
    parser.add_argument("--retry-failed", action="store_true",
                        help="send again the requests whose ledger row is `failed` (retries exhausted)")
    parser.add_argument("--tasks", help=tasks_help)
    parser.set_defaults(handler=handler)


def cmd_generate(args, config: Config) -> int:
    return llm_stage_command(args, config, GENERATE, estimate_generate, run_generate, require_seeds=True)


def add_generate_parser(subparsers) -> None:
    add_llm_stage_parser(subparsers, "generate",
                         "generate K new items per seed through the LLM endpoint into `generated`",
                         "comma-separated task names (default: every seeded task)", cmd_generate)


def _main() -> int:  # pragma: no cover - convenience for `python -m jobs.generate`
    from jobs.cli import main

    return main(["generate", *sys.argv[1:]])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
