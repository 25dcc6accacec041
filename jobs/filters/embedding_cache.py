"""Embed texts at most once per model across runs: the `text_embeddings` Delta cache and the Spark
call that fills it, with the local model (udfs/embeddings.py, ONNX Runtime) or an OpenAI-compatible
`/v1/embeddings` endpoint (udfs/embeddings_client.py), as `curate.paraphrase.embeddings_endpoint`
says.

Reads `text_embeddings` (model, text_hash, embedding); writes `text_embeddings` (every column).

`embed_cached(lakehouse, config, texts)`: `texts` has a string column `text` (None counts as '').
Every distinct text is keyed by `text_hash` = sha256 of its UTF-8 bytes, hex (Spark's `sha2(text,
256)`, the same as `udfs.embeddings.text_hash`); the texts whose (model, text_hash) is not in the
cache are embedded on executors (`mapInPandas`; the local model loaded once per Python worker, or
the endpoint's client built once per worker, its `max_concurrency` split over the tasks), the
result is checkpointed (evaluated once: an endpoint is paid once) and MERGEd insert-only into
`text_embeddings`. It returns `CacheResult(embedded, cached, seconds)`; `vectors(lakehouse, config)`
is the cache's (text_hash, embedding) rows of the configured model to join against. A second run
over the same texts embeds 0 (tests/spark/test_embedding_cache.py counts at the simulator).

The paraphrase filter's cross-lingual retrievals cache their vectors here too, each under its own
model name (`MULTILINGUAL_MODEL`, embedded locally by udfs/embeddings_multilingual.py; `E5_MODEL`,
by udfs/embeddings_e5.py): `embed_cached(..., model=MULTILINGUAL_MODEL)`, `vectors(...,
model=E5_MODEL)`. e5 is slow (~10 texts/s per core): before embedding with it, `embed_cached` says
how many texts and roughly how long (`udfs.embeddings_e5.estimate_seconds`).

Errors: an endpoint batch that fails after its retries raises `EmbeddingsError` in the task (Spark
retries the task; then the stage fails with the error class and the server's message, redacted):
no text is left without its vector silently. The API key reaches workers as the LLM stages' does
(`jobs.llm_stage.endpoint.shared_api_key`: an encrypted broadcast, never on disk).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType, TimestampType

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from schemas.tables import TEXT_EMBEDDINGS
from udfs.embeddings_e5 import MODEL_NAME as E5_MODEL  # its only configurable value
from udfs.embeddings_multilingual import MODEL_NAME as MULTILINGUAL_MODEL  # its only configurable value

# the cross-lingual models: always embedded locally, whatever `embeddings_endpoint` says
LOCAL_CROSS_LINGUAL = (MULTILINGUAL_MODEL, E5_MODEL)

READS = (TEXT_EMBEDDINGS.name,)
WRITES = (TEXT_EMBEDDINGS.name,)
_EMBEDDED = StructType([
    StructField("model", StringType(), False), StructField("text_hash", StringType(), False),
    StructField("embedding", ArrayType(FloatType()), False), StructField("dim", IntegerType(), False),
    StructField("source", StringType(), False), StructField("embedded_at", TimestampType(), False),
])


@dataclass
class CacheResult:
    embedded: int   # distinct texts embedded now (sent to the model or endpoint)
    cached: int     # distinct texts found in the cache
    seconds: float = 0.0
    source: str = "local"

    def summary(self) -> str:
        rate = f", {self.embedded / self.seconds:,.0f} texts/s" if self.embedded and self.seconds > 0 else ""
        return (f"embedded {self.embedded:,} new texts ({self.source}{rate}), "
                f"{self.cached:,} from the text_embeddings cache")


def endpoint_settings(config: Config):
    """`udfs.llm_client.EndpointSettings` of `curate.paraphrase.embeddings_endpoint` (None: local)."""
    from udfs.embeddings_client import embeddings_settings

    ep = config.curate.paraphrase.embeddings_endpoint
    return None if ep is None else embeddings_settings(ep)


def vectors(lakehouse: Lakehouse, config: Config, model: str | None = None) -> DataFrame:
    """(text_hash, embedding) of `model` (default: the configured embedding model) from `text_embeddings`."""
    lakehouse.ensure(TEXT_EMBEDDINGS)
    model = model or config.curate.paraphrase.embedding_model()
    return lakehouse.read(TEXT_EMBEDDINGS.name).where(F.col("model") == model).select("text_hash", "embedding")


def with_text_hash(df: DataFrame, column: str = "text") -> DataFrame:
    """`df` plus `text_hash` (sha256 hex of the column's UTF-8 text, '' for None)."""
    return df.withColumn("text_hash", F.sha2(F.coalesce(F.col(column), F.lit("")), 256))


def local_cross_lingual_embedder(model: str, threads: int = 1) -> Callable[[list], "np.ndarray"]:
    """The `embed(texts) -> (n, dim) unit rows` of a cross-lingual model, loaded once per Python
    process: USE multilingual v3 (MULTILINGUAL_MODEL) or multilingual-e5-small (E5_MODEL).
    ValueError for another name; the model's *Unavailable error when its package is missing."""
    if model == MULTILINGUAL_MODEL:
        from udfs.embeddings_multilingual import MultilingualEmbedder

        return MultilingualEmbedder.get(threads).embed
    if model == E5_MODEL:
        from udfs.embeddings_e5 import E5Embedder

        return E5Embedder.get(threads).embed
    raise ValueError(f"not a cross-lingual model: {model!r} (one of {LOCAL_CROSS_LINGUAL})")


def _embed_partition(model: str, local_model: str, threads: int, settings, batch_size: int, concurrency: int,
                     key_handle) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import datetime as dt

        if settings is None and local_model in LOCAL_CROSS_LINGUAL:
            embed, source = local_cross_lingual_embedder(local_model, threads), "local"
        elif settings is None:
            from udfs.embeddings import Embedder

            embed, source = Embedder.get(local_model, threads).embed, "local"
        else:
            from dataclasses import replace

            from udfs.embeddings_client import EmbeddingsClient

            key = key_handle.value.reveal() if key_handle is not None else None
            client = EmbeddingsClient.get(replace(settings, max_concurrency=concurrency), batch_size, key)
            embed, source = client.embed, "endpoint"
        for batch in batches:
            if batch.empty:
                continue
            matrix = embed(list(batch["text"]))
            now = dt.datetime.now(dt.timezone.utc)
            yield pd.DataFrame({"model": model, "text_hash": batch["text_hash"].values,
                                "embedding": list(matrix), "dim": matrix.shape[1], "source": source,
                                "embedded_at": now})

    return run


def embed_cached(lakehouse: Lakehouse, config: Config, texts: DataFrame,
                 progress: Callable[[str], None] | None = None, model: str | None = None) -> CacheResult:
    """Embed the distinct texts of `texts.text` not yet in `text_embeddings` for the configured
    model and MERGE them in (see the module docstring). `model` = MULTILINGUAL_MODEL or E5_MODEL:
    that cross-lingual model (udfs/embeddings_multilingual.py, udfs/embeddings_e5.py), always
    local, whatever `embeddings_endpoint` says; None: the configured model. With E5_MODEL,
    `progress` also hears the rough time it will take before it starts."""
    from jobs.llm_stage.endpoint import shared_api_key

    say = progress or (lambda _: None)
    p = config.curate.paraphrase
    multilingual = model in LOCAL_CROSS_LINGUAL
    model = model or p.embedding_model()
    settings = None if multilingual else endpoint_settings(config)
    source = "endpoint" if settings is not None else "local"
    distinct = with_text_hash(texts.select(F.coalesce(F.col("text"), F.lit("")).alias("text"))).dropDuplicates(["text_hash"])
    missing = distinct.join(vectors(lakehouse, config, model).select("text_hash"), "text_hash", "left_anti").localCheckpoint(eager=True)
    todo, total = missing.count(), distinct.count()
    if not todo:
        return CacheResult(0, total, 0.0, source)
    started = time.monotonic()
    spark = lakehouse.spark
    cores = max(1, spark.sparkContext.defaultParallelism)
    batch_size = p.embeddings_endpoint.batch_size if p.embeddings_endpoint and not multilingual else 64
    partitions = max(1, min(cores, math.ceil(todo / batch_size)))
    say(f"paraphrase: embedding {todo:,} new texts with {model} ({source}, {partitions} task(s)); "
        f"{total - todo:,} are in the text_embeddings cache…")
    if model == E5_MODEL:
        from udfs.embeddings_e5 import TEXTS_PER_SECOND_PER_CORE, estimate_seconds

        core_hours = todo / TEXTS_PER_SECOND_PER_CORE / 3600
        say(f"paraphrase: {model} embeds ~{TEXTS_PER_SECOND_PER_CORE} texts/s per core: about "
            f"{estimate_seconds(todo, partitions) / 60:,.1f} min on {partitions} core(s) ({core_hours:,.2f} "
            f"core-hours), once: later runs read them from text_embeddings")
    with (shared_api_key(spark, settings) if settings is not None else contextlib.nullcontext()) as key_handle:
        from udfs.llm_udf import per_task_concurrency

        concurrency = per_task_concurrency(settings.max_concurrency, partitions) if settings is not None else 1
        fn = _embed_partition(model, model if multilingual else p.model, p.threads, settings, batch_size, concurrency,
                              key_handle)
        embedded = missing.repartition(partitions).mapInPandas(fn, _EMBEDDED).localCheckpoint(eager=True)
    lakehouse.merge(embedded, TEXT_EMBEDDINGS)
    result = CacheResult(todo, total - todo, time.monotonic() - started, source)
    say(f"paraphrase: {result.summary()}")
    return result
