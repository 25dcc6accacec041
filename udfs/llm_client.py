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
  code / exception type (never message text, with one exception below), honour Retry-After,
  back off exponentially with jitter, and release their concurrency slot while sleeping.
- Requests in flight are bounded per server: an endpoint is one server (`base_url`) or several
  replicas of the same model (`EndpointSettings.replicas`), one client each, and
  `udfs.llm_router.Router` hands out slots: each replica's AIMD limiter halves (at most once per
  cooldown) on 429s (and on 5xx when there are other replicas) and creeps back up by ~1 per
  window of successes; a replica with repeated connection failures or timeouts is taken out, its
  failed requests are re-sent to another at once, and it is probed (`GET /models`) until it
  answers. One server behaves as before replicas existed.
- The API key is resolved when the client is built (env var, a name forwarded by the driver, or a
  Databricks secret scope), lives only inside the client, and is scrubbed from every error text
  this module produces (server error bodies included). `EndpointSettings` holds names, never the value.

Request body. Built from a request row by `build_body`: model, the rendered messages, the
sampling parameters, `response_format` per `EndpointSettings.structured_output`, and a per-sample
`seed` (`sampling_seed(request_id)`, unless the row carries one) that vLLM, SGLang, NIM and OpenAI
accept, so the K samples of one prompt are distinct, reproducible request bodies.
`structured_output` is `json_schema` (send the stage's schema; vLLM/NIM/SGLang enforce it),
`json_object` (send `{"type": "json_object"}`, which llama.cpp and many hosted servers accept,
and append the schema to the system message of the *body* — the rendered messages that enter
`request_id` are unchanged) or `none` (no `response_format`; the prompt alone asks for JSON).

Statuses: the client reports the *transport* outcome; whether a completion holds a usable item
is decided by the stages' parsers alone (one validation, in `udfs/parsing.py`).
- `ok`: the endpoint returned a completion with text — in `content`, or, when `content` is
  null/blank and the server stopped on its own, in the reasoning field. `error_class` is then
  None, or `truncated` (informational: `finish_reason=length`, the parser decides).
- `failed`: no usable completion. Transport and HTTP errors after retries (`rate_limited`,
  `http_<code>`, `timeout`, `connection`, `invalid_response`), an error object in a 2xx body
  (classified by its code like an HTTP status), the endpoint rejecting the structured-output
  request (`structured_output_unsupported`, never retried, `is_stage_fatal`), a request row that
  cannot be built (`bad_request_row`), and completions without text: `truncated` when the server
  stopped at the token limit (also with reasoning text but null content: it ran out while
  thinking), else `empty_content`.
- `parse_error`: written by versions before the split above (the client then validated JSON
  itself). Never produced now; ledgers that hold such rows keep them as terminal.

Result dict per request (the columns the Spark side and the ledger use):
    request_id, status, content (message.content exactly as sent, None if null), reasoning_content
    (message.reasoning_content, or message.reasoning on servers that name it so; None if absent),
    error_class, error_detail (for errors: the start of the server's message or body, redacted),
    attempts, latency_ms (first send to final answer, including backoff), prompt_tokens and
    completion_tokens (None when the server reported no usage: never 0 for "unknown"),
    finish_reason, sampling_seed (the body's `seed`), sent_at and completed_at (tz-aware UTC
    datetimes from this client's wall clock: first attempt sent, final outcome known; sent_at is
    None when nothing was sent).
Parse a row with `completion_text(content, reasoning_content, finish_reason)`: it picks the text
a parser should read, so a ledger row can be re-parsed without a new call.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import email.utils
import hashlib
import html
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from udfs.llm_router import Router

STATUS_OK, STATUS_FAILED = "ok", "failed"
STATUS_PARSE_ERROR = "parse_error"  # legacy: written by earlier versions, still terminal, never produced
REQUEST_ID_HEADER = "X-Taskseed-Request-Id"
ATTEMPT_HEADER = "X-Taskseed-Attempt"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 120.0
STRUCTURED_OUTPUT_MODES = ("json_schema", "json_object", "none")
ERROR_BODY_CHARS = 300  # how much of a server's error message/body error_detail keeps
STRUCTURED_OUTPUT_UNSUPPORTED = "structured_output_unsupported"


class KeyResolutionError(RuntimeError):
    """No API key could be found; the message names where we looked, never a value."""


@dataclass(frozen=True)
class EndpointSettings:
    """Where and how to call an OpenAI-compatible endpoint. Picklable; holds no secret.

    The API key is located by `api_key_env` (an environment variable *name*) or by a Databricks
    secret `secret_scope`/`secret_key`, and read only when a client is built.
    `require_key=False` lets keyless endpoints (the simulator, a local vLLM) work without one.
    `structured_output` is `json_schema` | `json_object` | `none` (legacy booleans are accepted:
    True → json_schema, False → none; see `build_body`).
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
    structured_output: str = "json_schema"
    require_key: bool = True
    min_concurrency: int = 1
    replicas: tuple = ()  # ((base_url, max_concurrency), ...) when the endpoint has several servers
    down_after_failures: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "structured_output", structured_output_mode(self.structured_output))
        object.__setattr__(self, "replicas", tuple((str(u), int(c)) for u, c in self.replicas))

    def replica_specs(self) -> list:
        """The servers of this endpoint (`udfs.llm_router.ReplicaSpec`): the replicas, else
        `base_url` with `max_concurrency`."""
        from udfs.llm_router import ReplicaSpec

        if self.replicas:
            return [ReplicaSpec(u, c) for u, c in self.replicas]
        return [ReplicaSpec(self.base_url, self.max_concurrency)]

    def forwarded_env_name(self) -> str:
        """Env var through which the driver hands a resolved key to Python workers."""
        if self.api_key_env:
            return self.api_key_env
        raw = f"{self.secret_scope}_{self.secret_key}".upper()
        return "TASKSEED_FWD_KEY_" + re.sub(r"[^A-Z0-9]", "_", raw)

    @classmethod
    def from_config(cls, endpoint: Any, base_url: str | None = None, **overrides: Any) -> "EndpointSettings":
        """From `jobs.config.EndpointConfig`; `base_url` overrides (e.g. a started simulator)."""
        replicas = tuple((r.base_url, r.max_concurrency or endpoint.max_concurrency)
                         for r in getattr(endpoint, "replicas", None) or ())
        values = dict(
            base_url=base_url or endpoint.base_url or (replicas[0][0] if replicas else None),
            replicas=() if base_url else replicas,
            down_after_failures=getattr(endpoint, "down_after_failures", 3),
            model=endpoint.model,
            api_key_env=endpoint.api_key_env,
            secret_scope=endpoint.secret_scope,
            secret_key=endpoint.secret_key,
            timeout_s=endpoint.timeout_s,
            max_concurrency=sum(c for _, c in replicas) if replicas and not base_url else endpoint.max_concurrency,
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
# Request bodies (pure)
# ---------------------------------------------------------------------------------------------
def structured_output_mode(value: Any) -> str:
    """`json_schema` | `json_object` | `none` from a mode name or the legacy boolean
    (True → json_schema, False → none). ValueError for anything else."""
    if value is True:
        return "json_schema"
    if value is False:
        return "none"
    if isinstance(value, str) and value.strip().lower() in STRUCTURED_OUTPUT_MODES:
        return value.strip().lower()
    raise ValueError(f"structured_output must be one of {', '.join(STRUCTURED_OUTPUT_MODES)} "
                     f"(or true/false), got {value!r}")


_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def sampling_seed(request_id: str) -> int:
    """The body's `seed` for a request: an int in [0, 2**31) derived from its request_id.

    The first 8 hex digits of the id (taskseed's ids are hex content hashes), masked to 31 bits
    so every server's integer type holds it; other ids are hashed first (SHA-256). In SQL:
    `conv(substr(request_id, 1, 8), 16, 10) % 2147483648`. Distinct samples of one prompt have
    distinct request_ids, hence distinct seeds; the same request always gets the same seed.
    """
    rid = str(request_id)
    head = rid[:8] if _HEX8.fullmatch(rid[:8]) else hashlib.sha256(rid.encode("utf-8")).hexdigest()[:8]
    return int(head, 16) & 0x7FFFFFFF


def schema_of(response_format: dict | None) -> dict | None:
    """The JSON schema inside an OpenAI `response_format` (None = no schema given)."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    return (response_format.get("json_schema") or {}).get("schema") or None


def schema_instruction(schema: dict) -> str:
    """What `json_object` mode appends to the system message: the schema the answer must follow."""
    return ("\n\nRespond with a single JSON object (no other text) that is valid against this JSON schema:\n"
            + json.dumps(schema, ensure_ascii=False, separators=(",", ":")))


def _with_schema_instruction(messages: list, schema: dict) -> list:
    suffix = schema_instruction(schema)
    out = list(messages)
    if out and isinstance(out[0], dict) and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0] = {**out[0], "content": out[0]["content"] + suffix}
    else:
        out.insert(0, {"role": "system", "content": suffix.lstrip()})
    return out


def build_body(req: dict, model: str, structured_output: str = "json_schema") -> dict:
    """The chat-completions body for one request row (pure).

    Row keys: `messages` (list) or `messages_json`; optional `response_format` (dict) or
    `response_format_json`, `model` (else the `model` argument), `temperature`, `top_p`, `max_tokens`, `seed`
    (None/NaN = absent). `seed` defaults to `sampling_seed(request_id)`. The response format
    is sent per `structured_output` (see the module docstring); the row's messages are never
    modified (json_object mode appends to a copy). Raises ValueError/KeyError/TypeError when the
    row cannot be turned into a body (the caller records `bad_request_row`).
    """
    messages = req.get("messages")
    if messages is None:
        messages = json.loads(req["messages_json"])
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    response_format = req.get("response_format")
    if response_format is None and req.get("response_format_json"):
        response_format = json.loads(req["response_format_json"])
    body: dict[str, Any] = {"model": req.get("model") or model, "messages": messages}
    for name in ("temperature", "top_p", "max_tokens", "seed"):
        value = req.get(name)
        if value is not None and value == value:  # skip None and NaN (pandas nulls)
            body[name] = int(value) if name in ("max_tokens", "seed") else float(value)
    if "seed" not in body:
        body["seed"] = sampling_seed(str(req.get("request_id") or ""))
    mode = structured_output_mode(structured_output)
    if response_format and mode == "json_schema":
        body["response_format"] = response_format
    elif response_format and mode == "json_object":
        body["response_format"] = {"type": "json_object"}
        schema = schema_of(response_format)
        if schema:
            body["messages"] = _with_schema_instruction(messages, schema)
    return body


# ---------------------------------------------------------------------------------------------
# Reading responses (pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """What a 2xx chat-completion body says. Token counts are None when not reported."""

    content: str | None
    reasoning_content: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class InvalidResponse(Exception):
    """The body of a 2xx response was not a chat completion (unparsable or incomplete).

    `reason` says what was wrong, `body` holds the body's start (uncut by redaction: `classify`
    redacts it before cutting it down for `error_detail`).
    """

    def __init__(self, reason: str, body: Any = None):
        self.reason = reason
        self.body = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        if isinstance(self.body, str):
            self.body = self.body[:4000]
        super().__init__(f"{reason}: {body_excerpt(self.body, 120)}" if self.body else reason)


class ErrorObject(Exception):
    """A 2xx body that is an error object (`{"object": "error", ...}` or `{"error": {...}}`).

    `status` is the HTTP-like code it carries (from `code`, or from a standard error `type`
    such as `invalid_request_error`), None when it names none.
    """

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# Standard error `type`/`code` names of OpenAI-, Anthropic- and vLLM-style error objects → status.
_ERROR_NAME_STATUS = {
    "invalid_request_error": 400, "badrequesterror": 400, "bad_request": 400, "bad_request_error": 400,
    "context_length_exceeded": 400, "invalid_request": 400,
    "authentication_error": 401, "authenticationerror": 401, "invalid_api_key": 401,
    "permission_error": 403, "permissiondeniederror": 403, "permission_denied": 403,
    "not_found_error": 404, "notfounderror": 404, "model_not_found": 404, "not_found": 404,
    "unprocessableentityerror": 422,
    "rate_limit_error": 429, "ratelimiterror": 429, "rate_limit_exceeded": 429, "too_many_requests": 429,
    "server_error": 500, "internal_server_error": 500, "internalservererror": 500, "api_error": 500,
    "service_unavailable": 503, "serviceunavailableerror": 503, "overloaded_error": 503, "overloaded": 503,
}


def _int_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.strip().isdigit() and 100 <= int(value.strip()) <= 599:
        return int(value.strip())
    return None


def error_object(data: Any) -> tuple[int | None, str] | None:
    """(status, message) when a decoded 2xx body is an error object instead of a completion, else None.

    Recognised: vLLM/SGLang `{"object": "error", "message", "type", "code"}`, OpenAI-style
    `{"error": {"message", "type", "code"}}` and `{"error": "text"}` (also as the one element
    of a list, as Google-style gateways send), in each case without `choices`. The status is the
    numeric `code` (int or digit string), else the one a standard `type`/`code` name implies
    (`invalid_request_error` → 400, `rate_limit_error` → 429, ...), else None.
    """
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or data.get("choices"):
        return None
    if data.get("object") == "error":
        err: Any = data
    elif "error" in data and data["error"]:
        err = data["error"]
    else:
        return None
    if not isinstance(err, dict):
        return None, str(err)
    return _error_fields(err, data)


def _error_fields(err: dict, outer: dict | None = None) -> tuple[int | None, str]:
    """(status, "type: message") of one error dict (the inside of `{"error": ...}` or a vLLM error)."""
    data = outer if outer is not None else err
    message = err.get("message") or err.get("detail") or err.get("msg") or ""
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False, default=str)
    status = _int_code(err.get("code")) or _int_code(err.get("status")) or _int_code(data.get("code"))
    if status is None:
        for name in (err.get("code"), err.get("type")):
            if isinstance(name, str) and name.strip().lower() in _ERROR_NAME_STATUS:
                status = _ERROR_NAME_STATUS[name.strip().lower()]
                break
    kind = err.get("type")
    text = f"{kind}: {message}" if isinstance(kind, str) and kind and message else (message or json.dumps(err)[:200])
    return status, text


def _text(value: Any) -> str | None:
    """A message field as text: strings as-is, lists of content parts joined, anything else None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text") if isinstance(p, dict) else p for p in value]
        parts = [p for p in parts if isinstance(p, str)]
        return "".join(parts) if parts else None
    return None


def _token_count(usage: Any, name: str, alias: str) -> int | None:
    """A usage count (`alias`: the Responses/Anthropic-style name some servers use instead)."""
    if not isinstance(usage, dict):
        return None
    value = usage.get(name)
    if value is None:
        value = usage.get(alias)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**31:
        return None  # also NaN and infinities
    return int(value)


def read_completion(raw: bytes | str) -> Completion:
    """Decode a 2xx chat-completion body.

    Raises `ErrorObject` for an error object (see `error_object`) and `InvalidResponse` for
    anything else that is not a completion (the message keeps the start of the body). The
    reasoning text is `message.reasoning_content` (vLLM, SGLang, DeepSeek), else
    `message.reasoning` (newer vLLM, OpenRouter, Ollama). Missing `usage` (or a missing/invalid
    count in it) is None, never 0.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidResponse(f"unparsable completion body ({type(exc).__name__})", raw) from None
    err = error_object(data)
    if err is not None:
        raise ErrorObject(*err)
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
        content = _text(message.get("content"))
        reasoning = _text(message.get("reasoning_content")) or _text(message.get("reasoning"))
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise InvalidResponse(f"not a chat completion ({type(exc).__name__})", raw) from None
    usage = data.get("usage")
    return Completion(content, reasoning, finish if isinstance(finish, str) else None,
                      _token_count(usage, "prompt_tokens", "input_tokens"),
                      _token_count(usage, "completion_tokens", "output_tokens"))


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def completion_text(content: str | None, reasoning_content: str | None = None,
                    finish_reason: str | None = None) -> str | None:
    """The text a stage parser should read from a result or ledger row (pure).

    `content` when it has non-blank text. Otherwise the reasoning text — servers with a
    reasoning parser (vLLM, SGLang) put the whole output there when the model never closed its
    reasoning block — unless the server stopped at the token limit (`finish_reason=length`):
    then the model ran out while thinking and there is no answer to take (None). None when there
    is no text at all. The row's `content` itself is never rewritten.
    """
    if not _blank(content):
        return content
    if finish_reason == "length" or _blank(reasoning_content):
        return None
    return reasoning_content


def completion_outcome(completion: Completion) -> tuple[str, str | None, str | None]:
    """(status, error_class, detail) of a 2xx completion (see the module docstring's statuses)."""
    truncated = completion.finish_reason == "length"
    if completion_text(completion.content, completion.reasoning_content, completion.finish_reason) is not None:
        return (STATUS_OK, "truncated", "finish_reason=length (output may be cut off)") if truncated else (STATUS_OK, None, None)
    if truncated:
        where = "reasoning only, no content" if not _blank(completion.reasoning_content) else "no text"
        return STATUS_FAILED, "truncated", f"finish_reason=length with {where}"
    return STATUS_FAILED, "empty_content", "completion had no text (content and reasoning empty)"


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]+>", re.S | re.I)


