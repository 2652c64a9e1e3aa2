"""Fault injection against real processes: every test builds its own redis-server, workers and gateway, because
it breaks them (kills workers, restarts Redis, terminates the gateway) and must not disturb other tests.

Each test records what it did and saw through the ``reliability`` fixture (``tests/support/reliability.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_server import RedisServer
from tests.support.reliability import record_outcome, reliability  # noqa: F401 - the fixture is used by name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    record_outcome(item, report)
    return report


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-logs")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    with RedisServer() as server:
        yield server
