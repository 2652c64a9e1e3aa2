"""CallWorker keeps RQ's job lifecycle while sending fewer round trips: jobs, registries and counters as RQ's own."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from pydantic import BaseModel
from rq import Queue, Worker
from rq.job import Job as RQJob
from rq.job import JobStatus

from shared import keys
from shared.envelopes import CallJob, CallResult
from workers import CallContext, function
from workers.callworker import START_AFTER, TEST_PAUSE_ENV, CallWorker

RUNS: list[str] = []


@function(description="echo for the CallWorker tests", name="cw_echo")
def cw_echo() -> str:
    RUNS.append("cw_echo")
    return "hi"


class ObserveArgs(BaseModel):
    wait: float = 0.0


@function(description="reports what RQ says about its own job while it runs", name="cw_observe")
def cw_observe(args: ObserveArgs, ctx: CallContext) -> dict[str, Any]:
    time.sleep(args.wait)
    rq_job = RQJob.fetch(keys.job_id(ctx.call_id), connection=ctx.redis)
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + ctx.worker_id, connection=ctx.redis)
    return {
        "status": rq_job.get_status(),
        "in_started_registry": rq_job.id in rq_job.started_job_registry.get_job_ids(),
        "worker_state": worker.get_state() if worker else None,
    }


@function(description="how many jobs wait in the queue while this call runs", name="cw_queued")
def cw_queued(ctx: CallContext) -> int:
    return int(ctx.redis.llen(Queue(keys.queue_name("default"), connection=ctx.redis).key))


def plain_rq_job(x: int) -> int:
    """Not a call: CallWorker leaves such jobs to RQ."""
    return x * 2


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def restore_signals() -> Iterator[None]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():  # RQ installs its own; give pytest its Ctrl-C back
        signal.signal(sig, handler)


def enqueue(
    queue: Queue,
    call_id: str,
    attempt: int = 0,
    name: str = "cw_echo",
    arguments: str = "{}",
    gateway: str | None = None,
) -> None:
    job = CallJob(
        call_id=call_id, name=name, arguments=arguments, reply_channel="vfg:reply:t", deadline=time.time() + 30
    )
    job_id = keys.job_id(call_id, attempt, gateway)
    queue.enqueue_call("workers.execute.run_call", args=(job.to_json(),), job_id=job_id, timeout=5, result_ttl=300)


def test_jobs_finish_with_rq_bookkeeping(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    queue = Queue(keys.queue_name("default"), connection=fake)
    for call_id in ("a", "b"):
        enqueue(queue, call_id)
    worker = CallWorker([queue], connection=fake, name="cw-1")
    worker.work(burst=True)

    for call_id in ("a", "b"):
        rq_job = queue.fetch_job(keys.job_id(call_id))
        assert rq_job is not None and rq_job.get_status() == JobStatus.FINISHED
        assert rq_job.return_value() == "ok" and rq_job.worker_name == "cw-1" and rq_job.started_at
        assert CallResult.from_json(fake.get(keys.result(call_id))).content == "hi"  # type: ignore[arg-type]
    assert set(queue.finished_job_registry.get_job_ids()) == {keys.job_id("a"), keys.job_id("b")}
    assert queue.started_job_registry.get_job_ids() == [] and queue.count == 0
    worker.refresh()
    assert worker.successful_job_count == 2


@pytest.mark.parametrize(
    ("marker", "value", "outcome"),
    [(keys.cancelled, "1", "skipped"), (keys.claim, "other-worker", "duplicate")],
    ids=["cancelled", "claimed by another worker"],
)
def test_a_cancelled_or_claimed_call_is_not_run(
    fake: fakeredis.FakeRedis, restore_signals: None, marker: Any, value: str, outcome: str
) -> None:
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "c")
    fake.set(marker("c"), value)
    RUNS.clear()
    CallWorker([queue], connection=fake, name="cw-4").work(burst=True)
    assert RUNS == [] and fake.get(keys.result("c")) is None and fake.get(marker("c")) == value.encode()
    assert queue.fetch_job(keys.job_id("c")).return_value() == outcome  # type: ignore[union-attr]


def test_a_rerun_claims_the_same_call(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "again", attempt=2)
    CallWorker([queue], connection=fake, name="cw-6").work(burst=True)
    assert fake.get(keys.claim("again")) == b"cw-6"
    assert CallResult.from_json(fake.get(keys.result("again"))).content == "hi"  # type: ignore[arg-type]


GATEWAY = keys.gateway_ref("gw-cw")


@pytest.mark.parametrize("attempt", [0, 1])
def test_a_call_whose_gateway_is_gone_is_not_run(
    fake: fakeredis.FakeRedis, restore_signals: None, attempt: int
) -> None:
    """Its gateway's liveness key expired (the gateway was killed): the claim says ORPHANED and nothing runs."""
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "orphan", attempt=attempt, gateway=GATEWAY)
    RUNS.clear()
    CallWorker([queue], connection=fake, name="cw-11").work(burst=True)
    assert RUNS == [] and fake.get(keys.result("orphan")) is None and fake.get(keys.claim("orphan")) is None
    rq_job = queue.fetch_job(keys.job_id("orphan", attempt, GATEWAY))
    assert rq_job is not None and rq_job.return_value() == "orphaned"


