"""Sentence embeddings from an OpenAI-compatible `POST /v1/embeddings` endpoint (vLLM, NVIDIA NIM,
Hugging Face TEI, Ollama, Databricks Model Serving, OpenAI; the simulator's in
simulator/embeddings.py): texts → L2-normalized float32 rows, like `udfs.embeddings.Embedder`.

It reuses the chat engine's pieces by import (udfs/llm_client.py), so an embeddings call retries,
backs off and reports errors exactly as a chat call does: the `openai` AsyncOpenAI client with
`max_retries=0` (retries are ours), `client.post("/embeddings", cast_to=httpx2.Response)`,
failures classified by status code and exception type (`classify`: 429 → `rate_limited`, 5xx,
timeouts and dropped connections retried with exponential backoff and jitter honouring
Retry-After, `backoff_delay`), an AIMD window of requests in flight (`AIMDLimiter`: halves on
sustained 429s), the API key resolved once (`resolve_api_key`: env var, a driver-forwarded name,
or a Databricks secret scope) and scrubbed from every error text (`Redactor`).

Shapes and rules:
- `EmbeddingsClient.embed(texts)` → (len(texts), dim) float32, rows in input order, each row
  divided by its L2 norm (servers differ: TEI and OpenAI normalize, vLLM depends on the model's
  pooler; a unit row makes the dot product the cosine, as the local model's). A None, empty or
  whitespace-only text is not sent (OpenAI and TEI reject empty input) and embeds as the zero
  row: similarity 0 to everything, so it never matches (a call of blank texts only asks the
  endpoint once for the dimension, with the text ".").
- Texts go `batch_size` per request (the `input` array), up to `max_concurrency` requests in
  flight; `progress(texts_done)` is called as batches complete.
- Nothing silent: a response whose `data` does not hold exactly one finite vector per input
  (by `index`), or whose vectors differ in length, is `invalid_response` (retried like a
  transport error); a batch that still fails after `max_retries` raises `EmbeddingsError` naming
  the error class and the server's message (redacted) — the caller's Spark task fails rather than
  dropping rows. `EmbeddingsStats` counts requests, attempts, texts sent and errors by class.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from udfs.llm_client import (
    AIMDLimiter,
    EndpointSettings,
    ErrorObject,
    InvalidResponse,
    Redactor,
    backoff_delay,
    classify,
    error_object,
    resolve_api_key,
)


def embeddings_settings(ep) -> EndpointSettings:
    """The client's `EndpointSettings` of an embeddings server config (`jobs.config.EmbeddingsEndpointConfig`:
    base_url, model, the key source, timeout, concurrency, retries); a key is required only when a
    source is named. Used by the paraphrase filter's cache and by preflight."""
    return EndpointSettings(base_url=ep.base_url, model=ep.model, api_key_env=ep.api_key_env,
                            secret_scope=ep.secret_scope, secret_key=ep.secret_key, timeout_s=ep.timeout_s,
                            max_concurrency=ep.max_concurrency, max_retries=ep.max_retries,
                            backoff_base_s=ep.backoff_base_s, backoff_max_s=ep.backoff_max_s,
                            structured_output="none", require_key=bool(ep.api_key_env or ep.secret_scope))


class EmbeddingsError(RuntimeError):
    """A batch of texts could not be embedded after every retry (message redacted)."""


@dataclass
class EmbeddingsStats:
    """What one `embed` call did (for tests, progress lines and the bench)."""

    texts: int = 0           # texts sent (blank texts are not)
    requests: int = 0        # batches
    http_attempts: int = 0   # HTTP requests, retries included
    rate_limited: int = 0
    wall_s: float = 0.0
    errors: collections.Counter = field(default_factory=collections.Counter)


