"""The taskseed simulator: an OpenAI-compatible HTTP server that is *not* a model.

It exists so that tests, benchmarks and the offline demo exercise the whole pipeline (HTTP,
concurrency, retries, the ledger, parsing, the filters) without a GPU. It answers taskseed's own
generation/enrichment prompts (docs/prompt-contract.md) with deterministic, plausible JSON and
models what real servers do: latency, a concurrency cap with queueing, rate limits (429 +
Retry-After), transport faults (500/503, hangs past the client timeout, dropped connections,
unparsable bodies) and content faults (malformed JSON, truncation with finish_reason=length,
wrong answers, duplicate items, copies of held-out items). Same seed, same behaviour: every
random decision is a hash of (seed, purpose, request content, how many times that content was
seen), so a retried request can succeed where its first attempt failed, reproducibly.

Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /admin/stats`, `POST /admin/reset`.
Every response is labelled as coming from a simulator (`system_fingerprint`, `/v1/models`,
`X-Taskseed-Simulator` header, startup log line).

Pure helpers (`sim_truth`, `sim_answer`, `parse_contract`) are importable without starting
anything; `SimulatorServer` runs the server in a background thread for tests,
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
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.answer_formats import BOOLEAN, CODE, LABEL, MCQ, NUMERIC, SHORT_TEXT

log = logging.getLogger("taskseed.simulator")

FAULT_KINDS = ("429", "500", "503", "hang", "drop", "bad_body", "malformed", "truncate")
REQUEST_ID_HEADER = "X-Taskseed-Request-Id"
ATTEMPT_HEADER = "X-Taskseed-Attempt"
SIM_LABEL = "taskseed-simulator (not a model: deterministic answers for pipeline testing)"


@dataclass(frozen=True)
class SimSettings:
    """Everything that shapes the simulator's behaviour; the CLI maps one flag to each field.

    `fault_rate` is the total probability of an injected fault per HTTP request, split evenly
    over `fault_kinds`; `fault_rates` (kind → rate) overrides the rate of single kinds.
    `rate_limit_rps` (0 = off) is a token bucket in front of the queue; `max_concurrency` caps
    requests being "processed" (sleeping their latency), the rest queue.
    """

    seed: int = 0
    model: str = "taskseed-sim"
    latency_ms: float = 20.0
    latency_jitter_ms: float = 10.0
    latency_dist: str = "uniform"  # fixed | uniform (± jitter) | lognormal (sigma from jitter)
    max_concurrency: int = 256
    rate_limit_rps: float = 0.0
    rate_limit_burst: float | None = None
    retry_after_s: float = 1.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_rates: tuple[tuple[str, float], ...] = ()
    hang_s: float = 120.0
    wrong_answer_rate: float = 0.0
    duplicate_rate: float = 0.0
    heldout_copy_rate: float = 0.0
    heldout_file: str | None = None
    require_api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.fault_kinds, *dict(self.fault_rates)) if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if self.latency_dist not in ("fixed", "uniform", "lognormal"):
            raise ValueError("latency_dist must be fixed, uniform or lognormal")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")

    def validated(self) -> "SimSettings":
        """Self, after checking every probability and the fault-rate total (ValueError)."""
        for name in ("fault_rate", "wrong_answer_rate", "duplicate_rate", "heldout_copy_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if any(not 0.0 <= r <= 1.0 for _, r in self.fault_rates):
            raise ValueError("each fault rate must be in [0, 1]")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.rate_limit_rps < 0:
            raise ValueError("latency and rate limit must be >= 0")
        self.kind_rates()
        return self

    def kind_rates(self) -> list[tuple[str, float]]:
        """Effective per-kind fault probabilities (sum must stay <= 1)."""
        explicit = dict(self.fault_rates)
        share = self.fault_rate / len(self.fault_kinds) if self.fault_kinds else 0.0
        rates = [(k, explicit.get(k, share if k in self.fault_kinds else 0.0)) for k in FAULT_KINDS]
        if sum(r for _, r in rates) > 1.0 + 1e-9:
            raise ValueError("fault rates sum to more than 1")
        return [(k, r) for k, r in rates if r > 0]

    @classmethod
    def from_config(cls, sim_config: Any, **overrides: Any) -> "SimSettings":
        """From `jobs.config.SimulatorConfig` (fields with the same names)."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in sim_config.model_dump().items() if k in names}
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Deterministic randomness
# ---------------------------------------------------------------------------------------------
def _h(*parts: Any) -> int:
    """64-bit hash of the parts: the only source of randomness in the simulator."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _u(*parts: Any) -> float:
    return _h(*parts) / 2.0**64


def _norm(text: Any) -> str:
    return " ".join(str(text or "").lower().split())


# ---------------------------------------------------------------------------------------------
# The truth function shared by generation and enrichment
# ---------------------------------------------------------------------------------------------
_STOP = frozenset(
    "the a an and or of to in on for with by from at as is are was were be been which what who "
    "whom whose when where why how that this these those it its into than then there their they "
    "does did do can could would should will not no yes".split()
)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


def sim_truth(
    question: str,
    answer_format: str,
    choices: list[str] | None = None,
    label_set: list[str] | None = None,
) -> str:
    """The simulator's "correct" answer: a pure function of the normalized question text.

    Choice-based formats pick from the *sorted* options, so shuffling choices never changes the
    truth; boolean answers yes/no; numeric sums the numbers in the question; text formats pick a
    content word. Generation sets an item's answer to this and enrichment answers with it, so
    majority voting agrees with generation unless a wrong answer was injected.
    """
    q = _norm(question)
    h = _h("truth", q)
    if answer_format == LABEL and label_set:
        options = sorted(label_set, key=_norm)
        return options[h % len(options)]
    if answer_format == BOOLEAN:
        return "yes" if h % 2 == 0 else "no"
    if choices:
        options = sorted(choices, key=_norm)
        return options[h % len(options)]
    if answer_format == NUMERIC:
        numbers = [float(n) for n in _NUM.findall(q)]
        total = sum(numbers) if numbers else float(h % 100)
        return str(int(total)) if total == int(total) else f"{total:.2f}"
    words = sorted({w for w in _WORD.findall(q) if w not in _STOP})
    if answer_format == CODE:
        return f"def solution(x):\n    return x * {h % 9 + 2}\n"
    if not words:
        return "unknown"
    word = words[h % len(words)]
    return word if answer_format == SHORT_TEXT else f"The answer turns on {word}."


def _other_answer(truth: str, answer_format: str, choices: list[str] | None,
                  label_set: list[str] | None, salt: int) -> str:
    """A deliberately wrong answer (content fault the verification filter must catch)."""
    if answer_format == BOOLEAN:
        return "no" if truth == "yes" else "yes"
    options = (label_set if answer_format == LABEL and label_set else choices) or []
    others = [o for o in options if _norm(o) != _norm(truth)]
    if others:
        return sorted(others, key=_norm)[salt % len(others)]
    if answer_format == NUMERIC:
        try:
            return str(int(float(truth)) + 1 + salt % 7)
        except ValueError:
            return "0"
    return f"not {truth}"


# ---------------------------------------------------------------------------------------------
# Surface rewriting for "similar questions"
# ---------------------------------------------------------------------------------------------
_POOL = (
    "river mountain battery engine garden planet metal crystal forest animal plant energy "
    "market library teacher student island bridge signal window machine season weather farmer "
    "village ocean desert circuit magnet protein language history painter doctor village"
).split()
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[A-Za-z][A-Za-z'-]*|[^A-Za-z\d]+")


def _rewrite(text: str, rng: random.Random, pool: list[str], rate: float) -> str:
    """New surface text with the same frame: numbers changed, ~`rate` of content words swapped."""
    out = []
    changed = False
    for tok in _TOKEN.findall(text):
        if tok[0].isdigit():
            digits = len(tok.split(".")[0])
            new = str(rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1 + (digits == 1) * 8))
            changed = changed or new != tok
            out.append(new)
        elif tok[0].isalpha() and len(tok) > 3 and tok.lower() not in _STOP and rng.random() < rate:
            new = pool[rng.randrange(len(pool))]
            if tok[0].isupper():
                new = new[:1].upper() + new[1:]
            changed = changed or new.lower() != tok.lower()
            out.append(new)
        else:
            out.append(tok)
    result = "".join(out)
    if not changed:
        result = f"{pool[rng.randrange(len(pool))].capitalize()} case: {result}"
    return result


def _word_pool(*texts: Any) -> list[str]:
    words = {w.lower() for t in texts if t for w in _WORD.findall(str(t)) if w.lower() not in _STOP}
    return sorted(words | set(_POOL))


# ---------------------------------------------------------------------------------------------
# Contract parsing and answering (pure)
# ---------------------------------------------------------------------------------------------
_HEADER = re.compile(r"^taskseed-prompt:\s*(generate|enrich)/([a-z_]+)/(\S+)\s*$")


def parse_contract(messages: list[dict]) -> tuple[str, str, str, dict] | None:
    """(stage, answer_format, prompt_version, input) if the messages follow the contract."""
    if not messages or not isinstance(messages, list):
        return None
    system = messages[0]
    if not isinstance(system, dict) or system.get("role") != "system":
        return None
    first_line = str(system.get("content") or "").split("\n", 1)[0].strip()
    match = _HEADER.match(first_line)
    if not match:
        return None
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    text = str((user or {}).get("content") or "")
    start, end = text.rfind("<input>"), text.rfind("</input>")
    if start < 0 or end < start:
        return None
    try:
        payload = json.loads(text[start + len("<input>"):end])
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return match.group(1), match.group(2), match.group(3), payload


def _load_heldout(path: str | None) -> list[dict]:
    if not path:
        return []
    items = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            row = json.loads(line)
            if row.get("question"):
                items.append(row)
    return items


def _generate(inp: dict, answer_format: str, settings: SimSettings, variant_key: str,
              content_key: str, heldout: list[dict]) -> dict:
    seed = inp.get("seed") or {}
    label_set = inp.get("label_set")
    fmt = inp.get("answer_format") or answer_format
    s = settings.seed
    # A duplicate answers as if it were "the" canonical sample of this seed prompt, so every
    # sample that draws a duplicate returns the very same item.
    if _u(s, "dup", variant_key) < settings.duplicate_rate:
        variant_key = f"canonical:{content_key}"
    if heldout and _u(s, "heldout", variant_key) < settings.heldout_copy_rate:
        n = len(seed.get("choices") or [])
        fitting = [h for h in heldout if len(h.get("choices") or []) == n] or heldout
        item = fitting[_h(s, "pick", variant_key) % len(fitting)]
        return {"question": item["question"], "context": item.get("context"),
                "choices": item.get("choices") or None, "answer": str(item.get("answer_text", ""))}
    rng = random.Random(_h(s, "gen", variant_key))
    pool = _word_pool(seed.get("question"), *[e.get("question") for e in inp.get("examples") or []])
    question = _rewrite(str(seed.get("question") or "What is the answer?"), rng, pool, 0.45)
    context = seed.get("context")
    if context:
        context = _rewrite(str(context), rng, pool, 0.3)
    seed_choices = list(seed.get("choices") or [])
    choices: list[str] | None
    if fmt == MCQ and seed_choices:
        n = int(inp.get("n_choices") or len(seed_choices))
        base = (seed_choices * (n // max(1, len(seed_choices)) + 1))[:n]
        choices, seen = [], set()
        for option in base:
            new = _rewrite(str(option), rng, pool, 0.5)
            while _norm(new) in seen:
                new = _rewrite(new, rng, pool, 1.0)
            seen.add(_norm(new))
            choices.append(new)
        rng.shuffle(choices)
    else:
        choices = seed_choices or None  # labels / yes-no keep the seed's label frame verbatim
    answer = sim_truth(question, fmt, choices, label_set)
    if _u(s, "wrong-gen", variant_key) < settings.wrong_answer_rate:
        answer = _other_answer(answer, fmt, choices, label_set, _h(s, "other", variant_key))
    return {"question": question, "context": context, "choices": choices, "answer": answer}


def _enrich(inp: dict, answer_format: str, settings: SimSettings, variant_key: str) -> dict:
    item = inp.get("item") or {}
    fmt = inp.get("answer_format") or answer_format
    label_set = inp.get("label_set")
    question = str(item.get("question") or "")
    choices = item.get("choices") or None
    final = sim_truth(question, fmt, choices, label_set)
    if _u(settings.seed, "wrong-enrich", variant_key) < settings.wrong_answer_rate:
        final = _other_answer(final, fmt, choices, label_set, _h(settings.seed, "other", variant_key))
    words = [w for w in _WORD.findall(question) if w.lower() not in _STOP][:3] or ["the question"]
    return {
        "knowledge": f"Relevant background: the question involves {', '.join(words)}.",
        "reasoning": f"Consider what is asked about {words[0]}. Weighing the options, "
                     f"the best supported answer is {final}.",
        "final_answer": final,
    }


def _from_schema(schema: Any) -> Any:
    """A minimal value satisfying a JSON schema (generic answer to non-contract prompts)."""
    if not isinstance(schema, dict):
        return "simulated"
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _from_schema(schema[key][0])
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _from_schema(v) for k, v in props.items()}
    if kind == "array":
        return [_from_schema(schema.get("items") or {})] * int(schema.get("minItems", 0))
    return {"string": "simulated", "integer": 0, "number": 0, "boolean": False, "null": None}.get(kind, "simulated")


def sim_answer(body: dict, settings: SimSettings, variant_key: str, content_key: str,
               heldout: list[dict] | None = None) -> str:
    """The assistant message content for a request body (pure; no faults applied here)."""
    messages = body.get("messages") or []
    contract = parse_contract(messages)
    if contract is not None:
        stage, answer_format, _version, inp = contract
        if stage == "generate":
            obj = _generate(inp, answer_format, settings, variant_key, content_key, heldout or [])
        else:
            obj = _enrich(inp, answer_format, settings, variant_key)
        return json.dumps(obj, ensure_ascii=False)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return json.dumps(_from_schema(schema))
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": "simulated"})
    return "This is a simulated reply from the taskseed simulator (not a model)."


def approx_tokens(text: str) -> int:
    return len(text) // 4 + 1


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
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.by_request_id: Counter[str] = Counter()
        self.first_attempts: Counter[str] = Counter()
        self.by_content: Counter[str] = Counter()
        self.in_flight = 0  # requests being processed (holding one of max_concurrency slots)
        self.peak_in_flight = 0
        self.queued = 0  # requests waiting for a slot
        self.peak_queued = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def snapshot(self) -> dict:
        return {
            "simulator": SIM_LABEL,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "by_request_id": dict(self.by_request_id),
            "first_attempts": dict(self.first_attempts),
            "distinct_contents": len(self.by_content),
            "max_content_hits": max(self.by_content.values(), default=0),
            "peak_in_flight": self.peak_in_flight,
            "peak_queued": self.peak_queued,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _latency_s(settings: SimSettings, key: str, n: int) -> float:
    base, jitter = settings.latency_ms / 1000.0, settings.latency_jitter_ms / 1000.0
    if settings.latency_dist == "fixed" or jitter <= 0:
        return base
    u = _u(settings.seed, "lat", key, n)
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


def build_app(settings: SimSettings, state: SimulatorState | None = None):
    """The aiohttp application. Per-request work is kept tiny so the client is the bottleneck."""
    from aiohttp import web

    state = state or SimulatorState()
    heldout = _load_heldout(settings.heldout_file)
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
        u = _u(settings.seed, "fault", key, n)
        acc = 0.0
        for kind, rate in kind_rates:
            acc += rate
            if u < acc:
                return kind
        return None

    async def chat(request: web.Request):
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
            state.outcomes["400"] += 1
            return error(400, "request body is not JSON", "invalid_request_error")
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                state.outcomes["429_rate_limit"] += 1
                return error(429, "rate limit exceeded (simulated)", "rate_limit_error",
                             {"Retry-After": str(max(1, math.ceil(wait))),
                              "retry-after-ms": str(int(wait * 1000) + 1)})
        fault = pick_fault(content_key, n)
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

        if fault == "bad_body":
            state.outcomes["bad_body"] += 1
            return web.Response(body=b'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mess',
                                content_type="application/json", headers=label_headers)
        content = sim_answer(body, settings, rid or content_key, content_key, heldout)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if fault == "truncate":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif fault == "malformed":
            content = content.rstrip("}") + ', "note": "unterminated'
        elif isinstance(max_tokens, int) and approx_tokens(content) > max_tokens:
            content, finish = content[: max_tokens * 4], "length"
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": approx_tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        state.prompt_tokens += usage["prompt_tokens"]
        state.completion_tokens += usage["completion_tokens"]
        state.outcomes[fault or "ok"] += 1
        payload = {
            "id": f"chatcmpl-sim-{content_key}-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or settings.model,
            "system_fingerprint": "taskseed-simulator",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json",
                            headers=label_headers)

    async def models(_request):
        return web.json_response(
            {"object": "list", "data": [{"id": settings.model, "object": "model", "created": 0,
                                         "owned_by": "taskseed-simulator", "description": SIM_LABEL}]},
            headers=label_headers)

    async def stats(_request):
        return web.json_response(state.snapshot())

    async def reset(_request):
        state.reset()
        return web.json_response({"reset": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/admin/stats", stats)
    app.router.add_post("/admin/reset", reset)
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


def settings_from_json(text: str) -> SimSettings:
    values = json.loads(text)
    for key in ("fault_kinds",):
        if key in values:
            values[key] = tuple(values[key])
    if "fault_rates" in values:
        values["fault_rates"] = tuple((k, float(v)) for k, v in values["fault_rates"])
    return SimSettings(**values)


__all__ = [
    "FAULT_KINDS", "SimSettings", "SimulatorServer", "SimulatorProcess", "SimulatorState",
    "build_app", "free_port", "parse_contract", "run_simulator", "sim_answer", "sim_truth",
    "approx_tokens",
]


if __name__ == "__main__":  # used by SimulatorProcess
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_simulator(sys.argv[2], int(sys.argv[3]), settings_from_json(sys.argv[1]))