def body_excerpt(body: Any, limit: int = ERROR_BODY_CHARS, redact: Callable[[Any], str] | None = None) -> str:
    """The start of an error body as one line of at most `limit` characters (pure).

    JSON error objects give their message (with the error type); HTML pages (proxies' 502
    pages) give their visible text; anything else its text with whitespace collapsed. `redact`
    runs on the whole text *before* it is cut, so a secret at the cut is not left half-visible.
    """
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if not isinstance(body, str):
        err = error_object(body)
        if err is None and isinstance(body, dict) and any(k in body for k in ("message", "detail", "msg")):
            err = _error_fields(body)  # the SDK hands over the inside of {"error": {...}}
        body = err[1] if err is not None else json.dumps(body, ensure_ascii=False, default=str)
    else:
        stripped = body.strip()
        if stripped[:1] in "{[":
            try:
                return body_excerpt(json.loads(stripped), limit, redact)
            except ValueError:
                pass
        if "<" in stripped and re.search(r"<(?:!doctype|html|body|head|title|h1|p|center)\b", stripped, re.I):
            body = html.unescape(_TAGS.sub(" ", stripped))
    text = " ".join(body.split())
    if redact is not None:
        text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


# A structured-output rejection names the feature in its message: llama.cpp's 'response_format
# type must be one of "text" or "json_object"', vLLM/xgrammar's 'JSON schema ... not supported',
# a validation error pointing at `response_format`, guided-decoding backends.
_STRUCTURED_OUTPUT_WORDS = re.compile(
    r"response[_ ]format|json[_ -]?schema|json_object|guided[_ ](?:json|decoding|grammar|regex|choice)"
    r"|structured[_ -]outputs?|grammar|outlines|lm[-_]format[-_]enforcer", re.I)
