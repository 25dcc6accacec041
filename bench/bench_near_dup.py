"""Benchmark of the near-duplicate engine against Spark ML's MinHashLSH, in the same run.

Data: generated-like rows built from the real benchmark questions in the mirror (GSM8K, ARC, BoolQ
passages + questions, MMLU, WinoGrande, SciQ, WebQuestions, NQ-open, PIQA; context + question +
options). Every row is a surface variant of a real item (about a third of its words replaced by
words of the corpus, numbers changed), so rows made from the same item are similar (Jaccard
≈ 0.3-0.6) but not duplicates, as the K generations of one seed are. Into these go:
- planted near-duplicates: a copy of a row with 1-3 small edits (a word replaced, deleted or
  swapped, case and punctuation changed), kept only when its exact Jaccard is ≥ the threshold
  (short items that no word edit keeps above it get a formatting-only copy);
- planted non-duplicates: a copy with more words replaced, kept only when its exact Jaccard is
  below the threshold (mostly 0.5-0.8).
Jaccard is exact, over char 5-gram sets of the normalized stimulus, as both engines see them; for
two items with a passage the similarity is the engine's rule (`udfs.minhash.item_similarity`:
question and passage each on their own, issue 29), which Spark ML's whole-text join does not know.

Engines, each on the same cached rows and the same threshold, timed to a materialized result:
- taskseed: `jobs.filters.near_dup.near_duplicates` (normalization + signatures in mapInPandas,
  Delta write of the signatures, banding as a group-by, exact-Jaccard confirmation, connected
  components) from the raw question/context/choices;
- Spark ML: RegexTokenizer (characters) → NGram(5) → HashingTF(binary, 2^20) → MinHashLSH →
  `approxSimilarityJoin(df, df, 1 - threshold)`, from the *already normalized* text (normalization
  is given to it for free) and without connected components.
Spark ML's LSH is OR-only (one MinHash per table); numHashTables is the smallest whose candidate
probability at the threshold, 1 - (1 - t)^L, reaches 0.99 (L = 3 at t = 0.8), like taskseed's
banding. Recall: a planted near-duplicate pair is found when both rows share a component
(taskseed) or the pair is in the join output (Spark ML).

    .venv/bin/python bench/bench_near_dup.py                  # 50k, 100k, 200k rows (~15-30 min idle)
    .venv/bin/python bench/bench_near_dup.py --rows 20000     # quick: 5k, 10k, 20k
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udfs.minhash import (MinHashParams, item_similarity, shingle_batch, signature_batch,  # noqa: E402
                          stimulus_text)
from udfs.textnorm import normalize_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("TASKSEED_SHARED_DATA", REPO.parent / "shared" / "data")).resolve() / "hf"
THRESHOLD = 0.8
RECALL_TARGET = 0.95
SPEED_TARGET = 2.0


# ---- real items ---------------------------------------------------------------------------------


def _jsonl(relative: str):
    path = MIRROR / relative
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def real_items() -> list[tuple[str, str | None, list[str] | None]]:
    """(question, context, choices) of every record in the mirror's files used here (~70k)."""
    items: list[tuple[str, str | None, list[str] | None]] = []
    for split in ("train", "test"):
        items += [(r["question"], None, None) for r in _jsonl(f"openai/gsm8k/main/{split}.jsonl")]
    for config in ("ARC-Easy", "ARC-Challenge"):
        for split in ("train", "validation", "test"):
            items += [(r["question"], None, r["choices"]["text"]) for r in _jsonl(f"allenai/ai2_arc/{config}/{split}.jsonl")]
    for split in ("train", "validation"):
        items += [(r["question"], r["passage"], None) for r in _jsonl(f"aps/super_glue/boolq/{split}.jsonl")]
        items += [(r["sentence"], None, [r["option1"], r["option2"]])
                  for r in _jsonl(f"allenai/winogrande/winogrande_l/{split}.jsonl")]
    for path in sorted((MIRROR / "cais" / "mmlu").glob("*/*.jsonl")):
        items += [(r["question"], None, r["choices"]) for r in _jsonl(str(path.relative_to(MIRROR)))]
    for split in ("validation", "test"):
        items += [(r["question"], r["support"] or None,
                   [r["correct_answer"], r["distractor1"], r["distractor2"], r["distractor3"]])
                  for r in _jsonl(f"allenai/sciq/default/{split}.jsonl")]
    for split in ("train", "test"):
        items += [(r["question"], None, None) for r in _jsonl(f"stanfordnlp/web_questions/default/{split}.jsonl")]
    items += [(r["question"], None, None) for r in _jsonl("google-research-datasets/nq_open/default/validation.jsonl")]
    items += [(r["goal"], None, [r["sol1"], r["sol2"]]) for r in _jsonl("baber/piqa/default/validation.jsonl")]
    return items


