"""Embedding throughput (issue 24): the local model per core before/after, and endpoint mode vs C/L.

    .venv/bin/python bench/bench_embeddings.py [--texts 512] [--repeats 3] [--endpoint-texts 8000] [--int8-variants]
        [--tries [--l3 DIR]] [--skip-local | --skip-batching]

The texts are the first `--texts` of max(--texts, --endpoint-texts) drawn from the mirror, so the
local numbers of two runs compare only at the same max (2000 or more: the same 512 texts).

Data, all real: `--texts` held-out questions of the benchmark mirror (../shared/data/hf), drawn as
bench/bench_paraphrase.py draws its corpus (ARC, GSM8K, BoolQ, SciQ, NQ-open, PIQA, WebQuestions,
WinoGrande, MMLU).

1. Local, per core (one thread each: OMP/OpenBLAS/MKL threads = 1 for numpy, ONNX Runtime
   intra-op threads = 1, and the process pinned to its first allowed core for this part): the numpy forward pass of
   before issue 24 (tests/minilm_numpy.py) vs ONNX Runtime (udfs/embeddings.py) on the same
   texts, interleaved `--repeats` times so machine load hits both alike; texts/s of each, the
   ratio, and the largest 1 - cosine between their vectors.
   Then numpy at the ONNX path's token-bounded batches (how much of the gain is batching), the
   tokenizer's own cost, and the int8 model (all-MiniLM-L6-v2-int8: the unpadded graph with
   MultiHeadAttention, batches of one token length) and the int8 model as it was before that
   (padded graph, padded batches), interleaved with the others: texts/s, 1 - cosine to the fp32
   vectors and how often each text's nearest neighbour among the texts is the same; then the
   same runs' ratios by process CPU time (per core without the time other processes take). `--int8-variants`: ONNX Runtime's int8 recipes (per tensor / per channel,
   reduce_range, MatMul only or every op, the SkipLayerNormalization fusion) side by side.
   `--tries [--l3 DIR]`: the levers tried for the last 1.15x to issue 24's 10x against the int8
   model, by CPU time (`tries`; CTranslate2 and OpenVINO only when installed, they are not
   dependencies: `pip install ctranslate2==4.8.5 openvino==2026.4.1`).
2. What batching buys on ONNX Runtime, same texts: length-sorted batches of at most 64 texts and
   BATCH_TOKENS padded tokens (what `Embedder.embed` does), other token bounds, length-sorted
   batches of 64 texts (before), batches in input order padded to their own longest text, and
   padded to the longest text of all; padded tokens / real tokens of each. Then ONNX Runtime's
   transformer optimizer (fused SkipLayerNormalization, BiasGelu, ...) on the same batches.
3. Endpoint mode: `--endpoint-texts` texts through udfs/embeddings_client.py against the simulator
   in a child process (its own CPU) at a fixed latency L per request and C concurrent slots,
   batch B texts per request: texts/s vs the ceiling C / L × B.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS: "per core" for the numpy baseline

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_paraphrase import HELDOUT_FILES, load  # noqa: E402

from udfs.embeddings import BATCH_TOKENS, DIM, INT8_MODEL_NAME, Embedder, resolve_model_dir  # noqa: E402
from udfs.paraphrase import embedding_text  # noqa: E402


def run_batches(embedder: Embedder, texts: list[str], order: list[int], pad_to: int | None, batch: int = 64,
                max_tokens: int | None = None, session=None) -> float:
    """Seconds to run `texts` through the ONNX session (or `session`) in batches of `order` (at most
    `batch` texts and `max_tokens` padded tokens), padded to the batch's longest text (pad_to None)
    or to `pad_to` tokens."""
    from udfs.embeddings import _token_bounded

    enc = embedder.tokenizer.encode_batch(texts)
    session = session or embedder.session
    start = time.perf_counter()
    for chunk in _token_bounded(order, [len(enc[i].ids) for i in order], batch, max_tokens):
        t = pad_to or max(len(enc[i].ids) for i in chunk)
        ids = np.zeros((len(chunk), t), dtype=np.int64)
        mask = np.zeros((len(chunk), t), dtype=np.int64)
        for row, i in enumerate(chunk):
            ids[row, :len(enc[i].ids)] = enc[i].ids
            mask[row, :len(enc[i].ids)] = 1
        session.run(None, {"input_ids": ids, "attention_mask": mask})
    return time.perf_counter() - start


def padded_int8(model_dir: Path) -> Embedder:
    """The int8 model as it was before the unpadded graph (issue 24, first int8 recipe): the padded
    fp32 graph quantized by `quantize_int8`, fed padded batches (an fp32 Embedder whose session is
    swapped), for the interleaved comparison."""
    import onnx
    import onnxruntime as ort

    from udfs.embeddings import INT8_DISABLED_OPTIMIZERS, onnx_graph, quantize_int8

    graph = onnx_graph(model_dir)
    quantized = quantize_int8(graph if isinstance(graph, Path) else onnx.load_from_string(graph))
    embedder = Embedder(model_dir, threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    embedder.session = ort.InferenceSession(quantized, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=list(INT8_DISABLED_OPTIMIZERS))
    return embedder


def local(texts: list[str], repeats: int, batching: bool = True) -> None:
    from tests.minilm_numpy import NumpyMiniLM

    model_dir = resolve_model_dir(None)
    before, after = NumpyMiniLM(model_dir), Embedder.get(None, threads=1)
    int8, int8_padded = Embedder.get(INT8_MODEL_NAME, threads=1), padded_int8(model_dir)
    reference, ours, quantized = before.embed(texts), after.embed(texts), int8.embed(texts)
    quantized_padded = int8_padded.embed(texts)
    gap = float(np.max(1.0 - (reference * ours).sum(1)))
    t_numpy_bounded = t_tokenize = 0.0
    cpu = dict.fromkeys(("numpy", "fp32", "int8", "int8 padded"), 0.0)  # process CPU seconds, same runs

    def timed(embed, name):
        started, used = time.perf_counter(), time.process_time()
        embed(texts)
        cpu[name] += time.process_time() - used
        return time.perf_counter() - started

    wall = dict.fromkeys(cpu, 0.0)
    runs = [("int8", int8.embed), ("numpy", before.embed), ("int8 padded", int8_padded.embed), ("fp32", after.embed)]
    for r in range(repeats):
        for name, embed in runs[r % 4:] + runs[:r % 4]:  # each repeat starts with the next one: no fixed order
            wall[name] += timed(embed, name)
        start = time.perf_counter()
        before.embed(texts, max_batch_tokens=BATCH_TOKENS)
        t_numpy_bounded += time.perf_counter() - start
        start = time.perf_counter()
        after.tokenizer.encode_batch(texts)
        t_tokenize += time.perf_counter() - start
    t_int8, t_before, t_int8_padded, t_after = wall["int8"], wall["numpy"], wall["int8 padded"], wall["fp32"]
    n = len(texts) * repeats
    print(f"local, one thread, {len(texts)} texts x {repeats} (interleaved): numpy forward pass as before issue 24 "
          f"(batches of 64) {n / t_before:.1f} texts/s, ONNX Runtime (Embedder.embed: batches of <= 64 texts and "
          f"<= {BATCH_TOKENS} padded tokens) {n / t_after:.1f} texts/s: {t_before / t_after:.2f}x; "
          f"max 1 - cosine {gap:.1e}")
    print(f"  of which batching: numpy with the same token-bounded batches {n / t_numpy_bounded:.1f} texts/s "
          f"({t_before / t_numpy_bounded:.2f}x numpy's old batching; ONNX Runtime {t_numpy_bounded / t_after:.2f}x "
          f"numpy at equal batches); the tokenizer alone {n / t_tokenize:,.0f} texts/s "
          f"({t_tokenize / t_after:.1%} of the ONNX Runtime time)")
    for label, vectors, t, name in (
            (f"int8 ({INT8_MODEL_NAME}: unpadded graph with MultiHeadAttention, batches of one length)",
             quantized, t_int8, "int8"),
            ("int8 as before (padded graph, padded batches)", quantized_padded, t_int8_padded, "int8 padded")):
        drift = 1.0 - (ours * vectors).sum(1)
        same_top1 = float(np.mean(top1_neighbours(ours) == top1_neighbours(vectors)))
        print(f"  {label}, interleaved: {n / t:.1f} texts/s: {t_before / t:.2f}x numpy, {t_after / t:.2f}x fp32 "
              f"ONNX Runtime; 1 - cosine to fp32: max {drift.max():.4f}, p99 {np.percentile(drift, 99):.4f}, median "
              f"{np.median(drift):.4f}; same nearest neighbour among the {len(texts)} texts as fp32 for "
              f"{same_top1:.1%} of them")
    print(f"  per core by CPU time (process seconds of the same runs; what other processes take is not "
          f"counted): numpy {n / cpu['numpy']:.1f} texts/s, fp32 {cpu['numpy'] / cpu['fp32']:.2f}x numpy, "
          f"int8 {cpu['numpy'] / cpu['int8']:.2f}x numpy, int8 as before {cpu['numpy'] / cpu['int8 padded']:.2f}x "
          f"numpy; int8 / int8 as before {cpu['int8 padded'] / cpu['int8']:.2f}x (wall {t_int8_padded / t_int8:.2f}x)")
    if not batching:
        return

    enc = after.tokenizer.encode_batch(texts)
    sorted_order = sorted(range(len(texts)), key=lambda i: (len(enc[i].ids), texts[i]))
    input_order = list(range(len(texts)))
    longest = max(len(e.ids) for e in enc)
    real = sum(len(e.ids) for e in enc)
    plans = {f"sorted, <= {BATCH_TOKENS} tokens (the default)": (sorted_order, None, BATCH_TOKENS),
             "sorted, <= 256 tokens": (sorted_order, None, 256), "sorted, <= 1024 tokens": (sorted_order, None, 1024),
             "sorted, <= 2048 tokens": (sorted_order, None, 2048),
             "sorted, 64 texts, no token bound (before)": (sorted_order, None, None),
             "input order + dynamic padding": (input_order, None, None),
             f"input order + padding to the longest ({longest} tokens)": (input_order, longest, None)}
    times = dict.fromkeys(plans, 0.0)
    for _ in range(repeats):
        for name, (order, pad, bound) in plans.items():
            times[name] += run_batches(after, texts, order, pad, 64, bound)
    base = times[next(iter(plans))]
    mean_len = np.mean([len(e.ids) for e in enc])

    def padded(order, pad, bound):
        lengths = [len(enc[i].ids) for i in order]
        from udfs.embeddings import _token_bounded

        return sum(len(c) * (pad or max(len(enc[i].ids) for i in c)) for c in _token_bounded(order, lengths, 64, bound))

    print(f"batching on ONNX Runtime (at most 64 texts a batch, mean {mean_len:.0f} tokens/text, {real} real tokens): "
          + "; ".join(f"{name} {n / t:.1f} texts/s ({t / base:.2f}x the time, padded tokens {padded(*plans[name]) / real:.2f}x)"
                      for name, t in times.items()))
    fusions(after, texts, sorted_order, repeats)


def top1_neighbours(vectors: np.ndarray) -> np.ndarray:
    """Each row's most similar other row (cosine; rows are unit vectors)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2.0)
    return sims.argmax(1)


