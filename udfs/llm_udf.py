"""Executor side of the LLM engine: the `mapInPandas` function over request rows, one result row
per request (the driver side, `call_endpoint` and the key broadcast, is jobs/llm_stage/endpoint.py).

Each Spark task runs `udfs.llm_client.call_batch` on its pandas batches, so a task keeps up to
`max_concurrency // concurrent_tasks` requests in flight (the endpoint's budget split over the
tasks that run at once; with replicas, that share is split again over them in proportion to their
windows, `udfs.llm_router.replica_windows`); the clients and their event loop are built once per
Python worker.

Input columns (requests): request_id, messages_json, response_format_json (nullable),
temperature, max_tokens, plus any passthrough columns (stage, source_key, task, task_family,
sample_index, model, prompt_version) that are copied to the output unchanged.

Output columns: the passthrough columns, then request_id, status, content, reasoning_content,
error_class, error_detail, attempts, latency_ms, prompt_tokens, completion_tokens, finish_reason,
sampling_seed, sent_at, completed_at — the result dict of `udfs.llm_client` (statuses and
meanings in its module docstring); sent_at/completed_at are the client's per-request UTC times.

Two executor paths:
- `make_call_partition` (batch): each pandas batch is one `call_batch`, its result frame yielded
  when the batch's slowest request is done (direct use, `call_endpoint`).
- `make_spool_partition` (streaming, what the LLM stages run): the partition streams through
  `udfs.llm_client.stream_requests` with a constant in-flight window, and completed results are
  written to Parquet spool files as they complete (see `SpoolWriter`); the task yields one small
  row per spool file. No request waits for another request's batch.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd
from pyspark import Broadcast
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

from udfs.llm_client import EndpointSettings, call_batch, is_stage_fatal, stream_requests

REQUEST_COLUMNS = ("request_id", "messages_json", "response_format_json", "temperature", "max_tokens")
PASSTHROUGH_COLUMNS = ("stage", "source_key", "task", "task_family", "sample_index", "model", "prompt_version")
RESULT_FIELDS = (
    StructField("request_id", StringType(), False),
    StructField("status", StringType(), False),
    StructField("content", StringType()),
    StructField("reasoning_content", StringType()),
    StructField("error_class", StringType()),
    StructField("error_detail", StringType()),
    StructField("attempts", IntegerType()),
    StructField("latency_ms", DoubleType()),
    StructField("prompt_tokens", IntegerType()),
    StructField("completion_tokens", IntegerType()),
    StructField("finish_reason", StringType()),
    StructField("sampling_seed", LongType()),
    StructField("sent_at", TimestampType()),
    StructField("completed_at", TimestampType()),
)
_RESULT_NAMES = [f.name for f in RESULT_FIELDS]
_PANDAS_DTYPES = {"attempts": "Int32", "prompt_tokens": "Int32", "completion_tokens": "Int32",
                  "sampling_seed": "Int64", "latency_ms": "Float64"}
_TIME_COLUMNS = ("sent_at", "completed_at")


def per_task_concurrency(max_concurrency: int, concurrent_tasks: int) -> int:
    """The endpoint's in-flight budget split evenly over the Spark tasks that run at once."""
    return max(1, int(max_concurrency) // max(1, int(concurrent_tasks)))


def result_schema(input_schema: StructType, passthrough: Sequence[str]) -> StructType:
    by_name = {f.name: f for f in input_schema.fields}
    fields = [StructField(n, by_name[n].dataType, True) for n in passthrough if n != "request_id"]
    return StructType(fields + list(RESULT_FIELDS))


def results_frame(rows: list[dict], batch: pd.DataFrame, passthrough: Sequence[str]) -> pd.DataFrame:
    """Result dicts (in request order) + the batch's passthrough columns → output pandas frame."""
    out = pd.DataFrame({n: batch[n].to_numpy() for n in passthrough if n != "request_id"}, index=range(len(batch)))
    for name in _RESULT_NAMES:
        values = [r.get(name) for r in rows]
        if name in _PANDAS_DTYPES:
            out[name] = pd.array(values, dtype=_PANDAS_DTYPES[name])
        elif name in _TIME_COLUMNS:
            out[name] = pd.to_datetime(pd.Series(values, index=out.index, dtype=object), utc=True)
        else:
            out[name] = values
    return out


def make_call_partition(settings: EndpointSettings, concurrency: int, passthrough: Sequence[str],
                        api_key: Broadcast | None = None
                        ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The mapInPandas function: a picklable closure over settings (no secret), a concurrency
    budget and, optionally, the broadcast handle of the key (see `shared_api_key`)."""
    passthrough = tuple(passthrough)

    def call_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            batch = batch.reset_index(drop=True)
            cols = [c for c in REQUEST_COLUMNS if c in batch.columns]
            if "model" in batch.columns:
                cols.append("model")
            requests = batch[cols].to_dict("records")
            key = api_key.value.reveal() if api_key is not None else None
            rows, _stats = call_batch(settings, requests, concurrency, api_key=key)
            yield results_frame(rows, batch, passthrough)

    return call_partition


# ---------------------------------------------------------------------------------------------
# Streaming through a partition into spool files
# ---------------------------------------------------------------------------------------------
SPOOL_SUFFIX = ".parquet"
STOP_MARKER = "_STOP"
SPOOL_FILE_SCHEMA = StructType([StructField("spool_file", StringType(), False),
                                StructField("rows", LongType(), False)])


def spool_files(directory: str) -> list[str]:
    """Complete spool files in `directory` (sorted), never a file still being written (those
    carry a leading dot until their atomic rename)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.endswith(SPOOL_SUFFIX) and not n.startswith("."))


def stop_reason(directory: str) -> str | None:
    """The reason written in the run's stop marker, or None while the run may go on."""
    try:
        with open(os.path.join(directory, STOP_MARKER), encoding="utf-8") as fh:
            return fh.read().strip() or "stopped"
    except FileNotFoundError:
        return None


def write_stop_marker(directory: str, reason: str) -> None:
    """Ask every calling task of the run to stop sending (atomic: temp file + rename)."""
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{STOP_MARKER}.{uuid.uuid4().hex}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(reason)
    os.replace(tmp, os.path.join(directory, STOP_MARKER))


class SpoolWriter:
    """Buffers result rows of one calling task and writes them as Parquet spool files.

    A file is written when `commit_rows` results are buffered (so a file holds at most
    `commit_rows`) or the oldest buffered result is `commit_seconds` old (checked on every
    `add`/`tick`), and on `close`. Each file is written
    under a dot-name and renamed into place, so a reader (the driver's commit loop, or the
    recovery of a later run) sees whole files only; a crash loses at most the buffer: fewer than
    `commit_rows` results, none older than `commit_seconds`. File names carry the partition, the
    attempt and a sequence number (`p00003-a0-000012-<uuid8>.parquet`).
    """

    def __init__(self, directory: str, schema: StructType, passthrough: Sequence[str], commit_rows: int,
                 commit_seconds: float, partition: int = 0, attempt: int = 0):
        from pyspark.sql.pandas.types import to_arrow_schema

        self.directory = directory
        self.schema = schema
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        self.passthrough = tuple(passthrough)
        self.types = {f.name: f.dataType for f in schema.fields}
        self.commit_rows = max(1, int(commit_rows))
        self.commit_seconds = float(commit_seconds)
        self.prefix = f"p{partition:05d}-a{attempt}"
        self.sequence = 0
        self.requests: list[dict] = []
        self.results: list[dict] = []
        self.oldest: float | None = None
        self.written: list[tuple[str, int]] = []
        os.makedirs(directory, exist_ok=True)

    def add(self, pairs: Iterable[tuple[dict, dict]]) -> list[tuple[str, int]]:
        """Buffer results; returns the files written (each of exactly `commit_rows` results,
        or, when the buffer got old, what it held)."""
        written = []
        for request, result in pairs:
            if self.oldest is None:
                self.oldest = time.monotonic()
            self.requests.append(request)
            self.results.append(result)
            if len(self.results) >= self.commit_rows:
                written.append(self.flush())
        return written + self.tick()

    def tick(self) -> list[tuple[str, int]]:
        """Write the buffer if it is full or old enough; returns the files written."""
        if self.results and (len(self.results) >= self.commit_rows
                             or time.monotonic() - (self.oldest or 0.0) >= self.commit_seconds):
            return [self.flush()]
        return []

    def close(self) -> list[tuple[str, int]]:
        return [self.flush()] if self.results else []

    def flush(self) -> tuple[str, int]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        batch = pd.DataFrame({n: pd.Series(_column(self.requests, n, self.types[n]), dtype=object)
                              for n in self.passthrough if n != "request_id"}, index=range(len(self.requests)))
        frame = results_frame(self.results, batch, self.passthrough)
        table = pa.Table.from_pandas(frame[[f.name for f in self.schema.fields]], schema=self.arrow_schema,
                                     preserve_index=False)
        name = f"{self.prefix}-{self.sequence:06d}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
        tmp, final = os.path.join(self.directory, "." + name), os.path.join(self.directory, name)
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.sequence += 1
        rows = len(self.results)
        self.requests, self.results, self.oldest = [], [], None
        self.written.append((final, rows))
        return final, rows


def _column(rows: list[dict], name: str, data_type) -> list:
    """One passthrough column as Python values; integral columns back from pandas' float+NaN."""
    values = [r.get(name) for r in rows]
    if isinstance(data_type, (IntegerType, LongType)):
        return [None if v is None or v != v else int(v) for v in values]
    return [None if isinstance(v, float) and v != v else v for v in values]


def _records(batches: Iterator[pd.DataFrame], columns: Sequence[str]) -> Iterator[dict]:
    """Request dicts from mapInPandas batches, one batch at a time (pulled lazily)."""
    for batch in batches:
        if batch.empty:
            continue
        present = [c for c in columns if c in batch.columns]
        yield from batch[present].to_dict("records")


def make_spool_partition(settings: EndpointSettings, concurrency: int, passthrough: Sequence[str],
                         input_schema: StructType, run_dir: str, commit_rows: int, commit_seconds: float,
                         api_key: Broadcast | None = None, stop_poll_s: float = 0.2,
                         ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The streaming mapInPandas function of the LLM stages' call step.

    Each task sends its partition's requests through `stream_requests` (a window of
    `concurrency` requests in flight, refilled as each completes), writes results to spool files
    under `run_dir` with a `SpoolWriter` (`commit_rows` / `commit_seconds`), and yields one row
    (`SPOOL_FILE_SCHEMA`: spool_file, rows) per file written. It stops taking new requests when
    the run's stop marker appears (polled every `stop_poll_s`) or when one of its own results is
    stage-fatal (`is_stage_fatal`: it then writes the marker itself, so the other tasks stop
    too); in-flight requests are drained and spooled either way. A retried attempt of a task
    sends nothing (its requests are pending for the next run, never paid twice). Closure: settings (no secret),
    numbers, paths and the key's broadcast handle — never the key.
    """
    passthrough = tuple(passthrough)
    columns = tuple(dict.fromkeys([*REQUEST_COLUMNS, "model", *passthrough]))
    spool_schema = result_schema(input_schema, passthrough)

    def spool_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        partition, attempt = (ctx.partitionId(), ctx.attemptNumber()) if ctx is not None else (0, 0)
        if attempt > 0:
            # Spark retries a task after an executor loss: the first attempt's requests may have
            # been answered and spooled already, and re-sending the partition would pay for them
            # twice. Send nothing; what the first attempt did not spool is left to the next run.
            return
        writer = SpoolWriter(run_dir, spool_schema, passthrough, commit_rows, commit_seconds, partition, attempt)
        state = {"stop": stop_reason(run_dir) is not None, "polled": time.monotonic()}

        def stop() -> bool:
            now = time.monotonic()
            if not state["stop"] and now - state["polled"] >= stop_poll_s:
                state["polled"] = now
                state["stop"] = stop_reason(run_dir) is not None
            return state["stop"]

        key = api_key.value.reveal() if api_key is not None else None
        tick_s = max(0.05, min(0.25, commit_seconds / 4))
        for pairs in stream_requests(settings, _records(batches, columns), concurrency, api_key=key, stop=stop,
                                     tick_s=tick_s):
            fatal = next((r["error_class"] for _, r in pairs if is_stage_fatal(r.get("error_class"))), None)
            if fatal is not None and not state["stop"]:
                state["stop"] = True
                write_stop_marker(run_dir, f"stage_fatal:{fatal}")
            files = writer.add(pairs)
            if files:
                yield pd.DataFrame(files, columns=["spool_file", "rows"])
        files = writer.close()
        if files:
            yield pd.DataFrame(files, columns=["spool_file", "rows"])

    return spool_partition


class SecretBox:
    """A secret value whose repr/str never show it (what the broadcast carries)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretBox(***)"

    __str__ = __repr__

    def __getstate__(self):
        return self._value

    def __setstate__(self, state):
        self._value = state
