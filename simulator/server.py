"""The taskseed simulator: an OpenAI-compatible HTTP server that is *not* a model.

It exists so that tests, benchmarks and the offline demo exercise the whole pipeline (HTTP,
concurrency, retries, the ledger, parsing, the filters) without a GPU. It answers taskseed's own
generation/enrichment prompts (docs/prompt-contract.md) with deterministic, plausible JSON and
models what real servers do: latency, a concurrency cap with queueing, rate limits (429 +
Retry-After), transport faults (500/503, hangs past the client timeout, dropped connections,
unparsable bodies, HTML 502 pages from a proxy, error objects inside HTTP 200 bodies, missing
`usage`) and content faults (malformed JSON, truncation with finish_reason=length, wrong answers,
duplicate items, copies of held-out items, the seed again with its gold changed, prompt text in an
item, trivial self-referential items; counted by kind in `/admin/stats` "content_faults"). Server
modes: reasoning output the way vLLM/SGLang reasoning parsers return it (`reasoning="split"`:
thoughts in `reasoning_content`, the answer in `content`; `"only"`: everything in
`reasoning_content`, `content` null), and a server that rejects `response_format` json_schema
(`reject_json_schema=400|500`, as llama.cpp servers do).
Same seed, same behaviour: every random decision is a hash of (seed, purpose, request content,
how many times that content was seen), so a retried request can succeed where its first attempt
failed, reproducibly. The sample an answer stands for is the body's `seed` (as on a real server:
same prompt and seed, same item; another seed, another item), else the request-id header.

Endpoints: `POST /v1/chat/completions`, `POST /v1/embeddings` (simulator/embeddings.py), the Batch
API's `/v1/files` and `/v1/batches` and `GET /admin/batches` (simulator/batch_api.py),
`GET /v1/models` (the chat model, `served_models` and the embedding model), `GET /admin/stats`,
`POST /admin/reset`, `POST /admin/kill` / `/admin/revive` (play a dead server:
connections dropped, nothing counted; the fleet tests and bench_replicas).
Every response is labelled as coming from a simulator (`system_fingerprint`, `/v1/models`,
`X-Taskseed-Simulator` header, startup log line).

What it answers lives in simulator/contract.py (`sim_truth`, `sim_answer`, `parse_contract`:
pure, importable without starting anything); its settings and randomness in simulator/settings.py.
Here: `SimulatorServer` runs the server in a background thread for tests,
`SimulatorProcess` in a child process (so a benchmark measures client CPU alone), and
`run_simulator` in the foreground (`taskseed sim`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from simulator.batch_api import BatchAPIState, add_batch_routes
from simulator.contract import approx_tokens, load_heldout, load_known_answers, sim_answer, sim_thought
from simulator.embeddings import SIM_EMBEDDING_MODEL, add_embeddings_route
from simulator.settings import SimSettings, settings_from_json, uniform01

log = logging.getLogger("taskseed.simulator")

REQUEST_ID_HEADER = "X-Taskseed-Request-Id"
ATTEMPT_HEADER = "X-Taskseed-Attempt"
SIM_LABEL = "taskseed-simulator (not a model: deterministic answers for pipeline testing)"


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------
class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> float:
        """0.0 if a token was taken, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class SimulatorState:
    """Counters the tests assert on: hits per request id / content, outcomes, peak concurrency."""

    def __init__(self) -> None:
        self.killed = False  # set by SimulatorServer.kill: answers not yet sent are dropped, never counted
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.by_request_id: Counter[str] = Counter()
        self.first_attempts: Counter[str] = Counter()
        # request id -> Counter of the kinds of HTTP 200 replies it got ("ok", "no_usage", and the
        # broken ones: "malformed", "truncate", "bad_body", "error_200"): what was paid for, per request
        self.replies_200: dict[str, Counter[str]] = {}
        self.by_content: Counter[str] = Counter()
        self.in_flight = 0  # requests being processed (holding one of max_concurrency slots)
        self.peak_in_flight = 0
        self.queued = 0  # requests waiting for a slot
        self.peak_queued = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # content faults planted in HTTP 200 replies, by kind (simulator/contract.py `sim_answer`):
        # "duplicate", "heldout_copy", "seed_copy", "prompt_leak", "self_reference", "wrong_answer", ...
        self.content_faults: Counter[str] = Counter()
        # POST /v1/embeddings (simulator/embeddings.py): HTTP requests, texts in answered requests
        self.embedding_requests = 0
        self.embedded_texts = 0
        # the Batch API (simulator/batch_api.py): files, batches, lines submitted per custom_id
        self.batch_api = BatchAPIState()

    def count_200(self, rid: str | None, kind: str) -> None:
        if rid:
            self.replies_200.setdefault(rid, Counter())[kind] += 1

    def snapshot(self) -> dict:
        return {
            "simulator": SIM_LABEL,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "by_request_id": dict(self.by_request_id),
            "first_attempts": dict(self.first_attempts),
            "replies_200": {rid: dict(kinds) for rid, kinds in self.replies_200.items()},
            "distinct_contents": len(self.by_content),
            "max_content_hits": max(self.by_content.values(), default=0),
            "peak_in_flight": self.peak_in_flight,
            "peak_queued": self.peak_queued,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "content_faults": dict(self.content_faults),
            "embedding_requests": self.embedding_requests,
            "embedded_texts": self.embedded_texts,
            "batch_api": self.batch_api.snapshot(),
        }


