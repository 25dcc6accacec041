"""A pipeline stage as the pipeline sees it: a name, the tables it reads and writes, whether it
calls the LLM endpoint, how to run it.

Each stage module ends with its `STAGE` (catalog, ingest, generate, enrich, curate, publish);
jobs/pipeline.py lists them and derives from the declarations the order to run them in
(`dag_order`), the MLflow lineage of every stage run, and whether a run needs the endpoint. A
stage's declared tables may depend on the config (enrich reads `seeds` only with
`enrich.enrich_seeds`). docs/stages.md says how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from jobs.config import Config


def quiet(_message: str) -> None:
    """A progress callback that prints nothing (the default of every stage function)."""
    pass


@dataclass(frozen=True)
class StageContext:
    """What the pipeline hands every stage's `run`: the lakehouse, the validated config, where
    progress lines go, the endpoints opened once for the run's LLM stages as {ledger stage:
    EndpointSettings} (jobs.llm_stage.endpoints_for; None if no stage calls one),
    a prebuilt lm-eval task index (tests pass a small one; None = build it), and whether the
    catalog must be rebuilt even when it is current; run_id: the pipeline run's id (its MLflow run
    when tracked), recorded by stages that stamp what they write; lineage: the tables earlier
    stages read and write, which publish records as its manifest's inputs."""

    lakehouse: Any
    config: Config
    progress: Callable[[str], None] = quiet
    endpoint: Any = None
    task_index: Any = None
    refresh_catalog: bool = False
    run_id: str | None = None
    lineage: Sequence[str] = ()  # the tables a publication derives from (jobs.pipeline.lineage_tables)


def tables(*names: str) -> Callable[[Config], tuple[str, ...]]:
    """A declaration that does not depend on the config: `reads=tables("seeds", "llm_calls")`."""
    return lambda _config: names


@dataclass(frozen=True)
class Stage:
    """name: the stage (its MLflow child run, its `--stages` name); reads / writes: config → the
    table names it reads and writes; run: StageContext → a result object (`summary_lines()`,
    `metrics()`); skip: StageContext → a reason to skip this run (checked before the stage is
    recorded), or None; uses_endpoint: config → whether a run calls an LLM endpoint; endpoint_stages:
    the ledger stages (`generate`, `enrich`, `judge`) whose endpoints it calls (`Config.stage_endpoint`:
    each may be another server and model). The pipeline opens, for a run, each distinct endpoint
    the selected stages call, starting one simulator for all of those without a base_url, and hands
    every stage the {ledger stage: EndpointSettings} map (`StageContext.endpoint`)."""

    name: str
    reads: Callable[[Config], Sequence[str]]
    writes: Callable[[Config], Sequence[str]]
    run: Callable[[StageContext], Any]
    skip: Callable[[StageContext], str | None] | None = None
    uses_endpoint: Callable[[Config], bool] = lambda _config: False
    endpoint_stages: tuple[str, ...] = ()  # the ledger stages it calls endpoints as (their Config.stage_endpoint)


def dag_order(stages: Iterable[Stage], config: Config) -> list[Stage]:
    """The stages in an order where each runs after every stage that writes a table it reads.

    A table a stage both reads and writes is its own state (the `llm_calls` ledger, the quarantine
    it heals), not a dependency, so two stages sharing the ledger do not depend on each other.
    Among stages free to run, declaration order decides (Kahn's algorithm, stable). A cycle is a
    ValueError naming the stages in it.
    """
    stages = list(stages)
    writers: dict[str, list[int]] = {}
    for i, stage in enumerate(stages):
        for table in stage.writes(config):
            writers.setdefault(table, []).append(i)
    depends = []
    for i, stage in enumerate(stages):
        own = set(stage.writes(config))
        depends.append({w for table in stage.reads(config) if table not in own
                        for w in writers.get(table, []) if w != i})
    order: list[int] = []
    while len(order) < len(stages):
        ready = [i for i in range(len(stages)) if i not in order and depends[i] <= set(order)]
        if not ready:
            stuck = [stages[i].name for i in range(len(stages)) if i not in order]
            raise ValueError(f"stages {', '.join(stuck)} read each other's outputs: no order runs them")
        order.append(ready[0])
    return [stages[i] for i in order]
