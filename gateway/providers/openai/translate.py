"""Pure translation between the component protocol (Deepgram Voice Agent v1) and OpenAI Realtime (GA).

No sockets, no state: every function takes messages (dicts, strings) and returns messages. What has to be
remembered between messages (which calls are pending, whether a response is active, resampler state) lives
in :mod:`.bridge`; the WebSocket I/O lives in :mod:`.adapter`.

Names: a *frame* is a component-protocol message for the client (a JSON text or PCM bytes); an *event* is an
OpenAI Realtime message (a dict, serialised by the adapter).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.providers.openai.formats import AudioPlan
from shared.protocol import (
    ConversationText,
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallRequest,
    Message,
    SettingsApplied,
    Welcome,
    dump,
    warning_frame,
)

TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
"""Transcribes the user's audio, so the client gets ``ConversationText`` for what the user said."""
SAY_EXACTLY = "Say exactly the following, word for word, and nothing else: "
"""How a greeting or ``InjectAgentMessage`` becomes speech: OpenAI has no "speak this text" event."""
SILENT_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "rate_limits.updated",
        "response.output_item.added",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.done",
        "response.function_call_arguments.delta",
    }
)
"""Provider events that need no translation: logged at debug level only, never sent to the client."""


def _frame(message: Message) -> str:
    return dump(message)


def _message(type_: str, **fields: Any) -> str:
    """A component message the shared models do not describe (UserStartedSpeaking, PromptUpdated...)."""
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


# --- Settings -------------------------------------------------------------------------------------------------


def instructions(prompt: str, context_messages: Iterable[Any] = ()) -> str:
    """The system instructions: the prompt, then any earlier conversation from ``agent.context.messages``.

    Deepgram replays that history to its LLM; OpenAI has no history field in the session, so it is written
    out after the prompt, where the model reads it as background.
    """
    lines = []
    for message in context_messages:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            lines.append(f"{message.get('role', 'user')}: {message['content']}")
        for call in message.get("function_calls") or []:
            if isinstance(call, dict):
                lines.append(
                    f"function {call.get('name')}({call.get('arguments', '')}) returned: {call.get('response')}"
                )
    if not lines:
        return prompt
    history = "Conversation so far:\n" + "\n".join(lines)
    return f"{prompt}\n\n{history}" if prompt else history


def tools(functions: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """OpenAI function tools from ``agent.think.functions``, and the names left out.

    A function with an ``endpoint`` is one Deepgram would call itself; OpenAI calls no URL, so it is left out
    (the caller warns the client).
    """
    declared, skipped = [], []
    for fn in functions:
        if fn.get("endpoint"):
            skipped.append(str(fn.get("name")))
            continue
        declared.append(
            {
                "type": "function",
                "name": fn["name"],
                "description": fn.get("description") or "",
                "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
            }
        )
    return declared, skipped


def session_update(settings: Mapping[str, Any], voice: str, plan: AudioPlan) -> tuple[dict[str, Any], list[str]]:
    """``Settings`` → the ``session`` of a ``session.update``, and warnings for what could not be translated.

    Server VAD detects turns, creates responses and interrupts the agent when the user speaks, as Deepgram
    does. ``voice`` is the Realtime voice already chosen (see :func:`.formats.voice`).
    """
    prompt, context = prompt_and_context(settings)
    fields, warnings = think_fields(think_of(settings), prompt, context)
    session = {
        "type": "realtime",
        "instructions": fields["instructions"],
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": plan.input.format,
                "transcription": {"model": TRANSCRIPTION_MODEL},
                "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": True},
            },
            "output": {"format": plan.output.format, "voice": voice},
        },
        "tools": fields["tools"],
        "tool_choice": "auto",
    }
    return session, warnings


def think_fields(think: Mapping[str, Any], prompt: str, context: Iterable[Any]) -> tuple[dict[str, Any], list[str]]:
    """The ``instructions`` and ``tools`` of a think configuration (Settings' or an ``UpdateThink``'s), and a
    warning for each function OpenAI cannot declare."""
    declared, skipped = tools(f for f in think.get("functions") or [] if isinstance(f, dict) and f.get("name"))
    text = "Function {!r} has an endpoint, which OpenAI cannot call; it was not declared."
    warnings = [text.format(name) for name in skipped]
    return {"instructions": instructions(prompt, context), "tools": declared}, warnings


def think_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """``agent.think`` of Settings, or ``think`` of an UpdateThink; of a list of fallback providers (Deepgram,
    2026-01), the first: OpenAI Realtime is its own and only model."""
    agent = as_dict(message.get("agent"))
    think = agent.get("think") if "agent" in message else message.get("think")
    if isinstance(think, list):
        think = next((t for t in think if isinstance(t, dict)), {})
    return as_dict(think)