# ---- surface perturbations ----------------------------------------------------------------------


class Perturber:
    def __init__(self, items, seed: int):
        self.rng = random.Random(seed)
        vocab = set()
        for question, _, _ in items[::7]:
            vocab.update(w for w in question.split() if w.isalpha() and 3 <= len(w) <= 12)
        self.vocab = sorted(vocab)

    def _word(self, word: str) -> str:
        if any(ch.isdigit() for ch in word):
            return str(self.rng.randint(2, 999))
        return self.rng.choice(self.vocab)

    def variant(self, text: str | None, share: float) -> str | None:
        """Replace each word with probability `share` (numbers by numbers, words by corpus words)."""
        if text is None:
            return None
        return " ".join(self._word(w) if self.rng.random() < share else w for w in text.split())

    def item_variant(self, item, share: float):
        question, context, choices = item
        return (self.variant(question, share), self.variant(context, share),
                None if choices is None else [self.variant(c, share) for c in choices])

    def small_edit(self, item):
        """One edit: a word replaced, deleted or swapped with its neighbour, or case/punctuation."""
        question, context, choices = item
        fields = [question] + ([context] if context else []) + list(choices or [])
        weights = [max(len(f.split()), 1) for f in fields]
        k = self.rng.choices(range(len(fields)), weights)[0]
        words = fields[k].split()
        kind = self.rng.choice(("replace", "delete", "swap", "format"))
        if kind == "format" or len(words) < 2:
            fields[k] = fields[k].upper() if self.rng.random() < 0.5 else fields[k].rstrip("?.!") + " ?!"
        else:
            i = self.rng.randrange(len(words))
            if kind == "replace":
                words[i] = self._word(words[i])
            elif kind == "delete":
                del words[i]
            else:
                j = min(i + 1, len(words) - 1)
                words[i], words[j] = words[j], words[i]
            fields[k] = " ".join(words)
        question = fields[0]
        rest = fields[1:]
        if context:
            context, rest = rest[0], rest[1:]
        return question, context, (rest if choices is not None else None)


def shingle_sets(items) -> list[np.ndarray]:
    texts = [normalize_text(stimulus_text(q, c, ch)) for q, c, ch in items]
    offsets, hashes = shingle_batch(texts)
    return [hashes[offsets[i]:offsets[i + 1]] for i in range(len(texts))]


def exact_jaccard(a, b) -> float:
    """The similarity the engine's rule decides on (`udfs.minhash.item_similarity`): the whole
    stimulus's Jaccard, or, when both items have a passage, the question's and the passage's each on
    their own (issue 29). A planted edit that turns a passage item's question into another question
    is then a non-duplicate, as the engine rules."""
    return item_similarity(a, b, MinHashParams(), THRESHOLD)[1]


