"""Batch mode, online path (issue 27): a stage's pending requests submitted to an OpenAI Batch API
(`/v1/files` + `/v1/batches`, through the openai client), polled with backoff, and their output and
error files reconciled into `llm_calls` by the offline path's reconcile step
(`jobs.llm_stage.batch.reconcile_lines`: same ledger rows, same error classes, same parse step).
Chosen by `endpoint.mode: batch` (or `generate.endpoint.mode`, `enrich.endpoint.mode`);
`run_stage` (runner.py) calls `run_batch_stage`.

Tables: reads the stage's plan inputs, `llm_calls`, `llm_batch_requests`; writes
`llm_batch_requests` (membership, status, `provider_batch_id`, `provider_file_id`), `llm_calls`
and, through the parse step, the stage's output table and `quarantine`.

Order of writes, and what a rerun after a crash at each point does (exactly once; the kill test is
tests/spark/test_llm_batch_online.py):
1. memberships are MERGEd with status `submitting` before anything is uploaded — crash here
   (`before_upload`): the rerun finds `submitting` batches and submits them, never new ones for
   the same requests (HOLDING keeps them out of every other batch);
2. the input file is uploaded as `<batch_id>.jsonl` — crash after (`after_upload`): the rerun
   finds the file by that name (`files.list`) and does not upload again;
3. the batch is created with `metadata.taskseed_batch_id` — crash after (`after_submit`), before
   its id is recorded: the rerun finds the batch by that metadata (`batches.list`) and records it,
   never creating a second one;
4. the provider ids are MERGEd (with the status at submission); a batch with a provider id is only
   ever polled — crash while polling (`polling`): the rerun polls the same batches;
5. a finished batch's output and error files are downloaded and reconciled (ledger rows first,
   then `reconciled`) — crash before (`before_reconcile`): the rerun downloads them again; the
   reconcile step skips what the ledger already has.
An `expired` / `cancelled` batch's answered lines are reconciled and its unrun requests (error
code `batch_expired` / `batch_cancelled`, or no line) released, and a `failed` one (bad input file)
releases all: they go into a new batch in the same run, at most `MAX_ROUNDS` rounds per run.

`TASKSEED_BATCH_CRASH_AT=<point>` (one of CRASH_POINTS) ends the process at that point with
`os._exit(CRASH_EXIT)`: the kill test's hook; unset in normal runs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.config import Config, driver_dir
from jobs.lakehouse import Lakehouse
from jobs.llm_stage.batch import BatchImport, reconcile_lines
from jobs.llm_stage.call import RunAccounting, terminal_statuses
from jobs.llm_stage.spec import REQUEST_COLUMNS, LLMStageSpec
from jobs.progress import format_duration
from schemas.tables import LLM_BATCH_REQUESTS, LLM_CALLS
from udfs.llm_batch import (CHAT_URL, COMPLETED, EXPORTED, HOLDING, METADATA_KEY, PROVIDER_TERMINAL,
                            SUBMITTING, BatchFileError, assign_batches, batch_filename, batch_line, batches_eta,
                            find_provider_batch, membership_status, poll_delay, read_output_line, unrun)
from udfs.llm_client import EndpointSettings, resolve_api_key

CRASH_ENV = "TASKSEED_BATCH_CRASH_AT"
CRASH_POINTS = ("before_upload", "after_upload", "after_submit", "polling", "before_reconcile")
CRASH_EXIT = 86
MAX_ROUNDS = 5  # submit → wait → reconcile rounds per run (released requests go out again in the next)


def crash_point(name: str) -> None:
    """End the process now (no cleanup, like a killed driver) when TASKSEED_BATCH_CRASH_AT names
    this point; ValueError when it names no point of CRASH_POINTS."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    if wanted not in CRASH_POINTS:
        raise ValueError(f"{CRASH_ENV}={wanted!r} is not one of {', '.join(CRASH_POINTS)}")
    if wanted == name:
        os._exit(CRASH_EXIT)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class BatchRun:
    """What one batch-mode run of a stage did: batches submitted (new), found again at the
    provider after a crash (resumed: by file name or metadata), finished by status, requests
    recorded in the ledger (by status), polls, rounds, and why it stopped early (if it did)."""

    stage: str
    run_id: str
    planned: int = 0  # distinct renderable requests of the plan
    already_done: int = 0  # of those, requests the ledger answered before this run (terminal rows)
    prompt_tokens: int = 0  # usage of the ledger rows this run recorded
    completion_tokens: int = 0
    submitted: int = 0
    resumed: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    polls: int = 0
    rounds: int = 0
    stopped_reason: str | None = None
    elapsed_s: float = 0.0

    def accounting(self) -> RunAccounting:
        """The run as the call step's accounting (requested, sent = lines recorded, ok/parse_error/
        failed by the ledger rows it wrote), for the stage's summary and MLflow metrics."""
        return RunAccounting(stage=self.stage, run_id=self.run_id, requested=self.planned,
                             already_done=self.already_done, pending=self.planned - self.already_done,
                             sent=sum(self.recorded.values()),
                             not_sent=max(0, self.planned - self.already_done - sum(self.recorded.values())),
                             prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                             ok=self.recorded.get("ok", 0),
                             parse_error=self.recorded.get("parse_error", 0),
                             failed=self.recorded.get("failed", 0), stopped_reason=self.stopped_reason,
                             elapsed_s=self.elapsed_s)

    def summary_lines(self) -> list[str]:
        done = ", ".join(f"{k}={v}" for k, v in sorted(self.finished.items())) or "none"
        rec = ", ".join(f"{k}={v}" for k, v in sorted(self.recorded.items())) or "none"
        lines = [f"[{self.stage}] batch mode: {self.submitted} batch(es) submitted, {self.resumed} resumed, "
                 f"finished {done}; recorded {rec}; {self.polls} polls in {self.rounds} round(s), "
                 f"{format_duration(self.elapsed_s)}"]
        if self.unreadable:
            lines.append(f"[{self.stage}] batch mode: {len(self.unreadable)} unreadable output line(s), first: "
                         f"{self.unreadable[0]}")
        if self.stopped_reason:
            lines.append(f"[{self.stage}] batch mode stopped: {self.stopped_reason}")
        return lines