def int8_variants(texts: list[str], repeats: int) -> None:
    """ONNX Runtime's dynamic int8 quantization recipes on the fp32 graph, one thread, the same
    batches as Embedder.embed, interleaved: texts/s against the fp32 graph and 1 - cosine to its
    vectors. What `udfs.embeddings.quantize_int8` chose among (issue 24)."""
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    from udfs.embeddings import INT8_DISABLED_OPTIMIZERS, onnx_graph

    logging.getLogger().setLevel(logging.ERROR)
    fp32 = Embedder.get(None, threads=1)
    graph = onnx_graph(resolve_model_dir(None))
    if not isinstance(graph, Path):
        print("int8 variants: the graph cache is not writable; skipped")
        return
    recipes = {"per tensor, every op (Gather too)": {},
               "per channel, every op": {"per_channel": True},
               "per tensor, reduce_range": {"reduce_range": True},
               "per channel, reduce_range": {"per_channel": True, "reduce_range": True},
               "per tensor, MatMul only": {"op_types_to_quantize": ["MatMul"]},
               "per channel, MatMul only (all-MiniLM-L6-v2-int8)": {"op_types_to_quantize": ["MatMul"],
                                                                    "per_channel": True}}

    def session(path, disabled=()):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled))

    import tempfile

    sessions = {"fp32 (Embedder)": fp32.session}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in recipes.items():
            out = os.path.join(tmp, f"{len(sessions)}.onnx")
            quantize_dynamic(str(graph), out, extra_options={"MatMulConstBOnly": True}, **kwargs)
            sessions[name] = session(out, INT8_DISABLED_OPTIMIZERS)
        sessions["per channel, MatMul only, with SkipLayerNormFusion"] = session(out)
    vectors, times = {}, dict.fromkeys(sessions, 0.0)
    for name, s in sessions.items():
        fp32.session = s
        vectors[name] = fp32.embed(texts)
    try:
        for _ in range(repeats):
            for name, s in sessions.items():
                fp32.session = s
                start = time.perf_counter()
                fp32.embed(texts)
                times[name] += time.perf_counter() - start
    finally:
        fp32.session = sessions["fp32 (Embedder)"]
    base, ref = times["fp32 (Embedder)"], vectors["fp32 (Embedder)"]
    print(f"int8 recipes (quantize_dynamic, one thread, {len(texts)} texts x {repeats}, interleaved; SkipLayerNormFusion "
          f"off unless said):")
    for name, t in times.items():
        drift = 1.0 - (ref * vectors[name]).sum(1)
        print(f"  {name}: {len(texts) * repeats / t:.1f} texts/s, {base / t:.2f}x fp32; 1 - cosine max "
              f"{drift.max():.4f}, median {np.median(drift):.4f}")


