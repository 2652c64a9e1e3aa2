"""The RQ worker class that runs calls: RQ's job lifecycle, with the caller's answer first.

RQ runs a job in ~13 Redis round trips and the caller waits for all of them (``python -m
benchmarks.roundtrips`` lists them). :class:`CallWorker` keeps RQ's keys, values and job lifecycle (``rq
info``, the registries, ``Job.fetch(id).return_value()`` all keep working) but orders and groups the writes
so that, after the dequeue (``BLMOVE``), the caller waits for two round trips:

1. fetch: the job hash (``HGETALL``) and our claim of the call (a Lua script), in one pipeline. The claim
   keys, and the liveness key of the gateway that enqueued the call, derive from the job id
   (:func:`shared.keys.claim_of_job`, :func:`shared.keys.gateway_alive_of_job`), so they need not wait for the
   job's data.
2. the function runs, handed to the :class:`~workers.runner.Runner` (up to ``WORKER_CONCURRENCY`` calls at
   once: ``async def`` functions on its event loop, blocking ones in its threads); its result is stored and
   published: the caller has its answer. The worker's own thread meanwhile goes back to the queue, once a slot
   is free: it never takes a job it cannot start at once.
3. RQ's records, in one transaction: the start (execution record, worker busy, job started, ``PERSIST``) and
   the success (job finished, result stream, finished registry, worker counters, execution removed, worker
   idle once no call runs), writing the fields that changed rather than the whole job hash again. A call still
   running after :data:`START_AFTER` has its start written then, so ``rq info`` shows it running; either way
   the start is dated when the call began. One thread, :class:`_Books`, writes all of them.

Only the gateway's jobs (:data:`~shared.envelopes.JOB_FUNCTION`) take this path; any other job goes through RQ's
own, in the worker's thread. Under RQ's own worker, the job's function :func:`workers.execute.run_call` claims and
runs the call itself.

Shutdown: the first SIGTERM/SIGINT stops the dequeue at once, and :meth:`CallWorker.teardown` waits for the
running calls (bounded by their timeouts) and their records; a second one answers them "interrupted" and exits.

RQ's success path also watches the job's dependents key to enqueue dependent jobs: a call never has dependents
(the gateway enqueues none), so that round trip is left out. Heartbeats and the check for ``rq suspend`` happen
at most once a second instead of once per job. What all this relies on in RQ's internals is in
:mod:`workers.rq_records`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

from rq import Queue
from rq.exceptions import StopRequested
from rq.job import Job as RQJob
from rq.utils import now
from rq.worker import WorkerStatus

from shared.config import get_config
from shared.envelopes import JOB_FUNCTION, CallResult
from shared.redis_errors import REDIS_FAILURES
from workers import execute, observe
from workers.rq_records import ClaimingJob, RecordsWorker, install_shortcuts
from workers.runner import Call, Outcome, Runner

log = logging.getLogger(__name__)

START_AFTER = 0.01
"""Seconds a call runs before its RQ start records are written on their own (see :class:`_Books`)."""
START_TICK = 0.005
"""Seconds between the books' looks at the running and ended calls."""
TEST_PAUSE_ENV = "VFG_TEST_PAUSE_BEFORE_CLAIM"
"""Test-only (tests/faults): seconds a worker sleeps between taking a job from its queue and claiming it, so a
test can kill it in that window. Never set it in production."""


class _Start:
    """One call's RQ records: its start, dated when the call began (:attr:`started`), and how it ended."""

    def __init__(self, job: RQJob, queue: Queue) -> None:
        self.job, self.queue = job, queue
        self.started: datetime = now()
        self.began = time.monotonic()
        self.written = False
        self.execution: Any = None
        self.outcome: Outcome | None = None


class _Books(threading.Thread):
    """Writes RQ's records of the worker's calls: the only thread that does, so the worker's RQ state (its
    current execution, busy or idle) is never written from two threads.

    A call's start is written once it has run :data:`START_AFTER` (so ``rq info`` and RQ's registries show it
    running), or with its end; the ends that came are written every :data:`START_TICK`, in one transaction. An
    end does not wake the thread: the caller has its answer already, and under load one transaction per tick
    instead of one per call is a quarter less worker CPU per call. The worker is busy from the first start
    written until the last call ends.
    """

    def __init__(self, worker: CallWorker) -> None:
        super().__init__(name="rq-books", daemon=True)
        self.worker = worker
        self._lock = threading.Lock()
        self._open: dict[str, _Start] = {}
        self._ended: list[_Start] = []
        self._wake = threading.Event()
        self._stopped = False

    @property
    def active(self) -> int:
        """Calls begun and not yet recorded as ended."""
        with self._lock:
            return len(self._open)

    def begin(self, job: RQJob, queue: Queue) -> _Start:
        start = _Start(job, queue)
        with self._lock:
            first = not self._open and not self._ended
            self._open[job.id] = start
        if first:
            self._wake.set()  # the thread waits without a tick while there is nothing to write
        return start

    def end(self, start: _Start, outcome: Outcome) -> None:
        start.outcome = outcome
        with self._lock:
            self._ended.append(start)

    def run(self) -> None:
        while True:
            with self._lock:
                idle = not self._open and not self._ended
            self._wake.wait(None if idle else START_TICK)
            self._wake.clear()
            stopping = self._stopped
            try:
                self.write()
            except REDIS_FAILURES as exc:
                log.error("could not write RQ's records of calls (%s)", type(exc).__name__)
            except Exception:  # a bug here must not stop the records of every later call
                log.exception("could not write RQ's records of calls")
            if stopping:
                return

    def write(self) -> None:
        """Write the starts that are due and the ends that came."""
        due = time.monotonic() - START_AFTER
        with self._lock:
            ended, self._ended = self._ended, []
            for start in ended:
                if self._open.get(start.job.id) is start:  # a duplicate of the job id may have replaced it
                    del self._open[start.job.id]
            starts = [s for s in self._open.values() if not s.written and s.began <= due]
            idle_after = not self._open
        if not ended and not starts:
            return
        worker = self.worker
        with worker.connection.pipeline() as pipe:
            for start in [*starts, *(s for s in ended if not s.written)]:
                worker.start_records(start.job, start.queue, start.started, pipe)
                start.execution, start.written = worker.execution, True
            failures = []
            for index, start in enumerate(ended):
                if isinstance(start.outcome, BaseException):
                    failures.append(start)
                    continue
                worker.execution = start.execution
                worker.finished(start.job, start.outcome)
                last = idle_after and index == len(ended) - 1
                worker.success_records(start.job, pipe, idle=last)
            pipe.execute()
        for start in failures:  # rare (run_call turns every function failure into a result): RQ's own path
            worker.execution = start.execution
            try:
                raise start.outcome  # type: ignore[misc]
            except BaseException:
                worker.failure_records(start.job, start.queue)

    def stop(self) -> None:
        """Write what is left, then end."""
        self._stopped = True
        self._wake.set()
        self.join(timeout=5)


