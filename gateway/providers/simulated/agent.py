"""A simulated voice agent that speaks the Deepgram Voice Agent API v1, offline and deterministically.

It lets the project run with no provider account, and it is the provider of the tests: it speaks the same
protocol as Deepgram, so the gateway code that serves it also serves the real provider.

:class:`SimulatedAgent` is a sans-I/O protocol core: ``opening()`` gives the frames a new connection starts
with, ``receive(frame)`` gives the frames to send back, in order. No sockets, no asyncio, no timers; two I/O
wrappers use it: :mod:`.adapter` (in the gateway's own process) and :mod:`.server` (a standalone WebSocket
server, for tests of real WebSocket adapters: ``python -m gateway.providers.simulated``).

What it does instead of speech recognition, a language model and speech synthesis:

- Users "speak" with ``InjectUserMessage``; audio from the client is only counted.
- Function calls are chosen by :mod:`.intents` (explicit ``call NAME {json}`` or keywords).
- The answer quotes every function result verbatim, so a test can find what a function returned.
- Speech is a 440 Hz tone in PCM16, between ``AgentStartedSpeaking`` and ``AgentAudioDone``. Like Deepgram, the
  agent refuses ``InjectAgentMessage`` (``InjectionRefused``) while it speaks: for the tone's length after it began.
- ``{"type": "SimulatedAgentStats"}`` (not part of the real protocol) reports what reached the provider.

Everything is deterministic except ids (uuid4) and the speaking window, read on the ``clock`` it is given.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import ValidationError

from gateway.providers.base import Frame
from gateway.providers.simulated.intents import Intent, find_calls
from shared.protocol import Settings

__all__ = ["FATAL_CLOSE_CODE", "SimulatedAgent", "tone_chunks"]

DEFAULT_OUTPUT_SAMPLE_RATE = 24000
TONE_HZ = 440.0
TONE_MS = 200
CHUNK_MS = 20
TONE_AMPLITUDE = 0.2 * 32767
LATENCIES = {"total_latency": 0.05, "tts_latency": 0.02, "ttt_latency": 0.03}
"""Fixed numbers for ``AgentStartedSpeaking``: the simulated agent has no real latency to report."""
FATAL_CLOSE_CODE = 1008
"""WebSocket close code after a fatal Error (policy violation), with the error code as the reason."""
STATS_LIMIT = 1000
"""Entries each list in ``stats`` keeps (the newest): they grow with every call a client triggers and answers."""


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _error(code: str, description: str) -> str:
    return _json({"type": "Error", "description": description, "code": code})


def _warning(code: str, description: str) -> str:
    return _json({"type": "Warning", "description": description, "code": code})


@functools.lru_cache(maxsize=8)
def tone_chunks(sample_rate: int) -> tuple[bytes, ...]:
    """200 ms of a 440 Hz sine, PCM16 little-endian mono, cut in 20 ms frames like a real TTS stream."""
    total = sample_rate * TONE_MS // 1000
    per_chunk = max(1, sample_rate * CHUNK_MS // 1000)
    samples = [round(TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / sample_rate)) for i in range(total)]
    return tuple(struct.pack(f"<{len(part)}h", *part) for part in _slices(samples, per_chunk))


def _slices(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class SimulatedAgent:
    """One conversation with the simulated provider: feed it client frames, send back what it returns."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.request_id = f"sim-{uuid.uuid4()}"
        self._clock = clock
        self._speaking_until = 0.0
        """When the agent's latest speech ends, on ``clock``: injections before then are refused."""
        self.closed = False
        """Set after a fatal Error: the I/O wrapper delivers the returned frames, then closes the connection."""
        self.close_reason = ""
        self.settings_applied = False
        self.functions: list[dict[str, Any]] = []
        self.output_sample_rate = DEFAULT_OUTPUT_SAMPLE_RATE
        self.pending: dict[str, str] = {}
        """Requested calls not answered yet, id → name, in request order."""
        self._answers: dict[str, tuple[str, str]] = {}
        """id → (name, content) of the answered calls of the current request; quoted in request order."""
        self._request_order: list[str] = []
        self.stats: dict[str, Any] = {
            "audio_frames": 0,
            "audio_bytes": 0,
            "keepalives": 0,
            "function_requests": 0,
            "function_responses": [],
            "unexpected_responses": 0,
            "cancelled": [],
            "settings": [],
            "injections_refused": 0,
            "context": [],
        }

    # --- entry points ---------------------------------------------------------------------------------------

    def opening(self) -> list[Frame]:
        """The Welcome a new connection starts with; it says plainly that this provider is simulated."""
        welcome = {
            "type": "Welcome",
            "request_id": self.request_id,
            "simulated": True,
            "description": "Simulated voice agent: offline and deterministic, no provider account involved.",
        }
        return [_json(welcome)]

    def receive(self, frame: Frame) -> list[Frame]:
        """Handle one client frame; return the frames to send back, in order. Nothing after a fatal error."""
        if self.closed:
            return []
        if isinstance(frame, bytes | bytearray | memoryview):
            return self._on_audio(bytes(frame))
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [_error("INVALID_MESSAGE", "Text frames must be JSON objects with a string 'type'.")]
        kind = message["type"]
        if kind == "SimulatedAgentStats":  # a test hook, answered even before Settings
            return [_json({"type": "SimulatedAgentStats", **self.stats})]
        if kind == "Settings":
            return self._on_settings(message)
        if not self.settings_applied:
            return self._fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", f"Received {kind} before Settings.")
        handler = self._handlers.get(kind)
        return handler(self, message) if handler else []  # unknown types are ignored, like the real provider

    # --- configuration --------------------------------------------------------------------------------------

    def _on_settings(self, message: dict[str, Any]) -> list[Frame]:
        if self.settings_applied:
            return [_error("SETTINGS_ALREADY_APPLIED", "Settings can be sent only once per connection.")]
        try:
            settings = Settings.model_validate(message)
        except ValidationError as exc:
            return self._fatal("INVALID_SETTINGS", f"Invalid Settings: {exc.errors()[0]['msg']}")
        self.settings_applied = True
        self._set_functions(settings.functions)
        agent = message["agent"] if isinstance(message.get("agent"), dict) else {}
        context = agent.get("context") if isinstance(agent.get("context"), dict) else {}
        # What the conversation was resumed with (agent.context.messages), for tests to check.
        self.stats["context"] = context.get("messages") if isinstance(context.get("messages"), list) else []
        if settings.audio and settings.audio.output and settings.audio.output.sample_rate:
            self.output_sample_rate = settings.audio.output.sample_rate
        out: list[Frame] = [_json({"type": "SettingsApplied"})]
        greeting = agent.get("greeting")
        if isinstance(greeting, str) and greeting:
            out += self._say(greeting)
        return out

    def _set_functions(self, functions: list[Any]) -> None:
        self.functions = [f.model_dump(exclude_none=True) for f in functions]
        self.stats["settings"] = [f["name"] for f in self.functions]

    def _on_update_think(self, message: dict[str, Any]) -> list[Frame]:
        """Deepgram's UpdateThink replaces the think settings; new functions take effect at once."""
        think = message.get("think")
        if isinstance(think, list) or (isinstance(think, dict) and isinstance(think.get("functions"), list)):
            try:
                self._set_functions(Settings.model_validate({"agent": {"think": think}}).functions)
            except ValidationError as exc:
                return [_error("INVALID_MESSAGE", f"Invalid UpdateThink: {exc.errors()[0]['msg']}")]
        return [_json({"type": "ThinkUpdated"})]

    def _on_update_prompt(self, message: dict[str, Any]) -> list[Frame]:
        return [_json({"type": "PromptUpdated"})]

    def _on_update_speak(self, message: dict[str, Any]) -> list[Frame]:
        return [_json({"type": "SpeakUpdated"})]

    def _on_keepalive(self, message: dict[str, Any]) -> list[Frame]:
        self.stats["keepalives"] += 1
        return []

    def _on_audio(self, audio: bytes) -> list[Frame]:
        if not self.settings_applied:
            return self._fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Received audio before Settings.")
        self.stats["audio_frames"] += 1
        self.stats["audio_bytes"] += len(audio)
        return []

    # --- conversation ---------------------------------------------------------------------------------------

    def _on_inject_agent_message(self, message: dict[str, Any]) -> list[Frame]:
        text = message.get("message", message.get("content"))  # older clients send "content"
        if not isinstance(text, str):
            return [_error("INVALID_MESSAGE", "InjectAgentMessage needs a string 'message'.")]
        if self._clock() < self._speaking_until:
            self.stats["injections_refused"] += 1
            return [_json({"type": "InjectionRefused", "message": "The agent is speaking; try again later."})]
        return self._say(text)

    def _on_inject_user_message(self, message: dict[str, Any]) -> list[Frame]:
        content = message.get("content")
        if not isinstance(content, str):
            return [_error("INVALID_MESSAGE", "InjectUserMessage needs a string 'content'.")]
        out: list[Frame] = []
        had_pending = bool(self.pending)
        if had_pending:  # barge-in: the user spoke again, so the calls in flight are no longer wanted
            out.append(self._cancel_pending())
        out.append(_json({"type": "ConversationText", "role": "user", "content": content}))
        if content.strip().strip(".!").lower() == "cancel":
            return out if had_pending else out + self._say("There is nothing to cancel.")
        intents = find_calls(content, self.functions)
        if intents:
            return [*out, self._request(intents)]
        return out + self._say(self._reply_without_calls(content))

    def _reply_without_calls(self, content: str) -> str:
        lowered = content.lower()
        if "what can you do" in lowered or lowered.strip(" ?!.") == "help":
            names = [f["name"] for f in self.functions if not f.get("endpoint")]
            if names:
                return "I am a simulated agent. I can call these functions: " + ", ".join(names) + "."
            return "I am a simulated agent with no functions declared; I repeat what you say."
        return f"You said: {content}"

    def _request(self, intents: list[Intent]) -> str:
        functions = []
        for intent in intents:
            call_id = f"call_{uuid.uuid4().hex}"
            self.pending[call_id] = intent.name
            arguments = json.dumps(intent.arguments, separators=(",", ":"))
            functions.append({"id": call_id, "name": intent.name, "arguments": arguments, "client_side": True})
        self._answers = {}
        self._request_order = [f["id"] for f in functions]
        self.stats["function_requests"] += len(functions)
        return _json({"type": "FunctionCallRequest", "functions": functions})

    def _cancel_pending(self) -> str:
        cancelled = [{"id": call_id, "name": name} for call_id, name in self.pending.items()]
        self.stats["cancelled"] += list(self.pending)
        del self.stats["cancelled"][:-STATS_LIMIT]
        self.pending.clear()
        self._answers = {}
        return _json({"type": "FunctionCallCancelled", "functions": cancelled})

    def _on_function_call_response(self, message: dict[str, Any]) -> list[Frame]:
        call_id, content = message.get("id"), message.get("content")
        if not isinstance(call_id, str) or not isinstance(content, str):
            return [_error("INVALID_MESSAGE", "FunctionCallResponse needs a string 'id' and a string 'content'.")]
        if call_id not in self.pending:
            self.stats["unexpected_responses"] += 1
            description = f"No pending function call has id {call_id!r} (unknown, already answered or cancelled)."
            return [_warning("UNEXPECTED_FUNCTION_CALL_RESPONSE", description)]
        name = self.pending.pop(call_id)
        self.stats["function_responses"].append({"id": call_id, "name": message.get("name", name), "content": content})
        del self.stats["function_responses"][:-STATS_LIMIT]
        self._answers[call_id] = (name, content)
        if self.pending:
            return []
        answers = [self._answers[i] for i in self._request_order]
        return self._say(" ".join(_sentence(f"{name} returned: {content}") for name, content in answers))

    # --- output helpers -------------------------------------------------------------------------------------

    def _say(self, text: str) -> list[Frame]:
        """What the agent says: its text, then the speaking sequence with the audio."""
        self._speaking_until = self._clock() + TONE_MS / 1000
        return [
            _json({"type": "ConversationText", "role": "assistant", "content": text}),
            _json({"type": "AgentStartedSpeaking", **LATENCIES}),
            *tone_chunks(self.output_sample_rate),
            _json({"type": "AgentAudioDone"}),
        ]

    def _fatal(self, code: str, description: str) -> list[Frame]:
        self.closed = True
        self.close_reason = code
        return [_error(code, description)]

    _handlers: ClassVar[dict[str, Callable[[SimulatedAgent, dict[str, Any]], list[Frame]]]] = {
        "KeepAlive": _on_keepalive,
        "UpdatePrompt": _on_update_prompt,
        "UpdateSpeak": _on_update_speak,
        "UpdateThink": _on_update_think,
        "InjectUserMessage": _on_inject_user_message,
        "InjectAgentMessage": _on_inject_agent_message,
        "FunctionCallResponse": _on_function_call_response,
    }


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."
