"""accumulator_progress on the suite's session: it counts the user's units that executors add to its
accumulator (never Spark tasks), caps the count at the total and ends with a complete line."""

from __future__ import annotations

import re
import time


def test_counts_the_rows_executors_report_never_spark_tasks(spark):
    from jobs.progress import accumulator_progress, spark_counter

    lines: list[str] = []
    sizes = [57, 3, 40, 20, 57, 3, 40, 20]  # rows of 8 work units on 4 partitions
    rows_done = spark_counter(spark)
    assert rows_done is not None

    def work(part):
        for size in part:
            time.sleep(0.2)
            rows_done.add(size)
            yield size

    with accumulator_progress(rows_done, "ingest: normalizing", lines.append, total=sum(sizes), unit="rows",
                              interval_s=0.0, poll_s=0.05):
        assert spark.sparkContext.parallelize(sizes, 4).mapPartitions(work).sum() == 240
    assert lines, "a 0.4 s action polled every 50 ms reports something"
    assert not any("task" in line for line in lines), lines
    counts = [tuple(map(int, re.match(r"ingest: normalizing (\d+)/(\d+) rows", line).groups())) for line in lines]
    assert all(total == 240 for _, total in counts)
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    assert lines[-1].startswith("ingest: normalizing 240/240 rows (100%)") and "done in" in lines[-1]


def test_a_block_without_work_says_nothing(spark):
    from jobs.progress import accumulator_progress, spark_counter

    lines: list[str] = []
    with accumulator_progress(spark_counter(spark), "test: idle", lines.append, total=10, interval_s=0.0, poll_s=0.01):
        time.sleep(0.3)
    assert lines == []
