"""Server-side conversation memory through real processes: a gateway with the simulated agent, a real worker,
redis-server. A conversation makes a backend call; a later provider session of the same conversation (after the
first closed, after a gateway restart) starts with the turns and the call with its result; the HTTP API."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from websockets.exceptions import InvalidStatus

from shared import keys
from tests.support.client import AgentClient
from tests.support.processes import Gateway, running_gateway, wait_until

pytestmark = pytest.mark.integration

QUESTION = "What's the weather in Paris?"
TOKENS = "alice:token-of-alice,bob:token-of-bob"
ORIGIN = "http://app.test"


def new_id() -> str:
    return "it-" + secrets.token_hex(6)


def request(url: str, method: str = "GET", token: str | None = None, **headers: str) -> tuple[int, Any, dict]:
    """Status, JSON body (None when empty) and headers of one HTTP request."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=5) as r:
            status, body, answer_headers = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        status, body, answer_headers = exc.code, exc.read(), dict(exc.headers)
    return status, json.loads(body) if body else None, answer_headers


async def weather_conversation(url: str) -> str:
    """One session: the user asks, a worker answers get_weather, the agent says the result; returns what it said."""
    client = await AgentClient.connect(url)
    try:
        await client.start()
        assert (await client.stats())["context"] == []  # a new conversation: nothing to resume
        await client.say(QUESTION)
        return await client.assistant_text()
    finally:
        await client.close()


async def resumed_context(url: str) -> list[dict[str, Any]]:
    """The context a new session's Settings carried to the provider."""
    client = await AgentClient.connect(url)
    try:
        await client.start()
        return list((await client.stats())["context"])
    finally:
        await client.close()


def stored(redis_client: redis.Redis, conversation_id: str, count: int) -> None:
    key = keys.conversation_memory(conversation_id)
    wait_until(lambda: redis_client.llen(key) >= count, 10, f"{count} memory entries")


def check_resumed(context: list[dict[str, Any]], said: str) -> None:
    user, call, assistant = context
    assert user == {"type": "History", "role": "user", "content": QUESTION}
    [entry] = call["function_calls"]
    assert (entry["name"], entry["client_side"], json.loads(entry["arguments"])) == (
        "get_weather", False, {"location": "Paris"}
    )  # fmt: skip
    assert json.loads(entry["response"])["location"] == "Paris" and entry["response"] in said
    assert assistant == {"type": "History", "role": "assistant", "content": said}


async def test_a_new_session_and_a_restarted_gateway_resume_with_the_turns_and_the_call(
    redis_server, workers, logs_dir, redis_client
) -> None:
    conversation = new_id()
    # RESUME_GRACE=0: a later session of the conversation is a new provider session (not a live re-attach).
    gateway = Gateway(redis_server.url, logs_dir / "gw-memory-1.log", RESUME_GRACE="0").wait_ready()
    try:
        said = await weather_conversation(f"{gateway.url}?conversation={conversation}")
        stored(redis_client, conversation, 3)
        check_resumed(await resumed_context(f"{gateway.url}?conversation={conversation}"), said)
        assert await resumed_context(f"{gateway.url}?conversation={new_id()}") == []  # another conversation
    finally:
        assert gateway.stop() == 0, gateway.log()
    with running_gateway(redis_server.url, logs_dir / "gw-memory-2.log") as restarted:
        check_resumed(await resumed_context(f"{restarted.url}?conversation={conversation}"), said)
        status, body, _ = request(f"{restarted.http}/conversations/{conversation}")
        assert status == 200 and body["conversation_id"] == conversation
        assert [e["kind"] for e in body["entries"]] == ["turn", "call", "turn"]
        assert body["entries"][1]["result"] in said and body["entries"][1]["client_side"] is False


@pytest.fixture(scope="module")
def locked(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url, logs_dir / "gw-memory-locked.log", GATEWAY_TOKENS=TOKENS, ALLOWED_ORIGINS=ORIGIN
    ) as gateway:
        yield gateway


