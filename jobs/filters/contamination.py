"""The `contamination` filter's Spark half: the held-out index in Delta and the matching joins.

The rules and their reasons are in `udfs/decontamination.py`; this module only wires tables to them.

Index (`ensure_heldout_index`). Built from `heldout` (every task's validation/test splits plus the
eval-only benchmarks) into two Delta tables, declared in `schemas/tables.py`:

    heldout_ngrams    (ngram_hash, heldout_id, heldout_items, boilerplate)
    heldout_shingles  (heldout_id, task, split, stimulus, stimulus_key, stimulus_items, boilerplate,
                       n_words, n_ngrams, shingles, bands, context_shingles)

`heldout_items`/`stimulus_items` count the distinct held-out items that contain an n-gram or a
stimulus; at `curate.contamination.boilerplate_min_items` or more it is boilerplate ("which of the
following statements is correct", answer-option scaffolding) and never matches. Each table's Delta
commit carries `userMetadata` = {"heldout_version": v, "params": tag}: the `heldout` version it was
built from (read at exactly that version) and the index parameters. A call that finds both markers
current does nothing and commits nothing; otherwise both tables are rebuilt (overwrite). A crash
between the two writes leaves the markers disagreeing, so the next call rebuilds both.

Matching (`contamination_matches`). Items are featurized once (mapInPandas over
`udfs.decontamination.featurize_frame`, persisted), then three equi-joins on hashes, never a
Python loop over held-out items:

- ngram:      item n-gram hash = held-out n-gram hash (boilerplate skipped); per (item, held-out
              item): score = shared distinct n-grams / the item's distinct n-grams; matched = the
              first shared n-gram's words;
- whole_text: item stimulus key = held-out stimulus key (boilerplate skipped), texts equal;
              score 1.0; matched = the stimulus;
- near_dup:   items and held-out items with short stimuli share an LSH band key (band, key) →
              candidate pair → exact Jaccard of the stimulus shingle sets ≥ threshold, and of the
              passages too when both have one (a shared passage alone is not a copy, and a question
              that only resembles a held-out one is not a copy of it when its passage differs);
              score = the stimulus Jaccard; matched = the held-out stimulus.

The best match per item is kept: highest score, then rule in the order whole_text, ngram,
near_dup, then the smallest heldout_id (so the result is deterministic).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.config import Config
from schemas.tables import HELDOUT, HELDOUT_NGRAMS, HELDOUT_SHINGLES
from udfs.decontamination import (
    EDIT_DELETED,
    EDIT_SUBSTITUTED,
    EDIT_WHOLE,
    MATCHED_MAX_CHARS,
    RULES,
    DecontaminationParams,
    featurize_frame,
)

INDEX_TABLES = (HELDOUT_NGRAMS, HELDOUT_SHINGLES)

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


def _feature_schema(extra: tuple[StructField, ...] = ()) -> StructType:
    return StructType([
        StructField("id", StringType(), False),
        *extra,
        StructField("stimulus", StringType(), False),
        StructField("stimulus_key", LongType(), False),
        StructField("n_words", IntegerType(), False),
        StructField("qa", StringType(), False),
        StructField("ngrams", ArrayType(LongType()), False),
        StructField("n_ngrams", IntegerType(), False),
        StructField("shingles", ArrayType(IntegerType()), True),
        StructField("bands", ArrayType(LongType()), True),
        StructField("edit_keys", ArrayType(LongType()), True),
        StructField("context_shingles", ArrayType(IntegerType()), True),
        StructField("answers", ArrayType(StringType()), False),
    ])


def _featurizer(params: DecontaminationParams, heldout: bool, keep: tuple[str, ...] = ()) -> Callable:
    def run(batches):
        for frame in batches:
            yield featurize_frame(frame, params, heldout, keep=keep)

    return run


def _featurize(df: DataFrame, params: DecontaminationParams, heldout: bool, keep: tuple[str, ...] = ()) -> DataFrame:
    extra = tuple(StructField(c, StringType(), True) for c in keep)
    return df.mapInPandas(_featurizer(params, heldout, keep), _feature_schema(extra))


# ---- the held-out index -------------------------------------------------------------------------


@dataclass
class IndexStatus:
    """What `ensure_heldout_index` did: built (or found current) from heldout at `heldout_version`."""

    built: bool
    heldout_version: int
    params_tag: str
    heldout_items: int | None = None   # only counted when built
    ngram_rows: int | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.built:
            return f"held-out index is current (heldout v{self.heldout_version}, {self.params_tag})"
        return (f"held-out index built from heldout v{self.heldout_version}: {self.heldout_items:,} items, "
                f"{self.ngram_rows:,} n-gram rows ({self.params_tag}, {self.seconds:.1f}s)")


def _marker(heldout_version: int, params: DecontaminationParams) -> str:
    return json.dumps({"heldout_version": heldout_version, "params": params.tag}, sort_keys=True)


def index_marker(lakehouse, name: str) -> str | None:
    """The userMetadata of the table's latest Delta commit (None when the table does not exist)."""
    if not lakehouse.exists(name):
        return None
    row = lakehouse.spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(name)} LIMIT 1").first()
    return row["userMetadata"] if row else None


