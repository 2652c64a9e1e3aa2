"""Each limit refuses clearly (an Error, a Warning, a close code or an HTTP status) and nothing crashes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.client import AgentClient
from tests.support.processes import Gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    gateway = Gateway(
        redis_server.url,
        logs_dir / "gw-strict.log",
        MAX_FRAME_BYTES="4096",
        MAX_PENDING_CALLS="1",
        CLIENT_MESSAGE_RATE="20",
        MAX_SESSIONS="2",
    ).wait_ready()
    yield gateway
    assert gateway.stop() == 0


async def test_pending_call_limit_answers_the_extra_call_with_an_error(strict: Gateway):
    client = await AgentClient.connect(strict.url)
    await client.start()
    first = 'call slow_echo {"text": "first", "seconds": 0.5}'
    second = 'call slow_echo {"text": "second", "seconds": 0.5}'
    await client.say(f"{first} and {second}")
    warning = await client.expect("Warning")
    assert warning["code"] == "TOO_MANY_PENDING_CALLS"
    text = await client.assistant_text()
    assert '"echo": "first"' in text and "too many calls are pending" in text
    stats = await client.stats()
    assert len(stats["function_responses"]) == 2  # both calls answered, exactly once each
    await client.close()


async def test_message_rate_limit_drops_the_excess_and_keeps_the_session(strict: Gateway):
    client = await AgentClient.connect(strict.url)
    await client.start()
    for _ in range(100):
        await client.send({"type": "KeepAlive"})
    assert (await client.expect("Error"))["code"] == "RATE_LIMITED"
    await asyncio.sleep(2.5)  # the bucket refills
    keepalives = (await client.stats())["keepalives"]
    assert 20 <= keepalives < 100
    await client.close()


async def test_oversized_frame_closes_with_1009(strict: Gateway):
    client = await AgentClient.connect(strict.url)
    await client.start()
    await client.send(b"\0" * 10_000)
    with pytest.raises(ConnectionClosed):
        while True:
            await client.next(timeout=5)
    assert client.ws.close_code == 1009


async def test_session_limit_refuses_the_handshake_with_503(strict: Gateway):
    held = [await AgentClient.connect(strict.url) for _ in range(2)]
    for c in held:
        await c.expect("Welcome")
    with pytest.raises(InvalidStatus) as info:
        async with connect(strict.url):
            pass
    assert info.value.response.status_code == 503
    assert "Too many sessions" in json.loads(info.value.response.body)["error"]
    for c in held:
        await c.close()
    await asyncio.sleep(0.3)
    again = await AgentClient.connect(strict.url)  # capacity is back once sessions end
    await again.expect("Welcome")
    await again.close()
