"""Near-duplicate detection on Spark: incremental MinHash signatures in Delta, LSH banding as a
group-by, exact-Jaccard confirmation in Spark SQL, connected components without a driver collect.

The pure parts (stimulus text, shingles, signatures, band hashes, the S-curve) are in
`udfs/minhash.py`; this module only moves rows:

1. `update_signatures` signs, in a `mapInPandas`, the items whose raw stimulus (question, context,
   choices) or MinHash parameters differ from what `minhash_signatures` holds: new keys are
   appended, changed ones MERGEd, at most `sign_rows_per_commit` rows per Delta commit. A rerun
   over the same items signs nothing and commits nothing.
2. `candidate_pairs` explodes each item's band hashes (those of its whole stimulus and those of
   its question alone, `stored_bands`) into (band, band_hash) rows and groups them into buckets. A bucket of at most `bucket_all_pairs_max` members emits all its pairs (those
   involving a generated item); a bigger bucket links every generated member to the bucket's
   smallest generated id and to its smallest seed id, so a bucket of m members costs O(m) pairs,
   never O(m²). Effect on recall: inside a big bucket, two generated items are only linked through
   the bucket's smallest id, so when that item is not itself a near-duplicate of both, their pair
   is missed *in that band*; each pair at the threshold shares about b·t^r ≈ 3.9 bands on average
   (b = 12, r = 5, t = 0.8), and real big buckets are mostly copies of one text, where the star
   links everything (a frame question many seeds share, SocialIQA's "What will Others want to
   do next?", makes such buckets in the question bands; those pairs are then found through the
   stimulus bands only, when the passage is kept nearly whole). The benchmark reports recall with
   this rule in place.
3. `confirmed_pairs` keeps candidates that are near-duplicates by `udfs.minhash.near_duplicate_pair`
   (issue 29): two items that both have a passage need near-duplicate questions (Jaccard) AND a
   passage taken from the other's (containment) or near-duplicate whole stimuli; other items need
   near-duplicate whole stimuli (Jaccard), as before. All exact, from the stored shingle-hash sets:
   `size(array_intersect(a, b))` in Spark SQL, no Python UDF, after a free size bound
   (J ≤ min(|A|, |B|) / max(|A|, |B|), of the questions or of the stimuli).
4. `connected_components` links generated items through confirmed pairs with the large-star /
   small-star alternation of Kiveris et al., "Connected Components in MapReduce and Beyond"
   (SoCC 2014): O(log² n) rounds, each a few shuffles, edges only (no collect), each round
   checkpointed, stopping when every node points at its component's minimum.
5. `near_duplicates` assembles one row per generated item for the curate stage.

The module ends with the `near_dup` filter's declaration (`FILTER`) and its prepare step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from functools import reduce

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

from jobs.config import NearDupConfig
from jobs.filters.base import Engine, Filter, conformed
from jobs.lakehouse import Lakehouse
from jobs.sqlmodels import CurateContext, Model, sql_literal
from schemas.tables import MINHASH_SIGNATURES
from udfs.minhash import MinHashParams, sign_frame

log = logging.getLogger(__name__)

DOC_KINDS = ("generated", "seed", "heldout")
MAX_COMPONENT_ROUNDS = 64

_SIGNED_SCHEMA = StructType([
    StructField("doc_kind", StringType(), False),
    StructField("doc_id", StringType(), False),
    StructField("source_hash", StringType(), False),
    StructField("params", StringType(), False),
    StructField("num_shingles", IntegerType(), True),
    StructField("shingles", ArrayType(IntegerType()), True),
    StructField("signature", ArrayType(IntegerType()), True),
    StructField("band_hashes", ArrayType(LongType()), True),
    StructField("question_shingles", ArrayType(IntegerType()), True),
    StructField("question_band_hashes", ArrayType(LongType()), True),
    StructField("passage_shingles", ArrayType(IntegerType()), True),
])


def minhash_params(config: NearDupConfig) -> MinHashParams:
    """The signature parameters a config means (bands/rows derived when not set)."""
    return MinHashParams.for_threshold(
        config.threshold, shingle=config.shingle, shingle_size=config.shingle_size, num_perm=config.num_perm,
        seed=config.seed, candidate_recall=config.candidate_recall, bands=config.bands, rows=config.rows)


def source_hash() -> Column:
    """Hash of an item's raw stimulus fields question, context and choices (SHA-256 of their JSON,
    32 hex characters): a signature depends on nothing else, so an unchanged hash under unchanged
    parameters needs no new signature."""
    return F.substring(F.sha2(F.to_json(F.struct("question", "context", "choices")), 256), 1, 32)


# ---- 1. signatures ------------------------------------------------------------------------------


def update_signatures(lakehouse: Lakehouse, config: NearDupConfig, doc_kind: str, items: DataFrame) -> int:
    """Sign the items of one kind that are new or changed since they were last signed; return how
    many were signed (0 on a rerun over the same items with the same config).

    items: doc_id (string, not null), question, context (strings), choices (array<string>); other
    columns are ignored, rows with a null doc_id are skipped, a duplicated doc_id is signed once.
    Writes `minhash_signatures`: keys it does not hold are appended, changed rows are MERGEd on
    (doc_kind, doc_id); one Delta commit per `sign_rows_per_commit` rows, none when nothing changed.
    Raises ValueError for an unknown doc_kind. `update_all_signatures` does several kinds at once.
    """
    return update_all_signatures(lakehouse, config, {doc_kind: items})[doc_kind]


def update_all_signatures(lakehouse: Lakehouse, config: NearDupConfig, items: dict[str, DataFrame]) -> dict[str, int]:
    """`update_signatures` for several kinds at once (`items`: doc_kind → its items, as there):
    one comparison with the stored signatures and one count for all of them (one set of Spark jobs
    instead of one per kind), new keys of every kind in the same append. Returns doc_kind → how
    many were signed. Raises ValueError for an unknown doc_kind."""
    unknown = [k for k in items if k not in DOC_KINDS]
    if unknown:
        raise ValueError(f"doc_kind must be one of {DOC_KINDS}, got {unknown[0]!r}")
    params = minhash_params(config)
    kinds = list(items)
    sources = [
        df.where(F.col("doc_id").isNotNull())
        .select(F.lit(kind).alias("doc_kind"), F.col("doc_id").cast("string").alias("doc_id"),
                F.col("question").cast("string").alias("question"), F.col("context").cast("string").alias("context"),
                F.col("choices").cast("array<string>").alias("choices"))
        .withColumn("source_hash", source_hash())
        .dropDuplicates(["doc_id"])
        for kind, df in items.items()
    ]
    source = reduce(DataFrame.unionByName, sources)
    stored = (
        lakehouse.read(MINHASH_SIGNATURES.name)
        .where(F.col("doc_kind").isin(kinds))
        .select("doc_kind", "doc_id", F.col("source_hash").alias("stored_hash"), F.col("params").alias("stored_params"))
    )
    todo = (
        source.join(stored, ["doc_kind", "doc_id"], "left")
        .where(F.col("stored_hash").isNull() | (F.col("stored_hash") != F.col("source_hash"))
               | (F.col("stored_params") != params.tag))
        .withColumn("is_new", F.col("stored_hash").isNull())
        .drop("stored_hash", "stored_params")
        .persist()
    )
    started = time.perf_counter()
    try:
        counts = todo.agg(*[F.count(F.when(F.col("doc_kind") == k, 1)).alias(f"pending_{i}") for i, k in enumerate(kinds)],
                          *[F.count(F.when((F.col("doc_kind") == k) & F.col("is_new"), 1)).alias(f"new_{i}")
                            for i, k in enumerate(kinds)]).first()
        pending = {k: counts[f"pending_{i}"] for i, k in enumerate(kinds)}
        new = sum(counts[f"new_{i}"] for i in range(len(kinds)))
        total = sum(pending.values())
        if total == 0:
            log.info("near_dup: %s signatures up to date (%s)", ", ".join(kinds), params.tag)
            return pending
        chunks = math.ceil(total / config.sign_rows_per_commit)
        for chunk in range(chunks):
            part = todo if chunks == 1 else todo.where(F.pmod(F.xxhash64("doc_id"), F.lit(chunks)) == chunk)
            if new:
                # keys the table does not hold yet: a plain append, one pass of the Python signing
                lakehouse.append(_signed(part.where("is_new"), params), MINHASH_SIGNATURES)
            if new < total:
                # changed text or parameters: MERGE; persisted so that the MERGE's change check and
                # its write do not each run the Python signing
                changed = _signed(part.where(~F.col("is_new")), params).persist()
                try:
                    lakehouse.merge(changed, MINHASH_SIGNATURES, update_when_changed=["source_hash", "params"])
                finally:
                    changed.unpersist()
        for i, kind in enumerate(kinds):
            log.info("near_dup: signed %d %s items (%d new) in %.1f s", pending[kind], kind, counts[f"new_{i}"],
                     time.perf_counter() - started)
        return pending
    finally:
        todo.unpersist()


def _signed(part: DataFrame, params: MinHashParams) -> DataFrame:
    def sign(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield sign_frame(batch, params)

    return part.mapInPandas(sign, _SIGNED_SCHEMA).withColumn("signed_at", F.current_timestamp())


def _items(df: DataFrame, id_column: str) -> DataFrame:
    return df.select(F.col(id_column).alias("doc_id"), "question", "context", "choices")


def stored_bands(lakehouse: Lakehouse, config: NearDupConfig, doc_kind: str, ids: DataFrame) -> DataFrame:
    """Band hashes of one kind for the ids in `ids` (column doc_id), at this config's parameters:
    doc_kind, doc_id, band_hashes — the stimulus's b bands, then, for an item with a passage, the
    question's b bands (positions b..2b-1, so a question band never meets a stimulus band); null for
    an item without shingles.
    Two items whose questions alone are near-duplicates become candidates even when their passages
    differ in length (a passage cut short), which the stimulus bands alone would miss."""
    empty = F.array().cast("array<bigint>")
    return (
        lakehouse.read(MINHASH_SIGNATURES.name)
        .where((F.col("doc_kind") == doc_kind) & (F.col("params") == minhash_params(config).tag))
        .select("doc_kind", "doc_id",
                F.when(F.col("band_hashes").isNotNull(),
                       F.concat("band_hashes", F.coalesce("question_band_hashes", empty))).alias("band_hashes"))
        .join(ids.select("doc_id").distinct(), "doc_id", "left_semi")
    )


def stored_shingles(lakehouse: Lakehouse, config: NearDupConfig) -> DataFrame:
    """Shingle-hash sets at this config's parameters: doc_kind, doc_id, num_shingles, shingles,
    question_shingles, passage_shingles."""
    return (
        lakehouse.read(MINHASH_SIGNATURES.name)
        .where(F.col("params") == minhash_params(config).tag)
        .select("doc_kind", "doc_id", "num_shingles", "shingles", "question_shingles", "passage_shingles")
    )


# ---- 2. candidates ------------------------------------------------------------------------------


def candidate_pairs(signatures: DataFrame, bucket_all_pairs_max: int) -> DataFrame:
    """Candidate pairs from shared LSH buckets.

    signatures: doc_kind ('generated' or 'seed'), doc_id, band_hashes (null = no shingle, never a
    candidate). Returns distinct (gen_id, other_kind, other_id) with gen_id a generated id; for two
    generated items gen_id < other_id; seed–seed pairs are never produced.
    """
    members = signatures.where(F.col("band_hashes").isNotNull()).select(
        "doc_kind", "doc_id", F.posexplode("band_hashes").alias("band", "band_hash"))
    is_gen = F.col("doc_kind") == "generated"
    buckets = (
        members.groupBy("band", "band_hash")
        .agg(F.count(F.lit(1)).alias("n"),
             F.count(F.when(is_gen, 1)).alias("n_gen"),
             F.min(F.when(is_gen, F.col("doc_id"))).alias("min_gen"),
             F.min(F.when(~is_gen, F.struct("doc_id", "doc_kind"))).alias("min_other"))
        .where((F.col("n") > 1) & (F.col("n_gen") > 0))
    )
    shared = members.join(buckets, ["band", "band_hash"])

    small = shared.where(F.col("n") <= bucket_all_pairs_max).select("band", "band_hash", "doc_kind", "doc_id")
    a, b = small.alias("a"), small.alias("b")
    small_pairs = (
        a.where(F.col("a.doc_kind") == "generated")
        .join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.band_hash") == F.col("b.band_hash")))
        .where((F.col("b.doc_kind") != "generated") | (F.col("a.doc_id") < F.col("b.doc_id")))
        .select(F.col("a.doc_id").alias("gen_id"), F.col("b.doc_kind").alias("other_kind"),
                F.col("b.doc_id").alias("other_id"))
    )
    big = shared.where((F.col("n") > bucket_all_pairs_max) & is_gen)
    big_to_gen = big.where(F.col("doc_id") != F.col("min_gen")).select(
        F.col("min_gen").alias("gen_id"), F.lit("generated").alias("other_kind"), F.col("doc_id").alias("other_id"))
    big_to_other = big.where(F.col("min_other").isNotNull()).select(
        F.col("doc_id").alias("gen_id"), F.col("min_other.doc_kind").alias("other_kind"),
        F.col("min_other.doc_id").alias("other_id"))
    return small_pairs.unionByName(big_to_gen).unionByName(big_to_other).distinct()


# ---- 3. confirmation ----------------------------------------------------------------------------


def confirmed_pairs(pairs: DataFrame, shingles: DataFrame, threshold: float) -> DataFrame:
    """Candidate pairs that are near-duplicates by `udfs.minhash.near_duplicate_pair`, exactly.

    pairs: gen_id, other_kind, other_id; shingles: doc_kind, doc_id, num_shingles, shingles,
    question_shingles, passage_shingles (any superset of the rows the pairs name: only those are
    read past a broadcast semi-join, so the big arrays of items in no pair are never shuffled).
    When both items have a passage, their questions (Jaccard) and passages (containment) are
    compared each on their own as well as their whole stimuli; otherwise the whole stimuli
    (Jaccard). Returns gen_id, other_kind, other_id, jaccard (double: the similarity the rule
    decided on, ≥ threshold).
    """
    needed = pairs.select(F.lit("generated").alias("doc_kind"), F.col("gen_id").alias("doc_id")).unionByName(
        pairs.select(F.col("other_kind").alias("doc_kind"), F.col("other_id").alias("doc_id"))).distinct()
    sets = shingles.join(F.broadcast(needed), ["doc_kind", "doc_id"], "left_semi")
    mine = sets.where(F.col("doc_kind") == "generated").select(
        F.col("doc_id").alias("gen_id"), F.col("num_shingles").alias("n_a"), F.col("shingles").alias("s_a"),
        F.col("question_shingles").alias("q_a"), F.col("passage_shingles").alias("p_a"))
    theirs = sets.select(
        F.col("doc_kind").alias("other_kind"), F.col("doc_id").alias("other_id"),
        F.col("num_shingles").alias("n_b"), F.col("shingles").alias("s_b"),
        F.col("question_shingles").alias("q_b"), F.col("passage_shingles").alias("p_b"))
    t = F.lit(threshold)
    both_passages = F.col("p_a").isNotNull() & F.col("p_b").isNotNull()
    nq_a, nq_b = F.size(F.coalesce("q_a", F.array())), F.size(F.coalesce("q_b", F.array()))

    def jac(inter: str, n_a: Column, n_b: Column) -> Column:
        return F.when(n_a + n_b - F.col(inter) > 0, F.col(inter) / (n_a + n_b - F.col(inter))).otherwise(F.lit(0.0))

    joined = (
        pairs.join(mine, "gen_id").join(theirs, ["other_kind", "other_id"])
        # free bounds first: J ≤ min/max of the set sizes (of the questions when both items have a
        # passage, of the whole stimuli otherwise)
        .where(F.when(both_passages, F.least(nq_a, nq_b) >= t * F.greatest(nq_a, nq_b))
               .otherwise(F.least("n_a", "n_b") >= t * F.greatest("n_a", "n_b")))
        .withColumn("inter", F.size(F.array_intersect("s_a", "s_b")))
        .withColumn("stimulus_j", jac("inter", F.col("n_a"), F.col("n_b")))
        .withColumn("q_inter", F.when(both_passages, F.size(F.array_intersect("q_a", "q_b"))))
        .withColumn("question_j", jac("q_inter", nq_a, nq_b))
        .withColumn("passage_c", F.when(both_passages, F.size(F.array_intersect("p_a", "p_b"))
                                        / F.least(F.size("p_a"), F.size("p_b"))))
        .withColumn("jaccard", F.when(both_passages,
                                      F.least("question_j", F.greatest("passage_c", "stimulus_j")))
                    .otherwise(F.col("stimulus_j")))
    )
    return joined.where(F.col("jaccard") >= t).select("gen_id", "other_kind", "other_id", "jaccard")


# ---- 4. connected components --------------------------------------------------------------------


def connected_components(edges: DataFrame, max_rounds: int = MAX_COMPONENT_ROUNDS) -> DataFrame:
    """Connected components of an undirected graph given as edges (src, dst) of one orderable type.

    Returns (node, component) for every node that has an edge to another node, component being
    the smallest node of its component. Large-star then small-star (Kiveris et al., SoCC 2014),
    repeated until every node points at its component's minimum; each round is checkpointed
    (`localCheckpoint`), nothing is collected to the driver. Raises RuntimeError when max_rounds
    rounds do not converge (the paper's bound is O(log² n) rounds).
    """
    # (child, parent) with parent < child
    graph = (
        edges.where(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("child"), F.least("src", "dst").alias("parent"))
        .distinct()
        .localCheckpoint()
    )
    rounds = 0
    while not _is_star_forest(graph):
        if rounds == max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        graph = _small_star(_large_star(graph)).localCheckpoint()
        rounds += 1
    log.info("near_dup: components converged after %d large-star/small-star rounds", rounds)
    return graph.select(F.col("child").alias("node"), F.col("parent").alias("component")).unionByName(
        graph.select(F.col("parent").alias("node"), F.col("parent").alias("component")).distinct())


def _large_star(graph: DataFrame) -> DataFrame:
    """Every node u links its larger neighbours to m(u), the smallest of u and its neighbours."""
    both = graph.select(F.col("child").alias("node"), F.col("parent").alias("nbr")).unionByName(
        graph.select(F.col("parent").alias("node"), F.col("child").alias("nbr")))
    smallest = both.groupBy("node").agg(F.min("nbr").alias("m")).select(
        "node", F.least("node", "m").alias("m"))
    return (both.join(smallest, "node").where(F.col("nbr") > F.col("node"))
            .select(F.col("nbr").alias("child"), F.col("m").alias("parent")).distinct())


def _small_star(graph: DataFrame) -> DataFrame:
    """Every node u links itself and its smaller neighbours to the smallest of them."""
    smallest = graph.groupBy("child").agg(F.min("parent").alias("m"))
    relinked = (graph.join(smallest, "child").where(F.col("parent") != F.col("m"))
                .select(F.col("parent").alias("child"), F.col("m").alias("parent")))
    return relinked.unionByName(smallest.select("child", F.col("m").alias("parent"))).distinct()


def _is_star_forest(graph: DataFrame) -> bool:
    """True when every child has one parent and no parent is itself a child (one Spark job)."""
    several_parents = graph.groupBy("child").count().where(F.col("count") > 1).select(F.col("child").alias("node"))
    chained = graph.select(F.col("parent").alias("node")).join(
        graph.select(F.col("child").alias("node")), "node", "left_semi")
    return several_parents.unionByName(chained).isEmpty()


# ---- 5. the curate stage's entry point ----------------------------------------------------------


def near_duplicates(lakehouse: Lakehouse, config: NearDupConfig, generated_df: DataFrame,
                    seeds_df: DataFrame) -> DataFrame:
    """One row per generated item: its near-duplicate component and closest matches.

    generated_df: gen_id, question, context, choices — every generated item, not only those being
    curated now (earlier curated items must be in it to be matched against). seeds_df: seed_id,
    question, context, choices. Signs what is new or changed first (`update_signatures`), so this
    runs Spark jobs before it returns.

    Returns gen_id, component_id (the smallest gen_id of the item's component of generated items
    linked by confirmed pairs (`confirmed_pairs`, similarity ≥ config.threshold); its own gen_id
    when alone), component_size (long, 1 when alone), best_match_id / best_match_jaccard (the most
    similar other generated item among confirmed pairs, ties to the smallest id; null when none),
    seed_match_id / seed_match_jaccard (the most similar seed at or above the threshold, same tie
    rule; else null). Similarities are exact, over the sets of shingle hashes of the normalized
    stimuli, questions and passages (`udfs.minhash.near_duplicate_pair` says which one decides).
    """
    generated = _items(generated_df, "gen_id")
    seeds = _items(seeds_df, "seed_id")
    update_all_signatures(lakehouse, config, {"generated": generated, "seed": seeds})
    started = time.perf_counter()

    bands = stored_bands(lakehouse, config, "generated", generated).unionByName(
        stored_bands(lakehouse, config, "seed", seeds))
    ids = generated.where(F.col("doc_id").isNotNull()).select(F.col("doc_id").alias("gen_id")).distinct()
    # checkpointed (eagerly): small, and read twice by the confirmation
    pairs = candidate_pairs(bands, config.bucket_all_pairs_max).localCheckpoint()
    if pairs.isEmpty():  # no shared bucket: every item is alone (a handful of new items usually is)
        log.info("near_dup: no candidate pairs (%.1f s)", time.perf_counter() - started)
        return _alone(ids)
    # checkpointed: feeds both the components and the closest matches
    confirmed = confirmed_pairs(pairs, stored_shingles(lakehouse, config), config.threshold).localCheckpoint()
    if log.isEnabledFor(logging.INFO):
        log.info("near_dup: %d candidate pairs, %d confirmed, in %.1f s", pairs.count(), confirmed.count(),
                 time.perf_counter() - started)
    if confirmed.isEmpty():
        return _alone(ids)
    started = time.perf_counter()

    gen_pairs = confirmed.where(F.col("other_kind") == "generated")
    edges = gen_pairs.select(F.col("gen_id").alias("src"), F.col("other_id").alias("dst"))
    # no pair of generated items: no component to find (its rounds are jobs of their own)
    components = (connected_components(edges) if not gen_pairs.isEmpty()
                  else edges.select(F.col("src").alias("node"), F.col("dst").alias("component")))
    log.info("near_dup: connected components in %.1f s", time.perf_counter() - started)

    # everything below but the list of ids is as small as the set of linked items
    sizes = components.groupBy("component").agg(F.count(F.lit(1)).alias("component_size"))
    linked = components.join(sizes, "component").select(
        F.col("node").alias("gen_id"), F.col("component").alias("component_id"), "component_size")
    both_ways = gen_pairs.select("gen_id", "other_id", "jaccard").unionByName(
        gen_pairs.select(F.col("other_id").alias("gen_id"), F.col("gen_id").alias("other_id"), "jaccard"))
    return (
        ids.join(linked, "gen_id", "left")
        .join(_closest(both_ways, "best_match"), "gen_id", "left")
        .join(_closest(confirmed.where(F.col("other_kind") == "seed"), "seed_match"), "gen_id", "left")
        .select("gen_id", F.coalesce("component_id", "gen_id").alias("component_id"),
                F.coalesce("component_size", F.lit(1).cast("long")).alias("component_size"),
                "best_match_id", "best_match_jaccard", "seed_match_id", "seed_match_jaccard")
    )


def _alone(ids: DataFrame) -> DataFrame:
    """`near_duplicates`' rows when no pair was confirmed: every item its own component of one."""
    return ids.select("gen_id", F.col("gen_id").alias("component_id"), F.lit(1).cast("long").alias("component_size"),
                      F.lit(None).cast("string").alias("best_match_id"),
                      F.lit(None).cast("double").alias("best_match_jaccard"),
                      F.lit(None).cast("string").alias("seed_match_id"),
                      F.lit(None).cast("double").alias("seed_match_jaccard"))


def _closest(pairs: DataFrame, prefix: str) -> DataFrame:
    """Per gen_id, the other_id of highest jaccard (ties: smallest other_id)."""
    order = F.struct(-F.col("jaccard"), F.col("other_id"))
    return pairs.groupBy("gen_id").agg(
        F.min_by("other_id", order).alias(f"{prefix}_id"), F.max("jaccard").alias(f"{prefix}_jaccard"))


# ---- the filter ---------------------------------------------------------------------------------
# What `near_duplicates` returns, as the filter model reads it (`near_dup_matches`).
MATCH_SCHEMA = StructType([
    StructField("gen_id", StringType()),
    StructField("component_id", StringType()),
    StructField("component_size", LongType()),
    StructField("best_match_id", StringType()),
    StructField("best_match_jaccard", DoubleType()),
    StructField("seed_match_id", StringType()),
    StructField("seed_match_jaccard", DoubleType()),
])


def prepare(ctx: CurateContext, engine) -> None:
    """Register `near_dup_matches`: `near_duplicates` over this run's generated candidates plus the
    generated rows already in `curated` for tasks outside this run's scope (so a new item that
    repeats an earlier curated one is caught, and earlier survivors keep winning), against every
    seed. The engine signs what is new in `minhash_signatures` first."""
    out_of_scope = "true" if not ctx.tasks else f"NOT array_contains({sql_literal(ctx.tasks)}, e.task)"
    generated = ctx.spark.sql(
        "SELECT gen_id, question, context, choices FROM stg_candidates WHERE item_kind = 'generated' "
        "UNION ALL "
        "SELECT e.gen_id, e.question, e.context, e.choices FROM stg_curated_existing e "
        "LEFT ANTI JOIN stg_candidates c ON c.gen_id = e.gen_id "
        f"WHERE e.item_kind = 'generated' AND {out_of_scope}")
    seeds = ctx.lakehouse.read("seeds").select("seed_id", "question", "context", "choices")
    matches = engine(ctx.lakehouse, ctx.config.curate.near_dup, generated, seeds)
    ctx.register("near_dup_matches", conformed(matches, MATCH_SCHEMA, "near_duplicates()"))


FILTER = Filter(
    "near_dup", Model("intermediate/filter_near_dup.sql"), reads=("seeds",), prepare=prepare,
    engine=Engine(__name__, "near_duplicates", lambda: near_duplicates,
                  reads=(MINHASH_SIGNATURES.name,), writes=(MINHASH_SIGNATURES.name,)))
