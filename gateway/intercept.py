"""Pure functions that decide what the gateway intercepts: no sockets, no Redis, easy to test.

The session (``gateway.session``) does the I/O; everything here takes messages and the backend catalog and
returns messages and decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.envelopes import FunctionSpec
from shared.protocol import (
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallRequest,
    FunctionCallResponse,
    FunctionDefinition,
    Settings,
    Think,
    dump,
)


def merge_functions(settings: Settings, backend: Mapping[str, FunctionSpec]) -> Settings:
    """Settings with the backend functions added to ``agent.think.functions``.

    The client's own functions keep their order; one whose name a backend function also has is replaced by the
    backend definition (the client can never redefine what a backend function accepts). Backend functions the
    client did not mention follow. Nothing else in the message changes.
    """
    if not backend:
        return settings
    merged: list[FunctionDefinition] = []
    seen: set[str] = set()
    for fn in settings.functions:
        if fn.name in backend:
            if fn.name not in seen:
                merged.append(FunctionDefinition(**backend[fn.name].definition()))
        else:
            merged.append(fn)
        seen.add(fn.name)
    merged += [FunctionDefinition(**spec.definition()) for name, spec in backend.items() if name not in seen]
    agent = settings.agent.model_copy()
    think = agent.think.model_copy() if agent.think else Think()
    think.functions = merged
    agent.think = think
    result = settings.model_copy()
    result.agent = agent
    return result


@dataclass(frozen=True)
class Split:
    """How one FunctionCallRequest divides between the backend and the client."""

    backend: list[FunctionCall]
    """Calls a worker will run; the gateway answers each one itself."""
    client_frame: str | None
    """The text frame to forward to the client (its own calls), or None when nothing is left for it."""


def split_request(request: FunctionCallRequest, raw: str, owned: Mapping[str, FunctionSpec]) -> Split:
    """Separate backend-owned calls from the rest. ``raw`` is the frame as received, forwarded untouched when
    no call is intercepted, so fields we do not model arrive exactly as the provider sent them."""
    backend = [f for f in request.functions if f.client_side and f.name in owned]
    if not backend:
        return Split([], raw)
    rest = [f for f in request.functions if not (f.client_side and f.name in owned)]
    if not rest:
        return Split(backend, None)
    return Split(backend, dump(request.model_copy(update={"functions": rest})))


def filter_cancelled(message: FunctionCallCancelled, raw: str, backend_ids: set[str]) -> tuple[list[str], str | None]:
    """Split a cancellation into backend call ids to cancel and the frame (if any) the client still needs."""
    ours = [f.id for f in message.functions if f.id in backend_ids]
    if not ours:
        return [], raw
    rest = [f for f in message.functions if f.id not in backend_ids]
    return ours, dump(message.model_copy(update={"functions": rest})) if rest else None


def response_frame(call: FunctionCall, content: str) -> str:
    """The FunctionCallResponse the gateway sends upstream for a backend call."""
    return dump(FunctionCallResponse(id=call.id, name=call.name, content=content))


__all__ = ["Split", "filter_cancelled", "merge_functions", "response_frame", "split_request"]
