"""The pure translation between the component protocol and OpenAI Realtime: one test per mapped message."""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.providers.openai import translate as tr
from gateway.providers.openai.formats import audio_plan

WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "audio": {
        "input": {"encoding": "linear16", "sample_rate": 16000},
        "output": {"encoding": "linear16", "sample_rate": 48000, "container": "none"},
    },
    "agent": {
        "think": {"provider": {"type": "open_ai"}, "prompt": "You are terse.", "functions": [WEATHER]},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}


def parsed(frame: str) -> dict[str, Any]:
    return json.loads(frame)


# --- Settings → session.update ----------------------------------------------------------------------------------


def test_settings_become_a_realtime_session_update():
    session, warnings = tr.session_update(SETTINGS, "marin", audio_plan(SETTINGS))
    assert warnings == []
    assert session["type"] == "realtime"
    assert session["instructions"] == "You are terse."
    assert session["tools"] == [{"type": "function", **WEATHER}]
    assert session["tool_choice"] == "auto"
    audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"] == {"type": "server_vad", "create_response": True, "interrupt_response": True}
    assert audio_in["transcription"] == {"model": tr.TRANSCRIPTION_MODEL}
    assert audio_out == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}


def test_context_messages_follow_the_prompt_in_the_instructions():
    context = [
        {"type": "History", "role": "user", "content": "Hi, I'm Ann."},
        {"type": "History", "role": "assistant", "content": "Hello Ann."},
        {"type": "History", "function_calls": [{"name": "get_weather", "arguments": "{}", "response": "sunny"}]},
    ]
    settings = {**SETTINGS, "agent": {**SETTINGS["agent"], "context": {"messages": context}}}
    text = tr.session_update(settings, "marin", audio_plan(settings))[0]["instructions"]
    assert text.startswith("You are terse.\n\nConversation so far:\n")
    assert "user: Hi, I'm Ann.\nassistant: Hello Ann.\nfunction get_weather({}) returned: sunny" in text
    assert tr.instructions("", [{"role": "user", "content": "x"}]) == "Conversation so far:\nuser: x"


def test_endpoint_functions_are_left_out_with_a_warning():
    server_side = {"name": "lookup", "endpoint": {"url": "https://example.com"}}
    settings = {"agent": {"think": {"functions": [WEATHER, server_side]}}}
    session, warnings = tr.session_update(settings, "marin", audio_plan(settings))
    assert [t["name"] for t in session["tools"]] == ["get_weather"]
    assert "lookup" in warnings[0]


def test_think_may_be_a_list_of_fallback_providers_the_first_counts():
    settings = {"agent": {"think": [{"prompt": "First.", "functions": [WEATHER]}, {"prompt": "Second."}]}}
    session, _ = tr.session_update(settings, "marin", audio_plan(settings))
    assert session["instructions"] == "First." and [t["name"] for t in session["tools"]] == ["get_weather"]
    assert tr.think_of({"type": "UpdateThink", "think": [{"prompt": "P"}]}) == {"prompt": "P"}


def test_greeting():
    assert tr.greeting({"agent": {"greeting": "Hi!"}}) == "Hi!"
    assert tr.greeting({"agent": {"greeting": " "}}) is None
    assert tr.greeting({}) is None


# --- other client messages ------------------------------------------------------------------------------------


def test_inject_user_message_becomes_a_user_item():
    assert tr.user_message("Hello") == {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
    }


def test_response_create_plain_and_with_words_to_say():
    assert tr.response_create() == {"type": "response.create"}
    event = tr.response_create("Welcome!", event_id="e1")
    assert event["event_id"] == "e1"
    assert event["response"]["instructions"] == tr.SAY_EXACTLY + "Welcome!"


def test_function_call_response_becomes_a_function_call_output():
    assert tr.function_output("call_1", '{"t":18}') == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"t":18}'},
    }


def test_audio_becomes_base64_append():
    event = tr.audio_append(b"\x01\x02\x03\x04")
    assert event["type"] == "input_audio_buffer.append"
    assert base64.b64decode(event["audio"]) == b"\x01\x02\x03\x04"


# --- OpenAI events → component frames ---------------------------------------------------------------------------


def test_session_created_becomes_welcome():
    assert parsed(tr.welcome({"type": "session.created", "session": {"id": "sess_1"}})) == {
        "type": "Welcome",
        "request_id": "sess_1",
    }


def test_status_messages():
    assert parsed(tr.settings_applied()) == {"type": "SettingsApplied"}
    assert parsed(tr.acknowledgement("PromptUpdated")) == {"type": "PromptUpdated"}
    assert parsed(tr.user_started_speaking()) == {"type": "UserStartedSpeaking"}
    assert parsed(tr.agent_audio_done()) == {"type": "AgentAudioDone"}
    assert parsed(tr.agent_started_speaking(0.25)) == {
        "type": "AgentStartedSpeaking",
        "total_latency": 0.25,
        "tts_latency": 0.0,
        "ttt_latency": 0.25,
    }


def test_conversation_text():
    assert parsed(tr.conversation_text("assistant", "Hi")) == {
        "type": "ConversationText",
        "role": "assistant",
        "content": "Hi",
    }


def test_warning():
    assert parsed(tr.warning("W", "careful")) == {"type": "Warning", "code": "W", "description": "careful"}


def test_function_call_request_and_cancelled():
    request = parsed(tr.function_call_request([("call_1", "get_weather", '{"location":"Paris"}')]))
    assert request == {
        "type": "FunctionCallRequest",
        "functions": [
            {"id": "call_1", "name": "get_weather", "arguments": '{"location":"Paris"}', "client_side": True}
        ],
    }
    cancelled = parsed(tr.function_call_cancelled([("call_1", "get_weather")]))
    assert cancelled == {"type": "FunctionCallCancelled", "functions": [{"id": "call_1", "name": "get_weather"}]}


def test_calls_are_read_from_arguments_done_and_function_call_items():
    done = {
        "type": "response.function_call_arguments.done",
        "response_id": "r1",
        "call_id": "c1",
        "name": "get_weather",
        "arguments": "{}",
    }
    assert tr.call_info(done) == tr.CallInfo("c1", "get_weather", "{}", "r1")
    item = {"type": "function_call", "call_id": "c2", "name": "f", "arguments": '{"a":1}'}
    assert tr.call_info({"type": "response.output_item.done", "response_id": "r1", "item": item}) == tr.CallInfo(
        "c2", "f", '{"a":1}', "r1"
    )
    message = {"type": "message", "role": "assistant"}
    assert tr.call_info({"type": "response.output_item.done", "item": message}) is None
    response = {"id": "r2", "status": "completed", "output": [message, item]}
    assert tr.calls_in_response({"type": "response.done", "response": response}) == [
        tr.CallInfo("c2", "f", '{"a":1}', "r2")
    ]


def test_user_text_of_items():
    typed = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    spoken = {"type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": "Hello"}]}
    pending = {"type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
    assistant = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Yo"}]}
    assert [tr.user_text(i) for i in (typed, spoken, pending, assistant)] == ["Hi", "Hello", None, None]


def test_output_audio_is_decoded():
    pcm = b"\x00\x01" * 10
    assert tr.audio_bytes({"type": "response.output_audio.delta", "delta": base64.b64encode(pcm).decode()}) == pcm
    assert tr.audio_bytes({"type": "response.output_audio.delta"}) == b""
