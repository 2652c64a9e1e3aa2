"""What the conversation core (``gateway.conversation``) asks its session loop (``gateway.session``) to do.

The core takes events and returns a sequence of these actions; the loop performs them in order and does nothing
else of its own accord. Order matters: a call's ``finished`` notice is queued before its answer goes to the
provider, an Error is sent before the close that follows it.

A frame the gateway does not act on (audio, most text) gets :data:`FORWARD`, one preallocated tuple: the relay
path, 50 frames a second per session, allocates nothing and the loop recognises it by identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.envelopes import FunctionSpec
from shared.protocol import FunctionCall

Frame = str | bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """The event's frame, exactly as received, to the other side (a client frame to the provider, a provider
    frame to the client)."""


@dataclass(frozen=True, slots=True)
class ToClient:
    """A frame for the client, sent in the conversation's order (Errors, Warnings, relayed rewrites)."""

    frame: str


@dataclass(frozen=True, slots=True)
class Notify:
    """A message the client may miss (call notices): queued, never waited for (``gateway.notices``)."""

    frame: str


@dataclass(frozen=True, slots=True)
class ToProvider:
    """A frame for the provider (a rewritten Settings or UpdateThink, a KeepAlive). If the provider is gone the
    session ends."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Answer:
    """A ``FunctionCallResponse`` for the provider. If the provider is gone nobody waits for it: it is dropped and
    the session ends by the provider's own close."""

    frame: str


@dataclass(frozen=True, slots=True)
class StartCall:
    """Run a backend call on the workers, then feed its result back (``Conversation.call_finished``)."""

    call: FunctionCall
    key: str
    """The call's identity on the backend (``Conversation.backend_key``)."""
    spec: FunctionSpec


@dataclass(frozen=True, slots=True)
class CancelCalls:
    """Stop waiting for these backend calls (by provider call id) and cancel their jobs; they get no answer."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadCatalog:
    """Read the backend functions for this session, then feed them back (``Conversation.catalog_read``), before
    the next client frame: Settings wait for it."""


@dataclass(frozen=True, slots=True)
class UseFunctions:
    """Tell the provider adapter the backend functions of this session (``Provider.use_functions``)."""

    owned: Mapping[str, FunctionSpec]


@dataclass(frozen=True, slots=True)
class SayFiller:
    """Have the agent say ``text`` now, while the backend call ``call_id`` runs (``Provider.say_filler``)."""

    call_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Wake:
    """Feed the conversation a ``tick`` ``after`` seconds from now (a filler falls due then)."""

    after: float


@dataclass(frozen=True, slots=True)
class Remember:
    """Store ``entry`` in the conversation's memory (``gateway.memory``), without waiting for it."""

    entry: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Send ``error`` (if any), then close the client connection with ``code``/``reason``: the session ends."""

    code: int
    reason: str
    error: str | None = None


Action = (
    Forward
    | ToClient
    | Notify
    | ToProvider
    | Answer
    | StartCall
    | CancelCalls
    | ReadCatalog
    | UseFunctions
    | SayFiller
    | Wake
    | Remember
    | Close
)
Actions = Sequence[Action]

FORWARD: Final[Actions] = (Forward(),)
"""Relay the frame as received: the answer for nearly every frame, allocated once."""
NOTHING: Final[Actions] = ()

__all__ = [
    "FORWARD",
    "NOTHING",
    "Action",
    "Actions",
    "Answer",
    "CancelCalls",
    "Close",
    "Forward",
    "Frame",
    "Notify",
    "ReadCatalog",
    "Remember",
    "SayFiller",
    "StartCall",
    "ToClient",
    "ToProvider",
    "UseFunctions",
    "Wake",
]
