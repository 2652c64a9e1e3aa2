"""The RQ worker class that runs calls: RQ's job lifecycle, with the caller's answer first.

RQ runs a job in ~13 Redis round trips and the caller waits for all of them (``python -m
benchmarks.roundtrips`` lists them). :class:`CallWorker` keeps RQ's keys, values and job lifecycle (``rq
info``, the registries, ``Job.fetch(id).return_value()`` all keep working) but orders and groups the writes
so that, after the dequeue (``BLMOVE``), the caller waits for two round trips:

1. fetch: the job hash (``HGETALL``) and our claim of the call (a Lua script), in one pipeline. The claim
   keys, and the liveness key of the gateway that enqueued the call, derive from the job id
   (:func:`shared.keys.claim_of_job`, :func:`shared.keys.gateway_alive_of_job`), so they need not wait for the
   job's data.
2. the function runs; its result is stored and published: the caller has its answer.
3. RQ's records, in one transaction: the start (execution record, worker busy, job started, ``PERSIST``) and
   the success (job finished, result stream, finished registry, worker counters, execution removed, worker
   idle), writing the fields that changed rather than the whole job hash again. A call still running after
   :data:`START_AFTER` has its start written then, by the worker's :class:`_StartWriter` thread, so ``rq info``
   shows it running; either way the start is dated when the call began.

Only the gateway's jobs (:data:`~shared.envelopes.JOB_FUNCTION`) take this path; any other job goes through
RQ's own. RQ's success path also watches the job's dependents key to enqueue dependent jobs: a call never has
dependents (the gateway enqueues none), so that round trip is left out. Heartbeats and the check for ``rq
suspend`` happen at most once a second instead of once per job.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime
from typing import Any, ClassVar

import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from shared import keys
from shared.config import get_config
from shared.envelopes import JOB_FUNCTION, Job
from workers.execute import claim, decode_call, is_late, run_claimed

START_AFTER = 0.01
"""Seconds a call runs before its RQ start records are written on their own (see :class:`_StartWriter`)."""
START_TICK = 0.005
"""Seconds between the start writer's looks at the running call."""
SUSPENSION_CHECK_EVERY = 1.0
"""Seconds between checks for ``rq suspend``."""
HEARTBEAT_EVERY = 1.0
"""Seconds between a worker's own heartbeats; RQ lets the worker key live ``worker_ttl + 60`` s (8 minutes)."""
TEST_PAUSE_ENV = "VFG_TEST_PAUSE_BEFORE_CLAIM"
"""Test-only (tests/faults): seconds a worker sleeps between taking a job from its queue and claiming it, so a
test can kill it in that window. Never set it in production."""

log = logging.getLogger(__name__)


class ClaimingJob(RQJob):
    """An RQ job that claims its call in the round trip that fetches it (step 1 above).

    :meth:`CallWorker.__init__` makes a subclass naming the worker (``claimant``), since RQ's dequeue creates
    jobs through a class method. ``claimed`` is the claim's outcome (:data:`workers.execute.CLAIMED`,
    ``TAKEN``, ``CANCELLED`` or ``ORPHANED``), or None for a job that is not a call.
    """

    claimant: ClassVar[str] = ""
    claim_ttl: ClassVar[int] = 300
    pause_before_claim: ClassVar[float] = 0.0
    """Test-only: see :data:`TEST_PAUSE_ENV`."""
    claimed: int | None = None

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> RQJob:
        claim_key, cancelled_key = keys.claim_of_job(id), keys.cancelled_of_job(id)
        if not cls.claimant or connection is None or claim_key is None or cancelled_key is None:
            return super().fetch(id, connection=connection, serializer=serializer)
        if cls.pause_before_claim:
            log.warning("test-only pause of %g s before claiming %s", cls.pause_before_claim, id)
            time.sleep(cls.pause_before_claim)
        job = cls(id, connection=connection, serializer=serializer)
        with connection.pipeline(transaction=False) as pipe:
            pipe.hgetall(job.key)
            claim(pipe, cancelled_key, claim_key, cls.claimant, cls.claim_ttl, keys.gateway_alive_of_job(id))
            data, claimed = pipe.execute()
        if not data:
            raise NoSuchJobError(f"No such job: {job.key}")
        job.restore(data)
        job.claimed = int(claimed)
        return job


