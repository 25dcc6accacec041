"""The executor side of the engine on local Spark: the result columns the ledger gets, with the
client's own per-request UTC times (not one timestamp per query) and the body's sampling seed."""

from __future__ import annotations

import datetime as dt

import pytest

from udfs.llm_client import EndpointSettings, sampling_seed
from udfs.llm_udf import RESULT_FIELDS, make_call_partition, result_schema

pytestmark = pytest.mark.spark


def test_result_rows_carry_per_request_times_reasoning_and_seed(spark, start_sim, make_requests):
    server = start_sim(latency_ms=80, latency_jitter_ms=0, max_concurrency=1, reasoning="only",
                       fault_rates=(("no_usage", 0.5),))
    settings = EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False, timeout_s=10)
    rows = make_requests(4)
    requests = spark.createDataFrame(rows).coalesce(1)
    passthrough = ["stage", "source_key"]
    fn = make_call_partition(settings, 4, passthrough)
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    out = requests.mapInPandas(fn, result_schema(requests.schema, passthrough))
    # Spark hands timestamps back as naive local datetimes; compare in UTC through SQL.
    out = out.selectExpr("*", "to_utc_timestamp(sent_at, current_timezone()) AS sent_utc",
                         "to_utc_timestamp(completed_at, current_timezone()) AS done_utc")
    results = [r.asDict() for r in out.collect()]
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    assert [f.name for f in RESULT_FIELDS] == out.columns[len(passthrough):len(passthrough) + len(RESULT_FIELDS)]
    assert sorted(r["request_id"] for r in results) == sorted(r["request_id"] for r in rows)
    for r in results:
        assert (r["status"], r["content"]) == ("ok", None) and '"final_answer"' in r["reasoning_content"]
        assert r["sampling_seed"] == sampling_seed(r["request_id"])
        assert before <= r["sent_utc"] <= r["done_utc"] <= after
    assert any(r["prompt_tokens"] is None for r in results) and any(r["prompt_tokens"] for r in results)
    # one server slot, 80 ms each: four distinct completion times, in the order they were served
    done = sorted(r["done_utc"] for r in results)
    assert len(set(done)) == 4 and all((b - a).total_seconds() >= 0.06 for a, b in zip(done, done[1:]))
