"""`taskseed enrich`: items → M solving requests each → the LLM engine → `enriched` + `quarantine`.

Items are the rows of `generated` (item_kind 'generated', keyed by gen_id) and, with
`enrich.enrich_seeds`, the seeds themselves ("answer-enriched seeds": item_kind 'seed', keyed by
their seed_id in the gen_id column; both ids are content hashes from different namespaces).
`generate.seeds_per_task` and `--tasks` narrow the seeds exactly as they do for generation.

Same three steps as `jobs.generate`:
1. Plan (executors): `udfs.prompts.render_enrichment_messages` once per item, M =
   `enrich.samples_per_item` request rows with sample indices 0..M-1 at `enrich.temperature`
   (non-zero, so the samples are independent votes for majority voting).
2. Call through `run_llm_stage`.
3. Parse from the ledger with `udfs.parsing.parse_enrichment` (always re-parsing the raw text):
   `enriched` keyed (gen_id, sample) gets knowledge, reasoning, the raw final answer and the final
   answer normalized per format (plus its option index for choice formats). A sample whose answer
   names no valid option is kept with `final_answer` NULL: it is a vote for nothing, which the
   verification filter must see. Only outputs with no final answer at all (and `failed` calls)
   go to `quarantine` (stage='enrich', source_key=request_id).
   Only the current plan's requests are parsed, so each (gen_id, sample) has exactly one source
   request; a config change (temperature, prompt version) replaces the samples in place.

`pretraining_documents(lakehouse)` renders each item with each of its enrichment samples as a
training text (`udfs.formatting.format_pretraining_document`, a Python UDF).
"""

from __future__ import annotations

import json
from typing import Callable, Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from jobs.config import Config
from jobs.generate import (
    PLAN_SCHEMA,
    EstimateRow,
    StageResult,
    add_llm_stage_parser,
    call_and_parse,
    llm_stage_command,
    approx_prompt_tokens,
    pandas_frame,
    plan_estimate,
    quarantine_row,
    record_from,
    select_seeds,
    _label_set,
    finish_stage,
)
from jobs.lakehouse import Lakehouse
from schemas.llm_outputs import response_format_for
from schemas.tables import ENRICHED, GENERATED, SEEDS
from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT
from udfs.formatting import format_pretraining_document
from udfs.llm_client import STATUS_FAILED
from udfs.parsing import OutputRejected, parse_enrichment
from udfs.prompts import ENRICH, compute_request_id, render_enrichment_messages

ITEM_GENERATED, ITEM_SEED = "generated", "seed"

# Typical completion size (tokens) of knowledge + reasoning + final answer, per answer format.
TYPICAL_ENRICH_COMPLETION = {MCQ: 220, BOOLEAN: 220, LABEL: 220, NUMERIC: 320, SHORT_TEXT: 180,
                             FREEFORM: 450, CODE: 550}

_ITEM_COLUMNS = ("gen_id", "item_kind", "task", "task_family", "split", "answer_format", "question",
                 "context", "choices", "answer_index", "answer_text", "license", "license_class")

ENRICH_PLAN_SCHEMA = StructType([*PLAN_SCHEMA.fields, StructField("item_kind", StringType()),
                                 StructField("answer_index", IntegerType())])

PARSED_SCHEMA = StructType([
    StructField("kind", StringType()),  # sample | quarantine
    StructField("source_key", StringType()),
    StructField("gen_id", StringType()),
    StructField("sample", IntegerType()),
    StructField("item_kind", StringType()),
    StructField("task", StringType()),
    StructField("task_family", StringType()),
    StructField("split", StringType()),
    StructField("answer_format", StringType()),
    StructField("knowledge", StringType()),
    StructField("reasoning", StringType()),
    StructField("final_answer_raw", StringType()),
    StructField("final_answer", StringType()),
    StructField("final_answer_index", IntegerType()),
    StructField("model", StringType()),
    StructField("prompt_version", StringType()),
    StructField("request_id", StringType()),
    StructField("run_id", StringType()),
    StructField("reason", StringType()),
    StructField("detail", StringType()),
    StructField("raw", StringType()),
])

