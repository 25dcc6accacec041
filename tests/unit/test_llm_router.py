"""Routing over an endpoint's replicas (udfs/llm_router.py through udfs/llm_client.Engine), against
several simulator servers: windows kept and filled, a dead replica taken out and its requests
answered elsewhere, put back when it answers again, a rate-limited one backed off alone, and the
accounting at the servers (every request id paid for exactly once, none lost)."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from tests.fixtures_sim import make_request_rows
from udfs.llm_client import EndpointSettings, Engine
from udfs.llm_router import replica_windows


def _fleet(servers, windows, **kw) -> EndpointSettings:
    values = dict(base_url=servers[0].base_url, model="taskseed-sim", require_key=False, timeout_s=5.0,
                  max_concurrency=sum(windows), backoff_base_s=0.01, backoff_max_s=0.1,
                  replicas=tuple((s.base_url, w) for s, w in zip(servers, windows)))
    values.update(kw)
    return EndpointSettings(**values)


def paid_for(servers) -> collections.Counter:
    """HTTP 200 replies per request id, summed over the servers: what was paid for."""
    total: collections.Counter = collections.Counter()
    for server in servers:
        for rid, kinds in server.stats()["replies_200"].items():
            total[rid] += sum(kinds.values())
    return total


@pytest.mark.parametrize("capacities, concurrency, expected", [
    ([64], 8, [8]),                      # one server: the caller's window as before replicas
    ([64], 200, [200]),
    ([16, 16, 32, 8], 72, [16, 16, 32, 8]),
    ([16, 16, 32, 8], 500, [16, 16, 32, 8]),  # never more than a replica's window
    ([16, 16, 32, 8], 36, [8, 8, 16, 4]),      # a task's share: proportional
    ([16, 16, 32, 8], 3, [1, 1, 1, 1]),        # at least one per replica (the documented limit)
    ([3, 1], 2, [2, 1]),
])
def test_replica_windows_split_a_share_in_proportion(capacities, concurrency, expected):
    assert replica_windows(capacities, concurrency) == expected


def test_every_request_is_answered_once_and_no_replica_exceeds_its_window(start_sim):
    """Three servers with different latencies and windows: each server's own peak of requests in
    flight stays within the window the client gives it, the faster/bigger ones serve more, every
    request is answered exactly once across the fleet."""
    servers = [start_sim(seed=1, latency_ms=20, latency_jitter_ms=0, latency_dist="fixed", max_concurrency=64),
               start_sim(seed=2, latency_ms=60, latency_jitter_ms=0, latency_dist="fixed", max_concurrency=64),
               start_sim(seed=3, latency_ms=20, latency_jitter_ms=0, latency_dist="fixed", max_concurrency=64)]
    windows = [4, 4, 8]
    engine = Engine(_fleet(servers, windows))
    rows = make_request_rows(240)
    try:
        results, stats = engine.run(rows, sum(windows))
    finally:
        engine.close()
    assert [r["status"] for r in results] == ["ok"] * len(rows)
    for server, window in zip(servers, windows):
        assert 1 <= server.stats()["peak_in_flight"] <= window
    served = [s.stats()["requests"] for s in servers]
    assert served[2] > served[0] > served[1]  # 8 @ 20 ms > 4 @ 20 ms > 4 @ 60 ms
    assert paid_for(servers) == collections.Counter({r["request_id"]: 1 for r in rows})
    assert stats.peak_in_flight <= sum(windows) and set(stats.replicas) == {s.base_url for s in servers}


def test_a_killed_replica_is_taken_out_its_requests_go_elsewhere_and_it_comes_back(start_sim):
    """Kill one of three replicas while the stream runs: its in-flight requests (dropped
    connections) and the ones refused after are re-sent to the others, nothing is lost and nothing
    paid twice (counted at the servers); restarted, it answers the probe and serves again."""
    servers = [start_sim(seed=i, latency_ms=30, latency_jitter_ms=10, max_concurrency=64) for i in range(3)]
    windows = [6, 6, 6]
    engine = Engine(_fleet(servers, windows))
    rows = make_request_rows(900)
    results: list[dict] = []
    victim = servers[1]
    killed = threading.Event()
    from udfs.llm_client import BatchStats

    stats = BatchStats()
    try:
        stream = engine.stream(rows, sum(windows), tick_s=0.05, stats=stats)
        restarted_at = None
        for pairs in stream:
            results.extend(r for _, r in pairs)
            if len(results) >= 150 and not killed.is_set():
                victim.kill()
                killed.set()
                requests_when_killed = victim.stats()["requests"]
                killed_at = time.monotonic()
            if killed.is_set() and restarted_at is None and time.monotonic() - killed_at > 1.0:
                victim.restart()
                restarted_at = time.monotonic()
                requests_at_restart = victim.stats()["requests"]
    finally:
        engine.close()
    assert killed.is_set() and restarted_at is not None
    assert len(results) == len(rows) and all(r["status"] == "ok" for r in results)
    paid = paid_for(servers)
    assert paid == collections.Counter({r["request_id"]: 1 for r in rows})  # none lost, none paid twice
    assert requests_when_killed <= requests_at_restart  # refused while dead: counted nowhere
    assert victim.stats()["requests"] > requests_at_restart  # put back: served again after the restart
    assert stats.failovers >= 1 and stats.replicas[victim.base_url]["taken_out"] >= 1


def test_the_router_counts_taking_out_and_putting_back(start_sim):
    """The victim stays dead until the stream has failed over from it (not for a fixed time: on a
    loaded machine its in-flight requests may all have finished before a timed kill), then comes
    back while enough of the stream is left for the probe to put it back."""
    servers = [start_sim(seed=i, latency_ms=40, latency_jitter_ms=0, latency_dist="fixed") for i in range(2)]
    engine = Engine(_fleet(servers, [4, 4], down_after_failures=2))
    victim = servers[0]
    from udfs.llm_client import BatchStats

    stats = BatchStats()
    out = []
    killed_at = None
    try:
        for pairs in engine.stream(make_request_rows(800), 8, tick_s=0.05, stats=stats):
            out.extend(pairs)
            if len(out) >= 40 and killed_at is None:
                victim.kill()
                killed_at = time.monotonic()
            elif killed_at is not None and not victim.alive and (
                    stats.failovers >= 2 or time.monotonic() - killed_at > 3.0):
                victim.restart()
    finally:
        engine.close()
    assert killed_at is not None and victim.alive
    assert len(out) == 800 and all(r["status"] == "ok" for _, r in out)
    entry = stats.replicas[victim.base_url]
    assert entry["taken_out"] >= 1 and entry["put_back"] >= 1 and entry["probes"] >= 1 and not entry["down"]
    assert stats.failovers >= 1


def test_a_rate_limited_replica_backs_off_alone(start_sim):
    """One replica answers 429 past 30 requests/s: its AIMD limit halves, the other keeps its
    whole window, and every request is still answered once."""
    limited = start_sim(seed=1, latency_ms=20, latency_jitter_ms=0, latency_dist="fixed",
                        rate_limit_rps=30, rate_limit_burst=5, retry_after_s=0.05)
    free = start_sim(seed=2, latency_ms=20, latency_jitter_ms=0, latency_dist="fixed")
    engine = Engine(_fleet([limited, free], [8, 8], max_retries=20))
    rows = make_request_rows(300)
    try:
        results, stats = engine.run(rows, 16)
    finally:
        engine.close()
    assert all(r["status"] == "ok" for r in results)
    backed_off, untouched = stats.replicas[limited.base_url], stats.replicas[free.base_url]
    assert backed_off["decreases"] >= 1 and backed_off["lowest_limit"] < 8
    assert untouched["decreases"] == 0 and untouched["lowest_limit"] == untouched["limit"] == 8
    assert stats.rate_limited >= 1
    assert paid_for([limited, free]) == collections.Counter({r["request_id"]: 1 for r in rows})


def test_one_server_keeps_the_single_endpoint_behaviour(sim):
    """Without replicas the engine has one client and the caller's window, as before issue 24."""
    engine = Engine(EndpointSettings(base_url=sim.base_url, model="taskseed-sim", require_key=False,
                                     max_concurrency=64))
    try:
        results, stats = engine.run(make_request_rows(20), 5)
    finally:
        engine.close()
    assert len(engine.clients) == 1 and all(r["status"] == "ok" for r in results)
    assert sim.stats()["peak_in_flight"] <= 5 and list(stats.replicas) == [sim.base_url]


