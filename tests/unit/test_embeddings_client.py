"""udfs/embeddings_client.py against the simulator's `/v1/embeddings` (simulator/embeddings.py) on
real benchmark questions: vectors in input order as served (unit rows), blanks as zero rows and
never sent, retries through injected 429/500/503 faults with every text embedded once, a model the
server does not serve is one clear error, malformed bodies are `invalid_response`; and the
simulator's vectors put a reworded question next to its source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulator import SimSettings, SimulatorServer
from simulator.embeddings import SIM_EMBEDDING_DIM, SIM_EMBEDDING_MODEL, sim_embedding
from simulator.rewording import reword
from udfs.embeddings_client import EmbeddingsClient, EmbeddingsError, EmbeddingsStats, read_embeddings
from udfs.llm_client import EndpointSettings, ErrorObject, InvalidResponse


@pytest.fixture(scope="module")
def questions(mirror):
    with (mirror / "allenai/ai2_arc/ARC-Easy/test.jsonl").open(encoding="utf-8") as f:
        return [json.loads(next(f))["question"] for _ in range(50)]


def client_for(sim, model: str = SIM_EMBEDDING_MODEL, batch_size: int = 8, **overrides) -> EmbeddingsClient:
    settings = EndpointSettings(base_url=sim.base_url, model=model, api_key_env=None, require_key=False,
                                max_concurrency=4, backoff_base_s=0.01, backoff_max_s=0.05, **overrides)
    return EmbeddingsClient(settings, batch_size)


def test_vectors_are_the_servers_in_input_order(start_sim, questions):
    sim = start_sim(seed=1, latency_ms=1.0, latency_jitter_ms=0.0)
    client = client_for(sim)
    texts = questions[:20] + [None, "", "   "]
    stats = EmbeddingsStats()
    vectors = client.embed(texts, stats=stats)
    client.close()
    assert vectors.shape == (23, SIM_EMBEDDING_DIM) and vectors.dtype == np.float32
    want = np.asarray([sim_embedding(q) for q in questions[:20]], dtype=np.float32)
    assert np.allclose(vectors[:20], want, atol=1e-6)
    assert not vectors[20:].any()  # blanks: zero rows, never sent
    assert sim.stats()["embedded_texts"] == 20 == stats.texts
    assert stats.requests == 3 == sim.stats()["embedding_requests"]  # 20 texts in batches of 8


def test_faults_are_retried_and_every_text_is_embedded_once(start_sim, questions):
    sim = start_sim(seed=2, latency_ms=1.0, latency_jitter_ms=0.0, retry_after_s=0.0,
                    fault_rates=(("429", 0.15), ("500", 0.15), ("503", 0.15)))
    client = client_for(sim, batch_size=2, max_retries=20)
    stats = EmbeddingsStats()
    vectors = client.embed(questions, stats=stats)
    client.close()
    assert np.allclose(vectors, np.asarray([sim_embedding(q) for q in questions], dtype=np.float32), atol=1e-6)
    assert stats.http_attempts > stats.requests == 25 and sum(stats.errors.values()) == stats.http_attempts - 25
    assert sim.stats()["embedded_texts"] == len(questions)  # answered once each


def test_a_model_the_server_does_not_serve_is_one_clear_error(start_sim, questions):
    sim = start_sim(seed=1, latency_ms=1.0, latency_jitter_ms=0.0)
    client = client_for(sim, model="no-such-embedder")
    with pytest.raises(EmbeddingsError, match=r"model no-such-embedder: http_404: .*does not exist.*after 1 attempt"):
        client.embed(questions[:3])
    client.close()


@pytest.mark.parametrize("body,error", [
    (b"<html>502</html>", InvalidResponse),
    (json.dumps({"data": [{"index": 0, "embedding": [0.1, 0.2]}]}), InvalidResponse),  # one vector for two texts
    (json.dumps({"data": [{"index": 0, "embedding": [0.1]}, {"index": 0, "embedding": [0.2]}]}), InvalidResponse),
    (json.dumps({"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": [0.3]}]}), InvalidResponse),
    (json.dumps({"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AAAA"}]}), InvalidResponse),
    (json.dumps({"object": "error", "message": "too long", "code": 400}), ErrorObject),
])
def test_bodies_that_do_not_hold_one_vector_per_text_are_refused(body, error):
    with pytest.raises(error):
        read_embeddings(body, 2)


def test_rows_are_ordered_by_index():
    body = json.dumps({"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]})
    assert read_embeddings(body, 2).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_the_simulator_lists_its_embedding_model_and_puts_a_rewording_near_its_source(questions):
    import urllib.request

    with SimulatorServer(SimSettings(latency_ms=0.0, latency_jitter_ms=0.0)) as sim:
        with urllib.request.urlopen(sim.base_url + "/models") as r:
            models = [m["id"] for m in json.load(r)["data"]]
    assert models == ["taskseed-sim", SIM_EMBEDDING_MODEL]
    held = np.asarray([sim_embedding(q) for q in questions])
    reworded = np.asarray([sim_embedding(reword(q)) for q in questions])
    assert float(np.mean((reworded @ held.T).argmax(1) == np.arange(len(questions)))) >= 0.95
    assert sim_embedding("Which planet is closest?") == sim_embedding("Which planet is closest?")
