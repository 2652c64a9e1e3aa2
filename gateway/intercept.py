"""Pure functions that decide what the gateway intercepts: no sockets, no Redis, easy to test.

The session (``gateway.session``) does the I/O; everything here takes messages and the backend catalog and
returns messages and decisions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.envelopes import FunctionSpec, error_content
from shared.protocol import (
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallRequest,
    FunctionCallResponse,
    FunctionDefinition,
    Settings,
    Think,
    Thinks,
    UpdateThink,
    dump,
)


def merge_think(think: Think | None, backend: Mapping[str, FunctionSpec]) -> Think:
    """A think configuration whose function list carries the backend functions, whatever the client wrote.

    Serves both ``Settings.agent.think`` and ``UpdateThink.think``: an ``UpdateThink`` replaces the provider's
    whole think configuration, so a client could otherwise redefine or drop a backend function after Settings.
    The client's own functions keep their order. For a backend-owned name the backend definition wins whole
    (exactly ``FunctionSpec.definition()``): a client ``endpoint`` would make the provider call the client's server
    and take its result, ``client_side`` or another description could change who answers or what the model
    sends. Duplicates of a backend name collapse to one; backend functions the client omitted (or the whole list,
    when it has none) are added after its own. Nothing else in ``think`` changes.
    """
    merged: list[FunctionDefinition] = []
    seen: set[str] = set()
    for fn in (think.functions if think else None) or []:
        if fn.name in backend:
            if fn.name not in seen:
                merged.append(FunctionDefinition(**backend[fn.name].definition()))
        else:
            merged.append(fn)
        seen.add(fn.name)
    merged += [FunctionDefinition(**spec.definition()) for name, spec in backend.items() if name not in seen]
    result = think.model_copy() if think else Think()
    result.functions = merged
    return result


def merge_thinks(think: Thinks | None, backend: Mapping[str, FunctionSpec]) -> Thinks:
    """:func:`merge_think` for one think configuration, or into every entry of a list of fallbacks: whichever
    provider the agent falls back to must know the backend functions."""
    if isinstance(think, list):
        return [merge_think(entry, backend) for entry in think]
    return merge_think(think, backend)


def merge_functions(settings: Settings, backend: Mapping[str, FunctionSpec]) -> Settings:
    """Settings with the backend functions merged into ``agent.think.functions`` (see :func:`merge_thinks`).

    A stored agent configuration (``agent`` is its id) cannot be changed here: relayed as it is."""
    if not backend or isinstance(settings.agent, str):
        return settings
    agent = settings.agent.model_copy()
    agent.think = merge_thinks(agent.think, backend)
    result = settings.model_copy()
    result.agent = agent
    return result


def merge_update_think(message: UpdateThink, backend: Mapping[str, FunctionSpec]) -> UpdateThink:
    """An UpdateThink with the backend functions merged into ``think.functions`` (see :func:`merge_think`)."""
    if not backend:
        return message
    return message.model_copy(update={"think": merge_thinks(message.think, backend)})


@dataclass(frozen=True)
class MalformedCall:
    """A malformed element of a FunctionCallRequest that the gateway can still answer: it has a string id."""

    id: str
    name: str
    """The element's name if it is a string, else ``""``: the answer must echo what the provider sent."""
    problem: str


@dataclass(frozen=True)
class Split:
    """How one FunctionCallRequest divides between the backend, the client and the gateway's error answers."""

    backend: list[FunctionCall]
    """Calls a worker will run; the gateway answers each one itself."""
    client_frame: str | None
    """The text frame to forward to the client (its own calls), or None when nothing is left for it."""
    malformed: list[MalformedCall] = field(default_factory=list)
    """Malformed elements to answer upstream with an error result (nobody could run them)."""
    problems: list[str] = field(default_factory=list)
    """One line per malformed element, answerable or not (or for a ``functions`` that is not a list): for the log
    and for the client's Warning. Empty when the request was well-formed."""


