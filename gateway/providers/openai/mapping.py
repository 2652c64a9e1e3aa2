"""Settings fields OpenAI has an equivalent for, and the conversation's text frames, without I/O.

- :func:`refine_session`: ``agent.language`` and ``listen.provider.keyterms`` become the input transcription's
  ``language`` and ``prompt``; when tools exist the instructions say that tool results are for the reply.
- :class:`Transcript`: ``ConversationText`` and ``History`` for each message item as it completes, ``History``
  entries for answered calls, ``AgentThinking`` for what the model said before a tool call. The user's transcript
  arrives late (``conversation.item.input_audio_transcription.completed``), so the agent's text of that turn is
  held until the user's is sent: bounded in time (:data:`USER_TEXT_WAIT`, via ``tick``) and in count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.providers.openai import translate as tr

USE_TOOL_RESULTS = (
    "When you call a function, wait for its result and use it in your reply; "
    "a result with an error means the function failed: say so."
)
"""Added to the instructions when the session declares tools: the model answers from the results it gets."""
USER_TEXT_WAIT = 2.0
"""Seconds the agent's text waits for the user's transcript of the same turn before it goes anyway."""
MAX_HELD = 32


def refine_session(session: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``session`` of the ``session.update`` made from Settings, with the transcription and the tool-result
    instruction mapped."""
    agent = tr.as_dict(settings.get("agent"))
    listen = tr.as_dict(tr.as_dict(agent.get("listen")).get("provider"))
    transcription = session["audio"]["input"]["transcription"]
    language = agent.get("language", listen.get("language"))
    if isinstance(language, str) and language and language != "multi":
        transcription["language"] = language
    keyterms = [k for k in listen.get("keyterms") or [] if isinstance(k, str) and k.strip()]
    if keyterms:
        transcription["prompt"] = ", ".join(keyterms)
    session["instructions"] = with_tool_note(session["instructions"], session.get("tools"))
    return session


def with_tool_note(instructions: str, tools: Any) -> str:
    """The instructions, with :data:`USE_TOOL_RESULTS` at the end when the session declares ``tools``."""
    if not tools:
        return instructions
    return f"{instructions}\n\n{USE_TOOL_RESULTS}" if instructions else USE_TOOL_RESULTS


def history_wanted(settings: Mapping[str, Any]) -> bool:
    """``flags.history`` (default true): the client wants ``History`` messages."""
    return tr.as_dict(settings.get("flags")).get("history") is not False


def _frame(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


class Transcript:
    """The text frames of one conversation, in the order a Deepgram client expects."""

    def __init__(self) -> None:
        self.history = True
        self._texted: set[str] = set()
        self._awaiting: str | None = None
        """The user's audio item whose transcript is not in yet."""
        self._since = 0.0
        self._held: list[str] = []
        self._said = ("", "")
        """The latest response that spoke, and its text so far (AgentThinking if a tool call follows)."""

    def handle(self, event: Mapping[str, Any], now: float) -> list[str]:
        kind = event.get("type")
        if kind == "input_audio_buffer.committed":
            self._awaiting, self._since = str(event.get("item_id")), now
            return []
        if kind == "conversation.item.input_audio_transcription.failed":
            return self._release() if str(event.get("item_id")) == self._awaiting else []
        if kind == "conversation.item.input_audio_transcription.completed":
            text = event.get("transcript")
            return self._text(str(event.get("item_id")), "user", text) if isinstance(text, str) else []
        if kind in ("response.output_audio_transcript.done", "response.output_text.done"):
            text = event.get("transcript") if "transcript" in event else event.get("text")
            if not isinstance(text, str):
                return []
            response_id = str(event.get("response_id"))
            before = self._said[1] if self._said[0] == response_id else ""
            self._said = (response_id, f"{before} {text}".strip())
            return self._text(str(event.get("item_id")), "assistant", text)
        item = tr.as_dict(event.get("item"))
        text = tr.user_text(item)
        return self._text(str(item.get("id")), "user", text) if text is not None else []

    def thinking(self, response_id: str) -> list[str]:
        """A tool call of ``response_id`` arrived: what the agent said before it is its thinking (once)."""
        said_in, text = self._said
        if said_in != response_id:
            return []
        self._said = ("", "")
        return [_frame("AgentThinking", content=text)] if text else []

    def call(self, call_id: str, name: str, arguments: str, output: str) -> list[str]:
        """A call was answered: its History entry (the session hides the backend's)."""
        if not self.history:
            return []
        entry = {"id": call_id, "name": name, "client_side": True, "arguments": arguments, "response": output}
        return [_frame("History", function_calls=[entry])]

    def tick(self, now: float) -> list[str]:
        """The user's transcript is late past :data:`USER_TEXT_WAIT`: the agent's text goes without it."""
        return self._release() if self._awaiting is not None and now - self._since >= USER_TEXT_WAIT else []

    def _text(self, item_id: str, role: str, text: str) -> list[str]:
        if item_id in self._texted or not text.strip():
            return []
        self._texted.add(item_id)
        frames = [tr.conversation_text(role, text)]
        if self.history:
            frames.append(_frame("History", role=role, content=text))
        if role == "user":
            return frames + self._release() if item_id == self._awaiting else frames
        if self._awaiting is not None and len(self._held) < MAX_HELD:
            self._held += frames
            return []
        return self._release() + frames  # nothing awaited, or too much held: in order, without the user's text

    def _release(self) -> list[str]:
        held, self._held, self._awaiting = self._held, [], None
        return held