SAMPLE_CHANGE_COLUMNS = ["knowledge", "reasoning", "final_answer_raw", "final_answer", "final_answer_index",
                         "request_id"]


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------
def estimate_enrichment_completion(answer_format: str | None, max_tokens: int) -> int:
    return min(int(max_tokens), TYPICAL_ENRICH_COMPLETION.get(answer_format or "", 300))


def enrichment_requests(item: dict, *, model: str, m: int, temperature: float, max_tokens: int) -> list[dict]:
    """M plan rows for one item (pure), or one row with `render_error`."""
    base = {
        "stage": ENRICH, "source_key": item.get("gen_id"), "task": item.get("task"),
        "task_family": item.get("task_family"), "model": model,
        **{k: item.get(k) for k in ("split", "answer_format", "question", "context", "choices", "answer_text",
                                    "license", "license_class", "item_kind", "answer_index")},
    }
    try:
        fmt = item.get("answer_format")
        messages, version = render_enrichment_messages(item, fmt, None, item.get("task"))
        response_format = response_format_for(ENRICH, fmt, _label_set(item, fmt))
    except (ValueError, KeyError, TypeError) as exc:
        return [dict(base, render_error="render_error", render_detail=f"{type(exc).__name__}: {exc}"[:500])]
    params = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
    messages_json = json.dumps(messages, ensure_ascii=False)
    response_format_json = json.dumps(response_format, ensure_ascii=False)
    est_prompt = approx_prompt_tokens(messages)
    est_completion = estimate_enrichment_completion(fmt, max_tokens)
    return [
        dict(base, request_id=compute_request_id(model, version, messages, params, i), sample_index=i,
             prompt_version=version, messages_json=messages_json, response_format_json=response_format_json,
             temperature=params["temperature"], max_tokens=params["max_tokens"],
             est_prompt_tokens=est_prompt, est_completion_tokens=est_completion)
        for i in range(int(m))
    ]


def parse_enrichment_row(rec: dict) -> dict:
    """One plan row joined with its ledger row → an `enriched` sample or a quarantine entry (pure)."""
    if rec.get("status") == STATUS_FAILED:
        return quarantine_row(rec, rec.get("error_class") or "failed", rec.get("error_detail"), rec.get("content"))
    item = {k: rec.get(k) for k in ("task", "question", "context", "choices", "answer_format")}
    try:
        sample = parse_enrichment(rec.get("content"), rec.get("answer_format"), item)
    except OutputRejected as err:
        return quarantine_row(rec, err.reason, err.detail, rec.get("content"))
    except Exception as exc:  # a parser bug must not fail the partition
        return quarantine_row(rec, "parser_exception", f"{type(exc).__name__}: {exc}", rec.get("content"))
    return {
        "kind": "sample", "source_key": rec.get("request_id"), "gen_id": rec.get("source_key"), "sample": rec.get("sample_index"),
        "item_kind": rec.get("item_kind"), "task": rec.get("task"), "task_family": rec.get("task_family"),
        "answer_format": rec.get("answer_format"), "knowledge": sample.knowledge, "reasoning": sample.reasoning,
        "final_answer_raw": sample.final_answer_raw, "final_answer": sample.final_answer,
        "final_answer_index": sample.final_answer_index, "model": rec.get("model"),
        "prompt_version": rec.get("prompt_version"), "request_id": rec.get("request_id"),
        "run_id": rec.get("run_id"),
    }


# ---------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------
def enrichment_items(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                     include_seeds: bool | None = None) -> DataFrame:
    """Items to enrich (columns _ITEM_COLUMNS): generated rows, plus seeds when configured."""
    generated = lakehouse.read(GENERATED.name)
    if tasks:
        generated = generated.where(F.col("task").isin(list(tasks)))
    items = generated.select(
        "gen_id", F.lit(ITEM_GENERATED).alias("item_kind"), "task", "task_family",
        F.lit(None).cast("string").alias("split"), "answer_format", "question", "context", "choices",
        "answer_index", "answer_text", "license", "license_class")
    if config.enrich.enrich_seeds if include_seeds is None else include_seeds:
        seeds = select_seeds(lakehouse, config, tasks)
        seed_items = lakehouse.read(SEEDS.name).join(seeds.select("seed_id"), "seed_id", "left_semi").select(
            F.col("seed_id").alias("gen_id"), F.lit(ITEM_SEED).alias("item_kind"), "task", "task_family", "split",
            "answer_format", "question", "context", "choices", "answer_index", "answer_text", "license",
            "license_class")
        items = items.unionByName(seed_items)
    return items


