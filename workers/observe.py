"""What an operator sees of a worker's call: its log fields, its ``run`` span, its metrics.

The runner runs each call inside :func:`running` (in the pool thread that runs it, or inside the call's task),
and calls :func:`ended` as the call ends. For the run:

- every log line carries ``session_id``, ``call_id`` (the provider's, as the gateway logs it), ``function``,
  ``worker_id`` and ``traceparent`` (:func:`shared.logs.log_context`). The context is set in the thread or
  task that runs the call, not where the call was handed over: a pool thread does not inherit its submitter's
  context variables, and each call's task has its own copy;
- a ``run`` span, child of the gateway's ``call`` span whose context the job carries (:func:`shared.tracing.span`);
- one more busy slot (``worker_busy_slots``).

:func:`ended` counts the call in ``worker_calls_total`` and ``worker_call_run_seconds`` and logs its finish line,
with ``duration_ms``; :func:`refused` counts a call that could not run as an ``error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from shared.logs import log_context
from shared.tracing import span
from workers import metrics, registry

if TYPE_CHECKING:
    from shared.envelopes import CallJob
    from workers.runner import Call, Outcome

log = logging.getLogger("workers.runner")


def provider_call_id(job: CallJob) -> str:
    """The call id the gateway logs (the provider's): the job's without the session prefix the gateway adds to
    keep sessions apart in Redis (``gateway.calls.BackendCalls.key``)."""
    return job.call_id.removeprefix(f"{job.session_id}-") if job.session_id else job.call_id


def fields(call: Call) -> AbstractContextManager[None]:
    """``call``'s log fields for the block (the watcher's lines about it, in its own thread)."""
    job = call.job
    return log_context(
        session_id=job.session_id,
        call_id=provider_call_id(job),
        function=job.name,
        worker_id=call.ctx.worker_id,
        traceparent=job.traceparent,
    )


@contextmanager
def running(call: Call) -> Iterator[None]:
    """The log fields, the ``run`` span and a busy slot of ``call``, for the block that runs it."""
    job = call.job
    with (
        fields(call),
        span("run", job.traceparent, function=job.name, call_id=provider_call_id(job)) as traceparent,
        log_context(traceparent=traceparent),
        metrics.busy(),
    ):
        yield


def refused(job: CallJob, started: float) -> None:
    """Count a call that could not run (an unknown function, invalid arguments) as an ``error``."""
    metrics.call_ran(job.name, registry.registered(), "error", time.time() - started)


def outcome_label(call: Call, outcome: Outcome) -> str:
    """``ok``, ``error``, ``timeout`` or ``cancelled``: how ``call`` ended, for metrics and the finish line."""
    if call.cancelled:
        return "cancelled"
    if outcome == "ok":
        return "ok"
    return "timeout" if call.timed_out else "error"


def ended(call: Call, outcome: Outcome) -> None:
    """Count ``call`` (ended with ``outcome``) and log its finish line, with ``duration_ms``."""
    seconds = time.time() - call.started
    label = outcome_label(call, outcome)
    # The runner has it from the registry: the name is known (no "other" label).
    metrics.call_ran(call.job.name, (call.entry.spec.name,), label, seconds)
    took = round(seconds * 1000, 1)
    log.info("call %s: %s %s in %.1f ms", call.job.call_id, call.job.name, label, took, extra={"duration_ms": took})