_STRUCTURED_OUTPUT_STATUS = frozenset({400, 422, 500, 501})

# Classes after which every further request of the stage fails the same way: the runner stops.
_STAGE_FATAL = {
    STRUCTURED_OUTPUT_UNSUPPORTED: "the endpoint rejects the structured-output request (response_format); "
                                   "set endpoint.structured_output to json_object or none, then rerun with --retry-failed",
    "http_401": "the endpoint rejected the API key (HTTP 401): check endpoint.api_key_env / secret_scope",
    "http_403": "the endpoint refused access (HTTP 403): check the key's permissions for this model",
    "http_404": "the endpoint or model was not found (HTTP 404): check endpoint.base_url and endpoint.model",
}


def is_stage_fatal(error_class: str | None) -> bool:
    """True when a result of this class means every request of the stage will fail alike
    (structured output rejected, authentication, wrong URL/model): stop the stage, don't burn
    the rest of the requests on it."""
    return error_class in _STAGE_FATAL


def stage_fatal_reason(error_class: str | None, error_detail: str | None = None) -> str | None:
    """One line saying why the stage stopped and what to change (None if not stage-fatal)."""
    if error_class not in _STAGE_FATAL:
        return None
    return _STAGE_FATAL[error_class] + (f" — server said: {error_detail}" if error_detail else "")


