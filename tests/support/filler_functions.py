"""Test-only backend functions with a filler line and progress reports (loaded by the integration tests' workers
next to ``tests.support.functions``). Never list this module in production."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from workers import CallContext, function

FILLER = "One moment while I look that up."
PROGRESS = "Still searching the archive."


class LookupArgs(BaseModel):
    text: str = Field(description="What to look up")
    seconds: float = Field(default=0.0, ge=0, le=20, description="How long the lookup takes")


@function(
    description="A slow lookup whose caller hears a filler (test helper)",
    timeout=15.0,
    idempotent=True,
    filler=FILLER,
    filler_delay=0.3,
)
def slow_lookup(args: LookupArgs, ctx: CallContext) -> dict[str, str]:
    ctx.progress(PROGRESS)
    time.sleep(args.seconds)
    return {"found": args.text}


@function(
    description="A slow lookup whose filler is due at once (test helper)",
    timeout=15.0,
    idempotent=True,
    filler=FILLER,
    filler_delay=0.01,
)
def busy_lookup(args: LookupArgs) -> dict[str, str]:
    time.sleep(args.seconds)
    return {"found": args.text}
