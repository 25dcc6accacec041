"""The LLM call engine: many concurrent chat-completion requests per Python process, one result
dict per request, never an exception for one bad row.

Why it looks like this:
- The `openai` AsyncOpenAI client is built once per (process, endpoint settings) and driven from
  one private event loop running in a background thread, so Spark's Python workers (which are
  reused across tasks) pay for it once, and callers that already run a loop (notebooks) work.
- Requests go through `client.post("/chat/completions", cast_to=httpx2.Response)` over the
  aiohttp transport: the documented low-level call skips the SDK's parameter transformation and
  pydantic response model, which measured ~2x less client CPU per request than
  `chat.completions.create` (bench/README.md). Status errors still raise the SDK's typed
  exceptions (`RateLimitError`, `APIStatusError`, `APITimeoutError`, `APIConnectionError`).
- `max_retries=0` on the client: retries are ours, so they are counted, classified by status
  code / exception type (never message text), honour Retry-After, back off exponentially with
  jitter, and release their concurrency slot while sleeping.
- An AIMD limiter bounds requests in flight: halves (at most once per cooldown) on 429s,
  creeps back up by ~1 per window of successes.
- The API key is resolved when the client is built (env var, a name forwarded by the driver, or a
  Databricks secret scope), lives only inside the client, and is scrubbed from every error text
  this module produces. `EndpointSettings` holds names, never the value.

Result dict per request (the columns the Spark side and the ledger use):
    request_id, status ("ok" | "parse_error" | "failed"), content (raw text, kept for re-parsing),
    parsed (object or None), error_class, error_detail, attempts, latency_ms (first send to final
    answer, including backoff), prompt_tokens, completion_tokens, finish_reason.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import email.utils
import hashlib
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

STATUS_OK, STATUS_PARSE_ERROR, STATUS_FAILED = "ok", "parse_error", "failed"
REQUEST_ID_HEADER = "X-Taskseed-Request-Id"
ATTEMPT_HEADER = "X-Taskseed-Attempt"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 120.0


class KeyResolutionError(RuntimeError):
    """No API key could be found; the message names where we looked, never a value."""


@dataclass(frozen=True)
class EndpointSettings:
    """Where and how to call an OpenAI-compatible endpoint. Picklable; holds no secret.

    The API key is located by `api_key_env` (an environment variable *name*) or by a Databricks
    secret `secret_scope`/`secret_key`, and read only when a client is built.
    `require_key=False` lets keyless endpoints (the simulator, a local vLLM) work without one.
    """

    base_url: str
    model: str
    api_key_env: str | None = "TASKSEED_API_KEY"
    secret_scope: str | None = None
    secret_key: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 64
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    structured_output: bool = True
    require_key: bool = True
    min_concurrency: int = 1

    def forwarded_env_name(self) -> str:
        """Env var through which the driver hands a resolved key to Python workers."""
        if self.api_key_env:
            return self.api_key_env
        raw = f"{self.secret_scope}_{self.secret_key}".upper()
        return "TASKSEED_FWD_KEY_" + re.sub(r"[^A-Z0-9]", "_", raw)

    @classmethod
    def from_config(cls, endpoint: Any, base_url: str | None = None, **overrides: Any) -> "EndpointSettings":
        """From `jobs.config.EndpointConfig`; `base_url` overrides (e.g. a started simulator)."""
        values = dict(
            base_url=base_url or endpoint.base_url,
            model=endpoint.model,
            api_key_env=endpoint.api_key_env,
            secret_scope=endpoint.secret_scope,
            secret_key=endpoint.secret_key,
            timeout_s=endpoint.timeout_s,
            max_concurrency=endpoint.max_concurrency,
            max_retries=endpoint.max_retries,
            backoff_base_s=endpoint.backoff_base_s,
            backoff_max_s=endpoint.backoff_max_s,
            structured_output=endpoint.structured_output,
        )
        values.update(overrides)
        if not values["base_url"]:
            raise ValueError("endpoint base_url is not set (use jobs.llm_stage.endpoint_for to start the simulator)")
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------
def _databricks_secret(scope: str, key: str) -> str | None:
    """Read a Databricks secret on the driver (notebook dbutils, else databricks-sdk)."""
    try:
        from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is not None:
            return DBUtils(spark).secrets.get(scope=scope, key=key)
    except Exception:  # noqa: BLE001 - not on a Databricks driver; try the SDK next
        pass
    try:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().dbutils.secrets.get(scope=scope, key=key)
    except Exception as exc:  # noqa: BLE001 - report the kind of failure, never the value
        raise KeyResolutionError(
            f"could not read Databricks secret {scope}/{key}: {type(exc).__name__}") from None


def resolve_api_key(settings: EndpointSettings) -> str | None:
    """The key value, from (1) `api_key_env`, (2) the driver-forwarded env var, (3) the secret
    scope. None only when `require_key` is False and nothing is configured or set."""
    for name in dict.fromkeys(filter(None, (settings.api_key_env, settings.forwarded_env_name()))):
        value = os.environ.get(name)
        if value:
            return value
    if settings.secret_scope and settings.secret_key:
        value = _databricks_secret(settings.secret_scope, settings.secret_key)
        if value:
            return value
    if settings.require_key:
        where = []
        if settings.api_key_env:
            where.append(f"environment variable {settings.api_key_env}")
        if settings.secret_scope:
            where.append(f"Databricks secret {settings.secret_scope}/{settings.secret_key}")
        raise KeyResolutionError(
            "no API key found in " + (" or ".join(where) or "any configured source")
            + " (set endpoint.api_key_env: null for endpoints without authentication)")
    return None


class Redactor:
    """Replaces a secret (and its Bearer form) in any text we format from errors."""

    def __init__(self, secret: str | None):
        self._secret = secret if secret and len(secret) >= 4 else None

    def __call__(self, text: Any) -> str:
        text = str(text)
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "[REDACTED]")
        return text

    def __repr__(self) -> str:
        return "Redactor(***)"


# ---------------------------------------------------------------------------------------------
# Structured output: lenient JSON extraction + a small JSON-schema validator
# ---------------------------------------------------------------------------------------------
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def extract_json(text: str) -> Any:
    """Parse a JSON value from model text: as-is, inside a ```json fence, or the outermost {...}.

    Raises ValueError when nothing parses. Pure: stage code can re-parse ledger content with it.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    fenced = _FENCE.match(stripped)
    if fenced:
        try:
            return json.loads(fenced.group(1))
        except ValueError:
            pass
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        return json.loads(stripped[start:end + 1])
    raise ValueError("no JSON object found")


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


def validate_json(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Problems found validating `value` against the JSON-schema subset structured output uses
    (type incl. unions, properties, required, additionalProperties, items, enum, anyOf/oneOf,
    minItems/maxItems, minLength). Empty list = valid."""
    if not isinstance(schema, dict) or not schema:
        return []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [validate_json(value, s, path) for s in schema[key]]
            if not any(not b for b in branches):
                return [f"{path}: matches none of {key}"]
    problems: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        ok = any(
            isinstance(value, _TYPES.get(k, (object,)))
            and not (k in ("integer", "number") and isinstance(value, bool))
            for k in kinds
        )
        if not ok:
            return [f"{path}: expected {'/'.join(kinds)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: not one of the allowed values")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                problems.append(f"{path}.{name}: required")
        if schema.get("additionalProperties") is False:
            problems.extend(f"{path}.{k}: not allowed" for k in value if k not in props)
        for name, sub in props.items():
            if name in value:
                problems.extend(validate_json(value[name], sub, f"{path}.{name}"))
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems.extend(validate_json(item, schema["items"], f"{path}[{i}]"))
    elif isinstance(value, str) and len(value) < schema.get("minLength", 0):
        problems.append(f"{path}: shorter than {schema['minLength']}")
    return problems


def schema_of(response_format: dict | None) -> dict | None:
    """The JSON schema inside an OpenAI `response_format` (None = no structure requested)."""
    if not response_format:
        return None
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {}
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    return None


def parse_content(content: str | None, finish_reason: str | None, schema: dict | None
                  ) -> tuple[str, Any, str | None, str | None]:
    """(status, parsed, error_class, detail) for a response's text. Pure.

    A response that parses and validates is ok even with finish_reason=length; one that does
    not is `truncated` when the server says it stopped at the token limit, else `invalid_json`
    or `schema_mismatch`. Without a schema any text is ok (parsed=None).
    """
    if content is None or (schema is not None and not content.strip()):
        return STATUS_PARSE_ERROR, None, "empty_content", "response had no text content"
    if schema is None:
        return STATUS_OK, None, None, None
    try:
        parsed = extract_json(content)
    except ValueError as exc:
        cls = "truncated" if finish_reason == "length" else "invalid_json"
        return STATUS_PARSE_ERROR, None, cls, f"{type(exc).__name__}: {str(exc)[:160]}"
    problems = validate_json(parsed, schema)
    if problems:
        cls = "truncated" if finish_reason == "length" else "schema_mismatch"
        return STATUS_PARSE_ERROR, None, cls, "; ".join(problems[:5])[:300]
    return STATUS_OK, parsed, None, None


# ---------------------------------------------------------------------------------------------
# Error classification and backoff (pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    error_class: str
    retryable: bool
    retry_after_s: float | None = None
    status_code: int | None = None
    detail: str = ""


class InvalidResponse(Exception):
    """The HTTP body of a 2xx response was not a chat completion (unparsable or incomplete)."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms`, `Retry-After` (seconds or HTTP date); None if absent."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while seen < 10:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            return exc
        exc, seen = nxt, seen + 1
    return exc


