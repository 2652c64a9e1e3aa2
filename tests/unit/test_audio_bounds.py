"""Audio formats are bounded (the model and each provider's own list), and per-session queues have a bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.providers.base import ProviderClosed
from gateway.providers.deepgram import DeepgramProvider
from gateway.providers.openai.adapter import OpenAIProvider
from gateway.providers.openai.bridge import MAX_WAITING, Bridge
from gateway.providers.simulated import adapter as simulated
from gateway.providers.simulated.adapter import SimulatedProvider
from shared.protocol import Audio, ErrorCode, ProtocolError, Settings, validate


def audio(input: dict[str, Any] | None = None, output: dict[str, Any] | None = None) -> Audio:
    return Audio.model_validate({"input": input, "output": output})


@pytest.mark.parametrize("rate", [0, -16000, 10**12, 192_001, True, 16000.5, "16000", [16000]])
def test_the_model_refuses_absurd_or_non_integer_rates(rate: Any) -> None:
    data = {"type": "Settings", "audio": {"input": {"encoding": "linear16", "sample_rate": rate}}}
    with pytest.raises(ProtocolError) as info:
        validate(Settings, data)
    assert "audio.input.sample_rate" in info.value.description


def test_the_model_keeps_sane_rates() -> None:
    settings = validate(Settings, {"type": "Settings", "audio": {"output": {"sample_rate": 192_000}}})
    assert settings.audio.output.sample_rate == 192_000


def deepgram_problem(value: Audio) -> str | None:
    provider = object.__new__(DeepgramProvider)  # no connection needed to ask what it supports
    provider.label = "deepgram"
    return provider.audio_problem(value)


def openai_problem(value: Audio) -> str | None:
    return object.__new__(OpenAIProvider).audio_problem(value)


def test_deepgram_takes_its_documented_encodings_between_8_and_48_khz() -> None:
    assert deepgram_problem(audio({"encoding": "opus", "sample_rate": 48000}, {"encoding": "mp3"})) is None
    assert deepgram_problem(audio({"encoding": "mulaw", "sample_rate": 8000}, {"encoding": "aac"})) is None
    assert "audio.output.encoding 'ogg-opus'" in deepgram_problem(audio(output={"encoding": "ogg-opus"}))
    assert "audio.input.encoding 'wav'" in deepgram_problem(audio({"encoding": "wav"}))
    assert "8000 to 48000 Hz" in deepgram_problem(audio({"sample_rate": 96000}))
    assert "8000 to 48000 Hz" in deepgram_problem(audio(output={"sample_rate": 7999}))


def test_the_simulated_agent_speaks_linear16_only() -> None:
    provider = SimulatedProvider()
    assert provider.audio_problem(None) is None
    assert provider.audio_problem(audio({"encoding": "opus", "sample_rate": 16000}, {"sample_rate": 24000})) is None
    assert "audio.output.encoding 'mulaw'" in provider.audio_problem(audio(output={"encoding": "mulaw"}))
    assert "simulated" in provider.audio_problem(audio({"sample_rate": 1}))


def test_openai_takes_linear16_or_g711_at_8_khz_each_direction_on_its_own() -> None:
    assert openai_problem(audio({"encoding": "linear16", "sample_rate": 16000}, {"sample_rate": 48000})) is None
    assert openai_problem(audio({"encoding": "mulaw", "sample_rate": 8000}, {"encoding": "mulaw"})) is None
    assert openai_problem(audio({"encoding": "alaw"})) is None  # alaw in, linear16 out
    assert openai_problem(audio({"encoding": "mulaw"}, {"encoding": "alaw"})) is None
    assert "'opus'" in openai_problem(audio({"encoding": "opus"}))
    assert "8000 Hz" in openai_problem(audio({"encoding": "alaw", "sample_rate": 16000}, {"encoding": "alaw"}))
    assert "8000 to 48000 Hz" in openai_problem(audio({"sample_rate": 100_000}))


# --- queue bounds -------------------------------------------------------------------------------------------


async def test_the_simulated_provider_applies_backpressure_when_nobody_reads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(simulated, "MAX_QUEUED_FRAMES", 10)
    provider = SimulatedProvider()
    await provider.send(json.dumps({"type": "Settings"}))
    say = json.dumps({"type": "InjectUserMessage", "content": "hello"})  # 14 frames back, with audio
    sender = asyncio.create_task(provider.send(say))
    await asyncio.sleep(0.05)
    assert not sender.done() and provider._outgoing.qsize() == 10  # waits instead of growing
    frames = [await asyncio.wait_for(provider.recv(), 1) for _ in range(8)]
    await asyncio.wait_for(sender, 1)  # reading made room
    assert json.loads(frames[0])["type"] == "Welcome"
    await provider.close()
    with pytest.raises(ProviderClosed):
        await provider.recv()  # the end marker did not fit in the full queue: recv still ends


async def test_the_simulated_providers_reader_never_waits_for_itself(monkeypatch: pytest.MonkeyPatch):
    """The session's provider loop sends too (an answer, a filler) while the queue is full: waiting for room only
    it could make would hang the conversation, so its sends go over the bound."""
    monkeypatch.setattr(simulated, "MAX_QUEUED_FRAMES", 10)
    provider = SimulatedProvider()
    await provider.send(json.dumps({"type": "Settings"}))
    say = json.dumps({"type": "InjectUserMessage", "content": "hello"})
    sender = asyncio.create_task(provider.send(say))  # fills the queue, then waits

    async def reader() -> None:
        await provider.recv()  # this task is the reader now
        await provider.send(say)  # another spoken answer: more frames than the one read made room for

    await asyncio.sleep(0.05)
    await asyncio.wait_for(reader(), 1)
    assert provider._outgoing.qsize() > 10
    sender.cancel()


class Events:
    """Stands in for OpenAI's WebSocket: yields ``count`` events, then ends as a closed connection."""

    close_code = 1000
    close_reason = "done"

    def __init__(self, count: int) -> None:
        self.count = count
        self.produced = 0

    async def __aiter__(self) -> Any:
        for i in range(self.count):
            self.produced += 1
            yield json.dumps({"type": "session.created", "session": {"id": f"s{i}"}})

    async def send(self, text: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_the_openai_provider_stops_reading_while_its_queue_is_full(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("gateway.providers.openai.adapter.MAX_QUEUED_FRAMES", 16)
    events = Events(100)
    provider = OpenAIProvider(events, Bridge())  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert events.produced <= 17 and provider._frames.qsize() == 16  # the reader waits for the session
    welcomes = [json.loads(await asyncio.wait_for(provider.recv(), 1))["request_id"] for _ in range(100)]
    assert welcomes == [f"s{i}" for i in range(100)]  # nothing lost, in order
    with pytest.raises(ProviderClosed):
        await asyncio.wait_for(provider.recv(), 1)
    await provider.close()


def test_the_openai_bridge_bounds_what_waits_for_the_provider() -> None:
    bridge = Bridge()
    bridge.from_component(json.dumps({"type": "Settings"}))  # not confirmed: user messages wait
    outs = [bridge.from_component(json.dumps({"type": "InjectUserMessage", "content": "hi"})) for _ in range(40)]
    assert len(bridge._held) == MAX_WAITING
    warnings = [json.loads(f) for out in outs for f in out.client]
    assert len(warnings) == 40 - MAX_WAITING and {w["code"] for w in warnings} == {ErrorCode.QUEUE_FULL}
    for _ in range(40):
        bridge.from_component(json.dumps({"type": "UpdatePrompt", "prompt": "more"}))
    assert len(bridge.config.updates) == MAX_WAITING  # the Settings' update and the prompt updates, none confirmed
    for _ in range(40):
        bridge.from_component(json.dumps({"type": "InjectAgentMessage", "message": "say this"}))
    assert len(bridge._wanted) == MAX_WAITING
