"""The Redis server's clock, as one process sees it: call deadlines are written and read in Redis time.

A gateway stamps each call with a deadline and a worker on another machine decides from it whether anyone still
waits for the answer. If both used their own ``time.time()``, a worker whose clock runs a few seconds fast would
skip calls that still had time left, and a slow one would run calls long abandoned. Both sides already share one
clock they can read: the Redis server's (``TIME``). Each process measures its offset to it now and then (the
gateway in a background task, a worker in its catalog heartbeat's pipeline), so reading "Redis time" costs no
round trip on the path of a call.

The offset is the server's time minus the midpoint of the local times before and after the ``TIME`` reply; its
error is at most half a round trip (well under a millisecond on a LAN), small against deadlines of seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from shared.redis_errors import REDIS_FAILURES

log = logging.getLogger(__name__)

REFRESH_EVERY = 30.0
"""Seconds between a gateway's offset measurements: clocks drift by milliseconds a day, NTP steps are rare."""


class RedisClock:
    """Local wall-clock time corrected by a measured offset to the Redis server's clock.

    Until the first successful measurement the offset is 0: the clocks are then assumed to agree, which is what
    the system did before it measured anything.
    """

    def __init__(self, local: Callable[[], float] | None = None) -> None:
        self._clock = local  # None: time.time, looked up at each read so tests can skew it
        self.offset = 0.0
        """Redis time minus local time, in seconds."""
        self.measured = False

    def _local(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def now(self) -> float:
        """The Redis server's Unix time, estimated locally (no round trip)."""
        return self._local() + self.offset

    def to_local(self, redis_time: float) -> float:
        """A Redis-time instant (a call's deadline) on this process's ``time.time()`` scale."""
        return redis_time - self.offset

    def update(self, reply: Sequence[Any], sent: float, received: float) -> None:
        """Take a ``TIME`` reply (seconds, microseconds) read between local instants ``sent`` and ``received``."""
        server = int(reply[0]) + int(reply[1]) / 1_000_000
        self.offset = server - (sent + received) / 2
        self.measured = True

    def measure(self, client: redis.Redis) -> bool:
        """Measure the offset with ``client`` (synchronous); False, offset unchanged, when Redis cannot tell."""
        try:
            sent = self._local()
            reply = client.time()
            self.update(reply, sent, self._local())
            return True
        except REDIS_FAILURES as exc:
            self._failed(exc)
        return False

    async def ameasure(self, client: Any) -> bool:
        """:meth:`measure` with an asyncio client."""
        try:
            sent = self._local()
            reply = await client.time()
            self.update(reply, sent, self._local())
            return True
        except REDIS_FAILURES as exc:
            self._failed(exc)
        return False

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, redis.ResponseError):  # a server or proxy without TIME: keep assuming the clocks agree
            log.debug("the Redis server does not answer TIME; assuming its clock agrees with ours")
        else:
            log.info("could not read the Redis clock (%s); keeping offset %.3f s", type(exc).__name__, self.offset)


CLOCK = RedisClock()
"""This process's view of the Redis clock, shared by a worker's heartbeat (which measures) and its calls (which
read). A gateway's dispatcher keeps its own instance."""
