"""What every curation filter is: a `Filter` declaration, an optional `Engine` behind it, and the
decision contract the curate stage checks.

A filter's SQL model (under `jobs/sql/intermediate/`) returns exactly `DECISION_SCHEMA` — `gen_id,
filter, passed, reason, score, evidence` — for every row of `stg_candidates`, under its declared
name; `check_schema` and `check_decisions` enforce that and fail naming the filter. An engine-backed
filter also declares its `Engine`: the Spark function that computes what SQL cannot (near
duplicates, held-out matches, paraphrase verdicts), the filter's `prepare(ctx, function)` step that
calls it and registers its result as the views the model reads (`conformed` to the filter's match
schema), and the lakehouse tables the engine keeps itself. docs/curation.md says how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, StringType, StructField, StructType

from jobs.config import Config
from jobs.sqlmodels import CurateContext, Model

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


class CurateContractError(RuntimeError):
    """A filter model or engine broke its contract (a bug in that filter, not in the data)."""


def _always(_config: Config) -> bool:
    return True


@dataclass(frozen=True)
class Engine:
    """The Spark engine behind a filter's prepare step. `module`.`function` names it (evidence,
    messages); `load()` returns the function with a plain import, so an engine from a package that
    is not installed raises ModuleNotFoundError naming that package; `reads` / `writes`: the
    lakehouse tables the engine reads and writes itself (its caches and indexes), declared so the
    stage's lineage names them; `uses_endpoint`: it calls the LLM endpoint. An absent engine's
    filter records 'not_checked' and its tables are not declared."""

    module: str
    function: str
    load: Callable[[], Callable]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    uses_endpoint: bool = False  # it calls the LLM endpoint (the stage then declares that it does)

    @property
    def name(self) -> str:
        return f"{self.module}.{self.function}"

    def loaded(self) -> Callable | None:
        """The engine function, or None when its module is not installed. A module that exists
        but fails to import for another reason (a bug, a missing dependency) raises: that is not
        'absent'."""
        try:
            return self.load()
        except ModuleNotFoundError as exc:
            parts = self.module.split(".")
            if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
                return None
            raise

    def available(self) -> bool:
        return self.loaded() is not None


@dataclass(frozen=True)
class Filter:
    """One filter: `name` is its `filter_decisions.filter` value; `model` its SQL under
    intermediate/; `prepare(ctx, engine_function)` registers the views the model reads beyond the
    staged ones; `engine` the optional Spark engine handed to it (None for a filter without one);
    `enabled(config)` says whether it runs (a filter disabled here or listed in
    `curate.disabled_filters` records 'disabled' decisions); `reads` the lakehouse tables it reads
    itself (SQL and prepare, not its engine's); `gate` the output it guards; `required` filters
    cannot be disabled (license: it is the only guard of `curated_commercial`)."""

    name: str
    model: Model
    reads: tuple[str, ...] = ()
    prepare: Callable[[CurateContext, Callable | None], None] | None = None
    engine: Engine | None = None
    enabled: Callable[[Config], bool] = _always
    gate: str = GATE_CURATED
    required: bool = False

    def is_enabled(self, config: Config) -> bool:
        return self.name not in config.curate.disabled_filters and self.enabled(config)


def conformed(df: DataFrame, schema: StructType, who: str) -> DataFrame:
    """`df` as exactly `schema`'s columns, cast to its types; CurateContractError naming `who` when
    a column is missing (an engine's result, before the filter's model reads it)."""
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise CurateContractError(f"{who} returned no column(s) {', '.join(missing)}")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def check_schema(f: Filter, df: DataFrame) -> None:
    got = [(x.name, x.dataType) for x in df.schema.fields]
    want = [(x.name, x.dataType) for x in DECISION_SCHEMA.fields]
    if got != want:
        pretty = ", ".join(f"{n} {t.simpleString()}" for n, t in got)
        raise CurateContractError(
            f"filter '{f.name}' ({f.model.path}) must return exactly "
            f"gen_id string, filter string, passed boolean, reason string, score double, evidence string; "
            f"it returned: {pretty}")


def check_decisions(ctx: CurateContext, decisions: DataFrame, filters: Sequence[Filter],
                    candidates_count: int | None = None) -> None:
    """Every filter decided every candidate exactly once, with a non-null `passed` and `reason`,
    under its declared name, and about no other item. Raises CurateContractError naming the filter.
    candidates_count: the row count of `stg_candidates` when the caller has it (else counted here)."""
    candidates = ctx.spark.table("stg_candidates").select("gen_id")
    n = candidates.count() if candidates_count is None else candidates_count
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
