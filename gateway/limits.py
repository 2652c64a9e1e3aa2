"""Limits that keep one client from hurting the others: per WebSocket session, and per address over HTTP.

No I/O: the session core (``gateway.conversation``) and the HTTP routes apply them."""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from dataclasses import dataclass, field

from gateway.actions import NOTHING, Actions, Frame, ToClient
from shared.config import Config
from shared.protocol import ErrorCode, warning_frame


class TokenBucket:
    """Allows ``rate`` units per second on average, with bursts up to ``burst``.

    Counts frames (audio arrives as a steady 50 frames/s, 20 ms chunks; a client sending far more is broken or
    hostile) or bytes (``cost`` = the frame's size), so a few huge frames cannot pass where many small ones
    would not.
    """

    def __init__(self, rate: float, burst: float, clock=time.monotonic, now: float | None = None) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock() if now is None else now

    def allow(self, cost: float = 1, now: float | None = None) -> bool:
        """Take ``cost`` tokens if there are that many. ``now`` (on the bucket's clock) spares a clock read when
        the caller has the time already: the session core passes the time of the frame it judges."""
        if now is None:
            now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until the next event would be allowed (for an HTTP ``Retry-After``); at least 1."""
        self._refill()
        return max(1, math.ceil((1 - self._tokens) / self.rate))

    def idle(self) -> bool:
        """True when the bucket has refilled completely: forgetting it would change nothing."""
        self._refill()
        return self._tokens >= self.burst

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now


class ClientBudget:
    """What one session's client may send: ``CLIENT_MESSAGE_RATE`` frames and ``CLIENT_BYTE_RATE`` bytes a second,
    and, once Settings are applied, text frames of at most ``MAX_TEXT_FRAME_BYTES`` (big JSON parsed on the shared
    loop delays every session's frames). A frame over budget is dropped unread; the client hears why in a Warning
    at most once a second per reason: a flood must not get a flood back. Sans-I/O: every call gets the time."""

    def __init__(self, config: Config, now: float) -> None:
        rate, byte_rate = config.client_message_rate, config.client_byte_rate
        # Every allow() gets the frame's time: the buckets never read a clock.
        self._frames = TokenBucket(rate, 2 * rate, now=now)
        # The burst also fits the largest frame the port accepts, or such a frame could never pass.
        self._bytes = TokenBucket(byte_rate, max(2 * byte_rate, config.max_frame_bytes), now=now)
        self._max_text = config.max_text_frame_bytes
        self._too_large = f"Text frames after Settings may be at most {self._max_text} bytes; larger ones were dropped."
        self._last_error: dict[str, float] = {}
        """When each Warning code was last sent."""

    def refuse(self, frame: Frame, settings_applied: bool, now: float) -> Actions | None:
        """None when ``frame`` may pass; else what to do instead of passing it (a Warning, or nothing)."""
        size = frame_size(frame)
        if not (self._frames.allow(1, now) and self._bytes.allow(size, now)):
            return self._error(ErrorCode.RATE_LIMITED, "Too many messages or bytes; some were dropped.", now)
        if settings_applied and size > self._max_text and isinstance(frame, str):
            return self._error(ErrorCode.MESSAGE_TOO_LARGE, self._too_large, now)
        return None

    def _error(self, code: str, description: str, now: float) -> Actions:
        if now - self._last_error.get(code, float("-inf")) < 1.0:
            return NOTHING
        self._last_error[code] = now
        return (ToClient(warning_frame(code, description)),)  # the session goes on: not a (fatal) Error


@dataclass
class _Address:
    bucket: TokenBucket
    in_flight: int = 0


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted: an HTTP status, an error text, and headers such as ``Retry-After``."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


class AddressLimits:
    """Per remote address limits for ``POST /function-call``: the WebSocket's per-session limits, applied to an
    address, since an HTTP caller has no session. A request rate (token bucket, ``rate`` per second on average,
    bursts of ``burst``) and at most ``max_in_flight`` calls at once.

    Only addresses with calls in flight or a bucket still refilling are kept: an idle entry is dropped (at most
    one sweep a second), so the table is bounded by the recent request rate, not by every address ever seen.
    """

    SWEEP_INTERVAL = 1.0

    def __init__(self, rate: float, burst: float, max_in_flight: int, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = burst
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._addresses: dict[str, _Address] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._addresses)

    def request(self, address: str) -> Refusal | None:
        """Count one request from ``address`` against its rate; a refusal when over it."""
        self._sweep()
        entry = self._addresses.get(address)
        if entry is None:
            entry = self._addresses[address] = _Address(TokenBucket(self.rate, self.burst, self._clock))
        if entry.bucket.allow():
            return None
        seconds = entry.bucket.retry_after()
        return Refusal(429, "Too many requests; retry later.", {"Retry-After": str(seconds)})

    def acquire(self, address: str) -> Refusal | None:
        """Start one call for ``address``, or a refusal when it has ``max_in_flight`` already. Pair with
        :meth:`release`."""
        entry = self._addresses.get(address)
        if entry is None:  # swept between request() and here, or acquire() without request()
            entry = self._addresses[address] = _Address(TokenBucket(self.rate, self.burst, self._clock))
        if entry.in_flight >= self.max_in_flight:
            return Refusal(429, f"Too many calls pending ({self.max_in_flight}); retry later.", {"Retry-After": "1"})
        entry.in_flight += 1
        return None

    def release(self, address: str) -> None:
        entry = self._addresses.get(address)
        if entry is not None and entry.in_flight > 0:
            entry.in_flight -= 1

    def _sweep(self) -> None:
        now = self._clock()
        if now - self._swept < self.SWEEP_INTERVAL:
            return
        self._swept = now
        for address in [a for a, e in self._addresses.items() if e.in_flight == 0 and e.bucket.idle()]:
            del self._addresses[address]


def frame_size(frame: str | bytes) -> int:
    """The frame's size in bytes on the wire; cheap for the common ASCII text (no encoding, no copy)."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))


def functions_problem(functions: Sized | None, limit: int) -> str | None:
    """Why a function list is refused (None when it is not): more than ``limit`` (MAX_SETTINGS_FUNCTIONS)
    entries. For Settings' ``agent.think.functions``, and for UpdateThink's ``think.functions``, which replaces
    them: each function is merged, sent upstream and searched on every call, so the list must stay bounded."""
    if functions is not None and len(functions) > limit:
        return f"{len(functions)} functions declared; at most {limit} are allowed (MAX_SETTINGS_FUNCTIONS)."
    return None
