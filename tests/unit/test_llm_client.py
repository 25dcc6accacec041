"""The call engine against the simulator over real HTTP (no Spark), plus its pure parts.

Every fault kind must be retried (transport faults) or recorded (content faults), every HTTP
request the server saw must be an attempt the engine counted, and the API key must never show
up in results, error texts, reprs or logs. The response kinds of issue 11 (F reasoning fields,
G error objects in 2xx bodies, H server error bodies and structured-output rejection, I missing
usage) and issue 12's per-request times and per-sample seeds are tested as rules: parametrized
pure cases first, then the same paths over real HTTP against the simulator's matching faults.
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
from datetime import datetime, timezone

import httpx2
import openai
import pytest

from tests.fixtures_sim import ENRICH_RESPONSE_FORMAT, ENRICH_SCHEMA, make_request_rows
from udfs.llm_client import (
    ERROR_BODY_CHARS,
    RESULT_KEYS,
    AIMDLimiter,
    BatchStats,
    EndpointSettings,
    Engine,
    ErrorObject,
    InvalidResponse,
    KeyResolutionError,
    Redactor,
    backoff_delay,
    body_excerpt,
    build_body,
    call_batch,
    classify,
    classify_status,
    completion_outcome,
    completion_text,
    empty_result,
    error_object,
    get_engine,
    is_stage_fatal,
    parse_retry_after,
    read_completion,
    resolve_api_key,
    sampling_seed,
    schema_instruction,
    stage_fatal_reason,
    structured_output_mode,
)

SECRET = "sk-test-SECRET123"


def _settings(url: str, **kw) -> EndpointSettings:
    values = dict(base_url=url, model="taskseed-sim", require_key=False, timeout_s=5.0,
                  max_concurrency=32, backoff_base_s=0.01, backoff_max_s=0.1)
    values.update(kw)
    return EndpointSettings(**values)


def _requests(n: int, offset: int = 0) -> list[dict]:
    return make_request_rows(n, offset=offset)


def assert_server_saw_every_attempt(seen: dict, attempts: int, stats) -> None:
    """Every attempt the server saw was counted by the client. The server can miss an attempt only
    when the client gave up on it before the server read it (a timeout or a closed connection
    on a loaded machine), never one that failed because of a fault the server injected."""
    assert attempts == stats.http_attempts
    unseen = attempts - seen["requests"]
    outcomes = seen["outcomes"]
    client_gave_up = (stats.errors["timeout"] - outcomes.get("hang", 0)) + \
        (stats.errors["connection"] - outcomes.get("drop", 0))
    assert 0 <= unseen <= client_gave_up


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
    assert stats.http_attempts == 12
    assert_server_saw_every_attempt(server.stats(), 12, stats)
    assert server.stats()["outcomes"][kind] == server.stats()["requests"]


@pytest.mark.parametrize("kind, error_class, finish", [("malformed", None, "stop"), ("truncate", "truncated", "length")])
def test_content_fault_is_an_ok_completion_with_raw_text_and_not_resent(start_sim, kind, error_class, finish):
    """The client reports the transport outcome; the stage's parser alone judges the text."""
    server = start_sim(fault_rates=((kind, 1.0),), latency_ms=1, latency_jitter_ms=0)
    results, _ = call_batch(_settings(server.base_url), _requests(3), 3)
    for r in results:
        assert (r["status"], r["error_class"], r["attempts"], r["finish_reason"]) == ("ok", error_class, 1, finish)
        assert r["content"]  # raw text kept for the stage's parser
        with pytest.raises(ValueError):
            json.loads(r["content"])
    assert server.stats()["requests"] == 3


def test_mixed_faults_all_recovered_and_every_request_accounted_for(start_sim):
    server = start_sim(seed=11, fault_rate=0.4, latency_ms=2, latency_jitter_ms=2, hang_s=2,
                       retry_after_s=0.05)
    settings = _settings(server.base_url, max_retries=10, timeout_s=0.3)
    results, stats = call_batch(settings, _requests(200), 32)
    statuses = Counter((r["status"], r["error_class"]) for r in results)
    # Transport faults are retried until they succeed; content faults arrive as completions.
    assert not any(s == "failed" for s, _ in statuses)
    assert set(statuses) <= {("ok", None), ("ok", "truncated")} and statuses[("ok", "truncated")] > 0
    assert statuses[("ok", None)] > 150
    seen = server.stats()
    assert set(seen["outcomes"]) == {"ok", "429", "500", "503", "hang", "drop", "bad_body", "malformed", "truncate"}
    assert_server_saw_every_attempt(seen, sum(r["attempts"] for r in results), stats)
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