class CallWorker(RecordsWorker):
    """``rq.SimpleWorker`` that runs up to ``WORKER_CONCURRENCY`` calls at once (:class:`workers.runner.Runner`),
    answers each before doing RQ's bookkeeping, in fewer Redis round trips."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_shortcuts()
        super().__init__(*args, **kwargs)
        config = get_config()
        self.concurrency, self.ttl = config.worker_concurrency, config.result_ttl
        self.job_class = type(
            "ClaimingJob",
            (ClaimingJob,),
            {"claimant": self.name, "claim_ttl": self.ttl, "pause_before_claim": _test_pause()},
        )
        self._runner: Runner | None = None
        self._books: _Books | None = None

    @property
    def runner(self) -> Runner:
        if self._runner is None:  # started on first use: a CallWorker made only to read RQ's records starts nothing
            self._books = _Books(self)
            self._books.start()
            self._runner = Runner(self.connection, self.concurrency, self.ttl, self._call_ended)
        return self._runner

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, once a slot is free: a worker never takes a job it cannot start at once."""
        self.runner.take_slot()
        try:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        except BaseException:
            self.job_class.fetching = False  # type: ignore[attr-defined]
            self.runner.free_slot()
            raise
        if result is None:
            self.runner.free_slot()
        return result

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        try:
            if getattr(job, "claimed", None) is None or not is_call(job):
                try:
                    super().execute_job(job, queue)
                finally:
                    self.runner.free_slot()
                return
            self._start_call(job, queue)
        finally:
            self.job_class.fetching = False  # type: ignore[attr-defined]

    def _start_call(self, job: RQJob, queue: Queue) -> None:
        """Hand a claimed call to the runner; answer the others (skipped, duplicate...) here and now."""
        assert self._books is not None
        start = self._books.begin(job, queue)
        outcome: Outcome
        call_job = None
        try:
            call_job = execute.decode_call(job.args[0])
            if call_job is None:
                outcome = "invalid"
            elif execute.is_late(call_job):
                outcome = "skipped"
            elif job.claimed != execute.CLAIMED:
                outcome = execute.run_claimed(call_job, job.claimed, self.connection, self.name, self.ttl)
            else:
                began = time.time()
                prepared = execute.prepare(call_job, self.connection, self.name, began)
                if isinstance(prepared, CallResult):
                    execute.store_and_publish(self.connection, call_job, prepared, self.ttl)
                    observe.refused(call_job, began)
                    outcome = "failed"
                else:
                    entry, args, ctx = prepared
                    expires = min(began + entry.spec.timeout, ctx.deadline)
                    self.runner.run(Call(call_job, entry, args, ctx, began, expires, token=start))
                    return
        except Exception as exc:  # a bug of ours around the call: it is still answered
            outcome = exc
            log.exception("job %s: could not start its call", job.id)
            if call_job is not None and job.claimed == execute.CLAIMED:
                with contextlib.suppress(Exception):
                    failure = execute.failed(call_job, self.name, time.time(), f"{call_job.name} failed")
                    execute.store_and_publish(self.connection, call_job, failure, self.ttl)
        self.runner.free_slot()
        self._books.end(start, outcome)

    def _call_ended(self, call: Call, outcome: Outcome) -> None:
        assert self._books is not None
        self._books.end(call.token, outcome)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """The worker stays busy while any call runs, whatever RQ's loop says as it dequeues the next job."""
        if pipeline is None and state == WorkerStatus.IDLE and self._books is not None and self._books.active:
            return
        super().set_state(state, pipeline)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Warm shutdown: take no new job (stop waiting for one at once); the running calls finish in
        :meth:`teardown`. A second signal is a cold shutdown."""
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.handle_warm_shutdown_request()
        self._stop_requested = True
        if not self.job_class.fetching:  # type: ignore[attr-defined]
            raise StopRequested()  # else a claimed job is started first; RQ's loop then sees _stop_requested

    def teardown(self) -> None:
        """Let the running calls finish (bounded by their timeouts) and write their records; on a second
        signal (``SystemExit``), answer them "interrupted" instead."""
        try:
            if self._runner is not None and not self._runner.drain():
                log.warning("%d calls still running at exit", self._runner.running)
                self._runner.interrupt()  # answered before the watcher stops (it may not have yet)
        except BaseException:
            if self._runner is not None:
                self._runner.interrupt()
            raise
        finally:
            if self._runner is not None:
                self._runner.close()
            if self._books is not None:
                self._books.stop()
            self._runner = self._books = None
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
