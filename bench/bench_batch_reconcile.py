"""Benchmark of batch mode (issue 27): requests per second of the reconcile step against the
online path on the same requests, and the cost model's projection of batch vs online.

Two fresh lakehouses get the same seeds (real records of the shared mirror,
tests/unit/seed_records.py; `--seeds` per task of arc_easy, gsm8k, boolq, `generate.items_per_seed`
2). Spark is started and warmed first (a small online run on a third lakehouse).

- online: `run_stage(generate)` against the simulator (in its own process, default latency 20 ms
  ± 10, max_concurrency 256, endpoint max_concurrency 64): plan, the calling job, ledger commits,
  parse; requests/s = requests / wall seconds;
- batch: `export_batches` writes the same requests as batch files, the simulator's `vllm
  run-batch` stand-in answers them (`simulator.batch_files.run_batch_file`, not timed: that is the
  provider's or the GPU's time), then `import_batches` is timed: read the files, ledger rows,
  memberships `reconciled`, the parse step (what `endpoint.mode: batch` runs per finished batch).

The ratio is batch reconcile req/s ÷ online req/s. The reconcile step is Spark jobs over a file;
its cost hardly grows with the requests, the online path's grows with requests ÷ (concurrency /
latency), so the ratio grows with `--seeds`.

Cost projection: the online run's ledger tokens (prompt + completion per model; estimated the way
`jobs/costs.py` does when the server sent no usage) at the prices of the demo config
(demo/taskseed.demo.yaml `costs`), online and as batch calls (less `batch_discount`); with
`--demo-home <home of a finished demo run>` the demo's own ledger (generate + enrich) instead.

    .venv/bin/python bench/bench_batch_reconcile.py                  # 3 seeds per task: 18 requests
    .venv/bin/python bench/bench_batch_reconcile.py --seeds 50       # 300 requests
    .venv/bin/python bench/bench_batch_reconcile.py --demo-home /tmp/demo
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def ledger_projection(lakehouse, config) -> list[str]:
    """Lines: per model, the ledger's tokens priced online and in batch mode (config.costs)."""
    from pyspark.sql import functions as F

    from jobs.costs import call_tokens
    from udfs.costs import tokens_cost

    rows = (call_tokens(lakehouse.read("llm_calls")).groupBy("model")
            .agg(F.sum("in_tokens").alias("p"), F.sum("out_tokens").alias("c"), F.count("*").alias("n")).collect())
    lines, total_online, total_batch = [], 0.0, 0.0
    for r in sorted(rows, key=lambda r: r.model or ""):
        price = config.costs.get(r.model)
        online = tokens_cost(r.p or 0, r.c or 0, price)
        batch = tokens_cost(r.p or 0, r.c or 0, price, batch=True)
        if online is None:
            lines.append(f"  {r.model}: {r.n} calls, no price in the config")
            continue
        total_online, total_batch = total_online + online, total_batch + batch
        lines.append(f"  {r.model}: {r.n} calls, {r.p:.0f} prompt + {r.c:.0f} completion tokens: online {online:.4f}, "
                     f"batch {batch:.4f} (batch_discount {price.batch_discount})")
    if total_online:
        lines.append(f"  total: online {total_online:.4f}, batch {total_batch:.4f}: batch/online "
                     f"{total_batch / total_online:.2f}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task (arc_easy, gsm8k, boolq)")
    parser.add_argument("--demo-home", help="home of a finished demo run: project its ledger's cost")
    args = parser.parse_args()

    from jobs.config import load_config
    from jobs.generate import GENERATE_SPEC
    from jobs.lakehouse import Lakehouse
    from jobs.llm_stage.batch import export_batches, import_batches
    from jobs.llm_stage.runner import run_stage
    from jobs.runtime import get_spark
    from schemas.tables import LLM_CALLS, SEEDS
    from simulator import SimSettings, SimulatorProcess
    from simulator.batch_files import run_batch_file
    from tests.unit.seed_records import seed_rows

    root = Path(tempfile.mkdtemp(prefix="taskseed-bench-batch-"))
    base = ["spark.master=local[2]", "spark.shuffle_partitions=2", "generate.items_per_seed=2",
            "endpoint.api_key_env=null"]
    spark = get_spark(load_config(overrides=base, home=root / "warm"))
    seeds = seed_rows(arc_easy=args.seeds, gsm8k=args.seeds, boolq=args.seeds)

    def lakehouse_for(name: str, url: str | None = None, n: int | None = None):
        over = [*base, f"schema=bench_batch_{name}"] + ([f"endpoint.base_url={url}"] if url else [])
        config = load_config(overrides=over, home=root / name)
        lh = Lakehouse(spark, config)
        lh.merge(spark.createDataFrame(seeds[:n] if n else seeds, SEEDS.schema), SEEDS)
        return lh, config

    settings = SimSettings(seed=1)
    print(f"# {len(seeds)} seeds, {2 * len(seeds)} generate requests, local[2], {load()}", flush=True)
    with SimulatorProcess(settings) as sim:
        warm, warm_config = lakehouse_for("warm", sim.base_url, 3)
        run_stage(GENERATE_SPEC, warm, warm_config, progress=lambda _l: None)
        online, online_config = lakehouse_for("online", sim.base_url)
        t0 = time.perf_counter()
        result = run_stage(GENERATE_SPEC, online, online_config, progress=lambda _l: None)
        online_s = time.perf_counter() - t0
    sent = result.accounting.sent

    batch, batch_config = lakehouse_for("batch")
    exported = export_batches(GENERATE_SPEC, batch, batch_config, root / "batch-in")
    out = root / "batch-out"
    out.mkdir()
    for name in exported.files:
        run_batch_file(root / "batch-in" / name, out / name, settings=settings)
    t0 = time.perf_counter()
    imported = import_batches(batch, batch_config, out, {"generate": GENERATE_SPEC})
    reconcile_s = time.perf_counter() - t0
    recorded = sum(imported.recorded.values())
    assert recorded == sent == exported.requests, (recorded, sent, exported.requests)
    assert batch.read(LLM_CALLS.name).count() == online.read(LLM_CALLS.name).count()

    online_rate, batch_rate = sent / online_s, recorded / reconcile_s
    print(f"online run_stage: {sent} requests in {online_s:.1f} s = {online_rate:.1f} req/s; "
          f"batch reconcile (import_batches: files -> ledger -> parse): {recorded} requests in {reconcile_s:.1f} s "
          f"= {batch_rate:.1f} req/s; ratio {batch_rate / online_rate:.2f}x; {load()}", flush=True)

    demo = load_config(path=REPO / "demo" / "taskseed.demo.yaml", overrides=base, home=args.demo_home or root / "online")
    if args.demo_home:
        source, label = Lakehouse(spark, demo), f"the demo run's ledger at {args.demo_home}"
    else:
        source, label = online, "this run's online ledger"
    print(f"cost projection of {label} at the demo config's prices:")
    for line in ledger_projection(source, demo):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