def classify_status(code: int | None, message: str, *, structured: bool,
                    retry_after_s: float | None = None, source: str = "HTTP") -> Failure:
    """Failure for an HTTP status code, or for the code of an error object in a 2xx body.

    By code: 429 → `rate_limited`, other codes → `http_<code>`; retryable are 429, 5xx and
    408/409/425. One exception reads the message: when the request carried a `response_format`
    (`structured`) and a 400/422/500/501 names it (see `_STRUCTURED_OUTPUT_WORDS`), the class is
    `structured_output_unsupported`, never retried — resending cannot succeed. An error object
    without a recognisable code is `error_response`, not retried. `message` is kept in `detail`.
    """
    where = f"{source} {code}" if code is not None else source
    detail = f"{where}: {message}" if message else where
    if structured and (code in _STRUCTURED_OUTPUT_STATUS or code is None) and _STRUCTURED_OUTPUT_WORDS.search(message or ""):
        return Failure(STRUCTURED_OUTPUT_UNSUPPORTED, False, None, code, detail)
    if code is None:
        return Failure("error_response", False, None, None, detail)
    if code == 429:
        return Failure("rate_limited", True, retry_after_s, code, detail)
    return Failure(f"http_{code}", code >= 500 or code in RETRYABLE_STATUS, retry_after_s, code, detail)


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


