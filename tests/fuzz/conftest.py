"""Fuzzing a real gateway: one redis-server and one set of workers for the fuzz tests; each test module starts
the gateway it needs. Each test records what it sent and what came back through the ``reliability`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from shared.redis_server import RedisServer
from tests.support.processes import Process, start_workers
from tests.support.reliability import ROOT, reliability  # noqa: F401 - the fixture (the hook is in tests/conftest.py)

# Hypothesis keeps a cache (and, when enabled, an example database) in a directory of its own; keep it with the
# other test outputs rather than at the repository root. The fuzz tests run derandomized, without a database.
set_hypothesis_home_dir(str(ROOT / "test-artifacts" / "hypothesis"))


@pytest.fixture(scope="session")
def fuzz_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-logs")


@pytest.fixture(scope="session")
def fuzz_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def fuzz_workers(fuzz_redis: RedisServer, fuzz_logs: Path) -> Iterator[Process]:
    proc = start_workers(fuzz_redis.url, fuzz_logs / "workers.log", processes=2)
    yield proc
    assert proc.stop() == 0, proc.log()
