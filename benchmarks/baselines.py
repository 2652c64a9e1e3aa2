"""The floors and the naive baseline a function call through the gateway is compared with.

- :func:`in_process`: the no-op function called in this process, directly and through ``workers.execute``
  (argument validation, result serialisation): what a call costs with no distribution at all.
- :func:`bare_point`: the fastest a Redis-based worker can answer: the caller ``LPUSH``es a call id, a bare
  worker process (``BLPOP`` loop, no RQ) ``PUBLISH``es it back, the caller receives it on its subscription.
- :func:`naive_rq_point`: RQ used as its documentation shows: ``queue.enqueue(f)`` and
  ``job.latest_result(timeout=...)`` (which blocks on the job's result stream), run by a plain
  ``rq worker --worker-class rq.SimpleWorker`` (``--quiet``, so logging is not what it is compared on).

``python -m benchmarks.baselines bare-worker --redis URL`` is the bare worker's process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from rq import Queue

from benchmarks.calls import point
from tests.support.processes import Process, wait_until

BARE_QUEUE = "bench:bare:calls"
BARE_CHANNEL = "bench:bare:replies"
NAIVE_QUEUE = "bench-naive"


def in_process(calls: int) -> dict[str, Any]:
    """Per-call times (ms) of the no-op function called directly and through ``workers.execute.execute``."""
    import benchmarks.functions as functions
    from shared.envelopes import CallJob
    from workers.execute import execute

    direct, executed = [], []
    job = CallJob(call_id="inproc", name="bench_noop", arguments="{}", reply_channel="-", deadline=time.time() + 3600)
    for _ in range(calls):
        started = time.perf_counter()
        functions.bench_noop()
        middle = time.perf_counter()
        execute(job, None, "in-process")  # type: ignore[arg-type]  # the no-op never touches Redis
        ended = time.perf_counter()
        direct.append((middle - started) * 1000)
        executed.append((ended - middle) * 1000)
    return {"direct": point(direct, {}, 0), "execute": point(executed, {}, 0)}


# --- bare BLPOP worker ----------------------------------------------------------------------------------------


def bare_worker(url: str) -> None:
    """Pop a call id, publish it back: the least a worker behind Redis can do."""
    client = redis.Redis.from_url(url)
    while True:
        _, call_id = client.blpop([BARE_QUEUE])  # type: ignore[misc]
        client.publish(BARE_CHANNEL, call_id)


def start_bare_workers(url: str, log_dir: Path, count: int) -> list[Process]:
    procs = [
        Process(["-m", "benchmarks.baselines", "bare-worker", "--redis", url], {}, log_dir / f"bare-{i}.log")
        for i in range(count)
    ]
    client = redis.Redis.from_url(url)

    def blocked() -> int:  # workers waiting in BLPOP show up in CLIENT LIST with cmd=blpop
        return sum(c.get("cmd") == "blpop" for c in client.client_list())

    try:
        wait_until(lambda: blocked() >= count, 30, "bare workers")
    finally:
        client.close()
    return procs


async def bare_point(url: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url, max_connections=concurrency + 8)  # the default pool stops at 100
    pubsub = client.pubsub()
    await pubsub.subscribe(BARE_CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    waiting: dict[bytes, asyncio.Future[float]] = {}

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                future = waiting.pop(message["data"], None)
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())

    listener = asyncio.create_task(listen())
    ids = itertools.count()
    try:
        return await _closed_loop(concurrency, warmup, duration, lambda: _bare_call(client, waiting, ids))
    finally:
        listener.cancel()
        await pubsub.aclose()
        await client.aclose()


async def _bare_call(client: aioredis.Redis, waiting: dict[bytes, asyncio.Future[float]], ids: Any) -> float:
    call_id = f"bare-{next(ids)}".encode()
    future = asyncio.get_running_loop().create_future()
    waiting[call_id] = future
    started = time.perf_counter()
    await client.lpush(BARE_QUEUE, call_id)
    return (await asyncio.wait_for(future, 10) - started) * 1000


async def _closed_loop(concurrency: int, warmup: float, duration: float, call: Any) -> dict[str, Any]:
    samples: list[float] = []
    measure_from = time.perf_counter() + warmup
    end = measure_from + duration

    async def session() -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            ms = await call()
            if started >= measure_from:
                samples.append(ms)

    await asyncio.gather(*(session() for _ in range(concurrency)))
    return point(samples, {"answered": len(samples)}, duration)


# --- naive RQ -------------------------------------------------------------------------------------------------


def start_naive_workers(url: str, log_dir: Path, count: int) -> list[Process]:
    rq = str(Path(__import__("sys").executable).parent / "rq")
    procs = [
        Process(
            [rq, "worker", "--url", url, "--worker-class", "rq.worker.SimpleWorker", "--quiet", NAIVE_QUEUE],
            {},
            log_dir / f"naive-rq-{i}.log",
        )
        for i in range(count)
    ]
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: client.scard("rq:workers:" + NAIVE_QUEUE) >= count, 30, "plain RQ workers")
    finally:
        client.close()
    return procs


def naive_rq_point(url: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    """Each of ``concurrency`` threads enqueues and waits, in a loop (RQ's API is synchronous)."""
    samples: list[float] = []
    lock = threading.Lock()
    measure_from = time.perf_counter() + warmup
    end = measure_from + duration
    errors = 0

    def session() -> None:
        nonlocal errors
        connection = redis.Redis.from_url(url)
        queue = Queue(NAIVE_QUEUE, connection=connection)
        while time.perf_counter() < end:
            started = time.perf_counter()
            job = queue.enqueue("benchmarks.functions.plain_noop")
            result = job.latest_result(timeout=10)
            ms = (time.perf_counter() - started) * 1000
            with lock:
                if result is None or result.return_value != "ok":
                    errors += 1
                elif started >= measure_from:
                    samples.append(ms)
        connection.close()

    threads = [threading.Thread(target=session) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return point(samples, {"answered": len(samples), "errors": errors}, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description="Baseline helper processes.")
    parser.add_argument("role", choices=["bare-worker"])
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    bare_worker(args.redis)


if __name__ == "__main__":
    main()
