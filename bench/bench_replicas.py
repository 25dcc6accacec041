"""Benchmark of routing over an endpoint's replicas (issue 24): four simulator servers with
different windows C and heavy-tailed latencies L (lognormal, median L), each in its own process.

Cases, in one run (one line each, ratios against baselines measured in the same run):
1. taskseed's engine (udfs/llm_client.Engine over udfs/llm_router.Router) streaming N requests:
   rate ÷ Σ C/L (the fleet's capacity at the median latency; goal ≥ 0.9);
2. a bare async client in the same process that knows the same capacities (per replica, C workers
   pulling from one shared queue, the same openai/aiohttp transport, no retries or accounting):
   taskseed's rate ÷ its rate (goal ≥ 0.9);
3. taskseed again, the biggest replica killed mid-run (`POST /admin/kill`: connections dropped, its
   answers in flight never sent): completions per second from 2 s after the kill ÷ the remaining
   Σ C/L (goal ≥ 0.8); requests lost (no 200 reply at any server, or no ok result) and paid twice
   (more than one 200 reply across the servers for one request id), counted at the servers (goal 0).

    .venv/bin/python bench/bench_replicas.py               # default fleet, ~1.5 min
    .venv/bin/python bench/bench_replicas.py --seconds 10  # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_llm_engine import requests  # noqa: E402
from simulator import SimSettings, SimulatorProcess  # noqa: E402
from udfs.llm_client import EndpointSettings, Engine, build_body, read_completion  # noqa: E402

# (window C, median latency L in seconds) of the four replicas
FLEET = ((16, 0.2), (16, 0.5), (32, 1.0), (8, 2.0))
SIGMA = 0.25  # lognormal sigma: a heavy right tail (p99 ≈ 1.8 × median)


def capacity(fleet) -> float:
    return sum(c / lat for c, lat in fleet)


def start_fleet(fleet) -> list[SimulatorProcess]:
    servers = []
    for i, (c, lat) in enumerate(fleet):
        settings = SimSettings(seed=i, latency_ms=lat * 1000, latency_jitter_ms=SIGMA * lat * 1000,
                               latency_dist="lognormal", max_concurrency=c)
        servers.append(SimulatorProcess(settings).start())
    return servers


def reset(servers) -> None:
    import urllib.request

    for s in servers:
        urllib.request.urlopen(urllib.request.Request(f"{s.base_url.rsplit('/v1', 1)[0]}/admin/reset", data=b"",
                                                      method="POST"), timeout=10).read()
        s.revive()


def paid_for(servers) -> collections.Counter:
    total: collections.Counter = collections.Counter()
    for s in servers:
        for rid, kinds in s.stats()["replies_200"].items():
            total[rid] += sum(kinds.values())
    return total


def settings(servers, fleet) -> EndpointSettings:
    return EndpointSettings(base_url=servers[0].base_url, model="taskseed-sim", require_key=False, timeout_s=30.0,
                            max_concurrency=sum(c for c, _ in fleet), max_retries=6,
                            replicas=tuple((s.base_url, c) for s, (c, _) in zip(servers, fleet)))


def run_taskseed(ep: EndpointSettings, rows: list[dict],
                 on_result=None) -> tuple[float, list[dict], list[float], object]:
    """(wall seconds, results, completion times, stats) of streaming `rows` through the engine."""
    from udfs.llm_client import BatchStats

    engine = Engine(ep)
    stats = BatchStats()
    results, times = [], []
    t0 = time.perf_counter()
    try:
        for pairs in engine.stream(rows, ep.max_concurrency, tick_s=0.05, stats=stats):
            now = time.perf_counter() - t0
            for _, result in pairs:
                results.append(result)
                times.append(now)
            if on_result is not None:
                on_result(len(results), now)
    finally:
        wall = time.perf_counter() - t0
        engine.close()
    return wall, results, times, stats


def steady_rate(times: list[float]) -> float:
    """Completions per second between the 10th and the 90th percentile of completion times: the
    fleet's rate without the ramp-up (the first answers of a 2 s replica) and the drain."""
    times = sorted(times)
    lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
    return (len(times) * 8 // 10) / max(1e-9, hi - lo)


def run_bare(servers, fleet, rows: list[dict]) -> tuple[float, list[float]]:
    """(wall seconds, completion times) of a bare async client: per replica C workers pulling
    from one shared queue."""
    import httpx2
    import openai

    times: list[float] = []

    async def main() -> float:
        queue: asyncio.Queue = asyncio.Queue()
        for row in rows:
            queue.put_nowait(row)
        clients = [openai.AsyncOpenAI(api_key="no-key", base_url=s.base_url, timeout=30.0, max_retries=0,
                                      http_client=openai.DefaultAioHttpClient(
                                          limits=httpx2.Limits(max_connections=max(100, 2 * c),
                                                               max_keepalive_connections=max(100, 2 * c))))
                   for s, (c, _) in zip(servers, fleet)]

        async def worker(client) -> None:
            while True:
                try:
                    row = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                response = await client.post("/chat/completions", body=build_body(row, "taskseed-sim"),
                                             cast_to=httpx2.Response,
                                             options={"headers": {"X-Taskseed-Request-Id": row["request_id"]}})
                read_completion(response.content)
                times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for client, (c, _) in zip(clients, fleet) for _ in range(c)))
        wall = time.perf_counter() - t0
        for client in clients:
            await client.close()
        return wall

    return asyncio.run(main()), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="target length of each case at full capacity")
    args = parser.parse_args()
    fleet = FLEET
    cap = capacity(fleet)
    n = int(cap * args.seconds)
    print(f"fleet: {', '.join(f'{c} @ {lat:g} s' for c, lat in fleet)} (lognormal sigma {SIGMA}); "
          f"Σ C/L = {cap:.1f} req/s; {n} requests per case; load average {os.getloadavg()[0]:.1f}", flush=True)
    servers = start_fleet(fleet)
    try:
        ep = settings(servers, fleet)
        run_taskseed(ep, requests(200, "warm"))  # connections, imports
        reset(servers)

        wall, results, times, _ = run_taskseed(ep, requests(n, "taskseed"))
        ok = sum(r["status"] == "ok" for r in results)
        rate, whole = steady_rate(times), ok / wall
        print(f"1. taskseed: {ok}/{n} ok in {wall:.1f} s; steady {rate:.1f} req/s ÷ Σ C/L = {rate / cap:.2f} "
              f"(goal ≥ 0.9); whole run incl. ramp-up and drain {whole:.1f} req/s ({whole / cap:.2f})", flush=True)
        reset(servers)

        bare_wall, bare_times = run_bare(servers, fleet, requests(n, "bare"))
        bare_rate, bare_whole = steady_rate(bare_times), n / bare_wall
        print(f"2. bare async client: {n} in {bare_wall:.1f} s; steady {bare_rate:.1f} req/s (÷ Σ C/L = "
              f"{bare_rate / cap:.2f}); taskseed ÷ bare = {rate / bare_rate:.2f} steady (goal ≥ 0.9), "
              f"{whole / bare_whole:.2f} whole run", flush=True)
        reset(servers)

        victim = max(range(len(fleet)), key=lambda i: fleet[i][0] / fleet[i][1] if fleet[i][0] >= 32 else 0)
        remaining = cap - fleet[victim][0] / fleet[victim][1]
        kill_after = args.seconds * 0.35
        n_kill = int(cap * kill_after + remaining * args.seconds)
        killed: dict[str, float] = {}

        def maybe_kill(_done: int, now: float) -> None:
            if "at" not in killed and now >= kill_after:
                threading.Thread(target=servers[victim].kill).start()
                killed["at"] = now

        rows = requests(n_kill, "kill")
        wall, results, times, stats = run_taskseed(ep, rows, maybe_kill)
        t_kill = killed["at"]
        # the steady part after the kill: from 2 s after it until the last 10% of completions (the drain)
        after = [t for t in times if t >= t_kill + 2.0]
        end = after[int(len(after) * 0.9)] if after else t_kill + 2.0
        window = [t for t in after if t <= end]
        kill_rate = len(window) / max(1e-9, end - (t_kill + 2.0))
        paid = paid_for(servers)
        ids = [r["request_id"] for r in rows]
        ok_ids = {r["request_id"] for r in results if r["status"] == "ok"}
        lost = sum(1 for rid in ids if paid[rid] == 0 or rid not in ok_ids)
        twice = sum(1 for rid in ids if paid[rid] > 1)
        entry = stats.replicas[servers[victim].base_url]
        print(f"3. replica {fleet[victim][0]} @ {fleet[victim][1]:g} s killed at {t_kill:.1f} s: "
              f"{kill_rate:.1f} req/s after it ÷ remaining Σ C/L {remaining:.1f} = {kill_rate / remaining:.2f} "
              f"(goal ≥ 0.8); {len(results)}/{n_kill} results, lost {lost}, paid twice {twice} (goal 0, counted at "
              f"the servers); failovers {stats.failovers}, taken out {entry['taken_out']}", flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        for s in servers:
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