def _ct2_int8(model_dir: Path, directory: str):
    """The packaged model converted to CTranslate2's TransformerEncoderSpec from the same safetensors
    (as CTranslate2's own Transformers converter maps BertModel, without PyTorch), int8 weights per
    output channel: an embed(texts) over Embedder.embed's padded batches, mean pooling in numpy."""
    import json

    import ctranslate2
    from ctranslate2.converters import utils
    from ctranslate2.specs import common_spec, transformer_spec
    from safetensors.numpy import load_file

    w = load_file(str(model_dir / "model.safetensors"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    spec = transformer_spec.TransformerEncoderModelSpec(
        transformer_spec.TransformerEncoderSpec(config["num_hidden_layers"], config["num_attention_heads"],
                                                pre_norm=False, activation=common_spec.Activation.GELU,
                                                layernorm_embedding=True, num_source_embeddings=2,
                                                embeddings_merge=common_spec.EmbeddingsMerge.ADD),
        pooling_layer=True, pooling_activation=common_spec.Activation.Tanh)
    enc = spec.encoder
    enc.scale_embeddings = False

    def linear(target, name):
        target.weight, target.bias = w[name + ".weight"], w[name + ".bias"]

    def norm(target, name):
        target.gamma, target.beta = w[name + ".weight"], w[name + ".bias"]

    enc.embeddings[0].weight = w["embeddings.word_embeddings.weight"]
    enc.embeddings[1].weight = w["embeddings.token_type_embeddings.weight"]
    enc.position_encodings.encodings = w["embeddings.position_embeddings.weight"]
    norm(enc.layernorm_embedding, "embeddings.LayerNorm")
    linear(spec.pooler_dense, "pooler.dense")
    for i, layer in enumerate(enc.layer):
        pre = f"encoder.layer.{i}."
        qkv = [common_spec.LinearSpec() for _ in range(3)]
        for part, name in zip(qkv, ("query", "key", "value")):
            linear(part, pre + "attention.self." + name)
        utils.fuse_linear(layer.self_attention.linear[0], qkv)
        linear(layer.self_attention.linear[1], pre + "attention.output.dense")
        norm(layer.self_attention.layer_norm, pre + "attention.output.LayerNorm")
        linear(layer.ffn.linear_0, pre + "intermediate.dense")
        linear(layer.ffn.linear_1, pre + "output.dense")
        norm(layer.ffn.layer_norm, pre + "output.LayerNorm")
    vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    spec.register_vocabulary(sorted(vocab, key=vocab.get))
    spec.validate()
    spec.optimize(quantization="int8")
    spec.save(directory)
    encoder = ctranslate2.Encoder(directory, device="cpu", compute_type="int8", intra_threads=1, inter_threads=1)
    tokenizer = Embedder.get(None, threads=1).tokenizer

    def embed(texts):
        from udfs.embeddings import padded_batches

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for chunk, ids, mask in padded_batches(tokenizer, texts, 64, max_batch_tokens=BATCH_TOKENS):
            hidden = np.asarray(encoder.forward_batch([row[m == 1].tolist() for row, m in zip(ids, mask)])
                                .last_hidden_state)
            pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    return embed


def _openvino_w8(model_dir: Path, group_size: str):
    """OpenVINO's CPU plugin (one thread, f32 precision hint) on the padded fp32 graph whose MatMul
    weights are int8 per output channel behind DequantizeLinear (OpenVINO reads them as compressed
    weights) with its dynamic quantization of activations (`DYNAMIC_QUANTIZATION_GROUP_SIZE`)."""
    import onnx
    import openvino
    from onnx import helper, numpy_helper

    from udfs.embeddings import onnx_graph, padded_batches

    model = onnx.load(str(onnx_graph(model_dir)))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            name = node.input[1]
            weight = numpy_helper.to_array(inits[name])
            scale = np.where(np.abs(weight).max(0) > 0, np.abs(weight).max(0) / 127.0, 1.0).astype(np.float32)
            model.graph.initializer.remove(inits[name])
            model.graph.initializer.extend([
                numpy_helper.from_array(np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), name + ".q"),
                numpy_helper.from_array(scale, name + ".scale")])
            nodes.append(helper.make_node("DequantizeLinear", [name + ".q", name + ".scale"], [name], axis=1))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {
        "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": group_size})
    request, tokenizer = compiled.create_infer_request(), Embedder.get(None, threads=1).tokenizer

    def embed(texts):
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for chunk, ids, mask in padded_batches(tokenizer, texts, 64, max_batch_tokens=BATCH_TOKENS):
            out[chunk] = request.infer({"input_ids": ids, "attention_mask": mask})[0]
        return out

    return embed


