"""The OpenAI Batch API on the simulator (issue 27's online path): `/v1/files` and `/v1/batches`,
answered with the same code that plays `vllm run-batch` over files (simulator/batch_files.py
`answer_line`), so a batch answer equals the online one for the same request.

Routes (shapes of https://platform.openai.com/docs/api-reference/files and .../batch):
- `POST /v1/files` (multipart `file`, `purpose`), `GET /v1/files[?purpose=]`, `GET /v1/files/{id}`,
  `GET /v1/files/{id}/content`;
- `POST /v1/batches` (`input_file_id`, `endpoint` = /v1/chat/completions, `completion_window`,
  `metadata`), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/batches[?limit=&after=]`
  (newest first);
- `GET /admin/batches`: every input line ever submitted, per custom_id, with the batches it went in
  (what the exactly-once tests count), and each batch's status.

A batch's life is driven by time since its creation, in units of `SimSettings.batch_seconds` (T):
`validating` for 0.1·T (an input file with a line that is not a `/v1/chat/completions` request
with a custom_id, or a custom_id twice, makes it `failed` with `errors`), `in_progress` until 0.9·T
(`request_counts.completed` grows linearly), `finalizing` until T, then `completed` with an
`output_file_id` and, when some lines failed, an `error_file_id` (lines chosen by
`batch_error_rate`, seeded per custom_id). A batch expires when its `completion_window`
(`<n>s|m|h`; the API's only value is `24h`) is shorter than T, or when chosen by
`batch_expire_rate` (seeded per input content and how many batches were made from that content, so
a resubmission can succeed; it then expires at 0.5·T): requests done by then are
in its output file, the rest in its error file with code `batch_expired`. `cancel` makes it
`cancelling` and, 0.05·T later, `cancelled` the same way (`batch_cancelled`). Same seed, same
outcomes; only the clock is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulator.batch_files import answer_line
from simulator.settings import SimSettings, uniform01

CHAT_URL = "/v1/chat/completions"
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def window_seconds(window: str) -> float | None:
    """Seconds of a completion window like `24h`, `30m`, `5s`; None when not of that form."""
    match = _WINDOW.match(str(window))
    return float(match.group(1)) * _UNIT_S[match.group(2)] if match else None


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def public(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass
class SimBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict | None
    created: float  # server clock (time.time())
    requests: list[dict]  # decoded input lines (empty when the file is invalid)
    invalid: list[dict]  # errors of an invalid input file
    expire_at: float | None  # fraction of T at which it expires, None = it completes
    cancel_at: float | None = None  # fraction of T when cancel was asked
    output_file_id: str | None = None
    error_file_id: str | None = None
    final: str | None = None  # status once terminal
    final_at: float | None = None
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})


class BatchAPIState:
    """Files, batches and the per-custom_id submission counters of one simulator."""

    def __init__(self) -> None:
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self.submitted: Counter[str] = Counter()  # custom_id -> lines submitted in batches
        self.batches_of: dict[str, list[str]] = {}  # custom_id -> batch ids it was submitted in
        self.planted: Counter[str] = Counter()
        self.contents: Counter[str] = Counter()  # input file content hash -> batches created from it

    def snapshot(self) -> dict:
        return {"files": len(self.files), "batches": {b.id: b.final or "live" for b in self.batches.values()},
                "submitted": dict(self.submitted), "batches_of": {k: list(v) for k, v in self.batches_of.items()}}


def _status(batch: SimBatch, settings: SimSettings, now: float) -> str:
    """The batch's status at `now` (before any terminal state is materialised)."""
    t = max(settings.batch_seconds, 1e-6)
    frac = (now - batch.created) / t
    if batch.cancel_at is not None:
        return "cancelled" if frac >= batch.cancel_at + 0.05 else "cancelling"
    if frac < 0.1:
        return "validating"
    if batch.invalid:
        return "failed"
    if batch.expire_at is not None and frac >= batch.expire_at:
        return "expired"
    if frac < 0.9:
        return "in_progress"
    return "finalizing" if frac < 1.0 else "completed"


def _done_share(frac: float) -> float:
    """Share of a batch's requests done at `frac` of T (linear over its in_progress time)."""
    return min(1.0, max(0.0, (frac - 0.1) / 0.8))


