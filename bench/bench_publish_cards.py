"""What gathering the data cards of one publish costs in Spark jobs and seconds: the numbers every
card shares (`jobs.datacard.RunNumbers`: decisions, ledger, quarantine, per-task funnel, calibration,
cost) gathered once for all datasets, as `run_publish` does, against gathering them again for each
dataset (`gather_card(..., run=None)`, what every card did before), alternating in one process on
one session over a home a whole run has filled.

Jobs are counted with the status tracker (a job group per variant and round), so the job counts are
exact and the seconds are as noisy as the machine; the first round includes JVM warm-up.

    .venv/bin/taskseed --config demo/taskseed.demo.yaml --home /tmp/cards-home run   # once
    .venv/bin/python bench/bench_publish_cards.py /tmp/cards-home [rounds]

It prints, per round, jobs and seconds of both variants and their ratios, and checks that the two
give the same cards.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_config  # noqa: E402
from jobs.datacard import gather_card, gather_run_numbers  # noqa: E402
from jobs.lakehouse import Lakehouse  # noqa: E402
from jobs.runtime import get_spark  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "demo" / "taskseed.demo.yaml"


def _manifest(lakehouse: Lakehouse, dataset: str) -> dict:
    return {"delta_version": lakehouse.version(dataset), "created_at": "bench", "code_version": "bench",
            "config_fingerprint": "bench", "endpoint": "simulator", "simulated": True, "models": {},
            "prompt_versions": [], "input_versions": {}, "files": []}


def cards(lakehouse: Lakehouse, config, shared: bool) -> list[dict]:
    """Every dataset's card numbers, the run's numbers gathered once (`shared`) or per card."""
    run = gather_run_numbers(lakehouse, config) if shared else None
    out = []
    for dataset in config.publish.datasets:
        df = lakehouse.read(dataset)
        out.append(gather_card(lakehouse, config, dataset, df, df.count(), _manifest(lakehouse, dataset), run)
                   .to_dict())
    return out


def main(home: str, rounds: int = 3) -> None:
    config = load_config(DEMO, ["spark.master=local[2]", "spark.shuffle_partitions=2"], home=home)
    spark = get_spark(config)
    lakehouse = Lakehouse(spark, config)
    missing = [d for d in config.publish.datasets if not lakehouse.exists(d)]
    if missing:
        raise SystemExit(f"{home}: no {', '.join(missing)}; run `taskseed --home {home} run` first")
    tracker = spark.sparkContext.statusTracker()
    seen: dict[str, list[tuple[int, float]]] = {"per card": [], "once": []}
    for r in range(rounds):
        got = {}
        for name, shared in (("per card", False), ("once", True)):
            group = f"bench-cards-{name}-{r}"
            spark.sparkContext.setJobGroup(group, group)
            started = time.perf_counter()
            got[name] = cards(lakehouse, config, shared)
            seconds = time.perf_counter() - started
            jobs = len(tracker.getJobIdsForGroup(group))
            seen[name].append((jobs, seconds))
            print(f"round {r}: {name:8} {jobs:4d} Spark jobs, {seconds:6.1f} s", flush=True)
        assert got["per card"] == got["once"], "the two variants gave different cards"
    (jb, sb), (jo, so) = ([statistics.median(x) for x in zip(*seen[n])] for n in ("per card", "once"))
    print(f"median: gathered once {jo:.0f} jobs / {so:.1f} s, per card {jb:.0f} jobs / {sb:.1f} s: "
          f"{jo / jb:.2f}x the jobs, {so / sb:.2f}x the seconds ({len(config.publish.datasets)} datasets; same cards)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
