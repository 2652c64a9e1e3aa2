"""Real components: a redis-server process, `python -m workers` and `python -m gateway` subprocesses.

They are started once per test session; tests that break something (kill a worker) leave the system as they
found it or start their own processes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from shared.redis_server import RedisServer
from tests.support.client import AgentClient
from tests.support.processes import Gateway, Process, running_gateway, start_workers

CANARY = "demo-canary-" + secrets.token_hex(8)
"""The worker's WEATHER_API_KEY: starts with "demo" (offline data) and is unique, so a leak is detectable."""
CANARY_FINGERPRINT = hashlib.sha256(CANARY.encode()).hexdigest()[:12]


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def workers(redis_server: RedisServer, logs_dir: Path) -> Iterator[Process]:
    proc = start_workers(redis_server.url, logs_dir / "workers.log", processes=2, WEATHER_API_KEY=CANARY)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="session")
def gateway(redis_server: RedisServer, workers: Process, logs_dir: Path) -> Iterator[Gateway]:
    # Without a re-attach window a client's leaving ends its session at once, as the tests here expect;
    # test_resume.py runs gateways with one.
    with running_gateway(redis_server.url, logs_dir / "gateway.log", KEEPALIVE_INTERVAL="1", RESUME_GRACE="0") as gw:
        yield gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AgentClient]:
    c = await AgentClient.connect(gateway.url)
    yield c
    await c.close()
