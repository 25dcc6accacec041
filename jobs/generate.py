"""Stage `generate`: seeds → K new task-aligned items each → `generated` (+ `quarantine`).

Reads `seeds` and the `llm_calls` ledger; writes `llm_calls`, `generated`, `quarantine`. The
plan → call → parse machinery is jobs/llm_stage (what every LLM stage shares); the row logic is
udfs/llm_rows.py (`generation_requests`, `parse_generation_row`). What is generate's own:

- **Which seeds**: all seeds of the selected tasks, or with `generate.seeds_per_task` the ones with
  the lowest `seed_id` per task: seed ids are content hashes, so that is a deterministic
  pseudo-random sample that does not move on reruns.
- **Few-shot exemplars** come only from the same task's training split (the `seeds` table holds
  nothing else): per task the first `EXEMPLAR_POOL` seeds by `doc_index` (stable when more of the
  split is ingested later, so earlier prompts and their ledger rows stay valid), collected once
  per run and broadcast; each seed takes `generate.fewshot` of them, rotated by its seed_id and
  never itself, and never a seed whose text fails the validation filter's marker rules (an
  injection payload or template token would be copied into other seeds' prompts)
  (`udfs.llm_rows.choose_exemplars`). The plan is not shuffled by task: the broadcast
  pool makes every seed renderable wherever it is, so the scan of `seeds` streams partition by
  partition.
- **Requests**: one rendered prompt per seed, K = `generate.items_per_seed` sample indices at
  `generate.temperature`; a seed that cannot be rendered (mcq without options, ...) is quarantined
  as `render_error` with source_key = seed_id.
- **Items**: `gen_id = stable_hash("generated", request_id)`: one item answers one request, and the
  request id covers model, prompt version, rendered prompt, sampling parameters and sample index,
  so the id is stable across reruns and re-parses; a re-parse that changes an item rewrites it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from jobs.llm_stage import LLMStageSpec, StageResult, pipeline_stage, run_stage, typed_fields
from jobs.stage import tables
from schemas.tables import GENERATED, SEEDS
from udfs.llm_rows import GENERATION_RECORD, choose_exemplars, generation_requests, parse_generation_row
from udfs.prompts import GENERATE

EXEMPLAR_POOL = 8  # exemplar candidates collected per task (plus one, so a pool seed still gets `fewshot`)

SEED_COLUMNS = ("seed_id", "task", "task_family", "split", "doc_index", "answer_format", "question",
                "context", "choices", "answer_text", "license", "license_class")


def select_seeds(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> DataFrame:
    """The seeds a run works on (SEED_COLUMNS): optionally some tasks, optionally the
    `generate.seeds_per_task` lowest seed ids per task."""
    seeds = lakehouse.read(SEEDS.name).select(*SEED_COLUMNS)
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


def generation_request_builder(lakehouse: Lakehouse, config: Config,
                               tasks: Sequence[str] | None = None) -> Callable[[dict], list[dict]]:
    """seed → its K plan rows, with the task's exemplar pool collected once and broadcast."""
    broadcast = lakehouse.spark.sparkContext.broadcast(exemplar_pool(lakehouse, config, tasks))
    fewshot, k = config.generate.fewshot, config.generate.items_per_seed
    model = config.stage_endpoint("generate").model
    temperature, max_tokens = config.generate.temperature, config.generate.max_tokens

    def requests(seed: dict) -> list[dict]:
        exemplars = choose_exemplars(seed["seed_id"], broadcast.value.get(seed["task"], []), fewshot)
        return generation_requests(seed, exemplars, model=model, k=k, temperature=temperature, max_tokens=max_tokens)

    return requests


GENERATE_SPEC = LLMStageSpec(
    name=GENERATE,
    inputs=tables(SEEDS.name),
    output=GENERATED,
    items=select_seeds,
    request_builder=generation_request_builder,
    row_parser=parse_generation_row,
    record_fields=typed_fields(GENERATION_RECORD, SEEDS),
    change_columns=("question", "context", "choices", "answer_index", "answer_text", "answer_format"),
    timestamp_column="generated_at",
    noun="items",
)


def run_generate(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                 progress: Callable[[str], None] | None = None, **options) -> StageResult:
    """Plan, call (only what the ledger lacks, within budget), parse the ledger into tables;
    `options` (endpoint, run_id, retry_failed) as for `jobs.llm_stage.run_stage`."""
    return run_stage(GENERATE_SPEC, lakehouse, config, tasks, progress, **options)


def require_seeds(lakehouse: Lakehouse, tasks: Sequence[str] | None) -> None:
    """ConfigError unless `seeds` has rows (for each of `tasks`, when given)."""
    seeds = lakehouse.read(SEEDS.name)
    if not tasks and not seeds.limit(1).count():
        raise ConfigError("the seeds table is empty: run `taskseed ingest` first")
    if tasks:
        found = {r.task for r in seeds.where(F.col("task").isin(list(tasks))).select("task").distinct().collect()}
        missing = [t for t in tasks if t not in found]
        if missing:
            raise ConfigError(f"no seeds for task(s) {', '.join(missing)}: run `taskseed ingest` first")


STAGE = pipeline_stage(GENERATE_SPEC)
