"""Sends function calls to the workers through Redis and waits for their results: the facade of the Redis side.

One :class:`Dispatcher` per gateway process. It owns the futures of the calls in flight, keyed by call id, and
each call's deadline: when it passes, the caller gets an error result and the job is cancelled. The rest is
delegated, one concern per module:

- :mod:`gateway.redis_pool`: the asyncio connections (blocking pool, hiredis packing, timeouts);
- :mod:`gateway.enqueue`: RQ's enqueue in one round trip (:mod:`gateway.rq_enqueue`), cancellation, and this
  process's liveness key;
- :mod:`gateway.results`: the reply-channel subscription, confirmed before anything is enqueued, and re-reads
  of stored results;
- :mod:`gateway.watchdog`: calls whose worker died, or that a worker took and never claimed.

Deadlines are in the Redis server's time (:mod:`shared.clock`), so gateway and worker clocks need not agree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from gateway import metrics
from gateway.enqueue import Enqueuer
from gateway.pending import Pending
from gateway.redis_pool import COMMAND_TIMEOUT, redis_pool
from gateway.results import ResultListener
from gateway.watchdog import Watchdog
from shared import keys
from shared.clock import REFRESH_EVERY, RedisClock
from shared.config import Config
from shared.envelopes import CallJob, CallProgress, CallResult, FunctionSpec
from shared.redis_options import redis_options

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        config: Config,
        gateway_id: str | None = None,
        *,
        async_redis: aioredis.Redis | None = None,
        sync_redis: redis.Redis | None = None,
    ) -> None:
        """The two Redis clients can be injected (tests use fakeredis); by default both come from REDIS_URL. The
        synchronous one sends nothing: RQ's enqueue queues its commands on a pipeline of it."""
        self.config = config
        self.gateway_id = gateway_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.channel = keys.reply_channel(self.gateway_id)
        self.gateway_ref = keys.gateway_ref(self.gateway_id)
        self.redis = async_redis or aioredis.Redis(connection_pool=redis_pool(config.redis_url, config))
        self.sync_redis = sync_redis or redis.Redis.from_url(
            config.redis_url, socket_connect_timeout=2, socket_timeout=5, **redis_options(config.redis_url, config)
        )
        self._waiters: dict[str, Pending] = {}
        self.enqueuer = Enqueuer(self.redis, self.sync_redis, self.gateway_ref, config.result_ttl)
        self.results = ResultListener(
            self.redis, self.channel, self._deliver, lambda: list(self._waiters), self._progress
        )
        self.watchdog = Watchdog(self.redis, self._waiters, self.results, self.enqueuer, self._deliver)
        self.clock = RedisClock()
        """The Redis server's clock, in which job deadlines are written."""
        self._tasks: list[asyncio.Task[None]] = []
        self._ttl_warned: set[str] = set()
        self._timed_out: set[str] = set()
        """Calls answered by their deadline rather than a result, until :meth:`call` counts them."""

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening. Returns at once: calls wait for the subscription themselves (Redis may be down)."""
        self._tasks = [
            asyncio.create_task(self.results.listen(), name="dispatcher-listener"),
            asyncio.create_task(self.watchdog.run(), name="dispatcher-watcher"),
            asyncio.create_task(self.enqueuer.keep_alive(), name="dispatcher-keepalive"),
            asyncio.create_task(self._keep_clock(), name="dispatcher-clock"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.enqueuer.stop()
        await self.redis.aclose(close_connection_pool=True)
        self.sync_redis.close()

    @property
    def subscribed(self) -> bool:
        """True while the result subscription is confirmed and alive (``/readyz``); see :mod:`gateway.results`."""
        return self.results.subscribed

    @property
    def pending(self) -> int:
        return len(self._waiters)

    # --- calls --------------------------------------------------------------------------------------------

    async def call(
        self,
        call_id: str,
        name: str,
        arguments: str,
        spec: FunctionSpec,
        session_id: str = "",
        principal: str = "",
        on_progress: Callable[[str], None] | None = None,
        *,
        traceparent: str = "",
    ) -> CallResult:
        """Run one call on a worker and return its result, or an error result at the deadline.

        ``on_progress`` is told each progress message the worker publishes while the call runs (best effort).

        Never raises for backend trouble (Redis down, worker dead, bad arguments): every outcome is a
        :class:`CallResult` the caller can send upstream. Cancelling the awaiting task cancels the job.
        ``traceparent`` (W3C) travels in the job, so the worker's logs and spans join the caller's trace.
        """
        started, outcome = time.monotonic(), "cancelled"
        metrics.pending_calls.inc()
        try:
            result = await self._call(call_id, name, arguments, spec, session_id, principal, traceparent, on_progress)
            outcome = "timeout" if call_id in self._timed_out else "ok" if result.ok else "error"
            return result
        finally:
            self._timed_out.discard(call_id)
            metrics.pending_calls.dec()
            metrics.call_finished(spec.name, outcome, time.monotonic() - started)

    async def _call(
        self,
        call_id: str,
        name: str,
        arguments: str,
        spec: FunctionSpec,
        session_id: str,
        principal: str,
        trace: str,
        on_progress: Callable[[str], None] | None,
    ) -> CallResult:
        existing = self._waiters.get(call_id)
        if existing is not None:
            # The same call requested twice in this process: one job, both callers get its result.
            return await self._join(existing, spec)
        job = CallJob(
            call_id=call_id,
            name=name,
            arguments=arguments,
            reply_channel=self.channel,
            deadline=self.clock.now() + spec.timeout,  # Redis time: the worker's clock may disagree with ours
            session_id=session_id,
            principal=principal,
            enqueued_at=time.time(),
            traceparent=trace,
        )
        pending = Pending(job, spec, asyncio.get_running_loop().create_future(), on_progress=on_progress)
        self._waiters[call_id] = pending
        if spec.timeout > self.config.result_ttl and name not in self._ttl_warned:
            # A worker with a longer RESULT_TTL advertises this: our cancel markers outlive the deadline anyway.
            self._ttl_warned.add(name)
            log.warning("%s's timeout (%g s) exceeds RESULT_TTL (%d s)", name, spec.timeout, self.config.result_ttl)
        try:
            async with asyncio.timeout(spec.timeout):
                await self.results.confirmed.wait()
                await self.enqueuer.enqueue(job, spec)
                pending.enqueued, pending.queued_at = True, time.monotonic()
                return await asyncio.shield(pending.future)
        except TimeoutError:
            if pending.future.done():
                return pending.future.result()
            stored = await self.results.stored(call_id)
            if stored is None:
                self.enqueuer.cancel_in_background(pending)
                self._timed_out.add(call_id)
                stored = CallResult.failure(call_id, f"{name} did not finish within {spec.timeout:g} s.")
            if not pending.future.done():
                pending.future.set_result(stored)  # callers that joined this call get the same answer now
            return stored
        except asyncio.CancelledError:
            self.enqueuer.cancel_in_background(pending)
            pending.future.cancel()
            raise
        finally:
            self._waiters.pop(call_id, None)

    async def _join(self, existing: Pending, spec: FunctionSpec) -> CallResult:
        """Wait for a call another caller started, but never past this caller's own deadline.

        The first caller may be cancelled (its future is then cancelled) or time out; waiting on its future
        alone once left a second caller hanging. ``asyncio.wait`` neither raises for a cancelled future nor
        cancels it at the timeout, so only this caller's own cancellation propagates.
        """
        call_id, name = existing.job.call_id, existing.job.name
        future = existing.future
        await asyncio.wait([future], timeout=spec.timeout)
        if future.done() and not future.cancelled():
            return future.result()
        stored = await self.results.stored(call_id)
        if stored is not None:
            return stored
        if future.cancelled():
            return CallResult.failure(call_id, f"{name} was cancelled before it finished.")
        return CallResult.failure(call_id, f"{name} did not finish within {spec.timeout:g} s.")

    def give_up(self, why: str) -> int:
        """Answer every call in flight now with an error saying ``why`` and cancel its job (a draining gateway
        out of time: its sessions are about to close). Returns how many calls were given up."""
        given_up = [pending for pending in self._waiters.values() if not pending.future.done()]
        for pending in given_up:
            self.enqueuer.cancel_in_background(pending)
            pending.future.set_result(CallResult.failure(pending.job.call_id, f"{pending.job.name} {why}"))
        return len(given_up)

    def _deliver(self, result: CallResult) -> None:
        """Resolve the future of ``result``'s call, if this process still waits for it."""
        pending = self._waiters.get(result.call_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(result)

    def _progress(self, progress: CallProgress) -> None:
        """Hand a worker's progress report to the caller still waiting for that call; others are ignored."""
        pending = self._waiters.get(progress.call_id)
        if pending is not None and pending.on_progress is not None and not pending.future.done():
            pending.on_progress(progress.message)

    async def _keep_clock(self) -> None:
        """Measure the offset to the Redis server's clock now and every :data:`REFRESH_EVERY` seconds (every
        second until the first measurement succeeds: Redis may be down at start)."""
        while True:
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    measured = await self.clock.ameasure(self.redis)
            except TimeoutError:
                measured = False
            await asyncio.sleep(REFRESH_EVERY if measured or self.clock.measured else 1.0)
