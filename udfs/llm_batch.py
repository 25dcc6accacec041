"""Batch inference, the pure side: the OpenAI Batch API's JSONL format (what `vllm run-batch` reads
and writes) and the exactly-once rules of a request that travels in a batch (issue 27).

Formats (OpenAI Batch API, https://platform.openai.com/docs/api-reference/batch; vLLM's
`vllm run-batch` reads and writes the same lines):

- input line:  `{"custom_id": <request_id>, "method": "POST", "url": "/v1/chat/completions",
  "body": <the chat-completions body the online path sends, udfs.llm_client.build_body>}`
- output line: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`;
  an error-file line has `response` null (or a non-200 `status_code`) and
  `error: {"code", "message"}`.

Batch statuses (`llm_batch_requests.batch_status`; the provider's names plus taskseed's own
`exported`, `submitting` and `reconciled`):

- HOLDING (`exported`, `submitting` (online mode: recorded before the upload, no provider batch id
  yet), `validating`, `in_progress`, `finalizing`, `completed`): a request in such a
  batch is never put in another batch — its answer is on its way or waiting to be reconciled.
- RELEASED (`expired`, `cancelled`, `failed`): the batch's requests without a ledger row are
  pending again and go into the next batch.
- `reconciled`: its output and error files are in `llm_calls`; the ledger decides from then on
  (like online results: `ok` is final, `failed` is re-sent only with `--retry-failed`).

A line's ledger fields get the same statuses and error classes as an online result
(`udfs.llm_client.read_completion` / `completion_outcome` / `classify` / `classify_status`).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from udfs.hashing import stable_hash
from udfs.llm_client import (STATUS_FAILED, ErrorObject, InvalidResponse, body_excerpt, build_body, classify,
                             classify_status, completion_outcome, error_object, read_completion)

CHAT_URL = "/v1/chat/completions"
EXPORTED, VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED = "exported", "validating", "in_progress", "finalizing", "completed"
SUBMITTING = "submitting"
EXPIRED, CANCELLED, FAILED, RECONCILED = "expired", "cancelled", "failed", "reconciled"
LIVE = (EXPORTED, SUBMITTING, VALIDATING, IN_PROGRESS, FINALIZING)
HOLDING = (*LIVE, COMPLETED)
RELEASED = (EXPIRED, CANCELLED, FAILED)
BATCH_STATUSES = (*HOLDING, *RELEASED, RECONCILED)
MISSING_FROM_OUTPUT = "missing_from_batch_output"  # error_class of a request a reconciled batch did not answer


class BatchFileError(ValueError):
    """A line of a batch output or error file that is not an OpenAI batch result line."""


def holds(status: str) -> bool:
    """Whether a batch in `status` keeps its requests out of every other batch (HOLDING).
    ValueError for a status that is none of BATCH_STATUSES."""
    if status not in BATCH_STATUSES:
        raise ValueError(f"unknown batch status {status!r}; expected one of {', '.join(BATCH_STATUSES)}")
    return status in HOLDING


def batch_id_for(stage: str, request_ids: Sequence[str], salt: str = "") -> str:
    """A batch's id: `<stage>-` + 16 hex of the hash of its sorted request ids, so exporting the same
    pending set again gives the same batches (and files), never new ones. `salt` (online mode: how
    many memberships the stage had before) makes a batch of requests released by an expired one a
    new batch, not the old id again."""
    parts = ("llm_batch", stage, *sorted(request_ids)) if not salt else ("llm_batch", stage, salt, *sorted(request_ids))
    return f"{stage}-{stable_hash(*parts)[:16]}"


def assign_batches(stage: str, pending: Iterable[str], kept: Mapping[str, str], batch_rows: int,
                   salt: str = "") -> dict[str, str]:
    """{request_id: batch_id} for a stage's pending requests.

    pending: request ids without a terminal ledger row that no HOLDING batch holds, plus those of
    `kept` (requests of `exported` batches that were never imported: they keep their batch, so a
    second export writes the same files again). New requests are cut, in request_id order, into
    batches of at most `batch_rows` (the `llm.batch_rows` limit); `salt` as in `batch_id_for`.
    ValueError if batch_rows < 1.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    out = {rid: kept[rid] for rid in pending if rid in kept}
    new = sorted({rid for rid in pending if rid not in kept})
    for start in range(0, len(new), batch_rows):
        chunk = new[start:start + batch_rows]
        bid = batch_id_for(stage, chunk, salt)
        out.update(dict.fromkeys(chunk, bid))
    return out