class _Start:
    """One call's RQ start records, dated when the call began (:attr:`started`): written by the worker with
    its success records once the call is done, or by its :class:`_StartWriter` if the call is still running
    :data:`START_AFTER` later (so ``rq info`` and RQ's registries show a long call as running)."""

    def __init__(self, job: RQJob, queue: Queue) -> None:
        self.job, self.queue = job, queue
        self.started = now()
        self.began = time.monotonic()
        self.written = threading.Event()
        self.error: BaseException | None = None

    def wait(self) -> None:
        """For records the writer took: wait until they are in Redis (raising what writing them raised)."""
        self.written.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class _StartWriter(threading.Thread):
    """Writes the start records of the worker's call once it has run :data:`START_AFTER`.

    One thread per worker, looking every :data:`START_TICK` whatever runs: cheaper than a timer per call (a
    thread each, which cost more CPU than the records). It waits for Redis's replies itself, so the worker's
    thread goes on running the call meanwhile.
    """

    def __init__(self, worker: CallWorker) -> None:
        super().__init__(name="rq-start-writer", daemon=True)
        self.worker = worker
        self._lock = threading.Lock()
        self._armed: _Start | None = None
        self._stopped = threading.Event()

    def arm(self, job: RQJob, queue: Queue) -> _Start:
        start = _Start(job, queue)
        with self._lock:
            self._armed = start
        return start

    def take(self, start: _Start) -> bool:
        """True when ``start``'s records are not written yet: the caller writes them with its own. False when this
        thread took them: ``start.wait()`` for them."""
        with self._lock:
            if self._armed is start:
                self._armed = None
                return True
        return False

    def run(self) -> None:
        while not self._stopped.wait(START_TICK):
            with self._lock:
                start = self._armed
                if start is None or time.monotonic() - start.began < START_AFTER:
                    continue
                self._armed = None
            try:
                with self.worker.connection.pipeline() as pipe:
                    self.worker._start_commands(start.job, start.queue, start.started, pipe)
                    pipe.execute()
            except BaseException as exc:  # handed to the worker's thread by start.wait()
                start.error = exc
            finally:
                start.written.set()

    def stop(self) -> None:
        self._stopped.set()


