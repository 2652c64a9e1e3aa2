"""Calls whose worker died: noticed without waiting for their deadline.

A worker claims a call (``keys.claim``) before running it and keeps its catalog key alive while it lives; the
supervisor deletes that key as soon as a worker process dies. A claimed call whose worker has no catalog key is
lost: an idempotent function is run again on another worker, any other is answered with an error at once
(running it twice could, say, place an order twice). A worker that dies after taking a job from the queue but
before claiming it leaves the job in neither place: such a call never ran, so it is queued again whatever its
function. Every tick also re-reads pending calls' stored results, so a lost pub/sub message costs a tick.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from gateway import metrics
from gateway.enqueue import Enqueuer
from gateway.pending import Pending
from gateway.results import ResultListener
from gateway.rq_enqueue import job_key, queue_key
from shared import keys
from shared.envelopes import CallResult
from shared.redis_errors import REDIS_FAILURES

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.25
"""Seconds between checks for calls whose worker died."""
MAX_RETRIES = 2
"""Extra runs of an idempotent call whose workers keep dying."""
UNCLAIMED_LOOK_AFTER = 1.0
"""Seconds a call may stay unclaimed after its enqueue before the watchdog looks for it in its queue (a call is
normally claimed within milliseconds of leaving the queue; the look costs an ``LPOS`` per call)."""
UNCLAIMED_LOOKS = 64
"""Most unclaimed calls looked for in their queues per tick: under a backlog every queued call is unclaimed,
and an ``LPOS`` for a job no longer queued scans the whole queue. A random sample each tick keeps the cost
bounded while every call still gets looked at, on average, within a few ticks."""
DEQUEUED_GRACE = 0.5
"""Seconds a call must be seen out of its queue and still unclaimed before it is queued again: its worker took it
and died before claiming it. Rerunning is safe even when a slow worker still claims it: all attempts share the
claim key, so at most one runs."""


class Watchdog:
    """Looks after one gateway process's calls in flight while their workers may die."""

    def __init__(
        self,
        async_redis: aioredis.Redis,
        waiters: dict[str, Pending],
        results: ResultListener,
        enqueuer: Enqueuer,
        deliver: Callable[[CallResult], None],
    ) -> None:
        self.redis = async_redis
        self._waiters = waiters
        self._results = results
        self._enqueuer = enqueuer
        self._deliver = deliver
        # Delete the claim only if the dead worker still holds it, atomically.
        self._release_claim = async_redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
        )

    async def run(self) -> None:
        """Every :data:`WATCH_INTERVAL` seconds, while calls are pending: re-read their stored results, then
        look after the unclaimed ones and those whose worker is gone."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            watched = [p for p in self._waiters.values() if p.enqueued and not p.future.done()]
            if not watched:
                continue
            try:
                await self.tick(watched)
            except REDIS_FAILURES:
                metrics.redis_errors.inc()
                continue  # Redis trouble or a refused command: the deadline still answers every call

    async def tick(self, watched: list[Pending]) -> None:
        # A result whose pub/sub message was lost (a half-open subscription) is answered within a tick.
        await self._results.reread([p.job.call_id for p in watched])
        watched = [p for p in watched if not p.future.done()]
        if not watched:
            return
        claims = await self.redis.mget([keys.claim(p.job.call_id) for p in watched])
        await self._requeue_taken_unclaimed([p for p, c in zip(watched, claims, strict=True) if not c])
        owners = sorted({c.decode() for c in claims if c})
        if not owners:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(keys.catalog(owner))
            alive = {owner for owner, live in zip(owners, await pipe.execute(), strict=True) if live}
        for pending, claim in zip(watched, claims, strict=True):
            if claim and claim.decode() not in alive:
                await self._worker_lost(pending, claim.decode())

    async def _worker_lost(self, pending: Pending, worker_id: str) -> None:
        job, spec = pending.job, pending.spec
        stored = await self._results.stored(job.call_id)
        if stored is not None:
            self._deliver(stored)
        elif spec.idempotent and pending.attempts < MAX_RETRIES:
            if await self._release_claim(keys=[keys.claim(job.call_id)], args=[worker_id]):
                pending.attempts += 1
                log.warning("call %s: worker %s died; running %s again (idempotent)", job.call_id, worker_id, job.name)
                await self._enqueuer.requeue(pending)
        else:
            log.warning("call %s: worker %s died running %s; not retried", job.call_id, worker_id, job.name)
            reason = "it is not marked idempotent" if not spec.idempotent else f"it failed {MAX_RETRIES + 1} times"
            self._deliver(
                CallResult.failure(
                    job.call_id,
                    f"{job.name} was interrupted: the worker running it stopped. "
                    f"It was not run again because {reason}.",
                    worker_id=worker_id,
                )
            )

    async def _requeue_taken_unclaimed(self, unclaimed: list[Pending]) -> None:
        """Queue again a call whose job a worker took from the queue but never claimed: the worker died between
        its ``BLMOVE`` and the fetch+claim round trip (or skipped it as orphaned while this process's liveness key
        had lapsed). The call never ran, so running it is safe even for a function that is not idempotent.

        Looks only at calls unclaimed :data:`UNCLAIMED_LOOK_AFTER` after their enqueue (one ``LPOS`` and one
        ``EXISTS`` each, in one round trip). A job missing altogether is left to the deadline: Redis lost its
        data (a restart), and with it perhaps the claim of a call that runs right now.
        """
        now = time.monotonic()
        looked = [p for p in unclaimed if now - p.queued_at >= UNCLAIMED_LOOK_AFTER]
        if not looked:
            return
        if len(looked) > UNCLAIMED_LOOKS:
            looked = random.sample(looked, UNCLAIMED_LOOKS)
        gateway_ref = self._enqueuer.gateway_ref
        async with self.redis.pipeline(transaction=False) as pipe:
            for pending in looked:
                job_id = pending.job_id(gateway_ref)
                pipe.lpos(queue_key(pending.spec.queue), job_id)
                pipe.exists(job_key(job_id))
            replies = await pipe.execute()
        for pending, position, exists in zip(looked, replies[::2], replies[1::2], strict=True):
            if position is not None or not exists or pending.future.done():
                pending.dequeued_at = None
            elif pending.dequeued_at is None:
                pending.dequeued_at = now
            elif now - pending.dequeued_at >= DEQUEUED_GRACE:
                job = pending.job
                log.warning(
                    "call %s: %s was taken by a worker that died before claiming it; queued again",
                    job.call_id,
                    job.name,
                )
                await self._enqueuer.requeue(pending)
