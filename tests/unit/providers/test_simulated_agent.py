"""The simulated agent's protocol core, driven frame by frame with no I/O."""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

import pytest

from gateway.providers.simulated.agent import SimulatedAgent, tone_chunks
from gateway.providers.simulated.intents import explicit_calls, find_calls, natural_calls

WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
TIME = {
    "name": "get_current_time",
    "description": "Current time",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
}
ADD_NOTE = {
    "name": "add_note",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}, "owner": {"type": "string"}}},
}
LIST_NOTES = {
    "name": "list_notes",
    "parameters": {"type": "object", "properties": {"owner": {"type": "string"}, "limit": {"type": "integer"}}},
}
SERVER_SIDE = {
    "name": "get_stock_price",
    "parameters": {},
    "endpoint": {"url": "https://example.com", "method": "post"},
}


def settings(functions: list[dict[str, Any]] | None = None, **agent: Any) -> str:
    message: dict[str, Any] = {
        "type": "Settings",
        "audio": {"input": {"encoding": "linear16", "sample_rate": 16000}, "output": {"sample_rate": 24000}},
        "agent": {"think": {"functions": functions or []}, **agent},
    }
    return json.dumps(message)


def text(frames: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames if isinstance(f, str)]


def types(frames: list[str | bytes]) -> list[str]:
    return [m["type"] for m in text(frames)]


def say(agent: SimulatedAgent, content: str) -> list[str | bytes]:
    return agent.receive(json.dumps({"type": "InjectUserMessage", "content": content}))


def respond(agent: SimulatedAgent, call: dict[str, Any], content: str) -> list[str | bytes]:
    message = {"type": "FunctionCallResponse", "id": call["id"], "name": call["name"], "content": content}
    return agent.receive(json.dumps(message))


def requested(frames: list[str | bytes]) -> list[dict[str, Any]]:
    [request] = [m for m in text(frames) if m["type"] == "FunctionCallRequest"]
    return request["functions"]


def stats(agent: SimulatedAgent) -> dict[str, Any]:
    [reply] = text(agent.receive('{"type":"SimulatedAgentStats"}'))
    return reply


@pytest.fixture
def agent() -> SimulatedAgent:
    a = SimulatedAgent()
    assert types(a.receive(settings([WEATHER, TIME, ADD_NOTE, LIST_NOTES, SERVER_SIDE]))) == ["SettingsApplied"]
    return a


# --- connection start ---------------------------------------------------------------------------------------


def test_welcome_says_it_is_simulated():
    [welcome] = text(SimulatedAgent().opening())
    assert welcome["type"] == "Welcome"
    assert welcome["request_id"].startswith("sim-")
    assert welcome["simulated"] is True
    assert "imulated" in welcome["description"]


def test_first_message_must_be_settings():
    agent = SimulatedAgent()
    [error] = text(agent.receive('{"type":"KeepAlive"}'))
    assert error["type"] == "Error" and error["code"] == "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
    assert agent.closed
    assert agent.receive(settings()) == []  # nothing more after a fatal error


def test_audio_before_settings_is_fatal():
    agent = SimulatedAgent()
    assert text(agent.receive(b"\x00\x00"))[0]["code"] == "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
    assert agent.closed


def test_second_settings_is_refused_but_not_fatal(agent: SimulatedAgent):
    [error] = text(agent.receive(settings()))
    assert error["code"] == "SETTINGS_ALREADY_APPLIED"
    assert not agent.closed
    assert stats(agent)["settings"] == ["get_weather", "get_current_time", "add_note", "list_notes", "get_stock_price"]


def test_invalid_settings_is_fatal():
    agent = SimulatedAgent()
    bad = {"type": "Settings", "agent": {"think": {"functions": [{"description": "no name"}]}}}
    assert text(agent.receive(json.dumps(bad)))[0]["code"] == "INVALID_SETTINGS"
    assert agent.closed