def _latency_s(settings: SimSettings, key: str, n: int) -> float:
    base, jitter = settings.latency_ms / 1000.0, settings.latency_jitter_ms / 1000.0
    if settings.latency_dist == "fixed" or jitter <= 0:
        return base
    u = uniform01(settings.seed, "lat", key, n)
    if settings.latency_dist == "uniform":
        return max(0.0, base + (2 * u - 1) * jitter)
    # lognormal with median `base` and sigma = jitter/base (a long right tail, like real servers)
    sigma = jitter / base if base > 0 else 0.5
    z = math.sqrt(2) * _erfinv(2 * min(max(u, 1e-9), 1 - 1e-9) - 1)
    return base * math.exp(sigma * z)


def _erfinv(y: float) -> float:
    """Inverse error function (Winitzki approximation refined by two Newton steps)."""
    a = 0.147
    ln = math.log(1 - y * y)
    t = 2 / (math.pi * a) + ln / 2
    x = math.copysign(math.sqrt(math.sqrt(t * t - ln / a) - t), y)
    for _ in range(2):
        x -= (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


_HTML_502 = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>\n"
             "<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx (simulated)</center>\n"
             "</body></html>\n")


def build_app(settings: SimSettings, state: SimulatorState | None = None):
    """The aiohttp application. Per-request work is kept tiny so the client is the bottleneck."""
    from aiohttp import web

    state = state or SimulatorState()
    heldout = load_heldout(settings.heldout_file)
    known = load_known_answers(settings.known_answers_file)
    kind_rates = settings.kind_rates()
    semaphore = asyncio.Semaphore(settings.max_concurrency)
    # When each busy slot is due to free up, in server time. A queued request starts its service
    # when a slot frees (its predecessor's deadline), not when the event loop gets round to waking
    # it: otherwise the simulator's own HTTP work would stall its "GPU" slots and understate
    # what a client can reach.
    slot_deadlines: collections.deque[float] = collections.deque()
    bucket = (
        _TokenBucket(settings.rate_limit_rps, settings.rate_limit_burst or max(1.0, settings.rate_limit_rps))
        if settings.rate_limit_rps > 0 else None
    )
    label_headers = {"X-Taskseed-Simulator": "1"}
    expected_auth = f"Bearer {settings.require_api_key}" if settings.require_api_key else None

    def error(status: int, message: str, kind: str, headers: dict | None = None):
        body = {"error": {"message": message, "type": kind, "code": status}}
        return web.json_response(body, status=status, headers={**label_headers, **(headers or {})})

    def pick_fault(key: str, n: int) -> str | None:
        if not kind_rates:
            return None
        u = uniform01(settings.seed, "fault", key, n)
        acc = 0.0
        for kind, rate in kind_rates:
            acc += rate
            if u < acc:
                return kind
        return None

    async def chat(request: web.Request):
        if state.killed:  # dead (POST /admin/kill): the connection drops, nothing is counted
            request.transport.abort()
            raise asyncio.CancelledError()
        raw = await request.read()
        state.requests += 1
        rid = request.headers.get(REQUEST_ID_HEADER)
        content_key = hashlib.blake2b(raw, digest_size=12).hexdigest()
        state.by_content[content_key] += 1
        n = state.by_content[content_key]
        if rid:
            state.by_request_id[rid] += 1
            if request.headers.get(ATTEMPT_HEADER, "1") == "1":
                state.first_attempts[rid] += 1
        if expected_auth and request.headers.get("Authorization") != expected_auth:
            state.outcomes["401"] += 1
            return error(401, "invalid API key", "authentication_error")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            state.outcomes["400"] += 1
            return error(400, "request body is not a JSON object", "invalid_request_error")
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                state.outcomes["429_rate_limit"] += 1
                return error(429, "rate limit exceeded (simulated)", "rate_limit_error",
                             {"Retry-After": str(max(1, math.ceil(wait))),
                              "retry-after-ms": str(int(wait * 1000) + 1)})
        response_format = body.get("response_format")
        if settings.reject_json_schema and isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            state.outcomes["reject_json_schema"] += 1
            return error(settings.reject_json_schema, 'response_format type must be one of "text" or '
                         '"json_object", but got: json_schema (simulated)', "invalid_request_error")
        fault = pick_fault(content_key, n)
        if fault == "html_502":
            state.outcomes[fault] += 1
            return web.Response(status=502, text=_HTML_502, content_type="text/html", headers=label_headers)
        if fault == "error_200":
            state.outcomes[fault] += 1
            state.count_200(rid, fault)
            return web.json_response({"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                                      "message": "This model's maximum context length is 4096 tokens; the "
                                                 "request asked for more (simulated)."}, headers=label_headers)
        if fault == "429":
            state.outcomes["429"] += 1
            return error(429, "too many requests (simulated)", "rate_limit_error",
                         {"Retry-After": f"{settings.retry_after_s:g}"})
        if fault in ("500", "503"):
            state.outcomes[fault] += 1
            return error(int(fault), "simulated server error", "server_error")
        if fault == "hang":
            state.outcomes["hang"] += 1
            await asyncio.sleep(settings.hang_s)
            return error(504, "simulated hang ended", "server_error")
        if fault == "drop":
            state.outcomes["drop"] += 1
            request.transport.abort()
            raise asyncio.CancelledError()

        state.queued += 1
        state.peak_queued = max(state.peak_queued, state.queued)
        admitted = False
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        try:
            async with semaphore:
                state.queued -= 1
                admitted = True
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
                start = max(arrival, slot_deadlines.popleft()) if slot_deadlines else loop.time()
                deadline = start + _latency_s(settings, content_key, n)
                try:
                    if deadline > loop.time():
                        await asyncio.sleep(deadline - loop.time())
                finally:
                    state.in_flight -= 1
                    slot_deadlines.append(min(deadline, loop.time()))
        finally:
            if not admitted:
                state.queued -= 1
        if state.killed:  # the server died while this request was being processed: no answer leaves
            request.transport.abort()
            raise asyncio.CancelledError()

        if fault == "bad_body":
            state.outcomes["bad_body"] += 1
            state.count_200(rid, fault)
            return web.Response(body=b'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mess',
                                content_type="application/json", headers=label_headers)
        # The sample is the body's seed when it has one (a real server sees no headers): the
        # prompt key leaves the seed out, so duplicates still collapse onto one canonical item.
        sample_seed = body.get("seed")
        if isinstance(sample_seed, int) and not isinstance(sample_seed, bool):
            unseeded = json.dumps({k: v for k, v in body.items() if k != "seed"}, sort_keys=True)
            prompt_key = hashlib.blake2b(unseeded.encode(), digest_size=12).hexdigest()
            variant_key = f"{prompt_key}:seed={sample_seed}"
        else:
            prompt_key, variant_key = content_key, rid or content_key
        content = sim_answer(body, settings, variant_key, prompt_key, heldout, state.content_faults, known)
        if settings.reasoning == "only":  # vLLM with a reasoning parser, model never closed </think>
            content = sim_thought(body) + "\n" + content
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if fault == "truncate":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif fault == "malformed":
            content = content.rstrip("}") + ', "note": "unterminated'
        elif isinstance(max_tokens, int) and approx_tokens(content) > max_tokens:
            content, finish = content[: max_tokens * 4], "length"
        message: dict[str, Any] = {"role": "assistant", "content": content}
        thought = ""
        if settings.reasoning == "only":
            message = {"role": "assistant", "content": None, settings.reasoning_field: content}
        elif settings.reasoning == "split":
            thought = message[settings.reasoning_field] = sim_thought(body)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": approx_tokens(content + thought)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        state.prompt_tokens += usage["prompt_tokens"]
        state.completion_tokens += usage["completion_tokens"]
        state.outcomes[fault or "ok"] += 1
        state.count_200(rid, fault or "ok")
        payload = {
            "id": f"chatcmpl-sim-{content_key}-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or settings.model,
            "system_fingerprint": "taskseed-simulator",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        if fault == "no_usage":
            del payload["usage"]
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json",
                            headers=label_headers)

    async def models(request):
        if state.killed:
            request.transport.abort()
            raise asyncio.CancelledError()
        if expected_auth and request.headers.get("Authorization") != expected_auth:
            return error(401, "invalid API key", "authentication_error")  # as vLLM --api-key, OpenAI
        return web.json_response(
            {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                         "owned_by": "taskseed-simulator", "description": SIM_LABEL}
                                        for model in dict.fromkeys((settings.model, *settings.served_models, SIM_EMBEDDING_MODEL))]},
            headers=label_headers)

    async def stats(_request):
        return web.json_response(state.snapshot())

    async def reset(_request):
        state.reset()
        return web.json_response({"reset": True})

    async def kill(_request):
        # a dead server for clients (chat and /v1/models drop their connections, answers being
        # processed are never sent) whose counters /admin/stats still reports
        state.killed = True
        return web.json_response({"killed": True})

    async def revive(_request):
        state.killed = False
        return web.json_response({"killed": False})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/admin/stats", stats)
    add_embeddings_route(app, settings, state, label_headers, _latency_s, expected_auth)
    add_batch_routes(app, settings, state, label_headers, expected_auth, heldout, known)
    app.router.add_post("/admin/reset", reset)
    app.router.add_post("/admin/kill", kill)
    app.router.add_post("/admin/revive", revive)
    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _public_settings(settings: SimSettings) -> dict:
    values = asdict(settings)
    values["require_api_key"] = "(set)" if settings.require_api_key else None
    return values


