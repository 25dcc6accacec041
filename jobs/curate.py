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
import time
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
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
from jobs.lakehouse import Lakehouse, row_count
from jobs.progress import Meter
from jobs.sqlmodels import CurateContext, Model, bind_sql, register_udfs, run_models, sql_literal
from jobs.stage import Stage
from schemas.answer_formats import ALL_FORMATS
from schemas.tables import (
    ALL_TABLES,
    CURATE_RUNS,
    CURATED,
    CURATED_CHANGE_COLUMNS,
    CURATED_COMMERCIAL,
    FILTER_DECISION_CHANGE_COLUMNS,
    FILTER_DECISIONS,
)
from udfs.curate_state import (
    CURATE_CODE_VERSION,
    CurateFingerprint,
    digest,
    retry_pending,
    scope_key,
    source_digest,
    versions_text,
    what_changed,
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
    Model("curated/curated_commercial.sql", materialize=True),
)
DECISIONS_VIEW = "int_filter_decisions"

# Tables the staging models read, and the tables the stage writes itself (engines add their own).
READS: tuple[str, ...] = ("generated", "enriched", "seeds", "license_policy", "curated")
WRITES: tuple[str, ...] = (FILTER_DECISIONS.name, CURATED.name, CURATED_COMMERCIAL.name)


def _running_engines(config: Config) -> list[Engine]:
    return [f.engine for f in FILTERS if f.engine is not None and f.is_enabled(config) and f.engine.available()]


def reads(config: Config) -> list[str]:
    """Tables this stage reads with this config: the staging models' sources, each enabled
    filter's own reads, the tables of the engines that are installed, and `curate_runs` (the last
    run's fingerprint)."""
    tables = [*READS, CURATE_RUNS.name]
    for f in FILTERS:
        if f.is_enabled(config):
            tables.extend(t for t in f.reads if t not in tables)
    for engine in _running_engines(config):
        tables.extend(t for t in engine.reads if t not in tables)
    return tables


def writes(config: Config) -> list[str]:
    """The three curate tables, `calibration` with a calibration sample (jobs/calibration.py), plus
    what the installed engines of enabled filters keep (`minhash_signatures` for near_dup)."""
    tables = [*WRITES, CURATE_RUNS.name]
    if calib.enabled(config):
        tables.extend(calib.WRITES)
    for engine in _running_engines(config):
        tables.extend(t for t in engine.writes if t not in tables)
    return tables


def uses_endpoint(config: Config) -> bool:
    """Whether a run with this config calls the LLM endpoint: an enabled filter's engine does (the
    paraphrase judge)."""
    return any(engine.uses_endpoint for engine in _running_engines(config))


# ---- the fingerprint of a run (issue 28: a rerun with nothing new evaluates nothing) -------------

_ROOT = Path(__file__).resolve().parent.parent
# The source the filters' decisions come from: the SQL models, the filters, this stage and its
# runner, the calibration, and the pure functions under udfs/.
CODE_GLOBS = ("jobs/sql/**/*.sql", "jobs/filters/*.py", "jobs/curate.py", "jobs/sqlmodels.py", "jobs/calibration.py",
              "udfs/*.py")


@lru_cache(maxsize=1)
def _source_digest() -> str:
    files = {p for pattern in CODE_GLOBS for p in _ROOT.glob(pattern) if p.is_file()}
    return source_digest((p.relative_to(_ROOT).as_posix(), p.read_bytes()) for p in files)


def code_digest(config: Config, filters: Sequence[Filter] | None = None) -> str:
    """sha256 of `CURATE_CODE_VERSION`, the source digest of `CODE_GLOBS` and the declared filters
    (name, model path, gate, engine and whether it is installed): a filter plugged in, an engine
    installed, or an edited rule each change it."""
    filters = FILTERS if filters is None else filters
    declared = [[f.name, f.model.path, f.gate, f.engine.name if f.engine else None,
                 bool(f.engine and f.is_enabled(config) and f.engine.available())] for f in filters]
    return digest({"version": CURATE_CODE_VERSION, "source": _source_digest(), "filters": declared})