def test_the_client_does_not_judge_the_json_against_the_schema(sim):
    """One validation: text that the requested schema rejects is still an `ok` completion."""
    rows = _requests(1)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    rows[0]["response_format_json"] = json.dumps(fmt)
    (result,), _ = call_batch(_settings(sim.base_url, structured_output=False), rows, 1)
    # structured_output=False (legacy for "none"): response_format not sent; the simulator
    # answers the contract (an enrich object), which the requested schema would reject.
    assert (result["status"], result["error_class"]) == ("ok", None)
    assert "answer" not in json.loads(result["content"]) and "final_answer" in json.loads(result["content"])


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
    """Concurrency 1: request A is rate limited (Retry-After 1 s); B must run meanwhile."""
    engine = Engine(_settings(sim.base_url, max_retries=2))
    finished: dict[str, float] = {}
    t0 = time.perf_counter()
    original = engine._send
    calls = Counter()

    async def fake_send(body, request_id, attempt):
        calls[request_id] += 1
        if request_id == "a" and attempt == 1:
            response = httpx2.Response(429, headers={"retry-after": "1"},
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
    # B did not wait behind A's sleep (it would finish after 1 s), and A waited its Retry-After
    assert finished["b"] < 1.0 <= finished["a"]


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


# =================================================================================================
# Issue 11 F–I and issue 12 (client side): pure rules first, then the same paths over HTTP.
# =================================================================================================
def _completion(message: dict | None = None, finish: str | None = "stop", usage: object = "default", **extra) -> str:
    body = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": message if message is not None else {"role": "assistant", "content": "hi"},
                         "finish_reason": finish}], **extra}
    if usage == "default":
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    elif usage != "absent":
        body["usage"] = usage
    return json.dumps(body)


# ---- F: reasoning fields ----------------------------------------------------------------------
ANSWER = '{"final_answer": "B"}'


@pytest.mark.parametrize("message, finish, content, reasoning, status, error_class, text", [
    # vLLM / SGLang / DeepSeek: reasoning_content beside the answer
    ({"content": ANSWER, "reasoning_content": "thinking..."}, "stop", ANSWER, "thinking...", "ok", None, ANSWER),
    # newer vLLM, OpenRouter, Ollama name it `reasoning`
    ({"content": ANSWER, "reasoning": "hmm"}, "stop", ANSWER, "hmm", "ok", None, ANSWER),
    # the reasoning parser never saw </think>: all output in the reasoning field, content null
    ({"content": None, "reasoning_content": "so the answer is " + ANSWER}, "stop", None,
     "so the answer is " + ANSWER, "ok", None, "so the answer is " + ANSWER),
    ({"content": "  \n", "reasoning": ANSWER}, "stop", "  \n", ANSWER, "ok", None, ANSWER),
    ({"content": "", "reasoning_content": None, "reasoning": ANSWER}, "stop", "", ANSWER, "ok", None, ANSWER),
    # null content at the token limit is truncated (out of tokens while thinking), not empty
    ({"content": None, "reasoning_content": "let me think about"}, "length", None, "let me think about",
     "failed", "truncated", None),
    ({"content": None}, "length", None, None, "failed", "truncated", None),
    ({"content": ""}, "length", "", None, "failed", "truncated", None),
    # text that stopped at the limit is a completion; the parser decides (informational class)
    ({"content": '{"final_ans'}, "length", '{"final_ans', None, "ok", "truncated", '{"final_ans'),
    # nothing at all
    ({"content": None}, "stop", None, None, "failed", "empty_content", None),
    ({"content": "   ", "reasoning_content": "  "}, "stop", "   ", "  ", "failed", "empty_content", None),
    ({"role": "assistant"}, None, None, None, "failed", "empty_content", None),
    # content as a list of parts (some servers)
    ({"content": [{"type": "text", "text": '{"final_'}, {"type": "text", "text": 'answer": "B"}'}]}, "stop",
     ANSWER, None, "ok", None, ANSWER),
    # both reasoning names: reasoning_content wins
    ({"content": ANSWER, "reasoning_content": "a", "reasoning": "b"}, "stop", ANSWER, "a", "ok", None, ANSWER),
])
def test_reasoning_is_kept_and_used_when_content_is_empty(message, finish, content, reasoning, status,
                                                           error_class, text):
    completion = read_completion(_completion(message, finish))
    assert (completion.content, completion.reasoning_content, completion.finish_reason) == (content, reasoning, finish)
    assert completion_outcome(completion)[:2] == (status, error_class)
    assert completion_text(completion.content, completion.reasoning_content, completion.finish_reason) == text