def read_embeddings(raw: bytes | str, expected: int) -> np.ndarray:
    """(expected, dim) float32 from an embeddings response body, rows ordered by `index`.
    ErrorObject for an error object in a 2xx body; InvalidResponse when the body is not JSON or
    does not hold exactly `expected` finite vectors of one length."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        raise InvalidResponse("body is not JSON", raw) from None
    err = error_object(data)
    if err is not None:
        raise ErrorObject(*err)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else "no"
        raise InvalidResponse(f"expected {expected} embeddings, got {got}", raw)
    rows: list = [None] * expected
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
            raise InvalidResponse(f"bad or repeated embedding index {index!r}", raw)
        if not isinstance(vector, list) or not vector:
            raise InvalidResponse("an embedding is not a list of floats (request encoding_format float)", raw)
        rows[index] = vector
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidResponse("embeddings differ in length or hold non-numbers", raw) from None
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise InvalidResponse("embeddings differ in length or hold non-finite numbers", raw)
    return matrix


def normalized(matrix: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class EmbeddingsClient:
    """One AsyncOpenAI client and its event-loop thread for one embeddings endpoint; build it with
    `EmbeddingsClient.get(settings, batch_size, api_key)` (once per Python worker)."""

    _cache: dict[tuple, "EmbeddingsClient"] = {}
    _lock = threading.Lock()

    def __init__(self, settings: EndpointSettings, batch_size: int = 64, api_key: str | None = None):
        self.settings, self.batch_size = settings, max(1, int(batch_size))
        self.dim: int | None = None  # learned from the first answer
        key = api_key or resolve_api_key(settings)
        self.redact = Redactor(key)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="taskseed-embed", daemon=True)
        self._thread.start()
        self.client = asyncio.run_coroutine_threadsafe(self._build_client(key or "no-key"), self.loop).result()

    @classmethod
    def get(cls, settings: EndpointSettings, batch_size: int = 64, api_key: str | None = None) -> "EmbeddingsClient":
        import hashlib

        cache_key = (settings, batch_size, hashlib.sha256(api_key.encode()).hexdigest() if api_key else "")
        with cls._lock:
            if cache_key not in cls._cache:
                cls._cache[cache_key] = EmbeddingsClient(settings, batch_size, api_key)
            return cls._cache[cache_key]

    async def _build_client(self, key: str):
        import httpx2
        import openai

        limits = httpx2.Limits(max_connections=max(16, self.settings.max_concurrency * 2),
                               max_keepalive_connections=max(16, self.settings.max_concurrency * 2))
        return openai.AsyncOpenAI(api_key=key, base_url=self.settings.base_url, timeout=self.settings.timeout_s,
                                  max_retries=0,
                                  http_client=openai.DefaultAioHttpClient(limits=limits, timeout=self.settings.timeout_s))

    async def _one(self, texts: list[str], limiter: AIMDLimiter, stats: EmbeddingsStats, rng: random.Random) -> np.ndarray:
        import httpx2

        body = {"model": self.settings.model, "input": texts, "encoding_format": "float"}
        attempts = 0
        while True:
            await limiter.acquire()
            attempts += 1
            stats.http_attempts += 1
            try:
                response = await self.client.post("/embeddings", body=body, cast_to=httpx2.Response)
                matrix = read_embeddings(response.content, len(texts))
            except asyncio.CancelledError:
                limiter.release()
                raise
            except Exception as exc:  # noqa: BLE001 - classified below; the last failure is raised
                limiter.release()
                failure = classify(exc, structured=False, redact=self.redact)
                stats.errors[failure.error_class] += 1
                if failure.error_class == "rate_limited":
                    stats.rate_limited += 1
                    limiter.on_rate_limited()
                if failure.retryable and attempts <= self.settings.max_retries:
                    await asyncio.sleep(backoff_delay(attempts, self.settings.backoff_base_s,
                                                      self.settings.backoff_max_s, failure.retry_after_s, rng))
                    continue
                raise EmbeddingsError(self.redact(
                    f"embeddings endpoint {self.settings.base_url} model {self.settings.model}: "
                    f"{failure.error_class}: {failure.detail} (after {attempts} attempt(s))")) from None
            limiter.release()
            limiter.on_success()
            return matrix

    async def _embed(self, texts: list[str], progress: Callable[[int], None] | None,
                     stats: EmbeddingsStats) -> list[np.ndarray]:
        limiter = AIMDLimiter(self.settings.max_concurrency, min_limit=self.settings.min_concurrency)
        rng = random.Random()
        done = 0

        async def batch(chunk: list[str]) -> np.ndarray:
            nonlocal done
            result = await self._one(chunk, limiter, stats, rng)
            done += len(chunk)
            if progress is not None:
                progress(done)
            return result

        chunks = [texts[i:i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        stats.requests += len(chunks)
        tasks = [asyncio.ensure_future(batch(c)) for c in chunks]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    def embed(self, texts: Sequence[str | None], progress: Callable[[int], None] | None = None,
              stats: EmbeddingsStats | None = None) -> np.ndarray:
        """(len(texts), dim) float32 unit rows (see the module docstring); EmbeddingsError when a
        batch fails for good."""
        stats = stats if stats is not None else EmbeddingsStats()
        started = time.perf_counter()
        sent = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        if not sent:  # the zero rows still need the endpoint's dimension: learn it once
            if self.dim is None:
                self.embed(["."], stats=stats)
            stats.wall_s = time.perf_counter() - started
            return np.zeros((len(texts), self.dim), dtype=np.float32)
        stats.texts += len(sent)
        parts = asyncio.run_coroutine_threadsafe(
            self._embed([texts[i] for i in sent], progress, stats), self.loop).result()
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise EmbeddingsError(f"embeddings endpoint {self.settings.base_url} returned vectors of "
                                  f"different lengths {sorted(dims)} in one call")
        vectors = normalized(np.concatenate(parts))
        self.dim = vectors.shape[1]
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[sent] = vectors
        stats.wall_s = time.perf_counter() - started
        return out

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def expected_rate(concurrency: int, latency_s: float, batch_size: int) -> float:
    """Texts/s an endpoint of `concurrency` slots and `latency_s` per request can serve at most:
    C / L requests per second × `batch_size` texts each (the bench's yardstick)."""
    return concurrency / latency_s * batch_size if latency_s > 0 else math.inf
