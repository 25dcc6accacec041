"""The ledger-driven streaming runner on local Spark against the simulator over real HTTP.

Few, small tests (each Spark action costs ~1 s): a crash mid-run whose spool the rerun commits
first and whose rerun re-sends at most the bounded unit, a full rerun that must send none, and a
faulty, rate-limited, key-protected endpoint whose every outcome must be recorded and reconcile —
without the key leaking anywhere; stage-fatal results stop the calling task within one window.
"""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
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


N = 100  # at 2 in flight and ~300 ms each: ~15 s of calls, so the crash comes mid-run


@pytest.mark.heavy  # a crashed run and two reruns of the call step
def test_crash_mid_run_rerun_commits_the_spool_first_resends_at_most_one_unit_full_rerun_sends_none(
        spark, lakehouse, make_config, start_sim, make_requests):
    server = start_sim(seed=7, latency_ms=300, latency_jitter_ms=50)
    config = make_config("llm.commit_rows=5", "llm.commit_seconds=0.2")
    requests = spark.createDataFrame(make_requests(N))
    endpoint = _endpoint(server.base_url, max_concurrency=2)
    seen = []

    def crash_at_first_commit(progress):
        seen.append(progress)
        raise Crash("simulated driver crash after the first ledger commit")

    with pytest.raises(Crash):
        run_llm_stage(lakehouse, config, requests, "enrich", crash_at_first_commit, endpoint=endpoint)
    committed = lakehouse.read(LLM_CALLS.name).count()
    assert committed == seen[-1].rows_done > 0 and seen[-1].rows_total == N
    first_sent = set(server.stats()["by_request_id"])
    spooled = sum(pq.read_metadata(f).num_rows for f in (lakehouse.home / "spool" / "enrich").glob("*/*.parquet"))

    lines = []
    acc = run_llm_stage(lakehouse, config, requests, "enrich", lambda p: lines.append(p.line()),
                        endpoint=endpoint)
    assert acc.reconciles(), acc.problems()
    assert acc.recovered == spooled  # the crashed run's spool, committed first
    assert acc.requested == N and acc.already_done == committed + acc.recovered
    assert acc.sent == acc.pending == N - committed - acc.recovered > 0 and acc.ok == acc.sent
    # progress counts only what this run sends, one line per ledger commit
    assert len(lines) == acc.commits >= 1 and f"{acc.sent}/{acc.sent} requests (100%)" in lines[-1]
    assert "done in " in lines[-1] and all("requests/s" in line for line in lines)
    stats = server.stats()
    resent = {rid for rid, n in stats["by_request_id"].items() if n > 1}
    # answered but lost with the crash: at most the window in flight + one commit unit (one task)
    assert resent <= first_sent and len(resent) <= 2 + 5
    assert set(stats["by_request_id"]) == {r["request_id"] for r in make_requests(N)}
    assert acc.latency_ms_p50 is not None and acc.latency_ms_p50 <= acc.latency_ms_p99
    assert not list((lakehouse.home / "spool" / "enrich").iterdir())  # spool emptied

    again = run_llm_stage(lakehouse, config, requests, "enrich", None, endpoint=endpoint)
    assert (again.requested, again.already_done, again.sent, again.commits, again.recovered) == (N, N, 0, 0, 0)
    assert again.reconciles()
    assert server.stats()["requests"] == stats["requests"]  # a full rerun sends nothing
    ledger = lakehouse.read(LLM_CALLS.name)
    assert ledger.count() == N and ledger.select("request_id").distinct().count() == N
    # times are the client's, per request: each sent before it completed, not one value per commit
    rows = ledger.select("run_id", "micro_batch", "sent_at", "completed_at").collect()
    assert all(r.sent_at is not None and r.sent_at <= r.completed_at for r in rows)
    assert len({r.run_id for r in rows}) == 2 and any(r.micro_batch is None for r in rows) == (acc.recovered > 0)
    assert len({r.completed_at for r in rows}) > N - 10


def test_faulty_endpoint_every_outcome_recorded_budget_respected_key_never_leaks(
        spark, lakehouse, make_config, start_sim, make_requests, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TASKSEED_TEST_KEY", SECRET)
    server = start_sim(seed=3, latency_ms=5, latency_jitter_ms=3, fault_rate=0.35, hang_s=3,
                       retry_after_s=0.1, require_api_key=SECRET)
    config = make_config("llm.commit_rows=20", "llm.max_requests=50")
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
    assert "[enrich] commit " in err and "50/50 requests (100%)" in err  # progress printed to stderr
    for text in texts:
        assert SECRET not in text
    assert SECRET not in repr(spark.sparkContext.environment)


@pytest.mark.parametrize("server_kw, endpoint_kw, expected", [
    (dict(reject_json_schema=400), {}, "rejects the structured-output request"),
    (dict(require_api_key=SECRET), dict(api_key_env="TASKSEED_TEST_KEY", require_key=True), "rejected the API key"),
], ids=["structured_output_rejected", "wrong_key_401"])
def test_stage_fatal_result_stops_the_calling_task_within_one_window_with_one_line(
        spark, lakehouse, make_config, start_sim, make_requests, monkeypatch, capfd,
        server_kw, endpoint_kw, expected):
    monkeypatch.setenv("TASKSEED_TEST_KEY", "sk-wrong-key-0000")
    server = start_sim(latency_ms=1, latency_jitter_ms=0, **server_kw)
    config = make_config("llm.commit_rows=5")
    requests = spark.createDataFrame(make_requests(15))

    acc = run_llm_stage(lakehouse, config, requests, "enrich", None,
                        endpoint=_endpoint(server.base_url, max_concurrency=4, **endpoint_kw))

    assert acc.reconciles(), acc.problems()
    # the first window (4 in flight) was sent before any answer; the first fatal answer stops the
    # task: nothing more is taken, the window drains
    assert (acc.pending, acc.sent, acc.not_sent, acc.call_tasks) == (15, 4, 11, 1)
    assert server.stats()["requests"] == 4  # not retried, nothing after the first window
    assert expected in acc.stopped_reason and "server said:" in acc.stopped_reason
    err = capfd.readouterr().err
    stop_lines = [line for line in err.splitlines() if "stopped:" in line]
    assert stop_lines == [f"[enrich] stopped: {acc.stopped_reason}"]
    assert "Traceback" not in err and "sk-wrong-key" not in err
