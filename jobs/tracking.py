"""MLflow tracking: one run per pipeline run, a child run per stage.

Locally the tracking store is a SQLite file in the lakehouse home (`<home>/mlflow.db`, artifacts
under `<home>/mlruns`); on Databricks the workspace tracking server is used. What is logged:

- the parent run (`taskseed-run`): params from an allow-list (`run_params`: config fingerprint,
  model, endpoint host, prompt versions, code and lm-eval versions, ...), and at the end
  `output.<table>.delta_version` of every table the run's stages write, and the tag
  `taskseed.outcome` (done, or the stage that failed);
- each stage's child run (run name = stage name, tag `taskseed.stage`): its declared inputs and
  outputs as MLflow datasets pinned to their Delta versions (`input.<table>.delta_version` /
  `output.<table>.delta_version` params, `rows_in.<table>` / `rows_out.<table>` metrics), the
  stage's own metrics (rows per filter and task family, tokens, latency percentiles, errors),
  `seconds`, the tag `taskseed.outcome` (done or `skipped: <why>`; a failed stage's run has status
  FAILED), and the stage's artifacts (publish: each dataset's manifest and data cards).

So "which curated version did run X produce, from which seeds version, model and prompts" is
answered from MLflow alone (docs/publishing.md "Lineage in MLflow"; tests/e2e/test_pipeline_run.py).

Secrets never reach MLflow: params are built from an allow-list of config fields, the endpoint
URL is reduced to scheme://host[:port]/path without credentials or query string.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from jobs.config import Config, driver_dir

log = logging.getLogger(__name__)

EXPERIMENT = "taskseed"
OUTCOME_TAG = "taskseed.outcome"
STAGE_TAG = "taskseed.stage"


def safe_endpoint_url(url: str | None) -> str:
    """scheme://host[:port]/path: userinfo and query strings can carry credentials."""
    if not url:
        return "simulator"
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def stage_endpoint_params(config: Config) -> dict[str, str]:
    """Per ledger stage (generate, enrich, judge): `model.<stage>`, `endpoint_url.<stage>` (the
    URL without credentials, replicas comma-separated, or "simulator") and
    `max_concurrency.<stage>` (the endpoint's total window); with the paraphrase filter on,
    `model.embeddings` and `endpoint_url.embeddings` ("local" for the packaged model). Names and URLs
    only, never a key."""
    from jobs.config import LLM_STAGES

    params: dict[str, str] = {}
    for stage in LLM_STAGES:
        ep = config.stage_endpoint(stage)
        urls = [r.base_url for r in ep.replicas] or [ep.base_url]
        params[f"model.{stage}"] = ep.model
        params[f"endpoint_url.{stage}"] = ",".join(safe_endpoint_url(u) for u in urls)
        params[f"max_concurrency.{stage}"] = str(ep.total_concurrency())
    para = config.curate.paraphrase
    if para.enabled:  # the paraphrase filter's vectors: the local model or an embeddings server
        params["model.embeddings"] = para.embedding_model()
        params["endpoint_url.embeddings"] = (safe_endpoint_url(para.embeddings_endpoint.base_url)
                                             if para.embeddings_endpoint else "local")
    return params


def code_version() -> str:
    version = metadata.version("taskseed")
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sha = ""
    return f"{version}+{sha}" if sha else version


def run_params(config: Config) -> dict[str, str]:
    """The allow-listed parameters of a run (nothing from the environment, no key material)."""
    params = {
        "config_fingerprint": config.fingerprint(),
        "runtime": config.runtime,
        "namespace": f"{config.catalog}.{config.schema_name}" if config.catalog else config.schema_name,
        "endpoint_url": ",".join(safe_endpoint_url(u) for u in
                                 ([r.base_url for r in config.endpoint.replicas] or [config.endpoint.base_url])),
        "model": config.endpoint.model,
        "max_concurrency": str(config.endpoint.total_concurrency()),
        "items_per_seed": str(config.generate.items_per_seed),
        "samples_per_item": str(config.enrich.samples_per_item),
        "generate_temperature": str(config.generate.temperature),
        "enrich_temperature": str(config.enrich.temperature),
        "tasks": ",".join(config.tasks.select) or "all-eligible",
        "code_version": code_version(),
        "lm_eval_version": metadata.version("lm-eval"),
    }
    params.update(stage_endpoint_params(config))
    try:
        from udfs.prompts import prompt_versions

        params.update({f"prompt_version.{k}": v for k, v in sorted(prompt_versions().items())})
    except ImportError:  # prompts are optional for catalog-only runs
        pass
    return params


