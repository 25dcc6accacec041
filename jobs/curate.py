"""`taskseed curate`: score every item with every filter, keep the decisions, publish what passed.

Reads `generated`, `enriched`, `seeds`, `llm_calls`, `license_policy`, the current `curated` (earlier
runs) and whatever the optional engines read (`heldout` for contamination); writes
`filter_decisions`, `curated` and `curated_commercial` (declared in `READS`/`WRITES` below).

The transforms are SQL files under `jobs/sql/`, layered like a dbt project:

    staging/       one cleaned view per source: the candidate items and their comparison keys, the
                   enrichment samples, seed keys, what `curated` already holds, each item's license
    intermediate/  the vote tally, the chosen enrichment sample, and one model per filter
    curated/       the three published tables

Each file is one model: a single SELECT whose view name is the file name. `run_models` binds
`${table.<name>}` to the lakehouse table and `${<param>}` to a SQL literal of a config value
(`curate_params`), runs the models in the order of the explicit tuples below, and registers each
as a session temp view the later models read. There is no Jinja and no registry: the order is
the tuples' order.

A filter is one `Filter` declaration: its name (the `filter_decisions.filter` value), its model under
`intermediate/`, an optional `prepare(ctx)` step that registers the views the model reads (for
near_dup and contamination: the engines' match tables), an enabled-by-config predicate, the tables
it reads and the output it gates (`curated`, or `commercial` for the license filter). Every filter
model returns exactly `gen_id, filter, passed, reason, score, evidence` for every row of
`stg_candidates` (score first, filter second: each filter is evaluated on every item, so each
filter's effect can be measured alone); `check_decisions` enforces that contract and fails naming
the filter. A filter may read earlier filters' views (the dedup filters prefer survivors that passed
validation and verification), so the declaration order is the evaluation order. A disabled filter
records `passed = true, reason = 'disabled'` for every item, and an optional engine that is not
installed records `reason = 'not_checked'`: nothing is ever silently called clean.

Writes are MERGEs on the tables' keys within the scope of `--tasks`: new and changed rows are
written, rows of in-scope tasks that no longer pass are deleted in the same MERGE, and a rerun that
decides the same things commits nothing (run_id and the timestamps are not change columns).
Each table is its own Delta commit; a crash between them is healed by the next run.

Python UDFs only where SQL cannot compute the thing (`register_udfs`): `normalize_text`
(udfs/textnorm.py), `answer_key` (udfs/verification.py) and `pretraining_document`
(udfs/formatting.py), each a pandas UDF over Arrow batches.
"""

from __future__ import annotations

import importlib
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from jobs.progress import Meter
from jobs.stage import Stage
from schemas.tables import (
    ALL_TABLES,
    CURATED,
    CURATED_CHANGE_COLUMNS,
    CURATED_COMMERCIAL,
    FILTER_DECISION_CHANGE_COLUMNS,
    FILTER_DECISIONS,
)
from schemas.answer_formats import ALL_FORMATS
from udfs.frames import to_python

SQL_DIR = Path(__file__).resolve().parent / "sql"

GATE_CURATED = "curated"        # a failed decision keeps the item out of `curated`
GATE_COMMERCIAL = "commercial"  # a failed decision keeps the item out of `curated_commercial` only

# The contract of every filter model's output, in this order and with these types.
DECISION_SCHEMA = StructType([
    StructField("gen_id", StringType()),
    StructField("filter", StringType()),
    StructField("passed", BooleanType()),
    StructField("reason", StringType()),
    StructField("score", DoubleType()),
    StructField("evidence", StringType()),
])

# What the optional engines return (their owners' contracts; see the filter models).
NEAR_DUP_MATCH_SCHEMA = StructType([
    StructField("gen_id", StringType()),
    StructField("component_id", StringType()),
    StructField("component_size", LongType()),
    StructField("best_match_id", StringType()),
    StructField("best_match_jaccard", DoubleType()),
    StructField("seed_match_id", StringType()),
    StructField("seed_match_jaccard", DoubleType()),
])
CONTAMINATION_MATCH_SCHEMA = StructType([
    StructField("item_id", StringType()),
    StructField("rule", StringType()),
    StructField("heldout_id", StringType()),
    StructField("heldout_task", StringType()),
    StructField("heldout_split", StringType()),
    StructField("matched", StringType()),
    StructField("score", DoubleType()),
])


class CurateContractError(RuntimeError):
    """A filter model broke the decision contract (a bug in that filter, not in the data)."""


