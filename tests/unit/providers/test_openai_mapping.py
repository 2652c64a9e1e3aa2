"""Settings fields mapped to OpenAI, and the text frames (ConversationText, History, AgentThinking) in order."""

from __future__ import annotations

import json
from typing import Any

from gateway.providers.openai import translate as tr
from gateway.providers.openai.bridge import Bridge
from gateway.providers.openai.formats import audio_plan
from gateway.providers.openai.mapping import USE_TOOL_RESULTS, Transcript, refine_session
from tests.unit.providers.test_openai_bridge import (
    SETTINGS,
    answer,
    call,
    client,
    created,
    provider,
    ready_bridge,
    types,
)
from tests.unit.providers.test_openai_playback import Clock, bridge_at

FIELDS = {"response_id": "r1", "output_index": 0, "content_index": 0}


def session_for(settings: dict[str, Any]) -> dict[str, Any]:
    session, _ = tr.session_update(settings, "marin", audio_plan(settings))
    return refine_session(session, settings)


def frames(out_client: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in out_client if isinstance(f, str)]


# --- Settings -------------------------------------------------------------------------------------------------


def test_language_and_keyterms_go_to_the_transcription():
    agent = {"language": "de", "listen": {"provider": {"type": "deepgram", "keyterms": ["Zugspitze", "Föhn"]}}}
    session = session_for({**SETTINGS, "agent": {**SETTINGS["agent"], **agent}})
    assert session["audio"]["input"]["transcription"] == {
        "model": tr.TRANSCRIPTION_MODEL,
        "language": "de",
        "prompt": "Zugspitze, Föhn",
    }
    assert session_for(SETTINGS)["audio"]["input"]["transcription"] == {"model": tr.TRANSCRIPTION_MODEL}


def test_the_instructions_ask_for_tool_results_only_when_there_are_tools():
    assert USE_TOOL_RESULTS not in session_for(SETTINGS)["instructions"]
    think = {"prompt": "Base.", "functions": [{"name": "f", "description": "", "parameters": {}}]}
    instructions = session_for({**SETTINGS, "agent": {"think": think}})["instructions"]
    assert instructions.startswith("Base.") and instructions.endswith(USE_TOOL_RESULTS)


def test_prompt_updates_keep_the_tool_result_instruction_last_while_there_are_tools():
    bridge = Bridge(clock=lambda: 0.0)
    think = {"prompt": "Base.", "functions": [{"name": "f", "description": "", "parameters": {}}]}
    [settings] = client(bridge, {**SETTINGS, "agent": {"think": think}}).provider
    assert settings["session"]["instructions"] == f"Base.\n\n{USE_TOOL_RESULTS}"
    assert client(bridge, {"type": "UpdatePrompt", "prompt": "More."}).provider == []  # one update at a time
    [prompt] = provider(bridge, "session.updated", session={}).provider
    assert prompt["session"]["instructions"] == f"Base.\n\nMore.\n\n{USE_TOOL_RESULTS}"


def test_greeting_and_injected_agent_messages_are_spoken_as_given_without_tools():
    bridge = ready_bridge()
    out = client(bridge, {"type": "InjectAgentMessage", "message": "Hold on."})
    [event] = out.provider
    assert event["response"]["tool_choice"] == "none"
    assert event["response"]["instructions"].endswith("Hold on.")


# --- text frames ----------------------------------------------------------------------------------------------


def test_history_for_messages_and_answered_calls_unless_turned_off():
    bridge = ready_bridge()
    created(bridge)
    out = provider(bridge, "response.output_audio_transcript.done", **FIELDS, item_id="a1", transcript="Sure.")
    assert frames(out.client)[1] == {"type": "History", "role": "assistant", "content": "Sure."}
    call(bridge, "c1", "lookup")
    [history] = frames(answer(bridge, "c1").client)
    assert history == {
        "type": "History",
        "function_calls": [{"id": "c1", "name": "lookup", "client_side": True, "arguments": "{}", "response": '"ok"'}],
    }
    bridge = Bridge(clock=lambda: 0.0)
    client(bridge, {**SETTINGS, "flags": {"history": False}})
    provider(bridge, "session.updated", session={})
    created(bridge)
    out = provider(bridge, "response.output_audio_transcript.done", **FIELDS, item_id="a1", transcript="Sure.")
    assert types(out) == ["ConversationText"]


def test_text_before_a_tool_call_is_agent_thinking():
    bridge = ready_bridge()
    created(bridge)
    provider(bridge, "response.output_text.done", **FIELDS, item_id="a1", text="Let me check.")
    out = call(bridge, "c1", "lookup")
    assert frames(out.client)[0] == {"type": "AgentThinking", "content": "Let me check."}
    assert types(call(bridge, "c2", "lookup")) == ["FunctionCallRequest"]  # once per response


def test_the_agents_text_waits_for_the_users_transcript_of_the_turn():
    clock = Clock()
    bridge = bridge_at(clock)
    provider(bridge, "input_audio_buffer.committed", item_id="u1")
    created(bridge)
    out = provider(bridge, "response.output_audio_transcript.done", **FIELDS, item_id="a1", transcript="Sure.")
    assert out.client == []
    out = provider(bridge, "conversation.item.input_audio_transcription.completed", item_id="u1", transcript="Hi")
    assert [(f["type"], f.get("role")) for f in frames(out.client)] == [
        ("ConversationText", "user"),
        ("History", "user"),
        ("ConversationText", "assistant"),
        ("History", "assistant"),
    ]


def test_a_transcript_that_never_comes_holds_the_agent_only_so_long():
    transcript = Transcript()
    transcript.handle({"type": "input_audio_buffer.committed", "item_id": "u1"}, now=10.0)
    done = {"type": "response.output_audio_transcript.done", "item_id": "a1", "transcript": "Sure."}
    assert transcript.handle(done, now=10.5) == []
    assert transcript.tick(11.9) == []
    assert [json.loads(f)["type"] for f in transcript.tick(12.0)] == ["ConversationText", "History"]
    transcript.handle({"type": "input_audio_buffer.committed", "item_id": "u2"}, now=20.0)
    transcript.handle({**done, "item_id": "a2"}, now=20.1)
    failed = {"type": "conversation.item.input_audio_transcription.failed", "item_id": "u2"}
    assert len(transcript.handle(failed, now=20.2)) == 2


def test_a_resumed_conversations_history_reaches_the_instructions_calls_and_results_included():
    # The gateway's memory (gateway.history) arrives as Deepgram History context; OpenAI reads it as background.
    from gateway.history import with_history

    memory = [
        {"kind": "turn", "role": "user", "content": "Weather in Paris?"},
        {"kind": "call", "id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}', "result": '{"temp":21}'},
        {"kind": "turn", "role": "assistant", "content": "It is 21 degrees."},
    ]
    instructions = session_for(with_history(SETTINGS, memory))["instructions"]
    assert instructions.startswith(SETTINGS["agent"]["think"]["prompt"])
    assert (
        "Conversation so far:\nuser: Weather in Paris?\n"
        'function get_weather({"city":"Paris"}) returned: {"temp":21}\nassistant: It is 21 degrees.'
    ) in instructions
