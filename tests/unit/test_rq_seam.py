"""The RQ seam (gateway/rq_enqueue.py, workers/rq_records.py): what the gateway and CallWorker write in Redis is
what RQ's own enqueue and RQ's own worker write. These tests cover the RQ minor version pyproject.toml pins;
docs/ARCHITECTURE.md ("Moving to a new RQ version") says what to do when one fails after an upgrade."""

from __future__ import annotations

import re
import time
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import rq
from packaging.specifiers import SpecifierSet
from rq import Queue, SimpleWorker
from rq.job import JobStatus
from rq.results import Result as RQResult
from rq.worker import WorkerStatus

from gateway.redis_pool import transaction
from gateway.rq_enqueue import RQEnqueue, job_key, queue_key
from shared import keys
from shared.envelopes import JOB_FUNCTION, CallJob, FunctionSpec
from tests.unit.test_call_worker import enqueue, fake, restore_signals  # noqa: F401 - shared fixtures
from workers import execute
from workers.callworker import CallWorker
from workers.rq_records import HEARTBEAT_EVERY

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_rq_is_the_pinned_minor_version() -> None:
    """The parity tests below cover one RQ minor version: the pin in pyproject.toml names it."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if re.match(r"rq\b", d)]
    assert rq.__version__ in SpecifierSet(pin.removeprefix("rq").split(";")[0])


def _shape(db: fakeredis.FakeRedis, worker: str) -> dict[str, Any]:
    """What a run leaves in Redis, with ids replaced by placeholders: key names and each hash's field names."""
    shape: dict[str, Any] = {}
    for raw in db.keys("rq:*"):
        key = raw.decode().replace(worker, "<worker>")
        key = re.sub(r"[0-9a-f]{32}", "<execution>", key)
        kind = db.type(raw).decode()
        shape[key] = sorted(f.decode() for f in db.hkeys(raw)) if kind == "hash" else kind
    return shape


def test_rq_sees_the_same_records_as_from_its_own_worker(restore_signals: None) -> None:  # noqa: F811
    """Every key and hash field RQ's SimpleWorker leaves behind after a call, CallWorker leaves too."""
    shapes, returns = [], []
    for worker_class in (SimpleWorker, CallWorker):
        db = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        queue = Queue(keys.queue_name("default"), connection=db)
        enqueue(queue, "same")
        worker_class([queue], connection=db, name="w-1").work(burst=True)
        shapes.append(_shape(db, "w-1"))
        rq_job = queue.fetch_job(keys.job_id("same"))
        assert rq_job is not None
        returns.append((rq_job.get_status(), rq_job.return_value(), rq_job.latest_result().type))  # type: ignore[union-attr]
    assert shapes[1] == shapes[0]
    assert returns[1] == returns[0] == (JobStatus.FINISHED, "ok", RQResult.Type.SUCCESSFUL)


TIMESTAMPS = {"created_at", "enqueued_at"}


def _contents(db: redis.Redis) -> dict[str, Any]:
    """Every key with its type, its value (hash fields other than timestamps; list items) and whether it expires."""
    seen: dict[str, Any] = {}
    for raw in db.keys("*"):
        kind = db.type(raw).decode()
        if kind == "hash":
            value: Any = {k.decode(): v for k, v in db.hgetall(raw).items() if k.decode() not in TIMESTAMPS}
        elif kind == "list":
            value = db.lrange(raw, 0, -1)
        else:
            value = kind
        seen[raw.decode()] = (value, db.ttl(raw) > 0)
    return seen


async def test_the_gateways_enqueue_writes_what_rqs_own_enqueue_writes() -> None:
    """The gateway replays the commands RQ queues on a pipeline it never sends (no I/O: its client points at a
    closed port); what lands in Redis is what RQ's own enqueue writes, and the job names ``run_call``."""
    spec = FunctionSpec(name="echo", description="", parameters={"type": "object"}, timeout=2.5)
    job = CallJob(call_id="c1", name="echo", arguments="{}", reply_channel="vfg:reply:g", deadline=time.time() + 60)
    job_id = keys.job_id("c1")

    own = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    Queue(keys.queue_name("default"), connection=own).enqueue_call(
        "workers.execute.run_call",
        args=(job.to_json(),),
        job_id=job_id,
        timeout=3,
        ttl=4,
        result_ttl=60,
        failure_ttl=60,
        description="echo (c1)",
    )

    server = fakeredis.FakeServer()
    replayed = fakeredis.aioredis.FakeRedis(server=server)
    seam = RQEnqueue(redis.Redis.from_url("redis://127.0.0.1:1/0"), result_ttl=60)
    queue = await seam.queue("default", replayed)
    await transaction(replayed, seam.commands(queue, job, spec, job_id))

    written = fakeredis.FakeRedis(server=server)
    assert _contents(written) == _contents(own)
    assert queue_key("default") in _contents(written) and job_key(job_id) in _contents(written)
    assert f"{execute.run_call.__module__}.{execute.run_call.__qualname__}" == JOB_FUNCTION
    await replayed.aclose()


async def test_the_server_version_is_read_once_per_queue() -> None:
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    seam = RQEnqueue(redis.Redis.from_url("redis://127.0.0.1:1/0"), result_ttl=60)
    first = await seam.queue("default", client)
    assert first.redis_server_version is not None  # RQ would otherwise ask the server, on the sync client
    assert await seam.queue("default", client) is first
    await client.aclose()


def test_callworker_runs_a_call_with_the_claim_it_made(
    fake: fakeredis.FakeRedis,  # noqa: F811
    restore_signals: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call is claimed once, in the fetch, and runs with that claim: nothing claims it again (``run_call``,
    the job's function under RQ's own worker, is not what runs it: CallWorker runs calls concurrently)."""
    claims: list[str] = []
    real_claim = execute.claim

    def claim(*args: Any, **kwargs: Any) -> Any:
        claims.append(args[2])
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(execute, "claim", claim)
    queue = Queue(keys.queue_name("default"), connection=fake)
    enqueue(queue, "named")
    CallWorker([queue], connection=fake, name="cw-seam").work(burst=True)
    assert claims == []  # claimed once, in the fetch (workers.rq_records.ClaimingJob), not again
    assert queue.fetch_job(keys.job_id("named")).return_value() == "ok"  # type: ignore[union-attr]
    assert fake.get(keys.claim("named")) == b"cw-seam"


def test_heartbeat_is_sent_at_most_once_a_second(fake: fakeredis.FakeRedis) -> None:  # noqa: F811
    worker = CallWorker([Queue("q", connection=fake)], connection=fake, name="cw-2")
    worker.register_birth()
    first = worker.last_heartbeat
    worker.heartbeat()
    assert worker.last_heartbeat == first  # just born: nothing sent
    worker.last_heartbeat = first - timedelta(seconds=HEARTBEAT_EVERY + 1)
    fake.expire(worker.key, 5)
    worker.heartbeat()
    assert worker.last_heartbeat > first and fake.ttl(worker.key) > 60  # sent, and the key's expiry extended


def test_unchanged_state_is_not_written_again(fake: fakeredis.FakeRedis) -> None:  # noqa: F811
    worker = CallWorker([Queue("q", connection=fake)], connection=fake, name="cw-3")
    worker.register_birth()
    worker.set_state(WorkerStatus.IDLE)
    fake.hset(worker.key, "state", "tampered")
    worker.set_state(WorkerStatus.IDLE)
    assert fake.hget(worker.key, "state") == b"tampered"  # same state: no write
    worker.set_state(WorkerStatus.BUSY)
    assert fake.hget(worker.key, "state") == b"busy"
