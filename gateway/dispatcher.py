"""Sends function calls to the workers through Redis and waits for their results.

One :class:`Dispatcher` per gateway process. It owns:

- one pub/sub subscription to this process's reply channel, confirmed before anything is enqueued
  (Redis pub/sub is at-most-once: a result published before the subscription exists is lost);
- the futures of the calls in flight, keyed by call id;
- the per-call deadline: when it passes, the caller gets an error result and the job is cancelled.

While it runs it keeps a liveness key (``keys.gateway_alive``) with a short TTL: its jobs' ids name it, and a
worker does not start a call whose gateway is gone (killed outright, so nobody would receive the result).

Results arrive twice over: published on the reply channel and stored under ``keys.result(call_id)`` with a TTL.
After a reconnect the dispatcher re-reads the stored results of every pending call, so a result published
while the subscription was down is not lost, and the watcher re-reads them every tick, so a lost message costs
at most one tick. The subscription is pinged: a half-open connection (no error, no data) is noticed within
:data:`SILENCE_LIMIT` seconds, and :attr:`Dispatcher.subscribed` (``/readyz``) is false meanwhile. Enqueueing
retries through a Redis outage until the deadline.

Deadlines are in the Redis server's time (:mod:`shared.clock`), so gateway and worker clocks need not agree.

The enqueue itself is RQ's (so ``rq info`` and RQ's registries keep working), sent in one pipelined round
trip by the async client (see :meth:`Dispatcher._enqueue_commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from rq import Queue
from rq.job import Job as RQJob

from shared import keys
from shared.clock import REFRESH_EVERY, RedisClock
from shared.config import Config
from shared.envelopes import JOB_FUNCTION, FunctionSpec, Job, Result

log = logging.getLogger(__name__)


REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
WATCH_INTERVAL = 0.25
"""Seconds between checks for calls whose worker died."""
REDIS_CONNECTIONS = 100
"""Redis connections one gateway process opens at most (one per command in flight; pub/sub holds one)."""
MAX_RETRIES = 2
"""Extra runs of an idempotent call whose workers keep dying."""
ALIVE_TTL = 5
"""Seconds this process's liveness key outlives its last refresh: how long after a SIGKILL workers stop starting its
calls. Long enough to ride out a stalled event loop or a slow Redis, short next to calls' deadlines."""
ALIVE_EVERY = 1.0
"""Seconds between refreshes of the liveness key."""
UNCLAIMED_LOOK_AFTER = 1.0
"""Seconds a call may stay unclaimed after its enqueue before the watcher looks for it in its queue (a call is
normally claimed within milliseconds of leaving the queue; the look costs an ``LPOS`` per call)."""
UNCLAIMED_LOOKS = 64
"""Most unclaimed calls looked for in their queues per watcher tick: under a backlog every queued call is
unclaimed, and an ``LPOS`` for a job no longer queued scans the whole queue. A random sample each tick keeps the
cost bounded while every call still gets looked at, on average, within a few ticks."""
DEQUEUED_GRACE = 0.5
"""Seconds a call must be seen out of its queue and still unclaimed before it is queued again: its worker took it
and died before claiming it. Rerunning is safe even when a slow worker still claims it: all attempts share the
claim key, so at most one runs."""
COMMAND_TIMEOUT = 5.0
"""Seconds a Redis command may wait for its reply before its connection counts as dead (a half-open socket
would otherwise hold a command until the call's deadline, and a readiness check forever)."""
HEALTH_CHECK_INTERVAL = 30
"""Seconds a pooled connection may sit idle before it is PINGed ahead of its next command."""
LISTEN_TICK = 0.5
"""Longest wait (s) for a pub/sub message before the listener looks at the subscription's liveness."""
PING_EVERY = 1.0
"""Seconds between PINGs on the subscription connection (its PONG proves the connection still delivers)."""
SILENCE_LIMIT = 3.0
"""Seconds without anything (a PONG, a message) on the subscription after which it counts as lost: it is
reopened, and pending calls' stored results re-read."""


@dataclass
class _Pending:
    """A call this gateway process waits for."""

    job: Job
    spec: FunctionSpec
    future: asyncio.Future[Result]
    enqueued: bool = False
    attempts: int = 0
    job_attempt: int = 0
    """The attempt number in the id of the call's latest RQ job (``keys.job_id``): raised by every re-enqueue,
    whatever its reason, so no two of a call's jobs share an id."""
    queued_at: float = 0.0
    """``time.monotonic()`` of the latest enqueue."""
    dequeued_at: float | None = None
    """When the watcher first saw the latest job out of its queue with the call unclaimed."""


