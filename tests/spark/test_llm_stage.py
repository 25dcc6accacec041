"""The ledger-driven runner on local Spark against the simulator over real HTTP.

Few, small tests (each Spark action costs ~1 s): a crash-and-rerun that must not send any
request twice, a full rerun that must send none, and a faulty, rate-limited, key-protected
endpoint whose every outcome must be recorded and reconcile — without the key leaking anywhere.
"""

from __future__ import annotations

import logging

import pytest

from jobs.llm_stage import latest_calls, run_llm_stage
from schemas.tables import LLM_CALLS
from udfs.llm_client import EndpointSettings

pytestmark = pytest.mark.spark


SECRET = "sk-test-SECRET123"


class Crash(RuntimeError):
    pass


def _endpoint(url: str, **kw) -> EndpointSettings:
    values = dict(base_url=url, model="taskseed-sim", require_key=False, max_concurrency=16,
                  timeout_s=5.0, backoff_base_s=0.02, backoff_max_s=0.2)
    values.update(kw)
    return EndpointSettings(**values)


def test_crash_then_rerun_sends_each_request_once_and_full_rerun_sends_none(
        spark, lakehouse, make_config, sim, make_requests):
    config = make_config("llm.micro_batch_rows=10")
    requests = spark.createDataFrame(make_requests(40))
    endpoint = _endpoint(sim.base_url)
    seen = []

    def crash_after_two(progress):
        seen.append(progress)
        if len(seen) == 2:
            raise Crash("simulated driver crash after two micro-batches")

    with pytest.raises(Crash):
        run_llm_stage(lakehouse, config, requests, "enrich", crash_after_two, endpoint=endpoint)
    assert lakehouse.read(LLM_CALLS.name).count() == 20
    assert seen[-1].rows_done == 20 and seen[-1].rows_total == 40
    assert sim.stats()["requests"] == 20

    lines = []
    acc = run_llm_stage(lakehouse, config, requests, "enrich", lambda p: lines.append(p.line()),
                        endpoint=endpoint)
    assert acc.reconciles(), acc.problems()
    assert (acc.requested, acc.already_done, acc.sent, acc.ok) == (40, 20, 20, 20)
    # progress counts only what this run sends: 20 pending, not the 40 requested
    assert len(lines) == 2 and "10/20 requests (50%)" in lines[0] and "20/20 requests (100%)" in lines[1]
    assert "requests/s, ETA " in lines[0] and "done in " in lines[1]
    stats = sim.stats()
    assert stats["requests"] == 40
    assert len(stats["first_attempts"]) == 40 and set(stats["by_request_id"].values()) == {1}
    assert acc.latency_ms_p50 is not None and acc.latency_ms_p50 <= acc.latency_ms_p99

    again = run_llm_stage(lakehouse, config, requests, "enrich", None, endpoint=endpoint)
    assert (again.requested, again.already_done, again.sent, again.micro_batches) == (40, 40, 0, 0)
    assert again.reconciles()
    assert sim.stats()["requests"] == 40  # a full rerun sends nothing
    ledger = lakehouse.read(LLM_CALLS.name)
    assert ledger.count() == 40 and ledger.select("request_id").distinct().count() == 40
    # times are the client's, per request: each sent before it completed, not one value per batch
    rows = ledger.select("micro_batch", "sent_at", "completed_at").collect()
    assert all(r.sent_at is not None and r.sent_at <= r.completed_at for r in rows)
    for mb in {r.micro_batch for r in rows}:
        assert len({r.completed_at for r in rows if r.micro_batch == mb}) > 1