def curate_settings(config: Config) -> dict[str, Any]:
    """The settings curate's decisions depend on: every `curate.*` key, the `enrich` keys staging,
    the vote and calibration read, and the judge's model when the paraphrase filter runs (its
    verdicts are looked up by model) with its cross-lingual models when they are installed (None when
    off or missing). Names of secrets' sources only, never a secret."""
    settings: dict[str, Any] = {
        "curate": config.curate.model_dump(mode="json"),
        "enrich": {k: getattr(config.enrich, k) for k in ("samples_per_item", "enrich_seeds", "calibration_per_family")},
    }
    if config.curate.paraphrase.enabled:
        settings["judge_model"] = config.stage_endpoint("judge").model
        # the cross-lingual retrieval runs only when its package is installed (else English-only,
        # said once): installing it changes what the filter can find, so it changes the fingerprint
        from udfs.embeddings_e5 import missing_message as e5_missing
        from udfs.embeddings_multilingual import missing_message

        ml = config.curate.paraphrase.multilingual_model
        settings["multilingual_retrieval"] = ml if ml is not None and missing_message(ml) is None else None
        e5 = config.curate.paraphrase.e5_model  # the same for the e5 retrieval (Devanagari)
        settings["e5_retrieval"] = e5 if e5 is not None and e5_missing(e5) is None else None
    return settings


def fingerprint_tables(config: Config) -> list[str]:
    """The tables a run's decisions are a function of: what it reads and what it keeps itself
    (`reads`, `writes`), but not `curate_runs`."""
    return sorted((set(reads(config)) | set(writes(config))) - {CURATE_RUNS.name})


def last_run(lakehouse: Lakehouse, scope: str) -> Any:
    """The newest `curate_runs` row of `scope` (a mapping of its columns), or None. Read from the
    table's latest commit when that is one run's append of this scope (`_last_appended_run`: no
    Spark job), else with a query."""
    row = _last_appended_run(lakehouse, scope)
    if row is not None:
        lakehouse._note("reads", CURATE_RUNS.name)  # the access log of the stage, as `read` notes it
        return row
    return (lakehouse.read(CURATE_RUNS.name).where(F.col("scope") == scope)
            .orderBy(F.col("finished_at").desc(), F.col("run_id").desc()).limit(1).first())