def classify(exc: BaseException) -> Failure:
    """Map an exception to (error_class, retryable, Retry-After) by status code and type only."""
    import httpx2
    import openai

    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        if code == 429:
            return Failure("rate_limited", True, retry_after, code, "HTTP 429")
        if code >= 500:
            return Failure(f"http_{code}", True, retry_after, code, f"HTTP {code}")
        return Failure(f"http_{code}", code in RETRYABLE_STATUS, retry_after, code, f"HTTP {code}")
    if isinstance(exc, openai.APIConnectionError):
        # The aiohttp transport reports a dropped connection as ConnectTimeout; the root cause
        # (a TimeoutError vs. e.g. ServerDisconnectedError) tells which it really was.
        root = _root_cause(exc)
        if root is exc:
            timed_out = isinstance(exc, openai.APITimeoutError)
        else:
            timed_out = isinstance(root, (TimeoutError, httpx2.TimeoutException))
        if timed_out:
            return Failure("timeout", True, None, None, "request timed out")
        return Failure("connection", True, None, None, f"connection error ({type(root).__name__})")
    if isinstance(exc, InvalidResponse):
        return Failure("invalid_response", True, None, None, str(exc))
    if isinstance(exc, TimeoutError):
        return Failure("timeout", True, None, None, "request timed out")
    if isinstance(exc, (ConnectionError, OSError)):
        return Failure("connection", True, None, None, f"connection error ({type(exc).__name__})")
    if isinstance(exc, openai.APIError):
        return Failure("api_error", False, None, None, type(exc).__name__)
    return Failure("client_error", False, None, None, type(exc).__name__)


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after_s: float | None,
                  rng: random.Random) -> float:
    """Exponential backoff with equal jitter, never shorter than the server's Retry-After.

    attempt is the number of attempts made so far (1 after the first failure).
    """
    cap = min(max_s, base_s * (2 ** (attempt - 1)))
    delay = cap / 2 + rng.random() * cap / 2
    if retry_after_s is not None:
        ra = min(retry_after_s, MAX_RETRY_AFTER_S)
        delay = max(delay, ra + rng.random() * min(1.0, 0.1 * ra + 0.05))
    return delay


