"""Per-session limits that keep one client from hurting the others."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` events per second on average, with bursts up to ``burst``.

    Audio arrives as a steady 50 frames/s (20 ms chunks); a client sending far more is broken or hostile.
    """

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