def tries(texts: list[str], repeats: int, l3_dir: str | None = None) -> None:
    """Issue 24's last 1.15x (`--tries`): levers for the int8 model tried against it and the numpy
    pass, one thread, the same 512 texts, interleaved (order rotated every repeat), by process CPU
    time: ONNX Runtime session variants (MultiHeadAttention's flash path off, no memory arena / memory
    pattern), the padded graph with MultiHeadAttention and a key-length mask (padded batches, so
    larger matrix products), other token bounds, CTranslate2 int8 and OpenVINO (weights int8 +
    dynamic activation quantization) when installed. 1 - cosine to the fp32 vectors for each. `l3_dir`:
    also paraphrase-MiniLM-L3-v2 (a directory written by bench/minilm_l3_weights.py) as an unpadded
    int8 graph, a model change whose vectors are not comparable (its recall: bench_paraphrase.py)."""
    import importlib.util
    import tempfile

    import onnx
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from tests.minilm_numpy import NumpyMiniLM
    from udfs.bert_onnx import build_sentence_encoder
    from udfs.embeddings import INT8_DISABLED_OPTIMIZERS, onnx_graph, padded_batches, quantize_int8, unpadded_batches

    model_dir = resolve_model_dir(None)
    fp32, int8 = Embedder.get(None, threads=1), Embedder.get(INT8_MODEL_NAME, threads=1)
    tokenizer = fp32.tokenizer

    def session(graph, env=None, **options):
        saved = {k: os.environ.get(k) for k in env or {}}
        os.environ.update(env or {})  # read when the session's kernels are created
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = 1, 1, 3
        for k, v in options.items():
            setattr(o, k, v)
        try:
            return ort.InferenceSession(graph, o, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(INT8_DISABLED_OPTIMIZERS))
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    def unpadded(s, bound=BATCH_TOKENS):
        def embed(texts):
            out = np.zeros((len(texts), DIM), dtype=np.float32)
            for chunk, ids in unpadded_batches(tokenizer, texts, 64, bound):
                out[chunk] = s.run(None, {"input_ids": ids})[0]
            return out
        return embed

    def padded(s, bound=BATCH_TOKENS):
        def embed(texts):
            out = np.zeros((len(texts), DIM), dtype=np.float32)
            for chunk, ids, mask in padded_batches(tokenizer, texts, 64, max_batch_tokens=bound):
                out[chunk] = s.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            return out
        return embed

    graph = str(onnx_graph(model_dir, int8=True))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    masked = quantize_int8(onnx.load_from_string(build_sentence_encoder(
        load_file(str(model_dir / "model.safetensors")), config, fused_attention=True).SerializeToString()))
    runs = {"numpy": NumpyMiniLM(model_dir).embed, INT8_MODEL_NAME: int8.embed,
            "int8, MultiHeadAttention flash path off (ORT_DISABLE_FLASH_ATTENTION=1)":
                unpadded(session(graph, {"ORT_DISABLE_FLASH_ATTENTION": "1"})),
            "int8, no memory pattern": unpadded(session(graph, enable_mem_pattern=False)),
            "int8, no CPU memory arena": unpadded(session(graph, enable_cpu_mem_arena=False)),
            "int8, batches of <= 1024 tokens": unpadded(session(graph), 1024),
            "int8 padded graph + MultiHeadAttention with key lengths, padded batches <= 512 tokens":
                padded(session(masked)),
            "the same, <= 1024 tokens": padded(session(masked), 1024)}
    tmp = tempfile.TemporaryDirectory()
    if importlib.util.find_spec("ctranslate2"):
        os.environ.setdefault("CT2_FORCE_CPU_ISA", "AVX512")  # it picks AVX2 on AMD CPUs otherwise
        runs["CTranslate2 int8 (AVX512, oneDNN), padded batches"] = _ct2_int8(model_dir, tmp.name)
    else:
        print("tries: ctranslate2 is not installed; skipped")
    if importlib.util.find_spec("openvino"):
        for group in ("128", "32"):
            runs[f"OpenVINO, weights int8 + dynamic quantization group {group}, padded batches"] = \
                _openvino_w8(model_dir, group)
    else:
        print("tries: openvino is not installed; skipped")
    reference = fp32.embed(texts)
    drift = {name: 1.0 - (reference * embed(texts)).sum(1) for name, embed in runs.items()}
    if l3_dir:
        l3 = Path(l3_dir)
        runs["paraphrase-MiniLM-L3-v2 int8, unpadded (another model)"] = unpadded(session(quantize_int8(
            build_sentence_encoder(load_file(str(l3 / "model.safetensors")),
                                   json.loads((l3 / "config.json").read_text(encoding="utf-8")), padded=False))))
    names, cpu = list(runs), dict.fromkeys(runs, 0.0)
    print(f"tries, one thread, {len(texts)} texts x {repeats}, interleaved by CPU time "
          f"(load average {os.getloadavg()[0]:.1f} at start):")
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            used = time.process_time()
            runs[name](texts)
            cpu[name] += time.process_time() - used
    n = len(texts) * repeats
    for name in names:
        gap = (f"; 1 - cosine to fp32 max {drift[name].max():.4f}, median {np.median(drift[name]):.4f}"
               if name in drift else "")
        print(f"  {name}: {n / cpu[name]:.1f} texts/s CPU, {cpu['numpy'] / cpu[name]:.2f}x numpy, "
              f"{cpu[INT8_MODEL_NAME] / cpu[name]:.2f}x the int8 model{gap}")
    print(f"  (load average {os.getloadavg()[0]:.1f} at end)")
    tmp.cleanup()


