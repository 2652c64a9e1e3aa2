"""Fault injection against real processes: every test builds its own redis-server, workers and gateway, because
it breaks them (kills workers, restarts Redis, terminates the gateway) and must not disturb other tests.

Each test records what it did and saw through the ``reliability`` fixture (``tests/support/reliability.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_server import RedisServer
from tests.support.reliability import reliability  # noqa: F401 - the fixture (the hook is in tests/conftest.py)


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-logs")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    with RedisServer() as server:
        yield server
