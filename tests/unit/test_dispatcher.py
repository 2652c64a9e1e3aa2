"""Dispatcher logic on fakeredis: enqueue, result delivery, deadline, cancellation, duplicates, re-reads."""

from __future__ import annotations

import asyncio
import json
import time

import fakeredis
import pytest
import redis.asyncio
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import CanceledJobRegistry

from gateway.dispatcher import REDIS_CONNECTIONS, SILENCE_LIMIT, CPacking, Dispatcher
from shared import keys
from shared.config import Config
from shared.envelopes import JOB_FUNCTION, FunctionSpec, Job, Result
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
    return Queue(keys.queue_name("default"), connection=d._sync).get_jobs()


async def wait_for_job(d: Dispatcher, count: int = 1) -> list[RQJob]:
    for _ in range(200):
        jobs = queued_jobs(d)
        if len(jobs) >= count:
            return jobs
        await asyncio.sleep(0.01)
    raise AssertionError("job was not enqueued")


async def publish(d: Dispatcher, result: Result, store: bool = True) -> None:
    if store:
        await d.redis.set(keys.result(result.call_id), result.to_json(), ex=60)
    await d.redis.publish(d.channel, result.to_json())


async def test_call_enqueues_rq_job_and_returns_published_result(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c1", "echo", '{"text":"hi"}', SPEC, session_id="s1"))
    [rq_job] = await wait_for_job(dispatcher)
    assert rq_job.id == keys.job_id("c1")
    assert rq_job.func_name == JOB_FUNCTION
    job = Job.from_json(rq_job.args[0])
    assert (job.call_id, job.name, job.arguments, job.session_id) == ("c1", "echo", '{"text":"hi"}', "s1")
    assert job.reply_channel == keys.reply_channel("gw-test")
    assert job.deadline == pytest.approx(time.time() + SPEC.timeout, abs=0.5)
    await publish(dispatcher, Result(call_id="c1", ok=True, content='{"echo":"hi"}', worker_id="w1"))
    result = await asyncio.wait_for(task, 1)
    assert (result.ok, result.content, result.worker_id) == (True, '{"echo":"hi"}', "w1")
    assert dispatcher.pending == 0


async def test_results_for_other_calls_are_ignored(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c1", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    await publish(dispatcher, Result(call_id="other", ok=True, content="1"))
    await dispatcher.redis.publish(dispatcher.channel, b"not json")
    await asyncio.sleep(0.05)
    assert not task.done()
    await publish(dispatcher, Result(call_id="c1", ok=True, content="2"))
    assert (await asyncio.wait_for(task, 1)).content == "2"


async def test_deadline_gives_error_result_and_cancels_job(dispatcher: Dispatcher):
    spec = SPEC.model_copy(update={"timeout": 0.3})
    started = time.monotonic()
    result = await dispatcher.call("slow", "echo", "{}", spec)
    assert 0.25 < time.monotonic() - started < 1.5
    assert not result.ok
    assert json.loads(result.content) == {"error": "echo did not finish within 0.3 s."}
    await asyncio.sleep(0.1)  # the cancellation runs in the background
    assert await dispatcher.redis.get(keys.cancelled("slow")) == b"1"
    assert not await dispatcher.redis.exists(RQJob.key_for(keys.job_id("slow")))  # deleted, not left CANCELED
    assert dispatcher.pending == 0


async def test_deadline_prefers_a_stored_result(dispatcher: Dispatcher):
    spec = SPEC.model_copy(update={"timeout": 0.2})
    task = asyncio.create_task(dispatcher.call("late", "echo", "{}", spec))
    await wait_for_job(dispatcher)
    # Stored but never published (a pub/sub message lost): the final look at the deadline finds it.
    await dispatcher.redis.set(keys.result("late"), Result(call_id="late", ok=True, content="x").to_json())
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
    await publish(dispatcher, Result(call_id="dup", ok=True, content="once"))
    assert [r.content for r in await asyncio.gather(first, second)] == ["once", "once"]


async def test_reread_after_reconnect_delivers_stored_results(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.call("c3", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    await dispatcher.redis.set(keys.result("c3"), Result(call_id="c3", ok=True, content="stored").to_json())
    await dispatcher._reread_pending()
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
    assert Queue(keys.queue_name("default"), connection=d._sync).count == 0
    await d.stop()


async def test_redis_connections_are_waited_for_not_refused() -> None:
    """Past REDIS_CONNECTIONS commands in flight a call waits for a connection: the default pool raised at once,
    and under overload every enqueue retried in a loop (19,000 MaxConnectionsError warnings in one bench run)."""
    dispatcher = Dispatcher(Config(redis_url="redis://127.0.0.1:1/0"))
    pool = dispatcher.redis.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert pool.max_connections == REDIS_CONNECTIONS and pool.timeout is None
    assert issubclass(pool.connection_class, CPacking)
    await dispatcher.redis.aclose(close_connection_pool=True)
    dispatcher._sync.close()


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "k", "v", "EX", 300),
        ("HSET", "rq:job:fc-1", "status", JobStatus.QUEUED, "data", b"\x00\xffbinary", "score", 1.5),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        ("PUBLISH", "vfg:reply:g", "é✓ unicode"),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(command: tuple) -> None:
    ours = CPacking().pack_command(*command)
    assert b"".join(ours) == b"".join(redis.asyncio.Connection().pack_command(*command))


def test_a_value_redis_cannot_take_is_refused_as_redis_py_refuses_it() -> None:
    with pytest.raises(redis.DataError):
        CPacking().pack_command("SET", "k", None)


async def test_cancelled_queued_jobs_leave_nothing_in_rq(dispatcher: Dispatcher):
    """RQ's job.cancel() kept every cancelled job in the canceled registry (and its hash): at one abandoned call
    a second that piled up for good. Now the queued job is removed entirely; the cancel marker stays."""
    tasks = [asyncio.create_task(dispatcher.call(f"gone{i}", "echo", "{}", SPEC)) for i in range(3)]
    await wait_for_job(dispatcher, 3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait(dispatcher._background, timeout=5)
    queue = Queue(keys.queue_name("default"), connection=dispatcher._sync)
    assert queue.count == 0
    assert CanceledJobRegistry(queue=queue).count == 0
    for i in range(3):
        assert not dispatcher._sync.exists(RQJob.key_for(keys.job_id(f"gone{i}")))
        assert dispatcher._sync.get(keys.cancelled(f"gone{i}")) == b"1"
    # A worker finds nothing to do and nothing to trip over.
    worker = CallWorker([queue], connection=dispatcher._sync, name="w-after-cancel")
    assert worker.work(burst=True) is False
    assert CanceledJobRegistry(queue=queue).count == 0


async def test_a_cancelled_job_a_worker_already_took_is_left_to_its_marker(dispatcher: Dispatcher):
    """The job was dequeued (BLMOVE) before the cancel arrived: it is not deleted under the worker, whose claim
    then finds the cancel marker and skips the call."""
    task = asyncio.create_task(dispatcher.call("taken", "echo", "{}", SPEC))
    [rq_job] = await wait_for_job(dispatcher)
    queue = Queue(keys.queue_name("default"), connection=dispatcher._sync)
    dispatcher._sync.lmove(queue.key, queue.intermediate_queue_key)  # what the worker's dequeue does
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait(dispatcher._background, timeout=5)
    assert dispatcher._sync.exists(rq_job.key)
    claimed = claim(dispatcher._sync, keys.cancelled("taken"), keys.claim("taken"), "w1", 60)
    assert claimed == CANCELLED


async def test_watcher_delivers_a_stored_result_whose_message_was_lost(dispatcher: Dispatcher):
    """Stored but never published (the message lost on a half-open subscription): the watcher's re-read finds it
    within a tick or so, long before the deadline's last look (60 s here)."""
    spec = SPEC.model_copy(update={"timeout": 60.0})
    task = asyncio.create_task(dispatcher.call("lost", "echo", "{}", spec))
    await wait_for_job(dispatcher)
    await dispatcher.redis.set(keys.result("lost"), Result(call_id="lost", ok=True, content="kept").to_json())
    result = await asyncio.wait_for(task, 10)
    assert result.content == "kept"


async def test_a_silent_subscription_is_not_subscribed(dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch):
    """/readyz reads Dispatcher.subscribed: it must turn false when the subscription stops showing life, even
    though nothing raised (a half-open connection)."""
    for _ in range(200):
        if dispatcher.subscribed:
            break
        await asyncio.sleep(0.01)
    assert dispatcher.subscribed
    silent_since = time.monotonic() - SILENCE_LIMIT - 1
    monkeypatch.setattr(dispatcher, "_heard", silent_since)
    assert dispatcher._subscribed.is_set()
    assert not dispatcher.subscribed


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
    assert Job.from_json(rq_job.args[0]).deadline == pytest.approx(real() + SPEC.timeout, abs=1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