def build_rows(n_rows: int, items, planted_share: float, seed: int):
    """n_rows items: base variants plus planted near-duplicate and non-duplicate pairs.
    Returns (frame with gen_id/question/context/choices, near pairs, non pairs) where a pair is
    (gen_id_a, gen_id_b, exact_jaccard)."""
    perturb = Perturber(items, seed)
    rng = perturb.rng
    n_pairs = int(n_rows * planted_share)
    n_base = n_rows - 2 * n_pairs
    order = list(range(len(items)))
    rng.shuffle(order)
    base = [perturb.item_variant(items[order[i % len(order)]], 0.35) for i in range(n_base)]
    rows = list(base)
    near, non = [], []
    for p in range(n_pairs):
        a = rng.randrange(n_base)
        copy, sim = None, 0.0
        for _ in range(8):
            candidate = base[a]
            for _ in range(rng.randint(1, 3)):
                candidate = perturb.small_edit(candidate)
            sim = exact_jaccard(base[a], candidate)
            if sim >= THRESHOLD:
                copy = candidate
                break
        if copy is None:  # a short item: no word edit stays above the threshold
            q, c, ch = base[a]
            copy, sim = (q.upper(), c, ch), exact_jaccard(base[a], (q.upper(), c, ch))
        rows.append(copy)
        near.append((a, len(rows) - 1, sim))
    for p in range(n_pairs):
        a = rng.randrange(n_base)
        share, far, sim = 0.08, None, 1.0
        for _ in range(12):
            candidate = perturb.item_variant(base[a], share)
            sim = exact_jaccard(base[a], candidate)
            if sim < THRESHOLD:
                far = candidate
                break
            share = min(share * 1.5, 0.6)
        if far is None:
            continue
        rows.append(far)
        non.append((a, len(rows) - 1, sim))
    while len(rows) < n_rows:  # non-duplicates that could not be planted: fill with base variants
        rows.append(perturb.item_variant(items[rng.randrange(len(items))], 0.35))
    ids = [f"g{i:07d}" for i in range(len(rows))]
    frame = pd.DataFrame({"gen_id": ids, "question": [r[0] for r in rows], "context": [r[1] for r in rows],
                          "choices": [r[2] for r in rows]})
    return (frame, [(ids[a], ids[b], s) for a, b, s in near], [(ids[a], ids[b], s) for a, b, s in non])


# ---- engines ------------------------------------------------------------------------------------


def run_taskseed(spark, frame: pd.DataFrame, partitions: int) -> tuple[float, pd.DataFrame, object]:
    from jobs.config import load_config
    from jobs.filters.near_dup import near_duplicates
    from jobs.lakehouse import Lakehouse

    home = Path(tempfile.mkdtemp(prefix="bench-neardup-"))
    config = load_config(overrides=[f"schema=bench_nd_{len(frame)}_{int(time.time())}"], home=home)
    lakehouse = Lakehouse(spark, config)
    generated = spark.createDataFrame(frame, "gen_id string, question string, context string, choices array<string>")
    generated = generated.repartition(partitions).cache()
    generated.count()
    seeds = spark.createDataFrame([], "seed_id string, question string, context string, choices array<string>")
    t0 = time.perf_counter()
    result = near_duplicates(lakehouse, config.curate.near_dup, generated, seeds).persist()
    result.count()
    elapsed = time.perf_counter() - t0
    out = result.select("gen_id", "component_id", "component_size").toPandas()
    result.unpersist()
    return elapsed, out, (lakehouse, config, generated, seeds, home)


def spark_ml_tables(threshold: float, target: float = 0.99) -> int:
    return next(L for L in range(1, 64) if 1 - (1 - threshold) ** L >= target)


