"""The call engine against the simulator over real HTTP (no Spark), plus its pure parts.

Every fault kind must be retried (transport faults) or recorded (content faults), every HTTP
request the server saw must be an attempt the engine counted, and the API key must never show
up in results, error texts, reprs or logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import random
import time
import urllib.request
from collections import Counter

import httpx2
import openai
import pytest

from tests.fixtures_sim import ENRICH_SCHEMA, make_request_rows
from udfs.llm_client import (
    AIMDLimiter,
    EndpointSettings,
    Engine,
    KeyResolutionError,
    Redactor,
    backoff_delay,
    call_batch,
    classify,
    extract_json,
    get_engine,
    parse_content,
    parse_retry_after,
    resolve_api_key,
    validate_json,
)

SECRET = "sk-test-SECRET123"


def _settings(url: str, **kw) -> EndpointSettings:
    values = dict(base_url=url, model="taskseed-sim", require_key=False, timeout_s=5.0,
                  max_concurrency=32, backoff_base_s=0.01, backoff_max_s=0.1)
    values.update(kw)
    return EndpointSettings(**values)


def _requests(n: int, offset: int = 0) -> list[dict]:
    return make_request_rows(n, offset=offset)


# ---- every fault kind, one at a time ----------------------------------------------------------
TRANSPORT_FAULTS = [("429", "rate_limited"), ("500", "http_500"), ("503", "http_503"),
                    ("hang", "timeout"), ("drop", "connection"), ("bad_body", "invalid_response")]


@pytest.mark.parametrize("kind, error_class", TRANSPORT_FAULTS, ids=[k for k, _ in TRANSPORT_FAULTS])
def test_transport_fault_is_retried_then_recorded_as_failed(start_sim, kind, error_class):
    server = start_sim(fault_rates=((kind, 1.0),), latency_ms=1, latency_jitter_ms=0, hang_s=2,
                       retry_after_s=0.05)
    settings = _settings(server.base_url, max_retries=2, timeout_s=0.3)
    results, stats = call_batch(settings, _requests(4), 4)
    assert [r["status"] for r in results] == ["failed"] * 4
    assert {r["error_class"] for r in results} == {error_class}
    assert all(r["attempts"] == 3 for r in results)  # first try + max_retries
    assert server.stats()["requests"] == 12 == stats.http_attempts
    assert server.stats()["outcomes"][kind] == 12


@pytest.mark.parametrize("kind, error_class", [("malformed", "invalid_json"), ("truncate", "truncated")])
def test_content_fault_is_recorded_with_raw_text_and_not_resent(start_sim, kind, error_class):
    server = start_sim(fault_rates=((kind, 1.0),), latency_ms=1, latency_jitter_ms=0)
    results, _ = call_batch(_settings(server.base_url), _requests(3), 3)
    for r in results:
        assert (r["status"], r["error_class"], r["attempts"]) == ("parse_error", error_class, 1)
        assert r["content"] and r["parsed"] is None  # raw text kept for a later re-parse
    if kind == "truncate":
        assert {r["finish_reason"] for r in results} == {"length"}
    assert server.stats()["requests"] == 3


def test_mixed_faults_all_recovered_and_every_request_accounted_for(start_sim):
    server = start_sim(seed=11, fault_rate=0.4, latency_ms=2, latency_jitter_ms=2, hang_s=2,
                       retry_after_s=0.05)
    settings = _settings(server.base_url, max_retries=10, timeout_s=0.3)
    results, stats = call_batch(settings, _requests(200), 32)
    statuses = Counter((r["status"], r["error_class"]) for r in results)
    # Transport faults are retried until they succeed; content faults are recorded.
    assert statuses[("failed", None)] == 0 and not any(s == "failed" for s, _ in statuses)
    assert set(statuses) <= {("ok", None), ("parse_error", "invalid_json"), ("parse_error", "truncated")}
    assert statuses[("ok", None)] > 120
    seen = server.stats()
    assert set(seen["outcomes"]) == {"ok", "429", "500", "503", "hang", "drop", "bad_body", "malformed", "truncate"}
    assert seen["requests"] == sum(r["attempts"] for r in results) == stats.http_attempts
    assert sum(seen["first_attempts"].values()) == 200 and set(seen["first_attempts"].values()) == {1}
    ok = [r for r in results if r["status"] == "ok"]
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["latency_ms"] > 0 for r in ok)
    assert [r["request_id"] for r in results] == [q["request_id"] for q in _requests(200)]


def test_retry_after_is_honoured(start_sim):
    server = start_sim(fault_rates=(("429", 1.0),), retry_after_s=0.4, latency_ms=0)
    t0 = time.perf_counter()
    results, _ = call_batch(_settings(server.base_url, max_retries=1, backoff_base_s=0.001), _requests(2), 2)
    assert time.perf_counter() - t0 >= 0.4
    assert all(r["latency_ms"] >= 400 for r in results)


def test_rate_limit_shrinks_concurrency_and_everything_completes(start_sim):
    server = start_sim(rate_limit_rps=150, rate_limit_burst=10, latency_ms=20, latency_jitter_ms=0)
    settings = _settings(server.base_url, max_retries=20, max_concurrency=32)
    results, stats = call_batch(settings, _requests(150), 32)
    assert {r["status"] for r in results} == {"ok"}
    assert stats.rate_limited > 0 and stats.limiter_decreases >= 1 and stats.lowest_limit < 32
    assert server.stats()["outcomes"]["429_rate_limit"] == stats.rate_limited


def test_concurrency_limit_is_reached_and_not_exceeded(start_sim):
    server = start_sim(latency_ms=100, latency_jitter_ms=0, max_concurrency=64)
    results, stats = call_batch(_settings(server.base_url), _requests(96), 24)
    assert {r["status"] for r in results} == {"ok"}
    assert stats.peak_in_flight == 24 and server.stats()["peak_in_flight"] == 24


def test_bad_rows_do_not_fail_the_batch(sim):
    rows = _requests(3)
    rows[1] = dict(rows[1], messages_json="{not json")
    results, _ = call_batch(_settings(sim.base_url), rows, 3)
    assert [r["status"] for r in results] == ["ok", "failed", "ok"]
    assert results[1]["error_class"] == "bad_request_row" and results[1]["attempts"] == 0


def test_schema_mismatch_is_a_parse_error(sim):
    rows = _requests(1)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    rows[0]["response_format_json"] = json.dumps(fmt)
    (result,), _ = call_batch(_settings(sim.base_url, structured_output=False), rows, 1)
    # structured_output=False: response_format not sent; the simulator answers the contract
    # (enrich object), which the requested schema rejects.
    assert (result["status"], result["error_class"]) == ("parse_error", "schema_mismatch")


# ---- the API key -----------------------------------------------------------------------------
def test_key_reaches_the_endpoint_and_nowhere_else(start_sim, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TASKSEED_UNIT_KEY", SECRET)
    server = start_sim(require_api_key=SECRET, fault_rate=0.3, latency_ms=1, hang_s=1, retry_after_s=0.05)
    settings = _settings(server.base_url, api_key_env="TASKSEED_UNIT_KEY", require_key=True,
                         max_retries=1, timeout_s=0.3)
    results, _ = call_batch(settings, _requests(40), 8)
    assert "401" not in server.stats()["outcomes"]
    assert any(r["status"] == "ok" for r in results) and any(r["error_detail"] for r in results)

    monkeypatch.setenv("TASKSEED_UNIT_KEY", "sk-wrong-key-000")
    wrong, _ = call_batch(replace_settings(settings, timeout_s=0.31), _requests(2), 2)
    assert {(r["status"], r["error_class"], r["attempts"]) for r in wrong} == {("failed", "http_401", 1)}

    out, err = capfd.readouterr()
    for text in (repr(results), repr(wrong), repr(settings), str(pickle.dumps(settings)), out, err,
                 caplog.text, repr(get_engine(settings)), json.dumps(server.stats())):
        assert SECRET not in text and "sk-wrong-key-000" not in text


def replace_settings(settings: EndpointSettings, **kw) -> EndpointSettings:
    from dataclasses import replace

    return replace(settings, **kw)


def test_missing_key_fails_fast_without_a_value_in_the_message(monkeypatch):
    monkeypatch.delenv("TASKSEED_NOPE", raising=False)
    settings = EndpointSettings(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="TASKSEED_NOPE")
    with pytest.raises(KeyResolutionError, match="TASKSEED_NOPE"):
        resolve_api_key(settings)
    assert resolve_api_key(replace_settings(settings, require_key=False)) is None


def test_redactor_scrubs_the_secret():
    redact = Redactor(SECRET)
    assert SECRET not in redact(f"Authorization: Bearer {SECRET}") and "***" in repr(redact)


# ---- scheduling --------------------------------------------------------------------------------
def test_a_sleeping_retry_does_not_hold_its_slot(sim):
    """Concurrency 1: request A is rate limited (Retry-After 0.3 s); B must run meanwhile."""
    engine = Engine(_settings(sim.base_url, max_retries=2))
    finished: dict[str, float] = {}
    t0 = time.perf_counter()
    original = engine._send
    calls = Counter()

    async def fake_send(body, request_id, attempt):
        calls[request_id] += 1
        if request_id == "a" and attempt == 1:
            response = httpx2.Response(429, headers={"retry-after": "0.3"},
                                       request=httpx2.Request("POST", sim.base_url))
            raise openai.RateLimitError("rate limited", response=response, body=None)
        result = await original(body, request_id, attempt)
        finished[request_id] = time.perf_counter() - t0
        return result

    engine._send = fake_send
    rows = _requests(2)
    rows[0]["request_id"], rows[1]["request_id"] = "a", "b"
    try:
        results, _ = engine.run(rows, 1)
    finally:
        engine.close()
    assert [r["status"] for r in results] == ["ok", "ok"] and results[0]["attempts"] == 2
    assert finished["b"] < 0.25 <= finished["a"]


def test_aimd_limiter_halves_once_per_cooldown_and_recovers():
    async def scenario():
        lim = AIMDLimiter(32, cooldown_s=10.0)
        lim.on_rate_limited()
        lim.on_rate_limited()  # same congestion episode: no second cut
        assert lim.limit == 16 and lim.decreases == 1
        for _ in range(2000):
            lim.on_success()
        assert lim.limit == 32
        # a full limiter queues acquirers FIFO and wakes them on release
        small = AIMDLimiter(2)
        await small.acquire(); await small.acquire()
        waiter = asyncio.create_task(small.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done() and small.in_flight == 2
        small.release()
        await asyncio.wait_for(waiter, 1)
        assert small.in_flight == 2 and small.peak_in_flight == 2

    asyncio.run(scenario())


def test_client_is_built_once_per_process_and_settings(sim):
    settings = _settings(sim.base_url)
    assert get_engine(settings) is get_engine(settings)
    assert get_engine(settings) is not get_engine(replace_settings(settings, timeout_s=7.0))


# ---- pure helpers ------------------------------------------------------------------------------
def test_parse_content_outcomes():
    good = json.dumps({"knowledge": "k", "reasoning": "r", "final_answer": "a"})
    assert parse_content(good, "stop", ENRICH_SCHEMA)[:3] == ("ok", json.loads(good), None)
    assert parse_content("```json\n" + good + "\n```", "stop", ENRICH_SCHEMA)[0] == "ok"
    assert parse_content(good[:20], "length", ENRICH_SCHEMA)[2] == "truncated"
    assert parse_content(good[:20], "stop", ENRICH_SCHEMA)[2] == "invalid_json"
    assert parse_content('{"knowledge": "k"}', "stop", ENRICH_SCHEMA)[2] == "schema_mismatch"
    assert parse_content(None, "stop", ENRICH_SCHEMA)[2] == "empty_content"
    assert parse_content("plain text", "stop", None)[:2] == ("ok", None)


def test_validate_json_subset():
    schema = {"type": "object", "additionalProperties": False, "required": ["a", "b"],
              "properties": {"a": {"type": ["string", "null"]},
                             "b": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             "c": {"enum": ["x", "y"]}}}
    assert validate_json({"a": None, "b": ["q"]}, schema) == []
    assert validate_json({"a": 1, "b": []}, schema)
    assert validate_json({"a": "s", "b": ["q"], "z": 1}, schema)
    assert validate_json({"a": "s", "b": ["q"], "c": "w"}, schema)
    assert validate_json(True, {"type": "integer"})  # bool is not an integer


def test_extract_json_finds_the_object():
    assert extract_json('Sure! {"a": 1} hope that helps') == {"a": 1}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx2.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx2.Headers({})) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < parse_retry_after(httpx2.Headers({"retry-after": date})) <= 31
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 8.0, None, rng) for a in range(1, 8)]
    assert delays[0] <= 0.5 and delays[3] >= 2.0 and max(delays) <= 8.0
    assert backoff_delay(1, 0.01, 1.0, 5.0, rng) >= 5.0


def test_classification_uses_status_and_type():
    request = httpx2.Request("POST", "http://x/v1/chat/completions")

    def status(code, headers=None):
        response = httpx2.Response(code, headers=headers or {}, request=request)
        return openai.APIStatusError("message text is ignored", response=response, body=None)

    assert classify(status(503)).error_class == "http_503" and classify(status(503)).retryable
    assert classify(status(400)).retryable is False
    limited = classify(openai.RateLimitError("x", response=httpx2.Response(
        429, headers={"retry-after": "2"}, request=request), body=None))
    assert (limited.error_class, limited.retry_after_s) == ("rate_limited", 2.0)
    assert classify(openai.APITimeoutError(request=request)).error_class == "timeout"
    assert classify(openai.APIConnectionError(request=request)).error_class == "connection"
    assert classify(ValueError("boom")).retryable is False


def test_endpoint_for_starts_the_simulator_when_no_base_url(make_config):
    from jobs.llm_stage import endpoint_for

    config = make_config("simulator.latency_ms=1")
    with endpoint_for(config) as endpoint:
        with urllib.request.urlopen(endpoint.base_url + "/models", timeout=5) as resp:
            models = json.loads(resp.read())
        assert "simulator" in models["data"][0]["owned_by"]
        assert endpoint.require_key is False
        (result,), _ = call_batch(endpoint, _requests(1), 1)
        assert result["status"] == "ok"
