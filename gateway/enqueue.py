"""Putting calls on their RQ queues and taking them off again; the gateway's liveness key.

The enqueue is RQ's own (:mod:`gateway.rq_enqueue`), sent in one transaction (``redis_pool.transaction``) with a
refresh of this process's liveness key (``keys.gateway_alive``): its jobs' ids name it, and a worker does not
start a call whose gateway is gone (killed outright, so nobody would receive the result). The key is also
refreshed every :data:`ALIVE_EVERY` seconds while the gateway runs, and deleted when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import redis
import redis.asyncio as aioredis

from gateway import metrics
from gateway.pending import Pending
from gateway.redis_pool import transaction
from gateway.rq_enqueue import RQEnqueue, job_key, queue_key
from shared import keys
from shared.envelopes import CallJob, FunctionSpec
from shared.redis_errors import REDIS_ERRORS, REDIS_FAILURES

log = logging.getLogger(__name__)

ALIVE_TTL = 5
"""Seconds this process's liveness key outlives its last refresh: how long after a SIGKILL workers stop starting its
calls. Long enough to ride out a stalled event loop or a slow Redis, short next to calls' deadlines."""
ALIVE_EVERY = 1.0
"""Seconds between refreshes of the liveness key."""


class Enqueuer:
    """Enqueue, re-enqueue and cancel one gateway process's calls; keep its liveness key."""

    def __init__(self, async_redis: aioredis.Redis, sync_redis: redis.Redis, gateway_ref: str, result_ttl: int) -> None:
        self.redis = async_redis
        self.gateway_ref = gateway_ref
        self.alive_key = keys.gateway_alive(gateway_ref)
        self.rq = RQEnqueue(sync_redis, result_ttl)
        self._result_ttl = result_ttl
        self.background: set[asyncio.Task[None]] = set()
        """Cancellations still being sent (:meth:`stop` waits for them a little)."""
        # Remove a cancelled job from its queue, and its hash, only if no worker took it yet: nothing is left
        # behind (RQ's job.cancel() kept every one in the canceled registry), and a job a worker already took
        # is left to it (the cancel marker makes it skip the call).
        self._drop_queued_job = async_redis.register_script(
            "if redis.call('lrem', KEYS[1], 0, ARGV[1]) > 0 then return redis.call('del', KEYS[2]) end return 0"
        )

    async def enqueue(self, job: CallJob, spec: FunctionSpec, attempt: int = 0) -> None:
        """Push the job onto its RQ queue, retrying through Redis outages (the caller's deadline bounds it)."""
        delay = 0.05
        job_id = keys.job_id(job.call_id, attempt, self.gateway_ref)
        while True:
            try:
                queue = await self.rq.queue(spec.queue, self.redis)
                commands = self.rq.commands(queue, job, spec, job_id)
                # The liveness key too, in the same round trip: a worker must not find the job before it
                # (a Redis that restarted empty, or the first call before the first refresh).
                commands.append(("SET", self.alive_key, "1", "EX", ALIVE_TTL))
                await transaction(self.redis, commands)
                return
            except REDIS_ERRORS as exc:
                metrics.redis_errors.inc()
                log.warning("enqueue of %s failed (%s); retrying", job.call_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def requeue(self, pending: Pending) -> None:
        """Enqueue the call again under its next attempt's job id (the claim key stays the call's)."""
        pending.job_attempt += 1
        pending.dequeued_at = None
        await self.enqueue(pending.job, pending.spec, attempt=pending.job_attempt)
        pending.queued_at = time.monotonic()

    def cancel_in_background(self, pending: Pending) -> None:
        task = asyncio.create_task(self.cancel(pending))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def cancel(self, pending: Pending) -> None:
        """Mark the call cancelled (a worker that takes it skips it) and delete its RQ job if still queued."""
        call_id = pending.job.call_id
        job_id = pending.job_id(self.gateway_ref)
        # The marker must outlive the job's own TTL (deadline + 1 s) even if RESULT_TTL is shorter.
        ttl = max(self._result_ttl, math.ceil(pending.spec.timeout) + 1)
        try:
            await self.redis.set(keys.cancelled(call_id), "1", ex=ttl)
            await self._drop_queued_job(keys=[queue_key(pending.spec.queue), job_key(job_id)], args=[job_id])
        except REDIS_ERRORS as exc:
            metrics.redis_errors.inc()
            log.info("could not cancel %s (%s); the worker will skip it past its deadline", call_id, exc)

    async def keep_alive(self) -> None:
        """Refresh this process's liveness key every :data:`ALIVE_EVERY` seconds while it runs.

        One key per process, not per call: no round trip is added to any call. Redis trouble is waited out;
        if the key expires meanwhile, calls taken in that gap are skipped and the watchdog queues them again.
        """
        while True:
            with contextlib.suppress(*REDIS_FAILURES, TimeoutError):
                async with asyncio.timeout(ALIVE_TTL):
                    await self.redis.set(self.alive_key, "1", ex=ALIVE_TTL)
            await asyncio.sleep(ALIVE_EVERY)

    async def stop(self) -> None:
        """Delete the liveness key (calls still queued are nobody's now: workers skip them rather than run them)
        and give cancellations in flight a moment to reach Redis."""
        with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
            async with asyncio.timeout(1):
                await self.redis.delete(self.alive_key)
        if self.background:
            await asyncio.wait(self.background, timeout=2)