def test_simulator_lists_every_model_it_serves(start_sim):
    import json
    import urllib.request

    from simulator.embeddings import SIM_EMBEDDING_MODEL

    server = start_sim(model="big-gen", served_models=("reasoner", "small-judge"))
    with urllib.request.urlopen(server.base_url + "/models", timeout=5) as resp:
        ids = [m["id"] for m in json.loads(resp.read())["data"]]
    assert ids == ["big-gen", "reasoner", "small-judge", SIM_EMBEDDING_MODEL]


def test_admin_kill_plays_dead_but_keeps_the_counters(start_sim):
    """`POST /admin/kill` (what bench_replicas uses on servers in child processes): chat requests
    and `GET /v1/models` get their connections dropped and nothing is counted; `/admin/stats` still
    answers; `/admin/revive` serves again."""
    import urllib.error
    import urllib.request

    server = start_sim(latency_ms=1, latency_jitter_ms=0)
    root = server.base_url.rsplit("/v1", 1)[0]
    engine = Engine(EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False,
                                     max_retries=0, timeout_s=5.0))
    try:
        assert engine.run(make_request_rows(3), 3)[0][0]["status"] == "ok"
        urllib.request.urlopen(urllib.request.Request(root + "/admin/kill", data=b"", method="POST"), timeout=5)
        (dead,), _ = engine.run(make_request_rows(1, offset=10), 1)
        assert (dead["status"], dead["error_class"]) == ("failed", "connection")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(server.base_url + "/models", timeout=5)
        assert server.stats()["requests"] == 3 and len(server.stats()["replies_200"]) == 3
        urllib.request.urlopen(urllib.request.Request(root + "/admin/revive", data=b"", method="POST"), timeout=5)
        assert engine.run(make_request_rows(1, offset=20), 1)[0][0]["status"] == "ok"
    finally:
        engine.close()
