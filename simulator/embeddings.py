"""The simulator's `POST /v1/embeddings` (OpenAI-compatible, as vLLM, NIM, TEI, Ollama and
Databricks Model Serving serve it). Not a model: deterministic vectors for pipeline testing.

`sim_embedding(text)` is a pure function of the text: the hashed features of its lower-cased word
unigrams and word-boundary character trigrams (feature hashing with a sign bit, blake2b), L2
normalized, `SIM_EMBEDDING_DIM` floats. Texts sharing most words and spellings (a reworded
question) are near (cosine typically > 0.6), unrelated texts are near 0; the empty text is the zero
vector (OpenAI returns a vector for "" too). Same text, same vector, on every server and run.

`add_embeddings_route(app, settings, state)` registers the route on the simulator's aiohttp app:
- body `{"model": str, "input": str | [str, ...], "encoding_format": "float" (default) | "base64"}`;
- a `model` other than `SIM_EMBEDDING_MODEL` (or the chat model, which some servers also embed
  with) → 404 `model_not_found`, as vLLM answers; a non-list/non-string input → 400;
- the same latency (`latency_ms`, `latency_dist`; one draw per request, whatever its size) and its
  own concurrency cap of `max_concurrency` requests being processed as the chat route; the same
  API-key check; injected 429/500/503 faults of `fault_rate`/`fault_rates` (other kinds answer
  normally: they are chat-shaped);
- response `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
  "model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}`;
- counters in `/admin/stats`: `embedding_requests` (HTTP requests) and `embedded_texts` (texts in
  answered requests): what a test counts to prove a cache embedded nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct

from simulator.settings import SimSettings, uniform01

SIM_EMBEDDING_MODEL = "taskseed-sim-embed"
SIM_EMBEDDING_DIM = 384
_WORD = re.compile(r"\w+", re.UNICODE)


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    grams = [f"w:{w}" for w in words]
    for w in words:
        padded = f"<{w}>"
        grams.extend(f"c:{padded[i:i + 3]}" for i in range(max(1, len(padded) - 2)))
    return grams


def sim_embedding(text: str | None, dim: int = SIM_EMBEDDING_DIM) -> list[float]:
    """The simulator's vector of `text` (see the module docstring): `dim` floats, unit L2 norm, or
    all zeros for a text without word characters."""
    vec = [0.0] * dim
    for feature in _features(text or ""):
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        weight = 2.0 if feature.startswith("w:") else 1.0
        vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm > 0 else vec


def add_embeddings_route(app, settings: SimSettings, state, label_headers: dict, latency_s, expected_auth) -> None:
    """Register `POST /v1/embeddings` on `app` (see the module docstring). `latency_s(settings,
    key, n)` is the server's latency draw, `expected_auth` the required Authorization header or
    None, `state` the server's SimulatorState (counters `embedding_requests`, `embedded_texts`)."""
    from aiohttp import web

    semaphore = asyncio.Semaphore(settings.max_concurrency)
    faults = [(kind, rate) for kind, rate in settings.kind_rates() if kind in ("429", "500", "503")]
    seen: dict[str, int] = {}

    def error(status: int, message: str, kind: str, headers: dict | None = None):
        body = {"error": {"message": message, "type": kind, "code": status}}
        return web.json_response(body, status=status, headers={**label_headers, **(headers or {})})

    async def embeddings(request: web.Request):
        raw = await request.read()
        state.embedding_requests += 1
        if expected_auth and request.headers.get("Authorization") != expected_auth:
            return error(401, "invalid API key", "authentication_error")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "request body is not a JSON object", "invalid_request_error")
        model = body.get("model")
        if model not in (SIM_EMBEDDING_MODEL, settings.model):
            return error(404, f"The model `{model}` does not exist (simulated).", "model_not_found")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return error(400, "input must be a string or a non-empty array of strings", "invalid_request_error")
        key = hashlib.blake2b(raw, digest_size=12).hexdigest()
        n = seen[key] = seen.get(key, 0) + 1
        u, acc = uniform01(settings.seed, "embed-fault", key, n), 0.0
        for kind, rate in faults:
            acc += rate
            if u < acc:
                return error(int(kind), "simulated server error" if kind != "429" else "too many requests (simulated)",
                             "server_error" if kind != "429" else "rate_limit_error",
                             {"Retry-After": f"{settings.retry_after_s:g}"} if kind == "429" else None)
        async with semaphore:
            await asyncio.sleep(latency_s(settings, key, n))
        vectors = [sim_embedding(t) for t in texts]
        as_base64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if as_base64 else v}
                for i, v in enumerate(vectors)]
        tokens = sum(len(_WORD.findall(t)) + 2 for t in texts)
        state.embedded_texts += len(texts)
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                                 headers=label_headers)

    app.router.add_post("/v1/embeddings", embeddings)
