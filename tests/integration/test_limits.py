"""Each limit refuses clearly (an Error, a Warning, a close code or an HTTP status) and nothing crashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.client import SETTINGS
from tests.support.client import AgentClient
from tests.support.processes import Gateway, running_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        logs_dir / "gw-strict.log",
        MAX_FRAME_BYTES="4096",
        MAX_PENDING_CALLS="1",
        CLIENT_MESSAGE_RATE="20",
        MAX_SESSIONS="2",
        RESUME_GRACE="0",  # a closed client's place is free at once (parked sessions hold theirs: test_resume.py)
    ) as gateway:
        yield gateway


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
    assert (await client.expect("Warning"))["code"] == "RATE_LIMITED"
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


# --- audio formats, frame and byte budgets (issue 12 items 4 and 9) ----------------------------------------


@pytest.fixture(scope="module")
def budget(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        logs_dir / "gw-budget.log",
        MAX_FRAME_BYTES="16384",
        MAX_TEXT_FRAME_BYTES="2048",
        CLIENT_BYTE_RATE="4096",
        MAX_SETTINGS_FUNCTIONS="3",
    ) as gateway:
        yield gateway


async def refused_settings(gateway: Gateway, settings: dict[str, Any]) -> dict[str, Any]:
    """Send ``settings`` (then audio) and return the Error; the session must close with 1008."""
    client = await AgentClient.connect(gateway.url)
    await client.expect("Welcome")
    await client.send(settings)
    with contextlib.suppress(ConnectionClosed):
        await client.send(b"\0" * 640)
    error = await client.expect("Error")
    with pytest.raises(ConnectionClosed):
        while True:
            await client.next(timeout=5)
    assert client.ws.close_code == 1008
    assert not [m for m in client.messages() if m["type"] == "SettingsApplied"]
    return error


@pytest.mark.parametrize(
    ("audio", "problem"),
    [
        ({"input": {"encoding": "linear16", "sample_rate": 0}}, "audio.input.sample_rate"),
        ({"input": {"encoding": "linear16", "sample_rate": -48000}}, "audio.input.sample_rate"),
        ({"output": {"encoding": "linear16", "sample_rate": 10**15}}, "audio.output.sample_rate"),
        ({"output": {"encoding": "linear16", "sample_rate": 96000}}, "8000 to 48000 Hz"),
        ({"output": {"encoding": "mulaw", "sample_rate": 8000}}, "audio.output.encoding 'mulaw'"),
        ({"input": {"encoding": "wav", "sample_rate": 16000}}, "audio.input.encoding 'wav'"),
    ],
)
@pytest.mark.attack("Absurd or unsupported audio formats")
async def test_unsupported_audio_formats_are_refused(budget: Gateway, audio: dict[str, Any], problem: str):
    error = await refused_settings(budget, {**SETTINGS, "audio": audio})
    assert error["code"] == "INVALID_SETTINGS" and problem in error["description"]


@pytest.mark.attack("Oversized frames, byte floods and huge function lists")
async def test_too_many_functions_in_settings_are_refused(budget: Gateway):
    settings = json.loads(json.dumps(SETTINGS))
    settings["agent"]["think"]["functions"] = [{"name": f"client_fn_{i}"} for i in range(4)]
    error = await refused_settings(budget, settings)
    assert error["code"] == "INVALID_SETTINGS" and "at most 3" in error["description"]


@pytest.mark.attack("Oversized frames, byte floods and huge function lists")
async def test_a_big_text_frame_after_settings_is_dropped_and_the_session_goes_on(budget: Gateway):
    client = await AgentClient.connect(budget.url)
    settings = json.loads(json.dumps(SETTINGS))
    settings["agent"]["think"]["prompt"] = "Be brief. " * 1000  # 10 kB: Settings may exceed the text cap
    await client.send(settings)
    await client.expect("SettingsApplied")
    await client.say("x" * 3000)
    error = await client.expect("Warning")
    assert error["code"] == "MESSAGE_TOO_LARGE" and "2048 bytes" in error["description"]
    await client.say("hello")
    assert await client.assistant_text() == "You said: hello"
    user_texts = [m["content"] for m in client.messages() if m.get("role") == "user"]
    assert user_texts == ["hello"]  # the big one never reached the provider
    await client.close()


@pytest.mark.attack("Oversized frames, byte floods and huge function lists")
async def test_bytes_beyond_client_byte_rate_are_dropped(budget: Gateway):
    client = await AgentClient.connect(budget.url)
    await client.start()
    for _ in range(40):  # 320 kB at once: far beyond 4096 B/s with a burst of 16384 bytes
        await client.send(b"\0" * 8000)
    assert (await client.expect("Warning"))["code"] == "RATE_LIMITED"
    stats = await client.stats()
    assert 0 < stats["audio_bytes"] < 40 * 8000
    await client.close()
