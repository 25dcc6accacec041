"""The call step of every LLM stage: the ledger-driven runner (jobs/llm_stage/runner.py drives it).

`run_llm_stage` sends only requests without a terminal row in `llm_calls`, in micro-batches of
`config.llm.micro_batch_rows`; each micro-batch is one Spark job whose only action is the Delta
append of its results to the ledger, so

- the endpoint is called once per pending request per run (the results DataFrame is never
  re-evaluated: counts are read back from the committed ledger rows),
- a crash loses at most the micro-batch in flight (its calls are paid, not recorded),
- a rerun after a complete run sends zero requests.

Terminal statuses: `ok` and `parse_error` (the raw text is in the ledger; re-parse it, don't
re-ask). `failed` rows (retries exhausted) are terminal too by default, so a rerun does not
hammer a broken endpoint; `retry_failed=True` re-sends them, and then the ledger holds several
rows for that request_id — read it through `latest_calls`, which keeps the best row per id.

Requests frame columns: request_id, stage, source_key, task, task_family, sample_index, model,
prompt_version, messages_json, response_format_json, temperature, max_tokens.

Accounting (`RunAccounting`) reconciles exactly:
    requested = already_done + pending;  pending = sent + not_sent;
    sent = ok + parse_error + failed (each read back from the ledger rows this run appended).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from schemas.tables import LLM_CALLS
from jobs.progress import ProgressLine, progress_line
from jobs.llm_stage.endpoint import call_endpoint, endpoint_for, shared_api_key
from udfs.llm_client import (STATUS_FAILED, STATUS_OK, STATUS_PARSE_ERROR, EndpointSettings, is_stage_fatal,
                              stage_fatal_reason)

REQUIRED_COLUMNS = ("request_id", "messages_json")
_NON_RETRYABLE_CLIENT = ("http_400", "http_401", "http_403", "http_404")


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
    micro_batches: int = 0
    stopped_reason: str | None = None
    elapsed_s: float = 0.0

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
    stage: str
    run_id: str
    micro_batch: int
    micro_batches: int
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
        """`[stage] micro-batch i/n: <done>/<total> requests (p%), <rate> requests/s, ETA h:mm:ss,
        <tok/s>, ok/parse_error/failed, errors so far` (jobs.progress.progress_line)."""
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return progress_line(
            f"[{self.stage}] micro-batch {self.micro_batch + 1}/{self.micro_batches}:", self.rows_done,
            self.rows_total, self.elapsed_s, "requests",
            f"{self.tokens_per_s:.0f} tok/s, ok={self.ok} parse_error={self.parse_error} "
            f"failed={self.failed}, errors so far: {errs}")


def print_progress(progress: Progress) -> None:
    """`run_llm_stage`'s default when called directly: each micro-batch's line to stderr (stages
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


def _batch_stats(lakehouse: Lakehouse, run_id: str, micro_batch: int | None) -> dict:
    """Counts of the rows this run committed (optionally one micro-batch): one Spark action."""
    calls = lakehouse.read(LLM_CALLS.name).where(F.col("run_id") == run_id)
    if micro_batch is not None:
        calls = calls.where(F.col("micro_batch") == micro_batch)
    rows = (calls.groupBy("status", "error_class")
            .agg(F.count("*").alias("n"),
                 F.sum(F.when(F.col("attempts") > 1, 1).otherwise(0)).alias("retried"),
                 F.sum(F.coalesce("attempts", F.lit(0))).alias("attempts"),
                 F.sum(F.coalesce("prompt_tokens", F.lit(0))).alias("p_tok"),
                 F.sum(F.coalesce("completion_tokens", F.lit(0))).alias("c_tok"))
            .collect())
    out = {"rows": 0, "ok": 0, "parse_error": 0, "failed": 0, "failed_by_class": {},
           "parse_error_by_class": {}, "retried": 0, "attempts": 0, "p_tok": 0, "c_tok": 0}
    for r in rows:
        out["rows"] += r.n
        out[r.status] = out.get(r.status, 0) + r.n
        if r.status == STATUS_FAILED:
            out["failed_by_class"][r.error_class] = out["failed_by_class"].get(r.error_class, 0) + r.n
        if r.status == STATUS_PARSE_ERROR:
            out["parse_error_by_class"][r.error_class] = out["parse_error_by_class"].get(r.error_class, 0) + r.n
        for key in ("retried", "attempts", "p_tok", "c_tok"):
            out[key] += int(getattr(r, key) or 0)
    return out


def _latency_percentiles(lakehouse: Lakehouse, run_id: str) -> tuple[float | None, ...]:
    row = (lakehouse.read(LLM_CALLS.name).where(F.col("run_id") == run_id)
           .agg(F.percentile("latency_ms", F.array(F.lit(0.5), F.lit(0.95), F.lit(0.99))).alias("p"))
           .first())
    if row is None or row.p is None:
        return (None, None, None)
    return tuple(float(x) for x in row.p)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------
def run_llm_stage(
    lakehouse: Lakehouse,
    config: Config,
    requests_df: DataFrame,
    stage: str,
    progress: Callable[[Progress], None] | None = print_progress,
    *,
    endpoint: EndpointSettings | None = None,
    run_id: str | None = None,
    retry_failed: bool | None = None,
    concurrent_tasks: int | None = None,
) -> RunAccounting:
    """Send the requests that have no terminal ledger row; append results per micro-batch.

    `endpoint` defaults to `endpoint_for(config)` (the simulator when base_url is null).
    Stops cleanly between micro-batches at `config.llm.max_requests` / `max_tokens_budget`
    (the token budget is checked after each micro-batch, so it can be exceeded by at most one
    micro-batch), after a micro-batch with any stage-fatal result (`udfs.llm_client.is_stage_fatal`:
    structured output rejected, HTTP 401/403/404 — every further request would fail alike; the
    reason is printed as one `[stage] stopped: ...` line on stderr and kept in `stopped_reason`),
    or when a whole micro-batch failed with bad-request errors.
    An exception from `progress` propagates (the committed micro-batches stay in the ledger).
    """
    if endpoint is None:
        with endpoint_for(config) as ep:
            return run_llm_stage(lakehouse, config, requests_df, stage, progress, endpoint=ep,
                                 run_id=run_id, retry_failed=retry_failed, concurrent_tasks=concurrent_tasks)
    if retry_failed is None:
        retry_failed = config.llm.retry_failed
    missing = [c for c in REQUIRED_COLUMNS if c not in requests_df.columns]
    if missing:
        raise ValueError(f"requests frame lacks columns {missing}")
    spark = lakehouse.spark
    started = time.monotonic()
    run_id = run_id or uuid.uuid4().hex
    acc = RunAccounting(stage=stage, run_id=run_id)
    tasks = concurrent_tasks or max(1, spark.sparkContext.defaultParallelism)
    batch_rows = config.llm.micro_batch_rows

    requests = requests_df if "stage" in requests_df.columns else requests_df.withColumn("stage", F.lit(stage))
    totals = requests.agg(F.count("*").alias("rows"), F.countDistinct("request_id").alias("ids")).first()
    acc.input_rows, acc.requested = int(totals.rows), int(totals.ids)

    done = (lakehouse.read(LLM_CALLS.name)
            .where(F.col("status").isin(*terminal_statuses(retry_failed)))
            .select("request_id").distinct())
    snapshot, pending, acc.pending = number_pending(requests, done, batch_rows)
    try:
        acc.already_done = acc.requested - acc.pending
        n_batches = math.ceil(acc.pending / batch_rows) if acc.pending else 0
        errors: dict[str, int] = {}
        with shared_api_key(spark, endpoint) if n_batches else contextlib.nullcontext() as api_key:
            for mb in range(n_batches):
                stop = _budget_stop(config, acc)
                if stop:
                    acc.stopped_reason = stop
                    break
                start_rn, end_rn = mb * batch_rows, min(acc.pending, (mb + 1) * batch_rows)
                if config.llm.max_requests is not None:
                    end_rn = min(end_rn, start_rn + config.llm.max_requests - acc.sent)
                batch = pending.where((F.col("_mb") == mb) & (F.col("_rn") < end_rn)).drop("_rn", "_mb")
                results = (call_endpoint(batch, endpoint, tasks, api_key=api_key)
                           .withColumn("stage", F.lit(stage))
                           .withColumn("run_id", F.lit(run_id))
                           .withColumn("micro_batch", F.lit(mb)))
                lakehouse.append(results, LLM_CALLS)  # the one action that calls the endpoint
                stats = _batch_stats(lakehouse, run_id, mb)
                if stats["rows"] != end_rn - start_rn:
                    raise RuntimeError(f"micro-batch {mb}: sent {end_rn - start_rn} requests but "
                                       f"{stats['rows']} results were committed")
                _add(acc, stats)
                acc.micro_batches += 1
                for cls, n in stats["failed_by_class"].items():
                    errors[cls] = errors.get(cls, 0) + n
                for cls, n in stats["parse_error_by_class"].items():
                    errors[cls] = errors.get(cls, 0) + n
                if progress is not None:
                    progress(Progress(stage, run_id, mb, n_batches, acc.sent, acc.pending, acc.ok,
                                      acc.parse_error, acc.failed, acc.prompt_tokens + acc.completion_tokens,
                                      time.monotonic() - started, dict(errors)))
                fatal = sorted(c for c in stats["failed_by_class"] if is_stage_fatal(c))
                if fatal:
                    acc.stopped_reason = _stage_fatal_line(lakehouse, run_id, fatal[0])
                    print(f"[{stage}] stopped: {acc.stopped_reason}", file=sys.stderr, flush=True)
                    break
                if stats["rows"] and sum(stats["failed_by_class"].get(c, 0) for c in _NON_RETRYABLE_CLIENT) == stats["rows"]:
                    acc.stopped_reason = ("every request of a micro-batch was rejected by the endpoint "
                                          f"({', '.join(sorted(stats['failed_by_class']))}): check model, key and URL")
                    break
        if acc.stopped_reason is None and acc.sent < acc.pending:
            acc.stopped_reason = _budget_stop(config, acc)
    finally:
        snapshot.unpersist()
    acc.not_sent = acc.pending - acc.sent
    if acc.sent:
        acc.latency_ms_p50, acc.latency_ms_p95, acc.latency_ms_p99 = _latency_percentiles(lakehouse, run_id)
    acc.elapsed_s = time.monotonic() - started
    return acc


_PARTITION_SHIFT = 33  # monotonically_increasing_id(): partition id << 33 | row index in the partition


def number_pending(requests: DataFrame, done_ids: DataFrame, batch_rows: int) -> tuple[DataFrame, DataFrame, int]:
    """The pending requests (one row per request_id without a row in `done_ids`), materialized once
    and numbered 0..n-1 into micro-batches of `batch_rows` (`_rn`, `_mb`) — without a global sort.

    The anti-join is a hash-partitioned shuffle on request_id; each partition's rows get a local
    index (`monotonically_increasing_id`, evaluated once into the local checkpoint), one small
    aggregation counts rows per partition, and the driver turns those counts into offsets (as
    RDD.zipWithIndex does). So no task ever holds more than its own partition, where a
    `row_number()` over `Window.orderBy(request_id)` pulls every pending id through one task.
    Which requests share a micro-batch depends on the partitioning, not on the id order; every
    micro-batch but the last has exactly `batch_rows` rows.

    Returns (snapshot to unpersist, numbered frame with `_rn`/`_mb`, number of pending requests).
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
    numbered = (snapshot.withColumn("_rn", offset + (F.col("_mid") - F.shiftleft(part, _PARTITION_SHIFT)))
                .withColumn("_mb", F.floor(F.col("_rn") / F.lit(batch_rows)).cast("int"))
                .drop("_mid"))
    return snapshot, numbered, total


def _stage_fatal_line(lakehouse: Lakehouse, run_id: str, error_class: str) -> str:
    """`stage_fatal_reason` with the server's words from one ledger row of this run (the detail
    is already redacted and cut by the client); read only when the stage stops."""
    row = (lakehouse.read(LLM_CALLS.name)
           .where((F.col("run_id") == run_id) & (F.col("error_class") == error_class))
           .select("error_detail").limit(1).first())
    detail = " ".join(str(row.error_detail).split()) if row is not None and row.error_detail else None
    return stage_fatal_reason(error_class, detail) or error_class


def _budget_stop(config: Config, acc: RunAccounting) -> str | None:
    if config.llm.max_requests is not None and acc.sent >= config.llm.max_requests:
        return f"max_requests={config.llm.max_requests} reached"
    if config.llm.max_tokens_budget is not None and acc.tokens >= config.llm.max_tokens_budget:
        return f"max_tokens_budget={config.llm.max_tokens_budget} reached ({acc.tokens} tokens used)"
    return None


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