def split_request(data: Mapping[str, Any], raw: str, owned: Mapping[str, FunctionSpec]) -> Split:
    """Separate backend-owned calls from the rest, element by element.

    ``data`` is the parsed frame; ``raw`` is the frame as received, forwarded untouched when every element is
    well-formed and none is intercepted, so fields we do not model arrive exactly as the provider sent them.

    One malformed element must not spoil the rest: the valid backend calls still run, the valid client calls are
    still forwarded (in a rewritten frame), and the malformed element is never relayed, since its raw content
    could carry a backend call's arguments. Each malformed element with a string ``id`` is answered upstream with
    an error (the provider would otherwise wait for it forever) unless it says ``client_side: false`` (the
    provider expects no answer) or a well-formed element of the same request has its id (that one is answered).
    A request whose ``functions`` is not a list has no element to act on: nothing is relayed.
    """
    elements = data.get("functions")
    if not isinstance(elements, list):
        return Split([], None, problems=[f"'functions' is {type(elements).__name__}, not a list"])
    valid: list[FunctionCall] = []
    invalid: list[tuple[Any, str]] = []
    for element in elements:
        try:
            valid.append(FunctionCall.model_validate(element))
        except ValidationError as exc:
            invalid.append((element, _describe(exc)))
    backend = [f for f in valid if f.client_side and f.name in owned]
    if not backend and not invalid:
        return Split([], raw)
    rest = [f for f in valid if not (f.client_side and f.name in owned)]
    client_frame = None
    if rest:
        # Validating the envelope alone keeps its other fields; the elements are the already validated ones.
        envelope = FunctionCallRequest.model_validate({**data, "functions": []})
        client_frame = dump(envelope.model_copy(update={"functions": rest}))
    valid_ids = {f.id for f in valid}
    malformed: list[MalformedCall] = []
    problems: list[str] = []
    for element, problem in invalid:
        call_id = element.get("id") if isinstance(element, dict) else None
        name = element.get("name") if isinstance(element, dict) else None
        name = name if isinstance(name, str) else ""
        problems.append(f"call {_short(call_id)} ({_short(name)}): {problem}")
        if not isinstance(call_id, str) or call_id in valid_ids or element.get("client_side") is False:
            continue
        malformed.append(MalformedCall(call_id, name, problem))
    return Split(backend, client_frame, malformed, problems)


def _describe(exc: ValidationError) -> str:
    """What is wrong with an element, by field, without echoing its values (they may be huge or secret)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(element)'}: {err['msg']}" for err in exc.errors()[:3])


def _short(value: object) -> str:
    """A value for a log line or an error text, cut short: a provider's id or name can be any size."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:60] + "…" if len(text) > 60 else text)


def malformed_response_frame(call: MalformedCall) -> str:
    """The FunctionCallResponse that answers a malformed element: an error text the model can read."""
    message = f"The function call was malformed and was not run ({call.problem}). Call it again correctly."
    return error_response_frame(call.id, call.name, message)


def error_response_frame(call_id: str, name: str, message: str) -> str:
    """A FunctionCallResponse whose content is ``{"error": message}``: an answer the model can read."""
    return dump(FunctionCallResponse(id=call_id, name=name, content=error_content(message)))


def filter_history(
    data: Mapping[str, Any], raw: str, owned: Mapping[str, FunctionSpec], backend_ids: set[str]
) -> str | None:
    """A provider ``History`` message without the backend's function calls, or None when nothing is left.

    History entries of function calls carry their arguments and results. The backend's are kept from the
    client (HISTORY_BACKEND_CALLS=hidden): an entry goes when its name is backend-owned or its id is a call the
    backend took. Everything else is relayed: conversation turns and a History with none of the backend's calls
    byte for byte (``raw``), other entries unchanged in a rewritten frame. A ``function_calls`` that is not a
    list cannot be sorted, so the frame is withheld.
    """
    if "function_calls" not in data:
        return raw
    calls = data["function_calls"]
    if not isinstance(calls, list):
        return None
    kept = [entry for entry in calls if not _backend_entry(entry, owned, backend_ids)]
    if len(kept) == len(calls):
        return raw
    if not kept:
        return None
    return json.dumps({**data, "function_calls": kept}, separators=(",", ":"))


def _backend_entry(entry: Any, owned: Mapping[str, FunctionSpec], backend_ids: set[str]) -> bool:
    if not isinstance(entry, dict):
        return False
    name, call_id = entry.get("name"), entry.get("id")
    return (isinstance(name, str) and name in owned) or (isinstance(call_id, str) and call_id in backend_ids)


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


__all__ = [
    "MalformedCall",
    "Split",
    "error_response_frame",
    "filter_cancelled",
    "filter_history",
    "malformed_response_frame",
    "merge_functions",
    "merge_think",
    "merge_thinks",
    "merge_update_think",
    "response_frame",
    "split_request",
]
