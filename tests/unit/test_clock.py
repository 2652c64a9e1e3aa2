"""shared.clock: the offset to the Redis server's clock, measured by gateways and by workers' heartbeats."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import fakeredis
import pytest
import redis

from shared.clock import CLOCK, RedisClock
from shared.config import Config
from workers import worker as worker_module
from workers.worker import CatalogHeartbeat


class ServerAt:
    """A client whose ``TIME`` answers ``now()`` (the Redis server's clock); ``fail`` raises instead."""

    def __init__(self, now=time.time, fail: Exception | None = None) -> None:  # type: ignore[no-untyped-def]
        self.now, self.fail = now, fail

    def time(self) -> tuple[int, int]:
        if self.fail is not None:
            raise self.fail
        t = self.now()
        return int(t), int(t % 1 * 1_000_000)


@pytest.fixture
def process_clock() -> Iterator[None]:
    """Tests that measure the process-wide CLOCK put it back as it was."""
    saved = (CLOCK.offset, CLOCK.measured)
    yield
    CLOCK.offset, CLOCK.measured = saved


def test_offset_is_server_time_minus_the_midpoint_of_the_round_trip():
    clock = RedisClock(local=lambda: 1000.0)
    clock.update((1100, 500_000), sent=999.0, received=1001.0)
    assert clock.offset == pytest.approx(100.5)
    assert clock.now() == pytest.approx(1100.5)
    assert clock.to_local(1105.5) == pytest.approx(1005.0)


@pytest.mark.parametrize("skew", [-3600.0, -7.5, 0.0, 42.0])
def test_measure_against_a_server_whose_clock_differs(skew: float):
    local = time.time
    clock = RedisClock(local=lambda: local() + skew)  # this process's clock is off by `skew`
    assert clock.measure(ServerAt()) and clock.measured
    assert clock.offset == pytest.approx(-skew, abs=0.05)
    assert clock.now() == pytest.approx(time.time(), abs=0.05)


def test_fakeredis_answers_time():
    clock = RedisClock()
    assert clock.measure(fakeredis.FakeRedis())
    assert clock.offset == pytest.approx(0, abs=0.05)


async def test_async_measure():
    clock = RedisClock(local=lambda: time.time() - 30)
    client = fakeredis.aioredis.FakeRedis()
    assert await clock.ameasure(client)
    assert clock.offset == pytest.approx(30, abs=0.05)
    await client.aclose()


def test_a_server_without_time_means_the_clocks_are_assumed_to_agree():
    clock = RedisClock()
    assert not clock.measure(ServerAt(fail=redis.ResponseError("unknown command 'TIME'")))
    assert (clock.offset, clock.measured) == (0.0, False)


def test_redis_down_keeps_the_last_offset():
    clock = RedisClock()
    clock.offset, clock.measured = 12.0, True
    assert not clock.measure(ServerAt(fail=redis.ConnectionError("down")))
    assert (clock.offset, clock.measured) == (12.0, True)


def test_the_catalog_heartbeat_measures_the_worker_clock(monkeypatch: pytest.MonkeyPatch, process_clock: None):
    """The worker's offset rides in its catalog heartbeat's pipeline (no round trip of its own)."""
    real = time.time
    heartbeat = CatalogHeartbeat(Config(), "w-clock")
    heartbeat.redis = fakeredis.FakeRedis()  # its TIME reads the real clock
    monkeypatch.setattr(worker_module, "time", SimpleNamespace(time=lambda: real() + 50))  # the worker's is fast
    CLOCK.offset, CLOCK.measured = 0.0, False
    heartbeat.publish()
    assert CLOCK.measured
    assert CLOCK.offset == pytest.approx(-50, abs=0.5)
    assert heartbeat.redis.exists("vfg:catalog:w-clock")
