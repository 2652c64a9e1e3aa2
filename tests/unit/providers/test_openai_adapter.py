"""The OpenAI adapter over a real WebSocket, against the fake Realtime server in this process (no Redis).

Also the fake's own rules, so the integration tests can trust what it reports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.providers import open_provider
from gateway.providers.base import ProviderClosed, ProviderUnavailable
from gateway.providers.openai.adapter import OpenAIProvider, open_openai, realtime_url
from shared.config import Config
from shared.envelopes import FunctionSpec
from shared.redis_server import free_port
from tests.support.fake_openai import FakeOpenAI

KEY = "sk-test-0123456789"
ADD_NOTE = {"name": "add_note", "description": "", "parameters": {"type": "object", "properties": {}}}
ECHO = {"name": "echo", "description": "", "parameters": {"type": "object", "properties": {}}}
SETTINGS = json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Test.", "functions": [ADD_NOTE, ECHO]}}})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI(api_key=KEY, done_delay=0.2)
    async with server.serve() as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}/v1/realtime"


async def next_message(provider: OpenAIProvider, type_: str) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(provider.recv(), 5)
        if isinstance(frame, str) and (message := json.loads(frame))["type"] == type_:
            return message


async def started(url: str) -> tuple[OpenAIProvider, str]:
    provider = await open_openai(url, "gpt-realtime", KEY)
    session_id = (await next_message(provider, "Welcome"))["request_id"]
    await provider.send(SETTINGS)
    await next_message(provider, "SettingsApplied")
    return provider, session_id


async def test_a_client_function_call_round_trip(fake):
    server, url = fake
    provider, session_id = await started(url)
    assert provider.label == "openai"
    await provider.send(json.dumps({"type": "KeepAlive"}))
    await provider.send(json.dumps({"type": "InjectUserMessage", "content": 'call echo {"x": 1}'}))
    request = await next_message(provider, "FunctionCallRequest")
    [fn] = request["functions"]
    assert (fn["name"], json.loads(fn["arguments"]), fn["client_side"]) == ("echo", {"x": 1}, True)
    await provider.send(json.dumps({"type": "FunctionCallResponse", "id": fn["id"], "name": "echo", "content": "42"}))
    text = await next_message(provider, "ConversationText")
    while text["role"] != "assistant":
        text = await next_message(provider, "ConversationText")
    assert text["content"] == "echo returned: 42."
    await next_message(provider, "AgentAudioDone")
    stats = server.sessions[session_id].stats
    assert stats["response_creates"] == 2 and stats["active_response_errors"] == 0 and stats["errors"] == []
    assert "KeepAlive" not in stats["events"]
    await provider.close()
    await provider.close()  # twice is fine
    with pytest.raises(ProviderClosed):
        await provider.recv()


async def test_a_side_effect_call_of_a_cancelled_response_never_reaches_the_session(fake):
    server, url = fake
    provider, session_id = await started(url)
    provider.use_functions(
        {"add_note": FunctionSpec(name="add_note", description="", parameters={}, side_effects=True)}
    )
    await provider.send(json.dumps({"type": "InjectUserMessage", "content": "interrupt call add_note call echo"}))
    request = await next_message(provider, "FunctionCallRequest")
    assert [f["name"] for f in request["functions"]] == ["echo"]
    await next_message(provider, "UserStartedSpeaking")
    cancelled = await next_message(provider, "FunctionCallCancelled")
    assert [f["name"] for f in cancelled["functions"]] == ["echo"]
    assert server.sessions[session_id].stats["responses"][-1]["status"] == "cancelled"
    await provider.close()


async def test_a_wrong_key_is_refused_without_echoing_it(fake):
    _, url = fake
    with pytest.raises(ProviderUnavailable) as refused:
        await open_openai(url, "gpt-realtime", "sk-wrong-key")
    assert "HTTP 401" in str(refused.value) and "OPENAI_API_KEY" in str(refused.value)
    assert "sk-wrong-key" not in str(refused.value)


async def test_an_unreachable_provider_is_unavailable():
    with pytest.raises(ProviderUnavailable, match="Cannot reach"):
        await open_openai(f"ws://127.0.0.1:{free_port()}/v1/realtime", "gpt-realtime", KEY, open_timeout=2)


async def test_the_factory_opens_openai_when_configured(fake):
    _, url = fake
    provider = await open_provider(Config(provider="openai", openai_url=url, openai_api_key=KEY))
    assert isinstance(provider, OpenAIProvider)
    await provider.close()
    with pytest.raises(ProviderUnavailable, match="OPENAI_API_KEY"):
        await open_provider(Config(provider="openai", openai_api_key=None))


def test_the_model_goes_into_the_url_unless_it_is_there():
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert realtime_url("wss://x/v1/realtime?model=m1", "gpt-realtime") == "wss://x/v1/realtime?model=m1"


# --- the fake's own rules -------------------------------------------------------------------------------------


async def raw(url: str) -> ClientConnection:
    return await connect(url, additional_headers={"Authorization": f"Bearer {KEY}"})


async def next_event(ws: ClientConnection, type_: str) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if event["type"] == type_:
            return event


async def test_the_fake_refuses_a_second_response_create_while_one_is_active(fake):
    server, url = fake
    async with await raw(url) as ws:
        session_id = (await next_event(ws, "session.created"))["session"]["id"]
        update = {"type": "session.update", "session": {"type": "realtime", "tools": [{"type": "function", **ECHO}]}}
        await ws.send(json.dumps(update))
        await next_event(ws, "session.updated")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "call echo"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        await next_event(ws, "response.function_call_arguments.done")
        await ws.send(json.dumps({"type": "response.create", "event_id": "mine"}))
        error = await next_event(ws, "error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "mine"
        assert (await next_event(ws, "response.done"))["response"]["status"] == "completed"
    assert server.sessions[session_id].stats["active_response_errors"] == 1


async def test_the_fake_requires_session_type_and_known_events(fake):
    _, url = fake
    async with await raw(url) as ws:
        await next_event(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
        assert (await next_event(ws, "error"))["error"]["code"] == "missing_required_parameter"
        await ws.send(json.dumps({"type": "KeepAlive"}))
        assert (await next_event(ws, "error"))["error"]["code"] == "invalid_value"
        output = {"type": "function_call_output", "call_id": "nope", "output": "x"}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": output}))
        assert (await next_event(ws, "error"))["error"]["code"] == "invalid_tool_call_id"


async def test_the_fake_refuses_what_the_real_api_refuses_in_a_session_update(fake):
    _, url = fake
    async with await raw(url) as ws:
        await next_event(ws, "session.created")
        for audio, param in (
            ({"output": {"voice": "nova"}}, "session.audio.output.voice"),
            ({"input": {"format": {"type": "audio/opus"}}}, "session.audio.input.format.type"),
        ):
            update = {"type": "session.update", "event_id": param, "session": {"type": "realtime", "audio": audio}}
            await ws.send(json.dumps(update))
            error = (await next_event(ws, "error"))["error"]
            assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", param, param)
        await ws.send(json.dumps({"type": "response.cancel"}))
        assert (await next_event(ws, "error"))["error"]["code"] == "response_cancel_not_active"


async def test_refused_settings_are_an_error_then_the_end_never_a_settings_applied(fake):
    """OPENAI_VOICE set to a TTS-only name: OpenAI refuses the Settings' session.update."""
    _, url = fake
    provider = await open_openai(url, "gpt-realtime", KEY, voice="onyx")
    await next_message(provider, "Welcome")
    await provider.send(SETTINGS)
    error = await next_message(provider, "Error")
    assert error["code"] == "INVALID_SETTINGS" and "session.audio.output.voice" in error["description"]
    with pytest.raises(ProviderClosed) as closed:
        while True:
            frame = await asyncio.wait_for(provider.recv(), 5)
            assert not (isinstance(frame, str) and json.loads(frame)["type"] == "SettingsApplied")
    assert closed.value.code == 1000
    await provider.close()
