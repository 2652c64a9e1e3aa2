"""Access control on a real gateway: tokens in each accepted place, signed tokens (JWT), the Host and Origin
rules, malformed credentials, the caller reaching the worker, and the refusal to listen publicly without
credentials."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import jwt
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.auth import mint_token
from tests.support.client import AgentClient
from tests.support.processes import ROOT, Gateway, http_get, running_gateway
from workers.examples import notes_key

pytestmark = pytest.mark.integration

TOKEN = "static-token-for-tests"
TOKEN_NAME = "ci-bot"
SECRET = "hmac-secret-for-tests-0123456789abcdef"
AUDIENCE = "gateway-under-test"
ORIGIN = "http://app.test"


@pytest.fixture(scope="module")
def locked(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        logs_dir / "gw-locked.log",
        GATEWAY_TOKENS=f"{TOKEN_NAME}:{TOKEN}",
        TOKEN_SECRET=SECRET,
        TOKEN_AUDIENCE=AUDIENCE,
        ALLOWED_ORIGINS=ORIGIN,
    ) as gateway:
        yield gateway


def signed(sub: str = "alice", ttl: float = 60) -> str:
    return mint_token(SECRET, ttl, sub=sub, audience=AUDIENCE)


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value.response.status_code


async def converse(client: AgentClient) -> None:
    await client.start()
    await client.say("What's the weather in Paris?")
    assert "Paris" in await client.assistant_text()
    await client.close()


async def caller_seen_by_the_worker(client: AgentClient) -> str:
    """What ``ctx.principal`` was in the worker that ran a call of this conversation."""
    await client.start()
    await client.say("call who_is_calling")
    await client.assistant_text()
    [response] = (await client.stats())["function_responses"]
    await client.close()
    return json.loads(response["content"])["principal"]


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes a well-behaved client library would refuse to send; return the response head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def raw_handshake(port: int, *, host: str | None = None, path: str = "/v1/agent/converse", extra: bytes = b"") -> bytes:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    return head.encode() + extra + b"\r\n"


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def post(gateway: Gateway, headers: dict[str, str], body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body or {"id": f"auth-{time.time_ns()}", "name": "get_current_time", "arguments": "{}"})
    request = urllib.request.Request(
        gateway.http + "/function-call",
        data=data.encode(),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# --- credentials ------------------------------------------------------------------------------------------


@pytest.mark.attack("Missing, malformed or forged credentials")
async def test_websocket_refused_without_a_valid_token(locked: Gateway):
    assert await refused_status(locked.url) == 401
    assert await refused_status(locked.url, additional_headers={"Authorization": "Bearer wrong"}) == 401
    assert await refused_status(locked.url + "?token=" + signed(ttl=-5)) == 401  # expired
    assert (
        await refused_status(locked.url + "?token=" + mint_token("not-the-secret-0123456789abcdef0123", 60, sub="a"))
        == 401
    )
    assert await refused_status(locked.url + "?token=" + mint_token(SECRET, 60, sub="a")) == 401  # other audience
    none_alg = jwt.encode({"sub": "a", "aud": AUDIENCE, "exp": time.time() + 60}, None, algorithm="none")
    assert await refused_status(locked.url + "?token=" + none_alg) == 401


@pytest.mark.parametrize(
    "extra",
    [
        b"Authorization: Bearer v1.9999999999.abcd.\xc3\xa9\xc3\xa9\r\n",  # non-ASCII signature (old format)
        b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.\xe9\xe9\xe9\r\n",  # non-ASCII JWT signature
        b"Authorization: Bearer \xff\xfe\xfd\r\n",  # not UTF-8 at all
        b"Authorization: Token " + TOKEN.encode() + b"\xff\r\n",
        b"Sec-WebSocket-Protocol: token, \xff\xfe\r\n",
        b"Sec-WebSocket-Protocol: bearer, v1.9999999999.abcd.\xc3\xa9\r\n",
    ],
)
@pytest.mark.attack("Missing, malformed or forged credentials")
def test_malformed_credentials_get_401_never_500(locked: Gateway, extra: bytes):
    response = raw_exchange(locked.port, raw_handshake(locked.port, extra=extra))
    assert status_of(response) == 401, response
    body = b"{}"
    post_request = (
        b"POST /function-call HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    if extra.startswith(b"Authorization"):
        assert status_of(raw_exchange(locked.port, post_request)) == 401


@pytest.mark.attack("Missing, malformed or forged credentials")
def test_malformed_query_token_gets_401(locked: Gateway):
    for token in ["%FF%FE", "%C3%A9", "v1.9999999999.abcd.%C3%A9%C3%A9"]:
        assert status_of(raw_exchange(locked.port, raw_handshake(locked.port, path=f"/?token={token}"))) == 401


async def test_each_credential_place_is_accepted(locked: Gateway):
    await converse(await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}))
    await converse(await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Token {TOKEN}"}))
    await converse(await AgentClient.connect(locked.url + "?token=" + TOKEN))
    browser_like = await AgentClient.connect(locked.url, subprotocols=["token", signed()])
    assert browser_like.ws.subprotocol == "token"
    await converse(browser_like)


async def test_bearer_subprotocol_is_accepted_and_echoed(locked: Gateway):
    """Deepgram's browser components offer ``["bearer", <token>]``; the handshake must echo ``bearer``."""
    client = await AgentClient.connect(locked.url, subprotocols=["bearer", signed()])
    assert client.ws.subprotocol == "bearer"
    await converse(client)
    static = await AgentClient.connect(locked.url, subprotocols=["Bearer", TOKEN])
    assert static.ws.subprotocol == "Bearer"
    await static.close()
    assert await refused_status(locked.url, subprotocols=["bearer", "wrong"]) == 401


