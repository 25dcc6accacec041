"""`taskseed curate`: score every item with every filter, keep the decisions, publish what passed.

Reads `generated`, `enriched`, `seeds`, `llm_calls`, `license_policy`, the current `curated` (earlier
runs) and whatever the enabled filters' engines read; writes `filter_decisions`, `curated` and
`curated_commercial` (`reads` / `writes` below). The transforms are SQL models under `jobs/sql/`
run by jobs/sqlmodels.py in the order of the tuples below: staging, intermediate, each filter of
`jobs.filters.registry.FILTERS` (jobs/filters/base.py says what a filter is), the curated layer.

Every filter decides every item (each filter's effect can be measured alone); a disabled filter
records `passed = true, reason = 'disabled'` and a filter whose engine is not installed
`reason = 'not_checked'`: nothing is ever silently called clean. Writes are MERGEs within the
scope of `--tasks` (`Lakehouse.merge_in_scope`): a rerun that decides the same things commits
nothing. With `curate.paraphrase.enabled` the judge calls the LLM endpoint, so the stage declares
that it uses the endpoint and runs on the one the pipeline opened. docs/curation.md has the rules.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Callable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import calibration as calib
from jobs.calibration import CalibrationResult, verification_params
from jobs.config import Config, ConfigError
from jobs.filters.base import Engine, Filter, check_decisions, check_schema
from jobs.filters.registry import FILTERS
from jobs.lakehouse import Lakehouse
from jobs.progress import Meter
from jobs.sqlmodels import CurateContext, Model, bind_sql, register_udfs, run_models, sql_literal
from jobs.stage import Stage
from schemas.answer_formats import ALL_FORMATS
from schemas.tables import (
    CURATED,
    CURATED_CHANGE_COLUMNS,
    CURATED_COMMERCIAL,
    FILTER_DECISION_CHANGE_COLUMNS,
    FILTER_DECISIONS,
)

# The models in evaluation order (the filters' models run between INTERMEDIATE and CURATED_MODELS).
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
    """The three curate tables, `calibration` with a calibration sample (jobs/calibration.py), plus
    what the installed engines of enabled filters keep (`minhash_signatures` for near_dup)."""
    tables = list(WRITES)
    if calib.enabled(config):
        tables.extend(calib.WRITES)
    for engine in _running_engines(config):
        tables.extend(t for t in engine.writes if t not in tables)
    return tables


def uses_endpoint(config: Config) -> bool:
    """Whether a run with this config calls the LLM endpoint: an enabled filter's engine does (the
    paraphrase judge)."""
    return any(engine.uses_endpoint for engine in _running_engines(config))


def curate_params(config: Config, tasks: Sequence[str] | None, run_id: str) -> dict[str, Any]:
    """The SQL parameters every model may bind (a prepare step may add its own)."""
    from udfs.validation import combined_marker_pattern

    v = config.curate.validation
    return {
        "all_tasks": not tasks,
        "tasks": list(tasks or []),
        "run_id": run_id,
        "samples_per_item": int(config.enrich.samples_per_item),
        "enrich_seeds": bool(config.enrich.enrich_seeds),
        # per-family thresholds: none until the calibration is measured (run_curate, jobs/calibration.py)
        **verification_params(config, None if config.curate.auto_target is None else CalibrationResult()),
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
    engine = f.engine.loaded() if f.engine is not None else None
    if f.engine is not None and engine is None:
        ctx.not_checked[f.name] = f"{f.engine.module} is not installed"
        return _unchecked_decisions(ctx, f, "not_checked", {"engine": f.engine.name, "why": "not installed"})
    if f.prepare is not None:
        f.prepare(ctx, engine)
    return ctx.spark.sql(bind_sql(f.model.sql(), ctx.params, ctx.table, f.model.path))


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
    calibration: CalibrationResult | None = None
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
        if self.calibration is not None:
            m.update(self.calibration.metrics())
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
        if self.calibration is not None:
            lines.extend(self.calibration.summary_lines())
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


def write_calibration(lakehouse: Lakehouse, calibration: CalibrationResult, tasks: Sequence[str] | None,
                      run_id: str) -> None:
    """MERGE the calibration rows (jobs/calibration.py) into `calibration`: within the measured
    families when `tasks` narrows the run, else the whole table (families no longer measured go)."""
    from schemas.tables import CALIBRATION, CALIBRATION_CHANGE_COLUMNS

    if tasks and not calibration.families:
        return
    df = lakehouse.spark.createDataFrame([tuple(r.get(c) for c in CALIBRATION.columns)
                                          for r in calibration.rows(run_id)], CALIBRATION.schema)
    scope = (f"task_family IN ({', '.join(sql_literal(f) for f in calibration.families)})" if tasks else "true")
    lakehouse.merge_in_scope(df, CALIBRATION, CALIBRATION_CHANGE_COLUMNS, scope)


def scope_predicate(tasks: Sequence[str] | None) -> str:
    """The rows of a curate output a run is responsible for: its tasks, or every row."""
    return f"task IN ({', '.join(sql_literal(t) for t in tasks)})" if tasks else "true"


def run_curate(
    lakehouse: Lakehouse,
    config: Config,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    run_id: str | None = None,
    endpoint: Any = None,
    keep_views: bool = False,
) -> CurateResult:
    """Run every model and filter for the items of `tasks` (None = every task), MERGE the three
    output tables within that scope, and return what was decided and written.

    endpoint: the endpoint the pipeline opened for the run (the paraphrase judge calls it; None:
    the judge opens the configured one, or a simulator). keep_views: leave the models' temp views
    registered (tests and interactive inspection)."""
    say = progress or (lambda _line: None)
    tasks = list(tasks) if tasks else None
    run_id = run_id or uuid.uuid4().hex
    ctx = CurateContext(lakehouse, config, tasks, run_id, params=curate_params(config, tasks, run_id), progress=say,
                        endpoint=endpoint)
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
        if calib.enabled(config):
            say("[curate] measuring the verification vote against gold on the calibration sample…")
            result.calibration = calib.measure_calibration(lakehouse, config, tasks)
        ctx.params.update(verification_params(config, result.calibration))
        say("[curate] staging candidates, enrichment samples, seed keys, licenses…")
        run_models(ctx, STAGING, step)
        result.candidates = ctx.spark.table("stg_candidates").count()
        run_models(ctx, INTERMEDIATE, step)
        say(f"[curate] {result.candidates} candidates; evaluating {len(FILTERS)} filters on every item…")
        run_filters(ctx, FILTERS, on_done=step)
        result.not_checked = dict(ctx.not_checked)
        result.disabled = [f.name for f in FILTERS if not f.is_enabled(config)]
        _tally(ctx, result)
        run_models(ctx, CURATED_MODELS, step)
        scope = scope_predicate(tasks)
        say("[curate] writing filter_decisions, curated, curated_commercial…")
        lakehouse.merge_in_scope(ctx.spark.table(FILTER_DECISIONS.name), FILTER_DECISIONS,
                                 FILTER_DECISION_CHANGE_COLUMNS, scope)
        step(f"merge {FILTER_DECISIONS.name}")
        curated = ctx.spark.table(CURATED.name)
        result.curated = curated.count()
        lakehouse.merge_in_scope(curated, CURATED, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED.name}")
        commercial = ctx.spark.table(CURATED_COMMERCIAL.name)
        result.curated_commercial = commercial.count()
        lakehouse.merge_in_scope(commercial, CURATED_COMMERCIAL, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED_COMMERCIAL.name}")
        if result.calibration is not None:
            write_calibration(lakehouse, result.calibration, tasks, run_id)
        result.versions = {t: (before, lakehouse.version(t)) for t, (before, _) in result.versions.items()}
    finally:
        if not keep_views:
            ctx.drop_views()
    return result


STAGE = Stage(
    name="curate",
    reads=reads,
    writes=writes,
    run=lambda ctx: run_curate(ctx.lakehouse, ctx.config, progress=ctx.progress, endpoint=ctx.endpoint),
    uses_endpoint=uses_endpoint,
    endpoint_stages=("judge",),
)
