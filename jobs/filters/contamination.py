"""The `contamination` filter's Spark half: the held-out index in Delta and the matching join.

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

Matching (`contamination_matches`). Items are featurized once (mapInArrow over
`udfs.decontamination.featurize_batch`, persisted) and their keys exploded into (kind, key) rows;
one equi-join with `heldout_keys` (never a Python loop over held-out items) gives, per (item,
held-out item), the shared n-grams, whether the stimulus keys are equal and whether a band or an
edit key is shared. One join with `heldout_shingles` then decides each rule:

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
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from jobs.config import Config
from schemas.tables import HELDOUT, HELDOUT_KEYS, HELDOUT_SHINGLES
from udfs.decontamination import (
    EDIT_DELETED,
    EDIT_SUBSTITUTED,
    EDIT_WHOLE,
    MATCHED_MAX_CHARS,
    RULES,
    DecontaminationParams,
    featurize_batch,
    key_schema,
)

INDEX_TABLES = (HELDOUT_KEYS, HELDOUT_SHINGLES)
NGRAM, STIMULUS, BAND = "ngram", "stimulus", "band"
EDIT_KINDS = {EDIT_SUBSTITUTED: "edit_substituted", EDIT_DELETED: "edit_deleted", EDIT_WHOLE: "edit_whole"}
# an item's edit key of one kind matches held-out keys of the kind below: a substitution matches at
# the same position; a word inserted into the item makes its DELETED key the held-out WHOLE key
ITEM_EDIT_KINDS = {EDIT_SUBSTITUTED: "edit_substituted", EDIT_DELETED: "edit_whole", EDIT_WHOLE: "edit_deleted"}

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
    ngrams = features.select(*cols, F.lit(NGRAM).alias("kind"), F.posexplode("ngrams").alias("pos", "key"))
    stimulus = features.select(*cols, F.lit(STIMULUS).alias("kind"), F.lit(None).cast("int").alias("pos"),
                               F.col("stimulus_key").alias("key"))
    bands = features.where(F.col("bands").isNotNull()).select(
        *cols, F.lit(BAND).alias("kind"), F.lit(None).cast("int").alias("pos"), F.explode("bands").alias("key"))
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


def index_marker(lakehouse, name: str) -> str | None:
    """The userMetadata of the table's latest Delta commit (None when the table does not exist)."""
    if not lakehouse.exists(name):
        return None
    row = lakehouse.spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(name)} LIMIT 1").first()
    return row["userMetadata"] if row else None


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
    if not force and all(index_marker(lakehouse, spec.name) == marker for spec in INDEX_TABLES):
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
            _keys(features, "heldout_id", EDIT_KINDS, extra=("boilerplate",))
            .withColumnRenamed("boilerplate", "stimulus_boilerplate")
            .withColumn("heldout_items", F.count("*").over(Window.partitionBy("kind", "key")))
            .withColumn("boilerplate", F.when(F.col("kind").isin(NGRAM, STIMULUS),
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


def _jaccard(a: str, b: str) -> Column:
    inter = F.size(F.array_intersect(F.col(a), F.col(b)))
    return inter / (F.size(F.col(a)) + F.size(F.col(b)) - inter)


def _cut(col: Column) -> Column:
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
    missing = {"item_id", "question", "context", "choices", "answer_text"} - set(items_df.columns)
    if missing:
        raise ValueError(f"contamination_matches: items_df lacks column(s) {sorted(missing)}")
    params = config.curate.contamination.params()
    ensure_heldout_index(lakehouse, config, progress)
    fmt = F.col("answer_format") if "answer_format" in items_df.columns else F.lit(None).cast("string")
    items = items_df.select(F.col("item_id").cast("string").alias("id"), "question", "context", "choices",
                            "answer_text", fmt.alias("answer_format"))
    features = _featurize(items, params, heldout=False).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        result = _best_matches(lakehouse, features, params).persist(StorageLevel.MEMORY_AND_DISK)
        result.count()
    finally:
        features.unpersist()
    return result


def _best_matches(lakehouse, features: DataFrame, params: DecontaminationParams) -> DataFrame:
    item_keys = _keys(features, "id", ITEM_EDIT_KINDS)
    # The index (millions of rows) is never shuffled: the items' distinct key values (one long each,
    # a few MB for tens of thousands of items) are broadcast and the index scan keeps only the rows
    # that share one (a left-semi broadcast hash join); the few survivors then meet the item keys.
    wanted = F.broadcast(item_keys.select("key").distinct())
    index_keys = (lakehouse.read(HELDOUT_KEYS.name).where(~F.col("boilerplate")).select("kind", "key", "heldout_id")
                  .join(wanted, "key", "left_semi"))
    hits = (
        item_keys
        .join(index_keys, ["kind", "key"])
        .groupBy("id", "heldout_id")
        .agg(F.count_distinct(F.when(F.col("kind") == NGRAM, F.col("key"))).alias("shared"),
             F.min(F.when(F.col("kind") == NGRAM, F.col("pos"))).alias("pos"),
             F.max(F.col("kind") == STIMULUS).alias("same_key"),
             F.max(F.col("kind").startswith("edit_")).alias("by_edit"),
             F.max(F.col("kind").isin(BAND) | F.col("kind").startswith("edit_")).alias("near_candidate"))
    )
    shingles = lakehouse.read(HELDOUT_SHINGLES.name).select(
        "heldout_id", F.col("task").alias("heldout_task"), F.col("split").alias("heldout_split"),
        F.col("stimulus").alias("h_stimulus"), F.col("shingles").alias("s_held"),
        F.col("context_shingles").alias("c_held"), F.col("answers").alias("a_held"))
    # candidate pairs are few (items × the held-out items they share a key with): broadcast them
    # against heldout_shingles (35k rows of arrays) rather than shuffling that table on every call
    pairs = F.broadcast(
        hits.join(features.select("id", "qa", "n_ngrams", "stimulus", F.col("shingles").alias("s_item"),
                                  F.col("context_shingles").alias("c_item"), F.col("answers").alias("a_item")), "id")
    ).join(shingles, "heldout_id")
    t = params.near_dup_threshold
    near = (
        F.col("near_candidate")
        # a near copy keeps the answer: two templated questions about different entities do not
        & (F.size(F.array_intersect("a_item", "a_held")) > 0)
        # a held-out item with a passage is only copied with its passage
        & (F.col("c_held").isNull() | (F.col("c_item").isNotNull() & (_jaccard("c_item", "c_held") >= t)))
        & (F.col("by_edit") | (_jaccard("s_item", "s_held") >= t))
    )
    candidates = F.array(
        F.when(F.col("same_key") & (F.col("stimulus") == F.col("h_stimulus")),
               F.struct(F.lit(1.0).alias("score"), F.lit(-RULES.index("whole_text")).alias("priority"),
                        F.lit("whole_text").alias("rule"), F.col("stimulus").alias("matched"))),
        F.when(F.col("shared") > 0,
               F.struct((F.col("shared") / F.col("n_ngrams")).cast("double").alias("score"),
                        F.lit(-RULES.index("ngram")).alias("priority"), F.lit("ngram").alias("rule"),
                        F.array_join(F.slice(F.split("qa", " "), F.col("pos") + 1, params.ngram_n), " ")
                        .alias("matched"))),
        F.when(near, F.struct(_jaccard("s_item", "s_held").cast("double").alias("score"),
                              F.lit(-RULES.index("near_dup")).alias("priority"), F.lit("near_dup").alias("rule"),
                              F.col("h_stimulus").alias("matched"))),
    )
    # the pair's best rule: array_max orders structs field by field (score, then -priority)
    best_rule = F.array_max(F.filter(candidates, lambda c: c.isNotNull()))
    per_pair = pairs.select("id", "heldout_id", "heldout_task", "heldout_split", best_rule.alias("m")).where(
        F.col("m").isNotNull())
    order = Window.partitionBy("id").orderBy(F.col("m.score").desc(), F.col("m.priority").desc(), F.col("heldout_id"))
    return (
        per_pair.withColumn("rank", F.row_number().over(order)).where(F.col("rank") == 1)
        .select(F.col("id").alias("item_id"), F.col("m.rule").alias("rule"), "heldout_id", "heldout_task",
                "heldout_split", _cut(F.col("m.matched")).alias("matched"), F.col("m.score").alias("score"))
    )
