"""The OpenAI conversation state without sockets: readiness, calls, one response.create at a time, speaking."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from gateway.providers.openai.bridge import Bridge, Out
from gateway.providers.openai.mapping import USE_TOOL_RESULTS
from shared.envelopes import FunctionSpec

SETTINGS = {
    "type": "Settings",
    "audio": {"input": {"encoding": "linear16", "sample_rate": 16000}, "output": {"sample_rate": 16000}},
    "agent": {"think": {"prompt": "Base."}},
}


def spec(name: str, side_effects: bool = False) -> FunctionSpec:
    return FunctionSpec(name=name, description="", parameters={}, side_effects=side_effects)


def types(out: Out) -> list[str]:
    return [json.loads(f)["type"] if isinstance(f, str) else "audio" for f in out.client]


def provider_types(out: Out) -> list[str]:
    return [e["type"] for e in out.provider]


def client(bridge: Bridge, message: dict[str, Any] | bytes) -> Out:
    return bridge.from_component(message if isinstance(message, bytes) else json.dumps(message))


def provider(bridge: Bridge, type_: str, **fields: Any) -> Out:
    return bridge.from_provider(json.dumps({"type": type_, **fields}))


def ready_bridge(owned: dict[str, FunctionSpec] | None = None) -> Bridge:
    bridge = Bridge(clock=lambda: 0.0)
    bridge.use_functions(owned or {})
    client(bridge, SETTINGS)
    provider(bridge, "session.updated", session={})
    return bridge


def created(bridge: Bridge, response_id: str = "r1") -> Out:
    return provider(bridge, "response.created", response={"id": response_id, "status": "in_progress"})


def done(bridge: Bridge, response_id: str = "r1", status: str = "completed") -> Out:
    return provider(bridge, "response.done", response={"id": response_id, "status": status, "output": []})


def call(bridge: Bridge, call_id: str, name: str, response_id: str = "r1") -> Out:
    fields = {"response_id": response_id, "item_id": "i_" + call_id, "call_id": call_id}
    return provider(bridge, "response.function_call_arguments.done", **fields, name=name, arguments="{}")


def answer(bridge: Bridge, call_id: str, name: str = "f") -> Out:
    return client(bridge, {"type": "FunctionCallResponse", "id": call_id, "name": name, "content": '"ok"'})


# --- readiness ------------------------------------------------------------------------------------------------


def test_session_created_gives_welcome():
    out = provider(Bridge(), "session.created", session={"id": "sess_9"})
    assert [json.loads(f) for f in out.client] == [{"type": "Welcome", "request_id": "sess_9"}]


def test_settings_applied_waits_for_session_updated_and_held_messages_follow():
    bridge = Bridge()
    out = client(bridge, SETTINGS)
    assert provider_types(out) == ["session.update"] and out.client == []
    out = client(bridge, {"type": "InjectUserMessage", "content": "Hi"})
    assert out.provider == [] and out.client == []
    out = provider(bridge, "session.updated", session={})
    assert types(out) == ["SettingsApplied"]
    assert provider_types(out) == ["conversation.item.create", "response.create"]


def test_greeting_is_spoken_once_ready():
    bridge = Bridge()
    client(bridge, {**SETTINGS, "agent": {"greeting": "Hello there"}})
    out = provider(bridge, "session.updated", session={})
    assert out.provider[0]["type"] == "response.create"
    assert out.provider[0]["response"]["instructions"].endswith("Hello there")


def test_update_prompt_appends_and_is_confirmed():
    bridge = ready_bridge()
    out = client(bridge, {"type": "UpdatePrompt", "prompt": "Be brief."})
    assert out.provider[0]["session"]["instructions"] == "Base.\n\nBe brief."
    assert types(provider(bridge, "session.updated", session={})) == ["PromptUpdated"]


def test_keepalive_sends_nothing_and_unknown_messages_get_a_warning():
    bridge = ready_bridge()
    assert client(bridge, {"type": "KeepAlive"}) == Out()
    out = client(bridge, {"type": "UpdateSpeak", "speak": {}})
    assert out.provider == [] and types(out) == ["Warning"]


def test_update_think_replaces_instructions_and_tools_and_keeps_the_backend_functions():
    bridge = ready_bridge({"get_weather": spec("get_weather")})
    mine = {"name": "get_weather", "description": "mine", "endpoint": {"url": "https://x.example"}}
    think = {"prompt": "New.", "functions": [mine, {"name": "lookup", "description": "client's"}]}
    out = client(bridge, {"type": "UpdateThink", "think": think})
    [event] = out.provider
    assert event["session"]["instructions"] == f"New.\n\n{USE_TOOL_RESULTS}"  # tools: the note stays last
    tools = {t["name"]: t for t in event["session"]["tools"]}
    assert set(tools) == {"get_weather", "lookup"} and tools["get_weather"]["description"] == ""  # the backend's
    assert types(provider(bridge, "session.updated", session={})) == ["ThinkUpdated"]


def test_update_speak_changes_a_realtime_voice_and_warns_about_others():
    bridge = ready_bridge()
    out = client(bridge, {"type": "UpdateSpeak", "speak": {"provider": {"type": "open_ai", "voice": "cedar"}}})
    assert out.provider[0]["session"]["audio"] == {"output": {"voice": "cedar"}}
    assert types(provider(bridge, "session.updated", session={})) == ["SpeakUpdated"]
    for speak in ({"provider": {"type": "open_ai", "voice": "nova"}}, {"provider": {"type": "deepgram"}}):
        out = client(bridge, {"type": "UpdateSpeak", "speak": speak})
        assert out.provider == [] and types(out) == ["Warning"]
    out = client(bridge, {"type": "UpdateListen", "listen": {"provider": {"type": "deepgram"}}})
    assert out.provider == [] and [json.loads(f)["code"] for f in out.client] == ["UNSUPPORTED_MESSAGE"]


def test_a_tts_only_voice_in_settings_is_never_sent():
    bridge = Bridge(voice="marin")
    out = client(bridge, {**SETTINGS, "agent": {"speak": {"provider": {"type": "open_ai", "voice": "fable"}}}})
    assert out.provider[0]["session"]["audio"]["output"]["voice"] == "marin"
    assert types(out) == ["Warning"] and "fable" in json.loads(out.client[0])["description"]


# --- session.update one at a time -----------------------------------------------------------------------------


def test_updates_wait_for_the_previous_answer_and_confirmations_are_not_mixed_up():
    bridge = Bridge()
    first = client(bridge, SETTINGS).provider[0]
    assert client(bridge, {"type": "UpdatePrompt", "prompt": "More."}).provider == []  # waits for the Settings'
    out = provider(bridge, "session.updated", session={})
    assert types(out) == ["SettingsApplied"] and provider_types(out) == ["session.update"]
    assert out.provider[0]["event_id"] != first["event_id"]
    assert types(provider(bridge, "session.updated", session={})) == ["PromptUpdated"]


def test_refused_settings_are_an_error_naming_what_and_no_later_confirmation_counts():
    bridge = Bridge()
    event_id = client(bridge, SETTINGS).provider[0]["event_id"]
    client(bridge, {"type": "UpdatePrompt", "prompt": "More."})
    client(bridge, b"\x01\x02" * 400)
    refusal = {"type": "invalid_request_error", "code": "invalid_value", "message": "Invalid value: 'x'."}
    out = provider(bridge, "error", error={**refusal, "param": "session.audio.output.voice", "event_id": event_id})
    [error] = [json.loads(f) for f in out.client]
    assert error["type"] == "Error" and error["code"] == "INVALID_SETTINGS"
    assert "Settings" in error["description"] and "session.audio.output.voice" in error["description"]
    assert out.provider == [] and out.end is not None
    assert types(provider(bridge, "session.updated", session={})) == []  # never taken for the Settings'
    assert not bridge.ready and client(bridge, b"\x01\x02" * 400).provider == []


def test_a_refused_update_is_a_warning_and_the_next_update_goes_out():
    bridge = ready_bridge()
    event_id = client(bridge, {"type": "UpdatePrompt", "prompt": "A."}).provider[0]["event_id"]
    client(bridge, {"type": "UpdatePrompt", "prompt": "B."})
    error = {"type": "invalid_request_error", "code": "invalid_value", "message": "Too long.", "event_id": event_id}
    out = provider(bridge, "error", error=error)
    assert [(m["type"], m["code"]) for m in map(json.loads, out.client)] == [("Warning", "UPDATE_REFUSED")]
    assert provider_types(out) == ["session.update"] and out.end is None
    assert types(provider(bridge, "session.updated", session={})) == ["PromptUpdated"]


def test_no_audio_is_appended_before_the_settings_are_confirmed():
    bridge = Bridge()
    client(bridge, SETTINGS)
    assert client(bridge, b"\x00\x10" * 1600).provider == []
    out = provider(bridge, "session.updated", session={})
    assert provider_types(out) == ["input_audio_buffer.append"]
    assert provider_types(client(bridge, b"\x00\x10" * 1600)) == ["input_audio_buffer.append"]


def test_g711_input_passes_as_it_is_while_linear16_output_is_resampled():
    bridge = Bridge()
    audio = {
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {"encoding": "linear16", "sample_rate": 16000},
    }
    out = client(bridge, {**SETTINGS, "audio": audio})
    session_audio = out.provider[0]["session"]["audio"]
    assert session_audio["input"]["format"] == {"type": "audio/pcmu"}
    assert session_audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    provider(bridge, "session.updated", session={})
    [append] = client(bridge, b"\x7f\x00\xff").provider  # one byte a sample: an odd length is whole
    assert base64.b64decode(append["audio"]) == b"\x7f\x00\xff"


def test_unmapped_provider_events_are_not_sent():
    bridge = ready_bridge()
    assert provider(bridge, "rate_limits.updated", rate_limits=[]) == Out()
    assert provider(bridge, "some.future.event") == Out()


# --- conversation ---------------------------------------------------------------------------------------------


def test_one_conversation_text_per_item():
    bridge = ready_bridge()
    item = {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    assert types(provider(bridge, "conversation.item.added", item=item)) == ["ConversationText", "History"]
    assert provider(bridge, "conversation.item.done", item=item).client == []
    out = provider(bridge, "conversation.item.input_audio_transcription.completed", item_id="u2", transcript="Yes")
    assert json.loads(out.client[0]) == {"type": "ConversationText", "role": "user", "content": "Yes"}
    created(bridge)
    fields = {"response_id": "r1", "item_id": "a1", "output_index": 0, "content_index": 0}
    out = provider(bridge, "response.output_audio_transcript.done", **fields, transcript="Sure.")
    assert json.loads(out.client[0]) == {"type": "ConversationText", "role": "assistant", "content": "Sure."}
    assert provider(bridge, "response.output_audio_transcript.done", **fields, transcript="Sure.").client == []


def test_speech_started_and_errors():
    bridge = ready_bridge()
    assert types(provider(bridge, "input_audio_buffer.speech_started", audio_start_ms=0)) == ["UserStartedSpeaking"]
    out = provider(bridge, "error", error={"type": "invalid_request_error", "code": "bad", "message": "No."})
    assert [json.loads(f) for f in out.client] == [{"type": "Warning", "code": "bad", "description": "No."}]


def test_speaking_starts_once_and_ends_with_the_response():
    bridge = ready_bridge()
    created(bridge)
    pcm = (np.sin(np.arange(480) / 5) * 8000).astype("<i2").tobytes()
    delta = {"response_id": "r1", "item_id": "a1", "delta": base64.b64encode(pcm).decode()}
    first = provider(bridge, "response.output_audio.delta", **delta)
    assert types(first)[0] == "AgentStartedSpeaking"
    second = provider(bridge, "response.output_audio.delta", **delta)
    assert "AgentStartedSpeaking" not in types(second)
    end = done(bridge)
    assert types(end)[-1] == "AgentAudioDone"
    audio = [f for out in (first, second, end) for f in out.client if isinstance(f, bytes)]
    assert sum(len(a) for a in audio) // 2 == 640  # 960 samples at 24 kHz → 640 at the client's 16 kHz


def test_input_audio_is_resampled_to_24k():
    bridge = ready_bridge()
    out = client(bridge, b"\x00\x00" * 1600)
    sent = sum(len(base64.b64decode(e["audio"])) for e in out.provider) // 2
    assert provider_types(out) == ["input_audio_buffer.append"] and 2000 < sent <= 2400


def test_a_message_during_a_response_waits_for_its_end():
    bridge = ready_bridge()
    out = client(bridge, {"type": "InjectUserMessage", "content": "One"})
    assert provider_types(out) == ["conversation.item.create", "response.create"]
    created(bridge)
    assert provider_types(client(bridge, {"type": "InjectUserMessage", "content": "Two"})) == [
        "conversation.item.create"
    ]
    assert provider_types(client(bridge, {"type": "InjectAgentMessage", "message": "Three"})) == []
    assert provider_types(done(bridge)) == ["response.create"]  # "Two", then "Three" after the next response
    created(bridge, "r2")
    out = done(bridge, "r2")
    assert out.provider[0]["response"]["instructions"].endswith("Three")


# --- function calls -------------------------------------------------------------------------------------------


def test_one_call_is_requested_answered_and_continued_once():
    bridge = ready_bridge()
    created(bridge)
    out = call(bridge, "c1", "get_weather")
    assert [json.loads(f) for f in out.client] == [
        {
            "type": "FunctionCallRequest",
            "functions": [{"id": "c1", "name": "get_weather", "arguments": "{}", "client_side": True}],
        }
    ]
    item = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    assert provider(bridge, "response.output_item.done", response_id="r1", item=item) == Out()  # no duplicate
    out = answer(bridge, "c1")
    assert out.provider == [
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c1", "output": '"ok"'},
        }
    ]  # the response is still active: no response.create yet
    assert provider_types(done(bridge)) == ["response.create"]


def test_parallel_calls_get_one_response_create_after_the_last_answer():
    bridge = ready_bridge()
    created(bridge)
    call(bridge, "c1", "a")
    call(bridge, "c2", "b")
    assert done(bridge).provider == []
    assert provider_types(answer(bridge, "c2")) == ["conversation.item.create"]
    assert provider_types(answer(bridge, "c1")) == ["conversation.item.create", "response.create"]
    assert answer(bridge, "c1") == Out()  # a second answer is dropped


def test_a_call_reported_only_in_response_done_is_still_requested():
    bridge = ready_bridge()
    created(bridge)
    item = {"type": "function_call", "call_id": "c9", "name": "late", "arguments": "{}"}
    out = provider(bridge, "response.done", response={"id": "r1", "status": "completed", "output": [item]})
    assert types(out) == ["FunctionCallRequest"]


def test_side_effect_calls_wait_for_a_completed_response():
    bridge = ready_bridge({"add_note": spec("add_note", side_effects=True), "get_weather": spec("get_weather")})
    created(bridge)
    assert call(bridge, "c1", "add_note").client == []
    assert types(call(bridge, "c2", "get_weather")) == ["FunctionCallRequest"]
    out = done(bridge)
    [request] = [json.loads(f) for f in out.client]
    assert [f["id"] for f in request["functions"]] == ["c1"]


def test_a_cancelled_response_cancels_its_calls_and_drops_held_ones():
    bridge = ready_bridge({"add_note": spec("add_note", side_effects=True)})
    created(bridge)
    call(bridge, "c1", "add_note")
    call(bridge, "c2", "slow_echo")
    call(bridge, "c3", "quick")
    answer(bridge, "c3")
    out = done(bridge, status="cancelled")
    assert [json.loads(f) for f in out.client] == [
        {"type": "FunctionCallCancelled", "functions": [{"id": "c2", "name": "slow_echo"}]}
    ]
    assert out.provider == []
    assert answer(bridge, "c2") == Out()  # too late: the call was cancelled


def test_an_active_response_error_is_retried_after_that_response():
    bridge = ready_bridge()
    out = client(bridge, {"type": "InjectUserMessage", "content": "Hi"})
    event_id = out.provider[-1]["event_id"]
    error = {"type": "invalid_request_error", "code": "conversation_already_has_active_response", "message": "busy"}
    out = provider(bridge, "error", error={**error, "event_id": event_id})
    assert types(out) == ["Warning"] and out.provider == []
    created(bridge, "auto")  # the automatic response that won the race
    assert provider_types(done(bridge, "auto")) == ["response.create"]


def test_a_refused_response_create_does_not_block_the_next_one():
    bridge = ready_bridge()
    event_id = client(bridge, {"type": "InjectUserMessage", "content": "Hi"}).provider[-1]["event_id"]
    provider(
        bridge, "error", error={"type": "invalid_request_error", "code": "x", "message": "no", "event_id": event_id}
    )
    assert provider_types(client(bridge, {"type": "InjectUserMessage", "content": "Again"}))[-1] == "response.create"


# --- errors by kind -------------------------------------------------------------------------------------------


def test_recoverable_errors_are_warnings_and_session_ending_ones_errors():
    bridge = ready_bridge()
    for code in ("response_cancel_not_active", "invalid_tool_call_id", "rate_limit_exceeded"):
        out = provider(bridge, "error", error={"type": "invalid_request_error", "code": code, "message": "m"})
        assert types(out) == ["Warning"], code
    out = provider(bridge, "error", error={"type": "invalid_request_error", "code": "session_expired", "message": "m"})
    assert types(out) == ["Error"]


def test_a_failed_response_reaches_the_client_and_cancels_its_calls():
    bridge = ready_bridge()
    created(bridge)
    call(bridge, "c1", "quick")
    failure = {"type": "failed", "error": {"type": "server_error", "code": "server_error", "message": "Model down."}}
    out = provider(bridge, "response.done", response={"id": "r1", "status": "failed", "status_details": failure})
    assert types(out) == ["Warning", "FunctionCallCancelled"]
    assert "Model down." in json.loads(out.client[0])["description"]
