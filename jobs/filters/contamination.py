"""The `contamination` filter: the held-out index in Delta, the matching, and at the end the
filter's declaration (`FILTER`) and its prepare step.

The rules and their reasons are in `udfs/decontamination.py`; this module only wires tables to them.

Index (`ensure_heldout_index`), built from `heldout` (every task's validation/test splits and the
eval-only benchmarks) into two Delta tables declared in `schemas/tables.py`:

    heldout_keys      (kind, key, heldout_id, heldout_items, boilerplate): every hash a held-out
                      item can be matched on: 'ngram', 'stimulus', 'band', 'edit_substituted',
                      'edit_deleted', 'edit_whole'
    heldout_shingles  (heldout_id, task, split, stimulus, stimulus_key, stimulus_items, boilerplate,
                      n_words, n_ngrams, answers, shingles, context_shingles)

An n-gram or a stimulus found in `curate.contamination.boilerplate_min_items` or more held-out items
is boilerplate ("which of the following statements is correct", option scaffolding): its keys are
kept, marked, and never matched; so are the band and edit keys of a boilerplate stimulus. Each
table's Delta commit carries `userMetadata` = {"heldout_version": v, "params": tag}: the `heldout`
version it was built from (read at exactly that version) and the index parameters. A call that finds
both markers current does nothing and commits nothing; otherwise both tables are overwritten. A
crash between the two writes leaves the markers disagreeing, so the next call rebuilds both.

Matching (`contamination_matches`). The index is small next to the items (≈ 40 MB of keys for
the 35.6k held-out items of the benchmark mirror): `load_heldout_index` reads it into a
`udfs.decontamination.HeldoutIndex` once per heldout version and broadcasts it, and one mapInArrow
pass featurizes each batch of items (`featurize_batch`) and looks its keys up in memory
(`HeldoutIndex.match_batch`: sorted arrays, no join, no shuffle; why not a join in Spark:
bench/README.md). Per (item, held-out item) sharing a key, each rule decides:

- ngram:      shared non-boilerplate n-grams; score = shared distinct n-grams / the item's
              distinct n-grams; matched = the first shared n-gram's words;
- whole_text: equal stimulus key and equal stimulus text; score 1.0; matched = the stimulus;
- near_dup:   a shared band or edit key, the item's answer among the held-out item's accepted
              answers, the passages' Jaccard ≥ threshold when the held-out item has a passage, and
              the stimulus Jaccard ≥ threshold unless the stimuli differ by one word (edit key);
              score = the stimulus Jaccard; matched = the held-out stimulus.

The best match per item is kept: highest score, then rule in the order whole_text, ngram,
near_dup, then the smallest heldout_id (so the result is deterministic).
"""

from __future__ import annotations

import json
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from pyspark import StorageLevel
from pyspark.broadcast import Broadcast
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from jobs.config import Config
from jobs.filters.base import Engine, Filter, conformed
from jobs.sqlmodels import CurateContext, Model
from schemas.tables import HELDOUT, HELDOUT_KEYS, HELDOUT_SHINGLES
from udfs.decontamination import (
    EDIT_KIND_NAMES,
    KIND_BAND,
    KIND_NGRAM,
    KIND_STIMULUS,
    DecontaminationParams,
    HeldoutIndex,
    featurize_batch,
    key_schema,
)

INDEX_TABLES = (HELDOUT_KEYS, HELDOUT_SHINGLES)

MATCH_SCHEMA = StructType([
    StructField("item_id", StringType(), False),
    StructField("rule", StringType(), False),
    StructField("heldout_id", StringType(), False),
    StructField("heldout_task", StringType(), True),
    StructField("heldout_split", StringType(), True),
    StructField("matched", StringType(), True),
    StructField("score", DoubleType(), False),
])
MATCH_COLUMNS = tuple(f.name for f in MATCH_SCHEMA.fields)


