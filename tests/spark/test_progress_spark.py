"""spark_job_progress on the suite's session: it counts the tasks of the jobs run inside the block
(and only those), ends with a complete line, and puts the thread's job group back."""

from __future__ import annotations

import re
import time


def _slow_partitions(spark, partitions: int, seconds: float):
    def work(rows):
        time.sleep(seconds)
        yield sum(1 for _ in rows)

    return spark.sparkContext.parallelize(range(partitions * 10), partitions).mapPartitions(work)


def test_counts_the_blocks_tasks_with_rate_and_eta(spark):
    from jobs.progress import spark_job_progress

    sc = spark.sparkContext
    sc.setLocalProperty("spark.jobGroup.id", "callers-group")
    lines: list[str] = []
    _slow_partitions(spark, 2, 0.0).count()  # warm the Python workers outside the block
    with spark_job_progress(spark, "test: slow", lines.append, interval_s=0.0, poll_s=0.05) as meter:
        assert _slow_partitions(spark, 8, 0.4).sum() == 80
    assert sc.getLocalProperty("spark.jobGroup.id") == "callers-group"
    sc.setLocalProperty("spark.jobGroup.id", None)

    assert meter is not None and lines, "a 1.6 s action polled every 50 ms reports something"
    counts = [tuple(map(int, re.match(r"test: slow (\d+)/(\d+) tasks", line).groups())) for line in lines]
    assert all(total == 8 for _, total in counts), counts  # the warm-up job outside the block is not counted
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    assert any(done < 8 for done, _ in counts) and "ETA " in lines[0]
    assert lines[-1].startswith("test: slow 8/8 tasks (100%)") and "done in" in lines[-1]


def test_a_block_without_spark_jobs_says_nothing(spark):
    from jobs.progress import spark_job_progress

    lines: list[str] = []
    with spark_job_progress(spark, "test: idle", lines.append, interval_s=0.0, poll_s=0.01) as meter:
        time.sleep(0.3)
    assert lines == [] and meter.total is None
