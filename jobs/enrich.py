"""Stage `enrich`: items → M solving samples each → `enriched` (+ `quarantine`).

Reads `generated` (and `seeds` with `enrich.enrich_seeds`) and the `llm_calls` ledger; writes
`llm_calls`, `enriched`, `quarantine`. The plan → call → parse machinery is jobs/llm_stage; the
row logic is udfs/llm_rows.py (`enrichment_requests`, `parse_enrichment_row`). What is enrich's own:

- **Which items**: the rows of `generated` (item_kind 'generated', keyed by gen_id) and, with
  `enrich.enrich_seeds`, the seeds themselves ("answer-enriched seeds": item_kind 'seed', keyed by
  their seed_id in the gen_id column; both ids are content hashes from different namespaces).
  `generate.seeds_per_task` and `--tasks` narrow the seeds exactly as they do for generation.
- **Calibration sample**: with `enrich.calibration_per_family` > 0, also the seeds of the
  calibration sample (jobs/calibration.py: per family the first N by sha256(seed_id)), as
  item_kind 'seed' like answer-enriched seeds; curate measures the vote against their gold. They
  are curated items only with `enrich.enrich_seeds`.
- **Requests**: one solving prompt per item (its answer never shown), M = `enrich.samples_per_item`
  sample indices at `enrich.temperature` (non-zero, so the samples are independent votes for
  majority voting).
- **Samples**: `enriched` keyed (gen_id, sample) gets knowledge, reasoning, the raw final answer
  and the final answer normalized per format (plus its option index for choice formats). A sample
  whose answer names no valid option is kept with `final_answer` NULL; only outputs with no final
  answer at all (and `failed` calls) are quarantined. Only the current plan's requests are parsed,
  so each (gen_id, sample) has one source request; a config change (temperature, prompt version)
  replaces the samples in place.

The pretraining document of a curated item is rendered once, in curate (`curated.document`,
udfs/formatting.py through the SQL function jobs/sqlmodels.py registers).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import calibration
from jobs.config import Config
from jobs.generate import select_seeds
from jobs.lakehouse import Lakehouse
from jobs.llm_stage import LLMStageSpec, StageResult, pipeline_stage, run_stage, typed_fields
from schemas.tables import ENRICHED, GENERATED, SEEDS
from udfs.llm_rows import ENRICHMENT_RECORD, enrichment_requests, parse_enrichment_row
from udfs.prompts import ENRICH

ITEM_GENERATED, ITEM_SEED = "generated", "seed"

ITEM_COLUMNS = ("gen_id", "item_kind", "task", "task_family", "split", "answer_format", "question",
                "context", "choices", "answer_index", "answer_text", "license", "license_class")


def _seed_items(seeds: DataFrame) -> DataFrame:
    return seeds.select(F.col("seed_id").alias("gen_id"), F.lit(ITEM_SEED).alias("item_kind"),
                        *[c for c in ITEM_COLUMNS if c not in ("gen_id", "item_kind")])


def enrichment_items(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                     include_seeds: bool | None = None) -> DataFrame:
    """Items to enrich (ITEM_COLUMNS): generated rows, plus seeds when `include_seeds` (default
    `enrich.enrich_seeds`), plus the calibration sample when `enrich.calibration_per_family` > 0."""
    generated = lakehouse.read(GENERATED.name)
    if tasks:
        generated = generated.where(F.col("task").isin(list(tasks)))
    items = generated.select(
        "gen_id", F.lit(ITEM_GENERATED).alias("item_kind"), "task", "task_family",
        F.lit(None).cast("string").alias("split"), "answer_format", "question", "context", "choices",
        "answer_index", "answer_text", "license", "license_class")
    seed_ids = None
    if config.enrich.enrich_seeds if include_seeds is None else include_seeds:
        seed_ids = select_seeds(lakehouse, config, tasks).select("seed_id")
    if calibration.enabled(config):
        sample = calibration.sample_seeds(lakehouse, config, tasks).select("seed_id")
        seed_ids = sample if seed_ids is None else seed_ids.unionByName(sample).distinct()
    if seed_ids is not None:
        items = items.unionByName(_seed_items(lakehouse.read(SEEDS.name).join(seed_ids, "seed_id", "left_semi")))
    return items


def item_requests(item: dict, *, calibration_ids: frozenset[str], m: int, **options) -> list[dict]:
    """An item's plan rows: M samples, M + 1 for a seed of the calibration sample (sample M is the
    stand-in for a generated item's own answer, udfs/calibration.py; samples 0..M-1 are the same
    requests an answer-enriched seed sends)."""
    extra = 1 if item.get("item_kind") == ITEM_SEED and item.get("gen_id") in calibration_ids else 0
    return enrichment_requests(item, m=m + extra, **options)


def enrichment_request_builder(lakehouse: Lakehouse, config: Config,
                               tasks: Sequence[str] | None = None) -> Callable[[dict], list[dict]]:
    """item → its M plan rows (M + 1 for a calibration seed)."""
    return partial(item_requests, calibration_ids=calibration.sample_ids(lakehouse, config, tasks),
                   model=config.stage_endpoint("enrich").model, m=config.enrich.samples_per_item,
                   temperature=config.enrich.temperature, max_tokens=config.enrich.max_tokens)


def enrich_inputs(config: Config) -> tuple[str, ...]:
    uses_seeds = config.enrich.enrich_seeds or calibration.enabled(config)
    return (GENERATED.name, SEEDS.name) if uses_seeds else (GENERATED.name,)


ENRICH_SPEC = LLMStageSpec(
    name=ENRICH,
    inputs=enrich_inputs,
    output=ENRICHED,
    items=enrichment_items,
    request_builder=enrichment_request_builder,
    row_parser=parse_enrichment_row,
    record_fields=typed_fields(ENRICHMENT_RECORD, SEEDS, ENRICHED),
    change_columns=("knowledge", "reasoning", "final_answer_raw", "final_answer", "final_answer_index",
                    "request_id"),
    timestamp_column="enriched_at",
    noun="samples",
)


def run_enrich(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
               progress: Callable[[str], None] | None = None, **options) -> StageResult:
    """Plan, call (only what the ledger lacks, within budget), parse the ledger into tables;
    `options` (endpoint, run_id, retry_failed) as for `jobs.llm_stage.run_stage`."""
    return run_stage(ENRICH_SPEC, lakehouse, config, tasks, progress, **options)


STAGE = pipeline_stage(ENRICH_SPEC)

