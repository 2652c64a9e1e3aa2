"""Results coming back: the reply-channel subscription, and re-reads of stored results.

Results arrive twice over: published on this process's reply channel and stored under
``keys.result(call_id)`` with a TTL. Pub/sub is at-most-once, so after every (re)subscription the listener
re-reads the stored results of every pending call, and the watchdog re-reads them every tick. The
subscription is pinged: a half-open connection (no error, no data) is noticed within :data:`SILENCE_LIMIT`
seconds, and :attr:`ResultListener.subscribed` (``/readyz``) is false meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from gateway import metrics
from shared import keys
from shared.envelopes import CallProgress, CallResult
from shared.redis_errors import REDIS_ERRORS, REDIS_FAILURES

log = logging.getLogger(__name__)

LISTEN_TICK = 0.5
"""Longest wait (s) for a pub/sub message before the listener looks at the subscription's liveness."""
PING_EVERY = 1.0
"""Seconds between PINGs on the subscription connection (its PONG proves the connection still delivers)."""
SILENCE_LIMIT = 3.0
"""Seconds without anything (a PONG, a message) on the subscription after which it counts as lost: it is
reopened, and pending calls' stored results re-read."""


class ResultListener:
    """Holds the subscription to one reply channel and hands every result it finds to ``deliver``."""

    def __init__(
        self,
        async_redis: aioredis.Redis,
        channel: str,
        deliver: Callable[[CallResult], None],
        pending_calls: Callable[[], list[str]],
        progress: Callable[[CallProgress], None] = lambda _: None,
    ) -> None:
        """``pending_calls`` lists the call ids whose stored results a (re)subscription re-reads; ``progress`` gets
        the progress reports running calls publish on the same channel."""
        self.redis = async_redis
        self.channel = channel
        self._deliver = deliver
        self._pending_calls = pending_calls
        self._progress = progress
        self.confirmed = asyncio.Event()
        """Set while the subscription is confirmed: nothing may be enqueued before (a result published before
        the subscription exists is lost)."""
        self.heard = 0.0
        """time.monotonic() when the subscription last delivered anything."""

    @property
    def subscribed(self) -> bool:
        """True while the subscription is confirmed and has shown life within :data:`SILENCE_LIMIT` seconds (a
        half-open connection keeps "subscribed" yet delivers nothing)."""
        return self.confirmed.is_set() and time.monotonic() - self.heard <= SILENCE_LIMIT

    async def listen(self) -> None:
        """Hold the subscription; after every (re)connect, re-read stored results of pending calls.

        A connection can go half-open (a NAT or load balancer forgets it, a peer vanishes without a FIN): no
        error, no data, and reading would wait forever while every call waits for its deadline. So the listener
        reads with a timeout, PINGs the subscription every :data:`PING_EVERY` seconds and gives it up after
        :data:`SILENCE_LIMIT` seconds without a PONG or a message (the confirmation of a new subscription
        included).
        """
        delay = 0.05
        while True:
            pubsub = self.redis.pubsub()
            silent = False
            try:
                await pubsub.subscribe(self.channel)
                self.heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_TICK)
                    now = time.monotonic()
                    if message is not None:
                        self.heard = now
                        if message["type"] == "message":
                            self._hand_over(message["data"])
                        elif message["type"] == "subscribe":
                            self.confirmed.set()
                            delay = 0.05
                            log.info("subscribed to %s", self.channel)
                            await self.reread()
                    if now - self.heard > SILENCE_LIMIT:
                        silent = True
                        raise redis.TimeoutError(f"nothing on the subscription for {SILENCE_LIMIT:g} s")
                    if now - pinged >= PING_EVERY:
                        await pubsub.ping()
                        pinged = now
            except REDIS_FAILURES as exc:
                metrics.redis_errors.inc()
                if self.confirmed.is_set():
                    log.warning("lost the result subscription (%s: %s); reconnecting", type(exc).__name__, exc)
                self.confirmed.clear()
                if silent:
                    # The path to Redis went quiet: idle pooled connections are likely half-open too, and each
                    # would hold a command for COMMAND_TIMEOUT. Open new ones instead.
                    with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                        async with asyncio.timeout(1):
                            await self.redis.connection_pool.disconnect(inuse_connections=False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                self.confirmed.clear()
                # Bounded: closing a half-open connection must not hold up the reconnect.
                with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                    async with asyncio.timeout(1):
                        await pubsub.aclose()

    async def reread(self, call_ids: list[str] | None = None) -> None:
        """Deliver the stored results of ``call_ids`` (default: every pending call), in one ``MGET``."""
        call_ids = self._pending_calls() if call_ids is None else call_ids
        if not call_ids:
            return
        stored = await self.redis.mget([keys.result(c) for c in call_ids])
        for raw in stored:
            if raw:
                self._hand_over(raw)

    async def stored(self, call_id: str) -> CallResult | None:
        """The stored result of ``call_id``, or None when there is none or Redis does not answer in 0.5 s."""
        try:
            async with asyncio.timeout(0.5):
                raw = await self.redis.get(keys.result(call_id))
        except (*REDIS_ERRORS, TimeoutError):
            return None
        return parse_result(raw) if raw else None

    def _hand_over(self, raw: bytes | str) -> None:
        try:
            self._deliver(CallResult.from_json(raw))
            return
        except ValidationError:
            pass
        # Not a result: a progress report (rarer, so tried second, off the results' path), or garbage.
        try:
            progress = CallProgress.from_json(raw)
        except ValidationError:
            progress = None
        if progress is not None and progress.kind == "progress":
            self._progress(progress)
        else:
            log.warning("ignoring an unreadable message on the reply channel")


def parse_result(raw: bytes | str) -> CallResult | None:
    """A result read from Redis, or None (logged) when it is unreadable."""
    try:
        return CallResult.from_json(raw)
    except ValidationError:
        log.warning("ignoring an unreadable result on the reply channel")
        return None
