"""Test-only backend functions, loaded next to the examples by the integration tests
(``WORKER_MODULES=workers.examples,tests.support.functions``). Never list this module in production."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from shared import keys
from workers import CallContext, function
from workers.secrets import secret


def counter_key(tag: str) -> str:
    """String key: a counter the functions below increment, so a test can count how many times a call really
    executed (and see it start). The tests' own key: it lives here, beside them, not in ``shared.keys``."""
    return f"{keys.PREFIX}:test:counter:{tag}"


class EchoArgs(BaseModel):
    text: str = Field(description="What to echo")
    seconds: float = Field(default=0.0, ge=0, le=120, description="How long to sleep first")


@function(description="Sleep, then echo the text (test helper)", timeout=5.0, idempotent=True)
def slow_echo(args: EchoArgs) -> dict[str, str]:
    time.sleep(args.seconds)
    return {"echo": args.text}


@function(description="Never return (test helper for timeouts)", timeout=1.5, idempotent=True)
def hang_forever() -> None:
    while True:
        time.sleep(0.1)


class ExplodeArgs(BaseModel):
    secret_hint: str = ""


@function(description="Raise an exception whose text holds a secret (test helper)", timeout=3.0)
def explode(args: ExplodeArgs) -> None:
    raise RuntimeError(f"boom {args.secret_hint} with key {secret('WEATHER_API_KEY', default='demo')}")


class CountArgs(BaseModel):
    tag: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")


@function(description="Count executions under a tag (test helper)", timeout=3.0, side_effects=True)
def count_calls(args: CountArgs, ctx: CallContext) -> int:
    """Returns the new count (the result content is that number as JSON text, e.g. ``3``)."""
    return int(ctx.redis.incr(counter_key(args.tag)))


class SlowWriteArgs(BaseModel):
    tag: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    seconds: float = Field(ge=0, le=30)


@function(
    description="Count a start, sleep, count a finish (test helper; not idempotent)", timeout=5.0, side_effects=True
)
def slow_write(args: SlowWriteArgs, ctx: CallContext) -> int:
    ctx.redis.incr(counter_key(args.tag + ".started"))
    time.sleep(args.seconds)
    return int(ctx.redis.incr(counter_key(args.tag)))


class SlowCallArgs(BaseModel):
    seconds: float = Field(ge=0, le=14, description="How long to sleep")


@function(description="Sleep, then say how long (test helper; a deadline over 10 s)", timeout=15.0, idempotent=True)
def slow_call(args: SlowCallArgs) -> dict[str, float]:
    time.sleep(args.seconds)
    return {"slept": args.seconds}


@function(
    description="Count executions under a tag, with a long deadline (test helper; not idempotent)",
    timeout=20.0,
    side_effects=True,
)
def patient_count(args: CountArgs, ctx: CallContext) -> int:
    """``count_calls`` with room for a fault test to kill and restart processes before the deadline answers."""
    return int(ctx.redis.incr(counter_key(args.tag)))


@function(description="Hold a worker until the test releases it (test helper)", timeout=60.0, idempotent=True)
def wait_for_release(args: CountArgs, ctx: CallContext) -> str:
    """Counts its start under ``<tag>.started``, then waits until the test sets ``<tag>.released``: a worker busy
    exactly as long as the test needs, without guessing durations."""
    ctx.redis.incr(counter_key(args.tag + ".started"))
    while not ctx.redis.exists(counter_key(args.tag + ".released")):
        time.sleep(0.05)
    return "released"


@function(description="Who is calling, as the gateway verified it (test helper)", timeout=3.0, idempotent=True)
def who_is_calling(ctx: CallContext) -> dict[str, str]:
    return {"principal": ctx.principal}


@function(timeout=5.0, idempotent=True)
async def plain_lookup(
    item: Annotated[str, "What to look up"], mode: Literal["fast", "full"] = "fast", *, ctx: CallContext
) -> dict[str, str]:
    """Look something up (test helper: the plain typed form, async, with a progress report).

    Args:
        mode: fast or full.
    """
    sent = await ctx.aprogress(f"Looking up {item}")
    await asyncio.sleep(0)
    return {"item": item, "mode": mode, "principal": ctx.principal or "-", "progress": str(sent).lower()}
