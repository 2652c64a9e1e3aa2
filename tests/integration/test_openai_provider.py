"""PROVIDER=openai end to end: a gateway process translating to the fake OpenAI Realtime server (a separate
process that demands ``Authorization: Bearer <key>``), real Redis and real workers running the calls.

Every test ends by checking what reached the fake: in particular that no ``response.create`` ever arrived
while a response was active (``active_response_errors == 0``) and that the fake refused nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.providers.openai.mapping import USE_TOOL_RESULTS
from shared import keys
from shared.redis_server import RedisServer, free_port
from tests.integration.conftest import CANARY_FINGERPRINT
from tests.support.audio import peak_hz, sine
from tests.support.client import SETTINGS, AgentClient
from tests.support.processes import Gateway, Process, http_get, running_gateway, start_server, wait_until
from workers.examples import ANONYMOUS, notes_key

pytestmark = pytest.mark.integration

KEY = "sk-test-openai-0123456789"


@pytest.fixture(scope="module")
def fake_openai(logs_dir: Path) -> Iterator[str]:
    """The fake's base URL, ``http://127.0.0.1:PORT`` (WebSocket at ``/v1/realtime``, stats at ``/stats/<id>``)."""
    port = free_port()
    args = ["-m", "tests.support.fake_openai", "--port", str(port), "--require-key", KEY, "--done-delay", "0.3"]
    proc = start_server(args, logs_dir / "fake-openai.log", f"http://127.0.0.1:{port}/v1/realtime", "the fake OpenAI")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="module")
def openai_gateway(redis_server: RedisServer, workers: Process, logs_dir: Path, fake_openai: str) -> Iterator[Gateway]:
    url = fake_openai.replace("http://", "ws://") + "/v1/realtime"
    with running_gateway(
        redis_server.url, logs_dir / "gw-openai.log", PROVIDER="openai", OPENAI_URL=url, OPENAI_API_KEY=KEY,
        KEEPALIVE_INTERVAL="1", FUNCTION_TIMEOUT="3",
    ) as gateway:  # fmt: skip
        yield gateway
    assert KEY not in gateway.log()


async def connect(gateway: Gateway, settings: dict[str, Any] | None = None) -> tuple[AgentClient, str]:
    """A client past Settings, and the fake's session id (the Welcome's request_id)."""
    client = await AgentClient.connect(gateway.url)
    session_id = (await client.expect("Welcome"))["request_id"]
    await client.send(settings or SETTINGS)
    await client.expect("SettingsApplied")
    return client, session_id


def stats(base: str, session_id: str) -> dict[str, Any]:
    status, body = http_get(f"{base}/stats/{session_id}")
    assert status == 200, body
    return json.loads(body)


def assert_clean(stats_: dict[str, Any]) -> None:
    assert stats_["active_response_errors"] == 0
    assert stats_["errors"] == []
    assert stats_["audio_before_session"] == 0


def notes_with(redis_client: redis.Redis, text: str) -> int:
    """How many of the anonymous caller's notes (this gateway requires no credentials) hold ``text``."""
    return sum(text in note.decode() for note in redis_client.lrange(notes_key(ANONYMOUS), 0, -1))


def call(name: str, **arguments: object) -> str:
    return f"call {name} {json.dumps(arguments)}"


