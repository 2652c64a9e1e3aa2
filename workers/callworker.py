"""The RQ worker class that runs calls: RQ's job lifecycle, with the caller's answer first.

RQ runs a job in ~13 Redis round trips and the caller waits for all of them (``python -m
benchmarks.roundtrips`` lists them). :class:`CallWorker` keeps RQ's keys, values and job lifecycle (``rq
info``, the registries, ``Job.fetch(id).return_value()`` all keep working) but orders and groups the writes
so that, after the dequeue (``BLMOVE``), the caller waits for two round trips:

1. fetch: the job hash (``HGETALL``) and our claim of the call (a Lua script), in one pipeline. The claim
   keys derive from the job id (:func:`shared.keys.claim_of_job`), so they need not wait for the job's data.
2. start: RQ's execution record, worker state, job started, ``PERSIST``: one transaction, written but not
   waited for (:class:`SentTransaction`): Redis applies it before anything this worker sends later.
3. the function runs; its result is stored and published: the caller has its answer.
4. RQ's success bookkeeping (job finished, result stream, finished registry, worker counters, execution
   removed, worker idle) in one transaction, writing the fields that changed rather than the whole job hash.

Only the gateway's jobs (:data:`~shared.envelopes.JOB_FUNCTION`) take this path; any other job goes through
RQ's own. RQ's success path also watches the job's dependents key to enqueue dependent jobs: a call never has
dependents (the gateway enqueues none), so that round trip is left out. Heartbeats and the check for ``rq
suspend`` happen at most once a second instead of once per job.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, ClassVar

import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from shared import keys
from shared.config import get_config
from shared.envelopes import JOB_FUNCTION, Job
from workers.execute import CLAIM_SCRIPT, decode_call, is_late, run_claimed

SUSPENSION_CHECK_EVERY = 1.0
"""Seconds between checks for ``rq suspend``."""
HEARTBEAT_EVERY = 1.0
"""Seconds between a worker's own heartbeats; RQ lets the worker key live ``worker_ttl + 60`` s (8 minutes)."""


class ClaimingJob(RQJob):
    """An RQ job that claims its call in the round trip that fetches it (step 1 above).

    :meth:`CallWorker.__init__` makes a subclass naming the worker (``claimant``), since RQ's dequeue creates
    jobs through a class method. ``claimed`` is the claim's outcome (:data:`workers.execute.CLAIMED`,
    ``TAKEN`` or ``CANCELLED``), or None for a job that is not a call.
    """

    claimant: ClassVar[str] = ""
    claim_ttl: ClassVar[int] = 300
    claimed: int | None = None

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> RQJob:
        claim_key, cancelled_key = keys.claim_of_job(id), keys.cancelled_of_job(id)
        if not cls.claimant or connection is None or claim_key is None or cancelled_key is None:
            return super().fetch(id, connection=connection, serializer=serializer)
        job = cls(id, connection=connection, serializer=serializer)
        with connection.pipeline(transaction=False) as pipe:
            pipe.hgetall(job.key)
            pipe.eval(CLAIM_SCRIPT, 2, cancelled_key, claim_key, cls.claimant, cls.claim_ttl)
            data, claimed = pipe.execute()
        if not data:
            raise NoSuchJobError(f"No such job: {job.key}")
        job.restore(data)
        job.claimed = int(claimed)
        return job


class SentTransaction:
    """A ``MULTI``/``EXEC`` transaction written to Redis now, whose replies are read later (:meth:`wait`).

    The worker runs the function meanwhile. What must follow the transaction (RQ's success bookkeeping) is sent
    only after :meth:`wait`; the result, sent on another connection, may overtake it, which nobody can tell
    from the caller's side. redis-py has no such call, so this writes the commands on a pooled connection
    itself; a connection whose replies were not all read is closed, never reused.
    """

    def __init__(self, client: redis.Redis, pipeline: Pipeline) -> None:
        self._pool = client.connection_pool
        self._connection: Any = self._pool.get_connection()
        commands = [("MULTI",), *(args for args, _options in pipeline.command_stack), ("EXEC",)]
        self._replies = len(commands)
        try:
            self._connection.send_packed_command(self._connection.pack_commands(commands))
        except BaseException:
            self._release(broken=True)
            raise

    def wait(self) -> None:
        """Read the replies (raising a Redis error as ``Pipeline.execute`` would); safe to call twice."""
        if self._connection is None:
            return
        try:
            for _ in range(self._replies):
                reply = self._connection.read_response()
                if isinstance(reply, list):
                    for item in reply:
                        if isinstance(item, redis.ResponseError):
                            raise item
        except BaseException:
            self._release(broken=True)
            raise
        self._release()

    def _release(self, broken: bool = False) -> None:
        if broken:  # replies may be left unread on it
            self._connection.disconnect()
        self._pool.release(self._connection)
        self._connection = None


class CallWorker(SimpleWorker):
    """``rq.SimpleWorker`` that answers a call before doing RQ's bookkeeping, in fewer Redis round trips."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_class = type(
            "ClaimingJob", (ClaimingJob,), {"claimant": self.name, "claim_ttl": get_config().result_ttl}
        )

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        call = _call_of(job)
        claimed = getattr(job, "claimed", None)
        if call is None or claimed is None:
            super().execute_job(job, queue)
            return
        started = self._start(job, queue, call)
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
            started.wait()
            self._finish(job)
        except BaseException:  # RQ's perform_job treats anything, even SystemExit, as the job failing
            try:
                started.wait()
            finally:
                self._fail(job, queue)

    def _start(self, job: RQJob, queue: Queue, call: Job) -> SentTransaction:
        """RQ's ``prepare_execution`` and ``prepare_job_execution`` plus ``Job.perform``'s ``PERSIST``, in one
        transaction that is sent but not waited for."""
        pipe = self.connection.pipeline()
        heartbeat_ttl = self.get_heartbeat_ttl(job)
        self.execution = Execution.create(job, heartbeat_ttl, pipeline=pipe, worker_name=self.name)
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self.set_current_job_id(job.id, pipeline=pipe)
        self.set_current_job_working_time(0, pipeline=pipe)
        self.heartbeat(heartbeat_ttl, pipeline=pipe)
        job.heartbeat(now(), heartbeat_ttl, pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)
        if len(self.queues) == 1:  # as RQ: with one queue, the job waits in its intermediate queue until now
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.persist(job.key)
        sent = SentTransaction(self.connection, pipe)
        self.procline(f"Processing {call.name} ({call.call_id}) from {job.origin} since {time.time()}")
        return sent

    def _finish(self, job: RQJob) -> None:
        """RQ's ``handle_job_success`` for a job without dependents, in one transaction."""
        assert job.started_at is not None and job.ended_at is not None
        with self.connection.pipeline() as pipe:
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
            pipe.execute()

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
