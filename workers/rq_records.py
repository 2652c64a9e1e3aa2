"""The workers' side of the RQ seam: every use of RQ's internals by the workers is here.

:class:`workers.callworker.CallWorker` answers a call before RQ's bookkeeping, then writes RQ's records itself,
in fewer round trips than RQ would. For ``rq info``, RQ's registries and ``Job.fetch(id).return_value()`` to
keep working, those records must be the ones RQ's own worker writes, so this module re-implements parts of RQ
that RQ does not promise to keep: the job fetch its dequeue calls (:class:`ClaimingJob`), RQ's start and
success records (``prepare_execution``, ``prepare_job_execution``, ``Job.perform``'s ``PERSIST``,
``handle_job_success``), the job's private ``_status`` and ``_result``, RQ's current-job stack
(``get_current_job``), the worker's private ``_state``, and the names ``rq.job`` and others import from RQ's
utilities (:func:`install_shortcuts`).

``tests/unit/test_rq_seam.py`` compares what RQ's ``SimpleWorker`` and ``CallWorker`` leave in Redis, key by key
and field by field; ``pyproject.toml`` pins RQ to the minor version that test covers. docs/ARCHITECTURE.md
("Moving to a new RQ version") says what to do when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

import redis
import rq.job
import rq.queue
import rq.registry
import rq.results
import rq.utils
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq import serializers as rq_serializers
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job as RQJob
from rq.job import JobStatus, _job_stack
from rq.results import Result
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from shared import keys
from workers.execute import claim

SUSPENSION_CHECK_EVERY = 1.0
"""Seconds between checks for ``rq suspend``."""
HEARTBEAT_EVERY = 1.0
"""Seconds between a worker's own heartbeats; RQ lets the worker key live ``worker_ttl + 60`` s (8 minutes)."""

log = logging.getLogger(__name__)


_resolved: dict[Any, Any] = {}


def _resolve_serializer(serializer: Any = None) -> Any:
    try:
        return _resolved[serializer]
    except (KeyError, TypeError):  # TypeError: an unhashable serializer object, resolved every time
        resolved = rq_serializers.resolve_serializer(serializer)
    with contextlib.suppress(TypeError):
        _resolved[serializer] = resolved
    return resolved


def _str_to_date(date_str: bytes | str) -> datetime:
    text = date_str.decode() if isinstance(date_str, bytes) else date_str
    if text.endswith("Z"):  # the form RQ writes; anything else is left to RQ's own parser
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    return rq.utils.str_to_date(date_str)


def install_shortcuts() -> None:
    """Make RQ's per-job Python work cheaper in this process, with the same results.

    - RQ resolves a serializer for every queue, job, registry and result object it makes (about ten per
      call), with an ``isinstance`` check against a runtime ``Protocol`` that is slow before Python 3.12: a
      tenth of a worker's CPU per no-op call. The answer for a given serializer never changes, so it is
      remembered.
    - ``Job.restore`` parses the job's dates with ``strptime`` (locale lookups, a regular expression);
      ``datetime.fromisoformat`` reads the format RQ writes (``...T09:15:23.123456Z``) to the same value.
    """
    for module in (rq.job, rq.queue, rq.registry, rq.results):
        module.resolve_serializer = _resolve_serializer  # type: ignore[attr-defined]
    rq.job.str_to_date = _str_to_date  # type: ignore[attr-defined]


class ClaimingJob(RQJob):
    """An RQ job that claims its call in the round trip that fetches it (``HGETALL`` + the claim script).

    :class:`workers.callworker.CallWorker` makes a subclass naming the worker (``claimant``), since RQ's dequeue
    creates jobs through a class method. ``claimed`` is the claim's outcome (:data:`workers.execute.CLAIMED`,
    ``TAKEN``, ``CANCELLED`` or ``ORPHANED``), or None for a job that is not a call.
    """

    claimant: ClassVar[str] = ""
    claim_ttl: ClassVar[int] = 300
    pause_before_claim: ClassVar[float] = 0.0
    """Test-only: see :data:`workers.callworker.TEST_PAUSE_ENV`."""
    claimed: int | None = None
    fetching: ClassVar[bool] = False
    """True from a fetch's claim until the worker has handed the job on (it resets this): a warm shutdown waits
    for that, so a claimed call is not dropped."""

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> RQJob:
        claim_key, cancelled_key = keys.claim_of_job(id), keys.cancelled_of_job(id)
        if not cls.claimant or connection is None or claim_key is None or cancelled_key is None:
            return super().fetch(id, connection=connection, serializer=serializer)
        if cls.pause_before_claim:
            log.warning("test-only pause of %g s before claiming %s", cls.pause_before_claim, id)
            time.sleep(cls.pause_before_claim)
        job = cls(id, connection=connection, serializer=serializer)
        cls.fetching = True
        try:
            with connection.pipeline(transaction=False) as pipe:
                pipe.hgetall(job.key)
                claim(pipe, cancelled_key, claim_key, cls.claimant, cls.claim_ttl, keys.gateway_alive_of_job(id))
                data, claimed = pipe.execute()
        except BaseException:
            cls.fetching = False
            raise
        if not data:
            raise NoSuchJobError(f"No such job: {job.key}")
        job.restore(data)
        job.claimed = int(claimed)
        return job


@contextlib.contextmanager
def running(job: RQJob, worker_name: str) -> Iterator[None]:
    """While the job's function runs: ``get_current_job()`` returns ``job``, which names its worker (as RQ's
    ``Job.perform`` and ``prepare_for_execution`` do, without their round trips)."""
    job.worker_name = worker_name
    _job_stack.push(job)
    try:
        yield
    finally:
        _job_stack.pop()


class RecordsWorker(SimpleWorker):
    """``rq.SimpleWorker`` that writes RQ's records of a job onto a pipeline it is given, and sends RQ's own
    periodic writes (heartbeat, suspension check, state) only when they say something new."""

    def start_records(self, job: RQJob, queue: Queue, started: datetime, pipe: Pipeline) -> None:
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

    @staticmethod
    def finished(job: RQJob, outcome: Any) -> None:
        """Record in the job object that it just returned ``outcome`` (what RQ's ``perform`` sets)."""
        job.ended_at = now()
        job._result = outcome
        job._status = JobStatus.FINISHED

    def success_records(self, job: RQJob, pipe: Pipeline, idle: bool = True) -> None:
        """RQ's ``handle_job_success`` for a :meth:`finished` job without dependents; ``idle``: the worker runs
        no other job (RQ's worker runs one at a time)."""
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
        if idle:
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)

    def failure_records(self, job: RQJob, queue: Queue) -> None:
        """RQ's failure path, unchanged, for the exception being handled (rare: ``run_call`` turns every function
        failure into a result)."""
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
