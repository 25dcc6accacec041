"""Plan → call → parse for any `LLMStageSpec`, and the dry-run estimate."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Mapping, Sequence

from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from jobs.llm_stage.call import run_llm_stage
from jobs.llm_stage.endpoint import endpoint_for, stage_settings
from jobs.llm_stage.parse import StageResult, parse_plan
from jobs.llm_stage.plan import EstimateRow, build_plan, plan_estimate
from jobs.llm_stage.spec import REQUEST_COLUMNS, LLMStageSpec
from jobs.stage import Stage, StageContext
from schemas.tables import LLM_BATCH_REQUESTS
from udfs.llm_batch import HOLDING
from udfs.llm_client import EndpointSettings


def run_stage(
    spec: LLMStageSpec,
    lakehouse: Lakehouse,
    config: Config,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    endpoint: "EndpointSettings | Mapping[str, EndpointSettings] | None" = None,
    run_id: str | None = None,
    retry_failed: bool | None = None,
) -> StageResult:
    """Plan the stage's requests, send only what the ledger lacks (within `llm.max_requests` /
    `llm.max_tokens_budget`; `retry_failed` re-sends `failed` ones, default `llm.retry_failed`),
    then parse the whole plan from the ledger into the output table and `quarantine`. Requests a
    batch holds (`without_batched`) are left to their batch.

    Only one run of a stage works on a lakehouse at a time: a second one raises
    `jobs.lakehouse.WriterConflict` naming the first before it plans anything.
    tasks: only items of these tasks (default: all). endpoint: EndpointSettings, or a {stage:
    EndpointSettings} map (the pipeline's); default the stage's configured endpoint
    (`Config.stage_endpoint`), or the simulator when it has no base_url and no replicas.
    progress: receives one line per ledger commit (batch mode: one per poll, then the summary).

    In `endpoint.mode: batch` (the stage's endpoint) the pending requests go through the Batch API
    instead (`_run_batch_mode`, jobs/llm_stage/batch_online.py): same ledger, same parse step.
    """
    with lakehouse.exclusive(f"llm-stage-{spec.name}"):  # one run of a stage per lakehouse at a time
        plan = build_plan(spec, lakehouse, config, tasks)
        if config.stage_endpoint(spec.name).mode == "batch":
            return _run_batch_mode(spec, lakehouse, config, plan, tasks, progress, endpoint, retry_failed)
        requests = without_batched(lakehouse, plan.where(F.col("render_error").isNull()).select(*REQUEST_COLUMNS))
        accounting = run_llm_stage(lakehouse, config, requests, spec.name,
                                   None if progress is None else (lambda p: progress(p.line())),
                                   endpoint=endpoint, run_id=run_id, retry_failed=retry_failed)
        return parse_plan(spec, lakehouse, plan, accounting)


def _run_batch_mode(spec: LLMStageSpec, lakehouse: Lakehouse, config: Config, plan, tasks, progress, endpoint,
                    retry_failed: bool | None) -> StageResult:
    """`endpoint.mode: batch`: the plan's pending requests through the Batch API
    (jobs/llm_stage/batch_online.py), then the parse step over the whole plan. The run's summary
    lines go to `progress`."""
    from jobs.llm_stage.batch_online import run_batch_stage

    retry = config.llm.retry_failed if retry_failed is None else retry_failed
    settings = stage_settings(endpoint, spec.name)
    with contextlib.ExitStack() as stack:
        if settings is None:
            settings = stack.enter_context(endpoint_for(config, spec.name))
        run = run_batch_stage(spec, lakehouse, config, plan, settings, tasks, progress, retry)
    for line in run.summary_lines():
        (progress or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
    return parse_plan(spec, lakehouse, plan, run.accounting())


def without_batched(lakehouse: Lakehouse, requests):
    """`requests` without those a batch in a HOLDING status holds (`llm_batch_requests`,
    udfs/llm_batch.py): a request exported or submitted in a batch is answered by that batch, never
    online as well. No-op (and no table created) on a lakehouse that never used batch mode."""
    if not lakehouse.exists(LLM_BATCH_REQUESTS.name):
        return requests
    held = (lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("batch_status").isin(*HOLDING))
            .select("request_id").distinct())
    return requests.join(held, "request_id", "left_anti")


def estimate_stage(spec: LLMStageSpec, lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None,
                   retry_failed: bool = False) -> list[EstimateRow]:
    """Per task family, what `run_stage` would send now and its token estimate; sends nothing."""
    return plan_estimate(lakehouse, build_plan(spec, lakehouse, config, tasks), retry_failed)


def pipeline_stage(spec: LLMStageSpec) -> Stage:
    """The pipeline's view of an LLM stage: the spec's tables, run on its endpoint of the run's
    {ledger stage: EndpointSettings} (`StageContext.endpoint`)."""

    def run(ctx: StageContext) -> StageResult:
        return run_stage(spec, ctx.lakehouse, ctx.config, progress=ctx.progress, endpoint=ctx.endpoint)

    return Stage(name=spec.name, reads=spec.reads, writes=spec.writes, run=run, uses_endpoint=lambda _config: True,
                 endpoint_stages=(spec.name,))
