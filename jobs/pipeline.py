"""`taskseed run`: the whole DAG in order on one Spark session, tracked as one MLflow run.

The stages are the `STAGE` declarations of their modules (jobs/stage.py); their order and the
lineage of each stage run (MLflow inputs and outputs pinned to Delta versions) come from the
tables each declares it reads and writes. Each stage runs the same function its own CLI command
calls, so a Databricks job (one task per stage, resources/taskseed_job.yml) and a local run do the
same work. Every stage is idempotent, so rerunning `run` after a crash continues where the ledger
and the MERGEd tables left off.

The endpoints of the LLM stages (`endpoint`, or a stage's own: generate.endpoint, enrich.endpoint,
curate.paraphrase.judge_endpoint) are opened once per run; the built-in simulator, started once for
every stage whose endpoint has no base_url, serves each of their models.
"""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from jobs import catalog, curate, enrich, generate, ingest, publish
from jobs.config import Config, ConfigError
from jobs.stage import Stage, StageContext, dag_order, quiet
from schemas.tables import CURATED, CURATED_COMMERCIAL

# Append a stage here (after writing its module's STAGE) and the pipeline runs it in DAG order.
PIPELINE: tuple[Stage, ...] = (catalog.STAGE, ingest.STAGE, generate.STAGE, enrich.STAGE, curate.STAGE,
                              publish.STAGE)
STAGES = tuple(stage.name for stage in dag_order(PIPELINE, Config()))


@dataclass
class StageRun:
    """One stage of a pipeline run: its result (None when skipped), why it was skipped, how long
    it took, and the tables it actually read and wrote."""

    result: Any
    seconds: float
    skipped: str | None = None
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


def _numeric_metrics(result: Any) -> dict[str, float]:
    """Flatten a stage result (dict or object with .metrics()/.to_dict()) to numeric metrics."""
    if result is None:
        return {}
    if hasattr(result, "metrics") and callable(result.metrics):
        data = result.metrics()
    elif hasattr(result, "to_dict"):
        data = result.to_dict()
    elif isinstance(result, dict):
        data = result
    else:
        return {}
    flat: dict[str, float] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            flat[prefix] = float(value)
        elif isinstance(value, dict):
            for key, child in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), child)

    visit("", data)
    return {k.replace(" ", "_")[:250]: v for k, v in flat.items() if k}


def lineage_tables(config: Config) -> list[str]:
    """The tables a publication's rows derive from with this config, whose Delta versions its
    manifest records: every table a stage before publish reads or writes (in DAG order, so the
    held-out index tables, `heldout_embeddings` and `paraphrase_judgments` appear when their filters
    are enabled), except the published datasets themselves (their version is `delta_version`)."""
    published = {CURATED.name, CURATED_COMMERCIAL.name}
    names: list[str] = []
    for stage in dag_order(PIPELINE, config):
        if stage is publish.STAGE:
            continue
        names.extend(t for t in (*stage.reads(config), *stage.writes(config)) if t not in published and t not in names)
    return names


def select_stages(names: Sequence[str] | None, config: Config) -> list[Stage]:
    """The named stages (default: all) in DAG order; ConfigError for an unknown name."""
    by_name = {stage.name: stage for stage in PIPELINE}
    unknown = [n for n in names or () if n not in by_name]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    wanted = set(names) if names else set(by_name)
    return [stage for stage in dag_order(PIPELINE, config) if stage.name in wanted]


def endpoint_stages(selected: Sequence[Stage], config: Config) -> list[str]:
    """The ledger stages whose endpoints a run of `selected` calls (in order, once each)."""
    names: list[str] = []
    for stage in selected:
        if stage.uses_endpoint(config):
            names.extend(n for n in stage.endpoint_stages or (stage.name,) if n not in names)
    return names


def endpoint_lines(config: Config, endpoints: dict) -> list[str]:
    """One progress line per stage endpoint of a run: URL (no credentials) or replicas, model; the
    simulator said as such. Never a key."""
    from jobs.tracking import safe_endpoint_url

    lines = []
    for stage, settings in endpoints.items():
        ep = config.stage_endpoint(stage) if stage else config.endpoint
        name = stage or "endpoint"
        if not ep.configured:
            lines.append(f"endpoint [{name}]: none configured (no base_url), so the built-in simulator answers at "
                         f"{settings.base_url} as model {ep.model}: its output is simulator output, not a model's")
        elif ep.replicas:
            urls = ", ".join(f"{safe_endpoint_url(r.base_url)} ×{r.max_concurrency or ep.max_concurrency}"
                             for r in ep.replicas)
            lines.append(f"endpoint [{name}]: model={ep.model} on {len(ep.replicas)} replicas: {urls}")
        else:
            lines.append(f"endpoint [{name}]: {safe_endpoint_url(ep.base_url)} model={ep.model}")
        if ep.mode == "batch" and stage in ("generate", "enrich"):  # the stages run_stage sends (the judge stays online)
            lines[-1] += "; batch mode: requests go through the Batch API (/v1/files, /v1/batches), polled until done"
    return lines