def enrichment_plan(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> DataFrame:
    model = config.endpoint.model
    m, temperature, max_tokens = (config.enrich.samples_per_item, config.enrich.temperature,
                                  config.enrich.max_tokens)

    def render(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows: list[dict] = []
            for raw in batch.to_dict("records"):
                item = record_from(raw, _ITEM_COLUMNS)
                rows.extend(enrichment_requests(item, model=model, m=m, temperature=temperature,
                                                max_tokens=max_tokens))
            yield pandas_frame(rows, ENRICH_PLAN_SCHEMA)

    return enrichment_items(lakehouse, config, tasks).mapInPandas(render, ENRICH_PLAN_SCHEMA)


def parse_enrichments(lakehouse: Lakehouse, plan: DataFrame, accounting=None) -> StageResult:
    """Parse every ledger row of the plan into `enriched` / `quarantine` (no endpoint calls)."""
    return finish_stage(lakehouse, plan, ENRICH, parse_enrichment_row, PARSED_SCHEMA, ENRICHED,
                        SAMPLE_CHANGE_COLUMNS, accounting, "enriched_at", "sample")


def run_enrich(
    lakehouse: Lakehouse,
    config: Config,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    endpoint=None,
    run_id: str | None = None,
    retry_failed: bool | None = None,
) -> StageResult:
    return call_and_parse(lakehouse, config, enrichment_plan(lakehouse, config, tasks), ENRICH,
                          parse_enrichments, progress, endpoint, run_id, retry_failed)


def estimate_enrich(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                  retry_failed: bool = False) -> list[EstimateRow]:
    return plan_estimate(lakehouse, enrichment_plan(lakehouse, config, tasks),
                         retry_failed)


# ---------------------------------------------------------------------------------------------
# Pretraining documents
# ---------------------------------------------------------------------------------------------
@F.udf(returnType=StringType())
def _document_udf(item, enrichment):  # no type hints: they would make PySpark try an Arrow UDF
    return format_pretraining_document(item.asDict(recursive=True), enrichment.asDict(recursive=True))


def pretraining_documents(lakehouse: Lakehouse) -> DataFrame:
    """One training text per (item, enrichment sample): the item (generated or seed) with that
    sample's knowledge and reasoning, answered with the item's own answer. Lazy DataFrame with
    gen_id, sample, item_kind, task, task_family, license, license_class, text."""
    items = enrichment_items(lakehouse, lakehouse.config, include_seeds=False)
    seeds = lakehouse.read(SEEDS.name).select(
        F.col("seed_id").alias("gen_id"), F.lit(ITEM_SEED).alias("item_kind"), "task", "task_family", "split",
        "answer_format", "question", "context", "choices", "answer_index", "answer_text", "license",
        "license_class")
    items = items.unionByName(seeds)
    enriched = lakehouse.read(ENRICHED.name).select(
        "gen_id", "sample", "item_kind", "knowledge", "reasoning", "final_answer_raw", "final_answer",
        "final_answer_index")
    joined = enriched.join(items, ["gen_id", "item_kind"], "inner")
    item = F.struct("answer_format", "question", "context", "choices", "answer_index", "answer_text")
    enrichment = F.struct("knowledge", "reasoning", "final_answer_raw", "final_answer", "final_answer_index")
    return joined.select("gen_id", "sample", "item_kind", "task", "task_family", "license", "license_class",
                         _document_udf(item, enrichment).alias("text"))


def register_pretraining_view(lakehouse: Lakehouse, name: str = "pretraining_documents") -> str:
    """A session temp view over `pretraining_documents` (query it with `taskseed sql` in-process)."""
    pretraining_documents(lakehouse).createOrReplaceTempView(name)
    return name


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def cmd_enrich(args, config: Config) -> int:
    return llm_stage_command(args, config, ENRICH, estimate_enrich, run_enrich,
                             require_seeds=config.enrich.enrich_seeds)


def add_enrich_parser(subparsers) -> None:
    add_llm_stage_parser(subparsers, "enrich",
                         "solve every generated item (and optionally seeds) M times into `enriched`",
                         "comma-separated task names (default: every task)", cmd_enrich)