class Dispatcher:
    def __init__(
        self,
        config: Config,
        gateway_id: str | None = None,
        *,
        async_redis: aioredis.Redis | None = None,
        sync_redis: redis.Redis | None = None,
    ) -> None:
        """The two Redis clients can be injected (tests use fakeredis); by default both come from REDIS_URL."""
        self.config = config
        self.gateway_id = gateway_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.channel = keys.reply_channel(self.gateway_id)
        self.gateway_ref = keys.gateway_ref(self.gateway_id)
        self._alive_key = keys.gateway_alive(self.gateway_ref)
        self.redis = async_redis or aioredis.Redis(connection_pool=_redis_pool(config.redis_url))
        self._sync = sync_redis or redis.Redis.from_url(config.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self._queues: dict[str, Queue] = {}
        self._waiters: dict[str, _Pending] = {}
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._clock_keeper: asyncio.Task[None] | None = None
        self.clock = RedisClock()
        """The Redis server's clock, in which job deadlines are written."""
        self._heard = 0.0
        """time.monotonic() when the subscription last delivered anything."""
        self._ttl_warned: set[str] = set()
        # Remove a cancelled job from its queue, and its hash, only if no worker took it yet: nothing is left
        # behind (RQ's job.cancel() kept every one in the canceled registry), and a job a worker already took
        # is left to it (the cancel marker makes it skip the call).
        self._drop_queued_job = self.redis.register_script(
            "if redis.call('lrem', KEYS[1], 0, ARGV[1]) > 0 then return redis.call('del', KEYS[2]) end return 0"
        )
        # Delete the claim only if the dead worker still holds it, atomically.
        self._release_claim = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
        )
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening. Returns at once: calls wait for the subscription themselves (Redis may be down)."""
        self._listener = asyncio.create_task(self._listen(), name="dispatcher-listener")
        self._watcher = asyncio.create_task(self._watch_workers(), name="dispatcher-watcher")
        self._keepalive = asyncio.create_task(self._keep_alive(), name="dispatcher-keepalive")
        self._clock_keeper = asyncio.create_task(self._keep_clock(), name="dispatcher-clock")

    async def stop(self) -> None:
        for task in (self._listener, self._watcher, self._keepalive, self._clock_keeper):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # Calls still queued are nobody's now: workers skip them rather than run them.
        with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
            async with asyncio.timeout(1):
                await self.redis.delete(self._alive_key)
        if self._background:
            await asyncio.wait(self._background, timeout=2)
        await self.redis.aclose(close_connection_pool=True)
        self._sync.close()

    @property
    def subscribed(self) -> bool:
        """True while the subscription is confirmed and has shown life within :data:`SILENCE_LIMIT` seconds (a
        half-open connection keeps "subscribed" yet delivers nothing)."""
        return self._subscribed.is_set() and time.monotonic() - self._heard <= SILENCE_LIMIT

    @property
    def pending(self) -> int:
        return len(self._waiters)

    # --- calls --------------------------------------------------------------------------------------------

    async def call(
        self, call_id: str, name: str, arguments: str, spec: FunctionSpec, session_id: str = "", principal: str = ""
    ) -> Result:
        """Run one call on a worker and return its result, or an error result at the deadline.

        Never raises for backend trouble (Redis down, worker dead, bad arguments): every outcome is a
        :class:`Result` the caller can send upstream. Cancelling the awaiting task cancels the job.
        """
        existing = self._waiters.get(call_id)
        if existing is not None:
            # The same call requested twice in this process: one job, both callers get its result.
            return await self._join(existing, spec)
        job = Job(
            call_id=call_id,
            name=name,
            arguments=arguments,
            reply_channel=self.channel,
            deadline=self.clock.now() + spec.timeout,  # Redis time: the worker's clock may disagree with ours
            session_id=session_id,
            principal=principal,
            enqueued_at=time.time(),
        )
        pending = _Pending(job, spec, asyncio.get_running_loop().create_future())
        self._waiters[call_id] = pending
        if spec.timeout > self.config.result_ttl and name not in self._ttl_warned:
            # A worker with a longer RESULT_TTL advertises this: our cancel markers outlive the deadline anyway.
            self._ttl_warned.add(name)
            log.warning("%s's timeout (%g s) exceeds RESULT_TTL (%d s)", name, spec.timeout, self.config.result_ttl)
        try:
            async with asyncio.timeout(spec.timeout):
                await self._subscribed.wait()
                await self._enqueue(job, spec)
                pending.enqueued, pending.queued_at = True, time.monotonic()
                return await asyncio.shield(pending.future)
        except TimeoutError:
            if pending.future.done():
                return pending.future.result()
            stored = await self._stored_result(call_id)
            if stored is None:
                self._cancel_in_background(pending)
                stored = Result.failure(call_id, f"{name} did not finish within {spec.timeout:g} s.")
            if not pending.future.done():
                pending.future.set_result(stored)  # callers that joined this call get the same answer now
            return stored
        except asyncio.CancelledError:
            self._cancel_in_background(pending)
            pending.future.cancel()
            raise
        finally:
            self._waiters.pop(call_id, None)

    async def _join(self, existing: _Pending, spec: FunctionSpec) -> Result:
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
        stored = await self._stored_result(call_id)
        if stored is not None:
            return stored
        if future.cancelled():
            return Result.failure(call_id, f"{name} was cancelled before it finished.")
        return Result.failure(call_id, f"{name} did not finish within {spec.timeout:g} s.")

    async def _enqueue(self, job: Job, spec: FunctionSpec, attempt: int = 0) -> None:
        """Push the job onto its RQ queue, retrying through Redis outages (the caller's deadline bounds it)."""
        delay = 0.05
        while True:
            try:
                queue = await self._queue(spec.queue)
                async with self.redis.pipeline(transaction=True) as pipe:
                    for args, options in self._enqueue_commands(queue, job, spec, attempt):
                        pipe.execute_command(*args, **options)
                    # The liveness key too, in the same round trip: a worker must not find the job before it
                    # (a Redis that restarted empty, or the first call before the first refresh).
                    pipe.set(self._alive_key, "1", ex=ALIVE_TTL)
                    await pipe.execute()
                return
            except REDIS_ERRORS as exc:
                log.warning("enqueue of %s failed (%s); retrying", job.call_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _enqueue_commands(self, queue: Queue, job: Job, spec: FunctionSpec, attempt: int) -> list[tuple]:
        """The commands RQ's own enqueue sends, without sending them.

        RQ is synchronous; running it on a thread cost a hand-off per call and contended for the GIL. Given a
        pipeline, RQ only queues commands on it (the one read it makes, the server version, is answered in
        advance by :meth:`_queue`), so it runs here on the event loop and the async client sends what it
        queued: what lands in Redis is exactly RQ's enqueue, in one round trip.
        """
        seconds = max(1, math.ceil(spec.timeout))
        pipe = self._sync.pipeline()
        queue.enqueue_call(
            JOB_FUNCTION,
            args=(job.to_json(),),
            job_id=keys.job_id(job.call_id, attempt, self.gateway_ref),
            timeout=seconds,  # RQ kills the function here, freeing the worker (1 s granularity)
            ttl=seconds + 1,  # a job still queued after its deadline is useless
            result_ttl=self.config.result_ttl,
            failure_ttl=self.config.result_ttl,
            description=f"{job.name} ({job.call_id})",
            pipeline=pipe,
        )
        return [(command[0], command[1]) for command in pipe.command_stack]

    async def _queue(self, name: str) -> Queue:
        """The RQ queue ``name``, its Redis server version read once (asynchronously) and cached."""
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(keys.queue_name(name), connection=self._sync)
            try:
                version = str((await self.redis.info("server"))["redis_version"])
                parts = [int(part) for part in version.split(".")[:3]]
                queue.redis_server_version = (*parts, 0, 0, 0)[:3]  # type: ignore[assignment]
            except redis.ResponseError:  # a server without INFO (fakeredis): RQ assumes 5.0.9 too
                queue.redis_server_version = (5, 0, 9)
            self._queues[name] = queue
        return queue

    def _cancel_in_background(self, pending: _Pending) -> None:
        task = asyncio.create_task(self._cancel(pending))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, pending: _Pending) -> None:
        """Mark the call cancelled (a worker that takes it skips it) and delete its RQ job if still queued."""
        call_id = pending.job.call_id
        job_id = keys.job_id(call_id, pending.job_attempt, self.gateway_ref)
        # The marker must outlive the job's own TTL (deadline + 1 s) even if RESULT_TTL is shorter.
        ttl = max(self.config.result_ttl, math.ceil(pending.spec.timeout) + 1)
        try:
            await self.redis.set(keys.cancelled(call_id), "1", ex=ttl)
            queue_key = Queue.redis_queue_namespace_prefix + keys.queue_name(pending.spec.queue)
            await self._drop_queued_job(keys=[queue_key, RQJob.redis_job_namespace_prefix + job_id], args=[job_id])
        except REDIS_ERRORS as exc:
            log.info("could not cancel %s (%s); the worker will skip it past its deadline", call_id, exc)

    async def _stored_result(self, call_id: str) -> Result | None:
        try:
            async with asyncio.timeout(0.5):
                raw = await self.redis.get(keys.result(call_id))
        except (*REDIS_ERRORS, TimeoutError):
            return None
        return _parse_result(raw) if raw else None

    async def _keep_alive(self) -> None:
        """Refresh this process's liveness key every :data:`ALIVE_EVERY` seconds while it runs.

        One key per process, not per call: no round trip is added to any call. Redis trouble is waited out;
        if the key expires meanwhile, calls taken in that gap are skipped and the watcher queues them again.
        """
        while True:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(ALIVE_TTL):
                    await self.redis.set(self._alive_key, "1", ex=ALIVE_TTL)
            await asyncio.sleep(ALIVE_EVERY)

    # --- results ------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Hold the subscription; after every (re)connect, re-read stored results of pending calls.

        A connection can go half-open (a NAT or load balancer forgets it, a peer vanishes without a FIN): no
        error, no data, and reading would wait forever while every call waits for its deadline. So the listener
        reads with a timeout, PINGs the subscription every :data:`PING_EVERY` seconds and gives it up after
        :data:`SILENCE_LIMIT` seconds without a PONG or a message (the confirmation of a new subscription
        included).
        """
        delay = 0.05
        while True:
            pubsub = self.redis.pubsub()
            silent = False
            try:
                await pubsub.subscribe(self.channel)
                self._heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_TICK)
                    now = time.monotonic()
                    if message is not None:
                        self._heard = now
                        if message["type"] == "message":
                            self._deliver(_parse_result(message["data"]))
                        elif message["type"] == "subscribe":
                            self._subscribed.set()
                            delay = 0.05
                            log.info("subscribed to %s", self.channel)
                            await self._reread_pending()
                    if now - self._heard > SILENCE_LIMIT:
                        silent = True
                        raise redis.TimeoutError(f"nothing on the subscription for {SILENCE_LIMIT:g} s")
                    if now - pinged >= PING_EVERY:
                        await pubsub.ping()
                        pinged = now
            except REDIS_ERRORS as exc:
                if self._subscribed.is_set():
                    log.warning("lost the result subscription (%s: %s); reconnecting", type(exc).__name__, exc)
                self._subscribed.clear()
                if silent:
                    # The path to Redis went quiet: idle pooled connections are likely half-open too, and each
                    # would hold a command for COMMAND_TIMEOUT. Open new ones instead.
                    with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                        async with asyncio.timeout(1):
                            await self.redis.connection_pool.disconnect(inuse_connections=False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                self._subscribed.clear()
                # Bounded: closing a half-open connection must not hold up the reconnect.
                with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                    async with asyncio.timeout(1):
                        await pubsub.aclose()

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

    async def _reread_pending(self, call_ids: list[str] | None = None) -> None:
        """Deliver the stored results of ``call_ids`` (default: every pending call), in one ``MGET``."""
        call_ids = list(self._waiters) if call_ids is None else call_ids
        if not call_ids:
            return
        stored = await self.redis.mget([keys.result(c) for c in call_ids])
        for raw in stored:
            if raw:
                self._deliver(_parse_result(raw))

    def _deliver(self, result: Result | None) -> None:
        if result is None:
            return
        pending = self._waiters.get(result.call_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(result)

    # --- dead workers -------------------------------------------------------------------------------------

    async def _watch_workers(self) -> None:
        """Notice a call whose worker died, without waiting for the deadline.

        A worker claims a call (``keys.claim``) before running it and keeps its catalog key alive while it
        lives; the supervisor deletes that key as soon as a worker process dies. A claimed call whose worker
        has no catalog key is lost: an idempotent function is run again on another worker, any other is
        answered with an error at once (running it twice could, say, place an order twice).
        """
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            watched = [p for p in self._waiters.values() if p.enqueued and not p.future.done()]
            if not watched:
                continue
            try:
                # A result whose pub/sub message was lost (a half-open subscription) is answered within a tick.
                await self._reread_pending([p.job.call_id for p in watched])
                watched = [p for p in watched if not p.future.done()]
                if not watched:
                    continue
                claims = await self.redis.mget([keys.claim(p.job.call_id) for p in watched])
                await self._requeue_taken_unclaimed([p for p, c in zip(watched, claims, strict=True) if not c])
                owners = sorted({c.decode() for c in claims if c})
                if not owners:
                    continue
                async with self.redis.pipeline(transaction=False) as pipe:
                    for owner in owners:
                        pipe.exists(keys.catalog(owner))
                    alive = {owner for owner, live in zip(owners, await pipe.execute(), strict=True) if live}
                for pending, claim in zip(watched, claims, strict=True):
                    if claim and claim.decode() not in alive:
                        await self._worker_lost(pending, claim.decode())
            except REDIS_ERRORS:
                continue  # Redis trouble: the deadline still answers every call

    async def _worker_lost(self, pending: _Pending, worker_id: str) -> None:
        job, spec = pending.job, pending.spec
        stored = await self._stored_result(job.call_id)
        if stored is not None:
            self._deliver(stored)
        elif spec.idempotent and pending.attempts < MAX_RETRIES:
            if await self._release_claim(keys=[keys.claim(job.call_id)], args=[worker_id]):
                pending.attempts += 1
                log.warning("call %s: worker %s died; running %s again (idempotent)", job.call_id, worker_id, job.name)
                await self._requeue(pending)
        else:
            log.warning("call %s: worker %s died running %s; not retried", job.call_id, worker_id, job.name)
            reason = "it is not marked idempotent" if not spec.idempotent else f"it failed {MAX_RETRIES + 1} times"
            self._deliver(
                Result.failure(
                    job.call_id,
                    f"{job.name} was interrupted: the worker running it stopped. "
                    f"It was not run again because {reason}.",
                    worker_id=worker_id,
                )
            )

    async def _requeue_taken_unclaimed(self, unclaimed: list[_Pending]) -> None:
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
        async with self.redis.pipeline(transaction=False) as pipe:
            for pending in looked:
                job_id = keys.job_id(pending.job.call_id, pending.job_attempt, self.gateway_ref)
                pipe.lpos((await self._queue(pending.spec.queue)).key, job_id)
                pipe.exists(RQJob.key_for(job_id))
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
                await self._requeue(pending)

    async def _requeue(self, pending: _Pending) -> None:
        """Enqueue the call again under its next attempt's job id (the claim key stays the call's)."""
        pending.job_attempt += 1
        pending.dequeued_at = None
        await self._enqueue(pending.job, pending.spec, attempt=pending.job_attempt)
        pending.queued_at = time.monotonic()


def _redis_pool(url: str) -> aioredis.BlockingConnectionPool:
    """The gateway's Redis connections: a blocking pool, with commands packed by hiredis.

    Blocking: past :data:`REDIS_CONNECTIONS` concurrent commands a caller waits for a connection (its call's
    deadline bounds the wait). redis-py's default pool fails at once instead, and under overload every call's
    enqueue then retried in a loop: a storm of errors that only added load (make bench, 800 calls/s).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=None,
        socket_connect_timeout=2,
        socket_timeout=COMMAND_TIMEOUT,  # the pub/sub listener reads with its own, shorter timeout
        health_check_interval=HEALTH_CHECK_INTERVAL,
        socket_keepalive=True,
        # One immediate retry: after a Redis restart every pooled connection is dead, and without it the first
        # command on each failed (a session starting then got no backend functions: tests/faults).
        retry=Retry(NoBackoff(), 1),
    )
    base = pool.connection_class  # plain, TLS or Unix socket, as the URL says
    pool.connection_class = type(f"CPacking{base.__name__}", (CPacking, base), {})
    return pool


class CPacking(aioredis.Connection):
    """Mixed into the pool's connection class: redis-py's asyncio connections pack commands in Python (43 µs for
    an RQ enqueue here), its synchronous ones with hiredis when installed; this packs with hiredis (6 µs)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CLIENT SETINFO": the server wants separate words
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type Redis cannot take: redis-py's own packer says which, as a DataError
            return super().pack_command(*args)


def _parse_result(raw: bytes | str) -> Result | None:
    try:
        return Result.from_json(raw)
    except ValidationError:
        log.warning("ignoring an unreadable result on the reply channel")
        return None
