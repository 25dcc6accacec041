"""`taskseed run`: the whole DAG in order on one Spark session, tracked as one MLflow run.

catalog → ingest → generate → enrich. Each stage is the same function its own CLI command
calls, so a Databricks job (one task per stage, resources/taskseed_job.yml) and a local run do
the same work. Every stage is idempotent, so rerunning `run` after a crash continues where the
ledger and the MERGEd tables left off.

The endpoint (or the built-in simulator when `endpoint.base_url` is null) is opened once for
the LLM stages and shared by them.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from jobs.config import Config

STAGES = ("catalog", "ingest", "generate", "enrich")
STAGE_OUTPUTS = {
    "catalog": ["task_catalog", "license_policy"],
    "ingest": ["seeds", "heldout", "quarantine"],
    "generate": ["llm_calls", "generated", "quarantine"],
    "enrich": ["llm_calls", "enriched", "quarantine"],
}
STAGE_INPUTS = {"ingest": ["task_catalog"], "generate": ["seeds"], "enrich": ["generated"]}


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


def catalog_is_current(lakehouse) -> bool:
    from jobs.catalog import lm_eval_version

    if not lakehouse.exists("task_catalog"):
        return False
    row = lakehouse.read("task_catalog").selectExpr("min(lm_eval_version) v", "count(*) n").first()
    return bool(row["n"]) and row["v"] == lm_eval_version()


def run_stage(stage: str, lakehouse, config: Config, endpoint, progress: Callable[[str], None],
              refresh_catalog: bool, task_index=None) -> Any:
    if stage == "catalog":
        from jobs.catalog import print_catalog_summary, run_catalog

        if catalog_is_current(lakehouse) and not refresh_catalog:
            progress("catalog: task_catalog is current for this lm-eval version; skipped (--refresh-catalog to rebuild)")
            return None
        rows = run_catalog(lakehouse, config, progress=progress, index=task_index)
        print_catalog_summary(rows, out=progress)
        return {"tasks": len(rows), "eligible": sum(1 for r in rows if r["eligible"])}
    if stage == "ingest":
        from jobs.ingest import run_ingest

        return run_ingest(lakehouse, config, progress=progress, index=task_index)
    if stage == "generate":
        from jobs.generate import run_generate

        return run_generate(lakehouse, config, endpoint=endpoint, progress=progress)
    if stage == "enrich":
        from jobs.enrich import run_enrich

        return run_enrich(lakehouse, config, endpoint=endpoint, progress=progress)
    raise ValueError(f"unknown stage {stage}")


def run_pipeline(lakehouse, config: Config, stages: tuple[str, ...] = STAGES,
                 progress: Callable[[str], None] = print, refresh_catalog: bool = False,
                 track: bool = True, task_index=None) -> dict[str, Any]:
    """Run the stages in order; returns {stage: result}. One MLflow run, a child run per stage.

    task_index: a prebuilt jobs.catalog.TaskIndex (tests pass a small one); built when None.
    """
    import mlflow

    from jobs.llm_stage import endpoint_for
    from jobs.tracking import log_table_versions, pipeline_run, stage_run

    needs_endpoint = any(s in ("generate", "enrich") for s in stages)
    results: dict[str, Any] = {}
    tracking = pipeline_run(config, "taskseed-run") if track else nullcontext()
    with tracking as run, (endpoint_for(config) if needs_endpoint else nullcontext()) as endpoint:
        if run is not None:
            progress(f"mlflow: run {run.info.run_id} in experiment {run.info.experiment_id} "
                     f"({mlflow.get_tracking_uri()})")
        if endpoint is not None:
            progress(f"endpoint: {endpoint.base_url if config.endpoint.base_url else 'built-in simulator'} "
                     f"model={config.endpoint.model}")
        for stage in stages:
            progress(f"== {stage} ==")
            started = time.monotonic()
            with (stage_run(stage) if track else nullcontext()):
                if track:
                    log_table_versions(lakehouse, STAGE_INPUTS.get(stage, []), "input")
                result = run_stage(stage, lakehouse, config, endpoint, progress, refresh_catalog, task_index)
                seconds = time.monotonic() - started
                if track:
                    mlflow.log_metric("seconds", seconds)
                    metrics = _numeric_metrics(result)
                    if metrics:
                        mlflow.log_metrics(metrics)
                    log_table_versions(lakehouse, STAGE_OUTPUTS[stage], "output")
            results[stage] = result
            for line in (result.summary_lines() if hasattr(result, "summary_lines") else []):
                progress(line)
            progress(f"{stage}: done in {seconds:.1f}s")
    return results


def cmd_run(args, config: Config) -> int:
    from jobs.cli import _open_lakehouse, progress

    stages = tuple(s.strip() for s in args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from jobs.config import ConfigError

        raise ConfigError(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    lakehouse = _open_lakehouse(config)
    run_pipeline(lakehouse, config, stages, progress=progress, refresh_catalog=args.refresh_catalog,
                 track=not args.no_mlflow)
    from jobs.cli import format_table

    rows = []
    for name in lakehouse.list_tables():
        rows.append([lakehouse.table_name(name), lakehouse.read(name).count(), lakehouse.version(name)])
    print(format_table(["table", "rows", "delta_version"], rows))
    home = config.home
    progress(f"next: taskseed --home {home} sql \"select * from enriched limit 5\"; "
             f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{Path(home).resolve() / 'mlflow.db'}")
    return 0


def add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the whole pipeline (catalog, ingest, generate, enrich)")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (in DAG order)")
    parser.add_argument("--refresh-catalog", action="store_true",
                        help="rebuild task_catalog even if it is current for this lm-eval version")
    parser.add_argument("--no-mlflow", action="store_true", help="do not record an MLflow run")
    parser.set_defaults(handler=cmd_run)
