"""Test-only backend functions for concurrent workers (``WORKER_MODULES=...,tests.support.concurrency``): they
report how many calls of the process ran at once, see cancellation, and share a module-level async object the
way a real module shares one ``httpx.AsyncClient``. Never list this module in production."""

from __future__ import annotations

import asyncio
import threading
import time

from pydantic import BaseModel, Field

from tests.support.functions import counter_key
from workers import CallContext, function


class _Peak:
    """Calls running now in this process, and the most seen at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


_PEAK = _Peak()


class NapArgs(BaseModel):
    seconds: float = Field(ge=0, le=10)
    tag: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")


@function(description="Sleep on the event loop; the most calls seen at once (test helper)", timeout=5.0)
async def async_nap(args: NapArgs) -> dict[str, int]:
    with _PEAK:
        await asyncio.sleep(args.seconds)
        return {"peak": _PEAK.peak}


@function(description="Sleep in a thread; the most calls seen at once (test helper)", timeout=5.0)
def blocking_nap(args: NapArgs) -> dict[str, int]:
    with _PEAK:
        time.sleep(args.seconds)
        return {"peak": _PEAK.peak}


class _SharedClient:
    """Stands in for an ``httpx.AsyncClient`` made on first use: bound to the loop it was made on, like an
    asyncio primitive or a connection pool, so it fails when a call runs on another loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        self.uses = 0

    async def use(self, seconds: float) -> int:
        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("the shared client is bound to another event loop")
        async with self.lock:  # contended by concurrent calls: the lock binds to the loop too
            self.uses += 1
            uses = self.uses
        await asyncio.sleep(seconds)
        return uses


_client: _SharedClient | None = None


@function(description="Use the module's shared async client (test helper)", timeout=5.0)
async def use_shared_client(args: NapArgs) -> dict[str, int]:
    global _client
    if _client is None:
        _client = _SharedClient()
    return {"uses": await _client.use(args.seconds)}


@function(description="Wait on the event loop; count a cancellation (test helper)", timeout=5.0)
async def async_wait(args: NapArgs, ctx: CallContext) -> str:
    ctx.redis.incr(counter_key(args.tag + ".started"))
    return await _async_wait(args, ctx)


@function(description="Wait in a thread until ctx.cancelled; count it (test helper)", timeout=5.0)
def blocking_wait(args: NapArgs, ctx: CallContext) -> str:
    ctx.redis.incr(counter_key(args.tag + ".started"))
    return _wait(args, ctx)


@function(description="Outlive its timeout on the event loop (test helper)", timeout=1.0)
async def async_overrun(args: NapArgs, ctx: CallContext) -> str:
    return await _async_wait(args, ctx)


async def _async_wait(args: NapArgs, ctx: CallContext) -> str:
    """Sleep ``args.seconds`` on the event loop; a cancellation is counted under the tag."""
    try:
        await asyncio.sleep(args.seconds)
    except asyncio.CancelledError:
        ctx.redis.incr(counter_key(args.tag + ".cancelled"))
        raise
    return "done"


@function(description="Outlive its timeout in a thread (test helper)", timeout=1.0)
def blocking_overrun(args: NapArgs, ctx: CallContext) -> str:
    return _wait(args, ctx)


def _wait(args: NapArgs, ctx: CallContext) -> str:
    """Sleep ``args.seconds`` unless ``ctx.cancelled`` turns True first (counted under the tag)."""
    until = time.monotonic() + args.seconds
    while time.monotonic() < until:
        if ctx.cancelled:
            ctx.redis.incr(counter_key(args.tag + ".cancelled"))
            return "cancelled"
        time.sleep(0.01)
    return "done"