def _featurize(df: DataFrame, params: DecontaminationParams, heldout: bool, keep: tuple[str, ...] = ()) -> DataFrame:
    """mapInArrow over `featurize_batch` (Arrow in, Arrow out: no pandas conversion per batch)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    def run(batches):
        for batch in batches:
            yield featurize_batch(batch, params, heldout, keep=keep)

    return df.mapInArrow(run, from_arrow_schema(key_schema(keep)))


def _edit_kind(code: Column, kinds: dict[int, str]) -> Column:
    expr = F
    for value, name in kinds.items():
        expr = expr.when(code == value, F.lit(name))
    return expr


def _keys(features: DataFrame, id_column: str, edit_kinds: dict[int, str], extra: tuple[str, ...] = ()) -> DataFrame:
    """(id, kind, key, pos, *extra) for every key of every item; pos = word position for n-grams."""
    cols = (id_column, *extra)
    ngrams = features.select(*cols, F.lit(KIND_NGRAM).alias("kind"), F.posexplode("ngrams").alias("pos", "key"))
    stimulus = features.select(*cols, F.lit(KIND_STIMULUS).alias("kind"), F.lit(None).cast("int").alias("pos"),
                               F.col("stimulus_key").alias("key"))
    bands = features.where(F.col("bands").isNotNull()).select(
        *cols, F.lit(KIND_BAND).alias("kind"), F.lit(None).cast("int").alias("pos"), F.explode("bands").alias("key"))
    edits = (features.where(F.col("edit_keys").isNotNull())
             .select(*cols, F.explode("edit_keys").alias("raw"))
             .select(*cols, _edit_kind(F.col("raw").bitwiseAND(3), edit_kinds).alias("kind"),
                     F.lit(None).cast("int").alias("pos"), F.shiftright("raw", 2).alias("key")))
    order = [*cols, "kind", "key", "pos"]
    return (ngrams.select(*order).unionByName(stimulus.select(*order)).unionByName(bands.select(*order))
            .unionByName(edits.select(*order)))


# ---- the held-out index -------------------------------------------------------------------------


@dataclass
class IndexStatus:
    """What `ensure_heldout_index` did: built (or found current) from heldout at `heldout_version`."""

    built: bool
    heldout_version: int
    params_tag: str
    heldout_items: int | None = None   # only counted when built
    key_rows: int | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.built:
            return f"held-out index is current (heldout v{self.heldout_version}, {self.params_tag})"
        return (f"held-out index built from heldout v{self.heldout_version}: {self.heldout_items:,} items, "
                f"{self.key_rows:,} keys ({self.params_tag}, {self.seconds:.1f}s)")


def _marker(heldout_version: int, params: DecontaminationParams) -> str:
    return json.dumps({"heldout_version": heldout_version, "params": params.tag}, sort_keys=True)


def _overwrite(lakehouse, df: DataFrame, spec, marker: str) -> None:
    lakehouse.overwrite(df, spec, user_metadata=marker)


def ensure_heldout_index(lakehouse, config: Config, progress: Callable[[str], None] | None = None,
                         force: bool = False) -> IndexStatus:
    """Build `heldout_keys` and `heldout_shingles` from the current `heldout` version unless both
    were built from that version with the same parameters (then: no work, no commit)."""
    say = progress or (lambda _: None)
    params = config.curate.contamination.params()
    lakehouse.ensure(HELDOUT)
    version = lakehouse.version(HELDOUT.name)
    marker = _marker(version, params)
    if not force and all(lakehouse.commit_metadata(spec.name) == marker for spec in INDEX_TABLES):
        return IndexStatus(False, version, params.tag)
    started = time.monotonic()
    say(f"contamination: building the held-out index from heldout v{version} ({params.tag})…")
    heldout = lakehouse.read(HELDOUT.name, version=version)
    features = _featurize(
        heldout.select(F.col("heldout_id").alias("id"), "task", "split", "question", "context", "choices",
                       "answer_text", "answer_format", "decontamination_text"),
        params, heldout=True, keep=("task", "split"),
    ).withColumnRenamed("id", "heldout_id")
    features = features.withColumn(
        "stimulus_items", F.count("*").over(Window.partitionBy("stimulus_key"))
    ).withColumn("boilerplate", F.col("stimulus_items") >= params.boilerplate_min_items
                 ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        keys = (
            _keys(features, "heldout_id", EDIT_KIND_NAMES, extra=("boilerplate",))
            .withColumnRenamed("boilerplate", "stimulus_boilerplate")
            .withColumn("heldout_items", F.count("*").over(Window.partitionBy("kind", "key")))
            .withColumn("boilerplate", F.when(F.col("kind").isin(KIND_NGRAM, KIND_STIMULUS),
                                              F.col("heldout_items") >= params.boilerplate_min_items)
                        .otherwise(F.col("stimulus_boilerplate")))
        )
        _overwrite(lakehouse, keys, HELDOUT_KEYS, marker)
        _overwrite(lakehouse, features, HELDOUT_SHINGLES, marker)
        items = features.count()
    finally:
        features.unpersist()
    status = IndexStatus(True, version, params.tag, heldout_items=items,
                         key_rows=lakehouse.read(HELDOUT_KEYS.name).count(), seconds=time.monotonic() - started)
    say(f"contamination: {status.summary()}")
    return status


# ---- matching -----------------------------------------------------------------------------------

class LoadedIndex(NamedTuple):
    """The held-out index of one (application, heldout version, parameters), as `load_heldout_index`
    returns it: the broadcast (pickled bytes), the driver's copy, and the token the Python workers
    cache their unpickled copy under (new for every load, so a worker never keeps a stale one)."""

    broadcast: Broadcast
    index: HeldoutIndex
    token: str


# The index loaded last in this driver, under (application, heldout table, its location, heldout
# version, parameter tag): the index tables are a pure function of those, so while heldout's version
# is unchanged the loaded index is current without reading the index tables' history again. curate
# matches its items and then its seeds against it, and a notebook can call again for one version read.
_LOADED: dict[tuple, LoadedIndex] = {}
# On a Python worker: the index unpickled from the latest broadcast it was given (token → index)
_ON_WORKER: dict[str, HeldoutIndex] = {}


def _worker_index(broadcast: Broadcast, token: str) -> HeldoutIndex:
    """The broadcast index, unpickled once per Python worker. The broadcast holds the index as
    pickled bytes: with `spark.io.encryption.enabled` (which keeps the API key off disk) PySpark
    streams a broadcast through a writer that cannot take pickle protocol 5's out-of-band numpy
    buffers, so the arrays are pickled to one bytes object first."""
    if token not in _ON_WORKER:
        _ON_WORKER.clear()
        _ON_WORKER[token] = pickle.loads(broadcast.value)
    return _ON_WORKER[token]


def _loaded_key(lakehouse, heldout_version: int | None, params: DecontaminationParams) -> tuple:
    spark = lakehouse.spark
    return (spark.sparkContext.applicationId, lakehouse.table_name(HELDOUT.name),
            lakehouse.table_location(HELDOUT.name), heldout_version, params.tag)


def load_heldout_index(lakehouse, config: Config, progress: Callable[[str], None] | None = None) -> LoadedIndex:
    """The held-out index as a `udfs.decontamination.HeldoutIndex`, broadcast to the executors.

    Currency check first, and only it when nothing changed: one read of `heldout`'s latest Delta
    version; when this driver already holds the index of that version and these parameters, that is
    the answer (no index-table history, no job). Otherwise the Delta index is built when stale
    (`ensure_heldout_index`), its non-boilerplate keys and per-item rows are read and broadcast,
    and an older broadcast is unpersisted. Memory: ~12 bytes per key on the driver and on each
    Python worker (≈ 40 MB for the 35.6k held-out items of the benchmark mirror); a held-out set
    beyond `curate.contamination.max_index_keys` fails with a clear error instead of running the
    executors out of memory.
    """
    say = progress or (lambda _: None)
    params = config.curate.contamination.params()
    spark = lakehouse.spark
    current = _LOADED.get(_loaded_key(lakehouse, lakehouse.version(HELDOUT.name), params))
    if current is not None:
        return current
    status = ensure_heldout_index(lakehouse, config, progress)
    started = time.monotonic()
    keys_df = lakehouse.read(HELDOUT_KEYS.name).where(~F.col("boilerplate"))
    n_keys = keys_df.count()
    limit = config.curate.contamination.max_index_keys
    if n_keys > limit:
        raise ValueError(
            f"contamination: the held-out index has {n_keys:,} keys, more than "
            f"curate.contamination.max_index_keys = {limit:,} (~12 bytes each on every Python worker); "
            "raise the limit if the executors have the memory, or raise curate.contamination.ngram_n")
    items = (lakehouse.read(HELDOUT_SHINGLES.name)
             .select("heldout_id", "task", "split", "stimulus", "answers", "shingles", "context_shingles")
             .orderBy("heldout_id").toArrow())
    rows = spark.createDataFrame(
        [(h, i) for i, h in enumerate(items.column("heldout_id").to_pylist())], "heldout_id string, row int")
    keys = keys_df.join(F.broadcast(rows), "heldout_id").select("kind", "key", "row").toArrow()
    index = HeldoutIndex.from_arrow(keys, items, params)
    for old in _LOADED.values():
        try:
            old.broadcast.unpersist()
        except Exception:  # noqa: BLE001 - its SparkContext may be gone (a new session): nothing to free
            pass
    _LOADED.clear()
    loaded = LoadedIndex(spark.sparkContext.broadcast(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)),
                         index, uuid.uuid4().hex)
    _LOADED[_loaded_key(lakehouse, status.heldout_version, params)] = loaded
    say(f"contamination: held-out index loaded ({items.num_rows:,} items, {index.n_keys:,} keys, "
        f"{time.monotonic() - started:.1f}s)")
    return loaded


def contamination_matches(lakehouse, config: Config, items_df: DataFrame,
                          progress: Callable[[str], None] | None = None) -> DataFrame:
    """The best held-out match of every item that matches one (rules: the module docstring and
    `udfs.decontamination`; columns: `udfs.decontamination.MATCH_DOC`).

    items_df: item_id, question, context, choices (array<string>), answer_text, and optionally
    answer_format (without it, choices count as options unless they are yes/no). Generated items
    and seeds alike (the curate stage calls it for both). item_id must be unique.

    One pass over the items, no shuffle: each Python worker featurizes a batch
    (`featurize_batch`) and looks its keys up in the broadcast in-memory index
    (`HeldoutIndex.match_batch`). Returns one row per matched item, persisted (it is small);
    unpersist it when done. Builds the held-out index first when it is stale.
    """
    missing = {"item_id", "question", "context", "choices", "answer_text"} - set(items_df.columns)
    if missing:
        raise ValueError(f"contamination_matches: items_df lacks column(s) {sorted(missing)}")
    params = config.curate.contamination.params()
    broadcast, _, token = load_heldout_index(lakehouse, config, progress)
    fmt = F.col("answer_format") if "answer_format" in items_df.columns else F.lit(None).cast("string")
    items = items_df.select(F.col("item_id").cast("string").alias("id"), "question", "context", "choices",
                            "answer_text", fmt.alias("answer_format"))

    def match(batches):
        index = _worker_index(broadcast, token)
        for batch in batches:
            yield index.match_batch(featurize_batch(batch, params, heldout=False, defer_passages=True,
                                                    near_dup_answers=index.near_dup_answers))

    result = items.mapInArrow(match, MATCH_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    result.count()
    return result


# ---- the filter ---------------------------------------------------------------------------------
def prepare(ctx: CurateContext, engine) -> None:
    """Register `contamination_matches`: `contamination_matches` (the best held-out match per
    matched item) for the candidates (item_id = gen_id) and for the seeds they were generated from
    (item_id = seed_id), in one call."""
    seeds = ctx.lakehouse.read("seeds")
    items = ctx.spark.sql(
        "SELECT gen_id AS item_id, question, context, choices, answer_text, answer_format FROM stg_candidates")
    seed_items = (seeds.join(ctx.spark.table("stg_candidates").select("seed_id").distinct(), "seed_id", "left_semi")
                  .select(F.col("seed_id").alias("item_id"), "question", "context", "choices", "answer_text",
                          "answer_format"))
    items = items.unionByName(seed_items).dropDuplicates(["item_id"])
    matches = engine(ctx.lakehouse, ctx.config, items)
    ctx.register("contamination_matches", conformed(matches, MATCH_SCHEMA, "contamination_matches()"),
                 cached=matches)


FILTER = Filter(
    "contamination", Model("intermediate/filter_contamination.sql"), reads=("seeds",), prepare=prepare,
    engine=Engine(__name__, "contamination_matches", lambda: contamination_matches,
                  reads=(HELDOUT.name, HELDOUT_KEYS.name, HELDOUT_SHINGLES.name),
                  writes=(HELDOUT_KEYS.name, HELDOUT_SHINGLES.name)),
    enabled=lambda config: config.curate.contamination.enabled)