# ---------------------------------------------------------------------------------------------
# AIMD concurrency limiter
# ---------------------------------------------------------------------------------------------
class AIMDLimiter:
    """Bounds requests in flight; the bound halves on sustained 429s and recovers additively.

    A decrease happens at most once per `cooldown_s` (a burst of 429s from requests that were
    in flight together is one congestion signal); each success adds `increase / limit`, so the
    limit grows by about `increase` per window of `limit` successes. Waiters are FIFO.
    """

    def __init__(self, limit: int, min_limit: int = 1, decrease: float = 0.5,
                 increase: float = 1.0, cooldown_s: float = 1.0, start: float | None = None):
        self.max_limit = max(1, int(limit))
        self.min_limit = max(1, min(int(min_limit), self.max_limit))
        self.limit = float(min(self.max_limit, max(self.min_limit, start or self.max_limit)))
        self.decrease, self.increase, self.cooldown_s = decrease, increase, cooldown_s
        self.in_flight = 0
        self.peak_in_flight = 0
        self.lowest_limit = self.limit
        self.decreases = 0
        self._last_decrease = -1e18
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    def _capacity(self) -> int:
        return max(self.min_limit, int(self.limit))

    async def acquire(self) -> None:
        if not self._waiters and self.in_flight < self._capacity():
            self._take()
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._capacity():
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit < self.max_limit:
            self.limit = min(float(self.max_limit), self.limit + self.increase / self.limit)
            self._wake()

    def on_rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease >= self.cooldown_s:
            self._last_decrease = now
            self.limit = max(float(self.min_limit), self.limit * self.decrease)
            self.lowest_limit = min(self.lowest_limit, self.limit)
            self.decreases += 1