def batch_client(settings: EndpointSettings):
    """An `openai.OpenAI` client for the stage's endpoint (its base_url, key, timeout and retries);
    the key is resolved here, never logged or stored."""
    import openai

    return openai.OpenAI(base_url=settings.base_url, api_key=resolve_api_key(settings) or "unused",
                         timeout=settings.timeout_s, max_retries=settings.max_retries)


def _batches(lakehouse: Lakehouse, stage: str) -> dict[str, dict]:
    """{batch_id: {status, provider_batch_id, provider_file_id, requests}} of the stage's batches."""
    if not lakehouse.exists(LLM_BATCH_REQUESTS.name):
        return {}
    rows = (lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage") == stage)
            .groupBy("batch_id").agg(F.first("batch_status").alias("status"),
                                     F.max("provider_batch_id").alias("provider_batch_id"),
                                     F.max("provider_file_id").alias("provider_file_id"),
                                     F.count("*").alias("requests")).collect())
    return {r.batch_id: r.asDict() for r in rows}


def _update_batches(lakehouse: Lakehouse, stage: str, changes: dict[str, dict]) -> None:
    """One MERGE setting batch_status / provider ids of every row of the batches in `changes`
    ({batch_id: {column: value}}; unchanged rows commit nothing)."""
    if not changes:
        return
    spark = lakehouse.spark
    frame = pd.DataFrame([{"batch_id": bid, "_status": c.get("batch_status"), "_pb": c.get("provider_batch_id"),
                           "_pf": c.get("provider_file_id")} for bid, c in changes.items()])
    update = spark.createDataFrame(frame, "batch_id string, _status string, _pb string, _pf string")
    rows = (lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage") == stage).join(update, "batch_id")
            .withColumn("batch_status", F.coalesce("_status", "batch_status"))
            .withColumn("provider_batch_id", F.coalesce("_pb", "provider_batch_id"))
            .withColumn("provider_file_id", F.coalesce("_pf", "provider_file_id"))
            .withColumn("updated_at", F.lit(_now())).select(*LLM_BATCH_REQUESTS.columns))
    lakehouse.merge(rows, LLM_BATCH_REQUESTS, update_when_changed=["batch_status", "provider_batch_id",
                                                                     "provider_file_id"])