class CallWorker(SimpleWorker):
    """``rq.SimpleWorker`` that answers a call before doing RQ's bookkeeping, in fewer Redis round trips."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_class = type(
            "ClaimingJob",
            (ClaimingJob,),
            {"claimant": self.name, "claim_ttl": get_config().result_ttl, "pause_before_claim": _test_pause()},
        )

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        call = _call_of(job)
        claimed = getattr(job, "claimed", None)
        if call is None or claimed is None:
            super().execute_job(job, queue)
            return
        start = self._start_writer().arm(job, queue)
        self.procline(f"Processing {call.name} ({call.call_id}) from {job.origin} since {time.time()}")
        try:
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                if is_late(call):
                    outcome = "skipped"
                else:
                    outcome = run_claimed(call, claimed, self.connection, self.name, get_config().result_ttl)
            job.ended_at = now()
            job._result = outcome
            job._status = JobStatus.FINISHED
            with self.connection.pipeline() as pipe:
                if self._start_writer().take(start):
                    self._start_commands(job, queue, start.started, pipe)
                else:
                    start.wait()
                self._finish_commands(job, pipe)
                pipe.execute()
        except BaseException:  # RQ's perform_job treats anything, even SystemExit, as the job failing
            try:
                if self._start_writer().take(start):  # RQ's failure path expects the job started
                    with self.connection.pipeline() as pipe:
                        self._start_commands(job, queue, start.started, pipe)
                        pipe.execute()
                else:
                    start.wait()
            finally:
                self._fail(job, queue)

    def _start_writer(self) -> _StartWriter:
        writer: _StartWriter | None = getattr(self, "_writer", None)
        if writer is None:
            writer = self._writer = _StartWriter(self)
            writer.start()
        return writer

    def teardown(self) -> None:
        writer: _StartWriter | None = getattr(self, "_writer", None)
        if writer is not None:
            writer.stop()
        super().teardown()

    def _start_commands(self, job: RQJob, queue: Queue, started: datetime, pipe: Pipeline) -> None:
        """RQ's ``prepare_execution`` and ``prepare_job_execution`` plus ``Job.perform``'s ``PERSIST``, with the
        job and its execution dated ``started`` (when the call began, which may be before these are written)."""
        heartbeat_ttl = self.get_heartbeat_ttl(job)
        # Execution.create, dated `started`.
        execution = Execution(id=uuid.uuid4().hex, job_id=job.id, connection=job.connection, worker_name=self.name)
        execution.created_at = execution.last_heartbeat = started
        execution.save(ttl=heartbeat_ttl, pipeline=pipe)
        ExecutionRegistry(job_id=job.id, connection=pipe).add(execution=execution, ttl=heartbeat_ttl, pipeline=pipe)
        job.started_job_registry.add_execution(execution, pipeline=pipe, ttl=heartbeat_ttl, xx=False)
        self.execution = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self.set_current_job_id(job.id, pipeline=pipe)
        self.set_current_job_working_time(0, pipeline=pipe)
        self.heartbeat(heartbeat_ttl, pipeline=pipe)
        # Job.heartbeat and Job.prepare_for_execution, dated `started`.
        job.worker_name = self.name
        job.last_heartbeat = job.started_at = started
        job._status = JobStatus.STARTED
        stamp = utcformat(started)
        pipe.hset(
            job.key,
            mapping={
                "last_heartbeat": stamp,
                "status": JobStatus.STARTED,
                "started_at": stamp,
                "worker_name": self.name,
            },
        )
        if len(self.queues) == 1:  # as RQ: with one queue, the job waits in its intermediate queue until now
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.persist(job.key)

    def _finish_commands(self, job: RQJob, pipe: Pipeline) -> None:
        """RQ's ``handle_job_success`` for a job without dependents."""
        assert job.started_at is not None and job.ended_at is not None
        self.increment_successful_job_count(pipeline=pipe)
        self.increment_total_working_time(job.ended_at - job.started_at, pipe)
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl != 0:
            # RQ's Job._handle_success, except that it rewrites the whole job hash (job.save()): only these
            # two fields changed since the job started, and serialising the rest cost more than the rest.
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED, "ended_at": utcformat(job.ended_at)})
            execution = self.execution
            Result.create(
                job,
                Result.Type.SUCCESSFUL,
                return_value=job._result,
                ttl=result_ttl,
                worker_name=self.name,
                pipeline=pipe,
                execution_id=execution.id if execution else None,
                execution_started_at=execution.created_at if execution else None,
                execution_ended_at=job.ended_at,
            )
            job.finished_job_registry.add(job, result_ttl, pipe)
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=pipe)
        self.set_state(WorkerStatus.IDLE, pipeline=pipe)

    def _fail(self, job: RQJob, queue: Queue) -> None:
        """RQ's failure path, unchanged (rare: ``run_claimed`` turns every function failure into a result)."""
        job._status = JobStatus.FAILED
        self.handle_execution_ended(job, queue, job.failure_callback_timeout)
        exc_info = sys.exc_info()
        exc_string = "".join(traceback.format_exception(*exc_info))
        self.handle_exception(job, *exc_info)
        registry = queue.started_job_registry
        self.handle_job_failure(job=job, exc_string=exc_string, queue=queue, started_job_registry=registry)
        self.set_state(WorkerStatus.IDLE)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ asks Redis whether ``rq suspend`` was run before every job (a round trip each); here at most once
        a second, so a suspension takes effect within a second."""
        checked = time.monotonic()
        if checked - getattr(self, "_suspension_checked", -SUSPENSION_CHECK_EVERY) < SUSPENSION_CHECK_EVERY:
            return
        self._suspension_checked = checked
        super().check_for_suspension(burst)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """One pipelined round trip at most once a second (RQ: two round trips, three times per job); heartbeats
        RQ sends inside its own pipelines, or with an explicit timeout, are left alone."""
        if pipeline is not None or timeout is not None:
            super().heartbeat(timeout, pipeline)
            return
        last = getattr(self, "last_heartbeat", None)
        if last is not None and (now() - last).total_seconds() < HEARTBEAT_EVERY:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(None, pipe)
            pipe.execute()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)


def _call_of(job: RQJob) -> Job | None:
    """The call envelope of one of the gateway's jobs, or None for any other job (RQ runs those its own way)."""
    if job.func_name != JOB_FUNCTION or job.kwargs or len(job.args) != 1 or not isinstance(job.args[0], str):
        return None
    return decode_call(job.args[0])


def _test_pause() -> float:
    """:data:`TEST_PAUSE_ENV` as seconds (0, the default, when unset or unreadable)."""
    try:
        return max(0.0, float(os.environ.get(TEST_PAUSE_ENV) or 0))
    except ValueError:
        return 0.0
