"""Row logic of the LLM stages (generate, enrich): request builders, row parsers, exemplar choice,
token estimates. Pure functions of plain dicts; they run inside Spark executors (through
jobs/llm_stage) and in plain unit tests.

**Plan rows** (what a request builder returns, one per endpoint request): the request columns
`request_id, stage, source_key, task, task_family, sample_index, model, prompt_version,
messages_json, response_format_json, temperature, max_tokens`, the estimates
`est_prompt_tokens, est_completion_tokens` (tokens), and the record fields the row parser needs
later (`GENERATION_RECORD` / `ENRICHMENT_RECORD`), so parsing joins the plan with the ledger and
nothing else. A record that cannot be rendered (an mcq without options, an unknown format) is one
row with `render_error='render_error'` and `render_detail`, and no request columns.

`request_id` = `udfs.prompts.compute_request_id(model, prompt_version, messages, {temperature,
max_tokens}, sample_index)`: a rerun finds the ledger row of the same call, a changed prompt,
model or temperature is a new call, and the sample index separates the K (or M) samples.

**Parsed rows** (what a row parser returns, one per plan row joined with its ledger row
`status, content, reasoning_content, finish_reason, error_class, error_detail, run_id`): `kind`
'item' (generate) / 'sample' (enrich) with the output table's columns, or `kind` 'quarantine' with
`source_key` = request_id, `reason`, `detail`, `raw` (the response text). The text parsed is
`response_text(row)`: `content`, or the reasoning text when the server left `content` empty
(vLLM/SGLang reasoning parsers; see `udfs.llm_client.completion_text`). Every row that is not
`failed` is parsed from the ledger's raw text (`ok`, and `parse_error` rows of older versions), and
the parsers alone decide item vs quarantine, so a parser fix needs a rerun, never a new call. A
parser bug never fails a partition: the row is quarantined as `parser_exception`.

Token estimates are deliberately simple: prompt = rendered characters / 4 (the usual rule of thumb
for English with BPE tokenizers); completion = the size of what the model is asked to write,
capped at max_tokens.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

from schemas.answer_formats import (
    BOOLEAN,
    CHOICE_FORMATS,
    CODE,
    FREEFORM,
    LABEL,
    MCQ,
    NUMERIC,
    SHORT_TEXT,
    default_label_set,
)
from schemas.llm_outputs import response_format_for
from udfs.hashing import stable_hash
from udfs.llm_client import STATUS_FAILED, completion_text
from udfs.parsing import OutputRejected, parse_enrichment, parse_generated_item
from udfs.prompts import ENRICH, GENERATE, compute_request_id, render_enrichment_messages, render_generation_messages
from udfs.validation import find_template_markers

CHARS_PER_TOKEN = 4
QUARANTINE_KIND = "quarantine"  # `kind` of a parsed row that goes to quarantine

# The latency figures of an LLM stage (ms), everywhere they are shown: the stage's terminal summary
# (jobs/llm_stage/call.py, the rows a run committed) and the data card (jobs/datacard.py, the
# ledger rows of the stage). One function, so the two agree on the same rows.
LATENCY_PERCENTILES = (50, 95, 99)


def latency_percentiles(latencies_ms: Sequence[float | None]) -> tuple[float, float, float] | None:
    """(p50, p95, p99) in ms of the ledger's `latency_ms` values (None values are rows without a
    measured latency and are left out); None when no value is left. Exact percentiles with linear
    interpolation between the closest ranks (numpy's default, the "linear" method of Hyndman and
    Fan's type 7, as Spark's exact `percentile` computes it)."""
    import numpy as np

    values = np.asarray([float(v) for v in latencies_ms if v is not None and v == v], dtype="d")
    if not values.size:
        return None
    p50, p95, p99 = (float(v) for v in np.percentile(values, LATENCY_PERCENTILES))
    return p50, p95, p99


# Record fields a plan row carries for the parser (and for quarantine's task/split columns).
GENERATION_RECORD = ("split", "answer_format", "question", "context", "choices", "answer_text", "license",
                     "license_class")
ENRICHMENT_RECORD = (*GENERATION_RECORD, "item_kind", "answer_index")

# Typical completion size (tokens) of knowledge + reasoning + final answer, per answer format.
TYPICAL_ENRICH_COMPLETION = {MCQ: 220, BOOLEAN: 220, LABEL: 220, NUMERIC: 320, SHORT_TEXT: 180,
                             FREEFORM: 450, CODE: 550}


# ---------------------------------------------------------------------------------------------
# Estimates and exemplars
# ---------------------------------------------------------------------------------------------
def approx_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Rendered characters of all messages / CHARS_PER_TOKEN, plus one."""
    return sum(len(str(m.get("content") or "")) for m in messages) // CHARS_PER_TOKEN + 1