def _last_appended_run(lakehouse: Lakehouse, scope: str) -> dict[str, Any] | None:
    """The row the latest Delta commit of `curate_runs` appended, when that commit is a plain
    append (operation WRITE, Append mode) of one data file and no removal whose rows include
    `scope` (the newest of them); None otherwise (a home on a URI, any other commit, another
    scope, an unreadable log): the caller queries instead. Delta protocol: the newest commit file
    `<version>.json` holds one JSON action per line; an append adds files and removes none, so its
    rows are the newest of the table."""
    import pyarrow.parquet as pq

    if lakehouse.remote or lakehouse.managed:
        return None
    log = lakehouse.table_path(CURATE_RUNS.name) / "_delta_log"
    from jobs.lakehouse import latest_commit_version

    version = latest_commit_version(log)
    if version is None:
        return None
    try:
        actions = [json.loads(line) for line in (log / f"{version:020d}.json").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    except (OSError, ValueError):
        return None
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    adds = [a["add"] for a in actions if "add" in a]
    if info.get("operation") != "WRITE" or (info.get("operationParameters") or {}).get("mode") != "Append" \
            or len(adds) != 1 or any(k in a for a in actions for k in ("remove", "metaData", "protocol")) \
            or adds[0].get("deletionVector"):
        return None
    from urllib.parse import unquote

    try:
        rows = pq.read_table(lakehouse.table_path(CURATE_RUNS.name) / unquote(adds[0]["path"])).to_pylist()
    except (OSError, ValueError):
        return None
    rows = [r for r in rows if r.get("scope") == scope]
    if not rows or not set(CURATE_RUNS.columns) <= set(rows[0]):
        return None
    return max(rows, key=lambda r: (r["finished_at"], r["run_id"]))


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
                on_done: Callable[[str], None] | None = None, candidates: int | None = None) -> DataFrame:
    """Evaluate every filter (default: `FILTERS`) on every candidate; register and return the
    checked union (`int_filter_decisions`: the decision columns plus `gate`). `on_done(name)`
    after each filter is materialized (progress); `candidates`: the row count of `stg_candidates`
    when the caller has it (else the check counts them)."""
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
    check_decisions(ctx, union, filters, candidates)
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
    # the fingerprint check (issue 28): why every item was evaluated, or the run nothing changed since
    evaluated_because: list[str] = field(default_factory=list)
    unchanged_since: str | None = None
    inputs: dict[str, int | None] = field(default_factory=dict)
    tally_rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per step, in run order
    spark_jobs: dict[str, int] = field(default_factory=dict)  # Spark jobs started per step (`spark_job_count`)

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
             "curate.curated_commercial": float(self.curated_commercial),
             "curate.items_evaluated": 0.0 if self.unchanged_since else float(self.candidates)}
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
        lines = []
        if self.unchanged_since:
            lines.append(f"[curate] nothing new since run {self.unchanged_since} (inputs at versions "
                         f"{versions_text(self.inputs)}); 0 items evaluated; its decisions:")
        elif self.evaluated_because:
            lines.append(f"[curate] evaluated every item: {'; '.join(self.evaluated_because)}")
        lines.append(f"[curate] {self.candidates} candidate items ({scope}): curated={self.curated}, "
                     f"curated_commercial={self.curated_commercial}")
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
        if self.seconds:
            lines.append("[curate] seconds by step: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        if self.spark_jobs:
            lines.append(f"[curate] Spark jobs by step ({sum(self.spark_jobs.values())}): "
                         + ", ".join(f"{k} {v}" for k, v in self.spark_jobs.items() if v))
        return lines


def _tally(ctx: CurateContext, result: CurateResult) -> None:
    rows = (ctx.spark.table(DECISIONS_VIEW).join(ctx.spark.table("stg_candidates").select("gen_id", "task_family",
                                                                                          "task"), "gen_id")
            .groupBy("filter", "passed", "reason", F.coalesce("task_family", "task").alias("family"))
            .count().collect())
    _apply_tally(result, [r.asDict() for r in rows])


def _apply_tally(result: CurateResult, rows: list[dict[str, Any]]) -> None:
    """Fill `by_filter` and `rejected_by_family` from tally rows (filter, passed, reason, family, count)."""
    result.tally_rows = sorted(rows, key=lambda r: (r["filter"], r["passed"], r["reason"], r["family"] or ""))
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


def spark_job_count(spark) -> int:
    """How many Spark jobs this application has started so far that belong to no job group (curate
    sets none; the paraphrase judge's calls run in their own group): the highest such job id + 1,
    from the status tracker (which keeps the last `spark.ui.retainedJobs` jobs), 0 before any job."""
    ids = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    return max(ids) + 1 if ids else 0


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
    force: bool = False,
) -> CurateResult:
    """Run every model and filter for the items of `tasks` (None = every task), MERGE the three
    output tables within that scope, record the run's fingerprint in `curate_runs`, and return what
    was decided and written.

    First the fingerprint check (udfs/curate_state.py): when the last recorded run of the same scope
    has the same input table versions, settings and filter code, and left no decision a retry could
    change, nothing is evaluated or written and the result carries that run's tally
    (`unchanged_since`); otherwise `evaluated_because` says what changed. force: evaluate anyway.

    endpoint: the endpoint the pipeline opened for the run (the paraphrase judge calls it; None:
    the judge opens the configured one, or a simulator). keep_views: leave the models' temp views
    registered (tests and interactive inspection)."""
    say = progress or (lambda _line: None)
    started = last = time.monotonic()
    tasks = list(tasks) if tasks else None
    run_id = run_id or uuid.uuid4().hex
    result = CurateResult(run_id=run_id, tasks=tasks)

    jobs_before = spark_job_count(lakehouse.spark)

    def mark(name: str) -> None:
        nonlocal last, jobs_before
        now, jobs = time.monotonic(), spark_job_count(lakehouse.spark)
        result.seconds[name] = result.seconds.get(name, 0.0) + round(now - last, 3)
        result.spark_jobs[name] = result.spark_jobs.get(name, 0) + jobs - jobs_before
        last, jobs_before = now, jobs

    # the fingerprint: tables a run may create empty are created first, so a run that created one
    # reads the same version as the next run will
    scope_id = scope_key(tasks)
    tables = fingerprint_tables(config)
    for name in tables:
        if name in ALL_TABLES and not lakehouse.exists(name):
            lakehouse.ensure(ALL_TABLES[name])
    before = {t: lakehouse.version(t) for t in tables}
    current = CurateFingerprint(scope_id, before, digest(curate_settings(config)), code_digest(config))
    mark("fingerprint")
    previous = None if force else last_run(lakehouse, scope_id)
    mark("last run")
    if force:
        result.evaluated_because = ["--force"]
    else:
        stored = None if previous is None else CurateFingerprint(
            scope_id, CurateFingerprint.parse_inputs(previous["inputs"]), previous["config_digest"],
            previous["code_digest"])
        result.evaluated_because = what_changed(stored, current)
        pending = retry_pending(json.loads(previous["tally"] or "[]")) if previous is not None else {}
        result.evaluated_because += [f"{n} '{reason}' decisions to retry" for reason, n in sorted(pending.items())]
        if not result.evaluated_because:
            return _unchanged(result, previous, before, config, say)
    say(f"[curate] evaluating every item: {'; '.join(result.evaluated_because)}")

    ctx = CurateContext(lakehouse, config, tasks, run_id, params=curate_params(config, tasks, run_id), progress=say,
                        endpoint=endpoint)
    result.versions = {t: (lakehouse.version(t), None) for t in WRITES}
    register_udfs(lakehouse.spark)
    # Progress by step (each SQL model, each filter, each MERGE), with rate and ETA; steps differ
    # in cost (near_dup and contamination dominate), so the ETA is a rough one.
    meter = Meter("[curate]", say, total=len(STAGING) + len(INTERMEDIATE) + len(FILTERS) + len(CURATED_MODELS) + 3,
                  unit="steps")

    def step(name: str) -> None:
        mark(name)
        meter.update(meter.done + 1, extra=f"done: {name}")

    try:
        if calib.enabled(config):
            say("[curate] measuring the verification vote against gold on the calibration sample…")
            result.calibration = calib.measure_calibration(lakehouse, config, tasks)
            mark("calibration")
        ctx.params.update(verification_params(config, result.calibration))
        say("[curate] staging candidates, enrichment samples, seed keys, licenses…")
        run_models(ctx, STAGING, step)
        result.candidates = row_count(ctx.spark.table("stg_candidates"))  # checkpointed: one job
        mark("count candidates")
        run_models(ctx, INTERMEDIATE, step)
        say(f"[curate] {result.candidates} candidates; evaluating {len(FILTERS)} filters on every item…")
        run_filters(ctx, FILTERS, on_done=step, candidates=result.candidates)
        result.not_checked = dict(ctx.not_checked)
        result.disabled = [f.name for f in FILTERS if not f.is_enabled(config)]
        _tally(ctx, result)
        mark("tally")
        run_models(ctx, CURATED_MODELS, step)
        scope = scope_predicate(tasks)
        say("[curate] writing filter_decisions, curated, curated_commercial…")
        lakehouse.merge_in_scope(ctx.spark.table(FILTER_DECISIONS.name), FILTER_DECISIONS,
                                 FILTER_DECISION_CHANGE_COLUMNS, scope)
        step(f"merge {FILTER_DECISIONS.name}")
        curated = ctx.spark.table(CURATED.name)
        result.curated = row_count(curated)
        lakehouse.merge_in_scope(curated, CURATED, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED.name}")
        commercial = ctx.spark.table(CURATED_COMMERCIAL.name)
        result.curated_commercial = row_count(commercial)
        lakehouse.merge_in_scope(commercial, CURATED_COMMERCIAL, CURATED_CHANGE_COLUMNS, scope)
        step(f"merge {CURATED_COMMERCIAL.name}")
        if result.calibration is not None:
            write_calibration(lakehouse, result.calibration, tasks, run_id)
            mark("write calibration")
        result.versions = {t: (before_, lakehouse.version(t)) for t, (before_, _) in result.versions.items()}
        _record(lakehouse, config, result, current, time.monotonic() - started)
        mark("record run")
    finally:
        if not keep_views:
            ctx.drop_views()
    return result


