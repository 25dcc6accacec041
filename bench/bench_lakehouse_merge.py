"""What one `Lakehouse.merge` costs in Spark jobs and seconds on small tables (the suite's and a
demo run's common case), against the comparison it used to make on every call, alternating in one
process on one session.

Three writes per round on a fresh table (`seeds`, N rows): the first write (table just created by
`ensure`), a rerun of the same rows (nothing changes: no commit), and a write that changes every
row's question and adds N/2 rows. Two variants:

- baseline: the table is always compared against (`is_unwritten` forced False), the way every
  merge did before; the change check of this build is used for both, so the difference is the
  first-write skip alone;
- current: `Lakehouse.merge` as shipped.

Jobs are counted with the status tracker (a job group per write), so the job counts are exact and
the seconds are as noisy as the machine. The first round includes JVM warm-up; compare the medians.

    .venv/bin/python bench/bench_lakehouse_merge.py          # 5 rounds, 20 rows
    .venv/bin/python bench/bench_lakehouse_merge.py 9 200
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_config  # noqa: E402
from jobs.lakehouse import Lakehouse  # noqa: E402
from jobs.runtime import get_spark  # noqa: E402
from schemas.tables import SEEDS  # noqa: E402

WRITES = ("first write", "unchanged rerun", "changed + new rows")


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    home = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2", "schema=bench_merge"],
                         home=home)
    spark = get_spark(config)
    sc = spark.sparkContext
    tracker = sc.statusTracker()

    def rows(count: int, question: str):
        return spark.createDataFrame(
            [tuple({"seed_id": f"s{i}", "task": "t", "split": "train", "doc_index": i,
                    "question": f"{question} {i}"}.get(c) for c in SEEDS.columns) for i in range(count)],
            SEEDS.schema)

    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    try:
        for r in range(rounds):
            for variant in ("baseline", "current"):
                spark.sql(f"DROP TABLE IF EXISTS bench_merge.{SEEDS.name}")
                shutil.rmtree(home / "tables" / SEEDS.name, ignore_errors=True)
                lakehouse = Lakehouse(spark, config)
                if variant == "baseline":
                    lakehouse.is_unwritten = lambda _name: False  # type: ignore[method-assign]
                lakehouse.ensure(SEEDS)
                writes = [(rows(n, "q"), None), (rows(n, "q"), None), (rows(n + n // 2, "q2"), ["question"])]
                for what, (df, changed) in zip(WRITES, writes):
                    group = f"{variant}-{r}-{what}"
                    sc.setJobGroup(group, group)
                    started = time.perf_counter()
                    lakehouse.merge(df, SEEDS, update_when_changed=changed)
                    seconds = time.perf_counter() - started
                    results.setdefault((variant, what), []).append((len(tracker.getJobIdsForGroup(group)), seconds))
                got = {row.seed_id: row.question for row in lakehouse.read(SEEDS.name).collect()}
                assert got == {f"s{i}": f"q2 {i}" for i in range(n + n // 2)}, "the writes went wrong"
            print(f"round {r + 1}/{rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        spark.sql("DROP SCHEMA IF EXISTS bench_merge CASCADE")
        shutil.rmtree(home, ignore_errors=True)

    print(f"\nLakehouse.merge on a {n}-row table, {rounds} rounds (medians; the first round included)")
    print(f"{'write':<22}{'baseline jobs':>14}{'current jobs':>14}{'baseline s':>12}{'current s':>11}{'time ratio':>12}")
    for what in WRITES:
        base, cur = results[("baseline", what)], results[("current", what)]
        bj, cj = statistics.median(j for j, _ in base), statistics.median(j for j, _ in cur)
        bs, cs = statistics.median(s for _, s in base), statistics.median(s for _, s in cur)
        print(f"{what:<22}{bj:>14.0f}{cj:>14.0f}{bs:>12.2f}{cs:>11.2f}{cs / bs:>11.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
