"""Issue 14 through a real gateway, real workers and the simulated agent: what today's Deepgram accepts passes."""

from __future__ import annotations

import json

import pytest

from tests.support.client import AgentClient

pytestmark = pytest.mark.integration

STORED = "6f1c2a9e-0b7d-4a55-9c3e-2d8f1e0a7b64"


async def test_a_stored_agent_id_gets_a_warning_and_backend_calls_still_run(client: AgentClient) -> None:
    await client.send({"type": "Settings", "agent": STORED})
    warning = await client.expect("Warning", "SettingsApplied")
    assert warning["type"] == "Warning" and warning["code"] == "STORED_AGENT"
    await client.expect("SettingsApplied")
    await client.say('call get_weather {"location": "Paris"}')
    finished = await client.expect("BackendFunctionCall", status="finished")
    assert finished["name"] == "get_weather" and finished["ok"]
    assert "Paris" in await client.assistant_text()


async def test_a_think_array_reaches_the_provider_with_the_backend_functions(client: AgentClient) -> None:
    thinks = [{"provider": {"type": "open_ai"}, "functions": [{"name": "open_door", "parameters": None}]}, {}]
    await client.send({"type": "Settings", "agent": {"think": thinks}})
    await client.expect("SettingsApplied")
    declared = (await client.stats())["settings"]
    assert declared[0] == "open_door" and "get_weather" in declared


async def test_a_client_answer_without_content_answers_the_call_with_an_error(client: AgentClient) -> None:
    await client.start(functions=[{"name": "open_door", "description": "Open the door."}])
    await client.say("call open_door")
    [request] = (await client.expect("FunctionCallRequest"))["functions"]
    await client.send({"type": "FunctionCallResponse", "id": request["id"], "name": "open_door"})
    assert (await client.expect("Warning"))["code"] == "INVALID_MESSAGE"
    await client.assistant_text()
    [response] = (await client.stats())["function_responses"]
    assert response["id"] == request["id"] and "error" in json.loads(response["content"])
