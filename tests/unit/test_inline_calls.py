"""A quick blocking function runs in the thread that dequeued its call (workers.runner.INLINE_UNDER)."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest
from pydantic import BaseModel

from shared import keys
from shared.envelopes import CallJob, CallResult
from tests.unit import test_call_worker
from tests.unit.test_call_worker import enqueue
from workers import execute, function
from workers.callworker import CallWorker
from workers.runner import INLINE_UNDER, Call, Runner

fake, restore_signals = test_call_worker.fake, test_call_worker.restore_signals  # the shared fixtures
THREADS: list[str] = []


class WaitArgs(BaseModel):
    wait: float = 0.0
    exit: bool = False


@function(description="records the thread it runs in", name="inline_where")
def inline_where(args: WaitArgs) -> str:
    THREADS.append(threading.current_thread().name)
    time.sleep(args.wait)
    if args.exit:
        raise SystemExit(1)  # what a second SIGTERM raises in the worker's thread
    return "ok"


def run_calls(connection: fakeredis.FakeRedis, waits: list[float]) -> list[str]:
    from rq import Queue

    THREADS.clear()
    queue = Queue(keys.queue_name("default"), connection=connection)
    for i, wait in enumerate(waits):
        enqueue(queue, f"in-{i}", name="inline_where", arguments=f'{{"wait": {wait}}}')
    worker = CallWorker([queue], connection=connection, name="inline")
    worker.concurrency = 1  # one at a time: a call's run decides where the next one runs
    worker.work(burst=True)
    return ["pool" if name.startswith("call-") else name for name in THREADS]


def test_a_quick_function_runs_in_the_dequeuing_thread_after_its_first_run(
    fake: fakeredis.FakeRedis, restore_signals: None
) -> None:
    assert run_calls(fake, [0, 0, 0]) == ["pool", "MainThread", "MainThread"]


def test_a_slow_run_sends_the_next_call_to_the_pool(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    slow = INLINE_UNDER * 5
    assert run_calls(fake, [0, slow, 0, 0]) == ["pool", "MainThread", "pool", "MainThread"]


def test_a_cold_shutdown_in_a_quick_call_answers_it_interrupted(fake: fakeredis.FakeRedis) -> None:
    ended: list[object] = []
    runner = Runner(fake, 4, 60, lambda call, outcome: ended.append(outcome))
    runner._quick["inline_where"] = True
    job = CallJob(
        call_id="in-exit", name="inline_where", arguments='{"exit": true}', reply_channel="vfg:reply:t",
        deadline=time.time() + 30,
    )  # fmt: skip
    began = time.time()
    prepared = execute.prepare(job, fake, "w", began)
    assert not isinstance(prepared, CallResult)
    entry, args, ctx = prepared
    runner.take_slot()
    with pytest.raises(SystemExit):
        runner.run(Call(job, entry, args, ctx, began, began + 5))
    result = CallResult.from_json(fake.get(keys.result("in-exit")))  # type: ignore[arg-type]
    assert not result.ok and "interrupted" in (result.error or result.content or "")
    assert runner.running == 0 and isinstance(ended[0], SystemExit)
    runner.close()