def configure_mlflow(config: Config) -> None:
    import mlflow

    # Quiet before the store is opened: creating a local store logs its migrations at INFO.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The store logs every database error (a full disk: "database or disk is full") with its
    # traceback and then raises it as an MlflowException, which the caller reports: one report,
    # not a traceback on stderr before it.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    if config.runtime == "databricks":
        mlflow.set_tracking_uri("databricks")
        experiment = f"/Shared/{EXPERIMENT}-{config.schema_name}"
    else:
        home = driver_dir(config).resolve()  # MLflow's SQLite store is driver-local, also on a URI home
        home.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
        experiment = EXPERIMENT
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(home / "mlruns").as_uri())
    mlflow.set_experiment(experiment)


@contextmanager
def pipeline_run(config: Config, name: str) -> Iterator[object]:
    import mlflow

    configure_mlflow(config)
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params(run_params(config))
        yield run


@contextmanager
def stage_run(stage: str) -> Iterator[object]:
    import mlflow

    with mlflow.start_run(run_name=stage, nested=True, tags={STAGE_TAG: stage}) as run:
        yield run


def _log_delta_input(lakehouse, name: str, version: int, context: str) -> None:
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # mlflow's schema-inference hints
        if lakehouse.managed:
            dataset = mlflow.data.load_delta(table_name=lakehouse.table_name(name), version=version)
        else:
            dataset = mlflow.data.load_delta(path=lakehouse.table_location(name), version=version,
                                             name=name)
        mlflow.log_input(dataset, context=context)


def log_table_versions(lakehouse, tables: list[str], context: str) -> dict[str, int]:
    """Log each table as an MLflow dataset pinned to its current Delta version, plus its row count
    (`rows_in.<table>` for context "input", `rows_out.<table>` for "output")."""
    import mlflow

    versions = {}
    metric = "rows_in" if context == "input" else "rows_out"
    for name in tables:
        if not lakehouse.exists(name):
            continue
        version = lakehouse.version(name)
        versions[name] = version
        mlflow.log_metric(f"{metric}.{name}", lakehouse.spark.table(lakehouse.table_name(name)).count())
        mlflow.log_param(f"{context}.{name}.delta_version", version)
        try:
            _log_delta_input(lakehouse, name, version, context)
        except Exception as exc:  # lineage is best effort; the run itself must not fail on it
            log.warning("could not log %s as an MLflow dataset: %s", name, type(exc).__name__)
    return versions


def log_artifacts(artifacts: dict[str, list[Path]]) -> None:
    """Log files to the active run: {artifact folder: paths} (missing files are skipped)."""
    import mlflow

    for folder, paths in artifacts.items():
        for path in paths:
            if Path(path).is_file():
                mlflow.log_artifact(str(path), artifact_path=folder)


def tracking_store(config: Config) -> str | None:
    """The tracking URI of an existing local store (None when no run was ever recorded), or
    "databricks"."""
    if config.runtime == "databricks":
        return "databricks"
    db = driver_dir(config).resolve() / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def last_stage_runs(config: Config, stages: list[str]) -> dict[str, dict[str, object]]:
    """{stage: its newest child run} from the tracking store, read-only: run_id, parent_run_id,
    start (UTC ISO time), status (FINISHED, FAILED, RUNNING, KILLED) and outcome (the
    `taskseed.outcome` tag: done / skipped: why). Stages never run under MLflow are absent."""
    from mlflow.tracking import MlflowClient

    uri = tracking_store(config)
    if uri is None:
        return {}
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri)
    name = f"/Shared/{EXPERIMENT}-{config.schema_name}" if config.runtime == "databricks" else EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return {}
    out: dict[str, dict[str, object]] = {}
    for stage in stages:
        runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{stage}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            continue
        run = runs[0]
        start = datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc)
        out[stage] = {"run_id": run.info.run_id, "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
                      "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "status": run.info.status,
                      "outcome": run.data.tags.get(OUTCOME_TAG, run.info.status.lower())}
    return out
