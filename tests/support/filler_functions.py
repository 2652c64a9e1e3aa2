"""Test-only backend functions with a filler line and progress reports (loaded by the integration tests' workers
next to ``tests.support.functions``). Never list this module in production."""

from __future__ import annotations

import dataclasses
import time

from pydantic import BaseModel, Field

from shared.envelopes import CallProgress
from workers import CallContext, function
from workers.registry import _REGISTRY

FILLER = "One moment while I look that up."
PROGRESS = "Still searching the archive."


class LookupArgs(BaseModel):
    text: str = Field(description="What to look up")
    seconds: float = Field(default=0.0, ge=0, le=20, description="How long the lookup takes")


@function(description="A slow lookup whose caller hears a filler (test helper)", timeout=15.0, idempotent=True)
def slow_lookup(args: LookupArgs, ctx: CallContext) -> dict[str, str]:
    # Published as a worker's ctx.progress() would: on the call's reply channel, next to its result.
    ctx.redis.publish(ctx.reply_channel, CallProgress(call_id=ctx.call_id, message=PROGRESS, at=time.time()).to_json())
    time.sleep(args.seconds)
    return {"found": args.text}


@function(description="A slow lookup whose filler is due at once (test helper)", timeout=15.0, idempotent=True)
def busy_lookup(args: LookupArgs) -> dict[str, str]:
    time.sleep(args.seconds)
    return {"found": args.text}


def _with_filler(name: str, filler: str, delay: float) -> None:
    """Give a registered function a filler (until ``@function`` takes ``filler=``/``filler_delay=`` itself)."""
    registered = _REGISTRY[name]
    spec = registered.spec.model_copy(update={"filler": filler, "filler_delay": delay})
    _REGISTRY[name] = dataclasses.replace(registered, spec=spec)


_with_filler("slow_lookup", FILLER, 0.3)
_with_filler("busy_lookup", FILLER, 0.0)
