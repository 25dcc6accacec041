"""The call step of every LLM stage (runner.py drives it): `run_llm_stage` sends only the requests
without a terminal row in `llm_calls`, through one calling Spark job per run, no batch barrier.

- Pending requests are hash-partitioned on request_id into `llm.call_tasks` partitions; each task
  streams its share through the async engine (`udfs.llm_udf.make_spool_partition`) with a constant
  window of `max_concurrency // call_tasks` requests in flight, and writes finished results to
  spool files (Parquet, atomic rename) under `<llm.spool_dir>/<stage>/<run_id>/` every
  `llm.commit_rows` results or `llm.commit_seconds`.
- The driver runs that job in a background thread and appends the spooled files to the ledger
  (one append per tick, never sooner after a commit than that commit took), deletes them, and
  reports progress from what it committed.
- Recovery first: a run commits the spool a crashed run left (insert-only on (request_id,
  run_id)) before it sends anything. A task that Spark retries sends nothing in its retry.
- No plan step: the run pins the ledger's Delta version; the job's first stages dedupe and
  anti-join against it, and the counts run while the first requests are out (only
  `llm.max_requests` numbers the pending set first). The requests frame is evaluated twice, so it
  must be deterministic.
- Stops: `llm.max_tokens_budget` and stage-fatal results (`udfs.llm_client.is_stage_fatal`) write
  a stop marker in the run's spool dir that the tasks poll; they drain, spool and end.

A crash loses per calling task at most the requests in flight plus fewer than `llm.commit_rows`
unspooled results (docs/llm-stages.md). Terminal statuses: `ok`, `parse_error`, and `failed`
unless `retry_failed` (then read the ledger through `latest_calls`, the best row per id).

Requests frame columns: request_id, stage, source_key, task, task_family, sample_index, model,
prompt_version, messages_json, response_format_json, temperature, max_tokens. A run's ledger rows
carry run_id and `micro_batch` (the driver's commit number; null for rows recovered later).

Accounting (`RunAccounting`) reconciles exactly:
    requested = already_done + pending;  pending = sent + not_sent;
    sent = ok + parse_error + failed (each counted from the rows this run committed).
"""

from __future__ import annotations

import array
import contextlib
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from jobs.config import Config, ConfigError, driver_dir
from jobs.lakehouse import Lakehouse
from schemas.tables import LLM_CALLS
from jobs.progress import ProgressLine, progress_line
from jobs.llm_stage.endpoint import endpoint_for, shared_api_key, stage_settings
from udfs.llm_client import (STATUS_FAILED, STATUS_OK, STATUS_PARSE_ERROR, EndpointSettings, is_stage_fatal,
                              stage_fatal_reason)
from udfs.llm_rows import latency_percentiles
from udfs.llm_udf import (PASSTHROUGH_COLUMNS, SPOOL_FILE_SCHEMA, make_spool_partition, per_task_concurrency,
                          result_schema, spool_files, stop_reason, write_stop_marker)

REQUIRED_COLUMNS = ("request_id", "messages_json")


