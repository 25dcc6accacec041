"""The numpy forward pass of all-MiniLM-L6-v2 that udfs/embeddings.py ran before issue 24 (kept only
as the reference the ONNX Runtime encoder is checked against: tests/unit/test_embeddings.py, vectors
within 1e-4 cosine; and as the "before" of bench/bench_embeddings.py). Not used by the pipeline.

`NumpyMiniLM(model_dir).embed(texts, batch_size)` → (n, 384) float32 unit rows, the same
tokenization, length-sorted batching and mean pooling as `udfs.embeddings.Embedder`; the encoder is
the standard BERT encoder (post-LayerNorm, exact GELU, 12 heads) in numpy + BLAS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))  # a Python float keeps float32 (NEP 50)



class NumpyMiniLM:
    def __init__(self, model_dir: Path | str):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.w = {k: (np.ascontiguousarray(v.T) if k.endswith("dense.weight") or ".self." in k and k.endswith(".weight")
                      else v).astype(np.float32, copy=False)
                  for k, v in load_file(str(model_dir / "model.safetensors")).items() if k != "embeddings.position_ids"}
        self.dim = int(self.w["embeddings.word_embeddings.weight"].shape[1])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(256)
        self.tokenizer.no_padding()

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

    def embed(self, texts: Sequence[str | None], batch_size: int = 64, max_batch_tokens: int | None = None) -> np.ndarray:
        """As before issue 24: batches of `batch_size` length-sorted texts (`max_batch_tokens` None);
        bench_embeddings also runs it with the token bound the ONNX path uses."""
        from udfs.embeddings import padded_batches

        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for chunk, ids, mask in padded_batches(self.tokenizer, texts, batch_size, mask_dtype=np.float32,
                                               max_batch_tokens=max_batch_tokens):
            hidden = self._encode(ids, mask)
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out