def run_pipeline(lakehouse, config: Config, stages: Sequence[str] | None = None,
                 progress: Callable[[str], None] = quiet, refresh_catalog: bool = False,
                 track: bool = True, task_index=None) -> dict[str, StageRun]:
    """Run the stages (names; default all) in DAG order; returns {stage: StageRun}. One MLflow run,
    a child run per stage with its declared inputs and outputs logged as Delta-pinned datasets, its
    metrics, its outcome tag and its artifacts (jobs/tracking.py says what is logged where).

    task_index: a prebuilt jobs.catalog.TaskIndex (tests pass a small one); built when None.
    An exception in a stage ends its child run and the parent run as FAILED and propagates.
    """
    import mlflow

    import jobs.llm_stage
    from jobs.tracking import OUTCOME_TAG, pipeline_run

    selected = select_stages(stages, config)
    ledger_stages = endpoint_stages(selected, config)
    runs: dict[str, StageRun] = {}
    tracking = pipeline_run(config, "taskseed-run") if track else nullcontext()
    opened = jobs.llm_stage.endpoints_for(config, ledger_stages) if ledger_stages else nullcontext()
    with tracking as run, opened as endpoint:
        run_id = run.info.run_id if run is not None else uuid.uuid4().hex
        if run is not None:
            progress(f"mlflow: run {run_id} in experiment {run.info.experiment_id} ({mlflow.get_tracking_uri()})")
        for line in endpoint_lines(config, endpoint or {}):
            progress(line)
        context = StageContext(lakehouse, config, progress, endpoint=endpoint, task_index=task_index,
                               refresh_catalog=refresh_catalog, run_id=run_id, lineage=tuple(lineage_tables(config)))
        current = None
        try:
            for stage in selected:
                current = stage.name
                runs[stage.name] = _run_stage(stage, context, track)
            current = None
        finally:
            if track:
                mlflow.set_tag(OUTCOME_TAG, "done" if current is None else f"failed in {current}")
                written = sorted({t for stage in selected for t in stage.writes(config)})
                mlflow.log_params({f"output.{t}.delta_version": lakehouse.version(t)
                                   for t in written if lakehouse.exists(t)})
    return runs


def _run_stage(stage: Stage, context: StageContext, track: bool) -> StageRun:
    """One stage inside its MLflow child run (when tracked); progress lines for its summary."""
    import mlflow

    from jobs.tracking import OUTCOME_TAG, log_artifacts, log_table_versions, stage_run

    lakehouse, config, progress = context.lakehouse, context.config, context.progress
    progress(f"== {stage.name} ==")
    started = time.monotonic()
    with (stage_run(stage.name) if track else nullcontext()):
        if track:
            log_table_versions(lakehouse, list(stage.reads(config)), "input")
        skipped = stage.skip(context) if stage.skip is not None else None
        if skipped:
            progress(f"{stage.name}: skipped: {skipped}")
            outcome = StageRun(None, 0.0, skipped=skipped)
        else:
            with lakehouse.recording() as access:
                result = stage.run(context)
            outcome = StageRun(result, time.monotonic() - started, reads=access.reads, writes=access.writes)
            _note_undeclared(stage, config, outcome, progress)
        if track:
            mlflow.log_metric("seconds", outcome.seconds)
            metrics = _numeric_metrics(outcome.result)
            if metrics:
                mlflow.log_metrics(metrics)
            log_table_versions(lakehouse, list(stage.writes(config)), "output")
            if hasattr(outcome.result, "artifacts"):
                log_artifacts(outcome.result.artifacts())
            mlflow.set_tag(OUTCOME_TAG, f"skipped: {skipped}" if skipped else "done")
    for line in (outcome.result.summary_lines() if hasattr(outcome.result, "summary_lines") else []):
        progress(line)
    progress(f"{stage.name}: done in {outcome.seconds:.1f}s")
    return outcome


def _note_undeclared(stage: Stage, config: Config, outcome: StageRun, progress: Callable[[str], None]) -> None:
    """Say so when a stage touched a table it does not declare (its lineage would be incomplete)."""
    for kind, declared, actual in (("read", stage.reads(config), outcome.reads),
                                   ("wrote", stage.writes(config), outcome.writes)):
        extra = sorted(actual - set(declared))
        if extra:
            progress(f"{stage.name}: warning: {kind} undeclared table(s) {', '.join(extra)}; "
                     "its MLflow lineage misses them")