# ---------------------------------------------------------------------------------------------
# Accounting and progress
# ---------------------------------------------------------------------------------------------
@dataclass
class RunAccounting:
    """What one run of a stage asked for, sent, and got back (all from the ledger)."""

    stage: str
    run_id: str
    input_rows: int = 0
    requested: int = 0
    already_done: int = 0
    pending: int = 0
    sent: int = 0
    not_sent: int = 0
    ok: int = 0
    parse_error: int = 0
    failed: int = 0
    failed_by_class: dict[str, int] = field(default_factory=dict)
    parse_error_by_class: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    http_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    commits: int = 0  # ledger appends of this run (each: the spool files ready at that tick)
    spool_files: int = 0  # spool files the calling tasks wrote and this run committed
    call_tasks: int = 0  # calling Spark tasks (partitions of the pending requests)
    recovered: int = 0  # rows a crashed run left in the spool, committed by this run before planning
    stopped_reason: str | None = None
    elapsed_s: float = 0.0
    plan_s: float = 0.0  # recovery, pinning the ledger, (with llm.max_requests) numbering: before the calling job
    calling_s: float = 0.0  # the calling job, from its start to its last task's end
    count_s: float = 0.0  # counting requested/pending, before the first commit (alongside the calling job)
    first_sent_s: float | None = None  # from the run's start to its first request (earliest sent_at)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def problems(self) -> list[str]:
        """Violated identities (empty when everything reconciles)."""
        out = []
        if self.requested != self.already_done + self.pending:
            out.append(f"requested {self.requested} != already_done {self.already_done} + pending {self.pending}")
        if self.pending != self.sent + self.not_sent:
            out.append(f"pending {self.pending} != sent {self.sent} + not_sent {self.not_sent}")
        if self.sent != self.ok + self.parse_error + self.failed:
            out.append(f"sent {self.sent} != ok {self.ok} + parse_error {self.parse_error} + failed {self.failed}")
        if self.failed != sum(self.failed_by_class.values()):
            out.append("failed_by_class does not sum to failed")
        return out

    def reconciles(self) -> bool:
        return not self.problems()

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        """Flat numeric metrics for MLflow (`<stage>.llm.sent`, ...). No secrets by construction."""
        prefix = prefix if prefix is not None else f"{self.stage}.llm."
        values: dict[str, float] = {}
        for key, value in asdict(self).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                values[prefix + key] = float(value)
        for cls, n in self.failed_by_class.items():
            values[f"{prefix}failed.{cls}"] = float(n)
        for cls, n in self.parse_error_by_class.items():
            values[f"{prefix}parse_error.{cls}"] = float(n)
        values[prefix + "tokens"] = float(self.tokens)
        return values

    def summary(self) -> str:
        lat = "n/a" if self.latency_ms_p50 is None else (
            f"{self.latency_ms_p50:.0f}/{self.latency_ms_p95:.0f}/{self.latency_ms_p99:.0f} ms")
        return (f"[{self.stage}] requested={self.requested} already_done={self.already_done} "
                f"sent={self.sent} ok={self.ok} parse_error={self.parse_error} failed={self.failed} "
                f"{dict(self.failed_by_class) or ''} retried={self.retried} tokens={self.tokens} "
                f"latency p50/p95/p99={lat}"
                + (f" stopped: {self.stopped_reason}" if self.stopped_reason else ""))


@dataclass(frozen=True)
class Progress:
    """The state of a run after one ledger commit (counts are of this run's committed rows)."""

    stage: str
    run_id: str
    commits: int
    rows_done: int
    rows_total: int
    ok: int
    parse_error: int
    failed: int
    tokens: int
    elapsed_s: float
    errors: dict[str, int]

    @property
    def requests_per_s(self) -> float:
        return self.rows_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> ProgressLine:
        """`[stage] commit i: <done>/<total> requests (p%), <rate> requests/s, ETA h:mm:ss,
        <tok/s>, ok/parse_error/failed, errors so far` (jobs.progress.progress_line)."""
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return progress_line(
            f"[{self.stage}] commit {self.commits}:", self.rows_done,
            self.rows_total, self.elapsed_s, "requests",
            f"{self.tokens_per_s:.0f} tok/s, ok={self.ok} parse_error={self.parse_error} "
            f"failed={self.failed}, errors so far: {errs}")


