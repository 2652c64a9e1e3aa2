"""The simulated agent behind its two I/O wrappers: the in-process provider and the standalone server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server
from websockets.exceptions import InvalidStatus

from gateway.providers.base import ProviderClosed
from gateway.providers.simulated import adapter as simulated
from gateway.providers.simulated.adapter import SimulatedProvider, open_simulated
from gateway.providers.simulated.server import serve

SETTINGS = json.dumps({"type": "Settings", "agent": {"think": {"functions": [{"name": "get_weather"}]}}})
TOKEN = "sim-test-token"


async def next_message(recv: Any, type_: str) -> dict[str, Any]:
    """Read frames (skipping audio and other messages) until one of ``type_``."""
    while True:
        frame = await asyncio.wait_for(recv(), 5)
        if isinstance(frame, str) and (message := json.loads(frame))["type"] == type_:
            return message


# --- in-process provider ------------------------------------------------------------------------------------


async def test_provider_relays_a_function_call_conversation():
    provider = await open_simulated()
    assert provider.label == "simulated"
    assert json.loads(await provider.recv())["type"] == "Welcome"
    await provider.send(SETTINGS)
    assert json.loads(await provider.recv())["type"] == "SettingsApplied"
    await provider.send(json.dumps({"type": "InjectUserMessage", "content": "weather in Paris"}))
    [call] = (await next_message(provider.recv, "FunctionCallRequest"))["functions"]
    response = {"type": "FunctionCallResponse", "id": call["id"], "name": call["name"], "content": "mild"}
    await provider.send(json.dumps(response))
    assert (await next_message(provider.recv, "ConversationText"))["content"] == "get_weather returned: mild."
    assert isinstance(await provider.recv(), str)  # AgentStartedSpeaking
    assert isinstance(await provider.recv(), bytes)  # then audio
    await provider.send(b"\x00" * 640)
    await provider.send('{"type":"SimulatedAgentStats"}')
    assert (await next_message(provider.recv, "SimulatedAgentStats"))["audio_bytes"] == 640
    await provider.close()


async def test_close_ends_recv_and_send():
    provider = SimulatedProvider()
    await provider.recv()  # Welcome
    waiter = asyncio.create_task(provider.recv())
    await asyncio.sleep(0)
    await provider.close()
    await provider.close()  # safe twice
    with pytest.raises(ProviderClosed) as closed:
        await asyncio.wait_for(waiter, 1)
    assert closed.value.code == 1000
    with pytest.raises(ProviderClosed):
        await provider.recv()
    with pytest.raises(ProviderClosed):
        await provider.send(SETTINGS)


async def test_fatal_error_is_delivered_then_the_provider_closes():
    provider = SimulatedProvider()
    await provider.recv()  # Welcome
    await provider.send('{"type":"KeepAlive"}')
    error = json.loads(await provider.recv())
    assert error["code"] == "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
    with pytest.raises(ProviderClosed) as closed:
        await provider.recv()
    assert (closed.value.code, closed.value.reason) == (1008, "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS")
    with pytest.raises(ProviderClosed):
        await provider.send(SETTINGS)


async def test_use_of_the_simulated_agent_is_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch):
    monkeypatch.setattr(simulated, "_announced", False)
    with caplog.at_level(logging.INFO, logger="gateway.providers.simulated.adapter"):
        await open_simulated()
        await open_simulated()
    assert len([r for r in caplog.records if r.levelno == logging.INFO and "simulated agent" in r.message]) == 1


# --- standalone server --------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serve("127.0.0.1", 0) as running:
        yield running


def url(server: Server, path: str = "/v1/agent/converse") -> str:
    port = next(iter(server.sockets)).getsockname()[1]
    return f"ws://127.0.0.1:{port}{path}"


async def start(ws: ClientConnection) -> None:
    assert json.loads(await ws.recv())["type"] == "Welcome"
    await ws.send(SETTINGS)
    assert json.loads(await ws.recv())["type"] == "SettingsApplied"


@pytest.mark.parametrize("path", ["/v1/agent/converse", "/"])
async def test_server_speaks_the_protocol_over_a_websocket(server: Server, path: str):
    async with connect(url(server, path)) as ws:
        await start(ws)
        await ws.send(json.dumps({"type": "InjectUserMessage", "content": 'call get_weather {"location": "Oslo"}'}))
        [call] = (await next_message(ws.recv, "FunctionCallRequest"))["functions"]
        assert json.loads(call["arguments"]) == {"location": "Oslo"}
        await ws.send(
            json.dumps({"type": "FunctionCallResponse", "id": call["id"], "name": "get_weather", "content": "7C"})
        )
        assert "7C" in (await next_message(ws.recv, "ConversationText"))["content"]
        assert isinstance(await ws.recv(), str)  # AgentStartedSpeaking
        assert isinstance(await ws.recv(), bytes)  # audio arrives as binary frames


async def test_each_connection_has_its_own_agent(server: Server):
    async with connect(url(server)) as first, connect(url(server)) as second:
        await start(first)
        await start(second)
        await first.send(b"\x00\x00")
        await first.send('{"type":"SimulatedAgentStats"}')
        await second.send('{"type":"SimulatedAgentStats"}')
        assert (await next_message(first.recv, "SimulatedAgentStats"))["audio_frames"] == 1
        assert (await next_message(second.recv, "SimulatedAgentStats"))["audio_frames"] == 0


async def test_server_closes_with_1008_after_a_fatal_error(server: Server):
    async with connect(url(server)) as ws:
        await ws.recv()  # Welcome
        await ws.send(json.dumps({"type": "InjectUserMessage", "content": "hi"}))
        assert json.loads(await ws.recv())["code"] == "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert (ws.close_code, ws.close_reason) == (1008, "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS")


async def test_unknown_path_is_404(server: Server):
    with pytest.raises(InvalidStatus) as refused:
        await connect(url(server, "/elsewhere"))
    assert refused.value.response.status_code == 404


async def test_token_is_required_when_configured():
    async with serve("127.0.0.1", 0, require_token=TOKEN) as running:
        for headers in ({}, {"Authorization": "Token wrong"}, {"Authorization": f"Bearer {TOKEN}"}):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url(running), additional_headers=headers)
            assert refused.value.response.status_code == 401
        async with connect(url(running), additional_headers={"Authorization": f"Token {TOKEN}"}) as ws:
            await start(ws)