def _overwrite(lakehouse, df: DataFrame, spec, marker: str) -> None:
    lakehouse.ensure(spec)
    (lakehouse.conform(df, spec).write.format("delta").mode("overwrite")
     .option("overwriteSchema", "false").option("userMetadata", marker)
     .saveAsTable(lakehouse.table_name(spec.name)))


def ensure_heldout_index(lakehouse, config: Config, progress: Callable[[str], None] | None = None,
                         force: bool = False) -> IndexStatus:
    """Build `heldout_ngrams` and `heldout_shingles` from the current `heldout` version unless both
    were built from that version with the same parameters (then: no work, no commit)."""
    say = progress or (lambda _: None)
    params = config.curate.contamination.params()
    lakehouse.ensure(HELDOUT)
    version = lakehouse.version(HELDOUT.name)
    marker = _marker(version, params)
    if not force and all(index_marker(lakehouse, spec.name) == marker for spec in INDEX_TABLES):
        return IndexStatus(False, version, params.tag)
    started = time.monotonic()
    say(f"contamination: building the held-out index from heldout v{version} ({params.tag})…")
    heldout = lakehouse.spark.sql(f"SELECT * FROM {lakehouse.table_name(HELDOUT.name)} VERSION AS OF {version}")
    features = _featurize(
        heldout.select(F.col("heldout_id").alias("id"), "task", "split", "question", "context", "choices",
                       "answer_text", "answer_format", "decontamination_text"),
        params, heldout=True, keep=("task", "split"),
    ).persist()
    try:
        cutoff = params.boilerplate_min_items
        ngrams = (
            features.select(F.col("id").alias("heldout_id"), F.explode("ngrams").alias("ngram_hash"))
            .withColumn("heldout_items", F.count("*").over(Window.partitionBy("ngram_hash")))
            .withColumn("boilerplate", F.col("heldout_items") >= cutoff)
        )
        shingles = (
            features.withColumnRenamed("id", "heldout_id")
            .withColumn("stimulus_items", F.count("*").over(Window.partitionBy("stimulus_key")))
            .withColumn("boilerplate", F.col("stimulus_items") >= cutoff)
        )
        _overwrite(lakehouse, ngrams, HELDOUT_NGRAMS, marker)
        _overwrite(lakehouse, shingles, HELDOUT_SHINGLES, marker)
        items = features.count()
    finally:
        features.unpersist()
    status = IndexStatus(True, version, params.tag, heldout_items=items,
                         ngram_rows=lakehouse.read(HELDOUT_NGRAMS.name).count(),
                         seconds=time.monotonic() - started)
    say(f"contamination: {status.summary()}")
    return status


# ---- matching -----------------------------------------------------------------------------------


def _jaccard(a: str, b: str):
    inter = F.size(F.array_intersect(F.col(a), F.col(b)))
    return inter / (F.size(F.col(a)) + F.size(F.col(b)) - inter)


def _edit_rows(df: DataFrame, id_column: str, kind_column: str) -> DataFrame:
    """One row per edit key: (id, edit_base = key >> 2, kind = key & 3)."""
    return df.select(id_column, F.explode("edit_keys").alias("k")).select(
        id_column, F.shiftright("k", 2).alias("edit_base"), F.col("k").bitwiseAND(3).alias(kind_column))


def _cut(col):
    return F.when(F.length(col) > MATCHED_MAX_CHARS,
                  F.concat(F.substring(col, 1, MATCHED_MAX_CHARS - 1), F.lit("…"))).otherwise(col)


def contamination_matches(lakehouse, config: Config, items_df: DataFrame,
                          progress: Callable[[str], None] | None = None) -> DataFrame:
    """The best held-out match of every item that matches one (see the module docstring).

    items_df: item_id, question, context, choices (array<string>), answer_text, and optionally
    answer_format (without it, choices count as options unless they are yes/no). Generated items
    and seeds alike (the curate stage calls it for both). item_id must be unique.

    Returns one row per matched item: item_id, rule ('whole_text' | 'ngram' | 'near_dup'),
    heldout_id, heldout_task, heldout_split, matched (≤ 200 characters), score (n-gram overlap
    share of the item, or 1.0, or the stimulus Jaccard). Items that match nothing have no row. The
    returned frame is persisted (it is small); unpersist it when done.
    Builds the held-out index first when it is stale (`ensure_heldout_index`).
    """
    params = config.curate.contamination.params()
    ensure_heldout_index(lakehouse, config, progress)
    missing = {"item_id", "question", "context", "choices", "answer_text"} - set(items_df.columns)
    if missing:
        raise ValueError(f"contamination_matches: items_df lacks column(s) {sorted(missing)}")
    fmt = F.col("answer_format") if "answer_format" in items_df.columns else F.lit(None).cast("string")
    items = items_df.select(F.col("item_id").cast("string").alias("id"), "question", "context", "choices",
                            "answer_text", fmt.alias("answer_format"))
    features = _featurize(items, params, heldout=False).persist()
    try:
        result = _best_matches(lakehouse, features, params).persist()
        result.count()
    finally:
        features.unpersist()
    return result