def estimate_generation_completion(seed: Mapping[str, Any], max_tokens: int) -> int:
    """The model writes one item shaped like the seed: its JSON size in tokens, plus the keys."""
    view = {k: seed.get(k) for k in ("question", "context", "choices", "answer_text")}
    return min(int(max_tokens), len(json.dumps(view, ensure_ascii=False)) // CHARS_PER_TOKEN + 16)


def estimate_enrichment_completion(answer_format: str | None, max_tokens: int) -> int:
    """Knowledge + reasoning + final answer: a typical size per format, capped at max_tokens."""
    return min(int(max_tokens), TYPICAL_ENRICH_COMPLETION.get(answer_format or "", 300))


def marker_text(record: Mapping[str, Any]) -> str:
    """The text the validation filter scans for template markers, built the same way as its SQL
    (`concat_ws('\\n', context, question, array_join(choices, '\\n'), answer_text)`: nulls skipped)."""
    parts = [record.get("context"), record.get("question"), *(record.get("choices") or []), record.get("answer_text")]
    return "\n".join(str(p) for p in parts if p is not None)


def exemplar_markers(record: Mapping[str, Any]) -> list[str]:
    """Why `record` may not be a few-shot exemplar: the names of the validation markers its text
    carries (`udfs.validation.find_template_markers`); empty when it may."""
    return list(_markers(marker_text(record)))


@lru_cache(maxsize=4096)
def _markers(text: str) -> tuple[str, ...]:
    # every seed of a task scans the same small pool: each pool text is matched once per worker
    return tuple(find_template_markers(text))


def choose_exemplars(seed_id: str | None, pool: Sequence[dict], n: int) -> list[dict]:
    """`n` exemplars from the task's pool, never the seed itself, rotated by the seed's id so
    different seeds see different exemplars (deterministic: same seed, same exemplars).

    A pool record whose text would fail the validation filter's marker rules (a prompt-injection
    payload, a chat-template token, a role label: `exemplar_markers`) is never chosen: an exemplar
    is shown to the model as what a good item looks like, so an injection carried by one seed
    would otherwise be copied into the prompts of other seeds (issue 14). The exclusion happens
    before the rotation, so in a task whose pool holds no such record the choice — and every
    request id — is exactly what it was without the rule.
    """
    if n <= 0:
        return []
    candidates = [e for e in pool if e.get("seed_id") != seed_id and not exemplar_markers(e)]
    if not candidates:
        return []
    start = int(stable_hash("fewshot", seed_id)[:8], 16) % len(candidates)
    rotated = candidates[start:] + candidates[:start]
    return rotated[: min(n, len(candidates))]


def label_set_for(record: Mapping[str, Any], answer_format: str | None) -> list[str] | None:
    """The labels an answer must come from: yes/no for boolean, the record's choices for label."""
    choices = record.get("choices") if answer_format in CHOICE_FORMATS else None
    return default_label_set(answer_format, list(choices) if choices else None)


# ---------------------------------------------------------------------------------------------
# Request builders
# ---------------------------------------------------------------------------------------------
def _request_rows(stage: str, base: dict, render: Callable[[], tuple[list[dict], str]], record: Mapping[str, Any],
                  *, n: int, temperature: float, max_tokens: int, est_completion: Callable[[], int]) -> list[dict]:
    """`n` plan rows (sample indices 0..n-1) of one rendered prompt, or one render_error row."""
    fmt = record.get("answer_format")
    try:
        messages, version = render()
        response_format = response_format_for(stage, fmt, label_set_for(record, fmt))
    except (ValueError, KeyError, TypeError) as exc:
        return [dict(base, render_error="render_error", render_detail=f"{type(exc).__name__}: {exc}"[:500])]
    params = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
    shared = dict(base, prompt_version=version, messages_json=json.dumps(messages, ensure_ascii=False),
                  response_format_json=json.dumps(response_format, ensure_ascii=False),
                  temperature=params["temperature"], max_tokens=params["max_tokens"],
                  est_prompt_tokens=approx_prompt_tokens(messages), est_completion_tokens=est_completion())
    return [dict(shared, request_id=compute_request_id(base["model"], version, messages, params, i), sample_index=i)
            for i in range(int(n))]


def generation_requests(seed: Mapping[str, Any], exemplars: Sequence[dict], *, model: str, k: int,
                        temperature: float, max_tokens: int) -> list[dict]:
    """K plan rows for one seed (source_key = seed_id): the generation prompt rendered once with
    `exemplars` as few-shot examples, K sample indices."""
    base = {"stage": GENERATE, "source_key": seed.get("seed_id"), "task": seed.get("task"),
            "task_family": seed.get("task_family"), "model": model,
            **{name: seed.get(name) for name in GENERATION_RECORD}}
    return _request_rows(
        GENERATE, base, lambda: render_generation_messages(seed, exemplars, seed.get("answer_format"), None,
                                                           seed.get("task")),
        seed, n=k, temperature=temperature, max_tokens=max_tokens,
        est_completion=lambda: estimate_generation_completion(seed, max_tokens))


def enrichment_requests(item: Mapping[str, Any], *, model: str, m: int, temperature: float,
                        max_tokens: int) -> list[dict]:
    """M plan rows for one item (source_key = gen_id, or the seed_id of an answer-enriched seed):
    the solving prompt rendered once (the item's answer is never shown), M sample indices."""
    base = {"stage": ENRICH, "source_key": item.get("gen_id"), "task": item.get("task"),
            "task_family": item.get("task_family"), "model": model,
            **{name: item.get(name) for name in ENRICHMENT_RECORD}}
    return _request_rows(
        ENRICH, base, lambda: render_enrichment_messages(item, item.get("answer_format"), None, item.get("task")),
        item, n=m, temperature=temperature, max_tokens=max_tokens,
        est_completion=lambda: estimate_enrichment_completion(item.get("answer_format"), max_tokens))


# ---------------------------------------------------------------------------------------------
# Row parsers
# ---------------------------------------------------------------------------------------------
def quarantine_row(rec: Mapping[str, Any], reason: str | None, detail: str | None, raw: str | None) -> dict:
    """The parsed row of an unusable response: keyed by its request_id, reason 'unknown' if none
    is given, detail cut to 1000 characters, the raw response text kept whole."""
    return {"kind": QUARANTINE_KIND, "source_key": rec.get("request_id"), "request_id": rec.get("request_id"),
            "task": rec.get("task"), "task_family": rec.get("task_family"), "split": rec.get("split"),
            "run_id": rec.get("run_id"), "answer_format": rec.get("answer_format"), "reason": reason or "unknown",
            "detail": (detail or "")[:1000] or None, "raw": raw}


def response_text(rec: Mapping[str, Any]) -> str | None:
    """The text a ledger row's parser reads: `content` when it has text, else the reasoning text
    (`reasoning_content`) unless the server stopped at the token limit (`finish_reason=length`:
    it ran out while thinking). Rows of ledgers without the reasoning column read `content`."""
    return completion_text(rec.get("content"), rec.get("reasoning_content"), rec.get("finish_reason"))


def _parse_row(rec: Mapping[str, Any], parse: Callable[[str | None], Any], usable: Callable[[Any], dict]) -> dict:
    """`failed` ledger rows and rejected or crashing parses → quarantine; else `usable(parsed)`.
    `parse` gets `response_text(rec)`; quarantine rows keep that text (else `content`) as `raw`."""
    if rec.get("status") == STATUS_FAILED:
        return quarantine_row(rec, rec.get("error_class") or "failed", rec.get("error_detail"), rec.get("content"))
    text = response_text(rec)
    raw = text if text is not None else rec.get("content")
    try:
        parsed = parse(text)
    except OutputRejected as err:
        return quarantine_row(rec, err.reason, err.detail, raw)
    except Exception as exc:  # a parser bug must not fail the partition: keep the row, say why
        return quarantine_row(rec, "parser_exception", f"{type(exc).__name__}: {exc}", raw)
    return usable(parsed)


def _lineage(rec: Mapping[str, Any]) -> dict:
    return {"source_key": rec.get("request_id"), "task": rec.get("task"), "task_family": rec.get("task_family"),
            "model": rec.get("model"), "prompt_version": rec.get("prompt_version"),
            "request_id": rec.get("request_id"), "run_id": rec.get("run_id")}


def parse_generation_row(rec: Mapping[str, Any]) -> dict:
    """A generation plan row joined with its ledger row → a `generated` item (kind 'item',
    gen_id = stable_hash("generated", request_id): one item answers one request, so the id is
    stable across reruns and re-parses) or a quarantine row."""
    seed = {k: rec.get(k) for k in ("task", "question", "context", "choices", "answer_text")}
    seed["seed_id"] = rec.get("source_key")

    def item_row(item) -> dict:
        return {**_lineage(rec), "kind": "item", "gen_id": stable_hash("generated", rec["request_id"]),
                "seed_id": rec.get("source_key"), "sample_index": rec.get("sample_index"), "split": rec.get("split"),
                "answer_format": item.answer_format, "question": item.question, "context": item.context,
                "choices": item.choices, "answer_index": item.answer_index, "answer_text": item.answer_text,
                "license": rec.get("license"), "license_class": rec.get("license_class")}

    return _parse_row(rec, lambda text: parse_generated_item(text, rec.get("answer_format"), seed), item_row)


def parse_enrichment_row(rec: Mapping[str, Any]) -> dict:
    """An enrichment plan row joined with its ledger row → an `enriched` sample (kind 'sample',
    keyed (gen_id = the item's id, sample = the sample index)) or a quarantine row. A final answer
    that names no valid option is kept with final_answer NULL (a vote for nothing, which the
    verification filter must see); only outputs with no final answer at all are quarantined."""
    item = {k: rec.get(k) for k in ("task", "question", "context", "choices", "answer_format")}

    def sample_row(sample) -> dict:
        return {**_lineage(rec), "kind": "sample", "gen_id": rec.get("source_key"), "sample": rec.get("sample_index"),
                "item_kind": rec.get("item_kind"), "answer_format": rec.get("answer_format"),
                "knowledge": sample.knowledge, "reasoning": sample.reasoning,
                "final_answer_raw": sample.final_answer_raw, "final_answer": sample.final_answer,
                "final_answer_index": sample.final_answer_index}

    return _parse_row(rec, lambda text: parse_enrichment(text, rec.get("answer_format"), item), sample_row)