def batch_line(request: Mapping[str, Any], model: str, structured_output: str = "json_schema") -> dict:
    """One input line for a request row (request columns of a plan row): the same body the online
    path sends (`build_body`: messages, response_format per `structured_output`, temperature,
    max_tokens, the request's sampling seed). Errors of `build_body` propagate."""
    return {"custom_id": str(request["request_id"]), "method": "POST", "url": CHAT_URL,
            "body": build_body(dict(request), model, structured_output)}


def read_output_line(text: str) -> dict:
    """A decoded output/error-file line (a dict with a `custom_id`); BatchFileError otherwise."""
    try:
        line = json.loads(text)
    except ValueError as exc:
        raise BatchFileError(f"not JSON ({exc})") from None
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) or not line["custom_id"]:
        raise BatchFileError("no custom_id: not an OpenAI batch output line")
    return line


def line_result(line: Mapping[str, Any], structured: bool = True) -> dict:
    """The ledger fields of one output/error-file line, classified as an online result would be.

    keys: request_id (= custom_id), status (`ok` | `failed`), content, reasoning_content,
    finish_reason, prompt_tokens, completion_tokens, error_class, error_detail, attempts (1: the
    provider sends each line once). A 200 body goes through `read_completion` and
    `completion_outcome` (an unreadable body is `invalid_response`, an error object is classed by
    its code); a non-200 `status_code` by `classify_status`; an `error` object with no response
    (error file) by its `code` (an HTTP code or a name like `rate_limit_error`), else
    `batch_error` with the provider's code and message in the detail. `structured`: the request
    carried a response_format (a rejection of it is `structured_output_unsupported`).
    """
    out: dict[str, Any] = {"request_id": line["custom_id"], "status": STATUS_FAILED, "content": None,
                           "reasoning_content": None, "finish_reason": None, "prompt_tokens": None,
                           "completion_tokens": None, "error_class": None, "error_detail": None, "attempts": 1}
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    code = response.get("status_code") if response else None
    if response is not None and code == 200:
        body = response.get("body")
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        try:
            completion = read_completion(raw)
        except (ErrorObject, InvalidResponse) as exc:
            failure = classify(exc, structured=structured)
            out.update(error_class=failure.error_class, error_detail=failure.detail)
            return out
        status, error_class, detail = completion_outcome(completion)
        out.update(status=status, content=completion.content, reasoning_content=completion.reasoning_content,
                   finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
                   completion_tokens=completion.completion_tokens, error_class=error_class, error_detail=detail)
        return out
    if response is not None and isinstance(code, int):
        failure = classify_status(code, body_excerpt(response.get("body")), structured=structured)
        out.update(error_class=failure.error_class, error_detail=failure.detail)
        return out
    error = line.get("error")
    if isinstance(error, dict):
        status, message = error_object({"error": error}) or (None, json.dumps(error)[:500])
        failure = classify_status(status, body_excerpt(message), structured=structured, source="batch error")
        if failure.error_class == "error_response":  # no HTTP code and no standard name: keep the provider's
            out.update(error_class="batch_error", error_detail=f"batch error {error.get('code')}: {message}"[:1000])
        else:
            out.update(error_class=failure.error_class, error_detail=failure.detail)
        return out
    out.update(error_class="invalid_response", error_detail="batch line has neither a response nor an error")
    return out


