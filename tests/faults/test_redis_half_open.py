"""A half-open connection between the gateway and Redis: no error, no data.

A NAT or load balancer that forgets a flow, or a peer that vanishes without a FIN, leaves a TCP connection that
accepts writes and never delivers anything. Before issue 12 the result subscription then looked healthy for
ever: ``/readyz`` stayed green and every call waited for its deadline (its published result lost).

The gateway here reaches the real redis-server through a TCP proxy run by the test, which can black-hole every
connection open at that moment (it keeps reading and drops the bytes, never closes), and new ones while the
"network" is partitioned. The workers talk to Redis directly and keep working throughout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from gateway.server import Gateway
from shared import keys
from shared.config import Config
from shared.redis_server import RedisServer
from tests.faults.helpers import stop_all
from tests.support.processes import start_workers
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

DEADLINE = 30.0
"""The calls' deadline: long, so that an answer "well before it" cannot be the deadline's last look."""
NOTICE_BOUND = 8.0
"""Seconds within which the gateway must see that its subscription is dead (the design: ~3.5 s)."""
RECOVERY_BOUND = 15.0
"""Seconds after the network heals within which the call whose result was published meanwhile is answered."""


class _Link:
    """One proxied connection; ``dead`` makes it a black hole (bytes read and dropped, nothing closed)."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.dead = False


class FreezableProxy:
    """Forwards TCP connections to Redis until :meth:`partition`; after :meth:`heal` new connections work again
    while the ones open during the partition stay black holes (half-open for good, as after a lost NAT entry)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[_Link] = set()
        self.partitioned = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FreezableProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def partition(self) -> None:
        self.partitioned = True
        for link in self.links:
            link.dead = True

    def heal(self) -> None:
        self.partitioned = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link(writer, up_writer)
        link.dead = self.partitioned
        self.links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, link, close_when_dead=True),  # the gateway closed: tell Redis
                self._pipe(up_reader, writer, link, close_when_dead=False),  # a black hole tells the gateway nothing
            )
        finally:
            self.links.discard(link)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, close_when_dead: bool) -> None:
        try:
            while data := await src.read(65536):
                if not link.dead:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        if close_when_dead or not link.dead:
            dst.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            link.client.close()
            link.upstream.close()


async def within(predicate: Callable[[], object], seconds: float, what: str) -> float:
    """Wait until ``predicate()`` is true (polled, awaiting coroutines); return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds:g} s: {what}")


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
async def test_half_open_subscription(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """The gateway's Redis connections turn half-open mid-call; workers keep running"""
    proxy = await FreezableProxy(redis_server.port).start()
    workers = start_workers(redis_server.url, logs_dir / "half-open-workers.log", processes=1)
    direct = redis.Redis.from_url(redis_server.url)
    gateway = Gateway(Config(redis_url=proxy.url))
    dispatcher = gateway.dispatcher
    await dispatcher.start()
    try:
        await within(lambda: dispatcher.subscribed, 10, "the first subscription")
        spec = (await gateway.catalog.functions())["slow_echo"].model_copy(update={"timeout": DEADLINE})

        # A call is running on the worker when the gateway's connections go half-open.
        started = time.monotonic()
        arguments = json.dumps({"text": "during", "seconds": 1.0})
        during = asyncio.create_task(dispatcher.call("half-open-1", "slow_echo", arguments, spec))
        await within(lambda: direct.exists(keys.claim("half-open-1")), 10, "the worker to claim the call")
        proxy.partition()
        partitioned = time.monotonic()
        noticed = await within(lambda: not dispatcher.subscribed, NOTICE_BOUND, "Dispatcher.subscribed to turn false")
        ready_during, readiness = await gateway.readiness()
        # The worker finished meanwhile: its result is stored, and its pub/sub message went into the black hole.
        await within(lambda: direct.exists(keys.result("half-open-1")), 10, "the worker to store its result")

        proxy.heal()  # new connections work; those opened before stay black holes
        healed = time.monotonic()
        result = await asyncio.wait_for(during, RECOVERY_BOUND)
        answered = time.monotonic()
        await within(lambda: dispatcher.subscribed, 10, "a new subscription")
        ready_after = await within(lambda: _ready(gateway), 10, "/readyz to be green again")
        after = await asyncio.wait_for(
            dispatcher.call("half-open-2", "slow_echo", json.dumps({"text": "after"}), spec), RECOVERY_BOUND
        )

        reliability.tried = (
            "every connection from the gateway to Redis black-holed (open, silent) while a call ran on a worker "
            "that reaches Redis directly; new connections refused service until the network healed, the old ones "
            "stayed half-open for good"
        )
        reliability.happened = (
            f"the gateway saw its subscription dead {noticed:.1f} s into the partition (/readyz 503 then); the "
            f"call whose result was published into the black hole was answered {answered - healed:.1f} s after "
            f"the network healed ({answered - started:.1f} s after it started, deadline {DEADLINE:g} s); a new "
            f"call afterwards: {'ok' if after.ok else 'error'}"
        )
        reliability.figures.update(
            subscription_dead_after_s=round(noticed, 2),
            readyz_during=ready_during,
            answered_after_heal_s=round(answered - healed, 2),
            answered_after_start_s=round(answered - started, 2),
            partition_s=round(healed - partitioned, 2),
            ready_again_after_s=round(ready_after, 2),
        )
        assert not ready_during and readiness["subscribed"] is False
        assert result.ok and json.loads(result.content) == {"echo": "during"}, result
        assert answered - started < DEADLINE / 2
        assert after.ok and json.loads(after.content) == {"echo": "after"}, after
    finally:
        await dispatcher.stop()
        await proxy.close()
        direct.close()
        await stop_all(workers)


async def _ready(gateway: Gateway) -> bool:
    return (await gateway.readiness())[0]
