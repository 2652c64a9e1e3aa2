"""Calls whose other end died while they waited in the queue.

- The gateway SIGKILLed with calls queued: nobody will receive their results, so no worker may run them
  (``keys.gateway_alive``, checked in the claim script). Before, a worker freed up later ran every one of them:
  side effects nobody asked for any more.
- A worker SIGKILLed after taking a call from the queue (``BLMOVE``) but before claiming it: the gateway's watcher
  queues the call again (``Dispatcher._requeue_taken_unclaimed``). Before, the call waited for its deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job as RQJob

from gateway.enqueue import ALIVE_TTL
from shared import keys
from shared.envelopes import CallJob
from shared.redis_server import RedisServer
from tests.faults.helpers import call, queue_drained, stop_all
from tests.support.client import AgentClient
from tests.support.functions import counter_key
from tests.support.processes import Gateway, live_workers, start_workers, wait_until
from tests.support.reliability import Entry
from workers.callworker import TEST_PAUSE_ENV

pytestmark = pytest.mark.faults

QUEUED = 4
PATIENT_DEADLINE = 20.0
"""``patient_count``'s timeout: long enough that only the fix, not the deadline, can answer the call in time."""


def outcomes_of(client: redis.Redis, name: str) -> list[str]:
    """RQ's return value (the worker's one-word outcome) of every job of function ``name``."""
    found = []
    for key in client.scan_iter("rq:job:fc*"):
        rq_job = RQJob.fetch(key.decode().removeprefix("rq:job:"), connection=client)
        if CallJob.from_json(rq_job.args[0]).name == name:
            found.append(str(rq_job.return_value()))
    return sorted(found)


@pytest.mark.attack("A gateway or worker killed between enqueue and claim")
async def test_a_killed_gateways_queued_calls_are_not_run(
    redis_server: RedisServer, logs_dir: Path, reliability: Entry
):
    """The gateway SIGKILLed with calls queued behind a busy worker"""
    # One slot: the worker busy with one call takes no other (WORKER_CONCURRENCY).
    workers = start_workers(redis_server.url, logs_dir / "orphan-workers.log", processes=1, WORKER_CONCURRENCY="1")
    gateway = Gateway(redis_server.url, logs_dir / "orphan-gateway.log").wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    queue = Queue(keys.queue_name("default"), connection=db)
    try:
        holder = await AgentClient.connect(gateway.url)
        caller = await AgentClient.connect(gateway.url)
        await holder.start()
        await caller.start()
        # The only worker is held by a call until the test releases it; the counting calls queue behind it.
        await holder.say(call("wait_for_release", tag="hold"))
        await asyncio.to_thread(wait_until, lambda: db.get(counter_key("hold.started")), 10, "the hold")
        tags = [f"orphan-{i}" for i in range(QUEUED)]
        await caller.say(" and ".join(call("patient_count", tag=tag) for tag in tags))
        await asyncio.to_thread(wait_until, lambda: queue.count == QUEUED, 10, "the calls to be queued")
        [alive_key] = db.keys(keys.gateway_alive("*"))

        gateway.popen.kill()
        gateway.popen.wait()
        killed = time.monotonic()
        await asyncio.to_thread(wait_until, lambda: not db.exists(alive_key), ALIVE_TTL + 5, "the liveness key to go")
        expired_after = time.monotonic() - killed
        db.set(counter_key("hold.released"), 1)
        await asyncio.to_thread(wait_until, lambda: queue_drained(db), 15, "the worker to take the queued calls")

        runs = {tag: int(db.get(counter_key(tag)) or 0) for tag in tags}
        outcomes = outcomes_of(db, "patient_count")
        skipped_lines = workers.log().count("the gateway that enqueued it is gone")
        reliability.tried = (
            f"gateway SIGKILLed with {QUEUED} non-idempotent calls (deadline {PATIENT_DEADLINE:g} s) queued behind the "
            f"only worker's running call; the worker freed once the gateway's liveness key ({ALIVE_TTL} s TTL) expired"
        )
        reliability.happened = (
            f"liveness key gone {expired_after:.1f} s after the kill; of the {QUEUED} queued calls "
            f"{sum(1 for n in runs.values() if n)} ran, {outcomes.count('orphaned')} were skipped as orphaned"
        )
        reliability.figures.update(
            queued_calls=QUEUED,
            liveness_ttl_seconds=ALIVE_TTL,
            key_gone_after_seconds=expired_after,
            runs=runs,
            worker_outcomes=outcomes,
            skip_log_lines=skipped_lines,
        )

        assert runs == dict.fromkeys(tags, 0), "a call of a dead gateway ran"
        assert outcomes == ["orphaned"] * QUEUED and skipped_lines == QUEUED
        assert "Traceback" not in workers.log()
    finally:
        db.close()
        gateway.stop()
        await stop_all(workers)


@pytest.mark.attack("A gateway or worker killed between enqueue and claim")
async def test_a_worker_killed_between_dequeue_and_claim(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """A worker SIGKILLed after taking a call from the queue, before claiming it"""
    # One worker that pauses (test-only hook) between its BLMOVE and its fetch+claim round trip.
    paused = start_workers(redis_server.url, logs_dir / "window-paused.log", processes=1, **{TEST_PAUSE_ENV: "60"})
    gateway = Gateway(redis_server.url, logs_dir / "window-gateway.log").wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    workers = None
    try:
        [victim] = live_workers(redis_server.url)
        client = await AgentClient.connect(gateway.url)
        await client.start()
        await client.say(call("patient_count", tag="window"))
        await asyncio.to_thread(wait_until, lambda: "test-only pause" in paused.log(), 10, "the worker to pause")
        claimed_before_kill = db.keys(keys.claim("*"))
        paused.popen.kill()  # the supervisor first, so nothing restarts the victim (a restart would pause too)
        paused.popen.wait()
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()
        workers = start_workers(redis_server.url, logs_dir / "window-workers.log", processes=1)

        await client.expect("BackendFunctionCall", status="finished", timeout=PATIENT_DEADLINE + 5)
        answered_after = time.monotonic() - killed
        [response] = (await client.stats())["function_responses"]
        runs = int(db.get(counter_key("window")) or 0)
        requeued = gateway.log().count("died before claiming it; queued again")
        reliability.tried = (
            f"a worker SIGKILLed after taking a non-idempotent call from the queue and before claiming it "
            f"(held there by a test-only pause); deadline {PATIENT_DEADLINE:g} s"
        )
        reliability.happened = (
            f"the gateway queued the call again ({requeued}x); answered {answered_after:.1f} s after the kill with "
            f"{response['content']!r}; the function ran {runs} time(s)"
        )
        reliability.figures.update(
            deadline_seconds=PATIENT_DEADLINE,
            claimed_before_kill=len(claimed_before_kill),
            requeued=requeued,
            answered_after_kill_seconds=answered_after,
            content=response["content"],
            runs=runs,
        )

        assert claimed_before_kill == [], "the kill missed the window: the call was already claimed"
        assert response["content"] == "1", "answered by the deadline, not by a rerun"
        assert runs == 1 and requeued == 1
        await client.close()
    finally:
        db.close()
        paused.stop()
        await stop_all(gateway, *([workers] if workers else []))
