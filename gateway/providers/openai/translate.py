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

from gateway.providers.openai.audio import OPENAI_RATE
from shared.protocol import (
    ConversationText,
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallRequest,
    Message,
    SettingsApplied,
    Welcome,
    dump,
    error_frame,
    warning_frame,
)

DEFAULT_INPUT_RATE = 16000
"""The component sends 16 kHz when Settings do not say (sources disagree; clients should always say)."""
DEFAULT_OUTPUT_RATE = 24000
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
"""Transcribes the user's audio, so the client gets ``ConversationText`` for what the user said."""
SAY_EXACTLY = "Say exactly the following, word for word, and nothing else: "
"""How a greeting or ``InjectAgentMessage`` becomes speech: OpenAI has no "speak this text" event."""
G711 = {"mulaw": "audio/pcmu", "alaw": "audio/pcma"}
"""Encodings OpenAI takes as they are (8 kHz telephony), so they pass without resampling."""
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


@dataclass(frozen=True)
class AudioPlan:
    """How the client's declared audio maps to OpenAI's formats."""

    input_rate: int
    output_rate: int
    input_format: dict[str, Any]
    output_format: dict[str, Any]
    resample: bool
    """True for linear16: PCM16 is resampled between the client's rates and 24 kHz."""
    warnings: tuple[str, ...] = ()


def audio_plan(settings: Mapping[str, Any]) -> AudioPlan:
    """Read ``audio.input``/``audio.output`` of Settings. linear16 at any rate becomes ``audio/pcm`` at 24 kHz
    (resampled); mulaw/alaw pass through as ``audio/pcmu``/``audio/pcma``; anything else is treated as linear16
    with a warning, because OpenAI accepts no other encoding."""
    audio = as_dict(settings.get("audio"))
    source, sink = as_dict(audio.get("input")), as_dict(audio.get("output"))
    in_encoding = str(source.get("encoding") or "linear16")
    out_encoding = str(sink.get("encoding") or "linear16")
    warnings = [
        f"Audio encoding {enc!r} is not supported with OpenAI; it is treated as linear16."
        for enc in dict.fromkeys((in_encoding, out_encoding))
        if enc != "linear16" and enc not in G711
    ]
    if in_encoding in G711 and in_encoding == out_encoding:
        return AudioPlan(8000, 8000, {"type": G711[in_encoding]}, {"type": G711[out_encoding]}, False, ())
    if in_encoding in G711 or out_encoding in G711:
        warnings.append("OpenAI needs the same encoding both ways for mulaw/alaw; linear16 is used.")
    return AudioPlan(
        input_rate=int(source.get("sample_rate") or DEFAULT_INPUT_RATE),
        output_rate=int(sink.get("sample_rate") or DEFAULT_OUTPUT_RATE),
        input_format={"type": "audio/pcm", "rate": OPENAI_RATE},
        output_format={"type": "audio/pcm", "rate": OPENAI_RATE},
        resample=True,
        warnings=tuple(warnings),
    )


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
    """``Settings`` → ``session.update``, and warnings for what could not be translated.

    Server VAD detects turns, creates responses and interrupts the agent when the user speaks, as Deepgram
    does. A ``speak.provider`` of type ``open_ai`` with a ``voice`` chooses the voice; otherwise ``voice``.
    """
    agent = as_dict(settings.get("agent"))
    think = as_dict(agent.get("think"))
    speak = as_dict(as_dict(agent.get("speak")).get("provider"))
    if speak.get("type") in ("open_ai", "openai") and isinstance(speak.get("voice"), str):
        voice = speak["voice"]
    declared, skipped = tools(f for f in think.get("functions") or [] if isinstance(f, dict) and f.get("name"))
    warnings = list(plan.warnings) + [
        f"Function {name!r} has an endpoint, which OpenAI cannot call; it was not declared." for name in skipped
    ]
    session = {
        "type": "realtime",
        "instructions": instructions(*prompt_and_context(settings)),
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": plan.input_format,
                "transcription": {"model": TRANSCRIPTION_MODEL},
                "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": True},
            },
            "output": {"format": plan.output_format, "voice": voice},
        },
        "tools": declared,
        "tool_choice": "auto",
    }
    return {"type": "session.update", "session": session}, warnings


def prompt_and_context(settings: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``agent.think.prompt`` and ``agent.context.messages``: what the instructions are made of."""
    agent = as_dict(settings.get("agent"))
    prompt = as_dict(agent.get("think")).get("prompt")
    messages = as_dict(agent.get("context")).get("messages")
    return (prompt if isinstance(prompt, str) else ""), (messages if isinstance(messages, list) else [])


def greeting(settings: Mapping[str, Any]) -> str | None:
    """``agent.greeting``: the first thing the agent says, before the user speaks."""
    text = as_dict(settings.get("agent")).get("greeting")
    return text if isinstance(text, str) and text.strip() else None


# --- client → OpenAI events -----------------------------------------------------------------------------------


def instructions_update(text: str) -> dict[str, Any]:
    """``UpdatePrompt`` → ``session.update`` with new instructions (the caller appends, as Deepgram does)."""
    return {"type": "session.update", "session": {"type": "realtime", "instructions": text}}


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


def prompt_updated() -> str:
    return _message("PromptUpdated")


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


def error(event: Mapping[str, Any]) -> str:
    """``error {error: {code, message, type}}`` → ``Error {code, description}``."""
    details = as_dict(event.get("error"))
    code = details.get("code") or details.get("type") or "OPENAI_ERROR"
    return error_frame(str(code), str(details.get("message") or "OpenAI reported an error."))


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
