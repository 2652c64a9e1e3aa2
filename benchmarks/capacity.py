"""Capacity of one worker process (``WORKER_PROCESSES=1``): many calls that wait, in flight at once.

Real functions wait on an HTTP API or a database; what matters then is how many calls one process keeps in
flight, not its CPU per call. Through the real gateway and the scripted upstream, as every other section:

- **bursts**: N sessions each send one call at the same instant (a closed-loop plan whose window closes before
  the first answer can come back, so each session sends exactly one); the figure is the time until the last
  answer, and it only counts when every call was answered with its result (no error, none lost);
- **sustained**: an open loop at a fixed rate of the 300 ms ``async`` function, as :meth:`Suite.sustained`;
- **memory**: the worker process's RSS once warm and idle, and its peak while the async burst is in flight,
  from ``/proc`` (:mod:`benchmarks.procfs`), hence KB per concurrent call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import TYPE_CHECKING, Any

from benchmarks import calls
from benchmarks.procfs import rss_bytes
from tests.support.processes import live_workers

if TYPE_CHECKING:
    from benchmarks.suite import Suite

SECONDS = 0.3
"""How long each function waits: a typical API lookup."""
ARGUMENTS = json.dumps({"seconds": SECONDS})
ASYNC = {"mode": "calls", "function": "bench_sleep_async", "arguments": ARGUMENTS}
BLOCKING = {"mode": "calls", "function": "bench_io", "arguments": ARGUMENTS}
BURST_WINDOW = 0.05
"""The plan's measuring window for a burst: shorter than one call, so every session sends one call only."""
SUSTAINED_SESSIONS = 100
"""Sessions the sustained rate is spread over (fewer at a smoke run's tiny rate)."""


class PeakRss:
    """The highest RSS of one process while the ``async with`` block runs, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, rss_bytes(self.pid))


async def burst(url: str, calls_at_once: int, plan: dict[str, Any]) -> dict[str, Any]:
    """``calls_at_once`` calls sent together; ``last_answer_ms`` only if all came back with their results."""
    result = await calls.gateway_point(url, calls_at_once, 0.0, BURST_WINDOW, plan=plan)
    result.pop("notices")
    result.pop("quantiles")
    counts = result["counts"]
    complete = counts["answered"] == calls_at_once and not counts["errors"] and not counts["lost"]
    result["calls"] = calls_at_once
    result["last_answer_ms"] = result["summary"].get("max") if complete else None
    return result


async def run(suite: Suite) -> dict[str, Any]:
    """The capacity section with one worker process: the bursts at its default concurrency (32), the sustained
    rate with the slots it needs (:func:`sustained_slots`)."""
    p = suite.plan
    workers = suite.workers(1)
    gateway = suite.gateway()
    out: dict[str, Any] = {"seconds_per_call": SECONDS}
    try:
        (worker,) = live_workers(suite.redis_url)
        pid = int(worker["pid"])
        suite.log("capacity: warm-up")
        await burst(gateway.url, min(4, p.capacity_async), ASYNC)  # imports, connections, first threads
        await burst(gateway.url, min(4, p.capacity_blocking), BLOCKING)
        await asyncio.sleep(0.5)
        idle = rss_bytes(pid)
        suite.log(f"capacity: {p.capacity_async} concurrent {SECONDS * 1000:.0f} ms async calls, 1 worker process")
        async with PeakRss(pid) as peak:
            out["async_burst"] = await burst(gateway.url, p.capacity_async, ASYNC)
        out["memory"] = {
            "idle_kb": idle // 1024,
            "peak_kb": peak.peak // 1024,
            "in_flight": p.capacity_async,
            "kb_per_call": round((peak.peak - idle) / 1024 / p.capacity_async, 1),
        }
        suite.log(f"capacity: {p.capacity_blocking} concurrent {SECONDS * 1000:.0f} ms blocking calls")
        out["blocking_burst"] = await burst(gateway.url, p.capacity_blocking, BLOCKING)
    finally:
        suite.drain()  # a backlog left by a worker past its capacity must not reach the next section
        workers.stop()
    # Little's law: the rate needs rate x 300 ms calls in flight (90 at 300/s), more than the default 32 slots of
    # one process; its worker process gets enough slots, with room for the rate's bursts.
    slots = sustained_slots(p.capacity_rate)
    workers = suite.workers(1, WORKER_CONCURRENCY=str(slots))
    try:
        suite.log(f"capacity: {p.capacity_rate} calls/s of the async function, 1 worker process, {slots} slots")
        sessions = min(SUSTAINED_SESSIONS, p.capacity_rate)
        rate = await calls.gateway_point(
            gateway.url, sessions, p.warmup, p.duration, plan=ASYNC, rate=p.capacity_rate,
            meter=suite.meter(gateway, workers),
        )  # fmt: skip
        rate.pop("notices")
        rate.pop("quantiles")
        out["sustained"] = {**rate, "offered_per_s": p.capacity_rate, "seconds": p.duration, "slots": slots}
    finally:
        suite.drain()
        gateway.stop()
        workers.stop()
    return out


def sustained_slots(rate: float) -> int:
    """WORKER_CONCURRENCY for ``rate`` calls/s of the :data:`SECONDS` function: twice the mean number in flight
    (an open loop's arrivals bunch up), rounded up to a multiple of 32, at least the default 32."""
    return max(32, math.ceil(2 * rate * SECONDS / 32) * 32)
