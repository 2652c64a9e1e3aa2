"""CallWorker keeps RQ's job lifecycle while sending fewer round trips: jobs, registries and counters as RQ's own."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus
from rq.worker import WorkerStatus

from shared import keys
from shared.envelopes import Job, Result
from workers import function
from workers.callworker import HEARTBEAT_EVERY, CallWorker


@function(description="echo for the CallWorker tests", name="cw_echo")
def cw_echo() -> str:
    return "hi"


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def restore_signals() -> Iterator[None]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():  # RQ installs its own; give pytest its Ctrl-C back
        signal.signal(sig, handler)


def enqueue(queue: Queue, call_id: str) -> None:
    job = Job(call_id=call_id, name="cw_echo", arguments="{}", reply_channel="vfg:reply:t", deadline=time.time() + 30)
    queue.enqueue_call("workers.execute.run_call", args=(job.to_json(),), job_id=keys.job_id(call_id), timeout=5)


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
        assert Result.from_json(fake.get(keys.result(call_id))).content == "hi"  # type: ignore[arg-type]
    assert set(queue.finished_job_registry.get_job_ids()) == {keys.job_id("a"), keys.job_id("b")}
    assert queue.started_job_registry.get_job_ids() == [] and queue.count == 0
    worker.refresh()
    assert worker.successful_job_count == 2


def test_heartbeat_is_sent_at_most_once_a_second(fake: fakeredis.FakeRedis) -> None:
    worker = CallWorker([Queue("q", connection=fake)], connection=fake, name="cw-2")
    worker.register_birth()
    first = worker.last_heartbeat
    worker.heartbeat()
    assert worker.last_heartbeat == first  # just born: nothing sent
    worker.last_heartbeat = first - timedelta(seconds=HEARTBEAT_EVERY + 1)
    fake.expire(worker.key, 5)
    worker.heartbeat()
    assert worker.last_heartbeat > first and fake.ttl(worker.key) > 60  # sent, and the key's expiry extended


def test_unchanged_state_is_not_written_again(fake: fakeredis.FakeRedis) -> None:
    worker = CallWorker([Queue("q", connection=fake)], connection=fake, name="cw-3")
    worker.register_birth()
    worker.set_state(WorkerStatus.IDLE)
    fake.hset(worker.key, "state", "tampered")
    worker.set_state(WorkerStatus.IDLE)
    assert fake.hget(worker.key, "state") == b"tampered"  # same state: no write
    worker.set_state(WorkerStatus.BUSY)
    assert fake.hget(worker.key, "state") == b"busy"
