"""Benchmark of the LLM call step's plan (which requests are pending, numbered into micro-batches)
at 1M synthetic requests: the old global `row_number()` over `Window.orderBy(request_id)` against
`jobs.llm_stage.call.number_pending` (hash-partitioned anti-join + per-partition offsets), in the
same Spark session and run. Prints wall seconds, the ratio old/new, how many `Exchange SinglePartition`
steps (every pending row through one task) each plan has, and the machine's load average.

    .venv/bin/python bench/bench_llm_plan.py                 # 1M requests, 10% already done
    .venv/bin/python bench/bench_llm_plan.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.config import load_config  # noqa: E402
from jobs.llm_stage.call import number_pending  # noqa: E402
from jobs.runtime import get_spark  # noqa: E402


def synthetic_requests(spark: SparkSession, rows: int) -> DataFrame:
    """`rows` distinct requests shaped like a stage's requests frame (~400-byte messages_json)."""
    filler = "Which material conducts heat best when a rod is heated at one end? " * 4
    return (spark.range(rows, numPartitions=8)
            .select(F.sha2(F.concat(F.lit("req-"), F.col("id").cast("string")), 256).alias("request_id"),
                    F.lit("enrich").alias("stage"), F.concat(F.lit("item-"), F.col("id")).alias("source_key"),
                    F.to_json(F.array(F.struct(F.lit("user").alias("role"),
                                               F.concat(F.lit(filler), F.col("id")).alias("content"))))
                    .alias("messages_json"),
                    F.lit(None).cast("string").alias("response_format_json"),
                    F.lit(0.7).alias("temperature"), F.lit(512).alias("max_tokens")))


def old_global_window(requests: DataFrame, done: DataFrame, batch_rows: int) -> tuple[DataFrame, int, int]:
    """The plan as it was before: every pending id numbered by one window over all of them."""
    pending_ids = requests.select("request_id").distinct().join(done, "request_id", "left_anti")
    numbered = pending_ids.withColumn("_rn", F.row_number().over(Window.orderBy("request_id")) - 1)
    plan = (requests.dropDuplicates(["request_id"]).join(numbered, "request_id")
            .withColumn("_mb", F.floor(F.col("_rn") / F.lit(batch_rows)).cast("int")))
    single = single_partition_exchanges(plan)
    pending = plan.localCheckpoint(eager=True)
    return pending, pending.count(), single


def single_partition_exchanges(df: DataFrame) -> int:
    """How many `Exchange SinglePartition` steps (every row through one task) the plan has."""
    return df._jdf.queryExecution().executedPlan().toString().count("SinglePartition")  # noqa: SLF001


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--done-fraction", type=float, default=0.1)
    ap.add_argument("--batch-rows", type=int, default=250)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=8"],
                         home=home)
    spark = get_spark(config)
    requests = synthetic_requests(spark, args.rows).cache()
    requests.count()
    done = (requests.select("request_id").where(F.rand(seed=1) < args.done_fraction).distinct()
            .localCheckpoint(eager=True))
    expected = args.rows - done.count()
    print(f"# {args.rows} requests, {args.rows - expected} already done, micro-batches of {args.batch_rows}, "
          f"local[2], load average {os.getloadavg()[0]:.1f}", flush=True)

    results = {}
    for name in ("old", "new", "old", "new"):  # alternate, keep the second of each (warm JVM)
        t0 = time.perf_counter()
        if name == "old":
            snap, n, single = old_global_window(requests, done, args.batch_rows)
        else:
            snap, numbered, n = number_pending(requests, done, args.batch_rows)
            single = single_partition_exchanges(numbered)
            first_batch = numbered.where(F.col("_mb") == 0).count()  # the numbering is usable
            assert first_batch == min(args.batch_rows, n), first_batch
        elapsed = time.perf_counter() - t0
        assert n == expected, (name, n, expected)
        snap.unpersist()
        results[name] = (elapsed, single)
        print(f"plan {name:3s}: {elapsed:6.1f} s  pending={n}  single-partition exchanges={single} "
              f"load={os.getloadavg()[0]:.1f}", flush=True)
    old, new = results["old"][0], results["new"][0]
    print(f"plan step at {args.rows} requests: old global window {old:.1f} s, new {new:.1f} s, "
          f"old/new = {old / new:.2f}x; single-partition exchanges old={results['old'][1]} "
          f"new={results['new'][1]}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