def test_greeting_is_spoken_after_settings_applied():
    agent = SimulatedAgent()
    frames = agent.receive(settings(greeting="Hello there!"))
    assert types(frames) == ["SettingsApplied", "ConversationText", "AgentStartedSpeaking", "AgentAudioDone"]
    assert text(frames)[1] == {"type": "ConversationText", "role": "assistant", "content": "Hello there!"}


def test_speaking_sequence_has_latencies_and_20ms_pcm16_chunks_at_the_output_rate():
    agent = SimulatedAgent()
    agent.receive(settings())
    frames = say(agent, "hello")
    assert types(frames) == ["ConversationText", "ConversationText", "AgentStartedSpeaking", "AgentAudioDone"]
    assert text(frames)[1]["content"] == "You said: hello"
    started = text(frames)[2]
    assert {"total_latency", "tts_latency", "ttt_latency"} <= started.keys()
    audio = [f for f in frames if isinstance(f, bytes)]
    assert len(audio) == 10 and all(len(chunk) == 480 * 2 for chunk in audio)  # 24 kHz, 20 ms, 2 bytes/sample
    assert frames.index(audio[0]) > 2 and frames.index(audio[-1]) < len(frames) - 1  # between the two messages


def test_audio_follows_the_requested_output_sample_rate():
    agent = SimulatedAgent()
    message = json.loads(settings())
    message["audio"]["output"]["sample_rate"] = 16000
    agent.receive(json.dumps(message))
    audio = [f for f in say(agent, "hi") if isinstance(f, bytes)]
    assert sum(len(chunk) for chunk in audio) == 16000 * 2 // 5  # 200 ms


def test_tone_is_a_440_hz_sine_in_little_endian():
    pcm = b"".join(tone_chunks(8000))
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert len(samples) == 1600 and samples[0] == 0 and max(samples) > 5000
    assert tone_chunks(8000) is tone_chunks(8000)  # computed once per rate
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    assert 86 <= crossings <= 89  # 440 Hz for 0.2 s


# --- messages -----------------------------------------------------------------------------------------------


def test_non_json_text_gets_invalid_message_and_goes_on(agent: SimulatedAgent):
    assert text(agent.receive("not json"))[0]["code"] == "INVALID_MESSAGE"
    assert text(agent.receive('{"no_type": 1}'))[0]["code"] == "INVALID_MESSAGE"
    assert not agent.closed


def test_unknown_types_are_ignored_and_keepalive_counted(agent: SimulatedAgent):
    assert agent.receive('{"type":"SomethingNew","x":1}') == []
    assert agent.receive('{"type":"KeepAlive"}') == []
    assert agent.receive('{"type":"KeepAlive"}') == []
    assert stats(agent)["keepalives"] == 2


def test_update_messages_are_acknowledged(agent: SimulatedAgent):
    assert types(agent.receive('{"type":"UpdatePrompt","prompt":"Be brief."}')) == ["PromptUpdated"]
    assert types(agent.receive('{"type":"UpdateSpeak","speak":{}}')) == ["SpeakUpdated"]
    assert types(agent.receive('{"type":"UpdateThink","think":{"functions":[{"name":"open_door"}]}}')) == [
        "ThinkUpdated"
    ]
    assert stats(agent)["settings"] == ["open_door"]


@pytest.mark.parametrize("field", ["message", "content"])
def test_inject_agent_message_is_spoken(agent: SimulatedAgent, field: str):
    frames = agent.receive(json.dumps({"type": "InjectAgentMessage", field: "One moment."}))
    assert text(frames)[0] == {"type": "ConversationText", "role": "assistant", "content": "One moment."}
    assert types(frames)[-1] == "AgentAudioDone"