# ---------------------------------------------------------------------------------------------
# The per-process engine
# ---------------------------------------------------------------------------------------------
@dataclass
class BatchStats:
    """What happened while running one batch (for tests, logs and progress lines)."""

    rows: int = 0
    http_attempts: int = 0
    rate_limited: int = 0
    limiter_decreases: int = 0
    lowest_limit: float = 0.0
    final_limit: float = 0.0
    peak_in_flight: int = 0
    wall_s: float = 0.0
    errors: collections.Counter = field(default_factory=collections.Counter)


class Engine:
    """One AsyncOpenAI client + its event loop thread, per (process, EndpointSettings)."""

    def __init__(self, settings: EndpointSettings, api_key: str | None = None):
        self.settings = settings
        key = api_key or resolve_api_key(settings)
        self.redact = Redactor(key)
        self.learned_limit: float | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="taskseed-llm", daemon=True)
        self._thread.start()
        self.client = asyncio.run_coroutine_threadsafe(self._build_client(key or "no-key"), self.loop).result()

    async def _build_client(self, key: str):
        import httpx2
        import openai

        limits = httpx2.Limits(max_connections=max(100, self.settings.max_concurrency * 2),
                               max_keepalive_connections=max(100, self.settings.max_concurrency * 2))
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout_s,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(limits=limits, timeout=self.settings.timeout_s),
        )

    def __repr__(self) -> str:
        return f"Engine(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    # -- one request ------------------------------------------------------------------------
    def _body(self, req: dict) -> tuple[dict, dict | None]:
        messages = req.get("messages")
        if messages is None:
            messages = json.loads(req["messages_json"])
        response_format = req.get("response_format")
        if response_format is None and req.get("response_format_json"):
            response_format = json.loads(req["response_format_json"])
        body: dict[str, Any] = {"model": req.get("model") or self.settings.model, "messages": messages}
        for name in ("temperature", "max_tokens", "top_p", "seed"):
            value = req.get(name)
            if value is not None and value == value:  # skip None and NaN (pandas nulls)
                body[name] = int(value) if name in ("max_tokens", "seed") else float(value)
        if response_format and self.settings.structured_output:
            body["response_format"] = response_format
        return body, schema_of(response_format)

    async def _send(self, body: dict, request_id: str, attempt: int) -> tuple[str | None, str | None, int, int]:
        import httpx2

        response = await self.client.post(
            "/chat/completions", body=body, cast_to=httpx2.Response,
            options={"headers": {REQUEST_ID_HEADER: request_id, ATTEMPT_HEADER: str(attempt)}},
        )
        try:
            data = json.loads(response.content)
            choice = data["choices"][0]
            content = choice["message"].get("content")
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
            return content, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise InvalidResponse(f"unparsable completion body ({type(exc).__name__})") from None

    async def call_one(self, req: dict, limiter: AIMDLimiter, stats: BatchStats, rng: random.Random) -> dict:
        request_id = str(req.get("request_id") or "")
        result: dict[str, Any] = {
            "request_id": request_id, "status": STATUS_FAILED, "content": None, "parsed": None,
            "error_class": None, "error_detail": None, "attempts": 0, "latency_ms": None,
            "prompt_tokens": None, "completion_tokens": None, "finish_reason": None,
        }
        try:
            body, schema = self._body(req)
        except (ValueError, KeyError, TypeError) as exc:
            result.update(error_class="bad_request_row", error_detail=f"cannot build request: {type(exc).__name__}")
            return result
        settings = self.settings
        started: float | None = None
        attempts = 0
        while True:
            await limiter.acquire()
            attempts += 1
            stats.http_attempts += 1
            now = time.perf_counter()
            if started is None:
                started = now
            try:
                content, finish, p_tok, c_tok = await self._send(body, request_id, attempts)
            except asyncio.CancelledError:
                limiter.release()
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes data, never a crash
                limiter.release()
                failure = classify(exc)
                stats.errors[failure.error_class] += 1
                if failure.error_class == "rate_limited":
                    stats.rate_limited += 1
                    limiter.on_rate_limited()
                if failure.retryable and attempts <= settings.max_retries:
                    await asyncio.sleep(backoff_delay(attempts, settings.backoff_base_s,
                                                      settings.backoff_max_s, failure.retry_after_s, rng))
                    continue
                result.update(
                    error_class=failure.error_class,
                    error_detail=self.redact(f"{failure.detail} after {attempts} attempt(s)"),
                    attempts=attempts,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                )
                return result
            limiter.release()
            limiter.on_success()
            status, parsed, error_class, detail = parse_content(content, finish, schema)
            result.update(
                status=status, content=content, parsed=parsed, error_class=error_class,
                error_detail=self.redact(detail) if detail else None, attempts=attempts,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                prompt_tokens=p_tok, completion_tokens=c_tok, finish_reason=finish,
            )
            return result

    async def _safe_one(self, req: dict, limiter: AIMDLimiter, stats: BatchStats, rng: random.Random) -> dict:
        try:
            return await self.call_one(req, limiter, stats, rng)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not fail the partition
            return {"request_id": str(req.get("request_id") or ""), "status": STATUS_FAILED, "content": None,
                    "parsed": None, "error_class": "client_error", "error_detail": type(exc).__name__,
                    "attempts": 0, "latency_ms": None, "prompt_tokens": None, "completion_tokens": None,
                    "finish_reason": None}

    async def run_async(self, requests: Sequence[dict], concurrency: int) -> tuple[list[dict], BatchStats]:
        concurrency = max(self.settings.min_concurrency, int(concurrency))
        limiter = AIMDLimiter(concurrency, min_limit=self.settings.min_concurrency,
                              start=min(float(concurrency), self.learned_limit or float(concurrency)))
        stats = BatchStats(rows=len(requests))
        rng = random.Random()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._safe_one(r, limiter, stats, rng) for r in requests))
        stats.wall_s = time.perf_counter() - t0
        stats.limiter_decreases = limiter.decreases
        stats.lowest_limit = limiter.lowest_limit
        stats.final_limit = limiter.limit
        stats.peak_in_flight = limiter.peak_in_flight
        self.learned_limit = limiter.limit
        return list(results), stats

    def run(self, requests: Sequence[dict], concurrency: int) -> tuple[list[dict], BatchStats]:
        """Blocking: run a batch on the engine's loop thread."""
        future = asyncio.run_coroutine_threadsafe(self.run_async(requests, concurrency), self.loop)
        return future.result()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


