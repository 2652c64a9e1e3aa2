"""What the bridge returns (:class:`Out`); checks on client messages: required fields, how many may wait."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.providers.base import Frame
from gateway.providers.openai import translate as tr
from shared.protocol import ErrorCode

MAX_WAITING = 32
"""Client messages that may wait for OpenAI at once, per kind (user messages before the session is ready, texts
to say while a response is active, updates not yet confirmed). A client sending more, faster than OpenAI
answers, gets a Warning and the extra messages are dropped: they would otherwise wait in memory without end."""


@dataclass
class Out:
    """What one input produced: OpenAI events to send to the provider, component frames for the session."""

    provider: list[dict[str, Any]] = field(default_factory=list)
    client: list[Frame] = field(default_factory=list)
    end: str | None = None
    """Set when the conversation cannot go on (OpenAI refused the Settings): the reason the adapter closes with."""


def string(message: dict[str, Any], key: str, out: Out, older: str | None = None) -> str | None:
    """``message[key]`` (or its ``older`` name, which older clients send) when it is a string; otherwise None,
    and a Warning tells the client why its message was dropped."""
    value = message.get(key, message.get(older)) if older else message.get(key)
    if isinstance(value, str):
        return value
    out.client.append(tr.warning("INVALID_MESSAGE", f"{message.get('type')} needs a string {key!r}."))
    return None


def queue_full(kind: str, waiting: str) -> str:
    return tr.warning(ErrorCode.QUEUE_FULL, f"{kind} dropped: {MAX_WAITING} {waiting}.")
