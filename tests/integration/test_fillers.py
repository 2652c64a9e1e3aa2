"""Fillers and progress notices end to end: real redis-server, real workers running a slow function with a filler
(``tests/support/filler_functions.py``), the real gateway, with the simulated agent and with the fake OpenAI."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_openai_provider import connect, fake_openai, openai_gateway, stats  # noqa: F401
from tests.support.client import AgentClient
from tests.support.filler_functions import FILLER, PROGRESS
from tests.support.processes import Gateway

pytestmark = pytest.mark.integration


def lookup(text: str, seconds: float) -> str:
    return f"call slow_lookup {json.dumps({'text': text, 'seconds': seconds})}"


def notices(client: AgentClient, status: str) -> list[dict]:
    return [m for m in client.messages() if m["type"] == "BackendFunctionCall" and m["status"] == status]


async def test_a_slow_call_gets_its_filler_and_progress_then_its_answer(client: AgentClient):
    await client.start()
    await client.say(lookup("maps", 1.5))
    assert await client.assistant_text() == FILLER  # said by the agent while the call runs
    answer = await client.assistant_text()
    assert "slow_lookup returned:" in answer and "maps" in answer
    stats_ = await client.stats()
    [response] = stats_["function_responses"]
    assert json.loads(response["content"]) == {"found": "maps"}
    assert [n["message"] for n in notices(client, "progress")] == [PROGRESS, FILLER] or [
        n["message"] for n in notices(client, "progress")
    ] == [FILLER, PROGRESS]  # the worker's report and the filler race each other
    assert not any(m["type"] == "InjectionRefused" for m in client.messages())


async def test_a_quick_call_says_no_filler(client: AgentClient):
    await client.start()
    await client.say(lookup("quick", 0.0))
    answer = await client.assistant_text()
    assert "slow_lookup returned:" in answer
    assert notices(client, "finished")
    assert FILLER not in [m.get("content") for m in client.messages() if m["type"] == "ConversationText"]


async def test_a_refused_filler_is_not_relayed_and_the_call_is_answered(client: AgentClient):
    await client.start()
    # The agent speaks the client's own line; the call's filler falls due at once, while it speaks: refused.
    await client.send({"type": "InjectAgentMessage", "message": "Hold on."})
    await client.say(f"call busy_lookup {json.dumps({'text': 'busy', 'seconds': 0.5})}")
    answer = await client.assistant_text()
    while "busy_lookup returned:" not in answer:
        answer = await client.assistant_text()
    stats_ = await client.stats()
    assert json.loads(stats_["function_responses"][0]["content"]) == {"found": "busy"}
    assert stats_["injections_refused"] == 1
    assert not any(m["type"] == "InjectionRefused" for m in client.messages())  # the gateway's, not relayed
    # Not retried: the agent was next silent only after the answer, when the call was over.
    assert FILLER not in [m.get("content") for m in client.messages() if m["type"] == "ConversationText"]


async def test_openai_says_the_filler_out_of_band_and_answers_the_call(openai_gateway: Gateway, fake_openai: str):  # noqa: F811
    client, session_id = await connect(openai_gateway)
    await client.say(lookup("charts", 1.5))
    assert (await client.assistant_text()).endswith(FILLER)  # the fake reads its instructions out
    answer = await client.assistant_text()
    assert answer.startswith("slow_lookup returned: ") and "charts" in answer
    await client.expect("AgentAudioDone")
    await client.close()
    seen = stats(fake_openai, session_id)
    [filler] = seen["out_of_band"]
    assert filler["conversation"] == "none" and FILLER in filler["instructions"]
    [output] = seen["function_outputs"]
    assert json.loads(output["output"]) == {"found": "charts"}
    assert seen["active_response_errors"] == 0 and seen["errors"] == []
