"""A conversation's memory as Deepgram ``History`` context: pure functions, no I/O.

When a new provider session starts for a conversation that has memory (``gateway.memory``), its Settings get
``agent.context.messages`` built from that memory, in the form Deepgram documents for resuming a conversation::

    {"type": "History", "role": "user", "content": "..."}
    {"type": "History", "function_calls": [{"id": "...", "name": "...", "client_side": false,
                                            "arguments": "...", "response": "..."}]}

A client that sends a context of its own keeps it untouched: it chose what the agent remembers. The OpenAI
upstream translates the same messages into its instructions (``gateway.providers.openai.translate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.memory import ROLES, Entry
from shared.envelopes import error_content

HISTORY_BYTES = 256 * 1024
"""Most history put into one Settings (JSON bytes, about): the newest entries that fit. Settings go upstream in
one frame, and every byte of context is read by the model on every turn."""


def history_message(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``History`` message of one memory entry, None for an entry that is neither a turn nor a call."""
    if entry.get("kind") == "turn" and entry.get("role") in ROLES and isinstance(entry.get("content"), str):
        return {"type": "History", "role": entry["role"], "content": entry["content"]}
    if entry.get("kind") == "call" and isinstance(entry.get("id"), str) and isinstance(entry.get("name"), str):
        error = entry.get("error")
        # The response the model saw: the result, or the error text a failed call was answered with.
        response = error_content(str(error)) if isinstance(error, str) else str(entry.get("result", ""))
        call = {
            "id": entry["id"],
            "name": entry["name"],
            "client_side": bool(entry.get("client_side", False)),
            "arguments": str(entry.get("arguments", "")),
            "response": response,
        }
        return {"type": "History", "function_calls": [call]}
    return None


def history_messages(entries: Iterable[Entry], budget: int = HISTORY_BYTES) -> list[dict[str, Any]]:
    """The newest entries' History messages whose JSON fits in ``budget`` bytes, oldest first."""
    kept: list[dict[str, Any]] = []
    for entry in reversed(list(entries)):
        message = history_message(entry)
        if message is None:
            continue
        budget -= len(json.dumps(message, ensure_ascii=False).encode())
        if budget < 0:
            break
        kept.append(message)
    kept.reverse()
    return kept


def has_own_context(settings: Mapping[str, Any]) -> bool:
    """The client's Settings carry ``agent.context`` (any messages, even none: an empty context is a choice)."""
    agent = settings.get("agent")
    return isinstance(agent, dict) and "context" in agent


def with_history(settings: dict[str, Any], entries: Iterable[Entry]) -> dict[str, Any]:
    """``settings`` with the memory as ``agent.context.messages``; ``settings`` itself (unchanged) when the client
    sent a context of its own, when ``agent`` is not an object (a stored agent's id) or when there is nothing to
    put in."""
    agent = settings.get("agent")
    if not isinstance(agent, dict) or has_own_context(settings):
        return settings
    messages = history_messages(entries)
    if not messages:
        return settings
    return {**settings, "agent": {**agent, "context": {"messages": messages}}}


def inject_history(frame: str, entries: Iterable[Entry]) -> str:
    """A Settings frame with the memory as its context (:func:`with_history`); ``frame`` itself when unchanged."""
    settings = json.loads(frame)
    updated = with_history(settings, entries)
    return frame if updated is settings else json.dumps(updated, separators=(",", ":"), ensure_ascii=False)