def print_progress(progress: Progress) -> None:
    """`run_llm_stage`'s default when called directly: each commit's line to stderr (stages
    pass their own progress callback; the CLI's printer is jobs.cli.progress)."""
    print(progress.line(), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------------
def terminal_statuses(retry_failed: bool) -> tuple[str, ...]:
    return (STATUS_OK, STATUS_PARSE_ERROR) if retry_failed else (STATUS_OK, STATUS_PARSE_ERROR, STATUS_FAILED)


def latest_calls(lakehouse: Lakehouse, stage: str | None = None) -> DataFrame:
    """One ledger row per request_id: ok before parse_error before failed, then the newest."""
    calls = lakehouse.read(LLM_CALLS.name)
    if stage is not None:
        calls = calls.where(F.col("stage") == stage)
    rank = (F.when(F.col("status") == STATUS_OK, 0)
            .when(F.col("status") == STATUS_PARSE_ERROR, 1).otherwise(2))
    window = Window.partitionBy("request_id").orderBy(rank, F.col("completed_at").desc())
    return calls.withColumn("_r", F.row_number().over(window)).where("_r = 1").drop("_r")


def frame_stats(frame: pd.DataFrame) -> dict:
    """Counts of committed result rows (a pandas frame of ledger columns): rows, per status, per
    error class of failed / parse_error rows, retried, HTTP attempts, tokens. No Spark action."""
    out = {"rows": len(frame), "ok": 0, "parse_error": 0, "failed": 0, "failed_by_class": {},
           "parse_error_by_class": {}, "retried": 0, "attempts": 0, "p_tok": 0, "c_tok": 0}
    if not len(frame):
        return out
    for status, n in frame["status"].value_counts().items():
        out[status] = out.get(status, 0) + int(n)
    for status, key in ((STATUS_FAILED, "failed_by_class"), (STATUS_PARSE_ERROR, "parse_error_by_class")):
        classes = frame.loc[frame["status"] == status, "error_class"].fillna("unknown")
        out[key] = {str(c): int(n) for c, n in classes.value_counts().items()}
    attempts = pd.to_numeric(frame["attempts"], errors="coerce").fillna(0)
    out["retried"] = int((attempts > 1).sum())
    out["attempts"] = int(attempts.sum())
    out["p_tok"] = int(pd.to_numeric(frame["prompt_tokens"], errors="coerce").fillna(0).sum())
    out["c_tok"] = int(pd.to_numeric(frame["completion_tokens"], errors="coerce").fillna(0).sum())
    return out


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------
def spool_root(config: Config) -> Path:
    """Where calling tasks spool results: `llm.spool_dir`, default `<home>/spool`. It must be a
    path the driver and every executor see (local: any local dir; Databricks: a UC Volume,
    `/Volumes/<catalog>/<schema>/<volume>/spool`, required there)."""
    if config.llm.spool_dir is not None:
        return Path(config.llm.spool_dir)
    if config.runtime == "databricks":
        raise ConfigError("llm.spool_dir must be set on Databricks: a Unity Catalog Volume path that the driver "
                          "and every executor can read and write (e.g. /Volumes/<catalog>/<schema>/<volume>/spool)")
    return driver_dir(config) / "spool"  # the home, or on a URI home the driver's folder for it


def call_tasks(config: Config, spark, endpoint: EndpointSettings, override: int | None = None) -> int:
    """Calling tasks of a run: `override`, else `llm.call_tasks`, else the cluster's parallel
    slots minus one (one slot stays free for the ledger commits); at least 1 and at most
    `endpoint.max_concurrency` (each task keeps at least one request in flight)."""
    tasks = override or config.llm.call_tasks or spark.sparkContext.defaultParallelism - 1
    return max(1, min(int(tasks), int(endpoint.max_concurrency)))


def _spool_frame(files: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _ledger_frame(lakehouse: Lakehouse, frame: pd.DataFrame, run_id: str, commit: int | None) -> DataFrame:
    """A spooled result frame as a Spark frame of ledger rows (run_id, micro_batch = commit)."""
    frame = frame.assign(run_id=run_id, micro_batch=pd.array([commit] * len(frame), dtype="Int32"))
    schema = StructType([f for f in LLM_CALLS.schema.fields if f.name in frame.columns])
    schema = StructType([StructField(f.name, f.dataType, True) for f in schema.fields])
    return lakehouse.spark.createDataFrame(frame[[f.name for f in schema.fields]], schema=schema)


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def recover_spool(lakehouse: Lakehouse, stage_dir: Path) -> int:
    """Commit what crashed runs of a stage left in its spool dir; returns the rows committed.

    For each `<stage_dir>/<run_id>/`: its complete spool files are appended to the ledger with
    that run_id, except rows whose (request_id, run_id) the ledger already holds (the crash came
    between an append and the deletes) — insert-only, so nothing is duplicated; then the files,
    half-written temp files (results lost with the crash) and the stop marker are removed.
    """
    if not stage_dir.is_dir():
        return 0
    recovered = 0
    for run_dir in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
        files = spool_files(str(run_dir))
        if files:
            run_id = run_dir.name
            rows = _ledger_frame(lakehouse, _spool_frame(files), run_id, None)
            known = (lakehouse.read(LLM_CALLS.name).where(F.col("run_id") == run_id)
                     .select("request_id", "run_id"))
            new = rows.join(known, ["request_id", "run_id"], "left_anti").localCheckpoint(eager=True)
            n = new.count()
            if n:
                lakehouse.append(new, LLM_CALLS)
            recovered += n
            _remove(files)
        shutil.rmtree(run_dir, ignore_errors=True)
    return recovered


class _CallingJob:
    """The run's one calling Spark job, evaluated in a background thread (its job group lets the
    driver cancel it). `files` holds the job's output rows (spool_file, rows) once done."""

    def __init__(self, frame: DataFrame, description: str):
        from pyspark import InheritableThread

        self.group = f"taskseed-call-{uuid.uuid4().hex[:12]}"
        self.done = threading.Event()
        self.files: list[tuple[str, int]] = []
        self.error: BaseException | None = None
        self.elapsed_s = 0.0
        sc = frame.sparkSession.sparkContext

        def run() -> None:
            t0 = time.monotonic()
            try:
                sc.setJobGroup(self.group, description, interruptOnCancel=True)
                self.files = [(r.spool_file, int(r.rows)) for r in frame.collect()]
            except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
                self.error = exc
            finally:
                self.elapsed_s = time.monotonic() - t0
                self.done.set()

        self._sc = sc
        self._thread = InheritableThread(target=run, name="taskseed-calling-job", daemon=True)
        self._thread.start()

    def cancel(self, timeout_s: float = 60.0) -> None:
        self._sc.cancelJobGroup(self.group)
        self._thread.join(timeout_s)


def run_llm_stage(
    lakehouse: Lakehouse,
    config: Config,
    requests_df: DataFrame,
    stage: str,
    progress: Callable[[Progress], None] | None = print_progress,
    *,
    endpoint: "EndpointSettings | Mapping[str, EndpointSettings] | None" = None,
    run_id: str | None = None,
    retry_failed: bool | None = None,
    concurrent_tasks: int | None = None,
) -> RunAccounting:
    """Commit a crashed run's spool, then send the requests that have no terminal ledger row
    through one streaming calling job, committing its spool files to the ledger as they appear
    (see the module docstring for the design, the unit of loss and the stops).

    `endpoint`: the stage's EndpointSettings, or the pipeline's {stage: EndpointSettings}; default
    `endpoint_for(config, stage)` (the stage's endpoint, `Config.stage_endpoint`; the simulator when
    it has no base_url and no replicas).
    `concurrent_tasks` overrides `llm.call_tasks`. `progress` gets a `Progress` after each
    ledger commit. A stage-fatal stop prints one `[stage] stopped: ...` line on stderr and keeps
    it in `stopped_reason`. An exception (from `progress`, a commit, or Ctrl-C) cancels the
    calling job and propagates; the committed rows stay in the ledger and the spooled ones are
    committed by the next run.
    """
    endpoint = stage_settings(endpoint, stage)
    if endpoint is None:
        with endpoint_for(config, stage) as ep:
            return run_llm_stage(lakehouse, config, requests_df, stage, progress, endpoint=ep,
                                 run_id=run_id, retry_failed=retry_failed, concurrent_tasks=concurrent_tasks)
    if retry_failed is None:
        retry_failed = config.llm.retry_failed
    missing = [c for c in REQUIRED_COLUMNS if c not in requests_df.columns]
    if missing:
        raise ValueError(f"requests frame lacks columns {missing}")
    spark = lakehouse.spark
    started, started_wall = time.monotonic(), time.time()
    run_id = run_id or uuid.uuid4().hex
    acc = RunAccounting(stage=stage, run_id=run_id)
    stage_dir = spool_root(config) / stage
    acc.recovered = recover_spool(lakehouse, stage_dir)

    requests = requests_df if "stage" in requests_df.columns else requests_df.withColumn("stage", F.lit(stage))
    # the ledger as of now, pinned: the calling job and the counts read the same `done` set even
    # while this run's own commits add rows
    lakehouse.ensure(LLM_CALLS)
    done = (lakehouse.read(LLM_CALLS.name, version=lakehouse.version(LLM_CALLS.name))
            .where(F.col("status").isin(*terminal_statuses(retry_failed)))
            .select("request_id"))
    flagged = flag_requests(requests, done)
    snapshots: list[DataFrame] = []
    latencies = array.array("d")  # of the rows this run committed: the percentiles without a ledger query

    def count(frame: DataFrame) -> int:
        acc.input_rows, acc.requested, acc.pending = plan_counts(frame)
        acc.already_done = acc.requested - acc.pending
        return acc.pending

    try:
        if config.llm.max_requests is None:
            # no cap: the calling job plans as it starts (no materialization, no numbering) and the
            # counts are one aggregation run alongside it, off the path to the first request
            with shared_api_key(spark, endpoint) as api_key:
                _call_and_commit(lakehouse, config, pending_requests(requests, done), stage, run_id,
                                 lambda: count(flagged),
                                 endpoint, api_key, stage_dir / run_id, acc, progress, started, concurrent_tasks,
                                 latencies)
        else:
            # a cap needs the pending set numbered before the first request (materialized once)
            snapshot = flagged.localCheckpoint(eager=True)
            snapshots.append(snapshot)
            to_send = min(count(snapshot), config.llm.max_requests)
            pending = pending_of(snapshot)
            if to_send < acc.pending:
                numbered_snapshot, numbered, _ = number_pending(pending, done.limit(0))
                snapshots.append(numbered_snapshot)
                pending = numbered.where(F.col("_rn") < to_send).drop("_rn")
            if to_send:
                with shared_api_key(spark, endpoint) as api_key:
                    _call_and_commit(lakehouse, config, pending, stage, run_id, lambda: to_send, endpoint,
                                     api_key, stage_dir / run_id, acc, progress, started, concurrent_tasks,
                                     latencies)
        if acc.stopped_reason is None and acc.sent < acc.pending and config.llm.max_requests is not None:
            acc.stopped_reason = f"max_requests={config.llm.max_requests} reached"
    finally:
        for snapshot in snapshots:
            snapshot.unpersist()
    acc.not_sent = acc.pending - acc.sent
    if acc.first_sent_s is not None:
        acc.first_sent_s -= started_wall
    figures = latency_percentiles(latencies)  # the data card's function too (one source)
    if figures is not None:
        acc.latency_ms_p50, acc.latency_ms_p95, acc.latency_ms_p99 = figures
    acc.elapsed_s = time.monotonic() - started
    return acc


_NON_RETRYABLE_CLIENT = ("http_400", "http_401", "http_403", "http_404")


def _call_and_commit(lakehouse: Lakehouse, config: Config, pending: DataFrame, stage: str, run_id: str,
                     count: Callable[[], int], endpoint: EndpointSettings, api_key, run_dir: Path,
                     acc: RunAccounting, progress: Callable[[Progress], None] | None, started: float,
                     concurrent_tasks: int | None, latencies: array.array) -> None:
    """Start the calling job, then commit its spool files until it ends (the driver's loop);
    `count()` (the requests it is to send) runs once, before the first commit, while the job's
    first requests are out."""
    spark = lakehouse.spark
    tasks = acc.call_tasks = call_tasks(config, spark, endpoint, concurrent_tasks)
    commit_rows, commit_s = config.llm.commit_unit_rows, config.llm.commit_seconds
    run_dir.mkdir(parents=True, exist_ok=True)
    present = [c for c in PASSTHROUGH_COLUMNS if c in pending.columns]
    fn = make_spool_partition(endpoint, per_task_concurrency(endpoint.max_concurrency, tasks), present,
                              pending.schema, str(run_dir), commit_rows, commit_s, api_key)
    # one task: no shuffle; more: hash-partitioned on request_id (balanced, no global sort)
    spread = pending.coalesce(1) if tasks == 1 else pending.repartition(tasks, "request_id")
    calling = spread.mapInPandas(fn, SPOOL_FILE_SCHEMA)
    acc.plan_s = time.monotonic() - started
    job = _CallingJob(calling, f"taskseed {stage}: pending requests of run {run_id}, {tasks} calling task(s)")
    errors: dict[str, int] = {}
    committed: set[str] = set()
    last_commit = commit_cost = 0.0
    to_send: int | None = None

    def counted() -> int:
        # counted once, when the first spool file is to be committed (or the job ended without
        # one): by then the first requests are out, so the counts never hold up the first request
        nonlocal to_send
        if to_send is None:
            t0 = time.monotonic()
            to_send = count()
            acc.count_s = time.monotonic() - t0
        return to_send

    try:
        while True:
            finished = job.done.is_set()
            files = spool_files(str(run_dir))
            if not files:
                if finished:
                    counted()
                    break
                job.done.wait(0.1)
                continue
            # at most every commit_seconds, and never busier than half the time: a gap at least
            # as long as the last commit took leaves the cores to the calling tasks (the spooled
            # files are safe meanwhile; only the ledger lags)
            if not finished and time.monotonic() - last_commit < max(commit_s, commit_cost):
                job.done.wait(min(0.1, commit_s))
                continue
            counted()
            commit_started = time.monotonic()
            frame = _spool_frame(files)
            lakehouse.append(_ledger_frame(lakehouse, frame, run_id, acc.commits), LLM_CALLS)
            _remove(files)
            committed.update(files)
            last_commit = time.monotonic()
            commit_cost = last_commit - commit_started
            stats = frame_stats(frame)
            latencies.extend(pd.to_numeric(frame["latency_ms"], errors="coerce").dropna().astype(float).tolist())
            first = pd.to_datetime(frame["sent_at"], utc=True).min()
            if not pd.isna(first) and (acc.first_sent_s is None or first.timestamp() < acc.first_sent_s):
                acc.first_sent_s = first.timestamp()  # epoch seconds until the run's end subtracts its start
            _add(acc, stats)
            acc.commits += 1
            acc.spool_files += len(files)
            for key in ("failed_by_class", "parse_error_by_class"):
                for cls, n in stats[key].items():
                    errors[cls] = errors.get(cls, 0) + n
            if progress is not None:
                progress(Progress(stage, run_id, acc.commits, acc.sent, to_send, acc.ok, acc.parse_error,
                                  acc.failed, acc.tokens, time.monotonic() - started, dict(errors)))
            if acc.stopped_reason is None:
                reason, fatal = _stop_after_commit(config, acc, frame, commit_rows, to_send)
                if reason is not None:
                    acc.stopped_reason = reason
                    write_stop_marker(str(run_dir), reason)
                    if fatal:
                        print(f"[{stage}] stopped: {reason}", file=sys.stderr, flush=True)
    except BaseException as exc:
        # Ask the tasks to stop and drain (their results stay in the spool for the next run),
        # give them a moment, then cancel what is still running.
        with contextlib.suppress(OSError):
            write_stop_marker(str(run_dir), f"interrupted: {type(exc).__name__}")
        if not job.done.wait(max(5.0, 2 * commit_s)):
            job.cancel()
        raise
    acc.calling_s = job.elapsed_s
    if job.error is not None:
        raise job.error
    missing = sorted(set(path for path, _ in job.files) - committed)
    if missing:  # every file the job reports was committed (a failed attempt's files are, too)
        raise RuntimeError(f"[{stage}] {len(missing)} spool files of the calling job were not committed, "
                           f"e.g. {missing[0]}")
    if acc.stopped_reason is None and acc.sent < to_send:
        marker = stop_reason(str(run_dir))
        acc.stopped_reason = marker or f"the calling tasks sent {acc.sent} of {to_send} requests"
    shutil.rmtree(run_dir, ignore_errors=True)


def _stop_after_commit(config: Config, acc: RunAccounting, frame: pd.DataFrame, commit_rows: int,
                       to_send: int) -> tuple[str | None, bool]:
    """(why the run must stop after this commit, whether it is stage-fatal); (None, False) to go on."""
    fatal = sorted(c for c in acc.failed_by_class if is_stage_fatal(c))
    if fatal:
        detail = frame.loc[frame["error_class"] == fatal[0], "error_detail"].dropna()
        words = " ".join(str(detail.iloc[0]).split()) if len(detail) else None
        return stage_fatal_reason(fatal[0], words) or fatal[0], True
    rejected = sum(acc.failed_by_class.get(c, 0) for c in _NON_RETRYABLE_CLIENT)
    if acc.sent and rejected == acc.sent and acc.sent >= min(commit_rows, to_send):
        return ("every request so far was rejected by the endpoint "
                f"({', '.join(sorted(acc.failed_by_class))}): check model, key and URL"), False
    if config.llm.max_tokens_budget is not None and acc.tokens >= config.llm.max_tokens_budget:
        return f"max_tokens_budget={config.llm.max_tokens_budget} reached ({acc.tokens} tokens used)", False
    return None, False


def dedupe_requests(requests: DataFrame) -> DataFrame:
    """The requests deduplicated on request_id (one shuffle on request_id, no global sort); `_n` =
    input rows per id."""
    others = [c for c in requests.columns if c != "request_id"]
    return requests.groupBy("request_id").agg(*[F.first(c).alias(c) for c in others], F.count("*").alias("_n"))


def pending_requests(requests: DataFrame, done_ids: DataFrame) -> DataFrame:
    """The requests deduplicated on request_id and without an id in `done_ids` (an anti-join:
    `done_ids` may repeat an id, so it needs no shuffle of its own before a broadcast), in request
    columns. Lazy, like `flag_requests`; what the calling job evaluates."""
    return dedupe_requests(requests).drop("_n").join(done_ids, "request_id", "left_anti")


def flag_requests(requests: DataFrame, done_ids: DataFrame) -> DataFrame:
    """The requests deduplicated on request_id (`_n` = input rows per id) and flagged against
    `done_ids` (`_done` true or null; a hash join against the distinct ids). Lazy: the calling job
    (through `pending_requests`) and `plan_counts` each evaluate the requests, so `requests` must
    be deterministic (the stages' plans are: content-hash ids over tables the stage does not
    write) and `done_ids` read at a pinned ledger version."""
    return dedupe_requests(requests).join(done_ids.distinct().withColumn("_done", F.lit(True)), "request_id", "left")


def pending_of(flagged: DataFrame) -> DataFrame:
    """The requests of a `flag_requests` frame without a terminal ledger row, in request columns."""
    return flagged.where(F.col("_done").isNull()).drop("_done", "_n")


def plan_counts(flagged: DataFrame) -> tuple[int, int, int]:
    """(input rows, distinct requests, pending) of a `flag_requests` frame: one aggregation."""
    row = flagged.agg(F.sum("_n").alias("rows"), F.count("*").alias("ids"),
                      F.count(F.when(F.col("_done").isNull(), 1)).alias("pending")).first()
    return int(row.rows or 0), int(row.ids or 0), int(row.pending or 0)


_PARTITION_SHIFT = 33  # monotonically_increasing_id(): partition id << 33 | row index in the partition


def number_pending(requests: DataFrame, done_ids: DataFrame,
                   batch_rows: int | None = None) -> tuple[DataFrame, DataFrame, int]:
    """The pending requests (one row per request_id without a row in `done_ids`), materialized once
    and numbered 0..n-1 (`_rn`; with `batch_rows`, also `_mb` = _rn // batch_rows) — without a
    global sort. The call step keeps `_rn < llm.max_requests` to cap a run exactly.

    The anti-join is a hash-partitioned shuffle on request_id; each partition's rows get a local
    index (`monotonically_increasing_id`, evaluated once into the local checkpoint), one small
    aggregation counts rows per partition, and the driver turns those counts into offsets (as
    RDD.zipWithIndex does). So no task ever holds more than its own partition, where a
    `row_number()` over `Window.orderBy(request_id)` pulls every pending id through one task.
    Which requests get the low numbers depends on the partitioning, not on the id order.

    Returns (snapshot to unpersist, numbered frame, number of pending requests).
    """
    snapshot = (requests.dropDuplicates(["request_id"]).join(done_ids, "request_id", "left_anti")
                .withColumn("_mid", F.monotonically_increasing_id())
                .localCheckpoint(eager=True))
    part = F.shiftright("_mid", _PARTITION_SHIFT)
    counts = sorted((int(r.p), int(r.n)) for r in snapshot.groupBy(part.alias("p")).agg(F.count("*").alias("n")).collect())
    offsets, total = [], 0
    for p, n in counts:
        offsets += [F.lit(p), F.lit(total)]
        total += n
    offset = F.create_map(*offsets)[part] if offsets else F.lit(0).cast("long")
    numbered = snapshot.withColumn("_rn", offset + (F.col("_mid") - F.shiftleft(part, _PARTITION_SHIFT))).drop("_mid")
    if batch_rows is not None:
        numbered = numbered.withColumn("_mb", F.floor(F.col("_rn") / F.lit(batch_rows)).cast("int"))
    return snapshot, numbered, total


def _add(acc: RunAccounting, stats: dict) -> None:
    acc.sent += stats["rows"]
    acc.ok += stats["ok"]
    acc.parse_error += stats["parse_error"]
    acc.failed += stats["failed"]
    for src, dst in ((stats["failed_by_class"], acc.failed_by_class),
                     (stats["parse_error_by_class"], acc.parse_error_by_class)):
        for cls, n in src.items():
            dst[cls] = dst.get(cls, 0) + n
    acc.retried += stats["retried"]
    acc.http_attempts += stats["attempts"]
    acc.prompt_tokens += stats["p_tok"]
    acc.completion_tokens += stats["c_tok"]
