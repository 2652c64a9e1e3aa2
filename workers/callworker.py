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

The function a call's job names, :func:`workers.execute.run_call`, is the one that runs: it finds the claim's
outcome on the job (``get_current_job().claimed``) instead of claiming the call again. Only the gateway's jobs
(:data:`~shared.envelopes.JOB_FUNCTION`) take this path; any other job goes through RQ's own.

RQ's success path also watches the job's dependents key to enqueue dependent jobs: a call never has dependents
(the gateway enqueues none), so that round trip is left out. Heartbeats and the check for ``rq suspend`` happen
at most once a second instead of once per job. What all this relies on in RQ's internals is in
:mod:`workers.rq_records`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rq import Queue
from rq.job import Job as RQJob
from rq.timeouts import JobTimeoutException
from rq.utils import now

from shared.config import get_config
from shared.envelopes import JOB_FUNCTION
from workers import execute
from workers.rq_records import ClaimingJob, RecordsWorker, running

START_AFTER = 0.01
"""Seconds a call runs before its RQ start records are written on their own (see :class:`_StartWriter`)."""
START_TICK = 0.005
"""Seconds between the start writer's looks at the running call."""
TEST_PAUSE_ENV = "VFG_TEST_PAUSE_BEFORE_CLAIM"
"""Test-only (tests/faults): seconds a worker sleeps between taking a job from its queue and claiming it, so a
test can kill it in that window. Never set it in production."""


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
                    self.worker.start_records(start.job, start.queue, start.started, pipe)
                    pipe.execute()
            except BaseException as exc:  # handed to the worker's thread by start.wait()
                start.error = exc
            finally:
                start.written.set()

    def stop(self) -> None:
        self._stopped.set()


class CallWorker(RecordsWorker):
    """``rq.SimpleWorker`` that answers a call before doing RQ's bookkeeping, in fewer Redis round trips."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_class = type(
            "ClaimingJob",
            (ClaimingJob,),
            {"claimant": self.name, "claim_ttl": get_config().result_ttl, "pause_before_claim": _test_pause()},
        )

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        if getattr(job, "claimed", None) is None or not is_call(job):
            super().execute_job(job, queue)
            return
        start = self._start_writer().arm(job, queue)
        self.procline(f"Processing {job.description} from {job.origin} since {time.time()}")
        try:
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id), running(job, self.name):
                outcome = execute.run_call(*job.args)  # the job's own function (is_call checked its name)
            self.finished(job, outcome)
            with self.connection.pipeline() as pipe:
                if self._start_writer().take(start):
                    self.start_records(job, queue, start.started, pipe)
                else:
                    start.wait()
                self.success_records(job, pipe)
                pipe.execute()
        except BaseException:  # RQ's perform_job treats anything, even SystemExit, as the job failing
            try:
                if self._start_writer().take(start):  # RQ's failure path expects the job started
                    with self.connection.pipeline() as pipe:
                        self.start_records(job, queue, start.started, pipe)
                        pipe.execute()
                else:
                    start.wait()
            finally:
                self.failure_records(job, queue)

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


def is_call(job: RQJob) -> bool:
    """True for one of the gateway's jobs: :data:`JOB_FUNCTION` with the call envelope as its one argument."""
    return job.func_name == JOB_FUNCTION and not job.kwargs and len(job.args) == 1 and isinstance(job.args[0], str)


def _test_pause() -> float:
    """:data:`TEST_PAUSE_ENV` as seconds (0, the default, when unset or unreadable)."""
    try:
        return max(0.0, float(os.environ.get(TEST_PAUSE_ENV) or 0))
    except ValueError:
        return 0.0
