"""Simulator fixtures: the built-in OpenAI-compatible simulator on a free loopback port.

- `sim_server` (session): one quiet, fast, fault-free simulator shared by the suite.
- `sim` (function): that shared server with its counters reset, for tests that count requests.
- `start_sim` (function): factory for a simulator with custom settings (faults, latency, rate
  limits, a required API key); every server it starts is stopped after the test.
- `make_requests`: contract-following request rows (the columns `run_llm_stage` expects).
"""

from __future__ import annotations

import json

import pytest

from udfs.hashing import stable_hash
from simulator import SimSettings, SimulatorServer

ENRICH_SCHEMA = {
    "type": "object",
    "properties": {"knowledge": {"type": "string"}, "reasoning": {"type": "string"},
                   "final_answer": {"type": "string"}},
    "required": ["knowledge", "reasoning", "final_answer"],
    "additionalProperties": False,
}
ENRICH_RESPONSE_FORMAT = {"type": "json_schema",
                          "json_schema": {"name": "taskseed_enrich_mcq", "schema": ENRICH_SCHEMA, "strict": True}}


def enrich_messages(i: int) -> list[dict]:
    item = {"question": f"Which material conducts heat best in experiment {i}?", "context": None,
            "choices": ["copper", "wood", "glass", "plastic"]}
    payload = {"task": "arc_easy", "answer_format": "mcq", "item": item, "label_set": None}
    return [
        {"role": "system", "content": "taskseed-prompt: enrich/mcq/enrich-mcq-test\nAnswer the item."},
        {"role": "user", "content": "Solve it.\n\n<input>\n" + json.dumps(payload) + "\n</input>"},
    ]


def make_request_rows(n: int, stage: str = "enrich", model: str = "taskseed-sim", offset: int = 0) -> list[dict]:
    """n distinct enrichment requests shaped like rows of a stage's requests frame."""
    rows = []
    for i in range(offset, offset + n):
        messages = enrich_messages(i)
        params = {"temperature": 0.7, "max_tokens": 512}
        rows.append({
            "request_id": stable_hash("test-request", model, "enrich-mcq-test", messages, params, 0),
            "stage": stage, "source_key": f"item-{i}", "task": "arc_easy", "task_family": "arc",
            "sample_index": 0, "model": model, "prompt_version": "enrich-mcq-test",
            "messages_json": json.dumps(messages), "response_format_json": json.dumps(ENRICH_RESPONSE_FORMAT),
            "temperature": 0.7, "max_tokens": 512,
        })
    return rows


@pytest.fixture
def make_requests():
    return make_request_rows


@pytest.fixture(scope="session")
def sim_server():
    with SimulatorServer(SimSettings(seed=7, latency_ms=2.0, latency_jitter_ms=1.0)) as server:
        yield server


@pytest.fixture
def sim(sim_server):
    sim_server.reset()
    return sim_server


@pytest.fixture
def start_sim():
    servers: list[SimulatorServer] = []

    def _start(**settings) -> SimulatorServer:
        server = SimulatorServer(SimSettings(**settings)).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
