"""Routing requests over the replicas of one endpoint: which server a request goes to, and what
happens when one is slow, overloaded or dead. Used by the call engine (udfs/llm_client.py) inside
one Python process; asyncio only, no HTTP here (the engine injects the probe), so it is tested
without servers and can serve other call paths (batch mode, embeddings) unchanged.

Model (issue 24): an endpoint lists replicas serving the same model, each with its own window
(requests it takes at once). The router

- keeps every replica's window full: a request takes a slot on the up, non-full replica with the
  most free slots (ties: the first listed), and waits only when every up replica is full;
- backs one replica off on 429 (and, with several replicas, on 5xx): that replica's AIMD limit
  halves (`udfs.llm_client.AIMDLimiter`, at most once per cooldown) and recovers by ~1 per window
  of successes; the others keep their windows;
- takes a replica out after `down_after` consecutive transport failures (connection refused or
  dropped, timeouts): no new request goes there while another replica is up, and the engine
  retries the requests that failed on it elsewhere (`avoid`), without counting them against
  `max_retries` (see `Engine.call_one`); a request whose response had arrived is never re-sent,
  so nothing is paid twice;
- probes a replica that is out (`probe(index)`, the engine's `GET /models`) every
  `probe_interval_s`, doubling to `probe_max_s`, and puts it back on its first answer;
- when every replica is out, still hands out slots on them (the requests' own retry budget and
  backoff then decide), so a run never waits forever on a fleet that is gone.

Windows per Spark task: the calls run in `mapInPandas` tasks, each with its own engine and router.
`replica_windows` splits the task's share of the endpoint's window (`per_task_concurrency`) over
the replicas in proportion to their windows, so across tasks every replica gets at most its window
(each task at least 1 slot per replica: with more calling tasks than a replica's window, that
replica can get one request per task). Health is per task: each task finds a dead replica out on its
own requests and probes it itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence


@dataclass(frozen=True)
class ReplicaSpec:
    """One server of an endpoint: base URL and window (requests in flight across all tasks)."""

    base_url: str
    max_concurrency: int


def replica_windows(capacities: Sequence[int], concurrency: int) -> list[int]:
    """Split a window of `concurrency` requests over replicas of the given capacities (pure).

    At or above their sum, every replica gets its capacity. Below it, shares in proportion to the
    capacities (largest remainders), each at least 1 — so the result can exceed `concurrency` when
    it is smaller than the number of replicas. One replica gets `concurrency` itself (the
    single-server behaviour: the caller's window is the endpoint's).
    """
    caps = [max(1, int(c)) for c in capacities]
    if not caps:
        raise ValueError("an endpoint needs at least one replica")
    concurrency = max(1, int(concurrency))
    if len(caps) == 1:
        return [concurrency]
    total = sum(caps)
    if concurrency >= total:
        return caps
    exact = [c * concurrency / total for c in caps]
    shares = [int(x) for x in exact]
    order = sorted(range(len(caps)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:concurrency - sum(shares)]:
        shares[i] += 1
    return [max(1, s) for s in shares]


@dataclass
class ReplicaState:
    """A replica as the router sees it in one stream or batch (counters for stats and the bench)."""

    index: int
    base_url: str
    window: int
    limiter: object  # udfs.llm_client.AIMDLimiter (its limit and in-flight count)
    down: bool = False
    failures: int = 0  # consecutive transport failures
    sent: int = 0
    ok: int = 0
    errors: int = 0
    taken_out: int = 0
    put_back: int = 0
    probes: int = 0

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    def has_room(self) -> bool:
        return self.limiter.in_flight < self.limiter.capacity()

    def free(self) -> int:
        return self.limiter.capacity() - self.limiter.in_flight


@dataclass
class _Waiter:
    future: asyncio.Future
    avoid: int | None = None


@dataclass
class Router:
    """Slots on the replicas of one endpoint (see the module docstring). Not thread-safe: use it on
    one event loop. `probe(index) -> bool` (async) says whether a replica answers."""

    replicas: list[ReplicaState]
    down_after: int = 3
    probe: Callable[[int], Awaitable[bool]] | None = None
    probe_interval_s: float = 0.5
    probe_max_s: float = 5.0
    peak_in_flight: int = 0
    _waiters: list[_Waiter] = field(default_factory=list)
    _probes: dict[int, asyncio.Task] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Sequence[ReplicaSpec], concurrency: int, limiter_factory: Callable[[int, int], object],
              **options) -> "Router":
        """A router over `specs` with the windows `replica_windows` gives for `concurrency`;
        `limiter_factory(index, window)` builds each replica's limiter."""
        windows = replica_windows([s.max_concurrency for s in specs], concurrency)
        states = [ReplicaState(i, s.base_url, w, limiter_factory(i, w)) for i, (s, w) in enumerate(zip(specs, windows))]
        return cls(states, **options)

    # -- choosing -----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    def up(self) -> list[ReplicaState]:
        return [r for r in self.replicas if not r.down]

    def others_up(self, replica: ReplicaState) -> bool:
        """Whether a replica other than `replica` is up (a failed request can go there)."""
        return any(not r.down and r is not replica for r in self.replicas)

    def _pick(self, avoid: int | None) -> ReplicaState | None:
        up = self.up()
        pool = up if up else self.replicas  # every replica out: try them anyway (requests' retries decide)
        if avoid is not None and any(r.index != avoid for r in pool):
            pool = [r for r in pool if r.index != avoid]
        room = [r for r in pool if r.has_room()]
        if not room:
            return None
        return max(room, key=lambda r: (r.free() / max(1, r.limiter.capacity()), -r.index))

    def _take(self, replica: ReplicaState) -> ReplicaState:
        replica.limiter.take()
        replica.sent += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return replica

    async def acquire(self, avoid: int | None = None) -> ReplicaState:
        """A slot on a replica (preferring one other than `avoid`, the index a request just failed
        on, when another is up); waits until one has room."""
        if not self._waiters:
            replica = self._pick(avoid)
            if replica is not None:
                return self._take(replica)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), avoid)
        self._waiters.append(waiter)
        self._wake()  # earlier waiters first; a slot they cannot use (they avoid it) may go to this one
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            replica = self._pick(waiter.avoid)
            if replica is None:
                continue
            self._waiters.remove(waiter)
            waiter.future.set_result(self._take(replica))

    # -- outcomes -----------------------------------------------------------------------------
    def release(self, replica: ReplicaState) -> None:
        """Give the slot back (every `acquire` is paired with one `release`)."""
        replica.limiter.release()
        self._wake()

    def on_success(self, replica: ReplicaState) -> None:
        """An answer arrived (any 2xx): the replica is healthy; its limit creeps back up."""
        replica.ok += 1
        replica.failures = 0
        if replica.down:
            self._put_back(replica)
        replica.limiter.on_success()
        self._wake()

    def on_overloaded(self, replica: ReplicaState, rate_limited: bool) -> None:
        """429 (`rate_limited`) or 5xx from a replica: it answered, so it is up; a 429 halves its
        limit (at most once per cooldown), and so does a 5xx when there are other replicas to take
        the load (a lone server keeps its window on 5xx, as before replicas)."""
        replica.errors += 1
        replica.failures = 0
        if rate_limited or len(self.replicas) > 1:
            replica.limiter.on_rate_limited()

    def on_answered_error(self, replica: ReplicaState) -> None:
        """Any other HTTP answer (4xx, an unusable body): the server is up."""
        replica.errors += 1
        replica.failures = 0

    def on_transport_failure(self, replica: ReplicaState) -> bool:
        """A connection failure or timeout on `replica`; True when it is (now) out."""
        replica.errors += 1
        replica.failures += 1
        if not replica.down and replica.failures >= self.down_after and len(self.replicas) > 1:
            replica.down = True
            replica.taken_out += 1
            self._start_probe(replica)
            self._wake()  # waiters avoiding nothing may now go elsewhere
        return replica.down

    def _put_back(self, replica: ReplicaState) -> None:
        replica.down = False
        replica.failures = 0
        replica.put_back += 1
        task = self._probes.pop(replica.index, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._wake()

    def _start_probe(self, replica: ReplicaState) -> None:
        if self.probe is None or replica.index in self._probes:
            return
        self._probes[replica.index] = asyncio.get_running_loop().create_task(self._probe_loop(replica))

    async def _probe_loop(self, replica: ReplicaState) -> None:
        delay = self.probe_interval_s
        try:
            while replica.down:
                await asyncio.sleep(delay)
                replica.probes += 1
                try:
                    answered = await self.probe(replica.index)
                except Exception:  # noqa: BLE001 - a failing probe means: still out
                    answered = False
                if answered and replica.down:
                    self._put_back(replica)
                    return
                delay = min(self.probe_max_s, delay * 2)
        finally:
            if self._probes.get(replica.index) is asyncio.current_task():
                self._probes.pop(replica.index, None)

    def close(self) -> None:
        """Stop the probes (end of a stream or batch)."""
        for task in self._probes.values():
            task.cancel()
        self._probes.clear()

    # -- reporting ----------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int | float | bool]]:
        """Per replica (by base URL): sent, ok, errors, taken_out, put_back, probes, down, window, and
        its AIMD limit now, its lowest and how often it was halved."""
        return {r.base_url: {"sent": r.sent, "ok": r.ok, "errors": r.errors, "taken_out": r.taken_out,
                             "put_back": r.put_back, "probes": r.probes, "down": r.down, "window": r.window,
                             "limit": float(r.limiter.limit), "lowest_limit": float(r.limiter.lowest_limit),
                             "decreases": int(r.limiter.decreases)} for r in self.replicas}
