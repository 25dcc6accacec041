"""Benchmark of the LLM call engine against the simulator (run in a separate process).

Cases (one summary line each):
1. throughput at fixed latency L and server max concurrency C, through the async engine:
   achieved req/s ÷ (C / L) for (C, L) in (16, 50 ms), (64, 500 ms), (256, 2 s); target >= 0.9;
2. client CPU cost at L = 0: requests per CPU-second of the client process; target >= 500;
3. on local Spark (local[2]), in the same run and at (C, L) = (16, 50 ms): the naive baseline
   (scalar pandas_udf calling the endpoint synchronously row by row, 200 rows) against the
   engine's mapInPandas path, and the speed-up.

    .venv/bin/python bench/bench_llm_engine.py            # everything (~2-3 min incl. Spark start)
    .venv/bin/python bench/bench_llm_engine.py --no-spark  # engine cases only (~40 s)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udfs.hashing import stable_hash  # noqa: E402
from udfs.llm_client import EndpointSettings, call_batch, close_engines  # noqa: E402
from simulator import SimSettings, SimulatorProcess  # noqa: E402

RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "taskseed_enrich_mcq", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["knowledge", "reasoning", "final_answer"],
    "properties": {"knowledge": {"type": "string"}, "reasoning": {"type": "string"},
                   "final_answer": {"type": "string"}}}}}


def requests(n: int, tag: str) -> list[dict]:
    """n distinct contract-following enrichment requests (realistic body size, ~1 KB)."""
    rows = []
    for i in range(n):
        item = {"question": f"In trial {tag}-{i}, which material conducts heat best when a rod is heated at one end?",
                "context": None, "choices": ["copper", "wood", "glass", "plastic foam"]}
        messages = [
            {"role": "system", "content": "taskseed-prompt: enrich/mcq/enrich-mcq-bench\n"
                                          "You are an expert. Give relevant knowledge, reasoning, then the answer."},
            {"role": "user", "content": "Solve the item below.\n\n<input>\n" + json.dumps(
                {"task": "arc_easy", "answer_format": "mcq", "item": item, "label_set": None}) + "\n</input>"},
        ]
        rows.append({"request_id": stable_hash("bench", tag, i), "messages_json": json.dumps(messages),
                     "response_format_json": json.dumps(RESPONSE_FORMAT), "temperature": 0.7, "max_tokens": 512})
    return rows


def endpoint(url: str, concurrency: int) -> EndpointSettings:
    return EndpointSettings(base_url=url, model="taskseed-sim", require_key=False, max_concurrency=concurrency,
                            timeout_s=30.0, max_retries=3)


def sim_settings(concurrency: int, latency_ms: float) -> SimSettings:
    return SimSettings(latency_ms=latency_ms, latency_jitter_ms=0.0, latency_dist="fixed",
                       max_concurrency=concurrency)


def throughput_case(c: int, latency_ms: float, waves: int, headroom: float) -> float:
    """The server processes at most C at once (the rest queue); the client keeps
    ceil(headroom * C) in flight so the server's slots never idle while the client handles a
    burst of responses — what one does against vLLM/NIM (set endpoint.max_concurrency a bit
    above the server's batch size)."""
    ideal = c / (latency_ms / 1000.0)
    budget = math.ceil(headroom * c)
    with SimulatorProcess(sim_settings(c, latency_ms)) as sim:
        ep = endpoint(sim.base_url, budget)
        call_batch(ep, requests(budget, f"warm{c}"), budget)  # client built, connections open
        rows = requests(c * waves, f"c{c}")
        t0 = time.perf_counter()
        results, _ = call_batch(ep, rows, budget)
        wall = time.perf_counter() - t0
    ok = sum(r["status"] == "ok" for r in results)
    rate = len(rows) / wall
    ratio = rate / ideal
    print(f"case C={c} L={latency_ms:g}ms: {rate:.1f} req/s over {len(rows)} requests ({ok} ok, "
          f"client in-flight budget {budget}), "
          f"ratio to C/L = {ratio:.2f} (target >= 0.9) {'PASS' if ratio >= 0.9 else 'FAIL'}", flush=True)
    return ratio


def cpu_case(n: int = 4000, concurrency: int = 64) -> float:
    with SimulatorProcess(sim_settings(256, 0.0)) as sim:
        ep = endpoint(sim.base_url, concurrency)
        call_batch(ep, requests(500, "cpuwarm"), concurrency)
        rows = requests(n, "cpu")
        cpu0, t0 = time.process_time(), time.perf_counter()
        results, _ = call_batch(ep, rows, concurrency)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    per_core = n / cpu
    print(f"case CPU L=0 C={concurrency}: {n / wall:.0f} req/s wall, client CPU {cpu:.2f} s for {n} requests "
          f"= {per_core:.0f} req/s per busy core (target >= 500) {'PASS' if per_core >= 500 else 'FAIL'} "
          f"[{sum(r['status'] == 'ok' for r in results)} ok]", flush=True)
    return per_core


def spark_cases(c: int = 16, latency_ms: float = 50.0, naive_rows: int = 200, engine_rows: int = 2400) -> None:
    from pyspark.sql.functions import pandas_udf

    from jobs.config import load_config
    from jobs.runtime import get_spark
    from jobs.llm_stage.endpoint import call_endpoint

    home = tempfile.mkdtemp(prefix="taskseed-bench-")
    spark = get_spark(load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2"], home=home))
    tasks = spark.sparkContext.defaultParallelism
    with SimulatorProcess(sim_settings(c, latency_ms)) as sim:
        url = sim.base_url

        @pandas_udf("string")
        def naive_call(messages_json: pd.Series) -> pd.Series:
            import openai

            client = openai.OpenAI(base_url=url, api_key="no-key", max_retries=0)
            out = []
            for m in messages_json:
                r = client.chat.completions.create(model="taskseed-sim", messages=json.loads(m),
                                                   temperature=0.7, max_tokens=512)
                out.append(r.choices[0].message.content)
            return pd.Series(out)

        def run(df, make):  # evaluate once, results discarded (noop sink)
            t0 = time.perf_counter()
            make(df).write.format("noop").mode("overwrite").save()
            return time.perf_counter() - t0

        warm = spark.createDataFrame(requests(2 * tasks, "sparkwarm")).repartition(tasks)
        run(warm, lambda d: d.select(naive_call("messages_json")))
        run(warm, lambda d: call_endpoint(d, endpoint(url, c), tasks, passthrough=()))

        naive_df = spark.createDataFrame(requests(naive_rows, "naive")).repartition(tasks)
        naive_s = run(naive_df, lambda d: d.select(naive_call("messages_json").alias("content")))
        engine_df = spark.createDataFrame(requests(engine_rows, "engine"))
        engine_s = run(engine_df, lambda d: call_endpoint(d, endpoint(url, c), tasks, passthrough=()))
    naive_rate, engine_rate = naive_rows / naive_s, engine_rows / engine_s
    ideal = c / (latency_ms / 1000.0)
    print(f"case spark local[{tasks}] C={c} L={latency_ms:g}ms naive scalar pandas_udf (sync, row by row): "
          f"{naive_rate:.1f} req/s over {naive_rows} rows", flush=True)
    print(f"case spark local[{tasks}] C={c} L={latency_ms:g}ms engine mapInPandas: {engine_rate:.1f} req/s over "
          f"{engine_rows} rows (ratio to C/L = {engine_rate / ideal:.2f}, incl. Spark job overhead), "
          f"speed-up over naive = {engine_rate / naive_rate:.1f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark baseline/engine comparison")
    parser.add_argument("--headroom", type=float, default=1.5,
                        help="client in-flight budget as a multiple of the server's max concurrency C")
    args = parser.parse_args()
    t0 = time.perf_counter()
    h = args.headroom
    ratios = [throughput_case(16, 50, 60, h), throughput_case(64, 500, 12, h), throughput_case(256, 2000, 5, h)]
    per_core = cpu_case()
    close_engines()
    if not args.no_spark:
        spark_cases()
    print(f"bench done in {time.perf_counter() - t0:.0f} s: "
          f"throughput {'PASS' if min(ratios) >= 0.9 else 'FAIL'}, cpu {'PASS' if per_core >= 500 else 'FAIL'}",
          flush=True)
    return 0 if min(ratios) >= 0.9 and per_core >= 500 else 1


if __name__ == "__main__":
    sys.exit(main())
