"""One worker process running many calls at once (``WORKER_CONCURRENCY``): real redis-server, one real worker
process, the real gateway; calls through ``POST /function-call`` and the WebSocket."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from rq import Queue

from shared import keys
from shared.redis_server import RedisServer
from tests.integration.test_function_calls import call
from tests.integration.test_http_and_cli import call_body, post
from tests.support.client import AgentClient
from tests.support.functions import counter_key
from tests.support.processes import (
    TEST_MODULES,
    Gateway,
    Process,
    live_workers,
    running_gateway,
    start_workers,
    wait_until,
)

pytestmark = pytest.mark.integration

MODULES = TEST_MODULES + ",tests.support.concurrency"
NAP = 0.3


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """This module's own (``redis_client`` connects to it): the session's two workers would take its calls."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def gw(redis_server: RedisServer, logs_dir: Path) -> Iterator[Gateway]:
    """A gateway in front of one worker process (whose clean exit the fixture checks)."""
    worker = start_workers(redis_server.url, logs_dir / "concurrent-worker.log", processes=1, WORKER_MODULES=MODULES)
    try:
        # RESUME_GRACE=0: a client that leaves ends its session at once (its calls are cancelled, not parked).
        with running_gateway(
            redis_server.url, logs_dir / "concurrent-gateway.log", MAX_PENDING_CALLS="64", RESUME_GRACE="0"
        ) as gateway:
            yield gateway
    finally:
        assert worker.stop() == 0, worker.log()


def post_all(gateway: Gateway, name: str, count: int, **arguments: object) -> list[tuple[int, dict]]:
    """``count`` calls at once; their HTTP statuses and bodies."""
    prefix = f"{name}-{time.time_ns()}"
    with ThreadPoolExecutor(count) as pool:
        bodies = [call_body(name, arguments, f"{prefix}-{i}") for i in range(count)]
        return list(pool.map(lambda body: post(gateway, body), bodies))


@pytest.mark.parametrize(("name", "count"), [("async_nap", 40), ("blocking_nap", 16)])
def test_one_worker_runs_many_calls_at_once(gw: Gateway, redis_client: redis.Redis, name: str, count: int) -> None:
    started = time.monotonic()
    answers = post_all(gw, name, count, seconds=NAP)
    took = time.monotonic() - started
    assert all(status == 200 and "content" in body for status, body in answers), answers
    peaks = [json.loads(body["content"])["peak"] for _, body in answers]
    assert max(peaks) > 1  # seen running together, in the one worker process
    assert took < count * NAP / 2  # loosely: far from one after the other

    queue = Queue(keys.queue_name("default"), connection=redis_client)
    wait_until(lambda: not queue.started_job_registry.get_job_ids(), 5, "RQ's started registry to empty")
    assert queue.finished_job_registry.count >= count and queue.failed_job_registry.count == 0


def test_a_module_level_async_client_serves_calls_in_a_row_and_at_once(gw: Gateway) -> None:
    for _ in range(2):
        status, body = post(gw, call_body("use_shared_client", {"seconds": 0}, f"row-{time.time_ns()}"))
        assert status == 200 and "content" in body, body
    answers = post_all(gw, "use_shared_client", 8, seconds=0.1)
    assert all(status == 200 and "content" in body for status, body in answers), answers
    assert max(json.loads(body["content"])["uses"] for _, body in answers) >= 10


@pytest.mark.parametrize("name", ["async_wait", "blocking_wait"])
async def test_a_running_call_learns_it_was_cancelled(gw: Gateway, redis_client: redis.Redis, name: str) -> None:
    """The client leaves mid-call: the gateway marks the call cancelled; an async call's task is cancelled, a
    blocking one sees ``ctx.cancelled``."""
    tag = f"cancel-{name}-{time.time_ns()}"
    client = await AgentClient.connect(gw.url)
    await client.start()
    await client.say(call(name, seconds=4, tag=tag))
    wait_until(lambda: redis_client.get(counter_key(tag + ".started")), 5, "the function to start")
    await client.close()
    wait_until(lambda: redis_client.get(counter_key(tag + ".cancelled")), 2, "the function to see its cancellation")


@pytest.mark.parametrize("name", ["async_overrun", "blocking_overrun"])
def test_a_call_past_its_timeout_is_answered_timed_out_and_stopped(
    gw: Gateway, redis_client: redis.Redis, name: str
) -> None:
    tag = f"overrun-{name}-{time.time_ns()}"
    status, body = post(gw, call_body(name, {"seconds": 4, "tag": tag}, tag))
    assert status == 200
    # The worker's "timed out" and the gateway's own deadline answer race: either is the timeout's answer.
    assert "timed out" in body["error"] or "did not finish within 1 s" in body["error"], body
    wait_until(lambda: redis_client.get(counter_key(tag + ".cancelled")), 3, "the function to be stopped")


def busy_worker_stopped(logs_dir: Path, name: str, seconds: float, stop: Callable[[Process, int], None]) -> list:
    """Answers of 4 async and 4 blocking calls of ``seconds`` on a worker of its own, ``stop``ped (given the
    supervisor and the worker's pid) while they run."""
    with RedisServer() as server:
        workers = start_workers(server.url, logs_dir / f"{name}-worker.log", processes=1, WORKER_MODULES=MODULES)
        try:
            [worker] = live_workers(server.url)
            gateway_log = logs_dir / f"{name}-gateway.log"
            with (
                running_gateway(server.url, gateway_log, MAX_PENDING_CALLS="64") as gateway,
                ThreadPoolExecutor(2) as pool,
            ):
                asynchronous = pool.submit(post_all, gateway, "async_nap", 4, seconds=seconds)
                blocking = pool.submit(post_all, gateway, "blocking_nap", 4, seconds=seconds)
                time.sleep(0.7)  # the calls are running
                stop(workers, worker["pid"])
                return asynchronous.result() + blocking.result()
        finally:
            workers.stop()


def test_warm_shutdown_lets_running_calls_finish(logs_dir: Path) -> None:
    def warm(workers: Process, pid: int) -> None:
        assert workers.stop() == 0, workers.log()
        assert "waiting for 8 running calls" in workers.log()

    answers = busy_worker_stopped(logs_dir, "warm", 1.5, warm)
    assert all(status == 200 and "content" in body for status, body in answers), answers


def test_a_second_signal_answers_running_calls_interrupted(logs_dir: Path) -> None:
    def cold(workers: Process, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a second signal within a second of the first
        os.kill(pid, signal.SIGTERM)

    answers = busy_worker_stopped(logs_dir, "cold", 4, cold)
    assert all(status == 200 and "was interrupted" in body.get("error", "") for status, body in answers), answers