def _record(lakehouse: Lakehouse, config: Config, result: CurateResult, fingerprint: CurateFingerprint,
            seconds: float) -> None:
    """Append the run's row to `curate_runs`. Its `inputs`: the versions after the run of the
    tables the run writes (its outputs, signatures, held-out index, judge verdicts), the versions
    before it of the tables it only reads (one written meanwhile by someone else then differs at
    the next run, which evaluates again)."""
    written = set(writes(config))
    result.inputs = {t: (lakehouse.version(t) if t in written else v) for t, v in fingerprint.inputs.items()}
    row = {
        "run_id": result.run_id, "scope": fingerprint.scope, "inputs": json.dumps(result.inputs, sort_keys=True),
        "config_digest": fingerprint.config, "code_digest": fingerprint.code, "candidates": result.candidates,
        "curated": result.curated, "curated_commercial": result.curated_commercial,
        "tally": json.dumps(result.tally_rows, sort_keys=True), "not_checked": json.dumps(result.not_checked,
                                                                                          sort_keys=True),
        "seconds": round(seconds, 3), "finished_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }
    lakehouse.append(lakehouse.spark.createDataFrame([tuple(row[c] for c in CURATE_RUNS.columns)], CURATE_RUNS.schema),
                     CURATE_RUNS)


def _unchanged(result: CurateResult, previous: Any, inputs: dict[str, int | None], config: Config,
               say: Callable[[str], None]) -> CurateResult:
    """The result of a run with nothing new: `previous`'s counts and tally, no table written."""
    result.unchanged_since = previous["run_id"]
    result.inputs = dict(inputs)
    result.candidates, result.curated = int(previous["candidates"] or 0), int(previous["curated"] or 0)
    result.curated_commercial = int(previous["curated_commercial"] or 0)
    _apply_tally(result, json.loads(previous["tally"] or "[]"))
    result.not_checked = json.loads(previous["not_checked"] or "{}")
    result.disabled = [f.name for f in FILTERS if not f.is_enabled(config)]
    result.versions = {t: (inputs.get(t), inputs.get(t)) for t in WRITES}
    say(f"[curate] nothing new since run {result.unchanged_since} (inputs at versions {versions_text(inputs)}); "
        f"0 items evaluated")
    return result


STAGE = Stage(
    name="curate",
    reads=reads,
    writes=writes,
    run=lambda ctx: run_curate(ctx.lakehouse, ctx.config, progress=ctx.progress, endpoint=ctx.endpoint),
    uses_endpoint=uses_endpoint,
    endpoint_stages=("judge",),
)