def _answered(lakehouse: Lakehouse, retry_failed: bool) -> DataFrame:
    """request_id of every request with a terminal ledger row (`terminal_statuses`)."""
    return (lakehouse.read(LLM_CALLS.name).where(F.col("status").isin(*terminal_statuses(retry_failed)))
            .select("request_id").distinct())


def _assign(lakehouse: Lakehouse, config: Config, spec: LLMStageSpec, requests: DataFrame,
            retry_failed: bool, salt: str) -> int:
    """MERGE the stage's pending requests (no terminal ledger row, in no HOLDING batch) into new
    batches of at most `llm.batch_rows` with status `submitting`; returns how many requests.
    `salt` (the run id and round) makes the batch ids new: a released request's next batch, or the
    same requests in another lakehouse sharing the provider account, never reuses an id."""
    done = _answered(lakehouse, retry_failed)
    members = lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage") == spec.name)
    held = members.where(F.col("batch_status").isin(*HOLDING)).select("request_id").distinct()
    ids = [r.request_id for r in requests.join(done, "request_id", "left_anti")
           .join(held, "request_id", "left_anti").select("request_id").collect()]
    if not ids:
        return 0
    assignment = assign_batches(spec.name, ids, {}, int(config.llm.batch_rows), salt)
    now = _now()
    rows = pd.DataFrame({"batch_id": list(assignment.values()), "request_id": list(assignment.keys())})
    rows = rows.assign(stage=spec.name, batch_status=SUBMITTING, shard=rows["batch_id"] + ".jsonl",
                       created_at=now, updated_at=now, provider_batch_id=None, provider_file_id=None)
    lakehouse.merge(lakehouse.spark.createDataFrame(rows[LLM_BATCH_REQUESTS.columns], LLM_BATCH_REQUESTS.schema),
                    LLM_BATCH_REQUESTS)
    return len(ids)


