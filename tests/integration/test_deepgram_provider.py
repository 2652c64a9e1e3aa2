"""The Deepgram adapter over a real WebSocket: the gateway connects with PROVIDER=deepgram to the simulated
agent served as a separate process that demands ``Authorization: Token <key>``, as Deepgram does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_server import RedisServer, free_port
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_provider

pytestmark = pytest.mark.integration

TOKEN = "dg-test-key-0123456789"


@pytest.fixture(scope="module")
def provider(logs_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = start_provider(port, TOKEN, logs_dir / "provider.log")
    yield f"ws://127.0.0.1:{port}/v1/agent/converse"
    proc.stop()


def deepgram_gateway(redis_server: RedisServer, logs_dir: Path, provider: str, key: str, name: str) -> Gateway:
    return Gateway(
        redis_server.url, logs_dir / name, PROVIDER="deepgram", DEEPGRAM_URL=provider, DEEPGRAM_API_KEY=key
    ).wait_ready()


async def test_function_call_through_the_deepgram_adapter(redis_server, workers, logs_dir, provider):
    gateway = deepgram_gateway(redis_server, logs_dir, provider, TOKEN, "gw-deepgram.log")
    try:
        client = await AgentClient.connect(gateway.url)
        welcome = await client.expect("Welcome")
        assert welcome["simulated"] is True  # relayed untouched from the provider
        await client.start()
        await client.say("What's the weather in Paris?")
        assert "Paris" in await client.assistant_text()
        assert (await client.stats())["function_responses"][0]["name"] == "get_weather"
        await client.close()
        assert TOKEN not in gateway.log()
    finally:
        assert gateway.stop() == 0


async def test_a_refused_key_gives_a_clear_error(redis_server, workers, logs_dir, provider):
    gateway = deepgram_gateway(redis_server, logs_dir, provider, "wrong-key", "gw-badkey.log")
    try:
        client = await AgentClient.connect(gateway.url)
        error = await client.expect("Error")
        assert error["code"] == "UPSTREAM_UNAVAILABLE"
        assert "HTTP 401" in error["description"] and "DEEPGRAM_API_KEY" in error["description"]
        assert "wrong-key" not in error["description"]
        await asyncio.wait_for(client.ws.wait_closed(), 5)
        assert client.ws.close_code == 1011
    finally:
        assert gateway.stop() == 0


async def test_an_unreachable_provider_gives_a_clear_error(redis_server, workers, logs_dir):
    gateway = deepgram_gateway(
        redis_server, logs_dir, f"ws://127.0.0.1:{free_port()}/v1/agent/converse", TOKEN, "gw-noprovider.log"
    )
    try:
        client = await AgentClient.connect(gateway.url)
        error = await client.expect("Error")
        assert error["code"] == "UPSTREAM_UNAVAILABLE"
        assert TOKEN not in error["description"]
        await client.close()  # answer the gateway's close now: stop() below blocks this event loop
    finally:
        assert gateway.stop() == 0
