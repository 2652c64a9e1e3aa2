"""Dispatcher logic on fakeredis: enqueue, result delivery, deadline, cancellation, duplicates, re-reads."""

from __future__ import annotations

import asyncio
import json
import time

import fakeredis
import pytest
from rq import Queue
from rq.job import Job as RQJob
from rq.registry import CanceledJobRegistry

from gateway import watchdog as watchdog_module
from gateway.dispatcher import Dispatcher
from gateway.enqueue import ALIVE_TTL
from gateway.results import SILENCE_LIMIT
from shared import keys
from shared.config import Config
from shared.envelopes import JOB_FUNCTION, CallJob, CallProgress, CallResult, FunctionSpec
from workers.callworker import CallWorker
from workers.execute import CANCELLED, claim

SPEC = FunctionSpec(name="echo", description="echo", parameters={"type": "object"}, timeout=2.0)


@pytest.fixture
async def dispatcher():
    server = fakeredis.FakeServer()
    d = Dispatcher(
        Config(result_ttl=60),
        gateway_id="gw-test",
        async_redis=fakeredis.aioredis.FakeRedis(server=server),
        sync_redis=fakeredis.FakeRedis(server=server),
    )
    await d.start()
    yield d
    await d.stop()


def queued_jobs(d: Dispatcher) -> list[RQJob]:
    return Queue(keys.queue_name("default"), connection=d.sync_redis).get_jobs()


async def wait_for_job(d: Dispatcher, count: int = 1) -> list[RQJob]:
    for _ in range(200):
        jobs = queued_jobs(d)
        if len(jobs) >= count:
            return jobs
        await asyncio.sleep(0.01)
    raise AssertionError("job was not enqueued")


async def publish(d: Dispatcher, result: CallResult, store: bool = True) -> None:
    if store:
        await d.redis.set(keys.result(result.call_id), result.to_json(), ex=60)
    await d.redis.publish(d.channel, result.to_json())


