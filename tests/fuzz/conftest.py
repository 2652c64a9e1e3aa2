"""Fuzzing a real gateway: one redis-server and one set of workers for the fuzz tests; each test module starts
the gateway it needs, in front of a provider of its own that records what reached it (hostile_provider.py). Each
test records what it sent and what came back through the ``reliability`` fixture.

Nothing here wipes Redis between tests, scripts or sessions: state one session leaves behind (a stored result, a
claim, a cancel marker) must not reach another, and a wipe would hide exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from shared.envelopes import FunctionSpec
from shared.redis_server import RedisServer
from tests.fuzz.hostile_provider import HostileProvider
from tests.support.processes import Process, live_workers, start_workers
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


@pytest.fixture(scope="session")
def backend_definitions(fuzz_workers: Process, fuzz_redis: RedisServer) -> dict[str, dict[str, Any]]:
    """Name → the definition the provider must be given, for every function the fuzz workers run (read from the
    catalogs they published, not from the gateway under test)."""
    return {
        spec["name"]: FunctionSpec.model_validate(spec).definition()
        for catalog in live_workers(fuzz_redis.url)
        for spec in catalog["functions"]
    }


@pytest.fixture(scope="module")
def provider() -> Iterator[HostileProvider]:
    """A provider the module's gateway reaches as Deepgram: it plays scripts, records, or simulates."""
    hostile = HostileProvider().start()
    yield hostile
    hostile.stop()