def test_inject_agent_message_is_refused_while_the_agent_speaks():
    now = [0.0]
    agent = SimulatedAgent(clock=lambda: now[0])
    agent.receive(settings([WEATHER]))
    inject = json.dumps({"type": "InjectAgentMessage", "message": "One moment."})
    assert types(agent.receive(inject))[-1] == "AgentAudioDone"
    now[0] = 0.1  # still speaking
    assert types(agent.receive(inject)) == ["InjectionRefused"]
    assert stats(agent)["injections_refused"] == 1
    now[0] = 1.0
    assert types(agent.receive(inject))[-1] == "AgentAudioDone"


def test_client_audio_is_counted(agent: SimulatedAgent):
    agent.receive(b"\x01\x02" * 160)
    agent.receive(bytearray(b"\x00" * 10))
    assert (stats(agent)["audio_frames"], stats(agent)["audio_bytes"]) == (2, 330)


def test_what_can_you_do_lists_client_side_functions(agent: SimulatedAgent):
    reply = text(say(agent, "What can you do?"))[1]["content"]
    assert "get_weather" in reply and "list_notes" in reply and "get_stock_price" not in reply


# --- function calls -----------------------------------------------------------------------------------------


def test_weather_question_requests_get_weather_and_quotes_the_result(agent: SimulatedAgent):
    frames = say(agent, "What's the weather in Paris?")
    assert text(frames)[0] == {"type": "ConversationText", "role": "user", "content": "What's the weather in Paris?"}
    [call] = requested(frames)
    assert call["name"] == "get_weather" and call["client_side"] is True and call["id"].startswith("call_")
    assert json.loads(call["arguments"]) == {"location": "Paris"}
    reply = respond(agent, call, '{"temperature": 18}')
    assert text(reply)[0]["content"] == 'get_weather returned: {"temperature": 18}.'
    assert types(reply) == ["ConversationText", "AgentStartedSpeaking", "AgentAudioDone"]
    assert stats(agent)["function_responses"] == [
        {"id": call["id"], "name": "get_weather", "content": '{"temperature": 18}'}
    ]


def test_natural_language_fills_multi_word_places_and_enums(agent: SimulatedAgent):
    [call] = requested(say(agent, "weather in New York in fahrenheit please"))
    assert json.loads(call["arguments"]) == {"location": "New York", "unit": "fahrenheit"}


def test_time_question_with_and_without_timezone(agent: SimulatedAgent):
    [call] = requested(say(agent, "What time is it in Europe/Paris?"))
    assert (call["name"], json.loads(call["arguments"])) == ("get_current_time", {"timezone": "Europe/Paris"})
    respond(agent, call, "{}")
    [call] = requested(say(agent, "what time is it"))
    assert json.loads(call["arguments"]) == {}  # no value found: the argument is omitted


def test_two_functions_in_one_request_answered_in_request_order(agent: SimulatedAgent):
    weather, time = requested(say(agent, "The weather in Oslo and the time in Asia/Tokyo?"))
    assert (weather["name"], time["name"]) == ("get_weather", "get_current_time")
    assert respond(agent, time, "12:00") == []  # waits for every pending call
    reply = text(respond(agent, weather, "sunny"))[0]["content"]
    assert reply == "get_weather returned: sunny. get_current_time returned: 12:00."
    assert stats(agent)["function_requests"] == 2


def test_explicit_syntax_requests_exactly_that_even_undeclared(agent: SimulatedAgent):
    frames = say(agent, 'call open_door {"room": {"name": "hall {1}"}} and call get_weather {"location": "Oslo"}')
    door, weather = requested(frames)
    assert (door["name"], json.loads(door["arguments"])) == ("open_door", {"room": {"name": "hall {1}"}})
    assert (weather["name"], json.loads(weather["arguments"])) == ("get_weather", {"location": "Oslo"})


def test_notes_pick_the_right_function_and_the_note_text():
    functions = [ADD_NOTE, LIST_NOTES]
    [add] = natural_calls("Add a note: buy milk.", functions)
    assert (add.name, add.arguments) == ("add_note", {"text": "buy milk"})
    assert [c.name for c in natural_calls("list my notes", functions)] == ["list_notes"]
    assert [c.name for c in natural_calls("what are my notes?", functions)] == ["list_notes"]
    assert natural_calls("note call the plumber", functions)[0].arguments == {"text": "call the plumber"}