def _write_inputs(lakehouse: Lakehouse, config: Config, spec: LLMStageSpec, requests: DataFrame,
                  batch_ids: Sequence[str], folder: Path) -> dict[str, Path]:
    """The input files `<folder>/<batch_id>.jsonl` of the given batches (their members' request rows
    as `batch_line`s, in request_id order), written on the driver; {batch_id: path}."""
    ep = config.stage_endpoint(spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    ids = lakehouse.spark.createDataFrame(pd.DataFrame({"batch_id": list(batch_ids)}), "batch_id string")
    members = (lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage") == spec.name)
               .join(ids, "batch_id", "left_semi").select("batch_id", "request_id"))
    ordered = requests.join(members, "request_id").orderBy("batch_id", "request_id")
    paths, handles = {}, {}
    try:
        for row in ordered.toLocalIterator():
            if row.batch_id not in handles:
                paths[row.batch_id] = folder / batch_filename(row.batch_id)
                handles[row.batch_id] = open(paths[row.batch_id], "w", encoding="utf-8")
            handles[row.batch_id].write(json.dumps(batch_line(row.asDict(), ep.model, ep.structured_output),
                                                   ensure_ascii=False) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return paths


def _download(client, file_id: str | None, where: str, bad: list[str]) -> list[dict]:
    """Decoded lines of a provider output/error file (none when `file_id` is None); unreadable lines
    go to `bad` as `<where>:<line>: why`."""
    if not file_id:
        return []
    out = []
    for number, text in enumerate(client.files.content(file_id).text.splitlines(), 1):
        if not text.strip():
            continue
        try:
            out.append(read_output_line(text))
        except BatchFileError as exc:
            bad.append(f"{where}:{number}: {exc}")
    return out


def run_batch_stage(spec: LLMStageSpec, lakehouse: Lakehouse, config: Config, plan: DataFrame,
                    settings: EndpointSettings, tasks: Sequence[str] | None = None,
                    progress: Callable[[str], None] | None = None, retry_failed: bool = False,
                    client: Any = None, sleep: Callable[[float], None] = time.sleep) -> BatchRun:
    """Answer the plan's pending requests through the Batch API at `settings.base_url` (caller holds
    the stage's lock): assign → upload → create → poll → reconcile, rounds until nothing is pending
    or live (at most MAX_ROUNDS). The parse step is left to the caller. `client`: an openai client
    (default `batch_client(settings)`); `sleep` waits between polls (`llm.batch_poll_seconds`
    doubling up to `llm.batch_poll_max_seconds`). Errors of the Batch API itself (auth, 4xx on
    create) propagate as openai exceptions; the memberships recorded so far make a rerun resume."""
    started = time.monotonic()
    client = client or batch_client(settings)
    run = BatchRun(stage=spec.name, run_id=f"batch-{uuid.uuid4().hex[:12]}")
    requests = (plan.where(F.col("render_error").isNull()).select(*REQUEST_COLUMNS).dropDuplicates(["request_id"])
                .localCheckpoint(eager=True))
    run.planned = requests.count()
    if lakehouse.exists(LLM_CALLS.name):
        run.already_done = requests.join(_answered(lakehouse, retry_failed), "request_id", "left_semi").count()
    lakehouse.ensure(LLM_BATCH_REQUESTS)
    folder = driver_dir(config) / "batches" / spec.name
    say = progress or (lambda _line: None)
    for _ in range(MAX_ROUNDS):
        run.rounds += 1
        if _assign(lakehouse, config, spec, requests, retry_failed, f"{run.run_id}-{run.rounds}"):
            crash_point("before_upload")
        batches = {bid: b for bid, b in _batches(lakehouse, spec.name).items()
                   if b["status"] in HOLDING and b["status"] != EXPORTED}  # exported: the offline path's
        if not batches:
            break
        _submit(client, lakehouse, config, spec, requests, batches, folder, run)
        _wait_and_reconcile(client, lakehouse, config, spec, requests, batches, tasks, run, say, sleep, started)
    else:
        left = [b for b in _batches(lakehouse, spec.name).values() if b["status"] in HOLDING and b["status"] != EXPORTED]
        if left:
            run.stopped_reason = f"{len(left)} batch(es) still open after {MAX_ROUNDS} rounds; rerun to continue"
    if run.recorded:
        usage = (lakehouse.read(LLM_CALLS.name).where(F.col("run_id") == run.run_id)
                 .agg(F.sum("prompt_tokens"), F.sum("completion_tokens")).first())
        run.prompt_tokens, run.completion_tokens = int(usage[0] or 0), int(usage[1] or 0)
    run.elapsed_s = time.monotonic() - started
    return run


def _submit(client, lakehouse: Lakehouse, config: Config, spec: LLMStageSpec, requests: DataFrame,
            batches: dict[str, dict], folder: Path, run: BatchRun) -> None:
    """Give every `submitting` batch a provider batch: found again (metadata, else an uploaded file
    of its name), else uploaded and created. Records the ids (one MERGE) in `batches` and the table."""
    todo = sorted(bid for bid, b in batches.items() if b["status"] == SUBMITTING or not b["provider_batch_id"])
    if not todo:
        return
    provider = list(client.batches.list(limit=100))  # auto-paginates: every batch of the account
    files = {f.filename: f for f in client.files.list(purpose="batch")}
    inputs: dict[str, Path] = {}
    changes: dict[str, dict] = {}
    for bid in todo:
        found = find_provider_batch(provider, bid)
        if found is not None:
            run.resumed += 1
            changes[bid] = {"provider_batch_id": found.id, "provider_file_id": found.input_file_id,
                            "batch_status": membership_status(found.status)}
            continue
        uploaded = files.get(batch_filename(bid))
        if uploaded is None:
            if not inputs:
                inputs = _write_inputs(lakehouse, config, spec, requests, todo, folder)
            with open(inputs[bid], "rb") as handle:
                uploaded = client.files.create(file=(batch_filename(bid), handle), purpose="batch")
            crash_point("after_upload")
        else:
            run.resumed += 1
        created = client.batches.create(input_file_id=uploaded.id, endpoint=CHAT_URL,
                                        completion_window=config.llm.batch_completion_window,
                                        metadata={METADATA_KEY: bid, "taskseed_stage": spec.name})
        crash_point("after_submit")
        run.submitted += 1
        changes[bid] = {"provider_batch_id": created.id, "provider_file_id": uploaded.id,
                        "batch_status": membership_status(created.status)}
    _update_batches(lakehouse, spec.name, changes)
    for bid, change in changes.items():
        batches[bid].update(status=change["batch_status"], provider_batch_id=change["provider_batch_id"],
                            provider_file_id=change["provider_file_id"])
    for path in inputs.values():
        path.unlink(missing_ok=True)


def _wait_and_reconcile(client, lakehouse: Lakehouse, config: Config, spec: LLMStageSpec, requests: DataFrame,
                        batches: dict[str, dict],
                        tasks: Sequence[str] | None, run: BatchRun, say: Callable[[str], None],
                        sleep: Callable[[float], None], started: float) -> None:
    """Poll every batch with backoff until each is finished, reconciling finished ones as they come
    (one reconcile per poll). Live statuses are not written (each would be a Delta commit per poll):
    a submitted batch's row keeps the status it had at submission until it is reconciled."""
    live = dict(batches)
    polls = 0
    while live:
        finished, counts = {}, []
        for bid, b in sorted(live.items()):
            pb = client.batches.retrieve(b["provider_batch_id"])
            membership_status(pb.status)  # ValueError on a status the Batch API does not have
            if pb.status in PROVIDER_TERMINAL:
                finished[bid] = pb
            elif pb.request_counts is not None:
                rc = pb.request_counts
                counts.append((rc.total, rc.completed + rc.failed, max(0.0, time.time() - pb.created_at)))
        run.polls += 1
        polls += 1
        crash_point("polling")
        if finished:
            _reconcile(client, lakehouse, config, spec, requests, finished, tasks, run)
            for bid in finished:
                live.pop(bid)
        eta = batches_eta(counts)
        say(f"[{spec.name}] batches: submitted={run.submitted + run.resumed} in_progress={len(live)} "
            f"finished={sum(run.finished.values())}; requests recorded={sum(run.recorded.values())}"
            + (f", ETA {format_duration(eta)}" if eta is not None else "")
            + f", elapsed {format_duration(time.monotonic() - started)}")
        if live:
            sleep(poll_delay(polls - 1, config.llm.batch_poll_seconds, config.llm.batch_poll_max_seconds))


def _reconcile(client, lakehouse: Lakehouse, config: Config, spec: LLMStageSpec, requests: DataFrame,
               finished: dict[str, Any],
               tasks: Sequence[str] | None, run: BatchRun) -> None:
    """Download the finished batches' output and error files and reconcile them (ledger rows, then
    `reconciled`); a released batch's unrun requests stay without a ledger row (pending again) and
    the batch gets its provider status."""
    lines: list[dict] = []
    bad: list[str] = []
    released = sorted(bid for bid, pb in finished.items() if pb.status != COMPLETED)
    for bid, pb in sorted(finished.items()):
        run.finished[pb.status] = run.finished.get(pb.status, 0) + 1
        got = _download(client, pb.output_file_id, f"{bid} output", bad) + \
            _download(client, pb.error_file_id, f"{bid} errors", bad)
        lines += [ln for ln in got if not unrun(ln)]
    crash_point("before_reconcile")
    # a released batch ends with its provider status (expired / cancelled / failed: RELEASED), its
    # answered requests in the ledger, the rest pending again
    result = reconcile_lines(lakehouse, config, lines, {spec.name: spec}, tasks,
                             BatchImport(lines=len(lines), unreadable=bad), batches=sorted(finished),
                             release_missing=released, parse=False, run_id=run.run_id,
                             final_status={bid: finished[bid].status for bid in released}, metas=requests)
    for status, n in result.recorded.items():
        run.recorded[status] = run.recorded.get(status, 0) + n
    run.unreadable += bad