def _status_error_body(exc: Any) -> Any:
    body = getattr(exc, "body", None)
    if body is None:
        try:
            body = exc.response.text
        except Exception:  # noqa: BLE001 - a closed response: no body to show
            body = None
    return body


def classify(exc: BaseException, structured: bool = False,
             redact: Callable[[Any], str] | None = None) -> Failure:
    """Map an exception to a Failure by status code and type (see `classify_status`); the start
    of the server's error body, redacted, goes into `detail`. `structured` = the request carried
    a `response_format`."""
    import httpx2
    import openai

    if isinstance(exc, openai.APIStatusError):
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        message = body_excerpt(_status_error_body(exc), ERROR_BODY_CHARS, redact)
        return classify_status(exc.status_code, message, structured=structured, retry_after_s=retry_after)
    if isinstance(exc, ErrorObject):
        message = redact(exc.message) if redact else exc.message
        failure = classify_status(exc.status, body_excerpt(message, ERROR_BODY_CHARS), structured=structured,
                                  source="error object in a 2xx body, code" if exc.status else "error object in a 2xx body")
        return failure
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
        excerpt = body_excerpt(exc.body, 120, redact)
        return Failure("invalid_response", True, None, None, f"{exc.reason}: {excerpt}" if excerpt else exc.reason)
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

    def capacity(self) -> int:
        """Requests allowed in flight now (the limit, at least min_limit)."""
        return self._capacity()

    def take(self) -> None:
        """Count one more request in flight without waiting (the router checked for room)."""
        self._take()

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
RESULT_KEYS = ("request_id", "status", "content", "reasoning_content", "error_class", "error_detail", "attempts",
               "latency_ms", "prompt_tokens", "completion_tokens", "finish_reason", "sampling_seed",
               "sent_at", "completed_at")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def empty_result(request_id: str) -> dict:
    """A `failed` result with every key of RESULT_KEYS (the engine fills it in)."""
    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result.update(request_id=request_id, status=STATUS_FAILED, attempts=0)
    return result


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
    failovers: int = 0  # requests re-sent to another replica after a transport failure on theirs
    replicas: dict = field(default_factory=dict)  # per replica base URL: udfs.llm_router.Router.stats()