def fusions(embedder: Embedder, texts: list[str], order: list[int], repeats: int) -> None:
    """ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer.optimize_model`,
    model_type 'bert') on the cached graph: which fused operators it finds, and its time against the
    graph Embedder runs (ORT_ENABLE_ALL) at the same batches, one thread, interleaved."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    from udfs.embeddings import onnx_graph

    graph = onnx_graph(resolve_model_dir(None))
    if not isinstance(graph, Path):
        print("fusions: the graph cache is not writable; skipped")
        return
    import logging

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimize_model(str(graph), model_type="bert", num_heads=12, hidden_size=DIM, opt_level=0)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        optimized.save_model_to_file(path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    t = base = 0.0
    for _ in range(repeats):
        base += run_batches(embedder, texts, order, None, 64, BATCH_TOKENS)
        t += run_batches(embedder, texts, order, None, 64, BATCH_TOKENS, session)
    print(f"transformer optimizer (optimize_model bert): fused {fused or 'nothing'}; {len(texts) * repeats / t:.1f} "
          f"texts/s vs {len(texts) * repeats / base:.1f} ({t / base:.2f}x the time of the graph Embedder runs, "
          f"interleaved)")


def endpoint(texts: list[str], latency_ms: float, concurrency: int, batch: int) -> None:
    from simulator import SimSettings
    from simulator.embeddings import SIM_EMBEDDING_MODEL
    from simulator.server import SimulatorProcess
    from udfs.embeddings_client import EmbeddingsClient, EmbeddingsStats, expected_rate
    from udfs.llm_client import EndpointSettings

    settings = SimSettings(latency_ms=latency_ms, latency_jitter_ms=0.0, latency_dist="fixed",
                           max_concurrency=concurrency)
    with SimulatorProcess(settings) as sim:
        client = EmbeddingsClient(EndpointSettings(base_url=sim.base_url, model=SIM_EMBEDDING_MODEL, api_key_env=None,
                                                   require_key=False, max_concurrency=concurrency), batch)
        client.embed(texts[:batch])  # connections up
        stats = EmbeddingsStats()
        start, cpu = time.perf_counter(), time.process_time()
        vectors = client.embed(texts, stats=stats)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        client.close()
        served = sim.stats()["embedded_texts"]
    ceiling = expected_rate(concurrency, latency_ms / 1000.0, batch)
    print(f"endpoint (simulator in a child process, fixed latency {latency_ms:.0f} ms, C={concurrency}, "
          f"batch {batch}): {len(texts)} texts in {wall:.2f}s = {len(texts) / wall:,.0f} texts/s vs "
          f"C/L x B = {ceiling:,.0f}: {len(texts) / wall / ceiling:.2f}x; {stats.requests} requests, "
          f"{stats.http_attempts} attempts, {served} texts served, {vectors.shape[1]} dims; client CPU "
          f"{cpu:.1f}s ({cpu / len(texts) * 1e3:.2f} ms/text)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--endpoint-texts", type=int, default=8000)
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-local", action="store_true", help="only the endpoint part")
    ap.add_argument("--skip-batching", action="store_true", help="local part: skip the batching plans and the optimizer")
    ap.add_argument("--int8-variants", action="store_true", help="also time ONNX Runtime's int8 quantization recipes")
    ap.add_argument("--tries", action="store_true",
                    help="also time the levers tried for issue 24's last 1.15x against the int8 model (bench/README.md)")
    ap.add_argument("--l3", default=None, metavar="DIR",
                    help="--tries: also paraphrase-MiniLM-L3-v2 from DIR (bench/minilm_l3_weights.py)")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")
    pool = [embedding_text(q) for _, q in load(HELDOUT_FILES, max(args.texts, args.endpoint_texts))]
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # one core for the local part
    if not args.skip_local:
        local(pool[:args.texts], args.repeats, batching=not args.skip_batching)
        if args.int8_variants:
            int8_variants(pool[:args.texts], args.repeats)
        if args.tries:
            tries(pool[:args.texts], args.repeats, args.l3)
    os.sched_setaffinity(0, cores)  # the endpoint part: the simulator child gets its own CPU
    endpoint((pool * (1 + args.endpoint_texts // max(1, len(pool))))[:args.endpoint_texts], args.latency_ms,
             args.concurrency, args.batch)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
