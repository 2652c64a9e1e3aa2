"""Running a worker process's calls concurrently: one event loop, one thread pool, slots, and a watcher.

:class:`Runner` runs up to ``WORKER_CONCURRENCY`` calls at once:

- ``async def`` functions run as tasks on one long-lived event loop (a thread of its own), so module-level async
  clients (an ``httpx.AsyncClient``, a DB pool made on first use) serve every call of the process;
- blocking functions run in a pool of ``WORKER_CONCURRENCY`` threads: every slot may hold a blocking call, so the
  pool is never what makes a call wait;
- a slot is taken before a job is taken from the queue (:meth:`Runner.take_slot`), so a busy process leaves jobs
  to idle ones;
- the watcher thread, every :data:`TICK` while calls run, looks (one pipelined round trip of ``EXISTS``) for the
  cancel markers the gateway sets (:func:`shared.keys.cancelled`), and answers "timed out" for blocking calls past
  their timeout or deadline. A timed-out or cancelled blocking call sees ``ctx.cancelled`` turn True; its thread
  finishes on its own and its slot stays busy until then. An async call's task is cancelled instead.

Every call is answered once at most (:meth:`Call.take_answer`): by its function's result, by the watcher's
"timed out", or not at all once cancelled (the gateway already answered). When a call ends, ``finish`` gets its
RQ outcome (or the exception that broke the runner's own code) for the worker's RQ records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import BaseModel

from shared import keys
from shared.envelopes import CallJob, CallResult
from shared.redis_errors import REDIS_FAILURES
from workers import observe
from workers.execute import error_result, failed, interrupted, store_and_publish, success, timed_out_message
from workers.registry import CallContext, Registered

log = logging.getLogger(__name__)

TICK = 0.05
"""Seconds between the watcher's looks at the running calls (cancel markers, timeouts)."""
ASYNC_GRACE = 1.0
"""Seconds past its timeout after which the watcher answers an async call itself: its task's own timeout did not
fire, so the function blocks the event loop."""

Outcome = str | BaseException
"""What a call's RQ job returned (``"ok"``, ``"failed"``, ``"cancelled"``...), or what broke running it."""


@dataclass(eq=False)
class Call:
    """One running call: its envelope, function, arguments and context, and who answered it."""

    job: CallJob
    entry: Registered
    args: BaseModel
    ctx: CallContext
    started: float
    """Unix time the call began."""
    expires: float
    """Unix time it times out: its function's timeout or its deadline, whichever comes first."""
    token: Any = None
    """The caller's own reference (the worker's RQ job and records)."""
    cancelled: bool = False
    timed_out: bool = False
    """Answered "timed out" (its function may still run)."""
    task: asyncio.Task[None] | None = None
    _answered: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_answer(self) -> bool:
        """True the first time only: the caller may answer the call."""
        with self._lock:
            if self._answered:
                return False
            self._answered = True
            return True