_ENGINES: dict[tuple[EndpointSettings, str], Engine] = {}
_ENGINES_PID: int | None = None
_ENGINES_LOCK = threading.Lock()


def get_engine(settings: EndpointSettings, api_key: str | None = None) -> Engine:
    """The process-wide engine for these settings (and explicitly passed key; rebuilt after a
    fork). The cache is keyed by a digest of the key, so a rotated key builds a new client."""
    global _ENGINES_PID
    cache_key = (settings, hashlib.sha256(api_key.encode()).hexdigest() if api_key else "")
    with _ENGINES_LOCK:
        if _ENGINES_PID != os.getpid():
            _ENGINES.clear()
            _ENGINES_PID = os.getpid()
        engine = _ENGINES.get(cache_key)
        if engine is None:
            engine = _ENGINES[cache_key] = Engine(settings, api_key)
        return engine


def close_engines() -> None:
    """Close every client of this process (best effort; also run at interpreter exit)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values()) if _ENGINES_PID == os.getpid() else []
        _ENGINES.clear()
    for engine in engines:
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass


atexit.register(close_engines)


def call_batch(settings: EndpointSettings, requests: Iterable[dict], concurrency: int | None = None,
               api_key: str | None = None) -> tuple[list[dict], BatchStats]:
    """Send every request (up to `concurrency` in flight) and return one result per request,
    in input order, plus batch stats. Never raises for a bad row or a failing endpoint.

    `api_key` is for callers that received the key from the driver (Spark workers); otherwise
    it is resolved from `settings` when the process's client is first built.
    """
    rows = list(requests)
    if not rows:
        return [], BatchStats()
    return get_engine(settings, api_key).run(rows, concurrency or settings.max_concurrency)