@pytest.mark.parametrize("reasoning, field", [("split", "reasoning_content"), ("only", "reasoning_content"),
                                              ("only", "reasoning"), ("split", "reasoning")])
def test_reasoning_server_rows_parse_from_the_right_field(start_sim, reasoning, field):
    from udfs.parsing import extract_json_object

    server = start_sim(latency_ms=1, latency_jitter_ms=0, reasoning=reasoning, reasoning_field=field)
    results, _ = call_batch(_settings(server.base_url), _requests(4), 4)
    for r in results:
        assert (r["status"], r["error_class"]) == ("ok", None)
        assert r["reasoning_content"] and "step by step" in r["reasoning_content"]
        assert (r["content"] is None) == (reasoning == "only")
        parsed = extract_json_object(completion_text(r["content"], r["reasoning_content"], r["finish_reason"]),
                                     ("final_answer",))
        assert parsed["final_answer"] in ("copper", "wood", "glass", "plastic")


def test_reasoning_only_server_cut_at_the_limit_is_truncated_not_empty(start_sim):
    server = start_sim(latency_ms=1, latency_jitter_ms=0, reasoning="only", fault_rates=(("truncate", 1.0),))
    results, _ = call_batch(_settings(server.base_url), _requests(3), 3)
    for r in results:
        assert (r["status"], r["error_class"], r["finish_reason"]) == ("failed", "truncated", "length")
        assert r["content"] is None and r["reasoning_content"] and r["attempts"] == 1  # kept, not re-sent