class Engine:
    """AsyncOpenAI clients (one per replica of the endpoint) + their event loop thread, per
    (process, EndpointSettings). Requests are routed over the replicas by `udfs.llm_router.Router`."""

    def __init__(self, settings: EndpointSettings, api_key: str | None = None):
        self.settings = settings
        self.replicas = settings.replica_specs()
        key = api_key or resolve_api_key(settings)
        self.redact = Redactor(key)
        self.learned_limits: list[float | None] = [None] * len(self.replicas)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="taskseed-llm", daemon=True)
        self._thread.start()
        self.clients = [asyncio.run_coroutine_threadsafe(self._build_client(key or "no-key", spec.base_url,
                                                                            spec.max_concurrency), self.loop).result()
                        for spec in self.replicas]
        self.client = self.clients[0]

    @property
    def learned_limit(self) -> float | None:
        """The first replica's learned AIMD limit (the single-server engine's)."""
        return self.learned_limits[0]

    @learned_limit.setter
    def learned_limit(self, value: float | None) -> None:
        self.learned_limits[0] = value

    async def _build_client(self, key: str, base_url: str | None = None, concurrency: int | None = None):
        import httpx2
        import openai

        pool = max(100, (concurrency or self.settings.max_concurrency) * 2)
        limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url or self.settings.base_url,
            timeout=self.settings.timeout_s,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(limits=limits, timeout=self.settings.timeout_s),
        )

    def __repr__(self) -> str:
        return (f"Engine(base_url={self.settings.base_url!r}, model={self.settings.model!r}, "
                f"replicas={len(self.replicas)})")

    # -- one request ------------------------------------------------------------------------
    async def _send(self, body: dict, request_id: str, attempt: int, replica: int = 0) -> Completion:
        import httpx2

        response = await self.clients[replica].post(
            "/chat/completions", body=body, cast_to=httpx2.Response,
            options={"headers": {REQUEST_ID_HEADER: request_id, ATTEMPT_HEADER: str(attempt)}},
        )
        return read_completion(response.content)

    async def _send_to(self, replica: int, body: dict, request_id: str, attempt: int) -> Completion:
        # one server: the three-argument call (tests replace `_send` with such a function)
        if len(self.clients) == 1:
            return await self._send(body, request_id, attempt)
        return await self._send(body, request_id, attempt, replica=replica)

    async def probe(self, replica: int) -> bool:
        """Whether a replica answers `GET /models` (any HTTP answer below 500 counts: a gateway
        without a model listing answers 404 and is up)."""
        import httpx2
        import openai

        try:
            await asyncio.wait_for(self.clients[replica].get("/models", cast_to=httpx2.Response),
                                   min(10.0, self.settings.timeout_s))
            return True
        except openai.APIStatusError as exc:
            return exc.status_code < 500
        except Exception:  # noqa: BLE001 - refused, reset, timed out: still down
            return False

    async def call_one(self, req: dict, router: "Router", stats: BatchStats, rng: random.Random) -> dict:
        request_id = str(req.get("request_id") or "")
        result = empty_result(request_id)
        try:
            body = build_body(req, self.settings.model, self.settings.structured_output)
        except (ValueError, KeyError, TypeError) as exc:
            result.update(error_class="bad_request_row", error_detail=f"cannot build request: {type(exc).__name__}",
                          completed_at=_utcnow())
            return result
        result["sampling_seed"] = body.get("seed")
        structured = "response_format" in body
        settings = self.settings
        started: float | None = None
        attempts = 0
        retries = 0  # attempts that count against max_retries (failovers to another replica do not)
        failovers = 0
        avoid: int | None = None
        while True:
            replica = await router.acquire(avoid)
            attempts += 1
            stats.http_attempts += 1
            now = time.perf_counter()
            if started is None:
                started = now
                result["sent_at"] = _utcnow()
            try:
                completion = await self._send_to(replica.index, body, request_id, attempts)
            except asyncio.CancelledError:
                router.release(replica)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes data, never a crash
                failure = classify(exc, structured=structured, redact=self.redact)
                stats.errors[failure.error_class] += 1
                if failure.error_class in ("connection", "timeout"):
                    router.on_transport_failure(replica)
                elif failure.error_class == "rate_limited" or (failure.status_code or 0) >= 500:
                    router.on_overloaded(replica, failure.error_class == "rate_limited")
                else:
                    router.on_answered_error(replica)
                router.release(replica)
                if failure.error_class == "rate_limited":
                    stats.rate_limited += 1
                avoid = replica.index
                if (failure.error_class in ("connection", "timeout") and router.others_up(replica)
                        and failovers < 2 * len(router.replicas)):
                    failovers += 1  # its server is failing: send it to another one now, not a retry
                    stats.failovers += 1
                    continue
                retries += 1
                if failure.retryable and retries <= settings.max_retries:
                    await asyncio.sleep(backoff_delay(retries, settings.backoff_base_s,
                                                      settings.backoff_max_s, failure.retry_after_s, rng))
                    continue
                result.update(
                    error_class=failure.error_class,
                    error_detail=self.redact(f"{failure.detail} (after {attempts} attempt(s))"),
                    attempts=attempts,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    completed_at=_utcnow(),
                )
                return result
            router.on_success(replica)
            router.release(replica)
            status, error_class, detail = completion_outcome(completion)
            if status == STATUS_FAILED:
                stats.errors[error_class] += 1
            result.update(
                status=status, content=completion.content, reasoning_content=completion.reasoning_content,
                error_class=error_class, error_detail=detail, attempts=attempts,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                finish_reason=completion.finish_reason, completed_at=_utcnow(),
            )
            return result

    async def _safe_one(self, req: dict, router: "Router", stats: BatchStats, rng: random.Random) -> dict:
        try:
            return await self.call_one(req, router, stats, rng)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not fail the partition
            result = empty_result(str(req.get("request_id") or ""))
            result.update(error_class="client_error", error_detail=type(exc).__name__, completed_at=_utcnow())
            return result

    def _router(self, concurrency: int) -> tuple[int, "Router"]:
        """(window, Router) for one batch or stream: `concurrency` (at least `min_concurrency`)
        split over the replicas (`udfs.llm_router.replica_windows`), each replica's AIMD limiter
        starting from the limit the previous batch ended at (what sustained 429s taught it)."""
        from udfs.llm_router import Router

        concurrency = max(self.settings.min_concurrency, int(concurrency))

        def limiter(index: int, window: int) -> AIMDLimiter:
            window = max(self.settings.min_concurrency, window)
            learned = self.learned_limits[index]
            return AIMDLimiter(window, min_limit=self.settings.min_concurrency,
                               start=min(float(window), learned or float(window)))

        router = Router.build(self.replicas, concurrency, limiter,
                              down_after=self.settings.down_after_failures, probe=self.probe)
        return sum(r.window for r in router.replicas), router

    def _learn(self, router: "Router", stats: BatchStats) -> None:
        """Copy the router's history into `stats` and keep each replica's final limit for the next batch."""
        limiters = [r.limiter for r in router.replicas]
        stats.limiter_decreases = sum(lim.decreases for lim in limiters)
        stats.lowest_limit = sum(lim.lowest_limit for lim in limiters)
        stats.final_limit = sum(lim.limit for lim in limiters)
        stats.peak_in_flight = router.peak_in_flight
        stats.replicas = router.stats()
        for r in router.replicas:
            self.learned_limits[r.index] = r.limiter.limit
        router.close()

    async def run_async(self, requests: Sequence[dict], concurrency: int) -> tuple[list[dict], BatchStats]:
        concurrency, router = self._router(concurrency)
        stats = BatchStats(rows=len(requests))
        rng = random.Random()
        t0 = time.perf_counter()
        try:
            results = await asyncio.gather(*(self._safe_one(r, router, stats, rng) for r in requests))
        finally:
            stats.wall_s = time.perf_counter() - t0
            self._learn(router, stats)
        return list(results), stats

    def run(self, requests: Sequence[dict], concurrency: int) -> tuple[list[dict], BatchStats]:
        """Blocking: run a batch on the engine's loop thread."""
        future = asyncio.run_coroutine_threadsafe(self.run_async(requests, concurrency), self.loop)
        return future.result()

    def stream(self, requests: Iterable[dict], concurrency: int, *, stop: Callable[[], bool] | None = None,
               tick_s: float = 0.25, stats: BatchStats | None = None) -> Iterator[list[tuple[dict, dict]]]:
        """Send `requests` with a constant in-flight window and yield results as they complete.

        Unlike `run`, there is no batch barrier: a new request starts as soon as one finishes, so
        a slow request holds one slot, never the others. The window is `concurrency` split over
        the endpoint's replicas (`udfs.llm_router.replica_windows`; one server: `concurrency`), and
        the router keeps each replica's part full (with several replicas, max(replicas, window/8)
        more requests wait in the router, so a freed slot is refilled on the event loop at once).
        The input is pulled lazily (at most that many requests are taken from the iterator ahead
        of their completion), which lets a Spark task stream a partition of any size.

        Yields lists of `(request, result)` pairs (the request dict as given, the result dict of
        `RESULT_KEYS`), in completion order; an empty list every `tick_s` seconds in which
        nothing completed, so the caller can act on time (flush a spool file). `stop()` is
        polled before each new request is taken: once it returns true no further request is
        sent, the ones in flight are drained (yielded) and the stream ends; requests never
        taken stay in the iterator. Every request taken yields exactly one result (the engine
        never raises for a row, and a request that failed on a dead replica is retried on another
        inside its one result); an exception from the iterator or from `stop` propagates after
        nothing else is sent (in-flight requests are cancelled).
        `stats`, if given, is filled in as the stream runs (rows = results yielded).
        """
        router_box: list = []
        window_box: list = []

        async def make() -> None:  # the router's futures and probes belong to the engine's loop
            window, router = self._router(concurrency)
            window_box.append(window)
            router_box.append(router)

        asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        router, window = router_box[0], window_box[0]
        if len(router.replicas) > 1:
            # a few requests waiting in the router: a freed slot is refilled on the event loop at
            # once, not after a round trip through this thread (which a loaded machine delays)
            window += max(len(router.replicas), window // 8)
        stats = stats if stats is not None else BatchStats()
        rng = random.Random()
        source = iter(requests)
        in_flight: dict[concurrent.futures.Future, dict] = {}
        exhausted = False
        t0 = time.perf_counter()
        try:
            while True:
                while not exhausted and len(in_flight) < window and not (stop is not None and stop()):
                    try:
                        req = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    future = asyncio.run_coroutine_threadsafe(self._safe_one(req, router, stats, rng), self.loop)
                    in_flight[future] = req
                if not in_flight:
                    return
                done, _ = concurrent.futures.wait(list(in_flight), timeout=tick_s,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
                batch = [(in_flight.pop(f), f.result()) for f in done]
                stats.rows += len(batch)
                yield batch
                if stop is not None and not exhausted and stop():
                    exhausted = True  # drain: send nothing more, yield what is in flight
        finally:
            for future in in_flight:  # only when the consumer stopped early or raised
                future.cancel()
            stats.wall_s = time.perf_counter() - t0

            async def learn() -> None:
                self._learn(router, stats)

            asyncio.run_coroutine_threadsafe(learn(), self.loop).result()

    def close(self) -> None:
        try:
            for client in self.clients:
                asyncio.run_coroutine_threadsafe(client.close(), self.loop).result(10)
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


def stream_requests(settings: EndpointSettings, requests: Iterable[dict], concurrency: int | None = None,
                    api_key: str | None = None, *, stop: Callable[[], bool] | None = None,
                    tick_s: float = 0.25, stats: BatchStats | None = None) -> Iterator[list[tuple[dict, dict]]]:
    """`Engine.stream` on this process's engine: results as they complete, a constant window of
    `concurrency` requests in flight (default `settings.max_concurrency`), no batch barrier."""
    return get_engine(settings, api_key).stream(requests, concurrency or settings.max_concurrency,
                                                stop=stop, tick_s=tick_s, stats=stats)


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
