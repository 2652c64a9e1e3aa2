"""What crosses Redis: the job a gateway enqueues, the result a worker returns, a worker's catalog.

These are the backend contract. A gateway and a worker of different versions interoperate as long as
these shapes hold, so every field is documented and new fields must have defaults.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

JOB_FUNCTION = "workers.execute.run_call"
"""The RQ job function of every call, named by string so the gateway never imports worker code."""


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes):  # type: ignore[no-untyped-def]
        return cls.model_validate_json(data)


class FunctionSpec(_Envelope):
    """One backend function as a worker advertises it; the gateway sends name, description and parameters
    to the provider, and uses queue and timeout to dispatch."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object, derived from the function's pydantic model."""
    queue: str = "default"
    timeout: float = 10.0
    """Seconds from the gateway seeing the request to its answer; past it the gateway answers with an error."""
    idempotent: bool = False
    """True when running the function twice for one call is harmless, so it may be retried."""
    side_effects: bool = False
    """True when the function changes the world (writes data, sends mail); such calls are never guessed at."""
    filler: str | None = None
    """A line the agent says when the call has not answered after :attr:`filler_delay` seconds (e.g. "One moment
    while I look that up."); None says nothing. The answer is never delayed by it."""
    filler_delay: float = 1.5
    """Seconds from the gateway seeing the request to the filler, if the call is still running then."""

    def definition(self) -> dict[str, Any]:
        """The entry for the provider's function list (``agent.think.functions``).

        A function with side effects is declared ``defer_until_eot`` (Deepgram, 2026-09): the provider holds its
        call until the user's turn is confirmed, so it never runs for a turn the user then continues."""
        definition: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.side_effects:
            definition["defer_until_eot"] = True
        return definition


class WorkerCatalog(_Envelope):
    """What one worker process can run, published under ``keys.catalog(worker_id)`` with an expiry."""

    worker_id: str
    queues: list[str]
    functions: list[FunctionSpec]
    pid: int = 0
    hostname: str = ""
    published_at: float = 0.0


class CallJob(_Envelope):
    """One function call to execute, as the gateway enqueues it (the single argument of the RQ job)."""

    call_id: str
    name: str
    arguments: str
    """The provider's JSON string, passed through unparsed; the worker validates it."""
    reply_channel: str
    """Pub/sub channel of the gateway process waiting for the result."""
    deadline: float
    """Unix time on the Redis server's clock (``shared.clock``) after which nobody waits for the result: a worker
    that picks the job later skips it. Redis time, so gateway and worker clocks need not agree."""
    session_id: str = ""
    enqueued_at: float = 0.0
    """When the gateway built the job, on its own clock (``time.time()``): for latency breakdowns only."""
    principal: str = ""
    """The caller the gateway verified (a signed token's ``sub``, a static token's name); ``""`` when the
    gateway requires no credentials. Functions read it as ``ctx.principal`` to key a caller's data."""
    traceparent: str = ""
    """W3C trace context of the call (``00-<trace id>-<span id>-<flags>``), validated by the gateway: the
    caller's, or the gateway's call span when tracing exports spans. ``""``: none; older workers ignore it."""


class CallProgress(_Envelope):
    """A running call's progress report (``ctx.progress("Still searching…")``), published by the worker on the
    call's reply channel next to its eventual :class:`CallResult`. Best effort: it may be lost or arrive after
    the result, and the gateway ignores it then."""

    kind: str = "progress"
    """Always ``"progress"``: what tells it apart from a :class:`CallResult` on the same channel."""
    call_id: str
    message: str
    """Shown to the client as is (a progress notice); never a secret (workers redact it like results)."""
    at: float = 0.0
    """When the worker sent it (its ``time.time()``)."""


class CallResult(_Envelope):
    """The outcome of a call. ``content`` is exactly what the gateway sends as FunctionCallResponse content."""

    call_id: str
    ok: bool
    content: str
    """JSON text: the function's return value, or ``{"error": "..."}`` readable by the LLM."""
    worker_id: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0

    @classmethod
    def failure(cls, call_id: str, message: str, **fields: Any) -> CallResult:
        """An error result. ``message`` is shown to the LLM: never put a stack trace or a secret in it."""
        return cls(call_id=call_id, ok=False, content=error_content(message), **fields)

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        try:
            return str(json.loads(self.content).get("error"))
        except (ValueError, AttributeError):
            return self.content


def error_content(message: str) -> str:
    """The content string for an error answer: ``{"error": message}``."""
    return json.dumps({"error": message})