@pytest.mark.attack("Another caller joining, reading or erasing a conversation")
async def test_the_api_under_credentials_and_ownership(locked: Gateway, redis_client) -> None:
    conversation = new_id()
    await weather_conversation(f"{locked.url}?conversation={conversation}&token=token-of-alice")
    stored(redis_client, conversation, 3)
    owner = keys.conversation_owner(conversation)
    assert redis_client.get(owner) == b"alice"  # claimed at the handshake, renewed with each memory write
    assert redis_client.ttl(owner) >= redis_client.ttl(keys.conversation_memory(conversation)) - 1
    url = f"{locked.http}/conversations/{conversation}"

    assert request(url)[0] == 401
    assert request(url, token="wrong")[0] == 401
    status, body, _ = request(url, token="token-of-alice")
    assert status == 200 and len(body["entries"]) == 3
    assert request(url, token="token-of-bob")[0] == 403
    assert request(url, "DELETE", token="token-of-bob")[0] == 403
    assert request(f"{locked.http}/conversations/not.an.id", token="token-of-alice")[0] == 400
    assert request(f"{locked.http}/conversations/{new_id()}", token="token-of-alice")[0] == 404
    assert request(url, "PUT", token="token-of-alice")[0] == 405
    status, body, headers = request(url, "HEAD", token="token-of-alice")
    assert status == 200 and body is None and int(headers["Content-Length"]) > 0  # as GET, without the body
    assert request(url, "HEAD", token="token-of-bob")[0] == 403

    status, _, headers = request(url, token="token-of-alice", Origin=ORIGIN)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN
    assert request(url, token="token-of-alice", Origin="http://evil.test")[0] == 403
    status, _, headers = request(url, "OPTIONS", Origin=ORIGIN, **{"Access-Control-Request-Method": "DELETE"})
    assert status == 204 and headers["Access-Control-Allow-Methods"] == "GET, DELETE"

    assert request(url, "DELETE", token="token-of-alice")[0] == 204
    assert request(url, token="token-of-alice")[0] == 404
    assert not redis_client.exists(keys.conversation_memory(conversation), keys.conversation_owner(conversation))
    assert await resumed_context(f"{locked.url}?conversation={conversation}&token=token-of-alice") == []


@pytest.mark.attack("Another caller joining, reading or erasing a conversation")
async def test_memory_without_an_owner_is_nobodys(locked: Gateway, redis_client) -> None:
    conversation = new_id()
    await weather_conversation(f"{locked.url}?conversation={conversation}&token=token-of-alice")
    stored(redis_client, conversation, 3)
    redis_client.delete(keys.conversation_owner(conversation))  # lost: the memory must not go to the first comer
    url = f"{locked.http}/conversations/{conversation}"
    for token in ("token-of-alice", "token-of-bob"):
        assert request(url, token=token)[0] == 403
        assert request(url, "DELETE", token=token)[0] == 403
        with pytest.raises(InvalidStatus) as refused:
            await AgentClient.connect(f"{locked.url}?conversation={conversation}&token={token}")
        assert refused.value.response.status_code == 403
    assert redis_client.llen(keys.conversation_memory(conversation)) == 3


async def test_memory_off_stores_nothing(redis_server, workers, logs_dir, redis_client) -> None:
    conversation = new_id()
    with running_gateway(redis_server.url, logs_dir / "gw-memory-off.log", CONVERSATION_MEMORY="false") as gateway:
        said = await weather_conversation(f"{gateway.url}?conversation={conversation}")
        assert "returned" in said  # the call ran and was answered
        assert await resumed_context(f"{gateway.url}?conversation={conversation}") == []
        assert redis_client.llen(keys.conversation_memory(conversation)) == 0
        assert request(f"{gateway.http}/conversations/{conversation}")[0] == 404
        assert request(f"{gateway.http}/conversations/{conversation}", "DELETE")[0] == 204
        # Without credentials the Host rules apply as on the WebSocket (DNS rebinding).
        assert request(f"{gateway.http}/conversations/{conversation}", Host="evil.test")[0] == 403


async def test_a_query_token_is_a_credential_for_every_method(locked: Gateway) -> None:
    """?token= counts as it does for GET and the WebSocket: HEAD, DELETE and POST used to drop the query."""
    url = f"{locked.http}/conversations/{new_id()}"
    assert request(url + "?token=token-of-alice")[0] == 404  # nothing stored: past the credential check
    assert request(url + "?token=token-of-alice", "HEAD")[0] == 404
    assert request(url + "?token=token-of-alice", "DELETE")[0] == 204
    assert request(url + "?token=wrong", "DELETE")[0] == 401
    assert request(f"{locked.http}/metrics?token=token-of-alice", "HEAD")[0] == 200
