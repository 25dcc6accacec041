"""Plays `vllm run-batch` over files (issue 27's offline path): an OpenAI batch input file in, its
output file (and, like the OpenAI Batch API, a separate error file) out, each answer from the
simulator's answering code (`simulator.contract.sim_answer`, keyed like the HTTP server: the prompt
without its seed, then the body's seed), so a batch answer equals the online one for the same request.

Deterministic faults, chosen per custom_id by the settings' seeded hash (`uniform01`):
`error_rate` of the lines go to the error file (`{"response": null, "error": {"code", "message"}}`,
code `server_error`), `http_error_rate` become output lines with `status_code` 500, and
`drop_rate` get no line at all (a run that stopped short).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from simulator.contract import approx_tokens, sim_answer
from simulator.settings import SimSettings, uniform01


def answer_body(body: dict, settings: SimSettings, heldout: list[dict] | None = None,
                known: dict[str, str] | None = None, planted: Counter | None = None) -> dict:
    """The chat.completion body the simulator answers `body` with (no transport faults); `heldout`,
    `known` and `planted` as the HTTP server passes them to `sim_answer` (held-out items generation
    may copy, answers enrichment knows, the content-fault counter)."""
    seed = body.get("seed")
    unseeded = json.dumps({k: v for k, v in body.items() if k != "seed"}, sort_keys=True)
    prompt_key = hashlib.blake2b(unseeded.encode(), digest_size=12).hexdigest()
    variant_key = f"{prompt_key}:seed={seed}" if isinstance(seed, int) else prompt_key
    content = sim_answer(body, settings, variant_key, prompt_key, heldout, Counter() if planted is None else planted, known)
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [] if isinstance(m, dict))
    usage = {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": approx_tokens(content)}
    return {"id": f"chatcmpl-batch-{prompt_key}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or settings.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}}


def answer_line(request: dict, number: int, settings: SimSettings, *, error_rate: float = 0.0,
                http_error_rate: float = 0.0, drop_rate: float = 0.0, heldout: list[dict] | None = None,
                known: dict[str, str] | None = None, planted: Counter | None = None) -> tuple[str, dict | None]:
    """(outcome, result line) for one decoded input line (`number` = its 1-based line number):
    outcome `ok` / `http_500` (an output-file line), `error` (an error-file line), `dropped` (None)."""
    cid = request["custom_id"]
    u = uniform01(settings.seed, "batch", cid)
    line = {"id": f"batch_req_{number}", "custom_id": cid, "response": None, "error": None}
    if u < drop_rate:
        return "dropped", None
    if u < drop_rate + error_rate:
        line["error"] = {"code": "server_error", "message": "the batch worker failed on this request"}
        return "error", line
    if u < drop_rate + error_rate + http_error_rate:
        line["response"] = {"status_code": 500, "request_id": line["id"],
                            "body": {"error": {"message": "internal error", "type": "server_error"}}}
        return "http_500", line
    line["response"] = {"status_code": 200, "request_id": line["id"],
                        "body": answer_body(request["body"], settings, heldout, known, planted)}
    return "ok", line


def run_batch_file(input_path: Path | str, output_path: Path | str, error_path: Path | str | None = None,
                   settings: SimSettings | None = None, *, error_rate: float = 0.0, http_error_rate: float = 0.0,
                   drop_rate: float = 0.0) -> Counter:
    """Answer every line of `input_path` into `output_path` (and error lines into `error_path`, or
    into the output file when None). Returns counts by outcome: ok, error, http_500, dropped."""
    settings = settings or SimSettings()
    counts: Counter = Counter()
    out_lines, err_lines = [], []
    for number, text in enumerate(Path(input_path).read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        outcome, line = answer_line(json.loads(text), number, settings, error_rate=error_rate,
                                    http_error_rate=http_error_rate, drop_rate=drop_rate)
        counts[outcome] += 1
        if line is not None:
            (err_lines if outcome == "error" else out_lines).append(line)
    if error_path is None:
        out_lines += err_lines
    else:
        Path(error_path).write_text("".join(json.dumps(x) + "\n" for x in err_lines), encoding="utf-8")
    Path(output_path).write_text("".join(json.dumps(x) + "\n" for x in out_lines), encoding="utf-8")
    return counts
