"""The gateway's side of the RQ seam: every use of RQ's internals by the gateway is here.

The gateway enqueues with RQ's own ``Queue.enqueue_call`` (so ``rq info``, RQ's registries and RQ's own
workers keep working) but never lets RQ send anything: RQ is synchronous, and running it on a thread cost a
hand-off per call and contended for the GIL. Given a pipeline, RQ only queues commands on it; this module reads
them back (``Pipeline.command_stack``) for the async client to send in one round trip. That relies on two
things RQ does not promise, checked by ``tests/unit/test_rq_seam.py`` for the pinned RQ version:

- the one read RQ's enqueue makes, the server version, is answered in advance (``Queue.redis_server_version``,
  read once asynchronously and cached here);
- the queue's serializer may be None (RQ's default, resolved per job without its costly Protocol check);
- the key layout of queues and jobs (``Queue.redis_queue_namespace_prefix``, ``CallJob.key_for``), which the
  gateway's cancel script and dead-worker watchdog address directly.
"""

from __future__ import annotations

import math
from typing import Any

import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import Job as RQJob

from shared import keys
from shared.envelopes import JOB_FUNCTION, CallJob, FunctionSpec

FAKE_SERVER_VERSION = (5, 0, 9)
"""What RQ assumes of a server without ``INFO`` (fakeredis)."""


class RQEnqueue:
    """RQ's enqueue as a list of commands, one cached :class:`rq.Queue` per queue name."""

    def __init__(self, sync_redis: redis.Redis, result_ttl: int) -> None:
        """``sync_redis`` is never used for I/O: RQ queues its commands on a pipeline of it."""
        self._sync = sync_redis
        self._result_ttl = result_ttl
        self._queues: dict[str, Queue] = {}

    async def queue(self, name: str, async_redis: aioredis.Redis) -> Queue:
        """The RQ queue ``name``, its Redis server version read once (asynchronously) and cached."""
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(keys.queue_name(name), connection=self._sync)
            try:
                version = str((await async_redis.info("server"))["redis_version"])
                parts = [int(part) for part in version.split(".")[:3]]
                queue.redis_server_version = (*parts, 0, 0, 0)[:3]  # type: ignore[assignment]
            except redis.ResponseError:  # a server without INFO (fakeredis): RQ assumes 5.0.9 too
                queue.redis_server_version = FAKE_SERVER_VERSION  # type: ignore[assignment]
            # RQ resolves a job's serializer anew for every job, with an isinstance check against a runtime
            # Protocol: a fifth of the enqueue's CPU. None resolves to the same default (pickle) at once.
            queue.serializer = None  # type: ignore[assignment]
            self._queues[name] = queue
        return queue

    def commands(self, queue: Queue, job: CallJob, spec: FunctionSpec, job_id: str) -> list[tuple[Any, ...]]:
        """The commands RQ's own enqueue of ``job`` sends, without sending them: each one's arguments, for
        :func:`gateway.redis_pool.transaction`. The job names :data:`JOB_FUNCTION` by its path."""
        seconds = max(1, math.ceil(spec.timeout))
        pipe = self._sync.pipeline()
        queue.enqueue_call(
            JOB_FUNCTION,
            args=(job.to_json(),),
            job_id=job_id,
            timeout=seconds,  # RQ kills the function here, freeing the worker (1 s granularity)
            ttl=seconds + 1,  # a job still queued after its deadline is useless
            result_ttl=self._result_ttl,
            failure_ttl=self._result_ttl,
            description=f"{job.name} ({job.call_id})",
            pipeline=pipe,
        )
        return [command[0] for command in pipe.command_stack]


def queue_key(queue: str) -> str:
    """The Redis list of RQ queue ``queue`` (one of ours, named as in FunctionSpec.queue)."""
    return Queue.redis_queue_namespace_prefix + keys.queue_name(queue)


def job_key(job_id: str) -> str:
    """The Redis hash of RQ job ``job_id``."""
    return RQJob.key_for(job_id)
