"""Benchmark-only backend functions, loaded by the benchmark's workers next to the examples
(``WORKER_MODULES=workers.examples,benchmarks.functions``). Never list this module in production.

- ``bench_noop``: does nothing, so a call measures the machinery around a function and nothing else.
- ``bench_cpu``: burns CPU for a fixed amount of work (hashing), for worker scaling on CPU-bound code.
- ``bench_io``: waits (``time.sleep``) like a function calling a slow API, for worker scaling on I/O.
- ``bench_sleep_async``: waits (``asyncio.sleep``) like an ``async def`` function awaiting a slow API, for
  the capacity section (many calls in flight in one worker process).

``plain_noop`` is not registered: the naive-RQ baseline enqueues it with a plain ``rq.SimpleWorker``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from pydantic import BaseModel, Field

from workers import function

CPU_ROUNDS_DEFAULT = 12_000
"""sha256 rounds of ``bench_cpu`` by default: about 5 ms of CPU on the development machine, more than the
machinery around a call costs, so the function dominates."""


@function(description="Do nothing (benchmark)", timeout=5.0, idempotent=True)
def bench_noop() -> dict[str, bool]:
    return {"ok": True}


class CpuArgs(BaseModel):
    rounds: int = Field(default=CPU_ROUNDS_DEFAULT, ge=1, le=1_000_000, description="sha256 rounds")


@function(description="Burn CPU (benchmark)", timeout=5.0, idempotent=True)
def bench_cpu(args: CpuArgs) -> dict[str, str]:
    return {"digest": burn(args.rounds)}


class IoArgs(BaseModel):
    seconds: float = Field(default=0.02, ge=0, le=5, description="How long to wait")


@function(description="Wait like a slow API (benchmark)", timeout=5.0, idempotent=True)
def bench_io(args: IoArgs) -> dict[str, bool]:
    time.sleep(args.seconds)
    return {"ok": True}


@function(description="Await like a slow API (benchmark)", timeout=5.0, idempotent=True)
async def bench_sleep_async(args: IoArgs) -> dict[str, bool]:
    await asyncio.sleep(args.seconds)
    return {"ok": True}


def burn(rounds: int) -> str:
    digest = b"benchmark"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def plain_noop() -> str:
    """The naive-RQ baseline's job: enqueued by reference, run by a plain ``SimpleWorker``."""
    return "ok"