def add_batch_routes(app, settings: SimSettings, state, label_headers: dict, expected_auth: str | None,
                     heldout: list[dict] | None, known: dict[str, str] | None) -> None:
    """Mount the Files and Batches routes on the simulator's aiohttp app; `state.batch_api` (a
    BatchAPIState) holds what they create."""
    from aiohttp import web

    def error(status: int, message: str, kind: str = "invalid_request_error"):
        return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status,
                                 headers=label_headers)

    def denied(request) -> Any:
        """An error response for a request the server refuses, else None; a killed server drops it."""
        if state.killed:
            request.transport.abort()
            raise asyncio.CancelledError()
        if expected_auth and request.headers.get("Authorization") != expected_auth:
            return error(401, "invalid API key", "authentication_error")
        return None

    def api() -> BatchAPIState:
        return state.batch_api

    def new_id(prefix: str, table: dict) -> str:
        return f"{prefix}-sim-{len(table) + 1:06d}"

    def finish(batch: SimBatch, status: str, now: float) -> None:
        """Materialise a terminal status: output and error files, final counts."""
        batch.final, batch.final_at = status, now
        if status == "failed":
            batch.counts = {"total": 0, "completed": 0, "failed": 0}
            return
        frac = {"completed": 1.0, "expired": batch.expire_at or 0.0,
                "cancelled": batch.cancel_at or 0.0}[status]
        share = 1.0 if status == "completed" else _done_share(frac)
        out, err, counts = [], [], Counter()
        for number, request in enumerate(batch.requests, 1):
            cid = request["custom_id"]
            if status != "completed" and uniform01(settings.seed, "batch_done", cid) >= share:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                err.append({"id": f"batch_req_{number}", "custom_id": cid, "response": None,
                            "error": {"code": code, "message": f"this request was not run: the batch {status}"}})
                counts["unfinished"] += 1
                continue
            outcome, line = answer_line(request, number, settings, error_rate=settings.batch_error_rate,
                                        heldout=heldout, known=known, planted=api().planted)
            counts[outcome] += 1
            if line is not None:
                (err if outcome == "error" else out).append(line)
        def store(lines: list[dict], kind: str) -> str:
            fid = new_id("file", api().files)
            api().files[fid] = SimFile(fid, f"{batch.id}_{kind}.jsonl", f"batch_{kind}",
                                       "".join(json.dumps(x) + "\n" for x in lines).encode(), int(now))
            return fid
        batch.output_file_id = store(out, "output") if out or status == "completed" else None
        batch.error_file_id = store(err, "error") if err else None
        batch.counts = {"total": len(batch.requests), "completed": counts["ok"],
                        "failed": counts["error"] + counts["http_500"]}

    def public(batch: SimBatch, now: float) -> dict:
        if batch.final is None:
            status = _status(batch, settings, now)
            if status in ("completed", "expired", "cancelled", "failed"):
                finish(batch, status, now)
        status = batch.final or _status(batch, settings, now)
        t = max(settings.batch_seconds, 1e-6)
        counts = dict(batch.counts)
        if batch.final is None:
            total = len(batch.requests)
            counts = {"total": total, "completed": 0 if status == "validating" else
                      min(total, math.floor(total * _done_share((now - batch.created) / t))), "failed": 0}
        stamp = int(batch.created)
        out = {"id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": None,
               "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
               "status": status, "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
               "created_at": stamp, "in_progress_at": None, "expires_at": stamp + 86400,
               "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
               "cancelling_at": None, "cancelled_at": None, "request_counts": counts, "metadata": batch.metadata}
        if batch.invalid and status == "failed":
            out["errors"] = {"object": "list", "data": batch.invalid}
        if batch.final:
            out[f"{batch.final}_at"] = int(batch.final_at)
        return out

    async def upload(request):
        if (bad := denied(request)) is not None:
            return bad
        form = await request.post()
        upload_field, purpose = form.get("file"), form.get("purpose")
        if upload_field is None or not hasattr(upload_field, "file"):
            return error(400, "multipart field 'file' is required")
        if purpose != "batch":
            return error(400, f"purpose must be 'batch' on this simulator, got {purpose!r}")
        fid = new_id("file", api().files)
        api().files[fid] = SimFile(fid, upload_field.filename or "upload.jsonl", purpose, upload_field.file.read(),
                                   int(time.time()))
        return web.json_response(api().files[fid].public(), headers=label_headers)

    async def list_files(request):
        if (bad := denied(request)) is not None:
            return bad
        purpose = request.query.get("purpose")
        data = [f.public() for f in api().files.values() if purpose is None or f.purpose == purpose]
        return web.json_response({"object": "list", "data": data, "has_more": False}, headers=label_headers)

    def lookup_file(request):
        return api().files.get(request.match_info["file_id"])

    async def get_file(request):
        if (bad := denied(request)) is not None:
            return bad
        f = lookup_file(request)
        return web.json_response(f.public(), headers=label_headers) if f else error(404, "no such file")

    async def file_content(request):
        if (bad := denied(request)) is not None:
            return bad
        f = lookup_file(request)
        if f is None:
            return error(404, "no such file")
        return web.Response(body=f.data, content_type="application/octet-stream", headers=label_headers)

    async def create_batch(request):
        if (bad := denied(request)) is not None:
            return bad
        try:
            body = await request.json()
        except ValueError:
            return error(400, "request body is not JSON")
        f = api().files.get(body.get("input_file_id") or "")
        if f is None:
            return error(400, "input_file_id names no uploaded file")
        if body.get("endpoint") != CHAT_URL:
            return error(400, f"endpoint must be {CHAT_URL} on this simulator")
        window = str(body.get("completion_window") or "")
        if window_seconds(window) is None:
            return error(400, "completion_window must look like 24h (the simulator also takes <n>s and <n>m)")
        requests, invalid, seen = [], [], set()
        for number, text in enumerate(f.data.decode("utf-8", "replace").splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                line = None
            if (not isinstance(line, dict) or not isinstance(line.get("custom_id"), str)
                    or line.get("url") != CHAT_URL or not isinstance(line.get("body"), dict)):
                invalid.append({"code": "invalid_request", "line": number,
                                "message": "not a /v1/chat/completions request line with a custom_id"})
            elif line["custom_id"] in seen:
                invalid.append({"code": "duplicate_custom_id", "line": number,
                                "message": f"custom_id {line['custom_id']} appears twice"})
            else:
                seen.add(line["custom_id"])
                requests.append(line)
        if not requests and not invalid:
            invalid.append({"code": "empty_file", "line": None, "message": "the input file has no lines"})
        bid = new_id("batch", api().batches)
        content = hashlib.blake2b(f.data, digest_size=12).hexdigest()
        api().contents[content] += 1
        window_frac = window_seconds(window) / max(settings.batch_seconds, 1e-6)
        expire_at = None
        if window_frac < 1.0:
            expire_at = max(0.1, window_frac)
        elif uniform01(settings.seed, "batch_expire", content, api().contents[content]) < settings.batch_expire_rate:
            expire_at = 0.5
        meta = body.get("metadata")
        batch = SimBatch(bid, f.id, CHAT_URL, window, meta if isinstance(meta, dict) else None, time.time(),
                         [] if invalid else requests, invalid, expire_at)
        api().batches[bid] = batch
        for line in batch.requests:
            api().submitted[line["custom_id"]] += 1
            api().batches_of.setdefault(line["custom_id"], []).append(bid)
        return web.json_response(public(batch, time.time()), headers=label_headers)

    async def get_batch(request):
        if (bad := denied(request)) is not None:
            return bad
        batch = api().batches.get(request.match_info["batch_id"])
        if batch is None:
            return error(404, "no such batch")
        return web.json_response(public(batch, time.time()), headers=label_headers)

    async def cancel_batch(request):
        if (bad := denied(request)) is not None:
            return bad
        batch = api().batches.get(request.match_info["batch_id"])
        if batch is None:
            return error(404, "no such batch")
        now = time.time()
        status = public(batch, now)["status"]
        if status not in ("validating", "in_progress", "finalizing"):
            return error(409, f"cannot cancel a batch that is {status}")
        batch.cancel_at = (now - batch.created) / max(settings.batch_seconds, 1e-6)
        return web.json_response(public(batch, now), headers=label_headers)

    async def list_batches(request):
        if (bad := denied(request)) is not None:
            return bad
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
        ids = list(reversed(list(api().batches)))  # newest first, as the API lists
        after = request.query.get("after")
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        now = time.time()
        page = [public(api().batches[i], now) for i in ids[:limit]]
        return web.json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit},
                                 headers=label_headers)

    async def admin(_request):
        return web.json_response(api().snapshot())

    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{file_id}", get_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel_batch)
    app.router.add_get("/admin/batches", admin)
