"""Issue 14: every Settings Deepgram accepts is accepted; client-side calls never hang; defer_until_eot.

Each test feeds the sans-I/O core (or the pure merge) what a client of today's Deepgram sends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.actions import FORWARD, ReadCatalog, StartCall, ToClient, ToProvider
from gateway.intercept import merge_functions, merge_update_think
from gateway.providers.openai.adapter import OpenAIProvider
from gateway.providers.openai.translate import tools
from shared.envelopes import FunctionSpec
from shared.protocol import ErrorCode, Settings, UpdateThink, dump
from tests.unit.test_conversation import BACKEND, applied, at, call, codes, new, request, sent, text

STORED = "6f1c2a9e-0b7d-4a55-9c3e-2d8f1e0a7b64"
NOTE = FunctionSpec(name="add_note", description="Note.", parameters={"type": "object"}, side_effects=True)


def settings_frame(agent: Any, **extra: Any) -> str:
    return text("Settings", agent=agent, **extra)


def upstream(conversation_actions: Any) -> dict[str, Any]:
    [frame] = [a.frame for a in conversation_actions if isinstance(a, ToProvider)]
    return json.loads(frame)


def test_a_stored_agent_id_is_relayed_with_a_warning_and_backend_calls_are_still_intercepted() -> None:
    conversation = new()
    frame = settings_frame(STORED, flags={"history": True})
    assert conversation.client_frame(frame, 0.0) == (ReadCatalog(),)
    actions = conversation.catalog_read(BACKEND, 0.0)
    assert [a.frame for a in actions if isinstance(a, ToProvider)] == [frame]
    assert codes(actions) == [ErrorCode.STORED_AGENT]
    started = conversation.provider_frame(request(call("c1")), at(1.0))
    assert [a.call.id for a in started if isinstance(a, StartCall)] == ["c1"]


def test_a_stored_agent_without_backend_functions_gets_no_warning() -> None:
    conversation = new()
    conversation.client_frame(settings_frame(STORED), 0.0)
    assert codes(conversation.catalog_read({}, 0.0)) == []


def test_the_openai_provider_refuses_a_stored_agent_and_says_why() -> None:
    provider = object.__new__(OpenAIProvider)
    problem = provider.settings_problem(Settings.model_validate({"agent": STORED}))
    assert problem is not None and "stored at Deepgram" in problem
    assert provider.settings_problem(Settings.model_validate({"agent": {}})) is None


def test_a_think_array_gets_the_backend_functions_in_every_entry() -> None:
    thinks = [
        {"provider": {"type": "open_ai"}, "functions": [{"name": "open_door", "parameters": None}]},
        {"provider": {"type": "anthropic"}},
    ]
    conversation = new()
    assert conversation.client_frame(settings_frame({"think": thinks, "x_new": 1}, x_top=2), 0.0) == (ReadCatalog(),)
    sent_upstream = upstream(conversation.catalog_read(BACKEND, 0.0))
    entries = sent_upstream["agent"]["think"]
    assert [[f["name"] for f in e["functions"]] for e in entries] == [["open_door", "get_weather"], ["get_weather"]]
    assert entries[0]["functions"][0]["parameters"] is None
    assert [e["provider"]["type"] for e in entries] == ["open_ai", "anthropic"]
    assert sent_upstream["agent"]["x_new"] == 1 and sent_upstream["x_top"] == 2


def test_an_update_think_array_gets_the_backend_functions_in_every_entry() -> None:
    conversation = applied()
    actions = conversation.client_frame(text("UpdateThink", think=[{"prompt": "a"}, {"prompt": "b"}]), 1.0)
    entries = upstream(actions)["think"]
    assert [[f["name"] for f in e["functions"]] for e in entries] == [["get_weather"], ["get_weather"]]


def test_an_update_think_array_counts_against_the_function_limit() -> None:
    many = {"functions": [{"name": f"f{i}"} for i in range(5)]}
    conversation = applied(max_settings_functions=4)
    assert codes(conversation.client_frame(text("UpdateThink", think=[{}, many]), 1.0)) == [ErrorCode.INVALID_MESSAGE]


@pytest.mark.parametrize("agent", [[], 3, None])
def test_an_agent_the_gateway_cannot_read_is_refused_and_the_reason_named(agent: Any) -> None:
    [close] = new().client_frame(settings_frame(agent), 0.0)
    assert "agent" in json.loads(close.error or "")["description"]


# --- defer_until_eot ---------------------------------------------------------------------------------------


def test_functions_with_side_effects_are_declared_defer_until_eot() -> None:
    assert NOTE.definition()["defer_until_eot"] is True
    assert "defer_until_eot" not in BACKEND["get_weather"].definition()
    merged = json.loads(dump(merge_functions(Settings.model_validate({"agent": {}}), {**BACKEND, "add_note": NOTE})))
    flags = {f["name"]: f.get("defer_until_eot") for f in merged["agent"]["think"]["functions"]}
    assert flags == {"get_weather": None, "add_note": True}
    update = merge_update_think(UpdateThink.model_validate({"think": {}}), {"add_note": NOTE})
    assert json.loads(dump(update))["think"]["functions"][0]["defer_until_eot"] is True


def test_openai_tools_never_carry_defer_until_eot() -> None:
    declared, _ = tools([NOTE.definition()])
    assert declared == [{"type": "function", "name": "add_note", "description": "Note.", "parameters": NOTE.parameters}]


# --- client-side calls never hang ------------------------------------------------------------------------


@pytest.mark.parametrize("content", [None, {"temperature": 18}, 3, "absent"])
def test_a_client_answer_without_string_content_answers_the_call_with_an_error(content: Any) -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c7", "open_door")), at(1.0))
    fields = {} if content == "absent" else {"content": content}
    actions = conversation.client_frame(text("FunctionCallResponse", id="c7", name="open_door", **fields), 1.0)
    [answer] = sent(actions, ToProvider)
    assert (answer["type"], answer["id"], answer["name"]) == ("FunctionCallResponse", "c7", "open_door")
    assert "error" in json.loads(answer["content"])
    assert codes(actions) == [ErrorCode.INVALID_MESSAGE]


def test_a_client_answer_with_a_bad_name_is_never_relayed_as_it_is() -> None:
    conversation = applied()
    actions = conversation.client_frame(text("FunctionCallResponse", id="c8", name=7, content="{}"), 1.0)
    [answer] = sent(actions, ToProvider)
    assert (answer["id"], answer["name"], "error" in json.loads(answer["content"])) == ("c8", "", True)
    assert codes(actions) == [ErrorCode.INVALID_MESSAGE]


def test_a_client_answer_with_an_empty_id_answers_nothing() -> None:
    actions = applied().client_frame(text("FunctionCallResponse", id="", name="open_door"), 1.0)
    assert codes(actions) == [ErrorCode.INVALID_MESSAGE] and not sent(actions, ToProvider)


def test_answers_to_backend_calls_are_still_refused_and_answers_without_id_still_invalid() -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c1")), at(1.0))
    refused = conversation.client_frame(text("FunctionCallResponse", id="c1", name="get_weather"), 1.0)
    assert codes(refused) == [ErrorCode.FUNCTION_RESPONSE_REFUSED] and not sent(refused, ToProvider)
    [error] = conversation.client_frame(text("FunctionCallResponse", name="open_door", content="{}"), 1.0)
    # Nothing to answer without an id; the session goes on, so the refusal is a Warning (issue 14 item 4).
    assert isinstance(error, ToClient) and json.loads(error.frame)["code"] == ErrorCode.INVALID_MESSAGE
    assert not sent([error], ToProvider)
    assert conversation.client_frame(text("FunctionCallResponse", id="c2", name="x", content="{}"), 1.0) is FORWARD


# --- relayed as received (the protocol matrix names these) ---------------------------------------------------

CLIENT_RELAYED = ["KeepAlive", "UpdatePrompt", "UpdateSpeak", "InjectUserMessage", "InjectAgentMessage", "Future"]
PROVIDER_RELAYED = [
    "Welcome", "SettingsApplied", "ConversationText", "UserStartedSpeaking", "AgentThinking", "AgentStartedSpeaking",
    "AgentAudioDone", "PromptUpdated", "SpeakUpdated", "InjectionRefused", "Error", "Warning", "Future",
]  # fmt: skip


@pytest.mark.parametrize("kind", CLIENT_RELAYED)
def test_other_client_messages_are_relayed_as_received(kind: str) -> None:
    assert applied().client_frame(text(kind, content="x"), 1.0) is FORWARD


@pytest.mark.parametrize("kind", PROVIDER_RELAYED)
def test_other_provider_messages_are_relayed_as_received(kind: str) -> None:
    assert applied().provider_frame(text(kind, description="x", code="X"), at(1.0)) is FORWARD
