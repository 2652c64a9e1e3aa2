"""The session configuration of one OpenAI conversation: Settings and every Update* message, without I/O.

Each configuration message becomes one ``session.update``, sent one at a time through :class:`.updates.Updates`,
so each answer is matched to its update: ``session.updated`` confirms it (``SettingsApplied``, ``PromptUpdated``,
``ThinkUpdated``, ``SpeakUpdated``), an ``error`` echoing its ``event_id`` refuses it. A refused Settings is an
``Error`` naming what OpenAI refused, and the conversation ends (a Deepgram client takes an Error as the end);
a refused update is a ``Warning`` and the conversation goes on as before it.

- ``UpdatePrompt`` appends to the prompt, as Deepgram does; the whole instructions are sent again.
- ``UpdateThink`` replaces the think configuration: its prompt (when it has one) and its functions become the
  instructions and tools. The session has merged the backend functions into it already, as into Settings; the
  backend's definitions are merged here again, so no path can drop or redefine a backend function.
- ``UpdateSpeak`` with an ``open_ai`` provider and a Realtime voice changes the voice; any other is a Warning.
- ``UpdateListen``: OpenAI Realtime hears the audio itself; a Warning says it has no effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.providers.openai import formats
from gateway.providers.openai import translate as tr
from gateway.providers.openai.errors import describe
from gateway.providers.openai.inputs import MAX_WAITING, queue_full
from gateway.providers.openai.mapping import refine_session, with_tool_note
from gateway.providers.openai.updates import Update, Updates
from shared.protocol import ErrorCode, error_frame

if TYPE_CHECKING:
    from gateway.providers.openai.inputs import Out
    from shared.envelopes import FunctionSpec

MAX_PROMPT_CHARS = 1 << 20
"""Longest prompt UpdatePrompt may grow to (Deepgram appends, so each update makes it longer): the size of the
largest Settings frame, and every update sends the whole prompt again."""
UPDATE_REFUSED = ErrorCode.UPDATE_REFUSED
"""Warning: OpenAI refused the session.update an Update* message became; the session goes on unchanged."""


class SessionConfig:
    """Prompt, context and voice as OpenAI last accepted or was asked, and the updates waiting for an answer."""

    def __init__(self, voice: str) -> None:
        self.voice = voice
        self.prompt = ""
        self.context: list[Any] = []
        self.updates = Updates()
        self.settings_refused = False
        self.tools = False
        """The session declares tools: the instructions then end with :data:`.mapping.USE_TOOL_RESULTS`."""
        self.backend: dict[str, dict[str, Any]] = {}
        """The backend functions as tools definitions: an UpdateThink never drops or redefines one."""

    def use_functions(self, owned: Mapping[str, FunctionSpec]) -> None:
        self.backend = {
            n: {"name": n, "description": s.description, "parameters": s.parameters} for n, s in owned.items()
        }

    def settings(self, message: dict[str, Any], out: Out) -> formats.AudioPlan:
        """``Settings`` → the first ``session.update``; the audio plan is the caller's to apply."""
        plan = formats.audio_plan(message)
        self.voice, voice_warning = formats.voice(tr.as_dict(message.get("agent")).get("speak"), self.voice)
        session, warnings = tr.session_update(message, self.voice, plan)
        refine_session(session, message)  # transcription language and keyterms, the tool-result instruction
        self.prompt, self.context = tr.prompt_and_context(message)
        self.tools = bool(session["tools"])
        self._send(Update("Settings", session), out)
        out.client += [tr.warning(ErrorCode.UNSUPPORTED_SETTING, text) for text in [*warnings, voice_warning] if text]
        return plan

    def update_prompt(self, addition: str, out: Out) -> None:
        if len(self.prompt) + len(addition) > MAX_PROMPT_CHARS:
            description = f"UpdatePrompt dropped: the prompt would exceed {MAX_PROMPT_CHARS} characters."
            out.client.append(tr.warning("INVALID_MESSAGE", description))
            return
        if self._full("UpdatePrompt", out):
            return
        self.prompt = f"{self.prompt}\n\n{addition}" if self.prompt else addition  # Deepgram appends
        instructions = with_tool_note(tr.instructions(self.prompt, self.context), self.tools)
        update = Update("UpdatePrompt", {"instructions": instructions}, "PromptUpdated")
        self._send(update, out)

    def update_think(self, message: dict[str, Any], out: Out) -> None:
        think = tr.think_of(message)
        if self._full("UpdateThink", out):
            return
        prompt = think.get("prompt")
        if isinstance(prompt, str):
            self.prompt = prompt  # UpdateThink replaces the think configuration, prompt included
        functions = [
            f for f in think.get("functions") or [] if not (isinstance(f, dict) and f.get("name") in self.backend)
        ]
        think = {**think, "functions": [*functions, *self.backend.values()]}
        fields, warnings = tr.think_fields(think, self.prompt, self.context)
        self.tools = bool(fields["tools"])
        fields["instructions"] = with_tool_note(fields["instructions"], self.tools)
        out.client += [tr.warning(ErrorCode.UNSUPPORTED_SETTING, text) for text in warnings]
        self._send(Update("UpdateThink", fields, "ThinkUpdated"), out)

    def update_speak(self, message: dict[str, Any], out: Out) -> None:
        speak = message.get("speak")
        voice, problem = formats.voice(speak, self.voice)
        if problem is None and formats.speak_provider(speak).get("type") not in formats.OPENAI_SPEAK_TYPES:
            problem = "With the OpenAI provider, only an open_ai speak provider with a Realtime voice can be set."
        if problem is not None:
            out.client.append(tr.warning(ErrorCode.UNSUPPORTED_SETTING, f"UpdateSpeak not applied: {problem}"))
        elif not self._full("UpdateSpeak", out):
            self._send(Update("UpdateSpeak", {"audio": {"output": {"voice": voice}}}, "SpeakUpdated"), out)

    def update_listen(self, message: dict[str, Any], out: Out) -> None:
        description = "UpdateListen has no effect with the OpenAI provider: OpenAI Realtime hears the audio itself."
        out.client.append(tr.warning(ErrorCode.UNSUPPORTED_MESSAGE, description))

    def updated(self, out: Out) -> Update | None:
        """``session.updated``: the update it confirms (its acknowledgement is sent); the next update goes out."""
        update, next_event = self.updates.confirmed()
        if update is not None and update.kind == "UpdateSpeak":
            self.voice = update.session["audio"]["output"]["voice"]
        if update is not None and update.ack is not None:
            out.client.append(tr.acknowledgement(update.ack))
        if next_event is not None:
            out.provider.append(next_event)
        return update

    def refused(self, event: dict[str, Any], out: Out) -> Update | None:
        """An ``error`` that refuses the update in flight (None when it is about something else): the client
        hears what was refused; a refused Settings is an Error and ``settings_refused`` is set."""
        details = tr.as_dict(event.get("error"))
        update, next_event = self.updates.refused(details.get("event_id"))
        if update is None:
            return None
        description = f"OpenAI refused the {update.kind}: {describe(details)}"
        if update.kind == "Settings":
            self.settings_refused = True
            self.updates = Updates()  # the conversation ends: nothing more is sent, no answer is taken
            out.client.append(error_frame(ErrorCode.INVALID_SETTINGS, description))
            return update
        out.client.append(tr.warning(UPDATE_REFUSED, description))
        if next_event is not None:
            out.provider.append(next_event)
        return update

    def _send(self, update: Update, out: Out) -> None:
        event = None if self.settings_refused else self.updates.add(update)
        if event is not None:
            out.provider.append(event)

    def _full(self, kind: str, out: Out) -> bool:
        if len(self.updates) < MAX_WAITING:
            return False
        out.client.append(queue_full(kind, "updates are waiting for OpenAI"))
        return True
