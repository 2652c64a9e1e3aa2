"""What the runner shows of a call (workers/observe.py): log fields in the call's thread or task, its ``run``
span under the job's traceparent, busy slots and calls counted by outcome, the finish line."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from rq import Queue

from shared import keys, tracing
from shared.envelopes import CallJob, CallResult
from shared.logs import current_log_context
from tests.support.processes import wait_until
from tests.unit.test_call_worker import enqueue, restore_signals  # noqa: F401 - the fixture
from workers import CallContext, execute, function
from workers.callworker import CallWorker
from workers.registry import FunctionError
from workers.runner import Call, Outcome, Runner

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SESSION = "s1"
RELEASE = threading.Event()


@function(description="its log context and the busy slots, from a pool thread", name="ob_blocking")
def ob_blocking() -> dict[str, Any]:
    return {**current_log_context(), "busy": REGISTRY.get_sample_value("worker_busy_slots")}


@function(description="its log context, from the call's task", name="ob_async")
async def ob_async() -> dict[str, Any]:
    await asyncio.sleep(0)
    return current_log_context()


@function(description="refuses", name="ob_refuses")
def ob_refuses() -> str:
    raise FunctionError("no")


@function(description="runs until released", name="ob_waits", timeout=0.2)
def ob_waits(ctx: CallContext) -> str:
    RELEASE.wait(5)
    return "late"


@pytest.fixture
def runner() -> Iterator[tuple[Runner, list[tuple[Call, Outcome]], fakeredis.FakeRedis]]:
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    ended: list[tuple[Call, Outcome]] = []
    done = threading.Condition()

    def finish(call: Call, outcome: Outcome) -> None:
        with done:
            ended.append((call, outcome))

    runner = Runner(fake, 4, 60, finish)
    yield runner, ended, fake
    runner.close()


def start(runner: Runner, fake: fakeredis.FakeRedis, name: str, call_id: str) -> Call:
    job = CallJob(
        call_id=f"{SESSION}-{call_id}",  # the gateway's key: the provider's id within its session
        session_id=SESSION,
        name=name,
        arguments="{}",
        reply_channel="vfg:reply:t",
        deadline=time.time() + 30,
        traceparent=TRACE,
    )
    began = time.time()
    prepared = execute.prepare(job, fake, "w-1", began)
    assert not isinstance(prepared, CallResult)
    entry, args, ctx = prepared
    call = Call(job, entry, args, ctx, began, min(began + entry.spec.timeout, ctx.deadline))
    runner.take_slot()
    runner.run(call)
    return call


def wait_ended(ended: list[tuple[Call, Outcome]], count: int) -> None:
    wait_until(lambda: len(ended) >= count, 5, f"{count} calls to end", 0.01)


def result(fake: fakeredis.FakeRedis, call_id: str) -> CallResult:
    return CallResult.from_json(fake.get(keys.result(f"{SESSION}-{call_id}")))  # type: ignore[arg-type]


def count(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("worker_calls_total", {"function": name, "outcome": outcome}) or 0.0


@pytest.mark.parametrize("name", ["ob_blocking", "ob_async"])
def test_a_call_logs_with_its_fields_is_counted_and_logs_its_finish(runner, name: str, caplog) -> None:
    run, ended, fake = runner
    before = count(name, "ok")
    with caplog.at_level(logging.INFO, logger="workers.runner"):
        start(run, fake, name, f"c-{name}")
        wait_ended(ended, 1)
    seen = result(fake, f"c-{name}").content
    assert f'"call_id": "c-{name}"' in seen and f'"function": "{name}"' in seen
    assert '"worker_id": "w-1"' in seen and f'"session_id": "{SESSION}"' in seen and f'"traceparent": "{TRACE}"' in seen
    if name == "ob_blocking":
        assert '"busy": 1.0' in seen
    assert count(name, "ok") == before + 1
    assert REGISTRY.get_sample_value("worker_busy_slots") == 0
    [finish] = [r for r in caplog.records if r.getMessage().startswith(f"call {SESSION}-c-{name}: {name} ok in")]
    assert finish.duration_ms >= 0  # type: ignore[attr-defined]
    assert current_log_context() == {}  # nothing leaks into the caller's context


def test_errors_timeouts_and_cancellations_are_counted_apart(runner) -> None:
    run, ended, fake = runner
    before = {
        (n, o): count(n, o) for n, o in (("ob_refuses", "error"), ("ob_waits", "timeout"), ("ob_waits", "cancelled"))
    }
    RELEASE.clear()
    start(run, fake, "ob_refuses", "c-err")
    start(run, fake, "ob_waits", "c-late")
    wait_ended(ended, 1)
    wait_until(lambda: fake.exists(keys.result(f"{SESSION}-c-late")), 5, "the watcher's answer")
    assert not result(fake, "c-late").ok  # the watcher answered "timed out"
    RELEASE.set()
    wait_ended(ended, 2)
    RELEASE.clear()
    fake.set(keys.cancelled(f"{SESSION}-c-gone"), "1")
    gone = start(run, fake, "ob_waits", "c-gone")
    wait_until(lambda: gone.cancelled, 5, "the watcher to see the cancel marker")
    RELEASE.set()
    wait_ended(ended, 3)
    assert {(call.job.call_id, outcome) for call, outcome in ended} >= {
        (f"{SESSION}-c-err", "failed"),
        (f"{SESSION}-c-gone", "cancelled"),
    }
    assert count("ob_refuses", "error") == before["ob_refuses", "error"] + 1
    assert count("ob_waits", "timeout") == before["ob_waits", "timeout"] + 1
    assert count("ob_waits", "cancelled") == before["ob_waits", "cancelled"] + 1


def test_the_run_span_is_a_child_of_the_jobs_span(runner) -> None:
    run, ended, fake = runner
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing("test", exporter) is True
    try:
        start(run, fake, "ob_blocking", "c-span")
        wait_ended(ended, 1)
    finally:
        tracing.stop_tracing()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "run"]
    assert span.context.trace_id == int(TRACE.split("-")[1], 16)
    assert span.parent.span_id == int(TRACE.split("-")[2], 16)
    assert span.attributes == {"function": "ob_blocking", "call_id": "c-span"}
    # the lines of the run carry the run span's own context
    logged = json.loads(result(fake, "c-span").content or "{}")["traceparent"]
    assert logged.split("-")[1:3] == [TRACE.split("-")[1], format(span.context.span_id, "016x")]


def test_a_call_that_cannot_run_counts_as_an_error(restore_signals: None) -> None:  # noqa: F811
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue(keys.queue_name("default"), connection=fake)
    other, invalid = count("other", "error"), count("ob_waits", "error")
    enqueue(queue, "c-unknown", name="ob_no_such_function")
    enqueue(queue, "c-invalid", name="ob_waits", arguments="[1]")
    CallWorker([queue], connection=fake, name="cw-ob").work(burst=True)
    assert count("other", "error") == other + 1  # a name the worker does not have adds no label
    assert count("ob_waits", "error") == invalid + 1


def test_an_async_call_cancelled_before_its_task_starts_still_frees_its_slot(runner) -> None:
    """A task cancelled before its first step never runs its coroutine (nor its finally): the runner must still
    end the call, or its slot and RQ records would be held for good."""
    run, ended, fake = runner
    blocked = threading.Event()
    run.loop.call_soon_threadsafe(lambda: blocked.wait(5))  # the loop is busy: the task cannot start yet
    call = start(run, fake, "ob_async", "c-early-cancel")
    run._cancel(call)  # what the watcher does when the gateway cancels the call
    blocked.set()
    wait_ended(ended, 1)
    assert ended == [(call, "cancelled")] and run.running == 0
