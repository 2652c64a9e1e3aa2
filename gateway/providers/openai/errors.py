"""OpenAI Realtime errors by kind: which ones end the session (component ``Error``) and which do not (``Warning``).

A Deepgram ``Error`` is session-ending for its clients (the official SDKs and the component close on it), while
most OpenAI ``error`` events are not: a ``response.cancel`` with nothing to cancel, a tool output the server
refused, a rate limit that passes. Those become ``Warning``; only errors after which the conversation cannot go
on become ``Error``. An error OpenAI ends the connection after is also reported by the close itself (the
session's ``UPSTREAM_CLOSED``), so an unknown code is safer as a Warning than as a false end of session.

A ``response.done`` with status ``failed`` carries ``status_details.error``: the response produced nothing, so the
client hears why (a Warning, or an Error for the session-ending kinds) instead of an agent gone mute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.protocol import error_frame, warning_frame

SESSION_ENDING_CODES = frozenset(
    {"session_expired", "invalid_api_key", "insufficient_quota", "account_deactivated", "model_not_found"}
)
"""Codes after which OpenAI serves this conversation no more (``session_expired`` after 60 min)."""
SESSION_ENDING_TYPES = frozenset({"authentication_error", "permission_error"})
RESPONSE_FAILED = "RESPONSE_FAILED"
"""Warning code for a ``response.done`` with status ``failed`` whose error names no code."""


def _details(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def is_session_ending(details: Mapping[str, Any]) -> bool:
    """Whether the OpenAI error ``{type, code, message}`` ends the conversation."""
    return details.get("code") in SESSION_ENDING_CODES or details.get("type") in SESSION_ENDING_TYPES


def describe(details: Mapping[str, Any], default: str = "OpenAI reported an error.") -> str:
    """The error's message, with the parameter it names when it names one."""
    message = str(details.get("message") or default)
    param = details.get("param")
    return f"{message} (parameter: {param})" if isinstance(param, str) and param and param not in message else message


def error_event(event: Mapping[str, Any]) -> str:
    """``error {error: {type, code, message, param}}`` → ``Warning`` or, for the session-ending kinds, ``Error``,
    with OpenAI's code (its type when it has none)."""
    details = _details(event.get("error"))
    code = str(details.get("code") or details.get("type") or "OPENAI_ERROR")
    frame = error_frame if is_session_ending(details) else warning_frame
    return frame(code, describe(details))


def failed_response(response: Mapping[str, Any]) -> str | None:
    """The frame for a ``response.done`` whose status is ``failed``; None for any other status."""
    if response.get("status") != "failed":
        return None
    details = _details(_details(response.get("status_details")).get("error"))
    code = str(details.get("code") or details.get("type") or RESPONSE_FAILED)
    description = "The agent's response failed: " + describe(details, "OpenAI gave no reason.")
    return (error_frame if is_session_ending(details) else warning_frame)(code, description)
