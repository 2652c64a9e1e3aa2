"""Barge-in on OpenAI (what the client heard, ``conversation.item.truncate``) and the deadlines of client calls,
with the time as an input: no sleeps."""

from __future__ import annotations

import base64
import json

from gateway.providers.openai.bridge import Bridge
from gateway.providers.openai.playback import Deadlines, Playback
from shared.envelopes import FunctionSpec
from tests.unit.providers.test_openai_bridge import SETTINGS, answer, call, client, created, done, provider, types

MS_100 = base64.b64encode(b"\x00\x00" * 2400).decode()
"""100 ms of 24 kHz PCM16."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bridge_at(clock: Clock, owned: tuple[str, ...] = (), timeout: float = 10.0) -> Bridge:
    bridge = Bridge(clock=clock, function_timeout=timeout)
    bridge.use_functions({n: FunctionSpec(name=n, description="", parameters={}) for n in owned})
    client(bridge, SETTINGS)
    provider(bridge, "session.updated", session={})
    return bridge


def speak(bridge: Bridge, deltas: int, item_id: str = "a1", response_id: str = "r1") -> list[bytes]:
    outs = [
        provider(bridge, "response.output_audio.delta", response_id=response_id, item_id=item_id, delta=MS_100)
        for _ in range(deltas)
    ]
    return [f for out in outs for f in out.client if isinstance(f, bytes)]


def barge_in(bridge: Bridge):
    return provider(bridge, "input_audio_buffer.speech_started", audio_start_ms=0, item_id="u2")


# --- the pure estimate ----------------------------------------------------------------------------------------


def test_the_position_heard_is_the_time_played_bounded_by_the_audio_sent():
    playback = Playback()
    playback.sent("a1", "r1", 1000.0, now=10.0)
    assert playback.interrupt(now=10.25)[1] == 250
    playback.sent("a2", "r2", 300.0, now=20.0)
    assert playback.interrupt(now=20.3) is None  # played to the end: nothing to cut
    playback.sent("a3", "r3", 300.0, now=30.0)
    playback.sent("a3", "r3", 200.0, now=30.0)
    assert playback.interrupt(now=30.4)[1] == 400
    assert playback.sent("a3", "r3", 100.0, now=30.5) is False  # the cut item's later audio is dropped


def test_an_item_queued_behind_another_starts_when_that_one_ends():
    playback = Playback()
    playback.sent("a1", "r1", 500.0, now=0.0)
    playback.sent("a2", "r1", 500.0, now=0.1)
    item, heard = playback.interrupt(now=0.7)
    assert item.item_id == "a2" and heard == 200


def test_deadlines_pass_once():
    deadlines = Deadlines(2.0)
    deadlines.start("c1", 0.0)
    deadlines.start("c2", 1.0)
    deadlines.stop("c2")
    assert deadlines.tick(1.9) == []
    assert deadlines.tick(2.0) == ["c1"] and deadlines.tick(5.0) == []
    assert deadlines.expired("c1") and not deadlines.expired("c2")


# --- barge-in through the bridge ------------------------------------------------------------------------------


def test_a_barge_in_truncates_the_item_at_the_position_played():
    clock = Clock()
    bridge = bridge_at(clock)
    created(bridge)
    clock.now = 5.0
    assert len(speak(bridge, 10)) == 10  # 1 s of audio sent at once, faster than real time
    clock.now = 5.4
    out = barge_in(bridge)
    assert types(out) == ["UserStartedSpeaking"]
    assert out.provider == [
        {"type": "conversation.item.truncate", "item_id": "a1", "content_index": 0, "audio_end_ms": 400}
    ]
    assert speak(bridge, 2) == []  # audio still streaming for the cut item: the client wants silence


def test_a_barge_in_counts_g711_output_at_a_byte_a_sample_whatever_the_input():
    clock = Clock()
    bridge = Bridge(clock=clock)
    audio = {"input": {"encoding": "linear16", "sample_rate": 16000}, "output": {"encoding": "mulaw"}}
    client(bridge, {**SETTINGS, "audio": audio})
    provider(bridge, "session.updated", session={})
    created(bridge)
    mulaw_1s = base64.b64encode(b"\xff" * 8000).decode()  # 1 s of 8 kHz G.711, passed through as it is
    out = provider(bridge, "response.output_audio.delta", response_id="r1", item_id="a1", delta=mulaw_1s)
    assert [f for f in out.client if isinstance(f, bytes)] == [b"\xff" * 8000]
    clock.now = 0.6
    [truncate] = barge_in(bridge).provider
    assert truncate["audio_end_ms"] == 600  # 1 s sent, 0.6 s played (PCM16 counting would say 167 ms)


def test_no_truncate_when_the_answer_was_heard_to_the_end():
    clock = Clock()
    bridge = bridge_at(clock)
    created(bridge)
    speak(bridge, 3)
    done(bridge)
    clock.now = 0.3
    assert barge_in(bridge).provider == []


def test_a_barge_in_while_a_completed_answer_plays_cancels_its_calls_and_answers_once():
    clock = Clock()
    bridge = bridge_at(clock)
    created(bridge)
    speak(bridge, 20)  # "let me look that up..." (2 s)
    call(bridge, "c1", "lookup")
    done(bridge)  # completed: now it only waits for c1's answer
    clock.now = 1.0
    out = barge_in(bridge)
    assert [e["type"] for e in out.provider] == ["conversation.item.truncate"]
    assert [json.loads(f) for f in out.client][1] == {
        "type": "FunctionCallCancelled",
        "functions": [{"id": "c1", "name": "lookup"}],
    }
    assert answer(bridge, "c1").provider == []  # no output, no response.create: server VAD answers the user


def test_a_continuation_waiting_behind_an_interrupted_response_is_dropped():
    clock = Clock()
    bridge = bridge_at(clock)
    created(bridge, "r0")
    call(bridge, "c0", "quick")
    done(bridge, "r0")
    created(bridge, "r1")  # an automatic response became active before c0 was answered
    assert [e["type"] for e in answer(bridge, "c0").provider] == ["conversation.item.create"]  # continuation waits
    speak(bridge, 10)
    barge_in(bridge)
    assert done(bridge, "r1", status="cancelled").provider == []  # the user's turn gets server VAD's one answer


# --- client calls get a deadline ------------------------------------------------------------------------------


def test_a_client_call_not_answered_in_time_gets_an_error_output_and_the_late_answer_is_dropped():
    clock = Clock()
    bridge = bridge_at(clock, timeout=3.0)
    created(bridge)
    call(bridge, "c1", "client_fn")
    done(bridge)
    clock.now = 2.9
    assert bridge.tick(clock.now).provider == []
    clock.now = 3.0
    out = bridge.tick(clock.now)
    assert [e["type"] for e in out.provider] == ["conversation.item.create", "response.create"]
    assert json.loads(out.provider[0]["item"]["output"])["error"].endswith("did not answer in time (3 s).")
    assert bridge.tick(10.0).provider == []
    late = answer(bridge, "c1")
    assert late.provider == [] and [json.loads(f)["code"] for f in late.client] == ["FUNCTION_RESPONSE_LATE"]


def test_backend_calls_and_answered_calls_get_no_client_deadline():
    clock = Clock()
    bridge = bridge_at(clock, owned=("get_weather",), timeout=1.0)
    created(bridge)
    call(bridge, "c1", "get_weather")
    call(bridge, "c2", "client_fn")
    answer(bridge, "c2")
    assert bridge.tick(100.0).provider == []