# ---- G: error objects inside 2xx bodies --------------------------------------------------------
@pytest.mark.parametrize("body, status, in_message", [
    ({"object": "error", "message": "This model's maximum context length is 4096 tokens", "type": "BadRequestError",
      "param": None, "code": 400}, 400, "maximum context length"),
    ({"error": {"message": "context too long", "type": "invalid_request_error", "code": 400}}, 400, "context too long"),
    ({"error": {"message": "slow down", "type": "rate_limit_error"}}, 429, "slow down"),
    ({"error": {"message": "busy", "code": "503"}}, 503, "busy"),
    ({"error": {"message": "try later", "type": "server_error", "code": None}}, 500, "try later"),
    ({"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}, 400, "too long"),
    ({"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}, 404, "does not exist"),
    ({"error": {"message": "overloaded", "type": "overloaded_error"}}, 503, "overloaded"),
    ({"error": "upstream exploded"}, None, "upstream exploded"),
    ({"error": {"message": "odd", "type": "weird_thing"}}, None, "odd"),
    ({"object": "error", "detail": [{"loc": ["body", "messages"], "msg": "field required"}], "code": 422}, 422, "field required"),
    ([{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}], 429, "exhausted"),
    ({"error": {"code": 400, "message": "Invalid value", "status": "INVALID_ARGUMENT"}}, 400, "Invalid value"),
])
def test_error_object_in_a_2xx_body_is_recognised_with_its_code_and_message(body, status, in_message):
    code, message = error_object(body)
    assert code == status and in_message in message
    with pytest.raises(ErrorObject) as caught:
        read_completion(json.dumps(body))
    assert caught.value.status == status


@pytest.mark.parametrize("body", [
    json.loads(_completion()), {"choices": [{"message": {"content": "x"}}], "error": None},
    {"object": "chat.completion", "choices": [{"message": {"content": "x"}}], "error": {"message": "ignored"}},
    {"id": "x"}, [], "text",
])
def test_completions_and_other_bodies_are_not_error_objects(body):
    assert error_object(body) is None


@pytest.mark.parametrize("status, error_class, retryable", [
    (400, "http_400", False), (401, "http_401", False), (404, "http_404", False), (422, "http_422", False),
    (408, "http_408", True), (429, "rate_limited", True), (500, "http_500", True), (503, "http_503", True),
    (None, "error_response", False),
])
def test_error_objects_are_classified_by_code_like_http_statuses(status, error_class, retryable):
    failure = classify(ErrorObject(status, "BadRequestError: the server's words"))
    assert (failure.error_class, failure.retryable) == (error_class, retryable)
    assert "the server's words" in failure.detail and "2xx body" in failure.detail


def test_error_object_in_200_is_not_retried_and_keeps_the_message(start_sim):
    server = start_sim(fault_rates=(("error_200", 1.0),), latency_ms=1)
    results, _ = call_batch(_settings(server.base_url, max_retries=4), _requests(3), 3)
    for r in results:
        assert (r["status"], r["error_class"], r["attempts"]) == ("failed", "http_400", 1)
        assert "maximum context length" in r["error_detail"] and "2xx body" in r["error_detail"]
    assert server.stats()["requests"] == 3


def test_retryable_error_object_is_retried_then_succeeds(sim):
    engine = Engine(_settings(sim.base_url, max_retries=3))
    original = engine._send

    async def flaky(body, request_id, attempt):
        if attempt == 1:
            raise ErrorObject(503, "ServiceUnavailableError: engine is restarting")
        return await original(body, request_id, attempt)

    engine._send = flaky
    try:
        (result,), stats = engine.run(_requests(1), 1)
    finally:
        engine.close()
    assert (result["status"], result["attempts"]) == ("ok", 2) and stats.errors["http_503"] == 1


# ---- H: server error bodies, structured-output rejection --------------------------------------
LLAMA_CPP = 'response_format type must be one of "text" or "json_object", but got: json_schema'


@pytest.mark.parametrize("body, expected", [
    ({"error": {"code": 500, "message": LLAMA_CPP, "type": "server_error"}}, "server_error: " + LLAMA_CPP),
    ('{"detail": "Not Found"}', "Not Found"),  # FastAPI-style
    ({"message": "bad", "type": "invalid_request_error", "code": 400}, "invalid_request_error: bad"),  # SDK-unwrapped
    ({"data": [1]}, '{"data": [1]}'),
    ("<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
     "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx/1.25 &amp; friends</center></body></html>",
     "502 Bad Gateway 502 Bad Gateway nginx/1.25 & friends"),
    (b"upstream connect error or disconnect/reset before headers", "upstream connect error or disconnect/reset before headers"),
    ("  line one\n\n  line two  ", "line one line two"),
    (None, ""),
    ({"object": "error", "message": "bad seed", "code": 400}, "bad seed"),
])
def test_body_excerpt_gives_the_servers_message_on_one_line(body, expected):
    assert body_excerpt(body) == expected


def test_body_excerpt_is_bounded_and_redacts_before_cutting():
    assert len(body_excerpt("x" * 5000)) == ERROR_BODY_CHARS
    # the secret straddles the cut: redacting after cutting would leave its first half visible
    text = "a" * (ERROR_BODY_CHARS - 8) + SECRET + " tail"
    excerpt = body_excerpt(text, redact=Redactor(SECRET))
    assert SECRET[:8] not in excerpt and len(excerpt) <= ERROR_BODY_CHARS
    # the same rule for every error text the client builds from a body
    redact = Redactor(SECRET)
    with pytest.raises(InvalidResponse) as caught:
        read_completion(("x" * 110 + SECRET + " trailing").encode())
    with pytest.raises(ErrorObject) as in_body:
        read_completion(json.dumps({"error": {"message": "y" * (ERROR_BODY_CHARS - 30) + SECRET, "code": 401}}))
    for exc in (caught.value, in_body.value):
        detail = classify(exc, redact=redact).detail
        assert SECRET[:7] not in detail and "[REDACT" in detail


@pytest.mark.parametrize("status, message, structured, error_class", [
    (500, LLAMA_CPP, True, "structured_output_unsupported"),       # llama-cpp-python
    (400, LLAMA_CPP, True, "structured_output_unsupported"),       # llama.cpp server
    (400, "The provided JSON schema contains features not supported by xgrammar.", True, "structured_output_unsupported"),
    (422, "body.response_format.type: Input should be 'text' or 'json_object'", True, "structured_output_unsupported"),
    (400, "guided_json is not supported by this backend", True, "structured_output_unsupported"),
    (501, "Structured outputs are not implemented", True, "structured_output_unsupported"),
    (400, "Unknown parameter: 'response_format.json_schema'.", True, "structured_output_unsupported"),
    (500, "Either \"json_schema\" or \"grammar\" can be specified, but not both", True, "structured_output_unsupported"),
    (422, "Input validation error: grammar is not supported", True, "structured_output_unsupported"),
    (400, "xgrammar could not compile the schema", True, "structured_output_unsupported"),
    (None, "Unsupported response_format", True, "structured_output_unsupported"),  # error object, no code
    (400, "This model's maximum context length is 4096 tokens", True, "http_400"),
    (400, LLAMA_CPP, False, "http_400"),          # no response_format was sent: not about it
    (503, "json_schema compiler overloaded", True, "http_503"),   # 503 is transient
    (500, "CUDA out of memory", True, "http_500"),
])
def test_structured_output_rejection_is_its_own_non_retryable_stage_fatal_class(status, message, structured,
                                                                                 error_class):
    failure = classify_status(status, message, structured=structured)
    assert failure.error_class == error_class and message in failure.detail
    if error_class == "structured_output_unsupported":
        assert not failure.retryable and is_stage_fatal(error_class)
        assert "endpoint.structured_output" in stage_fatal_reason(error_class, failure.detail)
    assert not is_stage_fatal("http_500") and not is_stage_fatal("http_400") and not is_stage_fatal(None)
    assert stage_fatal_reason("http_503") is None and is_stage_fatal("http_401")


def test_http_error_body_is_kept_and_the_key_redacted_from_it():
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    body = {"error": {"message": f"invalid key {SECRET} for model m", "type": "authentication_error"}}
    response = httpx2.Response(401, json=body, request=request)
    failure = classify(openai.AuthenticationError("x", response=response, body=body), redact=Redactor(SECRET))
    assert failure.error_class == "http_401" and "invalid key [REDACTED] for model m" in failure.detail
    assert SECRET not in failure.detail


def test_html_502_is_retried_and_its_text_kept(start_sim):
    server = start_sim(fault_rates=(("html_502", 1.0),), latency_ms=1)
    results, _ = call_batch(_settings(server.base_url, max_retries=2), _requests(2), 2)
    for r in results:
        assert (r["status"], r["error_class"], r["attempts"]) == ("failed", "http_502", 3)
        assert r["error_detail"].startswith("HTTP 502: 502 Bad Gateway") and "<" not in r["error_detail"]
        assert "after 3 attempt(s)" in r["error_detail"]


@pytest.mark.parametrize("reject_status", [400, 500])
def test_server_rejecting_json_schema_then_json_object_and_none_modes(start_sim, reject_status):
    server = start_sim(reject_json_schema=reject_status, latency_ms=1)
    rejected, _ = call_batch(_settings(server.base_url, max_retries=4), _requests(3), 3)
    for r in rejected:
        assert (r["status"], r["error_class"], r["attempts"]) == ("failed", "structured_output_unsupported", 1)
        assert f"HTTP {reject_status}" in r["error_detail"] and '"json_object"' in r["error_detail"]
        assert is_stage_fatal(r["error_class"])
    assert server.stats()["outcomes"]["reject_json_schema"] == 3  # not retried
    for mode in ("json_object", "none"):
        results, _ = call_batch(_settings(server.base_url, structured_output=mode), _requests(3), 3)
        assert [(r["status"], r["error_class"]) for r in results] == [("ok", None)] * 3
        assert all(json.loads(r["content"])["final_answer"] for r in results)


@pytest.mark.parametrize("mode, sent_format, schema_in_system", [
    ("json_schema", ENRICH_RESPONSE_FORMAT, False),
    ("json_object", {"type": "json_object"}, True),
    ("none", None, False),
])
def test_body_per_structured_output_mode_leaves_the_rendered_messages_alone(mode, sent_format, schema_in_system):
    row = _requests(1)[0]
    rendered = json.loads(row["messages_json"])
    body = build_body(row, "m", mode)
    assert body.get("response_format") == sent_format
    assert body["messages"][1:] == rendered[1:]
    system = body["messages"][0]["content"]
    assert system.startswith(rendered[0]["content"])  # the contract header stays the first line
    assert (json.dumps(ENRICH_SCHEMA["properties"]["final_answer"]) .replace(" ", "") in system) == schema_in_system
    assert json.loads(row["messages_json"]) == rendered  # the row (and its request_id) is untouched
    if schema_in_system:
        suffix = system[len(rendered[0]["content"]):]
        assert suffix == schema_instruction(ENRICH_SCHEMA)


def test_json_object_mode_without_a_system_message_adds_one():
    row = {"request_id": "r", "messages": [{"role": "user", "content": "q"}], "response_format": ENRICH_RESPONSE_FORMAT}
    body = build_body(row, "m", "json_object")
    assert body["messages"][0]["role"] == "system" and '"final_answer"' in body["messages"][0]["content"]
    assert body["messages"][1:] == row["messages"] and len(row["messages"]) == 1


@pytest.mark.parametrize("value, mode", [(True, "json_schema"), (False, "none"), ("json_schema", "json_schema"),
                                         ("json_object", "json_object"), ("none", "none"), (" JSON_OBJECT ", "json_object")])
def test_structured_output_modes_and_legacy_booleans(value, mode, make_config):
    assert structured_output_mode(value) == mode
    assert EndpointSettings(base_url="u", model="m", structured_output=value).structured_output == mode
    config = make_config(f"endpoint.structured_output={str(value).strip().lower()}")
    assert EndpointSettings.from_config(config.endpoint, base_url="u").structured_output == mode


@pytest.mark.parametrize("value", ["xml", "grammar", 1, "true ", None])
def test_unknown_structured_output_mode_is_an_error(value):
    with pytest.raises(ValueError, match="structured_output"):
        structured_output_mode(value)


# ---- I: missing usage stays null ---------------------------------------------------------------
@pytest.mark.parametrize("usage, prompt, completion", [
    ("absent", None, None), (None, None, None), ({}, None, None), ({"total_tokens": 10}, None, None),
    ({"prompt_tokens": 12}, 12, None), ({"prompt_tokens": 0, "completion_tokens": 0}, 0, 0),
    ({"prompt_tokens": "12", "completion_tokens": -1}, None, None), ({"prompt_tokens": 5.0, "completion_tokens": True}, 5, None),
    ({"prompt_tokens": 7, "completion_tokens": 3}, 7, 3),
    ({"input_tokens": 9, "output_tokens": 4}, 9, 4), ({"prompt_tokens": None, "input_tokens": 2}, 2, None),
    ({"prompt_tokens": float("inf"), "completion_tokens": float("nan")}, None, None),
])
def test_missing_usage_is_null_never_zero(usage, prompt, completion):
    c = read_completion(_completion(usage=usage))
    assert (c.prompt_tokens, c.completion_tokens) == (prompt, completion)


def test_server_without_usage_gives_null_tokens(start_sim):
    server = start_sim(fault_rates=(("no_usage", 1.0),), latency_ms=1)
    results, _ = call_batch(_settings(server.base_url), _requests(3), 3)
    assert [(r["status"], r["prompt_tokens"], r["completion_tokens"]) for r in results] == [("ok", None, None)] * 3


@pytest.mark.parametrize("raw, shown", [
    (b"", ""), (b"<html><body><h1>Service Unavailable</h1></body></html>", "Service Unavailable"),
    (b'{"choices": []}', '{"choices": []}'), (b'{"choices": [{"message": "text"}]}', '"message": "text"'),
    (b'{"choices": "x"}', '"x"'), (b'{"id": "no choices"}', "no choices"), (b"[1, 2]", "[1, 2]"),
    (b'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mess', '"chatcmpl-sim"'),
])
def test_bodies_that_are_not_completions_are_invalid_responses_with_their_start(raw, shown):
    with pytest.raises(InvalidResponse) as caught:
        read_completion(raw)
    failure = classify(caught.value)
    assert (failure.error_class, failure.retryable) == ("invalid_response", True) and shown in failure.detail


# ---- issue 12 §3: a per-sample seed in every body --------------------------------------------
@pytest.mark.parametrize("request_id, seed", [
    ("ffffffff" + "0" * 24, 0x7FFFFFFF), ("00000000abc", 0), ("7fffffff", 0x7FFFFFFF), ("80000001deadbeef", 1),
    ("0123abcd" + "9" * 24, 0x0123ABCD), ("ABCDEF01", 0x2BCDEF01),
])
def test_sampling_seed_is_the_first_8_hex_digits_below_2_31(request_id, seed):
    assert sampling_seed(request_id) == seed


@pytest.mark.parametrize("request_id", ["a", "b", "", "sample-1", "zzzzzzzzzz", "1234567"])
def test_sampling_seed_of_other_ids_is_a_hash_in_range(request_id):
    value = sampling_seed(request_id)
    assert 0 <= value < 2**31 and value == sampling_seed(request_id)


def test_samples_of_one_prompt_get_distinct_seeds_and_explicit_seeds_win():
    from udfs.prompts import compute_request_id

    messages = [{"role": "user", "content": "q"}]
    ids = [compute_request_id("m", "v1", messages, {"temperature": 0.9}, k) for k in range(64)]
    seeds = [build_body({"request_id": rid, "messages": messages}, "m")["seed"] for rid in ids]
    assert len(set(seeds)) == 64 and all(0 <= s < 2**31 for s in seeds)
    assert build_body({"request_id": ids[0], "messages": messages, "seed": 5}, "m")["seed"] == 5
    assert build_body({"request_id": ids[0], "messages": messages, "seed": float("nan")}, "m")["seed"] == seeds[0]


def test_k_samples_are_distinct_bodies_and_items_and_a_repeat_is_reproducible(start_sim):
    """Same prompt, K request ids: K seeds, K different items; the same request again: same item."""
    from tests.unit import seed_records
    from udfs.prompts import compute_request_id, render_generation_messages

    seed = seed_records.arc_easy(1)[0]
    messages, version = render_generation_messages(seed, [], "mcq", None, seed["task"])
    rows = [{"request_id": compute_request_id("taskseed-sim", version, messages, {"temperature": 0.9}, k),
             "messages_json": json.dumps(messages), "temperature": 0.9} for k in range(6)]
    server = start_sim(latency_ms=1)
    first, _ = call_batch(_settings(server.base_url), rows, 6)
    again, _ = call_batch(_settings(server.base_url), rows[:2], 2)
    assert len({r["sampling_seed"] for r in first}) == 6
    assert len({r["content"] for r in first}) == 6  # distinct items, not one item six times
    assert [r["content"] for r in again] == [r["content"] for r in first[:2]]
    dup_server = start_sim(latency_ms=1, duplicate_rate=1.0)
    dups, _ = call_batch(_settings(dup_server.base_url), rows, 6)
    assert len({r["content"] for r in dups}) == 1  # the duplicate fault still collapses samples


# ---- issue 12 §2: per-request send and completion times -------------------------------------
def test_each_result_has_its_own_utc_send_and_completion_time(start_sim):
    server = start_sim(latency_ms=60, latency_jitter_ms=0, max_concurrency=1)
    before = datetime.now(timezone.utc)
    results, _ = call_batch(_settings(server.base_url), _requests(4), 4)
    after = datetime.now(timezone.utc)
    for r in results:
        assert r["sent_at"].tzinfo is not None and r["sent_at"].utcoffset().total_seconds() == 0
        assert before <= r["sent_at"] <= r["completed_at"] <= after
        assert abs((r["completed_at"] - r["sent_at"]).total_seconds() * 1000 - r["latency_ms"]) < 50
    # one server slot: requests finish one after another, ~60 ms apart, not at one shared time
    done = sorted(r["completed_at"] for r in results)
    assert all((b - a).total_seconds() >= 0.04 for a, b in zip(done, done[1:]))


def test_a_row_never_sent_has_no_sent_at_but_a_completion_time(sim):
    rows = _requests(1)
    rows[0] = dict(rows[0], messages_json="{not json")
    (r,), _ = call_batch(_settings(sim.base_url), rows, 1)
    assert (r["status"], r["error_class"], r["sent_at"], r["attempts"]) == ("failed", "bad_request_row", None, 0)
    assert r["completed_at"] is not None and set(r) == set(RESULT_KEYS)


def test_results_frame_columns_and_types():
    import pandas as pd

    from udfs.llm_udf import RESULT_FIELDS, results_frame

    now = datetime.now(timezone.utc)
    ok = dict(empty_result("a"), status="ok", content=None, reasoning_content="r", attempts=1, latency_ms=5.0,
              sampling_seed=2**31 - 1, sent_at=now, completed_at=now)
    failed = empty_result("b")
    frame = results_frame([ok, failed], pd.DataFrame({"request_id": ["a", "b"], "stage": ["s", "s"]}), ["stage"])
    assert list(frame.columns) == ["stage", *[f.name for f in RESULT_FIELDS]]
    assert [f.name for f in RESULT_FIELDS][1:] == list(RESULT_KEYS)[1:]
    assert frame["sampling_seed"].tolist()[0] == 2**31 - 1 and pd.isna(frame["sampling_seed"][1])
    assert str(frame["sent_at"].dtype).startswith("datetime64") and frame["sent_at"][0] == now
    assert pd.isna(frame["prompt_tokens"][0]) and pd.isna(frame["sent_at"][1])


# ---------------------------------------------------------------------------------------------
# Streaming (issue 12 part 1): a constant in-flight window, no batch barrier
# ---------------------------------------------------------------------------------------------
def _stream_all(engine, rows, window, **kw):
    pairs = []
    for chunk in engine.stream(iter(rows), window, **kw):
        pairs.extend(chunk)
    return pairs


def test_stream_keeps_its_window_full_while_a_slow_request_is_out(start_sim):
    # heavy-tailed latency (lognormal, sigma = 1): with a batch barrier nothing of the second
    # window could be sent before the first window's slowest request came back
    server = start_sim(seed=5, latency_ms=100, latency_jitter_ms=100, latency_dist="lognormal", max_concurrency=64)
    settings = EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False, timeout_s=30)
    rows = make_request_rows(40)
    stats = BatchStats()
    engine = Engine(settings)
    try:
        pairs = _stream_all(engine, rows, 4, stats=stats)
    finally:
        engine.close()

    assert sorted(r["request_id"] for r in rows) == sorted(res["request_id"] for _, res in pairs)
    assert all(req["request_id"] == res["request_id"] and res["status"] == "ok" for req, res in pairs)
    assert stats.rows == 40 and stats.peak_in_flight == 4 and server.stats()["requests"] == 40
    sent = sorted(res["sent_at"] for _, res in pairs)
    done = sorted(res["completed_at"] for _, res in pairs)
    # constant window: the k-th request (k >= 4) starts when the (k-4)-th completion frees a slot
    lag = [(sent[k] - done[k - 4]).total_seconds() for k in range(4, len(sent))]
    assert max(lag) < 0.08, lag
    # with a batch barrier nothing of the second window would start before the first one's slowest
    first_window_done = max(res["completed_at"] for _, res in pairs if res["sent_at"] <= sent[3])
    assert sum(s < first_window_done for s in sent[4:]) >= 1


def test_stream_stop_sends_nothing_more_drains_in_flight_and_leaves_the_rest(start_sim):
    server = start_sim(latency_ms=20, latency_jitter_ms=10, max_concurrency=64)
    settings = EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False, timeout_s=30)
    rows = make_request_rows(60)
    source = iter(rows)
    taken = []

    def tracked():
        for row in source:
            taken.append(row["request_id"])
            yield row

    yielded = []
    for chunk in Engine(settings).stream(tracked(), 5, stop=lambda: len(yielded) >= 7, tick_s=0.05):
        yielded.extend(res["request_id"] for _, res in chunk)
    assert sorted(yielded) == sorted(taken)  # every request taken got its result (drained)
    assert 7 <= len(taken) <= 7 + 5  # stopped once 7 were back: at most one window more
    assert server.stats()["requests"] == len(taken)
    assert len(list(source)) == 60 - len(taken)  # the rest was never taken from the iterator


def test_stream_ticks_when_nothing_completes(start_sim):
    server = start_sim(latency_ms=300, latency_jitter_ms=0, max_concurrency=64)
    settings = EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False, timeout_s=30)
    chunks = list(Engine(settings).stream(iter(make_request_rows(2)), 2, tick_s=0.05))
    assert sum(len(c) for c in chunks) == 2 and any(len(c) == 0 for c in chunks)