def test_intent_edge_cases():
    assert explicit_calls("call me later") == []  # everyday speech is not a call
    assert [c.name for c in explicit_calls("call hang_forever")] == ["hang_forever"]
    assert [c.name for c in explicit_calls("Call ping", ["ping"])] == ["ping"]
    [echo] = explicit_calls('call slow_echo {"text": "call x_y"}')  # calls inside the arguments do not count
    assert echo.arguments == {"text": "call x_y"}
    assert explicit_calls("call get_weather {broken")[0].arguments == {}
    assert find_calls("stock price please", [SERVER_SIDE]) == []  # the provider runs endpoint functions
    camel = {"name": "getWeather", "parameters": {"properties": {"city": {"anyOf": [{"type": "string"}]}}}}
    assert find_calls("weather for San Francisco", [camel])[0].arguments == {"city": "San Francisco"}
    ref = {"properties": {"unit": {"$ref": "#/$defs/Unit"}}, "$defs": {"Unit": {"enum": ["celsius", "kelvin"]}}}
    assert find_calls("weather in kelvin", [{"name": "get_weather", "parameters": ref}])[0].arguments == {
        "unit": "kelvin"
    }


def test_no_match_gets_a_plain_answer(agent: SimulatedAgent):
    frames = say(agent, "Tell me a joke")
    assert "FunctionCallRequest" not in types(frames)
    assert text(frames)[1]["content"] == "You said: Tell me a joke"


def test_barge_in_cancels_pending_calls_then_handles_the_new_message(agent: SimulatedAgent):
    weather, time = requested(say(agent, "weather in Rome and the time"))
    frames = say(agent, "never mind, tell me a joke")
    assert types(frames)[:2] == ["FunctionCallCancelled", "ConversationText"]
    assert text(frames)[0]["functions"] == [
        {"id": weather["id"], "name": "get_weather"},
        {"id": time["id"], "name": "get_current_time"},
    ]
    assert text(frames)[2]["content"] == "You said: never mind, tell me a joke"
    [warning] = text(respond(agent, weather, "late"))
    assert warning["type"] == "Warning" and warning["code"] == "UNEXPECTED_FUNCTION_CALL_RESPONSE"
    assert stats(agent)["cancelled"] == [weather["id"], time["id"]]
    assert stats(agent)["function_responses"] == []


def test_cancel_alone_only_cancels(agent: SimulatedAgent):
    [call] = requested(say(agent, "weather in Rome"))
    frames = say(agent, "Cancel.")
    assert types(frames) == ["FunctionCallCancelled", "ConversationText"]
    assert stats(agent)["cancelled"] == [call["id"]]
    assert text(say(agent, "cancel"))[1]["content"] == "There is nothing to cancel."


def test_unknown_and_repeated_responses_are_warned_and_counted(agent: SimulatedAgent):
    assert text(respond(agent, {"id": "nope", "name": "x"}, "?"))[0]["code"] == "UNEXPECTED_FUNCTION_CALL_RESPONSE"
    [call] = requested(say(agent, "weather in Rome"))
    assert text(respond(agent, call, "ok"))[0]["type"] == "ConversationText"
    assert text(respond(agent, call, "again"))[0]["type"] == "Warning"
    assert stats(agent)["unexpected_responses"] == 2
    assert len(stats(agent)["function_responses"]) == 1


def test_malformed_function_response_is_invalid_message(agent: SimulatedAgent):
    [error] = text(agent.receive('{"type":"FunctionCallResponse","id":"x","content":{"not":"a string"}}'))
    assert error["code"] == "INVALID_MESSAGE"


def test_stats_report_everything_and_work_before_settings():
    agent = SimulatedAgent()
    assert stats(agent) == {
        "type": "SimulatedAgentStats",
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
    assert not agent.closed
