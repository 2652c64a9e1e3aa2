"""Conversation ids and live re-attach (issue 17), end to end: the real gateway with the simulated agent, real
workers and Redis. A client drops in the middle of a backend call and comes back to the same provider session."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared import keys
from shared.redis_server import RedisServer
from tests.integration.test_function_calls import rq_job_with
from tests.support.client import AgentClient
from tests.support.functions import counter_key
from tests.support.processes import Gateway, Process, running_gateway, wait_until

pytestmark = pytest.mark.integration


def call(name: str, **arguments: object) -> str:
    return f"call {name} {json.dumps(arguments)}"


@pytest.fixture(scope="module")
def resuming(redis_server: RedisServer, workers: Process, logs_dir: Path) -> Iterator[Gateway]:
    log = logs_dir / "gw-resume.log"
    with running_gateway(redis_server.url, log, RESUME_GRACE="30", KEEPALIVE_INTERVAL="1") as gw:
        yield gw


async def first_message(client: AgentClient) -> dict:
    frame = await client.next()
    assert isinstance(frame, str)
    return json.loads(frame)


async def test_a_client_that_drops_mid_call_gets_the_answer_on_reconnect(resuming: Gateway, redis_client):
    conversation, tag = "resume-" + secrets.token_hex(4), "resume." + secrets.token_hex(4)
    url = f"{resuming.url}?conversation={conversation}"
    client = await AgentClient.connect(url)
    assert await first_message(client) == {"type": "Conversation", "conversation_id": conversation, "resumed": False}
    await client.expect("Welcome")
    await client.start()
    await client.say(call("wait_for_release", tag=tag))
    await client.expect("BackendFunctionCall", status="started")
    wait_until(lambda: redis_client.get(counter_key(tag + ".started")), 10, "the call to start on a worker")
    await client.drop()  # the network goes while the call runs

    redis_client.set(counter_key(tag + ".released"), 1)
    wait_until(lambda: "wait_for_release ok" in resuming.log(), 10, "the call to be answered while away")

    again = await AgentClient.connect(url)
    assert await first_message(again) == {"type": "Conversation", "conversation_id": conversation, "resumed": True}
    await again.start()  # answered by the gateway itself, not relayed upstream
    finished = await again.expect("BackendFunctionCall", status="finished")
    assert finished["ok"] is True
    text = await again.assistant_text()
    assert "wait_for_release returned" in text and "released" in text
    stats = await again.stats()
    assert [r["name"] for r in stats["function_responses"]] == ["wait_for_release"]  # answered once
    assert stats["settings"]  # the provider saw one Settings: the resumed one went nowhere
    assert not any(m["type"] == "Welcome" for m in again.messages())  # the same provider session
    await again.close()


async def test_changed_settings_on_resume_get_a_warning(resuming: Gateway):
    url = f"{resuming.url}?conversation=warn-{secrets.token_hex(4)}"
    client = await AgentClient.connect(url)
    await client.start()
    await client.drop()
    wait_until(lambda: "parked" in resuming.log(), 10, "the session to park")
    again = await AgentClient.connect(url)
    await again.expect("Conversation", resumed=True)
    settings = {"type": "Settings", "audio": {"input": {"encoding": "linear16", "sample_rate": 8000}}, "agent": {}}
    await again.send(settings)
    await again.expect("SettingsApplied")
    warning = await again.expect("Warning")
    assert warning["code"] == "SETTINGS_NOT_APPLIED" and "audio" in warning["description"]
    await again.close()


async def test_a_second_connection_takes_over_a_live_conversation(resuming: Gateway):
    url = f"{resuming.url}?conversation=take-{secrets.token_hex(4)}"
    old = await AgentClient.connect(url)
    await old.start()
    new = await AgentClient.connect(url)
    await new.expect("Conversation", resumed=True)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await old.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    await new.start()
    await new.say("hello")
    assert await new.assistant_text()
    await new.close()


async def test_after_the_window_a_reconnect_gets_a_new_session(redis_server, workers, logs_dir, redis_client):
    with running_gateway(redis_server.url, logs_dir / "gw-resume-short.log", RESUME_GRACE="0.5") as gw:
        url = f"{gw.url}?conversation=late-{secrets.token_hex(4)}"
        client, tag = await AgentClient.connect(url), "late." + secrets.token_hex(4)
        await client.start()
        await client.say(call("wait_for_release", tag=tag))
        call_id = wait_until(lambda: rq_job_with(redis_client, tag), 10, "the job to be enqueued")
        await client.drop()
        wait_until(lambda: "window over" in gw.log(), 10, "the window to end")
        wait_until(lambda: redis_client.get(keys.cancelled(call_id)), 10, "the pending call to be cancelled")
        redis_client.set(counter_key(tag + ".released"), 1)
        again = await AgentClient.connect(url)
        assert (await first_message(again))["resumed"] is False
        await again.expect("Welcome")
        await again.close()


async def test_parked_sessions_hold_their_place_and_gateway_closes_park_nothing(redis_server, workers, logs_dir):
    env = {"RESUME_GRACE": "30", "MAX_SESSIONS": "1", "MAX_FRAME_BYTES": "4096"}
    with running_gateway(redis_server.url, logs_dir / "gw-resume-full.log", **env) as gw:
        url = f"{gw.url}?conversation=full-{secrets.token_hex(4)}"
        big = await AgentClient.connect(url)
        await big.start()
        await big.send(b"\0" * 10_000)  # the gateway closes it (1009): not a drop, nothing parked
        with pytest.raises(ConnectionClosed):
            while True:
                await big.next()
        wait_until(lambda: "closed" in gw.log(), 10, "the session to end")
        client = await AgentClient.connect(url)
        await client.start()
        await client.drop()
        wait_until(lambda: "parked" in gw.log(), 10, "the session to park")
        with pytest.raises(InvalidStatus) as refused:
            await AgentClient.connect(f"{gw.url}?conversation=other")
        assert refused.value.response.status_code == 503  # the parked session holds the only place
        again = await AgentClient.connect(url)  # but its own client gets back in
        await again.expect("Conversation", resumed=True)
        await again.start()
        await again.drop()
        wait_until(lambda: gw.log().count("parked for") == 2, 10, "the session to park again")
    # running_gateway insists on a clean exit: the shutdown ended the parked session's window


async def test_without_grace_nothing_is_parked(redis_server, workers, logs_dir):
    with running_gateway(redis_server.url, logs_dir / "gw-resume-off.log", RESUME_GRACE="0") as gw:
        url = f"{gw.url}?conversation=off-{secrets.token_hex(4)}"
        client = await AgentClient.connect(url)
        await client.start()
        await client.drop()
        again = await AgentClient.connect(url)
        assert (await first_message(again))["resumed"] is False
        await again.close()
        assert "parked" not in gw.log()


async def test_a_client_that_hangs_up_ends_its_session_and_a_going_away_parks(resuming: Gateway):
    url = f"{resuming.url}?conversation=bye-{secrets.token_hex(4)}"
    client = await AgentClient.connect(url)
    await client.start()
    await client.close()  # 1000: the user hung up on purpose
    again = await AgentClient.connect(url)
    assert (await first_message(again))["resumed"] is False  # a new provider session
    await again.start()
    await again.ws.close(1001)  # a page reload or a closed tab: it may come back
    back = await AgentClient.connect(url)
    assert (await first_message(back))["resumed"] is True
    await back.close()


async def test_malformed_conversation_id_is_refused(gateway: Gateway):
    with pytest.raises(InvalidStatus) as refused:
        await AgentClient.connect(f"{gateway.url}?conversation=no%20spaces")
    assert refused.value.response.status_code == 400
    assert "conversation" in json.loads(refused.value.response.body)["error"]


@pytest.mark.attack("Another caller joining, reading or erasing a conversation")
async def test_another_caller_may_not_join_a_conversation(redis_server, workers, logs_dir, redis_client):
    tokens = "alice:tok-alice-" + secrets.token_hex(8) + ",bob:tok-bob-" + secrets.token_hex(8)
    alice, bob = (t.split(":")[1] for t in tokens.split(","))
    env = {"GATEWAY_TOKENS": tokens, "MAX_SESSIONS": "1"}
    with running_gateway(redis_server.url, logs_dir / "gw-owners.log", **env) as gw:
        url = f"{gw.url}?conversation=owned-{secrets.token_hex(4)}"
        client = await AgentClient.connect(url, additional_headers={"Authorization": f"Bearer {alice}"})
        await client.expect("Conversation")
        elsewhere = f"full-{secrets.token_hex(4)}"
        with pytest.raises(InvalidStatus) as refused:  # the only place is taken
            await AgentClient.connect(f"{gw.url}?conversation={elsewhere}&token={bob}")
        assert refused.value.response.status_code == 503
        assert not redis_client.exists(keys.conversation_owner(elsewhere))  # refused for capacity: not claimed
        with pytest.raises(InvalidStatus) as refused:
            await AgentClient.connect(url, additional_headers={"Authorization": f"Bearer {bob}"})
        assert refused.value.response.status_code == 403
        await client.close()
        # still hers after she left
        with pytest.raises(InvalidStatus) as refused:
            await AgentClient.connect(url, additional_headers={"Authorization": f"Bearer {bob}"})
        assert refused.value.response.status_code == 403
        back = await AgentClient.connect(url, additional_headers={"Authorization": f"Bearer {alice}"})
        await back.expect("Conversation")
        await back.close()
