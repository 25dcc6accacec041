"""The driver side of talking to an endpoint: which endpoint (the configured one or the built-in
simulator), the API key shared with the Python workers, and the lazy call over a requests frame.

What runs in the executors (the `mapInPandas` function, the async client) is udfs/llm_udf.py and
udfs/llm_client.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator, Mapping, Sequence

from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession

from jobs.config import Config
from udfs.llm_client import EndpointSettings, resolve_api_key
from udfs.llm_udf import PASSTHROUGH_COLUMNS, SecretBox, make_call_partition, per_task_concurrency, result_schema


def endpoint_settings(config: Config, base_url: str | None = None, stage: str | None = None) -> EndpointSettings:
    """EndpointSettings of `stage`'s endpoint (`Config.stage_endpoint`; default `config.endpoint`);
    a key is required only if a source is named."""
    ep = config.stage_endpoint(stage) if stage else config.endpoint
    return EndpointSettings.from_config(
        ep, base_url=base_url, require_key=bool(ep.api_key_env or ep.secret_scope))


@contextlib.contextmanager
def endpoint_for(config: Config, stage: str | None = None) -> Iterator[EndpointSettings]:
    """The configured endpoint of `stage` (default: `endpoint`), or — when it has no base_url and
    no replicas — the built-in simulator started on a free loopback port for the duration of the
    block (local Spark only: executors on other hosts cannot reach it; run `taskseed sim` there and
    set base_url)."""
    with endpoints_for(config, [stage] if stage else [None]) as endpoints:
        yield endpoints[stage]


@contextlib.contextmanager
def endpoints_for(config: Config, stages: Sequence[str | None]) -> Iterator[dict[str | None, EndpointSettings]]:
    """{stage: EndpointSettings} for the given ledger stages (None = the default `endpoint`), for
    the duration of the block. Stages whose endpoint is configured get their own settings; every
    stage whose endpoint has no base_url and no replicas gets the one built-in simulator started
    here, which serves (lists in `GET /v1/models`) each of their models."""
    stages = list(dict.fromkeys(stages))
    configs = {stage: (config.stage_endpoint(stage) if stage else config.endpoint) for stage in stages}
    simulated = [stage for stage, ep in configs.items() if not ep.configured]
    out = {stage: endpoint_settings(config, stage=stage) for stage in stages if stage not in simulated}
    if not simulated:
        yield out
        return
    from simulator import SimSettings, SimulatorServer

    models = list(dict.fromkeys(configs[stage].model for stage in simulated))
    sim_settings = SimSettings.from_config(config.simulator, model=models[0], served_models=tuple(models[1:]))
    with SimulatorServer(sim_settings) as sim:
        for stage in simulated:
            out[stage] = replace(endpoint_settings(config, base_url=sim.base_url, stage=stage), require_key=False)
        yield out


def stage_settings(endpoint, stage: str) -> EndpointSettings | None:
    """The endpoint a stage runs on, from what a caller handed over: a {stage: EndpointSettings}
    mapping (the pipeline's, `endpoints_for`) gives the stage's entry, one EndpointSettings is used
    as is (a caller that opened one endpoint for the stage), None stays None (open one)."""
    if isinstance(endpoint, Mapping):
        return endpoint.get(stage)
    return endpoint


def call_endpoint(df: DataFrame, settings: EndpointSettings, concurrent_tasks: int,
                  passthrough: Sequence[str] = PASSTHROUGH_COLUMNS, api_key: Broadcast | None = None) -> DataFrame:
    """Lazily map request rows to result rows across `concurrent_tasks` partitions.

    Evaluating the result calls the endpoint: evaluate it exactly once (write it, or
    checkpoint it) — every re-evaluation is another paid request.
    """
    missing = [c for c in ("request_id", "messages_json") if c not in df.columns]
    if missing:
        raise ValueError(f"request frame lacks columns {missing}")
    present = [c for c in passthrough if c in df.columns]
    fn = make_call_partition(settings, per_task_concurrency(settings.max_concurrency, concurrent_tasks), present,
                             api_key)
    return df.repartition(max(1, concurrent_tasks)).mapInPandas(fn, result_schema(df.schema, present))


class KeyOnDiskError(RuntimeError):
    """Sharing the API key with the workers would write it to disk in plain text."""


@contextlib.contextmanager
def shared_api_key(spark: SparkSession, settings: EndpointSettings) -> Iterator[Broadcast | None]:
    """Resolve the key once on the driver and share it with the Python workers as an encrypted
    broadcast.

    Workers inherit the JVM's environment as it was at session start, so a key exported later
    (notebooks) or read from a Databricks secret scope (driver-only) would be missing there.
    A broadcast travels through Spark's block manager, not through py4j command strings (which
    py4j logs at DEBUG) and not through the conf/UI; the closure pickles only its id.

    Never on disk: PySpark writes a broadcast's pickle to a file under the driver's Spark temp
    dir, unless `spark.io.encryption.enabled=true`, in which case it streams the pickle to the
    JVM over an authenticated local socket and the JVM stores it encrypted with a key held only
    in memory (pyspark.core.broadcast.Broadcast.__init__; executors get it back decrypted over a
    socket too, and block-manager spills are encrypted). taskseed's local session sets it; on a
    cluster set it in the cluster's Spark config. Without it this raises `KeyOnDiskError` before
    anything is written (one line naming the setting). The broadcast is destroyed when the block
    ends. Fails fast on the driver when a required key is missing.
    """
    key = resolve_api_key(settings)
    if not key:
        yield None
        return
    if not spark.sparkContext._encryption_enabled:  # noqa: SLF001 — the flag PySpark itself reads
        raise KeyOnDiskError(
            "refusing to share the endpoint API key with Spark workers: spark.io.encryption.enabled is "
            "not true, so PySpark would write the key to its temp dir in plain text; set "
            "spark.io.encryption.enabled=true in the cluster's Spark config (taskseed's local session does)")
    handle = spark.sparkContext.broadcast(SecretBox(key))
    try:
        yield handle
    finally:
        handle.destroy()