def run_spark_ml(spark, frame: pd.DataFrame, partitions: int, tables: int, timeout_s: float):
    """Spark ML's pipeline on the same rows. Returns (seconds or None when cancelled after
    timeout_s, found pairs as a pandas frame a/b or None, pairs its hash join compares, largest
    bucket). The compared-pairs count (Σ m(m-1)/2 over hash buckets of m rows) is computed apart,
    untimed, so it is known even when the join does not finish."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import HashingTF, MinHashLSH, NGram, RegexTokenizer
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    texts = pd.DataFrame({"id": frame["gen_id"], "text": [
        normalize_text(stimulus_text(q, c, ch)) for q, c, ch in
        zip(frame["question"], frame["context"], frame["choices"])]})
    df = spark.createDataFrame(texts).repartition(partitions).cache()
    df.count()

    def hashed_rows():
        pipeline = Pipeline(stages=[
            RegexTokenizer(inputCol="text", outputCol="chars", pattern="(?s).", gaps=False, toLowercase=False,
                           minTokenLength=1),
            NGram(n=5, inputCol="chars", outputCol="shingles"),
            HashingTF(inputCol="shingles", outputCol="features", numFeatures=1 << 20, binary=True),
        ])
        featurized = pipeline.fit(df).transform(df).where(F.size("shingles") > 0).select("id", "features")
        model = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=tables, seed=1).fit(featurized)
        return model, model.transform(featurized)

    _, hashed = hashed_rows()
    buckets = (hashed.select(F.posexplode("hashes").alias("table", "v"))
               .select("table", vector_to_array("v")[0].alias("h")).groupBy("table", "h").count())
    stats = buckets.agg(F.sum(F.col("count") * (F.col("count") - 1) / 2).alias("pairs"),
                        F.max("count").alias("largest")).first()
    compared, largest = int(stats["pairs"] or 0), int(stats["largest"] or 0)

    result: dict = {}
    group = f"bench-spark-ml-{len(frame)}"

    def work() -> None:
        spark.sparkContext.setJobGroup(group, "Spark ML MinHashLSH baseline", interruptOnCancel=True)
        try:
            t0 = time.perf_counter()
            model, hashed = hashed_rows()
            hashed = hashed.cache()
            pairs = (
                model.approxSimilarityJoin(hashed, hashed, 1.0 - THRESHOLD + 1e-9, distCol="distance")
                .select(F.col("datasetA.id").alias("a"), F.col("datasetB.id").alias("b"))
                .where(F.col("a") < F.col("b"))
                .persist()
            )
            pairs.count()
            result["seconds"] = time.perf_counter() - t0
            result["pairs"] = pairs.toPandas()
            pairs.unpersist()
            hashed.unpersist()
        except Exception as error:  # cancelled by the timeout below, or a real failure
            result["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        spark.sparkContext.cancelJobGroup(group)
        thread.join()
        result = {"timeout": True}
    elif "error" in result:
        raise result["error"]
    spark.catalog.clearCache()
    return result.get("seconds"), result.get("pairs"), compared, largest


def found_by_taskseed(out: pd.DataFrame, pairs) -> list[bool]:
    component = dict(zip(out["gen_id"], out["component_id"]))
    return [component[a] == component[b] for a, b, _ in pairs]


def found_by_spark_ml(out: pd.DataFrame, pairs) -> list[bool]:
    found = set(zip(out["a"], out["b"]))
    return [(min(a, b), max(a, b)) in found for a, b, _ in pairs]


def share(hits: list[bool]) -> float:
    return float(np.mean(hits)) if hits else float("nan")


def by_similarity(pairs, hits) -> str:
    edges = [THRESHOLD, 0.85, 0.9, 0.95, 1.0, 1.01]
    parts = []
    for lo, hi in zip(edges, edges[1:]):
        chosen = [h for (_, _, s), h in zip(pairs, hits) if lo <= s < hi]
        if chosen:
            label = "1.0" if lo == 1.0 else f"[{lo:.2f},{hi:.2f})"
            parts.append(f"{label}: {np.mean(chosen):.3f} of {len(chosen)}")
    return ", ".join(parts)


# ---- datasketch ---------------------------------------------------------------------------------


def datasketch_case(items, n: int = 20000) -> None:
    """Signing speed: datasketch's MinHash.bulk (one update_batch per text) vs the batch path of
    udfs.minhash (bit-identical values), on the same shingle sets."""
    from datasketch import MinHash

    params = MinHashParams()
    sets = shingle_sets(items[:n])
    t0 = time.perf_counter()
    reference = MinHash.bulk([s.tolist() for s in sets], num_perm=params.num_perm, seed=params.seed,
                             scheme="affine32", hashfunc=lambda v: v)
    slow = time.perf_counter() - t0
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    t0 = time.perf_counter()
    sigs, _ = signature_batch(offsets, np.concatenate(sets), params)
    fast = time.perf_counter() - t0
    same = all(np.array_equal(s, m.hashvalues) for s, m in zip(sigs, reference))
    print(f"case signing {n} real items, {params.num_perm} permutations: datasketch MinHash.bulk {n / slow:,.0f} items/s, "
          f"udfs.minhash.signature_batch {n / fast:,.0f} items/s, ratio {slow / fast:.1f}x, identical values: {same}")


# ---- main ---------------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="largest size; also runs rows/4 and rows/2")
    parser.add_argument("--planted-share", type=float, default=0.05, help="share of rows in each planted set")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-spark-ml", action="store_true", help="skip the Spark ML baseline")
    parser.add_argument("--baseline-timeout", type=float, default=1200.0,
                        help="cancel a Spark ML run after this many seconds and report a bound")
    args = parser.parse_args()

    started = time.perf_counter()
    logging.basicConfig(format="    %(message)s", level=logging.WARNING)
    logging.getLogger("jobs.filters.near_dup").setLevel(logging.INFO)  # per-phase times of taskseed
    print(f"bench near-dup start: {load()}", flush=True)
    items = real_items()
    print(f"real items from the mirror: {len(items):,}")
    datasketch_case(items)

    from jobs.config import load_config
    from jobs.runtime import get_spark

    spark_home = Path(tempfile.mkdtemp(prefix="bench-neardup-spark-"))
    spark = get_spark(load_config(overrides=["spark.master=local[2]", f"spark.shuffle_partitions={args.partitions}",
                                             f"spark.driver_memory={args.driver_memory}"], home=spark_home))
    tables = spark_ml_tables(THRESHOLD)
    params = MinHashParams.for_threshold(THRESHOLD)
    print(f"taskseed: {params.tag}, P(candidate | J={THRESHOLD}) = {params.s_curve(THRESHOLD):.3f}; "
          f"Spark ML MinHashLSH: numHashTables={tables}, P(candidate | J={THRESHOLD}) = {1 - (1 - THRESHOLD) ** tables:.3f}")

    # warm-up, untimed: JIT, Python workers, Delta and MLlib code paths
    warm, _, _ = build_rows(1000, items, args.planted_share, args.seed)
    cleanup_warm = run_taskseed(spark, warm, args.partitions)[2]
    if not args.no_spark_ml:
        run_spark_ml(spark, warm, args.partitions, tables, args.baseline_timeout)
    shutil.rmtree(cleanup_warm[-1], ignore_errors=True)

    sizes = [args.rows // 4, args.rows // 2, args.rows]
    results = []
    cleanup = []
    for n in sizes:
        frame, near, non = build_rows(n, items, args.planted_share, args.seed + n)
        sims = np.array([s for _, _, s in near])
        print(f"rows {n:,}: {len(near):,} planted near-duplicate pairs (exact J {sims.min():.3f}-{sims.max():.3f}, "
              f"median {np.median(sims):.3f}), {len(non):,} planted non-duplicates "
              f"(J {min(s for *_, s in non):.3f}-{max(s for *_, s in non):.3f}); {load()}")
        t_ours, ours, context = run_taskseed(spark, frame, args.partitions)
        cleanup.append(context)
        ours_hits = found_by_taskseed(ours, near)
        ours_recall, ours_fp = share(ours_hits), share(found_by_taskseed(ours, non))
        merged = int((ours["component_size"] > 1).sum())
        print(f"  taskseed near_duplicates: {t_ours:.1f} s, {n / t_ours:,.0f} rows/s; recall {ours_recall:.4f} "
              f"({by_similarity(near, ours_hits)}); planted non-duplicates merged {ours_fp:.4f}; "
              f"rows in components > 1: {merged:,}")
        row = {"rows": n, "ours_s": t_ours, "ours_recall": ours_recall, "ours_fp": ours_fp}
        if not args.no_spark_ml:
            t_ml, ml, compared, largest = run_spark_ml(spark, frame, args.partitions, tables, args.baseline_timeout)
            if t_ml is None:
                print(f"  Spark ML MinHashLSH approxSimilarityJoin: cancelled after {args.baseline_timeout:.0f} s "
                      f"(< {n / args.baseline_timeout:,.0f} rows/s); its hash join compares {compared:,} pairs "
                      f"(largest bucket {largest:,} rows); ratio taskseed / Spark ML rows/s > "
                      f"{args.baseline_timeout / t_ours:.2f}x; {load()}")
                row.update(ml_s=None, ml_bound=args.baseline_timeout, ml_compared=compared)
            else:
                ml_hits = found_by_spark_ml(ml, near)
                ml_recall, ml_fp = share(ml_hits), share(found_by_spark_ml(ml, non))
                print(f"  Spark ML MinHashLSH approxSimilarityJoin: {t_ml:.1f} s, {n / t_ml:,.0f} rows/s; recall "
                      f"{ml_recall:.4f} ({by_similarity(near, ml_hits)}); planted non-duplicates joined {ml_fp:.4f}; "
                      f"its hash join compared {compared:,} pairs (largest bucket {largest:,} rows)")
                print(f"  ratio taskseed / Spark ML rows/s at {n:,} rows: {t_ml / t_ours:.2f}x; {load()}")
                row.update(ml_s=t_ml, ml_recall=ml_recall, ml_fp=ml_fp, ml_compared=compared)
        results.append(row)

    # incremental: the largest run again with 1% new rows signs only those
    lakehouse, config, generated, seeds, home = cleanup[-1]
    from jobs.filters.near_dup import near_duplicates

    extra_frame, _, _ = build_rows(max(args.rows // 100, 10), items, 0.0, args.seed + 1)
    extra_frame["gen_id"] = ["n" + g[1:] for g in extra_frame["gen_id"]]
    extra = spark.createDataFrame(extra_frame, "gen_id string, question string, context string, choices array<string>")
    grown = generated.unionByName(extra).cache()
    grown.count()
    before = lakehouse.read("minhash_signatures").count()
    t0 = time.perf_counter()
    rerun = near_duplicates(lakehouse, config.curate.near_dup, grown, seeds).persist()
    rerun.count()
    t_inc = time.perf_counter() - t0
    signed = lakehouse.read("minhash_signatures").count() - before
    rerun.unpersist()
    first = results[-1]["ours_s"]
    print(f"incremental: {args.rows:,} rows + {len(extra_frame):,} new: signed {signed:,} rows, {t_inc:.1f} s "
          f"({t_inc / first:.2f} of the first run's {first:.1f} s); {load()}")

    print("growth (time at each size / time at the smallest; linear = size ratio):")
    for row in results:
        ratio = row["rows"] / results[0]["rows"]
        line = f"  {row['rows']:>8,} rows ({ratio:.0f}x): taskseed {row['ours_s'] / results[0]['ours_s']:.2f}x"
        if row.get("ml_s") and results[0].get("ml_s"):
            line += f", Spark ML {row['ml_s'] / results[0]['ml_s']:.2f}x"
        elif "ml_compared" in row:
            line += ", Spark ML did not finish"
        if "ml_compared" in row and results[0].get("ml_compared"):
            line += f" (pairs its join compares: {row['ml_compared'] / results[0]['ml_compared']:.1f}x)"
        print(line)

    last = results[-1]
    recall_ok = last["ours_recall"] >= RECALL_TARGET
    if "ml_compared" not in last:
        verdict = "PASS" if recall_ok else "FAIL"
        print(f"{verdict}: recall {last['ours_recall']:.4f} (Spark ML skipped: no speed verdict)")
    elif last["ml_s"] is None:
        bound = last["ml_bound"] / last["ours_s"]
        verdict = "PASS" if bound >= SPEED_TARGET and recall_ok else "FAIL"
        print(f"{verdict}: at {last['rows']:,} rows taskseed is more than {bound:.2f}x Spark ML MinHashLSH's rows/s "
              f"(it did not finish in {last['ml_bound']:.0f} s; target >= {SPEED_TARGET}x) with recall "
              f"{last['ours_recall']:.4f} on planted pairs with J >= {THRESHOLD} (target >= {RECALL_TARGET})")
    else:
        speed = last["ml_s"] / last["ours_s"]
        verdict = "PASS" if speed >= SPEED_TARGET and recall_ok else "FAIL"
        print(f"{verdict}: at {last['rows']:,} rows taskseed is {speed:.2f}x Spark ML MinHashLSH's rows/s "
              f"(target >= {SPEED_TARGET}x) with recall {last['ours_recall']:.4f} on planted pairs with J >= {THRESHOLD} "
              f"(target >= {RECALL_TARGET}; Spark ML {last['ml_recall']:.4f})")
    print(f"bench done in {time.perf_counter() - started:.0f} s; {load()}")
    for *_, home in cleanup:
        shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(spark_home, ignore_errors=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