def test_faulty_endpoint_every_outcome_recorded_budget_respected_key_never_leaks(
        spark, lakehouse, make_config, start_sim, make_requests, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TASKSEED_TEST_KEY", SECRET)
    server = start_sim(seed=3, latency_ms=5, latency_jitter_ms=3, fault_rate=0.35, hang_s=3,
                       retry_after_s=0.1, require_api_key=SECRET)
    config = make_config("llm.micro_batch_rows=20", "llm.max_requests=50")
    requests = spark.createDataFrame(make_requests(60))
    endpoint = _endpoint(server.base_url, api_key_env="TASKSEED_TEST_KEY", require_key=True,
                         timeout_s=0.6, max_retries=2)

    acc = run_llm_stage(lakehouse, config, requests, "enrich", endpoint=endpoint)

    assert acc.reconciles(), acc.problems()
    assert (acc.requested, acc.sent, acc.not_sent) == (60, 50, 10)
    assert acc.stopped_reason and "max_requests" in acc.stopped_reason
    # With 35% faults and only 2 retries some rows fail, most succeed; malformed or cut-off text
    # is still an `ok` completion (the stage's parser judges it), so no parse_error any more.
    assert acc.ok > 20 and acc.failed > 0 and acc.parse_error == 0 and acc.retried > 0
    rows = [r.asDict() for r in lakehouse.read(LLM_CALLS.name).collect()]
    assert len(rows) == 50
    # Nothing lost: every HTTP request the server saw is an attempt recorded in the ledger,
    # and the server never answered 401, so the key reached the Python workers.
    stats = server.stats()
    assert stats["requests"] == sum(r["attempts"] for r in rows)
    assert "401" not in stats["outcomes"]
    assert {k for k in stats["outcomes"] if k != "ok"} >= {"429", "500", "503", "hang", "drop"}
    for row in rows:
        assert row["status"] in ("ok", "failed")
        if row["status"] == "ok":
            assert row["content"]  # raw text kept for the parser
            assert row["error_class"] in (None, "truncated")
        if row["status"] == "failed":
            assert row["error_class"] in ("rate_limited", "http_500", "http_503", "timeout",
                                          "connection", "invalid_response")
    assert latest_calls(lakehouse, "enrich").count() == 50

    out, err = capfd.readouterr()
    texts = [repr(rows), out, err, caplog.text, repr(acc), acc.summary(), repr(acc.metrics()),
             repr(endpoint), repr(lakehouse.config.model_dump())]
    assert "micro-batch 3/3" in err  # progress printed to stderr
    for text in texts:
        assert SECRET not in text
    assert SECRET not in repr(spark.sparkContext.environment)


@pytest.mark.parametrize("server_kw, endpoint_kw, expected", [
    (dict(reject_json_schema=400), {}, "rejects the structured-output request"),
    (dict(require_api_key=SECRET), dict(api_key_env="TASKSEED_TEST_KEY", require_key=True), "rejected the API key"),
], ids=["structured_output_rejected", "wrong_key_401"])
def test_stage_fatal_result_stops_after_one_micro_batch_with_one_line(
        spark, lakehouse, make_config, start_sim, make_requests, monkeypatch, capfd,
        server_kw, endpoint_kw, expected):
    monkeypatch.setenv("TASKSEED_TEST_KEY", "sk-wrong-key-0000")
    server = start_sim(latency_ms=1, latency_jitter_ms=0, **server_kw)
    config = make_config("llm.micro_batch_rows=5")
    requests = spark.createDataFrame(make_requests(15))

    acc = run_llm_stage(lakehouse, config, requests, "enrich", None,
                        endpoint=_endpoint(server.base_url, **endpoint_kw))

    assert acc.reconciles(), acc.problems()
    assert (acc.pending, acc.sent, acc.not_sent, acc.micro_batches) == (15, 5, 10, 1)
    assert server.stats()["requests"] == 5  # not retried, and nothing after the first micro-batch
    assert expected in acc.stopped_reason and "server said:" in acc.stopped_reason
    err = capfd.readouterr().err
    stop_lines = [line for line in err.splitlines() if "stopped:" in line]
    assert stop_lines == [f"[enrich] stopped: {acc.stopped_reason}"]
    assert "Traceback" not in err and "sk-wrong-key" not in err