# ---------------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Model:
    """One SQL model: `jobs/sql/<path>`, registered as the temp view named like the file.
    materialize: checkpoint the result once (models read by many later models)."""

    path: str
    materialize: bool = False

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def layer(self) -> str:
        return Path(self.path).parent.name

    def sql(self) -> str:
        return (SQL_DIR / self.path).read_text(encoding="utf-8")


def _always(_config: Config) -> bool:
    return True


def optional_engine(module: str, attribute: str) -> Callable | None:
    """The engine function if its module is installed, else None. A module that exists but fails
    to import for another reason (a bug, a missing dependency) raises: that is not 'absent'."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        parts = module.split(".")
        if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            return None
        raise
    return getattr(loaded, attribute, None)


@dataclass(frozen=True)
class Engine:
    """The Spark engine behind a filter's prepare step: `module.function`, and the lakehouse tables
    the engine reads and writes itself (its caches and indexes), declared so the stage's lineage
    names them. An engine whose module is not installed is absent: its filter records
    'not_checked' and its tables are not declared."""

    module: str
    function: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.module}.{self.function}"

    def load(self) -> Callable | None:
        return optional_engine(self.module, self.function)

    def available(self) -> bool:
        return self.load() is not None


@dataclass(frozen=True)
class Filter:
    """One filter: `name` is its `filter_decisions.filter` value; `model` its SQL under
    intermediate/; `prepare(ctx)` registers the views the model reads beyond the staged ones;
    `engine` the optional Spark engine handed to `prepare(ctx, engine_function)` (None for a
    filter without one); `enabled(config)` says whether it
    runs (a filter disabled here or listed in `curate.disabled_filters` records 'disabled'
    decisions); `reads` the lakehouse tables it reads itself (SQL and prepare, not its engine's);
    `gate` the output it guards; `required` filters cannot be disabled (license: it is the only
    guard of `curated_commercial`)."""

    name: str
    model: Model
    reads: tuple[str, ...] = ()
    prepare: Callable[["CurateContext", Callable | None], None] | None = None
    engine: Engine | None = None
    enabled: Callable[[Config], bool] = _always
    gate: str = GATE_CURATED
    required: bool = False

    def is_enabled(self, config: Config) -> bool:
        return self.name not in config.curate.disabled_filters and self.enabled(config)


@dataclass
class CurateContext:
    """What a prepare step and the runner share: the lakehouse, config, the run's task scope, the
    SQL parameters (a prepare step may add its own), and the temp views registered so far."""

    lakehouse: Lakehouse
    config: Config
    tasks: list[str] | None
    run_id: str
    params: dict[str, Any] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)
    cached: list[DataFrame] = field(default_factory=list)  # engine results unpersisted by drop_views
    not_checked: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None  # the stage's progress printer (prepare steps may say what they do)

    @property
    def spark(self) -> SparkSession:
        return self.lakehouse.spark

    def table(self, name: str) -> str:
        """What `${table.<name>}` binds to: a temp view `src_<name>` over `Lakehouse.read(name)`
        (created empty if it does not exist yet), so the stage's reads are on the lakehouse's
        access log like every other stage's. ConfigError for a table no TableSpec declares."""
        if name not in ALL_TABLES:
            raise ConfigError(f"curate: unknown table '{name}'")
        view = f"src_{name}"
        if view not in self.views:
            self.register(view, self.lakehouse.read(name))
        return view

    def register(self, name: str, df: DataFrame, cached: DataFrame | None = None) -> DataFrame:
        """A temp view `name` over df; `cached` (an engine's persisted result df derives from) is
        unpersisted with the views, when the run ends."""
        df.createOrReplaceTempView(name)
        if name not in self.views:
            self.views.append(name)
        if cached is not None:
            self.cached.append(cached)
        return df

    def drop_views(self) -> None:
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        self.views.clear()
        for df in self.cached:
            df.unpersist()
        self.cached.clear()


# ---------------------------------------------------------------------------------------------
# Prepare steps of the engine-backed filters
# ---------------------------------------------------------------------------------------------
def _conformed(df: DataFrame, schema: StructType, who: str) -> DataFrame:
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise CurateContractError(f"{who} returned no column(s) {', '.join(missing)}")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def prepare_near_dup(ctx: CurateContext, near_duplicates: Callable) -> None:
    """Register `near_dup_matches`: `jobs.filters.near_dup.near_duplicates` over this run's
    generated candidates plus the generated rows already in `curated` for tasks outside this run's
    scope (so a new item that repeats an earlier curated one is caught, and earlier survivors keep
    winning), against every seed. The engine signs what is new in `minhash_signatures` first."""
    out_of_scope = "true" if not ctx.tasks else f"NOT array_contains({sql_literal(ctx.tasks)}, e.task)"
    generated = ctx.spark.sql(
        "SELECT gen_id, question, context, choices FROM stg_candidates WHERE item_kind = 'generated' "
        "UNION ALL "
        "SELECT e.gen_id, e.question, e.context, e.choices FROM stg_curated_existing e "
        "LEFT ANTI JOIN stg_candidates c ON c.gen_id = e.gen_id "
        f"WHERE e.item_kind = 'generated' AND {out_of_scope}")
    seeds = ctx.lakehouse.read("seeds").select("seed_id", "question", "context", "choices")
    matches = near_duplicates(ctx.lakehouse, ctx.config.curate.near_dup, generated, seeds)
    ctx.register("near_dup_matches", _conformed(matches, NEAR_DUP_MATCH_SCHEMA, "near_duplicates()"))


def prepare_contamination(ctx: CurateContext, contamination_matches: Callable) -> None:
    """Register `contamination_matches`: `jobs.filters.contamination.contamination_matches` (the
    best held-out match per matched item) for the candidates (item_id = gen_id) and for the seeds
    they were generated from (item_id = seed_id), in one call."""
    seeds = ctx.lakehouse.read("seeds")
    items = ctx.spark.sql(
        "SELECT gen_id AS item_id, question, context, choices, answer_text, answer_format FROM stg_candidates")
    seed_items = (seeds.join(ctx.spark.table("stg_candidates").select("seed_id").distinct(), "seed_id", "left_semi")
                  .select(F.col("seed_id").alias("item_id"), "question", "context", "choices", "answer_text",
                          "answer_format"))
    items = items.unionByName(seed_items).dropDuplicates(["item_id"])
    matches = contamination_matches(ctx.lakehouse, ctx.config, items)
    ctx.register("contamination_matches", _conformed(matches, CONTAMINATION_MATCH_SCHEMA,
                                                     "contamination_matches()"), cached=matches)


# The filters whose rejection makes the paraphrase filter skip an item (the cheaper ones: embedding
# and judging an item they already keep out of `curated` would be paid for nothing).
PARAPHRASE_AFTER = ("validation", "exact_dup", "near_dup", "contamination")
PARAPHRASE_MATCH_SCHEMA = StructType([
    StructField("gen_id", StringType()),
    StructField("pair_id", StringType()),
    StructField("heldout_id", StringType()),
    StructField("heldout_task", StringType()),
    StructField("heldout_split", StringType()),
    StructField("similarity", DoubleType()),
    StructField("rank", IntegerType()),
    StructField("verdict", StringType()),
    StructField("request_id", StringType()),
])


def prepare_paraphrase(ctx: CurateContext, paraphrase_matches: Callable) -> None:
    """Register `paraphrase_eligible` (the candidates that passed every filter of PARAPHRASE_AFTER:
    the only ones embedded and judged) and `paraphrase_matches`
    (`jobs.filters.paraphrase.paraphrase_matches`: their held-out neighbours above the floor with
    the judge's verdicts; the judge runs through the LLM engine and ledger as stage 'judge')."""
    joins = " ".join(f"JOIN filter_{name} f_{name} ON f_{name}.gen_id = c.gen_id AND f_{name}.passed"
                     for name in PARAPHRASE_AFTER)
    eligible = ctx.spark.sql(
        f"SELECT c.gen_id, c.task, c.task_family, c.question, c.context, c.choices, c.answer_text "
        f"FROM stg_candidates c {joins}").localCheckpoint(eager=True)
    ctx.register("paraphrase_eligible", eligible)
    matches = paraphrase_matches(ctx.lakehouse, ctx.config, eligible, ctx.progress)
    ctx.register("paraphrase_matches", _conformed(matches, PARAPHRASE_MATCH_SCHEMA, "paraphrase_matches()"))


# ---------------------------------------------------------------------------------------------
# The explicit model and filter tuples (this order is the evaluation order)
# ---------------------------------------------------------------------------------------------
STAGING: tuple[Model, ...] = (
    Model("staging/stg_candidates.sql", materialize=True),
    Model("staging/stg_enrichment_samples.sql"),
    Model("staging/stg_seed_keys.sql"),
    Model("staging/stg_curated_existing.sql", materialize=True),
    Model("staging/stg_item_licenses.sql"),
)
INTERMEDIATE: tuple[Model, ...] = (
    Model("intermediate/int_votes.sql", materialize=True),
    Model("intermediate/int_chosen_sample.sql"),
)
NEAR_DUP_ENGINE = Engine("jobs.filters.near_dup", "near_duplicates",
                         reads=("minhash_signatures",), writes=("minhash_signatures",))
CONTAMINATION_ENGINE = Engine("jobs.filters.contamination", "contamination_matches",
                              reads=("heldout", "heldout_keys", "heldout_shingles"),
                              writes=("heldout_keys", "heldout_shingles"))

PARAPHRASE_ENGINE = Engine("jobs.filters.paraphrase", "paraphrase_matches",
                           reads=("heldout", "heldout_embeddings", "paraphrase_judgments", "llm_calls"),
                           writes=("heldout_embeddings", "paraphrase_judgments", "llm_calls", "quarantine"))

FILTERS: tuple[Filter, ...] = (
    Filter("validation", Model("intermediate/filter_validation.sql"), reads=("seeds", "llm_calls")),
    Filter("verification", Model("intermediate/filter_verification.sql")),
    Filter("exact_dup", Model("intermediate/filter_exact_dup.sql")),
    Filter("near_dup", Model("intermediate/filter_near_dup.sql"), reads=("seeds",), prepare=prepare_near_dup,
           engine=NEAR_DUP_ENGINE),
    Filter("contamination", Model("intermediate/filter_contamination.sql"), reads=("seeds",),
           prepare=prepare_contamination, engine=CONTAMINATION_ENGINE,
           enabled=lambda config: config.curate.contamination.enabled),
    Filter("paraphrase", Model("intermediate/filter_paraphrase.sql"), prepare=prepare_paraphrase,
           engine=PARAPHRASE_ENGINE, enabled=lambda config: config.curate.paraphrase.enabled),
    Filter("license", Model("intermediate/filter_license.sql"), gate=GATE_COMMERCIAL, required=True),
)
CURATED_MODELS: tuple[Model, ...] = (
    Model("curated/filter_decisions.sql"),
    Model("curated/curated.sql", materialize=True),
    Model("curated/curated_commercial.sql"),
)
DECISIONS_VIEW = "int_filter_decisions"

# Tables the staging models read, and the tables the stage writes itself (engines add their own).
READS: tuple[str, ...] = ("generated", "enriched", "seeds", "license_policy", "curated")
WRITES: tuple[str, ...] = (FILTER_DECISIONS.name, CURATED.name, CURATED_COMMERCIAL.name)


def _running_engines(config: Config) -> list[Engine]:
    return [f.engine for f in FILTERS if f.engine is not None and f.is_enabled(config) and f.engine.available()]


def reads(config: Config) -> list[str]:
    """Tables this stage reads with this config: the staging models' sources, each enabled
    filter's own reads, and the tables of the engines that are installed."""
    tables = list(READS)
    for f in FILTERS:
        if f.is_enabled(config):
            tables.extend(t for t in f.reads if t not in tables)
    for engine in _running_engines(config):
        tables.extend(t for t in engine.reads if t not in tables)
    return tables


def writes(config: Config) -> list[str]:
    """The three curate tables, plus what the installed engines of enabled filters keep
    (`minhash_signatures` for near_dup)."""
    tables = list(WRITES)
    for engine in _running_engines(config):
        tables.extend(t for t in engine.writes if t not in tables)
    return tables


# ---------------------------------------------------------------------------------------------
# Binding and running SQL models
# ---------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")


def sql_literal(value: Any) -> str:
    """A Python value as a Spark SQL literal: None, bool, int, float (double), str (escaped), a list
    (array; an empty list is an empty array<string>) or a dict (map)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"no SQL literal for {value!r}")
        return f"{value!r}D"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        if not value:
            return "CAST(array() AS ARRAY<STRING>)"
        return "array(" + ", ".join(sql_literal(v) for v in value) + ")"
    if isinstance(value, dict):
        if not value:
            raise ValueError("no SQL literal for an empty map")
        return "map(" + ", ".join(f"{sql_literal(k)}, {sql_literal(v)}" for k, v in value.items()) + ")"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def bind_sql(text: str, params: dict[str, Any], table: Callable[[str], str], model: str = "<sql>") -> str:
    """Replace `${table.<name>}` with `table(name)` and `${<param>}` with the parameter's SQL
    literal. An unknown parameter or namespace is an error naming the model."""
    def replace(match: re.Match) -> str:
        head, tail = match.group(1), match.group(2)
        if tail is not None:
            if head != "table":
                raise ConfigError(f"{model}: unknown placeholder namespace '${{{head}.{tail}}}'")
            return table(tail)
        if head not in params:
            raise ConfigError(f"{model}: no value bound for '${{{head}}}'")
        return sql_literal(params[head])

    return _PLACEHOLDER.sub(replace, text)


def run_model(ctx: CurateContext, model: Model) -> DataFrame:
    """Bind, run and register one model as its temp view; checkpointed if `materialize`."""
    df = ctx.spark.sql(bind_sql(model.sql(), ctx.params, ctx.table, model.path))
    if model.materialize:
        df = df.localCheckpoint(eager=True)
    return ctx.register(model.name, df)


def run_models(ctx: CurateContext, models: Sequence[Model], on_done: Callable[[str], None] | None = None) -> None:
    """Run `models` in order; `on_done(name)` after each (progress)."""
    for model in models:
        run_model(ctx, model)
        if on_done is not None:
            on_done(model.name)


def curate_params(config: Config, tasks: Sequence[str] | None, run_id: str) -> dict[str, Any]:
    """The SQL parameters every model may bind (a prepare step may add its own)."""
    from udfs.validation import combined_marker_pattern

    v = config.curate.validation
    return {
        "all_tasks": not tasks,
        "tasks": list(tasks or []),
        "run_id": run_id,
        "samples_per_item": int(config.enrich.samples_per_item),
        "min_agreement": config.curate.min_agreement,
        "answer_formats": list(ALL_FORMATS),
        "min_question_chars": v.min_question_chars,
        "max_question_chars": v.max_question_chars,
        "max_context_chars": v.max_context_chars,
        "max_choice_chars": v.max_choice_chars,
        "min_choices": v.min_choices,
        "max_choices": v.max_choices,
        "max_answer_chars": dict(v.max_answer_chars) or {"mcq": 1000},
        "template_marker_pattern": combined_marker_pattern(),
    }


# ---------------------------------------------------------------------------------------------
# UDFs (thin wrappers over pure functions in udfs/)
# ---------------------------------------------------------------------------------------------
def _normalize_text_batch(text: pd.Series) -> pd.Series:
    from udfs.textnorm import normalize_text

    return text.map(normalize_text)


def _answer_key_batch(answer_format: pd.Series, answer: pd.Series, answer_index: pd.Series,
                      choices: pd.Series) -> pd.Series:
    from udfs.verification import answer_key

    return pd.Series([answer_key(to_python(f), to_python(a), to_python(i), to_python(c))
                      for f, a, i, c in zip(answer_format, answer, answer_index, choices)], dtype=object)


def _document_batch(answer_format: pd.Series, question: pd.Series, context: pd.Series, choices: pd.Series,
                    answer_index: pd.Series, answer_text: pd.Series, knowledge: pd.Series,
                    reasoning: pd.Series, final_answer_raw: pd.Series, final_answer: pd.Series,
                    final_answer_index: pd.Series) -> pd.Series:
    from udfs.formatting import format_pretraining_document

    out = []
    for row in zip(answer_format, question, context, choices, answer_index, answer_text, knowledge, reasoning,
                   final_answer_raw, final_answer, final_answer_index):
        (fmt, q, ctx, ch, idx, ans, kn, rs, far, fa, fai) = (to_python(v) for v in row)
        item = {"answer_format": fmt, "question": q, "context": ctx, "choices": ch,
                "answer_index": int(idx) if idx is not None else None, "answer_text": ans}
        enrichment = {"knowledge": kn, "reasoning": rs, "final_answer_raw": far, "final_answer": fa,
                      "final_answer_index": int(fai) if fai is not None else None}
        out.append(format_pretraining_document(item, enrichment))
    return pd.Series(out, dtype=object)


def register_udfs(spark: SparkSession) -> None:
    """Register the SQL functions the models call: normalize_text(s), answer_key(format, answer,
    index, choices), pretraining_document(format, question, context, choices, answer_index,
    answer_text, knowledge, reasoning, final_answer_raw, final_answer, final_answer_index)."""
    from pyspark.sql.functions import pandas_udf

    spark.udf.register("normalize_text", pandas_udf(_normalize_text_batch, StringType()))
    spark.udf.register("answer_key", pandas_udf(_answer_key_batch, StringType()))
    spark.udf.register("pretraining_document", pandas_udf(_document_batch, StringType()))


# ---------------------------------------------------------------------------------------------
# Filters: run, check the contract
# ---------------------------------------------------------------------------------------------
def _unchecked_decisions(ctx: CurateContext, f: Filter, reason: str, evidence: dict | None) -> DataFrame:
    """Every candidate passes with `reason` ('disabled', 'not_checked'): recorded as unchecked,
    never as clean."""
    text = "CAST(NULL AS STRING)" if evidence is None else sql_literal(json.dumps(evidence, sort_keys=True))
    return ctx.spark.sql(
        f"SELECT gen_id, {sql_literal(f.name)} AS filter, true AS passed, {sql_literal(reason)} AS reason, "
        f"CAST(NULL AS DOUBLE) AS score, {text} AS evidence FROM stg_candidates")


def evaluate_filter(ctx: CurateContext, f: Filter) -> DataFrame:
    """One filter's decisions on every candidate (unchecked): 'disabled' when the config turns it
    off, 'not_checked' when its engine is not installed, else its prepare step and SQL model."""
    if not f.is_enabled(ctx.config):
        return _unchecked_decisions(ctx, f, "disabled", None)
    engine = f.engine.load() if f.engine is not None else None
    if f.engine is not None and engine is None:
        ctx.not_checked[f.name] = f"{f.engine.module} is not installed"
        return _unchecked_decisions(ctx, f, "not_checked", {"engine": f.engine.name, "why": "not installed"})
    if f.prepare is not None:
        f.prepare(ctx, engine)
    return ctx.spark.sql(bind_sql(f.model.sql(), ctx.params, ctx.table, f.model.path))


def check_schema(f: Filter, df: DataFrame) -> None:
    got = [(x.name, x.dataType) for x in df.schema.fields]
    want = [(x.name, x.dataType) for x in DECISION_SCHEMA.fields]
    if got != want:
        pretty = ", ".join(f"{n} {t.simpleString()}" for n, t in got)
        raise CurateContractError(
            f"filter '{f.name}' ({f.model.path}) must return exactly "
            f"gen_id string, filter string, passed boolean, reason string, score double, evidence string; "
            f"it returned: {pretty}")


def run_filters(ctx: CurateContext, filters: Sequence[Filter] | None = None,
                on_done: Callable[[str], None] | None = None) -> DataFrame:
    """Evaluate every filter (default: `FILTERS`) on every candidate; register and return the
    checked union (`int_filter_decisions`: the decision columns plus `gate`). `on_done(name)`
    after each filter is materialized (progress)."""
    filters = FILTERS if filters is None else filters
    unknown = sorted(set(ctx.config.curate.disabled_filters) - {f.name for f in filters})
    if unknown:
        raise ConfigError(f"curate.disabled_filters: unknown filter(s) {', '.join(unknown)}; "
                          f"the filters are {', '.join(f.name for f in filters)}")
    required = sorted({f.name for f in filters if f.required} & set(ctx.config.curate.disabled_filters))
    if required:
        raise ConfigError(f"curate.disabled_filters: {', '.join(required)} cannot be disabled")
    parts = []
    for f in filters:
        df = evaluate_filter(ctx, f)
        check_schema(f, df)
        # materialized once: later filters may read it
        df = ctx.register(f.model.name, df.localCheckpoint(eager=True))
        parts.append(df.withColumn("gate", F.lit(f.gate)).withColumn("_declared", F.lit(f.name)))
        if on_done is not None:
            on_done(f"filter {f.name}")
    # checkpointed as one relation: plans downstream see no Union (whose constraint propagation
    # over checkpointed children trips Spark 4.x's optimizer: "key not found" in rewriteConstraints)
    union = reduce(DataFrame.unionByName, parts).localCheckpoint(eager=True)
    check_decisions(ctx, union, filters)
    return ctx.register(DECISIONS_VIEW, union.drop("_declared"))


def check_decisions(ctx: CurateContext, decisions: DataFrame, filters: Sequence[Filter]) -> None:
    """Every filter decided every candidate exactly once, with a non-null `passed` and `reason`,
    under its declared name, and about no other item. Raises CurateContractError naming the filter."""
    candidates = ctx.spark.table("stg_candidates").select("gen_id")
    n = candidates.count()
    stats = {
        r["_declared"]: r
        for r in decisions.join(candidates.withColumn("_known", F.lit(True)), "gen_id", "left")
        .groupBy("_declared")
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("gen_id").alias("ids"),
             F.count(F.when(F.col("passed").isNull(), 1)).alias("null_passed"),
             F.count(F.when(F.col("reason").isNull(), 1)).alias("null_reason"),
             F.count(F.when(F.col("_known").isNull(), 1)).alias("unknown"),
             F.count(F.when(~F.col("filter").eqNullSafe(F.col("_declared")), 1)).alias("misnamed"))
        .collect()
    }
    problems = []
    for f in filters:
        s = stats.get(f.name)
        rows, ids = (s["rows"], s["ids"]) if s else (0, 0)
        where = f"filter '{f.name}' ({f.model.path})"
        if rows != n or ids != n:
            problems.append(f"{where}: {rows} rows for {ids} distinct gen_ids, expected one per candidate ({n})")
        if s and s["null_passed"]:
            problems.append(f"{where}: {s['null_passed']} rows with passed NULL")
        if s and s["null_reason"]:
            problems.append(f"{where}: {s['null_reason']} rows with reason NULL")
        if s and s["unknown"]:
            problems.append(f"{where}: {s['unknown']} rows for gen_ids that are not candidates")
        if s and s["misnamed"]:
            problems.append(f"{where}: {s['misnamed']} rows whose filter column is not '{f.name}'")
    if problems:
        raise CurateContractError("filter decision contract broken:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
@dataclass
class CurateResult:
    """What one curate run decided and wrote."""

    run_id: str
    tasks: list[str] | None
    candidates: int = 0
    by_filter: dict[str, dict[tuple[bool, str], int]] = field(default_factory=dict)
    rejected_by_family: dict[str, dict[str, int]] = field(default_factory=dict)
    curated: int = 0
    curated_commercial: int = 0
    not_checked: dict[str, str] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    versions: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    def failed(self, name: str) -> int:
        return sum(n for (passed, _), n in self.by_filter.get(name, {}).items() if not passed)

    def reasons(self, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, reason), n in self.by_filter.get(name, {}).items():
            out[reason] = out.get(reason, 0) + n
        return out

    def committed(self, table: str) -> bool:
        before, after = self.versions.get(table, (None, None))
        return after is not None and after != before

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow: candidates, curated sizes, per filter passed/failed and
        per reason, rejections per filter per task family, unchecked filters, commits per table."""
        m = {"curate.candidates": float(self.candidates), "curate.curated": float(self.curated),
             "curate.curated_commercial": float(self.curated_commercial)}
        for name, counts in self.by_filter.items():
            m[f"curate.{name}.failed"] = float(self.failed(name))
            m[f"curate.{name}.passed"] = float(self.candidates - self.failed(name))
            for reason, n in self.reasons(name).items():
                m[f"curate.{name}.reason.{reason}"] = float(n)
        for name, families in self.rejected_by_family.items():
            for family, n in families.items():
                m[f"curate.{name}.rejected.{family}"] = float(n)
        for name in self.not_checked:
            m[f"curate.not_checked.{name}"] = 1.0
        for table in self.versions:
            m[f"curate.commits.{table}"] = 1.0 if self.committed(table) else 0.0
        return m

    def summary_lines(self) -> list[str]:
        scope = ",".join(self.tasks) if self.tasks else "all tasks"
        lines = [f"[curate] {self.candidates} candidate items ({scope}): curated={self.curated}, "
                 f"curated_commercial={self.curated_commercial}"]
        for name in self.by_filter:
            failed = {r: n for (p, r), n in self.by_filter[name].items() if not p}
            passed = {r: n for (p, r), n in self.by_filter[name].items() if p}
            detail = ", ".join(f"{r}={n}" for r, n in sorted(failed.items())) or "-"
            kept = ", ".join(f"{r}={n}" for r, n in sorted(passed.items())) or "-"
            lines.append(f"[curate] {name:<13} failed {self.failed(name):>6} ({detail}); passed: {kept}")
        for name, why in self.not_checked.items():
            lines.append(f"[curate] {name}: NOT CHECKED ({why}); its decisions say reason='not_checked'")
        if self.disabled:
            lines.append(f"[curate] disabled by config: {', '.join(self.disabled)} (reason='disabled')")
        commits = ", ".join(
            f"{t} v{after}" if self.committed(t) else f"{t} unchanged"
            for t, (_, after) in self.versions.items())
        lines.append(f"[curate] tables: {commits}")
        return lines


def _tally(ctx: CurateContext, result: CurateResult) -> None:
    rows = (ctx.spark.table(DECISIONS_VIEW).join(ctx.spark.table("stg_candidates").select("gen_id", "task_family",
                                                                                          "task"), "gen_id")
            .groupBy("filter", "passed", "reason", F.coalesce("task_family", "task").alias("family"))
            .count().collect())
    result.by_filter = {f.name: {} for f in FILTERS}
    for r in rows:
        counts = result.by_filter.setdefault(r["filter"], {})
        counts[(r["passed"], r["reason"])] = counts.get((r["passed"], r["reason"]), 0) + r["count"]
        if not r["passed"]:
            fam = result.rejected_by_family.setdefault(r["filter"], {})
            fam[r["family"] or "(none)"] = fam.get(r["family"] or "(none)", 0) + r["count"]


def scope_predicate(tasks: Sequence[str] | None) -> str:
    """The rows of a curate output a run is responsible for: its tasks, or every row."""
    return f"task IN ({', '.join(sql_literal(t) for t in tasks)})" if tasks else "true"


_STALE = "_stale"


def merge_in_scope(lakehouse: Lakehouse, df: DataFrame, spec, change_columns: list[str], scope: str) -> None:
    """MERGE `df` into `spec`'s table so that, inside `scope` (a SQL predicate over the table's
    columns), the table ends up holding exactly `df`'s rows: new keys inserted, changed rows
    updated, and rows of the scope whose key `df` lacks deleted, in one MERGE (one Delta version;
    none when nothing differs). Rows outside the scope are never touched. The target's keys are
    read as the MERGE's own look at its target, not as a stage input."""
    keys = list(spec.keys)
    target = lakehouse.spark.table(lakehouse.table_name(spec.name)) if lakehouse.exists(spec.name) else None
    source = df.withColumn(_STALE, F.lit(False))
    if target is not None:
        stale = target.where(scope).select(*keys).join(df.select(*keys), keys, "left_anti")
        source = source.unionByName(stale.withColumn(_STALE, F.lit(True)), allowMissingColumns=True)
    lakehouse.merge(source, spec, update_when_changed=change_columns, delete_when=F.col(_STALE))


def run_curate(
    lakehouse: Lakehouse,
    config: Config,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    run_id: str | None = None,
    keep_views: bool = False,
) -> CurateResult:
    """Run every model and filter for the items of `tasks` (None = every task), MERGE the three
    output tables within that scope, and return what was decided and written.

    keep_views: leave the models' temp views registered (tests and interactive inspection)."""
    say = progress or (lambda _line: None)
    tasks = list(tasks) if tasks else None
    run_id = run_id or uuid.uuid4().hex
    ctx = CurateContext(lakehouse, config, tasks, run_id, params=curate_params(config, tasks, run_id), progress=say)
    result = CurateResult(run_id=run_id, tasks=tasks)
    result.versions = {t: (lakehouse.version(t), None) for t in WRITES}
    register_udfs(lakehouse.spark)
    # Progress by step (each SQL model, each filter, each MERGE), with rate and ETA; steps differ
    # in cost (near_dup and contamination dominate), so the ETA is a rough one.
    meter = Meter("[curate]", say, total=len(STAGING) + len(INTERMEDIATE) + len(FILTERS) + len(CURATED_MODELS) + 3,
                  unit="steps")

    def step(name: str) -> None:
        meter.update(meter.done + 1, extra=f"done: {name}")

    try:
        say("[curate] staging candidates, enrichment samples, seed keys, licenses…")
        run_models(ctx, STAGING, step)
        result.candidates = ctx.spark.table("stg_candidates").count()
        run_models(ctx, INTERMEDIATE, step)
        say(f"[curate] {result.candidates} candidates; evaluating {len(FILTERS)} filters on every item…")
        run_filters(ctx, on_done=step)
        result.not_checked = dict(ctx.not_checked)
        result.disabled = [f.name for f in FILTERS if not f.is_enabled(config)]
        _tally(ctx, result)
        run_models(ctx, CURATED_MODELS, step)
        scope = scope_predicate(tasks)
        say("[curate] writing filter_decisions, curated, curated_commercial…")
        merge_in_scope(lakehouse, ctx.spark.table(FILTER_DECISIONS.name), FILTER_DECISIONS,
                       FILTER_DECISION_CHANGE_COLUMNS, scope)
        step(f"merge {FILTER_DECISIONS.name}")
        curated = ctx.spark.table(CURATED.name)
        result.curated = curated.count()
        merge_in_scope(lakehouse, curated, CURATED, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED.name}")
        commercial = ctx.spark.table(CURATED_COMMERCIAL.name)
        result.curated_commercial = commercial.count()
        merge_in_scope(lakehouse, commercial, CURATED_COMMERCIAL, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED_COMMERCIAL.name}")
        result.versions = {t: (before, lakehouse.version(t)) for t, (before, _) in result.versions.items()}
    finally:
        if not keep_views:
            ctx.drop_views()
    return result


STAGE = Stage(
    name="curate",
    reads=reads,
    writes=writes,
    run=lambda ctx: run_curate(ctx.lakehouse, ctx.config, progress=ctx.progress),
)
