"""Shuffle partitions on a laptop: the old fixed 4 against `spark.shuffle_partitions: auto` (4 x the
local cores) with adaptive query execution coalescing, on the shapes curate runs (issue 28).

One local session; the partition settings are runtime SQL settings, so both sides run in the same
JVM, alternating, `--repeats` times each, on the same cached input: a group-by over the items, an
anti join against a table of the same size (MERGE's comparison), and a window (near-dup's ranking),
each ending in a count. Prints each side's median seconds and the ratio auto / fixed-4 (below 1:
auto is faster); on a busy machine read the ratio, not the seconds.

    .venv/bin/python bench/bench_partitions.py --rows 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def workload(spark, items, other) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    items.groupBy("task").agg(F.count("*"), F.countDistinct("key")).collect()
    items.join(other, ["gen_id"], "left_anti").count()
    ranked = items.withColumn("rank", F.row_number().over(Window.partitionBy("key").orderBy("gen_id")))
    ranked.where("rank = 1").count()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from jobs.config import load_config
    from jobs.runtime import auto_shuffle_partitions, get_spark

    home = tempfile.mkdtemp(prefix="bench-partitions-")
    spark = get_spark(load_config(overrides=[f"spark.master={args.master}"], home=home))
    items = (spark.range(args.rows).select(F.sha2(F.col("id").cast("string"), 256).alias("gen_id"),
                                           (F.col("id") % 97).cast("string").alias("task"),
                                           (F.col("id") % (args.rows // 3 or 1)).alias("key"),
                                           F.repeat(F.lit("x"), 200).alias("text")).cache())
    other = items.sample(0.5, seed=1).select("gen_id").cache()
    items.count(), other.count()
    auto = auto_shuffle_partitions(args.master, 0)
    sides = {"fixed 4, AQE off": ("4", "false"), "fixed 4, AQE on": ("4", "true"), f"auto {auto}, AQE on": (str(auto), "true")}
    times: dict[str, list[float]] = {name: [] for name in sides}
    workload(spark, items, other)  # warm-up: JIT, Python workers
    for _ in range(args.repeats):
        for name, (partitions, adaptive) in sides.items():
            spark.conf.set("spark.sql.shuffle.partitions", partitions)
            spark.conf.set("spark.sql.adaptive.enabled", adaptive)
            start = time.perf_counter()
            workload(spark, items, other)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["fixed 4, AQE on"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name}: median {median:.2f} s over {len(values)} runs ({', '.join(f'{v:.2f}' for v in values)}); "
              f"ratio to fixed 4 with AQE (the old default) = {median / base:.2f}")


if __name__ == "__main__":
    main()
