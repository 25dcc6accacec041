"""Executor side of the LLM engine: the `mapInPandas` function over request rows, one result row
per request (the driver side, `call_endpoint` and the key broadcast, is jobs/llm_stage/endpoint.py).

Each Spark task runs `udfs.llm_client.call_batch` on its pandas batches, so a task keeps up to
`max_concurrency // concurrent_tasks` requests in flight (the endpoint's budget split over the
tasks that run at once); the client and its event loop are built once per Python worker.

Input columns (requests): request_id, messages_json, response_format_json (nullable),
temperature, max_tokens, plus any passthrough columns (stage, source_key, task, task_family,
sample_index, model, prompt_version) that are copied to the output unchanged.

Output columns: the passthrough columns, then request_id, status, content, reasoning_content,
error_class, error_detail, attempts, latency_ms, prompt_tokens, completion_tokens, finish_reason,
sampling_seed, sent_at, completed_at — the result dict of `udfs.llm_client` (statuses and
meanings in its module docstring); sent_at/completed_at are the client's per-request UTC times.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import pandas as pd
from pyspark import Broadcast
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

from udfs.llm_client import EndpointSettings, call_batch

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