def _best_matches(lakehouse, features: DataFrame, params: DecontaminationParams) -> DataFrame:
    index = lakehouse.read(HELDOUT_SHINGLES.name)
    ngram_index = lakehouse.read(HELDOUT_NGRAMS.name).where(~F.col("boilerplate"))

    shared = (
        features.select("id", F.posexplode("ngrams").alias("pos", "ngram_hash"))
        .join(ngram_index.select("ngram_hash", "heldout_id"), "ngram_hash")
        .groupBy("id", "heldout_id")
        .agg(F.countDistinct("ngram_hash").alias("shared"), F.min("pos").alias("pos"))
    )
    ngram = (
        shared.join(features.select("id", "qa", "n_ngrams"), "id")
        .select("id", "heldout_id", F.lit("ngram").alias("rule"),
                (F.col("shared") / F.col("n_ngrams")).alias("score"),
                F.array_join(F.slice(F.split("qa", " "), F.col("pos") + 1, params.ngram_n), " ").alias("matched"))
    )

    whole = (
        features.select("id", "stimulus_key", "stimulus")
        .join(index.where(~F.col("boilerplate"))
              .select("heldout_id", "stimulus_key", F.col("stimulus").alias("h_stimulus")), "stimulus_key")
        .where(F.col("stimulus") == F.col("h_stimulus"))
        .select("id", "heldout_id", F.lit("whole_text").alias("rule"), F.lit(1.0).alias("score"),
                F.col("stimulus").alias("matched"))
    )

    # near_dup candidates: a shared LSH band, or a shared one-changed-word key of compatible kinds
    item_bands = features.where(F.col("bands").isNotNull()).select(
        "id", F.posexplode("bands").alias("band", "band_key"))
    held_bands = index.where(F.col("bands").isNotNull() & ~F.col("boilerplate")).select(
        "heldout_id", F.posexplode("bands").alias("band", "band_key"))
    by_band = item_bands.join(held_bands, ["band", "band_key"]).select("id", "heldout_id", F.lit(False).alias("edit"))
    item_edits = _edit_rows(features.where(F.col("edit_keys").isNotNull()), "id", "i_kind")
    held_edits = _edit_rows(index.where(F.col("edit_keys").isNotNull() & ~F.col("boilerplate")), "heldout_id", "h_kind")
    by_edit = (
        item_edits.join(held_edits, "edit_base")
        .where(((F.col("i_kind") == EDIT_SUBSTITUTED) & (F.col("h_kind") == EDIT_SUBSTITUTED))
               | ((F.col("i_kind") == EDIT_DELETED) & (F.col("h_kind") == EDIT_WHOLE))
               | ((F.col("i_kind") == EDIT_WHOLE) & (F.col("h_kind") == EDIT_DELETED)))
        .select("id", "heldout_id", F.lit(True).alias("edit"))
    )
    candidates = by_band.unionByName(by_edit).groupBy("id", "heldout_id").agg(F.max("edit").alias("edit"))
    near = (
        candidates
        .join(features.select("id", F.col("shingles").alias("s_item"), F.col("context_shingles").alias("c_item"),
                              F.col("answers").alias("a_item")), "id")
        .join(index.select("heldout_id", F.col("shingles").alias("s_held"), F.col("context_shingles").alias("c_held"),
                           F.col("answers").alias("a_held"), F.col("stimulus").alias("h_stimulus")),
              "heldout_id")
        # same answer: a near copy keeps the answer (two templated questions about different
        # entities do not); a held-out item with a passage is only copied with its passage
        .where(F.size(F.array_intersect("a_item", "a_held")) > 0)
        .withColumn("score", _jaccard("s_item", "s_held"))
        .withColumn("context_score", F.when(F.col("c_held").isNull(), F.lit(None).cast("double"))
                    .when(F.col("c_item").isNull(), F.lit(0.0))
                    .otherwise(_jaccard("c_item", "c_held")))
        .where((F.col("edit") | (F.col("score") >= params.near_dup_threshold))
               & (F.col("context_score").isNull() | (F.col("context_score") >= params.near_dup_threshold)))
        .select("id", "heldout_id", F.lit("near_dup").alias("rule"), "score", F.col("h_stimulus").alias("matched"))
    )

    priority = F.array_position(F.array(*[F.lit(r) for r in RULES]), F.col("rule"))
    best = Window.partitionBy("id").orderBy(F.col("score").desc(), priority, F.col("heldout_id"))
    return (
        ngram.unionByName(whole).unionByName(near)
        .withColumn("rank", F.row_number().over(best))
        .where(F.col("rank") == 1)
        .join(index.select("heldout_id", F.col("task").alias("heldout_task"), F.col("split").alias("heldout_split")),
              "heldout_id")
        .select(F.col("id").alias("item_id"), "rule", "heldout_id", "heldout_task", "heldout_split",
                _cut(F.col("matched")).alias("matched"), F.col("score").cast("double").alias("score"))
    )