def test_a_call_whose_gateway_lives_is_run(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    queue = Queue(keys.queue_name("default"), connection=fake)
    fake.set(keys.gateway_alive(GATEWAY), "1", ex=5)
    enqueue(queue, "kept", gateway=GATEWAY)
    RUNS.clear()
    CallWorker([queue], connection=fake, name="cw-12").work(burst=True)
    assert RUNS == ["cw_echo"] and fake.get(keys.claim("kept")) == b"cw-12"
    assert CallResult.from_json(fake.get(keys.result("kept"))).content == "hi"  # type: ignore[arg-type]


def test_the_test_pause_before_claim_is_off_by_default(
    fake: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test-only hook (tests/faults) is read once per worker; unset or unreadable, it never sleeps."""
    queue = Queue("q", connection=fake)
    monkeypatch.delenv(TEST_PAUSE_ENV, raising=False)
    assert CallWorker([queue], connection=fake, name="cw-13").job_class.pause_before_claim == 0
    monkeypatch.setenv(TEST_PAUSE_ENV, "soon")
    assert CallWorker([queue], connection=fake, name="cw-14").job_class.pause_before_claim == 0
    monkeypatch.setenv(TEST_PAUSE_ENV, "2.5")
    assert CallWorker([queue], connection=fake, name="cw-15").job_class.pause_before_claim == 2.5


def test_other_jobs_run_the_rq_way(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    queue = Queue("plain", connection=fake)
    job = queue.enqueue(plain_rq_job, 21)
    CallWorker([queue], connection=fake, name="cw-7").work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.return_value() == 42
    assert fake.keys("vfg:claim:*") == []


def test_an_error_writing_records_is_logged_and_the_books_go_on(
    fake: fakeredis.FakeRedis, restore_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The books' thread writes RQ's records; a write that fails is logged, and later calls are still recorded."""
    queue = Queue(keys.queue_name("default"), connection=fake)
    worker = CallWorker([queue], connection=fake, name="cw-10")
    fake.set("not-a-hash", "x")
    real = worker.start_records
    broken = [True]

    def wrong_type_once(job: Any, queue: Any, started: Any, pipe: Any) -> None:
        if broken.pop() if broken else False:
            pipe.hset("not-a-hash", "f", "1")  # WRONGTYPE, reported inside EXEC
        real(job, queue, started, pipe)

    worker.start_records = wrong_type_once  # type: ignore[method-assign]
    enqueue(queue, "a")
    worker.work(burst=True)
    enqueue(queue, "b")
    worker.work(burst=True)
    assert "could not write RQ's records" in caplog.text
    assert queue.fetch_job(keys.job_id("b")).get_status() == JobStatus.FINISHED  # type: ignore[union-attr]


def test_a_long_call_shows_as_started_while_it_runs(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "long", name="cw_observe", arguments=json.dumps({"wait": START_AFTER * 5}))
    CallWorker([queue], connection=fake, name="cw-8").work(burst=True)
    seen = json.loads(CallResult.from_json(fake.get(keys.result("long"))).content)  # type: ignore[arg-type]
    assert seen == {"status": "started", "in_started_registry": True, "worker_state": "busy"}
    assert queue.fetch_job(keys.job_id("long")).get_status() == JobStatus.FINISHED  # type: ignore[union-attr]


def test_a_quick_call_is_answered_before_rq_records_its_start(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    """Its start is written with its success, after the answer, and dated when the call began."""
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "quick", name="cw_observe")
    CallWorker([queue], connection=fake, name="cw-9").work(burst=True)
    result = CallResult.from_json(fake.get(keys.result("quick")))  # type: ignore[arg-type]
    assert json.loads(result.content)["status"] == "queued"
    rq_job = queue.fetch_job(keys.job_id("quick"))
    assert rq_job is not None and rq_job.get_status() == JobStatus.FINISHED
    assert rq_job.started_at is not None and rq_job.started_at.timestamp() <= result.started_at
    assert queue.started_job_registry.get_job_ids() == [] and not fake.keys("rq:execution:*")


def test_a_worker_takes_no_more_jobs_than_it_has_free_slots(fake: fakeredis.FakeRedis, restore_signals: None) -> None:
    """Jobs a busy worker cannot start stay in the queue, for other workers."""
    queue = Queue(keys.queue_name("default"), connection=fake)
    for i in range(3):
        enqueue(queue, f"slot-{i}", name="cw_queued")
    worker = CallWorker([queue], connection=fake, name="cw-16")
    worker.concurrency = 1
    worker.work(burst=True)
    seen = [CallResult.from_json(fake.get(keys.result(f"slot-{i}"))).content for i in range(3)]  # type: ignore[arg-type]
    assert seen == ["2", "1", "0"]
