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

from gateway.dispatcher import REDIS_CONNECTIONS, CPacking, Dispatcher
from shared import keys
from shared.config import Config
from shared.envelopes import JOB_FUNCTION, FunctionSpec, Job, Result

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
    task = asyncio.create_task(dispatcher.call("c1", "echo", '{"text":"hi"}', SPEC, session_id="s1", principal="alice"))
    [rq_job] = await wait_for_job(dispatcher)
    assert rq_job.id == keys.job_id("c1")
    assert rq_job.func_name == JOB_FUNCTION
    job = Job.from_json(rq_job.args[0])
    assert (job.call_id, job.name, job.arguments, job.session_id) == ("c1", "echo", '{"text":"hi"}', "s1")
    assert job.reply_channel == keys.reply_channel("gw-test")
    assert job.principal == "alice"  # the verified caller travels to the worker's CallContext
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
    assert RQJob.fetch(keys.job_id("slow"), connection=dispatcher._sync).get_status() == JobStatus.CANCELED
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
