"""The simulator's Batch API (simulator/batch_api.py) through the real openai client: the life of
a batch (validating → in_progress → finalizing → completed), a bad input file (failed), a short
completion_window (expired with partial output), cancel, partial errors in an error file, listing by
metadata, the per-custom_id submission counters, and the same outcomes under the same seed. The
requests are real generation bodies of real seed records (tests/unit/seed_records.py)."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from simulator import SimSettings, SimulatorServer
from simulator.batch_api import window_seconds
from udfs.llm_batch import batch_line
from udfs.llm_rows import generation_requests
from tests.unit.seed_records import seed_rows

TERMINAL = ("completed", "failed", "expired", "cancelled")


def _lines(n: int = 8) -> list[dict]:
    requests = [r for seed in seed_rows(arc_easy=2, gsm8k=2, boolq=2)
                for r in generation_requests(seed, [], model="taskseed-sim", k=2, temperature=0.7, max_tokens=512)][:n]
    return [batch_line(r, "taskseed-sim") for r in requests]


def _submit(client, lines, window="24h", name="b.jsonl", metadata=None):
    data = "".join(json.dumps(x) + "\n" if isinstance(x, dict) else x for x in lines).encode()
    f = client.files.create(file=(name, io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window=window,
                                 metadata=metadata)


def _wait(client, batch, seen=None):
    while batch.status not in TERMINAL:
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
        if seen is not None:
            seen.append(batch.status)
    return batch


def _content(client, file_id) -> list[dict]:
    return [json.loads(t) for t in client.files.content(file_id).text.splitlines()] if file_id else []


@pytest.fixture
def sim():
    with SimulatorServer(SimSettings(seed=3, batch_seconds=0.6, batch_error_rate=0.25)) as server:
        yield server


def test_a_batch_runs_through_its_statuses_and_answers_every_line(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    lines = _lines()
    seen: list[str] = []
    batch = _submit(client, lines, metadata={"taskseed_batch_id": "generate-abc"})
    assert batch.status == "validating" and batch.request_counts.total == len(lines)
    batch = _wait(client, batch, seen)
    assert batch.status == "completed" and "in_progress" in seen
    assert seen.index("in_progress") < (seen.index("finalizing") if "finalizing" in seen else len(seen))
    out, err = _content(client, batch.output_file_id), _content(client, batch.error_file_id)
    assert {x["custom_id"] for x in out} | {x["custom_id"] for x in err} == {x["custom_id"] for x in lines}
    assert err and all(x["error"]["code"] == "server_error" and x["response"] is None for x in err)
    assert batch.request_counts.completed == len(out) and batch.request_counts.failed == len(err)
    assert all(json.loads(x["response"]["body"]["choices"][0]["message"]["content"]) for x in out)
    listed = [b for b in client.batches.list(limit=10) if (b.metadata or {}).get("taskseed_batch_id") == "generate-abc"]
    assert [b.id for b in listed] == [batch.id]
    assert sim.stats()["batch_api"]["submitted"] == {x["custom_id"]: 1 for x in lines}


@pytest.mark.parametrize("bad", ["{cut off", json.dumps({"custom_id": "x", "url": "/v1/embeddings", "body": {}}),
                                 "DUPLICATE"])
def test_a_bad_input_file_fails_the_batch_and_submits_nothing(sim, bad):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    lines = _lines(3)
    batch = _wait(client, _submit(client, lines + [lines[0] if bad == "DUPLICATE" else bad + "\n"]))
    assert batch.status == "failed" and batch.errors.data and batch.output_file_id is None
    assert sim.stats()["batch_api"]["submitted"] == {}


def test_a_short_completion_window_expires_with_partial_output(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    lines = _lines()
    batch = _wait(client, _submit(client, lines, window="0.3s"))
    assert batch.status == "expired"
    out, err = _content(client, batch.output_file_id), _content(client, batch.error_file_id)
    expired = [x for x in err if x["error"]["code"] == "batch_expired"]
    assert expired and len(out) + len(err) == len(lines)


def test_cancel_stops_a_batch(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    batch = _submit(client, _lines())
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelling"
    assert _wait(client, cancelled).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_same_seed_same_outcomes():
    outs = []
    for _ in range(2):
        with SimulatorServer(SimSettings(seed=9, batch_seconds=0.2, batch_error_rate=0.3)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="x")
            batch = _wait(client, _submit(client, _lines()))
            outs.append(sorted((x["custom_id"], json.dumps(x["response"]["body"]["choices"]) if x["response"] else
                                x["error"]["code"]) for x in _content(client, batch.output_file_id)
                               + _content(client, batch.error_file_id)))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("window,seconds", [("24h", 86400.0), ("30m", 1800.0), ("2s", 2.0), ("1d", None), ("", None)])
def test_window_seconds(window, seconds):
    assert window_seconds(window) == seconds