# --- the caller reaches the function ----------------------------------------------------------------------


@pytest.mark.attack("A caller posing as another user")
async def test_the_verified_caller_reaches_the_worker(locked: Gateway):
    sub = f"user-{time.time_ns()}"
    by_subprotocol = await AgentClient.connect(locked.url, subprotocols=["bearer", signed(sub)])
    assert await caller_seen_by_the_worker(by_subprotocol) == sub
    by_header = await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Bearer {signed(sub)}"})
    assert await caller_seen_by_the_worker(by_header) == sub
    by_static = await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Token {TOKEN}"})
    assert await caller_seen_by_the_worker(by_static) == TOKEN_NAME


@pytest.mark.attack("A caller posing as another user")
async def test_notes_belong_to_the_verified_caller(locked: Gateway, redis_client: redis.Redis):
    alice, mallory = f"alice-{time.time_ns()}", f"mallory-{time.time_ns()}"
    client = await AgentClient.connect(locked.url, subprotocols=["bearer", signed(alice)])
    await client.start()
    await client.say('call add_note {"text": "buy milk"}')
    await client.assistant_text()
    await client.close()
    assert redis_client.llen(notes_key(alice)) == 1
    intruder = await AgentClient.connect(locked.url, subprotocols=["bearer", signed(mallory)])
    await intruder.start()
    await intruder.say(f'call list_notes {{"owner": "{alice}"}}')  # the LLM cannot choose whose notes
    assert "buy milk" not in await intruder.assistant_text()
    await intruder.close()


@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_http_function_call_needs_a_token_and_carries_the_caller(locked: Gateway):
    assert post(locked, {})[0] == 401
    assert post(locked, {"Authorization": "Bearer nope"})[0] == 401
    assert post(locked, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    sub = f"http-{time.time_ns()}"
    who = {"id": f"who-{time.time_ns()}", "name": "who_is_calling", "arguments": "{}"}
    status, body = post(locked, {"Authorization": f"Bearer {signed(sub)}"}, who)
    assert status == 200 and json.loads(body["content"]) == {"principal": sub}
    assert http_get(locked.http + "/healthz")[0] == 200  # health checks stay open for the platform


# --- Origin and Host --------------------------------------------------------------------------------------


@pytest.mark.attack("Another website or a rebound DNS name driving the gateway")
async def test_origin_allowlist(locked: Gateway):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert await refused_status(locked.url, additional_headers=headers, origin="http://evil.test") == 403
    await converse(await AgentClient.connect(locked.url, additional_headers=headers, origin=ORIGIN))
    await converse(await AgentClient.connect(locked.url, additional_headers=headers, origin=locked.http))


@pytest.mark.attack("Another website or a rebound DNS name driving the gateway")
async def test_foreign_origin_is_refused_without_credentials(gateway: Gateway):
    """A page on another site must not drive a developer's open loopback gateway."""
    assert await refused_status(gateway.url, origin="http://evil.test") == 403
    assert await refused_status(gateway.url, origin="null") == 403
    assert post(gateway, {"Origin": "http://evil.test"})[0] == 403
    await converse(await AgentClient.connect(gateway.url, origin=gateway.http))  # the test page's own origin
    await converse(await AgentClient.connect(gateway.url))  # SDKs and servers send no Origin
    assert post(gateway, {"Origin": gateway.http})[0] == 200


@pytest.mark.attack("Another website or a rebound DNS name driving the gateway")
def test_rebound_host_is_refused_without_credentials(gateway: Gateway):
    """DNS rebinding: evil.example resolves to 127.0.0.1, so the page is same-origin with itself; Host gives it away."""
    rebound = f"evil.example:{gateway.port}"
    origin = f"Origin: http://{rebound}\r\n".encode()
    assert status_of(raw_exchange(gateway.port, raw_handshake(gateway.port, host=rebound, extra=origin))) == 403
    assert status_of(raw_exchange(gateway.port, raw_handshake(gateway.port, host=rebound))) == 403
    body = json.dumps({"id": "rebound", "name": "get_current_time", "arguments": "{}"}).encode()
    request = (
        f"POST /function-call HTTP/1.1\r\nHost: {rebound}\r\nContent-Type: application/json\r\n".encode()
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    assert status_of(raw_exchange(gateway.port, request)) == 403
    local = raw_handshake(gateway.port, host=f"localhost:{gateway.port}")
    assert status_of(raw_exchange(gateway.port, local)) == 101
    assert http_get(f"http://localhost:{gateway.port}/")[0] == 200  # the test page itself is public


def test_public_bind_without_credentials_is_refused(redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "HOST": "0.0.0.0", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ALLOW_PUBLIC_WITHOUT_AUTH" in result.stderr