def missing_result(request_id: str, batch_id: str) -> dict:
    """The ledger fields of a request of a reconciled batch that no output or error line answered:
    `failed` with MISSING_FROM_OUTPUT (re-sent with --retry-failed), never silently pending."""
    return {"request_id": request_id, "status": STATUS_FAILED, "content": None, "reasoning_content": None,
            "finish_reason": None, "prompt_tokens": None, "completion_tokens": None,
            "error_class": MISSING_FROM_OUTPUT,
            "error_detail": f"batch {batch_id} was reconciled without a line for this request", "attempts": 0}


def to_record(results: Iterable[dict], answered: set[str]) -> list[dict]:
    """The results to write to the ledger: one per request id (the first line wins when a file set
    holds a request twice), none for a request in `answered` (its ledger already has an `ok` or
    `parse_error` row, or a row of the same batch): importing the same files twice, or a request
    answered in two batches, records one answer."""
    out, seen = [], set(answered)
    for result in results:
        rid = result["request_id"]
        if rid in seen:
            continue
        seen.add(rid)
        out.append(result)
    return out


# ---- the online path (OpenAI Batch API: /v1/files, /v1/batches) -----------------------------

PROVIDER_LIVE = ("validating", "in_progress", "finalizing", "cancelling")
PROVIDER_TERMINAL = (COMPLETED, EXPIRED, CANCELLED, FAILED)
UNRUN_CODES = ("batch_expired", "batch_cancelled")  # error-file lines of requests the provider never ran
METADATA_KEY = "taskseed_batch_id"  # the batch's taskseed id, in the provider batch's metadata


def batch_filename(batch_id: str) -> str:
    """The uploaded input file's name: `<batch_id>.jsonl` (how a rerun finds an upload it did not record)."""
    return f"{batch_id}.jsonl"


def membership_status(provider_status: str) -> str:
    """The `llm_batch_requests.batch_status` a provider batch status is recorded as (`cancelling` is
    still live: recorded as `in_progress`). ValueError for a status the Batch API does not have."""
    if provider_status == "cancelling":
        return IN_PROGRESS
    if provider_status not in (VALIDATING, IN_PROGRESS, FINALIZING, *PROVIDER_TERMINAL):
        raise ValueError(f"unknown provider batch status {provider_status!r}")
    return provider_status


def poll_delay(polls: int, start_s: float, max_s: float) -> float:
    """Seconds to wait before poll number `polls` + 1: `start_s` doubling per poll, capped at `max_s`
    (`llm.batch_poll_seconds`, `llm.batch_poll_max_seconds`)."""
    return min(max_s, start_s * (2.0 ** max(0, polls)))


def unrun(line: Mapping[str, Any]) -> bool:
    """Whether an error-file line stands for a request the provider never ran (its batch expired or
    was cancelled first): such a request is released for the next batch, not recorded as failed."""
    error = line.get("error")
    return line.get("response") is None and isinstance(error, dict) and error.get("code") in UNRUN_CODES


def find_provider_batch(batches: Iterable[Any], batch_id: str) -> Any | None:
    """The provider batch whose metadata names `batch_id` (the newest first, as `batches.list`
    returns them); None when there is none. Items: objects with a `metadata` attribute or dicts."""
    for batch in batches:
        meta = batch.get("metadata") if isinstance(batch, Mapping) else getattr(batch, "metadata", None)
        if isinstance(meta, Mapping) and meta.get(METADATA_KEY) == batch_id:
            return batch
    return None


def batches_eta(counts: Sequence[tuple[int, int, float]]) -> float | None:
    """Seconds until the live batches finish, from the provider's `request_counts`: `counts` holds
    (total, done = completed + failed, seconds since the batch was created) per live batch; the
    rate is done requests per second over all of them. None before any request is done."""
    done = sum(d for _, d, _ in counts)
    elapsed = max((e for _, _, e in counts), default=0.0)
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (sum(t for t, _, _ in counts) - done) / (done / elapsed))
