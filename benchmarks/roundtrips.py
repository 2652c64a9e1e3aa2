"""Count the Redis round trips of one function call, and list them in order.

``python -m benchmarks.roundtrips --redis URL`` prints JSON. It enqueues calls exactly as the gateway does
(``Dispatcher`` with a recording client) and runs them with the production worker class
(``workers.callworker.CallWorker``) in this process, on a connection that records every round trip: one
``send_packed_command`` is one round trip (a pipeline sends all its commands at once).

The worker's steady-state cycle is taken between two consecutive dequeues (``BLMOVE``), and split at the
``PUBLISH`` of the result: round trips before it are on the caller's critical path, those after it are RQ's
bookkeeping, which costs the worker time (throughput) but not the caller latency.

Runs in its own process: RQ installs signal handlers and uses SIGALRM, which need the main thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from rq import Queue

from gateway.dispatcher import Dispatcher
from shared import keys
from shared.config import Config
from shared.envelopes import FunctionSpec

SPEC = FunctionSpec(name="bench_noop", description="", parameters={"type": "object"}, timeout=5.0)


class Recorder:
    """Collects round trips as lists of command names."""

    def __init__(self) -> None:
        self.trips: list[list[str]] = []
        self._packed: list[str] = []

    def packed(self, args: tuple[Any, ...]) -> None:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        self._packed.append(name.upper())

    def sent(self) -> None:
        if self._packed:
            self.trips.append(self._packed)
            self._packed = []


def recording_connection(recorder: Recorder, base: type[Any]) -> type[Any]:
    """A redis-py connection class that reports what it packs and when it sends."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def send_command(self, *args: Any, **kwargs: Any) -> Any:
            recorder.packed(args)
            return super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Any) -> Any:  # a pipeline: all its commands in one write
            commands = list(commands)
            for args in commands:
                recorder.packed(args)
            return super().pack_commands(commands)

        def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
            recorder.sent()
            return super().send_packed_command(command, check_health)

    return Recording


async def _enqueue(url: str, count: int, recorder: Recorder) -> list[list[str]]:
    """Enqueue ``count`` calls through the gateway's Dispatcher; returns the round trips of the last one."""
    async_redis = aioredis.Redis.from_url(url)
    async_redis.connection_pool.connection_class = recording_connection(recorder, aioredis.Connection)
    sync_redis = redis.Redis.from_url(url)
    sync_redis.connection_pool.connection_class = recording_connection(recorder, redis.Connection)
    dispatcher = Dispatcher(Config(redis_url=url), async_redis=async_redis, sync_redis=sync_redis)
    before = 0
    for i in range(count):
        job = dispatcher_job(dispatcher, f"rt-{time.time_ns()}-{i}")
        before = len(recorder.trips)
        await dispatcher.enqueuer.enqueue(job, SPEC)
    trips = recorder.trips[before:]
    await async_redis.aclose()
    sync_redis.close()
    return trips


def dispatcher_job(dispatcher: Dispatcher, call_id: str) -> Any:
    from shared.envelopes import CallJob

    return CallJob(
        call_id=call_id,
        name=SPEC.name,
        arguments="{}",
        reply_channel=dispatcher.channel,
        deadline=time.time() + 60,
    )


def worker_cycle(url: str, jobs: int, recorder: Recorder) -> list[list[str]]:
    """Run ``jobs`` queued calls with the production worker class; the round trips of one steady-state cycle."""
    from workers.registry import load_modules

    try:
        from workers.callworker import CallWorker as worker_class
    except ImportError:  # before the worker class of its own existed
        from rq import SimpleWorker

        worker_class = SimpleWorker  # type: ignore[misc]

    load_modules(["benchmarks.functions"])
    connection = redis.Redis.from_url(url)
    connection.connection_pool.connection_class = recording_connection(recorder, redis.Connection)
    queue = Queue(keys.queue_name("default"), connection=connection)
    worker = worker_class([queue], connection=connection, name=f"roundtrips-{time.time_ns()}")
    # One job per run: a worker runs calls concurrently, so its trips for several jobs would interleave; a run
    # ends once the call's RQ records are written.
    for _ in range(jobs):
        start = len(recorder.trips)
        worker.work(max_jobs=1, logging_level="WARNING")
    trips = recorder.trips[start:]
    dequeue = next(i for i, trip in enumerate(trips) if trip[0] in ("BLMOVE", "BLPOP", "LMOVE"))
    recorded = next(i for i, trip in enumerate(trips) if "XADD" in trip)  # RQ's result stream: the last record
    return trips[dequeue : recorded + 1]  # the last job's cycle: warm caches, steady state


def measure(url: str, jobs: int = 3) -> dict[str, Any]:
    recorder = Recorder()
    enqueue = asyncio.run(_enqueue(url, jobs, recorder))
    cycle = worker_cycle(url, jobs, recorder)
    published = next(i for i, trip in enumerate(cycle) if "PUBLISH" in trip)
    return {
        "enqueue": enqueue,
        "worker_critical": cycle[: published + 1],
        "worker_after": cycle[published + 1 :],
        "counts": {
            "enqueue": len(enqueue),
            "worker_critical": published + 1,
            "worker_after": len(cycle) - published - 1,
            "per_call": len(enqueue) + len(cycle),
            "commands_per_call": sum(len(t) for t in enqueue + cycle),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    print(json.dumps(measure(args.redis, args.jobs)))


if __name__ == "__main__":
    main()
