"""The `text_embeddings` cache (jobs/filters/embedding_cache.py) on real held-out questions: a text is
embedded once per model across runs, counted at the simulator's `/v1/embeddings` (texts received)
and by the cache's own counter; the endpoint's vectors are the simulator's; the local model fills
the same cache under its own model name; the paraphrase filter's retrieval goes through it."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.filters.embedding_cache import embed_cached
from jobs.filters.paraphrase import ensure_heldout_embeddings, neighbours
from schemas.tables import HELDOUT_EMBEDDINGS, TEXT_EMBEDDINGS
from simulator.embeddings import SIM_EMBEDDING_MODEL, sim_embedding
from tests.spark.test_paraphrase import HELDOUT_ROWS, candidates, write_heldout
from udfs.embeddings import text_hash
from udfs.paraphrase import embedding_text

pytestmark = pytest.mark.spark


def endpoint_config(make_config, lakehouse, sim, **extra):
    overrides = [f"schema={lakehouse.config.schema_name}",
                 f"curate.paraphrase.embeddings_endpoint.base_url={sim.base_url}",
                 f"curate.paraphrase.embeddings_endpoint.model={SIM_EMBEDDING_MODEL}",
                 "curate.paraphrase.embeddings_endpoint.api_key_env=null",
                 *(f"curate.paraphrase.embeddings_endpoint.{k}={v}" for k, v in extra.items())]
    return make_config(*overrides)


def test_a_second_run_embeds_nothing_at_the_endpoint(lakehouse, make_config, start_sim):
    sim = start_sim(seed=3, latency_ms=1.0, latency_jitter_ms=0.0)
    config = endpoint_config(make_config, lakehouse, sim, batch_size=2)
    write_heldout(lakehouse, HELDOUT_ROWS[:2])
    first = ensure_heldout_embeddings(lakehouse, config)
    assert first.built and first.items == 2 and first.embedded == 2
    assert sim.stats()["embedded_texts"] == 2
    cache_version = lakehouse.version(TEXT_EMBEDDINGS.name)

    # the endpoint's vectors are stored as served (unit rows), keyed by (model, sha256 of the text)
    rows = {r.heldout_id: r.embedding for r in lakehouse.read(HELDOUT_EMBEDDINGS.name).collect()}
    for row in HELDOUT_ROWS[:2]:
        want = np.asarray(sim_embedding(embedding_text(row["question"], row["choices"])), dtype=np.float32)
        assert np.allclose(rows[row["heldout_id"]], want, atol=1e-6)
    cached = lakehouse.read(TEXT_EMBEDDINGS.name).collect()
    assert {(r.model, r.source, r.dim) for r in cached} == {(SIM_EMBEDDING_MODEL, "endpoint", 384)}
    assert {r.text_hash for r in cached} == {text_hash(embedding_text(r["question"], r["choices"]))
                                              for r in HELDOUT_ROWS[:2]}

    # a new heldout version with one new item: only that item's text goes to the endpoint
    write_heldout(lakehouse, HELDOUT_ROWS[2:])
    again = ensure_heldout_embeddings(lakehouse, config)
    assert again.built and again.items == 3 and again.embedded == 1
    assert sim.stats()["embedded_texts"] == 3

    # the same texts once more, as a later run would ask: 0 embedded, nothing committed
    texts = lakehouse.read("heldout").selectExpr("question AS text")
    # the bare questions: the two ARC ones are new texts, GSM8K's (no options) is its embedding text
    assert embed_cached(lakehouse, config, texts).embedded == 2
    assert sim.stats()["embedded_texts"] == 5
    requests = sim.stats()["embedding_requests"]
    version = lakehouse.version(TEXT_EMBEDDINGS.name)
    result = embed_cached(lakehouse, config, texts)
    assert (result.embedded, result.cached) == (0, 3)
    assert sim.stats()["embedded_texts"] == 5 and sim.stats()["embedding_requests"] == requests
    assert lakehouse.version(TEXT_EMBEDDINGS.name) == version > cache_version


def test_retrieval_through_the_cache_embeds_candidates_once(lakehouse, make_config, start_sim):
    sim = start_sim(seed=3, latency_ms=1.0, latency_jitter_ms=0.0)
    config = endpoint_config(make_config, lakehouse, sim)
    write_heldout(lakehouse, HELDOUT_ROWS)
    ensure_heldout_embeddings(lakehouse, config)
    items = candidates(lakehouse)
    first = {(r.gen_id, r.heldout_id) for r in neighbours(lakehouse, config, items).collect()}
    sent = sim.stats()["embedded_texts"]
    assert sent == len(HELDOUT_ROWS) + items.count()
    # the simulator's hashed n-gram vectors put a reworded question next to its source
    assert ("g_reworded_arc", "h_arc2") in first
    second = {(r.gen_id, r.heldout_id) for r in neighbours(lakehouse, config, items).collect()}
    assert second == first and sim.stats()["embedded_texts"] == sent


def test_the_local_model_and_an_endpoint_keep_separate_cache_rows(lakehouse, make_config, start_sim):
    sim = start_sim(seed=3, latency_ms=1.0, latency_jitter_ms=0.0)
    texts = lakehouse.spark.createDataFrame([(r["question"],) for r in HELDOUT_ROWS] + [(None,)], "text string")
    local = embed_cached(lakehouse, lakehouse.config, texts)
    assert (local.embedded, local.cached, local.source) == (4, 0, "local")
    assert embed_cached(lakehouse, lakehouse.config, texts).embedded == 0
    remote = embed_cached(lakehouse, endpoint_config(make_config, lakehouse, sim), texts)
    assert (remote.embedded, remote.source) == (4, "endpoint")
    by_model = {(r.model, r.source): r.n for r in
                lakehouse.read(TEXT_EMBEDDINGS.name).groupBy("model", "source").count().withColumnRenamed("count", "n").collect()}
    assert by_model == {(lakehouse.config.curate.paraphrase.model, "local"): 4, (SIM_EMBEDDING_MODEL, "endpoint"): 4}
    assert lakehouse.config.curate.paraphrase.model == "all-MiniLM-L6-v2-int8"  # the default (issue 24)