async def _serve(settings: SimSettings, host: str, port: int, state: SimulatorState,
                 started: "threading.Event | None" = None, stop: "asyncio.Event | None" = None,
                 bound: list | None = None) -> None:
    from aiohttp import web

    runner = web.AppRunner(build_app(settings, state), access_log=None, handle_signals=False,
                           shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    actual = site._server.sockets[0].getsockname()[1] if port == 0 else port  # type: ignore[union-attr]
    if bound is not None:
        bound.append(actual)
    log.warning("taskseed SIMULATOR (not a model) listening on http://%s:%s/v1 seed=%s",
                host, actual, settings.seed)
    if started is not None:
        started.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()


def run_simulator(host: str, port: int, settings: SimSettings) -> None:
    """Serve in the foreground until interrupted (`taskseed sim`)."""
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_serve(settings, host, port, SimulatorState()))
    except KeyboardInterrupt:
        pass


class SimulatorServer:
    """In-process simulator on a free loopback port, served from a background thread.

    `with SimulatorServer(SimSettings(...)) as sim: sim.base_url` — `sim.state` holds the live
    counters (read them after requests have finished), `sim.stats()` a snapshot.
    """

    def __init__(self, settings: SimSettings | None = None, host: str = "127.0.0.1", port: int = 0):
        self.settings = settings or SimSettings()
        self.host, self.port = host, port
        self.state = SimulatorState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "SimulatorServer":
        started = threading.Event()
        bound: list[int] = []
        errors: list[BaseException] = []

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(
                    _serve(self.settings, self.host, self.port, self.state, started, self._stop, bound))
            except BaseException as exc:  # surfaced to the starting thread
                errors.append(exc)
                started.set()
            finally:
                # Handlers still sleeping (hang faults) are cancelled, not left dangling.
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self._loop.close()

        self._thread = threading.Thread(target=main, name="taskseed-simulator", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise RuntimeError(f"simulator failed to start: {errors[0]!r}")
        self.port = bound[0]
        return self

    def stats(self) -> dict:
        return self.state.snapshot()

    def reset(self) -> None:
        self.state.reset()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None

    def kill(self) -> None:
        """Die as a crashed server does: requests being processed get their connection dropped (no
        answer leaves, none is counted in `replies_200`), the port then refuses connections.
        `restart()` brings it back on the same port with the same counters."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(setattr, self.state, "killed", True)
        self.stop()

    def restart(self) -> "SimulatorServer":
        """Start again on the same port (after `kill` or `stop`), keeping the counters."""
        self.stop()
        self.state.killed = False
        return self.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SimulatorProcess:
    """The simulator in a child process (benchmarks: keeps its CPU out of the client's numbers).

    Started as `python -m simulator.server <settings-json> <host> <port>` so it works from any
    caller (no multiprocessing main-module guard needed).
    """

    def __init__(self, settings: SimSettings | None = None, host: str = "127.0.0.1", port: int | None = None):
        self.settings = settings or SimSettings()
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://{self.host}:{self.port}/admin/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def _admin(self, action: str) -> dict:
        import urllib.request

        request = urllib.request.Request(f"http://{self.host}:{self.port}/admin/{action}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def kill(self) -> None:
        """Play dead (`POST /admin/kill`): requests in flight and new ones get their connections
        dropped, nothing more is counted; `stats()` still answers (what a crashed server had sent)."""
        self._admin("kill")

    def revive(self) -> None:
        """Answer again after `kill` (`POST /admin/revive`)."""
        self._admin("revive")

    def start(self) -> "SimulatorProcess":
        payload = json.dumps(asdict(self.settings))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.server", payload, self.host, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"simulator process exited with code {self._proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("simulator process did not start listening within 30 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["SimulatorServer", "SimulatorProcess", "SimulatorState", "build_app", "free_port", "run_simulator"]


if __name__ == "__main__":  # used by SimulatorProcess
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_simulator(sys.argv[2], int(sys.argv[3]), settings_from_json(sys.argv[1]))