async def test_call_enqueues_rq_job_and_returns_published_result(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c1", "echo", '{"text":"hi"}', SPEC, session_id="s1", principal="alice"))
    [rq_job] = await wait_for_job(dispatcher)
    assert rq_job.id == keys.job_id("c1", gateway=keys.gateway_ref("gw-test"))
    assert rq_job.func_name == JOB_FUNCTION
    job = CallJob.from_json(rq_job.args[0])
    assert (job.call_id, job.name, job.arguments, job.session_id) == ("c1", "echo", '{"text":"hi"}', "s1")
    assert job.reply_channel == keys.reply_channel("gw-test")
    assert job.principal == "alice"  # the verified caller travels to the worker's CallContext
    assert job.deadline == pytest.approx(time.time() + SPEC.timeout, abs=0.5)
    await publish(dispatcher, CallResult(call_id="c1", ok=True, content='{"echo":"hi"}', worker_id="w1"))
    result = await asyncio.wait_for(task, 1)
    assert (result.ok, result.content, result.worker_id) == (True, '{"echo":"hi"}', "w1")
    assert dispatcher.pending == 0


async def test_results_for_other_calls_are_ignored(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c1", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    await publish(dispatcher, CallResult(call_id="other", ok=True, content="1"))
    await dispatcher.redis.publish(dispatcher.channel, b"not json")
    await asyncio.sleep(0.05)
    assert not task.done()
    await publish(dispatcher, CallResult(call_id="c1", ok=True, content="2"))
    assert (await asyncio.wait_for(task, 1)).content == "2"


async def test_progress_reaches_the_caller_and_garbage_does_not_disturb_the_result(dispatcher: Dispatcher):
    heard: list[str] = []
    task = asyncio.create_task(dispatcher.call("c1", "echo", "{}", SPEC, on_progress=heard.append))
    await wait_for_job(dispatcher)
    await dispatcher.redis.publish(dispatcher.channel, CallProgress(call_id="other", message="not ours").to_json())
    await dispatcher.redis.publish(dispatcher.channel, "not json at all")
    await dispatcher.redis.publish(dispatcher.channel, '{"kind": "progress", "call_id": "c1"}')  # no message
    await dispatcher.redis.publish(dispatcher.channel, CallProgress(call_id="c1", message="Searching.").to_json())
    await publish(dispatcher, CallResult(call_id="c1", ok=True, content="1"))
    assert (await asyncio.wait_for(task, 1)).content == "1"
    assert heard == ["Searching."]
    await dispatcher.redis.publish(dispatcher.channel, CallProgress(call_id="c1", message="late").to_json())
    await asyncio.sleep(0.05)
    assert heard == ["Searching."]  # the call is over


async def test_deadline_gives_error_result_and_cancels_job(dispatcher: Dispatcher):
    spec = SPEC.model_copy(update={"timeout": 0.3})
    started = time.monotonic()
    result = await dispatcher.call("slow", "echo", "{}", spec)
    assert 0.25 < time.monotonic() - started < 1.5
    assert not result.ok
    assert json.loads(result.content) == {"error": "echo did not finish within 0.3 s."}
    await asyncio.sleep(0.1)  # the cancellation runs in the background
    assert await dispatcher.redis.get(keys.cancelled("slow")) == b"1"
    job_id = keys.job_id("slow", gateway=dispatcher.gateway_ref)
    assert not await dispatcher.redis.exists(RQJob.key_for(job_id))  # deleted, not left CANCELED
    assert dispatcher.pending == 0


async def test_deadline_prefers_a_stored_result(dispatcher: Dispatcher):
    spec = SPEC.model_copy(update={"timeout": 0.2})
    task = asyncio.create_task(dispatcher.call("late", "echo", "{}", spec))
    await wait_for_job(dispatcher)
    # Stored but never published (a pub/sub message lost): the final look at the deadline finds it.
    await dispatcher.redis.set(keys.result("late"), CallResult(call_id="late", ok=True, content="x").to_json())
    assert (await task).content == "x"


async def test_cancelling_the_caller_cancels_the_job(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c2", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert await dispatcher.redis.get(keys.cancelled("c2")) == b"1"
    assert queued_jobs(dispatcher) == []
    assert dispatcher.pending == 0


async def test_duplicate_call_id_shares_one_job(dispatcher: Dispatcher):
    first = asyncio.create_task(dispatcher.call("dup", "echo", "{}", SPEC))
    second = asyncio.create_task(dispatcher.call("dup", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    await asyncio.sleep(0.05)
    assert len(queued_jobs(dispatcher)) == 1
    await publish(dispatcher, CallResult(call_id="dup", ok=True, content="once"))
    assert [r.content for r in await asyncio.gather(first, second)] == ["once", "once"]


@pytest.mark.attack("HTTP callers sharing or reusing a call id")
async def test_a_second_caller_of_a_call_gets_an_answer_by_its_own_deadline(dispatcher: Dispatcher):
    """The first caller timed out and left the shared future unresolved: the second caller hung for ever."""
    first = asyncio.create_task(dispatcher.call("dup2", "echo", "{}", SPEC.model_copy(update={"timeout": 0.2})))
    await wait_for_job(dispatcher)
    second = asyncio.create_task(dispatcher.call("dup2", "echo", "{}", SPEC.model_copy(update={"timeout": 0.6})))
    first_result = await asyncio.wait_for(first, 5)
    second_result = await asyncio.wait_for(second, 5)  # no result is ever published
    assert not first_result.ok and not second_result.ok
    assert "did not finish" in json.loads(second_result.content)["error"]


async def test_a_second_caller_with_an_earlier_deadline_is_answered_at_it(dispatcher: Dispatcher):
    """The first caller's deadline is later than the second's: the second is answered at its own."""
    first = asyncio.create_task(dispatcher.call("dup3", "echo", "{}", SPEC.model_copy(update={"timeout": 30})))
    await wait_for_job(dispatcher)
    second = await asyncio.wait_for(dispatcher.call("dup3", "echo", "{}", SPEC.model_copy(update={"timeout": 0.3})), 5)
    assert json.loads(second.content) == {"error": "echo did not finish within 0.3 s."}
    assert not first.done()
    await publish(dispatcher, CallResult(call_id="dup3", ok=True, content="late"))
    assert (await asyncio.wait_for(first, 5)).content == "late"


@pytest.mark.attack("HTTP callers sharing or reusing a call id")
async def test_a_second_caller_is_answered_when_the_first_is_cancelled(dispatcher: Dispatcher):
    first = asyncio.create_task(dispatcher.call("dup4", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    second = asyncio.create_task(dispatcher.call("dup4", "echo", "{}", SPEC))
    await asyncio.sleep(0.05)
    first.cancel()
    result = await asyncio.wait_for(second, 5)  # before: the cancellation reached the second caller too
    assert not result.ok
    assert "cancelled" in json.loads(result.content)["error"]


async def test_reread_after_reconnect_delivers_stored_results(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c3", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    await dispatcher.redis.set(keys.result("c3"), CallResult(call_id="c3", ok=True, content="stored").to_json())
    await dispatcher.results.reread()
    assert (await asyncio.wait_for(task, 1)).content == "stored"


async def test_call_waits_for_the_subscription_before_enqueueing():
    server = fakeredis.FakeServer()
    d = Dispatcher(
        Config(),
        gateway_id="gw-late",
        async_redis=fakeredis.aioredis.FakeRedis(server=server),
        sync_redis=fakeredis.FakeRedis(server=server),
    )
    # Not started: no subscription, so nothing may be enqueued and the deadline answers.
    result = await d.call("c4", "echo", "{}", SPEC.model_copy(update={"timeout": 0.2}))
    assert not result.ok
    assert Queue(keys.queue_name("default"), connection=d.sync_redis).count == 0
    await d.stop()


# --- liveness and calls taken but never claimed ----------------------------------------------------------


async def test_the_liveness_key_lives_while_the_dispatcher_runs():
    server = fakeredis.FakeServer()
    d = Dispatcher(
        Config(),
        gateway_id="gw-alive",
        async_redis=fakeredis.aioredis.FakeRedis(server=server),
        sync_redis=fakeredis.FakeRedis(server=server),
    )
    check = fakeredis.FakeRedis(server=server)
    alive = keys.gateway_alive(keys.gateway_ref("gw-alive"))
    await d.start()
    for _ in range(100):
        if check.exists(alive):
            break
        await asyncio.sleep(0.01)
    assert 0 < check.ttl(alive) <= ALIVE_TTL
    await d.stop()
    assert not check.exists(alive)  # queued calls are skipped at once, not after the TTL


async def test_the_enqueue_itself_renews_the_liveness_key(dispatcher: Dispatcher):
    """A Redis restarted empty, with the refresh a second away: the job must not reach a worker before the key."""
    [keepalive] = [task for task in dispatcher._tasks if task.get_name() == "dispatcher-keepalive"]
    keepalive.cancel()
    alive = keys.gateway_alive(dispatcher.gateway_ref)
    await dispatcher.redis.delete(alive)
    task = asyncio.create_task(dispatcher.call("c5", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    assert 0 < await dispatcher.redis.ttl(alive) <= ALIVE_TTL
    task.cancel()


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look for unclaimed calls after 0.1 s rather than a second, so the tests take less time."""
    monkeypatch.setattr(watchdog_module, "UNCLAIMED_LOOK_AFTER", 0.1)
    monkeypatch.setattr(watchdog_module, "DEQUEUED_GRACE", 0.1)


def take_job(d: Dispatcher) -> str:
    """What a worker's dequeue does (``BLMOVE`` to RQ's intermediate queue); the worker then dies, say."""
    queue = Queue(keys.queue_name("default"), connection=d.sync_redis)
    return d.sync_redis.lmove(queue.key, queue.intermediate_queue_key).decode()  # type: ignore[union-attr]


async def test_a_call_taken_but_never_claimed_is_queued_again(dispatcher: Dispatcher, quick_watch: None):
    spec = SPEC.model_copy(update={"timeout": 10.0})
    task = asyncio.create_task(dispatcher.call("c6", "echo", '{"x":1}', spec))
    try:
        [first] = await wait_for_job(dispatcher)
        assert take_job(dispatcher) == first.id
        [again] = await wait_for_job(dispatcher)  # the watcher ticks every 0.25 s
        assert (first.id, again.id) == tuple(keys.job_id("c6", a, dispatcher.gateway_ref) for a in (0, 1))
        assert CallJob.from_json(again.args[0]) == CallJob.from_json(first.args[0])
        assert keys.claim_of_job(again.id) == keys.claim_of_job(first.id)  # a late claim of either runs it once
        await publish(dispatcher, CallResult(call_id="c6", ok=True, content="ran"))
        assert (await asyncio.wait_for(task, 1)).content == "ran"
    finally:
        task.cancel()


@pytest.mark.parametrize("state", ["still queued", "claimed", "job lost with Redis data"])
async def test_a_call_is_not_queued_again_otherwise(dispatcher: Dispatcher, quick_watch: None, state: str):
    task = asyncio.create_task(dispatcher.call("c7", "echo", "{}", SPEC))
    try:
        [job] = await wait_for_job(dispatcher)
        if state != "still queued":
            take_job(dispatcher)
        if state == "claimed":  # by a live worker: it holds a catalog key
            await dispatcher.redis.set(keys.catalog("w-live"), "{}")
            await dispatcher.redis.set(keys.claim("c7"), "w-live")
        if state == "job lost with Redis data":  # a claim may have been lost with it: the deadline decides
            await dispatcher.redis.delete(RQJob.key_for(job.id))
        await asyncio.sleep(1.0)
        assert [j.id for j in queued_jobs(dispatcher)] == ([job.id] if state == "still queued" else [])
    finally:
        task.cancel()


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
async def test_cancelled_queued_jobs_leave_nothing_in_rq(dispatcher: Dispatcher):
    """RQ's job.cancel() kept every cancelled job in the canceled registry (and its hash): at one abandoned call
    a second that piled up for good. Now the queued job is removed entirely; the cancel marker stays."""
    tasks = [asyncio.create_task(dispatcher.call(f"gone{i}", "echo", "{}", SPEC)) for i in range(3)]
    await wait_for_job(dispatcher, 3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait(dispatcher.enqueuer.background, timeout=5)
    queue = Queue(keys.queue_name("default"), connection=dispatcher.sync_redis)
    assert queue.count == 0
    assert CanceledJobRegistry(queue=queue).count == 0
    for i in range(3):
        assert not dispatcher.sync_redis.exists(RQJob.key_for(keys.job_id(f"gone{i}")))
        assert dispatcher.sync_redis.get(keys.cancelled(f"gone{i}")) == b"1"
    # A worker finds nothing to do and nothing to trip over.
    worker = CallWorker([queue], connection=dispatcher.sync_redis, name="w-after-cancel")
    assert worker.work(burst=True) is False
    assert CanceledJobRegistry(queue=queue).count == 0


async def test_a_cancelled_job_a_worker_already_took_is_left_to_its_marker(dispatcher: Dispatcher):
    """The job was dequeued (BLMOVE) before the cancel arrived: it is not deleted under the worker, whose claim
    then finds the cancel marker and skips the call."""
    task = asyncio.create_task(dispatcher.call("taken", "echo", "{}", SPEC))
    [rq_job] = await wait_for_job(dispatcher)
    queue = Queue(keys.queue_name("default"), connection=dispatcher.sync_redis)
    dispatcher.sync_redis.lmove(queue.key, queue.intermediate_queue_key)  # what the worker's dequeue does
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait(dispatcher.enqueuer.background, timeout=5)
    assert dispatcher.sync_redis.exists(rq_job.key)
    claimed = claim(dispatcher.sync_redis, keys.cancelled("taken"), keys.claim("taken"), "w1", 60)
    assert claimed == CANCELLED


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
async def test_watcher_delivers_a_stored_result_whose_message_was_lost(dispatcher: Dispatcher):
    """Stored but never published (the message lost on a half-open subscription): the watcher's re-read finds it
    within a tick or so, long before the deadline's last look (60 s here)."""
    spec = SPEC.model_copy(update={"timeout": 60.0})
    task = asyncio.create_task(dispatcher.call("lost", "echo", "{}", spec))
    await wait_for_job(dispatcher)
    await dispatcher.redis.set(keys.result("lost"), CallResult(call_id="lost", ok=True, content="kept").to_json())
    result = await asyncio.wait_for(task, 10)
    assert result.content == "kept"


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
async def test_a_silent_subscription_is_not_subscribed(dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch):
    """/readyz reads Dispatcher.subscribed: it must turn false when the subscription stops showing life, even
    though nothing raised (a half-open connection)."""
    for _ in range(200):
        if dispatcher.subscribed:
            break
        await asyncio.sleep(0.01)
    assert dispatcher.subscribed
    silent_since = time.monotonic() - SILENCE_LIMIT - 1
    monkeypatch.setattr(dispatcher.results, "heard", silent_since)
    assert dispatcher.results.confirmed.is_set()
    assert not dispatcher.subscribed


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
async def test_job_deadlines_are_in_redis_time(dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch):
    """The gateway's clock runs 100 s slow; the deadline it writes is still Redis time + timeout."""
    real = time.time
    for _ in range(200):
        if dispatcher.clock.measured:
            break
        await asyncio.sleep(0.01)
    monkeypatch.setattr(time, "time", lambda: real() - 100)
    dispatcher.clock.update((int(real()), 0), real() - 100, real() - 100)  # as measured against the server
    task = asyncio.create_task(dispatcher.call("skewed", "echo", "{}", SPEC))
    [rq_job] = await wait_for_job(dispatcher)
    monkeypatch.undo()
    assert CallJob.from_json(rq_job.args[0]).deadline == pytest.approx(real() + SPEC.timeout, abs=1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