async def test_weather_question_is_answered_with_the_workers_result(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.say("What's the weather in Paris?")
    assert (await client.expect("ConversationText", role="user"))["content"] == "What's the weather in Paris?"
    text = await client.assistant_text()
    assert text.startswith("get_weather returned: ") and "Paris" in text
    assert CANARY_FINGERPRINT in text  # computed by the worker from a key only it holds
    await client.expect("AgentAudioDone")
    await client.close()
    seen = stats(fake_openai, session_id)
    assert [c["name"] for c in seen["function_calls"]] == ["get_weather"]
    [output] = seen["function_outputs"]
    assert json.loads(output["output"])["key_fingerprint"] == CANARY_FINGERPRINT
    assert seen["response_creates"] == 2
    assert not any(m["type"] == "FunctionCallRequest" for m in client.messages())  # the backend answered
    tools = {t["name"] for t in seen["session_updates"][0]["tools"]}
    assert {"get_weather", "get_current_time", "add_note", "slow_echo"} <= tools
    assert_clean(seen)


async def test_two_parallel_calls_are_answered_with_one_response_create(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.say(call("get_weather", location="Oslo") + " and " + call("get_current_time", timezone="Asia/Tokyo"))
    text = await client.assistant_text()
    assert "get_weather returned" in text and "Oslo" in text and "Asia/Tokyo" in text
    await client.close()
    seen = stats(fake_openai, session_id)
    assert len(seen["function_calls"]) == 2 and len(seen["function_outputs"]) == 2
    events = seen["events"]
    after_outputs = events[events.index("response.create") + 1 :]
    assert after_outputs.count("conversation.item.create") == 2
    assert after_outputs.count("response.create") == 1
    assert after_outputs[-1] == "response.create"  # after both outputs, not between them
    assert_clean(seen)


async def test_a_call_past_its_deadline_is_answered_with_an_error(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    started = time.monotonic()
    await client.say(call("hang_forever"))
    text = await client.assistant_text(timeout=15)
    assert time.monotonic() - started >= 1.4  # hang_forever's deadline is 1.5 s
    assert text.startswith("hang_forever returned: ") and "error" in text
    await client.close()
    seen = stats(fake_openai, session_id)
    assert "KeepAlive" not in seen["events"]  # the session's keepalives stop at the adapter
    assert seen["response_creates"] == 2
    assert_clean(seen)


async def test_a_cancelled_response_runs_no_side_effect_and_cancels_its_calls(
    openai_gateway, fake_openai, redis_client: redis.Redis
):
    marker = f"never-{time.time_ns()}"
    client, session_id = await connect(openai_gateway)
    await client.say("interrupt " + call("add_note", text=marker) + " " + call("slow_echo", text="x", seconds=2))
    await client.expect("UserStartedSpeaking")
    await client.say("hello")
    assert await client.assistant_text() == "You said: hello"
    await asyncio.sleep(2.5)  # long enough for slow_echo to have answered, had it not been cancelled
    await client.close()
    seen = stats(fake_openai, session_id)
    assert [r["status"] for r in seen["responses"]] == ["cancelled", "completed"]
    assert seen["function_outputs"] == []
    assert notes_with(redis_client, marker) == 0  # add_note never ran
    assert_clean(seen)


async def test_a_side_effect_call_runs_once_its_response_completed(
    openai_gateway, fake_openai, redis_client: redis.Redis
):
    marker = f"buy milk {time.time_ns()}"
    client, session_id = await connect(openai_gateway)
    await client.say(call("add_note", text=marker))
    text = await client.assistant_text()
    assert text.startswith("add_note returned: ")
    await client.close()
    assert notes_with(redis_client, marker) == 1
    assert_clean(stats(fake_openai, session_id))


async def test_audio_is_resampled_both_ways(openai_gateway, fake_openai):
    settings = json.loads(json.dumps(SETTINGS))
    settings["audio"]["output"]["sample_rate"] = 16000
    client, session_id = await connect(openai_gateway, settings)
    audio = sine(440, 16000, 1.0)
    for start in range(0, len(audio), 317):  # many small chunks, most ending mid-sample
        await client.send(audio[start : start + 317])
    await client.expect("UserStartedSpeaking")
    expected = 24000  # 1.5x the 16000 samples sent
    wait_until(lambda: stats(fake_openai, session_id)["audio_in_bytes"] >= 2 * expected * 0.97, 10, "input audio")
    with urllib.request.urlopen(f"{fake_openai}/audio/{session_id}", timeout=5) as response:
        received = response.read()  # what reached OpenAI, as 24 kHz PCM16
    assert expected * 0.97 <= len(received) // 2 <= expected  # only the resampler's ~20 ms delay may be missing
    assert abs(peak_hz(received, 24000) - 440) < 2

    await client.say("hello")
    await client.expect("AgentStartedSpeaking")
    out = bytearray()
    while True:
        frame = await client.next()
        if isinstance(frame, bytes):
            out += frame
        elif json.loads(frame)["type"] == "AgentAudioDone":
            break
    await client.close()
    sent = stats(fake_openai, session_id)["audio_out_samples"]
    assert len(out) // 2 == sent * 16000 // 24000  # 24 kHz from OpenAI, 16 kHz as the client asked
    assert abs(peak_hz(bytes(out), 16000) - 440) < 3
    assert_clean(stats(fake_openai, session_id))


def with_audio(input_: dict[str, Any], output: dict[str, Any], **agent: Any) -> dict[str, Any]:
    settings = json.loads(json.dumps(SETTINGS))
    settings["audio"] = {"input": input_, "output": output}
    settings["agent"].update(agent)
    return settings


async def test_mulaw_in_and_linear16_out_are_chosen_independently(openai_gateway, fake_openai):
    settings = with_audio({"encoding": "mulaw", "sample_rate": 8000}, {"encoding": "linear16", "sample_rate": 16000})
    client, session_id = await connect(openai_gateway, settings)
    await client.send(bytes(range(256)) * 4)  # G.711 bytes pass as they are
    wait_until(lambda: stats(fake_openai, session_id)["audio_in_bytes"] >= 1024, 10, "input audio")
    await client.say("hello")
    await client.expect("AgentStartedSpeaking")
    out = bytearray()
    while not isinstance(frame := await client.next(), str) or json.loads(frame)["type"] != "AgentAudioDone":
        out += frame if isinstance(frame, bytes) else b""
    await client.close()
    seen = stats(fake_openai, session_id)
    audio = seen["session_updates"][0]["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcmu"}
    assert audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert len(out) // 2 == seen["audio_out_samples"] * 16000 // 24000  # resampled for the client
    with urllib.request.urlopen(f"{fake_openai}/audio/{session_id}", timeout=5) as response:
        assert response.read() == bytes(range(256)) * 4
    assert_clean(seen)


async def test_a_tts_only_voice_is_never_sent_and_the_client_is_warned(openai_gateway, fake_openai):
    settings = with_audio(
        {"sample_rate": 16000}, {"sample_rate": 24000}, speak={"provider": {"type": "open_ai", "voice": "nova"}}
    )
    client = await AgentClient.connect(openai_gateway.url)
    session_id = (await client.expect("Welcome"))["request_id"]
    await client.send(settings)
    warning = await client.expect("Warning")
    assert "'nova' is not an OpenAI Realtime voice" in warning["description"]
    await client.expect("SettingsApplied")
    await client.close()
    seen = stats(fake_openai, session_id)
    assert seen["session_updates"][0]["audio"]["output"]["voice"] == "marin"
    assert_clean(seen)


async def test_update_think_speak_and_listen_are_acknowledged_or_warned(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    lookup = {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {}}}
    await client.send({"type": "UpdateThink", "think": {"prompt": "Be terse.", "functions": [lookup]}})
    await client.expect("ThinkUpdated")
    await client.send({"type": "UpdateSpeak", "speak": {"provider": {"type": "open_ai", "voice": "cedar"}}})
    await client.expect("SpeakUpdated")
    await client.send({"type": "UpdateListen", "listen": {"provider": {"type": "deepgram", "model": "nova-3"}}})
    assert (await client.expect("Warning"))["code"] == "UNSUPPORTED_MESSAGE"
    await client.close()
    seen = stats(fake_openai, session_id)
    think = seen["session_updates"][1]
    assert think["instructions"] == f"Be terse.\n\n{USE_TOOL_RESULTS}"  # with tools, the note stays last
    assert {"lookup", "get_weather", "get_current_time", "add_note"} <= {t["name"] for t in think["tools"]}
    assert seen["session_updates"][2]["audio"]["output"]["voice"] == "cedar"
    assert_clean(seen)


async def test_a_refused_update_is_a_warning_and_later_confirmations_stay_matched(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.say("hello")
    await client.expect("AgentAudioDone")  # the assistant has spoken: OpenAI refuses a new voice now
    await client.send({"type": "UpdateSpeak", "speak": {"provider": {"type": "open_ai", "voice": "ash"}}})
    await client.send({"type": "UpdatePrompt", "prompt": "Be kind."})
    warning = await client.expect("Warning")
    assert warning["code"] == "UPDATE_REFUSED" and "UpdateSpeak" in warning["description"]
    assert "session.audio.output.voice" in warning["description"]
    await client.expect("PromptUpdated")
    assert not any(m["type"] in ("SpeakUpdated", "Error") for m in client.messages())
    await client.say("again")
    assert await client.assistant_text() == "You said: again"  # the session goes on
    await client.close()
    assert stats(fake_openai, session_id)["refused_updates"] == 1


async def test_a_failed_response_reaches_the_client(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.say("please fail the response")
    warning = await client.expect("Warning")
    assert warning["code"] == "server_error" and "The model is unavailable." in warning["description"]
    await client.say("hello")
    assert await client.assistant_text() == "You said: hello"
    await client.close()
    assert [r["status"] for r in stats(fake_openai, session_id)["responses"]] == ["failed", "completed"]


async def test_a_refused_key_gives_a_clear_error(redis_server, workers, logs_dir, fake_openai):
    url = fake_openai.replace("http://", "ws://") + "/v1/realtime"
    gateway = Gateway(
        redis_server.url, logs_dir / "gw-openai-badkey.log", PROVIDER="openai", OPENAI_URL=url,
        OPENAI_API_KEY="sk-wrong",
    ).wait_ready()  # fmt: skip
    try:
        client = await AgentClient.connect(gateway.url)
        error = await client.expect("Error")
        assert error["code"] == "UPSTREAM_UNAVAILABLE"
        assert "HTTP 401" in error["description"] and "OPENAI_API_KEY" in error["description"]
        assert "sk-wrong" not in error["description"]
        await client.close()  # answer the gateway's close now: stop() below blocks this event loop
    finally:
        assert gateway.stop() == 0


async def test_a_barge_in_truncates_the_answer_at_what_the_client_heard(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.say("tell me a long story")
    await client.expect("AgentStartedSpeaking")  # 4.8 s of speech, sent faster than real time
    await client.send(sine(440, 16000, 0.2))
    await client.expect("UserStartedSpeaking")
    wait_until(lambda: stats(fake_openai, session_id)["truncates"], 10, "the truncate")
    await client.close()
    seen = stats(fake_openai, session_id)
    [truncate] = seen["truncates"]
    assert 0 <= truncate["audio_end_ms"] < 4800  # the fake refuses a position past the item's audio
    assert_clean(seen)


async def test_a_client_call_unanswered_in_time_gets_an_error_and_the_late_answer_a_warning(
    openai_gateway, fake_openai
):
    settings = json.loads(json.dumps(SETTINGS))
    settings["agent"]["think"]["functions"] = [
        {"name": "client_lookup", "description": "", "parameters": {"type": "object", "properties": {}}}
    ]
    client, session_id = await connect(openai_gateway, settings)
    await client.say(call("client_lookup", q="x"))
    request = await client.expect("FunctionCallRequest")  # the client never answers in time
    text = await client.assistant_text(timeout=15)  # FUNCTION_TIMEOUT is 3 s
    assert text.startswith("client_lookup returned: ") and "did not answer in time" in text
    [fn] = request["functions"]
    await client.send({"type": "FunctionCallResponse", "id": fn["id"], "name": fn["name"], "content": "late"})
    assert (await client.expect("Warning"))["code"] == "FUNCTION_RESPONSE_LATE"
    await client.close()
    seen = stats(fake_openai, session_id)
    assert len(seen["function_outputs"]) == 1
    [entry] = [h["function_calls"][0] for h in client.messages() if h["type"] == "History" and "function_calls" in h]
    assert entry["id"] == fn["id"] and "did not answer in time" in entry["response"]  # a client call: shown
    assert_clean(seen)


async def test_settings_fields_are_mapped_and_history_hides_the_backends_calls(openai_gateway, fake_openai):
    settings = json.loads(json.dumps(SETTINGS))
    settings["agent"]["language"] = "fr"
    settings["agent"]["listen"] = {"provider": {"type": "deepgram", "model": "nova-3", "keyterms": ["Nantes"]}}
    settings["agent"]["greeting"] = "Bonjour."
    client, session_id = await connect(openai_gateway, settings)
    greeting = await client.assistant_text()
    assert greeting.endswith("Bonjour.")  # the fake reads its instructions aloud
    await client.say("What's the weather in Paris?")
    text = await client.assistant_text()
    assert text.startswith("get_weather returned: ")
    await client.expect("AgentAudioDone")
    await client.close()
    histories = [m for m in client.messages() if m["type"] == "History"]
    assert [(h["role"], h["content"]) for h in histories] == [
        ("assistant", greeting),
        ("user", "What's the weather in Paris?"),
        ("assistant", text),
    ]  # the backend's get_weather entry is hidden (HISTORY_BACKEND_CALLS=hidden)
    seen = stats(fake_openai, session_id)
    session = seen["session_updates"][0]
    assert session["audio"]["input"]["transcription"]["language"] == "fr"
    assert session["audio"]["input"]["transcription"]["prompt"] == "Nantes"
    assert "use it in your reply" in session["instructions"]
    assert seen["response_options"][0]["tool_choice"] == "none"  # the greeting is said, never a call
    assert_clean(seen)


async def test_the_users_late_transcript_comes_before_the_agents_text(openai_gateway, fake_openai):
    client, session_id = await connect(openai_gateway)
    await client.send(sine(440, 16000, 0.2))
    await client.expect("UserStartedSpeaking")
    for _ in range(2):  # silence (the first chunk still holds the resampler's tail of the tone)
        await client.send(bytes(6400))  # server VAD ends the turn and answers at once
    first = await client.expect("ConversationText")
    second = await client.expect("ConversationText")
    await client.close()
    assert (first["role"], first["content"]) == ("user", "(spoken)")  # arrived after the agent's answer
    assert (second["role"], second["content"]) == ("assistant", "I heard you.")
    assert_clean(stats(fake_openai, session_id))


async def test_text_before_a_tool_call_is_agent_thinking(openai_gateway, fake_openai):
    settings = json.loads(json.dumps(SETTINGS))
    settings["agent"]["think"]["functions"] = [{"name": "client_lookup", "description": "", "parameters": {}}]
    client, session_id = await connect(openai_gateway, settings)
    await client.say("think, then " + call("client_lookup", q="x"))
    thinking = await client.expect("AgentThinking")
    request = await client.expect("FunctionCallRequest")
    assert thinking["content"] == "Let me check."
    [fn] = request["functions"]
    await client.send({"type": "FunctionCallResponse", "id": fn["id"], "name": fn["name"], "content": "found"})
    assert await client.assistant_text() == "client_lookup returned: found."
    await client.close()
    assert_clean(stats(fake_openai, session_id))


async def test_a_conversations_memory_reaches_openai(
    openai_gateway: Gateway, fake_openai: str, redis_client: redis.Redis
) -> None:
    """A new session of a conversation with stored memory: the session.update instructions carry its turns and
    the backend call with its result (OpenAI has no history field; translate.instructions writes it out)."""
    conversation = "oa-mem-" + secrets.token_hex(4)
    entries = [
        {"kind": "turn", "role": "user", "content": "What's the weather in Paris?"},
        {"kind": "call", "id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}',
         "result": '{"temp_c": 21}', "client_side": False},
        {"kind": "turn", "role": "assistant", "content": "It is 21 degrees in Paris."},
    ]  # fmt: skip
    redis_client.rpush(keys.conversation_memory(conversation), *(json.dumps(e) for e in entries))
    client = await AgentClient.connect(f"{openai_gateway.url}?conversation={conversation}")
    session_id = (await client.expect("Welcome"))["request_id"]
    await client.send(SETTINGS)
    await client.expect("SettingsApplied")
    seen = stats(fake_openai, session_id)
    await client.close()
    instructions = seen["session_updates"][0]["instructions"]
    assert "user: What's the weather in Paris?" in instructions
    assert 'function get_weather({"city":"Paris"}) returned: {"temp_c": 21}' in instructions
    assert "assistant: It is 21 degrees in Paris." in instructions
    assert_clean(seen)
