"""A backend call's filler through the OpenAI bridge: out of band, never colliding with the active response."""

from __future__ import annotations

from gateway.providers.openai.filler import FILLER_METADATA
from gateway.providers.openai.translate import SAY_EXACTLY
from tests.unit.providers.test_openai_bridge import (
    answer,
    call,
    created,
    done,
    provider,
    provider_types,
    ready_bridge,
    types,
)

LINE = "One moment while I look that up."


def test_the_filler_is_an_out_of_band_response_after_the_active_one():
    bridge = ready_bridge()
    created(bridge)
    call(bridge, "c1", "slow_lookup")
    assert bridge.say_filler(LINE).provider == []  # r1 is still active
    [create] = done(bridge).provider
    assert create["type"] == "response.create"
    assert create["response"] == {
        "conversation": "none",
        "input": [],
        "instructions": SAY_EXACTLY + LINE,
        "tool_choice": "none",
        "metadata": FILLER_METADATA,
    }


def test_the_answer_goes_at_once_and_the_continuation_after_the_filler():
    bridge = ready_bridge()
    created(bridge)
    call(bridge, "c1", "slow_lookup")
    done(bridge)
    assert provider_types(bridge.say_filler(LINE)) == ["response.create"]
    created(bridge, "filler")
    speech = provider(bridge, "response.output_audio_transcript.delta", response_id="filler", item_id="i", delta="x")
    assert types(speech) == ["AgentStartedSpeaking"]  # the client hears it like any agent speech
    assert provider_types(answer(bridge, "c1")) == ["conversation.item.create"]  # not held
    out = done(bridge, "filler")
    assert types(out) == ["AgentAudioDone"]
    [create] = out.provider
    assert create["type"] == "response.create" and "conversation" not in create.get("response", {})


def test_one_filler_waits_at_a_time():
    bridge = ready_bridge()
    created(bridge)
    bridge.say_filler(LINE)
    bridge.say_filler(LINE)
    assert provider_types(done(bridge)) == ["response.create"]
    assert provider_types(done(bridge, "filler")) == []


def test_a_filler_that_races_an_automatic_response_is_dropped():
    bridge = ready_bridge()
    assert provider_types(bridge.say_filler(LINE)) == ["response.create"]
    provider(bridge, "error", error={"code": "conversation_already_has_active_response", "message": "busy"})
    created(bridge, "auto")
    assert provider_types(done(bridge, "auto")) == []