def prompt_and_context(settings: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``agent.think.prompt`` and ``agent.context.messages``: what the instructions are made of."""
    prompt = think_of(settings).get("prompt")
    messages = as_dict(as_dict(settings.get("agent")).get("context")).get("messages")
    return (prompt if isinstance(prompt, str) else ""), (messages if isinstance(messages, list) else [])


def greeting(settings: Mapping[str, Any]) -> str | None:
    """``agent.greeting``: the first thing the agent says, before the user speaks."""
    text = as_dict(settings.get("agent")).get("greeting")
    return text if isinstance(text, str) and text.strip() else None


# --- client → OpenAI events -----------------------------------------------------------------------------------


def user_message(text: str) -> dict[str, Any]:
    """``InjectUserMessage`` → a user message item; a ``response.create`` must follow (see the bridge)."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item}


def response_create(say: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """``response.create``; with ``say`` the response speaks that text (greeting, ``InjectAgentMessage``).

    ``event_id`` comes back in an ``error`` caused by this event, so the sender knows its request failed.
    """
    event: dict[str, Any] = {"type": "response.create"}
    if event_id is not None:
        event["event_id"] = event_id
    if say is not None:
        event["response"] = {"instructions": SAY_EXACTLY + say, "tool_choice": "none"}  # words only, no calls
    return event


def function_output(call_id: str, output: str) -> dict[str, Any]:
    """``FunctionCallResponse`` → the ``function_call_output`` item answering ``call_id``."""
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return {"type": "conversation.item.create", "item": item}


def audio_append(pcm: bytes) -> dict[str, Any]:
    """24 kHz PCM16 (already resampled) → ``input_audio_buffer.append``."""
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


# --- OpenAI events → client frames ----------------------------------------------------------------------------


def welcome(event: Mapping[str, Any]) -> str:
    """``session.created`` → ``Welcome``, with OpenAI's session id as the request id."""
    return _frame(Welcome(request_id=str(as_dict(event.get("session")).get("id") or "")))


def settings_applied() -> str:
    return _frame(SettingsApplied())


def acknowledgement(type_: str) -> str:
    """A confirmation without fields: ``PromptUpdated``, ``ThinkUpdated``, ``SpeakUpdated``."""
    return _message(type_)


def user_started_speaking() -> str:
    return _message("UserStartedSpeaking")


def agent_started_speaking(latency: float) -> str:
    """Speech-to-speech has no separate LLM and TTS stages: the whole wait is reported as ``ttt_latency``."""
    seconds = round(max(latency, 0.0), 3)
    return _message("AgentStartedSpeaking", total_latency=seconds, tts_latency=0.0, ttt_latency=seconds)


def agent_audio_done() -> str:
    return _message("AgentAudioDone")


def conversation_text(role: str, content: str) -> str:
    return _frame(ConversationText(role=role, content=content))  # type: ignore[arg-type]


def warning(code: str, description: str) -> str:
    return warning_frame(code, description)


def function_call_request(calls: Iterable[tuple[str, str, str]]) -> str:
    """``(call_id, name, arguments)`` → one ``FunctionCallRequest`` the client (or the gateway) must answer."""
    functions = [FunctionCall(id=i, name=n, arguments=a, client_side=True) for i, n, a in calls]
    return _frame(FunctionCallRequest(functions=functions))


def function_call_cancelled(calls: Iterable[tuple[str, str]]) -> str:
    """``(call_id, name)`` → ``FunctionCallCancelled``: the response that asked for them was cancelled."""
    return _frame(FunctionCallCancelled.model_validate({"functions": [{"id": i, "name": n} for i, n in calls]}))


# --- reading OpenAI events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallInfo:
    """A function call the model made, from ``function_call_arguments.done`` or a ``function_call`` item."""

    call_id: str
    name: str
    arguments: str
    response_id: str


def call_info(event: Mapping[str, Any]) -> CallInfo | None:
    """The call in ``response.function_call_arguments.done`` or ``response.output_item.done``, if any."""
    if event.get("type") == "response.function_call_arguments.done":
        source: Mapping[str, Any] = event
    else:
        source = as_dict(event.get("item"))
        if source.get("type") != "function_call":
            return None
    call_id, name = source.get("call_id"), source.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        return None
    arguments = source.get("arguments")
    return CallInfo(call_id, name, arguments if isinstance(arguments, str) else "{}", str(event.get("response_id")))


def calls_in_response(event: Mapping[str, Any]) -> list[CallInfo]:
    """The ``function_call`` items listed in ``response.done``'s output (a fallback for missed events)."""
    response = as_dict(event.get("response"))
    found = (call_info({"item": item}) for item in response.get("output") or [] if isinstance(item, dict))
    return [CallInfo(c.call_id, c.name, c.arguments, str(response.get("id"))) for c in found if c]


def user_text(item: Mapping[str, Any]) -> str | None:
    """What the user said in a conversation item: typed text, or the transcript of audio when it has one."""
    if item.get("type") != "message" or item.get("role") != "user":
        return None
    parts = []
    for part in item.get("content") or []:
        if isinstance(part, dict):
            text = part.get("text") if part.get("type") == "input_text" else part.get("transcript")
            if isinstance(text, str) and text.strip():
                parts.append(text)
    return " ".join(parts) or None


def audio_bytes(event: Mapping[str, Any]) -> bytes:
    """The PCM16 of ``response.output_audio.delta`` (base64 in ``delta``)."""
    delta = event.get("delta")
    return base64.b64decode(delta) if isinstance(delta, str) else b""


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: provider and client fields may be absent or odd."""
    return value if isinstance(value, dict) else {}
