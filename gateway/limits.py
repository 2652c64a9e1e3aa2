"""Per-session limits that keep one client from hurting the others."""

from __future__ import annotations

import time
from collections.abc import Sized


class TokenBucket:
    """Allows ``rate`` units per second on average, with bursts up to ``burst``.

    Counts frames (audio arrives as a steady 50 frames/s, 20 ms chunks; a client sending far more is broken or
    hostile) or bytes (``cost`` = the frame's size), so a few huge frames cannot pass where many small ones
    would not.
    """

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def allow(self, cost: float = 1) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


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
