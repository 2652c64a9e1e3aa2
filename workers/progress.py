"""``ctx.progress(...)``: a running function's progress reports, sent to the gateway on the call's reply channel.

A report is best effort and must never hurt the call it describes: it does not raise, it is rate-limited (a
function looping over pages cannot flood the gateway, the client and the user), cut short, and redacted like
every other text leaving the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from shared.envelopes import CallProgress
from workers.secrets import redact

log = logging.getLogger("vfg.worker")

MIN_INTERVAL = 0.5
"""Seconds between two reports of one call; reports in between are dropped (and counted)."""
MAX_MESSAGE = 200
"""Characters of a report; longer ones are cut and end with an ellipsis."""


class _Call(Protocol):
    """What a report needs from the :class:`~workers.registry.CallContext` (which owns the reporter)."""

    call_id: str
    reply_channel: str
    redis: object

    @property
    def cancelled(self) -> bool: ...


class ProgressReporter:
    """One call's progress reports: the rate limit and its counters. Safe to use from several threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self.sent = 0
        self.dropped = 0
        """Reports not sent because the previous one was too recent."""

    def send(self, call: _Call, message: str) -> bool:
        """Publish ``message`` for ``call``; True if it was handed to Redis, False (never an exception) if not."""
        if call.cancelled or not call.reply_channel:
            return False
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < MIN_INTERVAL:
                self.dropped += 1
                return False
            self._last = now
        try:
            report = CallProgress(call_id=call.call_id, message=shorten(redact(str(message))), at=time.time())
            call.redis.publish(call.reply_channel, report.to_json())  # type: ignore[attr-defined]
        except Exception as exc:  # a report must never fail the function that sends it
            log.warning("call %s: progress report not sent: %s", call.call_id, redact(f"{type(exc).__name__}: {exc}"))
            return False
        self.sent += 1
        return True


def shorten(message: str) -> str:
    """``message`` stripped and cut to :data:`MAX_MESSAGE` characters (redact first: a cut secret is no longer
    recognisable)."""
    message = message.strip()
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1].rstrip() + "…"