class _DaemonPool:
    """A bounded pool of daemon threads, started as needed.

    A ``ThreadPoolExecutor`` joins its threads when the interpreter exits, so a blocking function that never
    returns would keep a stopping worker alive for ever; these threads die with the process.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads = 0

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        # A thread between two tasks may not have counted itself idle yet: the task waits in the queue for it.
        if not self._idle.acquire(blocking=False) and self._threads < self._size:
            self._threads += 1  # only the dequeuing thread submits
            threading.Thread(target=self._serve, name=f"call-{self._threads}", daemon=True).start()
        self._tasks.put((fn, args))

    def _serve(self) -> None:
        while True:
            fn, args = self._tasks.get()
            try:
                fn(*args)
            except BaseException:  # the thread must live on: the pool counts it
                log.exception("a call's thread raised")
            self._idle.release()


class Runner:
    """Runs calls concurrently (see the module's docstring); ``finish(call, outcome)`` is called as each ends."""

    def __init__(
        self,
        connection: redis.Redis,
        concurrency: int,
        ttl: int,
        finish: Callable[[Call, Outcome], None],
    ) -> None:
        self.connection, self.ttl, self._finish_cb = connection, ttl, finish
        self._slots = threading.Semaphore(concurrency)
        self._pool = _DaemonPool(concurrency)
        self._lock = threading.Condition()
        self._calls: set[Call] = set()
        self._stopped = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="call-loop", daemon=True).start()
        threading.Thread(target=self._watch, name="call-watcher", daemon=True).start()

    # --- slots ------------------------------------------------------------------------------------------------

    def take_slot(self) -> None:
        """Wait until fewer than ``WORKER_CONCURRENCY`` calls run, and count one more (a signal interrupts it)."""
        self._slots.acquire()

    def free_slot(self) -> None:
        self._slots.release()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._calls)

    # --- running ----------------------------------------------------------------------------------------------

    def run(self, call: Call) -> None:
        """Start ``call`` (its slot already taken); returns at once."""
        with self._lock:
            self._calls.add(call)
            self._lock.notify_all()  # the watcher waits for a first call
        if call.entry.is_async:
            self.loop.call_soon_threadsafe(self._start_task, call)
        else:
            self._pool.submit(self._run_blocking, call)

    def _start_task(self, call: Call) -> None:
        call.task = self.loop.create_task(self._run_async(call))
        # A task cancelled before its first step never runs its coroutine (nor its finally): finish it here.
        call.task.add_done_callback(lambda task: task.cancelled() and self._finished(call, "cancelled"))

    async def _run_async(self, call: Call) -> None:
        outcome: Outcome = "failed"
        try:
            with observe.running(call):
                try:
                    async with asyncio.timeout(call.expires - time.time()) as limit:
                        value = await call.entry.invoke(call.args, call.ctx)
                    result = success(call.job, call.ctx.worker_id, call.started, value)
                except asyncio.CancelledError:
                    if not call.cancelled:
                        raise
                    outcome = "cancelled"
                    return
                except TimeoutError as exc:
                    if not limit.expired():
                        result = error_result(call.job, call.ctx.worker_id, call.started, exc)
                    else:
                        log.warning("call %s: %s timed out", call.job.call_id, call.job.name)
                        call.timed_out = True
                        message = timed_out_message(call.job.name)
                        result = failed(call.job, call.ctx.worker_id, call.started, message)
                except Exception as exc:
                    result = error_result(call.job, call.ctx.worker_id, call.started, exc)
                outcome = self._answer(call, result)
        except Exception as exc:  # around the function (observability, Redis): the call is still answered
            outcome = self._broken(call, exc)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._finished(call, outcome)

    def _run_blocking(self, call: Call) -> None:
        outcome: Outcome = "failed"
        try:
            with observe.running(call):
                try:
                    value = call.entry.invoke(call.args, call.ctx)
                    result = success(call.job, call.ctx.worker_id, call.started, value)
                except Exception as exc:
                    result = error_result(call.job, call.ctx.worker_id, call.started, exc)
                outcome = self._answer(call, result)
        except Exception as exc:  # around the function (observability, Redis): the call is still answered
            outcome = self._broken(call, exc)
        except BaseException as exc:  # handed to the worker's failure records
            outcome = exc
        finally:
            self._finished(call, outcome)

    def _broken(self, call: Call, exc: Exception) -> Outcome:
        """A failure of the worker's own code around ``call``: logged, and the call answered if it was not yet."""
        log.exception("call %s: %s failed in the worker", call.job.call_id, call.job.name)
        with contextlib.suppress(Exception):  # Redis itself may be what failed: the gateway's deadline answers
            self._answer(call, failed(call.job, call.ctx.worker_id, call.started, f"{call.job.name} failed"))
        return exc

    def _answer(self, call: Call, result: CallResult) -> str:
        """Store and publish ``result`` unless the call was answered or cancelled meanwhile; the RQ outcome."""
        if not call.take_answer():
            if call.cancelled:
                return "cancelled"
            log.warning("call %s: %s returned after it was answered as timed out", call.job.call_id, call.job.name)
            return "failed"
        store_and_publish(self.connection, call.job, result, self.ttl)
        return "ok" if result.ok else "failed"  # the finish line is observe.ended's

    def _finished(self, call: Call, outcome: Outcome) -> None:
        """Free ``call``'s slot and hand it to the worker's records, once (a cancelled task may report twice)."""
        with self._lock:
            if call not in self._calls:
                return
            self._calls.discard(call)
            self._lock.notify_all()
        self._slots.release()
        self._finish_cb(call, outcome)
        try:
            with observe.fields(call):  # the finish line carries the call's fields, wherever it ended
                observe.ended(call, outcome)
        except Exception:  # a metric or log line must not lose the call's records (done above)
            log.exception("call %s: could not record its end", call.job.call_id)

    # --- the watcher ------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._calls and not self._stopped.is_set():
                    self._lock.wait()  # an idle worker does not wake every tick for nothing
            if self._stopped.wait(TICK):
                return
            with self._lock:
                calls = [call for call in self._calls if not call.ctx.cancelled]  # given up on already
            if not calls:
                continue
            now = time.time()
            for call in calls:
                if now >= call.expires + (ASYNC_GRACE if call.entry.is_async else 0.0):
                    with observe.fields(call):
                        self._time_out(call)
            try:
                with self.connection.pipeline(transaction=False) as pipe:
                    for call in calls:
                        pipe.exists(keys.cancelled(call.job.call_id))
                    marked = pipe.execute()
            except REDIS_FAILURES as exc:
                log.warning("could not look for cancelled calls (%s)", type(exc).__name__)
                continue
            for call, is_marked in zip(calls, marked, strict=True):
                if is_marked and not call.ctx.cancelled:  # not timed out meanwhile
                    with observe.fields(call):
                        self._cancel(call)

    def _time_out(self, call: Call) -> None:
        if not call.take_answer():
            return
        call.ctx.cancel()
        call.timed_out = True
        log.warning(
            "call %s: %s timed out; answered, its thread goes on until the function returns (a slot stays busy)",
            call.job.call_id,
            call.job.name,
        )
        message = timed_out_message(call.job.name)
        store_and_publish(
            self.connection, call.job, failed(call.job, call.ctx.worker_id, call.started, message), self.ttl
        )

    def _cancel(self, call: Call) -> None:
        """The gateway cancelled ``call`` (and answered or dropped it): stop it, answer nothing."""
        log.info("call %s: %s cancelled while running", call.job.call_id, call.job.name)
        call.cancelled = True
        call.take_answer()
        call.ctx.cancel()
        if call.entry.is_async:
            self.loop.call_soon_threadsafe(self._cancel_task, call)

    @staticmethod
    def _cancel_task(call: Call) -> None:
        if call.task is not None:  # _start_task was queued first on the same loop: the task exists
            call.task.cancel()

    # --- stopping ---------------------------------------------------------------------------------------------

    def drain(self) -> bool:
        """Wait until the running calls end, at most until the last one's timeout; True when none is left."""
        with self._lock:
            if not self._calls:
                return True
            until = max(call.expires for call in self._calls) + ASYNC_GRACE
            log.info("waiting for %d running calls", len(self._calls))
            while self._calls and time.time() < until:
                self._lock.wait(min(TICK, max(0.0, until - time.time())))
            return not self._calls

    def interrupt(self) -> None:
        """Cold shutdown: answer every running call with an "interrupted" error, now."""
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            if call.take_answer():
                call.ctx.cancel()
                store_and_publish(self.connection, call.job, interrupted(call.job, call.ctx.worker_id), self.ttl)
        if calls:
            log.warning("%d running calls answered as interrupted", len(calls))

    def close(self) -> None:
        """Stop the watcher and the event loop (the running calls' threads are left to die with the process)."""
        self._stopped.set()
        with self._lock:
            self._lock.notify_all()
        self.loop.call_soon_threadsafe(self.loop.stop)
